//! `courier demo`: the whole pipeline end to end on one machine, with progress
//! on the terminal.
//!
//! It starts the embedded Postgres (a fresh `courier_demo` database each run,
//! so the main database is untouched), the WhatsApp Web simulator, the API, a
//! worker with real Chromium sessions (chromedriver started by the worker) and
//! the scheduler, all in this process. Then, as an admin would: it creates
//! three accounts and logs them in through the QR flow (the simulator plays the
//! phone's scan), discovers their groups, scrapes the members, and runs one
//! campaign schedule under tight per-minute budgets, so pacing and snoozes are
//! visible. It ends with a summary table; `--follow` keeps everything running.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use courier::config::{Secret, Settings};
use courier::db::Database;
use courier::error::BoxError;
use courier_sim::{SimConfig, Simulator};

/// How big a run.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct DemoArgs {
    /// Keep every component running after the summary, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// A shorter run (CI): fewer contacts per group, looser budgets.
    #[arg(long)]
    pub short: bool,
    /// Give up if the campaign has not finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the log lines on the terminal too (by default they go to the
    /// file named at the start, and the terminal shows progress only).
    #[arg(long, short)]
    pub verbose: bool,
}

/// Where the demo's log lines go unless `--verbose`: `demo.log` next to the
/// embedded cluster's data directory (`.courier/demo.log` by default), as an
/// absolute path.
pub fn log_path(settings: &Settings) -> std::path::PathBuf {
    let dir = settings
        .embedded
        .data_dir
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::path::absolute(dir.join("demo.log")).unwrap_or_else(|_| dir.join("demo.log"))
}

const PHONES: [&str; 3] = ["447700900101", "447700900102", "447700900103"];
const GROUPS: [(&str, &str); 3] = [
    ("Pune Layer Farmers", "west"),
    ("Nashik Feed Dealers", "west"),
    ("Hyderabad Broiler Growers", "south"),
];

/// Per account: id, sent, delivered, read, failed, total, sends this minute,
/// the reason its next send waits.
type ProgressRow = (Uuid, i64, i64, i64, i64, i64, i64, Option<String>);

/// One line a person reads, prefixed with the elapsed time.
pub fn step(started: Instant, text: impl AsRef<str>) {
    println!(
        "[{:>5.1}s] {}",
        started.elapsed().as_secs_f64(),
        text.as_ref()
    );
}

/// Polls `f` every 200 ms until it says done, or fails after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, BoxError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "demo: timed out after {}s waiting for {what}",
                timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A bearer-token client of Courier's `/v1` API, as an admin tool would use it.
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    /// The bearer token.
    pub token: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Api {
    /// A client for the API at `base` with `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Calls `method path` with an optional JSON body; a non-2xx answer is an
    /// error naming the path, the status and the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("API {path}: {status} {v}").into());
        }
        Ok(v)
    }
}

