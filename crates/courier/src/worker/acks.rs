//! Ack tracking: reading the ticks the page shows and turning each change
//! into a forward-only status update with events ([`crate::message::status::record_ack`]),
//! a health signal (deliveries and reads raise it; messages left undelivered
//! past `delivery.undelivered_after` lower it) and the
//! `courier_ack_latency_seconds` histogram by stage.
//!
//! Two readers share [`apply`]: [`after_send`] (the sent message's ticks and
//! the open chat's, one round trip), and [`catch_up`], run by the
//! `health_check` job — enqueued at once when a session (re)opens, and as the
//! follow-up after sends — which opens each chat that holds sent-but-unread
//! messages, so acks that arrived while no worker held the account are not
//! lost. No other job runs a catch-up: a send only sends.

use std::time::Duration;

use uuid::Uuid;

use super::handlers::Context;
use crate::account::health::HealthEvent;
use crate::browser::page::{OutgoingMessage, PageError};
use crate::browser::SessionGuard;
use crate::message::status;
use crate::message::Source;

/// Errors of an ack pass.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AckError {
    /// Reading the page failed.
    #[error("reading acks from the page")]
    Page(#[from] PageError),
    /// Recording failed.
    #[error("recording acks")]
    Db(#[from] sqlx::Error),
}

/// Records one observed ack level for a WhatsApp message id.
pub(crate) async fn apply(d: &Context, account: Uuid, wa_id: &str, level: i8, source: Source) {
    match status::record_ack(d.pool.db(), wa_id, level, source).await {
        Ok(c) => {
            if c.delivered {
                if let Some(s) = c.since_sent {
                    metrics::histogram!(crate::metrics::ACK_LATENCY_SECONDS, "stage" => "delivered")
                        .record(s);
                }
                metrics::counter!(crate::metrics::MESSAGES, "status" => "delivered").increment(1);
                d.health(account, HealthEvent::Delivered).await;
            }
            if c.read {
                if let Some(s) = c.since_sent {
                    metrics::histogram!(crate::metrics::ACK_LATENCY_SECONDS, "stage" => "read")
                        .record(s);
                }
                metrics::counter!(crate::metrics::MESSAGES, "status" => "read").increment(1);
                d.health(account, HealthEvent::Read).await;
            }
        }
        Err(e) => {
            tracing::warn!(wa_id, error = %crate::error::chain(&e), "recording an ack failed")
        }
    }
}

/// Reads the ticks of the open chat's outgoing messages and records changes.
pub(crate) async fn scan_open_chat(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
) -> Result<usize, AckError> {
    let rows = page.recent_outgoing_in_open_chat(100).await?;
    let mut n = 0;
    for r in rows {
        if let Some(level) = r.ack.map(|a| a.code()).filter(|c| *c >= 2) {
            apply(d, account, &r.data_id, level, Source::AckWatcher).await;
            n += 1;
        }
    }
    Ok(n)
}

/// The ack step after a send: the message's own ticks as the page showed
/// them when it confirmed the send, the ticks of the chat's earlier messages
/// (visible now at no cost), and the follow-up look `delivery.ack_followup`
/// later (a `health_check` job, which catches up). Failures are logged, never
/// fail the send: acks are also caught up later.
pub(crate) async fn after_send(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
    sent: &OutgoingMessage,
) {
    if let Some(level) = sent.ack.map(|a| a.code()).filter(|c| *c >= 2) {
        apply(d, account, &sent.data_id, level, Source::Worker).await;
    }
    if let Err(e) = scan_open_chat(d, page, account).await {
        tracing::debug!(error = %crate::error::chain(&e), "reading the open chat's acks failed");
    }
    if let Err(e) =
        crate::worker::schedule_health_check(d.pool.db(), account, d.settings.ack_followup).await
    {
        tracing::warn!(error = %crate::error::chain(&e), "scheduling the ack follow-up failed");
    }
}

/// When to look again for acks, given how old the newest message still
/// waiting for one is (pure): soon after a send, then less and less often
/// (half its age), never sooner than `followup` nor later than an hour.
pub(crate) fn next_look(newest_age: Duration, followup: Duration) -> Duration {
    (newest_age / 2).clamp(followup, Duration::from_secs(3600).max(followup))
}

/// Opens every chat holding the account's sent-but-unread messages, records
/// what their ticks show, then flags messages undelivered for too long.
/// Returns when to look again (`None`: nothing is waiting).
pub(crate) async fn catch_up(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
) -> Result<Option<Duration>, AckError> {
    let db = d.pool.db();
    let chats = status::chats_awaiting_acks(db, account, d.settings.catch_up_chats).await?;
    for chat in &chats {
        let rows = match page.recent_outgoing(chat, 100).await {
            Ok(r) => r,
            Err(e) if e.is_infrastructure() => return Err(e.into()),
            Err(e) => {
                tracing::debug!(chat, error = %crate::error::chain(&e), "catch-up could not read a chat");
                continue;
            }
        };
        for r in rows {
            if let Some(level) = r.ack.map(|a| a.code()).filter(|c| *c >= 2) {
                apply(d, account, &r.data_id, level, Source::CatchUp).await;
            }
        }
    }
    let flagged = status::flag_undelivered(db, account, d.settings.undelivered_after).await?;
    if flagged > 0 {
        tracing::warn!(%account, messages = flagged, "messages undelivered past the deadline");
        // One health hit per flagged message, at most a few per pass so a
        // backlog does not zero the score at once.
        for _ in 0..flagged.min(5) {
            d.health(account, HealthEvent::Undelivered).await;
        }
    }
    Ok(status::newest_awaiting_age(db, account)
        .await?
        .map(|age| next_look(age, d.settings.ack_followup)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_again_soon_after_a_send_then_rarely() {
        let f = Duration::from_secs(30);
        assert_eq!(next_look(Duration::from_secs(1), f), f);
        assert_eq!(
            next_look(Duration::from_secs(600), f),
            Duration::from_secs(300)
        );
        assert_eq!(
            next_look(Duration::from_secs(86_400), f),
            Duration::from_secs(3600)
        );
        let long = Duration::from_secs(7200);
        assert_eq!(next_look(Duration::from_secs(1), long), long);
    }
}
