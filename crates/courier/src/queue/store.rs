//! Every SQL statement of the queue engine.
//!
//! Writes a worker makes for an account take the account's lease row `FOR
//! SHARE` and check `epoch = $epoch AND owner = $owner` in the same statement:
//! a takeover (which updates that row) waits for them, and after a takeover
//! they match nothing. A fenced write returns `false` / `None`; the caller must
//! stop driving the account.
//!
//! Times come from the database clock (`now()`, `clock_timestamp()`), so
//! several machines with drifting clocks agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::{Enqueued, Job, JobState, Lease, NewJob, Policy, QueueError};
use crate::account::budget::{Limits, Window};

/// States the claim considers (with `run_at <= now()`).
pub(crate) const RUNNABLE: &str = "('available', 'scheduled', 'retryable')";

/// Only maintenance kinds run for a logged-out or banned account: its other
/// jobs stay queued (never claimed, never failed) until it logs in again or
/// the scheduler re-assigns them. `{a}` is the account id expression.
macro_rules! session_gate {
    ($a:literal) => {
        concat!(
            "(kind IN ('login', 'health_check') OR NOT EXISTS (SELECT 1 FROM mkt_wap_accounts g \
             WHERE g.id = ",
            $a,
            " AND g.status IN ('logged_out', 'banned')))"
        )
    };
}

fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

/// Enqueues one job; a repeated idempotency key returns the existing job.
pub async fn enqueue(pool: &PgPool, job: &NewJob) -> Result<Enqueued, QueueError> {
    let mut out = enqueue_batch(pool, std::slice::from_ref(job)).await?;
    Ok(out.pop().expect("one result per job"))
}

/// Enqueues many jobs in one statement (`INSERT … SELECT unnest(…)`).
/// Results are in input order; a key seen before (or earlier in the same
/// batch) returns that job with `created: false`.
pub async fn enqueue_batch(pool: &PgPool, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pool.acquire().await?;
    enqueue_batch_in(&mut conn, jobs).await
}

/// Batches at least this large first try a plain `INSERT` (see
/// [`enqueue_batch_in`]); smaller ones go straight to `ON CONFLICT`.
const PLAIN_INSERT_MIN: usize = 64;

/// The columns of a batch of new jobs, as the arrays the insert unnests.
struct JobColumns<'a> {
    ids: Vec<Uuid>,
    kinds: Vec<&'a str>,
    accounts: Vec<Uuid>,
    payloads: Vec<String>,
    priorities: Vec<i16>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
    keys: Vec<Option<&'a str>>,
}

impl<'a> JobColumns<'a> {
    fn new(jobs: &'a [NewJob], ids: Vec<Uuid>) -> Self {
        debug_assert_eq!(jobs.len(), ids.len());
        Self {
            ids,
            kinds: jobs.iter().map(|j| j.kind.as_str()).collect(),
            accounts: jobs.iter().map(|j| j.account_id).collect(),
            payloads: jobs.iter().map(|j| j.payload.to_string()).collect(),
            priorities: jobs.iter().map(|j| j.priority).collect(),
            run_ats: jobs.iter().map(|j| j.run_at).collect(),
            max_attempts: jobs.iter().map(|j| j.max_attempts).collect(),
            keys: jobs.iter().map(|j| j.idempotency_key.as_deref()).collect(),
        }
    }

