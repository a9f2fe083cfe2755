//! The simulated WhatsApp: accounts, their pairing and sessions, chats, groups
//! and the messages that reached "WhatsApp", all in memory.
//!
//! Everything that changes with time (which QR ref is showing, how far a
//! message's ack has got, whether loading is over) is computed from instants
//! on demand by pure functions, so no timer task can drift or be forgotten;
//! [`World::page_view`] also reports the next instant its answer will change,
//! which the long-poll waits for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use courier::browser::selectors::AckLevel;
use courier::jobs::ids::{ChatId, ChatKind, MessageBody, PhoneNumber};

use super::SimConfig;

/// Errors from control and page calls; each maps to a 4xx naming the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    /// No account with that id.
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    /// An account with that id already exists.
    #[error("account `{0}` already exists")]
    AccountExists(String),
    /// A field failed validation.
    #[error("invalid `{field}`: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The scanned token is not the one on screen now.
    #[error("stale QR token: {0}")]
    StaleToken(&'static str),
    /// No chat with that id is known.
    #[error("unknown chat `{0}`")]
    UnknownChat(String),
    /// No message with that id.
    #[error("unknown message `{0}`")]
    UnknownMessage(String),
    /// The page is not logged in (or its session was revoked).
    #[error("not logged in")]
    NotLoggedIn,
    /// The page is logged in but not on the main screen.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The account is blocked.
    #[error("account is blocked")]
    Blocked,
    /// A message id was reused for different content.
    #[error("message id `{0}` was already used for a different message")]
    DuplicateId(String),
    /// The send was refused for quota.
    #[error("send refused: quota exceeded")]
    Quota,
}

impl SimError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SimError::UnknownAccount(_) => "unknown_account",
            SimError::AccountExists(_) => "account_exists",
            SimError::Invalid { .. } => "invalid",
            SimError::StaleToken(_) => "stale_token",
            SimError::UnknownChat(_) => "unknown_chat",
            SimError::UnknownMessage(_) => "unknown_message",
            SimError::NotLoggedIn => "not_logged_in",
            SimError::NotReady(_) => "not_ready",
            SimError::Blocked => "blocked",
            SimError::DuplicateId(_) => "duplicate_id",
            SimError::Quota => "quota",
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            SimError::Invalid { field, .. } => Some(field),
            SimError::StaleToken(_) => Some("token"),
            SimError::UnknownChat(_) => Some("chat"),
            SimError::UnknownAccount(_) | SimError::AccountExists(_) => Some("account"),
            _ => None,
        }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SimError {
    SimError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Parses a phone number, naming the field on error.
pub(crate) fn parse_phone(field: &'static str, s: &str) -> Result<PhoneNumber, SimError> {
    PhoneNumber::parse(s).map_err(|e| invalid(field, e.detail))
}

/// Parses a chat id, naming the field on error.
pub(crate) fn parse_chat(field: &'static str, s: &str) -> Result<ChatId, SimError> {
    ChatId::parse(s).map_err(|e| invalid(field, e.detail))
}

/// How fast acks advance, per account (copied onto each message when sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckTiming {
    /// From receipt to one tick.
    pub server_ms: u64,
    /// From one tick to two ticks.
    pub device_ms: u64,
    /// From two ticks to blue ticks.
    pub read_ms: u64,
    /// The level progression stops at (`read` = runs to the end).
    pub stop: AckLevel,
}

impl Default for AckTiming {
    fn default() -> Self {
        Self {
            server_ms: 300,
            device_ms: 1_000,
            read_ms: 3_000,
            stop: AckLevel::Read,
        }
    }
}

/// The ack level `elapsed` after receipt: pure, monotonic in `elapsed`, capped at `stop`.
pub fn ack_after(elapsed: Duration, t: &AckTiming) -> AckLevel {
    let ms = elapsed.as_millis() as u64;
    let server = t.server_ms;
    let device = server.saturating_add(t.device_ms);
    let read = device.saturating_add(t.read_ms);
    let level = if ms >= read {
        AckLevel::Read
    } else if ms >= device {
        AckLevel::Device
    } else if ms >= server {
        AckLevel::Server
    } else {
        AckLevel::Pending
    };
    level.min(t.stop.max(AckLevel::Pending))
}

/// How long after receipt the ack next changes, if it ever does.
pub fn next_ack_change(elapsed: Duration, t: &AckTiming) -> Option<Duration> {
    let server = t.server_ms;
    let device = server.saturating_add(t.device_ms);
    let read = device.saturating_add(t.read_ms);
    let ms = elapsed.as_millis() as u64;
    [
        (AckLevel::Server, server),
        (AckLevel::Device, device),
        (AckLevel::Read, read),
    ]
    .into_iter()
    .find(|(level, at)| *level <= t.stop && *at > ms)
    .map(|(_, at)| Duration::from_millis(at))
}

/// Which QR ref is on screen `elapsed` after the pairing started, or `None`
/// once the refs ran out: the first lives `first`, each later one `next`.
pub fn ref_index(elapsed: Duration, first: Duration, next: Duration, max_refs: u32) -> Option<u32> {
    let idx = if elapsed < first {
        0
    } else {
        let next_ms = next.as_millis().max(1);
        1 + ((elapsed - first).as_millis() / next_ms).min(u128::from(u32::MAX - 1)) as u32
    };
    (idx < max_refs).then_some(idx)
}

/// When (after the pairing started) ref `idx` is replaced.
pub fn ref_deadline(idx: u32, first: Duration, next: Duration) -> Duration {
    first + next * idx
}

/// Per-account faults, set through the control API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Authenticated but never ready: the loading screen never ends.
    pub stuck_loading: bool,
    /// "WhatsApp is open in another window", until "Use here" is clicked.
    pub conflict: bool,
    /// The ban screen.
    pub blocked: bool,
    /// Every send is refused for quota.
    pub refuse_sends: bool,
    /// Added to every page response, in milliseconds.
    pub latency_ms: u64,
    /// The next N sends reach WhatsApp, then the page reloads before showing them.
    pub reload_mid_send: u32,
    /// The account is known by its LID only (as WhatsApp moves accounts to
    /// LIDs): the own id is `<lid>@lid` (`getMaybeMeLidUser`, and in
    /// storage), with no phone-number id (`getMaybeMePnUser` gives null).
    pub lid_only: bool,
}

