//! Every metric Courier exports, named once.
//!
//! Names follow Prometheus conventions: prefix `courier_`, counters end in
//! `_total`, durations are `_seconds` histograms with explicit buckets. Modules
//! record through the helpers here (or the `metrics` macros with these
//! constants), never with string literals of their own. Gauges that describe
//! database state (messages by status, account health) are sampled by
//! [`sample_database`] on an interval by one process, the scheduler leader,
//! which also publishes the configured thresholds the alert rules compare
//! with (`courier_config_*`).
//!
//! Per-account series (`account` label) are not kept by the recorder, which
//! keeps a series' last value for ever once set: an account retired or
//! deleted would keep its last health score, and an alert on it would keep
//! firing. They are kept here instead and rendered by [`render`] next to the
//! recorder's output: the health and status series are replaced by each
//! sample (an account no longer in the fleet has none), and a worker's
//! budget and lease series of an account leave its `/metrics`
//! [`RELEASED_KEEP`] after it gave the account's lease up (an account in
//! service is leased again well before that, for its health checks; a
//! retired one never is).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Jobs accepted into the queue. Labels: `kind`.
pub const JOBS_ENQUEUED: &str = "courier_jobs_enqueued_total";
/// Jobs that finished an attempt. Labels: `kind`, `outcome` (completed, retried, discarded, cancelled, rescued).
pub const JOBS_FINISHED: &str = "courier_jobs_finished_total";
/// Jobs held back and snoozed to a later instant. Labels: `kind`, `reason` (budget_minute, budget_hour, budget_day, pacing, quiet_hours, paused, …).
pub const JOBS_SNOOZED: &str = "courier_jobs_snoozed_total";
/// Time from a job being runnable to its start. Labels: `kind`.
pub const JOB_WAIT_SECONDS: &str = "courier_job_wait_seconds";
/// Time a job's handler ran. Labels: `kind`.
pub const JOB_RUN_SECONDS: &str = "courier_job_run_seconds";
/// Jobs in the queue. Labels: `kind`, `state`.
pub const QUEUE_DEPTH: &str = "courier_queue_depth";
/// Sends counted in an account's budget window. Labels: `account`, `window` (minute, hour, day).
pub const BUDGET_USED: &str = "courier_account_budget_used";
/// An account's limit for a window. Labels: `account`, `window`.
pub const BUDGET_LIMIT: &str = "courier_account_budget_limit";
/// An account's health score, 0–100. Labels: `account`.
pub const ACCOUNT_HEALTH: &str = "courier_account_health_score";
/// 1 for an account's current status. Labels: `account`, `status`.
pub const ACCOUNT_STATUS: &str = "courier_account_status";
/// Accounts by status. Labels: `status`.
pub const ACCOUNTS: &str = "courier_accounts";
/// Sessions that found a WhatsApp Web build `config/wa-web.toml` does not
/// describe (a module or method missing).
pub const WA_WEB_UNSUPPORTED: &str = "courier_wa_web_unsupported_total";
/// Session snapshots that were not stored, by `reason`
/// ([`SNAPSHOT_FAILURE_REASONS`]): too large for `browser.snapshot_max_bytes`,
/// asked of a page that is not connected and synced, or any other error.
pub const SNAPSHOT_FAILURES: &str = "courier_session_snapshot_failures_total";
/// Reasons of [`SNAPSHOT_FAILURES`].
pub const SNAPSHOT_FAILURE_REASONS: [&str; 3] = ["too_large", "not_connected", "error"];
/// 1 while this process holds an account's lease (no series otherwise).
/// Labels: `account`.
pub const LEASE_HELD: &str = "courier_account_lease_held";
/// The configured `health.pause_below` (published by the scheduler leader,
/// for the alert rules).
pub const CONFIG_HEALTH_PAUSE_BELOW: &str = "courier_config_health_pause_below";
/// The configured `health.caution` (published by the scheduler leader).
pub const CONFIG_HEALTH_CAUTION: &str = "courier_config_health_caution";
/// Messages by status. Labels: `status`.
pub const MESSAGES: &str = "courier_messages";
/// Ack latency, observed from the database by the sampler. Labels: `stage`
/// (sent_to_delivered, delivered_to_read).
pub const ACK_LATENCY_SECONDS: &str = "courier_ack_latency_seconds";
/// Send outcomes and acks this worker process saw. Labels: `outcome` (sent,
/// delivered, read, refused, not_on_whatsapp, slot_expired). A counter of its
/// own: `courier_messages` is the sampled gauge of messages by status.
pub const MESSAGE_OUTCOMES: &str = "courier_message_outcomes_total";
/// Acks this worker process saw, timed from the send: `server` from the
/// start of the attempt to the server's ack, `delivered` and `read` from
/// `sent_at`. Labels: `ack`.
pub const ACK_SINCE_SEND_SECONDS: &str = "courier_ack_since_send_seconds";
/// Browser sessions by state. Labels: `state`.
pub const BROWSER_SESSIONS: &str = "courier_browser_sessions";
/// Browser sessions open in this worker (busy or idle), against [`BROWSER_MAX_OPEN`].
pub const BROWSER_OPEN: &str = "courier_browser_open";
/// The configured `browser.max_open`.
pub const BROWSER_MAX_OPEN: &str = "courier_browser_max_open";
/// Accounts waiting for a browser (all `browser.max_open` sessions in use).
pub const BROWSER_WAITING: &str = "courier_browser_waiting";
/// Idle sessions closed (hibernated; the login stays in the profile).
pub const BROWSER_HIBERNATIONS: &str = "courier_browser_hibernations_total";
/// From the moment due work found its account's session closed (hibernated)
/// to the reopened page being ready, before the job is claimed.
pub const BROWSER_REOPEN_SECONDS: &str = "courier_browser_reopen_seconds";
/// WebDriver command latency. Labels: `command`.
pub const BROWSER_COMMAND_SECONDS: &str = "courier_browser_command_seconds";
/// Chromium or chromedriver restarts. Labels: `component`.
pub const BROWSER_RESTARTS: &str = "courier_browser_restarts_total";
/// Login state machine transitions. Labels: `from`, `to`.
pub const LOGIN_TRANSITIONS: &str = "courier_login_transitions_total";
/// Age of the oldest due schedule not yet expanded.
pub const SCHEDULER_LAG_SECONDS: &str = "courier_scheduler_lag_seconds";
/// Schedule occurrences expanded. Labels: `outcome` (queued, failed, skipped).
pub const SCHEDULER_EXPANSIONS: &str = "courier_scheduler_expansions_total";
/// Messages waiting for an eligible account (status pending, no job).
pub const MESSAGES_WAITING_ACCOUNT: &str = "courier_messages_waiting_account";
/// Attempted sends held on an unavailable account because only its chat can
/// tell whether they went out.
pub const MESSAGES_OUTCOME_UNKNOWN: &str = "courier_messages_outcome_unknown";
/// 1 while this process is the scheduler leader.
pub const SCHEDULER_LEADER: &str = "courier_scheduler_leader";
/// HTTP requests served. Labels: `route`, `method`, `status`.
pub const HTTP_REQUESTS: &str = "courier_http_requests_total";
/// HTTP request latency. Labels: `route`, `method`.
pub const HTTP_REQUEST_SECONDS: &str = "courier_http_request_duration_seconds";
/// Webhook delivery attempts. Labels: `outcome` (delivered, failed, gone, dead).
pub const WEBHOOK_DELIVERIES: &str = "courier_webhook_deliveries_total";
/// From an event being recorded to its webhook being accepted by the endpoint.
pub const WEBHOOK_LATENCY_SECONDS: &str = "courier_webhook_delivery_latency_seconds";
/// Webhook deliveries dead-lettered (still failing at `webhooks.horizon`).
pub const WEBHOOK_DEAD_LETTERS: &str = "courier_webhook_dead_letters_total";
/// `GET /v1/events` streams open in this process.
pub const EVENT_STREAMS: &str = "courier_event_streams_open";

