//! Messages: what Courier sends, and everything that happens to it.
//!
//! - [`create`]: new messages with their first event and send jobs, in one
//!   transaction.
//! - [`status`]: every status change after that (sending, sent, acks,
//!   failures), each a forward-only update with its event in the append-only
//!   log `mkt_wap_message_events`.
//! - [`assignment`]: which account sends it, as maintenance's reassignment
//!   changes it (moves, back to `pending`, waiting reasons, withdrawals).
//! - [`claim_fragment`]: what the queue's claim statement does to a send's
//!   message, handed to the queue through its [`crate::queue::Policy`]
//!   ([`CLAIM_POLICY`]).
//!
//! This module owns the writes to `mkt_wap_messages` and
//! `mkt_wap_message_events`.

pub(crate) mod assignment;
pub(crate) mod create;
pub(crate) mod status;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use create::{create_batch, create_batch_in, CreatedMessage, NewMessage};

/// The queue policy of a worker that sends messages: the claim that grants a
/// send slot moves the job's message to `sending` in the same statement.
pub const CLAIM_POLICY: crate::queue::Policy = crate::queue::Policy {
    on_slot: claim_fragment,
};

/// The claim's message step, as CTEs for the queue's slot-granting statement
/// ([`crate::queue::Policy`]): for every `send`/`retry` job in `jobs` (columns
/// `id`, `kind`, `payload`, `attempt`), its message moves from `pending` or
/// `queued` to `sending`, with `attempt_started_at`, the attempt counted in
/// `send_attempts` (the cap across jobs, `delivery.max_attempts`), the job id and an event
/// that names the slot instant `slot_at`. A message already `sending` (an
/// earlier attempt's outcome is unknown) keeps its original attempt start, so
/// the next attempt can look in the chat for a copy sent after it.
pub fn claim_fragment(jobs: &str, slot_at: &str) -> String {
    format!(
        "policy_marked AS ( \
            UPDATE mkt_wap_messages m SET status = 'sending', sending_at = now(), \
                attempt_started_at = now(), send_attempts = m.send_attempts + 1, job_id = c.id, error_message = NULL, waiting_reason = NULL \
            FROM {jobs} c \
            WHERE c.kind IN ('send', 'retry') AND m.id = (c.payload->>'message_id')::uuid \
              AND m.status IN ('pending', 'queued') \
            RETURNING m.id, c.id AS job_id, c.attempt \
         ), policy_marked_events AS ( \
            INSERT INTO mkt_wap_message_events (message_id, status, source, detail) \
            SELECT id, 'sending', 'worker', \
                   jsonb_build_object('job_id', job_id, 'attempt', attempt, 'slot_at', {slot_at}) \
            FROM policy_marked \
         )"
    )
}

/// A message's status (`mkt_wap_messages.status`, guarded by a CHECK list
/// that a test compares with [`MessageStatus::ALL`]). Acks only move forward:
/// a late `delivered` never overwrites `read`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum MessageStatus {
    /// Created, waiting for an account that can send it (the reason says why).
    Pending,
    /// Has a send job on an account.
    Queued,
    /// A send slot was granted and the attempt started.
    Sending,
    /// WhatsApp's server accepted it (one tick).
    Sent,
    /// Reached the recipient's device (two ticks).
    Delivered,
    /// Read (blue ticks).
    Read,
    /// Gave up, with the reason.
    Failed,
}

impl MessageStatus {
    /// Every status, in lifecycle order (the order of the CHECK list).
    pub const ALL: [MessageStatus; 7] = [
        MessageStatus::Pending,
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ];

    /// The database value.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    /// WhatsApp has the message (sent, delivered or read): it is never sent
    /// again.
    pub const fn reached_whatsapp(self) -> bool {
        matches!(
            self,
            MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status word the database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for MessageStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Whether a failed send may pass on another attempt
/// (`mkt_wap_messages.failure_class`). Decided in one place, from what the
/// page reported (`worker::handlers::send::failure_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Another attempt would fail the same way (bad media, an unknown chat,
    /// a number not on WhatsApp): final until an operator retries it.
    Permanent,
    /// May pass next time (a refusal for quota, a page or browser fault, a
    /// timeout): retried by the sweep while retries are left.
    Transient,
}

impl FailureClass {
    /// Every class, in the order of the CHECK list.
    pub const ALL: [FailureClass; 2] = [FailureClass::Permanent, FailureClass::Transient];

    /// The database value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Permanent => "permanent",
            FailureClass::Transient => "transient",
        }
    }
}

/// Who caused a message event (the event log's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An HTTP request.
    Api,
    /// A schedule expansion.
    Scheduler,
    /// A worker acting on the account's session.
    Worker,
    /// The in-page ack watcher.
    AckWatcher,
    /// Reading a chat after the session came back.
    CatchUp,
    /// A retry request.
    Retry,
    /// The periodic sweeper.
    Sweeper,
    /// Reassignment to another account.
    Reassign,
    /// A schema migration that back-filled the event (never running code).
    Migration,
}

impl Source {
    /// Every source, in the order of the event log's CHECK list.
    pub const ALL: [Source; 9] = [
        Source::Api,
        Source::Scheduler,
        Source::Worker,
        Source::AckWatcher,
        Source::CatchUp,
        Source::Retry,
        Source::Sweeper,
        Source::Reassign,
        Source::Migration,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Scheduler => "scheduler",
            Source::Worker => "worker",
            Source::AckWatcher => "ack_watcher",
            Source::CatchUp => "catch_up",
            Source::Retry => "retry",
            Source::Sweeper => "sweeper",
            Source::Reassign => "reassign",
            Source::Migration => "migration",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_database_word() {
        for s in MessageStatus::ALL {
            assert_eq!(s.as_str().parse::<MessageStatus>(), Ok(s));
        }
        assert!("delivering".parse::<MessageStatus>().is_err());
    }

    #[test]
    fn lifecycle_order_puts_read_after_delivered_after_sent() {
        assert!(MessageStatus::Sent < MessageStatus::Delivered);
        assert!(MessageStatus::Delivered < MessageStatus::Read);
    }
}
