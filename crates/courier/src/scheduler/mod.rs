//! The scheduler: turns due `mkt_con_schedule` rows into send jobs, exactly
//! once per target and occurrence, keeps work on accounts that can send it,
//! and runs periodic maintenance.
//!
//! How it fits the flow: the campaign system writes schedule rows; the leader
//! ([`leader`]) of all `courier scheduler` / `courier run` processes ticks every
//! `scheduler.tick`:
//! 0. [`campaign`]: `mkt_campaigns.status` obeyed: a paused or cancelled
//!    campaign's sends are held (parked, with the reason), and released when
//!    it resumes.
//! 1. [`expand`]: every due row is parsed ([`schedule`]), its occurrences
//!    decided ([`occurrence`], catch-up policy), its targets resolved
//!    ([`targets`]), each recipient given an account ([`assign`]), and the
//!    messages, events, send jobs, contact preferences and the row's new
//!    status committed in one transaction ([`crate::message::create_batch_in`]
//!    for explicit targets, [`segment`] for a contact segment, on the server).
//! 2. Cancelled schedules lose their not-started work
//!    ([`crate::maintenance::reassign::withdraw_cancelled`]).
//! 3. [`crate::maintenance`], the one maintenance service: health checks,
//!    rediscovery, the retry sweeper, pause expiry and login deadlines,
//!    pruning, reassignment — each on its own interval.
//!
//! See `docs/scheduler.md` for the guarantees and the rules.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool, settings: courier::config::Settings) {
//! let scheduler = courier::scheduler::Scheduler::new(pool, &settings);
//! scheduler.run_until(courier::shutdown::signal()).await.unwrap();
//! # }
//! ```

pub(crate) mod assign;
pub mod campaign;
pub mod expand;
pub mod leader;
pub mod manage;
pub mod occurrence;
pub mod schedule;
pub(crate) mod segment;
pub(crate) mod targets;

use std::future::Future;

use sqlx::PgPool;

use crate::config::Settings;
use crate::metrics::{SCHEDULER_LAG_SECONDS, SCHEDULER_LEADER};

pub use expand::{Expansion, Outcome};

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A query failed.
    #[error("scheduler query")]
    Db(#[from] sqlx::Error),
    /// Writing messages or jobs failed.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// A maintenance step of the tick failed.
    #[error(transparent)]
    Maintenance(#[from] crate::maintenance::MaintenanceError),
}

/// How often the leader samples the database-derived gauges.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// Campaigns held and released, jobs parked and freed.
    pub holds: campaign::Holds,
    /// Schedule rows handled.
    pub expansions: Vec<Expansion>,
    /// Messages of cancelled schedules withdrawn.
    pub withdrawn: usize,
    /// Maintenance tasks run, with their one-line results.
    pub maintenance: Vec<(crate::maintenance::Task, String)>,
    /// Lag after the tick, seconds.
    pub lag_seconds: f64,
}

/// The scheduler role.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pool: PgPool,
    settings: Settings,
}

impl Scheduler {
    /// A scheduler over `pool` with the process's settings.
    pub fn new(pool: PgPool, settings: &Settings) -> Self {
        Self {
            pool,
            settings: settings.clone(),
        }
    }

    /// Expands every due schedule (one transaction each) until none is due.
    /// Safe to run from several processes at once (rows are locked and moved
    /// on in the same transaction); the leader election just avoids the waste.
    pub async fn expand_due(&self) -> Result<Vec<Expansion>, SchedulerError> {
        let mut out = Vec::new();
        while let Some(e) = expand::expand_next(&self.pool, &self.settings).await? {
            out.push(e);
        }
        Ok(out)
    }

    /// One pass: expansions, withdrawals, due maintenance, the lag gauge.
    pub async fn tick(&self) -> Result<TickReport, SchedulerError> {
        let holds = campaign::apply(&self.pool).await?;
        let expansions = self.expand_due().await?;
        let withdrawn = crate::maintenance::reassign::withdraw_cancelled(&self.pool).await?;
        let maintenance = crate::maintenance::run_due(&self.pool, &self.settings).await;
        let lag_seconds = expand::lag_seconds(&self.pool).await?;
        metrics::gauge!(SCHEDULER_LAG_SECONDS).set(lag_seconds);
        Ok(TickReport {
            holds,
            expansions,
            withdrawn,
            maintenance,
            lag_seconds,
        })
    }

    /// Competes for leadership and, while leader, ticks every
    /// `scheduler.tick`, until `signal` resolves; then releases the lock.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        let s = &self.settings.scheduler;
        tokio::pin!(signal);
        tracing::info!(tick = ?s.tick, "scheduler started; competing for leadership");
        loop {
            let lock = match leader::Leadership::try_acquire(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), "leader election failed; retrying");
                    None
                }
            };
            let Some(mut lock) = lock else {
                tokio::select! {
                    _ = &mut signal => break,
                    _ = tokio::time::sleep(s.leader_retry) => continue,
                }
            };
            tracing::info!("scheduler leader elected: this process");
            metrics::gauge!(SCHEDULER_LEADER).set(1.0);
            // The database-derived gauges (queue depth, accounts and messages
            // by status, budgets) come from one process: the leader. Every API
            // replica publishing them would multiply them in any sum.
            let sampler = tokio::spawn(crate::metrics::sample_forever(
                self.pool.clone(),
                crate::metrics::SampleOptions::from_settings(&self.settings),
                SAMPLE_EVERY,
            ));
            let stopped = loop {
                match lock.check().await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        tracing::warn!("scheduler leadership lost (lock connection gone)");
                        break false;
                    }
                }
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %crate::error::chain(&e), "scheduler tick failed");
                }
                tokio::select! {
                    _ = &mut signal => break true,
                    _ = tokio::time::sleep(s.tick) => {}
                }
            };
            sampler.abort();
            crate::metrics::clear_sampled();
            metrics::gauge!(SCHEDULER_LEADER).set(0.0);
            if stopped {
                lock.release().await;
                break;
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }
}
