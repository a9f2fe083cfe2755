//! `send`: deliver one message through one account.
//!
//! A send is two things: the [`SendRequest`] a producer submits (validated
//! here, at the edge) and the [`SendJob`] the queue runs. The message row in
//! `mkt_wap_messages` is created at enqueue time and is the single source of
//! truth for the content; the job only names it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ChatId, JobKind, JobPayload, MessageBody, ValidationError};

/// Largest media file Courier will send (WhatsApp's own cap for documents is
/// larger; this is Courier's default safety cap and can be lowered in config).
pub const MAX_MEDIA_BYTES: u64 = 64 * 1024 * 1024;

/// Where a media file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// A file under the configured media directory (confinement is checked by
    /// the worker against its own configuration).
    Path(String),
    /// An http(s) URL, fetched at send time with a size cap.
    Url(url::Url),
}

impl MediaSource {
    /// Parses a URL or a relative path; absolute paths and `..` are refused.
    pub fn parse_url(input: &str) -> Result<Self, ValidationError> {
        let url = url::Url::parse(input).map_err(|e| {
            ValidationError::new("media_url", format!("`{input}` is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::new(
                "media_url",
                format!(
                    "scheme `{}` is not allowed; use http or https",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ValidationError::new("media_url", "has no host"));
        }
        Ok(Self::Url(url))
    }

    /// Parses a media path relative to the media directory.
    pub fn parse_path(input: &str) -> Result<Self, ValidationError> {
        let err = |d: &str| ValidationError::new("media_path", d.to_string());
        if input.trim().is_empty() {
            return Err(err("is empty"));
        }
        if input.starts_with('/') {
            return Err(err("must be relative to the media directory"));
        }
        if input.split('/').any(|c| c == "..") {
            return Err(err("must not contain `..`"));
        }
        if input.contains('\0') {
            return Err(err("contains a NUL byte"));
        }
        Ok(Self::Path(input.to_string()))
    }
}

/// The kinds of media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// Any file, sent as a document.
    Document,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        body: MessageBody,
    },
    /// A media file with an optional caption.
    Media {
        /// Image, video or document.
        kind: MediaKind,
        /// Where the file comes from.
        source: MediaSource,
        /// Optional caption.
        caption: Option<MessageBody>,
    },
    /// Text with a link, sent with its preview.
    Link {
        /// The link (http or https).
        url: url::Url,
        /// Text around the link; the URL is appended when the text lacks it.
        body: Option<MessageBody>,
    },
}

impl Content {
    /// The seed's `message_type`.
    pub fn message_type(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Media {
                kind: MediaKind::Image,
                ..
            } => "image",
            Content::Media {
                kind: MediaKind::Video,
                ..
            } => "video",
            Content::Media {
                kind: MediaKind::Document,
                ..
            } => "document",
            Content::Link { .. } => "link",
        }
    }

    /// The text that is typed into the compose box (body, caption, or link text).
    pub fn typed_text(&self) -> Option<String> {
        match self {
            Content::Text { body } => Some(body.as_str().to_string()),
            Content::Media { caption, .. } => caption.as_ref().map(|c| c.as_str().to_string()),
            Content::Link { url, body } => Some(match body {
                Some(b) if b.as_str().contains(url.as_str()) => b.as_str().to_string(),
                Some(b) => format!("{} {}", b.as_str(), url),
                None => url.to_string(),
            }),
        }
    }
}

/// Where a message goes (the seed's `channel_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Target {
    /// A group chat.
    Group {
        /// `…@g.us`.
        chat_id: ChatId,
    },
    /// One person.
    Individual {
        /// `…@c.us` or `…@lid`.
        chat_id: ChatId,
    },
    /// A list of people, expanded into one message each.
    Broadcast {
        /// Each recipient.
        chat_ids: Vec<ChatId>,
    },
}

/// Most recipients in one broadcast request.
pub const MAX_BROADCAST: usize = 10_000;

