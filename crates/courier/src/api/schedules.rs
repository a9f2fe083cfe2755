//! `/v1/schedules`: the `mkt_con_schedule` rows the scheduler expands, listed,
//! read, created, paused and resumed ([`crate::scheduler::manage`];
//! docs/scheduler.md). A row the campaign system wrote is listed like one
//! made here.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::contract;
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::scheduler::manage::{self, CreateError, NewSchedule, ScheduleView, Switch};
use crate::scheduler::schedule::ScheduleError;

/// The shape of a cron expression: 5 to 7 fields of cron characters, or a
/// nickname (`@daily`). An expression of this shape that is still not a
/// schedule (a value out of range) is a 409 naming `cron_expression`.
pub(crate) const CRON: &str =
    r"^ *(@[A-Za-z]{1,20}|[0-9A-Za-z*,/?#+-]{1,100}( +[0-9A-Za-z*,/?#+-]{1,100}){4,6}) *$";

/// Most ids or numbers one schedule lists.
const MAX_TARGETS: usize = 10_000;

/// What to do with occurrences missed while no scheduler ran.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CatchUp {
    /// Every missed occurrence (at most 100).
    All,
    /// The most recent one (the default).
    Latest,
    /// None: wait for the next.
    Skip,
}

/// Groups chosen by their admin metadata: every given key must match.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFilterBody {
    /// Exact region.
    #[schema(schema_with = contract::field::opt_text::<200>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Exact state.
    #[schema(schema_with = contract::field::opt_text::<200>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Exact district.
    #[schema(schema_with = contract::field::opt_text::<200>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// The group carries all of these tags.
    #[schema(schema_with = contract::field::opt_tags)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_tags: Option<Vec<String>>,
}

/// Body of `POST /v1/schedules`. Without any target field, the targets are
/// the campaign's audience (docs/scheduler.md, "Targets"), as for the
/// campaign system's own rows.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSchedule {
    /// The content to send (`mkt_con_content`).
    pub content_id: Uuid,
    /// The campaign (`mkt_campaigns`); its status holds the schedule while
    /// `paused` or `cancelled`.
    pub campaign_id: Option<Uuid>,
    /// When a one-off is due, or a recurrence starts (RFC 3339; default now).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// A recurrence: Unix cron (5 fields) or seconds-first (6/7 fields), as
    /// `courier cron next` reads it.
    #[schema(schema_with = opt_cron)]
    pub cron_expression: Option<String>,
    /// The IANA zone the expression is read in (default UTC).
    pub timezone: Option<String>,
    /// Missed occurrences: `latest` (default), `all` or `skip`.
    pub catch_up_policy: Option<CatchUp>,
    /// Target groups (`mkt_wap_groups.id`).
    #[schema(max_items = 10000)]
    pub target_group_ids: Option<Vec<Uuid>>,
    /// Target contacts (`mkt_wap_contacts.id`).
    #[schema(max_items = 10000)]
    pub target_contact_ids: Option<Vec<Uuid>>,
    /// Target phone numbers.
    #[schema(schema_with = opt_phones)]
    pub target_phone_numbers: Option<Vec<String>>,
    /// Every contact carrying all these tags.
    #[schema(schema_with = contract::field::opt_tags)]
    pub target_segment_tags: Option<Vec<String>>,
    /// Every active group matching this filter.
    pub target_group_filter: Option<GroupFilterBody>,
    /// The account that sends every message (default: chosen per message).
    pub account_id: Option<Uuid>,
}

fn opt_cron() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(CRON))
        .build()
        .into()
}

fn opt_phones() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, SchemaType, Type};
    let phone = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(contract::PHONE))
        .build();
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(ArrayItems::RefOrSchema(Box::new(phone.into())))
        .max_items(Some(MAX_TARGETS))
        .build()
        .into()
}

fn check_tags(field: &str, tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::invalid(field, "at most 50 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        contract::check_len(&format!("{field}[{i}]"), contract::TEXT, 1, 64, t)?;
    }
    Ok(())
}

fn check_many<T>(field: &str, v: &Option<Vec<T>>) -> Result<(), ApiError> {
    match v {
        Some(v) if v.len() > MAX_TARGETS => Err(ApiError::invalid(
            field,
            format!("at most {MAX_TARGETS} items; it has {}", v.len()),
        )),
        _ => Ok(()),
    }
}

