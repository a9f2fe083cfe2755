//! Every status transition of a message row, each with its event row in the
//! same transaction: `sending` (with the budget slot), `sent`, back to
//! `queued` after a refusal, `failed`, and the forward-only ack updates
//! (`delivered`, `read`). Nothing here ever moves a message backwards.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{MessageStatus, Source};
use crate::queue::Lease;

/// The lease check: a write for an account only lands while its lease is ours.
const LEASE_OK: &str = "EXISTS (SELECT 1 FROM account_leases l WHERE l.account_id = $1 \
     AND l.epoch = $2 AND l.owner = $3 FOR SHARE)";

/// A message row as the send handler needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MessageRow {
    /// Row id.
    pub id: Uuid,
    /// The sending account.
    pub account_id: Option<Uuid>,
    /// Current status.
    pub status: MessageStatus,
    /// text, image, video, document, link.
    pub message_type: String,
    /// Where it goes.
    pub target_chat_id: String,
    /// The contact it goes to, when Courier knows it.
    pub target_contact_id: Option<Uuid>,
    /// The typed text (body, or link text with the URL).
    pub message_text: Option<String>,
    /// Media from a URL.
    pub media_url: Option<String>,
    /// Media from a path under the media directory.
    pub media_path: Option<String>,
    /// Media caption.
    pub media_caption: Option<String>,
    /// The link of a link message.
    pub link_url: Option<String>,
    /// When the current (or an interrupted) attempt started.
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// Send attempts so far, this one included (see `delivery.max_attempts`).
    pub send_attempts: i32,
}

impl MessageRow {
    /// The text that reaches the chat: the body, link text, or caption.
    pub(crate) fn chat_text(&self) -> Option<&str> {
        match self.message_type.as_str() {
            "image" | "video" | "document" => self.media_caption.as_deref(),
            _ => self.message_text.as_deref(),
        }
        .filter(|t| !t.is_empty())
    }
}

/// Loads a message.
pub(crate) async fn load(pool: &PgPool, id: Uuid) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, account_id, status, message_type, target_chat_id, target_contact_id, message_text, media_url, \
                media_path, media_caption, link_url, attempt_started_at, send_attempts \
         FROM mkt_wap_messages WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// `sending` → `sent` with WhatsApp's id (fenced by the lease). `adopted`
