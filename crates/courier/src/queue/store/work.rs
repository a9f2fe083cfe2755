//! What an account holder needs when it found nothing to claim: the next due
//! work, the earliest free account, the budget's view of the send log.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::RUNNABLE;
use crate::queue::QueueError;

/// What an account holder needs to know when it found nothing to claim.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AccountWork {
    /// Earliest `run_at` among the account's runnable jobs (any kind).
    pub next_any: Option<DateTime<Utc>>,
    /// Earliest among non-budget kinds.
    pub next_other: Option<DateTime<Utc>>,
    /// The account is paused.
    pub paused: bool,
    /// Database clock.
    pub now: DateTime<Utc>,
}

/// The account's next work.
pub async fn account_work(pool: &PgPool, account_id: Uuid) -> Result<AccountWork, QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT min(run_at) FROM queue_jobs WHERE account_id = $1 AND state IN {RUNNABLE} \
                   AND {gate}) AS next_any, \
                (SELECT min(run_at) FROM queue_jobs WHERE account_id = $1 AND state IN {RUNNABLE} \
                   AND kind <> ALL($2) AND {gate}) AS next_other, \
                EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = $1 AND a.status = 'paused' \
                   AND (a.paused_until IS NULL OR a.paused_until > now())) AS paused, \
                now() AS now",
        gate = session_gate!("$1")
    )))
    .bind(account_id)
    .bind(&crate::queue::BUDGET_KINDS[..])
    .fetch_one(pool)
    .await?)
}

/// How many of the earliest deferred jobs [`next_free_due`] looks at.
const NEXT_DUE_SCAN: i64 = 1_000;

/// When an idle slot should look for work again, and the database clock. An
/// idle slot asks this after leasing found no free account with due work, so
/// what it waits for is one of:
/// - the earliest `run_at` among deferred (`scheduled`, `retryable`) jobs of
///   accounts nobody holds, the whole account's pause included: a job of an
///   account paused until T comes due at T at the earliest, and a job of an
///   account paused by hand (no deadline) waits for the resume, which
///   notifies. Only the [`NEXT_DUE_SCAN`] earliest deferred jobs are looked at
///   (in `run_at` order, by `queue_jobs_wake_idx`): when all of those belong to
///   held accounts the answer is `None` and the slot sleeps its
///   `queue.poll_interval` (or until a NOTIFY);
/// - the end of a timed pause of a free account that has runnable jobs.
///
/// `available` jobs are due already (see migration 0011), so a free account
/// holding one was either just leased by someone else or is paused: neither
/// is a reason to look again before the pause ends. Counting them (as this
/// did before) made every idle slot of every worker ask again every 5 ms for
/// as long as any account with queued jobs was paused.
pub async fn next_free_due(
    pool: &PgPool,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT least( \
            (SELECT min(greatest(j.run_at, CASE WHEN a.status = 'paused' THEN a.paused_until END)) \
             FROM (SELECT run_at, account_id, kind FROM queue_jobs \
                   WHERE state IN ('scheduled', 'retryable') \
                   ORDER BY run_at LIMIT {NEXT_DUE_SCAN}) j \
             JOIN mkt_wap_accounts a ON a.id = j.account_id \
             WHERE {gate} \
               AND NOT (a.status = 'paused' AND a.paused_until IS NULL) AND {free}), \
            (SELECT min(a.paused_until) FROM mkt_wap_accounts a \
             WHERE a.status = 'paused' AND a.paused_until > now() AND {free} \
               AND EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id \
                           AND j.state IN {RUNNABLE} AND {gate})), \
            (SELECT min(j.run_at) \
             FROM (SELECT run_at, account_id FROM queue_jobs \
                   WHERE state IN ('scheduled', 'retryable') \
                   ORDER BY run_at LIMIT {NEXT_DUE_SCAN}) j \
             JOIN queue_lanes a ON a.id = j.account_id \
             WHERE {free})), now()",
        gate = session_gate!("j.account_id"),
        // Every part joins the account (or the queue lane) as `a`: nobody
        // holds a live lease on it.
        free = "NOT EXISTS (SELECT 1 FROM account_leases l WHERE l.account_id = a.id \
                AND l.owner IS NOT NULL AND l.expires_at > now())"
    )))
    .fetch_one(pool)
    .await?)
}

/// The account facts the budget needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountBudgetRow {
    /// Per-account overrides.
    pub rate_limit_config: serde_json::Value,
    /// IANA time zone name.
    pub timezone: String,
    /// For the warm-up ladder.
    pub created_at: DateTime<Utc>,
    /// 0..=100.
    pub health_score: i32,
    /// Automatic pause end.
    pub paused_until: Option<DateTime<Utc>>,
    /// Send slots of the last 24 h, ascending.
    pub sends: Vec<DateTime<Utc>>,
}

/// Loads the account's budget facts and its send log of the last day.
pub async fn load_budget(
    pool: &PgPool,
    account_id: Uuid,
) -> Result<Option<AccountBudgetRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT a.rate_limit_config, a.timezone, a.created_at, a.health_score, \
                CASE WHEN a.status = 'paused' THEN a.paused_until END AS paused_until, \
                coalesce(array(SELECT s.sent_at FROM account_sends s WHERE s.account_id = a.id \
                   AND s.sent_at > now() - interval '86420 seconds' ORDER BY s.sent_at), '{}') AS sends \
         FROM mkt_wap_accounts a WHERE a.id = $1",
    )
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// Which of `accounts` have a job running or runnable within `within` (the
/// session gate applied: a job the claim would never take does not count).
/// The worker keeps these accounts' browsers open.
pub async fn accounts_with_work_within(
    pool: &PgPool,
    accounts: &[Uuid],
    within: std::time::Duration,
) -> Result<Vec<Uuid>, QueueError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT account_id FROM queue_jobs \
         WHERE account_id = ANY($1) AND {gate} \
           AND (state = 'running' OR (state IN {RUNNABLE} AND run_at <= now() + $2))",
        gate = session_gate!("account_id")
    )))
    .bind(accounts)
    .bind(super::interval(within))
    .fetch_all(pool)
    .await?)
}
