//! The WhatsApp Web page object: every interaction Courier has with the page,
//! driven by the selectors of `config/selectors.toml` (never literals), each
//! step bounded by `browser.command_timeout`, with typed errors.
//!
//! Reads that need several facts (the login screen, message acks, the chat
//! list) are one `execute` round trip (about 3 ms) rather than many element
//! lookups (about 10 ms each).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, Locator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::selectors::{AckLevel, Selectors};
use crate::account::login::{phone_from_wid, PageView};

/// Errors of page commands.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// An element the contract names did not appear in time.
    #[error("selector `{name}` = `{css}` matched nothing within {waited:?}")]
    SelectorMissing {
        /// The contract key, e.g. `conversation.compose`.
        name: &'static str,
        /// The CSS.
        css: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A command or wait exceeded its timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// The session is logged out (`post_logout`, or the QR is shown).
    #[error("the WhatsApp session is logged out")]
    LoggedOut,
    /// The number is blocked (ban screen).
    #[error("the number is blocked")]
    Blocked,
    /// WhatsApp is open in another window.
    #[error("WhatsApp is open in another window (conflict)")]
    Conflict,
    /// WhatsApp refused the send (quota/rate limit toast, error ack).
    #[error("WhatsApp refused the send: {0}")]
    QuotaRefused(String),
    /// The page is not on the main screen (still loading, or showing a QR).
    #[error("the page is not ready: {0}")]
    NotReady(String),
    /// Media could not be read or fetched, or is over the size cap.
    #[error("media: {0}")]
    Media(String),
    /// The chat is not in the list and cannot be opened by phone.
    #[error("chat {0} cannot be opened")]
    NoSuchChat(String),
    /// The browser or its WebDriver went away: an infrastructure fault, not
    /// the account's. The session is restarted; health is untouched.
    #[error("browser session lost: {0}")]
    SessionLost(String),
    /// Any other WebDriver error.
    #[error("webdriver: {0}")]
    WebDriver(String),
}

impl PageError {
    /// Whether the fault is the browser's, not the account's.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, PageError::SessionLost(_))
    }
}

impl From<CmdError> for PageError {
    fn from(e: CmdError) -> Self {
        match &e {
            CmdError::Standard(w)
                if matches!(
                    w.error,
                    ErrorStatus::InvalidSessionId | ErrorStatus::SessionNotCreated
                ) =>
            {
                PageError::SessionLost(e.to_string())
            }
            CmdError::Standard(w)
                if matches!(w.error, ErrorStatus::UnknownError)
                    && (w.message.contains("disconnected")
                        || w.message.contains("not reachable")
                        || w.message.contains("crashed")) =>
            {
                PageError::SessionLost(e.to_string())
            }
            CmdError::Lost(_) | CmdError::FailedC(_) => PageError::SessionLost(e.to_string()),
            _ => {
                let s = e.to_string();
                if s.contains("connection") || s.contains("Connection") || s.contains("hyper") {
                    PageError::SessionLost(s)
                } else {
                    PageError::WebDriver(s)
                }
            }
        }
    }
}

/// A chat row of the side pane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// `…@c.us` or `…@g.us`.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A group participant, as the info drawer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// `…@c.us` or `…@lid`.
    pub id: String,
    /// Shown name.
    pub name: Option<String>,
    /// Shown phone (for `@lid` members, the only place it appears).
    pub phone: Option<String>,
    /// Group admin.
    pub admin: bool,
    /// Group owner.
    pub super_admin: bool,
}

/// An outgoing message as the open chat shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// `true_<chat>_<ID>`.
    pub data_id: String,
    /// The text (body or caption).
    pub text: Option<String>,
    /// The ack level shown.
    pub ack: Option<AckLevel>,
    /// Carries a media block.
    pub media: bool,
    /// Carries a link preview.
    pub link_preview: bool,
}

impl OutgoingMessage {
    /// The WhatsApp message id (the part after the chat).
    pub fn message_id(&self) -> &str {
        self.data_id.rsplit('_').next().unwrap_or(&self.data_id)
    }
}

/// Where a media file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    /// A local file.
    Path(PathBuf),
    /// Fetched with reqwest into `browser.media_dir` (size-capped).
    Url(String),
}

/// Media limits for [`WhatsAppPage::send_media`].
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Staging directory for downloads.
    pub dir: PathBuf,
    /// Fetches URLs under the SSRF policy and the size cap (which also
    /// bounds local files).
    pub fetcher: crate::media::MediaFetcher,
}

