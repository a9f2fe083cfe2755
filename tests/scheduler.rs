//! The scheduler against a real Postgres: schedules become jobs exactly once,
//! work stays on accounts that can send it, and bad rows are explained.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier::config::{Settings, Sources};
use courier::maintenance::{self, Task};
use courier::scheduler::{expand, Outcome, Scheduler};
use courier_testkit::fresh_database;
use sqlx::PgPool;
use uuid::Uuid;

fn settings() -> Settings {
    Settings::load_from(Sources {
        dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        vars: Some(vec![]),
        ..Default::default()
    })
    .unwrap()
}

fn courier(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("COURIER__DATABASE__URL", db_url)
        .env("COURIER__SCHEDULER__TICK", "100ms")
        .env("COURIER__SCHEDULER__LEADER_RETRY", "200ms")
        .env("COURIER__LOG__LEVEL", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

struct Reaper(Vec<Child>);
impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An active account, 30 days old.
async fn account(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name, status, created_at) \
         VALUES ($1, 'active', now() - interval '30 days') RETURNING id",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn content(pool: &PgPool) -> (Uuid, Uuid) {
    let campaign: Uuid =
        sqlx::query_scalar("INSERT INTO mkt_campaigns (name) VALUES ('spring') RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    let content: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_content (campaign_id, body) VALUES ($1, 'Hello from spring') RETURNING id",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap();
    (campaign, content)
}

/// `n` groups, each with `members` as member accounts.
async fn groups(pool: &PgPool, n: usize, members: &[Uuid]) -> Vec<Uuid> {
    let mut out = Vec::new();
    for _ in 0..n {
        let chat = format!("1203630{}@g.us", rand_digits());
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_groups (group_id, name, region) VALUES ($1, 'g', 'north') RETURNING id",
        )
        .bind(chat)
        .fetch_one(pool)
        .await
        .unwrap();
        for a in members {
            sqlx::query(
                "INSERT INTO mkt_wap_account_groups (account_id, group_id) VALUES ($1, $2)",
            )
            .bind(a)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
        }
        out.push(id);
    }
    out
}

fn rand_digits() -> String {
    format!("{:012}", Uuid::new_v4().as_u128() % 1_000_000_000_000)
}

/// `n` contacts tagged `tag`, numbered from `base`.
async fn contacts(pool: &PgPool, n: i64, base: i64, tag: &str) {
    sqlx::query(
        "INSERT INTO mkt_wap_contacts (phone_number, segment_tags) \
         SELECT ($2::int8 + g)::text, ARRAY[$3::text] FROM generate_series(1, $1::int8) g",
    )
    .bind(n)
    .bind(base)
    .bind(tag)
    .execute(pool)
    .await
    .unwrap();
}

#[derive(Default)]
struct NewSchedule<'a> {
    groups: &'a [Uuid],
    tags: &'a [&'a str],
    cron: Option<&'a str>,
    policy: Option<&'a str>,
    pinned: Option<Uuid>,
}

async fn schedule(pool: &PgPool, content: (Uuid, Uuid), s: NewSchedule<'_>) -> Uuid {
    let tags: Vec<String> = s.tags.iter().map(|t| t.to_string()).collect();
    sqlx::query_scalar(
        "INSERT INTO mkt_con_schedule (campaign_id, content_id, scheduled_at, target_group_ids, \
            target_segment_tags, cron_expression, catch_up_policy, account_id) \
         VALUES ($1, $2, now() - interval '1 second', $3, $4, $5, coalesce($6, 'latest'), $7) \
         RETURNING id",
    )
    .bind(content.0)
    .bind(content.1)
    .bind(s.groups)
    .bind(&tags)
    .bind(s.cron)
    .bind(s.policy)
    .bind(s.pinned)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn scalar(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn status(pool: &PgPool, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, status_reason FROM mkt_con_schedule WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_one_off_to_three_groups_and_a_50_contact_segment_gives_53_jobs() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let b = account(p, "b").await;
    let g = groups(p, 3, &[a, b]).await;
    contacts(p, 50, 447700900000, "vip").await;
    contacts(p, 20, 447700800000, "other").await;
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            tags: &["vip"],
            ..Default::default()
        },
    )
    .await;

    let scheduler = Scheduler::new(p.clone(), &settings());
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.expansions.len(), 1);
    assert_eq!(report.expansions[0].outcome, Outcome::Expanded);

    let jobs = scalar(
        p,
        "SELECT count(*) FROM queue_jobs j JOIN mkt_wap_messages m ON m.job_id = j.id \
         WHERE j.kind = 'send' AND m.schedule_id = $1 AND m.status = 'queued' \
           AND m.campaign_id IS NOT NULL AND m.content_id IS NOT NULL",
        s,
    )
    .await;
    assert_eq!(jobs, 53);
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_wap_messages WHERE campaign_id = $1 AND content_id = $2 \
           AND message_text = 'Hello from spring'",
    )
    .bind(c.0)
    .bind(c.1)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(linked, 53);
    let groups_msgs = scalar(
        p,
        "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1 AND channel_type = 'group'",
        s,
    )
    .await;
    assert_eq!(groups_msgs, 3);
    assert_eq!(status(p, s).await.0, "queued");
    // Load spread over both accounts, and each contact now keeps its account.
    let per_account: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM queue_jobs WHERE kind = 'send' GROUP BY account_id ORDER BY 1",
    )
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(per_account.len(), 2, "{per_account:?}");
    assert!(per_account[0] >= 25, "{per_account:?}");
    let sticky: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_wap_contacts WHERE 'vip' = ANY(segment_tags) \
           AND preferred_account_id IS NOT NULL",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(sticky, 50);

    // Nothing is due any more: another tick adds nothing.
    let again = scheduler.tick().await.unwrap();
    assert!(again.expansions.is_empty());
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1",
            s
        )
        .await,
        53
    );
}

