//! Builds the roles (API, worker, scheduler) from [`Settings`]: the one place
//! that wires Courier's parts together. The binary, the test kit and the lab
//! start roles through here; nothing else imports it.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Settings;
use crate::db::{redact_url, Database, OpenReport};
use crate::error::BoxError;
use crate::queue::handler::Handlers;

/// Applies pending migrations and reports what it did.
pub async fn migrate(settings: &Settings) -> Result<(), BoxError> {
    let (db, report) = Database::open(settings).await?;
    print_open_report(&db, &report);
    db.close().await?;
    Ok(())
}

/// `courier import-sessions --from DIR [--dry-run]`: takes over the previous
/// system's linked browser profiles ([`crate::account::import`]). Needs a
/// migrated database and migrates nothing itself.
pub async fn import_sessions(
    settings: &Settings,
    from: &std::path::Path,
    dry_run: bool,
) -> Result<(), BoxError> {
    let (db, _) = Database::open_with(settings, false).await?;
    let result = crate::account::import::import_sessions(&db.pool, settings, from, dry_run).await;
    db.close().await?;
    let report = result?;
    if report.folders.is_empty() {
        println!(
            "no whatsapp-web.js LocalAuth folders (session-<clientId>) in {}",
            from.display()
        );
    }
    for folder in &report.folders {
        println!("{folder}");
    }
    let imported = report.imported();
    if dry_run {
        println!("dry run: nothing was changed");
    } else if imported == 0 {
        println!("nothing imported: no account changed");
    } else {
        println!(
            "{imported} profile(s) imported; each account's next login opens its profile without a QR \
             (POST /v1/accounts/{{id}}/login, or Initialize in the admin UI)"
        );
    }
    Ok(())
}

/// `courier api`: serves the HTTP API until a shutdown signal.
pub async fn api(settings: &Settings) -> Result<(), BoxError> {
    let (db, report) = Database::open(settings).await?;
    print_open_report(&db, &report);
    let result = serve_api(settings, &db, crate::shutdown::signal()).await;
    db.close().await?;
    result
}

/// What `courier tokens` does.
#[derive(Debug)]
pub enum TokenAction {
    /// Create a token; the output shows its secret once.
    Create(crate::access::NewToken),
    /// List every token, never a secret.
    List,
    /// Revoke the live token with this name, or this id.
    Revoke(String),
}

/// `courier tokens …`: opens the database (applying migrations), does
/// `action`, and returns what to print.
pub async fn tokens(settings: &Settings, action: TokenAction) -> Result<String, BoxError> {
    use crate::access::token;
    let (db, _report) = Database::open(settings).await?;
    let out = match action {
        TokenAction::Create(new) => token::create(&db.pool, new)
            .await
            .map(|created| token::render_created(&created)),
        TokenAction::List => token::list(&db.pool)
            .await
            .map(|all| token::render_list(&all, chrono::Utc::now())),
        TokenAction::Revoke(name_or_id) => token::revoke(&db.pool, &name_or_id).await.map(|t| {
            format!(
                "revoked token `{}` ({}); its next request gets 401\n",
                t.name, t.id
            )
        }),
    };
    db.close().await?;
    Ok(out?)
}

/// Handler registries from outside the product, by `queue.handler` name: the
/// test kit's `noop-record` in a build with the lab. `None`: not one of its
/// names.
pub type ExtraHandlers = fn(name: &str, settings: &Settings, pool: &PgPool) -> Option<Handlers>;

/// No handlers beyond the product's (`browser`, `noop`).
pub fn no_extra_handlers(_: &str, _: &Settings, _: &PgPool) -> Option<Handlers> {
    None
}

