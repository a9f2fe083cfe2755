//! Benchmark: expand one schedule targeting 100 000 contacts, against a naive
//! row-by-row insert of the same messages, events and jobs, in the same run.
//!
//! ```text
//! cargo test --release --test scheduler_bench -- --ignored --nocapture
//! ```
//! `BENCH_CONTACTS` (default 100000) and `BENCH_NAIVE` (default: the same)
//! change the sizes; `BENCH_RUNS` (default 3) is how many expansions (each on
//! a fresh database) the median is taken over. Each run prints its stages and
//! the load average. Results go to docs/benchmarks.md by hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier::config::{Settings, Sources};
use courier::scheduler::{expand, Expansion, Outcome};
use courier_testkit::{fresh_database, TestDb};
use sqlx::{Acquire, PgPool};
use uuid::Uuid;

fn settings() -> Settings {
    Settings::load_from(Sources {
        dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        vars: Some(vec![]),
        ..Default::default()
    })
    .unwrap()
}

fn env_n(key: &str, default: i64) -> i64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn setup(pool: &PgPool, n: i64) -> (Uuid, Uuid, Vec<Uuid>) {
    let mut accounts = Vec::new();
    for i in 0..4 {
        accounts.push(
            sqlx::query_scalar(
                "INSERT INTO mkt_wap_accounts (account_name, status, created_at) \
                 VALUES ($1, 'active', now() - interval '30 days') RETURNING id",
            )
            .bind(format!("bench-{i}"))
            .fetch_one(pool)
            .await
            .unwrap(),
        );
    }
    sqlx::query(
        "INSERT INTO mkt_wap_contacts (phone_number, segment_tags) \
         SELECT (447000000000 + g)::text, ARRAY['bench'] FROM generate_series(1, $1::int8) g",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    let campaign: Uuid =
        sqlx::query_scalar("INSERT INTO mkt_campaigns (name) VALUES ('bench') RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    let content: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_content (campaign_id, body) VALUES ($1, 'Benchmark hello') RETURNING id",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE mkt_wap_contacts")
        .execute(pool)
        .await
        .unwrap();
    (campaign, content, accounts)
}

async fn new_schedule(pool: &PgPool, campaign: Uuid, content: Uuid) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_con_schedule (campaign_id, content_id, scheduled_at, target_segment_tags) \
         VALUES ($1, $2, now() - interval '1 second', ARRAY['bench']) RETURNING id",
    )
    .bind(campaign)
    .bind(content)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The naive way: per target, one INSERT for the message, one for its event,
/// one for its job, one UPDATE linking them and one UPDATE remembering the
/// contact's account (the same writes as the expansion), all in one
/// transaction.
async fn naive(
    pool: &PgPool,
    schedule: Uuid,
    campaign: Uuid,
    content: Uuid,
    accounts: &[Uuid],
    n: i64,
) {
    let contacts: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, phone_number || '@c.us' FROM mkt_wap_contacts \
         WHERE segment_tags @> ARRAY['bench'] ORDER BY id LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for (i, (contact, chat)) in contacts.iter().enumerate() {
        let account = accounts[i % accounts.len()];
        let key = format!("naive:{schedule}:{chat}");
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_messages (id, account_id, campaign_id, content_id, schedule_id, \
                channel_type, target_chat_id, target_contact_id, message_type, message_text, \
                idempotency_key, status, queued_at) \
             VALUES ($1, $2, $3, $4, $5, 'individual', $6, $7, 'text', 'Benchmark hello', $8, \
                'queued', now()) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(account)
        .bind(campaign)
        .bind(content)
        .bind(schedule)
        .bind(chat)
        .bind(contact)
        .bind(&key)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO mkt_wap_message_events (message_id, status, source) \
             VALUES ($1, 'queued', 'scheduler')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
        let job: Uuid = sqlx::query_scalar(
            "INSERT INTO queue_jobs (id, kind, account_id, payload, idempotency_key) \
             VALUES ($1, 'send', $2, jsonb_build_object('message_id', $3::uuid), $4) RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(account)
        .bind(id)
        .bind(format!("send:{id}"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE mkt_wap_messages SET job_id = $2 WHERE id = $1")
            .bind(id)
            .bind(job)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE mkt_wap_contacts SET preferred_account_id = $2 \
             WHERE id = $1 AND preferred_account_id IS NULL",
        )
        .bind(contact)
        .bind(account)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One expansion of a fresh 100k-contact schedule on a fresh database: the
/// real scheduler path, end to end (read the row, resolve targets, assign
/// accounts, write messages + events + jobs + contact preferences, move the
/// schedule on, commit). Returns the database (for the naive run) and the time.
async fn expand_once(n: i64, settings: &Settings) -> (TestDb, Setup, Duration, Expansion) {
    let t = fresh_database().await.unwrap();
    let setup = setup(&t.pool, n).await;
    let s = new_schedule(&t.pool, setup.0, setup.1).await;
    let started = Instant::now();
    let e = expand::expand_next(&t.pool, settings)
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(e.outcome, Outcome::Expanded);
    assert_eq!(e.queued as i64, n);
    // Everything is there and linked: a job per message, an event per
    // message, a preference per contact.
    let (jobs, events, sticky): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM mkt_wap_messages m JOIN queue_jobs j ON j.id = m.job_id \
                 WHERE m.schedule_id = $1 AND j.payload->>'message_id' = m.id::text), \
                (SELECT count(*) FROM mkt_wap_message_events e JOIN mkt_wap_messages m \
                 ON m.id = e.message_id WHERE m.schedule_id = $1), \
                (SELECT count(*) FROM mkt_wap_contacts WHERE preferred_account_id IS NOT NULL)",
    )
    .bind(s)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((jobs, events, sticky), (n, n, n));
    (t, setup, took, e)
}

type Setup = (Uuid, Uuid, Vec<Uuid>);

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_expand_100k_contacts() {
    let n = env_n("BENCH_CONTACTS", 100_000);
    let naive_n = env_n("BENCH_NAIVE", n);
    let runs = env_n("BENCH_RUNS", 3).max(1);
    let settings = settings();
    println!("load average before: {}", load_average());

    let mut times = Vec::new();
    let mut first = None;
    for run in 1..=runs {
        let (t, setup, took, e) = expand_once(n, &settings).await;
        println!(
            "run {run}: {:.2} s (load average {})",
            took.as_secs_f64(),
            load_average()
        );
        for (stage, d) in &e.stages {
            println!("    {:>8.1} ms  {stage}", d.as_secs_f64() * 1000.0);
        }
        times.push(took);
        if first.is_none() {
            first = Some((t, setup));
        }
    }
    times.sort();
    let median = times[times.len() / 2];

    // Naive row-by-row, same database, same indexes, the same writes (the
    // contacts' preferences are cleared first so it writes them too).
    let (t, (campaign, content, accounts)) = first.unwrap();
    let p = &t.pool;
    sqlx::query("UPDATE mkt_wap_contacts SET preferred_account_id = NULL")
        .execute(p)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE mkt_wap_contacts")
        .execute(p)
        .await
        .unwrap();
    let s2 = new_schedule(p, campaign, content).await;
    sqlx::query("UPDATE mkt_con_schedule SET status = 'draft' WHERE id = $1")
        .bind(s2)
        .execute(p)
        .await
        .unwrap();
    let started = Instant::now();
    naive(p, s2, campaign, content, &accounts, naive_n).await;
    let naive_t = started.elapsed();

    let batched_rate = n as f64 / median.as_secs_f64();
    let naive_rate = naive_n as f64 / naive_t.as_secs_f64();
    println!("load average after: {}", load_average());
    println!();
    println!("| path | targets | time | targets/s |");
    println!("|---|---|---|---|");
    println!(
        "| scheduler expansion, end to end, median of {runs} (runs: {}) | {n} | {:.2} s | {:.0} |",
        times
            .iter()
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        median.as_secs_f64(),
        batched_rate
    );
    println!(
        "| naive row-by-row (5 statements per target, one transaction) | {naive_n} | {:.2} s | {:.0} |",
        naive_t.as_secs_f64(),
        naive_rate
    );
    println!(
        "| ratio expansion / naive (throughput) | | | {:.1}x |",
        batched_rate / naive_rate
    );
}
