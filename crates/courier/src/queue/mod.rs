//! The queue engine: durable, account-aware jobs in Postgres.
//!
//! How it fits the flow: producers (the API, the scheduler, the CLI) call
//! [`enqueue`] / [`enqueue_batch`]; worker processes ([`runtime::Runtime`])
//! lease accounts ([`lease`]), claim that account's jobs one at a time, gate
//! sends through the account's budget ([`crate::account::budget`]), run the job's
//! [`handler::JobHandler`], and record the outcome. Every write a worker makes
//! for an account carries the lease epoch (the fencing token), so a worker that
//! lost its lease cannot change anything.
//!
//! - [`store`]: every statement the engine itself runs, in one place.
//! - [`lease`]: leases and the heartbeat that keeps them.
//! - [`backend`]: the apalis backend (one per account slot) and the ack layer.
//! - [`runtime`]: the worker process: apalis monitor, slots, listener,
//!   heartbeat (pruning and pause expiry are `crate::maintenance`'s).
//! - [`handler`]: the handler trait and the registry by job kind.
//! - [`policy`]: what the domain adds to the claim (an SQL fragment), so the
//!   engine imports no domain code.
//! - [`fragments`]: the other way round: the queue's steps in a domain's
//!   statement or transaction (new jobs, moves, withdrawals, waiting reasons,
//!   a send slot moved to the instant WhatsApp accepted the message), so no
//!   other module writes the queue's tables.
//!
//! See `docs/queue.md` for the state machine and the invariants.

pub(crate) mod backend;
pub(crate) mod fragments;
pub mod handler;
pub(crate) mod lease;
mod policy;
pub mod runtime;
pub mod store;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::jobs::{JobKind, JobPayload, ValidationError};

pub use lease::Lease;
pub use policy::Policy;
pub use store::{cancel, create_lane, drop_lane, enqueue, enqueue_batch, get_job};

/// Errors of the queue engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The payload is invalid; nothing was written.
    #[error("invalid job")]
    Invalid(#[from] ValidationError),
    /// The payload could not be serialised.
    #[error("job payload")]
    Payload(#[from] serde_json::Error),
    /// The job cannot be cancelled any more (it started or finished).
    #[error("job {id} cannot be cancelled: it is {state}")]
    NotCancellable {
        /// The job.
        id: Uuid,
        /// Its current state.
        state: JobState,
    },
    /// No such job.
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// A query failed.
    #[error("queue query")]
    Db(#[from] sqlx::Error),
    /// A batched statement serving several slots failed.
    #[error("batched queue statement: {0}")]
    Batch(String),
}

/// A job's state (the `state` column, guarded by a CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Runnable now.
    Available,
    /// Waits for `run_at` (future enqueue or snooze).
    Scheduled,
    /// Being run by the account's lease holder.
    Running,
    /// Failed; runs again at `run_at`.
    Retryable,
    /// Done.
    Completed,
    /// Gave up (attempts or rescues exhausted, or a permanent error).
    Discarded,
    /// Cancelled before it started.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of the `queue_jobs_state_check` list.
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "available" => JobState::Available,
            "scheduled" => JobState::Scheduled,
            "running" => JobState::Running,
            "retryable" => JobState::Retryable,
            "completed" => JobState::Completed,
            "discarded" => JobState::Discarded,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will never run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewJob {
    /// What it does.
    pub kind: JobKind,
    /// The account whose session runs it.
    pub account_id: Uuid,
    /// The payload (a serialised [`JobPayload`]).
    pub payload: serde_json::Value,
    /// Lower runs first (default 100).
    pub priority: i16,
    /// Not before this instant (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is discarded (default per kind; 3 for sends).
    pub max_attempts: i32,
    /// Enqueueing the same key again returns the existing job.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// Validates `payload` and builds a job with its kind's defaults and its
    /// own idempotency key.
    pub fn new<P: JobPayload>(account_id: Uuid, payload: &P) -> Result<Self, QueueError> {
        payload.validate()?;
        Ok(Self {
            kind: P::KIND,
            account_id,
            payload: serde_json::to_value(payload)?,
            priority: 100,
            run_at: None,
            max_attempts: P::KIND.default_max_attempts(),
            idempotency_key: payload.idempotency_key(),
        })
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Defers the job.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Overrides the attempt limit.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Overrides the idempotency key.
    pub fn idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The job's id (the existing job's when the key was seen before).
    pub id: Uuid,
    /// False when an existing job was returned for the idempotency key.
    pub created: bool,
}

/// A job row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    /// Id (UUIDv7: creation-ordered).
    pub id: Uuid,
    /// Kind name.
    pub kind: String,
    /// The account.
    pub account_id: Uuid,
    /// Payload.
    pub payload: serde_json::Value,
    /// State name; see [`Job::state`].
    #[sqlx(rename = "state")]
    pub state_name: String,
    /// Priority (lower first).
    pub priority: i16,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Attempts of the job's own logic so far.
    pub attempt: i32,
    /// Attempt limit.
    pub max_attempts: i32,
    /// Times a crash or lost lease returned it.
    pub rescues: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// Error history.
    pub errors: serde_json::Value,
    /// Why it waits.
    pub waiting_reason: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Lease epoch of the running attempt.
    pub lease_epoch: Option<i64>,
    /// The worker (lease owner) that claimed the last attempt.
    pub attempted_by: Option<String>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Last attempt started at.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Reached a final state at.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// The state.
    pub fn state(&self) -> JobState {
        JobState::parse(&self.state_name).unwrap_or(JobState::Discarded)
    }

    /// The kind, when known to this build.
    pub fn job_kind(&self) -> Option<JobKind> {
        self.kind.parse().ok()
    }
}

/// The kinds that spend the account's send budget, as stored.
pub(crate) const BUDGET_KINDS: [&str; 2] = ["send", "retry"];
