//! The maintenance service: every periodic task that keeps accounts,
//! messages and the queue moving, run by the scheduler leader (one process in
//! the cluster), each task on its own interval. Workers run none of their own.
//!
//! | task | what |
//! |---|---|
//! | `health_checks` | a `health_check` job for every account with a session |
//! | `discover` | a `discover` job (group rediscovery) for every active account |
//! | `sweep` | messages whose job was discarded without an outcome become `failed`; failed messages still retryable get a `retry` job |
//! | `reap` | timed pauses that ended resume; login statuses past their `status_deadline` (+5 s) move on by the login machine's one rule ([`crate::account::login::LoginState::on_deadline`]), with the reason |
//! | `prune` | finished jobs past `queue.retention`, the old send log, delivered webhook deliveries past `webhooks.retain_delivered`, dead letters past `webhooks.retain_dead`, replaced secrets past their overlap, and events past `webhooks.events_retain` that no pending delivery or dead letter needs, are deleted ([`prune`]) |
//! | `reassign` | queued sends leave unavailable accounts; pending messages get one |
//!
//! The tasks choose what to change and when; the rows change through their
//! owners (`crate::message::status`, `crate::message::assignment`,
//! `crate::queue::fragments`), so this module writes only `scheduler_tasks`.
//!
//! A task run is claimed in `scheduler_tasks` (`last_run_at` moves forward in
//! the claiming statement), so a leader hand-over neither repeats a daily task
//! nor forgets it, and two processes cannot run the same task at once by
//! accident. Jobs carry an idempotency key per interval bucket as well.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub mod reassign;
pub mod retire;

use crate::account::{health, login};
use crate::config::Settings;
use crate::jobs::discover::DiscoverJob;
use crate::jobs::maintenance::HealthCheckJob;
use crate::jobs::retry::RetryJob;
use crate::queue::{store, NewJob};

/// Errors of a maintenance task.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// A query failed.
    #[error("maintenance query")]
    Db(#[from] sqlx::Error),
    /// Writing messages or jobs failed.
    #[error("maintenance enqueue")]
    Queue(#[from] crate::queue::QueueError),
    /// Resuming expired pauses failed.
    #[error("resuming expired pauses")]
    Health(#[from] health::HealthError),
    /// Pruning webhook deliveries failed.
    #[error("pruning webhook deliveries")]
    Webhook(#[from] crate::webhook::WebhookError),
}

/// The maintenance tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Health-check jobs for every account.
    HealthChecks,
    /// Group rediscovery.
    Discover,
    /// Retry failed, still-retryable messages.
    Sweep,
    /// Move stuck accounts on.
    Reap,
    /// Delete finished jobs past retention.
    Prune,
    /// Reassign and assign.
    Reassign,
}

impl Task {
    /// Every task, in the order a tick runs them.
    pub const ALL: [Task; 6] = [
        Task::Reap,
        Task::Reassign,
        Task::HealthChecks,
        Task::Discover,
        Task::Sweep,
        Task::Prune,
    ];

    /// The name in `scheduler_tasks`.
    pub fn name(self) -> &'static str {
        match self {
            Task::HealthChecks => "health_checks",
            Task::Discover => "discover",
            Task::Sweep => "sweep",
            Task::Reap => "reap",
            Task::Prune => "prune",
            Task::Reassign => "reassign",
        }
    }

    /// How often it runs.
    pub fn every(self, settings: &Settings) -> Duration {
        let s = &settings.scheduler;
        match self {
            Task::HealthChecks => s.health_check_interval,
            Task::Discover => s.discover_interval,
            Task::Sweep => s.sweep_interval,
            Task::Reap => s.reap_interval,
            Task::Prune => s.prune_interval,
            Task::Reassign => s.reassign_interval,
        }
    }
}

fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

/// Claims a run of `task` if its interval has passed; returns the database
/// clock when claimed.
pub async fn claim(
    pool: &PgPool,
    task: Task,
    every: Duration,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO scheduler_tasks AS t (name, last_run_at) VALUES ($1, now()) \
         ON CONFLICT (name) DO UPDATE SET last_run_at = now() \
           WHERE t.last_run_at <= now() - $2 \
         RETURNING now()",
    )
    .bind(task.name())
    .bind(interval(every))
    .fetch_optional(pool)
    .await
}

async fn record(pool: &PgPool, task: Task, result: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE scheduler_tasks SET last_result = $2 WHERE name = $1")
        .bind(task.name())
        .bind(result)
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs every task whose interval has passed; returns (task, result) lines.
pub async fn run_due(pool: &PgPool, settings: &Settings) -> Vec<(Task, String)> {
    let mut out = Vec::new();
    for task in Task::ALL {
        let every = task.every(settings);
        let now = match claim(pool, task, every).await {
            Ok(Some(now)) => now,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(task = task.name(), error = %crate::error::chain(&e), "claiming a maintenance task failed");
                continue;
            }
        };
        let result = run(pool, settings, task, now).await;
        let line = match &result {
            Ok(line) => line.clone(),
            Err(e) => format!("error: {}", crate::error::chain(e)),
        };
        match &result {
            Ok(_) => tracing::debug!(task = task.name(), result = %line, "maintenance"),
            Err(_) => tracing::warn!(task = task.name(), result = %line, "maintenance failed"),
        }
        if let Err(e) = record(pool, task, &line).await {
            tracing::warn!(task = task.name(), error = %crate::error::chain(&e), "recording a maintenance result failed");
        }
        out.push((task, line));
    }
    out
}