    /// `INSERT … SELECT … FROM unnest(…)` of every column, followed by `tail`.
    fn insert<'q>(
        &'q self,
        tail: &str,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO queue_jobs (id, kind, account_id, payload, priority, run_at, state, \
                                    max_attempts, idempotency_key) \
             SELECT id, kind, account_id, payload::jsonb, priority, coalesce(run_at, now()), \
                    CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END, \
                    max_attempts, idempotency_key \
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::int2[], \
                         $6::timestamptz[], $7::int4[], $8::text[]) \
                  AS t(id, kind, account_id, payload, priority, run_at, max_attempts, idempotency_key) \
             {tail}"
        )))
        .bind(&self.ids)
        .bind(&self.kinds)
        .bind(&self.accounts)
        .bind(&self.payloads)
        .bind(&self.priorities)
        .bind(&self.run_ats)
        .bind(&self.max_attempts)
        .bind(&self.keys)
    }

    /// Writes the batch with `COPY … FROM STDIN (FORMAT binary)`: Postgres
    /// inserts its rows a page at a time (one WAL record per page instead of
    /// per row) and reads no `unnest`. Only for jobs due now: `run_at` and
    /// `state` take their defaults (`now()`, `available`). Rows are encoded
    /// and sent [`COPY_CHUNK`] at a time, so the server inserts the first
    /// ones while the rest are encoded.
    async fn copy_in(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
            buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            buf.extend_from_slice(bytes);
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY queue_jobs (id, kind, account_id, payload, priority, max_attempts, \
                 idempotency_key) FROM STDIN (FORMAT binary)",
            )
            .await?;
        let n = self.ids.len();
        let mut start = 0;
        while start < n {
            let end = (start + COPY_CHUNK).min(n);
            let mut buf = Vec::with_capacity(32 + (end - start) * 200);
            if start == 0 {
                buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
                buf.extend_from_slice(&0i32.to_be_bytes()); // flags
                buf.extend_from_slice(&0i32.to_be_bytes()); // header extension
            }
            for i in start..end {
                buf.extend_from_slice(&7i16.to_be_bytes());
                field(&mut buf, self.ids[i].as_bytes());
                field(&mut buf, self.kinds[i].as_bytes());
                field(&mut buf, self.accounts[i].as_bytes());
                // jsonb's binary form: a version byte, then the text.
                buf.extend_from_slice(&(self.payloads[i].len() as i32 + 1).to_be_bytes());
                buf.push(1);
                buf.extend_from_slice(self.payloads[i].as_bytes());
                field(&mut buf, &self.priorities[i].to_be_bytes());
                field(&mut buf, &self.max_attempts[i].to_be_bytes());
                match self.keys[i] {
                    Some(k) => field(&mut buf, k.as_bytes()),
                    None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            if end == n {
                buf.extend_from_slice(&(-1i16).to_be_bytes());
            }
            if let Err(e) = copy.send(buf).await {
                let _ = copy.abort("enqueue failed").await;
                return Err(e);
            }
            start = end;
        }
        copy.finish().await.map(|_| ())
    }
}

/// Rows per message of a batch's `COPY`.
const COPY_CHUNK: usize = 1_000;

/// Whether `e` is a repeated idempotency key.
fn is_key_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.constraint() == Some("queue_jobs_idempotency_key_idx"))
}

