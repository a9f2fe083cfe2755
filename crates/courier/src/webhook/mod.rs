//! Webhooks: subscriptions to Courier's event log, delivered one job per
//! (subscription, event) on the subscription's own queue lane.
//!
//! How it fits: a change commits → its event lands in `courier_events`
//! (migration 0018's triggers) → the fan-out trigger (migration 0019), in
//! the same transaction, writes a delivery row and a `webhook` job for every
//! matching subscription → a worker leases the subscription's lane and runs
//! the job ([`deliver`]): signed POST ([`sign`]), retried with backoff up to
//! `webhooks.horizon`, then dead-lettered (listed, replayable).
//!
//! This module is the one writer of `webhook_subscriptions` and
//! `webhook_deliveries`. See `docs/webhooks.md`.

pub mod deliver;
pub mod sign;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::events::EventType;
use crate::jobs::webhook::WebhookJob;
use crate::media::address::AddressPolicy;
use crate::queue::{NewJob, QueueError};

/// The queue lane purpose of a subscription.
const LANE_PURPOSE: &str = "webhook";

/// Errors of the webhook module.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Bad input, with the field it concerns.
    #[error("{field}: {detail}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Well-formed, but this server refuses it now: the host does not
    /// resolve, or it is not a public address and `webhooks.allow_cidrs`
    /// does not allow it (state and configuration, not syntax).
    #[error("{field}: {detail}")]
    Refused {
        /// The offending field.
        field: &'static str,
        /// Why it is refused.
        detail: String,
    },
    /// No such subscription or delivery.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The delivery cannot be replayed in its state.
    #[error("delivery is {0}; only delivered or dead deliveries can be replayed")]
    NotReplayable(String),
    /// The delivery's event left the log (`webhooks.events_retain`).
    #[error(
        "evt_{0} is no longer in the event log (pruned after webhooks.events_retain); \
         it cannot be replayed"
    )]
    EventPruned(i64),
    /// A query failed.
    #[error("webhook query")]
    Db(#[from] sqlx::Error),
    /// The queue refused a job.
    #[error("webhook job")]
    Queue(#[from] QueueError),
}

fn refused(field: &'static str, detail: impl Into<String>) -> WebhookError {
    WebhookError::Refused {
        field,
        detail: detail.into(),
    }
}

fn invalid(field: &'static str, detail: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// A subscription as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Subscription {
    /// Its id (also its queue lane).
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: Option<String>,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// Only events of this account.
    pub account_id: Option<Uuid>,
    /// Only events of this campaign.
    pub campaign_id: Option<Uuid>,
    /// Disabled subscriptions receive nothing (an endpoint answering 410 Gone
    /// disables its subscription).
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// When its secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret the last rotation replaced still signs, beside
    /// the current one (`null`: only the current one signs).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, description, event_types, account_id, campaign_id, enabled, \
     disabled_reason, disabled_at, secret_rotated_at, \
     CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END \
         AS previous_secret_expires_at, \
     created_at, updated_at";

/// What a subscription is made of (parsed, checked).
#[derive(Debug, Clone)]
pub struct Spec {
    /// The endpoint.
    pub url: url::Url,
    /// Free text.
    pub description: Option<String>,
    /// At least one type.
    pub event_types: Vec<EventType>,
    /// Account filter.
    pub account_id: Option<Uuid>,
    /// Campaign filter.
    pub campaign_id: Option<Uuid>,
}

/// Parses and checks a webhook URL against the address policy: http(s), a
/// host, and every address it resolves to public (or allowed by
/// `webhooks.allow_cidrs`). Deliveries check again at every attempt.
pub async fn check_url(policy: &AddressPolicy, raw: &str) -> Result<url::Url, WebhookError> {
    let url =
        url::Url::parse(raw).map_err(|e| invalid("url", format!("`{raw}` is not a URL: {e}")))?;
    if raw.len() > 2048 {
        return Err(invalid("url", "longer than 2048 characters"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "url",
            "must not carry credentials; use the signature to authenticate Courier",
        ));
    }
    policy
        .check_url(&url)
        .map_err(|e| refused("url", crate::error::chain(&e)))?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| refused("url", format!("host `{host}` does not resolve: {e}")))?
            .map(|a| a.ip())
            .collect();
        if let Some(bad) = addrs.iter().find(|a| !policy.permits(**a)) {
            return Err(refused(
                "url",
                format!(
                    "host `{host}` resolves to {bad}, a private, loopback, link-local or otherwise \
                     non-public address; refused (allow it with webhooks.allow_cidrs)"
                ),
            ));
        }
    }
    Ok(url)
}