/// `courier worker`: leases accounts and runs their jobs until a shutdown
/// signal. `queue.metrics_listen`, when set, serves `/metrics`.
pub async fn worker(settings: &Settings, extra: ExtraHandlers) -> Result<(), BoxError> {
    settings.validate()?;
    if settings.queue.prune_interval.is_some() {
        tracing::warn!(
            "queue.prune_interval is ignored: the scheduler's maintenance service prunes, \
             every scheduler.prune_interval"
        );
    }
    let (db, report) = Database::open(settings).await?;
    print_open_report(&db, &report);
    let metrics = serve_metrics(
        settings.queue.metrics_listen,
        "queue.metrics_listen",
        "worker",
    )
    .await?;
    let (handlers, browser) = match extra(&settings.queue.handler, settings, &db.pool) {
        Some(h) => (crate::worker::with_webhooks(h, settings, &db.pool), None),
        None => worker_handlers(settings, &db.pool).await?,
    };
    let runtime = crate::queue::runtime::Runtime::new(db.pool.clone(), settings, handlers);
    let result = runtime.run_until(crate::shutdown::signal()).await;
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

/// `courier scheduler`: expands due schedules and runs maintenance (one
/// leader per cluster) until a shutdown signal.
pub async fn scheduler(settings: &Settings) -> Result<(), BoxError> {
    let (db, report) = Database::open(settings).await?;
    print_open_report(&db, &report);
    let metrics = serve_metrics(
        settings.scheduler.metrics_listen,
        "scheduler.metrics_listen",
        "scheduler",
    )
    .await?;
    let scheduler = crate::scheduler::Scheduler::new(db.pool.clone(), settings);
    let result = scheduler.run_until(crate::shutdown::signal()).await;
    if let Some(m) = metrics {
        m.abort();
    }
    db.close().await?;
    Ok(result?)
}

/// Installs the metrics recorder and, when `addr` is set, serves `/metrics`
/// there until a shutdown signal (`key` names the setting in errors).
async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    key: &str,
    role: &str,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, BoxError> {
    crate::metrics::install();
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, role, "/metrics listening");
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener,
        crate::shutdown::signal(),
    ))))
}

/// `courier run`: every role in one process; the API and the worker share
/// the pool and stop together on Ctrl-C / SIGTERM.
pub async fn run_all(settings: &Settings) -> Result<(), BoxError> {
    let (db, report) = Database::open(settings).await?;
    print_open_report(&db, &report);
    let (handlers, browser) = worker_handlers(settings, &db.pool).await?;
    let runtime = crate::queue::runtime::Runtime::new(db.pool.clone(), settings, handlers);
    let scheduler = async {
        if settings.scheduler.enabled {
            crate::scheduler::Scheduler::new(db.pool.clone(), settings)
                .run_until(crate::shutdown::signal())
                .await
        } else {
            Ok(())
        }
    };
    let (api, worker, scheduler) = tokio::join!(
        serve_api(settings, &db, crate::shutdown::signal()),
        runtime.run_until(crate::shutdown::signal()),
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

/// Serves the API on `api.listen` until `shutdown` resolves. The
/// database-derived gauges are the scheduler leader's to publish (one
/// process, not every API replica).
pub async fn serve_api(
    settings: &Settings,
    db: &Database,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    // Only the bootstrap token's hash is kept (`with_settings` drops the
    // clear text from the state's copy of the settings).
    let bootstrap = settings.api.token.as_ref().map(|t| t.expose());
    if bootstrap.is_none() {
        tracing::info!("api.token is not set: only named API tokens (courier tokens) are accepted");
    }
    let state = crate::api::AppState::named_tokens_only(db.pool.clone())
        .with_bootstrap(bootstrap)
        .with_settings(settings.clone());
    crate::api::serve(listener, state, shutdown).await?;
    Ok(())
}

/// The handler registry `queue.handler` names, plus the browser pool when
/// it is `browser` (the caller shuts it down after the runtime stops, so
/// every profile is flushed).
pub async fn worker_handlers(
    settings: &Settings,
    pool: &PgPool,
) -> Result<(Handlers, Option<Arc<crate::browser::BrowserPool>>), BoxError> {
    match settings.queue.handler.as_str() {
        "browser" => {
            let (handlers, browser) = crate::worker::registry(settings, pool).await?;
            Ok((handlers, Some(browser)))
        }
        "noop" => Ok((
            crate::worker::with_webhooks(
                Handlers::new().register_all(Arc::new(crate::queue::handler::NoopHandler)),
                settings,
                pool,
            ),
            None,
        )),
        other => Err(format!(
            "queue.handler `{other}` is not in this build (browser, noop; \
             noop-record needs a build with the lab)"
        )
        .into()),
    }
}

/// Prints how the database was opened: the embedded cluster (if any) and the
/// migrations applied.
pub fn print_open_report(db: &Database, report: &OpenReport) {
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
    match &report.adoption {
        crate::db::Adoption::NotNeeded => {}
        crate::db::Adoption::AlreadyAdopted { at } => println!(
            "        the previous system's tables were adopted at {at}; nothing to adopt now"
        ),
        crate::db::Adoption::Adopted(s) => {
            println!(
                "        adopted the previous system's tables: {} ({} column(s) added, {} value(s) mapped \
                 and logged in courier_adoption_changes, {} CHECK constraint(s) replaced; \
                 see docs/migration.md)",
                s.tables.join(", "),
                s.added_columns.len(),
                s.changed_values,
                s.dropped_checks.len()
            );
            println!("        created beside them: {}", s.created.join(", "));
        }
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
