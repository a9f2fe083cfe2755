//! `courier bench accounts`: many accounts on one worker (issue 22's
//! targets), printed as a Markdown section for `docs/benchmarks.md`.
//!
//! One in-process worker (the product's registry, `browser.max_open`
//! sessions at most) drives N accounts of the simulator, all logged in by QR
//! first. Then, in one run:
//!
//! - the baseline: a few accounts whose session is closed, one at a time on
//!   the idle worker, each given one message: from the lease to WhatsApp
//!   having the message ("restored profile → ready + one send");
//! - the campaign: M messages for every account at once, paced by the
//!   budget (min gap, per-minute cap); per account, from the lease that
//!   reopened its closed session to its first message at WhatsApp.
//!
//! Meanwhile it samples the RSS (and PSS) of this process (Courier, with the
//! simulator) plus every descendant (chromedriver and all Chromium
//! processes), and the open sessions. At the end it checks that every
//! message reached WhatsApp exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::config::Settings;
use courier::jobs::send::Content;
use courier::jobs::{ChatId, MessageBody};
use courier::message::{create_batch, NewMessage, Source};
use courier_sim::{AckTiming, SimConfig, Simulator};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Options of the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountsBenchArgs {
    /// Accounts the one worker manages.
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
    /// `browser.max_open`: sessions open at once.
    #[arg(long, default_value_t = 8)]
    pub max_open: usize,
    /// `browser.max_starting`: browsers starting at once (the product's
    /// default when not given).
    #[arg(long)]
    pub max_starting: Option<usize>,
    /// `browser.single_process` (the product's default when not given).
    #[arg(long)]
    pub single_process: Option<bool>,
    /// Campaign messages per account.
    #[arg(long, default_value_t = 3)]
    pub per_account: usize,
    /// Accounts timed one at a time for the baseline.
    #[arg(long, default_value_t = 10)]
    pub baseline: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// RSS and PSS (KiB) of `root` and all its descendants, and how many processes.
fn tree_memory(root: u32) -> (u64, u64, usize) {
    let mut parent = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    parent.insert(pid, ppid);
                }
            }
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    let (mut rss, mut pss, mut n) = (0, 0, 0);
    for pid in parent.keys().copied().filter(|&p| in_tree(p)) {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        rss += field("Rss:");
        pss += field("Pss:");
        n += 1;
    }
    (rss, pss, n)
}

fn text(s: &str) -> Content {
    Content::Text {
        body: MessageBody::parse(s).expect("a short text"),
    }
}

fn message(account: Uuid, chat: &str, body: &str) -> NewMessage {
    NewMessage {
        account_id: Some(account),
        campaign_id: None,
        content_id: None,
        schedule_id: None,
        channel_type: "individual",
        chat_id: ChatId::parse(chat).expect("a contact id"),
        target_group_id: None,
        target_contact_id: None,
        content: text(body),
        idempotency_key: None,
        run_at: None,
        priority: 100,
        waiting_reason: None,
    }
}

/// Leases seen: (account, acquired_at) → whether its session was closed then.
type Leases = Arc<std::sync::Mutex<HashMap<(Uuid, DateTime<Utc>), bool>>>;

