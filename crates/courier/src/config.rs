//! Layered configuration: built-in defaults, `config/default.toml`, an optional
//! `config/<COURIER_ENV>.toml`, then `COURIER__SECTION__KEY` environment variables.
//!
//! Parsing is strict (`deny_unknown_fields`), so a typo is refused at start with
//! the offending key named, and [`Settings::validate`] checks the cross-field
//! rules serde cannot express. Secrets are wrapped in [`Secret`], whose `Debug`
//! and `Serialize` never show the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The built-in copy of `config/default.toml`, used when the file is absent
/// (a binary installed outside the repository still starts).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Errors loading or validating configuration. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or environment variable could not be parsed into the schema.
    #[error("invalid configuration")]
    Parse(#[from] config::ConfigError),
    /// A value parsed but breaks a rule.
    #[error("invalid configuration: `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `database.max_connections`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A named environment file does not exist.
    #[error("configuration file for COURIER_ENV={env} not found: {path}")]
    MissingEnvFile {
        /// The value of `COURIER_ENV`.
        env: String,
        /// The file looked for.
        path: PathBuf,
    },
}

pub use crate::secret::Secret;

/// The whole effective configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where Courier's data lives.
    pub database: DatabaseSettings,
    /// The private cluster used when `database.url` is unset.
    pub embedded: EmbeddedSettings,
    /// The HTTP API.
    pub api: ApiSettings,
    /// Logging.
    pub log: LogSettings,
    /// The queue engine: leases, claiming, retries, retention.
    pub queue: QueueSettings,
    /// Default per-account send budgets (an account's `rate_limit_config` overrides).
    pub budget: BudgetSettings,
    /// Health score thresholds.
    pub health: HealthSettings,
    /// The scheduler: schedule expansion, assignment and periodic maintenance.
    pub scheduler: SchedulerSettings,
    /// Chromium sessions on WhatsApp Web: WebDriver, profiles, login deadlines.
    pub browser: BrowserSettings,
    /// Sending and ack tracking (see `src/delivery/`).
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Events out: webhook deliveries and the `/v1/events` stream.
    #[serde(default)]
    pub webhooks: WebhookSettings,
}

/// Webhook deliveries and the live event stream (see `docs/webhooks.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// CIDRs a webhook URL may reach besides public addresses (the SSRF
    /// policy of media downloads: private, loopback and link-local
    /// addresses are refused unless listed here).
    pub allow_cidrs: Vec<String>,
    /// One delivery request: connect, send, answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest answer read from an endpoint; a longer one fails the attempt.
    pub max_response_bytes: u64,
    /// The first retry waits this long, doubling up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// A delivery still failing this long after its first attempt is
    /// dead-lettered (listed by the API, replayable).
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// `/v1/events`: a comment line this often keeps idle streams open.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// `/v1/events`: the log is read again this often even without a
    /// notification (a missed NOTIFY delays an event by at most this).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Events older than this leave the log (`courier_events`), unless a
    /// pending delivery or a dead letter still needs them. A stream resuming
    /// after a pruned event gets `event: reset`.
    #[serde(with = "humantime_serde")]
    pub events_retain: Duration,
    /// Delivered deliveries are deleted this long after delivery.
    #[serde(with = "humantime_serde")]
    pub retain_delivered: Duration,
    /// Dead letters are deleted this long after they died, unless replayed
    /// before (a replay makes them pending again).
    #[serde(with = "humantime_serde")]
    pub retain_dead: Duration,
    /// Rows deleted per statement when pruning (each statement its own
    /// short transaction).
    pub prune_batch: u32,
    /// After `POST /v1/webhooks/{id}/rotate-secret`, the replaced secret
    /// keeps signing beside the new one this long (unless the call names
    /// another overlap).
    #[serde(with = "humantime_serde")]
    pub rotation_overlap: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_cidrs: Vec::new(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            horizon: Duration::from_secs(24 * 3600),
            heartbeat: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            events_retain: Duration::from_secs(7 * 86_400),
            retain_delivered: Duration::from_secs(7 * 86_400),
            retain_dead: Duration::from_secs(30 * 86_400),
            prune_batch: 5000,
            rotation_overlap: Duration::from_secs(86_400),
        }
    }
}

