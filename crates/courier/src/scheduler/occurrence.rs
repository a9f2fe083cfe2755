//! When a schedule is due: cron expressions in an IANA time zone, and what to
//! do about occurrences missed while no scheduler ran. Pure functions.
//!
//! Expressions are standard 5-field cron (`min hour dom mon dow`) or the `cron`
//! crate's 6/7-field form with seconds (and years). They are evaluated in the
//! schedule's time zone, so "09:00 every day" stays 09:00 local across DST:
//! a local time that does not exist (spring forward) is skipped that day, and
//! one that happens twice (fall back) fires once, at its first instance.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A schedule's recurrence, parsed.
#[derive(Debug, Clone)]
pub struct Recurrence {
    schedule: cron::Schedule,
    tz: Tz,
}

/// Why a schedule row cannot be used; written to `status_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expr}`: {reason}")]
    Cron {
        /// The expression as given.
        expr: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{0}` (expected an IANA name such as Asia/Kolkata)")]
    TimeZone(String),
}

impl Recurrence {
    /// Parses `expr` (5, 6 or 7 fields) in time zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, RecurrenceError> {
        let tz = Tz::from_str(tz.trim()).map_err(|_| RecurrenceError::TimeZone(tz.to_string()))?;
        let fields = expr.split_whitespace().count();
        let normalised = match fields {
            5 => format!("0 {}", expr.trim()),
            6 | 7 => expr.trim().to_string(),
            n => {
                return Err(RecurrenceError::Cron {
                    expr: expr.to_string(),
                    reason: format!("has {n} fields; expected 5 (min hour dom mon dow), 6 or 7"),
                })
            }
        };
        let schedule =
            cron::Schedule::from_str(&normalised).map_err(|e| RecurrenceError::Cron {
                expr: expr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self { schedule, tz })
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.occurrences(after).next()
    }

    /// Occurrences strictly after `after`, in order, each local time once.
    pub fn occurrences(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut last_local: Option<chrono::NaiveDateTime> = None;
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .filter(move |t| {
                // A fall-back hour yields the same wall-clock time twice.
                let local = t.naive_local();
                let repeat = last_local == Some(local) || last_local.is_some_and(|l| local <= l);
                if !repeat {
                    last_local = Some(local);
                }
                !repeat
            })
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What to do with occurrences that fell due while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpPolicy {
    /// Expand every missed occurrence (bounded by [`MAX_CATCH_UP`]).
    All,
    /// Expand only the most recent missed occurrence (the default: a campaign
    /// message that was due should go out once, not once per missed tick).
    #[default]
    Latest,
    /// Expand none of the missed occurrences; wait for the next one.
    Skip,
}

impl FromStr for CatchUpPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "latest" => Ok(Self::Latest),
            "skip" => Ok(Self::Skip),
            other => Err(format!(
                "unknown catch_up_policy `{other}` (all, latest, skip)"
            )),
        }
    }
}

/// Most missed occurrences expanded at once under [`CatchUpPolicy::All`].
pub const MAX_CATCH_UP: usize = 100;

/// The decision for a recurring schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Occurrences to expand now, oldest first.
    pub expand: Vec<DateTime<Utc>>,
    /// Missed occurrences deliberately not expanded (reported, never silent).
    pub skipped: Vec<DateTime<Utc>>,
    /// The next occurrence after `now`, if any.
    pub next: Option<DateTime<Utc>>,
}

/// Which occurrences after `last` (the last one expanded, or the schedule's
/// creation) are due at `now`, and what the policy does with them.
pub fn plan(
    rec: &Recurrence,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUpPolicy,
) -> Plan {
    let mut due: Vec<DateTime<Utc>> = Vec::new();
    let mut next = None;
    // Count beyond the cap so `skipped` reports them; stop at a sane bound.
    for t in rec.occurrences(last) {
        if t > now {
            next = Some(t);
            break;
        }
        due.push(t);
        if due.len() > 100_000 {
            next = rec.next_after(now);
            break;
        }
    }
    let (expand, skipped) = match policy {
        CatchUpPolicy::All => {
            // The oldest beyond the cap are the ones dropped.
            let cut = due.len().saturating_sub(MAX_CATCH_UP);
            let kept = due.split_off(cut);
            (kept, due)
        }
        CatchUpPolicy::Latest => match due.pop() {
            Some(latest) => (vec![latest], due),
            None => (vec![], vec![]),
        },
        CatchUpPolicy::Skip => {
            // The occurrence that is due right now (within a minute) is not
            // "missed"; everything older is.
            let on_time = due
                .last()
                .copied()
                .filter(|t| now - *t <= chrono::Duration::seconds(60));
            if on_time.is_some() {
                due.pop();
            }
            (on_time.into_iter().collect(), due)
        }
    };
    Plan {
        expand,
        skipped,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn five_field_cron_runs_in_the_schedules_zone() {
        let r = Recurrence::parse("0 9 * * *", "Asia/Kolkata").unwrap();
        // 09:00 IST is 03:30 UTC.
        assert_eq!(
            r.next_after(utc(2026, 1, 1, 0, 0)),
            Some(utc(2026, 1, 1, 3, 30))
        );
    }

    #[test]
    fn local_time_holds_across_dst_changes() {
        // New York: 09:00 local is 14:00 UTC in winter and 13:00 UTC in summer.
        let r = Recurrence::parse("0 9 * * *", "America/New_York").unwrap();
        let before = r.next_after(utc(2026, 3, 7, 0, 0)).unwrap();
        let after = r.next_after(utc(2026, 3, 8, 12, 0)).unwrap();
        assert_eq!(before, utc(2026, 3, 7, 14, 0));
        assert_eq!(
            after,
            utc(2026, 3, 8, 13, 0),
            "spring forward keeps 09:00 local"
        );
        let nov = r.next_after(utc(2026, 11, 1, 12, 0)).unwrap();
        assert_eq!(nov, utc(2026, 11, 1, 14, 0), "fall back keeps 09:00 local");
    }

    #[test]
    fn a_nonexistent_local_time_is_skipped_and_a_repeated_one_fires_once() {
        // 02:30 does not exist on 2026-03-08 in New York and happens twice… never:
        // in the US the repeated hour is 01:00-02:00 on 2026-11-01.
        let r = Recurrence::parse("30 2 * * *", "America/New_York").unwrap();
        let days: Vec<_> = r.occurrences(utc(2026, 3, 7, 0, 0)).take(2).collect();
        assert_eq!(days[0], utc(2026, 3, 7, 7, 30));
        assert_eq!(days[1], utc(2026, 3, 9, 6, 30), "no 02:30 on the 8th");

        let r = Recurrence::parse("30 1 * * *", "America/New_York").unwrap();
        let fires: Vec<_> = r
            .occurrences(utc(2026, 11, 1, 0, 0))
            .take_while(|t| *t < utc(2026, 11, 2, 0, 0))
            .collect();
        assert_eq!(
            fires,
            vec![utc(2026, 11, 1, 5, 30)],
            "01:30 fires once, at its first instance"
        );
    }

    #[test]
    fn bad_rows_are_explained() {
        let e = Recurrence::parse("61 * * * *", "UTC").unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid cron expression `61 * * * *`"),
            "{e}"
        );
        let e = Recurrence::parse("* * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("3 fields"), "{e}");
        let e = Recurrence::parse("* * * * *", "Mars/Base").unwrap_err();
        assert_eq!(e, RecurrenceError::TimeZone("Mars/Base".into()));
    }

    #[test]
    fn catch_up_policies_after_three_missed_minutes() {
        let r = Recurrence::parse("* * * * *", "UTC").unwrap();
        let last = utc(2026, 1, 1, 10, 0);
        let now = utc(2026, 1, 1, 10, 3) + chrono::Duration::seconds(20);
        let all = plan(&r, last, now, CatchUpPolicy::All);
        assert_eq!(
            all.expand,
            vec![
                utc(2026, 1, 1, 10, 1),
                utc(2026, 1, 1, 10, 2),
                utc(2026, 1, 1, 10, 3)
            ]
        );
        assert!(all.skipped.is_empty());
        assert_eq!(all.next, Some(utc(2026, 1, 1, 10, 4)));

        let latest = plan(&r, last, now, CatchUpPolicy::Latest);
        assert_eq!(latest.expand, vec![utc(2026, 1, 1, 10, 3)]);
        assert_eq!(latest.skipped.len(), 2);

        let skip = plan(&r, last, now, CatchUpPolicy::Skip);
        assert_eq!(
            skip.expand,
            vec![utc(2026, 1, 1, 10, 3)],
            "the on-time tick still runs"
        );
        assert_eq!(skip.skipped.len(), 2);
        let every5 = Recurrence::parse("*/5 * * * *", "UTC").unwrap();
        let late = plan(&every5, last, utc(2026, 1, 1, 10, 17), CatchUpPolicy::Skip);
        assert!(late.expand.is_empty(), "10:15 is two minutes late: missed");
        assert_eq!(late.skipped.len(), 3);
        assert_eq!(late.next, Some(utc(2026, 1, 1, 10, 20)));
    }

    #[test]
    fn catch_up_all_is_bounded() {
        let r = Recurrence::parse("* * * * *", "UTC").unwrap();
        let p = plan(
            &r,
            utc(2026, 1, 1, 0, 0),
            utc(2026, 1, 2, 0, 0),
            CatchUpPolicy::All,
        );
        assert_eq!(p.expand.len(), MAX_CATCH_UP);
        assert_eq!(p.expand.len() + p.skipped.len(), 24 * 60);
        assert_eq!(*p.expand.last().unwrap(), utc(2026, 1, 2, 0, 0));
    }

    #[test]
    fn nothing_due_gives_only_the_next() {
        let r = Recurrence::parse("0 0 * * *", "UTC").unwrap();
        let p = plan(
            &r,
            utc(2026, 1, 1, 0, 0),
            utc(2026, 1, 1, 5, 0),
            CatchUpPolicy::Latest,
        );
        assert!(p.expand.is_empty() && p.skipped.is_empty());
        assert_eq!(p.next, Some(utc(2026, 1, 2, 0, 0)));
    }
}
