//! The ack layer (records each job's outcome, fenced by the lease epoch) and
//! the dispatch service that runs the job's handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::account::budget;
use crate::queue::handler::{ClaimedJob, HandlerError, Handlers, Outcome};
use crate::queue::store;

use super::*;

/// Records each job's outcome (fenced) and frees the slot for the next claim.
#[derive(Debug, Clone)]
pub(crate) struct AckLayer {
    pub(super) shared: Arc<Shared>,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) unwritten: Unwritten,
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
pub(crate) struct AckService<S> {
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

pub(super) async fn record(
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
pub(crate) struct Dispatch {
    handlers: Arc<Handlers>,
}

impl Dispatch {
    /// Dispatches to `handlers`.
    pub(crate) fn new(handlers: Arc<Handlers>) -> Self {
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
