//! `webhook`: deliver one event of Courier's event log to one subscription.
//!
//! Enqueued by the database itself (the fan-out trigger of migration 0019,
//! in the event's own transaction) and by a replay of a dead letter. The
//! job's `account_id` is the subscription's queue lane.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobKind, JobPayload, ValidationError};

/// Deliver event `position` to subscription `subscription_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookJob {
    /// The subscription (also its queue lane).
    pub subscription_id: Uuid,
    /// The event's position in the event log.
    pub position: i64,
}

impl JobPayload for WebhookJob {
    const KIND: JobKind = JobKind::Webhook;

    fn validate(&self) -> Result<(), ValidationError> {
        if self.position < 1 {
            return Err(ValidationError::new(
                "position",
                "an event-log position starts at 1",
            ));
        }
        Ok(())
    }
}
