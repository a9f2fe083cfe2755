//! The queue engine against a real Postgres: enqueue, idempotency, claiming,
//! fencing, retries, snoozes, budgets, pauses and shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier::config::{Settings, Sources};
use courier::jobs::send::SendJob;
use courier::jobs::JobKind;
use courier::queue::handler::{ClaimedJob, HandlerError, Handlers, Outcome, Readiness};
use courier::queue::runtime::Runtime;
use courier::queue::store::{self, Reservation};
use courier::queue::{JobState, NewJob, QueueError};
use courier_testkit::{fresh_database, RecordingHandler, TestDb};
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

fn settings(vars: &[(&str, &str)]) -> Settings {
    let mut all: Vec<(String, String)> = [
        ("COURIER__QUEUE__HANDLER", "noop-record"),
        ("COURIER__QUEUE__POLL_INTERVAL", "200ms"),
        ("COURIER__QUEUE__LEASE_HOLD", "2s"),
        ("COURIER__BUDGET__MIN_GAP", "0s"),
        ("COURIER__BUDGET__JITTER", "0s"),
        ("COURIER__BUDGET__PER_MINUTE", "1000"),
        ("COURIER__BUDGET__PER_HOUR", "10000"),
        ("COURIER__BUDGET__PER_DAY", "100000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_from(Sources {
        dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        vars: Some(all),
        ..Default::default()
    })
    .unwrap()
}

/// An active account, 30 days old (past the warm-up ladder).
async fn account(pool: &PgPool, rate_limit_config: serde_json::Value) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, status, rate_limit_config, created_at) \
         VALUES ('test', 'active', $1, now() - interval '30 days') RETURNING id",
    )
    .bind(rate_limit_config)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn send(account: Uuid) -> NewJob {
    NewJob::new(
        account,
        &SendJob {
            message_id: Uuid::new_v4(),
        },
    )
    .unwrap()
}

fn discover(account: Uuid) -> NewJob {
    NewJob {
        kind: JobKind::Discover,
        account_id: account,
        payload: serde_json::json!({}),
        priority: 100,
        run_at: None,
        max_attempts: 5,
        idempotency_key: None,
    }
}

async fn state(pool: &PgPool, id: Uuid) -> courier::queue::Job {
    store::get_job(pool, id).await.unwrap().unwrap()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(t: &TestDb, settings: &Settings, handlers: Handlers) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = Runtime::new(t.pool.clone(), settings, handlers);
    let task = tokio::spawn(async move {
        rt.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running { stop: tx, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within its grace period")
            .unwrap();
    }
}

fn recorder(t: &TestDb) -> Handlers {
    Handlers::new().register_all(Arc::new(RecordingHandler::new(
        t.pool.clone(),
        Duration::ZERO,
    )))
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn enqueue_with_the_same_idempotency_key_returns_the_existing_job() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let job = send(a);
    let first = courier::queue::enqueue(&t.pool, &job).await.unwrap();
    let again = courier::queue::enqueue(&t.pool, &job).await.unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(first.id, again.id);

    // In a batch: a key seen before, a key repeated inside the batch, and new work.
    let fresh = send(a);
    let batch = vec![job.clone(), fresh.clone(), fresh.clone(), discover(a)];
    let out = courier::queue::enqueue_batch(&t.pool, &batch)
        .await
        .unwrap();
    assert_eq!(out[0].id, first.id);
    assert!(!out[0].created);
    assert!(out[1].created);
    assert_eq!(out[2].id, out[1].id);
    assert!(!out[2].created);
    assert!(out[3].created);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn batch_enqueue_writes_thousands_of_jobs_in_one_statement() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let jobs: Vec<NewJob> = (0..5000).map(|_| send(a)).collect();
    let out = courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    assert_eq!(out.len(), 5000);
    assert!(out.iter().all(|e| e.created));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'available'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 5000);

    // A large batch that repeats one existing key, inside the producer's own
    // transaction: the fast plain insert fails on the key, only its savepoint
    // rolls back, and the batch goes through ON CONFLICT. The producer's
    // earlier write in the same transaction survives.
    let mut again: Vec<NewJob> = (0..199).map(|_| send(a)).collect();
    again.insert(150, jobs[7].clone());
    let mut tx = t.pool.begin().await.unwrap();
    sqlx::query("UPDATE mkt_wap_accounts SET account_name = 'renamed in tx' WHERE id = $1")
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap();
    let out2 = courier::queue::store::enqueue_batch_in(&mut tx, &again)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(out2.len(), 200);
    assert_eq!(out2[150].id, out[7].id);
    assert!(!out2[150].created);
    assert_eq!(out2.iter().filter(|e| e.created).count(), 199);
    let (n, name): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM queue_jobs), account_name FROM mkt_wap_accounts WHERE id = $1",
    )
    .bind(a)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(n, 5199);
    assert_eq!(name, "renamed in tx");

    // Future jobs are scheduled, with microsecond run_at.
    let at = Utc::now() + chrono::Duration::milliseconds(123_456);
    let e = courier::queue::enqueue(&t.pool, &discover(a).run_at(at))
        .await
        .unwrap();
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.state(), JobState::Scheduled);
    assert_eq!(j.run_at.timestamp_micros(), at.timestamp_micros());
}