#[tokio::test]
async fn bad_rows_fail_with_the_reason_and_the_others_still_expand() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let g = groups(p, 1, &[a]).await;
    let c = content(p).await;
    let good = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    let bad_cron = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            cron: Some("61 * * * *"),
            ..Default::default()
        },
    )
    .await;
    let bad_tz = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            cron: Some("0 9 * * *"),
            ..Default::default()
        },
    )
    .await;
    sqlx::query("UPDATE mkt_con_schedule SET timezone = 'Mars/Olympus' WHERE id = $1")
        .bind(bad_tz)
        .execute(p)
        .await
        .unwrap();
    let no_content = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    sqlx::query("UPDATE mkt_con_schedule SET content_id = NULL WHERE id = $1")
        .bind(no_content)
        .execute(p)
        .await
        .unwrap();
    // A campaign that has sent nothing yet.
    let empty = schedule(p, content(p).await, NewSchedule::default()).await;
    let empty_segment = schedule(
        p,
        c,
        NewSchedule {
            tags: &["nobody"],
            ..Default::default()
        },
    )
    .await;

    let report = Scheduler::new(p.clone(), &settings()).tick().await.unwrap();
    assert_eq!(report.expansions.len(), 6);
    assert_eq!(status(p, good).await.0, "queued");
    for (id, expect) in [
        (bad_cron, "invalid cron expression `61 * * * *`"),
        (bad_tz, "unknown time zone `Mars/Olympus`"),
        (no_content, "missing content"),
        (empty_segment, "empty target"),
    ] {
        let (st, reason) = status(p, id).await;
        assert_eq!(st, "failed", "{expect}");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains(expect),
            "{reason:?} should mention {expect}"
        );
    }
    // No target column: the targets come from the campaign, which has sent
    // nothing yet, so the row waits with the reason instead of failing.
    let (st, reason) = status(p, empty).await;
    assert_eq!(st, "scheduled");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with("waiting for targets") && reason.contains("names no recipient"),
        "{reason}"
    );
    let msgs: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(msgs, 1);
}

/// A queue worker with the recording handler (no browser), for the hold tests.
fn start_recorder(
    p: &PgPool,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let vars: Vec<(String, String)> = [
        ("COURIER__QUEUE__POLL_INTERVAL", "100ms"),
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
    let s = Settings::load_from(Sources {
        dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        vars: Some(vars),
        ..Default::default()
    })
    .unwrap();
    let handlers = courier_testkit::RecordingHandler::registry(p.clone(), Duration::ZERO)
        .with_policy(courier::message::CLAIM_POLICY);
    let rt = courier::queue::runtime::Runtime::new(p.clone(), &s, handlers);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        rt.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, task)
}

/// (job state, attempts, job waiting reason, message status, message waiting reason)
/// of every message of schedule `s`.
type Held = (String, i32, Option<String>, String, Option<String>);

async fn held_states(p: &PgPool, s: Uuid) -> Vec<Held> {
    sqlx::query_as(
        "SELECT j.state, j.attempt, j.waiting_reason, m.status, m.waiting_reason \
         FROM mkt_wap_messages m JOIN queue_jobs j ON j.id = m.job_id \
         WHERE m.schedule_id = $1 ORDER BY m.id",
    )
    .bind(s)
    .fetch_all(p)
    .await
    .unwrap()
}

async fn set_campaign(p: &PgPool, campaign: Uuid, status: &str) {
    sqlx::query("UPDATE mkt_campaigns SET status = $2 WHERE id = $1")
        .bind(campaign)
        .bind(status)
        .execute(p)
        .await
        .unwrap();
}

