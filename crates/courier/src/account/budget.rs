//! Per-account send budgets: pure arithmetic, no I/O.
//!
//! A send is allowed at instant `t` when, for every [`Window`] W with limit L,
//! fewer than L sends lie in `(t - W, t]`, the pacing gap since the last send
//! has passed, the account is outside its quiet hours and not paused. When it
//! is not allowed, [`decide`] returns the **exact earliest instant** at which it
//! would be (given no other send in between), so the queue can snooze the job
//! to that instant instead of polling.
//!
//! The limits come from the account's `rate_limit_config` over the defaults
//! in `[budget]` ([`Limits::resolve`]), are lowered by the warm-up ladder for
//! young accounts and halved by a low health score ([`Limits::effective`]).
//!
//! The queue enforces the windows a second time in SQL, in the statement that
//! grants the slot (`queue::store::claim_batch`, one index probe per window),
//! so this module decides *when* to try; the database decides *whether* the
//! slot is granted.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A sliding window of fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Window {
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86 400 seconds.
    Day,
}

/// How long after its grant a send slot may still reach WhatsApp.
///
/// The slot is granted (and logged) when the job is claimed; the message
/// reaches WhatsApp later, after the session is ready and the chat is open.
/// WhatsApp judges an account by the times *it* receives messages, so the
/// grant counts each window over `W + SEND_DEADLINE`: any `W`-long span of
/// receive times then holds only sends granted within a `W + SEND_DEADLINE`
/// span, which is at most the limit. A slot not used by
/// [`SEND_START_WITHIN`] is given up (the send asks for a new one), which
/// leaves the rest of the deadline for opening the chat and the click.
pub const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The latest a send may start typing after its slot was granted.
pub const SEND_START_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Window {
    /// The span a grant counts: the window plus [`SEND_DEADLINE`].
    pub fn guarded(self) -> Duration {
        self.length() + Duration::from_std(SEND_DEADLINE).unwrap_or(Duration::zero())
    }

    /// [`Window::guarded`] in whole seconds (for SQL).
    pub fn guarded_secs(self) -> i64 {
        self.guarded().num_seconds()
    }

    /// All windows, shortest first.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// The window's length.
    pub fn length(self) -> Duration {
        match self {
            Window::Minute => Duration::seconds(60),
            Window::Hour => Duration::seconds(3600),
            Window::Day => Duration::seconds(86_400),
        }
    }

    /// Lower-case name (`minute`, `hour`, `day`).
    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// Quiet hours in the account's local time: no sends from `start` until `end`
/// (may wrap midnight, e.g. 22:00–07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Local time the quiet period starts.
    pub start: NaiveTime,
    /// Local time it ends (sends resume at this instant).
    pub end: NaiveTime,
}

/// Caps per window after every adjustment, plus pacing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most sends in any 60 s window.
    pub per_minute: u32,
    /// Most sends in any 3600 s window.
    pub per_hour: u32,
    /// Most sends in any 86 400 s window.
    pub per_day: u32,
    /// Least time between two sends.
    pub min_gap: std::time::Duration,
    /// Upper bound of the random extra gap added to `min_gap`.
    pub jitter: std::time::Duration,
    /// Optional quiet hours, in the account's time zone.
    pub quiet_hours: Option<QuietHours>,
}

impl Limits {
    /// The cap for `w`.
    pub fn cap(&self, w: Window) -> u32 {
        match w {
            Window::Minute => self.per_minute,
            Window::Hour => self.per_hour,
            Window::Day => self.per_day,
        }
    }

