//! The browser layer end to end: real Chromium and chromedriver, the
//! WhatsApp Web simulator, a real Postgres, and the queue worker running the
//! `login` and `health_check` handlers exactly as `courier worker` does.
//!
//! Each seed failure (file 004) has a test that makes it impossible: the
//! phone is read from the page state, not an event; no login status outlives
//! its deadline; a session survives a worker restart, a move to another
//! machine, and a chromedriver crash.
//!
//! Tests take a process-wide lock so only one set of browsers runs at a time
//! (CI machines have 2 cores).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier::account::login::start_login;
use courier::browser::{BrowserPool, NumberCheck, SnapshotKey};
use courier::config::{Secret, Settings};
use courier::queue::NewJob;
use courier::worker::schedule_health_check;
use courier_sim::{SimConfig, SimControl, Simulator};
use courier_testkit::{fresh_database, scan_stored_qr, InProcessWorker as Worker, TestDb};
use serde_json::json;
use uuid::Uuid;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PHONE: &str = "+447700900123";
const DIGITS: &str = "447700900123";

struct Env {
    db: TestDb,
    sim: Simulator,
    ctl: SimControl,
    key: SnapshotKey,
    dirs: tempfile::TempDir,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    status_reason: Option<String>,
    status_deadline: Option<chrono::DateTime<chrono::Utc>>,
    phone_number: Option<String>,
    qr_token: Option<String>,
    qr_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    health_score: i32,
    last_ready_at: Option<chrono::DateTime<chrono::Utc>>,
    has_snapshot: bool,
}

impl Env {
    async fn start(sim: SimConfig) -> Self {
        Self::start_serving(sim, courier::browser::WaWeb::builtin()).await
    }

    /// With a simulator serving the modules of `names` (a WhatsApp Web build).
    async fn start_serving(sim: SimConfig, names: courier::browser::WaWeb) -> Self {
        let one = ONE_AT_A_TIME.lock().await;
        let db = fresh_database().await.unwrap();
        let sim = Simulator::start_with_names(
            "127.0.0.1:0".parse().unwrap(),
            sim,
            courier::browser::Selectors::builtin(),
            names,
        )
        .await
        .unwrap();
        let ctl = sim.control();
        Self {
            db,
            sim,
            ctl,
            key: SnapshotKey::random(),
            dirs: tempfile::tempdir().unwrap(),
            _one: one,
        }
    }

    /// A "machine": its own profiles directory.
    fn machine(&self, name: &str) -> PathBuf {
        self.dirs.path().join(name)
    }

    fn settings(&self, profiles: &Path, tweak: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = Settings::defaults();
        s.queue.handler = "browser".into();
        s.queue.capacity = 2;
        s.queue.lease_ttl = Duration::from_secs(3);
        s.queue.heartbeat_interval = Duration::from_millis(500);
        s.queue.poll_interval = Duration::from_millis(200);
        s.queue.lease_hold = Duration::from_millis(500);
        s.queue.job_timeout = Duration::from_secs(60);
        s.queue.shutdown_grace = Duration::from_secs(5);
        let b = &mut s.browser;
        b.page_url = format!("{}/?account={{account}}", self.sim.url());
        b.profiles_dir = profiles.to_path_buf();
        b.media_dir = self.dirs.path().join("media");
        b.starting_deadline = Duration::from_secs(15);
        b.qr_deadline = Duration::from_secs(30);
        b.authenticating_deadline = Duration::from_secs(15);
        b.command_timeout = Duration::from_secs(5);
        b.idle_close_after = Duration::from_secs(30);
        b.health_check_interval = Duration::from_secs(3600);
        b.session_key = Some(Secret::new(self.key.to_hex()));
        tweak(&mut s);
        s.validate().unwrap();
        s
    }

    async fn worker(&self, settings: &Settings) -> Worker {
        Worker::start(&self.db.pool, settings).await.unwrap()
    }

    /// An account in Courier and in the simulator (same id).
    async fn account(&self) -> Uuid {
        courier_testkit::sim_account(&self.db.pool, &self.ctl, "test", json!({})).await
    }

