//! The command line: one binary, one subcommand per role or task.

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::db::{redact_url, Database, OpenReport};

/// Courier: durable, budget-aware WhatsApp Web campaign sending.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run the end-to-end demo on the embedded stack (simulator, Chromium, all roles).
    Demo(crate::demo::DemoArgs),
    /// Run the whole system (real processes) under random faults, then check
    /// that nothing was lost, duplicated or sent over budget.
    Chaos(crate::chaos::ChaosArgs),
    /// Run every role in one process until Ctrl-C / SIGTERM.
    Run,
    /// A long steady load on the embedded stack (roles as separate processes),
    /// sampling the memory of Courier, chromedriver and each Chromium session.
    Soak(crate::soak::SoakArgs),
    /// Print the effective configuration, secrets redacted.
    Config,
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
    /// Serve the WhatsApp Web simulator (page + control API) on loopback.
    Sim(crate::sim::cli::SimArgs),
    /// Measure a part of Courier on this machine; prints Markdown for docs/benchmarks.md.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// `courier bench` targets.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Chromium sessions: start (cold, restored, from snapshot), round trips,
    /// sends, memory per session and per flag set.
    Browser(crate::browser::bench::BrowserBenchArgs),
}

/// A boxed error for the binary's edge.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Renders an error with its causes on one line: `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), BoxError> {
    let settings = Settings::load()?;
    crate::telemetry::init(&settings.log);
    crate::metrics::set_per_account(settings.queue.metrics_per_account);
    match cli.command {
        Command::Config => {
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            db.close().await?;
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(&settings, args).await,
        Command::Soak(args) => crate::soak::run(&settings, args).await,
        Command::Chaos(args) => crate::chaos::run(&settings, args).await,
        Command::Sim(args) => crate::sim::cli::run(args).await,
        Command::Bench {
            target: BenchTarget::Browser(args),
        } => {
            print!("{}", crate::browser::bench::run(args).await?);
            Ok(())
        }
        Command::Api => {
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            let result = serve_api(&settings, &db).await;
            db.close().await?;
            result
        }
        Command::Worker { handler, capacity } => {
            let mut settings = settings;
            if let Some(h) = handler {
                settings.queue.handler = h;
            }
            if let Some(c) = capacity {
                settings.queue.capacity = c;
            }
            settings.validate()?;
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            crate::metrics::install();
            let metrics = match settings.queue.metrics_listen {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                        format!("cannot listen on {addr} (queue.metrics_listen): {e}")
                    })?;
                    tracing::info!(addr = %listener.local_addr()?, "worker /metrics listening");
                    Some(tokio::spawn(crate::metrics::serve(
                        listener,
                        shutdown_signal(),
                    )))
                }
                None => None,
            };
            let (handlers, browser) = worker_handlers(&settings, &db.pool).await?;
            let runtime = crate::queue::runtime::Runtime::new(db.pool.clone(), &settings, handlers);
            let result = runtime.run_until(shutdown_signal()).await;
            if let Some(b) = browser {
                b.shutdown().await;
            }
            if let Some(m) = metrics {
                m.abort();
            }
            result?;
            db.close().await?;
            Ok(())
        }
        Command::Scheduler => {
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            let scheduler = crate::scheduler::Scheduler::new(db.pool.clone(), &settings);
            let result = scheduler.run_until(shutdown_signal()).await;
            db.close().await?;
            Ok(result?)
        }
        Command::Run => {
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            // All roles in one process: the API and a worker share the pool and
            // stop together on Ctrl-C / SIGTERM.
            let (handlers, browser) = worker_handlers(&settings, &db.pool).await?;
            let runtime = crate::queue::runtime::Runtime::new(db.pool.clone(), &settings, handlers);
            let scheduler = async {
                if settings.scheduler.enabled {
                    crate::scheduler::Scheduler::new(db.pool.clone(), &settings)
                        .run_until(shutdown_signal())
                        .await
                } else {
                    Ok(())
                }
            };
            let (api, worker, scheduler) = tokio::join!(
                serve_api(&settings, &db),
                runtime.run_until(shutdown_signal()),
                scheduler
            );
            tracing::info!("shutting down");
            if let Some(b) = browser {
                b.shutdown().await;
            }
            db.close().await?;
            api?;
            worker?;
            scheduler?;
            Ok(())
        }
    }
}

/// Serves the API on `api.listen` until a shutdown signal.
async fn serve_api(settings: &Settings, db: &Database) -> Result<(), BoxError> {
    let token = settings.api.token.as_ref().ok_or(
        "api.token is not set; the API refuses to start without a bearer token \
         (set COURIER__API__TOKEN, at least 16 characters)",
    )?;
    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let state =
        crate::api::AppState::new(db.pool.clone(), token.expose()).with_settings(settings.clone());
    let sampler = tokio::spawn(crate::metrics::sample_forever(
        db.pool.clone(),
        crate::metrics::SampleOptions {
            per_account: settings.queue.metrics_per_account,
        },
        std::time::Duration::from_secs(15),
    ));
    let served = crate::api::serve(listener, state, shutdown_signal()).await;
    sampler.abort();
    served?;
    Ok(())
}

/// The handler registry `queue.handler` names, plus the browser pool when
/// it is `browser` (the caller shuts it down after the runtime stops, so
/// every profile is flushed).
pub async fn worker_handlers(
    settings: &Settings,
    pool: &sqlx::PgPool,
) -> Result<
    (
        crate::queue::handler::Handlers,
        Option<std::sync::Arc<crate::browser::BrowserPool>>,
    ),
    BoxError,
> {
    if settings.queue.handler == "browser" {
        let (handlers, browser) = crate::browser::browser_registry(settings, pool).await?;
        return Ok((handlers, Some(browser)));
    }
    Ok((handlers_for(settings, pool)?, None))
}

/// The handler registry `queue.handler` names (the non-browser ones; see
/// [`worker_handlers`] for `browser`).
pub fn handlers_for(
    settings: &Settings,
    pool: &sqlx::PgPool,
) -> Result<crate::queue::handler::Handlers, BoxError> {
    use crate::queue::handler::{Handlers, NoopHandler, RecordingHandler};
    use std::sync::Arc;
    match settings.queue.handler.as_str() {
        "noop-record" => Ok(Handlers::new().register_all(Arc::new(RecordingHandler::new(
            pool.clone(),
            settings.queue.handler_delay,
        )))),
        "noop" => Ok(Handlers::new().register_all(Arc::new(NoopHandler))),
        other => Err(format!(
            "queue.handler `{other}` needs the browser pool: use `worker_handlers`"
        )
        .into()),
    }
}

fn print_open_report(db: &Database, report: &OpenReport) {
    if let Some(pg) = &db.embedded {
        println!(
            "        embedded PostgreSQL at {} ({}; binaries {})",
            pg.data_dir().display(),
            match (pg.initialised_here(), pg.started_here()) {
                (true, _) => "new cluster initialised and started",
                (false, true) => "existing cluster reused, started",
                (false, false) => "existing cluster already running, joined",
            },
            pg.bin_dir().display()
        );
    }
    if report.applied.is_empty() {
        println!(
            "        schema up to date ({} migrations) at {}",
            report.known,
            redact_url(db.url())
        );
    } else {
        for (version, description) in &report.applied {
            println!("        applied migration {version} {description}");
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