    /// Overlays an account's `rate_limit_config` JSON on these defaults.
    /// Unknown keys are ignored; malformed values are refused with the key named.
    ///
    /// Keys: `per_minute`, `per_hour`, `per_day` (or the seed's
    /// `daily_limit`), `min_gap_seconds`, `jitter_seconds`,
    /// `quiet_hours: {"start": "22:00", "end": "07:00"}` (or `null` to disable).
    pub fn resolve(&self, config: &serde_json::Value) -> Result<Limits, BudgetError> {
        let mut out = self.clone();
        let Some(obj) = config.as_object() else {
            return Ok(out);
        };
        let count = |key: &'static str| -> Result<Option<u32>, BudgetError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or(BudgetError::Config {
                        key,
                        problem: format!("`{v}` is not a non-negative integer"),
                    }),
            }
        };
        if let Some(n) = count("per_minute")? {
            out.per_minute = n;
        }
        if let Some(n) = count("per_hour")? {
            out.per_hour = n;
        }
        if let Some(n) = count("daily_limit")? {
            out.per_day = n;
        }
        if let Some(n) = count("per_day")? {
            out.per_day = n;
        }
        if let Some(n) = count("min_gap_seconds")? {
            out.min_gap = std::time::Duration::from_secs(n.into());
        }
        if let Some(n) = count("jitter_seconds")? {
            out.jitter = std::time::Duration::from_secs(n.into());
        }
        match obj.get("quiet_hours") {
            None => {}
            Some(serde_json::Value::Null) => out.quiet_hours = None,
            Some(v) => {
                let q: QuietHoursText =
                    serde_json::from_value(v.clone()).map_err(|e| BudgetError::Config {
                        key: "quiet_hours",
                        problem: e.to_string(),
                    })?;
                out.quiet_hours = Some(q.parse()?);
            }
        }
        Ok(out)
    }

    /// Applies the warm-up ladder and health scaling.
    ///
    /// - Warm-up: an account `age_days` old (0 on its first day) gets at most
    ///   `ladder[age_days]` sends a day while `age_days < ladder.len()`.
    /// - Health: at or below `health.caution` every cap is halved (rounded
    ///   down, but never below 1 so a cautious account still moves).
    pub fn effective(&self, age_days: i64, ladder: &[u32], health: i32, caution: i32) -> Limits {
        let mut out = self.clone();
        if age_days >= 0 {
            if let Some(&cap) = ladder.get(age_days as usize) {
                out.per_day = out.per_day.min(cap);
            }
        }
        if health <= caution {
            let half = |n: u32| if n == 0 { 0 } else { (n / 2).max(1) };
            out.per_minute = half(out.per_minute);
            out.per_hour = half(out.per_hour);
            out.per_day = half(out.per_day);
        }
        out
    }
}

#[derive(Deserialize)]
struct QuietHoursText {
    start: String,
    end: String,
}

impl QuietHoursText {
    fn parse(&self) -> Result<QuietHours, BudgetError> {
        let t = |s: &str| {
            NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| BudgetError::Config {
                key: "quiet_hours",
                problem: format!("`{s}` is not a HH:MM time"),
            })
        };
        Ok(QuietHours {
            start: t(&self.start)?,
            end: t(&self.end)?,
        })
    }
}

/// Errors in budget configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A `rate_limit_config` value is malformed.
    #[error("rate_limit_config.{key}: {problem}")]
    Config {
        /// The key at fault.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Why a send must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A window is full.
    Window(Window),
    /// The pacing gap since the last send has not passed.
    Pacing,
    /// Quiet hours in the account's time zone.
    QuietHours,
    /// The account is paused until the instant.
    Paused,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Window(w) => write!(f, "budget: {} window full", w.name()),
            Hold::Pacing => f.write_str("budget: pacing gap"),
            Hold::QuietHours => f.write_str("budget: quiet hours"),
            Hold::Paused => f.write_str("account paused"),
        }
    }
}

/// The budget's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send now.
    Allowed,
    /// Not before this instant, for this reason. Asking again at that instant
    /// (with no send in between) gives `Allowed` or a later instant for another
    /// reason (e.g. the next window).
    NotBefore(DateTime<Utc>, Hold),
}

/// What [`decide`] needs to know about the account beyond its limits.
#[derive(Debug, Clone, Copy)]
pub struct AccountClock<'a> {
    /// Past send slots, ascending (at least the last 24 h).
    pub sends: &'a [DateTime<Utc>],
    /// The extra pacing gap drawn for the next send (0..=jitter).
    pub jitter: std::time::Duration,
    /// The account's time zone.
    pub tz: chrono_tz::Tz,
    /// An automatic pause's end; sends wait until then.
    pub paused_until: Option<DateTime<Utc>>,
}