/// [`enqueue_batch`] on a connection or inside a transaction, so producers can
/// commit their own rows (messages, schedule status) and the jobs together.
///
/// A batch of [`PLAIN_INSERT_MIN`] jobs or more whose keys are distinct is
/// first written without `ON CONFLICT`, under a savepoint: by `COPY` when every
/// job is due now, else by a plain `INSERT`. `ON CONFLICT` inserts every row
/// speculatively (a look-up of the key, a speculative insertion lock and a
/// confirmation record per row), which took a third of the server's time for
/// a batch of 10 000 new jobs. Only when a key already exists does the
/// savepoint roll back and the batch go through `ON CONFLICT DO NOTHING`,
/// which returns the existing jobs.
pub async fn enqueue_batch_in(
    conn: &mut sqlx::PgConnection,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>, QueueError> {
    use sqlx::Connection;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let n = jobs.len();
    let cols = JobColumns::new(jobs, (0..n).map(|_| Uuid::now_v7()).collect());
    let all_created = |cols: JobColumns<'_>| {
        cols.ids
            .into_iter()
            .map(|id| Enqueued { id, created: true })
            .collect()
    };
    if n >= PLAIN_INSERT_MIN {
        let mut seen = std::collections::HashSet::with_capacity(n);
        if cols.keys.iter().flatten().all(|k| seen.insert(*k)) {
            let mut tx = conn.begin().await?;
            let written = if cols.run_ats.iter().all(Option::is_none) {
                cols.copy_in(&mut tx).await
            } else {
                cols.insert("").execute(&mut *tx).await.map(|_| ())
            };
            match written {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(all_created(cols));
                }
                Err(e) if is_key_conflict(&e) => tx.rollback().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    // One INSERT; only rows whose key already existed (or repeated inside
    // the batch) need a second look-up.
    let inserted: Vec<Uuid> = cols
        .insert(
            "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING id",
        )
        .try_map(|row: sqlx::postgres::PgRow| {
            use sqlx::Row;
            row.try_get::<Uuid, _>(0)
        })
        .fetch_all(&mut *conn)
        .await?;
    if inserted.len() == n {
        return Ok(all_created(cols));
    }
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let missing: Vec<&str> = cols
        .ids
        .iter()
        .zip(&cols.keys)
        .filter(|(id, _)| !inserted.contains(id))
        .filter_map(|(_, k)| *k)
        .collect();
    let existing: std::collections::HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT idempotency_key, id FROM queue_jobs WHERE idempotency_key = ANY($1)",
    )
    .bind(&missing)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    cols.ids
        .iter()
        .zip(&cols.keys)
        .map(|(id, key)| {
            if inserted.contains(id) {
                return Ok(Enqueued {
                    id: *id,
                    created: true,
                });
            }
            key.and_then(|k| existing.get(k))
                .map(|id| Enqueued {
                    id: *id,
                    created: false,
                })
                // Conflicted with a concurrent enqueue whose transaction
                // then rolled back: the caller may simply retry.
                .ok_or_else(|| {
                    QueueError::Db(sqlx::Error::Protocol(
                        "idempotency key conflicted with a vanished job; retry".into(),
                    ))
                })
        })
        .collect()
}

/// Enqueues one job and returns its row: the new one, or the existing one for
/// a repeated idempotency key (`false`). The hot path of `POST /v1/jobs`: one
/// round trip when the key is new.
pub async fn enqueue_one(pool: &PgPool, job: &NewJob) -> Result<(Job, bool), QueueError> {
    for _ in 0..3 {
        let inserted: Option<Job> = sqlx::query_as(
            "INSERT INTO queue_jobs (id, kind, account_id, payload, priority, run_at, state, \
                                     max_attempts, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), \
                     CASE WHEN $6 > now() THEN 'scheduled' ELSE 'available' END, $7, $8) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(job.kind.as_str())
        .bind(job.account_id)
        .bind(&job.payload)
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .bind(&job.idempotency_key)
        .fetch_optional(pool)
        .await?;
        if let Some(j) = inserted {
            return Ok((j, true));
        }
        let existing: Option<Job> =
            sqlx::query_as("SELECT * FROM queue_jobs WHERE idempotency_key = $1")
                .bind(&job.idempotency_key)
                .fetch_optional(pool)
                .await?;
        if let Some(j) = existing {
            return Ok((j, false));
        }
        // The conflicting insert rolled back meanwhile: try again.
    }
    Err(QueueError::Db(sqlx::Error::Protocol(
        "idempotency key conflicted with a vanished job three times".into(),
    )))
}

/// Inserts jobs whose ids the caller chose (to link its own rows to them
/// before they exist) and whose idempotency keys are new by construction (e.g.
/// `send:<new message id>`). One statement; a key that nevertheless exists is an
/// error rather than a silent duplicate.
pub async fn insert_new_jobs_in(
    conn: &mut sqlx::PgConnection,
    jobs: &[NewJob],
    ids: &[Uuid],
) -> Result<(), QueueError> {
    assert_eq!(jobs.len(), ids.len(), "one id per job");
    if jobs.is_empty() {
        return Ok(());
    }
    let inserted = JobColumns::new(jobs, ids.to_vec())
        .insert("")
        .execute(conn)
        .await?
        .rows_affected();
    debug_assert_eq!(inserted as usize, jobs.len());
    Ok(())
}

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

/// Leases up to `limit` accounts that have work and no live lease, in one
/// statement, taking over expired ones (epoch + 1); accounts served longest
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
        "WITH cand AS ( \
            SELECT a.id FROM mkt_wap_accounts a \
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
                          AND j.state IN {RUNNABLE} AND j.run_at <= now() AND {gate}))",
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

