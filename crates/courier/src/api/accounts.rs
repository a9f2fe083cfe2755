//! `/v1/accounts`: create, list and inspect the WhatsApp accounts Courier drives.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use courier_jobs::PhoneNumber;

use super::contract::{self, field};
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

/// `daily_usage_count` is read from the budget's send log (`account_sends`,
/// the last 24 h) rather than the column, which nothing maintains per send:
/// the admin UI's usage bar is as current as the budget itself.
pub(crate) const ACCOUNT_COLUMNS: &str = "id, phone_number, account_name, status, status_reason, \
    status_changed_at, status_deadline, pause_reason, paused_until, health_score, \
    (SELECT count(*)::int4 FROM account_sends s WHERE s.account_id = mkt_wap_accounts.id \
       AND s.sent_at > now() - interval '24 hours') AS daily_usage_count, daily_usage_limit, rate_limit_config, timezone, last_ready_at, \
    created_at, updated_at";

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAccount {
    /// A name for people, 1–200 characters, not blank (stored trimmed).
    #[schema(schema_with = field::text::<200>)]
    pub account_name: String,
    /// Optional: the number, when known before login (E.164).
    #[schema(schema_with = field::opt_phone)]
    pub phone_number: Option<String>,
    /// IANA time zone (default `UTC`).
    pub timezone: Option<String>,
}

impl CreateAccount {
    fn parse(self) -> Result<(String, Option<PhoneNumber>, String), ApiError> {
        contract::check_len("account_name", contract::TEXT, 1, 200, &self.account_name)?;
        let name = self.account_name.trim().to_string();
        if let Some(p) = &self.phone_number {
            contract::check("phone_number", contract::PHONE, p)?;
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
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", operation_id = "createAccount",
    request_body = CreateAccount,
    responses(
        (status = 201, body = Account, description = "Created"),
        (status = 409, body = ErrorBody, description = "The phone number is already used"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
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
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", operation_id = "listAccounts",
    responses((status = 200, body = [Account], description = "Every account")))]
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
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", operation_id = "getAccount",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, body = AccountDetail, description = "The account"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "Its budget cannot be computed")))]
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
    /// Why (shown by the API), 1–500 characters, not blank.
    #[schema(schema_with = field::text::<500>)]
    pub reason: String,
    /// Resume by itself at this instant; absent: until resumed by hand.
    pub until: Option<DateTime<Utc>>,
}

/// Pause an account: no job of it is claimed until it resumes.
#[utoipa::path(post, path = "/v1/accounts/{id}/pause", tag = "accounts", operation_id = "pauseAccount",
    params(("id" = Uuid, Path, description = "account id")), request_body = PauseAccount,
    responses((status = 200, body = Account, description = "Paused"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The account is banned, or `until` is not in the future"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<PauseAccount>,
) -> Result<Json<Account>, ApiError> {
    contract::check_len("reason", contract::TEXT, 1, 500, &body.reason)?;
    let reason = body.reason.trim();
    let now = Utc::now();
    // The document cannot know the time: a past `until` is a conflict with
    // the clock, not a malformed field.
    if body.until.is_some_and(|u| u <= now) {
        return Err(ApiError::conflict_on("until", "must be in the future"));
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
#[utoipa::path(post, path = "/v1/accounts/{id}/resume", tag = "accounts", operation_id = "resumeAccount",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, body = Account, description = "Resumed"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The account is not paused")))]
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
    /// Replaces `rate_limit_config`; a key left out takes the configured default.
    pub rate_limit_config: RateLimitConfig,
}

/// An account's limit overrides (`rate_limit_config`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitConfig {
    /// Sends per 60 s.
    #[schema(minimum = 0, maximum = 100_000)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub per_minute: Option<u32>,
    /// Sends per hour.
    #[schema(minimum = 0, maximum = 100_000)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub per_hour: Option<u32>,
    /// Sends per day.
    #[schema(minimum = 0, maximum = 100_000)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub per_day: Option<u32>,
    /// The seed's name for `per_day` (`per_day` wins when both are given).
    #[schema(minimum = 0, maximum = 100_000)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub daily_limit: Option<u32>,
    /// Minimum gap between two sends, in seconds.
    #[schema(minimum = 0, maximum = 86_400)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub min_gap_seconds: Option<u32>,
    /// Random extra gap, up to this many seconds.
    #[schema(minimum = 0, maximum = 86_400)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "contract::opt_int"
    )]
    pub jitter_seconds: Option<u32>,
    /// Quiet hours in the account's time zone; `null` turns the default off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub quiet_hours: Option<Option<QuietHoursConfig>>,
}

/// A present field, `null` included: `Some(None)` for `null`, `None` when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A daily window with no sends.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuietHoursConfig {
    /// From (HH:MM).
    #[schema(schema_with = field::hh_mm)]
    pub start: String,
    /// Until (HH:MM); before `start` means across midnight.
    #[schema(schema_with = field::hh_mm)]
    pub end: String,
}

/// Set an account's limits (validated).
#[utoipa::path(patch, path = "/v1/accounts/{id}/limits", tag = "accounts", operation_id = "updateAccountLimits",
    params(("id" = Uuid, Path, description = "account id")), request_body = UpdateLimits,
    responses((status = 200, body = Account, description = "The account with its new limits"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The limits conflict: per_minute <= per_hour <= per_day must hold with the defaults filled in"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn update_limits(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateLimits>,
) -> Result<Json<Account>, ApiError> {
    let cfg = body.rate_limit_config;
    for (key, v, max) in [
        ("per_minute", cfg.per_minute, 100_000),
        ("per_hour", cfg.per_hour, 100_000),
        ("per_day", cfg.per_day, 100_000),
        ("daily_limit", cfg.daily_limit, 100_000),
        ("min_gap_seconds", cfg.min_gap_seconds, 86_400),
        ("jitter_seconds", cfg.jitter_seconds, 86_400),
    ] {
        if v.is_some_and(|v| v > max) {
            return Err(ApiError::invalid(
                format!("rate_limit_config.{key}"),
                format!("must be at most {max}"),
            ));
        }
    }
    if let Some(Some(q)) = &cfg.quiet_hours {
        contract::check(
            "rate_limit_config.quiet_hours.start",
            contract::HH_MM,
            &q.start,
        )?;
        contract::check("rate_limit_config.quiet_hours.end", contract::HH_MM, &q.end)?;
    }
    let config = serde_json::to_value(&cfg)
        .map_err(|e| ApiError::invalid("rate_limit_config", e.to_string()))?;
    let resolved = state.settings.budget.limits().resolve(&config).map_err(
        |crate::account::budget::BudgetError::Config { key, problem }| {
            ApiError::invalid(format!("rate_limit_config.{key}"), problem)
        },
    )?;
    if resolved.per_minute > resolved.per_hour || resolved.per_hour > resolved.per_day {
        return Err(ApiError::conflict_on(
            "rate_limit_config",
            format!(
                "limits must satisfy per_minute <= per_hour <= per_day; with the defaults filled in they are {} / {} / {}",
                resolved.per_minute, resolved.per_hour, resolved.per_day
            ),
        ));
    }
    let updated: Option<Account> = admin::set_limits(
        &state.pool,
        id,
        &config,
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
