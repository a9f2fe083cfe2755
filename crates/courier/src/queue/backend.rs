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
//!    due sends to the exact instant and claim only other kinds;
//! 4. claim the next job (fenced); for a send, reserve the slot in the send log
//!    (fenced, windows re-checked in SQL) and hand the job to the worker;
//! 5. nothing due: keep the lease if the next job is due within `lease_hold`,
//!    else release it and go back to 2.
//!
//! The [`AckLayer`] is the backend's middleware: it sees every job's result
//! after the user layers (tracing, catch-panic, timeout) and writes completed /
//! retryable / discarded / snoozed, fenced by the epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};
use tracing::Instrument;

use super::handler::{ClaimedJob, HandlerError, Handlers, Outcome};
use super::lease::{HeldLease, LeaseKeeper};
use super::store;
use super::QueueError;
use crate::account::budget::{self, AccountClock, Decision, Limits};
use crate::config::{BudgetSettings, HealthSettings, QueueSettings};

/// What every slot of a worker process shares.
#[derive(Debug)]
pub struct Shared {
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
pub enum Request {
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
pub struct ClaimRequest {
    ask: store::ClaimAsk,
    reply: oneshot::Sender<Result<Option<store::ClaimedRow>, String>>,
}

/// A finished job's outcome, to be written.
#[derive(Debug)]
pub struct AckRequest {
    claimed: ClaimedJob,
    result: Result<Outcome, String>,
    permanent: bool,
    reply: oneshot::Sender<()>,
}

/// Most requests one batched statement serves.
const BATCH_MAX: usize = 512;

/// How many round tasks a process runs (each with its own connection), so
/// one round's statement overlaps with another's. Two beat four, three and
/// one in alternating benchmark runs (docs/queue.md).
pub const ROUND_TASKS: usize = 2;

/// A round task's own connection, taken out of the pool: it runs nothing but
/// the round statement, under a generic plan. Postgres re-plans a prepared
/// statement for every execution while the custom plan looks cheaper, and for
/// the round statement that planning took 1.4 ms of a 4.8 ms execution (50
/// claims); its generic plan runs as fast and is planned once per connection.
/// Like every cached plan it is made again when the statistics of a table it
/// reads change (`ANALYZE`, autovacuum), so it follows the tables as they
/// grow just as a custom plan would. The setting would not suit every
/// statement, so the connection leaves the pool (the pool opens another in
/// its place) and is closed, never returned, after an error.
struct RoundConnection(Option<sqlx::PgConnection>);

impl RoundConnection {
    async fn get(&mut self, pool: &PgPool) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        if self.0.is_none() {
            let mut conn = pool.acquire().await?.detach();
            sqlx::query("SET plan_cache_mode = force_generic_plan")
                .execute(&mut conn)
                .await?;
            self.0 = Some(conn);
        }
        Ok(self.0.as_mut().expect("set above"))
    }
}

/// Serves its share of the accounts in rounds: every request that arrived
/// while the previous round ran forms the next one (natural batching, no
/// delay when idle). A round writes failures and snoozes one by one, then
/// completes every finished job and claims for every waiting slot in one
/// statement ([`store::claim_batch`]). A slot hands its finished job's
/// completion over and asks for its next job at once (it does not wait for
/// the write), so one statement completes the previous job and claims the
/// next: the completion runs first inside it, as the one-running-job-per-
/// account index requires, and the two no longer wait for each other.
pub async fn run_rounds(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stop: CancellationToken,
) {
    let mut conn = RoundConnection(None);
    loop {
        let first = tokio::select! {
            // On shutdown, keep writing outcomes until every slot is gone.
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = stop.cancelled(), if rx.is_empty() => break,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut claims = Vec::new();
        let mut done = Vec::new();
        let mut other = Vec::new();
        for r in batch {
            match r {
                Request::Claim(c) => claims.push(c),
                Request::Ack(a) if matches!(a.result, Ok(Outcome::Completed)) => done.push(*a),
                Request::Ack(a) => other.push(*a),
            }
        }
        for a in other {
            let AckRequest {
                claimed,
                result,
                permanent,
                reply,
            } = a;
            record(&shared, &claimed, result, permanent).await;
            let _ = reply.send(());
        }
        if !claims.is_empty() || !done.is_empty() {
            round(&shared, &mut conn, done, claims).await;
        }
    }
    if let Some(c) = conn.0.take() {
        use sqlx::Connection;
        let _ = c.close().await;
    }
}

/// Completes the round's finished jobs and claims for its waiting slots, in
/// one statement ([`store::claim_batch`]).
async fn round(
    shared: &Shared,
    conn: &mut RoundConnection,
    done: Vec<AckRequest>,
    mut claims: Vec<ClaimRequest>,
) {
    if shared.stop.is_cancelled() {
        // Shutting down: no new claims, but the outcomes are still written.
        for r in claims.drain(..) {
            let _ = r.reply.send(Ok(None));
        }
    }
    let keys: Vec<(uuid::Uuid, uuid::Uuid, i64)> = done
        .iter()
        .map(|a| {
            (
                a.claimed.job.id,
                a.claimed.job.account_id,
                a.claimed.lease.lease.epoch,
            )
        })
        .collect();
    let asks: Vec<store::ClaimAsk> = claims.iter().map(|r| r.ask.clone()).collect();
    let started = Instant::now();
    let result = match conn.get(&shared.pool).await {
        Ok(c) => store::claim_batch(c, &shared.policy, &shared.owner, &keys, &asks).await,
        Err(e) => Err(e.into()),
    };
    if result.is_err() {
        // The connection may be broken: the next round opens another.
        conn.0 = None;
    }
    tracing::trace!(
        completions = keys.len(),
        asks = asks.len(),
        claimed = result.as_ref().map(|r| r.claimed.len()).unwrap_or(0),
        took_us = started.elapsed().as_micros() as u64,
        "round"
    );
    match result {
        Ok(round) => {
            let completed: std::collections::HashSet<uuid::Uuid> =
                round.completed.into_iter().collect();
            for a in done {
                if !completed.contains(&a.claimed.job.id) {
                    fenced(&a.claimed);
                }
                let _ = a.reply.send(());
            }
            let mut by_account: std::collections::HashMap<uuid::Uuid, store::ClaimedRow> = round
                .claimed
                .into_iter()
                .map(|r| (r.job.account_id, r))
                .collect();
            for r in claims {
                let row = by_account.remove(&r.ask.lease.account_id);
                let _ = r.reply.send(Ok(row));
            }
        }
        Err(e) => {
            // Nothing of the statement happened: the slots ask again, and
            // the completions are written one by one (a claim's error must
            // not cost a finished job its outcome).
            let msg = crate::error::chain(&e);
            for r in claims {
                let _ = r.reply.send(Err(msg.clone()));
            }
            if !done.is_empty() {
                tracing::warn!(error = %msg, "batched round failed; writing its completions one by one");
            }
            for a in done {
                record(shared, &a.claimed, Ok(Outcome::Completed), false).await;
                let _ = a.reply.send(());
            }
        }
    }
}

fn fenced(claimed: &ClaimedJob) {
    tracing::warn!(job_id = %claimed.job.id, account_id = %claimed.job.account_id,
        epoch = claimed.lease.lease.epoch,
        "outcome refused: the lease was lost (fenced); the new holder reruns the job");
    claimed.lease.mark_lost();
}

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
            tracing::warn!(account_id = %held.lease.lease.account_id, error = %e,
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

    // 2. Lease an account, or sleep.
    let Some(held) = state.held.as_mut() else {
        let notified = shared.idle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // One slot of the process leases at a time, so concurrent idle slots
        // do not each lease for all free slots (the rest would sit unserved).
        let acquiring = shared.acquiring.lock().await;
        let got = match take_handoff(shared) {
            Some(h) => Some(h),
            None => {
                // Lease for every slot of this process that has no account, in
                // one statement; the others are handed over below.
                let want = shared
                    .queue
                    .capacity
                    .saturating_sub(shared.keeper.len())
                    .clamp(1, LEASE_BATCH);
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
                });
            }
            None => {
                drop(permit);
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
                let n = store::snooze_sends(&shared.pool, &lease, until, &why.to_string()).await?;
                if n > 0 {
                    tracing::debug!(account_id = %lease.account_id, %until, jobs = n, reason = %why, "snoozed sends");
                    metrics::counter!(crate::metrics::JOBS_SNOOZED, "kind" => "send",
                        "reason" => crate::metrics::snooze_reason(&why.to_string()))
                    .increment(n);
                }
                b.snoozed_to = Some(until);
            }
        }
    }

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
pub struct AccountSlot {
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
    pub fn new(shared: Arc<Shared>) -> Self {
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

/// Records each job's outcome (fenced) and frees the slot for the next claim.
#[derive(Debug, Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
    in_flight: Arc<Semaphore>,
    unwritten: Unwritten,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            shared: self.shared.clone(),
            in_flight: self.in_flight.clone(),
            unwritten: self.unwritten.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
    in_flight: Arc<Semaphore>,
    unwritten: Unwritten,
}

impl<S> Service<Task<ClaimedJob>> for AckService<S>
where
    S: Service<Task<ClaimedJob>, Response = Outcome>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let job = task.args.clone();
        let fut = self.inner.call(task);
        let shared = self.shared.clone();
        let in_flight = self.in_flight.clone();
        let unwritten = self.unwritten.clone();
        async move {
            let kind = job.job.kind.clone();
            let waited = (Utc::now() - job.job.run_at).to_std().unwrap_or_default();
            metrics::histogram!(crate::metrics::JOB_WAIT_SECONDS, "kind" => kind.clone())
                .record(waited.as_secs_f64());
            let started = Instant::now();
            let result: Result<Outcome, BoxDynError> = fut.await.map_err(Into::into);
            metrics::histogram!(crate::metrics::JOB_RUN_SECONDS, "kind" => kind.clone())
                .record(started.elapsed().as_secs_f64());
            let permanent = matches!(
                result
                    .as_ref()
                    .err()
                    .and_then(|e| e.downcast_ref::<HandlerError>()),
                Some(HandlerError::Permanent(_))
            );
            match &result {
                Ok(Outcome::Completed) => {
                    metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind, "outcome" => "completed")
                        .increment(1);
                }
                Ok(Outcome::Snooze { reason, .. }) => {
                    metrics::counter!(crate::metrics::JOBS_SNOOZED, "kind" => kind,
                        "reason" => crate::metrics::snooze_reason(reason))
                    .increment(1);
                }
                Err(_) => {
                    let outcome = if permanent || job.job.attempt >= job.job.max_attempts {
                        "discarded"
                    } else {
                        "retried"
                    };
                    metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind, "outcome" => outcome)
                        .increment(1);
                }
            }
            let result = result.map_err(|e| crate::error::chain(&*e));
            let completed = matches!(result, Ok(Outcome::Completed));
            let (reply, written) = oneshot::channel();
            let round = shared.round_for(job.job.account_id).clone();
            let ack = AckRequest {
                claimed: job,
                result,
                permanent,
                reply,
            };
            match round.send(Request::Ack(Box::new(ack))) {
                // A completion is written by the round that also claims the
                // slot's next job (it is queued before that claim); the slot
                // only waits for it before giving the account up. Failures
                // and snoozes are rare: wait until they are written.
                Ok(()) if completed => {
                    *unwritten.lock().expect("unwritten poisoned") = Some(written);
                }
                Ok(()) => {
                    let _ = written.await;
                }
                Err(mpsc::error::SendError(request)) => {
                    if let Request::Ack(ack) = request {
                        record(&shared, &ack.claimed, ack.result, ack.permanent).await;
                    }
                }
            }
            in_flight.add_permits(1);
            Ok(())
        }
        .boxed()
    }
}

