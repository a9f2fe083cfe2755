//! The command line: one binary, one subcommand per role or task. Parsing and
//! dispatch only: the roles are built by `courier::app`, the lab commands by
//! `courier_lab` (present with the default `lab` feature).

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use courier::config::Settings;
use courier::error::BoxError;

/// Courier: durable, budget-aware WhatsApp Web campaign sending.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Take over the previous system's linked phones: copy whatsapp-web.js
    /// LocalAuth profiles (session-<clientId> folders) into Courier's profile
    /// store, matched to accounts by session_storage_path or client id.
    ImportSessions {
        /// The LocalAuth data directory holding the session-<clientId> folders.
        #[arg(long)]
        from: std::path::PathBuf,
        /// Print the matching and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run every role in one process until Ctrl-C / SIGTERM.
    Run,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Check cron expressions (no database or configuration needed).
    Cron {
        /// What to do.
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Manage API tokens: create (the secret is printed once), list, revoke.
    Tokens {
        /// What to do.
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Serve the HTTP API until Ctrl-C / SIGTERM.
    Api,
    /// Run the scheduler (one leader per cluster) until Ctrl-C / SIGTERM.
    Scheduler,
    /// Run a queue worker: lease accounts and run their jobs until Ctrl-C / SIGTERM.
    Worker {
        /// Override `queue.handler` (`noop-record` records each job and succeeds).
        #[arg(long)]
        handler: Option<String>,
        /// Override `queue.capacity` (accounts driven at once).
        #[arg(long)]
        capacity: Option<usize>,
    },
    /// Run the end-to-end demo on the embedded stack (simulator, Chromium, all roles).
    #[cfg(feature = "lab")]
    Demo(courier_lab::demo::DemoArgs),
    /// Run the whole system (real processes) under random faults, then check
    /// that nothing was lost, duplicated or sent over budget.
    #[cfg(feature = "lab")]
    Chaos(courier_lab::chaos::ChaosArgs),
    /// A long steady load on the embedded stack (roles as separate processes),
    /// sampling the memory of Courier, chromedriver and each Chromium session.
    #[cfg(feature = "lab")]
    Soak(courier_lab::soak::SoakArgs),
    /// Serve the WhatsApp Web simulator (page + control API) on loopback.
    #[cfg(feature = "lab")]
    Sim(courier_sim::cli::SimArgs),
    /// Measure a part of Courier on this machine; prints Markdown for docs/benchmarks.md.
    #[cfg(feature = "lab")]
    Bench {
        /// What to measure.
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// `courier cron` subcommands.
#[derive(Debug, Subcommand)]
enum CronCommand {
    /// Print the next occurrences of an expression, in UTC and in the zone
    /// (RFC 3339), as the scheduler will expand them.
    Next(CronNextArgs),
}

/// `courier cron next EXPR [--tz ZONE] [--count N] [--after RFC3339]`.
#[derive(Debug, Args)]
struct CronNextArgs {
    /// The expression, quoted: `"0 9 * * 1-5"` (5 fields, Unix cron), a
    /// nickname (`@daily`), or 6/7 fields with seconds.
    expr: String,
    /// The schedule's IANA time zone.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// How many occurrences to print.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// List occurrences after this instant (RFC 3339, e.g. 2026-03-06T00:00:00Z); default now.
    #[arg(long)]
    after: Option<DateTime<Utc>>,
}

/// `courier tokens` subcommands.
#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token and print its secret (shown once, stored hashed).
    Create(TokensCreateArgs),
    /// List every token with its prefix, scopes, account, expiry, last use
    /// and state (never a secret).
    List,
    /// Revoke a token by name or id: its next request gets 401, on every replica.
    Revoke {
        /// The token's name, or its id.
        name_or_id: String,
    },
}

/// `courier tokens create --name N --scope read,enqueue [--account UUID] [--expires-in 30d]`.
#[derive(Debug, Args)]
struct TokensCreateArgs {
    /// A name to tell it by (1 to 64 of A-Z a-z 0-9 . _ -), unique among live tokens.
    #[arg(long)]
    name: String,
    /// Comma-separated scopes: read (every GET), enqueue (jobs, messages,
    /// retries), admin (everything; implies the others).
    #[arg(long)]
    scope: String,
    /// Restrict the token to this account.
    #[arg(long, value_name = "UUID")]
    account: Option<uuid::Uuid>,
    /// How long it works: 30d, 12h, 90m, 1y…, or `never`.
    #[arg(long, default_value = "90d")]
    expires_in: String,
}

/// `courier bench` targets.
#[cfg(feature = "lab")]
#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Chromium sessions: start (cold, restored, from snapshot), round trips,
    /// sends, memory per session and per flag set.
    Browser(courier_lab::bench::BrowserBenchArgs),
    /// Events out: event → webhook received at a rate, and SSE streams on
    /// one API process (issue 23's targets).
    Events(courier_lab::bench_events::EventsBenchArgs),
    /// Many accounts on one worker: peak memory under `browser.max_open`,
    /// exactly-once sends, reopen + send against a restored-profile baseline.
    Accounts(courier_lab::bench_accounts::AccountsBenchArgs),
}

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        // No configuration: an operator checks an expression anywhere.
        Command::Cron { command } => cron(command),
        command => run_with_settings(command).await,
    }
}

