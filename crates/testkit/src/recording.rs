//! The `noop-record` handler: succeeds at once and records every job it ran
//! in `queue_handler_records`, so a test can check budgets and exactly-once
//! from the outside (in-process, or through `courier worker --handler
//! noop-record` in a build with the lab).
//!
//! The table is the test kit's, not the product's: [`crate::fresh_database`]
//! creates it in every test database ([`SCHEMA`]), and migration 0012 drops
//! the copy that earlier releases shipped in a production migration.

use std::sync::Arc;

use futures::future::BoxFuture;

use courier::queue::handler::{ClaimedJob, HandlerError, Handlers, JobHandler, Outcome};

/// The records table, created in every test database.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS queue_handler_records (
    job_id      uuid PRIMARY KEY,
    account_id  uuid NOT NULL,
    kind        text NOT NULL,
    -- The send slot the job was granted (NULL for kinds without a budget).
    slot_at     timestamptz,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker      text NOT NULL,
    -- How many times a handler ran for this job (exactly-once checks).
    runs        integer NOT NULL DEFAULT 1
)";

/// Succeeds at once and records the job (job, account, kind, send slot, time,
/// worker; a second run of the same job counts in `runs`).
#[derive(Debug, Clone)]
pub struct RecordingHandler {
    pool: sqlx::PgPool,
    delay: std::time::Duration,
}

impl RecordingHandler {
    /// A recorder writing through `pool`, taking `delay` per job.
    pub fn new(pool: sqlx::PgPool, delay: std::time::Duration) -> Self {
        Self { pool, delay }
    }

    /// A registry with the recorder for every kind.
    pub fn registry(pool: sqlx::PgPool, delay: std::time::Duration) -> Handlers {
        Handlers::new().register_all(Arc::new(Self::new(pool, delay)))
    }
}

impl JobHandler for RecordingHandler {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            sqlx::query(
                "INSERT INTO queue_handler_records (job_id, account_id, kind, slot_at, worker) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (job_id) DO UPDATE SET runs = queue_handler_records.runs + 1",
            )
            .bind(job.job.id)
            .bind(job.job.account_id)
            .bind(&job.job.kind)
            .bind(job.slot_at)
            .bind(&*job.lease.lease.owner)
            .execute(&self.pool)
            .await
            .map_err(|e| HandlerError::Retryable(format!("recording: {e}")))?;
            Ok(Outcome::Completed)
        })
    }
}