    async fn row(&self, id: Uuid) -> Row {
        sqlx::query_as(
            "SELECT status, status_reason, status_deadline, phone_number, qr_token, qr_expires_at, \
             health_score, last_ready_at, session_snapshot IS NOT NULL AS has_snapshot \
             FROM mkt_wap_accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    async fn wait_row(&self, id: Uuid, what: &str, secs: u64, f: impl Fn(&Row) -> bool) -> Row {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.row(id).await;
            if f(&r) {
                return r;
            }
            if Instant::now() >= deadline {
                let jobs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
                    "SELECT kind, state, attempt, last_error FROM queue_jobs WHERE account_id = $1 \
                     ORDER BY created_at",
                )
                .bind(id)
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
                panic!("timed out waiting for {what}; account is {r:?}; jobs {jobs:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_status(&self, id: Uuid, status: &str, secs: u64) -> Row {
        self.wait_row(id, &format!("status {status}"), secs, |r| {
            r.status == status
        })
        .await
    }

    /// Logs the account in through the worker: login job, QR from the DB,
    /// scan through the simulator's control API.
    async fn login(&self, id: Uuid) -> Row {
        start_login(&self.db.pool, id).await.unwrap();
        let r = self
            .wait_row(id, "a QR in the DB", 30, |r| r.qr_token.is_some())
            .await;
        assert_eq!(r.status, "qr_pending");
        scan_stored_qr(&self.db.pool, &self.ctl, id, PHONE, Duration::from_secs(30)).await;
        self.wait_status(id, "active", 30).await
    }

    async fn jobs_of(&self, id: Uuid, kind: &str) -> Vec<(String, i32)> {
        sqlx::query_as("SELECT state, attempt FROM queue_jobs WHERE account_id = $1 AND kind = $2 ORDER BY created_at")
            .bind(id)
            .bind(kind)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    async fn wait_jobs_done(&self, id: Uuid, kind: &str, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let jobs = self.jobs_of(id, kind).await;
            if jobs.iter().filter(|(s, _)| s == "completed").count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{kind} jobs not done: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn health_check_now(&self, id: Uuid) {
        schedule_health_check(&self.db.pool, id, Duration::ZERO)
            .await
            .unwrap();
    }

    /// Health checks until the account reaches `status`, as the periodic
    /// check would: the phone's action reaches the open page through its
    /// long poll a few milliseconds after the control call returns, and a
    /// check that reads the page inside that window rightly still sees it
    /// ready (seen under load in CI). Bounded by `secs`.
    async fn check_until_status(&self, id: Uuid, status: &str, secs: u64) -> Row {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.health_check_now(id).await;
            let step = Instant::now() + Duration::from_secs(3);
            while Instant::now() < step {
                let r = self.row(id).await;
                if r.status == status {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if Instant::now() >= deadline {
                return self.wait_status(id, status, 0).await;
            }
        }
    }

    /// The simulator's pairing device number (bumped by every new QR pairing).
    async fn sim_wid(&self, id: Uuid) -> String {
        self.ctl.account(&id.to_string()).await.unwrap()["wid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn quick_sim() -> SimConfig {
    SimConfig {
        first_ref: Duration::from_millis(1500),
        next_ref: Duration::from_millis(1000),
        max_refs: 40,
        loading: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn login_end_to_end_stores_each_qr_then_activates_with_the_phone_from_the_page() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;

    start_login(&env.db.pool, id).await.unwrap();
    let first = env
        .wait_row(id, "a QR in the DB", 30, |r| r.qr_token.is_some())
        .await;
    assert_eq!(first.status, "qr_pending");
    assert!(first.status_deadline.is_some(), "qr_pending has a deadline");
    assert!(first.qr_expires_at.unwrap() > chrono::Utc::now());
    // The QR rotates in place; every rotation reaches the DB.
    let t1 = first.qr_token.clone().unwrap();
    let second = env
        .wait_row(id, "a rotated QR in the DB", 10, |r| {
            r.qr_token.as_deref().is_some_and(|t| t != t1)
        })
        .await;
    let t2 = second.qr_token.unwrap();
    assert_eq!(t2.split(',').count(), 5, "{t2}");
    env.ctl.scan(&id.to_string(), &t2, PHONE).await.unwrap();

    let r = env.wait_status(id, "active", 30).await;
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS));
    assert!(r.qr_token.is_none() && r.qr_expires_at.is_none());
    assert!(r.status_deadline.is_none());
    assert!(r.status_reason.unwrap().contains("own number"));
    assert!(r.last_ready_at.is_some());
    env.wait_jobs_done(id, "login", 1, 10).await;
    // The snapshot is stored once the session settled.
    env.wait_row(id, "a session snapshot", 15, |r| r.has_snapshot)
        .await;
    // Transitions were counted, and the profile is private.
    let mode = std::fs::metadata(env.machine("m1").join(id.to_string()))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    // A health check is queued for later.
    assert_eq!(env.jobs_of(id, "health_check").await.len(), 1);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn an_account_whatsapp_knows_by_its_lid_alone_comes_up_active_and_keeps_its_stored_number() {
    // WhatsApp moves accounts to LIDs: the page's own id is then `<lid>@lid`
    // (`getMaybeMeLidUser`), with no phone-number id. The account must come
    // up active, and its stored number must never become the LID's digits.
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    sqlx::query("UPDATE mkt_wap_accounts SET phone_number = $2 WHERE id = $1")
        .bind(id)
        .bind(DIGITS)
        .execute(&env.db.pool)
        .await
        .unwrap();
    env.ctl
        .faults(&id.to_string(), json!({ "lid_only": true }))
        .await
        .unwrap();
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    let r = env.login(id).await;
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS), "{r:?}");
    env.wait_jobs_done(id, "login", 1, 10).await;
    // A later check of the page (own id still the LID) keeps it so.
    env.health_check_now(id).await;
    env.wait_jobs_done(id, "health_check", 1, 20).await;
    let r = env.row(id).await;
    assert_eq!(r.status, "active");
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS), "{r:?}");
    w.stop().await.unwrap();
}

#[tokio::test]
async fn stuck_loading_fails_with_a_reason_at_the_deadline_then_recovers_on_retry() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let settings = env.settings(&env.machine("m1"), |s| {
        s.browser.authenticating_deadline = Duration::from_secs(3)
    });
    let w = env.worker(&settings).await;
    env.ctl
        .faults(&id.to_string(), json!({ "stuck_loading": true }))
        .await
        .unwrap();
    start_login(&env.db.pool, id).await.unwrap();
    let r = env
        .wait_row(id, "a QR in the DB", 30, |r| r.qr_token.is_some())
        .await;
    let scanned = Instant::now();
    env.ctl
        .scan(&id.to_string(), r.qr_token.as_deref().unwrap(), PHONE)
        .await
        .unwrap();
    env.wait_status(id, "authenticating", 10).await;
    let r = env.wait_status(id, "failed", 15).await;
    assert!(scanned.elapsed() >= Duration::from_secs(3));
    let reason = r.status_reason.unwrap();
    assert!(reason.contains("not ready within"), "{reason}");
    assert!(r.status_deadline.is_none() && r.phone_number.is_none());

    // The fault clears; a retry (a new login run) reaches active without a QR.
    env.ctl
        .faults(&id.to_string(), json!({ "stuck_loading": false }))
        .await
        .unwrap();
    let wid = env.sim_wid(id).await;
    start_login(&env.db.pool, id).await.unwrap();
    let r = env.wait_status(id, "active", 30).await;
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS));
    assert_eq!(env.sim_wid(id).await, wid, "no second pairing");
    w.stop().await.unwrap();
}

