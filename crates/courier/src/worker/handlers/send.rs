//! The `send` and `retry` jobs: one message through the account's page.
//!
//! # A send, end to end
//!
//! 1. The queue claims the job and reserves the budget slot; in the same
//!    statement the message becomes `sending` with `attempt_started_at`
//!    (the message domain's claim policy, [`crate::message::claim_fragment`]).
//! 2. If the message was already `sending` before this attempt (the worker
//!    that tried it died, or the page never confirmed), the chat is read
//!    first: an outgoing copy with the same text that no other message owns
//!    is adopted (its id stored, status `sent`), and nothing is typed. No
//!    message is sent blindly twice.
//! 3. The page waits (paced in proportion to the text length, as typing
//!    would) and sends through WhatsApp Web's send action; once the server
//!    has it the row becomes `sent` with WhatsApp's id, fenced by the lease.
//!    The first send to a number (`…@c.us`) outside the chat list asks
//!    whether the number is on WhatsApp (`queryWidExists`) in the same page
//!    call, before anything is sent; the answer is remembered per worker for
//!    `delivery.exists_ttl`, so later sends ask nothing. A number that is not
//!    on WhatsApp fails the message at once with the reason `not on
//!    WhatsApp`, gives the budget slot back and costs no health: nothing
//!    reached WhatsApp and the account did nothing wrong.
//! 5. Acks are the ack-tracking step's ([`crate::worker::acks`]): the ticks
//!    the open chat shows now are recorded, and a follow-up `health_check`
//!    job looks again after `delivery.ack_followup`.
//!
//! Failures: a quota refusal or page error is retried with the queue's
//! backoff, lowers health, and after the job's last attempt (3) marks the
//! message `failed`. Media that cannot be fetched or is too large fails the
//! message at once (permanent).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::{retry, Context};
use crate::account::health::HealthEvent;
use crate::browser::page::{MediaSource, NumberCheck, OutgoingMessage, PageError};
use crate::browser::SessionGuard;
use crate::message::status::{self, MessageRow};
use crate::message::{FailureClass, MessageStatus};
use crate::queue::handler::{ClaimedJob, HandlerError, JobHandler, Outcome};
use crate::worker::acks;

/// The `send` and `retry` handler.
#[derive(Debug, Clone)]
pub(crate) struct Send(pub Arc<Context>);

