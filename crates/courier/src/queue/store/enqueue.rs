//! Enqueue: one job, a batch (plain INSERT or binary COPY under a savepoint,
//! falling back to ON CONFLICT only when an idempotency key exists), and the
//! in-transaction forms other statements compose.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::queue::{Enqueued, Job, NewJob, QueueError};

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
