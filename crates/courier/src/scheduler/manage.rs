//! Schedules managed through the API (`/v1/schedules`): list, read, create,
//! pause and resume `mkt_con_schedule` rows. The rows are the same ones the
//! campaign system writes; the scheduler treats both alike.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::schedule::{Schedule, ScheduleError, ScheduleRow};
use crate::queue::store::held_campaign;

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleView {
    /// Schedule id.
    pub id: Uuid,
    /// The campaign (`mkt_campaigns`).
    pub campaign_id: Option<Uuid>,
    /// What it sends (`mkt_con_content`).
    pub content_id: Option<Uuid>,
    /// `whatsapp` for Courier's rows.
    pub channel: String,
    /// `scheduled` (due at its time), `queued` (expanded), `paused`,
    /// `cancelled`, `failed`, or a word of the campaign system's.
    pub status: String,
    /// Why it is in its status: a failure, a wait, a hold, what was skipped.
    pub status_reason: Option<String>,
    /// When a one-off is due; the start of a recurring one.
    pub scheduled_at: DateTime<Utc>,
    /// The recurrence (docs/scheduler.md, "Cron expressions"), if any.
    pub cron_expression: Option<String>,
    /// The IANA zone the expression is read in.
    pub timezone: String,
    /// `all`, `latest` or `skip`.
    pub catch_up_policy: String,
    /// Target groups (`mkt_wap_groups.id`).
    pub target_group_ids: Vec<Uuid>,
    /// Target contacts (`mkt_wap_contacts.id`).
    pub target_contact_ids: Vec<Uuid>,
    /// Target phone numbers.
    pub target_phone_numbers: Vec<String>,
    /// Every contact carrying all these tags.
    pub target_segment_tags: Vec<String>,
    /// Every active group matching `{region, state, district, segment_tags}`.
    #[schema(value_type = Option<Object>)]
    pub target_group_filter: Option<serde_json::Value>,
    /// The account that sends every message, if pinned.
    pub account_id: Option<Uuid>,
    /// The campaign's status, as the campaign system wrote it.
    pub campaign_status: Option<String>,
    /// The campaign's status holds this schedule (`paused`, `cancelled`).
    pub held: bool,
    /// The last occurrence expanded (or skipped).
    pub last_occurrence_at: Option<DateTime<Utc>>,
    /// When it is looked at next (a recurrence's next occurrence, or a
    /// waiting row's next look).
    pub next_occurrence_at: Option<DateTime<Utc>>,
    /// When it last expanded.
    pub expanded_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

fn select() -> String {
    format!(
        "SELECT s.id, s.campaign_id, s.content_id, s.channel, s.status, s.status_reason, \
            s.scheduled_at, s.cron_expression, s.timezone, s.catch_up_policy, s.target_group_ids, \
            s.target_contact_ids, s.target_phone_numbers, s.target_segment_tags, \
            s.target_group_filter, s.account_id, c.status AS campaign_status, \
            coalesce({held}, false) AS held, s.last_occurrence_at, s.next_occurrence_at, \
            s.expanded_at, s.created_at, s.updated_at \
         FROM mkt_con_schedule s LEFT JOIN mkt_campaigns c ON c.id = s.campaign_id",
        held = held_campaign("c.status")
    )
}

/// A page of schedules in id order, after `after`, filtered.
pub async fn list(
    pool: &PgPool,
    campaign: Option<Uuid>,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ScheduleView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} WHERE ($1::uuid IS NULL OR s.campaign_id = $1) AND ($2::text IS NULL OR s.status = $2) \
           AND ($3::uuid IS NULL OR s.id > $3) ORDER BY s.id LIMIT $4",
        select()
    )))
    .bind(campaign)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One schedule.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ScheduleView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{} WHERE s.id = $1", select())))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A new schedule, before it is checked.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Campaign.
    pub campaign_id: Option<Uuid>,
    /// Content.
    pub content_id: Uuid,
    /// When (default: now).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Recurrence.
    pub cron_expression: Option<String>,
    /// Zone (default UTC).
    pub timezone: String,
    /// Catch-up policy word.
    pub catch_up_policy: String,
    /// Targets.
    pub target_group_ids: Vec<Uuid>,
    /// Targets.
    pub target_contact_ids: Vec<Uuid>,
    /// Targets.
    pub target_phone_numbers: Vec<String>,
    /// Targets.
    pub target_segment_tags: Vec<String>,
    /// Targets.
    pub target_group_filter: Option<serde_json::Value>,
    /// Pinned account.
    pub account_id: Option<Uuid>,
}

