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
use crate::account::admin;

/// An account as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub(crate) struct Account {
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
pub(crate) struct CreateAccount {
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
pub(crate) fn parse_timezone(s: &str) -> Result<String, ApiError> {
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
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let (name, phone, tz) = body.parse()?;
    let account: Account =
        admin::create(&state.pool, &name, phone.as_ref(), &tz, ACCOUNT_COLUMNS).await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// List accounts.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts",
    responses((status = 200, body = [Account]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<Account>>, ApiError> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM mkt_wap_accounts ORDER BY created_at, id"
    )))
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// Who drives the account now.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub(crate) struct LeaseView {
    /// The worker holding the lease.
    pub owner: String,
    /// The fencing token.
    pub epoch: i64,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// One budget window of an account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WindowBudget {
    /// minute, hour or day.
    pub window: &'static str,
    /// The effective cap (after warm-up and health scaling).
    pub limit: u32,
    /// Sends in the last window length.
    pub used: u32,
    /// limit - used.
    pub remaining: u32,
}

/// An account with its live state: lease holder and budget.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountDetail {
    /// The account.
    #[serde(flatten)]
    pub account: Account,
    /// The current lease, if a worker holds it.
    pub lease: Option<LeaseView>,
    /// Budget per window.
    pub budget: Vec<WindowBudget>,
    /// The earliest instant the next send is allowed.
    pub next_send_at: DateTime<Utc>,
    /// Why it is not now, when it is not.
    pub next_send_reason: Option<String>,
}

/// Get one account with its lease holder and live budget.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, body = AccountDetail), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountDetail>, ApiError> {
    use crate::account::budget::{self, Window};
    let account = fetch(&state, id).await?;
    let lease: Option<LeaseView> = sqlx::query_as(
        "SELECT owner, epoch, expires_at FROM account_leases \
         WHERE account_id = $1 AND owner IS NOT NULL AND expires_at > now()",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let row = crate::queue::store::load_budget(&state.pool, id)
        .await
        .map_err(|e| match e {
            crate::queue::QueueError::Db(d) => ApiError::Database(d),
            other => ApiError::Conflict(crate::error::chain(&other)),
        })?
        .ok_or(ApiError::NotFound("account"))?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&state.pool)
        .await?;
    let s = &state.settings;
    let limits = s
        .budget
        .limits()
        .resolve(&row.rate_limit_config)
        .unwrap_or_else(|_| s.budget.limits())
        .effective(
            (now - row.created_at).num_days(),
            &s.budget.warmup,
            row.health_score,
            s.health.caution,
        );
    let budget = [Window::Minute, Window::Hour, Window::Day]
        .into_iter()
        .map(|w| {
            let since = now - w.guarded();
            let used = row
                .sends
                .iter()
                .filter(|t| **t > since && **t <= now)
                .count() as u32;
            let limit = limits.cap(w);
            WindowBudget {
                window: w.name(),
                limit,
                used,
                remaining: limit.saturating_sub(used),
            }
        })
        .collect();
    let tz = account.timezone.parse().unwrap_or(chrono_tz::UTC);
    let clock = budget::AccountClock {
        sends: &row.sends,
        jitter: std::time::Duration::ZERO,
        tz,
        paused_until: row.paused_until,
    };
    let (next_send_at, next_send_reason) = match budget::decide(&limits, &clock, now) {
        budget::Decision::Allowed => (now, None),
        budget::Decision::NotBefore(at, why) => (at, Some(why.to_string())),
    };
    let (next_send_at, next_send_reason) =
        if account.status == "paused" && account.paused_until.is_none() {
            (next_send_at, Some("account paused by hand".to_string()))
        } else {
            (next_send_at, next_send_reason)
        };
    Ok(Json(AccountDetail {
        account,
        lease,
        budget,
        next_send_at,
        next_send_reason,
    }))
}

/// Body of `POST /v1/accounts/{id}/pause`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseAccount {
    /// Why (shown by the API), 1–500 characters.
    pub reason: String,
    /// Resume by itself at this instant; absent: until resumed by hand.
    pub until: Option<DateTime<Utc>>,
}

/// Pause an account: no job of it is claimed until it resumes.
#[utoipa::path(post, path = "/v1/accounts/{id}/pause", tag = "accounts",
    params(("id" = Uuid, Path)), request_body = PauseAccount,
    responses((status = 200, body = Account), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<PauseAccount>,
) -> Result<Json<Account>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason", "must be 1 to 500 characters"));
    }
    let now = Utc::now();
    if body.until.is_some_and(|u| u <= now) {
        return Err(ApiError::invalid("until", "must be in the future"));
    }
    let account = fetch(&state, id).await?;
    if account.status == "banned" {
        return Err(ApiError::Conflict("the account is banned".into()));
    }
    if account.status == "retired" {
        return Err(ApiError::Conflict("the account is retired".into()));
    }
    crate::account::health::pause(&state.pool, id, reason, body.until)
        .await
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    fetch(&state, id).await.map(Json)
}

/// Resume a paused account.
#[utoipa::path(post, path = "/v1/accounts/{id}/resume", tag = "accounts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Account), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Account>, ApiError> {
    fetch(&state, id).await?;
    let resumed = crate::account::health::resume(&state.pool, id)
        .await
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    if !resumed {
        return Err(ApiError::Conflict("the account is not paused".into()));
    }
    fetch(&state, id).await.map(Json)
}

