//! The account slot: one apalis worker driving one leased account at a time
//! (the loop in the module docs of [`super`]), with its budget view.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use tokio::sync::{oneshot, Mutex, Notify, Semaphore};

use crate::account::budget::{self, AccountClock, Decision, Limits};
use crate::queue::handler::{self, ClaimedJob};
use crate::queue::lease::HeldLease;
use crate::queue::store;
use crate::queue::QueueError;

use super::*;

/// The budget view of a held account, kept in memory while the lease lasts
/// (only the lease holder appends to the account's send log).
#[derive(Debug)]
struct BudgetView {
    base: Limits,
    limits: Limits,
    tz: chrono_tz::Tz,
    paused_until: Option<DateTime<Utc>>,
    sends: Vec<DateTime<Utc>>,
    jitter: Duration,
    loaded: Instant,
    /// Database clock minus local clock.
    offset: chrono::Duration,
    /// Due sends were snoozed up to this instant already.
    snoozed_to: Option<DateTime<Utc>>,
}

impl BudgetView {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Sets the account's budget gauges (sends in each window, limits).
    fn record_metrics(&self, account: uuid::Uuid) {
        let now = self.now();
        for w in budget::Window::ALL {
            let since = now - w.length();
            // Ascending: a binary search, not a walk of the whole log.
            let used = self.sends.len() - self.sends.partition_point(|t| *t <= since);
            crate::metrics::record_budget(account, w.name(), used, self.limits.cap(w));
        }
    }

    fn decide(&self) -> Decision {
        budget::decide(
            &self.limits,
            &AccountClock {
                sends: &self.sends,
                jitter: self.jitter,
                tz: self.tz,
                paused_until: self.paused_until,
            },
            self.now(),
        )
    }
}

#[derive(Debug)]
struct Held {
    lease: HeldLease,
    offset: chrono::Duration,
    budget: Option<BudgetView>,
    /// When the slot took the account (rotation).
    since: Instant,
    /// When the slot last looked whether other accounts wait (rotation).
    rotation_checked: Option<Instant>,
    /// The readiness start gate's permit taken before the lease, held until
    /// the account is ready (see [`handler::Readiness::start_gate`]).
    start_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Most accounts one lease statement takes.
const LEASE_BATCH: usize = 256;

/// A lease another slot of this process acquired for us, still ours.
fn take_handoff(shared: &Shared) -> Option<(HeldLease, chrono::Duration)> {
    let mut handoff = shared.handoff.lock().expect("handoff poisoned");
    while let Some((lease, offset)) = handoff.pop() {
        if !lease.is_lost() {
            return Some((lease, offset));
        }
    }
    None
}

/// How often a slot past `queue.lease_rotate` looks whether others wait.
const ROTATION_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct SlotState {
    held: Option<Held>,
}

fn draw_jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=max.as_micros() as u64))
}

async fn load_budget(shared: &Shared, held: &Held) -> Result<Option<BudgetView>, QueueError> {
    let Some(row) = store::load_budget(&shared.pool, held.lease.lease.account_id).await? else {
        return Ok(None);
    };
    let base = match shared.budget.limits().resolve(&row.rate_limit_config) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(account_id = %held.lease.lease.account_id, error = %crate::error::chain(&e),
                "ignoring the account's rate_limit_config");
            shared.budget.limits()
        }
    };
    let now = Utc::now() + held.offset;
    let age_days = (now - row.created_at).num_days();
    let limits = base.effective(
        age_days,
        &shared.budget.warmup,
        row.health_score,
        shared.health.caution,
    );
    let tz = row.timezone.parse().unwrap_or(chrono_tz::UTC);
    Ok(Some(BudgetView {
        jitter: draw_jitter(base.jitter),
        base,
        limits,
        tz,
        paused_until: row.paused_until,
        sends: row.sends,
        loaded: Instant::now(),
        offset: held.offset,
        snoozed_to: None,
    }))
}

