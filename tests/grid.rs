//! Browsers on a WebDriver grid, with nothing shared but the network.
//!
//! The "node" is chromedriver + Chromium started in a mount namespace of its
//! own (`unshare -m`, as root) with empty tmpfs over `/tmp` and over the
//! worker's profile and media folders, so a path the worker leaked to the
//! browser would name nothing there. Courier reaches it through a small TCP
//! front (the grid's router) with `browser.webdriver_url`; killing the node
//! and starting another behind the same front is a node dying and the grid
//! sending the next session elsewhere.
//!
//! Covered: a login; a media send (bytes into the page); a used session
//! hibernated (a fresh snapshot exported before it closes, newer than the
//! send) and restored on a fresh node (active without a QR); the grid at
//! capacity (the send waits "no browser available" with no attempt or
//! health spent and goes out once when capacity returns); a node killed
//! mid-campaign (no message lost or duplicated, the interrupted send
//! adopted, not resent); and the refusals: a snapshot over
//! `browser.snapshot_max_bytes` (session kept, failure counted) and an
//! export from a page mid-login.
//!
//! Needs root (for `unshare -m`); `COURIER_TEST_SKIP_GRID=1` skips it where
//! that is impossible, saying so. One Postgres cluster for the binary, one
//! test at a time (CI has 2 cores).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::account::login::start_login;
use courier::browser::{BrowserError, BrowserPool, SnapshotError, SnapshotKey};
use courier::config::{Secret, Settings};
use courier::jobs::send::{Content, MediaKind, MediaSource};
use courier::jobs::{ChatId, MessageBody};
use courier::message::{create_batch, NewMessage, Source};
use courier::queue::Lease;
use courier::worker::schedule_health_check;
use courier_sim::{SimConfig, SimControl, Simulator};
use courier_testkit::{fresh_database, scan_stored_qr, InProcessWorker as Worker, TestDb};
use serde_json::json;
use uuid::Uuid;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PNG: &[u8] = b"\x89PNG\r\n\x1a\ngrid node media bytes";

fn phone(i: usize) -> String {
    format!("+4477009{i:05}")
}

/// Whether this machine can run the grid (root for `unshare -m`); else the
/// test fails saying why, or is skipped when asked to.
fn grid_possible() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("COURIER_TEST_SKIP_GRID").as_deref() == Ok("1") {
        eprintln!("SKIPPED: the grid test needs root for `unshare -m`; COURIER_TEST_SKIP_GRID=1 asks to skip");
        return false;
    }
    panic!("the grid test needs root for `unshare -m` (CI runs as root); set COURIER_TEST_SKIP_GRID=1 to skip it");
}

/// A chromedriver "node" in its own mount namespace.
struct Node {
    child: std::process::Child,
    port: u16,
}