#[tokio::test]
async fn qr_refs_running_out_lead_back_to_inactive_with_a_reason() {
    let env = Env::start(SimConfig {
        first_ref: Duration::from_millis(800),
        next_ref: Duration::from_millis(400),
        max_refs: 3,
        ..quick_sim()
    })
    .await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    start_login(&env.db.pool, id).await.unwrap();
    env.wait_status(id, "qr_pending", 30).await;
    let r = env.wait_status(id, "inactive", 20).await;
    assert!(r.status_reason.unwrap().contains("ran out"));
    assert!(r.qr_token.is_none() && r.status_deadline.is_none());
    env.wait_jobs_done(id, "login", 1, 10).await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_worker_crash_a_new_worker_brings_the_account_back_active_without_a_qr() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let settings = env.settings(&env.machine("m1"), |_| {});
    let w = env.worker(&settings).await;
    let before = env.login(id).await;
    env.wait_row(id, "a session snapshot", 15, |r| r.has_snapshot)
        .await;
    let wid = env.sim_wid(id).await;
    w.crash().await;

    // A new worker process on the same machine (same profiles directory).
    let w2 = env.worker(&settings).await;
    env.health_check_now(id).await;
    let r = env
        .wait_row(id, "a fresh ready from the new worker", 30, |r| {
            r.last_ready_at > before.last_ready_at
        })
        .await;
    assert_eq!(r.status, "active");
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS));
    assert!(r.qr_token.is_none());
    assert_eq!(env.sim_wid(id).await, wid, "no new QR pairing");
    assert_eq!(r.health_score, before.health_score);
    w2.stop().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_restored_into_an_empty_profile_on_another_machine_is_active_without_a_qr() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    let before = env.login(id).await;
    env.wait_row(id, "a session snapshot", 15, |r| r.has_snapshot)
        .await;
    let wid = env.sim_wid(id).await;
    w.stop().await.unwrap();

    // Another machine: an empty profiles directory, the same Postgres.
    let m2 = env.machine("m2");
    assert!(!m2.exists());
    let w2 = env.worker(&env.settings(&m2, |_| {})).await;
    env.health_check_now(id).await;
    let r = env
        .wait_row(id, "ready on the second machine", 30, |r| {
            r.last_ready_at > before.last_ready_at
        })
        .await;
    assert_eq!(r.status, "active");
    assert!(r.qr_token.is_none());
    assert_eq!(env.sim_wid(id).await, wid, "no new QR pairing");
    assert!(m2
        .join(id.to_string())
        .join("Default/Local Storage")
        .exists());
    w2.stop().await.unwrap();

    // The wrong key is a clear, permanent error, not a QR.
    let m3 = env.machine("m3");
    let wrong = env.settings(&m3, |s| {
        s.browser.session_key = Some(Secret::new(SnapshotKey::random().to_hex()))
    });
    let w3 = env.worker(&wrong).await;
    env.health_check_now(id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let err: String = loop {
        let e: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM queue_jobs WHERE account_id = $1 AND kind = 'health_check' \
             AND state = 'discarded' LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&env.db.pool)
        .await
        .unwrap()
        .flatten();
        if let Some(e) = e {
            break e;
        }
        assert!(Instant::now() < deadline, "wrong key not reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(err.contains("wrong browser.session_key"), "{err}");
    w3.stop().await.unwrap();
}

#[tokio::test]
async fn killing_chromedriver_mid_session_brings_the_session_back_with_health_unchanged() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    let before = env.login(id).await;
    env.wait_row(id, "a session snapshot", 15, |r| r.has_snapshot)
        .await;
    assert!(w.browser.open_accounts().contains(&id), "session is open");
    let pid = w.browser.hub().driver_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The supervisor restarts chromedriver on a new port.
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.browser.hub().driver_pid().is_none_or(|p| p == pid) {
        assert!(Instant::now() < deadline, "chromedriver not restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.health_check_now(id).await;
    let r = env
        .wait_row(id, "the session back", 30, |r| {
            r.last_ready_at > before.last_ready_at
        })
        .await;
    assert_eq!(r.status, "active");
    assert_eq!(
        r.health_score, before.health_score,
        "infra faults cost no health"
    );
    assert!(r.qr_token.is_none());
    w.stop().await.unwrap();
}

/// WhatsApp shipped a build without a module the names file lists: the
/// session start detects it, the account fails with the missing name, and a
/// queued send waits untouched.
#[tokio::test]
async fn a_whatsapp_web_build_missing_a_module_fails_the_account_at_session_start_and_sends_wait() {
    let mut build = courier::browser::WaWeb::builtin();
    build.modules.remove("FindChat");
    let env = Env::start_serving(quick_sim(), build).await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    let send = NewJob::new(
        id,
        &courier::jobs::send::SendJob {
            message_id: Uuid::new_v4(),
        },
    )
    .unwrap();
    start_login(&env.db.pool, id).await.unwrap();
    let r = env.wait_status(id, "failed", 30).await;
    assert_eq!(
        r.status_reason.as_deref(),
        Some("WhatsApp Web build not supported: WAWebFindChatAction missing")
    );
    let job = courier::queue::enqueue(&env.db.pool, &send).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM queue_jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempt),
        ("available", 0),
        "the send waits"
    );
    let back = env.ctl.messages(&id.to_string()).await.unwrap();
    assert!(back.messages.is_empty() && back.refused.is_empty());
    w.stop().await.unwrap();
}

