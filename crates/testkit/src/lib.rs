//! Test support: one private PostgreSQL cluster per test run, and a fresh,
//! migrated database per test cloned from a template (fast: a file copy, not a
//! migration run).
//!
//! When `DATABASE_URL` is set, databases are created on that server instead.
//! The private cluster lives in `/tmp/courier-test-pg-<key>` (short enough for
//! a unix socket path and reachable by the `postgres` user when tests run as
//! root), runs with fsync off, and is left running for the next test process;
//! `scripts/test` stops it at the end of a run. Used by integration tests,
//! benchmarks and the lab; the product crates never depend on it.
//!
//! On top of the databases: [`spawn_app`] (the HTTP API on port 0, optionally
//! with the simulator and an in-process browser worker, see [`TestApp`]) and
//! shared row fixtures ([`insert_account`]).

#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, PgPool};

use courier::db::{self, DbError, EmbeddedOptions, EmbeddedPostgres, MIGRATOR};

mod app;
mod fixtures;
mod recording;
pub use app::{spawn_app, TestApp, TestAppBuilder, TEST_TOKEN};
pub use fixtures::{insert_account, quick_worker_settings, sim_account};
pub use recording::RecordingHandler;

/// A database of one's own.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Pool on the database.
    pub pool: PgPool,
    /// Its URL, for child processes.
    pub url: String,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Closes the pool and drops the database (benchmarks, which make large
    /// ones; a test run's cluster is removed whole by `scripts/test`).
    pub async fn drop_database(self) -> Result<(), DbError> {
        self.pool.close().await;
        let mut admin = connect_admin(&replace_database(&self.url, "postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// One connection to the cluster's `postgres` database (`url`), for creating
/// and dropping databases.
async fn connect_admin(url: &str) -> Result<sqlx::PgConnection, DbError> {
    sqlx::PgConnection::connect(url)
        .await
        .map_err(|source| DbError::Connect {
            target: db::redact_url(url),
            source,
        })
}

/// The data directory of this run's private cluster. `COURIER_TEST_PG_DIR`
/// overrides it; by default it is keyed by the working directory so two
/// checkouts do not share a cluster.
pub fn test_cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_TEST_PG_DIR") {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    // FNV-1a: stable across runs (std's hasher is randomly seeded).
    let key = cwd
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
    PathBuf::from(format!("/tmp/courier-test-pg-{:08x}", key as u32))
}

/// Starts (or joins) this run's private cluster.
pub async fn test_cluster() -> Result<EmbeddedPostgres, DbError> {
    db::start_embedded(EmbeddedOptions {
        data_dir: test_cluster_dir(),
        bin_dir: None,
        run_as: "postgres".into(),
        database: "postgres".into(),
        unsafe_no_fsync: true,
    })
    .await
}

/// The server URL to create test databases on, with `{db}` as the database
/// name placeholder.
async fn server_url_template() -> Result<String, DbError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(replace_database(&url, "{db}"));
    }
    let pg = test_cluster().await?;
    Ok(pg.url_for("{db}"))
}

fn replace_database(url: &str, db: &str) -> String {
    // postgres://user:pw@host:port/DB?params
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Creates a fresh, fully migrated database and returns a pool on it.
pub async fn fresh_database() -> Result<TestDb, DbError> {
    let template_url = server_url_template().await?;
    // The template is named after the migrations and the test kit's own
    // schema, so a change to either builds a new one.
    let checksum = MIGRATOR.iter().fold(0u64, |h, m| {
        m.checksum.iter().fold(h ^ m.version as u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        })
    });
    let checksum = recording::SCHEMA.bytes().fold(checksum, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let template = format!("courier_tpl_{:012x}", checksum & 0xffff_ffff_ffff);
    let name = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    let admin_url = template_url.replace("{db}", "postgres");

    // Template creation and cloning are serialised across test processes: a
    // template cannot be cloned while anyone is connected to it.
    let lock_path = test_cluster_dir().with_extension("tpl.lock");
    let lock = tokio::task::spawn_blocking(move || db::lock_file(&lock_path)).await??;
    let mut admin = connect_admin(&admin_url).await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND NOT datistemplate)",
    )
    .bind(&template)
    .fetch_one(&mut admin)
    .await?;
    let is_template: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(&template)
    .fetch_one(&mut admin)
    .await?;
    if !is_template {
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {template}")))
                .execute(&mut admin)
                .await?;
        }
        // Migrate (idempotent: a half-built template from a crashed run is finished).
        let tpl_pool = db::connect(
            &template_url.replace("{db}", &template),
            2,
            Duration::from_secs(30),
        )
        .await?;
        db::migrate(&tpl_pool).await?;
        sqlx::query(recording::SCHEMA).execute(&tpl_pool).await?;
        tpl_pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {template} WITH IS_TEMPLATE true"
        )))
        .execute(&mut admin)
        .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {template}"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    drop(lock);

    let url = template_url.replace("{db}", &name);
    let pool = db::connect(&url, 10, Duration::from_secs(30)).await?;
    Ok(TestDb { pool, url, name })
}

