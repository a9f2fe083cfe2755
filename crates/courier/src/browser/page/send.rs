//! Sending: typing into the compose box (line breaks as Shift+Enter), links,
//! media staged from a URL or the media directory, and the wait for the
//! server tick that proves WhatsApp accepted the message.

use super::*;

impl WhatsAppPage {
    /// Waits for the outgoing row that a send just added (one not in `before`),
    /// then for its first server ack or a refusal.
    /// `seen`: toasts shown before the send (only a newer one is this send's).
    async fn await_sent(
        &self,
        before: &[String],
        seen: usize,
        text: Option<&str>,
    ) -> Result<OutgoingMessage, PageError> {
        let started = Instant::now();
        // `before` can miss rows: the page opens a chat with an empty history
        // and fills it in from the server moments later, so an older message
        // may appear "new". The row must also carry the text just typed (the
        // caption of a media send), trimmed as the page shows it, with its
        // line breaks as typed (see `typed`).
        let want = text.map(as_shown);
        let want = want.as_deref().map(str::trim).filter(|t| !t.is_empty());
        loop {
            let rows = self.recent_outgoing_in_open_chat(5).await?;
            if let Some(m) = rows.into_iter().rev().find(|m| {
                !before.contains(&m.data_id)
                    && want.is_none_or(|w| m.text.as_deref().map(str::trim) == Some(w))
            }) {
                match m.ack {
                    Some(AckLevel::Error) => {
                        let toast = self.toasts().await?.1.unwrap_or_else(|| "error ack".into());
                        return Err(PageError::QuotaRefused(toast));
                    }
                    Some(AckLevel::Pending) | None => {}
                    Some(_) => return Ok(m),
                }
            }
            if let Some(t) = self.toast_after(seen).await? {
                return Err(PageError::QuotaRefused(t));
            }
            if started.elapsed() > self.timeout {
                // Check for a fault that replaced the chat.
                self.ensure_ready().await?;
                return Err(PageError::Timeout {
                    what: "waiting for the sent message's server ack".into(),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// The newest toast, if more toasts are shown than `seen` (toasts live
    /// a few seconds: one left over from an earlier refusal is not this
    /// send's).
    async fn toast_after(&self, seen: usize) -> Result<Option<String>, PageError> {
        let (count, text) = self.toasts().await?;
        Ok(if count > seen { text } else { None })
    }

    /// How many toasts are shown, and the newest one's text.
    async fn toasts(&self) -> Result<(usize, Option<String>), PageError> {
        let v = self
            .js(
                "toast",
                "const t = document.querySelectorAll(arguments[0]); \
                 return [t.length, t.length ? t[t.length - 1].innerText : null];",
                vec![json!(self.sel.conversation.toast)],
            )
            .await?;
        Ok((
            v[0].as_u64().unwrap_or(0) as usize,
            v[1].as_str().map(str::to_string),
        ))
    }

    async fn outgoing_ids(&self) -> Result<Vec<String>, PageError> {
        Ok(self
            .recent_outgoing_in_open_chat(50)
            .await?
            .into_iter()
            .map(|m| m.data_id)
            .collect())
    }

    /// Sends text to `chat` and returns the message once WhatsApp accepted it
    /// (one tick). A refusal is [`PageError::QuotaRefused`].
    pub async fn send_text(&self, chat: &str, text: &str) -> Result<OutgoingMessage, PageError> {
        self.open_chat(chat).await?;
        let before = self.outgoing_ids().await?;
        let seen = self.toasts().await?.0;
        let s = &self.sel;
        let compose = self
            .wait_for("conversation.compose", &s.conversation.compose)
            .await?;
        self.cmd("type", compose.send_keys(&typed(text))).await?;
        let send = self
            .wait_for("conversation.send_button", &s.conversation.send_button)
            .await?;
        self.cmd("click", send.click()).await?;
        self.await_sent(&before, seen, Some(text)).await
    }

    /// Sends text containing a URL, waiting for the link preview before sending.
    pub async fn send_link(&self, chat: &str, text: &str) -> Result<OutgoingMessage, PageError> {
        self.open_chat(chat).await?;
        let before = self.outgoing_ids().await?;
        let seen = self.toasts().await?.0;
        let s = &self.sel;
        let compose = self
            .wait_for("conversation.compose", &s.conversation.compose)
            .await?;
        self.cmd("type", compose.send_keys(&typed(text))).await?;
        self.wait_for(
            "conversation.compose_link_preview",
            &s.conversation.compose_link_preview,
        )
        .await?;
        let send = self
            .wait_for("conversation.send_button", &s.conversation.send_button)
            .await?;
        self.cmd("click", send.click()).await?;
        self.await_sent(&before, seen, Some(text)).await
    }

    /// Sends a media file (from a path, or a URL fetched with a size cap) with
    /// an optional caption; `as_document` uses the document input.
    pub async fn send_media(
        &self,
        chat: &str,
        source: &MediaSource,
        caption: Option<&str>,
        as_document: bool,
    ) -> Result<OutgoingMessage, PageError> {
        let path = self.stage_media(source).await?;
        self.open_chat(chat).await?;
        let before = self.outgoing_ids().await?;
        let seen = self.toasts().await?.0;
        let s = &self.sel;
        let attach = self
            .wait_for("attach.attach_button", &s.attach.attach_button)
            .await?;
        self.cmd("click", attach.click()).await?;
        let (name, css) = if as_document {
            ("attach.document_input", &s.attach.document_input)
        } else {
            ("attach.media_input", &s.attach.media_input)
        };
        let input = self.wait_for(name, css).await?;
        let abs = std::fs::canonicalize(&path).map_err(|e| PageError::Media(e.to_string()))?;
        self.cmd("upload", input.send_keys(&abs.to_string_lossy()))
            .await?;
        if let Some(c) = caption.filter(|c| !c.is_empty()) {
            let cap = self.wait_for("attach.caption", &s.attach.caption).await?;
            self.cmd("type", cap.send_keys(&typed(c))).await?;
        }
        let send = self
            .wait_for("attach.send_button", &s.attach.send_button)
            .await?;
        self.cmd("click", send.click()).await?;
        let r = self.await_sent(&before, seen, caption).await;
        if matches!(source, MediaSource::Url(_)) {
            let _ = std::fs::remove_file(&path);
        }
        r
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

/// `text` as keystrokes for a compose box: every line break is typed as
/// Shift+Enter (WebDriver's Shift, Enter, then Null to release Shift), which
/// starts a new line. A bare Enter would send what was typed so far, cutting
/// one message into several.
pub(super) fn typed(text: &str) -> String {
    as_shown(text).replace('\n', "\u{E008}\u{E007}\u{E000}")
}

/// `text` as Courier types it and the page shows it once sent: `\r\n` and
/// `\r` become `\n`, and a tab a space (a typed Tab would move the focus out
/// of the compose box, and the rest of the text with it). Compare a message's
/// text with the page's through this.
pub fn as_shown(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\t', " ")
}
