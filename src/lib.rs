//! Courier: durable, budget-aware WhatsApp Web campaign sending.
//!
//! The flow (see `../shared/DESIGN.md` and `docs/`): campaign schedules and
//! HTTP requests become durable jobs in Postgres; workers lease accounts and run
//! those jobs through a headless Chromium session of WhatsApp Web, within
//! per-account budgets; every delivery update is recorded.
//!
//! The binary (`src/main.rs`) is a thin clap front over [`cli`]; everything a
//! test needs is reachable from here.

#![warn(missing_docs)]

pub mod api;
pub mod browser;
pub mod budget;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod health;
pub mod media;
pub mod messages;
pub mod metrics;
pub mod queue;
pub mod scheduler;
pub mod sim;
pub mod soak;
pub mod telemetry;
pub mod testing;

pub use courier_jobs as jobs;
