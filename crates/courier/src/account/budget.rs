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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn limits(m: u32, h: u32, d: u32) -> Limits {
        Limits {
            per_minute: m,
            per_hour: h,
            per_day: d,
            min_gap: std::time::Duration::ZERO,
            jitter: std::time::Duration::ZERO,
            quiet_hours: None,
        }
    }

    fn clock(sends: &[DateTime<Utc>]) -> AccountClock<'_> {
        AccountClock {
            sends,
            jitter: std::time::Duration::ZERO,
            tz: chrono_tz::UTC,
            paused_until: None,
        }
    }

    #[test]
    fn empty_history_is_allowed() {
        assert_eq!(
            decide(&limits(1, 1, 1), &clock(&[]), t0()),
            Decision::Allowed
        );
    }

    #[test]
    fn full_minute_frees_exactly_when_oldest_send_leaves_the_guarded_window() {
        // A grant counts the minute plus SEND_DEADLINE (the time a granted
        // send may take to reach WhatsApp).
        let w = Window::Minute.guarded();
        assert_eq!(
            w,
            Duration::seconds(60) + Duration::from_std(SEND_DEADLINE).unwrap()
        );
        let s = [t0(), t0() + Duration::seconds(10)];
        let now = t0() + Duration::seconds(20);
        assert_eq!(
            decide(&limits(2, 100, 100), &clock(&s), now),
            Decision::NotBefore(t0() + w, Hold::Window(Window::Minute))
        );
        // At that instant the oldest send is out of (t-W', t].
        assert_eq!(
            decide(&limits(2, 100, 100), &clock(&s), t0() + w),
            Decision::Allowed
        );
        // One microsecond earlier it is not.
        assert!(matches!(
            decide(
                &limits(2, 100, 100),
                &clock(&s),
                t0() + w - Duration::microseconds(1)
            ),
            Decision::NotBefore(..)
        ));
    }

    #[test]
    fn grants_a_send_deadline_apart_keep_every_receive_window_within_the_limit() {
        // Sends granted back to back at the allowed rate, each reaching
        // WhatsApp anywhere within SEND_DEADLINE of its grant: every 60 s
        // span of receive times holds at most the limit.
        let l = limits(3, 1000, 1000);
        let mut grants: Vec<DateTime<Utc>> = Vec::new();
        let mut now = t0();
        while grants.len() < 30 {
            match decide(&l, &clock(&grants), now) {
                Decision::Allowed => {
                    grants.push(now);
                    now += Duration::milliseconds(100);
                }
                Decision::NotBefore(at, _) => now = at,
            }
        }
        let deadline = Duration::from_std(SEND_DEADLINE).unwrap();
        // Worst case: early grants land late, late grants land at once.
        for split in 0..grants.len() {
            let mut received: Vec<DateTime<Utc>> = grants
                .iter()
                .enumerate()
                .map(|(i, &g)| if i < split { g + deadline } else { g })
                .collect();
            received.sort();
            assert!(max_in_any_window(&received, Window::Minute) <= 3);
        }
    }

    #[test]
    fn the_longest_binding_window_wins() {
        // 3 sends in the last hour with an hourly cap of 3: the minute window
        // has room but the hour does not.
        let s = [
            t0(),
            t0() + Duration::minutes(10),
            t0() + Duration::minutes(20),
        ];
        let now = t0() + Duration::minutes(30);
        assert_eq!(
            decide(&limits(10, 3, 100), &clock(&s), now),
            Decision::NotBefore(t0() + Window::Hour.guarded(), Hold::Window(Window::Hour))
        );
    }

    #[test]
    fn pacing_gap_and_jitter_push_the_next_send() {
        let s = [t0()];
        let mut l = limits(10, 10, 10);
        l.min_gap = std::time::Duration::from_secs(8);
        let c = AccountClock {
            jitter: std::time::Duration::from_millis(2500),
            ..clock(&s)
        };
        assert_eq!(
            decide(&l, &c, t0() + Duration::seconds(1)),
            Decision::NotBefore(t0() + Duration::milliseconds(10_500), Hold::Pacing)
        );
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_account_time_zone() {
        let q = QuietHours {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
        };
        let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap(); // UTC+5:30
                                                                 // 17:00Z = 22:30 IST: quiet until 07:00 IST next day = 01:30Z.
        let at = DateTime::parse_from_rfc3339("2026-03-10T17:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let end = quiet_until(q, tz, at).unwrap();
        assert_eq!(end.to_rfc3339(), "2026-03-11T01:30:00+00:00");
        // 03:00 IST (21:30Z previous day) is quiet too, same end.
        let at = DateTime::parse_from_rfc3339("2026-03-10T21:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            quiet_until(q, tz, at).unwrap().to_rfc3339(),
            "2026-03-11T01:30:00+00:00"
        );
        // Noon IST is not quiet.
        let at = DateTime::parse_from_rfc3339("2026-03-10T06:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(quiet_until(q, tz, at), None);
    }

    #[test]
    fn quiet_hours_hold_a_send_until_they_end() {
        let mut l = limits(10, 10, 10);
        l.quiet_hours = Some(QuietHours {
            start: NaiveTime::from_hms_opt(11, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(13, 0, 0).unwrap(),
        });
        assert_eq!(
            decide(&l, &clock(&[]), t0()),
            Decision::NotBefore(t0() + Duration::hours(1), Hold::QuietHours)
        );
    }

    #[test]
    fn paused_account_waits_for_the_resume_instant() {
        let until = t0() + Duration::minutes(5);
        let c = AccountClock {
            paused_until: Some(until),
            ..clock(&[])
        };
        assert_eq!(
            decide(&limits(1, 1, 1), &c, t0()),
            Decision::NotBefore(until, Hold::Paused)
        );
    }

    #[test]
    fn warm_up_ladder_caps_young_accounts_and_health_halves() {
        let base = limits(10, 100, 200);
        let ladder = [20, 50, 100];
        assert_eq!(base.effective(0, &ladder, 100, 50).per_day, 20);
        assert_eq!(base.effective(2, &ladder, 100, 50).per_day, 100);
        assert_eq!(base.effective(3, &ladder, 100, 50).per_day, 200);
        let sick = base.effective(10, &ladder, 40, 50);
        assert_eq!((sick.per_minute, sick.per_hour, sick.per_day), (5, 50, 100));
        // Halving never turns a working cap into a stop.
        assert_eq!(limits(1, 1, 1).effective(10, &[], 0, 50).per_minute, 1);
    }

    #[test]
    fn rate_limit_config_overlays_defaults_and_names_bad_keys() {
        let base = limits(10, 100, 200);
        let r = base
            .resolve(&serde_json::json!({
                "per_minute": 3, "daily_limit": 150, "min_gap_seconds": 5,
                "quiet_hours": {"start": "22:00", "end": "07:00"}, "other": true
            }))
            .unwrap();
        assert_eq!((r.per_minute, r.per_hour, r.per_day), (3, 100, 150));
        assert_eq!(r.min_gap.as_secs(), 5);
        assert!(r.quiet_hours.is_some());
        let e = base
            .resolve(&serde_json::json!({"per_hour": "lots"}))
            .unwrap_err();
        assert!(e.to_string().contains("per_hour"), "{e}");
        let e = base
            .resolve(&serde_json::json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}))
            .unwrap_err();
        assert!(e.to_string().contains("quiet_hours"), "{e}");
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let b = std::time::Duration::from_secs(10);
        let m = std::time::Duration::from_secs(300);
        assert_eq!(backoff(1, b, m, 0.0).as_secs(), 10);
        assert_eq!(backoff(2, b, m, 0.0).as_secs(), 20);
        assert_eq!(backoff(3, b, m, 0.0).as_secs(), 40);
        assert_eq!(backoff(10, b, m, 0.0).as_secs(), 300);
        assert_eq!(backoff(1, b, m, 0.25).as_millis(), 12_500);
        assert_eq!(backoff(1, b, m, 9.0).as_millis(), 12_500);
    }

    /// Counts sends in every window `(t - W, t]` ending at each send: the
    /// maximum over all windows is reached at a window ending on a send.
    fn max_in_any_window(sends: &[DateTime<Utc>], w: Window) -> usize {
        sends
            .iter()
            .map(|&t| {
                sends
                    .iter()
                    .filter(|&&s| s > t - w.length() && s <= t)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    proptest! {
        /// Sending whenever `decide` allows, and otherwise at the instant it
        /// names, never exceeds any window, and every named instant is exact:
        /// allowed then, refused a microsecond earlier.
        #[test]
        fn greedy_sender_never_exceeds_any_window(
            m in 1u32..6, h in 1u32..20, d in 1u32..40,
            gap in 0u64..30, jitter in 0u64..5,
            arrivals in proptest::collection::vec(0i64..200_000, 1..80),
        ) {
            let l = Limits {
                per_minute: m, per_hour: h, per_day: d,
                min_gap: std::time::Duration::from_secs(gap),
                jitter: std::time::Duration::ZERO,
                quiet_hours: None,
            };
            let mut arrivals = arrivals;
            arrivals.sort_unstable();
            let mut sends: Vec<DateTime<Utc>> = Vec::new();
            let mut now = t0();
            for a in arrivals {
                let at = t0() + Duration::seconds(a);
                if at > now { now = at; }
                let j = std::time::Duration::from_secs(jitter);
                loop {
                    let c = AccountClock { sends: &sends, jitter: j, tz: chrono_tz::UTC, paused_until: None };
                    match decide(&l, &c, now) {
                        Decision::Allowed => { sends.push(now); break; }
                        Decision::NotBefore(t, _) => {
                            prop_assert!(t > now);
                            let early = t - Duration::microseconds(1);
                            prop_assert!(early < now || decide(&l, &c, early) != Decision::Allowed);
                            prop_assert_eq!(decide(&l, &c, t), Decision::Allowed);
                            now = t;
                        }
                    }
                }
            }
            for w in Window::ALL {
                prop_assert!(max_in_any_window(&sends, w) <= l.cap(w) as usize,
                    "window {:?} exceeded", w);
            }
        }

        /// `window_frees_at` agrees with counting.
        #[test]
        fn window_frees_at_is_the_first_instant_with_room(
            cap in 1u32..5,
            offsets in proptest::collection::vec(0i64..120, 0..12),
            now_off in 0i64..200,
        ) {
            let now = t0() + Duration::seconds(now_off);
            // Recorded sends are always in the past.
            let mut s: Vec<_> = offsets.into_iter().map(|o| t0() + Duration::seconds(o))
                .filter(|x| *x <= now).collect();
            s.sort();
            let c = |t: DateTime<Utc>| s.iter().filter(|&&x| x > t - Window::Minute.guarded()).count();
            match window_frees_at(&s, now, Window::Minute, cap) {
                None => prop_assert!(c(now) < cap as usize),
                Some(t) => {
                    prop_assert!(t > now);
                    prop_assert!(c(t) < cap as usize);
                    prop_assert!(c(t - Duration::microseconds(1)) >= cap as usize);
                }
            }
        }
    }
}