/// The earliest instant ≥ `now` at which `window` has room, given `sends`.
/// Sends at `s` occupy the window `(t - W, t]` for `t < s + W`.
pub fn window_frees_at(
    sends: &[DateTime<Utc>],
    now: DateTime<Utc>,
    window: Window,
    cap: u32,
) -> Option<DateTime<Utc>> {
    let w = window.guarded();
    let start = now - w;
    // First send inside (now - W', now], W' the guarded window.
    // Every recorded send is in the past (a caller's clock estimate may lag
    // the database's by a little), so all sends after `start` count.
    let first_inside = sends.partition_point(|s| *s <= start);
    let inside = &sends[first_inside..];
    let count = inside.len();
    if count < cap as usize {
        return None;
    }
    if cap == 0 {
        // Never frees; report one window from now so callers re-check later.
        return Some(now + w);
    }
    // The window has room once all but cap-1 of these have left it.
    Some(inside[count - cap as usize] + w)
}

/// Decides whether a send may happen at `now`.
pub fn decide(limits: &Limits, clock: &AccountClock<'_>, now: DateTime<Utc>) -> Decision {
    // Each rule may push the instant later; iterate until none does, because
    // moving past quiet hours may land in a full window and vice versa.
    let mut at = now;
    let mut reason = None;
    for _ in 0..16 {
        let mut moved = false;
        if let Some(until) = clock.paused_until {
            if until > at {
                at = until;
                reason = Some(Hold::Paused);
                moved = true;
            }
        }
        if let Some(q) = limits.quiet_hours {
            if let Some(end) = quiet_until(q, clock.tz, at) {
                if end > at {
                    at = end;
                    reason = Some(Hold::QuietHours);
                    moved = true;
                }
            }
        }
        if let Some(last) = clock
            .sends
            .last()
            .filter(|_| !(limits.min_gap + clock.jitter).is_zero())
        {
            let gap = limits.min_gap + clock.jitter;
            let next = *last + Duration::from_std(gap).unwrap_or(Duration::zero());
            if next > at {
                at = next;
                reason = Some(Hold::Pacing);
                moved = true;
            }
        }
        for w in Window::ALL {
            if let Some(free) = window_frees_at(clock.sends, at, w, limits.cap(w)) {
                if free > at {
                    at = free;
                    reason = Some(Hold::Window(w));
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    match reason {
        None => Decision::Allowed,
        Some(r) => Decision::NotBefore(at, r),
    }
}

/// When `at` falls in quiet hours, the instant they end; otherwise `None`.
pub fn quiet_until(q: QuietHours, tz: chrono_tz::Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if q.start == q.end {
        return None;
    }
    let local = at.with_timezone(&tz);
    let t = local.time();
    let inside = if q.start < q.end {
        t >= q.start && t < q.end
    } else {
        t >= q.start || t < q.end
    };
    if !inside {
        return None;
    }
    let mut day = local.date_naive();
    if t >= q.end && q.start > q.end {
        // Evening part of a period that wraps midnight: it ends tomorrow.
        day = day.succ_opt()?;
    }
    // Resolve the local end time; across a DST gap take the first valid instant.
    let naive = day.and_time(q.end);
    let end = match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(d) => d,
        chrono::LocalResult::Ambiguous(a, _) => a,
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()?,
    };
    Some(end.with_timezone(&Utc))
}

/// Exponential backoff with jitter for a failed attempt (1-based):
/// `base · 2^(attempt-1)`, capped at `max`, then scaled by `1 + jitter_frac`
/// where `jitter_frac` ∈ [0, 0.25] is supplied by the caller (pure).
pub fn backoff(
    attempt: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    jitter_frac: f64,
) -> std::time::Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw.mul_f64(1.0 + jitter_frac.clamp(0.0, 0.25))
}

#[cfg(test)]
mod tests;
