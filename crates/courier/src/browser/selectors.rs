//! The WhatsApp Web DOM contract, `config/selectors.toml`, as a type.
//!
//! The simulator renders markup that matches it and the browser driver finds
//! elements through it, so a change in the real page's DOM is a change to the
//! TOML file, not to code. The built-in copy is used when no file is given.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The built-in copy of `config/selectors.toml`.
pub const DEFAULT_SELECTORS_TOML: &str = include_str!("../../../../config/selectors.toml");

/// Errors loading the contract.
#[derive(Debug, thiserror::Error)]
pub enum SelectorsError {
    /// The file could not be read.
    #[error("cannot read selectors file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not match the schema (unknown or missing keys are refused).
    #[error("invalid selectors file")]
    Parse(#[from] toml::de::Error),
}

/// The whole contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    /// The QR login screen.
    pub login: Login,
    /// The loading screen and logout URL.
    pub loading: Loading,
    /// localStorage keys.
    pub storage: Storage,
    /// Markers of the main screen.
    pub main: Main,
    /// The chat list (side pane).
    pub chat_list: ChatList,
    /// The open chat: header, compose box, send button.
    pub conversation: Conversation,
    /// Media attachments.
    pub attach: Attach,
    /// Message rows.
    pub message: Message,
    /// Ack icons.
    pub ack: Ack,
    /// The group-info drawer and its participant list.
    pub group_info: GroupInfo,
    /// Fault screens.
    pub faults: Faults,
}

/// The QR login screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The QR container, `div[data-ref]`.
    pub qr_container: String,
    /// The attribute holding the QR token.
    pub qr_ref_attr: String,
    /// The canvas the QR is drawn on.
    pub qr_canvas: String,
    /// The reload button shown once the refs run out.
    pub qr_reload_button: String,
}

/// The loading screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loading {
    /// The progress bar.
    pub progress: String,
    /// The query parameter set after a logout (`post_logout=1`).
    pub post_logout_param: String,
}

/// localStorage keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `last-wid-md`: JSON-quoted `"<digits>:<device>@c.us"`.
    pub last_wid_md_key: String,
    /// `last-wid`: JSON-quoted `"<digits>@c.us"`.
    pub last_wid_key: String,
    /// The simulator's session key: the IndexedDB record (database `wawc`,
    /// store `user`) holding its session, as the real page keeps its keys.
    pub session_key: String,
}

/// Markers of the main screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Main {
    /// Present once the main screen is up.
    pub ready: String,
    /// The intro image shown before a chat is opened.
    pub intro: String,
}

/// The chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatList {
    /// The side pane.
    pub pane: String,
    /// One row per chat.
    pub item: String,
    /// The attribute of a row holding its chat id.
    pub chat_id_attr: String,
    /// A row's title element.
    pub title: String,
}

/// The open chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The conversation panel.
    pub main: String,
    /// Its header.
    pub header: String,
    /// The header title; clicking it opens the info drawer.
    pub header_title: String,
    /// The contenteditable compose box.
    pub compose: String,
    /// The send button.
    pub send_button: String,
    /// The link preview above the compose box.
    pub compose_link_preview: String,
    /// The error toast.
    pub toast: String,
}

/// Media attachments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// The attach (paperclip/plus) button.
    pub attach_button: String,
    /// The photo/video file input.
    pub media_input: String,
    /// The document file input.
    pub document_input: String,
    /// The caption box of the media editor.
    pub caption: String,
    /// The media editor's send button.
    pub send_button: String,
}

/// Message rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Any message row.
    pub row: String,
    /// Outgoing message rows.
    pub outgoing: String,
    /// The attribute holding `true_<chat>_<ID>`.
    pub id_attr: String,
    /// The text of a message.
    pub text: String,
    /// A link preview inside a message.
    pub link_preview: String,
    /// A media block inside a message.
    pub media: String,
}

