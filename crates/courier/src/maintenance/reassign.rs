//! Moving work between accounts, and withdrawing it.
//!
//! - [`reassign`]: send jobs that have not started, on an account that became
//!   unavailable (banned, logged out, failed, paused beyond
//!   `scheduler.reassign_after`), move to another eligible account by the
//!   assignment rules. The job keeps its id and idempotency key; only its
//!   `account_id` changes, in one statement guarded by `state IN (runnable)`
//!   under the row lock, so a worker can never be running it (the queue claims
//!   with `FOR UPDATE SKIP LOCKED` and only the account's own jobs). The message
//!   row follows and gets a `reassign` event. With no eligible account the job
//!   is cancelled (its key cleared) and the message goes back to `pending`
//!   with the reason: never dropped.
//! - [`hold_unknown_outcomes`]: a send that was attempted (its outcome is
//!   unknown: the worker died or lost its lease mid-send) on an account that
//!   became unavailable is *not* moved, because only that account's chat can
//!   tell whether it went out; moving it could send it twice. It stays with
//!   its account, and the message and job get a `waiting_reason` that says so,
//!   counted in `courier_messages_outcome_unknown`. When the account comes
//!   back, the next attempt reads its chat and adopts or sends.
//! - [`assign_pending`]: pending messages get an account and a send job once
//!   one is eligible.
//! - [`withdraw_cancelled`]: a cancelled schedule's messages that have not
//!   started are withdrawn (jobs cancelled, messages `failed` with the reason).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::MaintenanceError;
use crate::account::AccountStatus;
use crate::config::Settings;
use crate::jobs::send::SendJob;
use crate::message::assignment;
use crate::queue::{fragments, store, NewJob};
use crate::scheduler::assign::{self, Choice, Need};

/// Most rows one pass handles (the next pass takes the rest).
const PASS_LIMIT: i64 = 10_000;

/// What a reassignment pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reassigned {
    /// Jobs moved to another account.
    pub moved: usize,
    /// Messages sent back to `pending` (no eligible account).
    pub waiting: usize,
}

fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

/// Moves not-started send jobs off unavailable accounts.
pub async fn reassign(pool: &PgPool, settings: &Settings) -> Result<Reassigned, MaintenanceError> {
    let mut tx = pool.begin().await?;
    // Jobs never attempted (attempt 0, no send started): moving them cannot
    // duplicate a send. A job whose outcome is unknown stays with its account,
    // whose chat is the only place to check it.
    #[allow(clippy::type_complexity)]
    let rows: Vec<(Uuid, Uuid, Uuid, Option<Uuid>, Option<Uuid>, Option<Uuid>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT j.id, j.account_id, m.id, m.target_group_id, c.preferred_account_id, \
                    s.account_id \
             FROM queue_jobs j \
             JOIN mkt_wap_accounts a ON a.id = j.account_id \
             JOIN mkt_wap_messages m ON m.id = (j.payload->>'message_id')::uuid AND m.job_id = j.id \
             LEFT JOIN mkt_wap_contacts c ON c.id = m.target_contact_id \
             LEFT JOIN mkt_con_schedule s ON s.id = m.schedule_id \
             WHERE j.kind = 'send' AND j.state IN ('available', 'scheduled', 'retryable') \
               AND j.attempt = 0 AND m.status = 'queued' AND m.attempt_started_at IS NULL \
               AND (a.status IN {unavailable} \
                    OR (a.status = 'paused' AND ( \
                        (a.paused_until IS NULL AND a.status_changed_at < now() - $1) \
                        OR a.paused_until > now() + $1))) \
             ORDER BY j.id LIMIT $2 \
             FOR UPDATE OF j, m SKIP LOCKED",
            unavailable = AccountStatus::UNAVAILABLE_SQL
        )))
        .bind(interval(settings.scheduler.reassign_after))
        .bind(PASS_LIMIT)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Reassigned::default());
    }
    let mut groups: Vec<Uuid> = rows.iter().filter_map(|r| r.3).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut assigner = assign::load(&mut tx, settings, &groups).await?;

    let mut moved: (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>, Vec<String>) = Default::default();
    let mut waiting: (Vec<Uuid>, Vec<Uuid>, Vec<String>) = Default::default();
    for (job, from, message, group, preferred, pinned) in rows {
        let why_moving = assigner
            .account(from)
            .and_then(|a| a.unavailable.clone())
            .unwrap_or_else(|| "is unavailable".into());
        match assigner.choose(&Need {
            pinned,
            group,
            preferred,
        }) {
            Choice::Account(to) if to != from => {
                moved.0.push(job);
                moved.1.push(message);
                moved.2.push(to);
                moved.3.push(format!("account {from} {why_moving}"));
            }
            Choice::Account(_) => {
                // Pinned to the account itself: it is not unavailable by the
                // assigner's rules (e.g. the pause ends soon). Leave it.
            }
            Choice::Wait(w) => {
                waiting.0.push(job);
                waiting.1.push(message);
                waiting.2.push(format!(
                    "{w} (moved off account {from}, which {why_moving})"
                ));
            }
        }
    }
    if !moved.0.is_empty() {
        fragments::move_to_accounts(&mut tx, &moved.0, &moved.2).await?;
        assignment::move_to_accounts(&mut tx, &moved.1, &moved.2, &moved.3).await?;
    }
    if !waiting.0.is_empty() {
        withdraw_to_pending(&mut tx, &waiting.0, &waiting.1, &waiting.2).await?;
    }
    tx.commit().await?;
    let out = Reassigned {
        moved: moved.0.len(),
        waiting: waiting.0.len(),
    };
    tracing::info!(
        moved = out.moved,
        waiting = out.waiting,
        "reassigned queued sends"
    );
    Ok(out)
}

