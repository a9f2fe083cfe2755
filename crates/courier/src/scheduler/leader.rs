//! One scheduler leader per cluster: a session-level Postgres advisory lock
//! held on a dedicated connection.
//!
//! The lock lives exactly as long as the connection's session: a leader that
//! exits, crashes or is killed (`kill -9`) loses its connection and with it the
//! lock, and a follower's next [`Leadership::try_acquire`] (every
//! `scheduler.leader_retry`) takes over. A leader checks its connection before
//! every tick and steps down when it is gone.
//!
//! Leadership is an efficiency measure, not the safety net: every expansion
//! locks its schedule row and moves it on in the same transaction, so even two
//! leaders at once (a network partition the server has not noticed yet) could
//! not expand an occurrence twice.

use sqlx::{Connection, PgConnection, PgPool};

/// The advisory lock key: "courier scheduler" in a stable 63-bit number.
pub const LOCK_KEY: i64 = 0x636f_7572_5f73_6368;

/// Whether some session holds the leader lock now (a leader is elected).
pub async fn is_held(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND ((classid::int8 << 32) | objid::int8) = $1)",
    )
    .bind(LOCK_KEY)
    .fetch_one(pool)
    .await
}

/// A held leadership: the connection whose session holds the lock.
#[derive(Debug)]
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// Takes the lock if nobody holds it.
    pub async fn try_acquire(pool: &PgPool) -> Result<Option<Self>, sqlx::Error> {
        let opts = pool.connect_options();
        let mut conn = PgConnection::connect_with(&opts).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Self { conn }))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    /// Whether the lock is still held (its session is alive and holds it).
    pub async fn check(&mut self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
               AND pid = pg_backend_pid() AND granted \
               AND ((classid::int8 << 32) | objid::int8) = $1)",
        )
        .bind(LOCK_KEY)
        .fetch_one(&mut self.conn)
        .await
    }

    /// Gives the lock up (a clean hand-over on shutdown).
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
