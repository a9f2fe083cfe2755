//! `courier soak`: a steady load for a long time, watching memory.
//!
//! It opens the embedded Postgres (a fresh `courier_soak` database each run)
//! and starts Courier's roles as separate processes of this binary: `courier
//! sim`, `courier api`, `courier worker` (browser handler: chromedriver and one
//! Chromium per account, started by the worker) and `courier scheduler`. It
//! logs the accounts in through the API and the simulator's phone, gives each
//! account a group, then posts send jobs through `POST /v1/messages` at a fixed
//! rate (text to contacts, some images, some group sends) under budgets wide
//! enough to keep the load steady.
//!
//! Every `--sample-every` it records RSS and PSS (`/proc/<pid>/smaps_rollup`)
//! of each Courier process, of chromedriver and of each Chromium session (all
//! processes of one `--user-data-dir`, summed), the message counts and the
//! queue depth, into `<out>/soak.csv`. At the end it waits for the queue to
//! drain, checks the simulator's read-back against the database (nothing lost,
//! nothing twice) and prints a table with the least-squares growth of each
//! series over the second half of the run (MiB/hour).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::demo::{step, wait_for, Api};
use courier::config::Settings;
use courier::db::Database;
use courier::error::BoxError;

/// Flags of `courier soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long to push load (then the queue drains and the run is checked).
    #[arg(long, default_value = "60m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Accounts logged in (one Chromium session each).
    #[arg(long, default_value_t = 5)]
    pub accounts: usize,
    /// Messages posted per minute, over all accounts.
    #[arg(long, default_value_t = 60)]
    pub rate: u32,
    /// Every Nth message is an image (0: none).
    #[arg(long, default_value_t = 10)]
    pub media_every: u64,
    /// Every Nth message goes to the account's group (0: none).
    #[arg(long, default_value_t = 7)]
    pub group_every: u64,
    /// Distinct contacts each account writes to (in turn).
    #[arg(long, default_value_t = 40)]
    pub contacts: usize,
    /// Memory and progress sampling period.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// Directory for soak.csv, summary.md and each role's log (created).
    #[arg(long, default_value = "soak-out")]
    pub out: PathBuf,
    /// After the load stops, how long the queue may take to drain.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

/// Memory of a set of processes, from `/proc/<pid>/smaps_rollup`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// How many processes.
    pub procs: usize,
    /// Sum of RSS in KiB (double-counts shared pages across processes).
    pub rss_kib: u64,
    /// Sum of PSS in KiB (shared pages split between sharers: sums correctly).
    pub pss_kib: u64,
}

impl Mem {
    fn add(&mut self, pid: u32) {
        if let Some((rss, pss)) = smaps_rollup(pid) {
            self.procs += 1;
            self.rss_kib += rss;
            self.pss_kib += pss;
        }
    }
}