impl MediaOptions {
    /// Public addresses only, `max_bytes` cap, 30 s, 3 redirects.
    pub fn public_only(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            fetcher: crate::media::MediaFetcher::new(
                crate::media::AddressPolicy::default(),
                crate::media::FetchLimits {
                    max_bytes,
                    timeout: Duration::from_secs(30),
                    max_redirects: 3,
                },
            ),
        }
    }
}

/// One account's WhatsApp Web tab.
#[derive(Debug, Clone)]
pub struct WhatsAppPage {
    client: Client,
    sel: Arc<Selectors>,
    url: String,
    timeout: Duration,
    media: MediaOptions,
}

const STATE_JS: &str = r#"
const s = arguments[0];
const q = (c) => document.querySelector(c);
const qr = q(s.qr);
const token = qr ? qr.getAttribute(s.qr_attr) : null;
let md = null, wid = null;
try { md = localStorage.getItem(s.md); wid = localStorage.getItem(s.wid); } catch (e) {}
return {
  url: location.href,
  qr: token && token.length > 0 && q(s.qr_canvas) ? token : null,
  qr_exhausted: !!q(s.qr_reload),
  loading: !!q(s.progress),
  main: !!q(s.main),
  conflict: !!q(s.conflict),
  banned: !!q(s.banned),
  md: md, wid: wid
};
"#;

const OUTGOING_JS: &str = r#"
const s = arguments[0];
const rows = Array.from(document.querySelectorAll(s.outgoing));
const out = rows.slice(Math.max(0, rows.length - arguments[1])).map((r) => {
  const t = r.querySelector(s.text);
  const i = r.querySelector(s.icon);
  return {
    data_id: r.getAttribute(s.id_attr),
    text: t ? t.innerText : null,
    icon: i ? i.getAttribute(s.icon_attr) : null,
    label: i ? i.getAttribute('aria-label') : null,
    media: !!r.querySelector(s.media),
    link_preview: !!r.querySelector(s.link_preview)
  };
});
return out;
"#;

#[derive(Deserialize)]
struct RawOutgoing {
    data_id: String,
    text: Option<String>,
    icon: Option<String>,
    label: Option<String>,
    media: bool,
    link_preview: bool,
}

impl WhatsAppPage {
    /// Wraps a WebDriver session showing (or about to show) `url`.
    pub fn new(
        client: Client,
        sel: Arc<Selectors>,
        url: String,
        timeout: Duration,
        media: MediaOptions,
    ) -> Self {
        Self {
            client,
            sel,
            url,
            timeout,
            media,
        }
    }

    /// The WebDriver client (escape hatch for tests and benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The selectors in use.
    pub fn selectors(&self) -> &Selectors {
        &self.sel
    }

