//! Rows that several tests start from, inserted directly (no API, no
//! validation beyond the schema's own).

use sqlx::PgPool;
use uuid::Uuid;

/// An account row named `name` with the schema's defaults (status
/// `inactive`, default limits); returns its id. Panics on a database error.
pub async fn insert_account(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO mkt_wap_accounts (account_name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("insert an account row")
}
