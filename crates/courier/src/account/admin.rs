//! An operator's writes to the account row: registering a number and setting
//! its limits (the `/v1/accounts` routes validate the input and call these).
//!
//! Each returns the written row as the caller's own view type `R`, read from
//! the columns `returning` names in the same statement: the API answers with
//! the row as this write left it, not as a second read finds it.

use sqlx::postgres::PgRow;
use sqlx::PgPool;
use uuid::Uuid;

use crate::jobs::PhoneNumber;

/// Registers an account (status `inactive` until it logs in). A phone number
/// already registered is refused by the table's unique index.
pub(crate) async fn create<R>(
    pool: &PgPool,
    name: &str,
    phone: Option<&PhoneNumber>,
    timezone: &str,
    returning: &str,
) -> Result<R, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO mkt_wap_accounts (account_name, phone_number, timezone) \
         VALUES ($1, $2, $3) RETURNING {returning}"
    )))
    .bind(name)
    .bind(phone.map(|p| p.digits().to_string()))
    .bind(timezone)
    .fetch_one(pool)
    .await
}

/// Sets the account's per-account limit overrides (`rate_limit_config`, as
/// given) and the daily cap the seed's columns show (`daily_usage_limit`).
/// `None`: no such account.
pub(crate) async fn set_limits<R>(
    pool: &PgPool,
    account: Uuid,
    rate_limit_config: &serde_json::Value,
    daily_usage_limit: i32,
    returning: &str,
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE mkt_wap_accounts SET rate_limit_config = $2, daily_usage_limit = $3 \
         WHERE id = $1 RETURNING {returning}"
    )))
    .bind(account)
    .bind(rate_limit_config)
    .bind(daily_usage_limit)
    .fetch_optional(pool)
    .await
}

/// Retires the account for good, in the caller's transaction: status
/// `retired` with the operator's `reason`, any pause, login deadline and QR
/// cleared, and its stored session snapshot dropped (no worker may restore
/// the session). Returns the status it had, or `None` when there is no such
/// account or it is already retired. The caller moves its work off it in the
/// same transaction (`crate::maintenance::retire`).
pub(crate) async fn retire_in(
    conn: &mut sqlx::PgConnection,
    account: Uuid,
    reason: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH old AS (SELECT id, status FROM mkt_wap_accounts WHERE id = $1 FOR UPDATE) \
         UPDATE mkt_wap_accounts a SET status = 'retired', status_reason = $2, \
             status_changed_at = now(), status_deadline = NULL, \
             pause_reason = NULL, paused_until = NULL, paused_from = NULL, \
             qr_token = NULL, qr_expires_at = NULL, \
             session_snapshot = NULL, session_snapshot_at = NULL \
         FROM old WHERE a.id = old.id AND old.status <> 'retired' \
         RETURNING old.status",
    )
    .bind(account)
    .bind(reason)
    .fetch_optional(conn)
    .await
}