/// Rows the maintenance service's `prune` task deleted. Labels: `table`
/// (one of [`PRUNED_TABLES`]).
pub const ROWS_PRUNED: &str = "courier_rows_pruned_total";
/// Tables of [`ROWS_PRUNED`].
pub const PRUNED_TABLES: [&str; 3] = ["queue_jobs", "courier_events", "webhook_deliveries"];

/// Outcomes of [`WEBHOOK_DELIVERIES`].
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "failed", "gone", "dead"];

/// Buckets for fast things (HTTP, WebDriver commands, job wait): 1 ms … 30 s.
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for slow things (job runs, queue waits under budgets, acks): 10 ms … 24 h.
const SLOW_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once per process) and returns the
/// handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FAST_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(JOB_WAIT_SECONDS.into()), SLOW_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(JOB_RUN_SECONDS.into()), SLOW_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ACK_LATENCY_SECONDS.into()),
                        SLOW_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ACK_SINCE_SEND_SECONDS.into()),
                        SLOW_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty constants");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests): render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            init_zero();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(JOBS_ENQUEUED, "Jobs accepted into the queue");
    describe_counter!(JOBS_FINISHED, "Jobs that finished an attempt, by outcome");
    describe_counter!(
        JOBS_SNOOZED,
        "Jobs snoozed by a budget, pacing or pause, by reason"
    );
    describe_histogram!(JOB_WAIT_SECONDS, Unit::Seconds, "Runnable-to-start wait");
    describe_histogram!(JOB_RUN_SECONDS, Unit::Seconds, "Handler run time");
    describe_counter!(
        WA_WEB_UNSUPPORTED,
        "Sessions that found a WhatsApp Web build config/wa-web.toml does not describe"
    );
    describe_counter!(
        SNAPSHOT_FAILURES,
        "Session snapshots not stored, by reason (too_large, not_connected, error)"
    );
    describe_histogram!(ACK_LATENCY_SECONDS, Unit::Seconds, "Ack latency by stage");
    describe_counter!(
        MESSAGE_OUTCOMES,
        "Send outcomes and acks seen by this worker, by outcome"
    );
    describe_histogram!(
        ACK_SINCE_SEND_SECONDS,
        Unit::Seconds,
        "Send to each ack seen by this worker, by ack"
    );
    describe_gauge!(BROWSER_SESSIONS, "Browser sessions by state");
    describe_histogram!(
        BROWSER_COMMAND_SECONDS,
        Unit::Seconds,
        "WebDriver command latency"
    );
    describe_counter!(BROWSER_RESTARTS, "Chromium/chromedriver restarts");
    describe_gauge!(BROWSER_OPEN, "Browser sessions open in this worker");
    describe_gauge!(BROWSER_MAX_OPEN, "The configured browser.max_open");
    describe_gauge!(BROWSER_WAITING, "Accounts waiting for a browser");
    describe_counter!(BROWSER_HIBERNATIONS, "Idle browser sessions closed");
    describe_histogram!(
        BROWSER_REOPEN_SECONDS,
        Unit::Seconds,
        "Hibernated session: due work to a ready page"
    );
    describe_counter!(LOGIN_TRANSITIONS, "Login state transitions");
    describe_gauge!(
        SCHEDULER_LAG_SECONDS,
        "Age of the oldest due, unexpanded schedule"
    );
    describe_counter!(SCHEDULER_EXPANSIONS, "Schedule occurrences expanded");
    describe_gauge!(
        MESSAGES_WAITING_ACCOUNT,
        "Messages waiting for an eligible account"
    );
    describe_gauge!(
        MESSAGES_OUTCOME_UNKNOWN,
        "Attempted sends held on an unavailable account, outcome unknown"
    );
    describe_gauge!(
        SCHEDULER_LEADER,
        "1 while this process is the scheduler leader"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    describe_histogram!(HTTP_REQUEST_SECONDS, Unit::Seconds, "HTTP request latency");
    describe_counter!(WEBHOOK_DELIVERIES, "Webhook delivery attempts by outcome");
    describe_histogram!(
        WEBHOOK_LATENCY_SECONDS,
        Unit::Seconds,
        "Event recorded to webhook accepted"
    );
    describe_counter!(WEBHOOK_DEAD_LETTERS, "Webhook deliveries dead-lettered");
    describe_gauge!(EVENT_STREAMS, "Open GET /v1/events streams");
    describe_counter!(
        ROWS_PRUNED,
        "Rows deleted by the retention pruning, by table"
    );
}

