//! Delivery: the `send`, `retry`, `discover` and `scrape` job handlers, and
//! ack tracking. Registered for `queue.handler = "browser"` by
//! [`crate::browser::browser_registry`].
//!
//! # A send, end to end
//!
//! 1. The queue claims the job and reserves the budget slot; in the same
//!    transaction the message becomes `sending` with `attempt_started_at`
//!    ([`status::mark_sending_in`]).
//! 2. If the message was already `sending` before this attempt (the worker
//!    that tried it died, or the page never confirmed), the chat is read
//!    first: an outgoing copy with the same text that no other message owns
//!    is adopted (its id stored, status `sent`), and nothing is typed. No
//!    message is sent blindly twice.
//! 3. Otherwise the page types (paced in proportion to the text length) and
//!    sends; on the first server tick the row becomes `sent` with WhatsApp's
//!    id, fenced by the lease.
//! 4. Acks: after every send the open chat's ack icons are read; when a
//!    session (re)starts, and `delivery.ack_followup` after the last send (a
//!    `health_check` job), the chats of sent-but-unread messages are read
//!    ([`acks`]). Each change is a forward-only update with its events.
//!
//! Failures: a quota refusal or page error is retried with the queue's
//! backoff, lowers health, and after the job's last attempt (3) marks the
//! message `failed`. Media that cannot be fetched or is too large fails the
//! message at once (permanent).

pub mod acks;
pub mod directory;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::browser::page::{MediaSource, OutgoingMessage, PageError};
use crate::browser::{BrowserHandlers, BrowserPool, SessionGuard};
use crate::config::{DeliverySettings, HealthSettings, Settings};
use crate::health::{self, HealthEvent};
use crate::jobs::JobKind;
use crate::messages::Source;
use crate::queue::handler::{ClaimedJob, HandlerError, Handlers, JobHandler, Outcome};
use crate::queue::Lease;
use status::MessageRow;

/// Everything the delivery handlers share.
#[derive(Debug, Clone)]
pub struct Delivery {
    pool: Arc<BrowserPool>,
    settings: DeliverySettings,
    health: HealthSettings,
    media_dir: PathBuf,
    media_max_bytes: u64,
    browser: BrowserHandlers,
}

fn retry(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retryable(e.to_string())
}

/// Adds the delivery handlers to the browser registry: send, retry,
/// discover, scrape, and a health check that also catches up acks.
pub fn register(
    handlers: Handlers,
    browser: BrowserHandlers,
    pool: Arc<BrowserPool>,
    settings: &Settings,
) -> Handlers {
    let d = Arc::new(Delivery {
        pool,
        settings: settings.delivery.clone(),
        health: settings.health.clone(),
        media_dir: settings.browser.media_dir.clone(),
        media_max_bytes: settings.browser.media_max_bytes,
        browser,
    });
    handlers
        .register(JobKind::Send, d.clone())
        .register(JobKind::Retry, d.clone())
        .register(JobKind::Discover, d.clone())
        .register(JobKind::Scrape, d.clone())
        .register(JobKind::HealthCheck, d)
}

