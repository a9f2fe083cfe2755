//! `retry`: re-send a failed message (the seeds' `POST /messages/:id/retry`).
//!
//! A retry never re-sends blindly: when the previous attempt's outcome is
//! unknown, the worker first looks in the chat for an outgoing copy sent after
//! that attempt started and adopts it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobKind, JobPayload, ValidationError};

/// Retry the message row `message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryJob {
    /// The row in `mkt_wap_messages`.
    pub message_id: Uuid,
    /// Which retry this is (1-based); bounds the retry count with the message's
    /// `max_retries`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = i64, minimum = 1, maximum = 4_294_967_295_i64)
    )]
    pub retry_number: u32,
}

impl JobPayload for RetryJob {
    const KIND: JobKind = JobKind::Retry;

    fn validate(&self) -> Result<(), ValidationError> {
        if self.retry_number == 0 {
            return Err(ValidationError::new("retry_number", "starts at 1"));
        }
        Ok(())
    }

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("retry:{}:{}", self.message_id, self.retry_number))
    }
}
