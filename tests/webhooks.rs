//! Webhooks and the live event stream (issue 23), against a real Postgres,
//! real HTTP receivers on 127.0.0.1 (the loopback CIDR allowed in the test
//! settings), in-process workers and, for the crash test, `courier worker`
//! processes killed with SIGKILL. Signatures are checked with the
//! `standardwebhooks` package from PyPI, not with our own code.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use courier::config::Settings;
use courier_testkit::TestApp;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Receivers.
// ---------------------------------------------------------------------------

/// One request a receiver saw.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// What the receiver answered.
    status: u16,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Status(u16),
    Slow(Duration),
    Redirect,
    Huge,
}

#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    mode: Arc<Mutex<Mode>>,
    url: String,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let r = Receiver {
            hits: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            url: String::new(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/elsewhere", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            ..r
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Ids of the requests answered 2xx, in arrival order.
    fn accepted(&self) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.status < 300)
            .map(|h| h.id)
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let mode = *r.mode.lock().unwrap();
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let status = match mode {
        Mode::Ok | Mode::Slow(_) | Mode::Huge => 200,
        Mode::Status(s) => s,
        Mode::Redirect => 302,
    };
    r.hits.lock().unwrap().push(Hit {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
    });
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    let mut resp_headers = HeaderMap::new();
    if mode == Mode::Redirect {
        resp_headers.insert("location", "/elsewhere".parse().unwrap());
    }
    let body = if mode == Mode::Huge {
        "x".repeat(1024 * 1024)
    } else {
        String::new()
    };
    (StatusCode::from_u16(status).unwrap(), resp_headers, body)
}

// ---------------------------------------------------------------------------
// Setup.
// ---------------------------------------------------------------------------

fn fast_retries(s: &mut Settings) {
    s.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    s.webhooks.backoff_base = Duration::from_millis(50);
    s.webhooks.backoff_max = Duration::from_millis(200);
    s.webhooks.timeout = Duration::from_secs(5);
    s.webhooks.max_response_bytes = 64 * 1024;
    s.webhooks.poll_interval = Duration::from_millis(200);
    s.queue.poll_interval = Duration::from_millis(200);
    s.queue.capacity = 4;
}