static PER_ACCOUNT: AtomicBool = AtomicBool::new(true);

/// Turns per-account series (budget, lease held) on or off for this process
/// (`queue.metrics_per_account`).
pub fn set_per_account(on: bool) {
    PER_ACCOUNT.store(on, Ordering::Relaxed);
}

/// Whether per-account series are emitted.
pub fn per_account() -> bool {
    PER_ACCOUNT.load(Ordering::Relaxed)
}

/// Outcomes of [`JOBS_FINISHED`].
pub const FINISH_OUTCOMES: [&str; 5] =
    ["completed", "retried", "discarded", "cancelled", "rescued"];
/// Reasons of [`JOBS_SNOOZED`] (see [`snooze_reason`]).
pub const SNOOZE_REASONS: [&str; 9] = [
    "budget_minute",
    "budget_hour",
    "budget_day",
    "pacing",
    "quiet_hours",
    "paused",
    "not_handled",
    "no_browser",
    "other",
];

/// The bounded label for a snooze reason (free text in the job row).
pub fn snooze_reason(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    // First: its cause is free text (a grid's message may say anything).
    if r.starts_with("no browser available") {
        "no_browser"
    } else if r.contains("minute window") {
        "budget_minute"
    } else if r.contains("hour window") {
        "budget_hour"
    } else if r.contains("day window") {
        "budget_day"
    } else if r.contains("pacing") {
        "pacing"
    } else if r.contains("quiet hours") {
        "quiet_hours"
    } else if r.contains("paused") {
        "paused"
    } else if r.contains("handler") {
        "not_handled"
    } else {
        "other"
    }
}

