//! Many accounts per worker: the worker's side of browser hibernation.
//!
//! - [`Hibernation`], the pool's idle policy: a session no job used for
//!   `browser.idle_close_after` closes when its account has no job running or
//!   due within `queue.lease_hold` and no message sent within
//!   `delivery.ack_followup` still waiting for its delivery ack. The login
//!   stays in the profile (and the snapshot).
//! - [`BrowserReadiness`], the queue's readiness: due work of an account whose
//!   session is closed reopens it before the claim, so the wait spends no
//!   attempt, no send slot and none of `queue.job_timeout`; a reopened
//!   session's acks are caught up at once ([`super::acks::catch_up`], from
//!   the message models), so what arrived while it was closed is recorded.
//!   A browser that cannot be opened (a grid at capacity, chromedriver down)
//!   makes the account's jobs wait `browser.unavailable_retry` with the
//!   reason "no browser available: …" ([`NotReady::Unavailable`]).
//!   It also caps the worker's leases at `browser.max_open`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use uuid::Uuid;

use super::handlers::Context;
use crate::browser::{BrowserError, IdlePolicy};
use crate::queue::handler::{NotReady, Readiness};
use crate::queue::Lease;

/// The pool's idle policy (see the module docs).
#[derive(Debug)]
pub(crate) struct Hibernation {
    pub(crate) db: sqlx::PgPool,
    /// `queue.lease_hold`: work due this soon keeps the browser.
    pub(crate) work_within: Duration,
    /// `delivery.ack_followup`: a send this recent keeps the browser.
    pub(crate) acks_within: Duration,
}

impl IdlePolicy for Hibernation {
    fn closable<'a>(&'a self, idle: &'a [Uuid]) -> BoxFuture<'a, Vec<Uuid>> {
        Box::pin(async move {
            let busy =
                crate::queue::store::accounts_with_work_within(&self.db, idle, self.work_within)
                    .await;
            let acks =
                crate::message::status::accounts_expecting_acks(&self.db, idle, self.acks_within)
                    .await;
            match (busy, acks) {
                (Ok(busy), Ok(acks)) => {
                    let keep: HashSet<Uuid> = busy.into_iter().chain(acks).collect();
                    idle.iter().copied().filter(|a| !keep.contains(a)).collect()
                }
                (Err(e), _) => {
                    tracing::debug!(error = %crate::error::chain(&e), "hibernation check failed; keeping the sessions");
                    Vec::new()
                }
                (_, Err(e)) => {
                    tracing::debug!(error = %crate::error::chain(&e), "hibernation check failed; keeping the sessions");
                    Vec::new()
                }
            }
        })
    }
}

/// Waits until the page is ready (true) or shows what the job must handle:
/// a QR, a ban, a conflict, an unknown build (false), or `within` passes.
/// Errors while the page loads (its bridge not there yet) are waited out.
async fn settled(session: &crate::browser::SessionGuard, within: Duration) -> bool {
    use crate::browser::PageError;
    let started = Instant::now();
    loop {
        match session.ensure_ready().await {
            Ok(_) => return true,
            Err(
                PageError::LoggedOut
                | PageError::Blocked
                | PageError::Conflict
                | PageError::Unsupported(_),
            ) => return false,
            Err(_) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(_) => return false,
        }
    }
}

/// The waiting reason of jobs whose account gets no browser: starts with
/// [`NO_BROWSER`], then a short cause. The WebDriver endpoint is not named
/// (its URL may carry credentials; the log has it).
fn no_browser_reason(e: &BrowserError) -> String {
    /// Longest cause shown (the job row's reason is read by people).
    const MAX_CAUSE: usize = 160;
    let cause = match e {
        BrowserError::Driver(crate::browser::DriverError::Session { source, .. }) => format!(
            "the WebDriver endpoint opened no new session: {}",
            crate::error::chain(source)
        ),
        BrowserError::Driver(crate::browser::DriverError::SessionTimeout { waited, .. }) => {
            format!("the WebDriver endpoint opened no new session within {waited:?}")
        }
        other => crate::error::chain(other),
    };
    let mut cause = cause.trim().to_string();
    if cause.len() > MAX_CAUSE {
        let mut end = MAX_CAUSE;
        while !cause.is_char_boundary(end) {
            end -= 1;
        }
        cause.truncate(end);
        cause.push('…');
    }
    format!("{NO_BROWSER}: {cause}")
}

/// How the waiting reason of jobs that wait for a browser begins.
pub(crate) const NO_BROWSER: &str = "no browser available";

