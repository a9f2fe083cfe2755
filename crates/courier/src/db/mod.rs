//! Database access: connecting (to a configured server or the embedded
//! cluster), the embedded migrations, and the shared pool.
//!
//! Every process of Courier, whatever its role, goes through [`Database::open`]:
//! it connects, applies pending migrations (each in its own transaction, under
//! sqlx's advisory lock so concurrent starts are safe), and hands out the pool.

pub mod adopt;
pub mod embedded;

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::Settings;
pub use adopt::{AdoptError, Adoption, AdoptionSummary};
pub use embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

/// The schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Errors opening the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The embedded cluster could not start.
    #[error("embedded PostgreSQL")]
    Embedded(#[from] EmbeddedError),
    /// The server could not be reached in time.
    #[error("cannot connect to the database ({target})")]
    Connect {
        /// Where we tried to connect, without credentials.
        target: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed; it was rolled back whole.
    #[error("migration failed (rolled back, nothing half-applied)")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The previous system's schema could not be taken over; nothing changed.
    #[error(transparent)]
    Adopt(#[from] AdoptError),
    /// Any other query failure during setup.
    #[error("database setup")]
    Setup(#[from] sqlx::Error),
    /// Waiting on a blocking task failed.
    #[error("embedded PostgreSQL task")]
    Join(#[from] tokio::task::JoinError),
    /// Taking the data-directory lock failed.
    #[error("locking {path}")]
    Lock {
        /// The lock file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// An open database: the pool and, in embedded mode, the cluster behind it.
#[derive(Debug)]
pub struct Database {
    /// The connection pool every component shares.
    pub pool: PgPool,
    /// The embedded cluster, when no URL was configured.
    pub embedded: Option<EmbeddedPostgres>,
    /// The URL in use (contains the password when the configured URL does; never log it).
    url: String,
    stop_on_exit: bool,
}

/// A report of what [`Database::open`] did, for `courier migrate` and the demo.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Migrations applied by this call (version, description).
    pub applied: Vec<(i64, String)>,
    /// Total migrations known to the binary.
    pub known: usize,
    /// Whether the previous system's schema was taken over (before the
    /// migrations; see [`adopt`]).
    pub adoption: Adoption,
}

impl Database {
    /// Connects per `settings` (starting the embedded cluster when no URL is
    /// set) and applies pending migrations.
    pub async fn open(settings: &Settings) -> Result<(Self, OpenReport), DbError> {
        Self::open_with(settings, true).await
    }

    /// Connects like [`open`](Self::open); applies pending migrations only
    /// when `apply_migrations` (tasks that must change nothing else, such as
    /// a dry run, connect without).
    pub async fn open_with(
        settings: &Settings,
        apply_migrations: bool,
    ) -> Result<(Self, OpenReport), DbError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let (url, embedded) = match &settings.database.url {
            Some(url) => (url.expose().to_string(), None),
            None => {
                let opts = EmbeddedOptions {
                    data_dir: settings.embedded_data_dir(&cwd),
                    bin_dir: settings.embedded.bin_dir.clone(),
                    run_as: settings.embedded.run_as.clone(),
                    database: settings.embedded.database.clone(),
                    unsafe_no_fsync: false,
                };
                let pg = start_embedded(opts).await?;
                ensure_database(&pg, &settings.embedded.database).await?;
                (pg.url(), Some(pg))
            }
        };
        let pool = connect(
            &url,
            settings.database.max_connections,
            settings.database.connect_timeout,
        )
        .await?;
        let report = if apply_migrations {
            migrate(&pool).await?
        } else {
            OpenReport {
                applied: Vec::new(),
                known: MIGRATOR.iter().count(),
                adoption: Adoption::NotNeeded,
            }
        };
        Ok((
            Self {
                pool,
                embedded,
                url,
                stop_on_exit: settings.embedded.stop_on_exit,
            },
            report,
        ))
    }

    /// The connection URL (secret when it carries a password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) -> Result<(), DbError> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            if self.stop_on_exit {
                tokio::task::spawn_blocking(move || pg.stop_if_started_here()).await??;
            }
        }
        Ok(())
    }
}

/// Starts (or joins) an embedded cluster, serialised across processes by a
/// lock file beside the data directory.
pub async fn start_embedded(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, DbError> {
    let pg = tokio::task::spawn_blocking(move || -> Result<EmbeddedPostgres, DbError> {
        let _guard = lock_file(&opts.data_dir.with_extension("lock"))?;
        Ok(EmbeddedPostgres::start(opts)?)
    })
    .await??;
    embedded::wait_ready(&pg.url_for("postgres"), Duration::from_secs(30))
        .await
        .map_err(|source| DbError::Connect {
            target: format!("embedded cluster at {}", pg.data_dir().display()),
            source,
        })?;
    Ok(pg)
}

/// Holds an exclusive advisory lock on `path` until dropped.
pub fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DbError> {
    let lock_err = |source: std::io::Error| DbError::Lock {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(lock_err)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| lock_err(e.into()))
}

/// Creates `database` in the embedded cluster when missing.
pub async fn ensure_database(pg: &EmbeddedPostgres, database: &str) -> Result<(), DbError> {
    let mut conn = sqlx::PgConnection::connect(&pg.url_for("postgres"))
        .await
        .map_err(|source| DbError::Connect {
            target: "embedded cluster".into(),
            source,
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers cannot be bound; the name was validated as a plain identifier.
        match sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut conn)
        .await
        {
            Ok(_) => {}
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Opens a pool, failing with a clear error (without credentials) when the
/// server cannot be reached within `timeout`.
pub async fn connect(url: &str, max: u32, timeout: Duration) -> Result<PgPool, DbError> {
    let target = redact_url(url);
    let opts: PgConnectOptions = url.parse().map_err(|source| DbError::Connect {
        target: target.clone(),
        source,
    })?;
    let opts = opts.log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(timeout)
        // Courier's statements are short and many; Postgres's JIT compiles
        // any whose cost estimate passes `jit_above_cost`, which for the
        // queue's subquery-heavy claims costs more than the query (it was 13 %
        // of the server's CPU and half the throughput in the queue benchmark,
        // docs/benchmarks.md). A SET rather than a startup option, so poolers
        // that refuse startup options still work.
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET jit = off").execute(conn).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

/// Takes over the previous system's tables when the database has them
/// ([`adopt::adopt`]), then applies pending migrations; returns what it did.
pub async fn migrate(pool: &PgPool) -> Result<OpenReport, DbError> {
    let adoption = adopt::adopt(pool).await?;
    let before: Vec<i64> = applied_versions(pool).await.unwrap_or_default();
    MIGRATOR.run(pool).await?;
    let applied = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    Ok(OpenReport {
        applied,
        known: MIGRATOR.iter().count(),
        adoption,
    })
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}

/// A URL fit for logs: the password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    match rest.split_once('@') {
        Some((creds, host)) => {
            let user = creds.split(':').next().unwrap_or("");
            if creds.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_password_only() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("nonsense"), "<unparseable url>");
    }
}
