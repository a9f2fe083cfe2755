//! Driving an account's page through the login lifecycle: the shared step of
//! the `login` and `health_check` handlers.
//!
//! [`PageDriver::drive`] feeds the [`LoginMachine`] what the page shows until
//! it reaches a final state, writing every transition (status, reason,
//! deadline) to the account row, fenced by the lease. The two modes differ in
//! what a QR means: for a login it is the next step; for a health check it
//! means the saved session is gone (logged out). A browser crash is retried on
//! a fresh session and never counted against the account's health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::account::health::{self, HealthEvent};
use crate::account::login::{
    self, Action, Deadlines, LoginMachine, LoginState, PageView, Transition,
};
use crate::browser::{BrowserError, BrowserPool, PageError, SessionGuard};
use crate::config::HealthSettings;
use crate::queue::handler::{ClaimedJob, HandlerError};
use crate::queue::Lease;

/// What a drive of the page is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Log in: a QR is expected and stored.
    Login,
    /// Verify a session that should exist: a QR means logged out.
    Check,
}

/// Drives pages for the login and health-check handlers.
#[derive(Debug, Clone)]
pub(crate) struct PageDriver {
    pool: Arc<BrowserPool>,
    health: HealthSettings,
    /// A page drive ends before the queue's job timeout would cut it off.
    run_cap: Duration,
}

fn retry(e: impl std::error::Error + 'static) -> HandlerError {
    HandlerError::Retryable(crate::error::chain(&e))
}