async fn recorded(p: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM queue_handler_records WHERE kind = 'send'")
        .fetch_one(p)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_paused_campaign_holds_its_schedules_and_queued_sends_and_resuming_releases_them() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let g = groups(p, 3, &[a]).await;
    let c = content(p).await;
    let scheduler = Scheduler::new(p.clone(), &settings());

    // Paused before its time: the schedule does not expand, and says why.
    set_campaign(p, c.0, "paused").await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    let report = scheduler.tick().await.unwrap();
    assert!(report.expansions.is_empty(), "{report:?}");
    let (st, reason) = status(p, s).await;
    assert_eq!(st, "scheduled");
    assert!(
        reason.as_deref().unwrap_or("").contains("is paused"),
        "{reason:?}"
    );

    // Resumed: it expands, and the hold's reason is gone.
    set_campaign(p, c.0, "active").await;
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.holds.released, 1);
    assert_eq!(report.expansions[0].outcome, Outcome::Expanded);
    assert_eq!(report.expansions[0].queued, 3);
    assert_eq!(status(p, s).await.1, None);

    // Paused again with three sends queued, and a worker running: the claim's
    // gate holds them at once, before any scheduler pass.
    set_campaign(p, c.0, "paused").await;
    let (stop, task) = start_recorder(p);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorded(p).await,
        0,
        "nothing of a paused campaign is claimed"
    );
    for (state, attempt, _, status, _) in held_states(p, s).await {
        assert_eq!(
            (state.as_str(), attempt, status.as_str()),
            ("available", 0, "queued")
        );
    }

    // The scheduler's pass parks them, with the reason on job and message:
    // held, not failed, no attempt spent.
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.holds.held, report.holds.parked),
        (1, 3),
        "{report:?}"
    );
    for (state, attempt, job_reason, status, msg_reason) in held_states(p, s).await {
        assert_eq!(
            (state.as_str(), attempt, status.as_str()),
            ("scheduled", 0, "queued")
        );
        for r in [job_reason, msg_reason] {
            let r = r.unwrap_or_default();
            assert!(
                r.starts_with("held: campaign \"spring\"") && r.contains("is paused"),
                "{r}"
            );
        }
    }
    // A second pass changes nothing.
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.holds.held, report.holds.parked),
        (0, 0),
        "{report:?}"
    );

    // Resumed: released at once and sent, each once, on its first attempt.
    set_campaign(p, c.0, "active").await;
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.holds.released, report.holds.freed),
        (1, 3),
        "{report:?}"
    );
    assert_eq!(
        wait_for(
            p,
            "SELECT count(*) FROM queue_handler_records WHERE kind = 'send'",
            3,
            Duration::from_secs(15)
        )
        .await,
        3
    );
    let _ = stop.send(());
    task.await.unwrap();
    for (state, attempt, job_reason, status, msg_reason) in held_states(p, s).await {
        assert_eq!((state.as_str(), attempt), ("completed", 1));
        assert_eq!(
            status, "sending",
            "the claim's policy marked it; the recorder sends nothing"
        );
        assert_eq!((job_reason, msg_reason), (None, None));
    }
}

#[tokio::test]
async fn a_cancelled_campaign_holds_its_sends_too_and_never_fails_them() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let g = groups(p, 2, &[a]).await;
    let c = content(p).await;
    let scheduler = Scheduler::new(p.clone(), &settings());
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    scheduler.tick().await.unwrap();

    set_campaign(p, c.0, "cancelled").await;
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.holds.parked, 2);
    // A send pushed straight into the queue after the pass (another path
    // than the scheduler's) is held by the claim as well.
    let message: Uuid =
        sqlx::query_scalar("SELECT id FROM mkt_wap_messages WHERE schedule_id = $1 LIMIT 1")
            .bind(s)
            .fetch_one(p)
            .await
            .unwrap();
    let pushed = courier::queue::enqueue(
        p,
        &courier::queue::NewJob::new(
            a,
            &courier::jobs::send::SendJob {
                message_id: message,
            },
        )
        .unwrap()
        .idempotency_key(None),
    )
    .await
    .unwrap();
    let (stop, task) = start_recorder(p);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(recorded(p).await, 0);
    let job = courier::queue::get_job(p, pushed.id)
        .await
        .unwrap()
        .unwrap();
    assert!(pushed.created);
    assert_eq!(
        (job.state_name.as_str(), job.attempt),
        ("available", 0),
        "held by the claim, not spent"
    );
    let _ = stop.send(());
    task.await.unwrap();
    for (state, attempt, job_reason, status, _) in held_states(p, s).await {
        assert_eq!(
            (state.as_str(), attempt, status.as_str()),
            ("scheduled", 0, "queued")
        );
        assert!(job_reason.unwrap_or_default().contains("is cancelled"));
    }
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages WHERE status = 'failed'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(failed, 0, "held, not failed");
}

