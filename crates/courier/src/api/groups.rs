//! `/v1/groups`: the groups discovered through accounts, with the admin-set
//! metadata (region, state, district, segment tags) campaigns target.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::contract::{self, field};
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::directory::{self, GroupMetadata};

/// A group as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub(crate) struct Group {
    /// Courier's id.
    pub id: Uuid,
    /// WhatsApp's id, `…@g.us`.
    pub group_id: String,
    /// Subject.
    pub name: String,
    /// Participants at the last discovery/scrape.
    pub member_count: i32,
    /// Admin metadata.
    pub region: Option<String>,
    /// Admin metadata.
    pub state: Option<String>,
    /// Admin metadata.
    pub district: Option<String>,
    /// Admin metadata: persona/segment tags.
    pub segment_tags: Vec<String>,
    /// The account that discovered it.
    pub account_id: Option<Uuid>,
    /// When it was first discovered.
    pub discovered_at: DateTime<Utc>,
    /// When its participants were last read.
    pub last_scraped_at: Option<DateTime<Utc>>,
}

const GROUP_COLUMNS: &str = "id, group_id, name, member_count, region, state, district, \
    segment_tags, account_id, discovered_at, last_scraped_at";

/// Filters for `GET /v1/groups`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFilter {
    /// Case-insensitive substring of the name.
    #[param(pattern = r"^[^\u0000]*$", max_length = 200)]
    pub search: Option<String>,
    /// Exact region.
    #[param(pattern = r"^[^\u0000]*$", max_length = 200)]
    pub region: Option<String>,
    /// Groups carrying this segment tag.
    #[param(pattern = r"^[^\u0000]*$", max_length = 200)]
    pub tag: Option<String>,
    /// Groups this account is a member of.
    pub account_id: Option<Uuid>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Return groups with ids after this one (cursor).
    pub after: Option<Uuid>,
}

/// List groups, filtered.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", operation_id = "listGroups", params(GroupFilter),
    responses((status = 200, body = [Group], description = "A page of groups"),
        (status = 422, body = ErrorBody, description = "A parameter breaks the document")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(f): Query<GroupFilter>,
) -> Result<Json<Vec<Group>>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    for (field, v) in [
        ("search", &f.search),
        ("region", &f.region),
        ("tag", &f.tag),
    ] {
        if let Some(v) = v {
            contract::check_len(field, contract::NO_NUL, 0, 200, v)?;
        }
    }
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM mkt_wap_groups g
         WHERE ($1::text IS NULL OR g.name ILIKE '%' || $1 || '%')
           AND ($2::text IS NULL OR g.region = $2)
           AND ($3::text IS NULL OR $3 = ANY (g.segment_tags))
           AND ($4::uuid IS NULL OR g.account_id = $4 OR EXISTS (
                SELECT 1 FROM mkt_wap_account_groups ag
                WHERE ag.group_id = g.id AND ag.account_id = $4))
           AND ($5::uuid IS NULL OR g.id > $5)
         ORDER BY g.id LIMIT $6"
    )))
    .bind(f.search.map(|s| s.replace('%', "\\%").replace('_', "\\_")))
    .bind(f.region)
    .bind(f.tag)
    .bind(f.account_id)
    .bind(f.after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// Get one group.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", operation_id = "getGroup",
    params(("id" = Uuid, Path, description = "group id")),
    responses((status = 200, body = Group, description = "The group"),
        (status = 404, body = ErrorBody, description = "No such group")))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Group>, ApiError> {
    fetch(&state, id).await.map(Json)
}

async fn fetch(state: &AppState, id: Uuid) -> Result<Group, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM mkt_wap_groups WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("group"))
}

/// Body of `PATCH /v1/groups/{id}`: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateGroup {
    /// Region, at most 100 characters (empty string clears).
    #[schema(schema_with = field::opt_plain::<100>)]
    pub region: Option<String>,
    /// State, at most 100 characters (empty string clears).
    #[schema(schema_with = field::opt_plain::<100>)]
    pub state: Option<String>,
    /// District, at most 100 characters (empty string clears).
    #[schema(schema_with = field::opt_plain::<100>)]
    pub district: Option<String>,
    /// Replaces the segment tags: at most 50, each 1 to 64 characters, not blank.
    #[schema(schema_with = field::opt_tags)]
    pub segment_tags: Option<Vec<String>>,
}

impl UpdateGroup {
    fn validate(&self) -> Result<(), ApiError> {
        for (field, v) in [
            ("region", &self.region),
            ("state", &self.state),
            ("district", &self.district),
        ] {
            if let Some(v) = v {
                contract::check_len(field, contract::NO_NUL, 0, 100, v)?;
            }
        }
        if let Some(tags) = &self.segment_tags {
            if tags.len() > 50 {
                return Err(ApiError::invalid("segment_tags", "at most 50 tags"));
            }
            for (i, t) in tags.iter().enumerate() {
                contract::check_len(&format!("segment_tags[{i}]"), contract::TEXT, 1, 64, t)?;
            }
        }
        Ok(())
    }
}

/// Update a group's admin metadata.
#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", operation_id = "updateGroup",
    params(("id" = Uuid, Path, description = "group id")), request_body = UpdateGroup,
    responses((status = 200, body = Group, description = "The updated group"),
        (status = 404, body = ErrorBody, description = "No such group"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateGroup>,
) -> Result<Json<Group>, ApiError> {
    body.validate()?;
    let blank_to_null = |v: Option<String>| v.map(|s| s.trim().to_string());
    let tags = body.segment_tags.map(|t| {
        let mut t: Vec<String> = t.into_iter().map(|s| s.trim().to_string()).collect();
        t.sort();
        t.dedup();
        t
    });
    let meta = GroupMetadata {
        region: blank_to_null(body.region),
        state: blank_to_null(body.state),
        district: blank_to_null(body.district),
        segment_tags: tags,
    };
    let group: Option<Group> =
        directory::set_metadata(&state.pool, id, &meta, GROUP_COLUMNS).await?;
    group.map(Json).ok_or(ApiError::NotFound("group"))
}
