//! `/v1/messages`: send (enqueue) with the seed's fields, list, detail with the
//! event history, and retry of failed messages.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use courier_jobs::send::{Content, MediaKind, MediaSource, MAX_BROADCAST};
use courier_jobs::{ChatId, MessageBody, PhoneNumber, ValidationError};

use super::contract::{self, field};
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::message::{create_batch, NewMessage, Source};

/// A message as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub(crate) struct MessageView {
    /// Id.
    pub id: Uuid,
    /// Sending account (none while pending assignment).
    pub account_id: Option<Uuid>,
    /// Campaign link.
    pub campaign_id: Option<Uuid>,
    /// Content link.
    pub content_id: Option<Uuid>,
    /// Schedule that produced it.
    pub schedule_id: Option<Uuid>,
    /// text, image, video, document, link.
    #[schema(value_type = MessageType)]
    pub message_type: String,
    /// group, individual, broadcast.
    #[schema(value_type = ChannelType)]
    pub channel_type: String,
    /// WhatsApp chat id.
    pub target_chat_id: String,
    /// Group row.
    pub target_group_id: Option<Uuid>,
    /// Contact row.
    pub target_contact_id: Option<Uuid>,
    /// Text (or link text).
    pub message_text: Option<String>,
    /// Media URL.
    pub media_url: Option<String>,
    /// Media path under the media directory.
    pub media_path: Option<String>,
    /// Media caption.
    pub media_caption: Option<String>,
    /// Link.
    pub link_url: Option<String>,
    /// pending, queued, sending, sent, delivered, read, failed.
    #[schema(value_type = crate::message::MessageStatus)]
    pub status: String,
    /// WhatsApp's id once sent.
    pub wa_message_id: Option<String>,
    /// Highest ack seen (-1..4).
    pub ack: Option<i16>,
    /// Last error.
    pub error_message: Option<String>,
    /// Retries so far.
    pub retry_count: i32,
    /// Retry limit.
    pub max_retries: i32,
    /// Send attempts since it was created or last retried by an operator
    /// (at most `delivery.max_attempts`).
    pub send_attempts: i32,
    /// The job responsible now.
    pub job_id: Option<Uuid>,
    /// Why it waits.
    pub waiting_reason: Option<String>,
    /// Timestamps.
    pub queued_at: Option<DateTime<Utc>>,
    /// Timestamps.
    pub sending_at: Option<DateTime<Utc>>,
    /// Timestamps.
    pub sent_at: Option<DateTime<Utc>>,
    /// Timestamps.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Timestamps.
    pub read_at: Option<DateTime<Utc>>,
    /// Timestamps.
    pub failed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

const MESSAGE_COLUMNS: &str =
    "id, account_id, campaign_id, content_id, schedule_id, message_type, \
    channel_type, target_chat_id, target_group_id, target_contact_id, message_text, media_url, \
    media_path, media_caption, link_url, status, wa_message_id, ack, error_message, retry_count, \
    max_retries, send_attempts, job_id, waiting_reason, queued_at, sending_at, sent_at, delivered_at, read_at, \
    failed_at, created_at";

/// What a message carries.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum MessageType {
    /// Text.
    Text,
    /// A picture.
    Image,
    /// A video.
    Video,
    /// A document.
    Document,
    /// Text with a link preview.
    Link,
}

/// Where a message goes.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum ChannelType {
    /// A group chat.
    Group,
    /// One person.
    Individual,
    /// Many people, one message each.
    Broadcast,
}

