//! Account leases: acquiring (with the rescue of a dead holder's running
//! job), heartbeats, hand-over checks and release.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{interval, RUNNABLE};
use crate::queue::{Lease, QueueError};

/// Leases up to `limit` accounts (or queue lanes, see [`super::create_lane`])
/// that have work and no live lease, in one statement, taking over expired ones (epoch + 1); accounts served longest
/// ago come first. Jobs left running under an older epoch (their worker
/// crashed or lost the lease) are returned to the queue right after, without
/// counting the attempt; after `max_rescues` returns a job is discarded (a
/// crash loop). Returns the leases and the database clock.
pub async fn acquire_leases(
    pool: &PgPool,
    owner: &str,
    ttl: Duration,
    max_rescues: i32,
    limit: usize,
) -> Result<Vec<(Lease, DateTime<Utc>)>, QueueError> {
    // The candidate accounts are locked FOR NO KEY UPDATE: the foreign keys
    // of jobs and the send log take KEY SHARE locks on the account, and a
    // stronger lock here deadlocks with them.
    // No transaction around the rescue: once the lease row carries the new
    // epoch, no older holder can claim or write (fenced), so the rescue that
    // follows sees every job they left running; if this process dies between
    // the two, the next holder's rescue does the same.
    let rows: Vec<(Uuid, i64, DateTime<Utc>, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH cand_account AS ( \
            SELECT a.id, l.heartbeat_at FROM mkt_wap_accounts a \
            LEFT JOIN account_leases l ON l.account_id = a.id \
            WHERE (l.account_id IS NULL OR l.owner IS NULL OR l.expires_at < now()) \
              AND NOT (a.status = 'paused' AND (a.paused_until IS NULL OR a.paused_until > now())) \
              AND (EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id \
                           AND j.state IN {RUNNABLE} AND j.run_at <= now() AND {gate}) \
                   OR EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id \
                              AND j.state = 'running')) \
            ORDER BY l.heartbeat_at NULLS FIRST \
            LIMIT $3 \
            FOR NO KEY UPDATE OF a SKIP LOCKED \
         ), cand_lane AS ( \
            SELECT q.id, l.heartbeat_at FROM queue_lanes q \
            LEFT JOIN account_leases l ON l.account_id = q.id \
            WHERE (l.account_id IS NULL OR l.owner IS NULL OR l.expires_at < now()) \
              AND (EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = q.id \
                           AND j.state IN {RUNNABLE} AND j.run_at <= now()) \
                   OR EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = q.id \
                              AND j.state = 'running')) \
            ORDER BY l.heartbeat_at NULLS FIRST \
            LIMIT $3 \
            FOR NO KEY UPDATE OF q SKIP LOCKED \
         ), cand AS ( \
            SELECT id FROM (SELECT * FROM cand_account UNION ALL SELECT * FROM cand_lane) c \
            ORDER BY heartbeat_at NULLS FIRST LIMIT $3 \
         ) \
         INSERT INTO account_leases AS l (account_id, owner, epoch, expires_at, heartbeat_at, acquired_at) \
         SELECT id, $1, 1, now() + $2, now(), now() FROM cand \
         ON CONFLICT (account_id) DO UPDATE SET owner = EXCLUDED.owner, epoch = l.epoch + 1, \
             expires_at = EXCLUDED.expires_at, heartbeat_at = now(), acquired_at = now() \
           WHERE l.owner IS NULL OR l.expires_at < now() \
         RETURNING l.account_id, l.epoch, now(), \
             EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = l.account_id AND j.state = 'running')",
        gate = session_gate!("a.id")
    )))
    .bind(owner)
    .bind(interval(ttl))
    .bind(limit.max(1) as i64)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (account_id, epoch, db_now, left_running) in rows {
        // A job claimed by the old holder at the very moment of the takeover
        // can escape this look; the one-running index then refuses our claim,
        // the slot gives the account up, and the next holder rescues it.
        if left_running {
            let mut conn = pool.acquire().await?;
            rescue_in(&mut conn, account_id, epoch, max_rescues).await?;
        }
        out.push((
            Lease {
                account_id,
                epoch,
                owner: owner.into(),
            },
            db_now,
        ));
    }
    Ok(out)
}

/// Leases a specific account (tests, and a worker that must drive one account).
pub async fn acquire_account(
    pool: &PgPool,
    account_id: Uuid,
    owner: &str,
    ttl: Duration,
    max_rescues: i32,
) -> Result<Option<Lease>, QueueError> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO account_leases AS l (account_id, owner, epoch, expires_at) \
         VALUES ($1, $2, 1, now() + $3) \
         ON CONFLICT (account_id) DO UPDATE SET owner = EXCLUDED.owner, epoch = l.epoch + 1, \
             expires_at = EXCLUDED.expires_at, heartbeat_at = now(), acquired_at = now() \
           WHERE l.owner IS NULL OR l.expires_at < now() \
         RETURNING l.epoch",
    )
    .bind(account_id)
    .bind(owner)
    .bind(interval(ttl))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((epoch,)) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    rescue_in(&mut tx, account_id, epoch, max_rescues).await?;
    tx.commit().await?;
    Ok(Some(Lease {
        account_id,
        epoch,
        owner: owner.into(),
    }))
}

