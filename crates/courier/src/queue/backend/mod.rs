//! The apalis backend: one [`AccountSlot`] per apalis worker, each driving one
//! leased account at a time, plus the [`AckLayer`] that records outcomes.
//!
//! A slot's `poll_next` runs this loop:
//!
//! 1. wait until the previous job's outcome is recorded (one running job per
//!    account; the database enforces it too);
//! 2. without a lease: lease an account that has due work, or sleep until a
//!    NOTIFY, the earliest due job, or the fallback poll;
//! 3. with a lease: ask the budget; if sends must wait, snooze the account's
//!    due sends to the exact instant and claim only other kinds; when a job
//!    is due and the account is not ready (its browser was closed while
//!    idle), make it ready first ([`super::handler::Readiness`]): the wait is
//!    no attempt, no send slot and no part of the job's timeout; when it
//!    cannot be made ready for a while (no browser), snooze the account's
//!    runnable jobs with the reason and release it;
//! 4. claim the next job (fenced); for a send, reserve the slot in the send log
//!    (fenced, windows re-checked in SQL) and hand the job to the worker;
//! 5. nothing due: keep the lease if the next job is due within `lease_hold`,
//!    else release it and go back to 2.
//!
//! The [`AckLayer`] is the backend's middleware: it sees every job's result
//! after the user layers (tracing, catch-panic, timeout) and writes completed /
//! retryable / discarded / snoozed, fenced by the epoch.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::handler::{ClaimedJob, Outcome};
use super::lease::{HeldLease, LeaseKeeper};
use super::store;
use crate::config::{BudgetSettings, HealthSettings, QueueSettings};

/// What every slot of a worker process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The pool.
    pub pool: PgPool,
    /// This process's lease owner id.
    pub owner: Arc<str>,
    /// Heartbeats the leases.
    pub keeper: LeaseKeeper,
    /// `[queue]`.
    pub queue: QueueSettings,
    /// `[budget]`.
    pub budget: BudgetSettings,
    /// `[health]`.
    pub health: HealthSettings,
    /// Idle slots wait here; one is woken per notification, and one per
    /// lease a batched acquisition put in `handoff` (no thundering herd).
    pub idle: Notify,
    /// Slots holding a lease while waiting for a near job wait here.
    pub wakeup: Notify,
    /// Cancelled on shutdown: slots stop leasing and claiming.
    pub stop: CancellationToken,
    /// Leases taken by a batched acquisition for other slots of this process
    /// (held and heartbeated; an idle slot takes one before leasing itself).
    pub handoff: std::sync::Mutex<Vec<(HeldLease, chrono::Duration)>>,
    /// Held by the slot that is leasing (one at a time per process).
    pub acquiring: Mutex<()>,
    /// What the domain adds to the claim statement.
    pub policy: super::Policy,
    /// What must be ready before a claim (the account's browser).
    pub readiness: Option<Arc<dyn super::handler::Readiness>>,
    /// The round tasks, each serving a fixed share of the accounts (by id), so
    /// one account's outcome and its next claim always go through the same
    /// task, in order. See [`run_rounds`].
    pub rounds: Vec<mpsc::UnboundedSender<Request>>,
}

impl Shared {
    /// The round task serving `account`.
    fn round_for(&self, account: uuid::Uuid) -> &mpsc::UnboundedSender<Request> {
        &self.rounds[(account.as_u128() % self.rounds.len() as u128) as usize]
    }
}

/// What a slot or the ack layer asks a round task for.
#[derive(Debug)]
pub(crate) enum Request {
    /// Claim the account's next job.
    Claim(ClaimRequest),
    /// Write a finished job's outcome.
    Ack(Box<AckRequest>),
}

/// The completion a slot handed over but that may not be written yet: the
/// slot waits for it before it gives its account up (a lease released first
/// would fence the completion and the job would run again).
type Unwritten = Arc<std::sync::Mutex<Option<oneshot::Receiver<()>>>>;

async fn written(unwritten: &Unwritten) {
    let pending = unwritten.lock().expect("unwritten poisoned").take();
    if let Some(rx) = pending {
        let _ = rx.await;
    }
}

/// A slot's request for its account's next job.
#[derive(Debug)]
pub(crate) struct ClaimRequest {
    ask: store::ClaimAsk,
    reply: oneshot::Sender<Result<Option<store::ClaimedRow>, String>>,
}

/// A finished job's outcome, to be written.
#[derive(Debug)]
pub(crate) struct AckRequest {
    claimed: ClaimedJob,
    result: Result<Outcome, String>,
    permanent: bool,
    reply: oneshot::Sender<()>,
}

/// An outcome the database refused: the lease is gone, the slot stops
/// driving the account.
fn fenced(claimed: &ClaimedJob) {
    tracing::warn!(job_id = %claimed.job.id, account_id = %claimed.job.account_id,
        epoch = claimed.lease.lease.epoch,
        "outcome refused: the lease was lost (fenced); the new holder reruns the job");
    claimed.lease.mark_lost();
}

mod outcome;
mod round;
mod slot;

pub(crate) use outcome::{AckLayer, Dispatch};
pub(crate) use round::{run_rounds, ROUND_TASKS};
pub(crate) use slot::AccountSlot;