/// `courier cron …`.
fn cron(command: CronCommand) -> Result<(), BoxError> {
    match command {
        CronCommand::Next(args) => {
            let after = args.after.unwrap_or_else(Utc::now);
            let preview =
                courier::scheduler::occurrence::preview(&args.expr, &args.tz, after, args.count)?;
            print!("{preview}");
            Ok(())
        }
    }
}

/// `courier tokens …`: arguments are checked before the database is opened.
async fn tokens(settings: &Settings, command: TokensCommand) -> Result<(), BoxError> {
    use courier::access::token;
    use courier::app::TokenAction;
    let action = match command {
        TokensCommand::Create(args) => {
            let scopes = token::parse_scopes(&args.scope)?;
            let expires_at = token::parse_expires_in(&args.expires_in)?
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                .transpose()?;
            TokenAction::Create(token::NewToken {
                name: args.name,
                scopes,
                account_id: args.account,
                expires_at,
            })
        }
        TokensCommand::List => TokenAction::List,
        TokensCommand::Revoke { name_or_id } => TokenAction::Revoke(name_or_id),
    };
    print!("{}", courier::app::tokens(settings, action).await?);
    Ok(())
}

async fn run_with_settings(command: Command) -> Result<(), BoxError> {
    let mut settings = Settings::load()?;
    // The demo's terminal shows progress; its log lines go to a file.
    #[cfg(feature = "lab")]
    let log_file = match &command {
        Command::Demo(args) if !args.verbose => Some(courier_lab::demo::log_path(&settings)),
        _ => None,
    };
    #[cfg(not(feature = "lab"))]
    let log_file: Option<std::path::PathBuf> = None;
    match log_file {
        Some(path) => courier::telemetry::init_to_file(&settings.log, &path)
            .map_err(|e| format!("opening the log file {}: {e}", path.display()))?,
        None => courier::telemetry::init(&settings.log),
    }
    courier::metrics::set_per_account(settings.queue.metrics_per_account);
    match command {
        Command::Config => {
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::Cron { command } => cron(command),
        Command::Migrate => courier::app::migrate(&settings).await,
        Command::Tokens { command } => tokens(&settings, command).await,
        Command::ImportSessions { from, dry_run } => {
            courier::app::import_sessions(&settings, &from, dry_run).await
        }
        Command::Api => courier::app::api(&settings).await,
        Command::Scheduler => courier::app::scheduler(&settings).await,
        Command::Run => courier::app::run_all(&settings).await,
        Command::Worker { handler, capacity } => {
            if let Some(h) = handler {
                settings.queue.handler = h;
            }
            if let Some(c) = capacity {
                settings.queue.capacity = c;
            }
            #[cfg(feature = "lab")]
            let extra = courier_lab::extra_handlers;
            #[cfg(not(feature = "lab"))]
            let extra = courier::app::no_extra_handlers;
            courier::app::worker(&settings, extra).await
        }
        #[cfg(feature = "lab")]
        Command::Demo(args) => courier_lab::demo::run(&settings, args).await,
        #[cfg(feature = "lab")]
        Command::Soak(args) => courier_lab::soak::run(&settings, args).await,
        #[cfg(feature = "lab")]
        Command::Chaos(args) => courier_lab::chaos::run(&settings, args).await,
        #[cfg(feature = "lab")]
        Command::Sim(args) => courier_sim::cli::run(args).await,
        #[cfg(feature = "lab")]
        Command::Bench {
            target: BenchTarget::Browser(args),
        } => {
            print!("{}", courier_lab::bench::run(args).await?);
            Ok(())
        }
        #[cfg(feature = "lab")]
        Command::Bench {
            target: BenchTarget::Events(args),
        } => {
            print!("{}", courier_lab::bench_events::run(args).await?);
            Ok(())
        }
        #[cfg(feature = "lab")]
        Command::Bench {
            target: BenchTarget::Accounts(args),
        } => {
            print!("{}", courier_lab::bench_accounts::run(args).await?);
            Ok(())
        }
    }
}