/// marks a copy found in the chat rather than sent by this attempt. Returns
/// false when the lease is gone or the message is no longer `sending`.
///
/// In the same transaction the job's budget slot moves forward to now: the
/// slot was granted before the page acted, and the message reached WhatsApp
/// somewhere in between, so only "after WhatsApp accepted it" bounds the
/// instant the recipient's side saw it. Later slots are judged against that,
/// and the windows hold as WhatsApp counts them, not only as we reserved them.
pub(crate) async fn mark_sent(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    message_id: Uuid,
    wa_message_id: &str,
    adopted: bool,
) -> Result<bool, sqlx::Error> {
    let source = if adopted {
        Source::Retry
    } else {
        Source::Worker
    };
    let mut tx = pool.begin().await?;
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH upd AS (UPDATE mkt_wap_messages SET status = 'sent', wa_message_id = $5, \
            ack = greatest(coalesce(ack, 1), 1), sent_at = now(), error_message = NULL \
            WHERE id = $4 AND account_id = $1 AND status = 'sending' AND {LEASE_OK} RETURNING id) \
         INSERT INTO mkt_wap_message_events (message_id, status, ack, source, detail) \
         SELECT id, 'sent', 1, $6, $7 FROM upd"
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(message_id)
    .bind(wa_message_id)
    .bind(source.as_str())
    .bind(json!({ "wa_message_id": wa_message_id, "adopted": adopted }))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    crate::queue::fragments::advance_slot_to_now(&mut tx, job_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// A send to a number that is not on WhatsApp, or to a contact that opted
/// out: the message is `failed` (permanent) with `reason`, and the job's budget slot is given back, in
/// one transaction. Fenced.
pub(crate) async fn mark_not_on_whatsapp(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    message_id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = mark_attempt_failed(
        &mut *tx,
        lease,
        message_id,
        reason,
        true,
        super::FailureClass::Permanent,
    )
    .await?;
    if done {
        crate::queue::fragments::give_back_slot(&mut tx, job_id, lease.epoch).await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// A failed attempt that did not reach WhatsApp: back to `queued` (a retry
/// follows) or, when `last`, `failed` with the reason. Fenced.
pub(crate) async fn mark_attempt_failed(
    pool: impl sqlx::PgExecutor<'_>,
    lease: &Lease,
    message_id: Uuid,
    reason: &str,
    last: bool,
    class: super::FailureClass,
) -> Result<bool, sqlx::Error> {
    let status = if last { "failed" } else { "queued" };
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH upd AS (UPDATE mkt_wap_messages SET status = $6, error_message = $5, \
            failed_at = CASE WHEN $6 = 'failed' THEN now() ELSE failed_at END, \
            failure_class = CASE WHEN $6 = 'failed' THEN $7 END \
            WHERE id = $4 AND account_id = $1 AND status IN ('queued', 'sending') AND {LEASE_OK} \
            RETURNING id) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, $6, 'worker', jsonb_build_object('error', $5::text, 'class', $7::text) FROM upd"
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(message_id)
    .bind(reason)
    .bind(status)
    .bind(class.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// An operator's retry of a failed message (`POST /v1/messages/{id}/retry`):
/// back to `queued` on its new `retry` job `job`, with the retry counted,
/// the last error cleared and `delivery.max_attempts` attempts granted again, and a `retry` event naming the job and `retry`
/// (the retry's number). Runs in the caller's transaction, which holds the
/// message row locked and enqueued the job, so both commit or neither does.
pub(crate) async fn requeue_retry(
    conn: &mut PgConnection,
    message_id: Uuid,
    job_id: Uuid,
    retry: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_messages SET status = 'queued', retry_count = retry_count + 1, job_id = $2,
             error_message = NULL, failure_class = NULL, send_attempts = 0, queued_at = now() WHERE id = $1",
    )
    .bind(message_id)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO mkt_wap_message_events (message_id, status, source, detail) VALUES ($1, 'queued', 'retry', $2)")
        .bind(message_id)
        .bind(json!({"retry": retry, "job_id": job_id}))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Messages left `queued` or `sending` by a job that ended without
/// recording an outcome — a send job discarded because its attempts ran out
/// before the page was ever reached (a session that never became ready), or
/// because crashes returned it too often — become `failed` with the job's
/// last error, so the sweep (`crate::maintenance::sweep`) can give them a
/// `retry` job (which checks the chat for a copy before sending: the outcome
/// of an interrupted attempt is unknown). Without this they would stay in
/// flight forever. The maintenance service runs it.
///
/// A send job an operator cancelled (`POST /v1/jobs/{id}/cancel`, e.g. one
/// held with an unknown outcome on a banned account) fails its message too,
/// saying whether an attempt may have reached WhatsApp; the sweep never
/// retries those (it only takes discarded jobs).
pub(crate) async fn fail_orphans(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "WITH orphan AS ( \
            SELECT m.id, CASE WHEN j.state = 'discarded' \
                THEN 'its job was discarded: ' || coalesce(j.last_error, 'no error recorded') \
                WHEN m.status = 'sending' OR m.attempt_started_at IS NOT NULL \
                THEN 'its job was cancelled after an attempt whose outcome is unknown \
                      (it may have reached WhatsApp)' \
                ELSE 'its job was cancelled before it was sent' END AS why \
            FROM mkt_wap_messages m \
            JOIN queue_jobs j ON j.id = m.job_id \
            WHERE m.status IN ('queued', 'sending') AND j.state IN ('discarded', 'cancelled') \
            FOR UPDATE OF m SKIP LOCKED \
         ), upd AS ( \
            UPDATE mkt_wap_messages m SET status = 'failed', failed_at = now(), \
                error_message = o.why, waiting_reason = NULL, failure_class = 'transient' \
            FROM orphan o WHERE m.id = o.id RETURNING m.id, m.error_message \
         ) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'failed', 'sweeper', jsonb_build_object('error', error_message) FROM upd",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Failed messages `ids[i]` that the sweep gives a `retry` job `job_ids[i]`
/// (enqueued in the same transaction) go back to `queued`, with the retry
/// counted and a `sweeper` event naming the retry's number. Unlike
/// [`requeue_retry`], the last error is kept.
pub(crate) async fn requeue_swept(
    conn: &mut PgConnection,
    ids: &[Uuid],
    job_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH m AS (UPDATE mkt_wap_messages m SET status = 'queued', job_id = u.job_id, \
                       retry_count = m.retry_count + 1, queued_at = now(), failure_class = NULL \
                   FROM unnest($1::uuid[], $2::uuid[]) AS u(id, job_id) \
                   WHERE m.id = u.id RETURNING m.id, m.retry_count) \
         INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
         SELECT id, 'queued', 'sweeper', jsonb_build_object('retry', retry_count) FROM m",
    )
    .bind(ids)
    .bind(job_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// What an ack update changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct AckChange {
    /// The message became `delivered` (or passed through it).
    pub delivered: bool,
    /// The message became `read`.
    pub read: bool,
    /// Seconds from `sent_at` to now, when anything changed.
    pub since_sent: Option<f64>,
}

/// (id, ack, status, sent_at, now) of a message an ack is recorded for.
type AckRow = (
    Uuid,
    Option<i16>,
    String,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// Records ack `level` (whatsapp-web.js numbering) for the message with
/// WhatsApp id `wa_message_id`: forward only. Fills `delivered_at`/`read_at`
/// and writes one event per status passed (a jump from one tick to blue
/// ticks writes `delivered` then `read`, in order). A lower or equal level,
/// or an error ack on a sent message, changes nothing.
pub(crate) async fn record_ack(
    pool: &PgPool,
    wa_message_id: &str,
    level: i8,
    source: Source,
) -> Result<AckChange, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<AckRow> = sqlx::query_as(
        "SELECT id, ack, status, sent_at, now() FROM mkt_wap_messages \
             WHERE wa_message_id = $1 AND status IN ('sent', 'delivered', 'read') FOR UPDATE",
    )
    .bind(wa_message_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, old_ack, old_status, sent_at, now)) = row else {
        return Ok(AckChange::default());
    };
    let old = old_ack.unwrap_or(1).max(1) as i8;
    if level <= old {
        return Ok(AckChange::default());
    }
    let mut change = AckChange {
        since_sent: sent_at.map(|s| (now - s).num_milliseconds().max(0) as f64 / 1000.0),
        ..AckChange::default()
    };
    let mut events: Vec<(&str, i16)> = Vec::new();
    if level >= 2 && old < 2 && old_status == "sent" {
        change.delivered = true;
        events.push(("delivered", 2));
    }
    if level >= 3 && old < 3 && old_status != "read" {
        change.read = true;
        events.push(("read", 3));
    }
    if level >= 4 {
        events.push(("read", 4));
    }
    let status = match level {
        2 if old_status == "sent" => "delivered",
        l if l >= 3 => "read",
        _ => old_status.as_str(),
    };
    sqlx::query(
        "UPDATE mkt_wap_messages SET ack = $2, status = $3, \
            delivered_at = CASE WHEN $2 >= 2 THEN coalesce(delivered_at, now()) ELSE delivered_at END, \
            read_at = CASE WHEN $2 >= 3 THEN coalesce(read_at, now()) ELSE read_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(i16::from(level))
    .bind(status)
    .execute(&mut *tx)
    .await?;
    for (status, ack) in events {
        sqlx::query(
            "INSERT INTO mkt_wap_message_events (message_id, status, ack, source) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(status)
        .bind(ack)
        .bind(source.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(change)
}

/// Flags the account's sent messages with no delivery after `after`;
/// returns how many were flagged now (each lowers health once). Group
/// messages are never flagged: WhatsApp reports a group message delivered
/// only when every member's device has it, and one member offline for a week
/// says nothing about the sending account.
pub(crate) async fn flag_undelivered(
    pool: &PgPool,
    account: Uuid,
    after: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE mkt_wap_messages SET undelivered_flagged_at = now() \
         WHERE account_id = $1 AND status = 'sent' AND undelivered_flagged_at IS NULL \
           AND channel_type <> 'group' \
           AND sent_at < now() - make_interval(secs => $2)",
    )
    .bind(account)
    .bind(after.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// The WhatsApp ids of the account's sent-but-unread messages in the
/// `chats` chats that sent most recently, for the catch-up from the page's
/// message models.
pub(crate) async fn ids_awaiting_acks(
    pool: &PgPool,
    account: Uuid,
    chats: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH awaiting AS ( \
           SELECT target_chat_id, wa_message_id, sent_at FROM mkt_wap_messages \
           WHERE account_id = $1 AND status IN ('sent', 'delivered') \
             AND wa_message_id IS NOT NULL AND sent_at > now() - interval '7 days'), \
         recent AS ( \
           SELECT target_chat_id FROM awaiting GROUP BY target_chat_id \
           ORDER BY max(sent_at) DESC LIMIT $2) \
         SELECT wa_message_id FROM awaiting WHERE target_chat_id IN (SELECT target_chat_id FROM recent) \
         ORDER BY sent_at DESC",
    )
    .bind(account)
    .bind(chats)
    .fetch_all(pool)
    .await
}

/// Which of `accounts` sent a message within `within` that has no delivery
/// ack yet: acks are expected soon, so the worker keeps their browsers open
/// (later acks are caught up from the message models when they reopen).
pub(crate) async fn accounts_expecting_acks(
    pool: &PgPool,
    accounts: &[Uuid],
    within: std::time::Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT account_id FROM mkt_wap_messages \
         WHERE account_id = ANY($1) AND status = 'sent' \
           AND sent_at > now() - make_interval(secs => $2)",
    )
    .bind(accounts)
    .bind(within.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// How long ago the account's newest sent-but-unread message was sent
/// (within the 7-day tracking window), if any is left.
pub(crate) async fn newest_awaiting_age(
    pool: &PgPool,
    account: Uuid,
) -> Result<Option<std::time::Duration>, sqlx::Error> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - max(sent_at))::float8 FROM mkt_wap_messages \
         WHERE account_id = $1 AND status IN ('sent', 'delivered') \
           AND sent_at > now() - interval '7 days'",
    )
    .bind(account)
    .fetch_one(pool)
    .await?;
    Ok(secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
}

/// Of `ids`, those already recorded for some message (a copy in the chat
/// owned by another message must not be adopted).
pub(crate) async fn owned_wa_ids(
    pool: &PgPool,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT wa_message_id FROM mkt_wap_messages WHERE wa_message_id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}