/// Body of `POST /v1/messages` (the seed's fields). Which fields a message
/// needs, by `message_type` and `channel_type`, is the schema's `allOf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendMessage {
    /// Sending account (required: the account must be a member of a target group).
    pub account_id: Uuid,
    /// Campaign link.
    pub campaign_id: Option<Uuid>,
    /// Content link.
    pub content_id: Option<Uuid>,
    /// text (default), image, video, document, link.
    #[schema(value_type = Option<MessageType>)]
    pub message_type: Option<String>,
    /// Text (1 to 65,536 characters, not blank), or text around a link.
    #[schema(schema_with = field::opt_text::<65_536>)]
    pub message_text: Option<String>,
    /// Media from an http(s) URL.
    #[schema(schema_with = field::opt_url)]
    pub media_url: Option<String>,
    /// Media from a path under the media directory.
    #[schema(schema_with = field::opt_media_path)]
    pub media_path: Option<String>,
    /// Media caption (1 to 65,536 characters, not blank).
    #[schema(schema_with = field::opt_text::<65_536>)]
    pub caption: Option<String>,
    /// The link of a link message.
    #[schema(schema_with = field::opt_url)]
    pub link_url: Option<String>,
    /// group, individual, broadcast.
    #[schema(value_type = ChannelType)]
    pub channel_type: String,
    /// Group row id (group channel).
    pub target_group_id: Option<Uuid>,
    /// Chat id (`…@g.us`, `…@c.us`, `…@lid`).
    #[schema(schema_with = field::opt_chat_id)]
    pub target_chat_id: Option<String>,
    /// Phone number (individual channel).
    #[schema(schema_with = field::opt_phone)]
    pub target_phone: Option<String>,
    /// Recipients (broadcast): phone numbers or chat ids, at most 10,000.
    #[schema(schema_with = field::opt_recipients)]
    pub recipients: Option<Vec<String>>,
    /// Makes a repeated request return the existing messages.
    #[schema(schema_with = field::opt_key)]
    pub idempotency_key: Option<String>,
}

fn opt_body(field: &str, v: &Option<String>) -> Result<Option<MessageBody>, ApiError> {
    v.as_deref()
        .map(|s| {
            MessageBody::parse(s)
                .map_err(|e| ApiError::Validation(ValidationError::new(field, e.detail)))
        })
        .transpose()
}

impl SendMessage {
    /// Checks the form of every field given, used or not, against the
    /// document: what the document refuses, the server refuses.
    fn check_fields(&self) -> Result<(), ApiError> {
        if let Some(t) = &self.message_type {
            if !["text", "image", "video", "document", "link"].contains(&t.as_str()) {
                return Err(ApiError::invalid(
                    "message_type",
                    format!("unknown type `{t}`; expected text, image, video, document or link"),
                ));
            }
        }
        if !["group", "individual", "broadcast"].contains(&self.channel_type.as_str()) {
            return Err(ApiError::invalid(
                "channel_type",
                format!(
                    "unknown channel `{}`; expected group, individual or broadcast",
                    self.channel_type
                ),
            ));
        }
        for (name, v) in [
            ("message_text", &self.message_text),
            ("caption", &self.caption),
        ] {
            if let Some(v) = v {
                contract::check_len(name, contract::TEXT, 1, MessageBody::MAX_CHARS, v)?;
            }
        }
        for (name, v) in [("media_url", &self.media_url), ("link_url", &self.link_url)] {
            if let Some(v) = v {
                contract::check(name, contract::HTTP_URL, v)?;
            }
        }
        if let Some(p) = &self.media_path {
            contract::check("media_path", contract::MEDIA_PATH, p)?;
            contract::check("media_path", contract::TEXT, p)?;
        }
        if let Some(c) = &self.target_chat_id {
            contract::check("target_chat_id", contract::CHAT_ID, c)?;
        }
        if let Some(p) = &self.target_phone {
            contract::check("target_phone", contract::PHONE, p)?;
        }
        if let Some(list) = &self.recipients {
            if list.len() > MAX_BROADCAST {
                return Err(ApiError::invalid(
                    "recipients",
                    format!("at most {MAX_BROADCAST} recipients"),
                ));
            }
            for (i, r) in list.iter().enumerate() {
                contract::check(&format!("recipients[{i}]"), contract::RECIPIENT, r)?;
            }
        }
        if let Some(k) = &self.idempotency_key {
            super::jobs::check_key("idempotency_key", k)?;
        }
        Ok(())
    }

