//! The login lifecycle as an explicit state machine.
//!
//! ```text
//!  inactive ──login job──> starting ──QR shown──> qr_pending ──scan──> authenticating ──main + last-wid-md──> ready (active)
//!                            │  └──restored session (loading/main)──────────^
//!                            │ deadline              │ refs run out / deadline          │ deadline
//!                            v                       v                                  v
//!                          failed                 inactive                            failed
//!  any ──ban screen──> blocked (banned)   any ──post_logout──> logged_out   conflict twice ──> failed
//! ```
//!
//! [`LoginMachine`] is pure: it is fed [`PageView`]s (one JS round trip read
//! the whole page) and the clock, and answers with [`Transition`]s; the login
//! and health-check handlers write each transition to the account row
//! ([`write_status`], fenced by the lease). "Ready" is a page state (the main
//! screen is up *and* the own number is readable from localStorage), never a
//! single event, so a missed event cannot leave an account stuck. Every
//! transient state has a deadline, stored in `status_deadline` too, and
//! [`reap_expired`] moves rows whose worker died on by themselves.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::AccountStatus;
use crate::queue::Lease;

/// The states of the login lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginState {
    /// Not logged in, nothing running.
    Inactive,
    /// The page is opening.
    Starting,
    /// A QR is on screen (token and expiry in the DB).
    QrPending,
    /// Scanned or restored; the page is loading chats.
    Authenticating,
    /// Main screen up and own number known: status `active`.
    Ready,
    /// The session was logged out.
    LoggedOut,
    /// The number is blocked: status `banned`.
    Blocked,
    /// Gave up (deadline, conflict): the reason says why.
    Failed,
}

impl LoginState {
    /// The account status this state is stored as.
    pub fn account_status(self) -> AccountStatus {
        match self {
            LoginState::Inactive => AccountStatus::Inactive,
            LoginState::Starting => AccountStatus::Starting,
            LoginState::QrPending => AccountStatus::QrPending,
            LoginState::Authenticating => AccountStatus::Authenticating,
            LoginState::Ready => AccountStatus::Active,
            LoginState::LoggedOut => AccountStatus::LoggedOut,
            LoginState::Blocked => AccountStatus::Banned,
            LoginState::Failed => AccountStatus::Failed,
        }
    }

    /// The `mkt_wap_accounts.status` value.
    pub fn status(self) -> &'static str {
        self.account_status().as_str()
    }

    /// Where the state goes when its deadline passes with no progress: the
    /// one rule for every place that decides it (the login run itself, and
    /// the maintenance reaper for a run whose worker died). An unscanned QR
    /// leaves the account `inactive` (not logged in, as before the login);
    /// a page that never started or never became ready is `failed`.
    pub fn on_deadline(self) -> LoginState {
        match self {
            LoginState::QrPending => LoginState::Inactive,
            _ => LoginState::Failed,
        }
    }

    /// Whether the state moves on by itself (has a deadline).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            LoginState::Starting | LoginState::QrPending | LoginState::Authenticating
        )
    }
}

impl std::fmt::Display for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.status())
    }
}

/// Everything the machine needs to know about the page, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageView {
    /// The page URL.
    pub url: String,
    /// The QR token on screen.
    pub qr: Option<String>,
    /// The "reload QR" button is shown (refs ran out).
    pub qr_exhausted: bool,
    /// The loading progress bar is shown.
    pub loading: bool,
    /// The main screen (chat list) is shown.
    pub main: bool,
    /// The "open in another window" screen is shown.
    pub conflict: bool,
    /// The ban screen is shown.
    pub banned: bool,
    /// The URL says the session was logged out (`post_logout=1`).
    pub logged_out: bool,
    /// The own number from the phone-number id (the page's, else
    /// `last-wid-md`, else `last-wid`), digits only. Never read from an
    /// `@lid` id: a LID is not a phone number.
    pub phone: Option<String>,
    /// The own WhatsApp id as the page gives it: the phone-number id, else
    /// the `@lid` one (an account WhatsApp identifies by LID alone).
    pub own_id: Option<String>,
}

