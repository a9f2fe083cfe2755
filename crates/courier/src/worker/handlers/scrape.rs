//! The `scrape` job: read a group's participants from the account's page and
//! record them as contacts and memberships ([`crate::directory::save_members`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::{retry, Context};
use crate::browser::page::PageError;
use crate::directory;
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};

/// The `scrape` handler.
#[derive(Debug, Clone)]
pub(crate) struct Scrape(pub Arc<Context>);

impl JobHandler for Scrape {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let lease = &job.lease.lease;
            let group: Uuid = job.job.payload["group_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HandlerError::Permanent("payload has no group_id".into()))?;
            let db = self.0.pool.db();
            let wa_group = directory::group_wa_id(db, group)
                .await
                .map_err(retry)?
                .ok_or_else(|| HandlerError::Permanent(format!("group {group} does not exist")))?;
            let session = self.0.ready_session(lease).await?;
            let people = match session.participants(&wa_group).await {
                Ok(p) => p,
                Err(PageError::NoSuchChat(c)) => {
                    return Err(HandlerError::Permanent(format!(
                        "the account is not in group {c}"
                    )))
                }
                Err(e) => return Err(retry(e)),
            };
            drop(session);
            let stored = directory::save_members(db, group, &people)
                .await
                .map_err(retry)?;
            tracing::info!(account_id = %lease.account_id, %group, members = stored, "group scraped");
            Ok(Outcome::Completed)
        })
    }
}
