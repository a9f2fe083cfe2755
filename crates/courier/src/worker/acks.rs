//! Ack tracking: acks come out of the page as WhatsApp Web raises them
//! (`change:ack` on the `Msg` collection, buffered in the page by the
//! bridge, bounded) and each is turned into a forward-only status update with
//! events ([`crate::message::status::record_ack`]), a health signal
//! (deliveries and reads raise it; messages left undelivered past
//! `delivery.undelivered_after` lower it) and the
//! `courier_ack_latency_seconds` histogram by stage.
//!
//! Three readers share [`apply`]: [`after_send`] (the sent message's ack and
//! whatever the buffer holds), [`watch`] (drains every idle open session's
//! buffer every `WATCH_EVERY`, so an ack reaches the database within a
//! fraction of a second), and [`catch_up`], run when a session reopens before
//! its due work is claimed (`super::hibernate`) and by the `health_check` job
//! (enqueued when a session comes back inside a job, and as the follow-up
//! after sends), which reads the current ack of each sent-but-unread message from
//! the page's message models (`Msg.get(id)`), so acks that arrived while no
//! worker held the account, or that the buffer dropped, are not lost.

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
                    metrics::histogram!(crate::metrics::ACK_SINCE_SEND_SECONDS, "ack" => "delivered")
                        .record(s);
                }
                metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "delivered")
                    .increment(1);
                d.health(account, HealthEvent::Delivered).await;
            }
            if c.read {
                if let Some(s) = c.since_sent {
                    metrics::histogram!(crate::metrics::ACK_SINCE_SEND_SECONDS, "ack" => "read")
                        .record(s);
                }
                metrics::counter!(crate::metrics::MESSAGE_OUTCOMES, "outcome" => "read")
                    .increment(1);
                d.health(account, HealthEvent::Read).await;
            }
        }
        Err(e) => {
            tracing::warn!(wa_id, error = %crate::error::chain(&e), "recording an ack failed")
        }
    }
}

/// Drains the page's ack buffer and records what it held. A drain that
/// reports dropped acks (the bounded buffer overflowed) asks for a catch-up.
pub(crate) async fn drain(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
) -> Result<usize, AckError> {
    let (acks, lost) = page.drain_acks().await?;
    let mut n = 0;
    for (id, level) in acks {
        if level >= 2 {
            apply(d, account, &id, level as i8, Source::AckWatcher).await;
            n += 1;
        }
    }
    if lost > 0 {
        tracing::warn!(%account, lost, "the page's ack buffer overflowed; catching up from the message models");
        let _ = crate::worker::schedule_health_check(d.pool.db(), account, Duration::ZERO).await;
    }
    Ok(n)
}

/// How often [`watch`] drains idle sessions.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Drains the ack buffer of every open session that no job is using, every
/// [`WATCH_EVERY`], until `stop`. A session a job holds is skipped (the job
/// drains after its send).
pub(crate) async fn watch(d: std::sync::Arc<Context>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        for account in d.pool.open_accounts() {
            let Some(page) = d.pool.try_idle_session(account) else {
                continue;
            };
            if let Err(e) = drain(&d, &page, account).await {
                tracing::debug!(%account, error = %crate::error::chain(&e), "draining acks failed");
            }
        }
    }
}

/// The ack step after a send: the message's own ack as the page reported it
/// when the send settled, whatever the page's ack buffer holds, and the
/// follow-up look `delivery.ack_followup` later (a `health_check` job, which
/// catches up). Failures are logged, never fail the send: acks are also
/// caught up later.
pub(crate) async fn after_send(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
    sent: &OutgoingMessage,
) {
    if let Some(level) = sent.ack.map(|a| a.code()).filter(|c| *c >= 2) {
        apply(d, account, &sent.data_id, level, Source::Worker).await;
    }
    if let Err(e) = drain(d, page, account).await {
        tracing::debug!(error = %crate::error::chain(&e), "draining the page's acks failed");
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

/// Drains the page's buffer, then reads the current ack of every
/// sent-but-unread message from the page's message models and records it;
/// then flags messages undelivered for too long. Returns when to look again
/// (`None`: nothing is waiting).
pub(crate) async fn catch_up(
    d: &Context,
    page: &SessionGuard,
    account: Uuid,
) -> Result<Option<Duration>, AckError> {
    let db = d.pool.db();
    drain(d, page, account).await?;
    let ids = status::ids_awaiting_acks(db, account, d.settings.catch_up_chats).await?;
    for chunk in ids.chunks(500) {
        let levels = page.acks_of(chunk).await?;
        for (id, level) in chunk.iter().zip(levels) {
            if let Some(level) = level.filter(|l| *l >= 2) {
                apply(d, account, id, level as i8, Source::CatchUp).await;
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