/// Runs the demo with `settings` (the database part; everything else is set up here).
pub async fn run(settings: &Settings, args: DemoArgs) -> Result<(), BoxError> {
    let started = Instant::now();
    println!("courier demo — the whole pipeline on this machine (Ctrl-C to stop)");
    if args.verbose {
        println!();
    } else {
        println!(
            "logs: {} (--verbose prints them here)\n",
            log_path(settings).display()
        );
    }

    // 1. Database: the embedded cluster (or database.url), a fresh demo database.
    step(started, "[1/7] database …");
    let (db, report) = Database::open(settings).await?;
    match &db.embedded {
        Some(pg) => step(
            started,
            format!(
                "      embedded PostgreSQL at {} ({}), {} migrations",
                pg.data_dir().display(),
                if pg.initialised_here() {
                    "new cluster"
                } else {
                    "existing cluster reused"
                },
                report.known
            ),
        ),
        None => step(
            started,
            format!("      {}", courier::db::redact_url(db.url())),
        ),
    }
    let pool = fresh_database(&db, "courier_demo").await?;
    step(started, "      fresh database courier_demo, migrated");

    // 2. The simulator, the API, a worker with Chromium, the scheduler.
    step(
        started,
        "[2/7] simulator, API, worker (chromedriver + Chromium), scheduler …",
    );
    let sim = Simulator::start(
        "127.0.0.1:0".parse()?,
        SimConfig {
            loading: Duration::from_millis(800),
            ack: courier_sim::AckTiming {
                server_ms: 300,
                device_ms: 1_500,
                read_ms: 3_000,
                ..Default::default()
            },
            ..SimConfig::default()
        },
    )
    .await?;
    let ctl = sim.control();
    let work = tempfile::Builder::new().prefix("courier-demo-").tempdir()?;
    let mut s = settings.clone();
    s.queue.handler = "browser".into();
    s.queue.capacity = 3;
    s.browser.page_url = format!("{}/?account={{account}}", sim.url());
    s.browser.profiles_dir = work.path().join("profiles");
    s.browser.media_dir = work.path().join("media");
    if s.browser.session_key.is_none() {
        s.browser.session_key = Some(Secret::new(
            courier::browser::SnapshotKey::random().to_hex(),
        ));
    }
    let token = format!("demo-{}", Uuid::new_v4().simple());
    s.api.token = Some(Secret::new(token.clone()));
    s.validate()?;

    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(if args.follow {
        s.api.listen
    } else {
        "127.0.0.1:0".parse()?
    })
    .await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = courier::api::AppState::new(pool.clone(), &token).with_settings(s.clone());
    let api_task = tokio::spawn({
        let stop = stop.clone();
        async move { courier::api::serve(listener, state, async move { stop.cancelled().await }).await }
    });
    let sampler = tokio::spawn(courier::metrics::sample_forever(
        pool.clone(),
        courier::metrics::SampleOptions::from_settings(&s),
        Duration::from_secs(5),
    ));
    let (handlers, browser) = courier::worker::registry(&s, &pool).await?;
    let runtime = courier::queue::runtime::Runtime::new(pool.clone(), &s, handlers);
    let worker_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            runtime
                .run_until(async move { stop.cancelled().await })
                .await
        }
    });
    let scheduler = courier::scheduler::Scheduler::new(pool.clone(), &s);
    let scheduler_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            scheduler
                .run_until(async move { stop.cancelled().await })
                .await
        }
    });
    let api = Api::new(base.clone(), token.clone());
    step(
        started,
        format!("      simulator {}  API {base}", sim.url()),
    );

    let outcome = drive(started, &api, &pool, &ctl, args).await;

    println!();
    if args.follow {
        println!("  These keep running until Ctrl-C:");
    } else {
        println!("  These stop when the demo ends (run `courier demo --follow` to keep them):");
    }
    println!("  API          {base}/v1/stats   (Authorization: Bearer {token})");
    println!("  OpenAPI      {base}/openapi.json");
    println!("  metrics      {base}/metrics");
    if let Ok(ids) = &outcome {
        if let Some(first) = ids.first() {
            // A signed link, as an admin tool gets one: no API token in the URL.
            let path = format!("/v1/accounts/{first}/login-link");
            match api.call(reqwest::Method::POST, &path, None).await {
                Ok(link) => println!(
                    "  login page   {}   (signed link, works until {})",
                    link["url"].as_str().unwrap_or_default(),
                    link["expires_at"].as_str().unwrap_or_default()
                ),
                Err(e) => println!("  login page   none: {e}"),
            }
        }
    }
    println!(
        "  simulator    {}/_control/messages   (what reached \"WhatsApp\")",
        sim.url()
    );
    if args.follow && outcome.is_ok() {
        println!("\nfollowing: everything keeps running; Ctrl-C to stop");
        courier::shutdown::signal().await;
    }
    stop.cancel();
    let _ = worker_task.await;
    let _ = scheduler_task.await;
    let _ = api_task.await;
    sampler.abort();
    browser.shutdown().await;
    sim.shutdown();
    pool.close().await;
    db.close().await?;
    outcome.map(|_| {
        println!("\ndone in {:.1}s", started.elapsed().as_secs_f64());
    })
}