/// Ack icons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The icon element inside an outgoing message.
    pub icon: String,
    /// The attribute naming the icon.
    pub icon_attr: String,
    /// Send failed (ack -1).
    pub error_icon: String,
    /// Pending, the clock (ack 0).
    pub pending_icon: String,
    /// Server, one tick (ack 1).
    pub server_icon: String,
    /// Device, two ticks (ack 2).
    pub device_icon: String,
    /// Read, two blue ticks (ack 3).
    pub read_icon: String,
    /// The aria-label that tells read from device.
    pub read_label: String,
}

/// The group-info drawer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInfo {
    /// The drawer.
    pub drawer: String,
    /// The member count text.
    pub member_count: String,
    /// The scrolling participant list.
    pub list: String,
    /// One participant row.
    pub participant: String,
    /// The attribute holding the participant id (@c.us or @lid).
    pub participant_id_attr: String,
    /// The participant's name, within a row.
    pub name: String,
    /// The participant's phone, within a row.
    pub phone: String,
    /// The admin badge, within a row.
    pub admin_badge: String,
    /// The badge text of an admin.
    pub admin_text: String,
    /// The badge text of the super admin (owner).
    pub super_admin_text: String,
    /// Closes the drawer.
    pub close_button: String,
}

/// Fault screens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// "WhatsApp is open in another window".
    pub conflict: String,
    /// Its "Use here" button.
    pub use_here_button: String,
    /// The button's text.
    pub use_here_text: String,
    /// The ban screen.
    pub banned: String,
}

/// What an ack icon says, as whatsapp-web.js numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckLevel {
    /// -1: the send failed.
    Error,
    /// 0: the clock icon.
    Pending,
    /// 1: one tick.
    Server,
    /// 2: two ticks.
    Device,
    /// 3: two blue ticks.
    Read,
}

impl AckLevel {
    /// whatsapp-web.js's number for the level.
    pub fn code(self) -> i8 {
        match self {
            AckLevel::Error => -1,
            AckLevel::Pending => 0,
            AckLevel::Server => 1,
            AckLevel::Device => 2,
            AckLevel::Read => 3,
        }
    }

    /// The level for a whatsapp-web.js number (4, played, reads as read).
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => AckLevel::Error,
            0 => AckLevel::Pending,
            1 => AckLevel::Server,
            2 => AckLevel::Device,
            3 | 4 => AckLevel::Read,
            _ => return None,
        })
    }
}

