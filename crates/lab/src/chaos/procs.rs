//! The processes a chaos run starts, as real separate processes of this same
//! binary (`courier worker`, `courier scheduler`, `courier api`,
//! `courier sim`), and the process-level faults done to them: `kill -9`,
//! `SIGSTOP`/`SIGCONT`, restart. Also finds the chromedriver and Chromium
//! processes of one worker through the process tree (`/proc`), so they can be
//! killed too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// One role process: how to start it, and the running child if any.
#[derive(Debug)]
pub struct Proc {
    /// `worker-1`, `scheduler`, `api`, `sim`.
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// True while the process is held by `SIGSTOP`.
    pub stopped: bool,
    /// Starts so far (1 = never restarted).
    pub starts: u32,
}

impl Proc {
    /// A process of `exe` with `args` and `env` (on top of a cleaned
    /// environment: inherited `COURIER*` and `DATABASE_URL` are removed),
    /// logging to `<dir>/<name>.log`. Not started yet.
    pub fn new(name: &str, args: &[&str], env: Vec<(String, String)>, dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            stopped: false,
            starts: 0,
        }
    }

    /// Starts (or restarts) the process; its output is appended to its log.
    pub fn start(&mut self, exe: &Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        self.child = Some(cmd.spawn()?);
        self.stopped = false;
        self.starts += 1;
        Ok(())
    }

    /// The running process id.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// True while the process runs (stopped counts as running).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// Sends `sig` (e.g. `SIGSTOP`, `SIGCONT`).
    pub fn signal(&mut self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), sig);
            match sig {
                Signal::SIGSTOP => self.stopped = true,
                Signal::SIGCONT => self.stopped = false,
                _ => {}
            }
        }
    }

    /// SIGTERM (after SIGCONT if stopped), up to `grace` for a clean exit,
    /// then `kill -9`. Returns whether it exited cleanly by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(c.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = c.wait();
        false
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// `comm` (executable name, 15 characters at most).
    pub comm: String,
    /// Command line arguments.
    pub cmdline: Vec<String>,
}

/// Every process on the machine (those readable in `/proc`).
pub fn process_table() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let comm = stat[open + 1..close].to_string();
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next()?;
            if state == "Z" {
                return None;
            }
            let ppid = rest.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(ProcInfo {
                pid,
                ppid,
                comm,
                cmdline,
            })
        })
        .collect()
}

/// The chromedriver processes started by the process `worker`.
pub fn chromedrivers_of(table: &[ProcInfo], worker: i32) -> Vec<i32> {
    table
        .iter()
        .filter(|p| p.ppid == worker && p.comm.starts_with("chromedriver"))
        .map(|p| p.pid)
        .collect()
}

/// The Chromium browser processes (one per session, the ones with a
/// `--user-data-dir`) under chromedriver `driver`, with their profile dirs.
pub fn browsers_of(table: &[ProcInfo], driver: i32) -> Vec<(i32, PathBuf)> {
    table
        .iter()
        .filter(|p| p.ppid == driver)
        .filter_map(|p| {
            p.cmdline
                .iter()
                .find_map(|a| a.strip_prefix("--user-data-dir="))
                .map(|d| (p.pid, PathBuf::from(d)))
        })
        .collect()
}

/// Kills every chromedriver in `drivers` that is still a chromedriver (with
/// its process group: the Chromium it started), and every Chromium whose
/// profile lies under `profiles`: what workers killed by `kill -9` leave
/// behind. Only processes of this run match.
pub fn kill_leftovers(drivers: &HashMap<i32, ()>, profiles: &Path) -> usize {
    let table = process_table();
    let mut killed = 0;
    for p in &table {
        let driver = drivers.contains_key(&p.pid) && p.comm.starts_with("chromedriver");
        let ours = p.cmdline.iter().any(|a| {
            a.strip_prefix("--user-data-dir=")
                .is_some_and(|d| Path::new(d).starts_with(profiles))
        });
        if driver {
            let _ = killpg(Pid::from_raw(p.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            killed += 1;
        } else if ours {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// A free loopback port (bound, then released: another process may take it
/// in between, which start-up then reports).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
