//! Retiring an account: an operator takes it out of service for good
//! (`POST /v1/accounts/{id}/retire`), in one transaction:
//!
//! - the account becomes `retired` with the operator's reason; its pause,
//!   QR and stored session snapshot go ([`crate::account::admin::retire_in`]).
//!   The queue never claims a job of a retired account again, so its worker
//!   gives the lease up and closes the browser session after
//!   `browser.idle_close_after`; the account leaves the account gauges;
//! - every job of it that has not started is cancelled (a job running right
//!   now finishes; a retired account records no status change from it);
//! - a message whose send never started goes back to `pending` without an
//!   account: the next reassignment pass gives it to another eligible account
//!   of the pool, as for a banned account. A message pinned to the retired
//!   account by its schedule then waits, with the reason;
//! - a message whose send was attempted (its outcome is unknown) fails with a
//!   reason that says so: only the retired account's chat could tell whether
//!   it went out, so it is not re-sent by itself. An operator's retry sends it
//!   through another account.

use sqlx::PgPool;
use uuid::Uuid;

use super::MaintenanceError;
use crate::account::admin;
use crate::message::assignment;
use crate::queue::{fragments, store::RUNNABLE};

/// What retiring an account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The status the account had.
    pub previous_status: String,
    /// Its jobs cancelled (not started).
    pub jobs_cancelled: usize,
    /// Messages sent back to `pending` for another account.
    pub messages_released: usize,
    /// Messages failed because their outcome is unknown.
    pub messages_failed: usize,
}

/// Retires `account` with `reason` (see the module docs). `None`: there is
/// no such account, or it is already retired.
pub async fn retire(
    pool: &PgPool,
    account: Uuid,
    reason: &str,
) -> Result<Option<Retired>, MaintenanceError> {
    let mut tx = pool.begin().await?;
    let Some(previous_status) = admin::retire_in(&mut tx, account, reason).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    // (job, message of a send, whether that send was attempted)
    let rows: Vec<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT j.id, m.id, \
                coalesce(j.attempt > 0 OR j.rescues > 0 OR m.attempt_started_at IS NOT NULL, false) \
         FROM queue_jobs j \
         LEFT JOIN mkt_wap_messages m ON j.kind IN ('send', 'retry') \
              AND m.id = (j.payload->>'message_id')::uuid AND m.job_id = j.id \
              AND m.status IN ('queued', 'sending') \
         WHERE j.account_id = $1 AND j.state IN {RUNNABLE} \
         ORDER BY j.id FOR UPDATE OF j"
    )))
    .bind(account)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let cancelled = fragments::withdraw(
        &mut tx,
        &ids,
        &format!("withdrawn: account {account} was retired ({reason})"),
        true,
    )
    .await?;
    let cancelled: std::collections::HashSet<Uuid> = cancelled.into_iter().collect();
    let (mut release, mut fail) = (Vec::new(), Vec::new());
    for (job, message, attempted) in &rows {
        if let (Some(m), true) = (message, cancelled.contains(job)) {
            if *attempted {
                fail.push(*m);
            } else {
                release.push(*m);
            }
        }
    }
    if !release.is_empty() {
        let why = format!(
            "account {account} was retired ({reason}); the message waits for another account"
        );
        assignment::back_to_pending(&mut tx, &release, &vec![why; release.len()]).await?;
    }
    if !fail.is_empty() {
        assignment::fail_on_retired_account(
            &mut tx,
            &fail,
            &format!(
                "outcome unknown: a send was attempted on account {account}, which was then \
                 retired ({reason}); only its chat could tell whether it went out, so it is not \
                 re-sent by itself; retry the message to send it through another account"
            ),
        )
        .await?;
    }
    tx.commit().await?;
    let out = Retired {
        previous_status,
        jobs_cancelled: cancelled.len(),
        messages_released: release.len(),
        messages_failed: fail.len(),
    };
    tracing::info!(account_id = %account, jobs_cancelled = out.jobs_cancelled,
        messages_released = out.messages_released, messages_failed = out.messages_failed,
        "account retired");
    Ok(Some(out))
}