    fn content(&self) -> Result<Content, ApiError> {
        let kind = self.message_type.as_deref().unwrap_or("text");
        let media = |k: MediaKind| -> Result<Content, ApiError> {
            let source = match (&self.media_url, &self.media_path) {
                (Some(u), None) => MediaSource::parse_url(u)?,
                (None, Some(p)) => MediaSource::parse_path(p)?,
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "media_url",
                        "give media_url or media_path, not both",
                    ))
                }
                (None, None) => {
                    return Err(ApiError::invalid(
                        "media_url",
                        format!("a {kind} message needs media_url or media_path"),
                    ))
                }
            };
            let caption = opt_body("caption", &self.caption)?
                .or(opt_body("message_text", &self.message_text)?);
            Ok(Content::Media {
                kind: k,
                source,
                caption,
            })
        };
        match kind {
            "text" => {
                let body = opt_body("message_text", &self.message_text)?.ok_or_else(|| {
                    ApiError::invalid("message_text", "is required for a text message")
                })?;
                Ok(Content::Text { body })
            }
            "image" => media(MediaKind::Image),
            "video" => media(MediaKind::Video),
            "document" => media(MediaKind::Document),
            "link" => {
                let raw = self.link_url.as_deref().ok_or_else(|| {
                    ApiError::invalid("link_url", "is required for a link message")
                })?;
                let url = match MediaSource::parse_url(raw) {
                    Ok(MediaSource::Url(u)) => u,
                    _ => {
                        return Err(ApiError::invalid(
                            "link_url",
                            format!("`{raw}` is not an http(s) URL"),
                        ))
                    }
                };
                Ok(Content::Link {
                    url,
                    body: opt_body("message_text", &self.message_text)?,
                })
            }
            other => Err(ApiError::invalid(
                "message_type",
                format!("unknown type `{other}`; expected text, image, video, document or link"),
            )),
        }
    }
}

fn recipient(field: &str, s: &str) -> Result<ChatId, ApiError> {
    let parsed = if s.contains('@') {
        ChatId::parse(s)
    } else {
        PhoneNumber::parse(s).map(|p| p.chat_id())
    };
    parsed.map_err(|e| ApiError::Validation(ValidationError::new(field, e.detail)))
}

/// The result of a send request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SendResult {
    /// One message per recipient (one for group and individual sends).
    pub messages: Vec<MessageView>,
}