/// How long an account's budget facts are trusted before reloading (pauses
/// and limit changes made elsewhere are seen within this).
const BUDGET_REFRESH: Duration = Duration::from_secs(5);

async fn release(shared: &Shared, state: &mut SlotState, unwritten: &Unwritten) {
    written(unwritten).await;
    if let Some(h) = state.held.take() {
        shared.keeper.forget(&h.lease.lease);
        if !h.lease.is_lost() {
            if let Err(e) = store::release_lease(&shared.pool, &h.lease.lease).await {
                tracing::warn!(error = %crate::error::chain(&e), "releasing a lease failed; it expires by itself");
            }
        }
    }
}

async fn sleep_until_db(
    shared: &Shared,
    until: DateTime<Utc>,
    db_now: DateTime<Utc>,
    notify: &Notify,
) {
    let wait = (until - db_now).to_std().unwrap_or(Duration::ZERO);
    let wait = wait.min(shared.queue.poll_interval);
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = notify.notified() => {}
        _ = shared.stop.cancelled() => {}
    }
}

/// Snoozes the held account's runnable jobs of `kinds` to `until` (see
/// [`store::snooze_due`]) and counts them in `courier_jobs_snoozed_total`.
/// Returns how many moved.
async fn snooze(
    shared: &Shared,
    lease: &crate::queue::Lease,
    until: DateTime<Utc>,
    reason: &str,
    kinds: store::SnoozeKinds,
) -> Result<u64, QueueError> {
    let moved = store::snooze_due(&shared.pool, lease, until, reason, kinds).await?;
    let label = crate::metrics::snooze_reason(reason);
    for (kind, n) in &moved {
        metrics::counter!(crate::metrics::JOBS_SNOOZED, "kind" => kind.clone(), "reason" => label)
            .increment(*n);
    }
    Ok(moved.iter().map(|(_, n)| n).sum())
}

/// The slot's loop (see the module docs). Returns the next job to run.
async fn next_job(
    shared: Arc<Shared>,
    state: Arc<Mutex<SlotState>>,
    in_flight: Arc<Semaphore>,
    unwritten: Unwritten,
) -> ClaimedJob {
    let mut state = state.lock().await;
    loop {
        if shared.stop.is_cancelled() {
            release(&shared, &mut state, &unwritten).await;
            std::future::pending::<()>().await;
        }
        match step(&shared, &mut state, &in_flight, &unwritten).await {
            Ok(Some(job)) => return job,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), "queue slot error; giving up the account and retrying");
                // Whatever the slot was doing with its account (it may have
                // claimed a job it could not hand out), the lease is given up:
                // the next holder rescues anything left running.
                if let Some(h) = state.held.as_ref() {
                    h.lease.mark_lost();
                }
                written(&unwritten).await;
                if let Some(h) = state.held.take() {
                    shared.keeper.forget(&h.lease.lease);
                    let _ = store::release_lease(&shared.pool, &h.lease.lease).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shared.stop.cancelled() => {}
                }
            }
        }
    }
}

