//! Courier's event log (`courier_events`, migration 0018): what outsiders
//! hear about, through webhooks ([`crate::webhook`]) and the `/v1/events`
//! stream ([`stream`]).
//!
//! The log is fed by triggers in the transaction of each change (message
//! events, account status and QR, schedule expansions), so it holds an event
//! exactly when its change committed. Nothing in Rust inserts into it; only
//! [`prune`] deletes from it.
//!
//! Order: readers read only events whose transaction is older than every
//! transaction still running, in (transaction, position) order
//! ([`read_after`]). Every event that becomes readable later sorts after
//! every event read before, so resuming after an event (its [`Cursor`])
//! misses nothing and repeats nothing.
//!
//! Retention: the maintenance service's `prune` task deletes events older
//! than `webhooks.events_retain` that no delivery still needs ([`prune`]);
//! a reader that asks to resume after an event the log no longer holds is
//! told so ([`cursor_after`] answers `None`).

pub mod stream;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// The kinds of event, as stored and as sent (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// A message was queued for sending.
    #[serde(rename = "message.queued")]
    MessageQueued,
    /// WhatsApp accepted a message (one tick).
    #[serde(rename = "message.sent")]
    MessageSent,
    /// A message reached the recipient's device (two ticks).
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    /// A message was read (blue ticks).
    #[serde(rename = "message.read")]
    MessageRead,
    /// A message failed for good.
    #[serde(rename = "message.failed")]
    MessageFailed,
    /// An account's status changed.
    #[serde(rename = "account.status_changed")]
    AccountStatusChanged,
    /// An account's login QR code changed (the code is not in the event).
    #[serde(rename = "account.qr_changed")]
    AccountQrChanged,
    /// An account was paused.
    #[serde(rename = "account.paused")]
    AccountPaused,
    /// An account left its pause.
    #[serde(rename = "account.resumed")]
    AccountResumed,
    /// A schedule occurrence was expanded into messages.
    #[serde(rename = "schedule.expanded")]
    ScheduleExpanded,
}

impl EventType {
    /// Every type, in the order of `courier_events_type_check`.
    pub const ALL: [EventType; 10] = [
        EventType::MessageQueued,
        EventType::MessageSent,
        EventType::MessageDelivered,
        EventType::MessageRead,
        EventType::MessageFailed,
        EventType::AccountStatusChanged,
        EventType::AccountQrChanged,
        EventType::AccountPaused,
        EventType::AccountResumed,
        EventType::ScheduleExpanded,
    ];

    /// The stored and sent name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageQueued => "message.queued",
            EventType::MessageSent => "message.sent",
            EventType::MessageDelivered => "message.delivered",
            EventType::MessageRead => "message.read",
            EventType::MessageFailed => "message.failed",
            EventType::AccountStatusChanged => "account.status_changed",
            EventType::AccountQrChanged => "account.qr_changed",
            EventType::AccountPaused => "account.paused",
            EventType::AccountResumed => "account.resumed",
            EventType::ScheduleExpanded => "schedule.expanded",
        }
    }

    /// Parses a name, naming the accepted ones when it is none of them.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event type `{s}`; expected one of {}",
                    Self::ALL.map(|t| t.as_str()).join(", ")
                )
            })
    }
}

/// The version of the event body (`version` in every body).
pub const BODY_VERSION: u32 = 1;

/// One event of the log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    /// Its id: the log position.
    pub position: i64,
    /// The writing transaction (order and resumption).
    pub xid: i64,
    /// The stored type name.
    #[sqlx(rename = "type")]
    pub kind: String,
    /// The account it concerns, if any.
    pub account_id: Option<Uuid>,
    /// The campaign it concerns, if any.
    pub campaign_id: Option<Uuid>,
    /// The object.
    pub data: serde_json::Value,
    /// When it happened (database clock).
    pub occurred_at: DateTime<Utc>,
}

impl Event {
    /// The public id: `evt_<position>`, the same at every attempt and
    /// replay (`webhook-id`, the body's `id`; receivers de-duplicate by it).
    pub fn public_id(&self) -> String {
        format!("evt_{}", self.position)
    }

    /// Where the event sits in the log's order.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            xid: self.xid,
            position: self.position,
        }
    }

    /// The versioned JSON body: `{id, type, timestamp, version, data}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.public_id(),
            "type": self.kind,
            "timestamp": self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "version": BODY_VERSION,
            "data": self.data,
        })
    }
}

/// A place in the log's order, after which reading resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// Transaction id of the last event read.
    pub xid: i64,
    /// Its position.
    pub position: i64,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these types (empty: every type).
    pub types: Vec<EventType>,
    /// Only events of this account.
    pub account_id: Option<Uuid>,
    /// Only events of this campaign.
    pub campaign_id: Option<Uuid>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t.as_str() == e.kind))
            && self.account_id.is_none_or(|a| e.account_id == Some(a))
            && self.campaign_id.is_none_or(|c| e.campaign_id == Some(c))
    }

    fn type_names(&self) -> Vec<&'static str> {
        self.types.iter().map(|t| t.as_str()).collect()
    }
}