async fn check_account(pool: &PgPool, account: Option<Uuid>) -> Result<(), WebhookError> {
    if let Some(a) = account {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mkt_wap_accounts WHERE id = $1)")
                .bind(a)
                .fetch_one(pool)
                .await?;
        if !exists {
            return Err(WebhookError::NotFound("account"));
        }
    }
    Ok(())
}

/// Creates a subscription and its queue lane; returns it with its secret,
/// which is shown this once.
pub async fn create(pool: &PgPool, spec: Spec) -> Result<(Subscription, String), WebhookError> {
    check_account(pool, spec.account_id).await?;
    let id = Uuid::now_v7();
    let secret = sign::new_secret();
    let types: Vec<&str> = spec.event_types.iter().map(|t| t.as_str()).collect();
    let mut tx = pool.begin().await?;
    let sub: Subscription = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_subscriptions (id, url, description, event_types, account_id, campaign_id, secret) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(spec.url.as_str())
    .bind(&spec.description)
    .bind(&types)
    .bind(spec.account_id)
    .bind(spec.campaign_id)
    .bind(&secret)
    .fetch_one(&mut *tx)
    .await?;
    crate::queue::create_lane(&mut tx, id, LANE_PURPOSE).await?;
    tx.commit().await?;
    Ok((sub, secret))
}

/// Every subscription, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Subscription>, WebhookError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions ORDER BY created_at DESC, id DESC"
    )))
    .fetch_all(pool)
    .await?)
}

/// One subscription.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Subscription, WebhookError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(WebhookError::NotFound("subscription"))
}

/// A change to a subscription; `None` leaves a field as it is. The filters
/// take `Some(None)` to clear them.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New endpoint.
    pub url: Option<url::Url>,
    /// New description.
    pub description: Option<Option<String>>,
    /// New types.
    pub event_types: Option<Vec<EventType>>,
    /// New account filter.
    pub account_id: Option<Option<Uuid>>,
    /// New campaign filter.
    pub campaign_id: Option<Option<Uuid>>,
    /// Enable or disable. Enabling clears the reason and sends what was
    /// left pending.
    pub enabled: Option<bool>,
}