/// Creates one account per `(name, phone)` through the API with `limits` as
/// its `rate_limit_config`, then logs each in by QR as an admin would: start
/// the login, read the QR from the API, and let the simulator play the phone's
/// scan. Returns the ids once every account is `active`.
pub async fn log_in_accounts(
    started: Instant,
    api: &Api,
    ctl: &courier_sim::control::SimControl,
    accounts: &[(String, String)],
    limits: &Value,
) -> Result<Vec<Uuid>, BoxError> {
    use reqwest::Method;
    let mut ids = Vec::new();
    for (name, phone) in accounts {
        let a = api
            .call(
                Method::POST,
                "/v1/accounts",
                Some(json!({"account_name": name, "timezone": "Asia/Kolkata"})),
            )
            .await?;
        let id: Uuid = a["id"].as_str().unwrap_or_default().parse()?;
        api.call(
            Method::PATCH,
            &format!("/v1/accounts/{id}/limits"),
            Some(json!({ "rate_limit_config": limits })),
        )
        .await?;
        ctl.create_account(&id.to_string(), Some(phone)).await?;
        ids.push(id);
    }
    for (id, (_, phone)) in ids.iter().zip(accounts) {
        start_login_and_scan(api, ctl, *id, phone, Duration::from_secs(90)).await?;
        step(started, format!("      {id}: QR shown, phone scanned it"));
    }
    for id in &ids {
        wait_active(api, *id, Duration::from_secs(90)).await?;
        let a = api
            .call(Method::GET, &format!("/v1/accounts/{id}"), None)
            .await?;
        step(
            started,
            format!(
                "      {id}: active as +{}",
                a["phone_number"].as_str().unwrap_or("?")
            ),
        );
    }
    Ok(ids)
}

