//! `courier bench events`: the numbers of issue 23's targets, each beside a
//! same-run baseline, printed as a Markdown section for `docs/benchmarks.md`.
//!
//! - **Webhooks**: account status changes at `--rate` events/s for
//!   `--seconds` (each its own transaction, so each an event of the log),
//!   one subscription to a receiver on 127.0.0.1, one in-process worker.
//!   Latency: from the event's `timestamp` (the database clock when the
//!   trigger wrote it) to the receiver reading the body.
//!   *Baseline*: the same events, written the same way, but a row trigger
//!   on `courier_events` NOTIFYs the event body itself and one plain
//!   LISTEN connection in this process POSTs each payload to the same kind
//!   of receiver, one at a time (one HTTP connection, no queue, no job, no
//!   signing, no address check). Latency measured the same way.
//! - **SSE**: `--streams` concurrent `GET /v1/events` streams on one API
//!   process (in this process), events at `--stream-rate`/s; every stream
//!   must get every event. Latency: event `timestamp` to the client parsing it.
//!   *Baseline*: the same number of streams, opened by the same clients, on
//!   a bare axum SSE endpoint that forwards the NOTIFY payloads of one
//!   LISTEN connection through a tokio broadcast (no log read, no ordering
//!   horizon, no per-stream task, no auth, no filter).
//!
//! Courier's latencies are printed with the baseline's and their ratio
//! (machine-independent: both run on the same machine a minute apart), and
//! with the issue's absolute targets (PASS/MISS).
//!
//! A fresh database on the test cluster (`COURIER_TEST_PG_DIR`) per run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::config::Settings;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Options of the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsBenchArgs {
    /// Events per second in the webhook run.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Seconds of each run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent SSE streams.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Events per second in the SSE run.
    #[arg(long, default_value_t = 20)]
    pub stream_rate: u32,
}

/// Issue 23's targets: webhook p99 and SSE p99, in ms.
const WEBHOOK_P99_TARGET_MS: f64 = 500.0;
const SSE_P99_TARGET_MS: f64 = 200.0;

/// Latencies collected by receivers and clients.
type Latencies = Arc<Mutex<Vec<f64>>>;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[(((v.len() as f64 - 1.0) * p).round() as usize).min(v.len() - 1)]
}

fn latency_ms(body: &[u8]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ts: DateTime<Utc> = v["timestamp"].as_str()?.parse().ok()?;
    Some((Utc::now() - ts).num_microseconds()? as f64 / 1000.0)
}

/// The 1-minute load average (Linux), or NaN.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One measured run: what was sent, what arrived, and how late.
struct Measured {
    run: String,
    rate: String,
    expected: usize,
    latencies: Vec<f64>,
    load: f64,
}

impl Measured {
    fn percentiles(&self) -> [f64; 4] {
        let mut v = self.latencies.clone();
        [0.5, 0.9, 0.99, 1.0].map(|p| pct(&mut v, p))
    }

    fn row(&self) -> String {
        let [p50, p90, p99, max] = self.percentiles();
        format!(
            "| {} | {} | {:.1} | {} of {} | {p50:.1} | {p90:.1} | {p99:.1} | {max:.1} |\n",
            self.run,
            self.rate,
            self.load,
            self.latencies.len(),
            self.expected,
        )
    }
}

/// Courier over its baseline, formatted (`—` when the baseline is 0 or missing).
fn ratio(courier: f64, baseline: f64) -> String {
    if baseline.is_finite() && baseline > 0.0 && courier.is_finite() {
        format!("{:.1}×", courier / baseline)
    } else {
        "—".into()
    }
}

/// The comparison row of one target: Courier and baseline p50/p99, their
/// ratios, and the absolute target with PASS/MISS (MISS also when an event
/// did not arrive).
fn verdict(target: &str, limit_ms: f64, courier: &Measured, baseline: &Measured) -> String {
    let [c50, _, c99, _] = courier.percentiles();
    let [b50, _, b99, _] = baseline.percentiles();
    let complete = courier.latencies.len() >= courier.expected;
    let pass = complete && c99 < limit_ms;
    format!(
        "| {target} | {c50:.1} / {c99:.1} | {b50:.1} / {b99:.1} | {} / {} | {} |\n",
        ratio(c50, b50),
        ratio(c99, b99),
        if pass {
            format!("PASS: {c99:.1} < {limit_ms:.0}")
        } else if complete {
            format!("MISS: {c99:.1} ≥ {limit_ms:.0}")
        } else {
            format!(
                "MISS: {} of {} events arrived",
                courier.latencies.len(),
                courier.expected
            )
        },
    )
}