#[tokio::test]
async fn concurrent_expansions_never_duplicate() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    contacts(p, 300, 447700900000, "vip").await;
    let c = content(p).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            schedule(
                p,
                c,
                NewSchedule {
                    tags: &["vip"],
                    ..Default::default()
                },
            )
            .await,
        );
    }
    // Four schedulers expanding at once, bypassing the leader election: the
    // row locks and the idempotency keys alone keep it exactly-once.
    let s = settings();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let sch = Scheduler::new(p.clone(), &s);
            tokio::spawn(async move { sch.expand_due().await.unwrap().len() })
        })
        .collect();
    let mut handled = 0;
    for t in tasks {
        handled += t.await.unwrap();
    }
    assert_eq!(handled, 20, "each row handled by exactly one scheduler");
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (schedule_id, target_chat_id)) FROM mkt_wap_messages",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((total, distinct), (6000, 6000));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'send'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(jobs, 6000);
}

async fn wait_for(pool: &PgPool, sql: &str, want: i64, timeout: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(pool)
            .await
            .unwrap();
        if n == want || start.elapsed() > timeout {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_scheduler_processes_on_the_same_due_schedules_make_no_duplicates() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    account(p, "b").await;
    contacts(p, 500, 447700900000, "vip").await;
    let c = content(p).await;
    let mut procs = Reaper(vec![
        courier(&t.url).arg("scheduler").spawn().unwrap(),
        courier(&t.url).arg("scheduler").spawn().unwrap(),
    ]);
    // Schedules keep arriving while both run.
    for _ in 0..30 {
        schedule(
            p,
            c,
            NewSchedule {
                tags: &["vip"],
                ..Default::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let queued = wait_for(
        p,
        "SELECT count(*) FROM mkt_con_schedule WHERE status = 'queued'",
        30,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(queued, 30);
    let leader_lock = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    assert_eq!(
        wait_for(p, leader_lock, 1, Duration::from_secs(10)).await,
        1,
        "exactly one process holds the leader lock"
    );
    // Processes die one by one (kill -9) while a new one joins; whichever was
    // the leader, the work goes on and nothing is duplicated.
    let mut want = 30;
    for round in 0..2 {
        procs.0[round].kill().unwrap();
        procs.0[round].wait().unwrap();
        procs
            .0
            .push(courier(&t.url).arg("scheduler").spawn().unwrap());
        for _ in 0..5 {
            schedule(
                p,
                c,
                NewSchedule {
                    tags: &["vip"],
                    ..Default::default()
                },
            )
            .await;
        }
        want += 5;
        let queued = wait_for(
            p,
            "SELECT count(*) FROM mkt_con_schedule WHERE status = 'queued'",
            want,
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(
            queued, want,
            "a surviving process leads and expands the rest"
        );
    }
    assert_eq!(
        wait_for(p, leader_lock, 1, Duration::from_secs(10)).await,
        1
    );
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (schedule_id, target_chat_id)) FROM mkt_wap_messages",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((total, distinct), (40 * 500, 40 * 500));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'send'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(jobs, 40 * 500);
}

#[tokio::test]
async fn kill_9_mid_expansion_then_restart_queues_every_target_exactly_once() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    account(p, "b").await;
    const N: i64 = 60_000;
    contacts(p, N, 447000000000, "bulk").await;
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            tags: &["bulk"],
            ..Default::default()
        },
    )
    .await;

    let mut child = courier(&t.url)
        .arg("scheduler")
        .env("COURIER__SCHEDULER__BATCH_SIZE", "5000")
        .spawn()
        .unwrap();
    // Wait until the expansion is writing messages, then kill -9.
    let start = Instant::now();
    loop {
        let writing: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
               AND pid <> pg_backend_pid() AND state <> 'idle' \
               AND query LIKE '%INSERT INTO mkt_wap_messages%')",
        )
        .fetch_one(p)
        .await
        .unwrap();
        if writing {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "expansion never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // The killed transaction is rolled back once its backend notices.
    wait_for(
        p,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
           AND pid <> pg_backend_pid()",
        0,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        status(p, s).await.0,
        "scheduled",
        "killed mid-expansion: nothing committed"
    );
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1",
            s
        )
        .await,
        0
    );

    let _restarted = Reaper(vec![courier(&t.url).arg("scheduler").spawn().unwrap()]);
    let queued = wait_for(
        p,
        "SELECT count(*) FROM mkt_con_schedule WHERE status = 'queued'",
        1,
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(queued, 1);
    let (total, distinct, jobs): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT target_chat_id), count(DISTINCT job_id) \
         FROM mkt_wap_messages WHERE schedule_id = $1",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((total, distinct, jobs), (N, N, N));
    let send_jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'send'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(send_jobs, N);
}

