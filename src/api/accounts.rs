//! `/v1/accounts`: create, list and inspect the WhatsApp accounts Courier drives.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use courier_jobs::PhoneNumber;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::AppState;

/// An account as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Account {
    /// Courier's id.
    pub id: Uuid,
    /// E.164 digits without `+`, known once logged in.
    pub phone_number: Option<String>,
    /// A name for people.
    pub account_name: String,
    /// Lifecycle status (`inactive`, `qr_pending`, `active`, `paused`, `banned`, …).
    pub status: String,
    /// Why the account is in its status.
    pub status_reason: Option<String>,
    /// When it entered the status.
    pub status_changed_at: DateTime<Utc>,
    /// For transient statuses: when it moves on by itself.
    pub status_deadline: Option<DateTime<Utc>>,
    /// Why it is paused.
    pub pause_reason: Option<String>,
    /// When a timed pause ends (none: manual pause).
    pub paused_until: Option<DateTime<Utc>>,
    /// 0–100.
    pub health_score: i32,
    /// Sends in the last 24 h (seed compatibility).
    pub daily_usage_count: i32,
    /// The daily cap (seed compatibility).
    pub daily_usage_limit: i32,
    /// Per-account limit overrides.
    #[schema(value_type = Object)]
    pub rate_limit_config: serde_json::Value,
    /// IANA time zone for quiet hours.
    pub timezone: String,
    /// Last time the session was seen ready.
    pub last_ready_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

pub(crate) const ACCOUNT_COLUMNS: &str = "id, phone_number, account_name, status, status_reason, \
    status_changed_at, status_deadline, pause_reason, paused_until, health_score, \
    daily_usage_count, daily_usage_limit, rate_limit_config, timezone, last_ready_at, \
    created_at, updated_at";

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// A name for people, 1–200 characters.
    pub account_name: String,
    /// Optional: the number, when known before login (E.164).
    pub phone_number: Option<String>,
    /// IANA time zone (default `UTC`).
    pub timezone: Option<String>,
}

impl CreateAccount {
    fn parse(self) -> Result<(String, Option<PhoneNumber>, String), ApiError> {
        let name = self.account_name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::invalid(
                "account_name",
                "must be 1 to 200 characters",
            ));
        }
        let phone = self
            .phone_number
            .as_deref()
            .map(PhoneNumber::parse)
            .transpose()?;
        let tz = parse_timezone(self.timezone.as_deref().unwrap_or("UTC"))?;
        Ok((name, phone, tz))
    }
}

/// Parses an IANA zone name.
pub fn parse_timezone(s: &str) -> Result<String, ApiError> {
    s.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| ApiError::invalid("timezone", format!("`{s}` is not an IANA time zone")))
}

/// Create an account (status `inactive` until logged in).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = CreateAccount,
    responses(
        (status = 201, body = Account),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "phone number already used"),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let (name, phone, tz) = body.parse()?;
    let account: Account = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO mkt_wap_accounts (account_name, phone_number, timezone) \
         VALUES ($1, $2, $3) RETURNING {ACCOUNT_COLUMNS}"
    )))
    .bind(name)
    .bind(phone.map(|p| p.digits().to_string()))
    .bind(tz)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// List accounts.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts",
    responses((status = 200, body = [Account]), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Account>>, ApiError> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM mkt_wap_accounts ORDER BY created_at, id"
    )))
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// Get one account.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, body = Account), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Account>, ApiError> {
    fetch(&state, id).await.map(Json)
}

pub(crate) async fn fetch(state: &AppState, id: Uuid) -> Result<Account, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM mkt_wap_accounts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("account"))
}