impl Target {
    /// Checks the chat ids match the channel.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Target::Group { chat_id } if !chat_id.is_group() => Err(ValidationError::new(
                "target.chat_id",
                format!("`{chat_id}` is not a group id (…@g.us)"),
            )),
            Target::Individual { chat_id } if chat_id.is_group() => Err(ValidationError::new(
                "target.chat_id",
                format!("`{chat_id}` is a group id; use channel `group`"),
            )),
            Target::Broadcast { chat_ids } => {
                if chat_ids.is_empty() {
                    return Err(ValidationError::new("target.chat_ids", "is empty"));
                }
                if chat_ids.len() > MAX_BROADCAST {
                    return Err(ValidationError::new(
                        "target.chat_ids",
                        format!("has {} recipients; at most {MAX_BROADCAST}", chat_ids.len()),
                    ));
                }
                if let Some((i, c)) = chat_ids.iter().enumerate().find(|(_, c)| c.is_group()) {
                    return Err(ValidationError::new(
                        format!("target.chat_ids[{i}]"),
                        format!("`{c}` is a group id; broadcasts go to individuals"),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The individual chats this target expands to (one message each).
    pub fn chats(&self) -> Vec<&ChatId> {
        match self {
            Target::Group { chat_id } | Target::Individual { chat_id } => vec![chat_id],
            Target::Broadcast { chat_ids } => chat_ids.iter().collect(),
        }
    }

    /// The seed's `channel_type`.
    pub fn channel_type(&self) -> &'static str {
        match self {
            Target::Group { .. } => "group",
            Target::Individual { .. } => "individual",
            Target::Broadcast { .. } => "broadcast",
        }
    }
}

/// A producer's request to send: validated before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The sending account; `None` lets the scheduler's assignment pick one.
    pub account_id: Option<Uuid>,
    /// The campaign the message belongs to.
    pub campaign_id: Option<Uuid>,
    /// The content item it was made from.
    pub content_id: Option<Uuid>,
    /// Where it goes.
    pub target: Target,
    /// What it says.
    pub content: Content,
}

impl SendRequest {
    /// Validates the request as a whole.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.target.validate()
    }
}

/// The queued job: send the message row `message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendJob {
    /// The row in `mkt_wap_messages`.
    pub message_id: Uuid,
}

impl JobPayload for SendJob {
    const KIND: JobKind = JobKind::Send;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("send:{}", self.message_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(s: &str) -> ChatId {
        ChatId::parse(s).unwrap()
    }

    #[test]
    fn group_target_must_be_a_group() {
        let t = Target::Group {
            chat_id: chat("447700900123@c.us"),
        };
        assert_eq!(t.validate().unwrap_err().field, "target.chat_id");
        let t = Target::Individual {
            chat_id: chat("120363012345678901@g.us"),
        };
        assert!(t.validate().is_err());
    }

    #[test]
    fn broadcast_names_the_bad_recipient() {
        let t = Target::Broadcast {
            chat_ids: vec![chat("447700900123@c.us"), chat("120363012345678901@g.us")],
        };
        assert_eq!(t.validate().unwrap_err().field, "target.chat_ids[1]");
        assert!(Target::Broadcast { chat_ids: vec![] }.validate().is_err());
    }

    #[test]
    fn media_sources_are_confined() {
        assert!(MediaSource::parse_url("ftp://x/y.png").is_err());
        assert!(MediaSource::parse_url("not a url").is_err());
        assert!(MediaSource::parse_url("https://cdn.example.com/a.png").is_ok());
        assert!(MediaSource::parse_path("../etc/passwd").is_err());
        assert!(MediaSource::parse_path("/etc/passwd").is_err());
        assert!(MediaSource::parse_path("promo/a.png").is_ok());
    }

    #[test]
    fn link_text_includes_the_url_once() {
        let url = url::Url::parse("https://example.com/x").unwrap();
        let c = Content::Link {
            url: url.clone(),
            body: Some(MessageBody::parse("see").unwrap()),
        };
        assert_eq!(c.typed_text().unwrap(), "see https://example.com/x");
        let c = Content::Link {
            url,
            body: Some(MessageBody::parse("see https://example.com/x now").unwrap()),
        };
        assert_eq!(c.typed_text().unwrap(), "see https://example.com/x now");
    }

    #[test]
    fn send_job_key_is_per_message() {
        let id = Uuid::nil();
        assert_eq!(
            SendJob { message_id: id }.idempotency_key().unwrap(),
            format!("send:{id}")
        );
    }
}
