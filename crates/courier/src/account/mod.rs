//! Accounts: the WhatsApp numbers Courier sends from, and every rule about
//! when one may send.
//!
//! - [`status`]: the account status enum (the `mkt_wap_accounts.status`
//!   CHECK list) and the availability rule.
//! - [`budget`]: the per-minute, per-hour and per-day windows, pacing, quiet
//!   hours, warm-up and health scaling (pure).
//! - [`health`]: the health score, pauses and resumes.
//! - [`login`]: the login state machine (pure), its account-row writes, the
//!   deadline reaper the maintenance service runs, and `start_login`.
//! - [`session`]: what the row keeps of the browser session (the sealed
//!   snapshot, the profile path), and an operator's disconnect.
//! - [`admin`]: an operator's writes: registering an account, its limits.
//! - [`import`]: `courier import-sessions`, the previous system's linked
//!   browser profiles taken over (`mkt_wap_session_imports`).
//!
//! This module owns the writes to `mkt_wap_accounts` (and
//! `mkt_wap_session_imports`): the browser adapter and
//! the API write the row through it.

pub(crate) mod admin;
pub mod budget;
pub mod health;
pub mod import;
pub mod login;
pub(crate) mod session;
mod status;

pub use status::{AccountStatus, UnknownStatus};
