//! What other modules' statements and transactions take from the queue when
//! they must change its rows together with their own: SQL fragments for a
//! statement that spans several tables for speed, and the few writes that run
//! inside another module's transaction. The queue stays the one writer of
//! `queue_jobs` and `account_sends`; the callers compose, they do not restate.
//!
//! A fragment is `name AS (…)`, a data-modifying common table expression
//! over a relation the caller gives: a CTE's name, or a parenthesised
//! subquery without an alias, with the columns the fragment documents. It is
//! [`super::Policy`] the other way round: there the queue's statement takes
//! the domain's step, here a domain statement takes the queue's.

use sqlx::PgConnection;
use uuid::Uuid;

use super::store::RUNNABLE;

/// A CTE named `name` that inserts new jobs from the relation `rows`
/// (columns `id`, `kind`, `account_id`, `payload` (jsonb), `priority`,
/// `run_at`, `max_attempts`, `idempotency_key`), as the queue's own enqueue
/// writes them: a job due now is `available`, a later one `scheduled`.
/// Every key must be new (a conflict aborts the statement): for jobs whose
/// ids and keys the caller made in the same statement.
pub(crate) fn insert_jobs(name: &str, rows: &str) -> String {
    format!(
        "{name} AS ( \
            INSERT INTO queue_jobs (id, kind, account_id, payload, priority, run_at, state, \
                                    max_attempts, idempotency_key) \
            SELECT id, kind, account_id, payload, priority, run_at, \
                   CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END, \
                   max_attempts, idempotency_key \
            FROM {rows} r)"
    )
}

/// A CTE named `name` that sets the waiting reason of jobs that have not
/// started, from the relation `rows` (columns `id`, `reason`). A job whose
/// reason is already that one is left alone (no new row version), and a
/// running or finished job never gets one.
pub(crate) fn set_waiting_reasons(name: &str, rows: &str) -> String {
    format!(
        "{name} AS ( \
            UPDATE queue_jobs j SET waiting_reason = w.reason FROM {rows} w \
            WHERE j.id = w.id AND j.waiting_reason IS DISTINCT FROM w.reason \
              AND j.state IN {RUNNABLE})"
    )
}

/// The budget slot a send job was granted moves forward to now (never back),
/// in the caller's transaction. For the moment WhatsApp accepted the send:
/// the slot was granted before the page acted, and only "after WhatsApp
/// accepted it" bounds when the recipient's side saw it, so later slots are
/// judged against that (`crate::message::status::mark_sent`). Only the job's
/// latest slot moves: an earlier attempt's slot stays where it was spent.
pub(crate) async fn advance_slot_to_now(
    conn: &mut PgConnection,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE account_sends SET sent_at = greatest(sent_at, clock_timestamp()) \
         WHERE ctid = (SELECT ctid FROM account_sends WHERE job_id = $1 ORDER BY sent_at DESC LIMIT 1)",
    )
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives back the budget slot a send job was granted, in the caller's
/// transaction: for a send that never went to WhatsApp because the number
/// is not on it, so it counts in no window. Only the job's latest slot, and
/// only the one its lease epoch granted.
pub(crate) async fn give_back_slot(
    conn: &mut PgConnection,
    job_id: Uuid,
    epoch: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM account_sends \
         WHERE ctid = (SELECT ctid FROM account_sends WHERE job_id = $1 AND epoch = $2 \
                       ORDER BY sent_at DESC LIMIT 1)",
    )
    .bind(job_id)
    .bind(epoch)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves jobs that have not started to other accounts: `ids[i]` goes to
/// `to_accounts[i]`, keeping its id, key and attempts. A job that was waiting
/// (it had a reason) becomes runnable now on its new account; one due by now
/// becomes `available`; a later one keeps its `run_at`. The `state IN
/// (runnable)` guard under the row lock means a worker is never running one.
/// Returns how many moved.
pub(crate) async fn move_to_accounts(
    conn: &mut PgConnection,
    ids: &[Uuid],
    to_accounts: &[Uuid],
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE queue_jobs j SET account_id = u.to_account, waiting_reason = NULL, \
            run_at = CASE WHEN j.waiting_reason IS NOT NULL THEN now() ELSE j.run_at END, \
            state = CASE WHEN j.waiting_reason IS NOT NULL OR j.run_at <= now() \
                         THEN 'available' ELSE j.state END \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(id, to_account) \
         WHERE j.id = u.id AND j.state IN {RUNNABLE}"
    )))
    .bind(ids)
    .bind(to_accounts)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Withdraws jobs that have not started: they become `cancelled` with
/// `reason` as their last error. With `release_keys`, their idempotency keys
/// are cleared so a later job can take them (the work goes on elsewhere);
/// without, a repeated enqueue still finds the cancelled job. A running or
/// finished job is left alone. Returns the ids withdrawn.
pub(crate) async fn withdraw(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reason: &str,
    release_keys: bool,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE queue_jobs SET state = 'cancelled', finished_at = now(), last_error = $2, \
            idempotency_key = CASE WHEN $3 THEN NULL ELSE idempotency_key END \
         WHERE id = ANY($1) AND state IN {RUNNABLE} RETURNING id"
    )))
    .bind(ids)
    .bind(reason)
    .bind(release_keys)
    .fetch_all(conn)
    .await
}

/// Parks jobs that are due but held by the domain (a paused or cancelled
/// campaign): they wait, `scheduled`, until `until` with `reason`, their
/// attempts unspent, out of the claim's way. Only runnable jobs due by now;
/// a running or finished one is left alone, and so is one not due yet (it is
/// parked when it comes due, and the claim's gate holds it meanwhile).
/// Returns how many were parked.
pub(crate) async fn park(
    conn: &mut PgConnection,
    ids: &[Uuid],
    until_secs: f64,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE queue_jobs SET state = 'scheduled', run_at = now() + make_interval(secs => $2), \
            waiting_reason = $3 \
         WHERE id = ANY($1) AND state IN {RUNNABLE} AND run_at <= now()"
    )))
    .bind(ids)
    .bind(until_secs)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Releases parked jobs (see [`park`]) whose waiting reason starts with
/// `prefix`: runnable now, the reason cleared. A job whose reason changed
/// since (a budget snooze took it over) keeps that. Returns how many.
pub(crate) async fn release_parked(
    conn: &mut PgConnection,
    ids: &[Uuid],
    prefix: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE queue_jobs SET state = 'available', run_at = least(run_at, now()), \
            waiting_reason = NULL \
         WHERE id = ANY($1) AND state IN {RUNNABLE} AND starts_with(waiting_reason, $2)"
    )))
    .bind(ids)
    .bind(prefix)
    .execute(conn)
    .await?
    .rows_affected())
}
