//! The `logout` job: unlink an account's device after an operator's
//! disconnect (`POST /v1/accounts/{id}/logout`, the seed's `disconnect`).
//!
//! 1. If the account logged in again since the disconnect, nothing is done
//!    (the new link is not undone).
//! 2. The account's browser session (the worker's open one, or one opened on
//!    its profile) is asked to log out through WhatsApp Web's own logout, as
//!    whatsapp-web.js does: the phone's linked-devices list drops it. The
//!    screen is then checked to show a QR (or the logged-out page).
//! 3. The session is closed and the profile directory deleted; the stored
//!    snapshot and profile path are cleared. The account stays
//!    `disconnected`, and its next login shows a QR.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::{retry, Context};
use crate::browser::page::PageError;
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};

/// The `logout` handler.
#[derive(Debug, Clone)]
pub(crate) struct Logout(pub Arc<Context>);

/// How long the page may take to show the QR after the logout.
const UNLINK_WITHIN: Duration = Duration::from_secs(15);

impl Logout {
    async fn unlink(&self, job: &ClaimedJob) -> Result<Outcome, HandlerError> {
        let lease = &job.lease.lease;
        let account = lease.account_id;
        let db = self.0.pool.db();
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM mkt_wap_accounts WHERE id = $1")
                .bind(account)
                .fetch_optional(db)
                .await
                .map_err(retry)?;
        if !matches!(
            status.as_deref(),
            Some("disconnected" | "logged_out" | "banned" | "failed" | "inactive")
        ) {
            tracing::info!(%account, status = ?status, "logged in again since the disconnect; nothing to unlink");
            return Ok(Outcome::Completed);
        }
        let session = self.0.pool.session(lease).await.map_err(retry)?;
        let within = self.0.pool.settings().starting_deadline;
        let linked = match session.wait_ready(within).await {
            Ok(_) => true,
            // A QR or the logged-out page: this profile holds no link.
            Err(PageError::LoggedOut) => false,
            Err(e) => {
                drop(session);
                return Err(retry(e));
            }
        };
        if linked {
            if let Err(e) = session.logout().await {
                // The page may reload as the logout settles: judged by the screen.
                tracing::debug!(%account, error = %crate::error::chain(&e), "the logout call ended with an error");
            }
            let started = Instant::now();
            loop {
                match session.view().await {
                    Ok(v) if v.logged_out || v.qr.is_some() || v.qr_exhausted => break,
                    _ if started.elapsed() >= UNLINK_WITHIN => {
                        drop(session);
                        return Err(HandlerError::Retryable(format!(
                            "WhatsApp Web did not show the QR within {UNLINK_WITHIN:?} of the logout"
                        )));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tracing::info!(%account, "logged out in WhatsApp Web: the device is unlinked");
        }
        drop(session);
        self.0.pool.delete_profile(account).await.map_err(retry)?;
        crate::account::session::forget(db, account)
            .await
            .map_err(retry)?;
        Ok(Outcome::Completed)
    }
}

impl JobHandler for Logout {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(self.unlink(job))
    }
}