impl PageDriver {
    /// A driver over `pool`.
    pub(crate) fn new(
        pool: Arc<BrowserPool>,
        health: HealthSettings,
        job_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            health,
            run_cap: job_timeout.saturating_sub(Duration::from_secs(5)),
        }
    }

    fn deadlines(&self) -> Deadlines {
        let s = self.pool.settings();
        Deadlines {
            starting: s.starting_deadline,
            qr: s.qr_deadline,
            authenticating: s.authenticating_deadline,
        }
    }

    async fn apply(&self, lease: &Lease, t: &Transition, mode: Mode) -> Result<(), HandlerError> {
        let db = self.pool.db();
        metrics::counter!(crate::metrics::LOGIN_TRANSITIONS,
            "from" => t.from.status(), "to" => t.to.status())
        .increment(1);
        tracing::info!(account_id = %lease.account_id, from = %t.from, to = %t.to, reason = %t.reason,
            ?mode, "login transition");
        if t.to == LoginState::Ready {
            return Ok(()); // written by write_ready with the phone
        }
        // Health first: a health pause must not overwrite the fault status.
        let event = match t.to {
            LoginState::Blocked => Some(HealthEvent::Blocked),
            LoginState::LoggedOut => Some(HealthEvent::LoggedOut),
            _ => None,
        };
        if let Some(ev) = event {
            health::record(db, lease.account_id, ev, &self.health)
                .await
                .map_err(retry)?;
        }
        let written = login::write_status(db, lease, t.to, &t.reason, self.deadlines().of(t.to))
            .await
            .map_err(retry)?;
        if !written && !self.is_paused(lease.account_id).await {
            return Err(HandlerError::Retryable(
                "the account's lease was lost; its new holder takes over".into(),
            ));
        }
        Ok(())
    }

    async fn is_paused(&self, account: Uuid) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT status = 'paused' FROM mkt_wap_accounts WHERE id = $1",
        )
        .bind(account)
        .fetch_optional(self.pool.db())
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
    }

    /// Drives the page until the machine is final; returns the final state.
    ///
    /// Why one long function: it is the loop that feeds the pure
    /// `LoginMachine` and carries out its actions (store a QR, click "Use
    /// here", wait), with the run cap, browser restarts and the check mode's
    /// reload around it; the machine holds the rules, this only the I/O.
    pub(crate) async fn drive(
        &self,
        job: &ClaimedJob,
        mode: Mode,
    ) -> Result<LoginState, HandlerError> {
        let lease = &job.lease.lease;
        let mut session = self.session_with_retry(lease).await?;
        if mode == Mode::Login && !session.is_fresh() {
            // A login always starts from a freshly loaded page.
            session.open().await.map_err(retry)?;
        }
        let settings = self.pool.settings().clone();
        let mut machine = LoginMachine::start(Instant::now(), self.deadlines());
        if mode == Mode::Login {
            let t = Transition {
                from: LoginState::Inactive,
                to: LoginState::Starting,
                reason: "opening WhatsApp Web".into(),
            };
            self.apply(lease, &t, mode).await?;
        }
        let mut qr_count = 0u32;
        let mut restarts = 0u32;
        // A check of a page left on the logout screen reloads it once: the
        // logout is already recorded, and the reload shows what is true now
        // (a QR, or a ban screen).
        let mut reloaded = session.is_fresh();
        let run_started = Instant::now();
        loop {
            if job.lease.is_lost() {
                return Err(HandlerError::Retryable("lease lost".into()));
            }
            if run_started.elapsed() >= self.run_cap {
                // The queue would cut the job off here: end with a reason
                // instead of leaving the status to the reaper.
                let to = machine.state().on_deadline();
                let t = Transition {
                    from: machine.state(),
                    to,
                    reason: format!(
                        "the login run reached queue.job_timeout ({:?}) in {}; start it again",
                        self.run_cap + Duration::from_secs(5),
                        machine.state()
                    ),
                };
                self.apply(lease, &t, mode).await?;
                return Ok(to);
            }
            let view = match session.view().await {
                Ok(v) => v,
                Err(e) if e.is_infrastructure() && restarts < 3 => {
                    restarts += 1;
                    session.restart().await.map_err(retry)?;
                    continue;
                }
                Err(e) if e.is_infrastructure() => return Err(retry(e)),
                Err(e @ PageError::Unsupported(_)) => {
                    // WhatsApp shipped a build config/wa-web.toml does not
                    // describe: nothing can be sent safely. The account
                    // fails with the name that is missing (queued jobs wait:
                    // a failed account takes none), and the alert fires.
                    return Err(self.unsupported(lease, &machine, &e, mode).await);
                }
                Err(e) => {
                    // A slow page: let the deadline decide.
                    tracing::debug!(error = %crate::error::chain(&e), "reading the page failed; observing again");
                    PageView::default()
                }
            };
            let now = Instant::now();
            if mode == Mode::Check && view.logged_out && !reloaded {
                reloaded = true;
                session.open().await.map_err(retry)?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if mode == Mode::Check
                && (view.qr.is_some() || view.qr_exhausted)
                && !view.banned
                && !view.logged_out
            {
                let t = Transition {
                    from: machine.state(),
                    to: LoginState::LoggedOut,
                    reason: "logged out: the saved session is gone (the page asks for a QR)".into(),
                };
                self.apply(lease, &t, mode).await?;
                return Ok(LoginState::LoggedOut);
            }
            let (t, action) = machine.observe(&view, now);
            if let Some(t) = &t {
                // A health check writes only outcomes, not the passage of a
                // reopened page through loading.
                if mode == Mode::Login || !t.to.is_transient() {
                    self.apply(lease, t, mode).await?;
                }
                if t.to == LoginState::Ready {
                    let phone = view.phone.clone();
                    self.ready(&mut session, lease, phone.as_deref(), &t.reason, mode)
                        .await?;
                }
            }
            match action {
                Action::Stop => return Ok(machine.state()),
                Action::StoreQr(token) => {
                    let ttl = if qr_count == 0 {
                        settings.qr_first_ref_ttl
                    } else {
                        settings.qr_next_ref_ttl
                    };
                    qr_count += 1;
                    if mode == Mode::Login
                        && !login::write_qr(self.pool.db(), lease, &token, ttl)
                            .await
                            .map_err(retry)?
                    {
                        return Err(HandlerError::Retryable("lease lost".into()));
                    }
                }
                Action::ClickUseHere => {
                    tracing::info!(account_id = %lease.account_id, "conflict: clicking \"Use here\" once");
                    if let Err(e) = session.click_use_here().await {
                        tracing::warn!(error = %crate::error::chain(&e), "clicking \"Use here\" failed");
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Action::Wait => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Records an unsupported WhatsApp Web build: the account `failed` with
    /// the page error's text as the reason, the metric behind the alert,
    /// and a permanent job error (a new login after the names file is
    /// updated starts again).
    async fn unsupported(
        &self,
        lease: &Lease,
        machine: &LoginMachine,
        e: &PageError,
        mode: Mode,
    ) -> HandlerError {
        let reason = e.to_string();
        metrics::counter!(crate::metrics::WA_WEB_UNSUPPORTED).increment(1);
        tracing::error!(account_id = %lease.account_id, %reason,
            "WhatsApp Web build not supported; update config/wa-web.toml");
        let t = Transition {
            from: machine.state(),
            to: LoginState::Failed,
            reason: reason.clone(),
        };
        match self.apply(lease, &t, mode).await {
            Ok(()) => HandlerError::Permanent(reason),
            Err(e) => e,
        }
    }

    async fn session_with_retry(&self, lease: &Lease) -> Result<SessionGuard, HandlerError> {
        match self.pool.session(lease).await {
            Ok(s) => Ok(s),
            Err(BrowserError::Snapshot(e)) => Err(HandlerError::Permanent(crate::error::chain(&e))),
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "opening a session failed; trying once more");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.pool.session(lease).await.map_err(retry)
            }
        }
    }

    async fn ready(
        &self,
        session: &mut SessionGuard,
        lease: &Lease,
        phone: Option<&str>,
        reason: &str,
        mode: Mode,
    ) -> Result<(), HandlerError> {
        let db = self.pool.db();
        match login::write_ready(db, lease, phone, reason).await {
            Ok(true) => {}
            Ok(false) => return Err(HandlerError::Retryable("lease lost".into())),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let why = format!(
                    "phone {} is already registered to another account",
                    phone.unwrap_or_default()
                );
                login::write_status(db, lease, LoginState::Failed, &why, None)
                    .await
                    .map_err(retry)?;
                return Err(HandlerError::Permanent(why));
            }
            Err(e) => return Err(retry(e)),
        }
        // A failed snapshot keeps the session (the browser layer logs and
        // counts it, and the SessionSnapshotsFailing alert watches the count).
        if mode == Mode::Login {
            let _ = session.snapshot().await;
        } else {
            let _ = session
                .refresh_snapshot(self.pool.settings().health_check_interval)
                .await;
        }
        super::schedule_health_check(
            db,
            lease.account_id,
            self.pool.settings().health_check_interval,
        )
        .await
        .map_err(retry)?;
        Ok(())
    }
}
