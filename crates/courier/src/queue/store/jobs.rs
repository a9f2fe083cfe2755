//! Reading, cancelling, counting and pruning jobs, and pruning the send log.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{interval, RUNNABLE};
use crate::queue::{Job, JobState, QueueError};

/// Reads a job.
pub async fn get_job(pool: &PgPool, id: Uuid) -> Result<Option<Job>, QueueError> {
    Ok(sqlx::query_as("SELECT * FROM queue_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Cancels a job that has not started. A running or finished job is refused
/// with its state.
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<Job, QueueError> {
    let job: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE queue_jobs SET state = 'cancelled', finished_at = now(), waiting_reason = NULL \
         WHERE id = $1 AND state IN {RUNNABLE} RETURNING *"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if let Some(job) = job {
        return Ok(job);
    }
    match get_job(pool, id).await? {
        None => Err(QueueError::NotFound(id)),
        Some(j) => Err(QueueError::NotCancellable {
            id,
            state: j.state(),
        }),
    }
}

/// Deletes finished jobs older than `retention`, at most `limit` per call.
pub async fn prune(pool: &PgPool, retention: Duration, limit: i64) -> Result<u64, QueueError> {
    Ok(sqlx::query(
        "DELETE FROM queue_jobs WHERE id IN ( \
            SELECT id FROM queue_jobs WHERE finished_at IS NOT NULL \
              AND finished_at < now() - $1 LIMIT $2)",
    )
    .bind(interval(retention))
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes send-log rows older than every window (they can no longer count).
pub async fn prune_send_log(pool: &PgPool) -> Result<u64, QueueError> {
    Ok(
        sqlx::query("DELETE FROM account_sends WHERE sent_at < now() - interval '2 days'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

// ---------------------------------------------------------------------------
// Leases.
// ---------------------------------------------------------------------------

/// Counts jobs by state (tests, stats).
pub async fn count_by_state(pool: &PgPool) -> Result<Vec<(JobState, i64)>, QueueError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM queue_jobs GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n)| JobState::parse(&s).map(|s| (s, n)))
        .collect())
}