#[tokio::test]
async fn a_cron_schedule_stopped_for_three_minutes_catches_up_by_its_policy() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    contacts(p, 2, 447700900000, "vip").await;
    let c = content(p).await;
    let mut ids = Vec::new();
    for policy in ["all", "latest", "skip"] {
        ids.push(
            schedule(
                p,
                c,
                NewSchedule {
                    tags: &["vip"],
                    cron: Some("* * * * *"),
                    policy: Some(policy),
                    ..Default::default()
                },
            )
            .await,
        );
    }
    // Never straddle a minute boundary between setting the clock and the tick.
    let second: f64 = sqlx::query_scalar("SELECT extract(second FROM now())::float8")
        .fetch_one(p)
        .await
        .unwrap();
    if second > 55.0 {
        tokio::time::sleep(Duration::from_secs_f64(61.0 - second)).await;
    }
    // The scheduler last expanded three minutes ago and was stopped since.
    sqlx::query(
        "UPDATE mkt_con_schedule SET last_occurrence_at = date_trunc('minute', now()) - interval '3 minutes', \
            next_occurrence_at = date_trunc('minute', now()) - interval '2 minutes'",
    )
    .execute(p)
    .await
    .unwrap();
    let lag = expand::lag_seconds(p).await.unwrap();
    assert!(lag >= 120.0, "lag {lag}");

    let scheduler = Scheduler::new(p.clone(), &settings());
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.expansions.len(), 3);
    assert!(report.lag_seconds < 1.0);
    let count = |id| {
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1",
            id,
        )
    };
    // all: the three missed minutes, 2 contacts each.
    assert_eq!(count(ids[0]).await, 6);
    let (st, reason) = status(p, ids[0]).await;
    assert_eq!(st, "scheduled", "a recurring schedule stays scheduled");
    assert!(reason.is_none(), "{reason:?}");
    // latest: only the most recent; the two older ones are reported.
    assert_eq!(count(ids[1]).await, 2);
    let reason = status(p, ids[1]).await.1.unwrap();
    assert!(
        reason.contains("skipped 2 missed occurrence(s) by catch_up_policy=latest"),
        "{reason}"
    );
    // skip: the on-time minute only; the missed ones are reported.
    assert_eq!(count(ids[2]).await, 2);
    let reason = status(p, ids[2]).await.1.unwrap();
    assert!(reason.contains("catch_up_policy=skip"), "{reason}");
    // Next occurrence is in the future and a second tick adds nothing.
    let future: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_con_schedule WHERE next_occurrence_at > now() \
           AND last_occurrence_at = date_trunc('minute', now())",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(future, 3);
    scheduler.tick().await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(total, 10);
}

#[tokio::test]
async fn banning_the_assigned_account_moves_its_queued_jobs_and_loses_none() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let b = account(p, "b").await;
    let g = groups(p, 2, &[a, b]).await;
    contacts(p, 10, 447700900000, "vip").await;
    // The contacts are with account a.
    sqlx::query("UPDATE mkt_wap_contacts SET preferred_account_id = $1")
        .bind(a)
        .execute(p)
        .await
        .unwrap();
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            tags: &["vip"],
            ..Default::default()
        },
    )
    .await;
    // Pinning wins over everything: a second schedule pinned to b.
    let pinned = schedule(
        p,
        c,
        NewSchedule {
            tags: &["vip"],
            pinned: Some(b),
            ..Default::default()
        },
    )
    .await;
    let settings = settings();
    Scheduler::new(p.clone(), &settings).tick().await.unwrap();
    let on_a = scalar(
        p,
        "SELECT count(*) FROM queue_jobs WHERE account_id = $1 AND kind = 'send'",
        a,
    )
    .await;
    assert!(on_a >= 10, "contacts stay with their account a ({on_a})");
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1 AND account_id = \
             (SELECT account_id FROM mkt_con_schedule WHERE id = $1)",
            pinned
        )
        .await,
        10
    );

    sqlx::query("UPDATE mkt_wap_accounts SET status = 'banned' WHERE id = $1")
        .bind(a)
        .execute(p)
        .await
        .unwrap();
    maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();

    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM queue_jobs WHERE account_id = $1 AND kind = 'send' \
               AND state <> 'cancelled'",
            a
        )
        .await,
        0
    );
    // Every message of the schedule still has exactly one live job, on b.
    let (msgs, live_on_b): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE j.account_id = $2 AND m.account_id = $2 \
             AND j.state = 'available' AND m.status = 'queued') \
         FROM mkt_wap_messages m JOIN queue_jobs j ON j.id = m.job_id WHERE m.schedule_id = $1",
    )
    .bind(s)
    .bind(b)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((msgs, live_on_b), (12, 12));
    let events = scalar(
        p,
        "SELECT count(*) FROM mkt_wap_message_events e JOIN mkt_wap_messages m ON m.id = e.message_id \
         WHERE m.schedule_id = $1 AND e.source = 'reassign'",
        s,
    )
    .await;
    assert!(events >= 10, "{events}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'send'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(jobs, 22, "moved, not copied");
}