/// The lease check shared by fenced writes: a CTE named `lease`.
const LEASE_CTE: &str = "lease AS (SELECT 1 FROM account_leases \
     WHERE account_id = $1 AND epoch = $2 AND owner = $3 FOR SHARE)";

/// Claims the account's next runnable job. `sends_allowed = false` skips
/// budget-spending kinds (their budget is exhausted until a later instant).
/// Returns `None` when nothing is runnable, the account is paused, or the lease
/// is gone.
pub async fn claim(
    pool: &PgPool,
    lease: &Lease,
    sends_allowed: bool,
) -> Result<Option<Job>, QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE}, next AS ( \
            SELECT id FROM queue_jobs \
            WHERE account_id = $1 AND state IN {RUNNABLE} AND run_at <= now() \
              AND ($4 OR kind <> ALL($5)) AND {gate} \
              AND EXISTS (SELECT 1 FROM lease) \
              AND NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = $1 \
                  AND a.status = 'paused' AND (a.paused_until IS NULL OR a.paused_until > now())) \
            ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED \
         ) \
         UPDATE queue_jobs j SET state = 'running', attempt = j.attempt + 1, \
             attempted_at = now(), lease_epoch = $2, attempted_by = $3, waiting_reason = NULL \
         FROM next WHERE j.id = next.id \
         RETURNING j.*",
        gate = session_gate!("$1")
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(sends_allowed)
    .bind(&super::BUDGET_KINDS[..])
    .fetch_optional(pool)
    .await?)
}

/// The outcome of asking for a send slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Granted at this instant (database clock); recorded in the send log.
    Granted(DateTime<Utc>),
    /// A window is full (another view of the log was stale); re-check.
    WindowFull,
    /// The lease is gone: stop driving the account.
    Fenced,
}

/// Grants a send slot for `job_id`: appends to the send log only if the lease
/// is still ours and every window has room, in one statement. The same
/// statement runs the domain's [`Policy`] fragment for the job (the message
/// of a `send`/`retry` job moves to `sending` with its attempt start and
/// event), so a slot and the status change commit together or not at all.
pub async fn reserve_send(
    pool: &PgPool,
    policy: &Policy,
    lease: &Lease,
    job_id: Uuid,
    limits: &Limits,
) -> Result<Reservation, QueueError> {
    let (leased, at): (bool, Option<DateTime<Utc>>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE}, t AS (SELECT clock_timestamp() AS ts), \
         ins AS ( \
            INSERT INTO account_sends (account_id, job_id, epoch, sent_at) \
            SELECT $1, $4, $2, t.ts FROM t \
            WHERE EXISTS (SELECT 1 FROM lease) \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {m})) < $5 \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {h})) < $6 \
              AND (SELECT count(*) FROM account_sends s WHERE s.account_id = $1 \
                   AND s.sent_at > t.ts - make_interval(secs => {d})) < $7 \
            RETURNING job_id, sent_at \
         ), granted AS ( \
            SELECT q.id, q.kind, q.payload, q.attempt FROM queue_jobs q JOIN ins ON q.id = ins.job_id \
         ){policy} \
         SELECT EXISTS (SELECT 1 FROM lease), (SELECT sent_at FROM ins)",
        m = Window::Minute.guarded_secs(),
        h = Window::Hour.guarded_secs(),
        d = Window::Day.guarded_secs(),
        policy = policy.slot_ctes("granted", "(SELECT sent_at FROM ins)"),
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(job_id)
    .bind(i64::from(limits.per_minute))
    .bind(i64::from(limits.per_hour))
    .bind(i64::from(limits.per_day))
    .fetch_one(pool)
    .await?;
    Ok(match (leased, at) {
        (_, Some(at)) => Reservation::Granted(at),
        (true, None) => Reservation::WindowFull,
        (false, None) => Reservation::Fenced,
    })
}