/// How simulated typing scales with the text (pure).
pub(crate) fn typing_time(chars: usize, per_char: Duration, max: Duration) -> Duration {
    per_char
        .checked_mul(u32::try_from(chars).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// Whether another attempt at the send could pass: the one place that
/// decides it. Bad media, an unknown chat and a number that is not on
/// WhatsApp fail the same way every time; everything else (refusals for
/// quota, page and browser faults, timeouts, a logout or block seen
/// mid-send) may pass later, on this account or another.
pub(crate) fn failure_class(e: &PageError) -> FailureClass {
    match e {
        PageError::Media(_) | PageError::NoSuchChat(_) | PageError::NotOnWhatsApp(_) => {
            FailureClass::Permanent
        }
        _ => FailureClass::Transient,
    }
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
        PageError::QuotaRefused(_)
            | PageError::Media(_)
            | PageError::NoSuchChat(_)
            | PageError::NotOnWhatsApp(_)
    )
}

/// `t` as the page shows it, trimmed, for comparing texts.
fn shown(t: &str) -> String {
    crate::browser::page::as_shown(t).trim().to_string()
}

/// Whether an outgoing message in the chat may be the copy an interrupted
/// attempt sent (pure): acked by the server, the same text (or caption) and
/// kind, and sent after the attempt started by its own time `t`, with a
/// minute of slack for a browser on another machine whose clock differs. An
/// older copy with the same text (sent by hand from the phone) is not it.
pub(crate) fn is_copy(
    r: &OutgoingMessage,
    want: Option<&str>,
    media: bool,
    started: Option<chrono::DateTime<Utc>>,
) -> bool {
    r.ack.is_some_and(|a| a.code() >= 1)
        && r.text
            .as_deref()
            .map(shown)
            .filter(|t| !t.is_empty())
            .as_deref()
            == want
        && r.media == media
        && match (r.t, started) {
            (Some(t), Some(started)) => t >= started.timestamp() - ADOPT_CLOCK_SLACK_SECS,
            _ => true,
        }
}

/// How far a copy's page time may precede the attempt's start and still be
/// adopted (clocks of a remote browser and the database differ).
const ADOPT_CLOCK_SLACK_SECS: i64 = 60;

/// The reason a message to a number that is not on WhatsApp fails with.
pub(crate) const NOT_ON_WHATSAPP: &str = "not on WhatsApp";

impl Send {
    /// One attempt, in the order of the module docs: the message's state, the
    /// look for an earlier copy, typing, the slot's deadline, the send, and the
    /// failure's classification. Why one function: each step may end the
    /// attempt with its own outcome, and the steps share the row, the session
    /// and the slot.
    async fn send(&self, job: &ClaimedJob, message_id: Uuid) -> Result<Outcome, HandlerError> {
        let lease = &job.lease.lease;
        let db = self.0.pool.db();
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
        match msg.status {
            s if s.reached_whatsapp() => return Ok(Outcome::Completed),
            MessageStatus::Failed => return Ok(Outcome::Completed),
            MessageStatus::Sending => {}
            other => {
                // No slot was reserved for it (e.g. queued again by hand).
                return Err(HandlerError::Retryable(format!(
                    "message is `{other}`, not `sending`"
                )));
            }
        }
        let interrupted = match (msg.attempt_started_at, job.job.attempted_at) {
            (Some(started), Some(claimed)) => started < claimed,
            _ => false,
        };
        // Opt-out: the one check every send passes (API sends, schedule
        // expansions, retries, sweeps), before the browser is touched. An
        // interrupted attempt may already have reached WhatsApp: its chat is
        // looked at first, below.
        if !interrupted {
            self.refuse_if_opted_out(job, &msg).await?;
        }
        let session = self.0.ready_session(lease).await?;
        if interrupted {
            match self.adopt(&session, &msg).await {
                Ok(Some(found)) => {
                    tracing::info!(%message_id, wa_message_id = %found.data_id,
                        "an earlier attempt reached WhatsApp; adopting its copy instead of re-sending");
                    return self.record_sent(job, &session, &msg, &found, true).await;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(HandlerError::Retryable(format!(
                        "checking the chat for an earlier copy: {}",
                        crate::error::chain(&e)
                    )))
                }
            }
        }
        if interrupted {
            self.refuse_if_opted_out(job, &msg).await?;
        }
        // A number whose answer is not remembered is asked about in the
        // send's own page call.
        let number = msg.target_chat_id.strip_suffix("@c.us");
        let check = match number.and_then(|d| self.0.exists.get(d, std::time::Instant::now())) {
            Some(false) => return self.not_on_whatsapp(job, &msg).await,
            Some(true) => NumberCheck::Skip,
            None if number.is_some() => NumberCheck::Ask,
            None => NumberCheck::Skip,
        };
        let typed = msg.chat_text().map(str::chars).map(Iterator::count);
        let pause = typing_time(
            typed.unwrap_or(0),
            self.0.settings.typing_per_char,
            self.0.settings.typing_max,
        );
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        // A slot is only good for a bounded time (budget::SEND_DEADLINE):
        // past SEND_START_WITHIN, give it up and ask for a new one rather
        // than land outside the window the grant was counted in.
        if let Some(slot) = job.slot_at {
            let waited = Utc::now() - slot;
            if waited.to_std().unwrap_or_default() > crate::account::budget::SEND_START_WITHIN {
                metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "slot_expired")
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
        let result = self.type_and_send(&session, &msg, check).await;
        if result.is_ok() && !self.0.settings.record_delay.is_zero() {
            tokio::time::sleep(self.0.settings.record_delay).await;
        }
        if let (Some(digits), NumberCheck::Ask) = (number, check) {
            match &result {
                Ok(_) => self.0.exists.put(digits, true, std::time::Instant::now()),
                Err(PageError::NotOnWhatsApp(_)) => {
                    self.0.exists.put(digits, false, std::time::Instant::now());
                    return self.not_on_whatsapp(job, &msg).await;
                }
                Err(_) => {}
            }
        }
        match result {
            Ok(m) => self.record_sent(job, &session, &msg, &m, false).await,
            Err(e) => {
                // The click may have gone through (a timeout waiting for the
                // tick, a page that reloaded): look before deciding.
                if !known_not_sent(&e) && !e.is_infrastructure() {
                    if let Ok(Some(found)) = self.adopt(&session, &msg).await {
                        tracing::info!(%message_id, error = %crate::error::chain(&e),
                            "the page reported an error but the message is in the chat; adopting it");
                        return self.record_sent(job, &session, &msg, &found, true).await;
                    }
                }
                let class = failure_class(&e);
                let permanent = class == FailureClass::Permanent;
                let reason = if permanent {
                    format!(
                        "{e} (permanent: not retried automatically; \
                         POST /v1/messages/{{id}}/retry tries again)"
                    )
                } else {
                    e.to_string()
                };
                // The job's attempts, or the message's across all of its
                // jobs (a retry job does not start a fresh count).
                let last = job.job.attempt >= job.job.max_attempts
                    || msg.send_attempts >= self.0.settings.max_attempts;
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
                            | PageError::NotOnWhatsApp(_)
                            | PageError::Unsupported(_)
                    )
                {
                    self.0
                        .health(lease.account_id, HealthEvent::SendFailed)
                        .await;
                }
                if matches!(e, PageError::QuotaRefused(_)) {
                    metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "refused")
                        .increment(1);
                }
                if known_not_sent(&e) || last {
                    let mut reason = if known_not_sent(&e) {
                        reason.clone()
                    } else {
                        format!("{reason} (no copy found in the chat after the last attempt)")
                    };
                    if last && !permanent {
                        reason.push_str(&format!(
                            " (attempt {} of {}: not retried automatically; \
                             POST /v1/messages/{{id}}/retry tries again)",
                            msg.send_attempts, self.0.settings.max_attempts
                        ));
                    }
                    status::mark_attempt_failed(
                        db,
                        lease,
                        msg.id,
                        &reason,
                        last || permanent,
                        class,
                    )
                    .await
                    .map_err(retry)?;
                }
                if permanent {
                    Err(HandlerError::Permanent(reason))
                } else if last {
                    // The message is `failed`: no attempt of this job is left
                    // for it, whatever the job's own count says.
                    Err(HandlerError::Permanent(format!(
                        "{reason} (the message's last attempt)"
                    )))
                } else {
                    Err(HandlerError::Retryable(reason))
                }
            }
        }
    }

    /// Fails the message at once (permanent) with [`NOT_ON_WHATSAPP`], gives
    /// the budget slot back, and records no health event.
    async fn not_on_whatsapp(
        &self,
        job: &ClaimedJob,
        msg: &MessageRow,
    ) -> Result<Outcome, HandlerError> {
        let lease = &job.lease.lease;
        metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "not_on_whatsapp")
            .increment(1);
        status::mark_not_on_whatsapp(self.0.pool.db(), lease, job.job.id, msg.id, NOT_ON_WHATSAPP)
            .await
            .map_err(retry)?;
        tracing::info!(message_id = %msg.id, chat = %msg.target_chat_id, "the number is not on WhatsApp; the message fails");
        Err(HandlerError::Permanent(format!(
            "{}: {NOT_ON_WHATSAPP} (permanent: not retried automatically)",
            msg.target_chat_id
        )))
    }

    /// A message to an opted-out contact fails at once (permanent) with
    /// the reason `opted out`: the budget slot is given back and no health
    /// event is recorded (the account did nothing wrong). `Ok(())`: the
    /// contact has not opted out.
    async fn refuse_if_opted_out(
        &self,
        job: &ClaimedJob,
        msg: &MessageRow,
    ) -> Result<(), HandlerError> {
        use crate::directory::contacts::{opted_out_target, OPTED_OUT};
        let db = self.0.pool.db();
        let Some((contact, who)) = opted_out_target(db, msg.target_contact_id, &msg.target_chat_id)
            .await
            .map_err(retry)?
        else {
            return Ok(());
        };
        let lease = &job.lease.lease;
        metrics::counter!(crate::metrics::MESSAGES, "status" => "opted_out").increment(1);
        status::mark_not_on_whatsapp(db, lease, job.job.id, msg.id, OPTED_OUT)
            .await
            .map_err(retry)?;
        tracing::info!(message_id = %msg.id, %contact, "the contact opted out; the message fails");
        Err(HandlerError::Permanent(format!(
            "{who} (contact {contact}): {OPTED_OUT} (permanent: not retried automatically)"
        )))
    }

    async fn type_and_send(
        &self,
        page: &SessionGuard,
        msg: &MessageRow,
        check: NumberCheck,
    ) -> Result<OutgoingMessage, PageError> {
        let chat = msg.target_chat_id.as_str();
        match msg.message_type.as_str() {
            "text" => {
                page.send_text(chat, msg.message_text.as_deref().unwrap_or(""), check)
                    .await
            }
            "link" => {
                let text = msg
                    .message_text
                    .clone()
                    .or_else(|| msg.link_url.clone())
                    .unwrap_or_default();
                page.send_link(chat, &text, check).await
            }
            kind => {
                let source = match (&msg.media_url, &msg.media_path) {
                    (Some(u), _) => MediaSource::Url(u.clone()),
                    // Confined to the media directory, symlinks resolved,
                    // at send time against this worker's configuration.
                    (None, Some(p)) => MediaSource::Path(
                        crate::media::confine(&self.0.media_dir, p, self.0.media_max_bytes)
                            .map_err(|e| PageError::Media(crate::error::chain(&e)))?,
                    ),
                    (None, None) => return Err(PageError::Media("no media source".into())),
                };
                page.send_media(
                    chat,
                    &source,
                    msg.media_caption.as_deref(),
                    kind == "document",
                    check,
                )
                .await
            }
        }
    }

    /// Looks in the chat's message models for an outgoing copy of `msg`
    /// that no other message owns, sent after the attempt started (by its
    /// time `t`, with slack) and acked by the server.
    async fn adopt(
        &self,
        page: &SessionGuard,
        msg: &MessageRow,
    ) -> Result<Option<OutgoingMessage>, PageError> {
        let rows = page.recent_outgoing(&msg.target_chat_id, 50).await?;
        let want = msg.chat_text().map(shown).filter(|t| !t.is_empty());
        let media = matches!(msg.message_type.as_str(), "image" | "video" | "document");
        let candidates: Vec<OutgoingMessage> = rows
            .into_iter()
            .filter(|r| is_copy(r, want.as_deref(), media, msg.attempt_started_at))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = candidates.iter().map(|c| c.data_id.clone()).collect();
        let owned = status::owned_wa_ids(self.0.pool.db(), &ids)
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
        let db = self.0.pool.db();
        if !status::mark_sent(db, lease, job.job.id, msg.id, &m.data_id, adopted)
            .await
            .map_err(retry)?
        {
            return Err(HandlerError::Retryable(
                "recording the send was fenced (lease lost)".into(),
            ));
        }
        metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "sent").increment(1);
        if let Some(started) = msg.attempt_started_at {
            let secs = (chrono::Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(crate::metrics::ACK_SINCE_SEND_SECONDS, "ack" => "server")
                .record(secs);
        }
        // Ack tracking is its own step: what the page shows now, and the
        // follow-up look (a health-check job) for what comes later.
        acks::after_send(&self.0, page, lease.account_id, m).await;
        Ok(Outcome::Completed)
    }
}