#[tokio::test]
async fn an_attempted_send_on_a_banned_account_is_held_with_the_reason_not_moved() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let b = account(p, "b").await;
    let g = groups(p, 2, &[a, b]).await;
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    let settings = settings();
    Scheduler::new(p.clone(), &settings).tick().await.unwrap();
    // Put both sends on a; one of them was attempted (a worker started it and
    // died: its outcome is unknown), the other never was.
    sqlx::query("UPDATE queue_jobs SET account_id = $1 WHERE kind = 'send'")
        .bind(a)
        .execute(p)
        .await
        .unwrap();
    sqlx::query("UPDATE mkt_wap_messages SET account_id = $1 WHERE schedule_id = $2")
        .bind(a)
        .bind(s)
        .execute(p)
        .await
        .unwrap();
    let attempted: Uuid = sqlx::query_scalar(
        "UPDATE mkt_wap_messages SET status = 'sending', attempt_started_at = now(), \
             sending_at = now() \
         WHERE id = (SELECT min(id::text)::uuid FROM mkt_wap_messages WHERE schedule_id = $1) \
         RETURNING job_id",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE queue_jobs SET attempt = 1, rescues = 1, state = 'retryable' WHERE id = $1",
    )
    .bind(attempted)
    .execute(p)
    .await
    .unwrap();
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'banned' WHERE id = $1")
        .bind(a)
        .execute(p)
        .await
        .unwrap();
    maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();

    // The attempted one stays on a (only a's chat can tell whether it went
    // out; moving it could send it twice), and says why.
    let (on, job_why, state, msg_status, msg_why): (
        Uuid,
        Option<String>,
        String,
        String,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT j.account_id, j.waiting_reason, j.state, m.status, m.waiting_reason \
             FROM queue_jobs j JOIN mkt_wap_messages m ON m.job_id = j.id WHERE j.id = $1",
    )
    .bind(attempted)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(
        (on, state.as_str(), msg_status.as_str()),
        (a, "retryable", "sending")
    );
    for why in [&job_why, &msg_why] {
        let why = why.as_deref().unwrap_or_default();
        assert!(why.starts_with("outcome unknown"), "{why}");
        assert!(
            why.contains(&a.to_string()) && why.contains("banned"),
            "{why}"
        );
    }
    // The never-attempted one moved to b.
    let moved: i64 = scalar(
        p,
        "SELECT count(*) FROM queue_jobs WHERE kind = 'send' AND account_id = $1 AND state = 'available'",
        b,
    )
    .await;
    assert_eq!(moved, 1);
    // Idempotent: a second pass changes nothing and still counts it.
    let note = maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();
    assert!(note.contains("1 held (outcome unknown)"), "{note}");

    // The operator's way out: cancelling the held job fails the message,
    // saying it may have gone out; the sweep does not retry it.
    courier::queue::cancel(p, attempted).await.unwrap();
    maintenance::run(p, &settings, Task::Sweep, chrono::Utc::now())
        .await
        .unwrap();
    let (status, error, why): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT status, error_message, waiting_reason FROM mkt_wap_messages WHERE job_id = $1",
    )
    .bind(attempted)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("cancelled") && error.contains("may have reached WhatsApp"),
        "{error}"
    );
    assert_eq!(why, None);
    let retries: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'retry'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(retries, 0, "a cancelled send is not retried");
}