async fn fenced_update(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    set: &str,
    extra: impl FnOnce(
        sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> Result<bool, QueueError> {
    let sql = format!(
        "WITH {LEASE_CTE} UPDATE queue_jobs SET {set}, lease_epoch = NULL \
         WHERE id = $4 AND account_id = $1 AND state = 'running' AND lease_epoch = $2 \
           AND EXISTS (SELECT 1 FROM lease)"
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(lease.account_id)
        .bind(lease.epoch)
        .bind(&*lease.owner)
        .bind(job_id);
    Ok(extra(q).execute(pool).await?.rows_affected() == 1)
}

/// Marks a running job completed. `false`: fenced (the lease is gone).
pub async fn complete(pool: &PgPool, lease: &Lease, job_id: Uuid) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = 'completed', finished_at = now()",
        |q| q,
    )
    .await
}

/// Records a failed attempt: retryable at `retry_at`, or discarded when
/// `retry_at` is `None`. The error is kept in `last_error` and `errors`.
pub async fn fail(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = CASE WHEN $6 THEN 'retryable' ELSE 'discarded' END, \
         run_at = coalesce($7, run_at), \
         finished_at = CASE WHEN $6 THEN NULL ELSE now() END, \
         last_error = $5, \
         errors = errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempt, 'error', $5::text))",
        |q| q.bind(error).bind(retry_at.is_some()).bind(retry_at),
    )
    .await
}

/// Puts a running job back to wait until `until` without spending an attempt.
pub async fn snooze(
    pool: &PgPool,
    lease: &Lease,
    job_id: Uuid,
    until: DateTime<Utc>,
    reason: &str,
) -> Result<bool, QueueError> {
    fenced_update(
        pool,
        lease,
        job_id,
        "state = 'scheduled', run_at = $5, attempt = greatest(attempt - 1, 0), waiting_reason = $6",
        |q| q.bind(until).bind(reason),
    )
    .await
}

/// Snoozes every due budget-spending job of the account to `until` (their
/// budget frees then). They were never claimed, so no attempt is spent.
pub async fn snooze_sends(
    pool: &PgPool,
    lease: &Lease,
    until: DateTime<Utc>,
    reason: &str,
) -> Result<u64, QueueError> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH {LEASE_CTE} UPDATE queue_jobs SET state = 'scheduled', run_at = $4, waiting_reason = $5 \
         WHERE account_id = $1 AND state IN {RUNNABLE} AND run_at < $4 AND kind = ANY($6) \
           AND EXISTS (SELECT 1 FROM lease)"
    )))
    .bind(lease.account_id)
    .bind(lease.epoch)
    .bind(&*lease.owner)
    .bind(until)
    .bind(reason)
    .bind(&super::BUDGET_KINDS[..])
    .execute(pool)
    .await?
    .rows_affected())
}

/// Whether the window of `secs` seconds (a budget window plus
/// `budget::SEND_DEADLINE`) has room for one more send of
/// `lease.account_id` at `clock.ts` with the cap `lease.{cap}`: the cap-th most
/// recent send (one backward index probe) is at or before `ts - W`.
fn window_room(cap: &str, secs: i64) -> String {
    format!(
        "(CASE WHEN lease.known < lease.{cap} THEN true \
         ELSE lease.{cap} > 0 AND coalesce((SELECT s.sent_at FROM account_sends s \
         WHERE s.account_id = lease.account_id ORDER BY s.sent_at DESC \
         OFFSET lease.{cap} - 1 LIMIT 1) <= (SELECT ts FROM clock) - make_interval(secs => {secs}), true) END)"
    )
}

/// One account's request in a [`claim_batch`].
#[derive(Debug, Clone)]
pub struct ClaimAsk {
    /// The lease to claim under.
    pub lease: Lease,
    /// Whether budget-spending kinds may be claimed (the Rust budget said yes).
    pub sends_allowed: bool,
    /// Window caps checked in SQL before a send is granted.
    pub limits: Limits,
    /// An upper bound on the account's sends in any window ending now: the
    /// holder's copy of the send log (loaded under this lease, plus every
    /// slot granted since; only the holder can add to the log), or
    /// `i64::MAX` when there is none. A window whose cap is above it cannot
    /// be full, so its index probe is skipped.
    pub known_sends: i64,
}

/// A job claimed by [`claim_batch`], with its send slot when it spends budget.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRow {
    /// The job, now running.
    #[sqlx(flatten)]
    pub job: Job,
    /// The send slot granted (database clock) for budget-spending kinds.
    pub slot_at: Option<DateTime<Utc>>,
}