/// Runs one task now (regardless of its interval).
pub async fn run(
    pool: &PgPool,
    settings: &Settings,
    task: Task,
    now: DateTime<Utc>,
) -> Result<String, MaintenanceError> {
    let bucket = |every: Duration| now.timestamp() / (every.as_secs().max(1) as i64);
    Ok(match task {
        Task::HealthChecks => {
            let b = bucket(settings.scheduler.health_check_interval);
            let n = per_account_jobs(
                pool,
                "('active', 'warming', 'standby', 'paused')",
                "health_check",
                |id| {
                    Ok(NewJob::new(id, &HealthCheckJob { account_id: id })?
                        .priority(10)
                        .idempotency_key(Some(format!("health_check:{id}:{b}"))))
                },
            )
            .await?;
            format!("{n} health_check job(s) enqueued")
        }
        Task::Discover => {
            let b = bucket(settings.scheduler.discover_interval);
            let n = per_account_jobs(pool, "('active')", "discover", |id| {
                Ok(NewJob::new(id, &DiscoverJob { account_id: id })?
                    .priority(50)
                    .idempotency_key(Some(format!("discover:{id}:{b}"))))
            })
            .await?;
            format!("{n} discover job(s) enqueued")
        }
        Task::Sweep => {
            let orphans = crate::message::status::fail_orphans(pool).await?;
            let n = sweep(
                pool,
                settings.scheduler.sweep_window,
                settings.delivery.max_attempts,
            )
            .await?;
            format!(
                "{orphans} orphaned message(s) failed; {n} failed message(s) re-queued for retry"
            )
        }
        Task::Reap => {
            let resumed = health::resume_expired(pool).await?;
            let moved = login::reap_expired(pool, login::REAP_GRACE).await?;
            format!("{resumed} expired pause(s) resumed; {moved} stuck account(s) moved on")
        }
        Task::Prune => {
            let jobs = store::prune(pool, settings.queue.retention, 10_000).await?;
            metrics::counter!(crate::metrics::ROWS_PRUNED, "table" => "queue_jobs").increment(jobs);
            let sends = store::prune_send_log(pool).await?;
            let events = prune(pool, settings, now).await?;
            format!("{jobs} finished job(s) and {sends} send-log row(s) pruned; {events}")
        }
        Task::Reassign => {
            let r = reassign::reassign(pool, settings).await?;
            let held = reassign::hold_unknown_outcomes(pool, settings).await?;
            let assigned = reassign::assign_pending(pool, settings).await?;
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM mkt_wap_messages WHERE status = 'pending' AND job_id IS NULL",
            )
            .fetch_one(pool)
            .await?;
            metrics::gauge!(crate::metrics::MESSAGES_WAITING_ACCOUNT).set(waiting as f64);
            format!(
                "{} job(s) moved, {} sent back to pending, {held} held (outcome unknown), \
                 {assigned} pending assigned, {waiting} waiting",
                r.moved, r.waiting
            )
        }
    })
}

/// Longest a run spends on each retention table; what is left waits for the
/// next run (`scheduler.prune_interval`). The scheduler's tick runs the
/// maintenance service, so a huge backlog must not hold it.
pub const PRUNE_BUDGET: Duration = Duration::from_secs(5);

