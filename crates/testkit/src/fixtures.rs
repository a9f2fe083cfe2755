//! Rows that several tests start from, inserted directly (no API, no
//! validation beyond the schema's own).

use sqlx::PgPool;
use uuid::Uuid;

/// An account row named `name` with the schema's defaults (status
/// `inactive`, default limits); returns its id. Panics on a database error.
pub async fn insert_account(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO mkt_wap_accounts (account_name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("insert an account row")
}

/// An account row named `name` with `rate_limit_config` (the schema's
/// other defaults) and the same account in the simulator; returns its id.
/// Panics on a database or simulator error.
pub async fn sim_account(
    pool: &PgPool,
    ctl: &courier_sim::SimControl,
    name: &str,
    rate_limit_config: serde_json::Value,
) -> Uuid {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, rate_limit_config) VALUES ($1, $2) RETURNING id",
    )
    .bind(name)
    .bind(rate_limit_config)
    .fetch_one(pool)
    .await
    .expect("insert an account row");
    ctl.create_account(&id.to_string(), None)
        .await
        .expect("create the account in the simulator");
    id
}

/// Settings for an in-process browser worker in tests: the `browser`
/// handler, short leases, polls and backoffs, budgets and pacing out of the
/// way, no typing delay, a 1 s ack follow-up. Callers set what their test
/// is about (capacity, timeouts, the browser section).
pub fn quick_worker_settings() -> courier::config::Settings {
    use std::time::Duration;
    let mut s = courier::config::Settings::defaults();
    s.queue.handler = "browser".into();
    s.queue.capacity = 3;
    s.queue.lease_ttl = Duration::from_secs(3);
    s.queue.heartbeat_interval = Duration::from_millis(500);
    s.queue.poll_interval = Duration::from_millis(200);
    s.queue.lease_hold = Duration::from_secs(2);
    s.queue.job_timeout = Duration::from_secs(90);
    s.queue.shutdown_grace = Duration::from_secs(5);
    s.queue.backoff_base = Duration::from_millis(300);
    s.queue.backoff_max = Duration::from_secs(2);
    s.budget.per_minute = 10_000;
    s.budget.per_hour = 100_000;
    s.budget.per_day = 100_000;
    s.budget.min_gap = Duration::ZERO;
    s.budget.jitter = Duration::ZERO;
    s.budget.warmup = vec![];
    s.delivery.typing_per_char = Duration::ZERO;
    s.delivery.ack_followup = Duration::from_secs(1);
    s
}
