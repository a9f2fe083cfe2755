//! The run itself: start the stack, load it, inject faults, drain, check,
//! report. See the module docs of [`super`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::check;
use super::faults::{FaultKind, Injected, Scope};
use super::procs::{self, Proc};
use super::{ChaosArgs, Profile};
use crate::demo::{self, Api};
use courier::config::Settings;
use courier::db::embedded::ShutdownMode;
use courier::db::{EmbeddedOptions, EmbeddedPostgres};
use courier::error::BoxError;
use courier_sim::control::SimControl;

/// Leases in a chaos run: short, so takeovers happen within the run.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// A transient account status may overrun its deadline by this much (the
/// reaper's interval) before it counts as stuck.
const DEADLINE_GRACE: Duration = Duration::from_secs(30);

/// Every process of the run.
struct Stack {
    exe: PathBuf,
    workers: Vec<Proc>,
    scheduler: Proc,
    api: Proc,
    sim: Proc,
    /// chromedriver pids seen under our workers (for the final clean-up of
    /// those a `kill -9` orphaned).
    drivers_seen: HashMap<i32, ()>,
}

impl Stack {
    fn all(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.workers
            .iter_mut()
            .chain([&mut self.scheduler, &mut self.api, &mut self.sim])
    }
}

/// What the fault tasks share.
struct Ctx {
    stack: Mutex<Stack>,
    pg: EmbeddedPostgres,
    pool: PgPool,
    ctl: SimControl,
    api: Api,
    /// Account id and phone, set once they are logged in.
    accounts_set: std::sync::OnceLock<Vec<(Uuid, String)>>,
    blocked: Mutex<HashSet<Uuid>>,
    relogin_in_flight: Mutex<HashSet<Uuid>>,
    relogins: Mutex<usize>,
    started: Instant,
}

impl Ctx {
    fn accounts(&self) -> &[(Uuid, String)] {
        self.accounts_set.get().map_or(&[], Vec::as_slice)
    }
}

fn say(started: Instant, text: impl AsRef<str>) {
    demo::step(started, text);
}