/// What one [`claim_batch`] statement did.
#[derive(Debug, Default)]
pub struct Round {
    /// Jobs completed (the others asked for were fenced).
    pub completed: Vec<Uuid>,
    /// Jobs claimed, at most one per account.
    pub claimed: Vec<ClaimedRow>,
}

/// A row of [`claim_batch`]'s result: a completed job's id, or a claimed job.
enum RoundRow {
    Completed(Uuid),
    Claimed(Box<ClaimedRow>),
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for RoundRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        match row.try_get::<Option<Uuid>, _>("completed_id")? {
            Some(id) => Ok(Self::Completed(id)),
            None => Ok(Self::Claimed(Box::new(ClaimedRow::from_row(row)?))),
        }
    }
}

/// One round of a worker's account slots, in one statement: completes the
/// jobs in `done` (`(job, account, epoch)`, each fenced by its lease), then
/// claims the next runnable job of every account in `asks`, and for
/// budget-spending kinds reserves the send slot — and moves the job's message
/// to `sending` with its attempt start and event — in the same statement.
/// Accounts whose lease is gone or that are paused get nothing.
///
/// An account's previous job and its next one can be in the same round: the
/// completion runs first (the claim waits on its row count), so when the
/// claim makes the next job `running`, the one-running-job index sees the
/// previous one as already finished by this transaction.
///
/// Completions need no share lock on the lease row: a takeover rescues the
/// running job (an update of the same job row), so the two serialise on that
/// row and whichever comes second matches nothing. `lease_epoch = epoch` alone
/// says the job is running under that lease (a CHECK ties a non-null epoch to
/// `running`); naming `state = 'running'` too let the planner scan the whole
/// one-running index and filter every running job against every request
/// (1.1 ms of a 1.5 ms statement at 190 running jobs).
///
/// The windows are checked without counting the log: for a window W with cap
/// L, fewer than L sends lie in `(t - W, t]` iff the L-th most recent send is
/// at or before `t - W`, so each window is one backward probe of the
/// `(account_id, sent_at)` index (`OFFSET L-1 LIMIT 1`) instead of a count
/// of every send in it. The probe reads the log itself (the delivery handler
/// moves a slot's `sent_at` forward to when WhatsApp accepted the message, so
/// no copy held elsewhere would do), under the lease's share lock, so nobody
/// else can append for the account meanwhile. Every slot of a round is
/// granted at the instant the windows were checked at (`clock.ts`).
pub async fn claim_batch(
    conn: &mut sqlx::PgConnection,
    policy: &Policy,
    owner: &str,
    done: &[(Uuid, Uuid, i64)],
    asks: &[ClaimAsk],
) -> Result<Round, QueueError> {
    let done_ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
    let done_accounts: Vec<Uuid> = done.iter().map(|d| d.1).collect();
    let done_epochs: Vec<i64> = done.iter().map(|d| d.2).collect();
    let accounts: Vec<Uuid> = asks.iter().map(|a| a.lease.account_id).collect();
    let epochs: Vec<i64> = asks.iter().map(|a| a.lease.epoch).collect();
    let sends_ok: Vec<bool> = asks.iter().map(|a| a.sends_allowed).collect();
    let pm: Vec<i64> = asks
        .iter()
        .map(|a| i64::from(a.limits.per_minute))
        .collect();
    let ph: Vec<i64> = asks.iter().map(|a| i64::from(a.limits.per_hour)).collect();
    let pd: Vec<i64> = asks.iter().map(|a| i64::from(a.limits.per_day)).collect();
    let known: Vec<i64> = asks.iter().map(|a| a.known_sends).collect();
    let rows: Vec<RoundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH fin AS ( \
            SELECT * FROM unnest($10::uuid[], $11::uuid[], $12::int8[]) AS f(id, account_id, epoch) \
         ), done AS ( \
            UPDATE queue_jobs q SET state = 'completed', finished_at = now(), lease_epoch = NULL \
            FROM fin JOIN account_leases l ON l.account_id = fin.account_id AND l.epoch = fin.epoch \
            WHERE l.owner = $7 AND q.id = fin.id AND q.lease_epoch = fin.epoch \
            RETURNING q.id \
         ), done_n AS MATERIALIZED (SELECT count(*) AS n FROM done \
         ), req AS ( \
            SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], \
                                 $9::int8[]) \
                AS r(account_id, epoch, sends_ok, per_minute, per_hour, per_day, known) \
         ), lease AS ( \
            SELECT r.* FROM account_leases l \
            JOIN req r ON r.account_id = l.account_id AND r.epoch = l.epoch \
            WHERE l.owner = $7 ORDER BY l.account_id FOR SHARE OF l \
         ), clock AS MATERIALIZED (SELECT clock_timestamp() AS ts \
         ), budget AS MATERIALIZED ( \
            SELECT lease.account_id, lease.epoch, a.status, \
                   lease.sends_ok \
                   AND {minute} AND {hour} AND {day} \
                   AS may_send \
            FROM lease JOIN mkt_wap_accounts a ON a.id = lease.account_id \
            WHERE NOT (a.status = 'paused' AND (a.paused_until IS NULL OR a.paused_until > now())) \
              AND (SELECT n FROM done_n) >= 0 \
         ), pick AS ( \
            SELECT j.id, budget.epoch FROM budget CROSS JOIN LATERAL ( \
                SELECT q.id FROM queue_jobs q \
                WHERE q.account_id = budget.account_id AND q.state IN {RUNNABLE} AND q.run_at <= now() \
                  AND (budget.may_send OR q.kind <> ALL($8)) \
                  AND (q.kind IN ('login', 'health_check') OR budget.status NOT IN ('logged_out', 'banned')) \
                ORDER BY q.priority, q.run_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED \
            ) j \
         ), claimed AS ( \
            UPDATE queue_jobs q SET state = 'running', attempt = q.attempt + 1, attempted_at = now(), \
                lease_epoch = pick.epoch, attempted_by = $7, waiting_reason = NULL \
            FROM pick WHERE q.id = pick.id \
            RETURNING q.* \
         ), sent AS ( \
            INSERT INTO account_sends (account_id, job_id, epoch, sent_at) \
            SELECT account_id, id, lease_epoch, (SELECT ts FROM clock) FROM claimed WHERE kind = ANY($8) \
         ){policy} \
         SELECT NULL::uuid AS completed_id, claimed.*, \
                CASE WHEN claimed.kind = ANY($8) THEN (SELECT ts FROM clock) END AS slot_at \
         FROM claimed \
         UNION ALL \
         SELECT done.id, (NULL::queue_jobs).*, NULL FROM done",
        minute = window_room("per_minute", Window::Minute.guarded_secs()),
        hour = window_room("per_hour", Window::Hour.guarded_secs()),
        day = window_room("per_day", Window::Day.guarded_secs()),
        policy = policy.slot_ctes("claimed", "(SELECT ts FROM clock)"),
    )))
    .bind(&accounts)
    .bind(&epochs)
    .bind(&sends_ok)
    .bind(&pm)
    .bind(&ph)
    .bind(&pd)
    .bind(owner)
    .bind(&super::BUDGET_KINDS[..])
    .bind(&known)
    .bind(&done_ids)
    .bind(&done_accounts)
    .bind(&done_epochs)
    .fetch_all(conn)
    .await?;
    let mut round = Round::default();
    for row in rows {
        match row {
            RoundRow::Completed(id) => round.completed.push(id),
            RoundRow::Claimed(c) => round.claimed.push(*c),
        }
    }
    Ok(round)
}