/// A partial update of [`Faults`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    stuck_loading: Option<bool>,
    conflict: Option<bool>,
    blocked: Option<bool>,
    refuse_sends: Option<bool>,
    latency_ms: Option<u64>,
    reload_mid_send: Option<u32>,
    lid_only: Option<bool>,
}

/// A partial update of [`AckTiming`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckTimingPatch {
    server_ms: Option<u64>,
    device_ms: Option<u64>,
    read_ms: Option<u64>,
    stop: Option<AckLevel>,
}

/// A media attachment, as the page describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// `image`, `video` or `document`.
    pub kind: MediaKind,
    /// The file name.
    pub name: String,
    /// Its MIME type.
    pub mime: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Kinds of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A photo.
    Image,
    /// A video.
    Video,
    /// Any other file.
    Document,
}

/// One outgoing message that reached (or was refused by) "WhatsApp".
#[derive(Debug, Clone)]
struct SentMessage {
    id: String,
    chat: ChatId,
    body: Option<String>,
    media: Option<Media>,
    link_preview: Option<String>,
    received_at: DateTime<Utc>,
    received: Instant,
    timing: AckTiming,
    /// The highest level already shown before a stop was lowered: never go below it.
    floor: AckLevel,
    refused: bool,
}

impl SentMessage {
    fn ack(&self, now: Instant) -> AckLevel {
        if self.refused {
            return AckLevel::Error;
        }
        ack_after(now.saturating_duration_since(self.received), &self.timing).max(self.floor)
    }

    fn data_id(&self) -> String {
        format!("true_{}_{}", self.chat, self.id)
    }

    fn view(&self, now: Instant) -> MessageView {
        let ack = self.ack(now);
        MessageView {
            id: self.id.clone(),
            data_id: self.data_id(),
            chat: self.chat.to_string(),
            body: self.body.clone(),
            media: self.media.clone(),
            link_preview: self.link_preview.clone(),
            received_at: self.received_at,
            ack,
            ack_code: ack.code(),
        }
    }
}

/// A message with the id of the account that sent it.
pub type AccountMessage = (String, MessageView);

/// A message as read back by the control API and shown by the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// The message ID (the `<ID>` of `true_<chat>_<ID>`).
    pub id: String,
    /// The row's `data-id`.
    pub data_id: String,
    /// The chat.
    pub chat: String,
    /// Text, or the media caption.
    pub body: Option<String>,
    /// The attachment.
    pub media: Option<Media>,
    /// The URL previewed.
    pub link_preview: Option<String>,
    /// When the simulator received it.
    pub received_at: DateTime<Utc>,
    /// The ack level now.
    pub ack: AckLevel,
    /// The same, as whatsapp-web.js numbers it.
    pub ack_code: i8,
}

/// A group participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// `@c.us` or `@lid`.
    pub id: String,
    /// The phone number (for `@lid`, shown separately).
    pub phone: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Group admin.
    pub admin: bool,
    /// Group owner.
    pub super_admin: bool,
}

/// A participant as given to the control API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSpec {
    /// `@c.us` or `@lid` id; derived from `phone` when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Group admin.
    #[serde(default)]
    pub admin: bool,
    /// Group owner.
    #[serde(default)]
    pub super_admin: bool,
}

impl ParticipantSpec {
    fn parse(self) -> Result<Participant, SimError> {
        let phone = self
            .phone
            .as_deref()
            .map(|p| parse_phone("participants.phone", p))
            .transpose()?;
        let id = match (&self.id, &phone) {
            (Some(id), _) => parse_chat("participants.id", id)?,
            (None, Some(p)) => p.chat_id(),
            (None, None) => return Err(invalid("participants", "each needs an `id` or a `phone`")),
        };
        if id.kind() == ChatKind::Group {
            return Err(invalid(
                "participants.id",
                format!("`{id}` is a group; participants are @c.us or @lid"),
            ));
        }
        if let (ChatKind::Contact, Some(p)) = (id.kind(), &phone) {
            if id.user() != p.digits() {
                return Err(invalid(
                    "participants.phone",
                    format!("`{}` does not match id `{id}`", p.e164()),
                ));
            }
        }
        let phone = phone.or_else(|| {
            (id.kind() == ChatKind::Contact).then(|| PhoneNumber::parse(id.user()).ok())?
        });
        Ok(Participant {
            id: id.to_string(),
            phone: phone.map(|p| p.e164()),
            name: self.name,
            admin: self.admin || self.super_admin,
            super_admin: self.super_admin,
        })
    }
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    participants: Vec<Participant>,
}

#[derive(Debug, Clone)]
struct Pairing {
    client: String,
    started: Instant,
    refs: Vec<String>,
}

#[derive(Debug, Clone)]
struct Session {
    token: String,
    phone: PhoneNumber,
    device: u32,
    /// The page that scanned: it receives the token without presenting one.
    client: String,
}

impl Session {
    fn wid_md(&self) -> String {
        format!("{}:{}@c.us", self.phone.digits(), self.device)
    }
    fn wid(&self) -> String {
        format!("{}@c.us", self.phone.digits())
    }
    /// A LID for the account: digits that are not its phone number.
    fn lid(&self) -> String {
        format!("8{}", self.phone.digits().chars().rev().collect::<String>())
    }
}

impl Account {
    fn join_chat(&mut self, c: ChatId) {
        if self.chat_set.insert(c.clone()) {
            self.chats.push(c);
        }
    }
}