/// The job → account reference is checked once per statement (migration
/// 0008), not by a per-row foreign key; it must refuse and cascade exactly
/// as the key did.
#[tokio::test]
async fn a_job_for_an_unknown_account_is_refused_whole_and_deleting_an_account_removes_its_jobs() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let b = account(&t.pool, serde_json::json!({})).await;
    let ghost = Uuid::new_v4();
    let count = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM queue_jobs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    // One unknown account in a batch of 1 000: nothing is written, and the
    // error names the reference like the foreign key did (the API's 422).
    let mut jobs: Vec<NewJob> = (0..999)
        .map(|i| send(if i % 2 == 0 { a } else { b }))
        .collect();
    jobs.insert(500, send(ghost));
    let err = courier::queue::enqueue_batch(&t.pool, &jobs)
        .await
        .unwrap_err();
    let QueueError::Db(sqlx::Error::Database(d)) = &err else {
        panic!("expected a database error, got {err:?}")
    };
    assert_eq!(d.code().as_deref(), Some("23503"), "{d}");
    assert_eq!(d.constraint(), Some("queue_jobs_account_id_fkey"));
    assert!(d.message().contains("queue_jobs_account_id_fkey"), "{d}");
    assert_eq!(count(t.pool.clone()).await, 0, "half a batch was written");
    // The single-job path too.
    assert!(courier::queue::enqueue(&t.pool, &send(ghost))
        .await
        .is_err());
    assert_eq!(count(t.pool.clone()).await, 0);

    // Moving a job to an account that does not exist is refused.
    jobs.remove(500);
    let ids = courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    let moved = sqlx::query("UPDATE queue_jobs SET account_id = $1 WHERE id = $2")
        .bind(ghost)
        .bind(ids[0].id)
        .execute(&t.pool)
        .await;
    assert!(moved.is_err(), "a job was moved to an unknown account");
    sqlx::query("UPDATE queue_jobs SET account_id = $1 WHERE id = $2")
        .bind(b)
        .bind(ids[0].id)
        .execute(&t.pool)
        .await
        .unwrap();

    // Deleting an account deletes its jobs and its send log, and only those.
    sqlx::query("INSERT INTO account_sends (account_id, job_id, epoch, sent_at) VALUES ($1, $2, 1, now()), ($3, $2, 1, now())")
        .bind(a)
        .bind(ids[1].id)
        .bind(b)
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM mkt_wap_accounts WHERE id = $1")
        .bind(a)
        .execute(&t.pool)
        .await
        .unwrap();
    let left: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT account_id, count(*) FROM queue_jobs GROUP BY 1 \
         UNION ALL SELECT account_id, -count(*) FROM account_sends GROUP BY 1",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    let mut left = left;
    left.sort_by_key(|r| r.1);
    assert_eq!(left, vec![(b, -1), (b, 500)]);
}

#[tokio::test]
async fn cancel_works_until_the_job_starts() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let waiting = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let c = courier::queue::cancel(&t.pool, waiting.id).await.unwrap();
    assert_eq!(c.state(), JobState::Cancelled);

    let started = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let lease = store::acquire_account(&t.pool, a, "w1", TTL, 5)
        .await
        .unwrap()
        .unwrap();
    let claimed = store::claim(&t.pool, &lease, true).await.unwrap().unwrap();
    assert_eq!(claimed.id, started.id);
    match courier::queue::cancel(&t.pool, started.id).await {
        Err(QueueError::NotCancellable { state, .. }) => assert_eq!(state, JobState::Running),
        other => panic!("expected NotCancellable, got {other:?}"),
    }
}