#[tokio::test]
async fn with_no_eligible_peer_the_jobs_wait_with_the_reason_then_move_when_one_appears() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "a").await;
    let g = groups(p, 1, &[a]).await;
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            groups: &g,
            ..Default::default()
        },
    )
    .await;
    let settings = settings();
    Scheduler::new(p.clone(), &settings).tick().await.unwrap();
    sqlx::query(
        "UPDATE mkt_wap_accounts SET status = 'paused', paused_until = now() + interval '6 hours' \
         WHERE id = $1",
    )
    .bind(a)
    .execute(p)
    .await
    .unwrap();
    maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();
    let (st, reason, job): (String, Option<String>, Option<Uuid>) = sqlx::query_as(
        "SELECT status, waiting_reason, job_id FROM mkt_wap_messages WHERE schedule_id = $1",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(st, "pending");
    assert!(job.is_none());
    let reason = reason.unwrap();
    assert!(
        reason.contains("is paused until") && reason.contains("member of group"),
        "{reason}"
    );
    let cancelled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE state = 'cancelled'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(cancelled, 1);
    // Visible in metrics too: the pass counts the messages waiting.
    let line = maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();
    assert!(line.contains("1 waiting"), "{line}");

    // A member account appears: the next pass assigns it.
    let b = account(p, "b").await;
    sqlx::query("INSERT INTO mkt_wap_account_groups (account_id, group_id) VALUES ($1, $2)")
        .bind(b)
        .bind(g[0])
        .execute(p)
        .await
        .unwrap();
    maintenance::run(p, &settings, Task::Reassign, chrono::Utc::now())
        .await
        .unwrap();
    let (st, account, live): (String, Option<Uuid>, i64) = sqlx::query_as(
        "SELECT m.status, m.account_id, (SELECT count(*) FROM queue_jobs j WHERE j.id = m.job_id \
             AND j.state = 'available') FROM mkt_wap_messages m WHERE schedule_id = $1",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((st.as_str(), account, live), ("queued", Some(b), 1));
}

#[tokio::test]
async fn cancelling_a_schedule_withdraws_its_not_started_jobs() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    contacts(p, 5, 447700900000, "vip").await;
    let c = content(p).await;
    let s = schedule(
        p,
        c,
        NewSchedule {
            tags: &["vip"],
            ..Default::default()
        },
    )
    .await;
    let scheduler = Scheduler::new(p.clone(), &settings());
    scheduler.tick().await.unwrap();
    sqlx::query("UPDATE mkt_con_schedule SET status = 'cancelled' WHERE id = $1")
        .bind(s)
        .execute(p)
        .await
        .unwrap();
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.withdrawn, 5);
    let runnable: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM queue_jobs WHERE kind = 'send' \
           AND state IN ('available', 'scheduled', 'retryable')",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(runnable, 0);
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_messages WHERE schedule_id = $1 AND status = 'failed' \
               AND error_message LIKE 'withdrawn%'",
            s
        )
        .await,
        5
    );
}

#[tokio::test]
async fn maintenance_enqueues_health_checks_and_discovery_once_per_interval() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    account(p, "a").await;
    account(p, "b").await;
    sqlx::query("INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('gone', 'banned')")
        .execute(p)
        .await
        .unwrap();
    let settings = settings();
    let first = maintenance::run_due(p, &settings).await;
    assert_eq!(first.len(), Task::ALL.len(), "{first:?}");
    let second = maintenance::run_due(p, &settings).await;
    assert!(second.is_empty(), "intervals not passed yet: {second:?}");
    let kinds: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM queue_jobs GROUP BY kind ORDER BY kind")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        vec![("discover".to_string(), 2), ("health_check".to_string(), 2)]
    );
    // Forced again within the interval: nothing piles up.
    maintenance::run(p, &settings, Task::HealthChecks, chrono::Utc::now())
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'health_check'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn stuck_login_statuses_move_on_by_the_login_machines_one_rule() {
    // One rule, wherever it is applied (the login run itself or this
    // reaper): an unscanned QR leaves the account inactive; a page that never
    // started or never became ready is failed. Within the grace after the
    // deadline a live login run decides first, so nothing moves.
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    sqlx::query(
        "INSERT INTO mkt_wap_accounts (account_name, status, status_deadline) VALUES \
           ('a-qr', 'qr_pending', now() - interval '1 minute'), \
           ('b-boot', 'starting', now() - interval '1 minute'), \
           ('c-auth', 'authenticating', now() - interval '1 minute'), \
           ('d-fine', 'qr_pending', now() + interval '1 minute'), \
           ('e-grace', 'qr_pending', now() - interval '1 second')",
    )
    .execute(p)
    .await
    .unwrap();
    let line = maintenance::run(p, &settings(), Task::Reap, chrono::Utc::now())
        .await
        .unwrap();
    assert!(line.contains("3 stuck account(s) moved on"), "{line}");
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT account_name, status, status_reason FROM mkt_wap_accounts ORDER BY account_name",
    )
    .fetch_all(p)
    .await
    .unwrap();
    let status: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        status,
        vec![
            ("a-qr", "inactive"),
            ("b-boot", "failed"),
            ("c-auth", "failed"),
            ("d-fine", "qr_pending"),
            ("e-grace", "qr_pending"),
        ]
    );
    for (name, from) in [
        ("a-qr", "qr_pending"),
        ("b-boot", "starting"),
        ("c-auth", "authenticating"),
    ] {
        let reason = rows
            .iter()
            .find(|r| r.0 == name)
            .unwrap()
            .2
            .clone()
            .unwrap();
        assert!(
            reason.contains(&format!("no progress in {from} before its deadline")),
            "{name}: {reason}"
        );
    }
    // The same rule as the machine's own deadline handling.
    use courier::account::login::LoginState;
    assert_eq!(LoginState::QrPending.on_deadline().status(), "inactive");
    assert_eq!(LoginState::Starting.on_deadline().status(), "failed");
    assert_eq!(LoginState::Authenticating.on_deadline().status(), "failed");
}