/// The readable horizon: events of transactions older than every running one.
const SETTLED: &str = "xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// Up to `limit` readable events after `after` that pass `filter`, in the
/// log's order.
pub async fn read_after(
    pool: &PgPool,
    after: Cursor,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT position, xid, type, account_id, campaign_id, data, occurred_at \
         FROM courier_events \
         WHERE (xid, position) > ($1, $2) AND {SETTLED} \
           AND (cardinality($3::text[]) = 0 OR type = ANY($3)) \
           AND ($4::uuid IS NULL OR account_id = $4) \
           AND ($5::uuid IS NULL OR campaign_id = $5) \
         ORDER BY xid, position LIMIT $6"
    )))
    .bind(after.xid)
    .bind(after.position)
    .bind(filter.type_names())
    .bind(filter.account_id)
    .bind(filter.campaign_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether the log holds events not yet readable (their transaction, or an
/// older one, still runs): the reader should look again soon.
pub async fn unsettled_after(pool: &PgPool, after: Cursor) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM courier_events WHERE (xid, position) > ($1, $2) AND NOT ({SETTLED}))"
    )))
    .bind(after.xid)
    .bind(after.position)
    .fetch_one(pool)
    .await
}

/// The cursor just after event `position` (a client's `Last-Event-ID`), or
/// `None` when the log does not hold that event: it was pruned
/// ([`prune`]), or it never was an event (a client's guess, a position a
/// rolled-back transaction took). Its place in the log's order is then
/// unknown, and so is what the client missed: the caller says so
/// (`/v1/events` sends `event: reset`) rather than guessing. Position 0
/// stands before every event: the oldest the log holds comes first.
pub async fn cursor_after(pool: &PgPool, position: i64) -> Result<Option<Cursor>, sqlx::Error> {
    if position == 0 {
        return Ok(Some(Cursor::default()));
    }
    let xid: Option<i64> = sqlx::query_scalar("SELECT xid FROM courier_events WHERE position = $1")
        .bind(position)
        .fetch_optional(pool)
        .await?;
    Ok(xid.map(|xid| Cursor { xid, position }))
}

/// What one [`prune`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted.
    pub deleted: u64,
    /// Events past the retention kept because `keep` said so.
    pub kept: u64,
    /// Statements run.
    pub batches: u32,
    /// Stopped at the time budget with old events left (the next run goes on).
    pub budget_spent: bool,
}

/// Deletes events that occurred before `cutoff`, except those for which the
/// SQL condition `keep` (over the event row `e`) holds: the webhook module's
/// "a delivery still needs it". In statements of at most `batch` events,
/// each its own short transaction, oldest first, until none is left or
/// `budget` has passed. A row another transaction holds locked (a replay
/// taking it) is skipped, left for the next run.
pub async fn prune(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    keep: &str,
    batch: i64,
    budget: std::time::Duration,
) -> Result<Pruned, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut out = Pruned::default();
    // Keyset over (occurred_at, position): each statement starts where the
    // last one stopped, so events kept are read once per run, not per batch.
    // (Every event occurred after 1970: Courier's clocks are the database's.)
    let mut after: (DateTime<Utc>, i64) = (DateTime::<Utc>::UNIX_EPOCH, 0);
    loop {
        let (scanned, deleted, last_at, last_pos): (i64, i64, Option<DateTime<Utc>>, Option<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH scan AS ( \
                     SELECT position, occurred_at FROM courier_events \
                     WHERE occurred_at < $1 AND (occurred_at, position) > ($2, $3) \
                     ORDER BY occurred_at, position LIMIT $4), \
                 doomed AS ( \
                     SELECT e.position FROM courier_events e JOIN scan USING (position) \
                     WHERE NOT ({keep}) FOR UPDATE OF e SKIP LOCKED), \
                 gone AS ( \
                     DELETE FROM courier_events e USING doomed d WHERE e.position = d.position \
                     RETURNING 1) \
                 SELECT (SELECT count(*) FROM scan), (SELECT count(*) FROM gone), l.occurred_at, l.position \
                 FROM (SELECT 1) one LEFT JOIN LATERAL ( \
                     SELECT occurred_at, position FROM scan \
                     ORDER BY occurred_at DESC, position DESC LIMIT 1) l ON true"
            )))
            .bind(cutoff)
            .bind(after.0)
            .bind(after.1)
            .bind(batch)
            .fetch_one(pool)
            .await?;
        out.batches += 1;
        out.deleted += deleted as u64;
        out.kept += (scanned - deleted) as u64;
        if scanned < batch {
            return Ok(out);
        }
        if let (Some(at), Some(pos)) = (last_at, last_pos) {
            after = (at, pos);
        }
        if started.elapsed() >= budget {
            out.budget_spent = true;
            return Ok(out);
        }
    }
}

/// The cursor after every readable event (a reader that starts "now").
pub async fn head(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT xid, position FROM courier_events WHERE {SETTLED} \
         ORDER BY xid DESC, position DESC LIMIT 1"
    )))
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|(xid, position)| Cursor { xid, position })
        .unwrap_or_default())
}

/// Reads one event by position (any type).
pub async fn get(pool: &PgPool, position: i64) -> Result<Option<Event>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, xid, type, account_id, campaign_id, data, occurred_at \
         FROM courier_events WHERE position = $1",
    )
    .bind(position)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_serialises_as_stored() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        let e = EventType::parse("message.bounced").unwrap_err();
        assert!(
            e.contains("message.bounced") && e.contains("message.read"),
            "{e}"
        );
    }
}
