//! The `health_check` job: verify the account's session (a QR means it was
//! logged out; ban and conflict screens are recorded), then run the ack
//! tracking step ([`crate::worker::acks::catch_up`]) and schedule the next
//! look while messages still wait for acks (they arrive minutes or hours
//! after the last send, even when no send comes).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Context;
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};
use crate::worker::drive::Mode;

/// The `health_check` handler.
#[derive(Debug, Clone)]
pub(crate) struct HealthCheck(pub Arc<Context>);

impl JobHandler for HealthCheck {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let ctx = &self.0;
            let end = ctx.driver.drive(job, Mode::Check).await?;
            tracing::info!(account_id = %job.job.account_id, state = %end, "health check finished");
            let lease = &job.lease.lease;
            if job.lease.is_lost() {
                return Ok(Outcome::Completed);
            }
            let mut again = None;
            if let Ok(session) = ctx.pool.session(lease).await {
                if session.ensure_ready().await.is_ok() {
                    match crate::worker::acks::catch_up(ctx, &session, lease.account_id).await {
                        Ok(next) => again = next,
                        Err(e) => {
                            tracing::warn!(account_id = %lease.account_id, error = %crate::error::chain(&e), "ack catch-up failed");
                            again = Some(ctx.settings.ack_followup);
                        }
                    }
                }
            }
            if let Some(after) = again {
                if let Err(e) =
                    crate::worker::schedule_health_check(ctx.pool.db(), lease.account_id, after)
                        .await
                {
                    tracing::warn!(error = %crate::error::chain(&e), "scheduling the next ack look failed");
                }
            }
            Ok(Outcome::Completed)
        })
    }
}