// Why one long handler: it is the request's validation, field by field, in
// the order the errors are reported, then one call to create the messages.
/// Send a message (enqueue): 202 with the queued message(s); 200 with the
/// existing ones for a repeated idempotency key.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", operation_id = "sendMessage", request_body = SendMessage,
    responses((status = 202, body = SendResult, description = "Queued"),
        (status = 200, body = SendResult, description = "The existing messages for the idempotency key"),
        (status = 404, body = ErrorBody, description = "The account, campaign, content or target group does not exist (`field` names it)"),
        (status = 409, body = ErrorBody, description = "The account is banned, the target group is unknown to the account, or a recipient opted out (`field` names where; the detail names the contact)"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(body): Json<SendMessage>,
) -> Result<(StatusCode, Json<SendResult>), ApiError> {
    body.check_fields()?;
    let content = body.content()?;
    // The account, and the campaign-system rows the message links to (no
    // foreign key guards those: docs/schema.md), in one round trip.
    let (account, campaign_found, content_found): (Option<String>, bool, bool) = sqlx::query_as(
        "SELECT (SELECT status FROM mkt_wap_accounts WHERE id = $1), \
                $2::uuid IS NULL OR EXISTS (SELECT 1 FROM mkt_campaigns WHERE id = $2), \
                $3::uuid IS NULL OR EXISTS (SELECT 1 FROM mkt_con_content WHERE id = $3)",
    )
    .bind(body.account_id)
    .bind(body.campaign_id)
    .bind(body.content_id)
    .fetch_one(&state.pool)
    .await?;
    let Some(account_status) = account else {
        return Err(ApiError::missing(
            "account_id",
            format!("no account {}", body.account_id),
        ));
    };
    if !campaign_found {
        return Err(ApiError::missing(
            "campaign_id",
            format!("no campaign {}", body.campaign_id.unwrap_or_default()),
        ));
    }
    if !content_found {
        return Err(ApiError::missing(
            "content_id",
            format!("no content {}", body.content_id.unwrap_or_default()),
        ));
    }
    if account_status == "banned" {
        return Err(ApiError::Conflict(
            "the account is banned; it cannot send".into(),
        ));
    }
    // Resolve the targets: (chat, group row, contact row).
    let mut targets: Vec<(ChatId, Option<Uuid>)> = Vec::new();
    match body.channel_type.as_str() {
        "group" => {
            let (chat, gid) = match (&body.target_group_id, &body.target_chat_id) {
                (Some(id), _) => {
                    let row: Option<(String,)> =
                        sqlx::query_as("SELECT group_id FROM mkt_wap_groups WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&state.pool)
                            .await?;
                    let (g,) = row.ok_or_else(|| {
                        ApiError::missing("target_group_id", format!("no group {id}"))
                    })?;
                    (recipient("target_group_id", &g)?, *id)
                }
                (None, Some(c)) => {
                    let chat = recipient("target_chat_id", c)?;
                    if !chat.is_group() {
                        return Err(ApiError::invalid(
                            "target_chat_id",
                            format!("`{chat}` is not a group id (…@g.us)"),
                        ));
                    }
                    let row: Option<(Uuid,)> =
                        sqlx::query_as("SELECT id FROM mkt_wap_groups WHERE group_id = $1")
                            .bind(chat.to_string())
                            .fetch_optional(&state.pool)
                            .await?;
                    let (id,) = row.ok_or_else(|| {
                        ApiError::missing(
                            "target_chat_id",
                            format!("group {chat} is unknown; discover the account's groups first"),
                        )
                    })?;
                    (chat, id)
                }
                (None, None) => {
                    return Err(ApiError::invalid(
                        "target_group_id",
                        "a group send needs target_group_id or target_chat_id",
                    ))
                }
            };
            let member: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM mkt_wap_account_groups WHERE account_id = $1 AND group_id = $2)
                     OR EXISTS (SELECT 1 FROM mkt_wap_groups WHERE id = $2 AND account_id = $1)",
            )
            .bind(body.account_id)
            .bind(gid)
            .fetch_one(&state.pool)
            .await?;
            if !member {
                return Err(ApiError::conflict_on(
                    "target_group_id",
                    format!("group {chat} is unknown to account {}", body.account_id),
                ));
            }
            targets.push((chat, Some(gid)));
        }
        "individual" => {
            let chat = match (&body.target_phone, &body.target_chat_id) {
                (Some(p), _) => recipient("target_phone", p)?,
                (None, Some(c)) => recipient("target_chat_id", c)?,
                (None, None) => {
                    return Err(ApiError::invalid(
                        "target_phone",
                        "an individual send needs target_phone or target_chat_id",
                    ))
                }
            };
            if chat.is_group() {
                return Err(ApiError::invalid(
                    "target_chat_id",
                    "is a group id; use channel_type group",
                ));
            }
            targets.push((chat, None));
        }
        "broadcast" => {
            let list = body.recipients.as_deref().unwrap_or_default();
            if list.is_empty() {
                return Err(ApiError::invalid(
                    "recipients",
                    "a broadcast needs at least one recipient",
                ));
            }
            if list.len() > MAX_BROADCAST {
                return Err(ApiError::invalid(
                    "recipients",
                    format!("at most {MAX_BROADCAST} recipients"),
                ));
            }
            for (i, r) in list.iter().enumerate() {
                let chat = recipient(&format!("recipients[{i}]"), r)?;
                if chat.is_group() {
                    return Err(ApiError::invalid(
                        format!("recipients[{i}]"),
                        "broadcasts go to individuals, not groups",
                    ));
                }
                targets.push((chat, None));
            }
            targets.sort_by_key(|(c, _)| c.to_string());
            targets.dedup_by_key(|(c, _)| c.to_string());
        }
        other => {
            return Err(ApiError::invalid(
                "channel_type",
                format!("unknown channel `{other}`; expected group, individual or broadcast"),
            ))
        }
    }
    // Opt-outs: a send to a contact who opted out is refused, naming it.
    if body.channel_type != "group" {
        let chats: Vec<String> = targets.iter().map(|(c, _)| c.to_string()).collect();
        let refused = crate::directory::contacts::opted_out_chats(&state.pool, &chats).await?;
        if let Some((chat, contact)) = refused.first() {
            let field = match body.channel_type.as_str() {
                "broadcast" => "recipients",
                _ if body.target_phone.is_some() => "target_phone",
                _ => "target_chat_id",
            };
            let all: Vec<&str> = refused.iter().map(|(c, _)| c.as_str()).collect();
            return Err(ApiError::conflict_on(
                field,
                format!(
                    "contact {contact} ({chat}) opted out; nothing was sent{}",
                    if all.len() > 1 {
                        format!(" (opted out: {})", all.join(", "))
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    }
    let channel: &'static str = match body.channel_type.as_str() {
        "group" => "group",
        "individual" => "individual",
        _ => "broadcast",
    };
    let new: Vec<NewMessage> = targets
        .into_iter()
        .map(|(chat, gid)| NewMessage {
            account_id: Some(body.account_id),
            campaign_id: body.campaign_id,
            content_id: body.content_id,
            schedule_id: None,
            channel_type: channel,
            idempotency_key: body
                .idempotency_key
                .as_ref()
                .map(|k| format!("api:{k}:{chat}")),
            chat_id: chat,
            target_group_id: gid,
            target_contact_id: None,
            content: content.clone(),
            run_at: None,
            priority: 100,
            waiting_reason: None,
        })
        .collect();
    let out = create_batch(&state.pool, &new, Source::Api)
        .await
        .map_err(|e| match e {
            crate::queue::QueueError::Db(d) => ApiError::Database(d),
            other => ApiError::Conflict(crate::error::chain(&other)),
        })?;
    let created = out.iter().any(|c| c.created);
    if created {
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => "send")
            .increment(out.iter().filter(|c| c.created).count() as u64);
    }
    let ids: Vec<Uuid> = out.iter().map(|c| c.message_id).collect();
    let messages: Vec<MessageView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM mkt_wap_messages WHERE id = ANY($1) ORDER BY target_chat_id"
    )))
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SendResult { messages })))
}

