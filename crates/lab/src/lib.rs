//! Courier's lab: what runs Courier end to end on this machine, outside
//! production.
//!
//! - [`demo`]: `courier demo`, the whole pipeline with progress shown.
//! - [`chaos`]: `courier chaos`, real processes under random faults, then
//!   proof that nothing was lost, sent twice or sent over budget.
//! - [`soak`]: `courier soak`, a steady load with memory sampling.
//! - [`bench`]: `courier bench browser`, Chromium session measurements.
//! - [`bench_accounts`]: `courier bench accounts`, many accounts on one
//!   worker under `browser.max_open`.
//!
//! The binary includes the lab with its default `lab` feature; a production
//! build (`--no-default-features`) leaves it out, and the product library
//! never depends on it.

#![warn(missing_docs)]

pub mod bench;
pub mod bench_accounts;
pub mod bench_events;
pub mod chaos;
pub mod demo;
mod dom_baseline;
pub mod soak;

use courier::config::Settings;
use courier::queue::handler::Handlers;

/// The lab's handler registries for `courier worker --handler NAME`:
/// `noop-record`, the test kit's recording handler (its table exists in test
/// databases only). Passed to `courier::app::worker`.
pub fn extra_handlers(name: &str, settings: &Settings, pool: &sqlx::PgPool) -> Option<Handlers> {
    (name == "noop-record").then(|| {
        courier_testkit::RecordingHandler::registry(pool.clone(), settings.queue.handler_delay)
    })
}