/// The reason a held send carries; it starts with [`OUTCOME_UNKNOWN`].
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// Marks attempted sends held on an unavailable account (see the module
/// docs) with the reason, on the message and its job. Returns how many sends
/// are held in all; a message that is already marked is left as is.
pub async fn hold_unknown_outcomes(
    pool: &PgPool,
    settings: &Settings,
) -> Result<i64, MaintenanceError> {
    // The jobs and the messages are marked in one statement from one look at
    // the accounts, each by its owner's fragment.
    let held: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH h AS (              SELECT j.id AS job, m.id AS message,                     format('%s: a send was attempted on account %s, which is %s; only its chat                             can confirm it, so it is held there and never re-sent from another                             account', $2::text, a.id,                            CASE WHEN a.status = 'paused' THEN 'paused (' || coalesce(a.pause_reason, 'no reason') || ')'                                 ELSE a.status END) AS reason              FROM queue_jobs j              JOIN mkt_wap_accounts a ON a.id = j.account_id              JOIN mkt_wap_messages m ON m.id = (j.payload->>'message_id')::uuid AND m.job_id = j.id              WHERE j.kind = 'send' AND j.state IN ('available', 'scheduled', 'retryable')                AND (j.attempt > 0 OR j.rescues > 0 OR m.attempt_started_at IS NOT NULL)                AND m.status IN ('queued', 'sending')                AND (a.status IN {unavailable}                     OR (a.status = 'paused' AND (                         (a.paused_until IS NULL AND a.status_changed_at < now() - $1)                         OR a.paused_until > now() + $1)))), {}, {} SELECT count(*) FROM h",
        fragments::set_waiting_reasons("jm", "(SELECT job AS id, reason FROM h)"),
        assignment::waiting_reasons_cte("mm", "(SELECT message AS id, reason FROM h)"),
        unavailable = AccountStatus::UNAVAILABLE_SQL,
    )))
    .bind(interval(settings.scheduler.reassign_after))
    .bind(OUTCOME_UNKNOWN)
    .fetch_one(pool)
    .await?;
    metrics::gauge!(crate::metrics::MESSAGES_OUTCOME_UNKNOWN).set(held.0 as f64);
    Ok(held.0)
}

/// Cancels the jobs (clearing their keys so a later job can take them) and
/// puts their messages back to `pending` with the reason.
async fn withdraw_to_pending(
    conn: &mut sqlx::PgConnection,
    jobs: &[Uuid],
    messages: &[Uuid],
    reasons: &[String],
) -> Result<(), sqlx::Error> {
    fragments::withdraw(
        &mut *conn,
        jobs,
        "withdrawn: no eligible account; the message waits as pending",
        true,
    )
    .await?;
    assignment::back_to_pending(&mut *conn, messages, reasons).await
}