/// Deadlines of the transient states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// starting → failed.
    pub starting: Duration,
    /// qr_pending → inactive.
    pub qr: Duration,
    /// authenticating → failed.
    pub authenticating: Duration,
}

impl Deadlines {
    /// The deadline of `state`, if transient.
    pub fn of(&self, state: LoginState) -> Option<Duration> {
        match state {
            LoginState::Starting => Some(self.starting),
            LoginState::QrPending => Some(self.qr),
            LoginState::Authenticating => Some(self.authenticating),
            _ => None,
        }
    }
}

/// A change of state, with the reason recorded for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// From.
    pub from: LoginState,
    /// To.
    pub to: LoginState,
    /// Why (shown by the API as `status_reason`).
    pub reason: String,
}

/// What the driver must do after an observation, besides writing transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing; observe again.
    Wait,
    /// A new QR token is on screen: store it with its expiry.
    StoreQr(String),
    /// Click "Use here" (once per login).
    ClickUseHere,
    /// Done: the state is final for this run.
    Stop,
}

/// The pure login state machine.
#[derive(Debug, Clone)]
pub struct LoginMachine {
    state: LoginState,
    started: Instant,
    entered: Instant,
    deadlines: Deadlines,
    qr: Option<String>,
    clicked_use_here: bool,
}

impl LoginMachine {
    /// A machine that has just opened the page (state `starting`).
    pub fn start(now: Instant, deadlines: Deadlines) -> Self {
        Self {
            state: LoginState::Starting,
            started: now,
            entered: now,
            deadlines,
            qr: None,
            clicked_use_here: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> LoginState {
        self.state
    }

    /// When the current state's deadline passes, if transient.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadlines.of(self.state).map(|d| self.entered + d)
    }

    /// Whether the machine reached a state that ends a login run.
    pub fn is_final(&self) -> bool {
        !self.state.is_transient()
    }

    fn go(&mut self, to: LoginState, now: Instant, reason: impl Into<String>) -> Transition {
        let t = Transition {
            from: self.state,
            to,
            reason: reason.into(),
        };
        self.state = to;
        self.entered = now;
        t
    }

    /// Feeds one observation (and the clock). Returns the transitions made
    /// (at most one) and what to do next.
    pub fn observe(&mut self, view: &PageView, now: Instant) -> (Option<Transition>, Action) {
        if self.is_final() {
            return (None, Action::Stop);
        }
        // Faults first: they override whatever else the page shows.
        if view.banned {
            let t = self.go(
                LoginState::Blocked,
                now,
                "the number is blocked (ban screen)",
            );
            return (Some(t), Action::Stop);
        }
        if view.logged_out {
            let t = self.go(
                LoginState::LoggedOut,
                now,
                "the session was logged out (post_logout)",
            );
            return (Some(t), Action::Stop);
        }
        if view.conflict {
            if !self.clicked_use_here {
                self.clicked_use_here = true;
                return (None, Action::ClickUseHere);
            }
            let t = self.go(
                LoginState::Failed,
                now,
                "WhatsApp is open in another window (conflict persisted after one \"Use here\")",
            );
            return (Some(t), Action::Stop);
        }
        if view.main && (view.phone.is_some() || view.own_id.is_some()) {
            // Ready wins over any deadline: the page is usable.
            let t = self.go(
                LoginState::Ready,
                now,
                if view.phone.is_some() {
                    "main screen up and own number read"
                } else {
                    "main screen up and own id read (a LID: no phone number known)"
                },
            );
            return (Some(t), Action::Stop);
        }
        if let Some(t) = self.check_deadline(now) {
            return (Some(t), Action::Stop);
        }
        if view.qr_exhausted {
            let t = self.go(
                LoginState::Inactive,
                now,
                "QR codes ran out before a scan; start the login again",
            );
            return (Some(t), Action::Stop);
        }
        if let Some(token) = &view.qr {
            let mut trans = None;
            if self.state != LoginState::QrPending {
                trans = Some(self.go(LoginState::QrPending, now, "QR shown; waiting for a scan"));
            }
            if self.qr.as_deref() != Some(token) {
                self.qr = Some(token.clone());
                return (trans, Action::StoreQr(token.clone()));
            }
            return (trans, Action::Wait);
        }
        if (view.loading || view.main) && self.state != LoginState::Authenticating {
            let why = if self.state == LoginState::QrPending {
                "QR scanned; loading chats"
            } else {
                "saved session found; loading chats"
            };
            return (
                Some(self.go(LoginState::Authenticating, now, why)),
                Action::Wait,
            );
        }
        (None, Action::Wait)
    }

    /// Moves on if the current state's deadline passed, or if the whole run
    /// outlived the sum of the deadlines (a page bouncing between screens).
    pub fn check_deadline(&mut self, now: Instant) -> Option<Transition> {
        let deadline = self.deadline()?;
        let d = self.deadlines;
        let overall = d.starting + d.qr + d.authenticating;
        if now >= self.started + overall {
            return Some(self.go(
                LoginState::Failed,
                now,
                format!("login did not complete within {overall:?}"),
            ));
        }
        if now < deadline {
            return None;
        }
        let waited = self.deadlines.of(self.state).unwrap_or_default();
        let to = self.state.on_deadline();
        Some(match self.state {
            LoginState::Starting => self.go(
                to,
                now,
                format!("the page showed neither a QR nor a session within {waited:?}"),
            ),
            LoginState::QrPending => self.go(
                to,
                now,
                format!("no scan within {waited:?}; start the login again"),
            ),
            _ => self.go(
                to,
                now,
                format!(
                    "authenticated but not ready within {waited:?} (stuck loading or own number unreadable)"
                ),
            ),
        })
    }
}

/// Parses `last-wid-md` (`"<digits>:<device>@c.us"`, JSON-quoted) or
/// `last-wid` (`"<digits>@c.us"`) into E.164 digits.
pub fn phone_from_wid(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = serde_json::from_str::<String>(s).unwrap_or_else(|_| s.trim_matches('"').to_string());
    let (user, server) = s.split_once('@').unwrap_or((&s, "c.us"));
    // Only a phone-number id carries the number; `@lid` (and a group, a
    // broadcast) never does.
    if !matches!(server, "c.us" | "s.whatsapp.net") {
        return None;
    }
    let digits = user.split(':').next()?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| digits.to_string())
}