/// Body of `POST /v1/accounts/{id}/retire`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetireAccount {
    /// Why (kept as the account's `status_reason`), 1–500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// What a retirement did: the account as it is now, and its work.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetiredAccount {
    /// The account (status `retired`).
    #[serde(flatten)]
    pub account: Account,
    /// The status it had.
    pub previous_status: String,
    /// Its jobs that had not started, cancelled.
    pub jobs_cancelled: usize,
    /// Messages whose send had not started, back to `pending` without an
    /// account: the next reassignment pass gives them to another account.
    pub messages_released: usize,
    /// Messages whose send was attempted (outcome unknown), failed with the
    /// reason; retrying one sends it through another account.
    pub messages_failed: usize,
}

/// Retire an account for good (admin): it never sends again, its browser
/// session is closed and its stored session dropped, its waiting messages go
/// to other accounts, and it leaves the account metrics (no alert keeps
/// firing for it). A retired account cannot log in, be paused or resumed.
#[utoipa::path(post, path = "/v1/accounts/{id}/retire", tag = "accounts",
    operation_id = "retireAccount",
    params(("id" = Uuid, Path, description = "account id")), request_body = RetireAccount,
    responses(
        (status = 200, body = RetiredAccount, description = "retired"),
        (status = 400, body = ErrorBody, description = "malformed id or body (not JSON, a missing or unknown field)"),
        (status = 401, body = ErrorBody, description = "missing or wrong bearer token"),
        (status = 403, body = ErrorBody, description = "the token lacks the admin scope"),
        (status = 404, body = ErrorBody, description = "no such account"),
        (status = 409, body = ErrorBody, description = "the account is already retired"),
        (status = 422, body = ErrorBody, description = "the reason is empty or too long"),
        (status = 503, body = ErrorBody, description = "the database is unreachable")))]
pub(crate) async fn retire(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<RetireAccount>,
) -> Result<Json<RetiredAccount>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason", "must be 1 to 500 characters"));
    }
    let before = fetch(&state, id).await?;
    let done = crate::maintenance::retire::retire(&state.pool, id, reason)
        .await
        .map_err(|e| match e {
            crate::maintenance::MaintenanceError::Db(d) => ApiError::Database(d),
            other => ApiError::Conflict(crate::error::chain(&other)),
        })?;
    let Some(done) = done else {
        return Err(ApiError::Conflict(format!(
            "the account is already retired ({})",
            before.status_reason.as_deref().unwrap_or("no reason")
        )));
    };
    Ok(Json(RetiredAccount {
        account: fetch(&state, id).await?,
        previous_status: done.previous_status,
        jobs_cancelled: done.jobs_cancelled,
        messages_released: done.messages_released,
        messages_failed: done.messages_failed,
    }))
}

/// Body of `PATCH /v1/accounts/{id}/limits`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateLimits {
    /// Replaces `rate_limit_config`: per_minute, per_hour, per_day (or daily_limit),
    /// min_gap_seconds, jitter_seconds, quiet_hours {start, end} (HH:MM) or null.
    #[schema(value_type = Object)]
    pub rate_limit_config: serde_json::Value,
}

const LIMIT_KEYS: [&str; 7] = [
    "per_minute",
    "per_hour",
    "per_day",
    "daily_limit",
    "min_gap_seconds",
    "jitter_seconds",
    "quiet_hours",
];

/// Set an account's limits (validated).
#[utoipa::path(patch, path = "/v1/accounts/{id}/limits", tag = "accounts",
    params(("id" = Uuid, Path)), request_body = UpdateLimits,
    responses((status = 200, body = Account), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update_limits(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateLimits>,
) -> Result<Json<Account>, ApiError> {
    let obj = body
        .rate_limit_config
        .as_object()
        .ok_or_else(|| ApiError::invalid("rate_limit_config", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !LIMIT_KEYS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            format!("rate_limit_config.{k}"),
            format!("unknown key; expected one of {}", LIMIT_KEYS.join(", ")),
        ));
    }
    let resolved = state
        .settings
        .budget
        .limits()
        .resolve(&body.rate_limit_config)
        .map_err(
            |crate::account::budget::BudgetError::Config { key, problem }| {
                ApiError::invalid(format!("rate_limit_config.{key}"), problem)
            },
        )?;
    for (key, v) in [
        ("per_minute", resolved.per_minute),
        ("per_hour", resolved.per_hour),
        ("per_day", resolved.per_day),
    ] {
        if v > 100_000 {
            return Err(ApiError::invalid(
                format!("rate_limit_config.{key}"),
                "must be at most 100000",
            ));
        }
    }
    if resolved.per_minute > resolved.per_hour || resolved.per_hour > resolved.per_day {
        return Err(ApiError::invalid(
            "rate_limit_config",
            "limits must satisfy per_minute <= per_hour <= per_day",
        ));
    }
    let updated: Option<Account> = admin::set_limits(
        &state.pool,
        id,
        &body.rate_limit_config,
        resolved.per_day as i32,
        ACCOUNT_COLUMNS,
    )
    .await?;
    updated.map(Json).ok_or(ApiError::NotFound("account"))
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
