//! The worker process: an apalis [`Monitor`] running `queue.capacity` account
//! slots ([`AccountSlot`]), each an apalis worker with tracing, catch-panic and
//! timeout layers; beside them the NOTIFY listener and the lease heartbeat.
//! The worker runs no maintenance of its own: pause expiry, login deadlines
//! and pruning are the maintenance service's (`crate::maintenance`, run by the
//! scheduler leader). A timed pause that has ended never holds a claim back
//! meanwhile: the claim reads `paused_until` itself.
//!
//! Shutdown (SIGTERM / Ctrl-C, or the future given to [`Runtime::run_until`]):
//! slots stop leasing and claiming, in-flight jobs get `queue.shutdown_grace`
//! to finish, leases are released, and `run_until` returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::layers::tracing::TraceLayer;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::backend::{AccountSlot, Dispatch, Shared};
use super::handler::Handlers;
use super::lease::LeaseKeeper;
use super::{store, QueueError};
use crate::config::Settings;

/// A worker process's queue runtime.
#[derive(Debug)]
pub struct Runtime {
    shared: Arc<Shared>,
    handlers: Arc<Handlers>,
    rounds: Vec<mpsc::UnboundedReceiver<super::backend::Request>>,
}

/// Errors running the worker.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A queue statement failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The apalis monitor reported worker errors.
    #[error("worker monitor: {0}")]
    Monitor(String),
}

impl Runtime {
    /// A runtime over `pool` with the process's settings and handlers. The
    /// lease owner id is `<hostname>:<pid>:<random>`.
    pub fn new(pool: PgPool, settings: &Settings, handlers: Handlers) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let owner: Arc<str> = format!(
            "{host}:{}:{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
        .into();
        let keeper = LeaseKeeper::new(pool.clone(), owner.clone(), settings.queue.lease_ttl);
        let readiness = handlers.readiness();
        let mut queue = settings.queue.clone();
        if let Some(max) = readiness.as_ref().map(|r| r.max_accounts().max(1)) {
            // A worker leases no more accounts than it can open browsers for,
            // so the rest stay free for other workers.
            if queue.capacity > max {
                tracing::info!(
                    capacity = queue.capacity,
                    max_open = max,
                    "queue.capacity lowered to browser.max_open: a worker leases no more accounts than it can open"
                );
                queue.capacity = max;
            }
        }
        let (rounds_tx, rounds): (Vec<_>, Vec<_>) = (0..super::backend::ROUND_TASKS)
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        Self {
            rounds,
            shared: Arc::new(Shared {
                pool,
                owner,
                keeper,
                queue,
                budget: settings.budget.clone(),
                health: settings.health.clone(),
                idle: Notify::new(),
                wakeup: Notify::new(),
                stop: CancellationToken::new(),
                handoff: Default::default(),
                acquiring: Default::default(),
                policy: handlers.policy(),
                readiness,
                rounds: rounds_tx,
            }),
            handlers: Arc::new(handlers),
        }
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RuntimeError> {
        let shared = self.shared.clone();
        let background = CancellationToken::new();
        let mut tasks = vec![
            tokio::spawn(listen(shared.clone(), background.clone())),
            tokio::spawn(
                shared
                    .keeper
                    .clone()
                    .run(shared.queue.heartbeat_interval, background.clone()),
            ),
        ];
        for rx in self.rounds {
            tasks.push(tokio::spawn(super::backend::run_rounds(
                shared.clone(),
                rx,
                background.clone(),
            )));
        }
        tracing::info!(owner = %shared.owner, capacity = shared.queue.capacity, "queue worker started");

        let handlers = self.handlers.clone();
        let slot_shared = shared.clone();
        let timeout = shared.queue.job_timeout;
        let monitor = Monitor::new()
            .register_n(shared.queue.capacity, move |index, _restarts| {
                WorkerBuilder::new(format!("{}#{index}", slot_shared.owner))
                    .backend(AccountSlot::new(slot_shared.clone()))
                    // Outermost first: the timeout wraps the trace (as apalis
                    // asks, so a timeout shows in the span), the panic catcher
                    // sits closest to the handler.
                    .layer(tower::timeout::TimeoutLayer::new(timeout))
                    .layer(TraceLayer::new())
                    .layer(CatchPanicLayer::new())
                    .build(Dispatch::new(handlers.clone()))
            })
            .shutdown_timeout(shared.queue.shutdown_grace);
        let stop = shared.stop.clone();
        let result = monitor
            .run_with_signal(async move {
                signal.await;
                tracing::info!("shutting down: no new claims; waiting for in-flight jobs");
                stop.cancel();
                Ok(())
            })
            .await;
        shared.stop.cancel();
        background.cancel();
        for t in tasks {
            let _ = t.await;
        }
        let released = store::release_all(&shared.pool, &shared.owner).await?;
        tracing::info!(released, "queue worker stopped; leases released");
        result.map_err(|e| RuntimeError::Monitor(e.to_string()))
    }
}

/// LISTEN courier_jobs: wake one idle slot and every lease holder per notification.
async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(&shared.pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "LISTEN connection failed; polling until it is back");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen("courier_jobs").await {
            tracing::warn!(error = %crate::error::chain(&e), "LISTEN failed");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => {
                        shared.idle.notify_one();
                        shared.wakeup.notify_waiters();
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error::chain(&e), "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