/// Runs `courier chaos`.
pub async fn run(settings: &Settings, args: ChaosArgs) -> Result<(), BoxError> {
    let profile = Profile::named(args.profile, args.minutes);
    let seed = args.seed.unwrap_or_else(rand::random);
    let started = Instant::now();
    println!(
        "courier chaos — profile {:?}, seed {seed} (rerun with --seed {seed})",
        args.profile
    );
    println!(
        "  {} accounts, {} messages ({} schedules × {} + {} through the API), budgets {}/min {}/h {}/day, {:.1} min of faults",
        profile.accounts,
        profile.total_messages(),
        profile.schedules,
        profile.per_schedule,
        profile.api_messages,
        profile.per_minute,
        profile.per_hour,
        profile.per_day,
        profile.fault_minutes
    );
    let dir = tempfile::Builder::new()
        .prefix("courier-chaos-")
        .tempdir_in("/tmp")?;
    // The server runs as the `postgres` user when we are root: it must reach
    // its data directory inside.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    say(started, format!("run directory {}", dir.path().display()));

    let pg_opts = EmbeddedOptions {
        data_dir: dir.path().join("pg"),
        bin_dir: settings.embedded.bin_dir.clone(),
        run_as: settings.embedded.run_as.clone(),
        database: "courier".into(),
        unsafe_no_fsync: false,
    };
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(pg_opts)).await??;
    let url = pg.url();
    courier::db::embedded::wait_ready(&pg.url_for("postgres"), Duration::from_secs(30)).await?;
    {
        let admin =
            courier::db::connect(&pg.url_for("postgres"), 1, Duration::from_secs(10)).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'courier')",
        )
        .fetch_one(&admin)
        .await?;
        if !exists {
            sqlx::query("CREATE DATABASE courier")
                .execute(&admin)
                .await?;
        }
        admin.close().await;
    }
    let pool = courier::db::connect(&url, 5, Duration::from_secs(10)).await?;
    courier::db::migrate(&pool).await?;
    say(
        started,
        format!("embedded PostgreSQL at {}", dir.path().join("pg").display()),
    );

    let outcome = run_in(
        settings,
        &args,
        &profile,
        seed,
        started,
        dir.path(),
        pg,
        pool,
    )
    .await;
    match &outcome {
        Ok(()) if !args.keep => {}
        _ => {
            let kept = dir.keep();
            println!(
                "run directory kept: {} (process logs, database)",
                kept.display()
            );
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    _settings: &Settings,
    args: &ChaosArgs,
    profile: &Profile,
    seed: u64,
    started: Instant,
    dir: &Path,
    pg: EmbeddedPostgres,
    pool: PgPool,
) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let sim_port = procs::free_port()?;
    let api_port = procs::free_port()?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let api_url = format!("http://127.0.0.1:{api_port}");
    let token = format!("chaos-{}", Uuid::new_v4().simple());
    let profiles = dir.join("profiles");
    let key = courier::browser::SnapshotKey::random().to_hex();
    let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("COURIER__DATABASE__URL", pg.url()),
            ("COURIER__DATABASE__MAX_CONNECTIONS", "10".into()),
            ("COURIER__LOG__LEVEL", "info,sqlx=warn".into()),
            ("COURIER__API__TOKEN", token.clone()),
            ("COURIER__API__LISTEN", format!("127.0.0.1:{api_port}")),
            (
                "COURIER__QUEUE__LEASE_TTL",
                format!("{}s", LEASE_TTL.as_secs()),
            ),
            ("COURIER__QUEUE__HEARTBEAT_INTERVAL", "3s".into()),
            ("COURIER__QUEUE__POLL_INTERVAL", "1s".into()),
            ("COURIER__QUEUE__BACKOFF_BASE", "5s".into()),
            ("COURIER__QUEUE__BACKOFF_MAX", "60s".into()),
            ("COURIER__QUEUE__CAPACITY", "5".into()),
            ("COURIER__SCHEDULER__REASSIGN_INTERVAL", "5s".into()),
            ("COURIER__SCHEDULER__REAP_INTERVAL", "5s".into()),
            ("COURIER__SCHEDULER__SWEEP_INTERVAL", "20s".into()),
            (
                "COURIER__BROWSER__PAGE_URL",
                format!("{sim_url}/?account={{account}}"),
            ),
            (
                "COURIER__BROWSER__PROFILES_DIR",
                profiles.display().to_string(),
            ),
            (
                "COURIER__BROWSER__MEDIA_DIR",
                dir.join("media").display().to_string(),
            ),
            ("COURIER__BROWSER__SESSION_KEY", key.clone()),
            ("COURIER__DELIVERY__TYPING_PER_CHAR", "0ms".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let sim = Proc::new(
        "sim",
        &[
            "sim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--loading",
            "500ms",
            "--ack-server",
            "200ms",
            "--ack-device",
            "500ms",
            "--ack-read",
            "1s",
        ],
        Vec::new(),
        dir,
    );
    let api = Proc::new("api", &["api"], common(&[]), dir);
    let scheduler = Proc::new("scheduler", &["scheduler"], common(&[]), dir);
    let workers = (1..=3)
        .map(|i| Proc::new(&format!("worker-{i}"), &["worker"], common(&[]), dir))
        .collect();
    let mut stack = Stack {
        exe: exe.clone(),
        workers,
        scheduler,
        api,
        sim,
        drivers_seen: HashMap::new(),
    };
    for p in stack.all() {
        p.start(&exe)?;
    }
    let ctx = Arc::new(Ctx {
        stack: Mutex::new(stack),
        pg,
        pool,
        ctl: SimControl::new(&sim_url),
        api: Api::new(api_url.clone(), token.clone()),
        accounts_set: std::sync::OnceLock::new(),
        blocked: Mutex::new(HashSet::new()),
        relogin_in_flight: Mutex::new(HashSet::new()),
        relogins: Mutex::new(0),
        started,
    });
    let result = drive(ctx.clone(), args, profile, seed, started).await;
    // Tear down whatever happened: SIGTERM each role (workers close their
    // browsers), then whatever a kill -9 orphaned, then the cluster.
    let ctx = match Arc::try_unwrap(ctx) {
        Ok(c) => c,
        Err(shared) => {
            // Background tasks still hold it; give them a moment.
            tokio::time::sleep(Duration::from_secs(1)).await;
            match Arc::try_unwrap(shared) {
                Ok(c) => c,
                Err(_) => return result,
            }
        }
    };
    let mut stack = ctx.stack.into_inner().expect("stack lock");
    let clean = tokio::task::spawn_blocking(move || {
        let mut unclean = Vec::new();
        for w in stack.workers.iter_mut() {
            if !w.terminate(Duration::from_secs(40)) {
                unclean.push(w.name.clone());
            }
        }
        for p in [&mut stack.scheduler, &mut stack.api, &mut stack.sim] {
            if !p.terminate(Duration::from_secs(20)) {
                unclean.push(p.name.clone());
            }
        }
        let left = procs::kill_leftovers(&stack.drivers_seen, &profiles);
        (unclean, left)
    })
    .await?;
    if !clean.0.is_empty() {
        println!("  note: not a clean SIGTERM exit: {}", clean.0.join(", "));
    }
    if clean.1 > 0 {
        println!(
            "  note: {} chromedriver/Chromium processes orphaned by kill -9 were still running; killed",
            clean.1
        );
    }
    ctx.pool.close().await;
    let pg = ctx.pg;
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    result
}

/// Everything between start-up and tear-down.
async fn drive(
    ctx: Arc<Ctx>,
    _args: &ChaosArgs,
    profile: &Profile,
    seed: u64,
    started: Instant,
) -> Result<(), BoxError> {
    // Wait for the simulator and the API.
    demo::wait_for("the simulator", Duration::from_secs(30), || {
        let ctl = ctx.ctl.clone();
        async move { Ok(ctl.all_messages().await.is_ok()) }
    })
    .await?;
    demo::wait_for("the API /readyz", Duration::from_secs(60), || {
        let api = ctx.api.clone();
        async move {
            Ok(api
                .http
                .get(format!("{}/readyz", api.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()))
        }
    })
    .await?;
    say(started, "simulator, API, scheduler and 3 workers running");

    // Accounts, logged in by QR through the API.
    let accounts: Vec<(String, String)> = (0..profile.accounts)
        .map(|i| {
            (
                format!("Chaos sender {}", i + 1),
                format!("4477009002{i:02}"),
            )
        })
        .collect();
    let ids = demo::log_in_accounts(
        started,
        &ctx.api,
        &ctx.ctl,
        &accounts,
        &profile.limits_json(),
    )
    .await?;
    // Seasoned accounts: the warm-up ladder (for an account's first days)
    // would otherwise cap each at 20 sends today.
    sqlx::query("UPDATE mkt_wap_accounts SET created_at = now() - interval '30 days'")
        .execute(&ctx.pool)
        .await?;
    let _ = ctx.accounts_set.set(
        ids.iter()
            .copied()
            .zip(accounts.iter().map(|a| a.1.clone()))
            .collect(),
    );
    for (id, _) in ctx.accounts() {
        // Quick acks, so "delivered" follows soon after a send.
        ctx.ctl
            .ack_timing(
                &id.to_string(),
                json!({"server_ms": 200, "device_ms": 500, "read_ms": 1000}),
            )
            .await?;
    }
    say(started, format!("{} accounts active", ctx.accounts().len()));

    // Campaign schedules, due over the first half of the fault phase.
    let fault_phase = Duration::from_secs_f64(profile.fault_minutes * 60.0);
    let mut expected: HashSet<String> = HashSet::new();
    let campaign: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_campaigns (name) VALUES ('Chaos campaign') RETURNING id",
    )
    .fetch_one(&ctx.pool)
    .await?;
    let content: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_content (campaign_id, title, body) \
         VALUES ($1, 'chaos', 'Layer mash 10% off this week. Reply STOP to opt out.') RETURNING id",
    )
    .bind(campaign)
    .fetch_one(&ctx.pool)
    .await?;
    let spacing = fault_phase.as_secs_f64() / 2.0 / profile.schedules.max(1) as f64;
    for s in 0..profile.schedules {
        let phones: Vec<String> = (0..profile.per_schedule)
            .map(|k| format!("9198{:08}", s * 100_000 + k))
            .collect();
        expected.extend(phones.iter().map(|p| format!("{p}@c.us")));
        sqlx::query(
            "INSERT INTO mkt_con_schedule (campaign_id, content_id, channel, scheduled_at, status, target_phone_numbers) \
             VALUES ($1, $2, 'whatsapp', now() + make_interval(secs => $3), 'scheduled', $4)",
        )
        .bind(campaign)
        .bind(content)
        .bind(s as f64 * spacing)
        .bind(&phones)
        .execute(&ctx.pool)
        .await?;
    }
    say(
        started,
        format!(
            "{} schedules written ({} messages), due every {spacing:.0}s",
            profile.schedules,
            profile.schedules * profile.per_schedule
        ),
    );

    // Sends pushed through the API over the first 60% of the fault phase.
    let pusher = tokio::spawn(push_api_sends(
        ctx.clone(),
        profile.api_messages,
        fault_phase.mul_f64(0.6),
    ));

    // Faults.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut plan: Vec<FaultKind> = FaultKind::WEIGHTED.iter().map(|w| w.0).collect();
    rand::seq::SliceRandom::shuffle(plan.as_mut_slice(), &mut rng);
    let mut injected: Vec<Injected> = Vec::new();
    let fault_end = Instant::now() + fault_phase;
    let mut next_status = Instant::now();
    let mut next_fault = Instant::now()
        + Duration::from_secs(rng.random_range(profile.fault_gap.0..=profile.fault_gap.1));
    say(started, "injecting faults");
    while Instant::now() < fault_end {
        if Instant::now() >= next_status {
            status_line(&ctx, injected.len()).await;
            next_status = Instant::now() + Duration::from_secs(10);
        }
        repair(&ctx).await;
        if Instant::now() >= next_fault {
            // Every kind once first (in a seeded order), then by weight.
            let mut kind = plan.pop().unwrap_or_else(|| FaultKind::pick(&mut rng));
            if kind == FaultKind::Block
                && ctx.blocked.lock().expect("blocked").len() >= profile.max_blocks
            {
                kind = FaultKind::ReloadMidSend;
            }
            match inject(&ctx, kind, &mut rng).await {
                Ok(Some(f)) => {
                    say(started, format!("fault: {} → {}", kind.name(), f.target));
                    injected.push(f);
                }
                Ok(None) => say(
                    started,
                    format!("fault: {} skipped (no target now)", kind.name()),
                ),
                Err(e) => say(
                    started,
                    format!("fault: {} could not be injected: {e}", kind.name()),
                ),
            }
            next_fault = Instant::now()
                + Duration::from_secs(rng.random_range(profile.fault_gap.0..=profile.fault_gap.1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Drain: faults off, every process back, then wait for a quiet system.
    say(
        started,
        "faults stop; every process back, simulator faults cleared; draining",
    );
    heal(&ctx).await?;
    let accepted = pusher.await?;
    expected.extend(accepted.iter().cloned());
    let drain_deadline = Instant::now() + profile.drain;
    loop {
        if Instant::now() >= next_status {
            status_line(&ctx, injected.len()).await;
            next_status = Instant::now() + Duration::from_secs(10);
        }
        repair(&ctx).await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mkt_wap_messages m LEFT JOIN mkt_wap_accounts a ON a.id = m.account_id \
             WHERE m.status IN ('pending', 'queued', 'sending') \
               AND (coalesce(a.status, '') <> 'banned' \
                    OR m.waiting_reason IS NULL OR NOT starts_with(m.waiting_reason, $1))",
        )
        .bind(courier::maintenance::reassign::OUTCOME_UNKNOWN)
        .fetch_one(&ctx.pool)
        .await
        .unwrap_or(i64::MAX);
        let unexpanded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mkt_con_schedule WHERE status = 'scheduled'")
                .fetch_one(&ctx.pool)
                .await
                .unwrap_or(i64::MAX);
        if open == 0 && unexpanded == 0 {
            break;
        }
        if Instant::now() >= drain_deadline {
            say(
                started,
                format!("drain timed out after {}s: {open} messages still open, {unexpanded} schedules not expanded", profile.drain.as_secs()),
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Late acks and the last records settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    status_line(&ctx, injected.len()).await;

    // Measure what the scheduler-kill and block faults left to measure live.
    let report = check_and_report(&ctx, profile, seed, &expected, &mut injected, started).await?;
    println!("{}", report.text);
    if report.failures.is_empty() {
        println!("chaos: every invariant holds (seed {seed})");
        Ok(())
    } else {
        Err(format!(
            "chaos: invariants failed (seed {seed}): {}",
            report.failures.join("; ")
        )
        .into())
    }
}

/// Pushes `n` individual sends through the API, spread over `over`, each
/// with an idempotency key; an attempt that fails (API or database down, the
/// account banned) is retried with the same key, on the next account.
/// Returns the chats of the accepted ones.
async fn push_api_sends(ctx: Arc<Ctx>, n: usize, over: Duration) -> Vec<String> {
    let gap = over.div_f64(n.max(1) as f64);
    let mut accepted = Vec::new();
    for k in 0..n {
        let phone = format!("9197{k:08}");
        let started = Instant::now();
        let mut turn = k;
        loop {
            let (account, _) = ctx.accounts()[turn % ctx.accounts().len()];
            turn += 1;
            if ctx.blocked.lock().expect("blocked").contains(&account) {
                continue;
            }
            let r = ctx
                .api
                .call(
                    reqwest::Method::POST,
                    "/v1/messages",
                    Some(json!({
                        "account_id": account,
                        "channel_type": "individual",
                        "target_phone": phone,
                        "message_text": format!("Chaos API send #{k}: layer mash offer"),
                        "idempotency_key": format!("chaos-api-{k}"),
                    })),
                )
                .await;
            match r {
                Ok(_) => {
                    accepted.push(format!("{phone}@c.us"));
                    break;
                }
                Err(e) if started.elapsed() > Duration::from_secs(120) => {
                    tracing::warn!(k, error = %courier::error::chain(&*e), "API send never accepted; left out");
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        tokio::time::sleep(gap).await;
    }
    accepted
}

/// Accounts a fault left logged out (or failed): log them in again, as an
/// admin would, one task per account.
async fn repair(ctx: &Arc<Ctx>) {
    let rows: Vec<(Uuid, String)> = match sqlx::query_as(
        "SELECT id, status FROM mkt_wap_accounts WHERE status IN ('logged_out', 'failed', 'inactive')",
    )
    .fetch_all(&ctx.pool)
    .await
    {
        Ok(r) => r,
        Err(_) => return,
    };
    for (id, _status) in rows {
        if ctx.blocked.lock().expect("blocked").contains(&id) {
            continue;
        }
        if !ctx.relogin_in_flight.lock().expect("relogin").insert(id) {
            continue;
        }
        let Some(phone) = ctx
            .accounts()
            .iter()
            .find(|a| a.0 == id)
            .map(|a| a.1.clone())
        else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                let r = demo::start_login_and_scan(
                    &ctx.api,
                    &ctx.ctl,
                    id,
                    &phone,
                    Duration::from_secs(120),
                )
                .await;
                if let Err(e) = &r {
                    tracing::warn!(account_id = %id, error = %courier::error::chain(&**e), "re-login attempt failed");
                }
                if demo::wait_active(&ctx.api, id, Duration::from_secs(60))
                    .await
                    .is_ok()
                {
                    *ctx.relogins.lock().expect("relogins") += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            ctx.relogin_in_flight.lock().expect("relogin").remove(&id);
        });
    }
}

/// After the fault phase: every simulator fault cleared (blocks stay),
/// stopped workers continued, dead processes started.
async fn heal(ctx: &Arc<Ctx>) -> Result<(), BoxError> {
    for (id, _) in ctx.accounts() {
        if ctx.blocked.lock().expect("blocked").contains(id) {
            continue;
        }
        ctx.ctl
            .faults(
                &id.to_string(),
                json!({"stuck_loading": false, "conflict": false, "refuse_sends": false, "latency_ms": 0, "reload_mid_send": 0}),
            )
            .await?;
    }
    let mut stack = ctx.stack.lock().expect("stack");
    let exe = stack.exe.clone();
    for p in stack.all() {
        if p.stopped {
            p.signal(Signal::SIGCONT);
        }
        if !p.alive() {
            p.start(&exe)?;
        }
    }
    Ok(())
}

async fn status_line(ctx: &Arc<Ctx>, faults: usize) {
    let counts: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('sent', 'delivered', 'read')), \
                count(*) FILTER (WHERE status = 'failed') FROM mkt_wap_messages",
    )
    .fetch_one(&ctx.pool)
    .await
    .ok();
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM mkt_wap_accounts GROUP BY status ORDER BY status",
    )
    .fetch_all(&ctx.pool)
    .await
    .unwrap_or_default();
    let sim = ctx.ctl.all_messages().await.map(|r| r.messages.len()).ok();
    let (up, stopped) = {
        let mut stack = ctx.stack.lock().expect("stack");
        let table = procs::process_table();
        let pids: Vec<i32> = stack.workers.iter().filter_map(|w| w.pid()).collect();
        for pid in pids {
            for d in procs::chromedrivers_of(&table, pid) {
                stack.drivers_seen.insert(d, ());
            }
        }
        let up = stack
            .workers
            .iter_mut()
            .map(|w| w.alive())
            .filter(|&a| a)
            .count();
        let stopped = stack.workers.iter().filter(|w| w.stopped).count();
        (up, stopped)
    };
    let db = match counts {
        Some((all, sent, failed)) => format!("db {all} msgs, {sent} sent, {failed} failed"),
        None => "db unreachable".into(),
    };
    say(
        ctx.started,
        format!(
            "status: {db} · simulator received {} · faults {faults} · workers up {up}/3{} · accounts {}",
            sim.map_or("?".into(), |n| n.to_string()),
            if stopped > 0 { format!(" ({stopped} stopped)") } else { String::new() },
            statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// Accounts whose lease the worker process `pid` holds now.
async fn leased_by(pool: &PgPool, pid: i32) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT account_id::text FROM account_leases WHERE owner LIKE '%:' || $1 || ':%' AND expires_at > now()",
    )
    .bind(pid.to_string())
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

fn now_plus(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
}

/// Injects one fault of `kind`; `None` when it has no target now.
async fn inject(
    ctx: &Arc<Ctx>,
    kind: FaultKind,
    rng: &mut rand::rngs::StdRng,
) -> Result<Option<Injected>, BoxError> {
    let live_workers: Vec<(usize, i32)> = {
        let mut stack = ctx.stack.lock().expect("stack");
        stack
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| {
                (w.alive() && !w.stopped)
                    .then(|| w.pid().map(|p| (i, p)))
                    .flatten()
            })
            .collect()
    };
    let usable: Vec<Uuid> = {
        let blocked = ctx.blocked.lock().expect("blocked");
        ctx.accounts()
            .iter()
            .map(|a| a.0)
            .filter(|a| !blocked.contains(a))
            .collect()
    };
    let pick_account = |rng: &mut rand::rngs::StdRng| -> Option<Uuid> {
        (!usable.is_empty()).then(|| usable[rng.random_range(0..usable.len())])
    };
    let sim_fault =
        |id: Uuid, faults: serde_json::Value, for_: Duration, clear: serde_json::Value| {
            let ctx = ctx.clone();
            async move {
                ctx.ctl.faults(&id.to_string(), faults).await?;
                tokio::spawn(async move {
                    tokio::time::sleep(for_).await;
                    let _ = ctx.ctl.faults(&id.to_string(), clear).await;
                });
                Ok::<_, BoxError>(())
            }
        };
    let now = Utc::now();
    let f = match kind {
        FaultKind::WorkerKill | FaultKind::WorkerStop => {
            // Keep one worker untouched, so two are never down at once by our hand.
            if live_workers.len() < 2 {
                return Ok(None);
            }
            let (i, pid) = live_workers[rng.random_range(0..live_workers.len())];
            let held = leased_by(&ctx.pool, pid).await;
            let name = ctx.stack.lock().expect("stack").workers[i].name.clone();
            if kind == FaultKind::WorkerKill {
                ctx.stack.lock().expect("stack").workers[i].kill9();
                let ctx2 = ctx.clone();
                let wait = Duration::from_secs(rng.random_range(2..=6));
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let mut stack = ctx2.stack.lock().expect("stack");
                    let exe = stack.exe.clone();
                    if !stack.workers[i].alive() {
                        let _ = stack.workers[i].start(&exe);
                    }
                });
                Injected {
                    kind,
                    t0: now,
                    scope: Scope::Accounts(held.clone()),
                    target: format!("{name} (pid {pid}, {} leases)", held.len()),
                }
            } else {
                let hold = LEASE_TTL + Duration::from_secs(rng.random_range(3..=8));
                ctx.stack.lock().expect("stack").workers[i].signal(Signal::SIGSTOP);
                let ctx2 = ctx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let mut stack = ctx2.stack.lock().expect("stack");
                    if stack.workers[i].stopped {
                        stack.workers[i].signal(Signal::SIGCONT);
                    }
                });
                Injected {
                    kind,
                    t0: now,
                    scope: Scope::Accounts(held.clone()),
                    target: format!(
                        "{name} (pid {pid}, {} leases) for {:.0}s",
                        held.len(),
                        hold.as_secs_f64()
                    ),
                }
            }
        }
        FaultKind::SchedulerKill => {
            ctx.stack.lock().expect("stack").scheduler.kill9();
            let wait = Duration::from_secs(rng.random_range(1..=4));
            tokio::time::sleep(wait).await;
            {
                let mut stack = ctx.stack.lock().expect("stack");
                let exe = stack.exe.clone();
                stack.scheduler.start(&exe)?;
            }
            let t = Instant::now();
            let mut recovered = None;
            while t.elapsed() < Duration::from_secs(60) {
                if courier::scheduler::leader::is_held(&ctx.pool)
                    .await
                    .unwrap_or(false)
                {
                    recovered = Some(t.elapsed() + wait);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Injected {
                kind,
                t0: now,
                scope: Scope::Measured(recovered),
                target: format!("scheduler, restarted after {}s", wait.as_secs()),
            }
        }
        FaultKind::PgRestartFast | FaultKind::PgRestartImmediate => {
            let mode = if kind == FaultKind::PgRestartFast {
                ShutdownMode::Fast
            } else {
                ShutdownMode::Immediate
            };
            let t = Instant::now();
            // The cluster handle lives in the shared context; pg_ctl blocks.
            let ctx2 = ctx.clone();
            tokio::task::spawn_blocking(move || ctx2.pg.restart(mode)).await??;
            Injected {
                kind,
                t0: Utc::now(),
                scope: Scope::Any,
                target: format!("restarted in {:.1}s", t.elapsed().as_secs_f64()),
            }
        }
        FaultKind::ChromedriverKill | FaultKind::ChromiumKill => {
            if live_workers.is_empty() {
                return Ok(None);
            }
            let (i, pid) = live_workers[rng.random_range(0..live_workers.len())];
            let table = procs::process_table();
            let drivers = procs::chromedrivers_of(&table, pid);
            let Some(&driver) = drivers.first() else {
                return Ok(None);
            };
            let name = ctx.stack.lock().expect("stack").workers[i].name.clone();
            if kind == FaultKind::ChromedriverKill {
                let browsers = procs::browsers_of(&table, driver);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(driver), Signal::SIGKILL);
                let accounts: Vec<String> = browsers
                    .iter()
                    .filter_map(|(_, dir)| {
                        dir.file_name().map(|n| n.to_string_lossy().into_owned())
                    })
                    .collect();
                Injected {
                    kind,
                    t0: now,
                    scope: Scope::Accounts(accounts.clone()),
                    target: format!(
                        "{name}'s chromedriver (pid {driver}, {} sessions)",
                        accounts.len()
                    ),
                }
            } else {
                let browsers = procs::browsers_of(&table, driver);
                if browsers.is_empty() {
                    return Ok(None);
                }
                let (bpid, dir) = &browsers[rng.random_range(0..browsers.len())];
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*bpid), Signal::SIGKILL);
                let account = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Injected {
                    kind,
                    t0: now,
                    scope: Scope::Accounts(vec![account.clone()]),
                    target: format!("{name}'s Chromium pid {bpid} (account {account})"),
                }
            }
        }
        FaultKind::StuckLoading
        | FaultKind::Conflict
        | FaultKind::RefuseSends
        | FaultKind::SlowPage => {
            let Some(id) = pick_account(rng) else {
                return Ok(None);
            };
            let for_ = Duration::from_secs(rng.random_range(10..=25));
            let (on, off) = match kind {
                FaultKind::StuckLoading => (
                    json!({"stuck_loading": true}),
                    json!({"stuck_loading": false}),
                ),
                FaultKind::Conflict => (json!({"conflict": true}), json!({"conflict": false})),
                FaultKind::RefuseSends => (
                    json!({"refuse_sends": true}),
                    json!({"refuse_sends": false}),
                ),
                _ => (
                    json!({"latency_ms": rng.random_range(1_000..=4_000)}),
                    json!({"latency_ms": 0}),
                ),
            };
            let target = format!("account {id} for {}s ({on})", for_.as_secs());
            sim_fault(id, on, for_, off).await?;
            Injected {
                kind,
                t0: now_plus(for_),
                scope: Scope::Accounts(vec![id.to_string()]),
                target,
            }
        }
        FaultKind::ReloadMidSend => {
            let Some(id) = pick_account(rng) else {
                return Ok(None);
            };
            let n = rng.random_range(1..=3);
            ctx.ctl
                .faults(&id.to_string(), json!({"reload_mid_send": n}))
                .await?;
            Injected {
                kind,
                t0: now,
                scope: Scope::Accounts(vec![id.to_string()]),
                target: format!("account {id}, next {n} sends"),
            }
        }
        FaultKind::Logout => {
            let Some(id) = pick_account(rng) else {
                return Ok(None);
            };
            ctx.ctl.logout(&id.to_string()).await?;
            Injected {
                kind,
                t0: now,
                scope: Scope::Accounts(vec![id.to_string()]),
                target: format!("account {id} (the harness logs it in again)"),
            }
        }
        FaultKind::Block => {
            let Some(id) = pick_account(rng) else {
                return Ok(None);
            };
            ctx.blocked.lock().expect("blocked").insert(id);
            ctx.ctl
                .faults(&id.to_string(), json!({"blocked": true}))
                .await?;
            let t = Instant::now();
            // Measured in the background: the run goes on meanwhile.
            let pool = ctx.pool.clone();
            let measured = Arc::new(Mutex::new(None));
            let m2 = measured.clone();
            let handle = tokio::spawn(async move {
                while t.elapsed() < Duration::from_secs(180) {
                    let left: i64 = sqlx::query_scalar(
                        // The sends reassignment may move: never attempted,
                        // message not started (scheduler::reassign).
                        "SELECT count(*) FROM queue_jobs j \
                         JOIN mkt_wap_messages m ON m.id = (j.payload->>'message_id')::uuid AND m.job_id = j.id \
                         WHERE j.account_id = $1 AND j.kind = 'send' AND j.attempt = 0 \
                           AND j.state IN ('available', 'scheduled', 'retryable') \
                           AND m.status = 'queued' AND m.attempt_started_at IS NULL",
                    )
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1);
                    let banned: bool = sqlx::query_scalar(
                        "SELECT status = 'banned' FROM mkt_wap_accounts WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(false);
                    if banned && left == 0 {
                        *m2.lock().expect("measured") = Some(t.elapsed());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
            // The report reads it at the end, through the Arc.
            drop(handle);
            BLOCK_MEASURES
                .lock()
                .expect("block measures")
                .push(measured);
            Injected {
                kind,
                t0: now,
                scope: Scope::Measured(None),
                target: format!("account {id} (banned for good)"),
            }
        }
    };
    Ok(Some(f))
}

/// Recovery measurements of blocks, filled in by background tasks, read in
/// injection order by the report.
static BLOCK_MEASURES: Mutex<Vec<Arc<Mutex<Option<Duration>>>>> = Mutex::new(Vec::new());

/// A message row at the end: chat, status, error, its account's status,
/// waiting reason.
/// A message that is not terminal because it waits on its banned account's
/// chat, and says so.
fn held_for_its_chat(r: &MessageState) -> bool {
    r.3.as_deref() == Some("banned")
        && matches!(r.1.as_str(), "queued" | "sending")
        && r.4
            .as_deref()
            .is_some_and(|w| w.starts_with(courier::maintenance::reassign::OUTCOME_UNKNOWN))
}

type MessageState = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

struct Report {
    text: String,
    failures: Vec<String>,
}

/// The invariants, judged from the simulator's read-back and the database,
/// and the report.
async fn check_and_report(
    ctx: &Arc<Ctx>,
    profile: &Profile,
    seed: u64,
    expected: &HashSet<String>,
    injected: &mut [Injected],
    started: Instant,
) -> Result<Report, BoxError> {
    let mut failures = Vec::new();
    let readback = ctx.ctl.all_messages().await?;
    let received_chats: Vec<String> = readback
        .messages
        .iter()
        .map(|m| m.message.chat.clone())
        .collect();
    let mut received: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for m in &readback.messages {
        received
            .entry(m.account.clone())
            .or_default()
            .push(m.message.received_at);
    }
    let r = check::reconcile(expected, &received_chats);
    let limits: HashMap<String, check::WindowLimits> = ctx
        .accounts()
        .iter()
        .map(|(id, _)| (id.to_string(), profile.window_limits()))
        .collect();
    let violations = check::budget_violations(&received, &limits);

    // Every expected chat: its message row and state.
    let rows: Vec<MessageState> = sqlx::query_as(
        "SELECT m.target_chat_id, m.status, m.error_message, a.status, m.waiting_reason \
         FROM mkt_wap_messages m LEFT JOIN mkt_wap_accounts a ON a.id = m.account_id",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let by_chat: HashMap<&str, &MessageState> = rows.iter().map(|r| (r.0.as_str(), r)).collect();
    let received_set: HashSet<&str> = received_chats.iter().map(String::as_str).collect();
    let mut lost: Vec<String> = Vec::new();
    let mut failed_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut held = 0usize;
    let mut unrecorded = 0usize;
    for chat in expected {
        let row = by_chat.get(chat.as_str());
        let got = received_set.contains(chat.as_str());
        match (row, got) {
            (None, _) => lost.push(format!("{chat}: accepted, no message row")),
            (Some(r), true) => {
                if matches!(r.1.as_str(), "sent" | "delivered" | "read") {
                } else if held_for_its_chat(r) {
                    // It went out, but its account was banned before the send
                    // could be confirmed: only that chat can tell, and the row
                    // says so (scheduler::reassign::hold_unknown_outcomes).
                    held += 1;
                } else {
                    unrecorded += 1;
                    if unrecorded <= 5 {
                        failures.push(format!("{chat} reached WhatsApp but its row says {}", r.1));
                    }
                }
            }
            (Some(r), false) => match r.1.as_str() {
                "failed" => {
                    let why = r.2.clone().unwrap_or_else(|| "no reason recorded".into());
                    let short: String = why.chars().take(70).collect();
                    *failed_reasons.entry(short).or_default() += 1;
                }
                "sent" | "delivered" | "read" => lost.push(format!(
                    "{chat}: recorded {} but never reached WhatsApp",
                    r.1
                )),
                _ if held_for_its_chat(r) => held += 1,
                s => lost.push(format!(
                    "{chat}: still {s} ({})",
                    r.4.clone().unwrap_or_default()
                )),
            },
        }
    }
    lost.sort();
    let failed_total: usize = failed_reasons.values().sum();
    if failed_total > 0 && failed_reasons.keys().any(|k| k == "no reason recorded") {
        failures.push("a failed message carries no reason".into());
    }

    // Jobs and accounts left in a transient state.
    let stuck_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM queue_jobs j JOIN mkt_wap_accounts a ON a.id = j.account_id \
         WHERE j.kind = 'send' AND j.state IN ('available', 'running', 'retryable') \
           AND a.status <> 'banned' AND j.run_at < now() - interval '60 seconds'",
    )
    .fetch_one(&ctx.pool)
    .await?;
    let stuck_accounts: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM mkt_wap_accounts WHERE status_deadline IS NOT NULL \
           AND status_deadline < now() - make_interval(secs => $1)",
    )
    .bind(DEADLINE_GRACE.as_secs_f64())
    .fetch_all(&ctx.pool)
    .await?;
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM mkt_wap_accounts GROUP BY status ORDER BY status",
    )
    .fetch_all(&ctx.pool)
    .await?;

    if r.duplicates > 0 {
        failures.push(format!(
            "{} duplicate(s): {:?}",
            r.duplicates,
            &r.duplicated_chats[..r.duplicated_chats.len().min(5)]
        ));
    }
    if !lost.is_empty() {
        failures.push(format!(
            "{} lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if r.unexpected > 0 {
        failures.push(format!(
            "{} message(s) to chats nobody asked for",
            r.unexpected
        ));
    }
    for v in violations.iter().take(5) {
        failures.push(format!(
            "budget: account {} got {} messages in {}s ending {} (limit {})",
            v.account, v.seen, v.window_secs, v.at, v.limit
        ));
    }
    if stuck_jobs > 0 {
        failures.push(format!(
            "{stuck_jobs} send job(s) runnable for over a minute at the end"
        ));
    }
    for (id, s) in &stuck_accounts {
        failures.push(format!("account {id} stuck in {s} past its deadline"));
    }

    // Recovery per fault kind.
    let blocks = BLOCK_MEASURES.lock().expect("block measures").clone();
    let mut block_i = 0;
    let mut by_kind: BTreeMap<FaultKind, (usize, Vec<f64>)> = BTreeMap::new();
    for f in injected.iter_mut() {
        if f.kind == FaultKind::Block {
            if let Some(m) = blocks.get(block_i) {
                f.scope = Scope::Measured(*m.lock().expect("measured"));
            }
            block_i += 1;
        }
        let rec =
            match &f.scope {
                Scope::Accounts(a) => check::recovery(&received, a, f.t0)
                    .map(|d| d.num_milliseconds() as f64 / 1000.0),
                Scope::Any => check::recovery_any(&received, f.t0)
                    .map(|d| d.num_milliseconds() as f64 / 1000.0),
                Scope::Measured(d) => d.map(|d| d.as_secs_f64()),
            };
        let e = by_kind.entry(f.kind).or_default();
        e.0 += 1;
        if let Some(s) = rec {
            e.1.push(s);
        }
    }

    let mut t = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        t,
        "\n## Chaos run: profile {}, seed {seed}, {:.1} min of faults, {:.1} min in all\n",
        if profile.fault_minutes >= 20.0 {
            "long"
        } else {
            "ci"
        },
        profile.fault_minutes,
        started.elapsed().as_secs_f64() / 60.0
    );
    let _ = writeln!(
        t,
        "| fault | injected | recovered | recovery p50 | recovery max |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|");
    for (kind, _) in FaultKind::WEIGHTED {
        let (n, v) = by_kind.get(&kind).cloned().unwrap_or_default();
        let fmt = |x: Option<f64>| x.map_or("–".to_string(), |s| format!("{s:.1} s"));
        let _ = writeln!(
            t,
            "| {} | {n} | {} | {} | {} |",
            kind.name(),
            v.len(),
            fmt(check::percentile(&v, 50.0)),
            fmt(v.iter().copied().reduce(f64::max))
        );
    }
    let total_faults: usize = by_kind.values().map(|v| v.0).sum();
    let _ = writeln!(t, "| **all** | {total_faults} | | | |\n");
    let _ = writeln!(t, "| outcome | count |");
    let _ = writeln!(t, "|---|---:|");
    let _ = writeln!(
        t,
        "| messages accepted (schedules + API) | {} |",
        expected.len()
    );
    let _ = writeln!(t, "| delivered (reached the simulator) | {} |", r.delivered);
    let _ = writeln!(t, "| duplicates | {} |", r.duplicates);
    let _ = writeln!(t, "| losses | {} |", lost.len());
    let _ = writeln!(t, "| budget violations | {} |", violations.len());
    let _ = writeln!(t, "| failed, terminal with a reason | {failed_total} |");
    let _ = writeln!(t, "| held on a banned account (outcome unknown) | {held} |");
    let _ = writeln!(t, "| reached WhatsApp, row not updated | {unrecorded} |");
    let _ = writeln!(t, "| unexpected messages | {} |", r.unexpected);
    let _ = writeln!(t, "| send jobs stuck | {stuck_jobs} |");
    let _ = writeln!(
        t,
        "| accounts stuck past a deadline | {} |",
        stuck_accounts.len()
    );
    let _ = writeln!(
        t,
        "| re-logins by the harness | {} |",
        *ctx.relogins.lock().expect("relogins")
    );
    let _ = writeln!(
        t,
        "| quota refusals seen by the simulator | {} |",
        readback.refused.len()
    );
    let _ = writeln!(
        t,
        "\naccounts at the end: {}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (why, n) in &failed_reasons {
        let _ = writeln!(t, "failed ×{n}: {why}");
    }
    let _ = writeln!(
        t,
        "\nrecovery: {}",
        [
            FaultKind::WorkerKill,
            FaultKind::SchedulerKill,
            FaultKind::PgRestartFast,
            FaultKind::Block
        ]
        .iter()
        .map(|k| format!("{}: {}", k.name(), k.recovery_rule()))
        .collect::<Vec<_>>()
        .join("; ")
    );
    Ok(Report { text: t, failures })
}