/// Filters for `GET /v1/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageFilter {
    /// Only this status.
    #[param(value_type = Option<crate::message::MessageStatus>)]
    pub status: Option<String>,
    /// Only this account.
    pub account_id: Option<Uuid>,
    /// Only this campaign.
    pub campaign_id: Option<Uuid>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Cursor: messages after this id (ids are time-ordered).
    pub after: Option<Uuid>,
}

/// List messages, oldest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", operation_id = "listMessages", params(MessageFilter),
    responses((status = 200, body = [MessageView], description = "A page of messages"),
        (status = 422, body = ErrorBody, description = "A parameter breaks the document")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(f): Query<MessageFilter>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(s) = &f.status {
        if !crate::message::MessageStatus::ALL
            .map(crate::message::MessageStatus::as_str)
            .contains(&s.as_str())
        {
            return Err(ApiError::invalid(
                "status",
                format!(
                    "unknown status `{s}`; expected one of {}",
                    crate::message::MessageStatus::ALL
                        .map(crate::message::MessageStatus::as_str)
                        .join(", ")
                ),
            ));
        }
    }
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM mkt_wap_messages
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR account_id = $2)
           AND ($3::uuid IS NULL OR campaign_id = $3) AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5"
    )))
    .bind(f.status)
    .bind(f.account_id)
    .bind(f.campaign_id)
    .bind(f.after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// One entry of a message's history.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub(crate) struct MessageEvent {
    /// The status it moved to.
    #[schema(value_type = crate::message::MessageStatus)]
    pub status: String,
    /// The ack level, when an ack caused it.
    pub ack: Option<i16>,
    /// Who caused it.
    pub source: String,
    /// Extra facts.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// When.
    pub occurred_at: DateTime<Utc>,
}

