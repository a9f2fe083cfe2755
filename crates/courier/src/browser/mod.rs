//! The browser adapter: Chromium per account through fantoccini, driving
//! WhatsApp Web. It knows no job handler and no queue internals (the handlers
//! in `crate::worker` use it); the login state machine it feeds is
//! `crate::account::login`.
//!
//! - [`waweb`]: the module contract (`config/wa-web.toml`): every module,
//!   member, event and state name the page driver uses, with its source.
//! - [`selectors`]: the DOM contract for the QR, login and fault screens
//!   (`config/selectors.toml`).
//! - [`driver`]: chromedriver and WebDriver session plumbing.
//! - [`session`]: the supervised WebDriver hub and one session per leased
//!   account ([`BrowserPool`]), with crash recovery.
//! - [`page`]: the page object ([`WhatsAppPage`]): login state, QR, own number,
//!   chats, sends, acks, participants; typed errors, per-command timeouts.
//! - [`snapshot`]: encrypted session snapshots in Postgres.
//! - [`import`]: the previous system's `LocalAuth` profiles, checked and copied in.
//!
//! See `docs/browser.md`.

pub mod driver;
mod hub;
pub mod import;
pub mod page;
pub mod selectors;
mod session;
pub mod snapshot;
pub mod waweb;

pub use driver::{ChromeDriver, DriverError, DriverOptions};
pub use hub::WebDriverHub;
pub use page::{
    ChatSummary, GroupSummary, MediaSource, NumberCheck, OutgoingMessage, PageError, Participant,
    WhatsAppPage,
};
pub use selectors::{AckLevel, Selectors};
pub use session::{BrowserError, BrowserPool, IdlePolicy, SessionGuard};
pub use snapshot::{SnapshotError, SnapshotKey};
pub use waweb::{WaWeb, WaWebError};