/// Creates an empty database (no migrations applied): for tests that build
/// another schema first, such as the previous system's (tests/adopt.rs).
pub async fn empty_database() -> Result<TestDb, DbError> {
    let template_url = server_url_template().await?;
    let name = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = connect_admin(&template_url.replace("{db}", "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let url = template_url.replace("{db}", &name);
    let pool = db::connect(&url, 10, Duration::from_secs(30)).await?;
    Ok(TestDb { pool, url, name })
}

/// A queue worker with the browser handlers, running inside this process, as
/// `courier worker` would run it (tests of the browser and delivery paths).
pub struct InProcessWorker {
    /// Its browser sessions.
    pub browser: std::sync::Arc<courier::browser::BrowserPool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), courier::queue::runtime::RuntimeError>>,
}

impl InProcessWorker {
    /// Starts the worker runtime with the browser handlers from `settings`.
    pub async fn start(
        pool: &PgPool,
        settings: &courier::config::Settings,
    ) -> Result<Self, courier::browser::BrowserError> {
        let (handlers, browser) = courier::worker::registry(settings, pool).await?;
        let runtime = courier::queue::runtime::Runtime::new(pool.clone(), settings, handlers);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run_until(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            browser,
            stop: Some(tx),
            task,
        })
    }

    /// Graceful stop: in-flight jobs finish, leases are released, sessions
    /// closed (profiles flushed). Returns the runtime's own result.
    pub async fn stop(mut self) -> Result<(), courier::queue::runtime::RuntimeError> {
        let result = self.halt().await;
        self.browser.shutdown().await;
        result
    }

    /// A crash of the browser side: every chromedriver and Chromium process is
    /// SIGKILLed (nothing closed or flushed), then the runtime goes away.
    pub async fn crash(mut self) {
        self.browser.crash();
        let _ = self.halt().await;
    }

    async fn halt(&mut self) -> Result<(), courier::queue::runtime::RuntimeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .expect("the worker runtime task panicked")
    }
}

/// Plays the phone scanning the QR that Courier stored for account `id`
/// (`mkt_wap_accounts.qr_token`, status `qr_pending`), as an admin reading the
/// login page would. A token the page rotated between the read and the scan
/// (a slow machine) is refused by the simulator as stale; the scan is then
/// retried with the newer token Courier stores. Panics after `timeout`.
pub async fn scan_stored_qr(
    pool: &PgPool,
    ctl: &courier_sim::SimControl,
    id: uuid::Uuid,
    phone: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, qr): (String, Option<String>) =
            sqlx::query_as("SELECT status, qr_token FROM mkt_wap_accounts WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .expect("read the account's QR");
        if let (Some(token), "qr_pending") = (qr, status.as_str()) {
            match ctl.scan(&id.to_string(), &token, phone).await {
                Ok(_) => return,
                Err(courier_sim::control::ControlError::Refused { code, .. })
                    if code == "stale_token" => {}
                Err(e) => panic!("scanning the QR of {id}: {e}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scannable QR for {id} within {timeout:?} (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            replace_database("postgres://u:p@h:5432/main?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h", "x"), "postgres://h/x");
    }
}
