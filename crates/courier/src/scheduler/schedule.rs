//! A `mkt_con_schedule` row, parsed once: content, timing and target spec.
//!
//! A row that cannot be parsed (invalid cron, unknown time zone, missing
//! content, malformed filter) becomes a [`ScheduleError`] whose text is
//! written to `status_reason` with status `failed`.
//!
//! A row as the campaign system writes it has no target column (those are
//! Courier's additions): its targets are derived from the campaign
//! ([`TargetSpec::campaign`]). A row with neither targets nor a campaign
//! waits ([`ScheduleError::Waiting`]): it stays `scheduled` with the reason,
//! and is looked at again every minute.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::occurrence::{CatchUpPolicy, Recurrence, RecurrenceError};
use crate::jobs::send::{Content, MediaKind, MediaSource};
use crate::jobs::{MessageBody, PhoneNumber};

/// Why a schedule row cannot be expanded. The text goes to `status_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `content_id` is NULL or names no row.
    #[error("missing content: {0}")]
    MissingContent(String),
    /// The content row cannot be sent as it is.
    #[error("invalid content: {0}")]
    InvalidContent(String),
    /// Bad cron expression or time zone.
    #[error(transparent)]
    Recurrence(#[from] RecurrenceError),
    /// An unknown catch-up policy.
    #[error("{0}")]
    Policy(String),
    /// No target column is set, or the targets resolve to no recipient.
    #[error("empty target: {0}")]
    EmptyTarget(String),
    /// A target value is malformed.
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// Nothing says who it goes to yet: the row waits (`scheduled`, the
    /// reason in `status_reason`) and is looked at again a minute later.
    #[error("waiting for targets: {0}")]
    Waiting(String),
}

impl ScheduleError {
    /// Whether the row waits (stays `scheduled`) rather than fails.
    pub fn waits(&self) -> bool {
        matches!(self, ScheduleError::Waiting(_))
    }
}

/// The columns the scheduler reads, joined with the content row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    /// Schedule id.
    pub id: Uuid,
    /// Campaign link.
    pub campaign_id: Option<Uuid>,
    /// Content link.
    pub content_id: Option<Uuid>,
    /// When a one-off is due; the start of a recurring one.
    pub scheduled_at: DateTime<Utc>,
    /// Recurrence.
    pub cron_expression: Option<String>,
    /// IANA zone.
    pub timezone: String,
    /// `all`, `latest`, `skip`.
    pub catch_up_policy: String,
    /// Target columns.
    pub target_group_ids: Vec<Uuid>,
    /// Target columns.
    pub target_contact_ids: Vec<Uuid>,
    /// Target columns.
    pub target_phone_numbers: Vec<String>,
    /// Target columns.
    pub target_segment_tags: Vec<String>,
    /// Target columns.
    pub target_group_filter: Option<serde_json::Value>,
    /// Pinned account.
    pub account_id: Option<Uuid>,
    /// The last occurrence expanded (or deliberately skipped).
    pub last_occurrence_at: Option<DateTime<Utc>>,
    /// Whether the content row exists.
    pub content_found: bool,
    /// Content columns.
    pub body: Option<String>,
    /// Content columns.
    pub message_type: Option<String>,
    /// Content columns.
    pub media_url: Option<String>,
    /// Content columns.
    pub link_url: Option<String>,
    /// The database clock when the row was read.
    pub now: DateTime<Utc>,
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Timing {
    /// Once, at this instant.
    Once(DateTime<Utc>),
    /// On every occurrence of a cron expression in a time zone.
    Recurring {
        /// The expression and zone.
        recurrence: Box<Recurrence>,
        /// What to do with occurrences missed while no scheduler ran.
        policy: CatchUpPolicy,
        /// Occurrences strictly after this are not expanded yet.
        after: DateTime<Utc>,
    },
}

/// Selects groups by admin metadata: `{"region": …, "state": …, "district": …,
/// "segment_tags": [...]}`; every given key must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFilter {
    /// Exact region.
    pub region: Option<String>,
    /// Exact state.
    pub state: Option<String>,
    /// Exact district.
    pub district: Option<String>,
    /// The group carries all of these tags.
    #[serde(default)]
    pub segment_tags: Vec<String>,
}