async fn app(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> TestApp {
    TestApp::builder()
        .settings(move |s| {
            fast_retries(s);
            tweak(s);
        })
        .spawn()
        .await
}

/// A worker in this process with the product's `noop` registry (which, like
/// every registry, carries the webhook handler).
struct Worker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    async fn start(pool: &PgPool, settings: &Settings) -> Worker {
        let mut s = settings.clone();
        s.queue.handler = "noop".into();
        let (handlers, _) = courier::app::worker_handlers(&s, pool).await.unwrap();
        let runtime = courier::queue::runtime::Runtime::new(pool.clone(), &s, handlers);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            runtime
                .run_until(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Worker {
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

async fn account(pool: &PgPool) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('hooks', 'inactive') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `n` status changes of `account` (to `starting`, then `inactive`, and so
/// on), one transaction each: `n` `account.status_changed` events. Returns
/// their positions.
async fn status_changes(pool: &PgPool, account: Uuid, n: usize) -> Vec<i64> {
    for _ in 0..n {
        sqlx::query(
            "UPDATE mkt_wap_accounts SET status = CASE WHEN status = 'starting' THEN 'inactive' \
             ELSE 'starting' END WHERE id = $1",
        )
        .bind(account)
        .execute(pool)
        .await
        .unwrap();
    }
    let mut p: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM courier_events WHERE account_id = $1 AND type = 'account.status_changed' \
         ORDER BY position DESC LIMIT $2",
    )
    .bind(account)
    .bind(n as i64)
    .fetch_all(pool)
    .await
    .unwrap();
    p.reverse();
    p
}

async fn subscribe(app: &TestApp, url: &str, account: Uuid) -> (Uuid, String) {
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            json!({"url": url, "event_types": ["account.status_changed"], "account_id": account}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().parse().unwrap(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(positions: &[i64]) -> Vec<String> {
    positions.iter().map(|p| format!("evt_{p}")).collect()
}

/// A Python with the `standardwebhooks` package: `COURIER_TEST_PYTHON`, or
/// `python3` if it has the package, or a venv made under `target/` with it
/// installed from PyPI.
fn python_with_standardwebhooks() -> String {
    let has = |py: &str| {
        Command::new(py)
            .args(["-c", "import standardwebhooks"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Ok(py) = std::env::var("COURIER_TEST_PYTHON") {
        assert!(
            has(&py),
            "COURIER_TEST_PYTHON={py} cannot import standardwebhooks"
        );
        return py;
    }
    if has("python3") {
        return "python3".into();
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standardwebhooks-venv");
    let py = venv.join("bin/python").display().to_string();
    if !has(&py) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "-q", "standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && has(&py),
            "cannot install standardwebhooks from PyPI into {}",
            venv.display()
        );
    }
    py
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_signed_so_the_standard_webhooks_library_verifies_them() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Ok).await;
    let acc = account(app.pool()).await;
    let (id, secret) = subscribe(&app, &recv.url, acc).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once.
    let (_, one) = app.get(&format!("/v1/webhooks/{id}")).await;
    let (_, all) = app.get("/v1/webhooks").await;
    assert!(!one.to_string().contains(&secret) && !all.to_string().contains(&secret));
    assert_eq!(one["event_types"], json!(["account.status_changed"]));

    let worker = Worker::start(app.pool(), &app.settings).await;
    let positions = status_changes(app.pool(), acc, 3).await;
    wait_for("3 deliveries", Duration::from_secs(15), || {
        recv.accepted().len() >= 3
    })
    .await;
    worker.stop().await;
    assert_eq!(recv.accepted(), ids(&positions), "once each, in log order");

    let hits = recv.hits();
    let body: Value = serde_json::from_str(&hits[0].body).unwrap();
    assert_eq!(body["id"], hits[0].id.as_str());
    assert_eq!(body["type"], "account.status_changed");
    assert_eq!(body["version"], 1);
    assert_eq!(body["data"]["account_id"], acc.to_string());
    assert_eq!(body["data"]["status"], "starting");

    // The outside implementation verifies every request as received.
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, hits = sys.argv[1], json.load(sys.stdin)
wh = Webhook(secret)
for h in hits:
    wh.verify(h["body"], {"webhook-id": h["id"], "webhook-timestamp": h["timestamp"], "webhook-signature": h["signature"]})
try:
    h = hits[0]
    wh.verify(h["body"] + " ", {"webhook-id": h["id"], "webhook-timestamp": h["timestamp"], "webhook-signature": h["signature"]})
    print("tampered body accepted"); sys.exit(1)
except Exception:
    pass
print("verified", len(hits))
"#;
    let input: Vec<Value> = hits
        .iter()
        .map(|h| json!({"id": h.id, "timestamp": h.timestamp, "signature": h.signature, "body": h.body}))
        .collect();
    let mut child = Command::new(python_with_standardwebhooks())
        .args(["-c", script, &secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified 3");
}

#[tokio::test]
async fn a_private_loopback_or_link_local_url_is_refused_at_creation() {
    // Default policy: public addresses only.
    let app = TestApp::builder().spawn().await;
    // Well-formed URLs this server refuses by its policy: 409 (the same
    // URL may be allowed by webhooks.allow_cidrs), naming the setting.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let (status, body) = app
            .post_json(
                "/v1/webhooks",
                json!({"url": url, "event_types": ["message.sent"]}),
            )
            .await;
        assert_eq!(status, 409, "{url}: {body}");
        assert_eq!(body["field"], "url", "{url}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("allow_cidrs"),
            "{body}"
        );
    }
    // IP-literal v6 hosts are outside the document's URL pattern: 422.
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            json!({"url": "http://[::1]/hook", "event_types": ["message.sent"]}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (422, Some("url")),
        "{body}"
    );
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            json!({"url": "ftp://example.com/x", "event_types": ["message.sent"]}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (422, Some("url")),
        "{body}"
    );
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            json!({"url": "https://example.com/x", "event_types": ["message.bounced"]}),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.to_string().contains("message.bounced"), "{body}");
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            json!({"url": "https://example.com/x", "event_types": []}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (422, Some("event_types")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_a_while_gets_every_event_once_in_order_when_it_is_back() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Status(503)).await;
    let acc = account(app.pool()).await;
    let (id, _) = subscribe(&app, &recv.url, acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    let positions = status_changes(app.pool(), acc, 8).await;
    wait_for("failed attempts", Duration::from_secs(10), || {
        recv.hits().len() >= 4
    })
    .await;
    assert!(recv.accepted().is_empty());
    // Only the head of the line was tried while the endpoint was down.
    let tried: std::collections::BTreeSet<String> = recv.hits().into_iter().map(|h| h.id).collect();
    assert_eq!(tried.into_iter().collect::<Vec<_>>(), ids(&positions[..1]));
    let (_, pending) = app
        .get(&format!("/v1/webhooks/{id}/deliveries?status=pending"))
        .await;
    let head = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["position"] == positions[0])
        .unwrap();
    assert!(head["attempts"].as_i64().unwrap() >= 2, "{head}");
    assert!(
        head["last_error"].as_str().unwrap().contains("503"),
        "{head}"
    );

    recv.set(Mode::Ok);
    wait_for("every event", Duration::from_secs(15), || {
        recv.accepted().len() >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await;
    assert_eq!(
        recv.accepted(),
        ids(&positions),
        "every event once, in order"
    );
    let (_, delivered) = app
        .get(&format!("/v1/webhooks/{id}/deliveries?status=delivered"))
        .await;
    assert_eq!(delivered.as_array().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_does_not_delay_another_subscription() {
    let app = app(|_| {}).await;
    let slow = Receiver::start(Mode::Slow(Duration::from_secs(2))).await;
    let fast = Receiver::start(Mode::Ok).await;
    let acc = account(app.pool()).await;
    subscribe(&app, &slow.url, acc).await;
    subscribe(&app, &fast.url, acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    let started = Instant::now();
    let positions = status_changes(app.pool(), acc, 5).await;
    wait_for("the fast endpoint", Duration::from_secs(5), || {
        fast.accepted().len() >= 5
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the fast endpoint waited {took:?}"
    );
    assert!(slow.hits().len() <= 1, "the slow one is still on its first");
    assert_eq!(fast.accepted(), ids(&positions));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_redirects_timeouts_and_huge_answers_are_retried_then_dead_lettered_and_replayable()
{
    let app = app(|s| {
        s.webhooks.timeout = Duration::from_millis(300);
        s.webhooks.horizon = Duration::from_secs(2);
    })
    .await;
    let cases = [
        (Mode::Status(500), "500"),
        (Mode::Redirect, "redirects are not followed"),
        (Mode::Slow(Duration::from_secs(2)), "no answer within"),
        (Mode::Huge, "max_response_bytes"),
    ];
    let acc = account(app.pool()).await;
    let mut subs = Vec::new();
    for (mode, _) in cases {
        let r = Receiver::start(mode).await;
        let (id, _) = subscribe(&app, &r.url, acc).await;
        subs.push((r, id));
    }
    let worker = Worker::start(app.pool(), &app.settings).await;
    let positions = status_changes(app.pool(), acc, 1).await;
    // Retried with backoff (50 ms doubling, capped at 200 ms) until the
    // 2 s horizon, then dead.
    for ((r, id), (_, why)) in subs.iter().zip(cases) {
        let path = format!("/v1/webhooks/{id}/deliveries?status=dead");
        let start = Instant::now();
        let dead = loop {
            let (_, d) = app.get(&path).await;
            if let Some(d) = d.as_array().and_then(|a| a.first()).cloned() {
                break d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{why}: never dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            dead["last_error"].as_str().unwrap().contains(why),
            "{why}: {dead}"
        );
        let attempts = dead["attempts"].as_i64().unwrap();
        assert!((3..=40).contains(&attempts), "{why}: {attempts} attempts");
        assert_eq!(dead["event_id"], format!("evt_{}", positions[0]));
        // The attempts spread over the horizon (backoff, not a tight loop).
        let mut at: Vec<u64> = r
            .hits()
            .iter()
            .map(|h| h.timestamp.parse().unwrap())
            .collect();
        at.sort();
        assert!(
            at.last().unwrap() - at.first().unwrap() >= 1,
            "{why}: spread over the horizon"
        );
    }
    // The redirect's target was never requested.
    assert!(subs[1].0.hits().iter().all(|h| h.status == 302));

    // Replay a dead letter once the endpoint works: same webhook-id.
    let (r, id) = &subs[0];
    r.set(Mode::Ok);
    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/{id}/deliveries/{}/replay", positions[0]),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_for("the replay", Duration::from_secs(5), || {
        !r.accepted().is_empty()
    })
    .await;
    assert_eq!(r.accepted(), ids(&positions));
    let (status, _) = app
        .post_json(
            &format!("/v1/webhooks/{id}/deliveries/999999/replay"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_answering_410_gone_disables_its_subscription_with_a_reason() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Status(410)).await;
    let acc = account(app.pool()).await;
    let (id, _) = subscribe(&app, &recv.url, acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    status_changes(app.pool(), acc, 1).await;
    let path = format!("/v1/webhooks/{id}");
    let start = Instant::now();
    let sub = loop {
        let (_, s) = app.get(&path).await;
        if s["enabled"] == false {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never disabled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        sub["disabled_reason"].as_str().unwrap().contains("410"),
        "{sub}"
    );
    // Nothing more goes out.
    status_changes(app.pool(), acc, 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(recv.hits().len(), 1);
    // Enabled again (the endpoint is back): the pending event goes out.
    recv.set(Mode::Ok);
    let (status, s) = app.patch_json(&path, json!({"enabled": true})).await;
    assert_eq!(
        (status.as_u16(), &s["disabled_reason"]),
        (200, &Value::Null),
        "{s}"
    );
    wait_for("the pending event", Duration::from_secs(5), || {
        recv.accepted().len() == 1
    })
    .await;
    worker.stop().await;
}

struct Proc(Child);

impl Proc {
    fn spawn(url: &str, log: &std::path::Path) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
        for (k, _) in std::env::vars() {
            if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(["worker", "--handler", "noop"])
            .env("COURIER__DATABASE__URL", url)
            .env("COURIER__DATABASE__MAX_CONNECTIONS", "6")
            .env("COURIER__QUEUE__POLL_INTERVAL", "200ms")
            .env("COURIER__QUEUE__LEASE_TTL", "2s")
            .env("COURIER__QUEUE__HEARTBEAT_INTERVAL", "500ms")
            // Lists cannot come from the environment: a config directory
            // with the defaults and a `test` environment file.
            .env("COURIER_CONFIG_DIR", log.parent().unwrap())
            .env("COURIER_ENV", "test")
            .env("COURIER__LOG__LEVEL", "info,sqlx=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Proc(cmd.spawn().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_delivery_loses_nothing_and_a_repeat_keeps_its_webhook_id() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Slow(Duration::from_millis(150))).await;
    let acc = account(app.pool()).await;
    let (id, _) = subscribe(&app, &recv.url, acc).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
        dir.path().join("default.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("test.toml"),
        "[webhooks]\nallow_cidrs = [\"127.0.0.0/8\"]\nbackoff_base = \"50ms\"\nbackoff_max = \"200ms\"\n",
    )
    .unwrap();
    let url = app.db.url.clone();
    let first = Proc::spawn(&url, &dir.path().join("first.log"));
    let positions = status_changes(app.pool(), acc, 20).await;
    wait_for("some deliveries", Duration::from_secs(20), || {
        recv.hits().len() >= 5
    })
    .await;
    // SIGKILL in the middle of a request (each takes 150 ms).
    tokio::time::sleep(Duration::from_millis(70)).await;
    drop(first);
    let before = recv.hits().len();
    assert!(before < 20, "the kill came before the end");
    let second = Proc::spawn(&url, &dir.path().join("second.log"));
    wait_for("every event", Duration::from_secs(30), || {
        let got: std::collections::BTreeSet<String> =
            recv.hits().into_iter().map(|h| h.id).collect();
        got.len() >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(second);
    // Every event arrived; the first arrivals are in log order; a repeat
    // (the request cut by the kill) carries the id of the event it repeats.
    let hits: Vec<String> = recv.hits().into_iter().map(|h| h.id).collect();
    let mut first_seen = Vec::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for h in &hits {
        if !count.contains_key(h) {
            first_seen.push(h.clone());
        }
        *count.entry(h.clone()).or_default() += 1;
    }
    assert_eq!(first_seen, ids(&positions), "{hits:?}");
    assert!(count.values().all(|n| *n <= 2), "{count:?}");
    let (_, delivered) = app
        .get(&format!(
            "/v1/webhooks/{id}/deliveries?status=delivered&limit=100"
        ))
        .await;
    assert_eq!(delivered.as_array().unwrap().len(), 20);
}

// ---------------------------------------------------------------------------
// The live stream.
// ---------------------------------------------------------------------------

/// Reads SSE events (`id`, `event`) from a streaming response until `n`
/// arrived or `within` passed.
async fn read_events(
    resp: reqwest::Response,
    n: usize,
    within: Duration,
) -> Vec<(i64, String, Value)> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).unwrap();
                }
            }
            if let Some(id) = id {
                out.push((id, ev, data));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_stream_follows_the_log_in_order_and_resumes_from_last_event_id() {
    let app = app(|_| {}).await;
    let acc = account(app.pool()).await;
    let other = account(app.pool()).await;
    let path = format!("/v1/events?types=account.status_changed&account_id={acc}");
    let resp = app
        .request(reqwest::Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(read_events(resp, 6, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An older transaction that commits last: its event must come first
    // (the log's order), and nothing may be skipped.
    let mut old = app.pool().begin().await.unwrap();
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'warming' WHERE id = $1")
        .bind(acc)
        .execute(&mut *old)
        .await
        .unwrap();
    let mut later = Vec::new();
    for i in 0..3 {
        let status = if i % 2 == 0 { "warming" } else { "inactive" };
        sqlx::query("UPDATE mkt_wap_accounts SET status = $2 WHERE id = $1")
            .bind(other)
            .bind(status)
            .execute(app.pool())
            .await
            .unwrap();
        later.push(status);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.commit().await.unwrap();
    let rest = status_changes(app.pool(), acc, 5).await;
    let got = reader.await.unwrap();
    let statuses: Vec<&str> = got
        .iter()
        .map(|(_, _, d)| d["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["warming", "starting", "inactive", "starting", "inactive", "starting"]
    );
    assert!(got
        .iter()
        .all(|(_, ev, d)| ev == "account.status_changed"
            && d["data"]["account_id"] == acc.to_string()));
    assert_eq!(got[1..].iter().map(|g| g.0).collect::<Vec<_>>(), rest);

    // Resume after the third: the rest, nothing twice.
    let resp = app
        .request(reqwest::Method::GET, &path)
        .header("last-event-id", got[2].0.to_string())
        .send()
        .await
        .unwrap();
    let again = read_events(resp, 3, Duration::from_secs(5)).await;
    assert_eq!(
        again.iter().map(|g| g.0).collect::<Vec<_>>(),
        got[3..].iter().map(|g| g.0).collect::<Vec<_>>()
    );

    let (status, body) = app.get("/v1/events?types=nope").await;
    assert_eq!(status, 422, "{body}");
    let resp = app
        .request(reqwest::Method::GET, "/v1/events")
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_login_page_follows_its_account_s_events_through_its_signed_link() {
    let app = app(|_| {}).await;
    let acc = account(app.pool()).await;
    let other = account(app.pool()).await;
    let url = app.login_link(&acc.to_string()).await;
    // The page listens instead of reloading every 3 s (the reload stays for
    // browsers without scripts).
    let html = app
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("new EventSource(location.pathname+\"/events\"+location.search)"),
        "{html}"
    );
    assert!(
        html.contains("<noscript><meta http-equiv=\"refresh\""),
        "{html}"
    );

    let (path, query) = url.split_once('?').unwrap();
    let events = format!("{path}/events?{query}");
    let resp = app.http.get(&events).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(read_events(resp, 2, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    status_changes(app.pool(), other, 1).await;
    sqlx::query(
        "UPDATE mkt_wap_accounts SET status = 'qr_pending', qr_token = 'ref-1' WHERE id = $1",
    )
    .bind(acc)
    .execute(app.pool())
    .await
    .unwrap();
    let got = reader.await.unwrap();
    let kinds: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["account.status_changed", "account.qr_changed"],
        "only its account's"
    );
    assert!(
        !got[1].2.to_string().contains("ref-1"),
        "the QR code itself is never in an event"
    );

    // Without the signed link, or with another account's: 401.
    let bare = app.http.get(format!("{path}/events")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let other_path = path.replace(&acc.to_string(), &other.to_string());
    let stolen = app
        .http
        .get(format!("{other_path}/events?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);
}

// ---------------------------------------------------------------------------
// Retention, secret rotation, disabled subscriptions.
// ---------------------------------------------------------------------------

/// Moves the events of `account` (all, or those in `positions`) back in time.
async fn age_events(pool: &PgPool, positions: &[i64], by: &str) {
    sqlx::query(
        "UPDATE courier_events SET occurred_at = occurred_at - $2::interval WHERE position = ANY($1)",
    )
    .bind(positions)
    .bind(by)
    .execute(pool)
    .await
    .unwrap();
}

async fn event_positions(pool: &PgPool, among: &[i64]) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT position FROM courier_events WHERE position = ANY($1) ORDER BY position",
    )
    .bind(among)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn delivery_statuses(pool: &PgPool, sub: Uuid) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT position, status FROM webhook_deliveries WHERE subscription_id = $1 ORDER BY position",
    )
    .bind(sub)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn prune(app: &TestApp, tweak: impl FnOnce(&mut Settings)) -> String {
    let mut s = app.settings.clone();
    tweak(&mut s);
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(app.pool())
        .await
        .unwrap();
    courier::maintenance::run(app.pool(), &s, courier::maintenance::Task::Prune, now)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_prunes_old_events_and_finished_deliveries_but_keeps_what_a_delivery_needs() {
    let app = app(|s| {
        s.webhooks.horizon = Duration::from_millis(600);
        s.webhooks.events_retain = Duration::from_secs(3600);
        s.webhooks.retain_delivered = Duration::from_secs(86_400);
        s.webhooks.retain_dead = Duration::from_secs(7 * 86_400);
        // Several statements per table: the batches are bounded.
        s.webhooks.prune_batch = 2;
    })
    .await;
    let ok = Receiver::start(Mode::Ok).await;
    let failing = Receiver::start(Mode::Status(500)).await;
    let down = Receiver::start(Mode::Status(503)).await;
    let (delivered_acc, dead_acc, pending_acc, quiet_acc) = (
        account(app.pool()).await,
        account(app.pool()).await,
        account(app.pool()).await,
        account(app.pool()).await,
    );
    let (delivered_sub, _) = subscribe(&app, &ok.url, delivered_acc).await;
    let (dead_sub, _) = subscribe(&app, &failing.url, dead_acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    let delivered = status_changes(app.pool(), delivered_acc, 5).await;
    let dead = status_changes(app.pool(), dead_acc, 1).await;
    let quiet = status_changes(app.pool(), quiet_acc, 4).await;
    wait_for("5 deliveries", Duration::from_secs(15), || {
        ok.accepted().len() == 5
    })
    .await;
    let start = Instant::now();
    while delivery_statuses(app.pool(), dead_sub).await[0].1 != "dead" {
        assert!(start.elapsed() < Duration::from_secs(15), "never dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    // A subscription whose endpoint is down, its delivery still retrying
    // (no worker runs now: it stays pending).
    let (pending_sub, _) = subscribe(&app, &down.url, pending_acc).await;
    let pending = status_changes(app.pool(), pending_acc, 1).await;
    let recent = status_changes(app.pool(), quiet_acc, 2).await;

    // Everything but `recent` is two hours old; the log keeps one hour.
    let old: Vec<i64> = [&delivered, &dead, &quiet, &pending]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    age_events(app.pool(), &old, "2 hours").await;
    let line = prune(&app, |_| {}).await;
    let all: Vec<i64> = old.iter().chain(&recent).copied().collect();
    let left = event_positions(app.pool(), &all).await;
    let mut want: Vec<i64> = [&dead, &pending, &recent]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    want.sort();
    assert_eq!(
        left, want,
        "old events go, except a dead letter's and a pending delivery's: {line}"
    );

    assert!(line.contains("9 event(s) pruned, 2 kept"), "{line}");
    // Deliveries are younger than their retention: all still listed, the
    // delivered ones without their event type now.
    assert_eq!(delivery_statuses(app.pool(), delivered_sub).await.len(), 5);
    assert_eq!(
        delivery_statuses(app.pool(), pending_sub).await,
        vec![(pending[0], "pending".into())]
    );

    // A delivered delivery whose event left the log cannot be replayed; the
    // dead letter (its event kept) can.
    let (status, body) = app
        .post_json(
            &format!(
                "/v1/webhooks/{delivered_sub}/deliveries/{}/replay",
                delivered[0]
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("events_retain"), "{body}");
    failing.set(Mode::Ok);
    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/{dead_sub}/deliveries/{}/replay", dead[0]),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let worker = Worker::start(app.pool(), &app.settings).await;
    wait_for("the replay", Duration::from_secs(10), || {
        !failing.accepted().is_empty()
    })
    .await;
    worker.stop().await;
    assert_eq!(failing.accepted(), ids(&dead));

    // Later: delivered rows past webhooks.retain_delivered go, and with them
    // the replayed dead letter's hold on its event. The pending delivery and
    // its event stay, however old.
    sqlx::query(
        "UPDATE webhook_deliveries SET delivered_at = delivered_at - interval '2 days' \
                 WHERE status = 'delivered'",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let line = prune(&app, |_| {}).await;
    assert!(
        line.contains("6 delivered and 0 dead webhook deliveries pruned"),
        "{line}"
    );
    assert!(delivery_statuses(app.pool(), delivered_sub)
        .await
        .is_empty());
    assert!(delivery_statuses(app.pool(), dead_sub).await.is_empty());
    let mut want: Vec<i64> = [&pending, &recent].into_iter().flatten().copied().collect();
    want.sort();
    assert_eq!(event_positions(app.pool(), &all).await, want, "{line}");
    assert_eq!(
        delivery_statuses(app.pool(), pending_sub).await,
        vec![(pending[0], "pending".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_go_after_their_own_retention_and_free_their_events() {
    let app = app(|s| {
        s.webhooks.horizon = Duration::from_millis(400);
        s.webhooks.events_retain = Duration::from_secs(3600);
        s.webhooks.retain_dead = Duration::from_secs(86_400);
    })
    .await;
    let failing = Receiver::start(Mode::Status(500)).await;
    let acc = account(app.pool()).await;
    let (sub, _) = subscribe(&app, &failing.url, acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    let dead = status_changes(app.pool(), acc, 2).await;
    let start = Instant::now();
    while delivery_statuses(app.pool(), sub)
        .await
        .iter()
        .any(|d| d.1 != "dead")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "never dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    age_events(app.pool(), &dead, "2 hours").await;
    // Kept while the dead letters are (younger than retain_dead).
    prune(&app, |_| {}).await;
    assert_eq!(event_positions(app.pool(), &dead).await, dead);
    // One dead letter past webhooks.retain_dead: it goes, and its event.
    sqlx::query(
        "UPDATE webhook_deliveries SET dead_at = dead_at - interval '2 days' WHERE position = $1",
    )
    .bind(dead[0])
    .execute(app.pool())
    .await
    .unwrap();
    let line = prune(&app, |_| {}).await;
    assert!(
        line.contains("1 event(s) pruned, 1 kept") && line.contains("0 delivered and 1 dead"),
        "{line}"
    );
    assert_eq!(
        delivery_statuses(app.pool(), sub).await,
        vec![(dead[1], "dead".into())]
    );
    assert_eq!(event_positions(app.pool(), &dead).await, vec![dead[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resuming_after_a_pruned_event_is_told_to_reset_then_follows_on() {
    let app = app(|s| s.webhooks.events_retain = Duration::from_secs(3600)).await;
    let acc = account(app.pool()).await;
    let old = status_changes(app.pool(), acc, 3).await;
    let kept = status_changes(app.pool(), acc, 1).await;
    age_events(app.pool(), &old, "2 hours").await;
    prune(&app, |_| {}).await;
    assert_eq!(event_positions(app.pool(), &old).await, Vec::<i64>::new());

    let path = format!("/v1/events?types=account.status_changed&account_id={acc}");
    let resp = app
        .request(reqwest::Method::GET, &path)
        .header("last-event-id", old[1].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(read_events(resp, 2, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = status_changes(app.pool(), acc, 1).await;
    let got = reader.await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    // First the reset, naming the lost id; its own id is where the stream
    // goes on (after the log's end), so a reconnect resumes from there.
    let (reset_id, kind, data) = &got[0];
    assert_eq!(kind, "reset", "{got:?}");
    assert_eq!(data["last_event_id"], old[1]);
    assert_eq!(data["resumed_after"], *reset_id);
    assert!(*reset_id >= kept[0], "{got:?}");
    assert!(
        data["reason"].as_str().unwrap().contains("events_retain"),
        "{data}"
    );
    // Then what happens next; not the retained events before the reset.
    assert_eq!(
        (got[1].0, got[1].1.as_str()),
        (next[0], "account.status_changed")
    );

    // Reconnecting with the reset's id: no reset, the events after it.
    let resp = app
        .request(reqwest::Method::GET, &path)
        .header("last-event-id", reset_id.to_string())
        .send()
        .await
        .unwrap();
    let again = read_events(resp, 1, Duration::from_secs(5)).await;
    assert_eq!(
        again
            .iter()
            .map(|g| (g.0, g.1.as_str()))
            .collect::<Vec<_>>(),
        [(next[0], "account.status_changed")]
    );
    // An id that never was an event: the same reset.
    let resp = app
        .request(reqwest::Method::GET, &format!("{path}&after=999999999"))
        .send()
        .await
        .unwrap();
    let never = read_events(resp, 1, Duration::from_secs(5)).await;
    assert_eq!(never[0].1, "reset");
    assert_eq!(never[0].2["last_event_id"], 999_999_999);
    // `after=0`: from the oldest event the log holds, no reset.
    let resp = app
        .request(reqwest::Method::GET, &format!("{path}&after=0"))
        .send()
        .await
        .unwrap();
    let from_start = read_events(resp, 2, Duration::from_secs(5)).await;
    assert_eq!(
        from_start.iter().map(|g| g.0).collect::<Vec<_>>(),
        [kept[0], next[0]]
    );
}

/// For each hit, whether the `standardwebhooks` library verifies it with
/// `secret`.
fn verifies_with(secret: &str, hits: &[Hit]) -> Vec<bool> {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
wh = Webhook(sys.argv[1])
out = []
for h in json.load(sys.stdin):
    try:
        wh.verify(h["body"], {"webhook-id": h["id"], "webhook-timestamp": h["timestamp"], "webhook-signature": h["signature"]})
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
"#;
    let input: Vec<Value> = hits
        .iter()
        .map(|h| json!({"id": h.id, "timestamp": h.timestamp, "signature": h.signature, "body": h.body}))
        .collect();
    let mut child = Command::new(python_with_standardwebhooks())
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_signs_beside_the_new_one_during_the_overlap_then_only_the_new_one() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Ok).await;
    let acc = account(app.pool()).await;
    let (id, old_secret) = subscribe(&app, &recv.url, acc).await;
    let worker = Worker::start(app.pool(), &app.settings).await;
    status_changes(app.pool(), acc, 1).await;
    wait_for("the first delivery", Duration::from_secs(10), || {
        recv.accepted().len() == 1
    })
    .await;

    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/{id}/rotate-secret?overlap_seconds=3"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_secret = body["secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    assert!(body["previous_secret_expires_at"].is_string(), "{body}");
    // Shown once: neither secret is in the subscription's views.
    let (_, one) = app.get(&format!("/v1/webhooks/{id}")).await;
    assert!(!one.to_string().contains(&new_secret) && !one.to_string().contains(&old_secret));
    assert_eq!(
        one["previous_secret_expires_at"],
        body["previous_secret_expires_at"]
    );

    // During the overlap: two signatures, either secret verifies.
    status_changes(app.pool(), acc, 1).await;
    wait_for(
        "the delivery in the overlap",
        Duration::from_secs(10),
        || recv.accepted().len() == 2,
    )
    .await;
    // After it: only the new secret.
    let expires: chrono::DateTime<chrono::Utc> = body["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    status_changes(app.pool(), acc, 1).await;
    wait_for(
        "the delivery after the overlap",
        Duration::from_secs(10),
        || recv.accepted().len() == 3,
    )
    .await;
    worker.stop().await;

    let hits: Vec<Hit> = recv.hits().into_iter().filter(|h| h.status < 300).collect();
    let during: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::from_timestamp(hits[1].timestamp.parse().unwrap(), 0).unwrap();
    assert!(
        during < expires,
        "the second delivery was meant to fall in the overlap"
    );
    assert_eq!(
        hits[1].signature.split(' ').count(),
        2,
        "{}",
        hits[1].signature
    );
    assert_eq!(
        hits[2].signature.split(' ').count(),
        1,
        "{}",
        hits[2].signature
    );
    assert_eq!(verifies_with(&old_secret, &hits), [true, true, false]);
    assert_eq!(verifies_with(&new_secret, &hits), [false, true, true]);

    // Overlap 0 (a leaked secret): the replaced one stops at once.
    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/{id}/rotate-secret?overlap_seconds=0"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_secret_expires_at"], Value::Null);
    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/{id}/rotate-secret?overlap_seconds=604801"),
            json!({}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app
        .post_json(
            &format!("/v1/webhooks/{}/rotate-secret", Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_subscription_skips_new_events_and_holds_its_backlog_until_enabled() {
    let app = app(|_| {}).await;
    let recv = Receiver::start(Mode::Status(503)).await;
    let acc = account(app.pool()).await;
    let (id, _) = subscribe(&app, &recv.url, acc).await;
    // A backlog: two events the endpoint has not taken yet.
    let backlog = status_changes(app.pool(), acc, 2).await;
    let path = format!("/v1/webhooks/{id}");
    let (status, s) = app.patch_json(&path, json!({"enabled": false})).await;
    assert_eq!(status, 200, "{s}");
    // While disabled: events are not fanned out to it at all.
    let skipped = status_changes(app.pool(), acc, 2).await;
    let rows = delivery_statuses(app.pool(), id).await;
    assert_eq!(
        rows,
        backlog
            .iter()
            .map(|p| (*p, "pending".to_string()))
            .collect::<Vec<_>>()
    );
    // And nothing goes out, even with a worker and a working endpoint.
    recv.set(Mode::Ok);
    let worker = Worker::start(app.pool(), &app.settings).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        recv.hits().is_empty(),
        "a disabled subscription sent {:?}",
        recv.hits()
    );
    // Enabled again: the backlog goes out in order, the skipped events never;
    // events from now on are delivered.
    let (status, s) = app.patch_json(&path, json!({"enabled": true})).await;
    assert_eq!(status, 200, "{s}");
    let after = status_changes(app.pool(), acc, 1).await;
    wait_for(
        "the backlog and the new event",
        Duration::from_secs(10),
        || recv.accepted().len() >= 3,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    let want: Vec<i64> = backlog.iter().chain(&after).copied().collect();
    assert_eq!(recv.accepted(), ids(&want));
    assert!(recv.accepted().iter().all(|a| !ids(&skipped).contains(a)));
}