#[tokio::test]
async fn at_most_one_job_runs_per_account() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    courier::queue::enqueue_batch(&t.pool, &[discover(a), discover(a)])
        .await
        .unwrap();
    let lease = store::acquire_account(&t.pool, a, "w1", TTL, 5)
        .await
        .unwrap()
        .unwrap();
    let first = store::claim(&t.pool, &lease, true).await.unwrap();
    assert!(first.is_some());
    // The database refuses a second running job for the account.
    let second = store::claim(&t.pool, &lease, true).await;
    assert!(
        matches!(&second, Err(QueueError::Db(sqlx::Error::Database(e))) if e.code().as_deref() == Some("23505")),
        "{second:?}"
    );
    // A second worker cannot even lease the account while the lease lives.
    assert!(store::acquire_account(&t.pool, a, "w2", TTL, 5)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_write_anything_for_the_account() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let e = courier::queue::enqueue(&t.pool, &send(a)).await.unwrap();
    let old = store::acquire_account(&t.pool, a, "old", TTL, 5)
        .await
        .unwrap()
        .unwrap();
    let job = store::claim(&t.pool, &old, true).await.unwrap().unwrap();
    assert_eq!(job.attempt, 1);

    // The old worker stalls; its lease expires and another worker takes over.
    sqlx::query("UPDATE account_leases SET expires_at = now() - interval '1 second'")
        .execute(&t.pool)
        .await
        .unwrap();
    let new = store::acquire_account(&t.pool, a, "new", TTL, 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.epoch, old.epoch + 1);

    // The takeover returned the running job without counting the attempt.
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.state(), JobState::Available);
    assert_eq!(j.attempt, 0);
    assert_eq!(j.rescues, 1);

    // Every write of the old holder is fenced.
    assert!(!store::complete(&t.pool, &old, e.id).await.unwrap());
    assert!(!store::fail(&t.pool, &old, e.id, "x", None).await.unwrap());
    assert!(!store::snooze(&t.pool, &old, e.id, Utc::now(), "x")
        .await
        .unwrap());
    assert!(store::claim(&t.pool, &old, true).await.unwrap().is_none());
    let limits = settings(&[]).budget.limits();
    assert_eq!(
        store::reserve_send(
            &t.pool,
            &courier::message::CLAIM_POLICY,
            &old,
            e.id,
            &limits
        )
        .await
        .unwrap(),
        Reservation::Fenced
    );
    assert!(!store::release_lease(&t.pool, &old).await.unwrap());

    // The new holder runs it.
    let job = store::claim(&t.pool, &new, true).await.unwrap().unwrap();
    assert!(matches!(
        store::reserve_send(
            &t.pool,
            &courier::message::CLAIM_POLICY,
            &new,
            job.id,
            &limits
        )
        .await
        .unwrap(),
        Reservation::Granted(_)
    ));
    assert!(store::complete(&t.pool, &new, e.id).await.unwrap());
    assert_eq!(state(&t.pool, e.id).await.state(), JobState::Completed);
}

#[tokio::test]
async fn a_crash_loop_is_discarded_after_max_rescues() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let e = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    for round in 1..=3 {
        let lease = store::acquire_account(&t.pool, a, &format!("w{round}"), TTL, 3)
            .await
            .unwrap()
            .unwrap();
        let j = state(&t.pool, e.id).await;
        if round == 1 {
            assert_eq!(j.state(), JobState::Available);
        }
        if j.state() == JobState::Discarded {
            break;
        }
        store::claim(&t.pool, &lease, true).await.unwrap().unwrap();
        sqlx::query("UPDATE account_leases SET expires_at = now() - interval '1 second'")
            .execute(&t.pool)
            .await
            .unwrap();
    }
    store::acquire_account(&t.pool, a, "last", TTL, 3)
        .await
        .unwrap()
        .unwrap();
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.state(), JobState::Discarded);
    assert_eq!(j.rescues, 3);
    assert!(j.last_error.unwrap().contains("3 times"));
}

