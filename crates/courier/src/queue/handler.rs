//! Job handlers: what runs a job of each kind.
//!
//! Later parts plug in the real send/discover/scrape handlers by implementing
//! [`JobHandler`] and registering them in [`Handlers`] by [`JobKind`]. A
//! handler sees the claimed job and its lease; it never writes the job's state
//! itself: it returns an [`Outcome`] or a [`HandlerError`], and the engine's
//! ack layer records it, fenced by the lease epoch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::lease::HeldLease;
use super::Job;
use crate::jobs::JobKind;

/// A claimed job, as handed to a handler.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The job row as claimed (state running, attempt incremented).
    pub job: Job,
    /// The lease it runs under.
    pub lease: HeldLease,
    /// For budget-spending kinds: the send slot granted (database clock).
    pub slot_at: Option<DateTime<Utc>>,
}

/// What a handler achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Completed,
    /// Not now: run again at `until`, without spending an attempt.
    Snooze {
        /// When to run again.
        until: DateTime<Utc>,
        /// Why (shown by the API).
        reason: String,
    },
}

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later: retried with backoff until attempts run out.
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed: discarded at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Runs jobs of one or more kinds.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one job. Must be cancel-safe at await points: a shutdown past the
    /// grace period or a timeout drops the future.
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>>;
}

/// The registry: one handler per kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<JobKind, Arc<dyn JobHandler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("kinds", &self.by_kind.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Handlers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `kind` (replacing any previous one).
    pub fn register(mut self, kind: JobKind, handler: Arc<dyn JobHandler>) -> Self {
        self.by_kind.insert(kind, handler);
        self
    }

    /// Registers `handler` for every kind.
    pub fn register_all(mut self, handler: Arc<dyn JobHandler>) -> Self {
        for k in JobKind::ALL {
            self.by_kind.insert(k, handler.clone());
        }
        self
    }

    /// The handler for a stored kind name.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        kind.parse::<JobKind>()
            .ok()
            .and_then(|k| self.by_kind.get(&k))
    }
}

/// Succeeds at once and records the job in `queue_handler_records` (job,
/// account, kind, send slot, time, worker). Tests and benchmarks check
/// budgets and exactly-once from these rows.
#[derive(Debug, Clone)]
pub struct RecordingHandler {
    pool: sqlx::PgPool,
    delay: std::time::Duration,
}

impl RecordingHandler {
    /// A recorder writing through `pool`, taking `delay` per job.
    pub fn new(pool: sqlx::PgPool, delay: std::time::Duration) -> Self {
        Self { pool, delay }
    }
}

impl JobHandler for RecordingHandler {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            sqlx::query(
                "INSERT INTO queue_handler_records (job_id, account_id, kind, slot_at, worker) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (job_id) DO UPDATE SET runs = queue_handler_records.runs + 1",
            )
            .bind(job.job.id)
            .bind(job.job.account_id)
            .bind(&job.job.kind)
            .bind(job.slot_at)
            .bind(&*job.lease.lease.owner)
            .execute(&self.pool)
            .await
            .map_err(|e| HandlerError::Retryable(format!("recording: {e}")))?;
            Ok(Outcome::Completed)
        })
    }
}

/// Succeeds at once, doing nothing (throughput benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

impl JobHandler for NoopHandler {
    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async { Ok(Outcome::Completed) })
    }
}