/// `n` accounts whose status changes make the events.
async fn accounts(pool: &PgPool, n: usize) -> Result<Vec<Uuid>, BoxError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            sqlx::query_scalar(
                "INSERT INTO mkt_wap_accounts (account_name, status) VALUES ($1, 'inactive') RETURNING id",
            )
            .bind(format!("bench-{i}"))
            .fetch_one(pool)
            .await?,
        );
    }
    Ok(out)
}

/// Makes `rate` events/s for `seconds` (one UPDATE, one transaction, per
/// event, spread over the accounts); returns how many were made.
async fn generate(
    pool: &PgPool,
    accounts: &[Uuid],
    rate: u32,
    seconds: u64,
) -> Result<usize, BoxError> {
    let tick = Duration::from_millis(10);
    let per_tick = rate as f64 / 100.0;
    let mut owed = 0.0;
    let mut made = 0usize;
    let mut flip = vec![false; accounts.len()];
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        interval.tick().await;
        owed += per_tick;
        let mut batch = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            let i = made % accounts.len();
            flip[i] = !flip[i];
            let status = if flip[i] { "starting" } else { "inactive" };
            batch.push(
                sqlx::query("UPDATE mkt_wap_accounts SET status = $2 WHERE id = $1")
                    .bind(accounts[i])
                    .bind(status)
                    .execute(pool),
            );
            made += 1;
        }
        for r in futures::future::join_all(batch).await {
            r?;
        }
    }
    Ok(made)
}