/// What an account holder needs to know when it found nothing to claim.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AccountWork {
    /// Earliest `run_at` among the account's runnable jobs (any kind).
    pub next_any: Option<DateTime<Utc>>,
    /// Earliest among non-budget kinds.
    pub next_other: Option<DateTime<Utc>>,
    /// The account is paused.
    pub paused: bool,
    /// Database clock.
    pub now: DateTime<Utc>,
}

/// The account's next work.
pub async fn account_work(pool: &PgPool, account_id: Uuid) -> Result<AccountWork, QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT min(run_at) FROM queue_jobs WHERE account_id = $1 AND state IN {RUNNABLE} \
                   AND {gate}) AS next_any, \
                (SELECT min(run_at) FROM queue_jobs WHERE account_id = $1 AND state IN {RUNNABLE} \
                   AND kind <> ALL($2) AND {gate}) AS next_other, \
                EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = $1 AND a.status = 'paused' \
                   AND (a.paused_until IS NULL OR a.paused_until > now())) AS paused, \
                now() AS now",
        gate = session_gate!("$1")
    )))
    .bind(account_id)
    .bind(&super::BUDGET_KINDS[..])
    .fetch_one(pool)
    .await?)
}

/// How many of the earliest deferred jobs [`next_free_due`] looks at.
const NEXT_DUE_SCAN: i64 = 1_000;

