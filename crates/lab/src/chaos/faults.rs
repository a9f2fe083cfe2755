//! The faults a chaos run injects, how often each is picked, and the record
//! each injection leaves for the report (what it hit, and from which instant
//! recovery is measured).

use chrono::{DateTime, Utc};
use rand::Rng;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of a worker process; restarted after a few seconds.
    WorkerKill,
    /// `kill -9` of the scheduler; restarted after a few seconds.
    SchedulerKill,
    /// `pg_ctl restart -m fast`.
    PgRestartFast,
    /// `pg_ctl restart -m immediate` (crash recovery on the way up).
    PgRestartImmediate,
    /// `kill -9` of one worker's chromedriver (its Chromium goes with it).
    ChromedriverKill,
    /// `kill -9` of one Chromium browser process (one account's session).
    ChromiumKill,
    /// `SIGSTOP` of a worker for longer than its lease, then `SIGCONT`: the
    /// woken worker must be fenced.
    WorkerStop,
    /// The page stays on the loading screen (authenticated, never ready).
    StuckLoading,
    /// "WhatsApp is open in another window".
    Conflict,
    /// The phone logs the session out.
    Logout,
    /// The number is blocked (banned for good).
    Block,
    /// Sends refused for quota.
    RefuseSends,
    /// Every page response delayed.
    SlowPage,
    /// The page reloads right after a send reached WhatsApp.
    ReloadMidSend,
}

impl FaultKind {
    /// Every kind, in report order, with its weight in the random pick.
    pub const WEIGHTED: [(FaultKind, u32); 14] = [
        (FaultKind::WorkerKill, 10),
        (FaultKind::SchedulerKill, 5),
        (FaultKind::PgRestartFast, 4),
        (FaultKind::PgRestartImmediate, 4),
        (FaultKind::ChromedriverKill, 6),
        (FaultKind::ChromiumKill, 8),
        (FaultKind::WorkerStop, 5),
        (FaultKind::StuckLoading, 5),
        (FaultKind::Conflict, 5),
        (FaultKind::Logout, 5),
        (FaultKind::Block, 3),
        (FaultKind::RefuseSends, 5),
        (FaultKind::SlowPage, 5),
        (FaultKind::ReloadMidSend, 8),
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker kill -9",
            FaultKind::SchedulerKill => "scheduler kill -9",
            FaultKind::PgRestartFast => "postgres restart -m fast",
            FaultKind::PgRestartImmediate => "postgres restart -m immediate",
            FaultKind::ChromedriverKill => "chromedriver kill -9",
            FaultKind::ChromiumKill => "chromium kill -9",
            FaultKind::WorkerStop => "worker SIGSTOP past lease",
            FaultKind::StuckLoading => "sim: stuck loading",
            FaultKind::Conflict => "sim: conflict",
            FaultKind::Logout => "sim: logout",
            FaultKind::Block => "sim: block",
            FaultKind::RefuseSends => "sim: quota refusal",
            FaultKind::SlowPage => "sim: slow page",
            FaultKind::ReloadMidSend => "sim: reload mid-send",
        }
    }

    /// How recovery from this kind is measured (the report's footnote).
    pub fn recovery_rule(self) -> &'static str {
        match self {
            FaultKind::SchedulerKill => "a scheduler holds leadership again",
            FaultKind::PgRestartFast | FaultKind::PgRestartImmediate => {
                "any account's next message reaches the simulator after the restart"
            }
            FaultKind::Block => "the banned account's never-attempted sends have moved off it",
            _ => "every affected account with work left sends again (fault end → next receipt)",
        }
    }

    /// Picks a kind by weight.
    pub fn pick(rng: &mut impl Rng) -> FaultKind {
        let total: u32 = Self::WEIGHTED.iter().map(|w| w.1).sum();
        let mut n = rng.random_range(0..total);
        for (kind, w) in Self::WEIGHTED {
            if n < w {
                return kind;
            }
            n -= w;
        }
        unreachable!("the weights sum to total")
    }
}

/// Whom a fault hit, for the recovery measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These accounts must send again.
    Accounts(Vec<String>),
    /// Any account sending again means the system is back.
    Any,
    /// Measured while the run went on (the duration, if it recovered).
    Measured(Option<std::time::Duration>),
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Injected {
    /// What.
    pub kind: FaultKind,
    /// When recovery starts counting: the injection for instant faults, the
    /// end of the fault for timed ones (stop, slow page, …).
    pub t0: DateTime<Utc>,
    /// Whom it hit.
    pub scope: Scope,
    /// A line for the log: which process or account.
    pub target: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_same_seed_picks_the_same_faults() {
        let a: Vec<FaultKind> = {
            let mut r = rand::rngs::StdRng::seed_from_u64(42);
            (0..50).map(|_| FaultKind::pick(&mut r)).collect()
        };
        let b: Vec<FaultKind> = {
            let mut r = rand::rngs::StdRng::seed_from_u64(42);
            (0..50).map(|_| FaultKind::pick(&mut r)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn every_kind_gets_picked() {
        let mut r = rand::rngs::StdRng::seed_from_u64(7);
        let seen: std::collections::HashSet<FaultKind> =
            (0..2_000).map(|_| FaultKind::pick(&mut r)).collect();
        assert_eq!(seen.len(), FaultKind::WEIGHTED.len());
    }
}
