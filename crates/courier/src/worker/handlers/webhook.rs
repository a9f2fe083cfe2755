//! The `webhook` job: deliver one event to one subscription
//! ([`crate::webhook::deliver`]). It runs on the subscription's queue lane,
//! with no browser: the registry of every worker carries it.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::jobs::webhook::WebhookJob;
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};
use crate::webhook::deliver::{Deliverer, Step};

/// The `webhook` handler.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pool: PgPool,
    deliverer: Arc<Deliverer>,
}

impl Webhook {
    /// Over `pool`, delivering with `deliverer`.
    pub(crate) fn new(pool: PgPool, deliverer: Deliverer) -> Self {
        Self {
            pool,
            deliverer: Arc::new(deliverer),
        }
    }
}

impl JobHandler for Webhook {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let p: WebhookJob = serde_json::from_value(job.job.payload.clone())
                .map_err(|e| HandlerError::Permanent(format!("webhook payload: {e}")))?;
            match crate::webhook::deliver::run(
                &self.pool,
                &self.deliverer,
                p.subscription_id,
                p.position,
                &|| job.lease.is_lost(),
            )
            .await
            {
                Step::Done | Step::Idle => Ok(Outcome::Completed),
                Step::Wait { until, reason } => Ok(Outcome::Snooze { until, reason }),
                Step::Retry(e) => Err(HandlerError::Retryable(e)),
                Step::Dead(e) => Err(HandlerError::Permanent(e)),
            }
        })
    }
}