/// When an idle slot should look for work again, and the database clock. An
/// idle slot asks this after leasing found no free account with due work, so
/// what it waits for is one of:
/// - the earliest `run_at` among deferred (`scheduled`, `retryable`) jobs of
///   accounts nobody holds, the whole account's pause included: a job of an
///   account paused until T comes due at T at the earliest, and a job of an
///   account paused by hand (no deadline) waits for the resume, which
///   notifies. Only the [`NEXT_DUE_SCAN`] earliest deferred jobs are looked at
///   (in `run_at` order, by `queue_jobs_wake_idx`): when all of those belong to
///   held accounts the answer is `None` and the slot sleeps its
///   `queue.poll_interval` (or until a NOTIFY);
/// - the end of a timed pause of a free account that has runnable jobs.
///
/// `available` jobs are due already (see migration 0011), so a free account
/// holding one was either just leased by someone else or is paused: neither
/// is a reason to look again before the pause ends. Counting them (as this
/// did before) made every idle slot of every worker ask again every 5 ms for
/// as long as any account with queued jobs was paused.
pub async fn next_free_due(
    pool: &PgPool,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), QueueError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT least( \
            (SELECT min(greatest(j.run_at, CASE WHEN a.status = 'paused' THEN a.paused_until END)) \
             FROM (SELECT run_at, account_id, kind FROM queue_jobs \
                   WHERE state IN ('scheduled', 'retryable') \
                   ORDER BY run_at LIMIT {NEXT_DUE_SCAN}) j \
             JOIN mkt_wap_accounts a ON a.id = j.account_id \
             WHERE {gate} \
               AND NOT (a.status = 'paused' AND a.paused_until IS NULL) AND {free}), \
            (SELECT min(a.paused_until) FROM mkt_wap_accounts a \
             WHERE a.status = 'paused' AND a.paused_until > now() AND {free} \
               AND EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id \
                           AND j.state IN {RUNNABLE} AND {gate}))), now()",
        gate = session_gate!("j.account_id"),
        // Both parts join the account as `a`: nobody holds a live lease on it.
        free = "NOT EXISTS (SELECT 1 FROM account_leases l WHERE l.account_id = a.id \
                AND l.owner IS NOT NULL AND l.expires_at > now())"
    )))
    .fetch_one(pool)
    .await?)
}

/// The account facts the budget needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountBudgetRow {
    /// Per-account overrides.
    pub rate_limit_config: serde_json::Value,
    /// IANA time zone name.
    pub timezone: String,
    /// For the warm-up ladder.
    pub created_at: DateTime<Utc>,
    /// 0..=100.
    pub health_score: i32,
    /// Automatic pause end.
    pub paused_until: Option<DateTime<Utc>>,
    /// Send slots of the last 24 h, ascending.
    pub sends: Vec<DateTime<Utc>>,
}

/// Loads the account's budget facts and its send log of the last day.
pub async fn load_budget(
    pool: &PgPool,
    account_id: Uuid,
) -> Result<Option<AccountBudgetRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT a.rate_limit_config, a.timezone, a.created_at, a.health_score, \
                CASE WHEN a.status = 'paused' THEN a.paused_until END AS paused_until, \
                coalesce(array(SELECT s.sent_at FROM account_sends s WHERE s.account_id = a.id \
                   AND s.sent_at > now() - interval '86420 seconds' ORDER BY s.sent_at), '{}') AS sends \
         FROM mkt_wap_accounts a WHERE a.id = $1",
    )
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

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