async fn record(
    shared: &Shared,
    claimed: &ClaimedJob,
    result: Result<Outcome, String>,
    permanent: bool,
) {
    let lease = &claimed.lease.lease;
    let job = &claimed.job;
    let written = match result {
        Ok(Outcome::Completed) => store::complete(&shared.pool, lease, job.id).await,
        Ok(Outcome::Snooze { until, reason }) => {
            store::snooze(&shared.pool, lease, job.id, until, &reason).await
        }
        Err(message) => {
            let retry_at = if permanent || job.attempt >= job.max_attempts {
                None
            } else {
                let delay = budget::backoff(
                    job.attempt as u32,
                    shared.queue.backoff_base,
                    shared.queue.backoff_max,
                    rand::rng().random_range(0.0..=0.25),
                );
                Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
            };
            tracing::warn!(job_id = %job.id, account_id = %job.account_id, kind = %job.kind,
                attempt = job.attempt, retry_at = ?retry_at, error = %message, "job failed");
            store::fail(&shared.pool, lease, job.id, &message, retry_at).await
        }
    };
    match written {
        Ok(true) => {}
        Ok(false) => fenced(claimed),
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %crate::error::chain(&e),
                "recording the outcome failed; the lease is given up so the job is rescued");
            claimed.lease.mark_lost();
            shared.keeper.forget(lease);
        }
    }
}

/// The service at the bottom of the stack: finds the kind's handler and runs it.
#[derive(Debug, Clone)]
pub struct Dispatch {
    handlers: Arc<Handlers>,
}

impl Dispatch {
    /// Dispatches to `handlers`.
    pub fn new(handlers: Arc<Handlers>) -> Self {
        Self { handlers }
    }
}

impl Service<Task<ClaimedJob>> for Dispatch {
    type Response = Outcome;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<Outcome, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let handlers = self.handlers.clone();
        let job = task.args;
        let span = tracing::info_span!("job", job_id = %job.job.id, account_id = %job.job.account_id,
            kind = %job.job.kind, attempt = job.job.attempt);
        Box::pin(
            async move {
                match handlers.get(&job.job.kind) {
                    None => Err(HandlerError::Permanent(format!(
                        "no handler for job kind `{}` in this worker",
                        job.job.kind
                    ))
                    .into()),
                    Some(h) => h.handle(&job).await.map_err(Into::into),
                }
            }
            .instrument(span),
        )
    }
}