/// Writes a transition to the account row, fenced by the lease: a worker
/// that lost the account writes nothing. Returns whether it was written.
/// A retired account stays retired (a job that was running when it was
/// retired changes nothing). A paused account keeps `paused` through login
/// progress; a ban or a logout overrides the pause (they are what the account is now; the pause's
/// `paused_until` no longer resumes it into `active`).
pub async fn write_status(
    pool: &PgPool,
    lease: &Lease,
    to: LoginState,
    reason: &str,
    deadline: Option<Duration>,
) -> Result<bool, sqlx::Error> {
    let deadline: Option<DateTime<Utc>> =
        deadline.map(|d| Utc::now() + chrono::Duration::from_std(d).unwrap_or_default());
    let clear_qr = to != LoginState::QrPending;
    let r = sqlx::query(
        "UPDATE mkt_wap_accounts a SET status = $4, status_reason = $5, status_changed_at = now(), \
             status_deadline = $6, \
             qr_token = CASE WHEN $7 THEN NULL ELSE a.qr_token END, \
             qr_expires_at = CASE WHEN $7 THEN NULL ELSE a.qr_expires_at END \
         WHERE a.id = $1 AND (a.status IS DISTINCT FROM 'paused' OR $8) AND a.status <> 'retired' AND EXISTS (SELECT 1 FROM account_leases l \
             WHERE l.account_id = $1 AND l.epoch = $2 AND l.owner = $3)",
    )
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(to.status())
    .bind(reason)
    .bind(deadline)
    .bind(clear_qr)
    .bind(matches!(to, LoginState::Blocked | LoginState::LoggedOut))
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Stores a QR token and its expiry (fenced).
pub async fn write_qr(
    pool: &PgPool,
    lease: &Lease,
    token: &str,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE mkt_wap_accounts SET qr_token = $4, qr_expires_at = now() + $5 \
         WHERE id = $1 AND EXISTS (SELECT 1 FROM account_leases l \
             WHERE l.account_id = $1 AND l.epoch = $2 AND l.owner = $3)",
    )
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(token)
    .bind(sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: ttl.as_micros() as i64,
    })
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks the account ready: status active, phone stored (when known; a
/// LID-only account keeps the number it had), QR cleared (fenced).
pub async fn write_ready(
    pool: &PgPool,
    lease: &Lease,
    phone: Option<&str>,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE mkt_wap_accounts SET status = CASE WHEN status = 'paused' THEN status ELSE 'active' END, \
             status_reason = CASE WHEN status = 'paused' THEN status_reason ELSE $5 END, \
             status_changed_at = CASE WHEN status = 'active' THEN status_changed_at ELSE now() END, \
             status_deadline = NULL, qr_token = NULL, qr_expires_at = NULL, \
             phone_number = coalesce($4, phone_number), last_ready_at = now(), last_seen_at = now() \
         WHERE id = $1 AND status <> 'retired' AND EXISTS (SELECT 1 FROM account_leases l \
             WHERE l.account_id = $1 AND l.epoch = $2 AND l.owner = $3)",
    )
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(phone)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// How long after a status deadline the reaper waits, so a live login run
/// decides first.
pub const REAP_GRACE: Duration = Duration::from_secs(5);

/// Moves rows whose transient status outlived its deadline (plus `grace`,
/// so a live login run decides first) by [`LoginState::on_deadline`]:
/// `qr_pending` → `inactive`, `starting` and `authenticating` → `failed`,
/// with the reason. Returns the rows moved. The maintenance service runs it
/// (`crate::maintenance`); a test pins it to `on_deadline`.
pub async fn reap_expired(pool: &PgPool, grace: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE mkt_wap_accounts SET \
             status = CASE status WHEN 'starting' THEN $2 WHEN 'qr_pending' THEN $3 ELSE $4 END, \
             status_reason = 'no progress in ' || status || ' before its deadline (' || \
                 to_char(status_deadline, 'YYYY-MM-DD HH24:MI:SS') || ' UTC); the login run ended', \
             status_changed_at = now(), status_deadline = NULL, qr_token = NULL, qr_expires_at = NULL \
         WHERE status IN ('starting', 'qr_pending', 'authenticating') \
           AND status_deadline IS NOT NULL AND status_deadline + $1 < now()",
    )
    .bind(sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: grace.as_micros() as i64,
    })
    .bind(LoginState::Starting.on_deadline().status())
    .bind(LoginState::QrPending.on_deadline().status())
    .bind(LoginState::Authenticating.on_deadline().status())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Starts a login for the account: enqueues a `login` job (idempotent while
/// one is pending). The HTTP API calls this; the QR then appears in
/// `mkt_wap_accounts.qr_token` / `qr_expires_at`.
pub async fn start_login(pool: &PgPool, account: Uuid) -> Result<Uuid, crate::queue::QueueError> {
    let pending: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM queue_jobs WHERE account_id = $1 AND kind = 'login' \
         AND state IN ('available', 'scheduled', 'retryable', 'running') LIMIT 1",
    )
    .bind(account)
    .fetch_optional(pool)
    .await?;
    if let Some(id) = pending {
        return Ok(id);
    }
    let job = crate::queue::NewJob::new(
        account,
        &crate::jobs::maintenance::LoginJob {
            account_id: account,
        },
    )?
    .priority(0);
    Ok(crate::queue::enqueue(pool, &job).await?.id)
}

#[cfg(test)]
mod tests;
