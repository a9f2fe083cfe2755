//! `/v1/stats`: the seed dashboard's overview numbers.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::Json;
use super::AppState;

/// Overview counts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Stats {
    /// Accounts by status.
    pub accounts: BTreeMap<String, i64>,
    /// Total accounts.
    pub accounts_total: i64,
    /// Known groups.
    pub groups: i64,
    /// Known contacts.
    pub contacts: i64,
    /// Messages by status.
    pub messages: BTreeMap<String, i64>,
    /// Total messages.
    pub messages_total: i64,
}

/// Counts of accounts, groups, contacts and messages by status.
#[utoipa::path(get, path = "/v1/stats", tag = "stats", operation_id = "getStats",
    responses((status = 200, body = Stats, description = "The counts")))]
pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let accounts: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM mkt_wap_accounts GROUP BY status",
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .collect();
    let messages: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM mkt_wap_messages GROUP BY status",
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .collect();
    let (groups, contacts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM mkt_wap_groups), (SELECT count(*) FROM mkt_wap_contacts)",
    )
    .fetch_one(&state.pool)
    .await?;
    Ok(Json(Stats {
        accounts_total: accounts.values().sum(),
        messages_total: messages.values().sum(),
        accounts,
        groups,
        contacts,
        messages,
    }))
}
