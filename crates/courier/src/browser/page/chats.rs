//! Reading chats: the chat list, opening a chat by id, the outgoing messages
//! and their acks, and a group's participants.

use super::*;

impl WhatsAppPage {
    /// The chats of the side pane.
    pub async fn chat_list(&self) -> Result<Vec<ChatSummary>, PageError> {
        self.ensure_ready().await?;
        let s = &self.sel;
        let v = self
            .js(
                "chat_list",
                "const s = arguments[0]; return Array.from(document.querySelectorAll(s.item)).map((r) => { \
                   const t = r.querySelector(s.title); \
                   return { id: r.getAttribute(s.id_attr), name: t ? (t.getAttribute('title') || t.innerText) : '' }; \
                 }).filter((c) => c.id);",
                vec![json!({ "item": s.chat_list.item, "title": s.chat_list.title, "id_attr": s.chat_list.chat_id_attr })],
            )
            .await?;
        serde_json::from_value(v).map_err(|e| PageError::WebDriver(e.to_string()))
    }

    /// Which chat is open, by the header title and the open chat's rows.
    async fn open_chat_id(&self) -> Result<Option<String>, PageError> {
        let s = &self.sel;
        let v = self
            .js(
                "open_chat_id",
                "const s = arguments[0]; if (!document.querySelector(s.main)) return null; \
                 const sel = document.querySelector(s.item + '.selected'); \
                 return sel ? sel.getAttribute(s.id_attr) : (window.__courierChat || null);",
                vec![json!({ "main": s.conversation.main, "item": s.chat_list.item, "id_attr": s.chat_list.chat_id_attr })],
            )
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Opens a chat: by its row in the side pane, or for a contact not in the
    /// list by the `/send?phone=` URL.
    pub async fn open_chat(&self, chat: &str) -> Result<(), PageError> {
        self.ensure_ready().await?;
        if self.open_chat_id().await?.as_deref() == Some(chat) {
            return Ok(());
        }
        let s = &self.sel;
        let css = format!(
            "{}[{}=\"{}\"]",
            s.chat_list.item, s.chat_list.chat_id_attr, chat
        );
        let rows = self
            .cmd("find", self.client.find_all(Locator::Css(&css)))
            .await?;
        if let Some(row) = rows.into_iter().next() {
            self.cmd("click", row.click()).await?;
        } else if let Some(digits) = chat.strip_suffix("@c.us") {
            let mut u =
                url::Url::parse(&self.url).map_err(|e| PageError::WebDriver(e.to_string()))?;
            u.set_path("/send");
            u.query_pairs_mut().append_pair("phone", digits);
            self.goto(u.as_str()).await?;
            self.wait_ready(self.timeout).await?;
            // The page opens the chat by itself once the main screen is up.
        } else {
            return Err(PageError::NoSuchChat(chat.to_string()));
        }
        self.wait_for("conversation.compose", &s.conversation.compose)
            .await?;
        // Remember which chat is open (rows opened by URL carry no selection).
        self.js(
            "mark_chat",
            "window.__courierChat = arguments[0]; return null;",
            vec![json!(chat)],
        )
        .await?;
        Ok(())
    }

    /// The last `limit` outgoing messages of the open chat (oldest first).
    pub async fn recent_outgoing_in_open_chat(
        &self,
        limit: usize,
    ) -> Result<Vec<OutgoingMessage>, PageError> {
        let s = &self.sel;
        let v = self
            .js(
                "outgoing",
                OUTGOING_JS,
                vec![
                    json!({
                        "outgoing": s.message.outgoing, "text": s.message.text, "icon": s.ack.icon,
                        "icon_attr": s.ack.icon_attr, "id_attr": s.message.id_attr,
                        "media": s.message.media, "link_preview": s.message.link_preview,
                    }),
                    json!(limit),
                ],
            )
            .await?;
        let raw: Vec<RawOutgoing> =
            serde_json::from_value(v).map_err(|e| PageError::WebDriver(e.to_string()))?;
        Ok(raw
            .into_iter()
            .map(|r| OutgoingMessage {
                ack: r
                    .icon
                    .as_deref()
                    .and_then(|i| s.ack_from_icon(i, r.label.as_deref())),
                data_id: r.data_id,
                text: r.text,
                media: r.media,
                link_preview: r.link_preview,
            })
            .collect())
    }

    /// For the retry path: the last `limit` outgoing messages in `chat`, so a
    /// retry can tell whether an earlier attempt already reached WhatsApp.
    pub async fn recent_outgoing(
        &self,
        chat: &str,
        limit: usize,
    ) -> Result<Vec<OutgoingMessage>, PageError> {
        self.open_chat(chat).await?;
        // Rows render from the page's next state poll; give them a moment.
        let started = Instant::now();
        loop {
            let rows = self.recent_outgoing_in_open_chat(limit).await?;
            if !rows.is_empty() || started.elapsed() > Duration::from_millis(1500) {
                return Ok(rows);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ack level of an outgoing message in the open chat.
    pub async fn ack(&self, data_id: &str) -> Result<Option<AckLevel>, PageError> {
        let s = &self.sel;
        let v = self
            .js(
                "ack",
                "const s = arguments[0]; \
                 const r = Array.from(document.querySelectorAll(s.row)).find((e) => e.getAttribute(s.id_attr) === arguments[1]); \
                 if (!r) return null; const i = r.querySelector(s.icon); \
                 return i ? [i.getAttribute(s.icon_attr), i.getAttribute('aria-label')] : null;",
                vec![
                    json!({ "row": s.message.row, "id_attr": s.message.id_attr, "icon": s.ack.icon, "icon_attr": s.ack.icon_attr }),
                    json!(data_id),
                ],
            )
            .await?;
        Ok(v.as_array()
            .and_then(|a| s.ack_from_icon(a.first()?.as_str()?, a.get(1).and_then(Value::as_str))))
    }

    /// Reads every participant of a group, scrolling its lazily rendered list
    /// until the count shown is reached (or rows stop coming).
    pub async fn participants(&self, group: &str) -> Result<Vec<Participant>, PageError> {
        self.open_chat(group).await?;
        let s = &self.sel;
        let title = self
            .wait_for("conversation.header_title", &s.conversation.header_title)
            .await?;
        self.cmd("click", title.click()).await?;
        self.wait_for("group_info.list", &s.group_info.list).await?;
        let g = &s.group_info;
        let args = json!({
            "list": g.list, "row": g.participant, "id_attr": g.participant_id_attr, "name": g.name,
            "phone": g.phone, "badge": g.admin_badge, "admin": g.admin_text, "owner": g.super_admin_text,
            "count": g.member_count,
        });
        let script = "const s = arguments[0]; const list = document.querySelector(s.list); \
            if (list) list.scrollTop = list.scrollHeight; \
            const c = document.querySelector(s.count); const m = c ? c.innerText.match(/(\\d+)/) : null; \
            return { total: m ? parseInt(m[1], 10) : null, rows: Array.from(document.querySelectorAll(s.row)).map((r) => { \
              const n = r.querySelector(s.name), p = r.querySelector(s.phone), b = r.querySelector(s.badge); \
              const bt = b ? b.innerText.trim() : ''; \
              return { id: r.getAttribute(s.id_attr), name: n ? n.innerText : null, phone: p ? p.innerText : null, \
                       admin: bt === s.admin || bt === s.owner, super_admin: bt === s.owner }; }) };";
        let started = Instant::now();
        let mut last = 0usize;
        let mut stalled = Instant::now();
        loop {
            let v = self.js("participants", script, vec![args.clone()]).await?;
            let rows: Vec<Participant> = serde_json::from_value(v["rows"].clone())
                .map_err(|e| PageError::WebDriver(e.to_string()))?;
            let total = v["total"].as_u64().map(|t| t as usize);
            if total.is_some_and(|t| rows.len() >= t) {
                let close = self
                    .wait_for("group_info.close_button", &g.close_button)
                    .await?;
                self.cmd("click", close.click()).await?;
                return Ok(rows);
            }
            if rows.len() > last {
                last = rows.len();
                stalled = Instant::now();
            } else if stalled.elapsed() > Duration::from_secs(3) {
                // The list stopped growing: return what it shows.
                return Ok(rows);
            }
            if started.elapsed() > self.timeout * 8 {
                return Err(PageError::Timeout {
                    what: format!("reading participants of {group} ({last} so far)"),
                    after: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
}