/// One step of a slot's loop (the numbered steps of the module docs).
///
/// Why one long function: the steps share the held lease, its budget view,
/// the in-flight permit and the unwritten completion, and their order is the
/// correctness argument (a lease is never given up before its completion is
/// written; a send is claimed only after the budget said yes). Split into
/// helpers, each would take all of that state mutably and the order would be
/// spread over several bodies; the numbered comments mark the steps instead.
async fn step(
    shared: &Shared,
    state: &mut SlotState,
    in_flight: &Arc<Semaphore>,
    unwritten: &Unwritten,
) -> Result<Option<ClaimedJob>, QueueError> {
    // 1. One job at a time: the permit comes back when the ack is written.
    let permit = in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed");

    if state.held.as_ref().is_some_and(|h| h.lease.is_lost()) {
        let h = state.held.take().expect("checked");
        shared.keeper.forget(&h.lease.lease);
    }

    // 2. Lease an account, or sleep. With a start gate (browsers), only
    //    when an account's browser may start now: a start does not queue
    //    behind others while its account is held (other workers may take
    //    it meanwhile), and one lease at a time.
    let Some(held) = state.held.as_mut() else {
        let notified = shared.idle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start_permit = match shared.readiness.as_ref().and_then(|r| r.start_gate()) {
            Some(gate) => tokio::select! {
                p = gate.acquire_owned() => Some(p.expect("the start gate is never closed")),
                _ = shared.stop.cancelled() => return Ok(None),
            },
            None => None,
        };
        // One slot of the process leases at a time, so concurrent idle slots
        // do not each lease for all free slots (the rest would sit unserved).
        let acquiring = shared.acquiring.lock().await;
        let got = match take_handoff(shared) {
            Some(h) => Some(h),
            None => {
                // Lease for every slot of this process that has no account, in
                // one statement; the others are handed over below.
                let want = if start_permit.is_some() {
                    1
                } else {
                    shared
                        .queue
                        .capacity
                        .saturating_sub(shared.keeper.len())
                        .clamp(1, LEASE_BATCH)
                };
                let mut leases = store::acquire_leases(
                    &shared.pool,
                    &shared.owner,
                    shared.queue.lease_ttl,
                    shared.queue.max_rescues,
                    want,
                )
                .await?
                .into_iter()
                .map(|(lease, db_now)| (shared.keeper.hold(lease), db_now - Utc::now()));
                let first = leases.next();
                let extra: Vec<_> = leases.collect();
                if !extra.is_empty() {
                    let n = extra.len();
                    shared
                        .handoff
                        .lock()
                        .expect("handoff poisoned")
                        .extend(extra);
                    for _ in 0..n {
                        shared.idle.notify_one();
                    }
                }
                first
            }
        };
        drop(acquiring);
        match got {
            Some((lease, offset)) => {
                tracing::debug!(account_id = %lease.lease.account_id, epoch = lease.lease.epoch, "leased account");
                state.held = Some(Held {
                    lease,
                    offset,
                    budget: None,
                    since: Instant::now(),
                    rotation_checked: None,
                    start_permit,
                });
            }
            None => {
                drop(permit);
                drop(start_permit);
                let (due, db_now) = store::next_free_due(&shared.pool).await?;
                let until = due.unwrap_or(db_now + chrono::Duration::days(1));
                let wait = (until - db_now)
                    .to_std()
                    .unwrap_or(Duration::from_millis(5))
                    .max(Duration::from_millis(5))
                    .min(shared.queue.poll_interval);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut notified => {}
                    _ = shared.stop.cancelled() => {}
                }
            }
        }
        return Ok(None);
    };

    // Rotation: an account that has had the slot for `lease_rotate` gives it
    // up after its job when accounts nobody holds have due work, so with more
    // busy accounts than slots every account is served in turn. Released, it
    // goes to the back of the line (see `store::release_lease`).
    if held.since.elapsed() >= shared.queue.lease_rotate
        && held
            .rotation_checked
            .is_none_or(|t| t.elapsed() >= ROTATION_CHECK)
    {
        held.rotation_checked = Some(Instant::now());
        let handed_over = !shared.handoff.lock().expect("handoff poisoned").is_empty();
        if handed_over || store::others_waiting(&shared.pool).await? {
            tracing::debug!(account_id = %held.lease.lease.account_id,
                held_for_ms = held.since.elapsed().as_millis() as u64,
                "rotating: giving the account up, others wait");
            drop(permit);
            release(shared, state, unwritten).await;
            return Ok(None);
        }
    }

    // 3. The budget for sends.
    if held
        .budget
        .as_ref()
        .is_none_or(|b| b.loaded.elapsed() > BUDGET_REFRESH)
    {
        let keep_snooze = held.budget.as_ref().and_then(|b| b.snoozed_to);
        held.budget = load_budget(shared, held).await?;
        if let Some(b) = held.budget.as_mut() {
            b.snoozed_to = keep_snooze;
            b.record_metrics(held.lease.lease.account_id);
        }
    }
    let lease = held.lease.lease.clone();
    let mut sends_allowed = true;
    if let Some(b) = held.budget.as_mut() {
        if let Decision::NotBefore(until, why) = b.decide() {
            sends_allowed = false;
            if b.snoozed_to.is_none_or(|t| t < until) {
                let why = why.to_string();
                let n = snooze(shared, &lease, until, &why, store::SnoozeKinds::Budget).await?;
                if n > 0 {
                    tracing::debug!(account_id = %lease.account_id, %until, jobs = n, reason = %why, "snoozed sends");
                }
                b.snoozed_to = Some(until);
            }
        }
    }

    // 3b. The account's browser: reopened before the claim when due work
    //     finds it closed, so the wait is neither an attempt nor a send slot
    //     nor part of the job's timeout.
    if let Some(r) = shared.readiness.as_ref() {
        if !r.is_ready(lease.account_id) {
            let work = store::account_work(&shared.pool, lease.account_id).await?;
            if !work.paused && work.next_any.is_some_and(|t| t <= work.now) {
                // The start gate's permit is held while the browser starts,
                // up to START_GATE_HOLD.
                let start_permit = held.start_permit.take();
                let prepared = {
                    let prepare = r.prepare(&lease);
                    tokio::pin!(prepare);
                    tokio::select! {
                        done = &mut prepare => done,
                        _ = tokio::time::sleep(handler::START_GATE_HOLD), if start_permit.is_some() => {
                            drop(start_permit);
                            prepare.await
                        }
                    }
                };
                if let Err(why) = prepared {
                    tracing::warn!(account_id = %lease.account_id, reason = %why,
                        "the account's browser could not be opened; giving the account up for now");
                    drop(permit);
                    // Unavailable (a grid at capacity): the account's jobs
                    // wait, with the reason shown, instead of being leased
                    // again and again; a passing failure is retried soon.
                    let pause = match &why {
                        handler::NotReady::Unavailable {
                            reason,
                            retry_after,
                        } => {
                            let until = Utc::now()
                                + held.offset
                                + chrono::Duration::from_std(*retry_after).unwrap_or_default();
                            let n = snooze(shared, &lease, until, reason, store::SnoozeKinds::All)
                                .await?;
                            tracing::info!(account_id = %lease.account_id, %until, jobs = n, %reason,
                                "snoozed the account's jobs until a browser can be opened");
                            None
                        }
                        handler::NotReady::Failed(_) => Some(Duration::from_secs(1)),
                    };
                    release(shared, state, unwritten).await;
                    if let Some(pause) = pause {
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shared.stop.cancelled() => {}
                        }
                    }
                    return Ok(None);
                }
                // The turn (`queue.lease_rotate`) starts once the account is ready.
                held.since = Instant::now();
            }
        }
    }
    // Ready, or nothing due: the start gate's permit goes to the next start.
    held.start_permit = None;

    // 4. Claim, batched with the other slots of this process; a send's slot
    //    is reserved in the same statement.
    let limits = held
        .budget
        .as_ref()
        .map(|b| b.limits.clone())
        .unwrap_or_else(|| shared.budget.limits());
    // The copy of the log was loaded under this lease and has every slot
    // granted since (only the holder adds to the log): an upper bound.
    let known_sends = held
        .budget
        .as_ref()
        .map_or(i64::MAX, |b| b.sends.len() as i64);
    let (reply, answer) = oneshot::channel();
    shared
        .round_for(lease.account_id)
        .send(Request::Claim(ClaimRequest {
            ask: store::ClaimAsk {
                lease: lease.clone(),
                sends_allowed,
                limits,
                known_sends,
            },
            reply,
        }))
        .map_err(|_| QueueError::Batch("the round task has stopped".into()))?;
    let claimed = answer
        .await
        .map_err(|_| QueueError::Batch("the round task has stopped".into()))?
        .map_err(QueueError::Batch)?;
    if let Some(row) = claimed {
        if let (Some(at), Some(b)) = (row.slot_at, held.budget.as_mut()) {
            b.sends.push(at);
            // Sends older than the longest window can no longer count: the
            // copy stays bounded, and so does `known_sends`.
            let horizon = at - budget::Window::Day.guarded();
            let gone = b.sends.partition_point(|t| *t <= horizon);
            b.sends.drain(..gone);
            b.jitter = draw_jitter(b.base.jitter);
            b.record_metrics(lease.account_id);
        }
        permit.forget();
        return Ok(Some(ClaimedJob {
            job: row.job,
            lease: held.lease.clone(),
            slot_at: row.slot_at,
        }));
    }
    drop(permit);
    if sends_allowed {
        // The database may have refused a send our view allowed (a stale view
        // or a clock estimate behind the database's): look again next time.
        if let Some(b) = held.budget.as_mut() {
            b.loaded = Instant::now() - BUDGET_REFRESH - Duration::from_millis(1);
        }
    }

    // 5. Nothing due now.
    let work = store::account_work(&shared.pool, lease.account_id).await?;
    // Sends that must wait were snoozed to their instant, so the earliest
    // run_at of any kind is the next thing this account can do.
    let next = work.next_any;
    let hold_until =
        work.now + chrono::Duration::from_std(shared.queue.lease_hold).unwrap_or_default();
    match next {
        Some(at) if !work.paused && at <= hold_until && !held.lease.is_lost() => {
            sleep_until_db(shared, at, work.now, &shared.wakeup).await;
        }
        _ => release(shared, state, unwritten).await,
    }
    Ok(None)
}