/// How messages are sent and followed up (see `src/delivery/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Simulated typing time per character of the typed text (0 = off).
    #[serde(with = "humantime_serde")]
    pub typing_per_char: Duration,
    /// Cap on the simulated typing time of one message.
    #[serde(with = "humantime_serde")]
    pub typing_max: Duration,
    /// After a send, the account's message models are read again this much
    /// later to collect acks that arrive after the last send.
    #[serde(with = "humantime_serde")]
    pub ack_followup: Duration,
    /// A sent message with no delivery after this is flagged (and lowers health).
    #[serde(with = "humantime_serde")]
    pub undelivered_after: Duration,
    /// Most chats whose sent-but-unread messages one catch-up pass reads
    /// from the page's message models (the most recently sent to first).
    pub catch_up_chats: i64,
    /// Send attempts per message, across its send job and any retry jobs,
    /// before it is `failed` for good (transient failures; a permanent one
    /// fails at once). An operator's retry grants this many again.
    pub max_attempts: i32,
    /// How long a worker remembers whether a number is on WhatsApp (the
    /// exists-check before the first send to it). In memory, per worker.
    #[serde(with = "humantime_serde")]
    pub exists_ttl: Duration,
    /// Test hook: wait this long between WhatsApp accepting a send and
    /// recording it, widening the crash window the exactly-once tests aim
    /// at. Keep zero in production.
    #[serde(with = "humantime_serde")]
    pub record_delay: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            typing_per_char: Duration::from_millis(40),
            typing_max: Duration::from_secs(8),
            ack_followup: Duration::from_secs(30),
            undelivered_after: Duration::from_secs(3600),
            catch_up_chats: 40,
            // The replaced system's limit: three attempts per message.
            max_attempts: 3,
            exists_ttl: Duration::from_secs(24 * 3600),
            record_delay: Duration::ZERO,
        }
    }
}