/// Who a schedule goes to, before resolution.
#[derive(Debug, Clone, Default)]
pub struct TargetSpec {
    /// `mkt_wap_groups.id`s.
    pub groups: Vec<Uuid>,
    /// `mkt_wap_contacts.id`s.
    pub contacts: Vec<Uuid>,
    /// Individual numbers.
    pub phones: Vec<PhoneNumber>,
    /// Every contact carrying all these tags.
    pub segment_tags: Vec<String>,
    /// Every active group matching this filter.
    pub group_filter: Option<GroupFilter>,
    /// The campaign whose audience it goes to, for a row with none of the
    /// target columns above (the campaign system's own rows): every group
    /// and contact the campaign's messages (`mkt_wap_messages.campaign_id`,
    /// `target_group_id`, `target_contact_id`) went to, each through the
    /// account that last sent the campaign there when it can
    /// ([`super::targets`]).
    pub campaign: Option<Uuid>,
}

impl TargetSpec {
    /// Whether a target column is set.
    pub fn is_explicit(&self) -> bool {
        !(self.groups.is_empty()
            && self.contacts.is_empty()
            && self.phones.is_empty()
            && self.segment_tags.is_empty()
            && self.group_filter.is_none())
    }
}

/// A schedule ready to expand.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Schedule id.
    pub id: Uuid,
    /// Campaign link.
    pub campaign_id: Option<Uuid>,
    /// Content link.
    pub content_id: Option<Uuid>,
    /// Pinned account.
    pub pinned: Option<Uuid>,
    /// What every message says.
    pub content: Content,
    /// When it fires.
    pub timing: Timing,
    /// Who it goes to.
    pub targets: TargetSpec,
}