#[tokio::test]
async fn snooze_gives_the_attempt_back() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let e = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let lease = store::acquire_account(&t.pool, a, "w", TTL, 5)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..5 {
        store::claim(&t.pool, &lease, true).await.unwrap().unwrap();
        let until = Utc::now() - chrono::Duration::milliseconds(1);
        assert!(store::snooze(&t.pool, &lease, e.id, until, "later")
            .await
            .unwrap());
    }
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.attempt, 0);
    assert_eq!(j.state(), JobState::Scheduled);
    assert_eq!(j.waiting_reason.as_deref(), Some("later"));
}

/// Fails every attempt.
struct Failing;
impl courier::queue::handler::JobHandler for Failing {
    fn handle<'a>(&'a self, _: &'a ClaimedJob) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async { Err(HandlerError::Retryable("refused by the page".into())) })
    }
}

#[tokio::test]
async fn failures_back_off_exponentially_then_discard_with_the_error_kept() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let e = courier::queue::enqueue(&t.pool, &send(a)).await.unwrap();
    let s = settings(&[
        ("COURIER__QUEUE__BACKOFF_BASE", "1s"),
        ("COURIER__QUEUE__BACKOFF_MAX", "10s"),
    ]);
    let w = start(&t, &s, Handlers::new().register_all(Arc::new(Failing)));

    // Attempt 1 fails: retryable, run_at = attempted_at + 1 s (+ up to 25 %).
    assert!(
        eventually(Duration::from_secs(10), || async {
            state(&t.pool, e.id).await.state() == JobState::Retryable
        })
        .await
    );
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.attempt, 1);
    let delay = (j.run_at - j.attempted_at.unwrap()).num_milliseconds();
    assert!((900..=1_400).contains(&delay), "first backoff {delay} ms");

    // Attempt 3 (the seeds' max for sends) discards it, error kept.
    assert!(
        eventually(Duration::from_secs(20), || async {
            state(&t.pool, e.id).await.state() == JobState::Discarded
        })
        .await
    );
    let j = state(&t.pool, e.id).await;
    assert_eq!(j.attempt, 3);
    assert!(j.last_error.unwrap().contains("refused by the page"));
    assert_eq!(j.errors.as_array().unwrap().len(), 3);
    // The attempts were spaced by growing delays.
    let times: Vec<DateTime<Utc>> = j
        .errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    let gap1 = (times[1] - times[0]).num_milliseconds();
    let gap2 = (times[2] - times[1]).num_milliseconds();
    assert!(gap1 >= 900, "gap1 {gap1}");
    assert!(gap2 >= 1_900, "gap2 {gap2}");
    w.stop().await;
}

#[tokio::test]
async fn a_held_back_send_is_snoozed_to_the_exact_instant_the_window_frees() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({"per_minute": 2})).await;
    let jobs: Vec<NewJob> = (0..3).map(|_| send(a)).collect();
    let ids: Vec<Uuid> = courier::queue::enqueue_batch(&t.pool, &jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let w = start(&t, &settings(&[]), recorder(&t));
    assert!(
        eventually(Duration::from_secs(10), || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_handler_records")
                .fetch_one(&t.pool)
                .await
                .unwrap();
            n == 2
        })
        .await
    );
    // Give the third job time to be (wrongly) sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slots: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT slot_at FROM queue_handler_records ORDER BY slot_at")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert_eq!(slots.len(), 2);
    let third = state(&t.pool, ids[2]).await;
    assert_eq!(third.state(), JobState::Scheduled);
    assert_eq!(third.attempt, 0, "a snooze spends no attempt");
    assert_eq!(
        third.run_at,
        slots[0]
            + chrono::Duration::seconds(60)
            + chrono::Duration::from_std(courier::account::budget::SEND_DEADLINE).unwrap(),
        "snoozed to the instant the oldest send leaves the minute window \
         (a grant counts the minute plus budget::SEND_DEADLINE)"
    );
    assert!(third.waiting_reason.unwrap().contains("minute"));
    w.stop().await;
}

/// Transactions committed in this test's database over `span`, asserted to
/// be those of workers at rest. The worker has 5 slots polling every 200 ms
/// at most (settings above), about 50 statements a second with the
/// maintenance; a slot that asked again every 5 ms made ~2 000.
async fn assert_idle_without_spinning(pool: &PgPool, span: Duration) {
    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let before = commits().await;
    tokio::time::sleep(span).await;
    let per_second = (commits().await - before) as f64 / span.as_secs_f64();
    assert!(
        per_second < 400.0,
        "idle workers committed {per_second:.0} transactions a second: they poll instead of sleeping"
    );
}

