//! The queue engine across real worker processes (`courier worker`, spawned):
//! budgets hold across processes, `kill -9` loses nothing, a stopped worker is
//! fenced, SIGTERM shuts down cleanly.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::jobs::send::SendJob;
use courier::queue::NewJob;
use courier_testkit::{fresh_database, TestDb};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::PgPool;
use uuid::Uuid;

struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn spawn(t: &TestDb, dir: &std::path::Path, name: &str, vars: &[(&str, &str)]) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
        for (k, _) in std::env::vars() {
            if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(["worker", "--handler", "noop-record"])
            .env("COURIER__DATABASE__URL", &t.url)
            .env("COURIER__DATABASE__MAX_CONNECTIONS", "6")
            .env("COURIER__QUEUE__POLL_INTERVAL", "500ms")
            .env("COURIER__LOG__LEVEL", "info,sqlx=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Worker {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(mut self) {
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "worker exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "worker did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn account(pool: &PgPool, limits: serde_json::Value) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, status, rate_limit_config, created_at) \
         VALUES ('proc', 'active', $1, now() - interval '30 days') RETURNING id",
    )
    .bind(limits)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn send(account: Uuid) -> NewJob {
    NewJob::new(
        account,
        &SendJob {
            message_id: Uuid::new_v4(),
        },
    )
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(limit: Duration, pool: &PgPool, sql: &str, want: i64) -> i64 {
    let start = Instant::now();
    loop {
        let n = count(pool, sql).await;
        if n == want || start.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Most sends inside any window `(t - w, t]`.
fn max_in_window(slots: &[DateTime<Utc>], w: chrono::Duration) -> usize {
    slots
        .iter()
        .map(|&t| slots.iter().filter(|&&s| s > t - w && s <= t).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_across_three_worker_processes_at_the_full_allowed_rate() {
    let t = fresh_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (per_minute, per_hour) = (3usize, 5usize);
    let limits =
        serde_json::json!({"per_minute": per_minute, "per_hour": per_hour, "per_day": 100});
    let mut jobs = Vec::new();
    let mut accounts = Vec::new();
    for _ in 0..20 {
        let a = account(&t.pool, limits.clone()).await;
        accounts.push(a);
        // Demand (8) exceeds the hourly budget (5).
        jobs.extend((0..8).map(|_| send(a)));
    }
    courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    let vars = [
        ("COURIER__QUEUE__CAPACITY", "4"),
        ("COURIER__BUDGET__MIN_GAP", "1s"),
        ("COURIER__BUDGET__JITTER", "500ms"),
    ];
    let workers: Vec<Worker> = (0..3)
        .map(|i| Worker::spawn(&t, dir.path(), &format!("w{i}"), &vars))
        .collect();

    // After one (guarded) minute each account may send 2 more (hour cap 5),
    // then nothing.
    let sent = wait_for(
        Duration::from_secs(110),
        &t.pool,
        "SELECT count(*) FROM queue_handler_records",
        (20 * per_hour) as i64,
    )
    .await;
    // Nothing more may go out: give a wrong worker the chance to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs: Vec<String> = workers.iter().map(Worker::log).collect();
    for w in workers {
        w.terminate();
    }
    assert_eq!(
        sent,
        (20 * per_hour) as i64,
        "logs:\n{}",
        logs.join("\n---\n")
    );

    let rows: Vec<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT account_id, slot_at, worker FROM queue_handler_records ORDER BY slot_at",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 20 * per_hour);
    let mut by_account: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for (a, at, w) in rows {
        by_account.entry(a).or_default().push(at);
        *by_worker.entry(w).or_default() += 1;
    }
    assert!(
        by_worker.len() >= 2,
        "work was spread over processes: {by_worker:?}"
    );
    for a in &accounts {
        let s = &by_account[a];
        assert_eq!(s.len(), per_hour, "account {a}");
        // No sliding window of any size exceeds its limit.
        assert!(max_in_window(s, chrono::Duration::seconds(60)) <= per_minute);
        assert!(max_in_window(s, chrono::Duration::seconds(3600)) <= per_hour);
        assert!(max_in_window(s, chrono::Duration::seconds(86400)) <= 100);
        // Pacing: at least the minimum gap between sends.
        for w in s.windows(2) {
            assert!(w[1] - w[0] >= chrono::Duration::seconds(1), "{s:?}");
        }
        // Full rate: the first minute's budget is used at once (pacing only) …
        assert!(
            s[per_minute - 1] - started < chrono::Duration::seconds(20),
            "first {per_minute} sends took until {:?} after start",
            s[per_minute - 1] - started
        );
        // … and the next send goes out when the minute window frees (counted
        // over the minute plus the send deadline, see budget::SEND_DEADLINE),
        // not later.
        let frees = s[0] + courier::account::budget::Window::Minute.guarded();
        let late = s[per_minute] - frees;
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::seconds(3),
            "send {} was {late:?} after its window freed",
            per_minute + 1
        );
    }
    // The rest wait, snoozed to the instant the hour window frees, unspent.
    let waiting: Vec<(i32, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT attempt, run_at, account_id FROM queue_jobs WHERE state <> 'completed'",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(waiting.len(), 20 * (8 - per_hour));
    for (attempt, run_at, a) in waiting {
        assert_eq!(attempt, 0);
        let hour_frees = by_account[&a][0] + chrono::Duration::seconds(3600);
        assert!(
            run_at >= hour_frees - chrono::Duration::seconds(2),
            "{run_at} vs {hour_frees}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_job_and_leases_move_to_the_survivors() {
    let t = fresh_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let generous = serde_json::json!({"per_minute": 10000, "per_hour": 100000, "per_day": 1000000});
    let mut jobs = Vec::new();
    for _ in 0..8 {
        let a = account(&t.pool, generous.clone()).await;
        jobs.extend((0..40).map(|_| send(a)));
    }
    courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    let total = jobs.len() as i64;
    let vars = [
        ("COURIER__QUEUE__CAPACITY", "3"),
        ("COURIER__QUEUE__LEASE_TTL", "3s"),
        ("COURIER__QUEUE__HEARTBEAT_INTERVAL", "1s"),
        ("COURIER__QUEUE__HANDLER_DELAY", "150ms"),
        ("COURIER__BUDGET__MIN_GAP", "0s"),
        ("COURIER__BUDGET__JITTER", "0s"),
    ];
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| Worker::spawn(&t, dir.path(), &format!("w{i}"), &vars))
        .collect();
    let mut killed = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Kill the worker that is running the most jobs right now.
        let victim = workers.remove(0);
        let running = count(
            &t.pool,
            &format!(
                "SELECT count(*) FROM queue_jobs WHERE state = 'running' AND attempted_by LIKE '%:{}:%'",
                victim.pid()
            ),
        )
        .await;
        killed.push((victim.pid(), running));
        victim.kill9();
        workers.push(Worker::spawn(&t, dir.path(), &format!("r{round}"), &vars));
    }
    let done = wait_for(
        Duration::from_secs(120),
        &t.pool,
        "SELECT count(*) FROM queue_jobs WHERE state = 'completed'",
        total,
    )
    .await;
    let logs: Vec<String> = workers.iter().map(Worker::log).collect();
    for w in workers {
        w.terminate();
    }
    assert_eq!(
        done,
        total,
        "every job completes; logs:\n{}",
        logs.join("\n---\n")
    );
    assert!(
        killed.iter().any(|(_, running)| *running > 0),
        "some kill hit running jobs: {killed:?}"
    );
    // Nothing lost: every job's handler ran; a second run happened only for a
    // job whose worker died under it (it was rescued, its attempt given back).
    let (records, reruns_without_rescue): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE r.runs > 1 AND j.rescues = 0) \
         FROM queue_handler_records r JOIN queue_jobs j ON j.id = r.job_id",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(records, total);
    assert_eq!(reruns_without_rescue, 0);
    let rescued = count(
        &t.pool,
        "SELECT coalesce(sum(rescues), 0)::int8 FROM queue_jobs",
    )
    .await;
    assert!(rescued >= 1, "the kills left running jobs to rescue");
    let over = count(&t.pool, "SELECT count(*) FROM queue_jobs WHERE attempt > 1").await;
    assert_eq!(over, 0, "a crash does not spend an attempt");
    // The killed workers hold nothing: their leases moved on.
    for (pid, _) in &killed {
        let held = count(
            &t.pool,
            &format!("SELECT count(*) FROM account_leases WHERE owner LIKE '%:{pid}:%'"),
        )
        .await;
        assert_eq!(held, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_whose_lease_was_taken_over_cannot_complete_its_job() {
    let t = fresh_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let job = courier::queue::enqueue(&t.pool, &send(a)).await.unwrap();
    let vars = [
        ("COURIER__QUEUE__LEASE_TTL", "2s"),
        ("COURIER__QUEUE__HEARTBEAT_INTERVAL", "500ms"),
        ("COURIER__QUEUE__HANDLER_DELAY", "3s"),
        ("COURIER__BUDGET__MIN_GAP", "0s"),
        ("COURIER__BUDGET__JITTER", "0s"),
    ];
    let first = Worker::spawn(&t, dir.path(), "first", &vars);
    let running = wait_for(
        Duration::from_secs(20),
        &t.pool,
        &format!(
            "SELECT count(*) FROM queue_jobs WHERE state = 'running' AND attempted_by LIKE '%:{}:%'",
            first.pid()
        ),
        1,
    )
    .await;
    assert_eq!(running, 1, "{}", first.log());
    first.signal(Signal::SIGSTOP);

    let second = Worker::spawn(&t, dir.path(), "second", &vars);
    let by_second = format!(
        "SELECT count(*) FROM queue_jobs WHERE state = 'completed' AND attempted_by LIKE '%:{}:%'",
        second.pid()
    );
    let done = wait_for(Duration::from_secs(30), &t.pool, &by_second, 1).await;
    assert_eq!(done, 1, "{}", second.log());

    // The first worker wakes up, finishes its handler and tries to complete.
    first.signal(Signal::SIGCONT);
    let start = Instant::now();
    while !first.log().contains("fenced") && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.log().contains("outcome refused"), "{}", first.log());
    let j = courier::queue::get_job(&t.pool, job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.state(), courier::queue::JobState::Completed);
    assert!(
        j.attempted_by
            .as_deref()
            .unwrap_or_default()
            .contains(&format!(":{}:", second.pid())),
        "completed by the second worker"
    );
    assert_eq!(j.rescues, 1);
    assert_eq!(j.attempt, 1, "the lost attempt was given back");
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM account_leases WHERE account_id = $1")
        .bind(a)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert!(epoch >= 2);
    first.terminate();
    second.terminate();
}