async fn rescue_in(
    conn: &mut sqlx::PgConnection,
    account_id: Uuid,
    epoch: i64,
    max_rescues: i32,
) -> Result<u64, sqlx::Error> {
    let n: Vec<(String,)> = sqlx::query_as(
        "UPDATE queue_jobs SET \
            state = CASE WHEN rescues + 1 >= $3 THEN 'discarded' ELSE 'available' END, \
            finished_at = CASE WHEN rescues + 1 >= $3 THEN now() END, \
            attempt = greatest(attempt - 1, 0), rescues = rescues + 1, \
            lease_epoch = NULL, run_at = now(), \
            last_error = CASE WHEN rescues + 1 >= $3 \
                THEN 'discarded: returned ' || (rescues + 1) || ' times by crashes or lost leases' \
                ELSE last_error END, \
            errors = errors || jsonb_build_array(jsonb_build_object( \
                'at', now(), 'attempt', attempt, \
                'error', 'rescued: its worker lost the lease (epoch ' || lease_epoch || ') while running')) \
         WHERE account_id = $1 AND state = 'running' AND lease_epoch < $2 \
         RETURNING kind",
    )
    .bind(account_id)
    .bind(epoch)
    .bind(max_rescues)
    .fetch_all(conn)
    .await?;
    for (kind,) in &n {
        metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind.clone(), "outcome" => "rescued")
            .increment(1);
    }
    let n = n.len() as u64;
    if n > 0 {
        tracing::warn!(%account_id, epoch, jobs = n, "returned jobs left running by a lost lease");
    }
    Ok(n)
}

/// Extends the leases this owner still holds; returns the accounts kept.
pub async fn extend_leases(
    pool: &PgPool,
    owner: &str,
    leases: &[(Uuid, i64)],
    ttl: Duration,
) -> Result<Vec<Uuid>, QueueError> {
    let (accounts, epochs): (Vec<Uuid>, Vec<i64>) = leases.iter().copied().unzip();
    Ok(sqlx::query_scalar(
        // Rows are locked in account order, like the batched claim and
        // complete, so the heartbeat never deadlocks with them.
        "WITH mine AS ( \
            SELECT l.account_id FROM account_leases l \
            JOIN unnest($1::uuid[], $2::int8[]) AS h(account_id, epoch) \
              ON l.account_id = h.account_id AND l.epoch = h.epoch \
            WHERE l.owner = $3 ORDER BY l.account_id FOR NO KEY UPDATE OF l \
         ) \
         UPDATE account_leases l SET expires_at = now() + $4, heartbeat_at = now() \
         FROM mine WHERE l.account_id = mine.account_id \
         RETURNING l.account_id",
    )
    .bind(&accounts)
    .bind(&epochs)
    .bind(owner)
    .bind(interval(ttl))
    .fetch_all(pool)
    .await?)
}

/// Whether some account nobody holds (or whose lease expired) has due work
/// and is not paused: lease rotation gives a slot up only when others wait.
pub async fn others_waiting(pool: &PgPool) -> Result<bool, QueueError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM mkt_wap_accounts a \
            LEFT JOIN account_leases l ON l.account_id = a.id \
            WHERE (l.account_id IS NULL OR l.owner IS NULL OR l.expires_at < now()) \
              AND NOT (a.status = 'paused' AND (a.paused_until IS NULL OR a.paused_until > now())) \
              AND EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id \
                          AND j.state IN {RUNNABLE} AND j.run_at <= now() AND {gate})) \
            OR EXISTS (SELECT 1 FROM queue_lanes q \
            LEFT JOIN account_leases l ON l.account_id = q.id \
            WHERE (l.account_id IS NULL OR l.owner IS NULL OR l.expires_at < now()) \
              AND EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = q.id \
                          AND j.state IN {RUNNABLE} AND j.run_at <= now()))",
        gate = session_gate!("a.id")
    )))
    .fetch_one(pool)
    .await?)
}

/// Releases a lease (keeps the row so the epoch only grows) and wakes other
/// workers when the account still has due work. `heartbeat_at` is set to the
/// release, so the account goes to the back of the line: leasing prefers the
/// accounts served longest ago (the rotation's fairness).
pub async fn release_lease(pool: &PgPool, lease: &Lease) -> Result<bool, QueueError> {
    let row: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH r AS ( \
            UPDATE account_leases SET owner = NULL, expires_at = now(), heartbeat_at = now() \
            WHERE account_id = $1 AND epoch = $2 AND owner = $3 RETURNING account_id \
         ) \
         SELECT (SELECT count(*) FROM (SELECT pg_notify('courier_jobs', '') \
                 WHERE EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = r.account_id \
                               AND j.state IN {RUNNABLE} AND j.run_at <= now())) n) \
         FROM r"
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Releases every lease `owner` holds (shutdown's safety net).
pub async fn release_all(pool: &PgPool, owner: &str) -> Result<u64, QueueError> {
    Ok(
        sqlx::query("UPDATE account_leases SET owner = NULL, expires_at = now() WHERE owner = $1")
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

// ---------------------------------------------------------------------------
// Claiming and finishing (all fenced).
// ---------------------------------------------------------------------------
