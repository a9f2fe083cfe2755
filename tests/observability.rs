//! The dashboards and alert rules, proven against a real Prometheus.
//!
//! Courier runs in this process (API with `/metrics`, the database sampler,
//! the scheduler, and a queue worker with the real browser handlers against
//! the WhatsApp Web simulator: an account logs in by QR scan, health checks
//! run). A real Prometheus (Debian's `prometheus`) scrapes `/metrics` every
//! second with `grafana/alerts.yml` loaded. Then every PromQL expression in
//! every dashboard panel and every alert rule is evaluated through
//! Prometheus's HTTP API: each must parse, and each panel query must return at
//! least one series (a panel showing "no data" fails the test).
//!
//! Without `/usr/bin/prometheus` that test fails, unless
//! `COURIER_TEST_SKIP_PROMETHEUS=1` is set: then it prints why and skips.
//!
//! Grafana itself is not packaged here, so the dashboard JSON is checked
//! structurally for what Grafana's file provisioning needs (see
//! docs/operations.md, "How the dashboards are checked").

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier::account::login::start_login;
use courier::config::Settings;
use courier::worker::schedule_health_check;
use courier_sim::SimConfig;
use courier_testkit::{insert_account, TestApp};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const TOKEN: &str = "observability-test-token-0123456789";
const PHONE: &str = "+447700900123";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The provisioned datasource uid (grafana/provisioning/datasources).
fn datasource_uid() -> String {
    let dir = repo().join("grafana/provisioning/datasources");
    let mut uids = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(uid) = line.trim().strip_prefix("uid:") {
                uids.push(uid.trim().trim_matches('"').to_string());
            }
        }
    }
    assert_eq!(
        uids.len(),
        1,
        "one provisioned datasource with a uid: {uids:?}"
    );
    uids.pop().unwrap()
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("grafana/dashboards")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            out.push((path, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 6,
        "six dashboards expected, found {}",
        out.len()
    );
    out
}

/// Checks what Grafana's file provisioning needs and returns
/// `(dashboard/panel, expr)` for every panel target.
fn check_dashboards(ds_uid: &str) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let mut uids = HashSet::new();
    for (path, d) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{name}: uid must be 1-40 chars"
        );
        assert!(uids.insert(uid.to_string()), "{name}: duplicate uid {uid}");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: no title"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{name}: no schemaVersion"
        );
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "{name}: provisioned dashboards carry no numeric id"
        );
        let panels = d["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no panels"));
        assert!(!panels.is_empty(), "{name}: no panels");
        let mut ids = HashSet::new();
        for p in panels {
            let title = p["title"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a panel without title"));
            let at = format!("{name} / {title}");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: no numeric id"));
            assert!(ids.insert(id), "{at}: duplicate panel id {id}");
            assert!(
                ["timeseries", "stat", "bargauge", "gauge", "table"]
                    .contains(&p["type"].as_str().unwrap_or_default()),
                "{at}: unknown panel type {}",
                p["type"]
            );
            let g = &p["gridPos"];
            for k in ["h", "w", "x", "y"] {
                assert!(g[k].as_u64().is_some(), "{at}: gridPos.{k} missing");
            }
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{at}: wider than the 24-column grid"
            );
            assert_eq!(
                p["datasource"]["type"], "prometheus",
                "{at}: datasource type"
            );
            assert_eq!(p["datasource"]["uid"], ds_uid, "{at}: datasource uid");
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: no targets"));
            assert!(!targets.is_empty(), "{at}: no targets");
            for t in targets {
                assert!(t["refId"].as_str().is_some(), "{at}: target without refId");
                if let Some(tds) = t.get("datasource") {
                    assert_eq!(tds["uid"], ds_uid, "{at}: target datasource uid");
                }
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: target without expr"));
                exprs.push((at.clone(), expr.to_string()));
            }
        }
    }
    exprs
}