/// RSS and PSS of one process in KiB, or `None` when it is gone (or not ours to read).
pub fn smaps_rollup(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Every process's parent, read from `/proc/*/stat`.
fn parents() -> HashMap<u32, u32> {
    let mut parent = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return parent;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    parent
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Memory of a browser tree: chromedriver, each Chromium session, the rest.
#[derive(Debug, Default, Clone)]
pub struct BrowserMem {
    /// chromedriver processes.
    pub chromedriver: Mem,
    /// Chromium processes grouped by their session's `--user-data-dir`.
    pub sessions: BTreeMap<String, Mem>,
    /// Other descendants (neither chromedriver nor under a Chromium session).
    pub other: Mem,
}

impl BrowserMem {
    /// All sessions together.
    pub fn chromium(&self) -> Mem {
        self.sessions.values().fold(Mem::default(), |a, m| Mem {
            procs: a.procs + m.procs,
            rss_kib: a.rss_kib + m.rss_kib,
            pss_kib: a.pss_kib + m.pss_kib,
        })
    }
}

/// Samples every descendant of `root` (not `root` itself): chromedriver by
/// its executable name, Chromium by the `--user-data-dir` on its own command
/// line or on its nearest ancestor's (renderers and helpers inherit their
/// browser's session). Processes outside `root`'s tree (other people's
/// browsers) are never counted.
pub fn sample_browser_tree(root: u32) -> BrowserMem {
    let parent = parents();
    let mut out = BrowserMem::default();
    let mut cmd_cache: HashMap<u32, Vec<String>> = HashMap::new();
    let mut cmd = |pid: u32| cmd_cache.entry(pid).or_insert_with(|| cmdline(pid)).clone();
    for &pid in parent.keys() {
        // Walk up to `root`; on the way, note the nearest --user-data-dir.
        let mut p = pid;
        let mut under_root = false;
        let mut dir = None;
        let mut driver = false;
        for _ in 0..64 {
            let c = cmd(p);
            if dir.is_none() {
                dir = c
                    .iter()
                    .find_map(|a| a.strip_prefix("--user-data-dir="))
                    .map(str::to_string);
            }
            if p == pid {
                driver = c.first().is_some_and(|a| {
                    Path::new(a)
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().contains("chromedriver"))
                });
            }
            match parent.get(&p) {
                Some(&pp) if pp == root => {
                    under_root = true;
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
        if !under_root {
            continue;
        }
        if driver {
            out.chromedriver.add(pid);
        } else if let Some(d) = dir {
            out.sessions.entry(d).or_default().add(pid);
        } else {
            out.other.add(pid);
        }
    }
    out
}

/// Least-squares slope of `(x, y)` points (`None` with fewer than two
/// distinct x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// One role, run as a child process of this binary.
struct Role {
    name: &'static str,
    child: tokio::process::Child,
}

impl Role {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

fn spawn_role(
    name: &'static str,
    args: &[&str],
    env: &[(&str, String)],
    out: &Path,
) -> Result<Role, BoxError> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(out.join(format!("{name}.log")))?;
    let child = tokio::process::Command::new(exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("soak: cannot start `courier {name}`: {e}"))?;
    Ok(Role { name, child })
}

async fn stop_roles(roles: &mut [Role]) {
    for r in roles.iter() {
        if let Some(pid) = r.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for r in roles.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(45), r.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(role = r.name, "did not stop after SIGTERM; killing");
            let _ = r.child.kill().await;
        }
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// One sample: a CSV row.
#[derive(Debug, Clone)]
struct Sample {
    elapsed_s: f64,
    load1: String,
    posted: u64,
    sent: i64,
    delivered: i64,
    read: i64,
    failed: i64,
    queue_depth: i64,
    /// api, worker, scheduler, sim: (rss, pss) KiB.
    roles: Vec<Mem>,
    chromedriver: Mem,
    chromium: Mem,
    sessions: usize,
    /// Per account, in account order.
    per_session: Vec<Mem>,
    other: Mem,
}

const ROLE_NAMES: [&str; 4] = ["api", "worker", "scheduler", "sim"];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn csv_header(accounts: usize) -> String {
    let mut h = vec![
        "elapsed_s".to_string(),
        "load1".into(),
        "posted".into(),
        "sent".into(),
        "delivered".into(),
        "read".into(),
        "failed".into(),
        "queue_depth".into(),
    ];
    for r in ROLE_NAMES {
        h.push(format!("{r}_rss_mib"));
        h.push(format!("{r}_pss_mib"));
    }
    h.extend([
        "chromedriver_rss_mib".into(),
        "chromedriver_pss_mib".into(),
        "chromium_sessions".into(),
        "chromium_procs".into(),
        "chromium_rss_mib".into(),
        "chromium_pss_mib".into(),
    ]);
    for i in 1..=accounts {
        h.push(format!("session{i}_pss_mib"));
    }
    h.push("other_pss_mib".into());
    h.join(",")
}

fn csv_row(s: &Sample) -> String {
    let mut r = vec![
        format!("{:.0}", s.elapsed_s),
        s.load1.clone(),
        s.posted.to_string(),
        s.sent.to_string(),
        s.delivered.to_string(),
        s.read.to_string(),
        s.failed.to_string(),
        s.queue_depth.to_string(),
    ];
    for m in &s.roles {
        r.push(format!("{:.1}", mib(m.rss_kib)));
        r.push(format!("{:.1}", mib(m.pss_kib)));
    }
    r.push(format!("{:.1}", mib(s.chromedriver.rss_kib)));
    r.push(format!("{:.1}", mib(s.chromedriver.pss_kib)));
    r.push(s.sessions.to_string());
    r.push(s.chromium.procs.to_string());
    r.push(format!("{:.1}", mib(s.chromium.rss_kib)));
    r.push(format!("{:.1}", mib(s.chromium.pss_kib)));
    for m in &s.per_session {
        r.push(format!("{:.1}", mib(m.pss_kib)));
    }
    r.push(format!("{:.1}", mib(s.other.pss_kib)));
    r.join(",")
}

async fn take_sample(
    started: Instant,
    pool: &sqlx::PgPool,
    roles: &[Role],
    worker_pid: u32,
    accounts: &[Uuid],
    posted: u64,
) -> Result<Sample, BoxError> {
    let (sent, delivered, read, failed): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('sent','delivered','read')), \
                count(*) FILTER (WHERE status IN ('delivered','read')), \
                count(*) FILTER (WHERE status = 'read'), \
                count(*) FILTER (WHERE status = 'failed') \
         FROM mkt_wap_messages",
    )
    .fetch_one(pool)
    .await?;
    let queue_depth: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM queue_jobs WHERE state IN ('available','scheduled','retryable','running')",
    )
    .fetch_one(pool)
    .await?;
    let role_mem = ROLE_NAMES
        .iter()
        .map(|n| {
            let mut m = Mem::default();
            if let Some(r) = roles.iter().find(|r| r.name == *n) {
                m.add(r.pid());
            }
            m
        })
        .collect();
    let b = sample_browser_tree(worker_pid);
    let per_session = accounts
        .iter()
        .map(|a| {
            let id = a.to_string();
            b.sessions
                .iter()
                .filter(|(d, _)| d.contains(&id))
                .map(|(_, m)| *m)
                .next()
                .unwrap_or_default()
        })
        .collect();
    Ok(Sample {
        elapsed_s: started.elapsed().as_secs_f64(),
        load1: load_average(),
        posted,
        sent,
        delivered,
        read,
        failed,
        queue_depth,
        roles: role_mem,
        chromedriver: b.chromedriver,
        chromium: b.chromium(),
        sessions: b.sessions.len(),
        per_session,
        other: b.other,
    })
}

/// The sample nearest `at` seconds.
fn nearest(samples: &[Sample], at: f64) -> Option<&Sample> {
    samples.iter().min_by(|a, b| {
        (a.elapsed_s - at)
            .abs()
            .partial_cmp(&(b.elapsed_s - at).abs())
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The Markdown summary: memory at marks through the run, the growth slope
/// over the second half, the counts.
fn summary(samples: &[Sample], load_start: f64, duration: Duration) -> String {
    let mut out = String::new();
    let d = duration.as_secs_f64();
    let marks: Vec<f64> = if d >= 3600.0 {
        vec![60.0, 900.0, 1800.0, 2700.0, 3600.0]
    } else {
        vec![60.0_f64.min(d / 4.0), d / 4.0, d / 2.0, 3.0 * d / 4.0, d]
    };
    out.push_str("| at (min) | api RSS / PSS | worker RSS / PSS | scheduler RSS / PSS | sim RSS / PSS | chromedriver PSS | Chromium sessions (procs) | Chromium RSS / PSS | max session PSS | sent | delivered | read | queue | load |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for m in marks {
        let Some(s) = nearest(samples, load_start + m) else {
            continue;
        };
        let role = |i: usize| {
            format!(
                "{:.0} / {:.0}",
                mib(s.roles[i].rss_kib),
                mib(s.roles[i].pss_kib)
            )
        };
        let max_session = s.per_session.iter().map(|m| m.pss_kib).max().unwrap_or(0);
        out.push_str(&format!(
            "| {:.0} | {} | {} | {} | {} | {:.0} | {} ({}) | {:.0} / {:.0} | {:.0} | {} | {} | {} | {} | {} |\n",
            (s.elapsed_s - load_start) / 60.0,
            role(0),
            role(1),
            role(2),
            role(3),
            mib(s.chromedriver.pss_kib),
            s.sessions,
            s.chromium.procs,
            mib(s.chromium.rss_kib),
            mib(s.chromium.pss_kib),
            mib(max_session),
            s.sent,
            s.delivered,
            s.read,
            s.queue_depth,
            s.load1,
        ));
    }
    // Growth over the second half of the load, MiB/hour.
    let half = load_start + d / 2.0;
    let tail: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.elapsed_s >= half && s.elapsed_s <= load_start + d + 1.0)
        .collect();
    let fit = |f: &dyn Fn(&Sample) -> u64| {
        let pts: Vec<(f64, f64)> = tail
            .iter()
            .map(|s| (s.elapsed_s / 3600.0, mib(f(s))))
            .collect();
        slope(&pts).map_or("n/a".to_string(), |v| format!("{v:+.1}"))
    };
    out.push_str(&format!(
        "\nGrowth over the last {:.0} min of load (least squares over {} samples), MiB/hour:\n\n",
        d / 120.0,
        tail.len()
    ));
    out.push_str("| series | RSS | PSS |\n|---|---:|---:|\n");
    for (i, n) in ROLE_NAMES.iter().enumerate() {
        out.push_str(&format!(
            "| courier {n} | {} | {} |\n",
            fit(&|s| s.roles[i].rss_kib),
            fit(&|s| s.roles[i].pss_kib)
        ));
    }
    out.push_str(&format!(
        "| chromedriver | {} | {} |\n",
        fit(&|s| s.chromedriver.rss_kib),
        fit(&|s| s.chromedriver.pss_kib)
    ));
    out.push_str(&format!(
        "| Chromium, all sessions | {} | {} |\n",
        fit(&|s| s.chromium.rss_kib),
        fit(&|s| s.chromium.pss_kib)
    ));
    let n_sessions = samples.last().map_or(0, |s| s.per_session.len());
    for i in 0..n_sessions {
        out.push_str(&format!(
            "| Chromium session {} | — | {} |\n",
            i + 1,
            fit(&|s| s.per_session[i].pss_kib)
        ));
    }
    out
}

/// What the load generator posted.
#[derive(Debug, Default)]
struct Posted {
    /// Accepted (2xx) messages: sequence number → message ids.
    accepted: BTreeMap<u64, Vec<Uuid>>,
    /// Refused posts with the error.
    refused: Vec<(u64, String)>,
}

/// The body of message `n` (unique, so the read-back can spot a repeat).
fn body(n: u64) -> String {
    format!("soak #{n}: winter feed offer, 10% off layer mash this week")
}

/// Parses `soak #<n>:` back out of a body.
fn seq_of(body: &str) -> Option<u64> {
    body.strip_prefix("soak #")?.split(':').next()?.parse().ok()
}

/// Runs the soak with `settings` (the database part; the rest is set up here).
pub async fn run(settings: &Settings, args: SoakArgs) -> Result<(), BoxError> {
    if args.accounts == 0 || args.accounts > 50 {
        return Err("soak: --accounts must be between 1 and 50".into());
    }
    if args.rate == 0 {
        return Err("soak: --rate must be at least 1 message a minute".into());
    }
    if args.sample_every < Duration::from_secs(1) {
        return Err("soak: --sample-every must be at least 1s".into());
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("soak: cannot create {}: {e}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    println!(
        "courier soak — {} accounts, {} messages/min for {}, output in {}\n",
        args.accounts,
        args.rate,
        humantime::format_duration(args.duration),
        out.display()
    );

    step(started, "database …");
    let (db, _) = Database::open(settings).await?;
    let pool = crate::demo::fresh_database(&db, "courier_soak").await?;
    let soak_url = crate::demo::database_url(db.url(), "courier_soak");
    step(started, "      fresh database courier_soak, migrated");

    // The roles' configuration: a config dir with the built-in defaults and a
    // `soak` environment file (quoted strings, no guessing from env vars).
    let config_dir = out.join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("default.toml"),
        courier::config::DEFAULT_TOML,
    )?;
    std::fs::copy("config/selectors.toml", config_dir.join("selectors.toml")).ok();
    let sim_port = free_port()?;
    let api_port = free_port()?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let token = format!("soak-{}", Uuid::new_v4().simple());
    let media_dir = out.join("media");
    let profiles_dir = out.join("profiles");
    let _ = std::fs::remove_dir_all(&profiles_dir);
    std::fs::create_dir_all(&media_dir)?;
    let soak_toml = toml::to_string(&json!({
        "database": {"url": soak_url, "max_connections": 10},
        "api": {"listen": format!("127.0.0.1:{api_port}"), "token": token},
        "queue": {"handler": "browser", "capacity": args.accounts},
        "browser": {
            "page_url": format!("{sim_url}/?account={{account}}"),
            "profiles_dir": profiles_dir.display().to_string(),
            "media_dir": media_dir.display().to_string(),
            "session_key": courier::browser::SnapshotKey::random().to_hex(),
        },
        "log": {"level": "info,sqlx=warn"},
    }))?;
    std::fs::write(config_dir.join("soak.toml"), soak_toml)?;
    write_image(&media_dir.join("offer.png"))?;

    let env = [
        ("COURIER_CONFIG_DIR", config_dir.display().to_string()),
        ("COURIER_ENV", "soak".to_string()),
    ];
    step(
        started,
        "roles as processes: courier sim, api, worker (browser), scheduler …",
    );
    let mut roles = vec![
        spawn_role(
            "sim",
            &[
                "sim",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--loading",
                "1s",
            ],
            &env,
            &out,
        )?,
        spawn_role("api", &["api"], &env, &out)?,
        spawn_role("worker", &["worker"], &env, &out)?,
        spawn_role("scheduler", &["scheduler"], &env, &out)?,
    ];
    let result = drive(
        started, &args, &out, &pool, &mut roles, &sim_url, api_port, &token,
    )
    .await;
    step(started, "stopping the roles …");
    stop_roles(&mut roles).await;
    pool.close().await;
    db.close().await?;
    result
}

/// A small PNG for the image sends.
fn write_image(path: &Path) -> Result<(), BoxError> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]));
    img.save(path)
        .map_err(|e| format!("soak: cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    started: Instant,
    args: &SoakArgs,
    out: &Path,
    pool: &sqlx::PgPool,
    roles: &mut [Role],
    sim_url: &str,
    api_port: u16,
    token: &str,
) -> Result<(), BoxError> {
    let api = Api {
        base: format!("http://127.0.0.1:{api_port}"),
        token: token.to_string(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    };
    let ctl = courier_sim::control::SimControl::new(sim_url);
    let http = api.http.clone();
    let ready_url = format!("{}/readyz", api.base);
    let sim_probe = format!("{sim_url}/_control/accounts");
    wait_for(
        "the API and the simulator",
        Duration::from_secs(120),
        || {
            let http = http.clone();
            let (a, b) = (ready_url.clone(), sim_probe.clone());
            async move {
                let ok = |r: Result<reqwest::Response, reqwest::Error>| {
                    r.map(|r| r.status().is_success()).unwrap_or(false)
                };
                Ok(ok(http.get(&a).send().await) && ok(http.get(&b).send().await))
            }
        },
    )
    .await?;
    for r in roles.iter_mut() {
        if let Some(status) = r.child.try_wait()? {
            return Err(format!(
                "soak: `courier {}` exited at start ({status}); see {}/{}.log",
                r.name,
                out.display(),
                r.name
            )
            .into());
        }
    }

    // Accounts: wide budgets so the load, not the budget, sets the pace; aged
    // past the warm-up ladder (a soak models seasoned accounts).
    step(
        started,
        format!("{} accounts: create, log in …", args.accounts),
    );
    let per_account_min = (args.rate as usize).div_ceil(args.accounts) as u64;
    let accounts: Vec<(String, String)> = (0..args.accounts)
        .map(|i| {
            (
                format!("Soak sender {}", i + 1),
                format!("4477009002{i:02}"),
            )
        })
        .collect();
    let limits = json!({
        "per_minute": per_account_min * 3,
        "per_hour": per_account_min * 3 * 60,
        "per_day": per_account_min * 3 * 60 * 24,
        "min_gap_seconds": 1,
        "jitter_seconds": 0
    });
    let ids = crate::demo::log_in_accounts(started, &api, &ctl, &accounts, &limits).await?;
    // Past the warm-up ladder (it caps new accounts at 20 sends a day).
    sqlx::query("UPDATE mkt_wap_accounts SET created_at = now() - interval '90 days'")
        .execute(pool)
        .await?;

    // One group per account, plus its contacts, in "WhatsApp"; discovery via the API.
    step(started, "groups and contacts …");
    for (i, id) in ids.iter().enumerate() {
        let acct = id.to_string();
        let participants: Vec<Value> = (0..5)
            .map(|m| json!({"phone": format!("9198766{i:02}{m:03}"), "name": format!("Member {i}-{m}")}))
            .collect();
        ctl.create_group(&format!("Soak group {}", i + 1), participants, &[&acct])
            .await?;
        for c in 0..args.contacts {
            ctl.add_contact(
                &contact_phone(i, c),
                Some(&format!("Contact {i}-{c}")),
                &[&acct],
            )
            .await?;
        }
        api.call(
            Method::POST,
            &format!("/v1/accounts/{id}/groups/discover"),
            None,
        )
        .await?;
    }
    let n_accounts = ids.len() as i64;
    wait_for("group discovery", Duration::from_secs(300), || async move {
        let n: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT account_id) FROM mkt_wap_account_groups")
                .fetch_one(pool)
                .await?;
        Ok(n >= n_accounts)
    })
    .await?;
    let group_rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT account_id, group_id FROM mkt_wap_account_groups")
            .fetch_all(pool)
            .await?;
    let group_of: HashMap<Uuid, Uuid> = group_rows.into_iter().collect();
    step(
        started,
        format!("      {} groups discovered", group_of.len()),
    );

    // The load and the sampler.
    let csv_path = out.join("soak.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
    writeln!(csv, "{}", csv_header(ids.len()))?;
    csv.flush()?;
    let worker_pid = roles
        .iter()
        .find(|r| r.name == "worker")
        .map(Role::pid)
        .unwrap_or(0);
    let load_start = started.elapsed().as_secs_f64();
    step(
        started,
        format!(
            "load: {} messages/min (every {}th an image, every {}th to a group) for {}; sampling every {}",
            args.rate,
            args.media_every,
            args.group_every,
            humantime::format_duration(args.duration),
            humantime::format_duration(args.sample_every)
        ),
    );
    let mut posted = Posted::default();
    let mut samples: Vec<Sample> = Vec::new();
    let period = Duration::from_secs_f64(60.0 / f64::from(args.rate));
    let mut send_tick = tokio::time::interval(period);
    send_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample_tick = tokio::time::interval(args.sample_every);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let load_end = Instant::now() + args.duration;
    let mut n: u64 = 0;
    let mut role_died = None;
    loop {
        tokio::select! {
            _ = send_tick.tick(), if Instant::now() < load_end => {
                n += 1;
                let i = ((n - 1) % ids.len() as u64) as usize;
                let account = ids[i];
                let req = message_request(args, n, i, account, group_of.get(&account).copied());
                match api.call(Method::POST, "/v1/messages", Some(req)).await {
                    Ok(v) => {
                        let ids: Vec<Uuid> = v["messages"].as_array().map(|a| a.iter().filter_map(|m| m["id"].as_str()?.parse().ok()).collect()).unwrap_or_default();
                        posted.accepted.insert(n, ids);
                    }
                    Err(e) => posted.refused.push((n, e.to_string())),
                }
            }
            _ = sample_tick.tick() => {
                let s = take_sample(started, pool, roles, worker_pid, &ids, n).await?;
                writeln!(csv, "{}", csv_row(&s))?;
                csv.flush()?;
                step(started, format!(
                    "      posted {} sent {} delivered {} read {} failed {} queue {} · worker {:.0} MiB · Chromium {} sessions {:.0} MiB PSS · sim {:.0} MiB · load {}",
                    s.posted, s.sent, s.delivered, s.read, s.failed, s.queue_depth,
                    mib(s.roles[1].rss_kib), s.sessions, mib(s.chromium.pss_kib), mib(s.roles[3].rss_kib), s.load1
                ));
                samples.push(s);
                if Instant::now() >= load_end {
                    break;
                }
            }
        }
        for r in roles.iter_mut() {
            if let Some(status) = r.child.try_wait()? {
                role_died = Some(format!(
                    "`courier {}` exited during the run ({status})",
                    r.name
                ));
            }
        }
        if role_died.is_some() {
            break;
        }
    }
    if let Some(e) = role_died {
        return Err(format!("soak: {e}; see {}", out.display()).into());
    }

    // Drain: every accepted message reaches a final state.
    step(started, "load stopped; draining the queue …");
    let accepted: usize = posted.accepted.values().map(Vec::len).sum();
    let drained = wait_for("the queue to drain", args.drain_timeout, || async move {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mkt_wap_messages WHERE status NOT IN ('sent','delivered','read','failed')",
        )
        .fetch_one(pool)
        .await?;
        Ok(open == 0)
    })
    .await;
    // Reads trail sends by the simulator's ack timing and the ack follow-up.
    let _ = wait_for("read receipts", Duration::from_secs(90), || async move {
        let (unread,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM mkt_wap_messages WHERE status IN ('sent','delivered')",
        )
        .fetch_one(pool)
        .await?;
        Ok(unread == 0)
    })
    .await;
    let last = take_sample(started, pool, roles, worker_pid, &ids, n).await?;
    writeln!(csv, "{}", csv_row(&last))?;
    csv.flush()?;

    // The check: the simulator's read-back against the database.
    let reached = ctl.all_messages().await?;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in &reached.messages {
        if let Some(k) = m.message.body.as_deref().and_then(seq_of) {
            *seen.entry(k).or_default() += 1;
        }
    }
    let duplicates: usize = seen.values().map(|c| c.saturating_sub(1)).sum();
    let (db_total, db_sent, db_failed, db_open): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('sent','delivered','read')), \
                count(*) FILTER (WHERE status = 'failed'), \
                count(*) FILTER (WHERE status NOT IN ('sent','delivered','read','failed')) \
         FROM mkt_wap_messages",
    )
    .fetch_one(pool)
    .await?;
    let failed_ids: HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM mkt_wap_messages WHERE status = 'failed'")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let lost: Vec<u64> = posted
        .accepted
        .iter()
        .filter(|(k, ids)| !seen.contains_key(k) && !ids.iter().any(|i| failed_ids.contains(i)))
        .map(|(k, _)| *k)
        .collect();
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM mkt_wap_messages GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;

    let mut report = String::new();
    report.push_str(&format!(
        "courier soak: {} accounts, {} messages/min for {} (image every {}th, group every {}th), sampled every {}\n\n",
        ids.len(),
        args.rate,
        humantime::format_duration(args.duration),
        args.media_every,
        args.group_every,
        humantime::format_duration(args.sample_every)
    ));
    report.push_str(&summary(&samples, load_start, args.duration));
    report.push_str(&format!(
        "\nMessages: {n} posted, {} accepted ({accepted} rows), {} refused by the API; in the DB {db_total} \
         ({db_sent} sent or later, {db_failed} failed, {db_open} not final); by status {:?}.\n\
         Simulator read-back: {} received ({} distinct), duplicates {duplicates}, lost {}{}.\n",
        posted.accepted.len(),
        posted.refused.len(),
        by_status,
        reached.messages.len(),
        seen.len(),
        lost.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(" (first: {:?})", &lost[..lost.len().min(10)])
        }
    ));
    if let Some((k, e)) = posted.refused.first() {
        report.push_str(&format!("First refusal: #{k}: {e}\n"));
    }
    std::fs::write(out.join("summary.md"), &report)?;
    println!("\n{report}");
    println!("CSV: {}", csv_path.display());
    drained?;
    if duplicates > 0 || !lost.is_empty() || db_total as usize != accepted {
        return Err(format!(
            "soak: {duplicates} duplicates, {} lost, {db_total} rows for {accepted} accepted",
            lost.len()
        )
        .into());
    }
    Ok(())
}