/// Runs the maintenance service's `reap` task (pause expiry, login
/// deadlines) now, as the scheduler leader would; returns its result line.
async fn reap(pool: &PgPool) -> String {
    courier::maintenance::run(
        pool,
        &settings(&[]),
        courier::maintenance::Task::Reap,
        Utc::now(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_paused_account_runs_nothing_and_resumes_by_itself_at_its_deadline() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let until = Utc::now() + chrono::Duration::seconds(4);
    courier::account::health::pause(&t.pool, a, "health score 10 below 20", Some(until))
        .await
        .unwrap();
    let e = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let w = start(&t, &settings(&[]), recorder(&t));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Idle slots wait for the pause's end (or their poll interval, 200 ms
    // here); they do not ask again every few milliseconds while it lasts.
    assert_idle_without_spinning(&t.pool, Duration::from_millis(2_500)).await;
    assert_eq!(state(&t.pool, e.id).await.state(), JobState::Available);
    assert!(
        eventually(Duration::from_secs(10), || async {
            state(&t.pool, e.id).await.state() == JobState::Completed
        })
        .await
    );
    let done = state(&t.pool, e.id).await;
    assert!(done.attempted_at.unwrap() >= until);
    // The claim read the pause's end itself; the account's status is the
    // maintenance service's to move (the scheduler leader's `reap` task),
    // not the worker's: the worker runs no maintenance of its own.
    let status = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT status, status_reason FROM mkt_wap_accounts WHERE id = $1",
        )
        .bind(a)
        .fetch_one(&t.pool)
        .await
        .unwrap()
    };
    assert_eq!(status().await.0, "paused");
    let line = reap(&t.pool).await;
    assert!(line.starts_with("1 expired pause(s) resumed"), "{line}");
    assert_eq!(status().await.0, "active");
    assert!(status().await.1.unwrap().contains("pause expired"));

    // A manual pause has no deadline: nothing runs until resumed by hand.
    courier::account::health::pause(&t.pool, a, "by hand", None)
        .await
        .unwrap();
    let e2 = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_idle_without_spinning(&t.pool, Duration::from_millis(2_000)).await;
    assert_eq!(state(&t.pool, e2.id).await.state(), JobState::Available);
    assert!(courier::account::health::resume(&t.pool, a).await.unwrap());
    assert!(
        eventually(Duration::from_secs(10), || async {
            state(&t.pool, e2.id).await.state() == JobState::Completed
        })
        .await
    );
    w.stop().await;
}

#[tokio::test]
async fn a_resume_returns_the_account_to_the_status_its_pause_interrupted() {
    // A warming account paused for health goes back to its warm-up ladder,
    // not to `active` (which would lift the warm-up caps); a standby account
    // back to standby. By hand and at the pause's deadline alike.
    let t = fresh_database().await.unwrap();
    let status = |a: Uuid| {
        let pool = t.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM mkt_wap_accounts WHERE id = $1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let warming = account(&t.pool, serde_json::json!({})).await;
    let standby = account(&t.pool, serde_json::json!({})).await;
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'warming' WHERE id = $1")
        .bind(warming)
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'standby' WHERE id = $1")
        .bind(standby)
        .execute(&t.pool)
        .await
        .unwrap();
    use courier::account::health::{pause, resume};
    // By hand; a second pause of a paused account keeps the first status.
    pause(&t.pool, warming, "by hand", None).await.unwrap();
    pause(&t.pool, warming, "again", None).await.unwrap();
    assert_eq!(status(warming).await, "paused");
    assert!(resume(&t.pool, warming).await.unwrap());
    assert_eq!(status(warming).await, "warming");
    // At the deadline, through the maintenance service.
    let past = Utc::now() - chrono::Duration::seconds(1);
    pause(&t.pool, warming, "health score 10 below 20", Some(past))
        .await
        .unwrap();
    pause(&t.pool, standby, "health score 10 below 20", Some(past))
        .await
        .unwrap();
    let line = reap(&t.pool).await;
    assert!(line.starts_with("2 expired pause(s) resumed"), "{line}");
    assert_eq!(status(warming).await, "warming");
    assert_eq!(status(standby).await, "standby");
    // A pause written before the status was remembered resumes to active.
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'paused', paused_from = NULL WHERE id = $1")
        .bind(standby)
        .execute(&t.pool)
        .await
        .unwrap();
    assert!(resume(&t.pool, standby).await.unwrap());
    assert_eq!(status(standby).await, "active");
}

#[tokio::test]
async fn health_below_the_threshold_pauses_the_account_with_a_reason() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let s = settings(&[]);
    sqlx::query("UPDATE mkt_wap_accounts SET health_score = 22 WHERE id = $1")
        .bind(a)
        .execute(&t.pool)
        .await
        .unwrap();
    let score = courier::account::health::record(
        &t.pool,
        a,
        courier::account::health::HealthEvent::SendFailed,
        &s.health,
    )
    .await
    .unwrap();
    assert_eq!(score, 17);
    let (status, reason, until): (String, String, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT status, pause_reason, paused_until FROM mkt_wap_accounts WHERE id = $1",
    )
    .bind(a)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(status, "paused");
    assert!(reason.contains("health score 17"));
    assert!(until.unwrap() > Utc::now() + chrono::Duration::hours(5));
}