/// Waits until `got` holds `n` latencies or `limit` passes.
async fn wait_for(got: &Latencies, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while got.lock().expect("not poisoned").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on 127.0.0.1: its URL and the latencies it reads.
async fn receiver() -> Result<(String, Latencies), BoxError> {
    let got: Latencies = Arc::default();
    let recv = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let recv = recv.clone();
            async move {
                if let Some(ms) = latency_ms(&body) {
                    recv.lock().expect("not poisoned").push(ms);
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// The baselines' source: a row trigger that NOTIFYs `bench_events` with
/// each event's body (the shape of Courier's body: id, type, timestamp,
/// version, data). Only in the baseline's own fresh database.
async fn notify_bodies(pool: &PgPool) -> Result<(), BoxError> {
    sqlx::query(
        "CREATE FUNCTION bench_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             PERFORM pg_notify('bench_events', jsonb_build_object( \
                 'id', 'evt_' || NEW.position, 'type', NEW.type, \
                 'timestamp', NEW.occurred_at, 'version', 1, 'data', NEW.data)::text); \
             RETURN NULL; \
         END $$",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TRIGGER bench_events_notify AFTER INSERT ON courier_events \
         FOR EACH ROW EXECUTE FUNCTION bench_events_notify()",
    )
    .execute(pool)
    .await?;
    Ok(())
}

fn rate_label(made: usize, secs: f64) -> String {
    format!("{made} events in {secs:.1} s ({:.0}/s)", made as f64 / secs)
}

async fn webhook_run(
    pool: &PgPool,
    settings: &Settings,
    args: &EventsBenchArgs,
) -> Result<Measured, BoxError> {
    let (url, got) = receiver().await?;
    let policy = courier::media::AddressPolicy::new(&settings.webhooks.allow_cidrs)?;
    let spec = courier::webhook::Spec {
        url: courier::webhook::check_url(&policy, &url).await?,
        description: Some("bench".into()),
        event_types: vec![courier::events::EventType::AccountStatusChanged],
        account_id: None,
        campaign_id: None,
    };
    courier::webhook::create(pool, spec).await?;
    let (handlers, _) = courier::app::worker_handlers(settings, pool).await?;
    let runtime = courier::queue::runtime::Runtime::new(pool.clone(), settings, handlers);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runtime.run_until(async move {
        let _ = stopped.await;
    }));
    let accs = accounts(pool, 50).await?;
    let load = load_average();
    let started = Instant::now();
    let made = generate(pool, &accs, args.rate, args.seconds).await?;
    let gen_secs = started.elapsed().as_secs_f64();
    wait_for(&got, made, Duration::from_secs(60)).await;
    let _ = stop.send(());
    let _ = worker.await;
    let latencies = got.lock().expect("not poisoned").clone();
    Ok(Measured {
        run: "webhooks, Courier: 1 subscription, worker".into(),
        rate: rate_label(made, gen_secs),
        expected: made,
        latencies,
        load,
    })
}

/// Each `bench_events` payload POSTed to `url` as it comes, one at a time.
async fn post_notifications(mut listener: PgListener, url: String) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    loop {
        let n = listener.recv().await?;
        http.post(&url)
            .header("content-type", "application/json")
            .body(n.payload().to_owned())
            .send()
            .await?
            .error_for_status()?;
    }
}

/// The webhook baseline: NOTIFY with the body → one LISTEN connection →
/// POST to the receiver, one at a time.
async fn webhook_baseline(pool: &PgPool, args: &EventsBenchArgs) -> Result<Measured, BoxError> {
    notify_bodies(pool).await?;
    let (url, got) = receiver().await?;
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("bench_events").await?;
    let forward = tokio::spawn(post_notifications(listener, url));
    let accs = accounts(pool, 50).await?;
    let load = load_average();
    let started = Instant::now();
    let made = generate(pool, &accs, args.rate, args.seconds).await?;
    let gen_secs = started.elapsed().as_secs_f64();
    wait_for(&got, made, Duration::from_secs(60)).await;
    if forward.is_finished() {
        if let Ok(Err(e)) = forward.await {
            return Err(format!("webhook baseline forwarder: {e}").into());
        }
    } else {
        forward.abort();
    }
    let latencies = got.lock().expect("not poisoned").clone();
    Ok(Measured {
        run: "webhooks, baseline: NOTIFY body → 1 LISTEN → POST".into(),
        rate: rate_label(made, gen_secs),
        expected: made,
        latencies,
        load,
    })
}

/// Opens `n` SSE streams on `url` (with `token`, if any), each parsing
/// frames and recording every event's latency; returns once all are open.
async fn open_streams(
    url: &str,
    n: usize,
    token: Option<&'static str>,
) -> Result<
    (
        Latencies,
        Vec<tokio::task::JoinHandle<Result<(), BoxError>>>,
    ),
    BoxError,
> {
    let got: Latencies = Arc::default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut tasks = Vec::new();
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    for _ in 0..n {
        let (http, got, opened, url) = (http.clone(), got.clone(), opened.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let mut req = http.get(url);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                return Err::<(), BoxError>(format!("stream: {}", resp.status()).into());
            }
            opened.add_permits(1);
            let mut buf = String::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                        if let Some(ms) = latency_ms(data.trim().as_bytes()) {
                            got.lock().expect("not poisoned").push(ms);
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    // Every stream open before the first event.
    let all = tokio::time::timeout(Duration::from_secs(60), opened.acquire_many(n as u32)).await;
    if all.is_err() {
        for t in &tasks {
            t.abort();
        }
        return Err(format!("not all {n} streams opened within 60 s").into());
    }
    Ok((got, tasks))
}

/// Events through `n` streams: makes the events, waits for every stream
/// to have them all, closes the streams.
async fn stream_events(
    pool: &PgPool,
    args: &EventsBenchArgs,
    run: String,
    got: Latencies,
    tasks: Vec<tokio::task::JoinHandle<Result<(), BoxError>>>,
) -> Result<Measured, BoxError> {
    let accs = accounts(pool, 20).await?;
    let load = load_average();
    let made = generate(pool, &accs, args.stream_rate, args.seconds).await?;
    let expected = made * args.streams;
    wait_for(&got, expected, Duration::from_secs(30)).await;
    for t in tasks {
        t.abort();
    }
    let latencies = got.lock().expect("not poisoned").clone();
    Ok(Measured {
        run,
        rate: format!("{made} events ({}/s)", args.stream_rate),
        expected,
        latencies,
        load,
    })
}

async fn sse_run(
    pool: &PgPool,
    settings: &Settings,
    args: &EventsBenchArgs,
) -> Result<Measured, BoxError> {
    let token = "bench-token-0123456789abcdef";
    let mut s = settings.clone();
    s.api.token = None;
    let state = courier::api::AppState::new(pool.clone(), token).with_settings(s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(courier::api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let url = format!("{base}/v1/events?types=account.status_changed");
    let (got, tasks) = open_streams(&url, args.streams, Some(token)).await?;
    let run = format!("SSE, Courier: {} × `GET /v1/events`", args.streams);
    let m = stream_events(pool, args, run, got, tasks).await;
    let _ = stop.send(());
    m
}

/// One baseline event: SSE id, event type, body.
type Frame = Arc<(String, String, String)>;

/// Each `bench_events` payload broadcast as a frame (its SSE id and type
/// read once here, not per stream).
async fn broadcast_notifications(
    mut listener: PgListener,
    feed: tokio::sync::broadcast::Sender<Frame>,
) -> Result<(), BoxError> {
    loop {
        let n = listener.recv().await?;
        let v: serde_json::Value = serde_json::from_str(n.payload())?;
        let id = v["id"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("evt_");
        let kind = v["type"].as_str().unwrap_or_default();
        // No receivers is fine: nobody is streaming yet.
        let _ = feed.send(Arc::new((
            id.to_owned(),
            kind.to_owned(),
            n.payload().to_owned(),
        )));
    }
}

/// The SSE baseline: one LISTEN connection → tokio broadcast → a bare
/// axum SSE endpoint writing each NOTIFY payload as it came.
async fn sse_baseline(
    pool: &PgPool,
    settings: &Settings,
    args: &EventsBenchArgs,
) -> Result<Measured, BoxError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures::StreamExt;
    notify_bodies(pool).await?;
    let (tx, _) = tokio::sync::broadcast::channel::<Frame>(4096);
    let mut pg = PgListener::connect_with(pool).await?;
    pg.listen("bench_events").await?;
    let forward = tokio::spawn(broadcast_notifications(pg, tx.clone()));
    let heartbeat = settings.webhooks.heartbeat;
    let app = axum::Router::new().route(
        "/events",
        axum::routing::get(move || {
            let rx = tx.subscribe();
            async move {
                let frames = futures::stream::unfold(rx, |mut rx| async move {
                    loop {
                        match rx.recv().await {
                            Ok(f) => {
                                let e = SseEvent::default().id(&f.0).event(&f.1).data(&f.2);
                                return Some((Ok::<_, std::convert::Infallible>(e), rx));
                            }
                            // A lost frame shows as a missing event in the count.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                });
                Sse::new(frames.boxed())
                    .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let (got, tasks) = open_streams(&url, args.streams, None).await?;
    let run = format!(
        "SSE, baseline: {} × NOTIFY → broadcast → axum SSE",
        args.streams
    );
    let m = stream_events(pool, args, run, got, tasks).await;
    let _ = stop.send(());
    forward.abort();
    m
}

/// Runs both targets, each baseline first, and returns the Markdown report.
pub async fn run(args: EventsBenchArgs) -> Result<String, BoxError> {
    let mut settings = Settings::defaults();
    settings.queue.handler = "noop".into();
    settings.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    let start_load = load_average();
    let started = Utc::now();
    let db = courier_testkit::fresh_database().await?;
    let hooks_base = webhook_baseline(&db.pool, &args).await?;
    let db = courier_testkit::fresh_database().await?;
    let hooks = webhook_run(&db.pool, &settings, &args).await?;
    let db = courier_testkit::fresh_database().await?;
    let sse_base = sse_baseline(&db.pool, &settings, &args).await?;
    let db = courier_testkit::fresh_database().await?;
    let sse = sse_run(&db.pool, &settings, &args).await?;
    let webhook_target = format!(
        "webhooks at {}/s: p99 < {WEBHOOK_P99_TARGET_MS:.0} ms",
        args.rate
    );
    let sse_target = format!(
        "SSE, {} streams: p99 < {SSE_P99_TARGET_MS:.0} ms",
        args.streams
    );
    Ok(format!(
        "\n### {} UTC, `courier bench events --rate {} --seconds {} --streams {} --stream-rate {}` \
         (load average {start_load:.1} at start, {:.1} at end)\n\n\
         | run | events | load (1 min) | received | p50 ms | p90 ms | p99 ms | max ms |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n{}{}{}{}\n\
         | target | Courier p50 / p99 ms | baseline p50 / p99 ms | ratio p50 / p99 | absolute |\n\
         | --- | --- | --- | --- | --- |\n{}{}",
        started.format("%Y-%m-%d %H:%M"),
        args.rate,
        args.seconds,
        args.streams,
        args.stream_rate,
        load_average(),
        hooks_base.row(),
        hooks.row(),
        sse_base.row(),
        sse.row(),
        verdict(&webhook_target, WEBHOOK_P99_TARGET_MS, &hooks, &hooks_base),
        verdict(&sse_target, SSE_P99_TARGET_MS, &sse, &sse_base),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(latencies: Vec<f64>, expected: usize) -> Measured {
        Measured {
            run: "r".into(),
            rate: "x".into(),
            expected,
            latencies,
            load: 1.0,
        }
    }

    #[test]
    fn verdict_prints_both_sides_the_ratio_and_the_absolute_target() {
        let courier = measured(vec![10.0; 100], 100);
        let base = measured(vec![2.0; 100], 100);
        let row = verdict("t", 500.0, &courier, &base);
        assert_eq!(
            row,
            "| t | 10.0 / 10.0 | 2.0 / 2.0 | 5.0× / 5.0× | PASS: 10.0 < 500 |\n"
        );
        let slow = measured(vec![600.0; 100], 100);
        assert!(verdict("t", 500.0, &slow, &base).contains("MISS: 600.0 ≥ 500"));
        let short = measured(vec![1.0; 99], 100);
        assert!(verdict("t", 500.0, &short, &base).contains("MISS: 99 of 100 events arrived"));
        assert!(verdict("t", 500.0, &courier, &measured(vec![], 0)).contains("— / —"));
    }
}
