//! Sending through the modules: text, a link with its preview, and media
//! passed into the page as bytes (base64 plus MIME type, never a file path,
//! so a browser on another machine needs no shared disk). A send returns once
//! the send action's second promise settled (the server has the message) with
//! the message's id and its ack.

use base64::Engine as _;

use super::*;

/// Whether a send asks WhatsApp first if its number is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberCheck {
    /// Send without asking (a chat in the list, a group, an answer known).
    Skip,
    /// Ask, in the same page call as the send, when the chat is not in the
    /// chat list (`queryWidExists`); a number that is not on WhatsApp is
    /// [`PageError::NotOnWhatsApp`] and nothing is sent.
    Ask,
}

/// What the page reports after a send.
#[derive(Deserialize)]
struct Sent {
    id: String,
    ack: Option<i64>,
    settled: String,
    view: Option<RawOutgoingView>,
}

#[derive(Deserialize)]
struct RawOutgoingView {
    text: Option<String>,
    media: bool,
    link_preview: bool,
    t: Option<i64>,
}

/// The first http(s) URL in `text`.
pub(crate) fn first_url(text: &str) -> Option<&str> {
    let start = text.find("https://").or_else(|| text.find("http://"))?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

impl WhatsAppPage {
    async fn send_via_modules(
        &self,
        chat: &str,
        args: Value,
        text: Option<&str>,
        check: NumberCheck,
    ) -> Result<OutgoingMessage, PageError> {
        self.ensure_ready().await?;
        let mut args = args;
        args["target"] = json!(chat);
        args["checkNumber"] = json!(check == NumberCheck::Ask);
        args["deadline"] = json!(self.timeout.as_millis() as u64);
        let v = self
            .bridge_within("send", args, self.timeout + Duration::from_secs(2))
            .await?;
        let sent: Sent = serde_json::from_value(v).map_err(|e| PageError::Script {
            what: "send".into(),
            message: format!("unexpected answer: {e}"),
        })?;
        let ack = sent.ack.and_then(AckLevel::from_code);
        match ack {
            Some(AckLevel::Error) => Err(PageError::QuotaRefused(format!(
                "message {} got the error ack",
                sent.id
            ))),
            Some(AckLevel::Pending) | None => {
                // The second promise did not settle in time, or settled with
                // the message still pending: the outcome is unknown.
                self.ensure_ready().await?;
                Err(PageError::Timeout {
                    what: format!(
                        "waiting for the server to take message {} ({})",
                        sent.id, sent.settled
                    ),
                    after: self.timeout,
                })
            }
            Some(_) => {
                let view = sent.view;
                Ok(OutgoingMessage {
                    data_id: sent.id,
                    text: view
                        .as_ref()
                        .and_then(|v| v.text.clone())
                        .or(text.map(str::to_string)),
                    ack,
                    media: view.as_ref().is_some_and(|v| v.media),
                    link_preview: view.as_ref().is_some_and(|v| v.link_preview),
                    t: view.as_ref().and_then(|v| v.t),
                })
            }
        }
    }

    /// Sends text to `chat` and returns the message once WhatsApp took it
    /// (one tick). A refusal is [`PageError::QuotaRefused`]; with
    /// [`NumberCheck::Ask`], a number that is not on WhatsApp is
    /// [`PageError::NotOnWhatsApp`] and nothing is sent.
    pub async fn send_text(
        &self,
        chat: &str,
        text: &str,
        check: NumberCheck,
    ) -> Result<OutgoingMessage, PageError> {
        self.send_via_modules(chat, json!({ "text": text }), Some(text), check)
            .await
    }

    /// Sends text containing a URL with the link preview WhatsApp Web builds for it.
    pub async fn send_link(
        &self,
        chat: &str,
        text: &str,
        check: NumberCheck,
    ) -> Result<OutgoingMessage, PageError> {
        let link = first_url(text);
        self.send_via_modules(
            chat,
            json!({ "text": text, "url": link }),
            Some(text),
            check,
        )
        .await
    }

    /// Sends a media file (from a path, or a URL fetched with a size cap)
    /// with an optional caption; `as_document` sends it as a document. The
    /// bytes go into the page; the page never sees a path.
    pub async fn send_media(
        &self,
        chat: &str,
        source: &MediaSource,
        caption: Option<&str>,
        as_document: bool,
        check: NumberCheck,
    ) -> Result<OutgoingMessage, PageError> {
        let path = self.stage_media(source).await?;
        let bytes = tokio::fs::read(&path).await;
        if matches!(source, MediaSource::Url(_)) {
            let _ = std::fs::remove_file(&path);
        }
        let bytes = bytes.map_err(|e| PageError::Media(format!("{}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mime = mime_of(&name);
        let media = json!({
            "b64": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "fname": name,
            "mimeType": mime,
            "asDocument": as_document,
        });
        let caption = caption.filter(|c| !c.is_empty());
        self.send_via_modules(
            chat,
            json!({ "text": caption, "file": media }),
            caption,
            check,
        )
        .await
    }

    /// Checks a local file against the cap, or downloads a URL into the media
    /// directory, refusing anything over the cap (by header and by count).
    async fn stage_media(&self, source: &MediaSource) -> Result<PathBuf, PageError> {
        let max = self.media.fetcher.limits().max_bytes;
        match source {
            MediaSource::Path(p) => {
                let meta = std::fs::metadata(p)
                    .map_err(|e| PageError::Media(format!("{}: {e}", p.display())))?;
                if !meta.is_file() {
                    return Err(PageError::Media(format!("{} is not a file", p.display())));
                }
                if meta.len() > max {
                    return Err(PageError::Media(format!(
                        "{} is {} bytes, over the {max}-byte cap",
                        p.display(),
                        meta.len()
                    )));
                }
                Ok(p.clone())
            }
            MediaSource::Url(u) => self
                .media
                .fetcher
                .fetch(u, &self.media.dir)
                .await
                .map_err(|e| PageError::Media(crate::error::chain(&e))),
        }
    }
}

/// The MIME type for a file name's extension (WhatsApp Web's media
/// preparation decides image, video or document from it).
pub(crate) fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "3gp" => "video/3gpp",
        "mov" => "video/quicktime",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// `text` as the page shows it once sent: `\r\n` and `\r` become `\n`, and a
/// tab a space. Compare a message's text with the page's through this.
pub fn as_shown(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\t', " ")
}