impl Node {
    /// Starts chromedriver with empty tmpfs over each of `hide` and `/tmp`.
    async fn start(hide: &[&Path]) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut script = String::from("set -e; ");
        for dir in hide {
            script.push_str(&format!("mount -t tmpfs tmpfs '{}'; ", dir.display()));
        }
        script.push_str(&format!(
            "mount -t tmpfs tmpfs /tmp; exec /usr/bin/chromedriver --port={port} --log-level=WARNING"
        ));
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("unshare");
        let mut node = Node { child, port };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = http
                .get(format!("http://127.0.0.1:{port}/status"))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(r) = ready {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    return node;
                }
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "the node exited ({status}) before it was ready: `unshare -m` and `mount` \
                     need root with CAP_SYS_ADMIN"
                );
            }
            assert!(Instant::now() < deadline, "the node never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `path` exists as the node's processes see it.
    fn sees(&self, path: &Path) -> bool {
        let pid = self.child.id();
        Path::new(&format!("/proc/{pid}/root{}", path.display())).exists()
    }

    /// The node dies at once: chromedriver and every Chromium it started.
    fn kill(mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// The grid's front door: forwards each connection to the current node.
/// At capacity, it answers a new-session request itself the way Selenium
/// Grid 4 does when no node has a free slot, and forwards everything else
/// (the sessions it already has keep working).
struct Front {
    url: String,
    upstream: Arc<AtomicU16>,
    at_capacity: Arc<AtomicBool>,
    /// New-session requests forwarded to a node (sessions created).
    created: Arc<AtomicUsize>,
    /// New-session requests refused at capacity.
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Selenium Grid 4's answer when its new-session queue times out.
const GRID_FULL: &str = r#"{"value":{"error":"session not created","message":"Could not start a new session. New session request timed out (the grid is at capacity)","stacktrace":""}}"#;

/// Whether the connection's first request is `POST …/session` (peeked: the
/// bytes stay for whoever reads them).
async fn opens_a_session(inbound: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    for _ in 0..200 {
        let n = match inbound.peek(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => return false,
        };
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]);
            let mut parts = line.split(' ');
            return parts.next() == Some("POST")
                && parts
                    .next()
                    .is_some_and(|p| p.trim_end_matches('/').ends_with("/session"));
        }
        if n == buf.len() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Reads one HTTP request (headers and a `Content-Length` body), then
/// answers 500 with [`GRID_FULL`] and closes.
async fn refuse_session(mut inbound: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_from = loop {
        match inbound.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..body_from]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while req.len() < body_from + length {
        match inbound.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{GRID_FULL}",
        GRID_FULL.len()
    );
    let _ = inbound.write_all(answer.as_bytes()).await;
    let _ = inbound.shutdown().await;
}

impl Front {
    async fn start(node: &Node) -> Front {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = Arc::new(AtomicU16::new(node.port));
        let at_capacity = Arc::new(AtomicBool::new(false));
        let created = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (up, full, made, no) = (
            upstream.clone(),
            at_capacity.clone(),
            created.clone(),
            refused.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = up.load(Ordering::SeqCst);
                let (full, made, no) = (full.clone(), made.clone(), no.clone());
                tokio::spawn(async move {
                    if opens_a_session(&inbound).await {
                        if full.load(Ordering::SeqCst) {
                            no.fetch_add(1, Ordering::SeqCst);
                            refuse_session(inbound).await;
                            return;
                        }
                        made.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Front {
            url,
            upstream,
            at_capacity,
            created,
            refused,
            task,
        }
    }

    fn route_to(&self, node: &Node) {
        self.upstream.store(node.port, Ordering::SeqCst);
    }

    /// Refuses new sessions (true) or takes them again (false).
    fn set_at_capacity(&self, full: bool) {
        self.at_capacity.store(full, Ordering::SeqCst);
    }

    fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Env {
    db: TestDb,
    sim: Simulator,
    ctl: SimControl,
    key: SnapshotKey,
    dirs: tempfile::TempDir,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

impl Env {
    async fn start() -> Self {
        let one = ONE_AT_A_TIME.lock().await;
        let db = fresh_database().await.unwrap();
        let sim = Simulator::start(
            "127.0.0.1:0".parse().unwrap(),
            SimConfig {
                loading: Duration::from_millis(300),
                ..SimConfig::default()
            },
        )
        .await
        .unwrap();
        let ctl = sim.control();
        let dirs = tempfile::tempdir().unwrap();
        for d in ["profiles", "media"] {
            std::fs::create_dir_all(dirs.path().join(d)).unwrap();
        }
        std::fs::write(dirs.path().join("media/promo.png"), PNG).unwrap();
        Self {
            db,
            sim,
            ctl,
            key: SnapshotKey::random(),
            dirs,
            _one: one,
        }
    }

    fn profiles(&self) -> PathBuf {
        self.dirs.path().join("profiles")
    }

    fn media(&self) -> PathBuf {
        self.dirs.path().join("media")
    }

    /// A node that sees none of the worker's files.
    async fn node(&self) -> Node {
        let node = Node::start(&[&self.profiles(), &self.media()]).await;
        assert!(self.media().join("promo.png").exists());
        assert!(
            !node.sees(&self.media().join("promo.png")) && !node.sees(self.dirs.path()),
            "the node must not see the worker's files"
        );
        node
    }

    fn settings(&self, front: &Front, tweak: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = courier_testkit::quick_worker_settings();
        s.queue.capacity = 2;
        s.queue.job_timeout = Duration::from_secs(60);
        s.queue.backoff_max = Duration::from_secs(1);
        let b = &mut s.browser;
        b.webdriver_url = Some(front.url.clone());
        // The binary's path on the node (the same Debian package here).
        b.chromium = Some(courier::browser::driver::find_chromium().unwrap());
        b.page_url = format!("{}/?account={{account}}", self.sim.url());
        b.profiles_dir = self.profiles();
        b.media_dir = self.media();
        b.starting_deadline = Duration::from_secs(20);
        b.qr_deadline = Duration::from_secs(30);
        b.authenticating_deadline = Duration::from_secs(20);
        b.command_timeout = Duration::from_secs(8);
        b.health_check_interval = Duration::from_secs(3600);
        b.session_key = Some(Secret::new(self.key.to_hex()));
        tweak(&mut s);
        s.validate().unwrap();
        s
    }

    async fn account(&self) -> Uuid {
        courier_testkit::sim_account(&self.db.pool, &self.ctl, "grid", json!({})).await
    }

    async fn row(&self, id: Uuid) -> (String, Option<String>, bool, Option<String>) {
        sqlx::query_as(
            "SELECT status, qr_token, session_snapshot IS NOT NULL, session_storage_path \
             FROM mkt_wap_accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    async fn wait<T>(&self, what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() >= deadline {
                let jobs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
                    "SELECT kind, state, attempt, last_error FROM queue_jobs ORDER BY created_at",
                )
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
                panic!("timed out waiting for {what}; jobs {jobs:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn login(&self, id: Uuid, phone: &str) {
        start_login(&self.db.pool, id).await.unwrap();
        scan_stored_qr(&self.db.pool, &self.ctl, id, phone, Duration::from_secs(60)).await;
        self.wait("the account active", 60, async || {
            (self.row(id).await.0 == "active").then_some(())
        })
        .await;
    }

    async fn enqueue(&self, msgs: &[NewMessage]) -> Vec<Uuid> {
        create_batch(&self.db.pool, msgs, Source::Api)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.message_id)
            .collect()
    }

    async fn wait_sent(&self, ids: &[Uuid], secs: u64) {
        self.wait("every message sent", secs, async || {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM mkt_wap_messages WHERE id = ANY($1) \
                 AND status IN ('sent', 'delivered', 'read')",
            )
            .bind(ids)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            (n as usize == ids.len()).then_some(())
        })
        .await;
    }

    /// Runs a health check now and waits for it to finish.
    async fn health_check(&self, id: Uuid) {
        let before: i64 = self.completed(id, "health_check").await;
        schedule_health_check(&self.db.pool, id, Duration::ZERO)
            .await
            .unwrap();
        self.wait("a health check", 60, async || {
            (self.completed(id, "health_check").await > before).then_some(())
        })
        .await;
    }

    /// When the account's snapshot was stored.
    async fn snapshot_at(&self, id: Uuid) -> chrono::DateTime<chrono::Utc> {
        sqlx::query_scalar("SELECT session_snapshot_at FROM mkt_wap_accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Closes the account's idle session as the idle reaper would (retried
    /// while the ack watcher holds it for a moment).
    async fn hibernate(&self, worker: &Worker, id: Uuid) {
        self.wait("the session hibernated", 20, async || {
            worker
                .browser
                .hibernate(id, "test: idle")
                .await
                .then_some(())
        })
        .await;
        assert!(!worker.browser.is_open(id));
    }

    /// The account's status and health score.
    async fn health(&self, id: Uuid) -> (String, i32) {
        sqlx::query_as("SELECT status, health_score FROM mkt_wap_accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn completed(&self, id: Uuid, kind: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM queue_jobs WHERE account_id = $1 AND kind = $2 AND state = 'completed'",
        )
        .bind(id)
        .bind(kind)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

fn message(account: Uuid, chat: &str, content: Content) -> NewMessage {
    NewMessage {
        account_id: Some(account),
        campaign_id: None,
        content_id: None,
        schedule_id: None,
        channel_type: "individual",
        chat_id: ChatId::parse(chat).unwrap(),
        target_group_id: None,
        target_contact_id: None,
        content,
        idempotency_key: None,
        run_at: None,
        priority: 100,
        waiting_reason: None,
    }
}

fn text(s: &str) -> Content {
    Content::Text {
        body: MessageBody::parse(s).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_grid_sessions_move_through_the_page_and_survive_dead_nodes_with_every_message_sent_once(
) {
    if !grid_possible() {
        return;
    }
    let started = Instant::now();
    let metrics = courier::metrics::install();
    let env = Env::start().await;
    let node1 = env.node().await;
    let front = Front::start(&node1).await;
    let settings = env.settings(&front, |s| {
        s.browser.unavailable_retry = Duration::from_secs(1);
    });
    let worker = Worker::start(&env.db.pool, &settings).await.unwrap();
    let id = env.account().await;
    let acc = id.to_string();

    // A login on the node: QR in the DB, scan, active, and the session
    // exported from the page into the snapshot. Nothing on the worker's disk.
    env.login(id, &phone(1)).await;
    env.wait("the session snapshot", 30, async || {
        env.row(id).await.2.then_some(())
    })
    .await;
    let (_, qr, _, path) = env.row(id).await;
    assert_eq!(
        (qr, path),
        (None, None),
        "no QR left, no profile path recorded"
    );
    assert!(
        std::fs::read_dir(env.profiles()).unwrap().next().is_none(),
        "a remote browser's worker writes no profile"
    );
    eprintln!("login: {:?}", started.elapsed());

    // Media goes into the page as bytes: the node cannot see the file.
    let contact = env
        .ctl
        .add_contact(&phone(1001), None, &[acc.as_str()])
        .await
        .unwrap();
    let media = Content::Media {
        kind: MediaKind::Image,
        source: MediaSource::Path("promo.png".into()),
        caption: Some(MessageBody::parse("grid media").unwrap()),
    };
    let ids = env.enqueue(&[message(id, &contact, media)]).await;
    env.wait_sent(&ids, 60).await;
    let back = env.ctl.messages(&acc).await.unwrap();
    let got = back.messages[0]
        .message
        .media
        .clone()
        .expect("a media message");
    assert_eq!(
        (got.name.as_str(), got.size),
        ("promo.png", PNG.len() as u64)
    );
    eprintln!("media: {:?}", started.elapsed());

    // Used, then closed while idle: a remote session lives only in its page
    // (WhatsApp Web rotates keys as it runs), so its state is exported
    // before the browser closes and the snapshot is newer than the send.
    let sent_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT sent_at FROM mkt_wap_messages WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(
        env.snapshot_at(id).await < sent_at,
        "the login's snapshot is older than the send"
    );
    env.hibernate(&worker, id).await;
    let exported = env.snapshot_at(id).await;
    assert!(
        exported > sent_at,
        "hibernating took a fresh snapshot: stored {exported}, sent {sent_at}"
    );
    eprintln!("hibernated with a fresh snapshot: {:?}", started.elapsed());

    // The node dies; a fresh one with empty folders takes its place. The
    // next session imports the snapshot before WhatsApp Web starts: active,
    // no QR.
    node1.kill();
    let node2 = env.node().await;
    front.route_to(&node2);
    let restored_from = chrono::Utc::now();
    env.health_check(id).await;
    let (status, qr, _, _) = env.row(id).await;
    assert_eq!(
        (status.as_str(), qr),
        ("active", None),
        "restored without a QR"
    );
    let ready: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_ready_at FROM mkt_wap_accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(ready >= restored_from, "the new node's page was ready");
    eprintln!("restore on a fresh node: {:?}", started.elapsed());

    // The grid at capacity: the account's session is closed and the grid
    // refuses new ones. Its send waits "no browser available" (retried every
    // browser.unavailable_retry), with no attempt spent and no health lost,
    // and goes out exactly once when capacity returns.
    env.hibernate(&worker, id).await;
    let health = env.health(id).await;
    let created = front.created();
    front.set_at_capacity(true);
    let contact = env
        .ctl
        .add_contact(&phone(1002), None, &[acc.as_str()])
        .await
        .unwrap();
    let ids = env
        .enqueue(&[message(id, &contact, text("sent once capacity returns"))])
        .await;
    // Two snoozes: the first refusal, and the retry a second later.
    let no_browser = || {
        metrics
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix("courier_jobs_snoozed_total{kind=\"send\",reason=\"no_browser\"} ")
                    .map(|v| v.parse::<f64>().unwrap())
            })
            .unwrap_or(0.0)
    };
    env.wait("two snoozes for no browser", 30, async || {
        (no_browser() >= 2.0).then_some(())
    })
    .await;
    assert!(front.refused() >= 2, "refused {}", front.refused());
    let (reason, attempt, send_attempts): (Option<String>, i32, i32) = sqlx::query_as(
        "SELECT j.waiting_reason, j.attempt, m.send_attempts FROM queue_jobs j \
         JOIN mkt_wap_messages m ON m.id = $2 \
         WHERE j.account_id = $1 AND j.kind = 'send' AND j.state IN ('available', 'scheduled', 'retryable')",
    )
    .bind(id)
    .bind(ids[0])
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("no browser available"), "{reason}");
    assert!(reason.contains("Could not start a new session"), "{reason}");
    assert_eq!((attempt, send_attempts), (0, 0), "no attempt spent");
    assert_eq!(env.health(id).await, health, "no health lost");
    assert_eq!(front.created(), created, "no session was created");
    assert!(!worker.browser.is_open(id));
    front.set_at_capacity(false);
    env.wait_sent(&ids, 30).await;
    let copies = env
        .ctl
        .messages(&acc)
        .await
        .unwrap()
        .messages
        .iter()
        .filter(|m| m.message.body.as_deref() == Some("sent once capacity returns"))
        .count();
    assert_eq!(copies, 1, "sent exactly once");
    assert!(
        front.created() > created,
        "a session once capacity returned"
    );
    eprintln!("grid at capacity: {:?}", started.elapsed());

    // A campaign; the node dies while WhatsApp holds the third message but
    // has not confirmed it (the server tick comes 1.5 s later).
    env.ctl
        .ack_timing(
            &acc,
            json!({ "server_ms": 1500, "device_ms": 2000, "read_ms": 2500 }),
        )
        .await
        .unwrap();
    let mut msgs = Vec::new();
    for i in 0..6 {
        let chat = env
            .ctl
            .add_contact(&phone(2000 + i), None, &[acc.as_str()])
            .await
            .unwrap();
        msgs.push(message(id, &chat, text(&format!("grid campaign #{i}"))));
    }
    let ids = env.enqueue(&msgs).await;
    let before = env.ctl.messages(&acc).await.unwrap().messages.len();
    let third = env
        .wait("the third campaign message at WhatsApp", 60, async || {
            let back = env.ctl.messages(&acc).await.unwrap();
            (back.messages.len() >= before + 3).then(|| back.messages[before + 2].message.clone())
        })
        .await;
    node2.kill();
    let interrupted: (Uuid, String) = sqlx::query_as(
        "SELECT id, status FROM mkt_wap_messages WHERE id = ANY($1) AND message_text = $2",
    )
    .bind(&ids)
    .bind(third.body.as_deref().unwrap())
    .fetch_one(&env.db.pool)
    .await
    .unwrap_or_else(|e| panic!("the interrupted message's row: {e}"));
    assert_eq!(
        interrupted.1, "sending",
        "killed while the send was in flight"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node3 = env.node().await;
    front.route_to(&node3);
    env.wait_sent(&ids, 120).await;

    // Every campaign message reached WhatsApp exactly once; the interrupted
    // one was adopted (its id is the copy WhatsApp holds), not resent.
    let back = env.ctl.messages(&acc).await.unwrap();
    for i in 0..6 {
        let body = format!("grid campaign #{i}");
        let copies = back
            .messages
            .iter()
            .filter(|m| m.message.body.as_deref() == Some(body.as_str()))
            .count();
        assert_eq!(copies, 1, "{body}: {copies} copies at WhatsApp");
    }
    let wa: Option<String> =
        sqlx::query_scalar("SELECT wa_message_id FROM mkt_wap_messages WHERE id = $1")
            .bind(interrupted.0)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(wa.as_deref(), Some(third.data_id.as_str()), "the copy's id");
    let adopted: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT detail->>'adopted' FROM mkt_wap_message_events WHERE message_id = $1 AND status = 'sent'",
    )
    .bind(interrupted.0)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(adopted, [Some("true".to_string())], "adopted, not resent");
    let (status, qr, _, _) = env.row(id).await;
    assert_eq!(
        (status.as_str(), qr),
        ("active", None),
        "no QR after the node died"
    );
    eprintln!("campaign with a node killed: {:?}", started.elapsed());

    // A worker that stops (a deploy) exports the session it used first:
    // the state a remote page holds is not lost with the worker.
    let last_sent: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(sent_at) FROM mkt_wap_messages WHERE account_id = $1")
            .bind(id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    // Open (not hibernated) at the stop; `is_open` is false for the moments
    // the ack watcher holds the session.
    env.wait("the session open at the stop", 10, async || {
        worker.browser.is_open(id).then_some(())
    })
    .await;
    worker.stop().await.unwrap();
    let exported = env.snapshot_at(id).await;
    assert!(
        exported > last_sent,
        "stopping took a fresh snapshot: stored {exported}, last sent {last_sent}"
    );
    node3.kill();
    eprintln!("grid scenario wall time: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_over_the_limit_or_from_a_page_mid_login_is_refused_and_the_session_kept() {
    if !grid_possible() {
        return;
    }
    let handle = courier::metrics::install();
    let env = Env::start().await;
    let node = env.node().await;
    let front = Front::start(&node).await;

    // Mid-login: the page shows a QR; its storage is never exported.
    let settings = env.settings(&front, |_| {});
    let pool = BrowserPool::start(
        env.db.pool.clone(),
        &settings.browser,
        courier::browser::Selectors::builtin(),
    )
    .await
    .unwrap();
    let pending = env.account().await;
    let lease = Lease {
        account_id: pending,
        epoch: 1,
        owner: "grid-test".into(),
    };
    let mut page = pool.session(&lease).await.unwrap();
    env.wait("the QR on the page", 30, async || {
        page.qr_token().await.ok().flatten()
    })
    .await;
    match page.snapshot().await {
        Err(BrowserError::Snapshot(e @ SnapshotError::NotConnected { .. })) => {
            let e = e.to_string();
            assert!(e.contains("not CONNECTED and synced"), "{e}");
        }
        other => panic!("an export mid-login must be refused: {other:?}"),
    }
    assert!(!env.row(pending).await.2, "nothing stored");
    drop(page);
    pool.shutdown().await;

    // Too large: the login completes and the session stays usable, the
    // snapshot is refused with the key named, and the failure is counted.
    let settings = env.settings(&front, |s| s.browser.snapshot_max_bytes = 64);
    let worker = Worker::start(&env.db.pool, &settings).await.unwrap();
    let id = env.account().await;
    env.login(id, &phone(3)).await;
    env.wait("the refusal counted", 30, async || {
        handle
            .render()
            .lines()
            .any(|l| {
                l.starts_with("courier_session_snapshot_failures_total{reason=\"too_large\"}")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    })
    .await;
    let (status, _, stored, _) = env.row(id).await;
    assert_eq!((status.as_str(), stored), ("active", false));
    let contact = env
        .ctl
        .add_contact(&phone(3001), None, &[id.to_string().as_str()])
        .await
        .unwrap();
    let ids = env
        .enqueue(&[message(id, &contact, text("still sending"))])
        .await;
    env.wait_sent(&ids, 60).await;
    worker.stop().await.unwrap();
    node.kill();
}
