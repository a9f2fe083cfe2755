//! The embedded PostgreSQL cluster: Courier's default when no database URL is
//! configured.
//!
//! It runs the machine's installed server binaries (`initdb`, `pg_ctl`,
//! `postgres`) against a data directory of its own, listening only on a unix
//! socket inside that directory (no TCP port to collide with). The first start
//! initialises the directory; later starts reuse it, so data survives. A cluster
//! that is already running (another Courier process started it) is joined, not
//! restarted, and only the process that started it stops it.
//!
//! Postgres refuses to run as root, so when Courier is root the server runs as
//! `embedded.run_as` (the `postgres` user Debian's packages create).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{Uid, User};

/// Errors starting or stopping the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No server binaries anywhere we looked.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in \
         /usr/lib/postgresql/*/bin; install them (Debian: `apt-get install postgresql`) \
         or set embedded.bin_dir, or set database.url to use an existing server"
    )]
    BinariesNotFound,
    /// A configured bin_dir lacks a binary.
    #[error("embedded.bin_dir {dir}: {binary} not found there")]
    BinaryMissing {
        /// The configured directory.
        dir: PathBuf,
        /// The missing program.
        binary: &'static str,
    },
    /// Running as root and the user to run the server as does not exist.
    #[error(
        "running as root, and embedded.run_as user `{0}` does not exist \
         (Postgres refuses to run as root; install postgresql or create the user)"
    )]
    NoSuchUser(String),
    /// The unix socket path would exceed the kernel's limit.
    #[error("embedded.data_dir {0} is too long for a unix socket path (max ~100 bytes); choose a shorter path")]
    PathTooLong(PathBuf),
    /// A step failed; carries the tool's own output.
    #[error("{step} failed: {output}")]
    Step {
        /// What we were doing.
        step: &'static str,
        /// stderr/log excerpt.
        output: String,
    },
    /// Filesystem or process error.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Absolute data directory.
    pub data_dir: PathBuf,
    /// Server binary directory; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// OS user to run the server as when we are root.
    pub run_as: String,
    /// Database to create inside the cluster.
    pub database: String,
    /// Turn off fsync (test clusters only: a crash may lose data).
    pub unsafe_no_fsync: bool,
}

/// A running (or joined) embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    opts: EmbeddedOptions,
    bin_dir: PathBuf,
    /// Whether this process started the server (and so may stop it).
    started_here: bool,
    /// Whether the data directory was initialised by this call.
    initialised_here: bool,
    /// The OS user the server tools run as (`None`: ourselves).
    owner: Option<User>,
}

/// How `pg_ctl` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Disconnect clients, roll back, checkpoint.
    Fast,
    /// Quit at once; the next start runs crash recovery.
    Immediate,
}

impl ShutdownMode {
    /// The `-m` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// The superuser role created by initdb; connections are trusted on the socket.
pub const SUPERUSER: &str = "courier";
const PORT: u16 = 5432;

impl EmbeddedPostgres {
    /// Initialises the data directory if needed and starts the server unless it
    /// is already running. Blocking: call from `spawn_blocking` in async code.
    pub fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir(opts.bin_dir.as_deref())?;
        if opts
            .data_dir
            .join(format!(".s.PGSQL.{PORT}"))
            .as_os_str()
            .len()
            > 100
        {
            return Err(EmbeddedError::PathTooLong(opts.data_dir.clone()));
        }
        let owner = server_user(&opts.run_as)?;
        let mut this = Self {
            opts,
            bin_dir,
            started_here: false,
            initialised_here: false,
            owner,
        };
        if !this.opts.data_dir.join("PG_VERSION").is_file() {
            this.initdb()?;
            this.initialised_here = true;
        }
        if !this.is_running() {
            this.pg_ctl_start()?;
            this.started_here = true;
        }
        Ok(this)
    }

    /// A `postgres://` URL for `database` in this cluster (over the unix socket).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            self.opts.data_dir.display()
        )
    }

    /// The URL of the configured database.
    pub fn url(&self) -> String {
        self.url_for(&self.opts.database)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.opts.data_dir
    }

    /// The server binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// True when this process started the server.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// True when this call created the data directory.
    pub fn initialised_here(&self) -> bool {
        self.initialised_here
    }

    /// True while a server is running on the data directory.
    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the server (fast mode: rolls back open transactions, flushes).
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        let out = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.opts.data_dir)
            .output()
            .map_err(|e| io("running pg_ctl stop", e))?;
        if !out.status.success() && self.is_running() {
            return Err(EmbeddedError::Step {
                step: "pg_ctl stop",
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Restarts the server with `pg_ctl restart -m <mode>` (`fast`: roll back
    /// and flush; `immediate`: no shutdown checkpoint, crash recovery on the
    /// way up). Every client connection is cut. Used by `courier chaos`.
    pub fn restart(&self, mode: ShutdownMode) -> Result<(), EmbeddedError> {
        let log = self.opts.data_dir.join("server.log");
        let out = self
            .command("pg_ctl")
            .args(["restart", "-m", mode.as_str(), "-w", "-t", "60", "-D"])
            .arg(&self.opts.data_dir)
            .arg("-l")
            .arg(&log)
            .process_group(0)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| io("running pg_ctl restart", e))?;
        if !out.status.success() {
            return Err(EmbeddedError::Step {
                step: "pg_ctl restart",
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Stops the server only when this process started it.
    pub fn stop_if_started_here(&self) -> Result<(), EmbeddedError> {
        if self.started_here {
            self.stop()
        } else {
            Ok(())
        }
    }

    fn initdb(&self) -> Result<(), EmbeddedError> {
        let dir = &self.opts.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(format!("chmod 0700 {}", dir.display()), e))?;
        if let Some(user) = &self.owner {
            nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).map_err(|e| {
                io(
                    format!("chown {} to {}", dir.display(), user.name),
                    e.into(),
                )
            })?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(dir)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-instructions")
            .output()
            .map_err(|e| io("running initdb", e))?;
        if !out.status.success() {
            return Err(EmbeddedError::Step {
                step: "initdb",
                output: last_lines(&String::from_utf8_lossy(&out.stderr), 5),
            });
        }
        // Unix socket only, in the data directory; nothing listens on TCP.
        let mut conf = format!(
            "\n# courier embedded\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
             port = {PORT}\nmax_connections = 300\nshared_buffers = 128MB\n",
            dir.display()
        );
        if self.opts.unsafe_no_fsync {
            // wal_init_zero: a new WAL segment is not filled with 16 MB of
            // zeros first. The walwriter spent a tenth of the machine's CPU
            // doing that during the queue benchmark (perf).
            conf.push_str(
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 wal_init_zero = off\n",
            );
        }
        let conf_path = dir.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)
            .map_err(|e| io(format!("reading {}", conf_path.display()), e))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .map_err(|e| io(format!("writing {}", conf_path.display()), e))?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let log = self.opts.data_dir.join("server.log");
        let out = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.opts.data_dir)
            .arg("-l")
            .arg(&log)
            // The server must not die with our process group on Ctrl-C: we stop it
            // ourselves, cleanly.
            .process_group(0)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| io("running pg_ctl start", e))?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log)
                .map(|s| last_lines(&s, 5))
                .unwrap_or_default();
            return Err(EmbeddedError::Step {
                step: "pg_ctl start",
                output: format!("{} {tail}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.env("LC_ALL", "C").env_remove("PGDATA");
        if let Some(user) = &self.owner {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            // Tools chdir-check the cwd; ours may not be readable by the server user.
            cmd.current_dir("/");
        }
        cmd
    }
}

/// The server user when we are root, `None` otherwise (run as ourselves).
fn server_user(run_as: &str) -> Result<Option<User>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(run_as) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some(user)),
        _ => Err(EmbeddedError::NoSuchUser(run_as.to_string())),
    }
}

/// Finds a directory holding initdb, pg_ctl and postgres: the configured one,
/// then PATH, then the newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir_raw(configured: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    const NEEDED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
    if let Some(dir) = configured {
        for binary in NEEDED {
            if !dir.join(binary).is_file() {
                return Err(EmbeddedError::BinaryMissing {
                    dir: dir.to_path_buf(),
                    binary,
                });
            }
        }
        return Ok(dir.to_path_buf());
    }
    let complete = |dir: &Path| NEEDED.iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| complete(d)) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedError::BinariesNotFound)
}

/// Waits until the server accepts connections (after a start by someone else).
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => {
                let _ = c.close().await;
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn io(context: impl Into<String>, source: std::io::Error) -> EmbeddedError {
    EmbeddedError::Io {
        context: context.into(),
        source,
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// [`find_bin_dir_raw`], with symlinks (e.g. `/usr/local/bin/pg_ctl`) resolved
/// to the real installation directory.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let dir = find_bin_dir_raw(configured)?;
    Ok(std::fs::canonicalize(dir.join("pg_ctl"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or(dir))
}