fn contact_phone(account: usize, c: usize) -> String {
    format!("9198765{account:02}{c:03}")
}

/// The request for message `n` from account index `i`.
fn message_request(args: &SoakArgs, n: u64, i: usize, account: Uuid, group: Option<Uuid>) -> Value {
    let round = (n - 1) / args.accounts as u64;
    let phone = contact_phone(i, round as usize % args.contacts.max(1));
    let key = format!("soak-{n}");
    if args.media_every > 0 && n % args.media_every == 0 {
        return json!({"account_id": account, "message_type": "image", "media_path": "offer.png",
            "caption": body(n), "channel_type": "individual", "target_phone": phone, "idempotency_key": key});
    }
    if let (true, Some(g)) = (args.group_every > 0 && n % args.group_every == 0, group) {
        return json!({"account_id": account, "message_type": "text", "message_text": body(n),
            "channel_type": "group", "target_group_id": g, "idempotency_key": key});
    }
    json!({"account_id": account, "message_type": "text", "message_text": body(n),
        "channel_type": "individual", "target_phone": phone, "idempotency_key": key})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_its_gradient_and_flat_noise_is_near_zero() {
        let line: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64 / 60.0, 100.0 + 12.0 * i as f64 / 60.0))
            .collect();
        assert!((slope(&line).unwrap() - 12.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64, if i % 2 == 0 { 5.0 } else { 6.0 }))
            .collect();
        assert!(slope(&flat).unwrap().abs() < 0.01);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn bodies_carry_their_sequence_number() {
        assert_eq!(seq_of(&body(417)), Some(417));
        assert_eq!(seq_of("hello"), None);
    }

    #[test]
    fn smaps_rollup_reads_this_process() {
        let (rss, pss) = smaps_rollup(std::process::id()).expect("own smaps_rollup");
        assert!(rss > 0 && pss > 0 && pss <= rss);
    }
}
