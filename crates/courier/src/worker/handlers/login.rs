//! The `login` job: drive the account's page through the QR flow until it is
//! ready, failed or out of time ([`crate::worker::drive`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Context;
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};
use crate::worker::drive::Mode;

/// The `login` handler.
#[derive(Debug, Clone)]
pub(crate) struct Login(pub Arc<Context>);

impl JobHandler for Login {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let end = self.0.driver.drive(job, Mode::Login).await?;
            tracing::info!(account_id = %job.job.account_id, state = %end, "login drive finished");
            Ok(Outcome::Completed)
        })
    }
}