/// The scheduler role (see `docs/scheduler.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Run the scheduler inside `courier run`.
    pub enabled: bool,
    /// How often the leader looks for due schedules.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// How often a follower tries to become the leader.
    #[serde(with = "humantime_serde")]
    pub leader_retry: Duration,
    /// Messages written per statement batch inside an expansion.
    pub batch_size: usize,
    /// Health-check jobs for every account, this often.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Group rediscovery (`discover` jobs) for every active account, this often.
    #[serde(with = "humantime_serde")]
    pub discover_interval: Duration,
    /// The sweeper of failed messages that are still retryable, this often.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Failed messages older than this are left alone by the sweeper.
    #[serde(with = "humantime_serde")]
    pub sweep_window: Duration,
    /// Stuck-state reaping (accounts past their status deadline), this often.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Job retention pruning, this often (the age is `queue.retention`).
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Reassignment of queued jobs and assignment of pending messages, this often.
    #[serde(with = "humantime_serde")]
    pub reassign_interval: Duration,
    /// A pause longer than this (remaining, or held by hand for this long)
    /// moves the account's queued sends to other accounts.
    #[serde(with = "humantime_serde")]
    pub reassign_after: Duration,
    /// `courier scheduler` serves `/metrics` here (unauthenticated; keep it
    /// private). Unset: no listener (`courier run` serves /metrics on the API).
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The browser layer (see `docs/browser.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserSettings {
    /// A WebDriver endpoint to use instead of a local chromedriver (e.g. a
    /// Selenium Grid). Unset: Courier starts and supervises chromedriver.
    #[serde(default)]
    pub webdriver_url: Option<String>,
    /// The chromedriver binary (local mode).
    pub chromedriver: PathBuf,
    /// The Chromium binary; searched for when unset.
    #[serde(default)]
    pub chromium: Option<PathBuf>,
    /// Run Chromium headless.
    pub headless: bool,
    /// Extra Chromium arguments (e.g. `--renderer-process-limit=1`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The user agent Chromium presents (`--user-agent`): a desktop Chrome
    /// one, as the maintained clients set, because WhatsApp Web refuses or
    /// degrades headless and unknown agents. Empty: Chromium's own.
    #[serde(default)]
    pub user_agent: String,
    /// One Chromium profile per account lives under here (mode 0700).
    pub profiles_dir: PathBuf,
    /// The WhatsApp Web URL; `{account}` is replaced by the account id (the
    /// simulator routes by it; the real site ignores it).
    pub page_url: String,
    /// Longest time from opening the page to a recognisable screen.
    #[serde(with = "humantime_serde")]
    pub starting_deadline: Duration,
    /// Longest time a QR may wait for a scan.
    #[serde(with = "humantime_serde")]
    pub qr_deadline: Duration,
    /// Longest time from the scan (or a restored session) to ready.
    #[serde(with = "humantime_serde")]
    pub authenticating_deadline: Duration,
    /// How long the first QR ref lives (for `qr_expires_at`).
    #[serde(with = "humantime_serde")]
    pub qr_first_ref_ttl: Duration,
    /// How long each later QR ref lives.
    #[serde(with = "humantime_serde")]
    pub qr_next_ref_ttl: Duration,
    /// Every WebDriver command (and each page-object step) times out after this.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How often a health check runs per active account.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// A session no job has used for this long is closed (hibernated) once
    /// its account has no work due within `queue.lease_hold` and no message
    /// sent within `delivery.ack_followup` still waiting for its delivery
    /// ack. The login stays in the profile (and the snapshot); the next due
    /// job reopens it before it is claimed. (It replaces `idle_close`.)
    #[serde(with = "humantime_serde")]
    pub idle_close_after: Duration,
    /// Most Chromium sessions one worker keeps open. A worker leases at most
    /// this many accounts (`queue.capacity` is lowered to it); an account that
    /// needs a browser while all are open takes the least recently used idle
    /// one, or waits its turn (first come, first served).
    pub max_open: usize,
    /// Most browsers this worker starts at once (Chromium up and WhatsApp Web
    /// loaded); 0 = half the machine's CPUs, at least 1. A worker leases an
    /// account only when it may start its browser now, so a start never
    /// queues behind others while holding the account, and starts do not
    /// fight for the CPU (a start is CPU-bound).
    pub max_starting: usize,
    /// Run each Chromium as one process (`--single-process --no-zygote`):
    /// about a third of the resident memory of the default process model
    /// (one process instead of about nine, each mapping Chromium's binary),
    /// and a cheaper start. A crash takes the whole browser down, which for
    /// Courier's one page per browser is what a renderer crash does anyway
    /// (the session is reopened). `false` keeps Chromium's process model.
    pub single_process: bool,
    /// A session open this long is closed and reopened on the same profile
    /// before its account's next job, bounding the page's memory growth
    /// (0 = never).
    #[serde(with = "humantime_serde")]
    pub recycle_after: Duration,
    /// When no browser can be opened for an account with due work (a grid
    /// refusing new sessions at capacity, chromedriver down), its runnable
    /// jobs wait this long, `waiting_reason` "no browser available: …",
    /// with no attempt spent and no health lost; then they are tried again.
    #[serde(with = "humantime_serde")]
    pub unavailable_retry: Duration,
    /// First delay before restarting a crashed chromedriver; doubles, capped at 10 s.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// Key of the session snapshots: 32 bytes as 64 hex characters. Unset:
    /// no snapshots are written or restored.
    #[serde(default)]
    pub session_key: Option<Secret>,
    /// Media paths (`media_path`) are resolved inside this directory and may
    /// not leave it (no absolute paths, `..` or escaping symlinks); media
    /// fetched from URLs are staged here too.
    pub media_dir: PathBuf,
    /// Largest media file accepted (path or URL; a download is counted while
    /// it streams).
    pub media_max_bytes: u64,
    /// Longest time one media download may take (connect, redirects, body).
    #[serde(with = "humantime_serde")]
    pub media_timeout: Duration,
    /// Most redirects one media download follows (each target is re-checked).
    pub media_max_redirects: usize,
    /// Address ranges (CIDRs) media URLs may reach although they are private,
    /// loopback, link-local, … Empty: public addresses only (SSRF guard).
    #[serde(default)]
    pub media_allow_cidrs: Vec<String>,
    /// Largest session snapshot stored (packed, before sealing). A larger one
    /// is refused with an error naming this key (the session stays in the
    /// browser; `courier_session_snapshot_failures_total` counts it).
    pub snapshot_max_bytes: u64,
}

impl BrowserSettings {
    /// `max_starting`, with 0 resolved to half the CPUs (at least 1).
    pub fn starts_at_once(&self) -> usize {
        match self.max_starting {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() / 2)
                .unwrap_or(1)
                .max(1),
            n => n,
        }
    }
}

/// The queue engine.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Accounts one worker process drives at once (browser sessions).
    pub capacity: usize,
    /// How long a lease lives without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often held leases are extended.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Fallback poll when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Keep an idle account's lease when its next job is due within this.
    #[serde(with = "humantime_serde")]
    pub lease_hold: Duration,
    /// Hand an account to another slot after this long when others wait.
    #[serde(with = "humantime_serde")]
    pub lease_rotate: Duration,
    /// Longest a handler may run before it is failed.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// On shutdown, how long in-flight jobs may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A job returned by crashes/lost leases this many times is discarded.
    pub max_rescues: i32,
    /// First retry delay; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Completed/discarded/cancelled jobs are deleted after this.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Ignored: workers no longer prune; the maintenance service does, every
    /// `scheduler.prune_interval`. Still accepted so that existing config
    /// files load (unknown keys are refused).
    #[serde(default, with = "humantime_serde")]
    pub prune_interval: Option<Duration>,
    /// Which handlers run jobs: `browser` (WhatsApp Web in Chromium), `noop`
    /// (succeeds at once; benchmarks) or `noop-record` (the test kit's
    /// recorder, in builds with the lab; tests).
    pub handler: String,
    /// How long the `noop-record` handler takes per job (tests that need jobs
    /// in flight when a worker is killed).
    #[serde(with = "humantime_serde", default)]
    pub handler_delay: Duration,
    /// Where a worker-only process (`courier worker`) serves `/metrics`
    /// (unauthenticated; bind it to a private interface). Unset: no listener.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Emit per-account series (budget, health, status, lease held). Turn off
    /// for very large fleets; the fleet-wide series remain.
    #[serde(default = "default_true")]
    pub metrics_per_account: bool,
}

fn default_true() -> bool {
    true
}

/// Default per-account budgets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// Sends in any 60 s window.
    pub per_minute: u32,
    /// Sends in any 3600 s window.
    pub per_hour: u32,
    /// Sends in any 86 400 s window (the seeds' 200 a day).
    pub per_day: u32,
    /// Least time between two sends.
    #[serde(with = "humantime_serde")]
    pub min_gap: Duration,
    /// Random extra gap, uniformly 0..=jitter.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Quiet hours `"HH:MM-HH:MM"` in each account's time zone; empty for none.
    #[serde(default)]
    pub quiet_hours: String,
    /// Daily caps for an account's first days (day 0, 1, …); empty disables.
    #[serde(default)]
    pub warmup: Vec<u32>,
}

/// Health score thresholds (see `health.rs` for the rules).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// At or below this score the caps are halved.
    pub caution: i32,
    /// Below this score the account is paused.
    pub pause_below: i32,
    /// How long an automatic health pause lasts.
    #[serde(with = "humantime_serde")]
    pub pause_for: Duration,
}

/// Database connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A Postgres URL. Unset means: start the embedded cluster.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Pool size per process.
    pub max_connections: u32,
    /// How long to wait for the first connection before giving up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

/// The embedded PostgreSQL cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// Data directory (relative paths are taken from the working directory).
    pub data_dir: PathBuf,
    /// Directory of the server binaries; searched for when unset.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// OS user that runs the server when Courier runs as root.
    pub run_as: String,
    /// Stop the cluster when the process that started it exits.
    pub stop_on_exit: bool,
    /// Name of the database Courier uses inside the cluster.
    pub database: String,
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// The bootstrap (break-glass) bearer token: admin on every route. Named
    /// tokens (`courier tokens create`) replace it day to day; the API keeps
    /// only its hash.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// How long a signed login-page link works (`POST
    /// /v1/accounts/{id}/login-link`).
    #[serde(with = "humantime_serde", default = "default_login_link_ttl")]
    pub login_link_ttl: Duration,
    /// The API's address as people reach it (`https://courier.example.com`),
    /// for the login links it hands out; unset: from the request's `Host`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Browser origins allowed to call the API cross-origin (CORS), such as
    /// the seed's Next.js admin UI (`https://admin.example.com`). Exact
    /// origins only (scheme, host, optional port); empty: no CORS headers.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// `o` as an origin (`scheme://host[:port]`, http or https, nothing after
/// it), in the form browsers send in `Origin`; `None` if it is not one.
pub fn parse_origin(o: &str) -> Option<String> {
    let u = url::Url::parse(o).ok()?;
    let bare = matches!(u.scheme(), "http" | "https")
        && u.host().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && matches!(u.path(), "" | "/")
        && u.query().is_none()
        && u.fragment().is_none()
        && !o.ends_with('/');
    bare.then(|| u.origin().ascii_serialization())
}

fn default_login_link_ttl() -> Duration {
    Duration::from_secs(600)
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `courier=debug,sqlx=warn`, …).
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where to load configuration from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding `default.toml` and `<env>.toml` (default `config`).
    pub dir: Option<PathBuf>,
    /// Environment name (`COURIER_ENV`).
    pub env: Option<String>,
    /// An extra file layered after the environment file.
    pub file: Option<PathBuf>,
    /// Environment variables to read instead of the process environment (tests).
    pub vars: Option<Vec<(String, String)>>,
}