#[tokio::test]
async fn many_accounts_all_jobs_complete_exactly_once_and_shutdown_releases_leases() {
    let t = fresh_database().await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..12 {
        let a = account(&t.pool, serde_json::json!({})).await;
        jobs.extend((0..20).map(|_| discover(a)));
    }
    courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    let w = start(
        &t,
        &settings(&[("COURIER__QUEUE__CAPACITY", "4")]),
        recorder(&t),
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'completed'")
                    .fetch_one(&t.pool)
                    .await
                    .unwrap();
            n == 240
        })
        .await
    );
    let (records, max_runs): (i64, i32) =
        sqlx::query_as("SELECT count(*), max(runs) FROM queue_handler_records")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!((records, max_runs), (240, 1));
    w.stop().await;
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM account_leases WHERE owner IS NOT NULL")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(held, 0, "leases released on shutdown");
}

#[tokio::test]
async fn pickup_is_pushed_not_polled() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    // A fallback poll of a minute: only NOTIFY can explain a fast pickup.
    let w = start(
        &t,
        &settings(&[("COURIER__QUEUE__POLL_INTERVAL", "60s")]),
        recorder(&t),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            state(&t.pool, e.id).await.state() == JobState::Completed
        })
        .await,
        "picked up within 5 s although the poll interval is 60 s"
    );
    w.stop().await;
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_retention() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let old = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let recent = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    let pending = courier::queue::enqueue(&t.pool, &discover(a))
        .await
        .unwrap();
    courier::queue::cancel(&t.pool, old.id).await.unwrap();
    courier::queue::cancel(&t.pool, recent.id).await.unwrap();
    sqlx::query("UPDATE queue_jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(old.id)
        .execute(&t.pool)
        .await
        .unwrap();
    let n = store::prune(&t.pool, Duration::from_secs(7 * 86_400), 1000)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(store::get_job(&t.pool, old.id).await.unwrap().is_none());
    assert!(store::get_job(&t.pool, recent.id).await.unwrap().is_some());
    assert!(store::get_job(&t.pool, pending.id).await.unwrap().is_some());
}

#[tokio::test]
async fn with_more_busy_accounts_than_slots_the_lease_rotates_so_every_account_is_served() {
    let t = fresh_database().await.unwrap();
    // 4 accounts with 2 s of work each (100 jobs × 20 ms), a worker with 2
    // slots: without rotation two accounts would wait until the first two run
    // dry (~2 s); with lease_rotate = 300ms every account runs within ~1 s.
    let mut accounts = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let a = account(&t.pool, serde_json::json!({})).await;
        accounts.push(a);
        jobs.extend((0..100).map(|_| discover(a)));
    }
    courier::queue::enqueue_batch(&t.pool, &jobs).await.unwrap();
    let w = start(
        &t,
        &settings(&[
            ("COURIER__QUEUE__CAPACITY", "2"),
            ("COURIER__QUEUE__LEASE_ROTATE", "300ms"),
        ]),
        Handlers::new().register_all(Arc::new(RecordingHandler::new(
            t.pool.clone(),
            Duration::from_millis(20),
        ))),
    );
    let started = std::time::Instant::now();
    let served = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(DISTINCT account_id) FROM queue_handler_records")
            .fetch_one(&t.pool)
            .await
            .unwrap()
    };
    let all_served = eventually(Duration::from_millis(1500), || async {
        served().await == 4
    })
    .await;
    let took = started.elapsed();
    // The bound has to hold before the first two accounts could have run dry.
    let finished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'completed'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert!(
        all_served,
        "only {} of 4 accounts served after {took:?}",
        served().await
    );
    assert!(
        finished < 200,
        "the bound proves nothing: {finished} jobs done, two accounts could have run dry"
    );
    // Rotation loses and repeats nothing.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'completed'")
                    .fetch_one(&t.pool)
                    .await
                    .unwrap();
            n == 400
        })
        .await
    );
    let max_runs: i32 = sqlx::query_scalar("SELECT max(runs) FROM queue_handler_records")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(max_runs, 1);
    w.stop().await;
}

