//! Courier: durable, budget-aware WhatsApp Web campaign sending.
//!
//! The flow (see `../shared/DESIGN.md` and `docs/`): campaign schedules and
//! HTTP requests become durable jobs in Postgres; workers lease accounts and run
//! those jobs through a headless Chromium session of WhatsApp Web, within
//! per-account budgets; every delivery update is recorded.
//!
//! The binary (`src/main.rs` at the workspace root) is a thin clap front over
//! [`app`], which wires the roles; everything a test needs is reachable from here.
//! The simulator, the test kit and the lab are crates of their own
//! (`crates/sim`, `crates/testkit`, `crates/lab`) that this crate never depends on.

#![warn(missing_docs)]

pub mod access;
pub mod account;
pub mod api;
pub mod app;
pub mod browser;
pub mod config;
pub mod db;
pub(crate) mod directory;
pub mod error;
pub mod events;
pub mod maintenance;
pub mod media;
pub mod message;
pub mod metrics;
pub mod queue;
pub mod scheduler;
pub(crate) mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod webhook;
pub mod worker;

pub use courier_jobs as jobs;
