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
//!
//! This module owns the writes to `mkt_wap_accounts` status columns.

pub mod budget;
pub mod health;
pub mod login;
pub mod status;

pub use status::AccountStatus;
