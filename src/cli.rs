//! The command line: one binary, one subcommand per role or task.

use std::time::Instant;

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
    /// Run the end-to-end demo on the embedded stack.
    Demo,
    /// Run every role in one process until Ctrl-C / SIGTERM.
    Run,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Serve the WhatsApp Web simulator (page + control API) on loopback.
    Sim(crate::sim::cli::SimArgs),
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
        Command::Demo => demo(&settings).await,
        Command::Sim(args) => crate::sim::cli::run(args).await,
        Command::Run => {
            let (db, report) = Database::open(&settings).await?;
            print_open_report(&db, &report);
            tracing::info!(
                "courier running; no roles are enabled in this build yet; Ctrl-C to stop"
            );
            shutdown_signal().await;
            tracing::info!("shutting down");
            db.close().await?;
            Ok(())
        }
    }
}

async fn demo(settings: &Settings) -> Result<(), BoxError> {
    let started = Instant::now();
    println!("courier demo");
    println!("  [1/2] database …");
    let (db, report) = Database::open(settings).await?;
    match &db.embedded {
        Some(pg) => println!(
            "        embedded PostgreSQL at {} ({}; binaries {})",
            pg.data_dir().display(),
            match (pg.initialised_here(), pg.started_here()) {
                (true, _) => "new cluster initialised and started",
                (false, true) => "existing cluster reused, started",
                (false, false) => "existing cluster already running, joined",
            },
            pg.bin_dir().display()
        ),
        None => println!("        server at {}", redact_url(db.url())),
    }
    println!("  [2/2] schema …");
    print_open_report(&db, &report);
    let tables: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples::bigint FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'mkt\\_%' \
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await?;
    println!(
        "        {} tables: {}",
        tables.len(),
        tables
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    db.close().await?;
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn print_open_report(db: &Database, report: &OpenReport) {
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
