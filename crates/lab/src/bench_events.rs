//! `courier bench events`: the numbers of issue 23's targets, printed as a
//! Markdown section for `docs/benchmarks.md`.
//!
//! - **Webhooks**: account status changes at `--rate` events/s for
//!   `--seconds` (each its own transaction, so each an event of the log),
//!   one subscription to a receiver on 127.0.0.1, one in-process worker.
//!   Latency: from the event's `timestamp` (the database clock when the
//!   trigger wrote it) to the receiver reading the body.
//! - **SSE**: `--streams` concurrent `GET /v1/events` streams on one API
//!   process (in this process), events at `--stream-rate`/s; every stream
//!   must get every event. Latency: event `timestamp` to the client parsing it.
//!
//! A fresh database on the test cluster (`COURIER_TEST_PG_DIR`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::config::Settings;
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

async fn webhook_run(
    pool: &PgPool,
    settings: &Settings,
    args: &EventsBenchArgs,
) -> Result<String, BoxError> {
    let got: Arc<Mutex<Vec<f64>>> = Arc::default();
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
    let started = Instant::now();
    let made = generate(pool, &accs, args.rate, args.seconds).await?;
    let gen_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().expect("not poisoned").len() < made && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    let _ = worker.await;
    let mut v = got.lock().expect("not poisoned").clone();
    let n = v.len();
    Ok(format!(
        "| webhooks, 1 subscription | {made} events in {gen_secs:.1} s ({:.0}/s) | {n} received | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        made as f64 / gen_secs,
        pct(&mut v, 0.5),
        pct(&mut v, 0.9),
        pct(&mut v, 0.99),
        pct(&mut v, 1.0),
    ))
}

async fn sse_run(
    pool: &PgPool,
    settings: &Settings,
    args: &EventsBenchArgs,
) -> Result<String, BoxError> {
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
    let got: Arc<Mutex<Vec<f64>>> = Arc::default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut tasks = Vec::new();
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    for _ in 0..args.streams {
        let (http, got, opened) = (http.clone(), got.clone(), opened.clone());
        let url = format!("{base}/v1/events?types=account.status_changed");
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let resp = http.get(url).bearer_auth(token).send().await?;
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
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        opened.acquire_many(args.streams as u32),
    )
    .await;
    if all.is_err() {
        return Err(format!("not all {} streams opened within 60 s", args.streams).into());
    }
    let accs = accounts(pool, 20).await?;
    let made = generate(pool, &accs, args.stream_rate, args.seconds).await?;
    let expected = made * args.streams;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().expect("not poisoned").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    for t in tasks {
        t.abort();
    }
    let mut v = got.lock().expect("not poisoned").clone();
    let n = v.len();
    Ok(format!(
        "| SSE, {} streams | {made} events ({}/s) | {n} of {expected} received | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        args.streams,
        args.stream_rate,
        pct(&mut v, 0.5),
        pct(&mut v, 0.9),
        pct(&mut v, 0.99),
        pct(&mut v, 1.0),
    ))
}

/// Runs both and returns the Markdown report.
pub async fn run(args: EventsBenchArgs) -> Result<String, BoxError> {
    let mut settings = Settings::defaults();
    settings.queue.handler = "noop".into();
    settings.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    let db = courier_testkit::fresh_database().await?;
    let hooks = webhook_run(&db.pool, &settings, &args).await?;
    let db2 = courier_testkit::fresh_database().await?;
    let sse = sse_run(&db2.pool, &settings, &args).await?;
    Ok(format!(
        "\n### Events out (`courier bench events`, {})\n\n\
         | run | load | delivered | p50 ms | p90 ms | p99 ms | max ms |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n{hooks}{sse}",
        Utc::now().format("%Y-%m-%d"),
    ))
}