    /// Runs one WebDriver command under the command timeout, timing it.
    async fn cmd<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, CmdError>>,
    ) -> Result<T, PageError> {
        let started = Instant::now();
        let r = tokio::time::timeout(self.timeout, fut).await;
        metrics::histogram!(crate::metrics::BROWSER_COMMAND_SECONDS, "command" => what)
            .record(started.elapsed().as_secs_f64());
        match r {
            Ok(r) => r.map_err(PageError::from),
            Err(_) => Err(PageError::Timeout {
                what: what.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn js(
        &self,
        what: &'static str,
        script: &str,
        args: Vec<Value>,
    ) -> Result<Value, PageError> {
        self.cmd(what, self.client.execute(script, args)).await
    }

    /// Navigates to WhatsApp Web (returns at once: pageLoadStrategy none).
    pub async fn open(&self) -> Result<(), PageError> {
        self.cmd("goto", self.client.goto(&self.url)).await
    }

    /// Navigates to `url` on the same site (e.g. `/send?phone=`).
    async fn goto(&self, url: &str) -> Result<(), PageError> {
        self.cmd("goto", self.client.goto(url)).await
    }

    /// Reads the whole login-relevant page state in one round trip.
    pub async fn view(&self) -> Result<PageView, PageError> {
        let s = &self.sel;
        let v = self
            .js(
                "state",
                STATE_JS,
                vec![json!({
                    "qr": s.login.qr_container, "qr_attr": s.login.qr_ref_attr,
                    "qr_canvas": s.login.qr_canvas, "qr_reload": s.login.qr_reload_button,
                    "progress": s.loading.progress, "main": s.main.ready,
                    "conflict": s.faults.conflict, "banned": s.faults.banned,
                    "md": s.storage.last_wid_md_key, "wid": s.storage.last_wid_key,
                })],
            )
            .await?;
        let url = v["url"].as_str().unwrap_or_default().to_string();
        let logged_out = url::Url::parse(&url)
            .map(|u| {
                u.query_pairs()
                    .any(|(k, v)| k == s.loading.post_logout_param.as_str() && v == "1")
            })
            .unwrap_or(false);
        let phone = v["md"]
            .as_str()
            .and_then(phone_from_wid)
            .or_else(|| v["wid"].as_str().and_then(phone_from_wid));
        Ok(PageView {
            url,
            qr: v["qr"].as_str().map(str::to_string),
            qr_exhausted: v["qr_exhausted"].as_bool().unwrap_or(false),
            loading: v["loading"].as_bool().unwrap_or(false),
            main: v["main"].as_bool().unwrap_or(false),
            conflict: v["conflict"].as_bool().unwrap_or(false),
            banned: v["banned"].as_bool().unwrap_or(false),
            logged_out,
            phone,
        })
    }

    /// The QR token on screen, if any.
    pub async fn qr_token(&self) -> Result<Option<String>, PageError> {
        Ok(self.view().await?.qr)
    }

    /// The own number from localStorage `last-wid-md`, falling back to `last-wid`.
    pub async fn own_number(&self) -> Result<Option<String>, PageError> {
        Ok(self.view().await?.phone)
    }

    /// Clicks "Use here" on the conflict screen.
    pub async fn click_use_here(&self) -> Result<(), PageError> {
        let b = self
            .wait_for("faults.use_here_button", &self.sel.faults.use_here_button)
            .await?;
        self.cmd("click", b.click()).await
    }

    /// Clicks "reload QR" once the refs ran out.
    pub async fn reload_qr(&self) -> Result<(), PageError> {
        let b = self
            .wait_for("login.qr_reload_button", &self.sel.login.qr_reload_button)
            .await?;
        self.cmd("click", b.click()).await
    }

    /// Waits (up to the command timeout) for `css` to match.
    pub async fn wait_for(
        &self,
        name: &'static str,
        css: &str,
    ) -> Result<fantoccini::elements::Element, PageError> {
        self.wait_for_within(name, css, self.timeout).await
    }

    async fn wait_for_within(
        &self,
        name: &'static str,
        css: &str,
        within: Duration,
    ) -> Result<fantoccini::elements::Element, PageError> {
        let started = Instant::now();
        loop {
            let found = self
                .cmd("find", self.client.find_all(Locator::Css(css)))
                .await?;
            if let Some(e) = found.into_iter().next() {
                return Ok(e);
            }
            if started.elapsed() >= within {
                return Err(PageError::SelectorMissing {
                    name,
                    css: css.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Fails with the fault the page shows, if any; else requires the main screen.
    pub async fn ensure_ready(&self) -> Result<PageView, PageError> {
        let v = self.view().await?;
        if v.banned {
            return Err(PageError::Blocked);
        }
        if v.logged_out || v.qr.is_some() || v.qr_exhausted {
            return Err(PageError::LoggedOut);
        }
        if v.conflict {
            return Err(PageError::Conflict);
        }
        if !v.main {
            return Err(PageError::NotReady(if v.loading {
                "loading".into()
            } else {
                "no main screen".into()
            }));
        }
        Ok(v)
    }

    /// Waits until the main screen is up (or a fault shows), up to `within`.
    pub async fn wait_ready(&self, within: Duration) -> Result<PageView, PageError> {
        let started = Instant::now();
        loop {
            match self.ensure_ready().await {
                Err(PageError::NotReady(why)) => {
                    if started.elapsed() >= within {
                        return Err(PageError::NotReady(why));
                    }
                }
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

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
                .map_err(|e| PageError::Media(e.to_string())),
        }
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

    /// Ends the WebDriver session cleanly (Chromium flushes the profile).
    pub async fn close(self) -> Result<(), PageError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.client.close()).await {
            Ok(r) => r.map_err(PageError::from),
            Err(_) => Err(PageError::Timeout {
                what: "close".into(),
                after: timeout,
            }),
        }
    }
}

/// `text` as keystrokes for a compose box: every line break is typed as
/// Shift+Enter (WebDriver's Shift, Enter, then Null to release Shift), which
/// starts a new line. A bare Enter would send what was typed so far, cutting
/// one message into several.
fn typed(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::typed;

    #[test]
    fn line_breaks_are_typed_as_shift_enter() {
        assert_eq!(typed("plain"), "plain");
        assert_eq!(typed("a\tb"), "a b");
        assert_eq!(
            typed("a\nb\r\nc\rd"),
            "a\u{E008}\u{E007}\u{E000}b\u{E008}\u{E007}\u{E000}c\u{E008}\u{E007}\u{E000}d"
        );
    }
}