/// The queue's readiness for browser work (see the module docs).
#[derive(Debug)]
pub(crate) struct BrowserReadiness {
    pub(crate) ctx: Arc<Context>,
    /// Lease keys that are queue lanes, not accounts: they need no browser.
    pub(crate) lanes: Mutex<HashSet<Uuid>>,
    /// `browser.max_starting` permits: browsers starting at once.
    pub(crate) starting: Arc<tokio::sync::Semaphore>,
}

impl Readiness for BrowserReadiness {
    fn is_ready(&self, account: Uuid) -> bool {
        self.ctx.pool.is_open(account) || self.lanes.lock().expect("lanes").contains(&account)
    }

    fn prepare<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), NotReady>> {
        Box::pin(async move {
            let account = lease.account_id;
            let started = Instant::now();
            let is_account: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mkt_wap_accounts WHERE id = $1)")
                    .bind(account)
                    .fetch_one(self.ctx.pool.db())
                    .await
                    .map_err(|e| NotReady::Failed(crate::error::chain(&e)))?;
            if !is_account {
                self.lanes.lock().expect("lanes").insert(account);
                return Ok(());
            }
            let session = match self.ctx.pool.session(lease).await {
                Ok(s) => s,
                // No browser could start (chromedriver down, a grid at
                // capacity): not the job's failure, and no attempt or
                // health of its; its jobs wait `browser.unavailable_retry`.
                Err(e @ BrowserError::Driver(_)) => {
                    return Err(NotReady::Unavailable {
                        reason: no_browser_reason(&e),
                        retry_after: self.ctx.pool.settings().unavailable_retry,
                    })
                }
                // This process is stopping: another worker may take the
                // account at once, its jobs need not wait.
                Err(e @ BrowserError::ShutDown) => {
                    return Err(NotReady::Failed(crate::error::chain(&e)))
                }
                // Anything else (a snapshot under the wrong key, a profile
                // that cannot be written) is the job's to report: its
                // handler meets the same error and records it.
                Err(e) => {
                    tracing::debug!(account_id = %account, error = %crate::error::chain(&e),
                        "opening the session failed; the job reports it");
                    return Ok(());
                }
            };
            // The page's state (ready, a QR, a fault screen) is the job's
            // business; only a browser that cannot start is this step's.
            let ready = settled(&session, self.ctx.pool.settings().starting_deadline).await;
            if session.is_reopen() {
                metrics::histogram!(crate::metrics::BROWSER_REOPEN_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(account_id = %account, ready, ms = started.elapsed().as_millis() as u64,
                    "reopened a hibernated browser session");
            }
            if ready && session.is_fresh() {
                // Acks may have arrived while it was closed: read them from
                // the message models now, before the claim (a catch-up job
                // instead would take the account's next turn, and under
                // `browser.max_open` pressure every turn would begin with one).
                if let Err(e) = super::acks::catch_up(&self.ctx, &session, account).await {
                    tracing::warn!(account_id = %account, error = %crate::error::chain(&e),
                        "ack catch-up after reopening failed");
                }
            }
            Ok(())
        })
    }

    fn max_accounts(&self) -> usize {
        self.ctx.pool.settings().max_open
    }

    fn start_gate(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        Some(self.starting.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::DriverError;
    use fantoccini::error::{ErrorStatus, NewSessionError, WebDriver};

    #[test]
    fn a_grid_at_capacity_reads_no_browser_available_short_and_without_the_endpoint() {
        let grid = "http://user:hunter2@grid.internal:4444/wd/hub";
        let e = BrowserError::Driver(DriverError::Session {
            url: grid.into(),
            source: NewSessionError::SessionNotCreated(WebDriver::new(
                ErrorStatus::SessionNotCreated,
                format!(
                    "Could not start a new session. New session request timed out {}",
                    "é".repeat(300)
                ),
            )),
        });
        let reason = no_browser_reason(&e);
        assert!(reason.starts_with("no browser available: "), "{reason}");
        assert!(reason.contains("Could not start a new session"), "{reason}");
        assert!(
            !reason.contains("hunter2") && !reason.contains("grid.internal"),
            "{reason}"
        );
        assert!(
            reason.chars().count() <= NO_BROWSER.len() + 2 + 160 + 1,
            "{reason}"
        );
        assert_eq!(crate::metrics::snooze_reason(&reason), "no_browser");
        let held = BrowserError::Driver(DriverError::SessionTimeout {
            url: grid.into(),
            waited: std::time::Duration::from_secs(60),
        });
        let reason = no_browser_reason(&held);
        assert_eq!(
            reason,
            "no browser available: the WebDriver endpoint opened no new session within 60s"
        );
    }
}
