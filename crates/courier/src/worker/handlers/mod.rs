//! One handler per job kind. Each is a thin type over the shared [`Context`]
//! and does its one job; what two of them share lives beside them
//! ([`super::drive`], [`super::acks`]).

pub(crate) mod discover;
pub(crate) mod health_check;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod scrape;
pub(crate) mod send;
pub(crate) mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::drive::PageDriver;
use crate::account::health::{self, HealthEvent};
use crate::browser::page::PageError;
use crate::browser::{BrowserPool, SessionGuard};
use crate::config::{DeliverySettings, HealthSettings, Settings};
use crate::queue::handler::HandlerError;
use crate::queue::Lease;

/// What the browser handlers share: the sessions, the settings they read,
/// and the page driver.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) pool: Arc<BrowserPool>,
    pub(crate) settings: DeliverySettings,
    pub(crate) health: HealthSettings,
    pub(crate) media_dir: PathBuf,
    pub(crate) media_max_bytes: u64,
    pub(crate) driver: PageDriver,
    /// Whether numbers are on WhatsApp, per worker, for `delivery.exists_ttl`.
    pub(crate) exists: super::exists::ExistsCache,
}

impl Context {
    /// The context of a worker's handlers.
    pub(crate) fn new(pool: Arc<BrowserPool>, settings: &Settings) -> Self {
        Self {
            driver: PageDriver::new(
                pool.clone(),
                settings.health.clone(),
                settings.queue.job_timeout,
            ),
            pool,
            settings: settings.delivery.clone(),
            health: settings.health.clone(),
            media_dir: settings.browser.media_dir.clone(),
            media_max_bytes: settings.browser.media_max_bytes,
            exists: super::exists::ExistsCache::new(settings.delivery.exists_ttl),
        }
    }

    /// Records a health event for the account; a failure is logged, never
    /// fails the job (the score is a signal, the job's outcome is not).
    pub(crate) async fn health(&self, account: Uuid, ev: HealthEvent) {
        if let Err(e) = health::record(self.pool.db(), account, ev, &self.health).await {
            tracing::warn!(%account, error = %crate::error::chain(&e), "recording a health event failed");
        }
    }

    /// The account's session, ready on the main screen. A session that was
    /// just opened (the account's session came back) gets a `health_check`
    /// job at once, whose ack catch-up ([`super::acks::catch_up`]) finds what
    /// arrived meanwhile.
    pub(crate) async fn ready_session(&self, lease: &Lease) -> Result<SessionGuard, HandlerError> {
        let session = match self.pool.session(lease).await {
            Ok(s) => s,
            Err(e) => return Err(retry(e)),
        };
        let within = self.pool.settings().starting_deadline;
        match session.wait_ready(within).await {
            Ok(_) => {}
            Err(
                e @ (PageError::LoggedOut
                | PageError::Blocked
                | PageError::Conflict
                | PageError::Unsupported(_)),
            ) => {
                // The health check records the status (and the health hit),
                // which stops this account's sends at the claim.
                let _ =
                    super::schedule_health_check(self.pool.db(), lease.account_id, Duration::ZERO)
                        .await;
                return Err(retry(e));
            }
            Err(e) => return Err(retry(e)),
        }
        if session.is_fresh() {
            // The session came back: acks may have arrived meanwhile. The
            // catch-up is the health check's step, enqueued now, not this
            // job's (a send only sends).
            if let Err(e) =
                super::schedule_health_check(self.pool.db(), lease.account_id, Duration::ZERO).await
            {
                tracing::warn!(account_id = %lease.account_id, error = %crate::error::chain(&e),
                    "scheduling the ack catch-up failed");
            }
        }
        Ok(session)
    }
}

/// A failure worth another attempt, with its whole cause chain as the reason.
pub(crate) fn retry(e: impl std::error::Error + 'static) -> HandlerError {
    HandlerError::Retryable(crate::error::chain(&e))
}
