//! Queue benchmark: this engine vs stock apalis-postgres vs a raw
//! `FOR UPDATE SKIP LOCKED` loop, side by side on the same private cluster.
//!
//! Run: `cargo bench --bench queue` (release build). Prints a Markdown table;
//! `docs/benchmarks.md` holds the last run. Not a timed test: nothing asserts.
//!
//! Knobs (environment): `BENCH_JOBS` (claim+complete jobs per case, default
//! 20000), `BENCH_ACCOUNTS` (default 200), `BENCH_SAMPLES` (latency samples,
//! default 200).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_postgres::{Config as ApalisConfig, PostgresStorage};
use courier::config::{Settings, Sources};
use courier::jobs::send::SendJob;
use courier::queue::handler::{ClaimedJob, HandlerError, Handlers, JobHandler, Outcome};
use courier::queue::runtime::Runtime;
use courier::queue::NewJob;
use courier_testkit::fresh_database;
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    case: String,
    metric: String,
    value: String,
}

fn row(rows: &mut Vec<Row>, case: &str, metric: &str, value: String) {
    println!("{case:<58} {metric:<28} {value}");
    rows.push(Row {
        case: case.into(),
        metric: metric.into(),
        value,
    });
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0} jobs/s", n as f64 / d.as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50 {:.1} ms, p99 {:.1} ms",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3
    )
}

fn settings(capacity: usize) -> Settings {
    let vars: Vec<(String, String)> = [
        ("COURIER__QUEUE__CAPACITY", capacity.to_string()),
        ("COURIER__QUEUE__HANDLER", "noop".to_string()),
        ("COURIER__BUDGET__MIN_GAP", "0s".to_string()),
        ("COURIER__BUDGET__JITTER", "0s".to_string()),
        ("COURIER__BUDGET__PER_MINUTE", "1000000".to_string()),
        ("COURIER__BUDGET__PER_HOUR", "10000000".to_string()),
        ("COURIER__BUDGET__PER_DAY", "100000000".to_string()),
        ("COURIER__LOG__LEVEL", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::load_from(Sources {
        dir: Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        vars: Some(vars),
        ..Default::default()
    })
    .unwrap()
}

async fn accounts(pool: &PgPool, n: usize) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, status, created_at) \
         SELECT 'bench ' || i, 'active', now() - interval '30 days' FROM generate_series(1, $1) i \
         RETURNING id",
    )
    .bind(n as i32)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn sends(accounts: &[Uuid], n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            NewJob::new(
                accounts[i % accounts.len()],
                &SendJob {
                    message_id: Uuid::new_v4(),
                },
            )
            .unwrap()
        })
        .collect()
}

/// Counts handler runs and reports when the target is reached.
struct Counting {
    seen: Arc<AtomicUsize>,
    started: tokio::sync::mpsc::UnboundedSender<Instant>,
}

impl JobHandler for Counting {
    fn handle<'a>(&'a self, _: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        let _ = self.started.send(Instant::now());
        self.seen.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(Outcome::Completed) })
    }
}