/// A message with its history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageDetail {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// Every status change, oldest first.
    pub events: Vec<MessageEvent>,
}

/// Get a message with its event history.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", operation_id = "getMessage",
    params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, body = MessageDetail, description = "The message and its history"),
        (status = 404, body = ErrorBody, description = "No such message")))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<MessageDetail>, ApiError> {
    let message: MessageView = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM mkt_wap_messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("message"))?;
    let events = sqlx::query_as(
        "SELECT status, ack, source, detail, occurred_at FROM mkt_wap_message_events WHERE message_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(MessageDetail { message, events }))
}

/// Retry a failed message (at most `max_retries` times, with backoff by the queue). A
/// message whose account was retired goes back to `pending` for another account.
#[utoipa::path(post, path = "/v1/messages/{id}/retry", tag = "messages", operation_id = "retryMessage",
    params(("id" = Uuid, Path, description = "message id")),
    responses((status = 202, body = MessageView, description = "A retry was enqueued"),
        (status = 404, body = ErrorBody, description = "No such message"),
        (status = 409, body = ErrorBody, description = "The message is not failed, its retries are used up, or its contact opted out")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let mut tx = state.pool.begin().await?;
    let row: Option<(String, Option<Uuid>, i32, i32)> = sqlx::query_as(
        "SELECT status, account_id, retry_count, max_retries FROM mkt_wap_messages WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (status, account, retries, max) = row.ok_or(ApiError::NotFound("message"))?;
    if status != "failed" {
        return Err(ApiError::Conflict(format!(
            "the message is {status}; only failed messages can be retried"
        )));
    }
    if retries >= max {
        return Err(ApiError::Conflict(format!(
            "the message was retried {retries} times; the limit is {max}"
        )));
    }
    let account = account.ok_or_else(|| ApiError::Conflict("the message has no account".into()))?;
    let (chat, contact): (String, Option<Uuid>) = sqlx::query_as(
        "SELECT target_chat_id, target_contact_id FROM mkt_wap_messages WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if let Some((c, who)) =
        crate::directory::contacts::opted_out_target(&mut *tx, contact, &chat).await?
    {
        return Err(ApiError::Conflict(format!(
            "contact {c} ({who}) opted out; the message is not retried"
        )));
    }
    let retired: bool =
        sqlx::query_scalar("SELECT status = 'retired' FROM mkt_wap_accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(false);
    if retired {
        // Its account never sends again: the message waits for another one
        // (the next reassignment pass assigns it).
        crate::message::assignment::back_to_pending(
            &mut tx,
            &[id],
            &[format!(
                "retried by an operator; account {account} is retired, so the message waits \
                 for another account"
            )],
        )
        .await?;
        tx.commit().await?;
        return message_view(&state, id).await;
    }
    let job = crate::queue::NewJob::new(
        account,
        &courier_jobs::retry::RetryJob {
            message_id: id,
            retry_number: (retries + 1) as u32,
        },
    )
    .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let enq = crate::queue::store::enqueue_batch_in(&mut tx, std::slice::from_ref(&job))
        .await
        .map_err(|e| match e {
            crate::queue::QueueError::Db(d) => ApiError::Database(d),
            other => ApiError::Conflict(crate::error::chain(&other)),
        })?;
    crate::message::status::requeue_retry(&mut tx, id, enq[0].id, retries + 1).await?;
    tx.commit().await?;
    message_view(&state, id).await
}

async fn message_view(
    state: &AppState,
    id: Uuid,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let view = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM mkt_wap_messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
