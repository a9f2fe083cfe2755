//! Courier's job definitions, shared by the API, the scheduler, the CLI, the
//! workers and any external Rust producer.
//!
//! One module per job kind holds its payload type, its validation and its
//! idempotency key. Payloads are parsed into domain types ([`PhoneNumber`],
//! [`ChatId`], [`MessageBody`]) at the edge, so a job that exists is a job that
//! is valid.

#![warn(missing_docs)]

pub mod discover;
pub mod ids;
pub mod maintenance;
pub mod retry;
pub mod scrape;
pub mod send;
pub mod webhook;

use serde::{Deserialize, Serialize};

pub use ids::{ChatId, ChatKind, MessageBody, PhoneNumber};

/// A field-level validation error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {detail}")]
pub struct ValidationError {
    /// The offending field, dotted for nested ones (`target.chat_id`).
    pub field: String,
    /// What is wrong, for a person.
    pub detail: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// Prefixes the field with a parent path (`messages[3]` + `body` → `messages[3].body`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// The kinds of job Courier runs. The string form is what the queue stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Send one message through an account.
    Send,
    /// List an account's groups and upsert them.
    Discover,
    /// Read a group's participants and upsert contacts.
    Scrape,
    /// Re-send a failed message.
    Retry,
    /// Verify an account's page state (login, phone, conflicts).
    HealthCheck,
    /// Log an account in (drive the QR flow).
    Login,
    /// Unlink an account's device: log out in WhatsApp Web, then delete
    /// the browser profile (made by an operator's disconnect).
    Logout,
    /// Deliver one event to one webhook subscription (runs on the
    /// subscription's queue lane, not on an account).
    Webhook,
}

impl JobKind {
    /// Every kind, for metrics and validation.
    pub const ALL: [JobKind; 8] = [
        JobKind::Send,
        JobKind::Discover,
        JobKind::Scrape,
        JobKind::Retry,
        JobKind::HealthCheck,
        JobKind::Login,
        JobKind::Logout,
        JobKind::Webhook,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Send => "send",
            JobKind::Discover => "discover",
            JobKind::Scrape => "scrape",
            JobKind::Retry => "retry",
            JobKind::HealthCheck => "health_check",
            JobKind::Login => "login",
            JobKind::Logout => "logout",
            JobKind::Webhook => "webhook",
        }
    }

    /// Default maximum attempts (the seeds: 3 for sends).
    pub fn default_max_attempts(self) -> i32 {
        match self {
            JobKind::Send | JobKind::Retry => 3,
            JobKind::Discover | JobKind::Scrape => 5,
            JobKind::HealthCheck | JobKind::Login => 1,
            // A browser that failed to start is worth another try: the
            // device stays linked until the logout runs.
            JobKind::Logout => 3,
            // Retries are snoozes counted by the delivery row (up to the
            // configured horizon); attempts only bound crash loops.
            JobKind::Webhook => 25,
        }
    }

    /// Whether running the job spends the account's send budget.
    pub fn consumes_send_budget(self) -> bool {
        matches!(self, JobKind::Send | JobKind::Retry)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "kind",
                    format!(
                        "unknown job kind `{s}`; expected one of {}",
                        JobKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                )
            })
    }
}

/// What every job payload provides.
pub trait JobPayload: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// The kind this payload belongs to.
    const KIND: JobKind;

    /// Checks the payload beyond what its types already guarantee.
    fn validate(&self) -> Result<(), ValidationError>;

    /// A key that makes a repeated enqueue of the same work return the existing
    /// job. `None` means: every enqueue is new work.
    fn idempotency_key(&self) -> Option<String> {
        None
    }
}