/// Create a schedule: checked as the scheduler will read it (content, cron
/// expression and zone, targets), then `scheduled`.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", operation_id = "createSchedule",
    request_body = CreateSchedule,
    responses(
        (status = 201, body = ScheduleView),
        (status = 404, body = ErrorBody, description = "no such content, campaign or account (`field` names it)"),
        (status = 409, body = ErrorBody, description = "the content cannot be sent as it is (no body, a media type without its URL), or the cron expression has the shape of one but is not (a value out of range); `field` names it"),
        (status = 422, body = ErrorBody, description = "a field breaks the document: cron shape, unknown time zone, a phone number, a tag, too many targets")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    if let Some(c) = &body.cron_expression {
        contract::check("cron_expression", CRON, c)?;
    }
    let timezone = body.timezone.clone().unwrap_or_else(|| "UTC".into());
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::invalid(
            "timezone",
            format!(
                "unknown time zone `{}`: expected an IANA name such as Asia/Kolkata",
                timezone.replace('\0', "")
            ),
        ));
    }
    check_many("target_group_ids", &body.target_group_ids)?;
    check_many("target_contact_ids", &body.target_contact_ids)?;
    check_many("target_phone_numbers", &body.target_phone_numbers)?;
    for (i, p) in body.target_phone_numbers.iter().flatten().enumerate() {
        contract::check(&format!("target_phone_numbers[{i}]"), contract::PHONE, p)?;
    }
    check_tags(
        "target_segment_tags",
        body.target_segment_tags.as_deref().unwrap_or_default(),
    )?;
    if let Some(f) = &body.target_group_filter {
        for (field, v) in [
            ("region", &f.region),
            ("state", &f.state),
            ("district", &f.district),
        ] {
            if let Some(v) = v {
                contract::check_len(
                    &format!("target_group_filter.{field}"),
                    contract::TEXT,
                    1,
                    200,
                    v,
                )?;
            }
        }
        check_tags(
            "target_group_filter.segment_tags",
            f.segment_tags.as_deref().unwrap_or_default(),
        )?;
    }
    let filter = match &body.target_group_filter {
        Some(f) => {
            let v = serde_json::to_value(f)
                .map_err(|e| ApiError::invalid("target_group_filter", e.to_string()))?;
            Some(v).filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        }
        None => None,
    };
    let new = NewSchedule {
        campaign_id: body.campaign_id,
        content_id: body.content_id,
        scheduled_at: body.scheduled_at,
        cron_expression: body
            .cron_expression
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty()),
        timezone,
        catch_up_policy: match body.catch_up_policy.unwrap_or(CatchUp::Latest) {
            CatchUp::All => "all",
            CatchUp::Latest => "latest",
            CatchUp::Skip => "skip",
        }
        .into(),
        target_group_ids: body.target_group_ids.unwrap_or_default(),
        target_contact_ids: body.target_contact_ids.unwrap_or_default(),
        target_phone_numbers: body.target_phone_numbers.unwrap_or_default(),
        target_segment_tags: body.target_segment_tags.unwrap_or_default(),
        target_group_filter: filter,
        account_id: body.account_id,
    };
    let view = manage::create(&state.pool, new)
        .await
        .map_err(|e| match e {
            CreateError::Missing { field, id } => {
                ApiError::missing(field, format!("{field} {id} does not exist"))
            }
            CreateError::Refused(e) => {
                let field = match &e {
                    ScheduleError::Recurrence(_) => "cron_expression",
                    ScheduleError::MissingContent(_) | ScheduleError::InvalidContent(_) => {
                        "content_id"
                    }
                    ScheduleError::Policy(_) => "catch_up_policy",
                    _ => "target",
                };
                ApiError::conflict_on(field, e.to_string())
            }
            CreateError::Db(e) => ApiError::Database(e),
        })?;
    tracing::info!(schedule = %view.id, "schedule created");
    Ok((StatusCode::CREATED, Json(view)))
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleFilter {
    /// Only this campaign's.
    pub campaign_id: Option<Uuid>,
    /// Only this status (`scheduled`, `queued`, `paused`, `cancelled`, `failed`, …).
    #[param(pattern = r"^[^\u0000]*$", max_length = 100)]
    pub status: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Cursor: schedules after this id (the list is in id order).
    pub after: Option<Uuid>,
}

/// List schedules in id order, a page at a time (`after` = the last id of
/// the page before).
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", operation_id = "listSchedules",
    params(ScheduleFilter),
    responses((status = 200, body = [ScheduleView], description = "A page of schedules"),
        (status = 422, body = ErrorBody, description = "A parameter breaks the document")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(f): Query<ScheduleFilter>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(s) = &f.status {
        contract::check_len("status", contract::NO_NUL, 0, 100, s)?;
    }
    Ok(Json(
        manage::list(
            &state.pool,
            f.campaign_id,
            f.status.as_deref(),
            f.after,
            limit,
        )
        .await?,
    ))
}

/// Get one schedule, with its campaign's status and whether it holds it.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", operation_id = "getSchedule",
    params(("id" = Uuid, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ScheduleView>, ApiError> {
    manage::get(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("schedule"))
}

fn switched(s: Switch, verb: &str) -> Result<Json<ScheduleView>, ApiError> {
    match s {
        Switch::Done(v) => Ok(Json(*v)),
        Switch::NotFound => Err(ApiError::NotFound("schedule")),
        Switch::Refused(status) => Err(ApiError::conflict_on(
            "status",
            format!("a `{status}` schedule cannot be {verb}"),
        )),
    }
}

/// Pause a `scheduled` schedule: it is not due while paused. Work it
/// already queued stays queued (pause the campaign to hold that too).
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", operation_id = "pauseSchedule",
    params(("id" = Uuid, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the schedule is neither `scheduled` nor `paused`")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ScheduleView>, ApiError> {
    switched(manage::switch(&state.pool, id, true).await?, "paused")
}

/// Resume a paused schedule: `scheduled` again; occurrences missed while
/// paused follow its catch-up policy.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", operation_id = "resumeSchedule",
    params(("id" = Uuid, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the schedule is neither `paused` nor `scheduled`")))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ScheduleView>, ApiError> {
    switched(manage::switch(&state.pool, id, false).await?, "resumed")
}
