//! The browser layer: Chromium per account through fantoccini, driving
//! WhatsApp Web.
//!
//! - [`selectors`]: the DOM contract (`config/selectors.toml`).
//! - [`driver`]: chromedriver and WebDriver session plumbing.
//! - [`session`]: the supervised WebDriver hub and one session per leased
//!   account ([`BrowserPool`]), with crash recovery.
//! - [`page`]: the page object ([`WhatsAppPage`]): login state, QR, own number,
//!   chats, sends, acks, participants; typed errors, per-command timeouts.
//! - [`login`]: the login state machine and its account-row writes.
//! - [`snapshot`]: encrypted session snapshots in Postgres.
//! - [`handlers`]: the `login` and `health_check` job handlers.
//!
//! See `docs/browser.md`.

pub mod driver;
pub mod handlers;
pub mod login;
pub mod page;
pub mod selectors;
pub mod session;
pub mod snapshot;

pub use driver::{ChromeDriver, DriverError, DriverOptions};
pub use handlers::{browser_registry, schedule_health_check, BrowserHandlers};
pub use login::{start_login, LoginMachine, LoginState, PageView};
pub use page::{ChatSummary, MediaSource, OutgoingMessage, PageError, Participant, WhatsAppPage};
pub use selectors::{AckLevel, Selectors};
pub use session::{BrowserError, BrowserPool, SessionGuard, WebDriverHub};
pub use snapshot::{SnapshotError, SnapshotKey};
