//! The WhatsApp Web page object: every interaction Courier has with the page,
//! each step bounded by `browser.command_timeout`, with typed errors.
//!
//! Data and actions go through WhatsApp Web's own modules (`window.require`,
//! names from `config/wa-web.toml`, see [`super::waweb`]), called from a
//! bridge script evaluated in the page (`page/bridge.js`) over WebDriver's
//! execute-async: chats, groups and members, the exists-check, sends, acks.
//! The DOM (`config/selectors.toml`) is read only for what must be seen: the
//! QR, the loading, login and fault screens.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, Locator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::selectors::{AckLevel, Selectors};
use super::waweb::WaWeb;
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
    /// The number is not registered on WhatsApp (the exists-check said so).
    #[error("{0}: not on WhatsApp")]
    NotOnWhatsApp(String),
    /// The page lacks a module or method of `config/wa-web.toml`: WhatsApp
    /// shipped a build this names file does not describe.
    #[error("WhatsApp Web build not supported: {0} missing")]
    Unsupported(String),
    /// A script evaluated in the page threw; the page's message.
    #[error("script error in the page ({what}): {message}")]
    Script {
        /// The bridge call.
        what: String,
        /// The page's error message.
        message: String,
    },
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
    /// When the page stamped it (`t`, Unix seconds), when known.
    pub t: Option<i64>,
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
    names: Arc<WaWeb>,
    names_json: Arc<Value>,
    url: String,
    timeout: Duration,
    media: MediaOptions,
    /// Set once a command found the browser gone ([`PageError::SessionLost`]):
    /// the pool then opens a new session instead of handing this one out (a
    /// remote node that died has no local process to watch).
    lost: Arc<std::sync::atomic::AtomicBool>,
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

impl WhatsAppPage {
    /// Wraps a WebDriver session showing (or about to show) `url`.
    pub fn new(
        client: Client,
        sel: Arc<Selectors>,
        names: Arc<WaWeb>,
        url: String,
        timeout: Duration,
        media: MediaOptions,
    ) -> Self {
        Self {
            client,
            sel,
            names_json: Arc::new(names.names_json()),
            names,
            url,
            timeout,
            media,
            lost: Arc::default(),
        }
    }

    /// Whether a command found the browser gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Maps a WebDriver error, remembering a lost session.
    fn cmd_error(&self, e: CmdError) -> PageError {
        let e = PageError::from(e);
        if e.is_infrastructure() {
            self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }

    /// The WebDriver client (escape hatch for tests and benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The selectors in use.
    pub fn selectors(&self) -> &Selectors {
        &self.sel
    }

    /// The module names in use.
    pub fn wa_web(&self) -> &WaWeb {
        &self.names
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
            Ok(r) => r.map_err(|e| self.cmd_error(e)),
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
        let stored = v["md"]
            .as_str()
            .and_then(phone_from_wid)
            .or_else(|| v["wid"].as_str().and_then(phone_from_wid));
        // The connection state, the sync and the own id come from the
        // modules; the DOM gives the QR and the fault screens (evidence too).
        let wa = match self.wa_state().await {
            Ok(w) => Some(w),
            // Modules not loaded yet (the page is still starting).
            Err(PageError::NotReady(_)) => None,
            Err(e) => return Err(e),
        };
        let main = wa.as_ref().is_some_and(|w| w.connected && w.synced);
        let own_id = wa
            .as_ref()
            .and_then(|w| w.me.clone())
            .filter(|id| !id.is_empty());
        let phone = own_id.as_deref().and_then(phone_from_wid).or(stored);
        Ok(PageView {
            url,
            qr: v["qr"].as_str().map(str::to_string),
            qr_exhausted: v["qr_exhausted"].as_bool().unwrap_or(false),
            loading: v["loading"].as_bool().unwrap_or(false),
            main,
            conflict: v["conflict"].as_bool().unwrap_or(false)
                || wa.as_ref().is_some_and(|w| w.conflict),
            banned: v["banned"].as_bool().unwrap_or(false)
                || wa.as_ref().is_some_and(|w| w.blocked),
            logged_out: logged_out || wa.as_ref().is_some_and(|w| w.logout),
            phone,
            own_id,
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

mod bridge;
mod chats;
mod send;
mod storage;

pub use bridge::{GroupSummary, WaState};
pub use storage::{Exported, Imported, BLANK_PATH};

pub use send::{as_shown, NumberCheck};

#[cfg(test)]
mod tests;