#[tokio::test]
async fn the_database_refuses_a_job_kind_outside_a_z_and_underscore_1_to_40() {
    let t = fresh_database().await.unwrap();
    let a = account(&t.pool, serde_json::json!({})).await;
    let insert = |kind: String| {
        let pool = t.pool.clone();
        async move {
            sqlx::query("INSERT INTO queue_jobs (id, kind, account_id) VALUES ($1, $2, $3)")
                .bind(Uuid::now_v7())
                .bind(kind)
                .bind(a)
                .execute(&pool)
                .await
        }
    };
    for bad in ["Send", "", "send-now", "é", "send ", &"a".repeat(41)] {
        let e = insert(bad.to_string()).await.expect_err(bad);
        assert_eq!(
            e.as_database_error().and_then(|d| d.constraint()),
            Some("queue_jobs_kind_check"),
            "{bad:?}: {e}"
        );
    }
    for good in ["send", "health_check", "_", &"z".repeat(40)] {
        insert(good.to_string()).await.expect(good);
    }
}

/// A readiness that takes 300 ms to make an account ready (a browser start)
/// and counts the preparations in progress.
#[derive(Debug)]
struct SlowStart {
    ready: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Readiness for SlowStart {
    fn is_ready(&self, account: Uuid) -> bool {
        self.ready.lock().unwrap().contains(&account)
    }

    fn prepare<'a>(
        &'a self,
        lease: &'a courier::queue::Lease,
    ) -> BoxFuture<'a, Result<(), courier::queue::handler::NotReady>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.ready.lock().unwrap().insert(lease.account_id);
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn max_accounts(&self) -> usize {
        6
    }

    fn start_gate(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        Some(self.gate.clone())
    }
}

#[tokio::test]
async fn with_a_start_gate_an_account_is_leased_only_when_its_start_can_begin() {
    // `browser.max_starting = 1`: six accounts with due work and six slots,
    // but one browser start at a time. Without the gate all six would be
    // leased and start at once; with it, an account that cannot start yet
    // stays free (another worker could take it) instead of waiting leased.
    let t = fresh_database().await.unwrap();
    let mut accounts = Vec::new();
    for _ in 0..6 {
        let a = account(&t.pool, serde_json::json!({})).await;
        accounts.push(a);
        courier::queue::enqueue(&t.pool, &discover(a))
            .await
            .unwrap();
    }
    let starts = Arc::new(SlowStart {
        ready: Default::default(),
        now: Default::default(),
        most: Default::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    let w = start(
        &t,
        &settings(&[("COURIER__QUEUE__CAPACITY", "6")]),
        recorder(&t).with_readiness(starts.clone()),
    );
    let most_waiting_leased = std::sync::atomic::AtomicUsize::new(0);
    let done = eventually(Duration::from_secs(20), || async {
        let leased: Vec<Uuid> = sqlx::query_scalar(
            "SELECT account_id FROM account_leases WHERE owner IS NOT NULL AND expires_at > now()",
        )
        .fetch_all(&t.pool)
        .await
        .unwrap();
        let not_ready = leased.iter().filter(|a| !starts.is_ready(**a)).count();
        most_waiting_leased.fetch_max(not_ready, std::sync::atomic::Ordering::SeqCst);
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'completed'")
                .fetch_one(&t.pool)
                .await
                .unwrap();
        completed == 6
    })
    .await;
    assert!(done, "every account's job ran");
    assert_eq!(
        starts.most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one start at a time"
    );
    let most_waiting_leased = most_waiting_leased.into_inner();
    assert!(
        most_waiting_leased <= 1,
        "{most_waiting_leased} accounts were held by the worker while not ready (at most the one starting)"
    );
    w.stop().await;
}