/// Runs the benchmark and returns the Markdown report.
pub async fn run(args: AccountsBenchArgs) -> Result<String, BoxError> {
    let n = args.accounts.max(1);
    let started = Instant::now();
    let sim = Simulator::start(
        "127.0.0.1:0".parse()?,
        SimConfig {
            loading: Duration::from_millis(500),
            ack: AckTiming {
                server_ms: 0,
                device_ms: 100,
                read_ms: 100,
                ..AckTiming::default()
            },
            ..SimConfig::default()
        },
    )
    .await?;
    let ctl = sim.control();
    let db = courier_testkit::fresh_database().await?;
    let pool = db.pool.clone();
    let dir = tempfile::tempdir()?;

    let mut s = Settings::defaults();
    s.queue.handler = "browser".into();
    s.queue.capacity = args.max_open;
    s.queue.poll_interval = Duration::from_millis(200);
    s.queue.lease_hold = Duration::from_secs(3);
    s.queue.job_timeout = Duration::from_secs(90);
    s.budget.per_minute = 10;
    s.budget.per_hour = 1000;
    s.budget.per_day = 1000;
    s.budget.min_gap = Duration::from_secs(1);
    s.budget.jitter = Duration::from_millis(500);
    s.budget.warmup = vec![];
    s.delivery.typing_per_char = Duration::ZERO;
    s.delivery.ack_followup = Duration::from_secs(3);
    s.browser.max_open = args.max_open;
    if let Some(m) = args.max_starting {
        s.browser.max_starting = m;
    }
    if let Some(single) = args.single_process {
        s.browser.single_process = single;
    }
    s.browser.idle_close_after = Duration::from_secs(5);
    s.browser.page_url = format!("{}/?account={{account}}", sim.url());
    s.browser.profiles_dir = dir.path().join("profiles");
    s.browser.media_dir = dir.path().join("media");
    s.browser.starting_deadline = Duration::from_secs(60);
    s.browser.qr_deadline = Duration::from_secs(300);
    s.browser.authenticating_deadline = Duration::from_secs(60);
    s.browser.health_check_interval = Duration::from_secs(24 * 3600);
    s.validate()?;

    // Memory and open sessions, sampled for the whole run.
    let me = std::process::id();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_pss = Arc::new(AtomicU64::new(0));
    let peak_procs = Arc::new(AtomicUsize::new(0));
    let peak_open = Arc::new(AtomicUsize::new(0));
    let sampling = tokio_util::sync::CancellationToken::new();

    let worker = courier_testkit::InProcessWorker::start(&pool, &s).await?;
    {
        let (r, p, c, o) = (
            peak_rss.clone(),
            peak_pss.clone(),
            peak_procs.clone(),
            peak_open.clone(),
        );
        let browser = worker.browser.clone();
        let stop = sampling.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let (rss, pss, procs) = tokio::task::spawn_blocking(move || tree_memory(me))
                    .await
                    .unwrap_or_default();
                r.fetch_max(rss, Ordering::Relaxed);
                p.fetch_max(pss, Ordering::Relaxed);
                c.fetch_max(procs, Ordering::Relaxed);
                o.fetch_max(browser.open_count().0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    // Accounts, each with one contact.
    let mut accounts = Vec::with_capacity(n);
    let mut chats = Vec::with_capacity(n);
    for i in 0..n {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_accounts (account_name) VALUES ($1) RETURNING id",
        )
        .bind(format!("bench {i}"))
        .fetch_one(&pool)
        .await?;
        ctl.create_account(&id.to_string(), None).await?;
        chats.push(
            ctl.add_contact(&format!("+4477011{i:05}"), None, &[id.to_string().as_str()])
                .await?,
        );
        accounts.push(id);
    }

    // Logins: every account by QR, through the worker.
    let t = Instant::now();
    for id in &accounts {
        courier::account::login::start_login(&pool, *id).await?;
    }
    let mut scanned: HashMap<Uuid, String> = HashMap::new();
    loop {
        let rows: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, qr_token FROM mkt_wap_accounts WHERE id = ANY($1)")
                .bind(&accounts)
                .fetch_all(&pool)
                .await?;
        let active = rows.iter().filter(|r| r.1 == "active").count();
        if active == n {
            break;
        }
        for (id, status, qr) in &rows {
            if let (Some(token), "qr_pending") = (qr, status.as_str()) {
                if scanned.get(id) != Some(token) {
                    let phone = format!(
                        "+4477010{:05}",
                        accounts.iter().position(|a| a == id).unwrap_or(0)
                    );
                    if ctl.scan(&id.to_string(), token, &phone).await.is_ok() {
                        scanned.insert(*id, token.clone());
                    }
                }
            }
        }
        if t.elapsed() > Duration::from_secs(60 + 10 * n as u64) {
            return Err(format!("only {active} of {n} accounts logged in").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login_s = t.elapsed().as_secs_f64();

    // Leases, watched from here on: which ones found the session closed.
    let leases: Leases = Arc::default();
    {
        let (leases, pool, browser, stop) = (
            leases.clone(),
            pool.clone(),
            worker.browser.clone(),
            sampling.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT account_id, acquired_at FROM account_leases \
                     WHERE owner IS NOT NULL AND expires_at > now()",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                {
                    let mut seen = leases.lock().expect("leases");
                    for key in rows {
                        let closed = !browser.is_open(key.0);
                        seen.entry(key).or_insert(closed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let reopen_send = |leases: &Leases, account: Uuid, at: DateTime<Utc>| -> Option<f64> {
        let seen = leases.lock().expect("leases");
        let (acquired, closed) = seen
            .iter()
            .filter(|((a, t), _)| *a == account && *t <= at)
            .map(|((_, t), c)| (*t, *c))
            .max_by_key(|(t, _)| *t)?;
        closed.then(|| (at - acquired).num_microseconds().unwrap_or(0) as f64 / 1000.0)
    };

    // Let the login sessions settle (most close; follow-up checks run).
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Baseline: one account at a time, its session closed, one message.
    let mut base = Vec::new();
    let mut sent_tags: Vec<String> = Vec::new();
    let picks: Vec<usize> = (0..n)
        .filter(|i| !worker.browser.is_open(accounts[*i]))
        .take(args.baseline)
        .collect();
    for i in &picks {
        let tag = format!("bench base #{i}");
        create_batch(
            &pool,
            &[message(accounts[*i], &chats[*i], &tag)],
            Source::Api,
        )
        .await?;
        sent_tags.push(tag.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        let at = loop {
            let back = ctl.messages(&accounts[*i].to_string()).await?;
            if let Some(d) = back
                .messages
                .iter()
                .find(|d| d.message.body.as_deref() == Some(tag.as_str()))
            {
                break d.message.received_at;
            }
            if Instant::now() > deadline {
                return Err(format!("baseline message {tag} not sent within 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(ms) = reopen_send(&leases, accounts[*i], at) {
            base.push(ms);
        }
        // The next one starts on an idle worker.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The campaign: every account, M messages, all at once, under budgets.
    let mut msgs = Vec::with_capacity(n * args.per_account);
    for (i, a) in accounts.iter().enumerate() {
        for k in 0..args.per_account {
            let tag = format!("bench campaign #{i}.{k}");
            msgs.push(message(*a, &chats[i], &tag));
            sent_tags.push(tag);
        }
    }
    let t = Instant::now();
    let campaign_start = Utc::now();
    for chunk in msgs.chunks(500) {
        create_batch(&pool, chunk, Source::Api).await?;
    }
    let total = msgs.len();
    let deadline = Duration::from_secs(600 + 10 * total as u64);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mkt_wap_messages WHERE status IN ('sent', 'delivered', 'read') \
             AND created_at >= $1",
        )
        .bind(campaign_start - chrono::Duration::seconds(5))
        .fetch_one(&pool)
        .await?;
        if done as usize >= total {
            break;
        }
        if t.elapsed() > deadline {
            return Err(format!("only {done} of {total} campaign messages sent").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let campaign_s = t.elapsed().as_secs_f64();
    // Acks and the last follow-ups.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampling.cancel();

    // Exactly once, and per account the first campaign message's reopen+send.
    let back = ctl.all_messages().await?;
    let mut count: HashMap<&str, usize> = HashMap::new();
    let mut first_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    for d in &back.messages {
        let body = d.message.body.as_deref().unwrap_or_default();
        *count.entry(body).or_default() += 1;
        if body.starts_with("bench campaign") {
            let e = first_at
                .entry(d.account.clone())
                .or_insert(d.message.received_at);
            *e = (*e).min(d.message.received_at);
        }
    }
    let missing = sent_tags
        .iter()
        .filter(|t| count.get(t.as_str()).copied().unwrap_or(0) == 0)
        .count();
    let twice = count.values().filter(|c| **c > 1).count();
    let expected: std::collections::HashSet<&str> = sent_tags.iter().map(|t| t.as_str()).collect();
    let unexpected = count.keys().filter(|b| !expected.contains(*b)).count();
    let mut reopen: Vec<f64> = accounts
        .iter()
        .filter_map(|a| {
            first_at
                .get(&a.to_string())
                .and_then(|at| reopen_send(&leases, *a, *at))
        })
        .collect();
    let reopened = reopen.len();
    let (b50, b99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    let (r50, r99) = (pct(&mut reopen, 0.5), pct(&mut reopen, 0.99));
    let refused = back.refused.len();
    // The smallest gap between two send slots of one account (min gap 1 s).
    let min_gap_ms: Option<f64> = sqlx::query_scalar(
        "SELECT min(extract(epoch FROM gap) * 1000)::float8 FROM ( \
           SELECT sent_at - lag(sent_at) OVER (PARTITION BY account_id ORDER BY sent_at) AS gap \
           FROM account_sends) g",
    )
    .fetch_one(&pool)
    .await?;
    let min_gap_ms = min_gap_ms.unwrap_or(f64::NAN);
    worker.stop().await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(format!(
        "\n### Many accounts per worker (`courier bench accounts --accounts {n} --max-open {mo}`, {date})\n\n\
         One in-process worker, {n} accounts logged in by QR ({login_s:.0} s), `browser.max_open = {mo}`, \
         `browser.max_starting = {ms}`, `browser.single_process = {sp}`, \
         `browser.idle_close_after = 5s`; budget per account: min gap 1 s + up to 0.5 s jitter, 10/min. \
         Campaign: {per} messages per account, {total} in all, enqueued at once: sent in {campaign_s:.0} s.\n\n\
         | measure | value |\n| --- | --- |\n\
         | peak RSS, Courier + chromedriver + every Chromium (sum over {procs} processes at most) | {rss:.0} MiB |\n\
         | peak PSS, same processes | {pss:.0} MiB |\n\
         | most sessions open at once | {open} (max_open {mo}) |\n\
         | messages at WhatsApp: missing / twice / unexpected | {missing} / {twice} / {unexpected} (of {sent}; {refused} refused) |\n\
         | smallest gap between two WhatsApp acceptances of one account (the 1 s minimum gap is kept between send grants) | {min_gap_ms:.0} ms |\n\
         | baseline: closed session → lease → ready + one send, one account at a time (n = {nb}) | p50 {b50:.0} ms, p99 {b99:.0} ms |\n\
         | campaign: reopen (lease of a closed session) → ready + first send, under load (n = {reopened}) | p50 {r50:.0} ms, p99 {r99:.0} ms |\n\
         | ratio campaign / baseline | p50 {q50:.2}×, p99 {q99:.2}× |\n\
         | whole run | {whole:.0} s |\n",
        mo = args.max_open,
        ms = s.browser.starts_at_once(),
        sp = s.browser.single_process,
        date = Utc::now().format("%Y-%m-%d"),
        per = args.per_account,
        rss = mib(peak_rss.load(Ordering::Relaxed)),
        pss = mib(peak_pss.load(Ordering::Relaxed)),
        procs = peak_procs.load(Ordering::Relaxed),
        open = peak_open.load(Ordering::Relaxed),
        sent = sent_tags.len(),
        nb = base.len(),
        q50 = r50 / b50,
        q99 = r99 / b99,
        whole = started.elapsed().as_secs_f64(),
    ))
}