/// Every alert's `expr` (alerts.yml keeps each on one line; the count is
/// checked against the `- alert:` entries).
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("grafana/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut alert = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(a) = l.strip_prefix("- alert:") {
            alert = a.trim().to_string();
        } else if let Some(e) = l.strip_prefix("expr:") {
            let e = e.trim();
            assert!(
                !e.starts_with('|') && !e.starts_with('>'),
                "{alert}: keep expr on one line"
            );
            let e = e.trim_matches(|c| c == '"' || c == '\'');
            out.push((alert.clone(), e.to_string()));
        }
    }
    let alerts = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(out.len(), alerts, "one expr per alert");
    assert!(alerts >= 7, "seven alerts expected");
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prom {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prom {
    async fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let alerts = repo().join("grafana/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {alerts}\n\
             scrape_configs:\n  - job_name: courier\n    static_configs:\n      - targets: [\"{target}\"]\n",
            alerts = alerts.display()
        );
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let prom = Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prom.http.get(format!("{}/-/ready", prom.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                prom.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prom
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `(status, error, number of series)` of an instant query.
    async fn query(&self, expr: &str) -> (String, String, usize) {
        let v = self.get("/api/v1/query", &[("query", expr)]).await;
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        (
            v["status"].as_str().unwrap_or_default().to_string(),
            v["error"].as_str().unwrap_or_default().to_string(),
            n,
        )
    }
}

/// The test's settings on top of the kit's (token, simulator page, profile
/// and media directories, session key, browser handler): `/metrics` without
/// the token, as Prometheus scrapes it, and short queue and browser timings.
fn tweak(s: &mut Settings) {
    s.api.metrics_public = true;
    s.queue.capacity = 2;
    s.queue.lease_ttl = Duration::from_secs(3);
    s.queue.heartbeat_interval = Duration::from_millis(500);
    s.queue.poll_interval = Duration::from_millis(200);
    s.queue.lease_hold = Duration::from_millis(500);
    s.queue.job_timeout = Duration::from_secs(60);
    s.queue.shutdown_grace = Duration::from_secs(5);
    let b = &mut s.browser;
    b.starting_deadline = Duration::from_secs(15);
    b.qr_deadline = Duration::from_secs(30);
    b.authenticating_deadline = Duration::from_secs(15);
    b.command_timeout = Duration::from_secs(5);
    b.idle_close_after = Duration::from_secs(30);
    b.health_check_interval = Duration::from_secs(3600);
    // The webhook receiver below listens on loopback.
    s.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
}

/// A webhook receiver on loopback that accepts everything; returns its URL.
async fn webhook_receiver() -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

async fn wait_status(
    pool: &sqlx::PgPool,
    id: Uuid,
    f: impl Fn(&str, Option<&str>) -> bool,
) -> (String, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, qr): (String, Option<String>) =
            sqlx::query_as("SELECT status, qr_token FROM mkt_wap_accounts WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        if f(&status, qr.as_deref()) {
            return (status, qr);
        }
        assert!(Instant::now() < deadline, "account stuck in {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn dashboards_are_valid_for_grafana_provisioning() {
    let exprs = check_dashboards(&datasource_uid());
    assert!(exprs.len() >= 25, "{} panel queries", exprs.len());
    alert_exprs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_query_works_against_prometheus() {
    if !Path::new(PROMETHEUS).exists() {
        // A missing Prometheus fails the test: the dashboards and alerts
        // would otherwise go unchecked without anyone noticing. CI installs
        // it (scripts/install-deps --ci). Where it cannot be installed,
        // COURIER_TEST_SKIP_PROMETHEUS=1 skips this test, saying so.
        if std::env::var("COURIER_TEST_SKIP_PROMETHEUS").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: {PROMETHEUS} is missing and COURIER_TEST_SKIP_PROMETHEUS=1 \
                 asks to skip; the dashboard and alert queries were not checked"
            );
            return;
        }
        panic!(
            "{PROMETHEUS} is missing: install Debian's `prometheus` \
             (scripts/install-deps --ci), or set COURIER_TEST_SKIP_PROMETHEUS=1 to skip this test"
        );
    }
    let panel_exprs = check_dashboards(&datasource_uid());
    let rule_exprs = alert_exprs();
    let started = Instant::now();

    // Courier: database, simulator, API (+ sampler), scheduler, browser worker.
    courier::metrics::install();
    let app = TestApp::builder()
        .token(TOKEN)
        .simulator(SimConfig::default())
        .worker()
        .settings(tweak)
        .spawn()
        .await;
    let pool = app.pool().clone();
    let ctl = app.sim_control();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let sampler = tokio::spawn(courier::metrics::sample_forever(
        pool.clone(),
        courier::metrics::SampleOptions::from_settings(&courier::config::Settings::defaults()),
        Duration::from_secs(1),
    ));
    // The worker-only endpoint (`queue.metrics_listen`), checked directly:
    // Prometheus scrapes the API so series are not doubled.
    let wm = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wm_addr = wm.local_addr().unwrap();
    let wm_task = tokio::spawn(courier::metrics::serve(wm, stopped()));
    let scheduler = {
        let s = courier::scheduler::Scheduler::new(pool.clone(), &app.settings);
        let stop = stopped();
        tokio::spawn(async move { s.run_until(stop).await })
    };

    let prom = Prom::start(&app.address.to_string()).await;

    // Real work: an account logs in through the simulator's QR scan, then
    // health checks run through its browser session.
    let id = insert_account(&pool, "obs").await;
    // Events out: a webhook subscription to the account's status changes
    // (delivered by the worker), and an event stream held open.
    let hook = webhook_receiver().await;
    let (status, body) = app
        .post_json(
            "/v1/webhooks",
            serde_json::json!({"url": hook, "event_types": ["account.status_changed"], "account_id": id}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let stream = app.request(Method::GET, "/v1/events").send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    ctl.create_account(&id.to_string(), None).await.unwrap();
    start_login(&pool, id).await.unwrap();
    let (_, qr) = wait_status(&pool, id, |_, qr| qr.is_some()).await;
    ctl.scan(&id.to_string(), qr.as_deref().unwrap(), PHONE)
        .await
        .unwrap();
    wait_status(&pool, id, |s, _| s == "active").await;
    for _ in 0..2 {
        schedule_health_check(&pool, id, Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // A real send through the API, the worker's Chromium session and the
    // simulator, acked up to read: its sent->delivered and delivered->read
    // latencies are observed from the database.
    ctl.add_contact("447700900999", Some("Obs contact"), &[&id.to_string()])
        .await
        .unwrap();
    let r = app
        .request(Method::POST, "/v1/messages")
        .json(
            &serde_json::json!({"account_id": id, "channel_type": "individual",
            "target_phone": "+447700900999", "message_text": "hello"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: String = sqlx::query_scalar(
            "SELECT status FROM mkt_wap_messages WHERE target_chat_id = '447700900999@c.us'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if status == "read" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message is stuck in {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // API traffic (and an unauthorised request, for the error panel).
    for path in ["/v1/accounts", "/v1/stats", "/v1/jobs"] {
        let (status, _) = app.get(path).await;
        assert!(status.is_success(), "{path}: {status}");
    }
    let r = app.http.get(app.url("/v1/accounts")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let worker_metrics = app
        .http
        .get(format!("http://{wm_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "courier_jobs_finished_total",
        "courier_login_transitions_total",
        "courier_job_run_seconds_bucket",
    ] {
        assert!(
            worker_metrics.contains(name),
            "worker /metrics lacks {name}"
        );
    }

    // Evaluate: retry until every panel has data (rates need two scrapes).
    let deadline = Instant::now() + Duration::from_secs(60);
    let empty = loop {
        let mut empty = Vec::new();
        for (at, expr) in &panel_exprs {
            let (status, error, n) = prom.query(expr).await;
            assert_eq!(status, "success", "{at}: `{expr}` does not parse: {error}");
            if n == 0 {
                empty.push(format!("{at}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(
        empty.is_empty(),
        "panels with no data:\n  {}",
        empty.join("\n  ")
    );
    // The data is real, not only the zero-initialised series.
    for expr in [
        "sum(courier_jobs_finished_total{kind=\"login\",outcome=\"completed\"}) > 0",
        "sum(courier_job_run_seconds_count{kind=\"health_check\"}) > 0",
        "sum(courier_job_wait_seconds_count) > 0",
        "sum(courier_login_transitions_total{to=\"active\"}) > 0",
        "sum(courier_browser_command_seconds_count) > 0",
        "sum(courier_browser_sessions) > 0",
        "count(courier_account_budget_limit{window=\"day\"}) > 0",
        "count(courier_account_lease_held) > 0",
        "sum(courier_accounts{status=\"active\"}) == 1",
        "sum(courier_queue_depth{state=\"completed\"}) > 0",
        "sum(courier_http_requests_total{status=\"401\"}) > 0",
        "sum(courier_ack_latency_seconds_count{stage=\"sent_to_delivered\"}) > 0",
        "sum(courier_ack_latency_seconds_count{stage=\"delivered_to_read\"}) > 0",
        "sum(courier_messages{status=\"read\"}) == 1",
        "sum(courier_webhook_deliveries_total{outcome=\"delivered\"}) > 0",
        "sum(courier_webhook_delivery_latency_seconds_count) > 0",
        "sum(courier_event_streams_open) == 1",
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, error, n) = prom.query(expr).await;
            assert_eq!(status, "success", "`{expr}`: {error}");
            if n == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "no real data: `{expr}`");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for (alert, expr) in &rule_exprs {
        let (status, error, _) = prom.query(expr).await;
        assert_eq!(
            status, "success",
            "alert {alert}: `{expr}` does not parse: {error}"
        );
    }
    // Prometheus loaded the rule file and evaluates every rule without error.
    let rules = prom.get("/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rule_exprs.len(), "rules loaded: {rules}");
    for r in loaded {
        assert_ne!(
            r["health"], "err",
            "rule {} fails: {}",
            r["name"], r["lastError"]
        );
    }
    let up = prom.query("up{job=\"courier\"} == 1").await;
    assert_eq!(up.2, 1, "courier target is not up");
    eprintln!(
        "{} panel queries with data, {} alert rules parse; {:.1}s",
        panel_exprs.len(),
        rule_exprs.len(),
        started.elapsed().as_secs_f64()
    );

    drop(stream);
    let _ = stop_tx.send(true);
    let _ = app.shutdown().await;
    let _ = scheduler.await;
    let _ = wm_task.await;
    sampler.abort();
    drop(prom);
}