/// Registers the counters and histograms of every known label set at zero,
/// so dashboards show 0 rather than "no data" before the first event.
fn init_zero() {
    for kind in crate::jobs::JobKind::ALL {
        let kind = kind.as_str();
        counter!(JOBS_ENQUEUED, "kind" => kind).increment(0);
        for outcome in FINISH_OUTCOMES {
            counter!(JOBS_FINISHED, "kind" => kind, "outcome" => outcome).increment(0);
        }
        let _ = histogram!(JOB_WAIT_SECONDS, "kind" => kind);
        let _ = histogram!(JOB_RUN_SECONDS, "kind" => kind);
    }
    for reason in SNOOZE_REASONS {
        counter!(JOBS_SNOOZED, "kind" => "send", "reason" => reason).increment(0);
    }
    for stage in ["sent_to_delivered", "delivered_to_read"] {
        let _ = histogram!(ACK_LATENCY_SECONDS, "stage" => stage);
    }
    for component in ["chromedriver", "chromium", "stale_chromium"] {
        counter!(BROWSER_RESTARTS, "component" => component).increment(0);
    }
    let _ = histogram!(BROWSER_COMMAND_SECONDS, "command" => "new_session");
    for reason in SNAPSHOT_FAILURE_REASONS {
        counter!(SNAPSHOT_FAILURES, "reason" => reason).increment(0);
    }
    for state in ["busy", "open", "closed"] {
        gauge!(BROWSER_SESSIONS, "state" => state).increment(0.0);
    }
    counter!(BROWSER_HIBERNATIONS).increment(0);
    let _ = histogram!(BROWSER_REOPEN_SECONDS);
    for outcome in ["queued", "failed", "skipped", "waiting"] {
        counter!(SCHEDULER_EXPANSIONS, "outcome" => outcome).increment(0);
    }
    for outcome in WEBHOOK_OUTCOMES {
        counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    counter!(WEBHOOK_DEAD_LETTERS).increment(0);
    let _ = histogram!(WEBHOOK_LATENCY_SECONDS);
    gauge!(EVENT_STREAMS).increment(0.0);
    for table in PRUNED_TABLES {
        counter!(ROWS_PRUNED, "table" => table).increment(0);
    }
}

/// Serves `/metrics` (unauthenticated) on `listener` until `shutdown`; the
/// endpoint of worker-only and scheduler processes (`queue.metrics_listen`,
/// `scheduler.metrics_listen`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = install();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&handle),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What [`sample_database`] publishes besides the database's counts.
#[derive(Debug, Clone, Copy)]
pub struct SampleOptions {
    /// Emit `account`-labelled series (off for very large fleets).
    pub per_account: bool,
    /// `health.pause_below`, published as [`CONFIG_HEALTH_PAUSE_BELOW`].
    pub health_pause_below: i32,
    /// `health.caution`, published as [`CONFIG_HEALTH_CAUTION`].
    pub health_caution: i32,
}

impl SampleOptions {
    /// The options `settings` ask for.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            per_account: settings.queue.metrics_per_account,
            health_pause_below: settings.health.pause_below,
            health_caution: settings.health.caution,
        }
    }
}

