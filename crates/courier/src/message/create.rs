//! Creating messages: the rows of `mkt_wap_messages`, their first event and
//! the send jobs that deliver them.
//!
//! Every producer (the API, the scheduler, retries) creates messages through
//! [`create_batch`] — except a schedule's contact segment, which
//! `scheduler::segment` writes in one SQL statement with the same keys and
//! jobs, taking the message rows and their events from [`insert_ctes`], the
//! fragment [`create_batch_in`] runs too. Either way
//! the message rows, their first event, and their send jobs commit in one
//! transaction, so a message that exists has a job (or, when no
//! account can take it yet, is `pending` with the reason), and a job that exists
//! has its message. Idempotency keys make a repeated request return the
//! existing messages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Source;
use crate::jobs::send::{Content, MediaSource, SendJob};
use crate::jobs::ChatId;
use crate::queue::{store, NewJob, QueueError};

/// One message to create.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The sending account; `None` leaves the message `pending` with
    /// `waiting_reason` until an account is assigned.
    pub account_id: Option<Uuid>,
    /// Campaign link.
    pub campaign_id: Option<Uuid>,
    /// Content link.
    pub content_id: Option<Uuid>,
    /// Schedule that produced it.
    pub schedule_id: Option<Uuid>,
    /// `group`, `individual` or `broadcast` (the seed's channel_type).
    pub channel_type: &'static str,
    /// Where it goes.
    pub chat_id: ChatId,
    /// The group row, for group messages.
    pub target_group_id: Option<Uuid>,
    /// The contact row, for individual messages.
    pub target_contact_id: Option<Uuid>,
    /// What it says.
    pub content: Content,
    /// Makes a repeated create return the existing message.
    pub idempotency_key: Option<String>,
    /// Not before.
    pub run_at: Option<DateTime<Utc>>,
    /// Job priority (lower first).
    pub priority: i16,
    /// Why it waits, when `account_id` is `None`.
    pub waiting_reason: Option<String>,
}

/// The outcome for one [`NewMessage`], in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CreatedMessage {
    /// The message row.
    pub message_id: Uuid,
    /// Its send job (none while pending).
    pub job_id: Option<Uuid>,
    /// False when the idempotency key matched an existing message.
    pub created: bool,
}

/// Creates messages, their `queued`/`pending` events and their send jobs in one
/// transaction.
pub async fn create_batch(
    pool: &PgPool,
    msgs: &[NewMessage],
    source: Source,
) -> Result<Vec<CreatedMessage>, QueueError> {
    let mut tx = pool.begin().await?;
    let out = create_batch_in(&mut tx, msgs, source).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`create_batch`] inside the caller's transaction (the scheduler commits the
/// schedule's status change with it).
///
/// Fast path for large batches (a 100k-target schedule): message and job ids
/// are chosen here, so each message row is written once, already linked to
/// its job (no second `UPDATE` pass), and the jobs — whose keys
/// (`send:<message id>`) are new by construction — are inserted with those ids
/// in one statement. Existing messages (idempotency key seen before) are looked
/// up only when the insert skipped some.
///
/// Why one long function: the fast path's ids, rows, keys and the look-up of
/// existing messages belong to one transaction and one set of vectors; split
/// up, every part would pass the same half-dozen column vectors along.
pub async fn create_batch_in(
    conn: &mut PgConnection,
    msgs: &[NewMessage],
    source: Source,
) -> Result<Vec<CreatedMessage>, QueueError> {
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    let n = msgs.len();
    let mut ids = Vec::with_capacity(n);
    let mut job_ids: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut campaigns = Vec::with_capacity(n);
    let mut contents = Vec::with_capacity(n);
    let mut schedules = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut chats = Vec::with_capacity(n);
    let mut groups = Vec::with_capacity(n);
    let mut contacts = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut texts: Vec<Option<String>> = Vec::with_capacity(n);
    let mut media_urls: Vec<Option<String>> = Vec::with_capacity(n);
    let mut media_paths: Vec<Option<String>> = Vec::with_capacity(n);
    let mut captions: Vec<Option<String>> = Vec::with_capacity(n);
    let mut links: Vec<Option<String>> = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    for m in msgs {
        ids.push(Uuid::now_v7());
        job_ids.push(m.account_id.map(|_| Uuid::now_v7()));
        accounts.push(m.account_id);
        campaigns.push(m.campaign_id);
        contents.push(m.content_id);
        schedules.push(m.schedule_id);
        channels.push(m.channel_type);
        chats.push(m.chat_id.to_string());
        groups.push(m.target_group_id);
        contacts.push(m.target_contact_id);
        types.push(m.content.message_type());
        let (text, url, path, caption, link) = content_columns(&m.content);
        texts.push(text);
        media_urls.push(url);
        media_paths.push(path);
        captions.push(caption);
        links.push(link);
        keys.push(m.idempotency_key.clone());
        reasons.push(if m.account_id.is_none() {
            Some(
                m.waiting_reason
                    .clone()
                    .unwrap_or_else(|| "no eligible account".into()),
            )
        } else {
            None
        });
    }
    // Insert, with each new row's first event in the same statement; a row
    // whose key exists (or repeats within the batch) is skipped.
    let inserted: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH {} SELECT id FROM ins",
        insert_ctes(
            "ins",
            "(SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], \
                $6::uuid[], $7::text[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], \
                $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], \
                $18::text[]) \
              AS t(id, job_id, account_id, campaign_id, content_id, schedule_id, channel_type, \
                   target_chat_id, target_group_id, target_contact_id, message_type, \
                   message_text, media_url, media_path, media_caption, link_url, \
                   idempotency_key, waiting_reason))",
            "$19",
        )
    )))
    .bind(&ids)
    .bind(&job_ids)
    .bind(&accounts)
    .bind(&campaigns)
    .bind(&contents)
    .bind(&schedules)
    .bind(&channels)
    .bind(&chats)
    .bind(&groups)
    .bind(&contacts)
    .bind(&types)
    .bind(&texts)
    .bind(&media_urls)
    .bind(&media_paths)
    .bind(&captions)
    .bind(&links)
    .bind(&keys)
    .bind(&reasons)
    .bind(source.as_str())
    .fetch_all(&mut *conn)
    .await?;

    let mut out: Vec<CreatedMessage> = Vec::with_capacity(n);
    if inserted.len() == n {
        out.extend(ids.iter().zip(&job_ids).map(|(id, job)| CreatedMessage {
            message_id: *id,
            job_id: *job,
            created: true,
        }));
    } else {
        // Some keys existed: return those rows (and their jobs) instead.
        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        let missing: Vec<&str> = (0..n)
            .filter(|&i| !inserted.contains(&ids[i]))
            .filter_map(|i| keys[i].as_deref())
            .collect();
        let existing: Vec<(String, Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT idempotency_key, id, job_id FROM mkt_wap_messages \
             WHERE idempotency_key = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        let existing: std::collections::HashMap<&str, (Uuid, Option<Uuid>)> = existing
            .iter()
            .map(|(k, id, job)| (k.as_str(), (*id, *job)))
            .collect();
        for i in 0..n {
            if inserted.contains(&ids[i]) {
                out.push(CreatedMessage {
                    message_id: ids[i],
                    job_id: job_ids[i],
                    created: true,
                });
                continue;
            }
            let found = keys[i].as_deref().and_then(|k| existing.get(k)).copied();
            let (message_id, job_id) = found.ok_or_else(|| {
                QueueError::Db(sqlx::Error::Protocol(format!(
                    "message with idempotency key {:?} was neither inserted nor found",
                    keys[i]
                )))
            })?;
            out.push(CreatedMessage {
                message_id,
                job_id,
                created: false,
            });
        }
    }

    // Send jobs for the new, assigned messages, with the ids already linked.
    let mut jobs: Vec<NewJob> = Vec::with_capacity(n);
    let mut jids: Vec<Uuid> = Vec::with_capacity(n);
    for (m, c) in msgs.iter().zip(&out) {
        let (Some(account), Some(job_id), true) = (m.account_id, c.job_id, c.created) else {
            continue;
        };
        let mut job = NewJob::new(
            account,
            &SendJob {
                message_id: c.message_id,
            },
        )?
        .priority(m.priority);
        if let Some(at) = m.run_at {
            job = job.run_at(at);
        }
        jobs.push(job);
        jids.push(job_id);
    }
    store::insert_new_jobs_in(conn, &jobs, &jids).await?;
    Ok(out)
}