/// Gives pending messages (no account yet) an account and a send job when one
/// is eligible; otherwise refreshes their waiting reason. Returns how many got
/// an account.
pub async fn assign_pending(pool: &PgPool, settings: &Settings) -> Result<usize, MaintenanceError> {
    let mut tx = pool.begin().await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        Option<Uuid>,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
    )> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.id, m.target_group_id, c.preferred_account_id, s.account_id, m.waiting_reason \
             FROM mkt_wap_messages m \
             LEFT JOIN mkt_wap_contacts c ON c.id = m.target_contact_id \
             LEFT JOIN mkt_con_schedule s ON s.id = m.schedule_id \
             WHERE m.status = 'pending' AND m.job_id IS NULL \
               AND (s.id IS NULL OR s.status NOT IN ('cancelled', 'paused')) \
               AND NOT EXISTS (SELECT 1 FROM mkt_campaigns hc \
                   WHERE hc.id = m.campaign_id AND {held}) \
             ORDER BY m.created_at LIMIT $1 \
             FOR UPDATE OF m SKIP LOCKED",
        // A held campaign's pending messages wait with the hold's reason
        // (scheduler::campaign) and get no job until it resumes.
        held = crate::queue::store::held_campaign("hc.status")
    )))
    .bind(PASS_LIMIT)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut groups: Vec<Uuid> = rows.iter().filter_map(|r| r.1).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut assigner = assign::load(&mut tx, settings, &groups).await?;
    let mut assigned: Vec<(Uuid, Uuid)> = Vec::new();
    let mut reasons: (Vec<Uuid>, Vec<String>) = Default::default();
    for (message, group, preferred, pinned, old_reason) in rows {
        match assigner.choose(&Need {
            pinned,
            group,
            preferred,
        }) {
            Choice::Account(a) => assigned.push((message, a)),
            Choice::Wait(w) => {
                // Keep a reason that says more (where the message came from).
                if !old_reason
                    .as_deref()
                    .is_some_and(|o| o.starts_with(w.as_str()))
                {
                    reasons.0.push(message);
                    reasons.1.push(w);
                }
            }
        }
    }
    if !reasons.0.is_empty() {
        assignment::set_waiting_reasons(&mut tx, &reasons.0, &reasons.1).await?;
    }
    if !assigned.is_empty() {
        let jobs: Vec<NewJob> = assigned
            .iter()
            .map(|(m, a)| NewJob::new(*a, &SendJob { message_id: *m }))
            .collect::<Result<_, _>>()?;
        let enqueued = store::enqueue_batch_in(&mut tx, &jobs).await?;
        let ids: Vec<Uuid> = assigned.iter().map(|x| x.0).collect();
        let accounts: Vec<Uuid> = assigned.iter().map(|x| x.1).collect();
        let job_ids: Vec<Uuid> = enqueued.iter().map(|e| e.id).collect();
        assignment::assign(&mut tx, &ids, &accounts, &job_ids).await?;
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => "send")
            .increment(enqueued.iter().filter(|e| e.created).count() as u64);
    }
    tx.commit().await?;
    if !assigned.is_empty() {
        tracing::info!(assigned = assigned.len(), "pending messages got an account");
    }
    Ok(assigned.len())
}

/// Withdraws the not-yet-started messages of cancelled schedules. Returns how
/// many were withdrawn.
pub async fn withdraw_cancelled(pool: &PgPool) -> Result<usize, MaintenanceError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT m.id, m.job_id FROM mkt_con_schedule s \
         JOIN mkt_wap_messages m ON m.schedule_id = s.id \
         WHERE s.status = 'cancelled' AND m.status IN ('pending', 'queued') \
           AND m.attempt_started_at IS NULL \
         LIMIT $1 FOR UPDATE OF m SKIP LOCKED",
    )
    .bind(PASS_LIMIT)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let job_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.1).collect();
    // Only jobs that have not started; a running one finishes on its own.
    let cancelled = fragments::withdraw(
        &mut tx,
        &job_ids,
        "withdrawn: its schedule was cancelled",
        false,
    )
    .await?;
    let cancelled: std::collections::HashSet<Uuid> = cancelled.into_iter().collect();
    let withdraw: Vec<Uuid> = rows
        .iter()
        .filter(|(_, job)| job.is_none_or(|j| cancelled.contains(&j)))
        .map(|r| r.0)
        .collect();
    assignment::fail_for_cancelled_schedule(&mut tx, &withdraw).await?;
    tx.commit().await?;
    if !withdraw.is_empty() {
        tracing::info!(
            messages = withdraw.len(),
            "withdrew messages of cancelled schedules"
        );
    }
    Ok(withdraw.len())
}
