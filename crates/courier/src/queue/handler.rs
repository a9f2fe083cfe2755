//! Job handlers: what runs a job of each kind.
//!
//! The worker's handlers (`crate::worker::handlers`, one file per job kind)
//! implement [`JobHandler`] and are registered in [`Handlers`] by
//! [`JobKind`], with the domain's [`Policy`] for the claim. A handler sees the claimed job and its lease; it never writes the job's state
//! itself: it returns an [`Outcome`] or a [`HandlerError`], and the engine's
//! ack layer records it, fenced by the lease epoch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::lease::HeldLease;
use super::{Job, Lease, Policy};
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

/// What must be ready before a held account's job is claimed (the worker's:
/// the account's browser session, reopened if it was closed while idle).
/// The slot asks before each claim while [`Readiness::is_ready`] says no and
/// a job is due, so the wait spends no attempt, no send slot and none of
/// `queue.job_timeout`.
pub trait Readiness: Send + Sync + std::fmt::Debug + 'static {
    /// Whether the account is ready now (cheap, in memory).
    fn is_ready(&self, account: uuid::Uuid) -> bool;
    /// Makes the account ready. An error means it cannot be served now: the
    /// slot gives the lease up (another worker may take the account) and
    /// leases again later; see [`NotReady`] for what it does before.
    fn prepare<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), NotReady>>;
    /// Most accounts this process can have ready at once: the runtime leases
    /// no more (its slots are capped to this).
    fn max_accounts(&self) -> usize;
    /// Bounds the preparations in progress: a slot takes a permit before it
    /// leases an account and holds it through [`Self::prepare`] (at most
    /// [`START_GATE_HOLD`]), so an account is leased only when it can be
    /// made ready now, never left waiting behind other starts while held.
    /// `None`: no bound.
    fn start_gate(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        None
    }
}

/// Longest a preparation holds its [`Readiness::start_gate`] permit: a page
/// stuck loading keeps its own deadline but stops blocking other starts.
pub const START_GATE_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Why [`Readiness::prepare`] could not make an account ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// What the account's jobs need is not there for a while (no browser can
    /// be opened: a grid at capacity, chromedriver down). The slot snoozes
    /// the account's runnable jobs, every kind, to `retry_after` from now
    /// with `reason` as their waiting reason (no attempt spent), then gives
    /// the lease up; they are picked up again when they come due.
    Unavailable {
        /// The jobs' waiting reason.
        reason: String,
        /// How long they wait.
        retry_after: std::time::Duration,
    },
    /// A passing failure (a query): the slot gives the lease up and leases
    /// again a second later.
    Failed(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable { reason, .. } => f.write_str(reason),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// The registry: one handler per kind, the domain's additions to the claim
/// ([`Policy`]) and what must be ready before a claim ([`Readiness`]).
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<JobKind, Arc<dyn JobHandler>>,
    policy: Policy,
    readiness: Option<Arc<dyn Readiness>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("kinds", &self.by_kind.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .field("readiness", &self.readiness)
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

    /// Sets what the claim statement does for the domain (the message of a
    /// send moves to `sending` with its slot).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The domain's additions to the claim.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Sets what must be ready before a claim (the browser session).
    pub fn with_readiness(mut self, readiness: Arc<dyn Readiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// What must be ready before a claim, if anything.
    pub fn readiness(&self) -> Option<Arc<dyn Readiness>> {
        self.readiness.clone()
    }

    /// The handler for a stored kind name.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        kind.parse::<JobKind>()
            .ok()
            .and_then(|k| self.by_kind.get(&k))
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
