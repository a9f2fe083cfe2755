//! Claiming and finishing one job at a time, every write fenced by the lease,
//! and the send-slot reservation.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::{LEASE_CTE, RUNNABLE};
use crate::account::budget::{Limits, Window};
use crate::queue::{Job, Lease, Policy, QueueError};

/// Claims the account's next runnable job. `sends_allowed = false` skips
/// budget-spending kinds (their budget is exhausted until a later instant).
/// Returns `None` when nothing is runnable, the account is paused, or the lease
/// is gone.
pub async fn claim(
    pool: &PgPool,
    lease: &Lease,
    sends_allowed: bool,
) -> Result<Option<Job>, QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE}, next AS ( \
            SELECT id FROM queue_jobs \
            WHERE account_id = $1 AND state IN {RUNNABLE} AND run_at <= now() \
              AND ($4 OR kind <> ALL($5)) AND {gate} AND {campaign} \
              AND EXISTS (SELECT 1 FROM lease) \
              AND NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = $1 \
                  AND a.status = 'paused' AND (a.paused_until IS NULL OR a.paused_until > now())) \
            ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED \
         ) \
         UPDATE queue_jobs j SET state = 'running', attempt = j.attempt + 1, \
             attempted_at = now(), lease_epoch = $2, attempted_by = $3, waiting_reason = NULL \
         FROM next WHERE j.id = next.id \
         RETURNING j.*",
        gate = session_gate!("$1"),
        campaign = super::campaign_gate("kind", "payload"),
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(sends_allowed)
    .bind(&crate::queue::BUDGET_KINDS[..])
    .fetch_optional(pool)
    .await?)
}

/// The outcome of asking for a send slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Granted at this instant (database clock); recorded in the send log.
    Granted(DateTime<Utc>),
    /// A window is full (another view of the log was stale); re-check.
    WindowFull,
    /// The lease is gone: stop driving the account.
    Fenced,
}

/// Grants a send slot for `job_id`: appends to the send log only if the lease
/// is still ours and every window has room, in one statement. The same
/// statement runs the domain's [`Policy`] fragment for the job (the message
/// of a `send`/`retry` job moves to `sending` with its attempt start and
/// event), so a slot and the status change commit together or not at all.
pub async fn reserve_send(
    pool: &PgPool,
    policy: &Policy,
    lease: &Lease,
    job_id: Uuid,
    limits: &Limits,
) -> Result<Reservation, QueueError> {
    let (leased, at): (bool, Option<DateTime<Utc>>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE}, t AS (SELECT clock_timestamp() AS ts), \
         ins AS ( \
            INSERT INTO account_sends (account_id, job_id, epoch, sent_at) \
            SELECT $1, $4, $2, t.ts FROM t \
            WHERE EXISTS (SELECT 1 FROM lease) \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {m})) < $5 \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {h})) < $6 \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {d})) < $7 \
            RETURNING job_id, sent_at \
         ), granted AS ( \
            SELECT q.id, q.kind, q.payload, q.attempt FROM queue_jobs q JOIN ins ON q.id = ins.job_id \
         ){policy} \
         SELECT EXISTS (SELECT 1 FROM lease), (SELECT sent_at FROM ins)",
        m = Window::Minute.guarded_secs(),
        h = Window::Hour.guarded_secs(),
        d = Window::Day.guarded_secs(),
        policy = policy.slot_ctes("granted", "(SELECT sent_at FROM ins)"),
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(job_id)
    .bind(i64::from(limits.per_minute))
    .bind(i64::from(limits.per_hour))
    .bind(i64::from(limits.per_day))
    .fetch_one(pool)
    .await?;
    Ok(match (leased, at) {
        (_, Some(at)) => Reservation::Granted(at),
        (true, None) => Reservation::WindowFull,
        (false, None) => Reservation::Fenced,
    })
}

async fn fenced_update(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    set: &str,
    extra: impl FnOnce(
        sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> Result<bool, QueueError> {
    let sql = format!(
        "WITH {LEASE_CTE} UPDATE queue_jobs SET {set}, lease_epoch = NULL \
         WHERE id = $4 AND account_id = $1 AND state = 'running' AND lease_epoch = $2 \
           AND EXISTS (SELECT 1 FROM lease)"
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(lease.account_id)
        .bind(lease.epoch)
        .bind(&*lease.owner)
        .bind(job_id);
    Ok(extra(q).execute(pool).await?.rows_affected() == 1)
}

/// Marks a running job completed. `false`: fenced (the lease is gone).
pub async fn complete(pool: &PgPool, lease: &Lease, job_id: Uuid) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = 'completed', finished_at = now()",
        |q| q,
    )
    .await
}

/// Records a failed attempt: retryable at `retry_at`, or discarded when
/// `retry_at` is `None`. The error is kept in `last_error` and `errors`.
pub async fn fail(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = CASE WHEN $6 THEN 'retryable' ELSE 'discarded' END, \
         run_at = coalesce($7, run_at), \
         finished_at = CASE WHEN $6 THEN NULL ELSE now() END, \
         last_error = $5, \
         errors = errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempt, 'error', $5::text))",
        |q| q.bind(error).bind(retry_at.is_some()).bind(retry_at),
    )
    .await
}

/// Puts a running job back to wait until `until` without spending an attempt.
pub async fn snooze(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    until: DateTime<Utc>,
    reason: &str,
) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = 'scheduled', run_at = $5, attempt = greatest(attempt - 1, 0), waiting_reason = $6",
        |q| q.bind(until).bind(reason),
    )
    .await
}

/// Which of an account's runnable jobs [`snooze_due`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoozeKinds {
    /// The budget-spending kinds (`send`, `retry`): their budget frees later.
    Budget,
    /// Every kind: what the account needs (its browser) is not there.
    All,
}

/// Snoozes the account's runnable jobs of `kinds` that would run before
/// `until` to `until`, with `reason` as their waiting reason. Only jobs the
/// account may run in its status (a logged-out account's sends keep waiting
/// for its login as they were). They were never claimed, so no attempt is
/// spent. Fenced: nothing moves once the lease is gone. Returns how many
/// moved, by kind.
pub async fn snooze_due(
    pool: &PgPool,
    lease: &Lease,
    until: DateTime<Utc>,
    reason: &str,
    kinds: SnoozeKinds,
) -> Result<Vec<(String, u64)>, QueueError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE}, moved AS ( \
            UPDATE queue_jobs SET state = 'scheduled', run_at = $4, waiting_reason = $5 \
            WHERE account_id = $1 AND state IN {RUNNABLE} AND run_at < $4 \
              AND ($6 OR kind = ANY($7)) AND {gate} \
              AND EXISTS (SELECT 1 FROM lease) \
            RETURNING kind) \
         SELECT kind, count(*) FROM moved GROUP BY kind ORDER BY kind",
        gate = session_gate!("$1"),
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(until)
    .bind(reason)
    .bind(kinds == SnoozeKinds::All)
    .bind(&crate::queue::BUDGET_KINDS[..])
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, n)| (kind, n.max(0) as u64))
        .collect())
}