#[derive(Debug)]
struct Account {
    phone: Option<PhoneNumber>,
    name: Option<String>,
    devices_linked: u32,
    session: Option<Session>,
    /// One QR pairing per page showing the login screen, oldest first.
    pairings: Vec<Pairing>,
    /// When each page (client id) with a valid session finishes loading.
    ready_at: HashMap<String, Instant>,
    faults: Faults,
    timing: AckTiming,
    /// The chat list, in the order chats joined it.
    chats: Vec<ChatId>,
    /// The same, for membership tests.
    chat_set: HashSet<ChatId>,
    messages: Vec<SentMessage>,
    /// Index into `messages` by message ID (sends are de-duplicated by it).
    by_id: HashMap<String, usize>,
    /// Indexes into `messages` per chat, oldest first (what an open chat shows).
    by_chat: HashMap<ChatId, Vec<usize>>,
    /// Refused sends are not counted as delivered.
    delivered: usize,
    /// Exists queries the account's pages made.
    exists_queries: u64,
}

/// What the page should show, computed per request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "screen", rename_all = "snake_case")]
pub enum PageView {
    /// The QR login screen.
    Qr {
        /// The token in `data-ref`, absent once the refs ran out.
        token: Option<String>,
        /// The QR modules, one string of `0`/`1` per row.
        modules: Vec<String>,
    },
    /// Loading after the scan or on a restored session.
    Loading {
        /// Percent.
        progress: u32,
        /// The session to store, when the page has none yet.
        session: Option<SessionView>,
    },
    /// The main screen.
    Main {
        /// The session to store (the page compares and writes if changed).
        session: SessionView,
        /// Every chat (the `Chat` collection; the DOM list shows the first
        /// [`MAX_CHAT_LIST`]).
        chats: Vec<ChatView>,
        /// The open chat's messages, oldest first.
        messages: Vec<MessageView>,
        /// The account's latest [`MAX_MSG_MODELS`] messages (the `Msg`
        /// collection), oldest first.
        msgs: Vec<MessageView>,
    },
    /// "WhatsApp is open in another window".
    Conflict,
    /// The ban screen.
    Banned,
    /// The session was revoked: navigate to `post_logout=1` and forget it.
    LoggedOut,
}

/// What the page keeps in localStorage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// The session token.
    pub token: String,
    /// `<digits>:<device>@c.us`.
    pub last_wid_md: String,
    /// `<digits>@c.us`.
    pub last_wid: String,
}

/// One row of the chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatView {
    /// The chat id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// True for `@g.us`.
    pub group: bool,
    /// Participant count for groups.
    pub members: usize,
}

/// An account as the control API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// The account id (the page's `?account=`).
    pub id: String,
    /// Its phone, once known.
    pub phone: Option<String>,
    /// Its display name.
    pub name: Option<String>,
    /// `unpaired`, `pairing` or `paired`.
    pub link: &'static str,
    /// `<digits>:<device>@c.us` while paired.
    pub wid: Option<String>,
    /// Current faults.
    pub faults: Faults,
    /// Current ack timing for new messages.
    pub ack_timing: AckTiming,
    /// Chats in its list.
    pub chats: Vec<String>,
    /// Messages that reached WhatsApp (refused ones not counted).
    pub messages: usize,
    /// Exists queries (`queryWidExists`) its pages made.
    pub exists_queries: u64,
}

/// The whole simulated world.
#[derive(Debug)]
pub struct World {
    pub(crate) config: SimConfig,
    accounts: BTreeMap<String, Account>,
    groups: HashMap<ChatId, Group>,
    contacts: BTreeMap<PhoneNumber, Option<String>>,
    /// Numbers that are not on WhatsApp.
    unregistered: HashSet<PhoneNumber>,
    next_group: u64,
}

/// Chats the page's list shows at most.
pub const MAX_CHAT_LIST: usize = 200;

/// Messages the page's `Msg` collection holds at most (the latest).
pub const MAX_MSG_MODELS: usize = 500;

/// QR pages remembered per account; the oldest is forgotten beyond this.
const MAX_PAIRINGS: usize = 16;

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64(&bytes)
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Standard base64 with padding (the QR token's fields use it).
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A QR token shaped like the real one: `ref,staticKey,identityKey,advSecret,platform`.
fn new_qr_token() -> String {
    format!(
        "2@{},{},{},{},WEB",
        random_b64(48),
        random_b64(32),
        random_b64(32),
        random_b64(32)
    )
}

/// The QR modules of `token`, one `0`/`1` string per row.
pub fn qr_modules(token: &str) -> Vec<String> {
    match qrcode::QrCode::new(token.as_bytes()) {
        Ok(code) => {
            let w = code.width();
            code.to_colors()
                .chunks(w)
                .map(|row| {
                    row.iter()
                        .map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' })
                        .collect()
                })
                .collect()
        }
        Err(_) => Vec::new(),
    }
}

/// An account id: 1–64 of `[A-Za-z0-9_.-]`.
pub(crate) fn check_account_id(id: &str) -> Result<(), SimError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "id",
            format!("`{id}` must be 1 to 64 letters, digits, `_`, `-` or `.`"),
        ));
    }
    Ok(())
}

fn check_message_id(id: &str) -> Result<(), SimError> {
    if !(8..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("id", "must be 8 to 64 letters or digits"));
    }
    Ok(())
}

/// A message the page sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outgoing {
    /// The ID the page generated (as the real page does).
    pub id: String,
    /// The chat.
    pub chat: String,
    /// Text, or the caption of `media`.
    #[serde(default)]
    pub body: Option<String>,
    /// The attachment.
    #[serde(default)]
    pub media: Option<Media>,
    /// The URL the page previewed.
    #[serde(default)]
    pub link_preview: Option<String>,
}

/// The outcome of a send the simulator accepted.
#[derive(Debug, Clone, Serialize)]
pub struct SendOutcome {
    /// The message as recorded.
    pub message: MessageView,
    /// The page must reload now (the `reload_mid_send` fault).
    pub reload: bool,
    /// The same ID was sent before; nothing new was recorded.
    pub duplicate: bool,
}