/// A send job for `message` that gave up (`discarded` after 3 attempts),
/// linked from the message, as the sweep finds it.
async fn discarded_send_job(p: &PgPool, a: Uuid, message: Uuid, last_error: Option<&str>) -> Uuid {
    let job = courier::queue::NewJob::new(
        a,
        &courier::jobs::send::SendJob {
            message_id: message,
        },
    )
    .unwrap();
    let job_id = courier::queue::store::enqueue_batch(p, &[job])
        .await
        .unwrap()[0]
        .id;
    sqlx::query(
        "UPDATE queue_jobs SET state = 'discarded', attempt = 3, finished_at = now(), \
           last_error = $2 WHERE id = $1",
    )
    .bind(job_id)
    .bind(last_error)
    .execute(p)
    .await
    .unwrap();
    sqlx::query("UPDATE mkt_wap_messages SET job_id = $2 WHERE id = $1")
        .bind(message)
        .bind(job_id)
        .execute(p)
        .await
        .unwrap();
    job_id
}

#[tokio::test]
async fn the_sweep_retries_transient_failures_and_leaves_permanent_ones_for_an_operator() {
    // A permanent failure (bad media, an unknown chat, a number not on
    // WhatsApp) would fail the same way again, spending a budget slot and
    // health each time: the sweep leaves it failed. A transient one gets its
    // retry. (Before, every failed message with retries left was retried.)
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "classes").await;
    let mut ids = Vec::new();
    for (chat, class) in [
        ("919800000011@c.us", "permanent"),
        ("919800000012@c.us", "transient"),
    ] {
        let message: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_messages (account_id, channel_type, target_chat_id, message_text, \
                status, failed_at, failure_class, error_message) \
             VALUES ($1, 'individual', $2, 'hello', 'failed', now(), $3, 'it failed') RETURNING id",
        )
        .bind(a)
        .bind(chat)
        .bind(class)
        .fetch_one(p)
        .await
        .unwrap();
        discarded_send_job(p, a, message, None).await;
        ids.push(message);
    }
    let line = maintenance::run(p, &settings(), Task::Sweep, chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        line.contains("1 failed message(s) re-queued for retry"),
        "{line}"
    );
    let states: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT status, retry_count, failure_class FROM mkt_wap_messages \
         WHERE id = ANY($1) ORDER BY target_chat_id",
    )
    .bind(&ids)
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![
            ("failed".to_string(), 0, Some("permanent".to_string())),
            ("queued".to_string(), 1, None),
        ]
    );
}

#[tokio::test]
async fn a_message_whose_send_job_was_discarded_mid_flight_fails_with_the_reason_and_gets_a_retry()
{
    // Found by the chaos run: a send whose session never became ready ran out
    // of attempts; the job was discarded and the message stayed `sending`.
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let a = account(p, "orphan").await;
    let message: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_messages (account_id, channel_type, target_chat_id, message_text, status, sending_at, attempt_started_at) \
         VALUES ($1, 'individual', '919800000001@c.us', 'hello', 'sending', now(), now()) RETURNING id",
    )
    .bind(a)
    .fetch_one(p)
    .await
    .unwrap();
    discarded_send_job(
        p,
        a,
        message,
        Some("browser session lost: invalid session id"),
    )
    .await;

    let line = maintenance::run(p, &settings(), Task::Sweep, chrono::Utc::now())
        .await
        .unwrap();
    assert!(line.starts_with("1 orphaned message(s) failed"), "{line}");

    // Failed with the job's reason (an event says so), then re-queued with a
    // retry job, which checks the chat before sending again.
    let (status, retries, error): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT status, retry_count, error_message FROM mkt_wap_messages WHERE id = $1",
    )
    .bind(message)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((status.as_str(), retries), ("queued", 1));
    assert!(error.unwrap_or_default().contains("invalid session id"));
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM mkt_wap_message_events WHERE message_id = $1 \
               AND status = 'failed' AND source = 'sweeper'",
            message
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            p,
            "SELECT count(*) FROM queue_jobs WHERE kind = 'retry' AND payload->>'message_id' = $1::text",
            message
        )
        .await,
        1
    );
    // A second pass finds nothing more to do.
    let again = maintenance::run(p, &settings(), Task::Sweep, chrono::Utc::now())
        .await
        .unwrap();
    assert!(again.starts_with("0 orphaned"), "{again}");
}