impl Settings {
    /// Loads from the process environment: `COURIER_CONFIG_DIR`, `COURIER_ENV`.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(Sources {
            dir: std::env::var_os("COURIER_CONFIG_DIR").map(PathBuf::from),
            env: std::env::var("COURIER_ENV").ok().filter(|e| !e.is_empty()),
            file: None,
            vars: None,
        })
    }

    /// The built-in defaults alone (no files, no environment).
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the built-in default.toml is valid")
    }

    /// Loads from explicit sources, then validates.
    pub fn load_from(sources: Sources) -> Result<Self, ConfigError> {
        let dir = sources.dir.unwrap_or_else(|| PathBuf::from("config"));
        let default_file = dir.join("default.toml");
        let mut builder = config::Config::builder();
        builder = if default_file.is_file() {
            builder.add_source(config::File::from(default_file.as_path()))
        } else {
            builder.add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
        };
        if let Some(env) = sources.env {
            let path = dir.join(format!("{env}.toml"));
            if !path.is_file() {
                return Err(ConfigError::MissingEnvFile { env, path });
            }
            builder = builder.add_source(config::File::from(path.as_path()));
        }
        if let Some(file) = sources.file {
            builder = builder.add_source(config::File::from(file.as_path()).required(true));
        }
        let mut env = config::Environment::with_prefix("COURIER")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        if let Some(vars) = sources.vars {
            env = env.source(Some(vars.into_iter().collect()));
        }
        let settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Resolves `embedded.data_dir` against `base` when relative.
    pub fn embedded_data_dir(&self, base: &Path) -> PathBuf {
        if self.embedded.data_dir.is_absolute() {
            self.embedded.data_dir.clone()
        } else {
            base.join(&self.embedded.data_dir)
        }
    }
}

impl BudgetSettings {
    /// The parsed quiet hours, if any.
    pub fn quiet_hours(&self) -> Result<Option<crate::account::budget::QuietHours>, String> {
        let q = self.quiet_hours.trim();
        if q.is_empty() {
            return Ok(None);
        }
        let (a, b) = q
            .split_once('-')
            .ok_or_else(|| format!("`{q}` is not HH:MM-HH:MM"))?;
        let t = |s: &str| {
            chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M")
                .map_err(|_| format!("`{s}` is not a HH:MM time"))
        };
        Ok(Some(crate::account::budget::QuietHours {
            start: t(a)?,
            end: t(b)?,
        }))
    }

    /// The defaults as budget limits.
    pub fn limits(&self) -> crate::account::budget::Limits {
        crate::account::budget::Limits {
            per_minute: self.per_minute,
            per_hour: self.per_hour,
            per_day: self.per_day,
            min_gap: self.min_gap,
            jitter: self.jitter,
            quiet_hours: self.quiet_hours().ok().flatten(),
        }
    }
}

mod validate;

#[cfg(test)]
mod tests;