impl World {
    /// An empty world.
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            accounts: BTreeMap::new(),
            groups: HashMap::new(),
            contacts: BTreeMap::new(),
            unregistered: HashSet::new(),
            next_group: 0,
        }
    }

    /// Forgets everything but the configuration.
    pub fn reset(&mut self) {
        *self = Self::new(self.config);
    }

    fn account(&self, id: &str) -> Result<&Account, SimError> {
        self.accounts
            .get(id)
            .ok_or_else(|| SimError::UnknownAccount(id.to_string()))
    }

    fn account_mut(&mut self, id: &str) -> Result<&mut Account, SimError> {
        self.accounts
            .get_mut(id)
            .ok_or_else(|| SimError::UnknownAccount(id.to_string()))
    }

    /// The account's page latency (0 for unknown accounts).
    pub fn latency(&self, id: &str) -> Duration {
        self.accounts
            .get(id)
            .map(|a| Duration::from_millis(a.faults.latency_ms))
            .unwrap_or_default()
    }

    /// Creates an account; the id is generated when absent.
    pub fn create_account(
        &mut self,
        id: Option<String>,
        phone: Option<&str>,
        name: Option<String>,
    ) -> Result<AccountView, SimError> {
        let id = match id {
            Some(id) => {
                check_account_id(&id)?;
                id
            }
            None => format!("acc{}", self.accounts.len() + 1),
        };
        if self.accounts.contains_key(&id) {
            return Err(SimError::AccountExists(id));
        }
        let phone = phone.map(|p| parse_phone("phone", p)).transpose()?;
        self.accounts.insert(
            id.clone(),
            Account {
                phone,
                name,
                devices_linked: 0,
                session: None,
                pairings: Vec::new(),
                ready_at: HashMap::new(),
                faults: Faults::default(),
                timing: self.config.ack,
                chats: Vec::new(),
                chat_set: HashSet::new(),
                messages: Vec::new(),
                by_id: HashMap::new(),
                by_chat: HashMap::new(),
                delivered: 0,
                exists_queries: 0,
            },
        );
        self.account_view(&id)
    }

    /// Lists accounts.
    pub fn accounts(&self) -> Vec<AccountView> {
        self.accounts
            .keys()
            .filter_map(|id| self.account_view(id).ok())
            .collect()
    }

    /// One account's state.
    pub fn account_view(&self, id: &str) -> Result<AccountView, SimError> {
        let a = self.account(id)?;
        Ok(AccountView {
            id: id.to_string(),
            phone: a.phone.as_ref().map(PhoneNumber::e164),
            name: a.name.clone(),
            link: match (&a.session, a.pairings.is_empty()) {
                (Some(_), _) => "paired",
                (None, false) => "pairing",
                (None, true) => "unpaired",
            },
            wid: a.session.as_ref().map(Session::wid_md),
            faults: a.faults.clone(),
            ack_timing: a.timing,
            chats: a.chats.iter().map(ToString::to_string).collect(),
            messages: a.delivered,
            exists_queries: a.exists_queries,
        })
    }

    /// The QR token on screen now, with how long it has left.
    pub fn current_qr(&self, id: &str, now: Instant) -> Result<(String, u32, Duration), SimError> {
        let a = self.account(id)?;
        if a.pairings.is_empty() {
            return Err(SimError::StaleToken(
                "no QR code is on screen for this account",
            ));
        }
        // The newest page showing a live QR.
        a.pairings
            .iter()
            .rev()
            .find_map(|p| p.current(&self.config, now))
            .ok_or(SimError::StaleToken(
                "the QR refs ran out; the page shows a reload button",
            ))
    }

    /// Plays the phone's scan of `token`.
    pub fn scan(
        &mut self,
        id: &str,
        token: &str,
        phone: &str,
        now: Instant,
    ) -> Result<AccountView, SimError> {
        let phone = parse_phone("phone", phone)?;
        self.current_qr(id, now)?;
        let cfg = self.config;
        let loading = cfg.loading;
        let a = self.account_mut(id)?;
        if a.faults.blocked {
            return Err(SimError::Blocked);
        }
        let Some(at) = a
            .pairings
            .iter()
            .position(|p| p.current(&cfg, now).is_some_and(|(t, _, _)| t == token))
        else {
            let known = a.pairings.iter().any(|p| p.refs.iter().any(|r| r == token));
            return Err(SimError::StaleToken(if known {
                "that token was rotated out; scan the one on screen now"
            } else {
                "that token was never shown for this account"
            }));
        };
        if let Some(own) = &a.phone {
            if *own != phone {
                return Err(invalid(
                    "phone",
                    format!("account has phone {}, not {}", own.e164(), phone.e164()),
                ));
            }
        }
        let pairing = a.pairings.remove(at);
        a.devices_linked += 1;
        a.phone = Some(phone.clone());
        a.ready_at.clear();
        a.ready_at.insert(pairing.client.clone(), now + loading);
        a.session = Some(Session {
            token: random_hex(16),
            phone,
            device: a.devices_linked,
            client: pairing.client,
        });
        self.account_view(id)
    }

    /// Revokes the account's session: its pages navigate to `post_logout=1`.
    pub fn logout(&mut self, id: &str) -> Result<AccountView, SimError> {
        let a = self.account_mut(id)?;
        a.session = None;
        a.pairings.clear();
        a.ready_at.clear();
        self.account_view(id)
    }

    /// Updates faults.
    pub fn set_faults(&mut self, id: &str, p: FaultsPatch) -> Result<Faults, SimError> {
        let f = &mut self.account_mut(id)?.faults;
        if let Some(v) = p.stuck_loading {
            f.stuck_loading = v;
        }
        if let Some(v) = p.conflict {
            f.conflict = v;
        }
        if let Some(v) = p.blocked {
            f.blocked = v;
        }
        if let Some(v) = p.refuse_sends {
            f.refuse_sends = v;
        }
        if let Some(v) = p.latency_ms {
            if v > 60_000 {
                return Err(invalid("latency_ms", "at most 60000"));
            }
            f.latency_ms = v;
        }
        if let Some(v) = p.reload_mid_send {
            f.reload_mid_send = v;
        }
        if let Some(v) = p.lid_only {
            f.lid_only = v;
        }
        Ok(f.clone())
    }

    /// Updates ack timing for messages sent from now on.
    pub fn set_ack_timing(&mut self, id: &str, p: AckTimingPatch) -> Result<AckTiming, SimError> {
        if p.stop == Some(AckLevel::Error) {
            return Err(invalid("stop", "must be pending, server, device or read"));
        }
        let t = &mut self.account_mut(id)?.timing;
        if let Some(v) = p.server_ms {
            t.server_ms = v;
        }
        if let Some(v) = p.device_ms {
            t.device_ms = v;
        }
        if let Some(v) = p.read_ms {
            t.read_ms = v;
        }
        if let Some(v) = p.stop {
            t.stop = v;
        }
        Ok(*t)
    }

    /// Sets where one message's ack stops. Never lowers what was already shown.
    pub fn set_message_stop(
        &mut self,
        id: &str,
        msg: &str,
        stop: AckLevel,
        now: Instant,
    ) -> Result<MessageView, SimError> {
        if stop == AckLevel::Error {
            return Err(invalid("stop", "must be pending, server, device or read"));
        }
        let a = self.account_mut(id)?;
        let m = a
            .by_id
            .get(msg)
            .and_then(|i| a.messages.get_mut(*i))
            .ok_or_else(|| SimError::UnknownMessage(msg.to_string()))?;
        m.floor = m.ack(now).max(AckLevel::Pending);
        m.timing.stop = stop;
        Ok(m.view(now))
    }

    /// Adds a contact (and its chat to `account`'s list when given).
    pub fn add_contact(&mut self, phone: &str, name: Option<String>) -> Result<String, SimError> {
        let phone = parse_phone("phone", phone)?;
        let id = phone.chat_id().to_string();
        self.contacts.insert(phone, name);
        Ok(id)
    }

    /// Creates a group; its id is generated when absent.
    pub fn create_group(
        &mut self,
        id: Option<&str>,
        name: String,
        participants: Vec<ParticipantSpec>,
    ) -> Result<String, SimError> {
        if name.trim().is_empty() {
            return Err(invalid("name", "is empty"));
        }
        let id = match id {
            Some(id) => {
                let c = parse_chat("id", id)?;
                if !c.is_group() {
                    return Err(invalid("id", format!("`{id}` is not a @g.us id")));
                }
                c
            }
            None => {
                self.next_group += 1;
                parse_chat("id", &format!("1203630{:011}@g.us", self.next_group))?
            }
        };
        let participants = participants
            .into_iter()
            .map(ParticipantSpec::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut g = Group {
            name,
            participants: Vec::new(),
        };
        add_participants(&mut g, participants);
        self.groups.insert(id.clone(), g);
        Ok(id.to_string())
    }

    /// Adds (or updates) participants of a group.
    pub fn add_participants(
        &mut self,
        group: &str,
        participants: Vec<ParticipantSpec>,
    ) -> Result<usize, SimError> {
        let gid = parse_chat("group", group)?;
        let parsed = participants
            .into_iter()
            .map(ParticipantSpec::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let g = self
            .groups
            .get_mut(&gid)
            .ok_or_else(|| SimError::UnknownChat(group.to_string()))?;
        add_participants(g, parsed);
        Ok(g.participants.len())
    }

    /// Puts a chat in an account's list (group membership or a contact chat).
    pub fn add_chat(&mut self, id: &str, chat: &str) -> Result<AccountView, SimError> {
        let c = parse_chat("chat", chat)?;
        match c.kind() {
            ChatKind::Group if !self.groups.contains_key(&c) => {
                return Err(SimError::UnknownChat(chat.to_string()))
            }
            ChatKind::Lid => return Err(invalid("chat", "chats are @c.us or @g.us")),
            _ => {}
        }
        let a = self.account_mut(id)?;
        a.join_chat(c);
        self.account_view(id)
    }

    /// Messages that reached WhatsApp for `account` (or every account), and the refused ones.
    pub fn messages(
        &self,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(Vec<AccountMessage>, Vec<AccountMessage>), SimError> {
        if let Some(id) = account {
            self.account(id)?;
        }
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for (id, a) in &self.accounts {
            if account.is_some_and(|x| x != id) {
                continue;
            }
            for m in &a.messages {
                let v = (id.clone(), m.view(now));
                if m.refused {
                    refused.push(v);
                } else {
                    ok.push(v);
                }
            }
        }
        Ok((ok, refused))
    }

    fn chat_name(&self, c: &ChatId) -> String {
        match c.kind() {
            ChatKind::Group => self
                .groups
                .get(c)
                .map(|g| g.name.clone())
                .unwrap_or_else(|| c.to_string()),
            _ => PhoneNumber::parse(c.user())
                .ok()
                .and_then(|p| self.contacts.get(&p).cloned().flatten())
                .unwrap_or_else(|| format!("+{}", c.user())),
        }
    }

    /// A page of a group's participants, for the lazily rendered info drawer.
    pub fn participants(
        &self,
        group: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<Participant>), SimError> {
        let gid = parse_chat("chat", group)?;
        let g = self
            .groups
            .get(&gid)
            .ok_or_else(|| SimError::UnknownChat(group.to_string()))?;
        let page = g
            .participants
            .iter()
            .skip(offset)
            .take(limit.min(200))
            .cloned()
            .collect();
        Ok((g.participants.len(), page))
    }

    /// Checks `session` is the account's live one and the page is on the main screen.
    fn ready_session(
        &self,
        id: &str,
        client: &str,
        token: Option<&str>,
        now: Instant,
    ) -> Result<(), SimError> {
        let a = self.account(id)?;
        if a.faults.blocked {
            return Err(SimError::Blocked);
        }
        let s = a.session.as_ref().ok_or(SimError::NotLoggedIn)?;
        if token.is_some_and(|t| t != s.token) || (token.is_none() && s.client != client) {
            return Err(SimError::NotLoggedIn);
        }
        if a.faults.conflict {
            return Err(SimError::NotReady("open in another window"));
        }
        let ready = a.ready_at.get(client).is_some_and(|at| now >= *at);
        if a.faults.stuck_loading || !ready {
            return Err(SimError::NotReady("still loading"));
        }
        Ok(())
    }

    /// Records a message the page sent.
    pub fn send(
        &mut self,
        id: &str,
        client: &str,
        token: Option<&str>,
        out: Outgoing,
        now: Instant,
    ) -> Result<SendOutcome, SimError> {
        self.ready_session(id, client, token, now)?;
        check_message_id(&out.id)?;
        let chat = parse_chat("chat", &out.chat)?;
        if chat.kind() == ChatKind::Lid {
            return Err(invalid("chat", "send to @c.us or @g.us"));
        }
        if chat.is_group() && !self.account(id)?.chat_set.contains(&chat) {
            return Err(SimError::UnknownChat(chat.to_string()));
        }
        if chat.kind() == ChatKind::Contact && !self.exists(&chat.to_string())? {
            return Err(SimError::UnknownChat(chat.to_string()));
        }
        let body = match out.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            Some(_) => Some(
                MessageBody::parse(out.body.as_deref().unwrap_or_default())
                    .map_err(|e| invalid("body", e.detail))?
                    .as_str()
                    .to_string(),
            ),
            None => None,
        };
        if body.is_none() && out.media.is_none() {
            return Err(invalid("body", "a message needs text or media"));
        }
        let a = self.account_mut(id)?;
        if let Some(prev) = a.by_id.get(&out.id).and_then(|i| a.messages.get(*i)) {
            if prev.chat == chat && prev.body == body && prev.media == out.media {
                return Ok(SendOutcome {
                    message: prev.view(now),
                    reload: false,
                    duplicate: true,
                });
            }
            return Err(SimError::DuplicateId(out.id));
        }
        let refused = a.faults.refuse_sends;
        let m = SentMessage {
            id: out.id,
            chat: chat.clone(),
            body,
            media: out.media,
            link_preview: out.link_preview,
            received_at: Utc::now(),
            received: now,
            timing: a.timing,
            floor: AckLevel::Pending,
            refused,
        };
        let view = m.view(now);
        let index = a.messages.len();
        a.by_id.insert(m.id.clone(), index);
        a.by_chat.entry(chat.clone()).or_default().push(index);
        a.messages.push(m);
        if !refused {
            a.delivered += 1;
        }
        a.join_chat(chat);
        if refused {
            return Err(SimError::Quota);
        }
        let reload = a.faults.reload_mid_send > 0;
        if reload {
            a.faults.reload_mid_send -= 1;
        }
        Ok(SendOutcome {
            message: view,
            reload,
            duplicate: false,
        })
    }

    /// "Use here": the page takes the session back from the other window.
    pub fn take_over(&mut self, id: &str) -> Result<(), SimError> {
        self.account_mut(id)?.faults.conflict = false;
        Ok(())
    }

    /// Starts a fresh QR pairing for `client` (the reload button).
    pub fn restart_pairing(
        &mut self,
        id: &str,
        client: &str,
        now: Instant,
    ) -> Result<(), SimError> {
        let max = self.config.max_refs;
        let a = self.account_mut(id)?;
        if a.session.is_none() {
            a.pairings.retain(|p| p.client != client);
            a.pairings.push(new_pairing(client, now, max));
        }
        Ok(())
    }

    /// What `client`'s page should show now, and when that may next change by itself.
    pub fn page_view(
        &mut self,
        id: &str,
        client: &str,
        token: Option<&str>,
        open_chat: Option<&str>,
        now: Instant,
    ) -> Result<(PageView, Option<Instant>), SimError> {
        let cfg = self.config;
        let a = self.account_mut(id)?;
        if a.faults.blocked {
            return Ok((PageView::Banned, None));
        }
        let session = match (&a.session, token) {
            (Some(s), Some(t)) if s.token == t => Some(s.clone()),
            (_, Some(_)) => return Ok((PageView::LoggedOut, None)),
            (Some(s), None) if s.client == client => Some(s.clone()),
            _ => None,
        };
        let Some(session) = session else {
            // Not logged in: the QR screen, rotating.
            if !a.pairings.iter().any(|p| p.client == client) {
                // Bound the pages remembered (closed tabs never say goodbye).
                if a.pairings.len() >= MAX_PAIRINGS {
                    a.pairings.remove(0);
                }
                a.pairings.push(new_pairing(client, now, cfg.max_refs));
            }
            let p = a
                .pairings
                .iter()
                .find(|p| p.client == client)
                .expect("just ensured");
            let elapsed = now.saturating_duration_since(p.started);
            return Ok(
                match ref_index(elapsed, cfg.first_ref, cfg.next_ref, cfg.max_refs) {
                    Some(idx) => {
                        let token = p.refs[idx as usize].clone();
                        let deadline = p.started + ref_deadline(idx, cfg.first_ref, cfg.next_ref);
                        (
                            PageView::Qr {
                                modules: qr_modules(&token),
                                token: Some(token),
                            },
                            Some(deadline),
                        )
                    }
                    None => (
                        PageView::Qr {
                            token: None,
                            modules: Vec::new(),
                        },
                        None,
                    ),
                },
            );
        };
        let sv = if a.faults.lid_only {
            SessionView {
                token: session.token.clone(),
                last_wid_md: format!("{}:{}@lid", session.lid(), session.device),
                last_wid: format!("{}@lid", session.lid()),
            }
        } else {
            SessionView {
                token: session.token.clone(),
                last_wid_md: session.wid_md(),
                last_wid: session.wid(),
            }
        };
        let ready_at = *a
            .ready_at
            .entry(client.to_string())
            .or_insert(now + cfg.loading);
        if a.faults.stuck_loading || now < ready_at {
            let total = cfg.loading.as_millis().max(1);
            let left = ready_at.saturating_duration_since(now).as_millis();
            let progress = (100 - (left * 100 / total).min(100)) as u32;
            let (progress, deadline) = if a.faults.stuck_loading {
                (progress.min(99), None)
            } else {
                (progress, Some(ready_at))
            };
            return Ok((
                PageView::Loading {
                    progress,
                    session: Some(sv),
                },
                deadline,
            ));
        }
        if a.faults.conflict {
            return Ok((PageView::Conflict, None));
        }
        // Every chat is a model; the DOM list (virtualised on the real page)
        // shows the first MAX_CHAT_LIST.
        let chat_ids: Vec<ChatId> = a.chats.clone();
        let open = open_chat.and_then(|c| ChatId::parse(c).ok());
        let mut deadline: Option<Instant> = None;
        let mut messages = Vec::new();
        if let Some(open) = &open {
            let indexes = a.by_chat.get(open).map(Vec::as_slice).unwrap_or_default();
            for m in indexes.iter().filter_map(|i| a.messages.get(*i)) {
                if !m.refused {
                    let elapsed = now.saturating_duration_since(m.received);
                    if let Some(d) = next_ack_change(elapsed, &m.timing) {
                        let at = m.received + d;
                        deadline = Some(deadline.map_or(at, |x| x.min(at)));
                    }
                }
                messages.push(m.view(now));
            }
        }
        let start = a.messages.len().saturating_sub(MAX_MSG_MODELS);
        let mut msgs = Vec::with_capacity(a.messages.len() - start);
        for m in &a.messages[start..] {
            if !m.refused {
                let elapsed = now.saturating_duration_since(m.received);
                if let Some(d) = next_ack_change(elapsed, &m.timing) {
                    let at = m.received + d;
                    deadline = Some(deadline.map_or(at, |x| x.min(at)));
                }
            }
            msgs.push(m.view(now));
        }
        let chats = chat_ids
            .iter()
            .map(|c| ChatView {
                id: c.to_string(),
                name: self.chat_name(c),
                group: c.is_group(),
                members: self.groups.get(c).map_or(0, |g| g.participants.len()),
            })
            .collect();
        Ok((
            PageView::Main {
                session: sv,
                chats,
                messages,
                msgs,
            },
            deadline,
        ))
    }

    /// Marks a number as registered on WhatsApp or not (default: registered).
    pub fn set_registered(&mut self, phone: &str, on: bool) -> Result<(), SimError> {
        let p = parse_phone("phone", phone)?;
        if on {
            self.unregistered.remove(&p);
        } else {
            self.unregistered.insert(p);
        }
        Ok(())
    }

    /// A page's exists query for `account`: counted, then answered.
    pub fn query_exists(&mut self, account: &str, id: &str) -> Result<bool, SimError> {
        let on = self.exists(id)?;
        self.account_mut(account)?.exists_queries += 1;
        Ok(on)
    }

    /// Whether `id` (`<digits>@c.us`) is on WhatsApp.
    pub fn exists(&self, id: &str) -> Result<bool, SimError> {
        let c = parse_chat("id", id)?;
        if c.kind() != ChatKind::Contact {
            return Err(invalid("id", "ask about a `<digits>@c.us` id"));
        }
        Ok(PhoneNumber::parse(c.user()).is_ok_and(|p| !self.unregistered.contains(&p)))
    }

    /// A chat's display name, for the page opening a chat not in the list.
    pub fn chat_view(&self, chat: &str) -> Result<ChatView, SimError> {
        let c = parse_chat("chat", chat)?;
        if c.is_group() && !self.groups.contains_key(&c) {
            return Err(SimError::UnknownChat(chat.to_string()));
        }
        Ok(ChatView {
            id: c.to_string(),
            name: self.chat_name(&c),
            group: c.is_group(),
            members: self.groups.get(&c).map_or(0, |g| g.participants.len()),
        })
    }
}

impl Pairing {
    /// The token on screen now, its index and how long it has left.
    fn current(&self, c: &SimConfig, now: Instant) -> Option<(String, u32, Duration)> {
        let elapsed = now.saturating_duration_since(self.started);
        let idx = ref_index(elapsed, c.first_ref, c.next_ref, c.max_refs)?;
        let left = ref_deadline(idx, c.first_ref, c.next_ref).saturating_sub(elapsed);
        Some((self.refs.get(idx as usize)?.clone(), idx, left))
    }
}

fn new_pairing(client: &str, now: Instant, max_refs: u32) -> Pairing {
    Pairing {
        client: client.to_string(),
        started: now,
        refs: (0..max_refs.max(1)).map(|_| new_qr_token()).collect(),
    }
}

fn add_participants(g: &mut Group, ps: Vec<Participant>) {
    for p in ps {
        match g.participants.iter_mut().find(|x| x.id == p.id) {
            Some(x) => *x = p,
            None => g.participants.push(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timing(stop: AckLevel) -> AckTiming {
        AckTiming {
            server_ms: 100,
            device_ms: 200,
            read_ms: 300,
            stop,
        }
    }

    #[test]
    fn acks_step_through_levels_at_their_delays() {
        let t = timing(AckLevel::Read);
        let at = |ms| ack_after(Duration::from_millis(ms), &t);
        assert_eq!(at(0), AckLevel::Pending);
        assert_eq!(at(99), AckLevel::Pending);
        assert_eq!(at(100), AckLevel::Server);
        assert_eq!(at(299), AckLevel::Server);
        assert_eq!(at(300), AckLevel::Device);
        assert_eq!(at(600), AckLevel::Read);
        assert_eq!(
            next_ack_change(Duration::ZERO, &t),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            next_ack_change(Duration::from_millis(450), &t),
            Some(Duration::from_millis(600))
        );
        assert_eq!(next_ack_change(Duration::from_millis(600), &t), None);
    }

    #[test]
    fn a_stop_level_caps_progression() {
        let t = timing(AckLevel::Device);
        assert_eq!(ack_after(Duration::from_secs(60), &t), AckLevel::Device);
        assert_eq!(next_ack_change(Duration::from_millis(300), &t), None);
        let t = timing(AckLevel::Pending);
        assert_eq!(ack_after(Duration::from_secs(60), &t), AckLevel::Pending);
        assert_eq!(next_ack_change(Duration::ZERO, &t), None);
    }

    #[test]
    fn refs_rotate_then_run_out() {
        let (f, n) = (Duration::from_secs(60), Duration::from_secs(20));
        let at = |s| ref_index(Duration::from_secs(s), f, n, 3);
        assert_eq!(at(0), Some(0));
        assert_eq!(at(59), Some(0));
        assert_eq!(at(60), Some(1));
        assert_eq!(at(79), Some(1));
        assert_eq!(at(80), Some(2));
        assert_eq!(at(100), None);
        assert_eq!(ref_deadline(0, f, n), f);
        assert_eq!(ref_deadline(2, f, n), Duration::from_secs(100));
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn qr_tokens_have_five_fields_and_draw() {
        let t = new_qr_token();
        assert_eq!(t.split(',').count(), 5);
        let m = qr_modules(&t);
        assert!(m.len() > 21 && m.iter().all(|r| r.len() == m.len()));
    }

    fn cfg() -> SimConfig {
        SimConfig {
            first_ref: Duration::from_secs(60),
            next_ref: Duration::from_secs(20),
            max_refs: 3,
            loading: Duration::from_secs(1),
            ..SimConfig::default()
        }
    }

    fn qr_of(v: &PageView) -> String {
        match v {
            PageView::Qr { token: Some(t), .. } => t.clone(),
            other => panic!("not a QR: {other:?}"),
        }
    }

    const PHONE: &str = "+447700900123";

    fn paired(now: Instant) -> World {
        let mut w = World::new(cfg());
        w.create_account(Some("a".into()), None, None).unwrap();
        let t = qr_of(&w.page_view("a", "c1", None, None, now).unwrap().0);
        w.scan("a", &t, PHONE, now).unwrap();
        w
    }

    #[test]
    fn each_page_gets_its_own_qr_and_the_scanned_one_logs_in() {
        let now = Instant::now();
        let mut w = World::new(cfg());
        w.create_account(Some("a".into()), None, None).unwrap();
        let t1 = qr_of(&w.page_view("a", "c1", None, None, now).unwrap().0);
        let t2 = qr_of(&w.page_view("a", "c2", None, None, now).unwrap().0);
        assert_ne!(t1, t2);
        // Polling again does not rotate anyone's ref.
        assert_eq!(
            qr_of(&w.page_view("a", "c1", None, None, now).unwrap().0),
            t1
        );
        assert_eq!(w.current_qr("a", now).unwrap().0, t2);
        w.scan("a", &t1, PHONE, now).unwrap();
        match w.page_view("a", "c1", None, None, now).unwrap().0 {
            PageView::Loading {
                session: Some(s), ..
            } => {
                assert_eq!(s.last_wid_md, "447700900123:1@c.us")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            qr_of(&w.page_view("a", "c2", None, None, now).unwrap().0),
            t2
        );
        let later = now + Duration::from_secs(2);
        assert!(matches!(
            w.page_view("a", "c1", None, None, later).unwrap().0,
            PageView::Main { .. }
        ));
    }

    #[test]
    fn logout_sends_pages_holding_the_old_token_to_post_logout() {
        let now = Instant::now();
        let mut w = paired(now);
        let token = w.accounts["a"].session.as_ref().unwrap().token.clone();
        w.logout("a").unwrap();
        assert_eq!(
            w.page_view("a", "c9", Some(&token), None, now).unwrap().0,
            PageView::LoggedOut
        );
        assert!(w.current_qr("a", now).is_err());
    }

    #[test]
    fn a_blocked_account_cannot_scan() {
        let now = Instant::now();
        let mut w = World::new(cfg());
        w.create_account(Some("a".into()), None, None).unwrap();
        let t = qr_of(&w.page_view("a", "c1", None, None, now).unwrap().0);
        w.set_faults(
            "a",
            FaultsPatch {
                blocked: Some(true),
                ..FaultsPatch::default()
            },
        )
        .unwrap();
        assert_eq!(w.scan("a", &t, PHONE, now).unwrap_err(), SimError::Blocked);
    }

    #[test]
    fn a_lowered_stop_never_takes_back_an_ack() {
        let now = Instant::now();
        let mut w = paired(now);
        let ready = now + Duration::from_secs(2);
        let out = Outgoing {
            id: "3EB0000000000001".into(),
            chat: "447700900200@c.us".into(),
            body: Some("hi".into()),
            media: None,
            link_preview: None,
        };
        w.send("a", "c1", None, out, ready).unwrap();
        let later = ready + Duration::from_secs(10);
        let m = w
            .set_message_stop("a", "3EB0000000000001", AckLevel::Server, later)
            .unwrap();
        assert_eq!(m.ack, AckLevel::Read);
        let (msgs, _) = w
            .messages(Some("a"), later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(msgs[0].1.ack, AckLevel::Read);
    }

    proptest! {
        /// Whatever the input, the world answers with a result, never a panic.
        #[test]
        fn arbitrary_calls_never_panic(
            ops in proptest::collection::vec((0u8..9, "\\PC{0,24}", "\\PC{0,24}", 0u64..200_000), 1..40)
        ) {
            let start = Instant::now();
            let mut w = World::new(cfg());
            let _ = w.create_account(Some("a".into()), None, None);
            for (op, x, y, ms) in ops {
                let now = start + Duration::from_millis(ms);
                let _ = match op {
                    0 => w.create_account(Some(x), Some(&y), None).map(|_| ()),
                    1 => w.scan("a", &x, &y, now).map(|_| ()),
                    2 => w.page_view("a", &x, Some(y.as_str()).filter(|y| !y.is_empty()), Some(x.as_str()), now).map(|_| ()),
                    3 => w.add_chat("a", &x).map(|_| ()),
                    4 => w.create_group(Some(&x), y, vec![]).map(|_| ()),
                    5 => w.send("a", &x, None, Outgoing { id: y.clone(), chat: x.clone(), body: Some(y), media: None, link_preview: None }, now).map(|_| ()),
                    6 => w.participants(&x, ms as usize, 50).map(|_| ()),
                    7 => w.restart_pairing("a", &x, now),
                    _ => w.current_qr("a", now).map(|_| ()),
                };
            }
        }

        #[test]
        fn acks_never_go_backwards(
            s in 0u64..500, d in 0u64..500, r in 0u64..500,
            stop in 0usize..4, mut times in proptest::collection::vec(0u64..3000, 1..20)
        ) {
            let stop = [AckLevel::Pending, AckLevel::Server, AckLevel::Device, AckLevel::Read][stop];
            let t = AckTiming { server_ms: s, device_ms: d, read_ms: r, stop };
            times.sort();
            let levels: Vec<_> = times.iter().map(|ms| ack_after(Duration::from_millis(*ms), &t)).collect();
            prop_assert!(levels.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(levels.iter().all(|l| *l <= stop));
        }
    }
}
