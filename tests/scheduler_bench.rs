//! Benchmark: expand one schedule targeting 100 000 contacts, against a naive
//! row-by-row insert of the same messages, events and jobs, in the same run.
//!
//! ```text
//! cargo test --release --test scheduler_bench -- --ignored --nocapture
//! ```
//! `BENCH_CONTACTS` (default 100000) and `BENCH_NAIVE` (default: the same)
//! change the sizes. Results go to docs/benchmarks.md by hand.

use std::path::PathBuf;
use std::time::Instant;

use courier::config::{Settings, Sources};
use courier::scheduler::{expand, Outcome};
use courier::testing::fresh_database;
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
/// one for its job and one UPDATE linking them, all in one transaction.
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
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_expand_100k_contacts() {
    let n = env_n("BENCH_CONTACTS", 100_000);
    let naive_n = env_n("BENCH_NAIVE", n);
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let (campaign, content, accounts) = setup(p, n).await;
    let settings = settings();

    // Batched expansion: the real scheduler path, end to end (read the row,
    // resolve targets, assign accounts, write messages + events + jobs, move
    // the schedule on, commit).
    let s = new_schedule(p, campaign, content).await;
    let started = Instant::now();
    let e = expand::expand_next(p, &settings).await.unwrap().unwrap();
    let batched = started.elapsed();
    assert_eq!(e.outcome, Outcome::Expanded);
    assert_eq!(e.queued as i64, n);
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_wap_messages m JOIN queue_jobs j ON j.id = m.job_id \
         WHERE m.schedule_id = $1",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(jobs, n);
    // The stickiness update (after the commit) on its own: undo and redo it.
    sqlx::query("UPDATE mkt_wap_contacts SET preferred_account_id = NULL")
        .execute(p)
        .await
        .unwrap();
    let started = Instant::now();
    expand::remember_accounts(p, &e.sticky).await.unwrap();
    let sticky = started.elapsed();

    // Naive row-by-row, same database, same indexes.
    let s2 = new_schedule(p, campaign, content).await;
    sqlx::query("UPDATE mkt_con_schedule SET status = 'draft' WHERE id = $1")
        .bind(s2)
        .execute(p)
        .await
        .unwrap();
    let started = Instant::now();
    naive(p, s2, campaign, content, &accounts, naive_n).await;
    let naive_t = started.elapsed();

    // Where the time goes: the same expansion on a fresh database whose
    // messages table lacks the foreign keys to the campaign-system tables
    // (campaign, content, schedule) — Postgres checks every foreign key row by
    // row, which dominates a bulk insert.
    let t2 = fresh_database().await.unwrap();
    let p2 = &t2.pool;
    let (campaign2, content2, _) = setup(p2, n).await;
    for fk in ["campaign_id", "content_id", "schedule_id"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE mkt_wap_messages DROP CONSTRAINT mkt_wap_messages_{fk}_fkey"
        )))
        .execute(p2)
        .await
        .unwrap();
    }
    new_schedule(p2, campaign2, content2).await;
    let started = Instant::now();
    let e2 = expand::expand_next(p2, &settings).await.unwrap().unwrap();
    let no_fk = started.elapsed();
    assert_eq!(e2.queued as i64, n);

    let batched_rate = n as f64 / batched.as_secs_f64();
    let naive_rate = naive_n as f64 / naive_t.as_secs_f64();
    println!();
    println!("| path | targets | time | targets/s |");
    println!("|---|---|---|---|");
    println!(
        "| scheduler expansion (batched, one transaction) | {n} | {:.2} s | {:.0} |",
        batched.as_secs_f64(),
        batched_rate
    );
    println!(
        "| naive row-by-row (4 statements per target, one transaction) | {naive_n} | {:.2} s | {:.0} |",
        naive_t.as_secs_f64(),
        naive_rate
    );
    println!(
        "| … of which: contacts' preferred account, after the commit | {} | {:.2} s | |",
        e.sticky.len(),
        sticky.as_secs_f64()
    );
    println!(
        "| scheduler expansion, without the 3 foreign keys to campaign-system tables | {n} | {:.2} s | {:.0} |",
        no_fk.as_secs_f64(),
        n as f64 / no_fk.as_secs_f64()
    );
    println!(
        "| ratio batched / naive (throughput) | | | {:.1}x |",
        batched_rate / naive_rate
    );
}