#[tokio::test]
async fn logout_and_block_faults_set_their_statuses_and_keep_queued_jobs() {
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let w = env.worker(&env.settings(&env.machine("m1"), |_| {})).await;
    let before = env.login(id).await;
    env.wait_jobs_done(id, "login", 1, 15).await;

    // "Open in another window": one "Use here" click takes the session back.
    env.ctl
        .faults(&id.to_string(), json!({ "conflict": true }))
        .await
        .unwrap();
    // As with the faults below, a check that reads the page before the
    // conflict screen reaches it sees the session ready; the next one clicks.
    let mut checks = 0;
    let faults = loop {
        checks += 1;
        env.health_check_now(id).await;
        env.wait_jobs_done(id, "health_check", checks, 30).await;
        let faults = env.ctl.account(&id.to_string()).await.unwrap()["faults"].clone();
        if faults["conflict"] == false || checks == 5 {
            break faults;
        }
    };
    let r = env.row(id).await;
    assert_eq!(r.status, "active");
    assert_eq!(faults["conflict"], false, "Use here was clicked: {faults}");

    // Logged out from the phone: the health check sees it.
    env.ctl.logout(&id.to_string()).await.unwrap();
    let r = env.check_until_status(id, "logged_out", 30).await;
    assert!(r.status_reason.unwrap().contains("logged out"));
    assert!(r.health_score < before.health_score);

    // A send queued now is neither run nor lost.
    let send = NewJob::new(
        id,
        &courier::jobs::send::SendJob {
            message_id: Uuid::new_v4(),
        },
    )
    .unwrap();
    let job = courier::queue::enqueue(&env.db.pool, &send).await.unwrap();

    // Blocked: status banned, health to zero.
    env.ctl
        .faults(&id.to_string(), json!({ "blocked": true }))
        .await
        .unwrap();
    let r = env.check_until_status(id, "banned", 30).await;
    assert!(r.status_reason.unwrap().contains("blocked"));
    assert_eq!(r.health_score, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM queue_jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempt),
        ("available", 0),
        "the send waits, untouched"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn the_page_object_sends_text_links_and_media_and_reads_acks_chats_participants_and_history()
{
    use courier::browser::{AckLevel, MediaSource, PageError, Selectors};
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let settings = env.settings(&env.machine("m1"), |s| {
        s.browser.media_max_bytes = 1000;
        // The media host below is on loopback.
        s.browser.media_allow_cidrs = vec!["127.0.0.0/8".into()];
    });
    let w = env.worker(&settings).await;
    env.login(id).await;
    env.wait_jobs_done(id, "login", 1, 15).await;
    w.stop().await.unwrap();

    let sid = id.to_string();
    let contact = env
        .ctl
        .add_contact("+447700800001", Some("Asha"), &[&sid])
        .await
        .unwrap();
    let participants: Vec<_> = (0..45)
        .map(|i| json!({ "phone": format!("+4477008100{i:02}"), "name": format!("P{i}"), "admin": i == 0 }))
        .collect();
    let group = env
        .ctl
        .create_group("Farmers", participants, &[&sid])
        .await
        .unwrap();
    env.ctl
        .ack_timing(
            &sid,
            json!({ "server_ms": 30, "device_ms": 30, "read_ms": 30 }),
        )
        .await
        .unwrap();
    // Media served over HTTP: one small file, one over the cap.
    let app = axum::Router::new()
        .route(
            "/small.png",
            axum::routing::get(|| async { vec![7u8; 100] }),
        )
        .route("/big.png", axum::routing::get(|| async { vec![7u8; 5000] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let media_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Drive the page directly, as a send handler would, under a lease.
    let lease = courier::queue::store::acquire_account(
        &env.db.pool,
        id,
        "page-object-test",
        Duration::from_secs(120),
        5,
    )
    .await
    .unwrap()
    .unwrap();
    let pool = BrowserPool::start(env.db.pool.clone(), &settings.browser, Selectors::builtin())
        .await
        .unwrap();
    let page = pool.session(&lease).await.unwrap();
    let v = page.wait_ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v.phone.as_deref(), Some(DIGITS));
    assert_eq!(page.own_number().await.unwrap().as_deref(), Some(DIGITS));
    assert_eq!(page.qr_token().await.unwrap(), None);

    let deadline = Instant::now() + Duration::from_secs(5);
    let chats = loop {
        let chats = page.chat_list().await.unwrap();
        if chats.len() >= 2 || Instant::now() > deadline {
            break chats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        chats.iter().any(|c| c.id == contact && c.name == "Asha"),
        "{chats:?}"
    );
    assert!(chats.iter().any(|c| c.id == group), "{chats:?}");

    let text = page
        .send_text(&contact, "Hello from Courier", NumberCheck::Skip)
        .await
        .unwrap();
    assert!(text.data_id.starts_with(&format!("true_{contact}_")));
    let started = Instant::now();
    while page.ack(&text.data_id).await.unwrap() != Some(AckLevel::Read) {
        assert!(started.elapsed() < Duration::from_secs(5), "no read ack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let link = page
        .send_link(
            &contact,
            "Prices https://example.com/feed",
            NumberCheck::Skip,
        )
        .await
        .unwrap();
    assert!(link.link_preview);
    let png = env.dirs.path().join("promo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nsmall").unwrap();
    let image = page
        .send_media(
            &contact,
            &MediaSource::Path(png),
            Some("Look"),
            false,
            NumberCheck::Skip,
        )
        .await
        .unwrap();
    assert!(image.media);
    let fetched = page
        .send_media(
            &contact,
            &MediaSource::Url(format!("{media_url}/small.png")),
            None,
            true,
            NumberCheck::Skip,
        )
        .await
        .unwrap();
    assert!(fetched.media);
    let too_big = page
        .send_media(
            &contact,
            &MediaSource::Url(format!("{media_url}/big.png")),
            None,
            false,
            NumberCheck::Skip,
        )
        .await;
    assert!(matches!(too_big, Err(PageError::Media(_))), "{too_big:?}");

    // The retry path's lookup: what already reached the chat.
    let recent = page.recent_outgoing(&contact, 10).await.unwrap();
    let ids: Vec<_> = recent.iter().map(|m| m.data_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            &text.data_id,
            &link.data_id,
            &image.data_id,
            &fetched.data_id
        ]
    );
    assert_eq!(recent[0].text.as_deref(), Some("Hello from Courier"));

    // Reopening a chat whose history loads slowly (the page shows the chat
    // at once and fills in its rows from the server): the send returns the
    // new row, not an older one that appears after the click.
    page.send_text(&group, "To the group", NumberCheck::Skip)
        .await
        .unwrap();
    env.ctl
        .faults(&sid, json!({ "latency_ms": 400 }))
        .await
        .unwrap();
    let again = page
        .send_text(&contact, "Hello again", NumberCheck::Skip)
        .await
        .unwrap();
    assert!(
        !ids.contains(&again.data_id.as_str()),
        "an older row was taken for the new send: {again:?}"
    );
    assert_eq!(again.text.as_deref(), Some("Hello again"));
    env.ctl
        .faults(&sid, json!({ "latency_ms": 0 }))
        .await
        .unwrap();

    // A text with line breaks and tabs is one message, exactly as given: the
    // send action takes the text, nothing is typed into a compose box.
    let lines = "Offer of the week\nRice 5 kg:\t250\r\n\nReply STOP to opt out";
    let multi = page
        .send_text(&contact, lines, NumberCheck::Skip)
        .await
        .unwrap();
    assert_eq!(multi.text.as_deref(), Some(lines));
    let recent = page.recent_outgoing(&contact, 6).await.unwrap();
    let offers: Vec<_> = recent
        .iter()
        .filter(|m| m.text.as_deref().is_some_and(|t| t.contains("Offer")))
        .collect();
    assert_eq!(offers.len(), 1, "{recent:?}");
    assert_eq!(offers[0].data_id, multi.data_id, "{recent:?}");

    // A lazily rendered participant list is read to the end.
    let members = page.participants(&group).await.unwrap();
    assert_eq!(members.len(), 45);
    assert!(members.iter().filter(|p| p.admin).count() == 1);

    // Exists-check: a number on WhatsApp, one that is not.
    assert!(page.exists("447700810001").await.unwrap());
    env.ctl.not_on_whatsapp("+447700810099").await.unwrap();
    assert!(!page.exists("447700810099").await.unwrap());
    // A send that asks first, in the same page call: to a number that is
    // not on WhatsApp nothing is sent; to one that is and is not in the chat
    // list, the chat is found or created in the page and the message sent.
    let unregistered = page
        .send_text("447700810099@c.us", "never sent", NumberCheck::Ask)
        .await;
    assert!(
        matches!(&unregistered, Err(PageError::NotOnWhatsApp(c)) if c == "447700810099@c.us"),
        "{unregistered:?}"
    );
    let unlisted = "447700810077@c.us";
    assert!(
        !page
            .chat_list()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == unlisted),
        "the number must start outside the chat list"
    );
    let first = page
        .send_text(unlisted, "to a number outside the list", NumberCheck::Ask)
        .await
        .unwrap();
    assert!(
        first.data_id.starts_with(&format!("true_{unlisted}_")),
        "{first:?}"
    );
    // A script error in the page comes back typed, with the page's message.
    let bad = page.exists("not-a-number").await;
    assert!(
        matches!(&bad, Err(PageError::Script { what, message }) if what == "exists" && message.contains("invalid")),
        "{bad:?}"
    );

    // A refused send is a typed error, not a silent success.
    env.ctl
        .faults(&sid, json!({ "refuse_sends": true }))
        .await
        .unwrap();
    let refused = page
        .send_text(&contact, "over quota", NumberCheck::Skip)
        .await;
    assert!(
        matches!(refused, Err(PageError::QuotaRefused(_))),
        "{refused:?}"
    );

    let back = env.ctl.messages(&sid).await.unwrap();
    assert_eq!(back.messages.len(), 8, "each send reached WhatsApp once");
    assert!(
        !back
            .messages
            .iter()
            .any(|m| m.message.body.as_deref() == Some("never sent")),
        "nothing was sent to the number that is not on WhatsApp"
    );

    // Acks buffered in the page and not yet drained survive a logout that
    // navigates the page away: the next page load hands them over.
    env.ctl
        .faults(&sid, json!({ "refuse_sends": false }))
        .await
        .unwrap();
    let last = page
        .send_text(&contact, "before the logout", NumberCheck::Skip)
        .await
        .unwrap();
    while page.ack(&last.data_id).await.unwrap() != Some(AckLevel::Read) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.ctl.logout(&sid).await.unwrap();
    let started = Instant::now();
    while !page.view().await.unwrap().logged_out {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never logged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (kept, _) = page.drain_acks().await.unwrap();
    assert!(
        kept.iter()
            .any(|(id, ack)| id == &last.data_id && *ack == 3),
        "the buffered read ack was lost with the page: {kept:?}"
    );
    assert!(
        back.messages
            .iter()
            .any(|d| d.message.body.as_deref() == Some(lines)),
        "the multi-line text reached WhatsApp whole: {:?}",
        back.messages
    );
    // Media went into the page as bytes: WhatsApp got the file's size and type.
    let promo = back
        .messages
        .iter()
        .find_map(|d| {
            d.message
                .media
                .as_ref()
                .filter(|m| m.name.ends_with("promo.png"))
        })
        .expect("the image reached WhatsApp");
    assert_eq!((promo.size, promo.mime.as_str()), (13, "image/png"));
    drop(page);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_login_status_whose_worker_died_moves_on_by_itself_after_its_deadline() {
    let db = fresh_database().await.unwrap();
    let mut ids = Vec::new();
    for status in ["starting", "qr_pending", "authenticating", "active"] {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_accounts (account_name, status, status_deadline, qr_token) \
             VALUES ('t', $1, now() - interval '1 minute', 'tok') RETURNING id",
        )
        .bind(status)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    let moved = courier::account::login::reap_expired(&db.pool, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(moved, 3);
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT status, status_reason, qr_token FROM mkt_wap_accounts WHERE id = ANY($1) \
         ORDER BY array_position($1, id)",
    )
    .bind(&ids)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let statuses: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(statuses, ["failed", "inactive", "failed", "active"]);
    assert!(rows[1]
        .1
        .as_deref()
        .unwrap()
        .contains("before its deadline"));
    assert!(rows[1].2.is_none(), "the stale QR is cleared");
}

#[tokio::test]
async fn a_long_lived_session_is_reopened_between_jobs_on_its_profile_without_a_new_qr() {
    use courier::browser::Selectors;
    let env = Env::start(quick_sim()).await;
    let id = env.account().await;
    let settings = env.settings(&env.machine("m1"), |s| {
        s.browser.recycle_after = Duration::from_secs(3);
    });
    let w = env.worker(&settings).await;
    env.login(id).await;
    env.wait_jobs_done(id, "login", 1, 15).await;
    w.stop().await.unwrap();

    let lease = courier::queue::store::acquire_account(
        &env.db.pool,
        id,
        "recycle-test",
        Duration::from_secs(120),
        5,
    )
    .await
    .unwrap()
    .unwrap();
    let pool = BrowserPool::start(env.db.pool.clone(), &settings.browser, Selectors::builtin())
        .await
        .unwrap();
    let chromium_on_profile = || {
        let profile = env.machine("m1").join(id.to_string());
        let needle = format!("--user-data-dir={}", profile.display());
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle) && !c.contains("--type="))
            .count()
    };

    let first = pool.session(&lease).await.unwrap();
    assert!(first.is_fresh());
    first.wait_ready(Duration::from_secs(10)).await.unwrap();
    drop(first);
    let again = pool.session(&lease).await.unwrap();
    assert!(!again.is_fresh(), "a young session is kept");
    drop(again);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let recycled = pool.session(&lease).await.unwrap();
    assert!(recycled.is_fresh(), "an aged session is reopened");
    let v = recycled.wait_ready(Duration::from_secs(15)).await.unwrap();
    assert_eq!(
        v.phone.as_deref(),
        Some(DIGITS),
        "still logged in: the profile kept the session, no QR"
    );
    assert_eq!(recycled.qr_token().await.unwrap(), None);
    assert_eq!(
        chromium_on_profile(),
        1,
        "the old Chromium is gone, one browser runs on the profile"
    );
    drop(recycled);
    pool.shutdown().await;
}

/// `cp -a`: a folder tree as an operator would copy it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// The previous system's linked phone comes over: a profile logged in on the
/// simulator, laid out as whatsapp-web.js `LocalAuth` keeps it
/// (`<dataPath>/session-<clientId>/Default/...`), is imported into an empty
/// profile store and the account's next login is `active` with no QR scan.
/// Around it, what an operator meets: the dry run changes nothing, a folder
/// of no account is left alone, a damaged copy is skipped, a leased account
/// is refused, and a second run has nothing to do.
#[tokio::test]
async fn a_local_auth_profile_from_the_previous_system_logs_in_without_a_qr() {
    use courier::account::import::{import_sessions, MatchedBy, Outcome};
    use std::os::unix::fs::PermissionsExt;

    let env = Env::start(quick_sim()).await;
    let pool = &env.db.pool;
    let id = env.account().await;
    let damaged = env.account().await;
    let busy = env.account().await;
    let m1 = env.machine("m1");
    let w = env.worker(&env.settings(&m1, |_| {})).await;
    env.login(id).await;
    env.wait_jobs_done(id, "login", 1, 15).await;
    let wid = env.sim_wid(id).await;
    w.stop().await.unwrap(); // closes Chromium cleanly: the profile is flushed

    // The previous system's session directory.
    let logged_in = m1.join(id.to_string());
    let old = env.dirs.path().join("whatsapp-sessions");
    copy_tree(&logged_in, &old.join(format!("session-{id}")));
    copy_tree(&logged_in, &old.join(format!("session-{damaged}")));
    copy_tree(&logged_in, &old.join(format!("session-{busy}")));
    copy_tree(&logged_in, &old.join("session-stranger"));
    // A copy cut short: the session's largest LevelDB file, half written.
    let ldb = old.join(format!("session-{damaged}/Default/Local Storage/leveldb"));
    let (largest, len) = std::fs::read_dir(&ldb)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".log") || n.ends_with(".ldb")
        })
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .max_by_key(|(_, l)| *l)
        .unwrap();
    assert!(len > 0, "the session wrote its LevelDB");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&largest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // The accounts as adopting the previous system's database leaves them:
    // its session path, no Courier session state.
    sqlx::query(
        "UPDATE mkt_wap_accounts SET status = 'inactive', phone_number = NULL, qr_token = NULL, \
         session_snapshot = NULL, session_snapshot_at = NULL, \
         session_storage_path = './whatsapp-sessions/session-' || id::text WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    // A worker elsewhere drives `busy`.
    courier::queue::store::acquire_account(pool, busy, "worker-b", Duration::from_secs(120), 5)
        .await
        .unwrap()
        .unwrap();

    let m2 = env.machine("m2");
    let settings = env.settings(&m2, |_| {});
    let outcome = |r: &courier::account::import::ImportReport, name: String| {
        r.folders
            .iter()
            .find(|f| f.folder.file_name().unwrap().to_string_lossy() == name)
            .unwrap_or_else(|| panic!("{name} not reported: {r:?}"))
            .outcome
            .clone()
    };

    // The dry run prints the plan and changes nothing.
    let plan = import_sessions(pool, &settings, &old, true).await.unwrap();
    assert!(
        matches!(
            outcome(&plan, format!("session-{id}")),
            Outcome::WouldImport { account, matched_by: MatchedBy::SessionStoragePath, .. } if account == id
        ),
        "{plan:?}"
    );
    assert!(matches!(
        outcome(&plan, format!("session-{damaged}")),
        Outcome::Damaged { .. }
    ));
    assert!(matches!(
        outcome(&plan, format!("session-{busy}")),
        Outcome::Leased { .. }
    ));
    assert_eq!(
        outcome(&plan, "session-stranger".into()),
        Outcome::Unmatched
    );
    assert!(!m2.exists(), "a dry run copies nothing");
    let printed: Vec<String> = plan.folders.iter().map(ToString::to_string).collect();
    assert!(
        printed.iter().any(|l| l.starts_with(&format!(
            "session-{id}: would import into account {id} (matched by session_storage_path)"
        ))),
        "{printed:#?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("session-stranger: no account matches")),
        "{printed:#?}"
    );

    // The import.
    let report = import_sessions(pool, &settings, &old, false).await.unwrap();
    for f in &report.folders {
        println!("{f}");
    }
    assert_eq!(report.imported(), 1, "{report:?}");
    assert!(matches!(
        outcome(&report, format!("session-{id}")),
        Outcome::Imported { account, matched_by: MatchedBy::SessionStoragePath, snapshot: true, .. } if account == id
    ));
    let Outcome::Damaged { problem, .. } = outcome(&report, format!("session-{damaged}")) else {
        panic!("{report:?}")
    };
    assert!(problem.contains("Local Storage"), "{problem}");
    let Outcome::Leased { owner, .. } = outcome(&report, format!("session-{busy}")) else {
        panic!("{report:?}")
    };
    assert_eq!(owner, "worker-b");
    assert_eq!(
        outcome(&report, "session-stranger".into()),
        Outcome::Unmatched
    );
    let profile = m2.join(id.to_string());
    assert_eq!(
        std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(profile.join("Default/Local Storage/leveldb").is_dir());
    assert!(!m2.join(damaged.to_string()).exists(), "never half-adopted");
    assert!(!m2.join(busy.to_string()).exists());
    assert!(old.join("session-stranger").is_dir(), "left alone");
    let recorded: Vec<Uuid> = sqlx::query_scalar("SELECT account_id FROM mkt_wap_session_imports")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(recorded, vec![id], "which account each profile went to");
    assert!(!env.row(damaged).await.has_snapshot);

    // A second run has nothing to do.
    let again = import_sessions(pool, &settings, &old, false).await.unwrap();
    assert_eq!(again.imported(), 0);
    assert!(again
        .folders
        .iter()
        .any(|f| f.to_string().contains("already imported")
            && f.to_string().contains("nothing to do")));
    assert!(matches!(
        outcome(&again, format!("session-{id}")),
        Outcome::AlreadyImported { account, .. } if account == id
    ));

    // The next login opens the imported profile: no QR, no new pairing. (The
    // snapshot the import sealed is dropped, so the copy alone logs it in.)
    sqlx::query("UPDATE mkt_wap_accounts SET session_snapshot = NULL WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let w2 = env.worker(&settings).await;
    start_login(pool, id).await.unwrap();
    let r = env.wait_status(id, "active", 30).await;
    assert!(r.qr_token.is_none());
    assert_eq!(r.phone_number.as_deref(), Some(DIGITS));
    assert_eq!(env.sim_wid(id).await, wid, "no new QR pairing");
    let qr_shown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_wap_accounts WHERE id = $1 AND qr_expires_at IS NOT NULL",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(qr_shown, 0, "no QR was ever stored for the imported login");
    w2.stop().await.unwrap();
}