/// How simulated typing scales with the text (pure).
pub fn typing_time(chars: usize, per_char: Duration, max: Duration) -> Duration {
    per_char
        .checked_mul(u32::try_from(chars).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// Whether a page error means nothing reached WhatsApp (so the message can go
/// back to `queued`), as opposed to an unknown outcome (it stays `sending`
/// and the next attempt looks in the chat first).
fn known_not_sent(e: &PageError) -> bool {
    // Only errors that say the send itself was refused or never possible.
    // A logout, block, conflict or loading screen can appear *after* the
    // click (the page changed mid-send): the chaos run caught a message that
    // reached WhatsApp, failed with "the page is not ready: loading", and was
    // sent again by a retry that did not check the chat. Those outcomes are
    // unknown, so the retry checks the chat first.
    matches!(
        e,
        PageError::QuotaRefused(_) | PageError::Media(_) | PageError::NoSuchChat(_)
    )
}

impl Delivery {
    async fn health(&self, account: Uuid, ev: HealthEvent) {
        if let Err(e) = health::record(self.pool.db(), account, ev, &self.health).await {
            tracing::warn!(%account, error = %e, "recording a health event failed");
        }
    }

    /// The account's session, ready on the main screen. A session that was
    /// just opened (the account's session came back) first catches up acks.
    async fn ready_session(&self, lease: &Lease) -> Result<SessionGuard, HandlerError> {
        let session = match self.pool.session(lease).await {
            Ok(s) => s,
            Err(e) => return Err(retry(crate::error::chain(&e))),
        };
        let within = self.pool.settings().starting_deadline;
        match session.wait_ready(within).await {
            Ok(_) => {}
            Err(e @ (PageError::LoggedOut | PageError::Blocked | PageError::Conflict)) => {
                // The health check records the status (and the health hit),
                // which stops this account's sends at the claim.
                let _ = crate::browser::schedule_health_check(
                    self.pool.db(),
                    lease.account_id,
                    Duration::ZERO,
                )
                .await;
                return Err(retry(e));
            }
            Err(e) => return Err(retry(e)),
        }
        if session.is_fresh() {
            if let Err(e) = acks::catch_up(self, &session, lease.account_id).await {
                tracing::warn!(account_id = %lease.account_id, error = %e, "ack catch-up failed");
            }
        }
        Ok(session)
    }

    async fn send(&self, job: &ClaimedJob, message_id: Uuid) -> Result<Outcome, HandlerError> {
        let lease = &job.lease.lease;
        let db = self.pool.db();
        let Some(msg) = status::load(db, message_id).await.map_err(retry)? else {
            return Err(HandlerError::Permanent(format!(
                "message {message_id} does not exist"
            )));
        };
        if msg.account_id != Some(lease.account_id) {
            return Err(HandlerError::Permanent(format!(
                "message {message_id} belongs to another account"
            )));
        }
        match msg.status.as_str() {
            "sent" | "delivered" | "read" => return Ok(Outcome::Completed),
            "failed" => return Ok(Outcome::Completed),
            "sending" => {}
            other => {
                // No slot was reserved for it (e.g. queued again by hand).
                return Err(retry(format!("message is `{other}`, not `sending`")));
            }
        }
        let session = self.ready_session(lease).await?;
        let interrupted = match (msg.attempt_started_at, job.job.attempted_at) {
            (Some(started), Some(claimed)) => started < claimed,
            _ => false,
        };
        if interrupted {
            match self.adopt(&session, &msg).await {
                Ok(Some(found)) => {
                    tracing::info!(%message_id, wa_message_id = %found.data_id,
                        "an earlier attempt reached WhatsApp; adopting its copy instead of re-sending");
                    return self.record_sent(job, &session, &msg, &found, true).await;
                }
                Ok(None) => {}
                Err(e) => return Err(retry(format!("checking the chat for an earlier copy: {e}"))),
            }
        }
        let typed = msg.chat_text().map(str::chars).map(Iterator::count);
        let pause = typing_time(
            typed.unwrap_or(0),
            self.settings.typing_per_char,
            self.settings.typing_max,
        );
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        // A slot is only good for a bounded time (budget::SEND_DEADLINE):
        // past SEND_START_WITHIN, give it up and ask for a new one rather
        // than land outside the window the grant was counted in.
        if let Some(slot) = job.slot_at {
            let waited = Utc::now() - slot;
            if waited.to_std().unwrap_or_default() > crate::budget::SEND_START_WITHIN {
                metrics::counter!(crate::metrics::MESSAGES, "status" => "slot_expired")
                    .increment(1);
                return Ok(Outcome::Snooze {
                    until: Utc::now(),
                    reason: format!(
                        "the send slot expired ({:.1}s after its grant, before the send started); a new one is needed",
                        waited.num_milliseconds() as f64 / 1000.0
                    ),
                });
            }
        }
        let result = self.type_and_send(&session, &msg).await;
        if result.is_ok() && !self.settings.record_delay.is_zero() {
            tokio::time::sleep(self.settings.record_delay).await;
        }
        match result {
            Ok(m) => self.record_sent(job, &session, &msg, &m, false).await,
            Err(e) => {
                // The click may have gone through (a timeout waiting for the
                // tick, a page that reloaded): look before deciding.
                if !known_not_sent(&e) && !e.is_infrastructure() {
                    if let Ok(Some(found)) = self.adopt(&session, &msg).await {
                        tracing::info!(%message_id, error = %e,
                            "the page reported an error but the message is in the chat; adopting it");
                        return self.record_sent(job, &session, &msg, &found, true).await;
                    }
                }
                let reason = e.to_string();
                let last = job.job.attempt >= job.job.max_attempts;
                let permanent = matches!(e, PageError::Media(_) | PageError::NoSuchChat(_));
                // The account's signal: refusals and page errors. Bad media,
                // an unknown chat, or a dead browser say nothing about it;
                // logouts and blocks are recorded by the health check.
                if !e.is_infrastructure()
                    && !matches!(
                        e,
                        PageError::LoggedOut
                            | PageError::Blocked
                            | PageError::Media(_)
                            | PageError::NoSuchChat(_)
                    )
                {
                    self.health(lease.account_id, HealthEvent::SendFailed).await;
                }
                if matches!(e, PageError::QuotaRefused(_)) {
                    metrics::counter!(crate::metrics::MESSAGES, "status" => "refused").increment(1);
                }
                if known_not_sent(&e) || last {
                    let reason = if known_not_sent(&e) {
                        reason.clone()
                    } else {
                        format!("{reason} (no copy found in the chat after the last attempt)")
                    };
                    status::mark_attempt_failed(db, lease, msg.id, &reason, last || permanent)
                        .await
                        .map_err(retry)?;
                }
                if permanent {
                    Err(HandlerError::Permanent(reason))
                } else {
                    Err(HandlerError::Retryable(reason))
                }
            }
        }
    }

    async fn type_and_send(
        &self,
        page: &SessionGuard,
        msg: &MessageRow,
    ) -> Result<OutgoingMessage, PageError> {
        let chat = msg.target_chat_id.as_str();
        match msg.message_type.as_str() {
            "text" => {
                page.send_text(chat, msg.message_text.as_deref().unwrap_or(""))
                    .await
            }
            "link" => {
                let text = msg
                    .message_text
                    .clone()
                    .or_else(|| msg.link_url.clone())
                    .unwrap_or_default();
                page.send_link(chat, &text).await
            }
            kind => {
                let source = match (&msg.media_url, &msg.media_path) {
                    (Some(u), _) => MediaSource::Url(u.clone()),
                    // Confined to the media directory, symlinks resolved,
                    // at send time against this worker's configuration.
                    (None, Some(p)) => MediaSource::Path(
                        crate::media::confine(&self.media_dir, p, self.media_max_bytes)
                            .map_err(|e| PageError::Media(e.to_string()))?,
                    ),
                    (None, None) => return Err(PageError::Media("no media source".into())),
                };
                page.send_media(
                    chat,
                    &source,
                    msg.media_caption.as_deref(),
                    kind == "document",
                )
                .await
            }
        }
    }

    /// Looks in the chat for an outgoing copy of `msg` that no other message
    /// owns (the page shows no send times; ownership of WhatsApp ids stands in
    /// for "sent after the attempt started").
    async fn adopt(
        &self,
        page: &SessionGuard,
        msg: &MessageRow,
    ) -> Result<Option<OutgoingMessage>, PageError> {
        let rows = page.recent_outgoing(&msg.target_chat_id, 50).await?;
        let want = msg.chat_text().map(crate::browser::page::as_shown);
        let want = want.as_deref().map(str::trim);
        let media = matches!(msg.message_type.as_str(), "image" | "video" | "document");
        let candidates: Vec<OutgoingMessage> = rows
            .into_iter()
            .filter(|r| r.ack.is_some_and(|a| a.code() >= 1))
            .filter(|r| r.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) == want)
            .filter(|r| r.media == media)
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = candidates.iter().map(|c| c.data_id.clone()).collect();
        let owned = status::owned_wa_ids(self.pool.db(), &ids)
            .await
            .map_err(|e| PageError::WebDriver(e.to_string()))?;
        Ok(candidates.into_iter().find(|c| !owned.contains(&c.data_id)))
    }

    async fn record_sent(
        &self,
        job: &ClaimedJob,
        page: &SessionGuard,
        msg: &MessageRow,
        m: &OutgoingMessage,
        adopted: bool,
    ) -> Result<Outcome, HandlerError> {
        let lease = &job.lease.lease;
        let db = self.pool.db();
        if !status::mark_sent(db, lease, job.job.id, msg.id, &m.data_id, adopted)
            .await
            .map_err(retry)?
        {
            return Err(retry("recording the send was fenced (lease lost)"));
        }
        metrics::counter!(crate::metrics::MESSAGES, "status" => "sent").increment(1);
        if let Some(started) = msg.attempt_started_at {
            let secs = (chrono::Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(crate::metrics::ACK_LATENCY_SECONDS, "stage" => "server")
                .record(secs);
        }
        if let Some(level) = m.ack.map(|a| a.code()).filter(|c| *c >= 2) {
            acks::apply(self, lease.account_id, &m.data_id, level, Source::Worker).await;
        }
        // Acks of this chat's earlier messages, visible now at no cost.
        if let Err(e) = acks::scan_open_chat(self, page, lease.account_id).await {
            tracing::debug!(error = %e, "reading the open chat's acks failed");
        }
        if let Err(e) =
            crate::browser::schedule_health_check(db, lease.account_id, self.settings.ack_followup)
                .await
        {
            tracing::warn!(error = %e, "scheduling the ack follow-up failed");
        }
        Ok(Outcome::Completed)
    }

    async fn health_check(&self, job: &ClaimedJob) -> Result<Outcome, HandlerError> {
        let out = self.browser.handle(job).await?;
        let lease = &job.lease.lease;
        if job.lease.is_lost() {
            return Ok(out);
        }
        let mut again = None;
        if let Ok(session) = self.pool.session(lease).await {
            if session.ensure_ready().await.is_ok() {
                match acks::catch_up(self, &session, lease.account_id).await {
                    Ok(next) => again = next,
                    Err(e) => {
                        tracing::warn!(account_id = %lease.account_id, error = %e, "ack catch-up failed");
                        again = Some(self.settings.ack_followup);
                    }
                }
            }
        }
        // Messages still waiting for acks: look again later, even if no
        // send comes (acks arrive minutes or hours after the last one).
        if let Some(after) = again {
            if let Err(e) =
                crate::browser::schedule_health_check(self.pool.db(), lease.account_id, after).await
            {
                tracing::warn!(error = %e, "scheduling the next ack look failed");
            }
        }
        Ok(out)
    }
}

impl JobHandler for Delivery {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let payload = &job.job.payload;
            let message_id = || {
                payload["message_id"]
                    .as_str()
                    .and_then(|s| s.parse::<Uuid>().ok())
                    .ok_or_else(|| HandlerError::Permanent("payload has no message_id".into()))
            };
            match job.job.job_kind() {
                Some(JobKind::Send) | Some(JobKind::Retry) => self.send(job, message_id()?).await,
                Some(JobKind::Discover) => directory::discover(self, job).await,
                Some(JobKind::Scrape) => directory::scrape(self, job).await,
                Some(JobKind::HealthCheck) => self.health_check(job).await,
                _ => Err(HandlerError::Permanent(format!(
                    "the delivery handler does not run `{}` jobs",
                    job.job.kind
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_is_proportional_and_capped() {
        let per = Duration::from_millis(40);
        let max = Duration::from_secs(8);
        assert_eq!(typing_time(0, per, max), Duration::ZERO);
        assert_eq!(typing_time(10, per, max), Duration::from_millis(400));
        assert_eq!(typing_time(100_000, per, max), max);
        assert_eq!(typing_time(10, Duration::ZERO, max), Duration::ZERO);
    }

    #[test]
    fn refusals_are_known_not_sent_timeouts_are_not() {
        assert!(known_not_sent(&PageError::QuotaRefused("x".into())));
        assert!(!known_not_sent(&PageError::Timeout {
            what: "ack".into(),
            after: Duration::from_secs(1)
        }));
        assert!(!known_not_sent(&PageError::SessionLost("x".into())));
    }

    #[test]
    fn a_page_that_changed_mid_send_leaves_the_outcome_unknown() {
        // These can appear after the click: the retry must check the chat.
        for e in [
            PageError::NotReady("loading".into()),
            PageError::Conflict,
            PageError::LoggedOut,
            PageError::Blocked,
        ] {
            assert!(!known_not_sent(&e), "{e}");
        }
    }
}