/// Retention of the event log and the webhook deliveries (docs/webhooks.md):
///
/// 1. delivered deliveries older than `webhooks.retain_delivered` (by
///    `delivered_at`) and dead letters older than `webhooks.retain_dead` (by
///    `dead_at`) go; a pending delivery never does;
/// 2. replaced secrets whose overlap ended are forgotten;
/// 3. events older than `webhooks.events_retain` go, except those a pending
///    delivery or a dead letter still needs ([`crate::webhook::HOLDS_EVENT`]).
///
/// Every statement deletes at most `webhooks.prune_batch` rows in its own
/// transaction; each table gets [`PRUNE_BUDGET`] per run. Returns the
/// summary line; logs progress and counts [`crate::metrics::ROWS_PRUNED`].
pub async fn prune(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<String, MaintenanceError> {
    use crate::webhook::{self, Finished};
    let w = &settings.webhooks;
    let batch = i64::from(w.prune_batch);
    let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let mut deliveries = [(0u64, 0u32, false); 2];
    for (slot, (which, keep)) in [
        (Finished::Delivered, w.retain_delivered),
        (Finished::Dead, w.retain_dead),
    ]
    .into_iter()
    .enumerate()
    {
        let started = std::time::Instant::now();
        let r = webhook::prune(pool, which, ago(keep), batch, PRUNE_BUDGET).await?;
        metrics::counter!(crate::metrics::ROWS_PRUNED, "table" => "webhook_deliveries")
            .increment(r.0);
        if r.0 > 0 {
            tracing::info!(
                status = which.as_str(),
                deleted = r.0,
                batches = r.1,
                budget_spent = r.2,
                took_ms = started.elapsed().as_millis() as u64,
                "pruned webhook deliveries"
            );
        }
        deliveries[slot] = r;
    }
    let secrets = webhook::forget_expired_secrets(pool).await?;
    let started = std::time::Instant::now();
    let ev = crate::events::prune(
        pool,
        ago(w.events_retain),
        webhook::HOLDS_EVENT,
        batch,
        PRUNE_BUDGET,
    )
    .await?;
    metrics::counter!(crate::metrics::ROWS_PRUNED, "table" => "courier_events")
        .increment(ev.deleted);
    if ev.deleted > 0 || ev.kept > 0 {
        tracing::info!(
            deleted = ev.deleted,
            kept_for_deliveries = ev.kept,
            batches = ev.batches,
            budget_spent = ev.budget_spent,
            took_ms = started.elapsed().as_millis() as u64,
            "pruned the event log"
        );
    }
    let more = |spent: bool| {
        if spent {
            " (time budget spent; more next run)"
        } else {
            ""
        }
    };
    Ok(format!(
        "{} event(s) pruned, {} kept for pending deliveries or dead letters{}; \
         {} delivered and {} dead webhook deliveries pruned{}{}; {secrets} replaced secret(s) forgotten",
        ev.deleted,
        ev.kept,
        more(ev.budget_spent),
        deliveries[0].0,
        deliveries[1].0,
        more(deliveries[0].2),
        more(deliveries[1].2),
    ))
}

/// Enqueues one job per account in `statuses` that has no such job waiting or
/// running already (a stalled account does not pile them up).
async fn per_account_jobs(
    pool: &PgPool,
    statuses: &str,
    kind: &str,
    make: impl Fn(Uuid) -> Result<NewJob, crate::queue::QueueError>,
) -> Result<usize, MaintenanceError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT a.id FROM mkt_wap_accounts a WHERE a.status IN {statuses} \
           AND NOT EXISTS (SELECT 1 FROM queue_jobs j WHERE j.account_id = a.id AND j.kind = $1 \
                           AND j.state IN ('available', 'scheduled', 'retryable', 'running')) \
         ORDER BY a.id"
    )))
    .bind(kind)
    .fetch_all(pool)
    .await?;
    let jobs: Vec<NewJob> = ids.into_iter().map(make).collect::<Result<_, _>>()?;
    let out = store::enqueue_batch(pool, &jobs).await?;
    let created = out.iter().filter(|e| e.created).count();
    metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => kind.to_string())
        .increment(created as u64);
    Ok(created)
}

/// Failed messages that are still retryable — their send job gave up
/// (`discarded`), the failure was not permanent (bad media, an unknown chat:
/// another attempt would only spend a budget slot and health), they have
/// retries left, they have had fewer than `max_attempts` send attempts
/// (`delivery.max_attempts`, counted across all of their jobs), they failed
/// within `window`, and their account can still send — get a `retry` job on
/// the same account (whose chat the retry checks first), and go back to
/// `queued`. A message whose send job spent its attempts has spent the
/// message's too: the sweep is for jobs that gave up before that (crash
/// loops, a lost browser).
pub async fn sweep(
    pool: &PgPool,
    window: Duration,
    max_attempts: i32,
) -> Result<usize, MaintenanceError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.id, m.account_id, m.retry_count FROM mkt_wap_messages m \
         JOIN queue_jobs j ON j.id = m.job_id \
         JOIN mkt_wap_accounts a ON a.id = m.account_id \
         WHERE m.status = 'failed' AND m.retry_count < m.max_retries \
           AND m.send_attempts < $2 \
           AND m.failure_class IS DISTINCT FROM 'permanent' \
           AND m.failed_at > now() - $1 AND j.state = 'discarded' \
           AND a.status NOT IN {unavailable} \
         ORDER BY m.failed_at LIMIT 10000 \
         FOR UPDATE OF m SKIP LOCKED",
        unavailable = crate::account::AccountStatus::UNAVAILABLE_SQL
    )))
    .bind(interval(window))
    .bind(max_attempts)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let jobs: Vec<NewJob> = rows
        .iter()
        .map(|(m, a, n)| {
            NewJob::new(
                *a,
                &RetryJob {
                    message_id: *m,
                    retry_number: (*n + 1) as u32,
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let enqueued = store::enqueue_batch_in(&mut tx, &jobs).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let job_ids: Vec<Uuid> = enqueued.iter().map(|e| e.id).collect();
    crate::message::status::requeue_swept(&mut tx, &ids, &job_ids).await?;
    tx.commit().await?;
    metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => "retry")
        .increment(enqueued.iter().filter(|e| e.created).count() as u64);
    Ok(rows.len())
}