/// One apalis worker's backend: drives one leased account at a time.
pub(crate) struct AccountSlot {
    shared: Arc<Shared>,
    state: Arc<Mutex<SlotState>>,
    in_flight: Arc<Semaphore>,
    unwritten: Unwritten,
    next: Option<BoxFuture<'static, ClaimedJob>>,
    closing: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for AccountSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSlot").finish_non_exhaustive()
    }
}

impl AccountSlot {
    /// A slot of the process described by `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            state: Arc::default(),
            in_flight: Arc::new(Semaphore::new(1)),
            unwritten: Arc::default(),
            next: None,
            closing: None,
        }
    }
}

impl Backend for AccountSlot {
    type Task = Task<ClaimedJob>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        let fut = self.next.get_or_insert_with(|| {
            next_job(
                self.shared.clone(),
                self.state.clone(),
                self.in_flight.clone(),
                self.unwritten.clone(),
            )
            .boxed()
        });
        match fut.poll_unpin(cx) {
            Poll::Ready(job) => {
                self.next = None;
                let id = apalis_core::task::task_id::TaskId::String(job.job.id.to_string());
                let attempt = job.job.attempt.max(0) as usize;
                Poll::Ready(Some(Ok(TaskBuilder::new(job)
                    .task_id(id)
                    .attempt(attempt)
                    .build())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Dropping the pending loop frees the state; then release the lease.
        self.next = None;
        let closing = self.closing.get_or_insert_with(|| {
            let shared = self.shared.clone();
            let state = self.state.clone();
            let in_flight = self.in_flight.clone();
            let unwritten = self.unwritten.clone();
            async move {
                // Wait for the in-flight job's ack (bounded by the monitor's grace).
                let _permit = in_flight.acquire().await;
                let mut state = state.lock().await;
                release(&shared, &mut state, &unwritten).await;
            }
            .boxed()
        });
        closing.poll_unpin(cx).map(Ok)
    }
}

impl BackendConfig for AccountSlot {
    type Args = ClaimedJob;
    type Id = apalis_core::task::task_id::RandomId;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = ();
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        AckLayer {
            shared: self.shared.clone(),
            in_flight: self.in_flight.clone(),
            unwritten: self.unwritten.clone(),
        }
    }
}