/// Starts the QR login of account `id` through the API, waits for the QR
/// code the API shows, and has the simulator's phone `phone` scan it (again if
/// the code rotated in between).
pub async fn start_login_and_scan(
    api: &Api,
    ctl: &courier_sim::control::SimControl,
    id: Uuid,
    phone: &str,
    timeout: Duration,
) -> Result<(), BoxError> {
    use reqwest::Method;
    api.call(Method::POST, &format!("/v1/accounts/{id}/login"), None)
        .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let q = api
            .call(Method::GET, &format!("/v1/accounts/{id}/qr"), None)
            .await?;
        if let Some(t) = q["qr_token"].as_str() {
            match ctl.scan(&id.to_string(), t, phone).await {
                Ok(_) => return Ok(()),
                // Rotated between the two reads: read the new one.
                Err(courier_sim::control::ControlError::Refused { code, .. })
                    if code == "stale_token" => {}
                Err(e) => return Err(e.into()),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no QR code for {id} after {}s (status {})",
                timeout.as_secs(),
                q["status"]
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until account `id` is `active` (logged in, main screen up).
pub async fn wait_active(api: &Api, id: Uuid, timeout: Duration) -> Result<(), BoxError> {
    wait_for("the account to become active", timeout, || async move {
        let a = api
            .call(reqwest::Method::GET, &format!("/v1/accounts/{id}"), None)
            .await?;
        Ok(a["status"] == "active")
    })
    .await
}

/// The admin's part: accounts, login, discovery, scrape, a campaign, progress.
async fn drive(
    started: Instant,
    api: &Api,
    pool: &sqlx::PgPool,
    ctl: &courier_sim::control::SimControl,
    args: DemoArgs,
) -> Result<Vec<Uuid>, BoxError> {
    use reqwest::Method;
    let members_per_group = if args.short { 4 } else { 12 };

    // 3. Accounts, logged in through the QR flow.
    step(
        started,
        "[3/7] accounts: create, start login, scan the QR …",
    );
    let accounts: Vec<(String, String)> = PHONES
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("Demo sender {}", i + 1), p.to_string()))
        .collect();
    // Tight budgets so pacing shows: 2 a minute, 5 s apart at least.
    let limits = json!({"per_minute": if args.short { 4 } else { 2 }, "per_hour": 60, "per_day": 200, "min_gap_seconds": if args.short { 2 } else { 5 }, "jitter_seconds": 1});
    let ids = log_in_accounts(started, api, ctl, &accounts, &limits).await?;

    // 4. Groups and members in "WhatsApp"; discovery and scraping through the API.
    step(started, "[4/7] groups: discover, then scrape members …");
    let id_strs: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let accounts: Vec<&str> = id_strs.iter().map(String::as_str).collect();
    for (g, (name, _)) in GROUPS.iter().enumerate() {
        let participants: Vec<Value> = (0..members_per_group)
            .map(|m| json!({"phone": format!("91987650{g}{m:03}"), "name": format!("Member {g}-{m}"), "admin": m == 0}))
            .collect();
        ctl.create_group(name, participants, &accounts).await?;
    }
    for id in &ids {
        api.call(
            Method::POST,
            &format!("/v1/accounts/{id}/groups/discover"),
            None,
        )
        .await?;
    }
    wait_for("group discovery", Duration::from_secs(120), || async move {
        let n: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT group_id) FROM mkt_wap_account_groups")
                .fetch_one(pool)
                .await?;
        Ok(n >= GROUPS.len() as i64)
    })
    .await?;
    let groups: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM mkt_wap_groups ORDER BY name")
            .fetch_all(pool)
            .await?;
    for (gid, name) in &groups {
        let region = GROUPS.iter().find(|g| g.0 == name).map_or("west", |g| g.1);
        api.call(
            Method::PATCH,
            &format!("/v1/groups/{gid}"),
            Some(json!({"region": region, "segment_tags": ["poultry"]})),
        )
        .await?;
        api.call(Method::POST, &format!("/v1/groups/{gid}/scrape"), None)
            .await?;
    }
    step(
        started,
        format!(
            "      {} groups discovered, tagged; scraping members",
            groups.len()
        ),
    );
    let expected_members = (GROUPS.len() * members_per_group) as i64;
    wait_for(
        "contact scraping",
        Duration::from_secs(180),
        || async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_contacts")
                .fetch_one(pool)
                .await?;
            Ok(n >= expected_members)
        },
    )
    .await?;
    // The group admins become a segment for individual messages.
    let tagged = sqlx::query(
        "UPDATE mkt_wap_contacts c SET segment_tags = array['admins'] FROM mkt_wap_group_members m \
         WHERE m.contact_id = c.id AND m.is_admin",
    )
    .execute(pool)
    .await?
    .rows_affected();
    step(
        started,
        format!("      {expected_members} contacts stored; {tagged} group admins tagged `admins`"),
    );

    // 5. A campaign schedule: every `poultry` group plus the `admins` segment.
    step(
        started,
        "[5/7] campaign: one schedule to 3 groups + the admins segment …",
    );
    let campaign: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_campaigns (name) VALUES ('Winter feed offer') RETURNING id",
    )
    .fetch_one(pool)
    .await?;
    let content: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_content (campaign_id, title, body) VALUES ($1, 'offer', 'Winter feed offer: 10% off layer mash this week. Reply STOP to opt out.') RETURNING id",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    let group_ids: Vec<Uuid> = groups.iter().map(|g| g.0).collect();
    sqlx::query(
        "INSERT INTO mkt_con_schedule (campaign_id, content_id, channel, scheduled_at, status, target_group_ids, target_segment_tags) \
         VALUES ($1, $2, 'whatsapp', now(), 'scheduled', $3, array['admins'])",
    )
    .bind(campaign)
    .bind(content)
    .bind(&group_ids)
    .execute(pool)
    .await?;
    let total = group_ids.len() as i64 + tagged as i64;
    wait_for(
        "the scheduler to expand the schedule",
        Duration::from_secs(60),
        || async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages WHERE campaign_id = $1")
                    .bind(campaign)
                    .fetch_one(pool)
                    .await?;
            Ok(n >= total)
        },
    )
    .await?;
    step(started, format!("      {total} messages queued by the scheduler (budgets: per-minute caps + pacing gaps)"));

    // 6. Live progress until every message is read (or delivered).
    step(
        started,
        "[6/7] sending … (per account: sent/delivered/read, budget used this minute, snoozes)",
    );
    let tty = std::io::stdout().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        let rows: Vec<ProgressRow> = sqlx::query_as(
            "SELECT a.id, \
               count(m.*) FILTER (WHERE m.status IN ('sent','delivered','read')), \
               count(m.*) FILTER (WHERE m.status IN ('delivered','read')), \
               count(m.*) FILTER (WHERE m.status = 'read'), \
               count(m.*) FILTER (WHERE m.status = 'failed'), \
               count(m.*), \
               (SELECT count(*) FROM account_sends s WHERE s.account_id = a.id AND s.sent_at > now() - interval '60 seconds'), \
               (SELECT j.waiting_reason FROM queue_jobs j WHERE j.account_id = a.id AND j.kind = 'send' \
                  AND j.state = 'scheduled' AND j.waiting_reason IS NOT NULL ORDER BY j.run_at LIMIT 1) \
             FROM mkt_wap_accounts a LEFT JOIN mkt_wap_messages m ON m.account_id = a.id \
             GROUP BY a.id ORDER BY a.created_at",
        )
        .fetch_all(pool)
        .await?;
        let done: i64 = rows.iter().map(|r| r.2).sum();
        let failed: i64 = rows.iter().map(|r| r.4).sum();
        let line = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "#{} {}/{}/{} of {} · min {} · {}",
                    i + 1,
                    r.1,
                    r.2,
                    r.3,
                    r.5,
                    r.6,
                    r.7.as_deref().unwrap_or("sending")
                )
            })
            .collect::<Vec<_>>()
            .join("  |  ");
        if tty {
            print!("\r\x1b[2K  {line}");
            let _ = std::io::stdout().flush();
        } else if last_print.elapsed() >= Duration::from_secs(5) {
            step(started, format!("      {line}"));
            last_print = Instant::now();
        }
        if done + failed >= total {
            if tty {
                println!();
            }
            break;
        }
        if Instant::now() >= deadline {
            println!();
            return Err(format!(
                "demo: campaign not finished after {}s ({done} of {total} delivered)",
                args.timeout_secs
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give reads a moment to land.
    let _ = wait_for("read receipts", Duration::from_secs(20), || async move {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages WHERE status = 'read'")
                .fetch_one(pool)
                .await?;
        Ok(n >= total)
    })
    .await;

    // 7. Summary.
    step(started, "[7/7] summary");
    let reached = ctl.all_messages().await?;
    let mut seen = std::collections::HashSet::new();
    let duplicates = reached
        .messages
        .iter()
        .filter(|m| !seen.insert((m.message.chat.clone(), m.message.body.clone())))
        .count();
    let rows: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.account_name, coalesce(a.phone_number, '?'), \
           count(m.*) FILTER (WHERE m.status IN ('sent','delivered','read')), \
           count(m.*) FILTER (WHERE m.status IN ('delivered','read')), \
           count(m.*) FILTER (WHERE m.status = 'read'), \
           count(m.*) FILTER (WHERE m.status = 'failed'), \
           (SELECT count(*) FROM mkt_wap_message_events e JOIN mkt_wap_messages mm ON mm.id = e.message_id WHERE mm.account_id = a.id) \
         FROM mkt_wap_accounts a LEFT JOIN mkt_wap_messages m ON m.account_id = a.id \
         GROUP BY a.id ORDER BY a.created_at",
    )
    .fetch_all(pool)
    .await?;
    println!("\n  | account | number | sent | delivered | read | failed | events |");
    println!("  |---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "  | {} | +{} | {} | {} | {} | {} | {} |",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6
        );
    }
    let snoozes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mkt_wap_message_events WHERE status = 'sending'")
            .fetch_one(pool)
            .await?;
    println!(
        "\n  {} messages reached the simulator ({} duplicates), {} send attempts, {} contacts, {} groups",
        reached.messages.len(),
        duplicates,
        snoozes,
        expected_members,
        groups.len()
    );
    if reached.messages.len() as i64 != total || duplicates > 0 {
        return Err(format!(
            "demo: {} messages reached the simulator ({duplicates} duplicates), expected {total}",
            reached.messages.len()
        )
        .into());
    }
    Ok(ids)
}

/// Drops and recreates database `name` on `db`'s server, migrates it, and
/// returns a pool on it (the main database is untouched).
pub async fn fresh_database(db: &Database, name: &str) -> Result<sqlx::PgPool, BoxError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!("database name `{name}`: use a-z, 0-9 and _ only").into());
    }
    // Safe: `name` is checked to be a plain identifier above.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&db.pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&db.pool)
        .await?;
    let pool =
        courier::db::connect(&database_url(db.url(), name), 30, Duration::from_secs(10)).await?;
    courier::db::migrate(&pool).await?;
    Ok(pool)
}

/// `url` with its database name replaced by `name` (query string kept).
pub fn database_url(url: &str, name: &str) -> String {
    match url.split_once('?') {
        Some((base, q)) => format!("{}/{name}?{q}", base.rsplit_once('/').map_or(base, |b| b.0)),
        None => format!("{}/{name}", url.rsplit_once('/').map_or(url, |b| b.0)),
    }
}