impl Selectors {
    /// Loads `path`, or the built-in copy when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, SelectorsError> {
        match path {
            None => Ok(Self::builtin()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| SelectorsError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Ok(toml::from_str(&text)?)
            }
        }
    }

    /// The contract Courier runs with: `<COURIER_CONFIG_DIR or config>/selectors.toml`
    /// when that file exists (so a DOM change needs no rebuild), else the built-in copy.
    pub fn load_default() -> Result<Self, SelectorsError> {
        let dir = std::env::var_os("COURIER_CONFIG_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from("config"));
        let file = dir.join("selectors.toml");
        Self::load(file.is_file().then_some(file.as_path()))
    }

    /// The built-in contract.
    pub fn builtin() -> Self {
        // The embedded file is checked by a unit test, so this cannot fail at run time.
        toml::from_str(DEFAULT_SELECTORS_TOML).expect("built-in config/selectors.toml is valid")
    }

    /// Reads an ack level from an icon's `data-icon` value and aria-label.
    pub fn ack_from_icon(&self, icon: &str, label: Option<&str>) -> Option<AckLevel> {
        let a = &self.ack;
        if icon == a.read_icon && label.map(str::trim) == Some(a.read_label.trim()) {
            Some(AckLevel::Read)
        } else if icon == a.device_icon {
            Some(AckLevel::Device)
        } else if icon == a.server_icon {
            Some(AckLevel::Server)
        } else if icon == a.pending_icon {
            Some(AckLevel::Pending)
        } else if icon == a.error_icon {
            Some(AckLevel::Error)
        } else {
            None
        }
    }

    /// The CSS selectors expected to match on each screen, by screen name
    /// (`qr`, `qr_expired`, `loading`, `main`, `chat`, `chat_typing` (text with
    /// a URL in the compose box), `group_info`, `conflict`, `banned`), for
    /// checking a page against the contract.
    pub fn css_by_screen(&self) -> Vec<(&'static str, Vec<(&'static str, &str)>)> {
        vec![
            (
                "qr",
                vec![
                    ("login.qr_container", &self.login.qr_container),
                    ("login.qr_canvas", &self.login.qr_canvas),
                ],
            ),
            (
                "qr_expired",
                vec![("login.qr_reload_button", &self.login.qr_reload_button)],
            ),
            (
                "loading",
                vec![("loading.progress", &self.loading.progress)],
            ),
            (
                "chat_typing",
                vec![
                    ("conversation.send_button", &self.conversation.send_button),
                    (
                        "conversation.compose_link_preview",
                        &self.conversation.compose_link_preview,
                    ),
                ],
            ),
            (
                "main",
                vec![
                    ("main.ready", &self.main.ready),
                    ("main.intro", &self.main.intro),
                    ("chat_list.pane", &self.chat_list.pane),
                    ("chat_list.item", &self.chat_list.item),
                ],
            ),
            (
                "chat",
                vec![
                    ("conversation.main", &self.conversation.main),
                    ("conversation.header", &self.conversation.header),
                    ("conversation.header_title", &self.conversation.header_title),
                    ("conversation.compose", &self.conversation.compose),
                    ("attach.attach_button", &self.attach.attach_button),
                    ("attach.media_input", &self.attach.media_input),
                    ("attach.document_input", &self.attach.document_input),
                ],
            ),
            (
                "group_info",
                vec![
                    ("group_info.drawer", &self.group_info.drawer),
                    ("group_info.member_count", &self.group_info.member_count),
                    ("group_info.list", &self.group_info.list),
                    ("group_info.participant", &self.group_info.participant),
                    ("group_info.close_button", &self.group_info.close_button),
                ],
            ),
            (
                "conflict",
                vec![
                    ("faults.conflict", &self.faults.conflict),
                    ("faults.use_here_button", &self.faults.use_here_button),
                ],
            ),
            ("banned", vec![("faults.banned", &self.faults.banned)]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_contract_parses() {
        let s = Selectors::load(None).unwrap();
        assert_eq!(s.login.qr_container, "div[data-ref]");
        assert_eq!(s.storage.last_wid_md_key, "last-wid-md");
    }

    #[test]
    fn the_file_on_disk_is_the_builtin_copy() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/selectors.toml");
        assert_eq!(Selectors::load(Some(&path)).unwrap(), Selectors::builtin());
        assert!(matches!(
            Selectors::load(Some(Path::new("/nonexistent/selectors.toml"))),
            Err(SelectorsError::Read { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{DEFAULT_SELECTORS_TOML}\n[extra]\nx = \"y\"\n");
        assert!(toml::from_str::<Selectors>(&text).is_err());
    }

    #[test]
    fn ack_icons_read_as_levels() {
        let s = Selectors::builtin();
        assert_eq!(s.ack_from_icon("msg-time", None), Some(AckLevel::Pending));
        assert_eq!(
            s.ack_from_icon("msg-check", Some(" Sent ")),
            Some(AckLevel::Server)
        );
        assert_eq!(
            s.ack_from_icon("msg-dblcheck", Some(" Delivered ")),
            Some(AckLevel::Device)
        );
        assert_eq!(
            s.ack_from_icon("msg-dblcheck", Some(" Read ")),
            Some(AckLevel::Read)
        );
        assert_eq!(s.ack_from_icon("msg-error", None), Some(AckLevel::Error));
        assert_eq!(s.ack_from_icon("tail-out", None), None);
        assert!(AckLevel::Pending < AckLevel::Server && AckLevel::Device < AckLevel::Read);
    }
}
