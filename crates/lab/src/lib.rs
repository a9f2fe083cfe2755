//! Courier's lab: what runs Courier end to end on this machine, outside
//! production.
//!
//! - [`demo`]: `courier demo`, the whole pipeline with progress shown.
//! - [`chaos`]: `courier chaos`, real processes under random faults, then
//!   proof that nothing was lost, sent twice or sent over budget.
//! - [`soak`]: `courier soak`, a steady load with memory sampling.
//! - [`bench`]: `courier bench browser`, Chromium session measurements.
//!
//! The binary includes the lab with its default `lab` feature; a production
//! build (`--no-default-features`) leaves it out, and the product library
//! never depends on it.

#![warn(missing_docs)]

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod soak;