impl JobHandler for Send {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let payload = &job.job.payload;
            let message_id = || {
                payload["message_id"]
                    .as_str()
                    .and_then(|s| s.parse::<Uuid>().ok())
                    .ok_or_else(|| HandlerError::Permanent("payload has no message_id".into()))
            };
            self.send(job, message_id()?).await
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
    fn bad_media_and_unknown_chats_are_permanent_failures() {
        assert_eq!(
            failure_class(&PageError::Media("too large".into())),
            FailureClass::Permanent
        );
        // An unknown chat: a number not on WhatsApp, or a group the account left.
        assert_eq!(
            failure_class(&PageError::NoSuchChat("919800000001@c.us".into())),
            FailureClass::Permanent
        );
    }

    #[test]
    fn a_number_not_on_whatsapp_is_a_permanent_failure_known_not_sent() {
        let e = PageError::NotOnWhatsApp("447700900999@c.us".into());
        assert_eq!(failure_class(&e), FailureClass::Permanent);
        assert!(known_not_sent(&e));
    }

    #[test]
    fn a_copy_is_adopted_only_with_the_same_text_kind_and_a_time_after_the_attempt() {
        use crate::browser::AckLevel;
        let started = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let row = |text: &str, t: i64, ack: AckLevel| OutgoingMessage {
            data_id: "true_1@c.us_3EB0AA".into(),
            text: Some(text.into()),
            ack: Some(ack),
            media: false,
            link_preview: false,
            t: Some(t),
        };
        let now = started.timestamp() + 2;
        assert!(is_copy(
            &row("Offer\r\n", now, AckLevel::Server),
            Some("Offer"),
            false,
            Some(started)
        ));
        assert!(!is_copy(
            &row("Offer", now, AckLevel::Pending),
            Some("Offer"),
            false,
            Some(started)
        ));
        assert!(!is_copy(
            &row("Other", now, AckLevel::Read),
            Some("Offer"),
            false,
            Some(started)
        ));
        assert!(!is_copy(
            &row("Offer", now, AckLevel::Read),
            Some("Offer"),
            true,
            Some(started)
        ));
        // Within the clock slack, yes; an hour-old copy, no.
        assert!(is_copy(
            &row("Offer", started.timestamp() - 30, AckLevel::Read),
            Some("Offer"),
            false,
            Some(started)
        ));
        assert!(!is_copy(
            &row("Offer", started.timestamp() - 3600, AckLevel::Read),
            Some("Offer"),
            false,
            Some(started)
        ));
    }

    #[test]
    fn refusals_faults_and_timeouts_are_transient_failures() {
        for e in [
            PageError::QuotaRefused("slow down".into()),
            PageError::Timeout {
                what: "ack".into(),
                after: Duration::from_secs(1),
            },
            PageError::NotReady("loading".into()),
            PageError::SessionLost("invalid session id".into()),
            PageError::WebDriver("stale element".into()),
            PageError::LoggedOut,
            PageError::Blocked,
            PageError::Conflict,
        ] {
            assert_eq!(failure_class(&e), FailureClass::Transient, "{e}");
        }
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