/// The series [`sample_database`] publishes outside the recorder: replaced
/// whole by each sample, cleared when this process stops sampling.
#[derive(Debug, Default)]
struct Sampled {
    /// Messages by status.
    messages: Vec<(&'static str, i64)>,
    /// Accounts in service by status.
    account_counts: Vec<(&'static str, usize)>,
    /// Jobs by kind and state.
    queue: Vec<(String, &'static str, i64)>,
    /// (account, health score, status), accounts in service only.
    accounts: Vec<(uuid::Uuid, i32, crate::account::AccountStatus)>,
    /// (name, value) of the `courier_config_*` gauges.
    config: Vec<(&'static str, f64)>,
}

/// One account's series in this process: its budget windows and whether
/// this process holds its lease.
#[derive(Debug, Default)]
struct Held {
    /// window → (used, limit).
    budget: std::collections::BTreeMap<&'static str, (f64, f64)>,
    /// When this process gave the lease up; `None` while it holds it.
    released: Option<std::time::Instant>,
}

/// How long a worker keeps exporting an account's budget and lease series
/// (lease 0) after giving its lease up.
pub const RELEASED_KEEP: Duration = Duration::from_secs(15 * 60);

static SAMPLED: Mutex<Option<Sampled>> = Mutex::new(None);
static HELD: Mutex<std::collections::BTreeMap<uuid::Uuid, Held>> =
    Mutex::new(std::collections::BTreeMap::new());

/// Stops publishing what [`sample_database`] published outside the recorder
/// (per-account health and status, the configured thresholds): a process
/// that is no longer the scheduler leader must not keep exporting them.
pub fn clear_sampled() {
    *SAMPLED.lock().expect("sampled gauges poisoned") = None;
}

/// `/metrics`: the recorder's output, then the per-account and configuration
/// series kept here.
pub fn render(handle: &PrometheusHandle) -> String {
    use std::fmt::Write as _;
    let mut out = handle.render();
    let gauge_header = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    if let Some(s) = SAMPLED.lock().expect("sampled gauges poisoned").as_ref() {
        // Held here, not in the recorder: a process that stops sampling (a
        // scheduler that lost leadership) stops publishing them at once,
        // instead of repeating its last values for ever next to the new
        // leader's.
        gauge_header(&mut out, MESSAGES, "Messages by status");
        for (status, n) in &s.messages {
            let _ = writeln!(out, "{MESSAGES}{{status=\"{status}\"}} {n}");
        }
        gauge_header(
            &mut out,
            ACCOUNTS,
            "Accounts by status (retired accounts left out)",
        );
        for (status, n) in &s.account_counts {
            let _ = writeln!(out, "{ACCOUNTS}{{status=\"{status}\"}} {n}");
        }
        gauge_header(&mut out, QUEUE_DEPTH, "Jobs in the queue by kind and state");
        for (kind, state, n) in &s.queue {
            let _ = writeln!(
                out,
                "{QUEUE_DEPTH}{{kind=\"{kind}\",state=\"{state}\"}} {n}"
            );
        }
        for (name, value) in &s.config {
            gauge_header(
                &mut out,
                name,
                "A configured threshold (for the alert rules)",
            );
            let _ = writeln!(out, "{name} {value}");
        }
        if !s.accounts.is_empty() {
            gauge_header(&mut out, ACCOUNT_HEALTH, "Account health score (0-100)");
            for (id, health, _) in &s.accounts {
                let _ = writeln!(out, "{ACCOUNT_HEALTH}{{account=\"{id}\"}} {health}");
            }
            gauge_header(
                &mut out,
                ACCOUNT_STATUS,
                "1 for the account's current status",
            );
            for (id, _, status) in &s.accounts {
                for s in crate::account::AccountStatus::ALL {
                    if !s.is_out_of_service() {
                        let v = u8::from(s == *status);
                        let _ = writeln!(
                            out,
                            "{ACCOUNT_STATUS}{{account=\"{id}\",status=\"{s}\"}} {v}"
                        );
                    }
                }
            }
        }
    }
    let mut held = HELD.lock().expect("held gauges poisoned");
    held.retain(|_, h| h.released.is_none_or(|at| at.elapsed() < RELEASED_KEEP));
    if !held.is_empty() {
        for (name, help, pick) in [
            (BUDGET_USED, "Sends in the account's current window", 0usize),
            (BUDGET_LIMIT, "The account's limit for the window", 1),
        ] {
            if held.values().all(|h| h.budget.is_empty()) {
                break;
            }
            gauge_header(&mut out, name, help);
            for (id, h) in held.iter() {
                for (window, (used, limit)) in &h.budget {
                    let v = if pick == 0 { used } else { limit };
                    let _ = writeln!(out, "{name}{{account=\"{id}\",window=\"{window}\"}} {v}");
                }
            }
        }
        gauge_header(
            &mut out,
            LEASE_HELD,
            "1 while this process holds the account's lease",
        );
        for (id, h) in held.iter() {
            let v = u8::from(h.released.is_none());
            let _ = writeln!(out, "{LEASE_HELD}{{account=\"{id}\"}} {v}");
        }
    }
    out
}

/// Samples the gauges that describe database state.
pub async fn sample_database(pool: &PgPool, opts: SampleOptions) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM mkt_wap_messages GROUP BY status")
            .fetch_all(pool)
            .await?;
    let messages = crate::message::MessageStatus::ALL
        .map(crate::message::MessageStatus::as_str)
        .into_iter()
        .map(|status| {
            let n = rows.iter().find(|(s, _)| s == status).map_or(0, |r| r.1);
            (status, n)
        })
        .collect();
    use crate::account::AccountStatus;
    // Retired accounts are out of the fleet: no count, no series, so nothing
    // about them can keep an alert firing. A deleted row is simply absent.
    let accounts: Vec<(uuid::Uuid, i32, AccountStatus)> =
        sqlx::query_as::<_, (uuid::Uuid, AccountStatus, i32)>(
            "SELECT id, status, health_score FROM mkt_wap_accounts ORDER BY id",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .filter(|(_, status, _)| !status.is_out_of_service())
        .map(|(id, status, health)| (id, health, status))
        .collect();
    let account_counts = AccountStatus::ALL
        .into_iter()
        .filter(|s| !s.is_out_of_service())
        .map(|status| {
            let n = accounts.iter().filter(|a| a.2 == status).count();
            (status.as_str(), n)
        })
        .collect();
    let queue = sample_queue_depth(pool).await?;
    sample_ack_latency(pool).await?;
    *SAMPLED.lock().expect("sampled gauges poisoned") = Some(Sampled {
        messages,
        account_counts,
        queue,
        accounts: if opts.per_account {
            accounts
        } else {
            Vec::new()
        },
        config: vec![
            (
                CONFIG_HEALTH_PAUSE_BELOW,
                f64::from(opts.health_pause_below),
            ),
            (CONFIG_HEALTH_CAUTION, f64::from(opts.health_caution)),
        ],
    });
    Ok(())
}

/// States of [`QUEUE_DEPTH`].
pub const JOB_STATES: [&str; 7] = [
    "available",
    "scheduled",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
];

async fn sample_queue_depth(
    pool: &PgPool,
) -> Result<Vec<(String, &'static str, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, state, count(*) FROM queue_jobs GROUP BY kind, state")
            .fetch_all(pool)
            .await?;
    let mut kinds: Vec<String> = crate::jobs::JobKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    for (k, _, _) in &rows {
        if !kinds.contains(k) {
            kinds.push(k.clone());
        }
    }
    let mut depth = Vec::with_capacity(kinds.len() * JOB_STATES.len());
    for kind in kinds {
        for state in JOB_STATES {
            let n = rows
                .iter()
                .find(|(k, s, _)| *k == kind && s == state)
                .map_or(0, |r| r.2);
            depth.push((kind.clone(), state, n));
        }
    }
    Ok(depth)
}

/// Where this process's ack observation stands in the event log.
static ACK_CURSOR: Mutex<Option<crate::events::Cursor>> = Mutex::new(None);

/// Acks observed per sample at most (the rest wait for the next one).
const ACK_BATCH: i64 = 10_000;

/// Observes [`ACK_LATENCY_SECONDS`] for every ack recorded since the last
/// sample, whichever process wrote it (the first sample only finds where the
/// log ends). Acks are read from the event log (`message.delivered`, and
/// `message.read` at ack 3), in its commit-safe order, up to the head of the
/// log settled when the sample starts: an ack whose transaction was still
/// running is read by a later sample, never skipped (a time watermark did
/// skip them: `delivered_at` is the writer's transaction start, which can
/// fall before a sample that ran while that transaction was still open).
/// Every process that samples observes every ack: aggregate with `max`, or
/// run the sampler in one process (the API) as compose does.
async fn sample_ack_latency(pool: &PgPool) -> Result<(), sqlx::Error> {
    let head = crate::events::head(pool).await?;
    let after = {
        let mut c = ACK_CURSOR.lock().expect("ack cursor poisoned");
        match *c {
            Some(after) => after,
            None => {
                *c = Some(head);
                return Ok(());
            }
        }
    };
    if head < after {
        // Another database (restored, or a test's): start again from its end.
        *ACK_CURSOR.lock().expect("ack cursor poisoned") = Some(head);
        return Ok(());
    }
    if head == after {
        return Ok(());
    }
    // Every event up to `head` is settled (its xid is below the horizon the
    // head was read under), so the range (after, head] never changes.
    let rows: Vec<(i64, i64, String, Option<f64>)> = sqlx::query_as(
        "SELECT e.xid, e.position, e.type, \
                CASE WHEN e.type = 'message.delivered' \
                     THEN extract(epoch FROM m.delivered_at - m.sent_at)::float8 \
                     ELSE extract(epoch FROM m.read_at - m.delivered_at)::float8 END \
         FROM courier_events e JOIN mkt_wap_messages m ON m.id = (e.data->>'message_id')::uuid \
         WHERE (e.xid, e.position) > ($1, $2) AND (e.xid, e.position) <= ($3, $4) \
           AND (e.type = 'message.delivered' \
                OR (e.type = 'message.read' AND coalesce((e.data->>'ack')::int, 3) = 3)) \
         ORDER BY e.xid, e.position LIMIT $5",
    )
    .bind(after.xid)
    .bind(after.position)
    .bind(head.xid)
    .bind(head.position)
    .bind(ACK_BATCH)
    .fetch_all(pool)
    .await?;
    let next = match rows.last() {
        Some(&(xid, position, _, _)) if rows.len() as i64 == ACK_BATCH => {
            crate::events::Cursor { xid, position }
        }
        _ => head,
    };
    {
        // Two samplers in one process (a test) read the same range: only the
        // one that moves the cursor on observes it.
        let mut c = ACK_CURSOR.lock().expect("ack cursor poisoned");
        if *c != Some(after) {
            return Ok(());
        }
        *c = Some(next);
    }
    for (_, _, kind, secs) in rows {
        let Some(secs) = secs else { continue };
        let stage = if kind == "message.delivered" {
            "sent_to_delivered"
        } else {
            "delivered_to_read"
        };
        histogram!(ACK_LATENCY_SECONDS, "stage" => stage).record(secs.max(0.0));
    }
    Ok(())
}

/// Sets an account's budget gauges from the worker's view of it (while this
/// process holds its lease).
pub fn record_budget(account: uuid::Uuid, window: &'static str, used: usize, limit: u32) {
    if !per_account() {
        return;
    }
    let mut held = HELD.lock().expect("held gauges poisoned");
    if let Some(h) = held.get_mut(&account) {
        h.budget.insert(window, (used as f64, f64::from(limit)));
    }
}

/// Records that this process took (`true`) or gave up (`false`) the
/// account's lease: [`LEASE_HELD`] is 1, then 0; [`RELEASED_KEEP`] after
/// it was given up, the account's series (lease and budget) leave this
/// process's `/metrics` unless it took the lease again (a retired or deleted
/// account never is leased again).
pub fn record_lease(account: uuid::Uuid, held: bool) {
    if !per_account() {
        return;
    }
    let mut map = HELD.lock().expect("held gauges poisoned");
    if held {
        map.entry(account).or_default().released = None;
    } else if let Some(h) = map.get_mut(&account) {
        h.released = Some(std::time::Instant::now());
    }
}

/// Runs [`sample_database`] every `every` until the task is dropped.
pub async fn sample_forever(pool: PgPool, opts: SampleOptions, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = sample_database(&pool, opts).await {
            tracing::warn!(error = %crate::error::chain(&e), "metrics sampling failed");
        }
        // (The caller aborts this task and calls `clear_sampled` when it
        // stops being the leader.)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::budget::{Hold, Window};

    #[test]
    fn snooze_reasons_map_to_bounded_labels() {
        let cases = [
            (Hold::Window(Window::Minute).to_string(), "budget_minute"),
            (Hold::Window(Window::Hour).to_string(), "budget_hour"),
            (Hold::Window(Window::Day).to_string(), "budget_day"),
            (Hold::Pacing.to_string(), "pacing"),
            (Hold::QuietHours.to_string(), "quiet_hours"),
            (Hold::Paused.to_string(), "paused"),
            (
                "no `send` handler in this worker build yet".into(),
                "not_handled",
            ),
            (
                "no browser available: the WebDriver endpoint refused a new session: \
                 webdriver did not create session: the node is paused"
                    .into(),
                "no_browser",
            ),
            ("something else".into(), "other"),
        ];
        for (reason, label) in cases {
            assert_eq!(snooze_reason(&reason), label, "{reason}");
            assert!(SNOOZE_REASONS.contains(&label));
        }
    }
}
