//! `courier chaos`: the whole system under many faults at once, then proof
//! that nothing was lost, sent twice or sent over budget.
//!
//! A run starts real, separate processes of this binary: an embedded
//! PostgreSQL cluster of its own, the simulator (`courier sim`), the API
//! (`courier api`), the scheduler (`courier scheduler`) and three workers
//! (`courier worker`, each with its own chromedriver and Chromium sessions).
//! It logs ten accounts in by QR through the API (the simulator plays the
//! phone), gives them tight per-minute budgets, writes campaign schedules the
//! scheduler expands and pushes sends through the API. While they run it
//! injects faults picked by a seeded RNG ([`faults`]); then it lets the system
//! drain and checks the invariants ([`check`]) from the simulator's read-back
//! and the database, and prints the report. Any failed invariant makes the
//! command fail.
//!
//! Accounts a fault ends: a logged-out (or `failed`) account is logged in
//! again by the harness, as an admin would (QR through the API). A blocked
//! account stays banned (a WhatsApp ban is final): its never-attempted sends
//! move to other accounts (the scheduler's reassignment); a send whose
//! outcome is unknown stays with it, held, because only its chat can tell
//! whether it went out. Such messages are reported as held, not lost.
//! docs/reliability.md has the design and the figures.

pub mod check;
pub mod faults;
pub mod procs;
mod run;

pub use run::run;

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileName {
    /// A few minutes of faults: the CI run (tests/chaos.rs).
    Ci,
    /// Twenty minutes or more of faults, by hand (release build).
    Long,
}

/// Flags of `courier chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// The run's size and fault rate.
    #[arg(long, value_enum, default_value = "ci")]
    pub profile: ProfileName,
    /// Seed of the fault RNG (printed; a random one when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Minutes of fault injection (overrides the profile's).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Keep the run directory (logs, database) even when every check passes.
    #[arg(long)]
    pub keep: bool,
}

/// The size of a run: accounts, messages, budgets, fault rate.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Simulated WhatsApp accounts, each logged in by QR.
    pub accounts: usize,
    /// `mkt_con_schedule` rows the scheduler expands.
    pub schedules: usize,
    /// Distinct phone numbers each schedule targets.
    pub per_schedule: usize,
    /// Sends pushed through `POST /v1/messages`.
    pub api_messages: usize,
    /// Every account's `rate_limit_config`: per minute, hour, day.
    pub per_minute: u32,
    /// Per hour.
    pub per_hour: u32,
    /// Per day.
    pub per_day: u32,
    /// How long faults are injected.
    pub fault_minutes: f64,
    /// Seconds between two faults (uniform in this range).
    pub fault_gap: (u64, u64),
    /// Most accounts blocked (banned for good) in one run.
    pub max_blocks: usize,
    /// Longest wait for the system to drain once faults stop.
    pub drain: std::time::Duration,
}

impl Profile {
    /// The named profile, with `minutes` of faults when given.
    pub fn named(name: ProfileName, minutes: Option<f64>) -> Self {
        let mut p = match name {
            ProfileName::Ci => Profile {
                accounts: 10,
                schedules: 4,
                per_schedule: 60,
                api_messages: 80,
                per_minute: 15,
                per_hour: 400,
                per_day: 2_000,
                fault_minutes: 2.5,
                fault_gap: (6, 10),
                max_blocks: 1,
                // A bound, not a wait: the drain ends as soon as nothing is
                // open. Roomy, so a slow or shared CI machine is not a failure.
                drain: std::time::Duration::from_secs(600),
            },
            ProfileName::Long => Profile {
                accounts: 10,
                schedules: 14,
                per_schedule: 110,
                api_messages: 460,
                // Binding (a grant counts 80 s: 15 a minute in practice) and
                // the whole 2,000 drains within ~25 min with two accounts banned.
                per_minute: 20,
                per_hour: 400,
                per_day: 2_000,
                fault_minutes: 20.0,
                fault_gap: (10, 25),
                max_blocks: 2,
                drain: std::time::Duration::from_secs(1_500),
            },
        };
        if let Some(m) = minutes {
            p.fault_minutes = m;
        }
        p
    }

    /// Messages the run asks for.
    pub fn total_messages(&self) -> usize {
        self.schedules * self.per_schedule + self.api_messages
    }

    /// The `rate_limit_config` every account gets.
    pub fn limits_json(&self) -> serde_json::Value {
        serde_json::json!({
            "per_minute": self.per_minute,
            "per_hour": self.per_hour,
            "per_day": self.per_day,
            "min_gap_seconds": 0,
            "jitter_seconds": 0,
        })
    }

    /// The same as sliding windows for [`check::budget_violations`].
    pub fn window_limits(&self) -> check::WindowLimits {
        [
            (60, self.per_minute),
            (3600, self.per_hour),
            (86_400, self.per_day),
        ]
    }
}