/// Why a schedule was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A record the schedule names does not exist (`field`).
    #[error("{field} {id} does not exist")]
    Missing {
        /// The field.
        field: &'static str,
        /// The id.
        id: Uuid,
    },
    /// The scheduler would refuse the row, for the reason given: the same
    /// check (`Schedule::parse`) it runs on every due row.
    #[error(transparent)]
    Refused(ScheduleError),
    /// The database failed.
    #[error("schedule query")]
    Db(#[from] sqlx::Error),
}

/// Checks `new` as the scheduler will read it, then writes it `scheduled`.
pub async fn create(pool: &PgPool, new: NewSchedule) -> Result<ScheduleView, CreateError> {
    let mut tx = pool.begin().await?;
    #[allow(clippy::type_complexity)]
    let content: Option<(
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT body, message_type, media_url, link_url FROM mkt_con_content WHERE id = $1",
    )
    .bind(new.content_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((body, message_type, media_url, link_url)) = content else {
        return Err(CreateError::Missing {
            field: "content_id",
            id: new.content_id,
        });
    };
    let exists =
        |table: &'static str| format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)");
    for (field, table, id) in [
        ("campaign_id", "mkt_campaigns", new.campaign_id),
        ("account_id", "mkt_wap_accounts", new.account_id),
    ] {
        if let Some(id) = id {
            let found: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(exists(table)))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if !found {
                return Err(CreateError::Missing { field, id });
            }
        }
    }
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let row = ScheduleRow {
        id: Uuid::nil(),
        campaign_id: new.campaign_id,
        content_id: Some(new.content_id),
        scheduled_at: new.scheduled_at.unwrap_or(now),
        cron_expression: new.cron_expression.clone(),
        timezone: new.timezone.clone(),
        catch_up_policy: new.catch_up_policy.clone(),
        target_group_ids: new.target_group_ids.clone(),
        target_contact_ids: new.target_contact_ids.clone(),
        target_phone_numbers: new.target_phone_numbers.clone(),
        target_segment_tags: new.target_segment_tags.clone(),
        target_group_filter: new.target_group_filter.clone(),
        account_id: new.account_id,
        last_occurrence_at: None,
        content_found: true,
        body,
        message_type,
        media_url,
        link_url,
        now,
    };
    match Schedule::parse(&row) {
        // A row without targets or campaign waits, as the campaign system's do.
        Ok(_) => {}
        Err(e) if e.waits() => {}
        Err(e) => return Err(CreateError::Refused(e)),
    }
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_schedule (campaign_id, content_id, channel, scheduled_at, status, \
            cron_expression, timezone, catch_up_policy, target_group_ids, target_contact_ids, \
            target_phone_numbers, target_segment_tags, target_group_filter, account_id) \
         VALUES ($1, $2, 'whatsapp', $3, 'scheduled', $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         RETURNING id",
    )
    .bind(row.campaign_id)
    .bind(new.content_id)
    .bind(row.scheduled_at)
    .bind(&row.cron_expression)
    .bind(&row.timezone)
    .bind(&row.catch_up_policy)
    .bind(&row.target_group_ids)
    .bind(&row.target_contact_ids)
    .bind(&row.target_phone_numbers)
    .bind(&row.target_segment_tags)
    .bind(&row.target_group_filter)
    .bind(row.account_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(get(pool, id).await?.expect("the schedule was just created"))
}

/// What a pause or resume came to.
#[derive(Debug)]
pub enum Switch {
    /// Done (or already so).
    Done(Box<ScheduleView>),
    /// No such schedule.
    NotFound,
    /// Its status does not allow it (the status found).
    Refused(String),
}

/// Pauses a `scheduled` row (`paused`, the reason noted), or resumes a
/// `paused` one (`scheduled`; missed occurrences follow its catch-up
/// policy). Asking for the status it has already is a no-op.
pub async fn switch(pool: &PgPool, id: Uuid, pause: bool) -> Result<Switch, sqlx::Error> {
    let (from, to, reason) = if pause {
        ("scheduled", "paused", Some("paused through the API"))
    } else {
        ("paused", "scheduled", None)
    };
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM mkt_con_schedule WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(status) = status else {
        return Ok(Switch::NotFound);
    };
    if status == from {
        sqlx::query(
            "UPDATE mkt_con_schedule SET status = $2, status_reason = $3, updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(to)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    } else if status != to {
        return Ok(Switch::Refused(status));
    }
    tx.commit().await?;
    Ok(match get(pool, id).await? {
        Some(v) => Switch::Done(Box::new(v)),
        None => Switch::NotFound,
    })
}
