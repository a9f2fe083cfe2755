//! Account health: a score from 0 to 100 that lowers budgets and pauses an
//! account before WhatsApp does something worse to it.
//!
//! # Rules
//!
//! | event | change |
//! |---|---|
//! | a send failed (refused, error ack) | −5 |
//! | a message stayed undelivered past its deadline | −3 |
//! | the session was logged out | −20 |
//! | the account was blocked/banned | score set to 0 |
//! | a message was delivered | +1 |
//! | a message was read | +2 |
//!
//! Recovery therefore happens over time through deliveries and reads. The
//! score is clamped to 0..=100. At or below `health.caution` the budget caps
//! are halved ([`crate::account::budget::Limits::effective`]); below
//! `health.pause_below` the account is paused for `health.pause_for` with the
//! reason recorded, and resumes by itself at the deadline ([`resume_expired`]).
//! Pauses can also be set by hand ([`pause`] with no deadline) and lifted by
//! hand ([`resume`]).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::HealthSettings;

/// Something that happened to an account that moves its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// A send failed.
    SendFailed,
    /// A message was not delivered in time.
    Undelivered,
    /// The session was logged out.
    LoggedOut,
    /// The account was blocked.
    Blocked,
    /// A message was delivered.
    Delivered,
    /// A message was read.
    Read,
}

/// The new score after `event` (pure).
pub fn apply(score: i32, event: HealthEvent) -> i32 {
    let next = match event {
        HealthEvent::SendFailed => score - 5,
        HealthEvent::Undelivered => score - 3,
        HealthEvent::LoggedOut => score - 20,
        HealthEvent::Blocked => 0,
        HealthEvent::Delivered => score + 1,
        HealthEvent::Read => score + 2,
    };
    next.clamp(0, 100)
}

/// Errors of the health store.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The account does not exist.
    #[error("account {0} not found")]
    NoSuchAccount(Uuid),
    /// A query failed.
    #[error("health query")]
    Db(#[from] sqlx::Error),
}

/// Records `event` for an account; pauses it when the score drops below the
/// threshold. Returns the new score.
pub async fn record(
    pool: &PgPool,
    account: Uuid,
    event: HealthEvent,
    settings: &HealthSettings,
) -> Result<i32, HealthError> {
    let mut tx = pool.begin().await?;
    let score: Option<i32> = sqlx::query_scalar(
        "SELECT health_score FROM mkt_wap_accounts WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(account)
    .fetch_optional(&mut *tx)
    .await?;
    let score = score.ok_or(HealthError::NoSuchAccount(account))?;
    let next = apply(score, event);
    sqlx::query("UPDATE mkt_wap_accounts SET health_score = $2 WHERE id = $1")
        .bind(account)
        .bind(next)
        .execute(&mut *tx)
        .await?;
    if next < settings.pause_below && score >= settings.pause_below {
        let until = Utc::now()
            + chrono::Duration::from_std(settings.pause_for).unwrap_or(chrono::Duration::hours(6));
        pause_in(
            &mut tx,
            account,
            &format!("health score {next} below {}", settings.pause_below),
            Some(until),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(next)
}

async fn pause_in(
    conn: &mut sqlx::PgConnection,
    account: Uuid,
    reason: &str,
    until: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    // The status a resume returns to: the one this pause interrupts, kept
    // across a pause of a paused account; statuses a resume cannot return to
    // (a login in progress, a fault) leave it NULL, which resumes to active.
    sqlx::query(
        "UPDATE mkt_wap_accounts SET status = 'paused', pause_reason = $2, paused_until = $3, \
         status_reason = $2, status_changed_at = now(), status_deadline = $3, \
         paused_from = CASE WHEN status = 'paused' THEN paused_from \
                            WHEN status IN ('inactive', 'warming', 'active', 'standby') THEN status END \
         WHERE id = $1 AND status <> 'retired'",
    )
    .bind(account)
    .bind(reason)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pauses an account: with `until`, it resumes by itself then; without, it
/// stays paused until [`resume`]. The queue stops claiming its jobs.
pub async fn pause(
    pool: &PgPool,
    account: Uuid,
    reason: &str,
    until: Option<DateTime<Utc>>,
) -> Result<(), HealthError> {
    let mut conn = pool.acquire().await?;
    pause_in(&mut conn, account, reason, until).await?;
    Ok(())
}

/// Lifts a pause by hand, back to the status the pause interrupted (warm-up,
/// standby, active), and wakes the workers (`courier_jobs`) when the
/// account has jobs waiting: idle slots do not poll a hand-paused account.
pub async fn resume(pool: &PgPool, account: Uuid) -> Result<bool, HealthError> {
    let resumed: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH r AS ( \
            UPDATE mkt_wap_accounts SET status = coalesce(paused_from, 'active'), \
                status_reason = 'resumed by hand', paused_from = NULL, \
                pause_reason = NULL, paused_until = NULL, status_deadline = NULL, \
                status_changed_at = now() WHERE id = $1 AND status = 'paused' RETURNING id) \
         SELECT (SELECT count(*) FROM (SELECT pg_notify('courier_jobs', '') \
                 WHERE EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = r.id \
                               AND j.state IN {RUNNABLE})) n) \
         FROM r",
        RUNNABLE = crate::queue::store::RUNNABLE
    )))
    .bind(account)
    .fetch_optional(pool)
    .await?;
    Ok(resumed.is_some())
}

/// Resumes every pause whose deadline has passed, back to the status each
/// pause interrupted; returns how many.
pub async fn resume_expired(pool: &PgPool) -> Result<u64, HealthError> {
    Ok(sqlx::query(
        "UPDATE mkt_wap_accounts SET status = coalesce(paused_from, 'active'), \
         status_reason = 'pause expired: ' || coalesce(pause_reason, ''), paused_from = NULL, \
         pause_reason = NULL, paused_until = NULL, status_deadline = NULL, \
         status_changed_at = now() \
         WHERE status = 'paused' AND paused_until IS NOT NULL AND paused_until <= now()",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_rules_move_and_clamp() {
        assert_eq!(apply(100, HealthEvent::Read), 100);
        assert_eq!(apply(50, HealthEvent::Delivered), 51);
        assert_eq!(apply(50, HealthEvent::SendFailed), 45);
        assert_eq!(apply(10, HealthEvent::LoggedOut), 0);
        assert_eq!(apply(90, HealthEvent::Blocked), 0);
        assert_eq!(apply(2, HealthEvent::Undelivered), 0);
    }
}