/// New messages with their first event, as CTEs for a statement that writes
/// them together with other tables' rows (`crate::scheduler::segment`) or on
/// their own ([`create_batch_in`]): `name` inserts one message per row of
/// `rows` (a CTE's name or a parenthesised subquery, with the columns `id`,
/// `job_id`, `account_id`, `campaign_id`, `content_id`, `schedule_id`,
/// `channel_type`, `target_chat_id`, `target_group_id`, `target_contact_id`,
/// `message_type`, `message_text`, `media_url`, `media_path`,
/// `media_caption`, `link_url`, `idempotency_key`, `waiting_reason`), `queued`
/// when it has an account and `pending` (with the reason) when not; a row
/// whose idempotency key exists is skipped. `name` returns `id`, `job_id`,
/// `account_id`, `target_contact_id` and `status` of the rows written, and
/// `{name}_events` writes each one's first event with the source `source`
/// (an SQL expression).
pub(crate) fn insert_ctes(name: &str, rows: &str, source: &str) -> String {
    format!(
        "{name} AS ( \
            INSERT INTO mkt_wap_messages (id, job_id, account_id, campaign_id, content_id, \
                schedule_id, channel_type, target_chat_id, target_group_id, target_contact_id, \
                message_type, message_text, media_url, media_path, media_caption, link_url, \
                idempotency_key, waiting_reason, status, queued_at) \
            SELECT id, job_id, account_id, campaign_id, content_id, schedule_id, channel_type, \
                   target_chat_id, target_group_id, target_contact_id, message_type, message_text, \
                   media_url, media_path, media_caption, link_url, idempotency_key, waiting_reason, \
                   CASE WHEN account_id IS NULL THEN 'pending' ELSE 'queued' END, \
                   CASE WHEN account_id IS NULL THEN NULL ELSE now() END \
            FROM {rows} r \
            ON CONFLICT (idempotency_key) DO NOTHING \
            RETURNING id, job_id, account_id, target_contact_id, status), \
         {name}_events AS ( \
            INSERT INTO mkt_wap_message_events (message_id, status, source) \
            SELECT id, status, {source} FROM {name})"
    )
}

/// The content columns: (message_text, media_url, media_path, media_caption, link_url).
#[allow(clippy::type_complexity)]
pub(crate) fn content_columns(
    c: &Content,
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    match c {
        Content::Text { body } => (Some(body.as_str().to_string()), None, None, None, None),
        Content::Media {
            source, caption, ..
        } => {
            let caption = caption.as_ref().map(|c| c.as_str().to_string());
            match source {
                MediaSource::Url(u) => (None, Some(u.to_string()), None, caption, None),
                MediaSource::Path(p) => (None, None, Some(p.clone()), caption, None),
            }
        }
        Content::Link { url, .. } => (c.typed_text(), None, None, None, Some(url.to_string())),
    }
}
