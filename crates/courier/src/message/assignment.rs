//! Which account sends a message, as maintenance's reassignment changes it
//! (`crate::maintenance::reassign`): a message moves with its job to another
//! account, goes back to `pending` when no account can take it, gets an
//! account and a job once one can, carries the reason it waits, or fails when
//! its schedule was cancelled. Each change writes its event in the same
//! statement. The callers pick the messages and the accounts (the assignment
//! rules) and change the jobs through the queue in the same transaction.

use sqlx::PgConnection;
use uuid::Uuid;

/// Messages `ids[i]` follow their job to `to_accounts[i]` (still `queued`,
/// no longer waiting), each with a `reassign` event that names the account
/// and `reasons[i]` (why it left the old one).
pub(crate) async fn move_to_accounts(
    conn: &mut PgConnection,
    ids: &[Uuid],
    to_accounts: &[Uuid],
    reasons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) \
                    AS u(id, to_account, reason)), \
         m AS (UPDATE mkt_wap_messages m SET account_id = u.to_account, waiting_reason = NULL \
               FROM u WHERE m.id = u.id RETURNING m.id, u.to_account, u.reason) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'queued', 'reassign', jsonb_build_object('to_account', to_account, 'reason', reason) \
         FROM m",
    )
    .bind(ids)
    .bind(to_accounts)
    .bind(reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Messages `ids[i]` go back to `pending` with no account and no job,
/// waiting for `reasons[i]`, each with a `reassign` event saying why (their
/// jobs were withdrawn in the same transaction).
pub(crate) async fn back_to_pending(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reasons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(id, reason)), \
         m AS (UPDATE mkt_wap_messages m SET status = 'pending', job_id = NULL, account_id = NULL, \
                   queued_at = NULL, waiting_reason = u.reason \
               FROM u WHERE m.id = u.id RETURNING m.id, u.reason) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'pending', 'reassign', jsonb_build_object('reason', reason) FROM m",
    )
    .bind(ids)
    .bind(reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pending messages `ids[i]` get their account `accounts[i]` and their send
/// job `job_ids[i]` (enqueued in the same transaction) and become `queued`,
/// each with a `scheduler` event naming the account.
pub(crate) async fn assign(
    conn: &mut PgConnection,
    ids: &[Uuid],
    accounts: &[Uuid],
    job_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) \
                    AS u(id, account_id, job_id)), \
         m AS (UPDATE mkt_wap_messages m SET status = 'queued', account_id = u.account_id, \
                   job_id = u.job_id, queued_at = now(), waiting_reason = NULL \
               FROM u WHERE m.id = u.id RETURNING m.id, u.account_id) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'queued', 'scheduler', jsonb_build_object('account', account_id) FROM m",
    )
    .bind(ids)
    .bind(accounts)
    .bind(job_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Messages `ids[i]` wait for `reasons[i]` (no event: the status is the
/// same, only the reason shown changed).
pub(crate) async fn set_waiting_reasons(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reasons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_messages m SET waiting_reason = u.reason \
         FROM unnest($1::uuid[], $2::text[]) AS u(id, reason) WHERE m.id = u.id",
    )
    .bind(ids)
    .bind(reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the waiting reason of messages `ids` when it starts with `prefix`
/// (a hold that ended); any other reason stays.
pub(crate) async fn clear_waiting_reasons(
    conn: &mut PgConnection,
    ids: &[Uuid],
    prefix: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE mkt_wap_messages SET waiting_reason = NULL \
         WHERE id = ANY($1) AND starts_with(waiting_reason, $2)",
    )
    .bind(ids)
    .bind(prefix)
    .execute(conn)
    .await?
    .rows_affected())
}

/// A CTE named `name` that sets the waiting reason of the messages in the
/// relation `rows` (columns `id`, `reason`; a CTE's name or a parenthesised
/// subquery), for a statement that marks their jobs too
/// (`crate::maintenance::reassign::hold_unknown_outcomes`). A message whose
/// reason is already that one is left alone, so a pass that finds nothing new
/// writes nothing.
pub(crate) fn waiting_reasons_cte(name: &str, rows: &str) -> String {
    format!(
        "{name} AS (UPDATE mkt_wap_messages m SET waiting_reason = w.reason FROM {rows} w \
                WHERE m.id = w.id AND m.waiting_reason IS DISTINCT FROM w.reason)"
    )
}

/// Messages `ids` of a cancelled schedule, withdrawn before they started,
/// become `failed` with the reason, each with a `scheduler` event. Their jobs
/// were withdrawn in the same transaction.
pub(crate) async fn fail_for_cancelled_schedule(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH m AS (UPDATE mkt_wap_messages SET status = 'failed', failed_at = now(), \
                       waiting_reason = NULL, error_message = 'withdrawn: its schedule was cancelled' \
                   WHERE id = ANY($1) RETURNING id) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'failed', 'scheduler', '{\"reason\": \"schedule cancelled\"}'::jsonb FROM m",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Messages `ids` whose send was attempted on an account that was then
/// retired become `failed` with `reason` (class `permanent`: no sweep
/// retries them; an operator's retry sends them through another account),
/// each with an `api` event. Whether the attempt reached WhatsApp only the
/// retired account's chat could tell, so they are not re-sent by themselves.
pub(crate) async fn fail_on_retired_account(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH m AS (UPDATE mkt_wap_messages SET status = 'failed', failed_at = now(), \
                       waiting_reason = NULL, error_message = $2, failure_class = 'permanent' \
                   WHERE id = ANY($1) RETURNING id) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'failed', 'api', jsonb_build_object('reason', $2::text) FROM m",
    )
    .bind(ids)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Messages not yet started (`pending`, `queued`) to the contacts `contacts`
/// or the chats `chats` become `failed` with [`OPTED_OUT`](crate::directory::contacts::OPTED_OUT)
/// (class `permanent`), each with an `api` event, in the caller's transaction
/// (which records the opt-out). Returns their jobs, for the caller to
/// withdraw in the same transaction: nothing is claimed, so no budget slot
/// and no health is spent on them.
pub(crate) async fn fail_opted_out(
    conn: &mut PgConnection,
    contacts: &[Uuid],
    chats: &[String],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let jobs: Vec<Option<Uuid>> = sqlx::query_scalar(
        "WITH m AS (UPDATE mkt_wap_messages SET status = 'failed', failed_at = now(), \
                       waiting_reason = NULL, error_message = $3, failure_class = 'permanent' \
                   WHERE status IN ('pending', 'queued') \
                     AND (target_contact_id = ANY($1) OR target_chat_id = ANY($2)) \
                   RETURNING id, job_id), \
              e AS (INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
                    SELECT id, 'failed', 'api', jsonb_build_object('reason', $3::text) FROM m) \
         SELECT job_id FROM m",
    )
    .bind(contacts)
    .bind(chats)
    .bind(crate::directory::contacts::OPTED_OUT)
    .fetch_all(conn)
    .await?;
    Ok(jobs.into_iter().flatten().collect())
}