impl Schedule {
    /// Parses a row; the error explains the first problem found.
    pub fn parse(row: &ScheduleRow) -> Result<Self, ScheduleError> {
        let timing = match row.cron_expression.as_deref().map(str::trim) {
            None | Some("") => Timing::Once(row.scheduled_at),
            Some(expr) => Timing::Recurring {
                recurrence: Box::new(Recurrence::parse(expr, &row.timezone)?),
                policy: row.catch_up_policy.parse().map_err(ScheduleError::Policy)?,
                after: row
                    .last_occurrence_at
                    .unwrap_or(row.scheduled_at - chrono::Duration::seconds(1)),
            },
        };
        let content = content(row)?;
        let phones = row
            .target_phone_numbers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                PhoneNumber::parse(p).map_err(|e| {
                    ScheduleError::InvalidTarget(format!("target_phone_numbers[{i}]: {}", e.detail))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let group_filter = match &row.target_group_filter {
            None | Some(serde_json::Value::Null) => None,
            Some(v) if v.as_object().is_some_and(|o| o.is_empty()) => None,
            Some(v) => Some(
                serde_json::from_value::<GroupFilter>(v.clone()).map_err(|e| {
                    ScheduleError::InvalidTarget(format!("target_group_filter: {e}"))
                })?,
            ),
        };
        let mut targets = TargetSpec {
            groups: row.target_group_ids.clone(),
            contacts: row.target_contact_ids.clone(),
            phones,
            segment_tags: row
                .target_segment_tags
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            group_filter,
            campaign: None,
        };
        if !targets.is_explicit() {
            // The campaign system's row: its targets are the campaign's.
            match row.campaign_id {
                Some(c) => targets.campaign = Some(c),
                None => {
                    return Err(ScheduleError::Waiting(
                        "the row sets no target column (target_group_ids, target_contact_ids, \
                         target_phone_numbers, target_segment_tags, target_group_filter) and has \
                         no campaign_id to derive them from"
                            .into(),
                    ))
                }
            }
        }
        Ok(Self {
            id: row.id,
            campaign_id: row.campaign_id,
            content_id: row.content_id,
            pinned: row.account_id,
            content,
            timing,
            targets,
        })
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The content row as a message content.
fn content(row: &ScheduleRow) -> Result<Content, ScheduleError> {
    let Some(content_id) = row.content_id else {
        return Err(ScheduleError::MissingContent("content_id is NULL".into()));
    };
    if !row.content_found {
        return Err(ScheduleError::MissingContent(format!(
            "content {content_id} does not exist"
        )));
    }
    let body = match row.body.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => Some(
            MessageBody::parse(b)
                .map_err(|e| ScheduleError::InvalidContent(format!("body: {}", e.detail)))?,
        ),
    };
    let kind = row.message_type.as_deref().unwrap_or("text");
    let media = |kind: MediaKind| -> Result<Content, ScheduleError> {
        let url = non_empty(&row.media_url).ok_or_else(|| {
            ScheduleError::InvalidContent(format!(
                "content {content_id} is `{}` but has no media_url",
                row.message_type.as_deref().unwrap_or("")
            ))
        })?;
        let source = MediaSource::parse_url(url)
            .map_err(|e| ScheduleError::InvalidContent(format!("media_url: {}", e.detail)))?;
        Ok(Content::Media {
            kind,
            source,
            caption: body.clone(),
        })
    };
    match kind {
        "text" => body
            .clone()
            .map(|body| Content::Text { body })
            .ok_or_else(|| {
                ScheduleError::MissingContent(format!("content {content_id} has no body"))
            }),
        "image" => media(MediaKind::Image),
        "video" => media(MediaKind::Video),
        "document" => media(MediaKind::Document),
        "link" => {
            let url = non_empty(&row.link_url).ok_or_else(|| {
                ScheduleError::InvalidContent(format!(
                    "content {content_id} is `link` but has no link_url"
                ))
            })?;
            let url = url::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    ScheduleError::InvalidContent(format!("link_url `{url}` is not an http(s) URL"))
                })?;
            Ok(Content::Link {
                url,
                body: body.clone(),
            })
        }
        other => Err(ScheduleError::InvalidContent(format!(
            "unknown message_type `{other}` (text, image, video, document, link)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ScheduleRow {
        ScheduleRow {
            id: Uuid::nil(),
            campaign_id: None,
            content_id: Some(Uuid::nil()),
            scheduled_at: Utc::now(),
            cron_expression: None,
            timezone: "UTC".into(),
            catch_up_policy: "latest".into(),
            target_group_ids: vec![Uuid::nil()],
            target_contact_ids: vec![],
            target_phone_numbers: vec![],
            target_segment_tags: vec![],
            target_group_filter: None,
            account_id: None,
            last_occurrence_at: None,
            content_found: true,
            body: Some("hello".into()),
            message_type: Some("text".into()),
            media_url: None,
            link_url: None,
            now: Utc::now(),
        }
    }

    #[test]
    fn a_good_row_parses() {
        let s = Schedule::parse(&row()).unwrap();
        assert!(matches!(s.timing, Timing::Once(_)));
        assert!(matches!(s.content, Content::Text { .. }));
    }

    #[test]
    fn bad_rows_are_explained() {
        let mut r = row();
        r.cron_expression = Some("not cron".into());
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.contains("invalid cron expression"), "{e}");

        let mut r = row();
        r.cron_expression = Some("0 9 * * *".into());
        r.timezone = "Mars/Olympus".into();
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.contains("unknown time zone"), "{e}");

        let mut r = row();
        r.content_found = false;
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.starts_with("missing content"), "{e}");

        let mut r = row();
        r.body = None;
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.contains("has no body"), "{e}");

        let mut r = row();
        r.target_group_ids.clear();
        let e = Schedule::parse(&r).unwrap_err();
        assert!(e.waits(), "{e}");
        assert!(e.to_string().starts_with("waiting for targets"), "{e}");
        assert!(e.to_string().contains("no campaign_id"), "{e}");
        r.campaign_id = Some(Uuid::nil());
        let s = Schedule::parse(&r).unwrap();
        assert_eq!(
            s.targets.campaign,
            Some(Uuid::nil()),
            "derived from the campaign"
        );

        let mut r = row();
        r.target_phone_numbers = vec!["+44 7700 900123".into(), "12".into()];
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.contains("target_phone_numbers[1]"), "{e}");

        let mut r = row();
        r.target_group_filter = Some(serde_json::json!({"regoin": "north"}));
        let e = Schedule::parse(&r).unwrap_err().to_string();
        assert!(e.contains("regoin"), "{e}");
    }

    #[test]
    fn media_and_link_content() {
        let mut r = row();
        r.message_type = Some("image".into());
        r.media_url = Some("https://cdn.example.com/a.png".into());
        assert!(matches!(
            Schedule::parse(&r).unwrap().content,
            Content::Media { .. }
        ));
        r.media_url = None;
        assert!(Schedule::parse(&r).is_err());
        let mut r = row();
        r.message_type = Some("link".into());
        r.link_url = Some("https://example.com".into());
        assert!(matches!(
            Schedule::parse(&r).unwrap().content,
            Content::Link { .. }
        ));
    }
}
