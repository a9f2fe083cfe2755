//! The worker's side of a job: what runs each kind on the account's browser
//! session.
//!
//! - [`handlers`]: one file per job kind (send and retry, discover, scrape,
//!   login, health check), each doing its one job. This is the one place that
//!   joins the browser adapter, the domain modules and the queue's handler
//!   trait.
//! - [`drive`]: the page drive through the login lifecycle that the login
//!   and health-check handlers share.
//! - [`hibernate`]: many accounts per worker: idle sessions close, due work
//!   reopens them before its claim, leases are capped at `browser.max_open`.
//! - [`acks`]: ack tracking, its own step: reading ticks, forward-only
//!   updates, the health signal of deliveries and reads, and the undelivered
//!   deadline.
//!
//! [`registry`] builds the browser pool and the handlers for
//! `queue.handler = "browser"`, with the message domain's claim policy
//! ([`crate::message::CLAIM_POLICY`]).

pub(crate) mod acks;
pub(crate) mod drive;
pub(crate) mod exists;
pub(crate) mod handlers;
pub(crate) mod hibernate;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::browser::{BrowserError, BrowserPool, Selectors, WaWeb};
use crate::config::Settings;
use crate::jobs::JobKind;
use crate::queue::handler::Handlers;
use crate::queue::NewJob;

/// Builds the browser pool and the handler registry for `queue.handler = "browser"`.
pub async fn registry(
    settings: &Settings,
    db: &sqlx::PgPool,
) -> Result<(Handlers, Arc<BrowserPool>), BrowserError> {
    let selectors = Selectors::load_default().unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error::chain(&e), "cannot load config/selectors.toml; using the built-in copy");
        Selectors::builtin()
    });
    // A names file that does not parse is an operator's error to see at
    // once; the built-in copy keeps the worker running meanwhile.
    let names = WaWeb::load_default().unwrap_or_else(|e| {
        tracing::error!(error = %crate::error::chain(&e), "cannot load config/wa-web.toml; using the built-in copy");
        WaWeb::builtin()
    });
    let pool =
        BrowserPool::start_with_names(db.clone(), &settings.browser, selectors, names).await?;
    let ctx = Arc::new(handlers::Context::new(pool.clone(), settings));
    tokio::spawn(acks::watch(ctx.clone(), pool.stopping()));
    pool.set_idle_policy(Arc::new(hibernate::Hibernation {
        db: db.clone(),
        work_within: settings.queue.lease_hold,
        acks_within: settings.delivery.ack_followup,
    }));
    let readiness = Arc::new(hibernate::BrowserReadiness {
        ctx: ctx.clone(),
        lanes: Default::default(),
        starting: Arc::new(tokio::sync::Semaphore::new(
            ctx.pool.settings().starts_at_once(),
        )),
    });
    let handlers = Handlers::new()
        .with_policy(crate::message::CLAIM_POLICY)
        .with_readiness(readiness)
        .register(JobKind::Send, Arc::new(handlers::send::Send(ctx.clone())))
        .register(JobKind::Retry, Arc::new(handlers::send::Send(ctx.clone())))
        .register(
            JobKind::Discover,
            Arc::new(handlers::discover::Discover(ctx.clone())),
        )
        .register(
            JobKind::Scrape,
            Arc::new(handlers::scrape::Scrape(ctx.clone())),
        )
        .register(
            JobKind::Login,
            Arc::new(handlers::login::Login(ctx.clone())),
        )
        .register(
            JobKind::Logout,
            Arc::new(handlers::logout::Logout(ctx.clone())),
        )
        .register(
            JobKind::HealthCheck,
            Arc::new(handlers::health_check::HealthCheck(ctx)),
        );
    Ok((with_webhooks(handlers, settings, db), pool))
}

/// Adds the `webhook` handler (no browser: every worker registry carries it).
pub fn with_webhooks(handlers: Handlers, settings: &Settings, db: &sqlx::PgPool) -> Handlers {
    // `webhooks.allow_cidrs` is checked by `Settings::validate`; a registry
    // built from unchecked settings falls back to public addresses only.
    let deliverer = crate::webhook::deliver::Deliverer::new(&settings.webhooks).unwrap_or_else(|e| {
        tracing::error!(error = %e, "webhooks.allow_cidrs; delivering to public addresses only");
        crate::webhook::deliver::Deliverer::new(&crate::config::WebhookSettings {
            allow_cidrs: Vec::new(),
            ..settings.webhooks.clone()
        })
        .expect("no CIDR to parse")
    });
    handlers.register(
        JobKind::Webhook,
        Arc::new(handlers::webhook::Webhook::new(db.clone(), deliverer)),
    )
}

/// Enqueues the account's next health check `after` from now (idempotent per
/// interval slot, so a chain never forks). `after` zero means "check now"
/// and always enqueues.
pub async fn schedule_health_check(
    db: &sqlx::PgPool,
    account: Uuid,
    after: Duration,
) -> Result<(), crate::queue::QueueError> {
    let at = chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
    let slot = at.timestamp() / after.as_secs().max(1) as i64;
    let job = NewJob::new(
        account,
        &crate::jobs::maintenance::HealthCheckJob {
            account_id: account,
        },
    )?
    .run_at(at)
    .priority(50)
    .idempotency_key((!after.is_zero()).then(|| format!("health_check:{account}:{slot}")));
    crate::queue::enqueue(db, &job).await?;
    Ok(())
}
