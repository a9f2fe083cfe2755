//! The `discover` job: read the account's groups and their member counts
//! from WhatsApp Web's modules (each group's metadata refreshed), and record
//! them ([`crate::directory::save_discovered`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{retry, Context};
use crate::directory::{self, DiscoveredGroup};
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};

/// The `discover` handler.
#[derive(Debug, Clone)]
pub(crate) struct Discover(pub Arc<Context>);

impl JobHandler for Discover {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let lease = &job.lease.lease;
            let session = self.0.ready_session(lease).await?;
            let groups = session.groups().await.map_err(retry)?;
            drop(session);
            let found: Vec<DiscoveredGroup> = groups
                .into_iter()
                .map(|g| DiscoveredGroup {
                    wa_id: g.id,
                    name: g.name,
                    member_count: i32::try_from(g.members).ok(),
                })
                .collect();
            let ids = directory::save_discovered(self.0.pool.db(), lease.account_id, &found)
                .await
                .map_err(retry)?;
            tracing::info!(account_id = %lease.account_id, groups = ids.len(), "groups discovered");
            Ok(Outcome::Completed)
        })
    }
}
