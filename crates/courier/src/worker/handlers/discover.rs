//! The `discover` job: read the account's chat list and each group's member
//! count from its info drawer, and record them ([`crate::directory::save_discovered`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::{retry, Context};
use crate::browser::page::PageError;
use crate::browser::SessionGuard;
use crate::directory::{self, DiscoveredGroup};
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};

/// The `discover` handler.
#[derive(Debug, Clone)]
pub(crate) struct Discover(pub Arc<Context>);

/// Reads the member count a group's info drawer shows (without scrolling).
async fn member_count(page: &SessionGuard, group: &str) -> Result<Option<i32>, PageError> {
    page.open_chat(group).await?;
    let s = page.selectors().clone();
    let title = page
        .wait_for("conversation.header_title", &s.conversation.header_title)
        .await?;
    title.click().await.map_err(PageError::from)?;
    page.wait_for("group_info.list", &s.group_info.list).await?;
    let started = std::time::Instant::now();
    let mut count = None;
    while started.elapsed() < Duration::from_secs(3) {
        let v = page
            .client()
            .execute(
                "const c = document.querySelector(arguments[0]); \
                 const m = c ? c.innerText.match(/(\\d+)/) : null; return m ? parseInt(m[1], 10) : null;",
                vec![json!(s.group_info.member_count)],
            )
            .await
            .map_err(PageError::from)?;
        if let Some(n) = v.as_i64() {
            count = Some(n as i32);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let close = page
        .wait_for("group_info.close_button", &s.group_info.close_button)
        .await?;
    close.click().await.map_err(PageError::from)?;
    Ok(count)
}

impl JobHandler for Discover {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let lease = &job.lease.lease;
            let session = self.0.ready_session(lease).await?;
            let chats = session.chat_list().await.map_err(retry)?;
            let mut found = Vec::new();
            for c in chats.into_iter().filter(|c| c.id.ends_with("@g.us")) {
                let member_count = member_count(&session, &c.id).await.map_err(retry)?;
                found.push(DiscoveredGroup {
                    wa_id: c.id,
                    name: c.name,
                    member_count,
                });
            }
            drop(session);
            let ids = directory::save_discovered(self.0.pool.db(), lease.account_id, &found)
                .await
                .map_err(retry)?;
            tracing::info!(account_id = %lease.account_id, groups = ids.len(), "groups discovered");
            Ok(Outcome::Completed)
        })
    }
}