/// Applies `change`. Enabling a disabled subscription enqueues its pending
/// deliveries again, in order.
pub async fn update(pool: &PgPool, id: Uuid, change: Change) -> Result<Subscription, WebhookError> {
    if let Some(Some(a)) = change.account_id {
        check_account(pool, Some(a)).await?;
    }
    let types: Option<Vec<&str>> = change
        .event_types
        .as_ref()
        .map(|ts| ts.iter().map(|t| t.as_str()).collect());
    let mut tx = pool.begin().await?;
    let was_enabled: Option<bool> =
        sqlx::query_scalar("SELECT enabled FROM webhook_subscriptions WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(was_enabled) = was_enabled else {
        return Err(WebhookError::NotFound("subscription"));
    };
    let sub: Subscription = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_subscriptions SET \
            url = coalesce($2, url), \
            description = CASE WHEN $3 THEN $4 ELSE description END, \
            event_types = coalesce($5, event_types), \
            account_id = CASE WHEN $6 THEN $7 ELSE account_id END, \
            campaign_id = CASE WHEN $8 THEN $9 ELSE campaign_id END, \
            enabled = coalesce($10, enabled), \
            disabled_reason = CASE WHEN $10 IS NULL THEN disabled_reason \
                                   WHEN $10 THEN NULL ELSE 'disabled through the API' END, \
            disabled_at = CASE WHEN $10 IS NULL THEN disabled_at WHEN $10 THEN NULL ELSE now() END, \
            updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(change.url.as_ref().map(|u| u.as_str().to_string()))
    .bind(change.description.is_some())
    .bind(change.description.clone().flatten())
    .bind(types)
    .bind(change.account_id.is_some())
    .bind(change.account_id.flatten())
    .bind(change.campaign_id.is_some())
    .bind(change.campaign_id.flatten())
    .bind(change.enabled)
    .fetch_one(&mut *tx)
    .await?;
    if change.enabled == Some(true) && !was_enabled {
        requeue_pending(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(sub)
}

/// One job per pending delivery of `id` (after a re-enable).
async fn requeue_pending(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
) -> Result<(), WebhookError> {
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM webhook_deliveries WHERE subscription_id = $1 AND status = 'pending' \
         ORDER BY xid, position",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    let jobs = positions
        .into_iter()
        .map(|position| {
            NewJob::new(
                id,
                &WebhookJob {
                    subscription_id: id,
                    position,
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !jobs.is_empty() {
        crate::queue::store::enqueue_batch_in(tx, &jobs).await?;
    }
    Ok(())
}

/// Deletes a subscription with its deliveries, its lane and its jobs.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<(), WebhookError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(WebhookError::NotFound("subscription"));
    }
    crate::queue::drop_lane(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// The secrets that sign the subscription's requests now: its secret, and
/// the one its last rotation replaced while the overlap lasts.
pub(crate) async fn secrets(pool: &PgPool, id: Uuid) -> Result<Vec<String>, WebhookError> {
    let (secret, previous): (String, Option<String>) = sqlx::query_as(
        "SELECT secret, CASE WHEN previous_secret_expires_at > now() THEN previous_secret END \
         FROM webhook_subscriptions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(WebhookError::NotFound("subscription"))?;
    Ok(std::iter::once(secret).chain(previous).collect())
}

/// A rotation's result: the new secret (shown this once) and until when
/// the replaced one still signs (`subscription.previous_secret_expires_at`).
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The subscription, as it is now.
    pub subscription: Subscription,
    /// The new `whsec_…` secret (redacted in `Debug`).
    pub secret: crate::secret::Secret,
}

/// Gives the subscription a new secret. The replaced one keeps signing
/// beside it for `overlap` (zero: it stops at once, for a secret that
/// leaked); a secret an earlier rotation replaced stops now.
pub async fn rotate_secret(
    pool: &PgPool,
    id: Uuid,
    overlap: std::time::Duration,
) -> Result<Rotated, WebhookError> {
    let secret = sign::new_secret();
    let overlap = sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: overlap.as_micros().min(i64::MAX as u128) as i64,
    };
    let subscription: Subscription = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_subscriptions SET \
            previous_secret = CASE WHEN $3 > interval '0' THEN secret END, \
            previous_secret_expires_at = CASE WHEN $3 > interval '0' THEN now() + $3 END, \
            secret = $2, secret_rotated_at = now(), updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&secret)
    .bind(overlap)
    .fetch_optional(pool)
    .await?
    .ok_or(WebhookError::NotFound("subscription"))?;
    Ok(Rotated {
        subscription,
        secret: crate::secret::Secret::new(secret),
    })
}

/// Forgets replaced secrets whose overlap has ended (they sign nothing
/// more; no reason to keep them).
pub async fn forget_expired_secrets(pool: &PgPool) -> Result<u64, WebhookError> {
    Ok(sqlx::query(
        "UPDATE webhook_subscriptions SET previous_secret = NULL, previous_secret_expires_at = NULL \
         WHERE previous_secret_expires_at <= now()",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Disables a subscription with `reason` (an endpoint answered 410 Gone).
pub(crate) async fn disable(pool: &PgPool, id: Uuid, reason: &str) -> Result<(), WebhookError> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET enabled = false, disabled_reason = $2, \
            disabled_at = now(), updated_at = now() WHERE id = $1 AND enabled",
    )
    .bind(id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    /// The event's position (its id is `evt_<position>`).
    pub position: i64,
    /// `evt_<position>`: the `webhook-id` of every attempt.
    pub event_id: String,
    /// The event type.
    pub event_type: Option<String>,
    /// pending, delivered or dead.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// First attempt.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Next attempt (pending, after a failure).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's last HTTP status.
    pub last_status: Option<i32>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    pub dead_at: Option<DateTime<Utc>>,
    /// When the event was fanned out to this subscription.
    pub created_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "d.position, 'evt_' || d.position AS event_id, e.type AS event_type, \
     d.status, d.attempts, d.first_attempt_at, d.last_attempt_at, d.next_attempt_at, d.last_status, \
     d.last_error, d.delivered_at, d.dead_at, d.created_at";

/// A subscription's deliveries, newest first, optionally of one status.
pub async fn deliveries(
    pool: &PgPool,
    id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, WebhookError> {
    get(pool, id).await?;
    if let Some(s) = status {
        if !["pending", "delivered", "dead"].contains(&s) {
            return Err(invalid(
                "status",
                format!("unknown status `{s}`; expected pending, delivered or dead"),
            ));
        }
    }
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         LEFT JOIN courier_events e ON e.position = d.position \
         WHERE d.subscription_id = $1 AND ($2::text IS NULL OR d.status = $2) \
         ORDER BY d.xid DESC, d.position DESC LIMIT $3"
    )))
    .bind(id)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Sends a dead (or delivered) delivery again: it is pending once more, with
/// its attempts reset, and a new job delivers it with the same `webhook-id`.
/// It goes out before the subscription's later events still pending.
pub async fn replay(pool: &PgPool, id: Uuid, position: i64) -> Result<Delivery, WebhookError> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM webhook_deliveries WHERE subscription_id = $1 AND position = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(position)
    .fetch_optional(&mut *tx)
    .await?;
    match status.as_deref() {
        None => return Err(WebhookError::NotFound("delivery")),
        Some("pending") => return Err(WebhookError::NotReplayable("pending".into())),
        Some(_) => {}
    }
    // The event must still be in the log, and stay there: the lock keeps
    // the pruner (which skips locked rows) off it until the delivery is
    // pending, which holds it.
    let held: Option<i64> =
        sqlx::query_scalar("SELECT position FROM courier_events WHERE position = $1 FOR KEY SHARE")
            .bind(position)
            .fetch_optional(&mut *tx)
            .await?;
    if held.is_none() {
        return Err(WebhookError::EventPruned(position));
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, first_attempt_at = NULL, \
            next_attempt_at = NULL, dead_at = NULL, delivered_at = NULL \
         WHERE subscription_id = $1 AND position = $2",
    )
    .bind(id)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    let job = NewJob::new(
        id,
        &WebhookJob {
            subscription_id: id,
            position,
        },
    )?;
    crate::queue::store::enqueue_batch_in(&mut tx, &[job]).await?;
    let d: Delivery = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         LEFT JOIN courier_events e ON e.position = d.position \
         WHERE d.subscription_id = $1 AND d.position = $2"
    )))
    .bind(id)
    .bind(position)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(d)
}

/// The condition, over an event row `e`, under which the event log keeps an
/// event past its retention: a delivery still needs it, pending (to send
/// it) or dead (to replay it). Delivered deliveries do not hold their event.
pub const HOLDS_EVENT: &str = "EXISTS (SELECT 1 FROM webhook_deliveries hd \
     WHERE hd.position = e.position AND hd.status IN ('pending', 'dead'))";

/// Which finished deliveries [`prune`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Delivered, by `delivered_at`.
    Delivered,
    /// Dead letters, by `dead_at`.
    Dead,
}

impl Finished {
    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Delivered => "delivered",
            Finished::Dead => "dead",
        }
    }
}

/// Deletes `which` deliveries finished before `cutoff`, at most `batch` per
/// statement (each its own short transaction), oldest first, until none is
/// left or `budget` has passed. Returns (rows deleted, statements, whether
/// the budget stopped it). A row being replayed right now is skipped.
pub async fn prune(
    pool: &PgPool,
    which: Finished,
    cutoff: DateTime<Utc>,
    batch: i64,
    budget: std::time::Duration,
) -> Result<(u64, u32, bool), WebhookError> {
    let column = match which {
        Finished::Delivered => "delivered_at",
        Finished::Dead => "dead_at",
    };
    let started = std::time::Instant::now();
    let (mut deleted, mut batches) = (0u64, 0u32);
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_deliveries WHERE (subscription_id, position) IN ( \
                 SELECT subscription_id, position FROM webhook_deliveries \
                 WHERE status = $1 AND {column} < $2 ORDER BY {column} LIMIT $3 \
                 FOR UPDATE SKIP LOCKED)"
        )))
        .bind(which.as_str())
        .bind(cutoff)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        batches += 1;
        deleted += n;
        if (n as i64) < batch {
            return Ok((deleted, batches, false));
        }
        if started.elapsed() >= budget {
            return Ok((deleted, batches, true));
        }
    }
}