async fn wait_completed(pool: &PgPool, table: &str, done_state: &str, n: usize) {
    loop {
        let c: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE state = '{done_state}'"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        if c as usize >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn engine(rows: &mut Vec<Row>, jobs: usize, n_accounts: usize, samples: usize) {
    let case = format!("(a) courier engine, {n_accounts} accounts, budgets on, no-op");
    let t = fresh_database().await.unwrap();
    let pool = courier::db::connect(&t.url, 40, Duration::from_secs(30))
        .await
        .unwrap();
    let accts = accounts(&pool, n_accounts).await;

    // Enqueue, one at a time.
    let single = sends(&accts, 2000);
    let start = Instant::now();
    for j in &single {
        courier::queue::enqueue(&pool, j).await.unwrap();
    }
    row(
        rows,
        &case,
        "enqueue, single",
        rate(single.len(), start.elapsed()),
    );
    sqlx::query("DELETE FROM queue_jobs")
        .execute(&pool)
        .await
        .unwrap();

    // Enqueue in batches of 10 000 (one statement each).
    let batch = sends(&accts, 100_000);
    let start = Instant::now();
    for chunk in batch.chunks(10_000) {
        courier::queue::enqueue_batch(&pool, chunk).await.unwrap();
    }
    row(
        rows,
        &case,
        "enqueue, batch 10k",
        rate(batch.len(), start.elapsed()),
    );
    sqlx::query("DELETE FROM queue_jobs")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE queue_jobs")
        .execute(&pool)
        .await
        .unwrap();

    // Claim + budget + complete.
    courier::queue::enqueue_batch(&pool, &sends(&accts, jobs))
        .await
        .unwrap();
    sqlx::query("ANALYZE queue_jobs")
        .execute(&pool)
        .await
        .unwrap();
    let (tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::new().register_all(Arc::new(Counting {
        seen: seen.clone(),
        started: tx,
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = Runtime::new(pool.clone(), &settings(n_accounts), handlers);
    let start = Instant::now();
    let task = tokio::spawn(rt.run_until(async {
        let _ = stop_rx.await;
    }));
    // Watch the handler count like the stock case does (a count(*) every 20
    // ms would compete for the same two cores), then wait until every
    // completion is written too: the engine's figure includes its acks.
    while seen.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_completed(&pool, "queue_jobs", "completed", jobs).await;
    let took = start.elapsed();
    row(
        rows,
        &case,
        &format!("claim+complete ({jobs} jobs)"),
        rate(jobs, took),
    );
    // Of which: from the runtime's start to its first handler call (leasing
    // the accounts and loading their budgets).
    if let Ok(first) = first_rx.try_recv() {
        row(
            rows,
            &case,
            "of which: start to first job",
            format!("{:.0} ms", (first - start).as_secs_f64() * 1e3),
        );
    }
    drop(first_rx);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    // Pickup latency on an idle system.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handlers = Handlers::new().register_all(Arc::new(Counting {
        seen: Arc::new(AtomicUsize::new(0)),
        started: tx,
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = Runtime::new(pool.clone(), &settings(5), handlers);
    let task = tokio::spawn(rt.run_until(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    for i in 0..samples {
        while rx.try_recv().is_ok() {}
        let job = &sends(&accts[i % accts.len()..][..1], 1)[0];
        let t0 = Instant::now();
        courier::queue::enqueue(&pool, job).await.unwrap();
        let started = rx.recv().await.unwrap();
        lat.push(started - t0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    row(rows, &case, "pickup latency, idle", latency(&mut lat));
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    pool.close().await;
    t.drop_database().await.unwrap();
}

async fn noop_apalis(_job: u32, seen: apalis_core::task::data::Data<Arc<AtomicUsize>>) {
    seen.fetch_add(1, Ordering::Relaxed);
}

async fn stock_apalis(rows: &mut Vec<Row>, jobs: usize, samples: usize) {
    for (label, batch, workers) in [
        ("default batch 10, 1 worker", 10usize, 1usize),
        ("batch 100, 1 worker", 100, 1),
        ("batch 100, 4 workers", 100, 4),
    ] {
        let case = format!("(b) stock apalis-postgres, {label}");
        let t = fresh_database().await.unwrap();
        let pool = courier::db::connect(&t.url, 40, Duration::from_secs(30))
            .await
            .unwrap();
        PostgresStorage::setup(&pool).await.unwrap();
        let config = ApalisConfig::default().queue("bench").batch_size(batch);
        let mut storage = PostgresStorage::<u32>::new(&pool).with_config(config.clone());
        if workers == 1 && batch == 10 {
            let start = Instant::now();
            for i in 0..2000u32 {
                storage.push(i).await.unwrap();
            }
            row(rows, &case, "enqueue, single", rate(2000, start.elapsed()));
            sqlx::query("DELETE FROM apalis.jobs")
                .execute(&pool)
                .await
                .unwrap();
        }
        let start = Instant::now();
        for chunk in (0..jobs as u32).collect::<Vec<_>>().chunks(10_000) {
            storage.push_bulk(chunk.to_vec()).await.unwrap();
        }
        if workers == 1 && batch == 10 {
            row(
                rows,
                &case,
                "enqueue, push_bulk 10k",
                rate(jobs, start.elapsed()),
            );
        }
        sqlx::query("ANALYZE apalis.jobs")
            .execute(&pool)
            .await
            .unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let backend = PostgresStorage::<u32>::new(&pool).with_config(config.clone());
            let worker = WorkerBuilder::new(format!("bench-{w}"))
                .backend(backend)
                .data(seen.clone())
                .build(noop_apalis);
            tasks.push(tokio::spawn(worker.run()));
        }
        while seen.load(Ordering::Relaxed) < jobs {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        row(
            rows,
            &case,
            &format!("claim+complete ({jobs} jobs)"),
            rate(jobs, took),
        );
        for t in tasks {
            t.abort();
        }

        if workers == 1 && batch == 10 {
            // Pickup latency with LISTEN/NOTIFY (with_pubsub), idle.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let backend = PostgresStorage::<u32>::new(&pool)
                .with_config(ApalisConfig::default().queue("latency"))
                .with_pubsub();
            let worker =
                WorkerBuilder::new("latency")
                    .backend(backend)
                    .data(tx)
                    .build(
                        |_: u32,
                         tx: apalis_core::task::data::Data<
                            tokio::sync::mpsc::UnboundedSender<Instant>,
                        >| async move {
                            let _ = tx.send(Instant::now());
                        },
                    );
            let task = tokio::spawn(worker.run());
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut sink = PostgresStorage::<u32>::new(&pool)
                .with_config(ApalisConfig::default().queue("latency"));
            let mut lat = Vec::new();
            for i in 0..samples {
                // Drop anything stale so each sample times its own job.
                while rx.try_recv().is_ok() {}
                let t0 = Instant::now();
                sink.push(i as u32).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                    Ok(Some(s)) => lat.push(s - t0),
                    _ => lat.push(Duration::from_secs(5)),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            row(
                rows,
                &case,
                "pickup latency, idle, with_pubsub",
                latency(&mut lat),
            );
            task.abort();
        }
        pool.close().await;
        t.drop_database().await.unwrap();
    }
}

async fn raw_loop(rows: &mut Vec<Row>, jobs: usize) {
    let case = "(c) raw FOR UPDATE SKIP LOCKED, LIMIT 10, 32 loops";
    let t = fresh_database().await.unwrap();
    let pool = courier::db::connect(&t.url, 40, Duration::from_secs(30))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'available', \
         payload jsonb NOT NULL, run_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE INDEX ON bench_raw (id) WHERE state = 'available'")
        .execute(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..2000 {
        sqlx::query("INSERT INTO bench_raw (payload) VALUES ('{}')")
            .execute(&pool)
            .await
            .unwrap();
    }
    row(rows, case, "enqueue, single", rate(2000, start.elapsed()));
    sqlx::query("TRUNCATE bench_raw")
        .execute(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        let payloads: Vec<String> = (0..10_000).map(|i| format!("{{\"i\":{i}}}")).collect();
        sqlx::query("INSERT INTO bench_raw (payload) SELECT p::jsonb FROM unnest($1::text[]) p")
            .bind(&payloads)
            .execute(&pool)
            .await
            .unwrap();
    }
    row(
        rows,
        case,
        "enqueue, unnest batch 10k",
        rate(100_000, start.elapsed()),
    );
    sqlx::query("TRUNCATE bench_raw")
        .execute(&pool)
        .await
        .unwrap();
    let payloads: Vec<String> = (0..jobs).map(|i| format!("{{\"i\":{i}}}")).collect();
    sqlx::query("INSERT INTO bench_raw (payload) SELECT p::jsonb FROM unnest($1::text[]) p")
        .bind(&payloads)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE bench_raw")
        .execute(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "WITH c AS (SELECT id FROM bench_raw WHERE state = 'available' ORDER BY id \
                       LIMIT 10 FOR UPDATE SKIP LOCKED) \
                     UPDATE bench_raw b SET state = 'running' FROM c WHERE b.id = c.id RETURNING b.id",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                if ids.is_empty() {
                    return;
                }
                sqlx::query("UPDATE bench_raw SET state = 'done' WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_completed(&pool, "bench_raw", "done", jobs).await;
    row(
        rows,
        case,
        &format!("claim+complete ({jobs} jobs)"),
        rate(jobs, start.elapsed()),
    );
    pool.close().await;
    t.drop_database().await.unwrap();
}

fn main() {
    let jobs = env_usize("BENCH_JOBS", 20_000);
    let n_accounts = env_usize("BENCH_ACCOUNTS", 200);
    let samples = env_usize("BENCH_SAMPLES", 200);
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        if only.is_empty() || only == "engine" {
            engine(&mut rows, jobs, n_accounts, samples).await;
        }
        if only.is_empty() || only == "apalis" {
            stock_apalis(&mut rows, jobs, samples).await;
        }
        if only.is_empty() || only == "raw" {
            raw_loop(&mut rows, jobs).await;
        }
        println!();
        println!("| case | metric | result |");
        println!("|---|---|---|");
        for r in rows {
            println!("| {} | {} | {} |", r.case, r.metric, r.value);
        }
    });
}
