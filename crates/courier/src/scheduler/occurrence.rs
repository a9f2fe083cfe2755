//! When a schedule is due: cron expressions in an IANA time zone, and what to
//! do about occurrences missed while no scheduler ran. Pure functions.
//!
//! An expression's field count decides how it is read ([`Dialect`]):
//! - 5 fields (`min hour dom mon dow`), and the nicknames `@yearly`,
//!   `@monthly`, `@weekly`, `@daily`, `@hourly`, are Unix cron as Vixie cron
//!   and cronie read it: 0 or 7 is Sunday, names `MON`–`SUN` and `JAN`–`DEC`,
//!   and when both day fields are restricted a day matching either one counts
//!   (`0 9 1 * MON`: the 1st, and every Monday). A day field that merely
//!   starts with `*` (`*/2`) counts as unrestricted, as in Vixie's parser, so
//!   `0 9 */2 * MON` is odd days that are Mondays.
//! - 6 or 7 fields (`sec min hour dom mon dow [year]`) keep the meaning the
//!   `cron` crate gave them before: weekdays 1 (Sunday) to 7 (Saturday), and a
//!   day must match both day fields.
//!
//! `croner` matches the pattern against the wall clock; this module turns
//! wall-clock times into instants in the schedule's zone by Vixie's rules for
//! daylight saving time ([`DstRule`]). `docs/scheduler.md` has the reasons;
//! `tests/fixtures/cron_next.tsv` the reference values, computed by croniter.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Duration, LocalResult, NaiveDateTime, SubsecRound, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// A schedule's recurrence, parsed.
#[derive(Debug, Clone)]
pub struct Recurrence {
    /// The pattern, matched against wall-clock time.
    cron: Cron,
    dialect: Dialect,
    dst: DstRule,
    tz: Tz,
}

/// Which cron an expression is read as; its field count decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// 5 fields or a nickname: Unix cron as Vixie cron reads it (0 or 7 =
    /// Sunday; day of month OR day of week when both are restricted).
    Unix,
    /// 6 or 7 fields, seconds first and an optional year: the `cron` crate's
    /// reading, kept for rows written for it (1 = Sunday … 7 = Saturday; day
    /// of month AND day of week).
    Quartz,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unix => {
                "Unix cron: min hour dom mon dow; 0 or 7 = Sunday; \
                 day of month OR day of week when both are restricted"
            }
            Self::Quartz => {
                "seconds-first cron (the `cron` crate's form): sec min hour dom mon dow [year]; \
                 1 = Sunday … 7 = Saturday; day of month AND day of week"
            }
        })
    }
}

/// How a job meets a daylight-saving change. These are Vixie cron's two kinds
/// of job, told apart the way its parser does: by a leading `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstRule {
    /// The minute or hour field (or, with seconds, the second field) starts
    /// with `*` — `*/15 * * * *`, `30 * * * *`, `@hourly`. The job follows the
    /// wall clock: a time the clock skips does not run, a time it repeats runs
    /// twice, and the job keeps its rhythm in real time.
    WallClock,
    /// Every other job — `30 2 * * *`, `0 1,2 * * *`. Each scheduled
    /// wall-clock time runs once: a time the clock skips runs when the clock
    /// jumps (the first instant after the gap), and a time it repeats runs at
    /// its first instance only.
    FixedTime,
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

/// The nicknames Vixie cron knows, as the 5-field expressions they stand for.
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Recurrence {
    /// Parses `expr` (5 fields or a nickname; 6 or 7 fields) in time zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, RecurrenceError> {
        let tz = Tz::from_str(tz.trim()).map_err(|_| RecurrenceError::TimeZone(tz.to_string()))?;
        let invalid = |reason: String| RecurrenceError::Cron {
            expr: expr.to_string(),
            reason,
        };
        let mut text = expr.trim();
        if text.starts_with('@') {
            text = NICKNAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(text))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    invalid("unknown nickname (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)".into())
                })?;
        }
        let mut fields: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        let dialect = match fields.len() {
            5 => Dialect::Unix,
            6 | 7 => Dialect::Quartz,
            n => {
                return Err(invalid(format!(
                    "has {n} fields; expected 5 (min hour dom mon dow), \
                     or 6 or 7 (sec min hour dom mon dow [year])"
                )))
            }
        };
        if let Some(f) = fields.iter().find(|f| f.starts_with('/')) {
            return Err(invalid(format!(
                "`{f}`: a step needs a start (write `*{f}`)"
            )));
        }
        let time_fields = match dialect {
            Dialect::Unix => &fields[..2],
            Dialect::Quartz => &fields[..3],
        };
        let dst = if time_fields.iter().any(|f| f.starts_with('*')) {
            DstRule::WallClock
        } else {
            DstRule::FixedTime
        };
        if dialect == Dialect::Unix && vixie_ands_the_day_fields(&fields[2], &fields[4]) {
            // croner's own spelling of "both day fields must match".
            fields[4].insert(0, '+');
        }
        let cron = parser(dialect)
            .parse(&fields.join(" "))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            cron,
            dialect,
            dst,
            tz,
        })
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// How the expression was read.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How the schedule meets daylight-saving changes.
    pub fn dst_rule(&self) -> DstRule {
        self.dst
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.occurrences(after).next()
    }

    /// Occurrences strictly after `after`, in order, each instant once.
    pub fn occurrences(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // Start on the wall clock at `after`; inside a repeated hour, start a
        // whole repetition earlier, where the wall-clock times whose second
        // instance is still to come begin.
        let wall = after.with_timezone(&self.tz).naive_local().trunc_subsecs(0);
        let start = match self.tz.from_local_datetime(&wall) {
            LocalResult::Ambiguous(first, second) => wall - (second - first),
            _ => wall,
        };
        Occurrences {
            rec: self,
            wall: Some(start),
            ready: VecDeque::new(),
            last: after,
        }
    }

    /// The next wall-clock time after `wall` that the pattern matches.
    fn next_wall_time(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        // croner gives up (an error) after a long search or past year 4999:
        // `0 0 30 2 *` has no occurrence at all.
        self.cron.find_next_occurrence(&wall, false).ok()
    }
}

/// Whether Vixie cron ANDs the two day fields: both are restricted, but one
/// starts with `*` (`*/2`), which its parser takes for an unrestricted field.
fn vixie_ands_the_day_fields(dom: &str, dow: &str) -> bool {
    let unrestricted = |f: &str| f == "*" || f == "?";
    !unrestricted(dom)
        && !unrestricted(dow)
        && !dow.starts_with('+')
        && (dom.starts_with('*') || dow.starts_with('*'))
}

fn parser(dialect: Dialect) -> CronParser {
    // `sloppy_ranges`: `0/15` means `0-59/15`, as the `cron` crate and
    // croniter read it; rows written before the change may use it.
    let builder = CronParser::builder().sloppy_ranges(true);
    match dialect {
        Dialect::Unix => builder.seconds(Seconds::Disallowed).year(Year::Disallowed),
        Dialect::Quartz => builder
            .seconds(Seconds::Required)
            .year(Year::Optional)
            .alternative_weekdays(true)
            .dom_and_dow(true),
    }
    .build()
}

/// The occurrences after an instant, in real-time order. Wall-clock times
/// come from the pattern in wall-clock order; a repeated hour is the one place
/// where that differs from real-time order (every first instance comes before
/// every second one), so its matches are read as a run and queued in order.
struct Occurrences<'a> {
    rec: &'a Recurrence,
    /// The last wall-clock time read from the pattern; `None` once it has no more.
    wall: Option<NaiveDateTime>,
    /// Instants in order, not yet returned.
    ready: VecDeque<DateTime<Utc>>,
    /// Only instants after this are returned: the start, then the last one
    /// returned (several skipped times map to one instant after a gap).
    last: DateTime<Utc>,
}

impl Iterator for Occurrences<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        loop {
            while let Some(t) = self.ready.pop_front() {
                if t > self.last {
                    self.last = t;
                    return Some(t);
                }
            }
            let wall = self.rec.next_wall_time(self.wall?);
            self.wall = wall;
            let wall = wall?;
            let tz = self.rec.tz;
            match tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => self.ready.push_back(t.with_timezone(&Utc)),
                LocalResult::None => {
                    if self.rec.dst == DstRule::FixedTime {
                        self.ready.extend(end_of_gap(tz, wall));
                    }
                }
                LocalResult::Ambiguous(first, second) => {
                    let repeat = second - first;
                    let mut firsts = vec![first.with_timezone(&Utc)];
                    let mut seconds = vec![second.with_timezone(&Utc)];
                    if self.rec.dst == DstRule::WallClock {
                        // The rest of this repetition: matches less than one
                        // repetition after the first that are ambiguous too.
                        while let Some(next) = self.rec.next_wall_time(self.wall?) {
                            match tz.from_local_datetime(&next) {
                                LocalResult::Ambiguous(f, s) if next - wall < repeat => {
                                    firsts.push(f.with_timezone(&Utc));
                                    seconds.push(s.with_timezone(&Utc));
                                    self.wall = Some(next);
                                }
                                _ => break,
                            }
                        }
                        self.ready.extend(firsts);
                        self.ready.extend(seconds);
                    } else {
                        self.ready.extend(firsts);
                    }
                }
            }
        }
    }
}

/// The first instant after the daylight-saving gap that skipped `wall`: when
/// the clock jumped.
fn end_of_gap(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |w: NaiveDateTime| tz.from_local_datetime(&w).earliest();
    // Whole minutes first (gaps are an hour or so; two days bounds any), then
    // back second by second, for the old offsets that were not whole minutes.
    let mut minute = wall.with_second(0)?.with_nanosecond(0)?;
    for _ in 0..2 * 24 * 60 {
        minute += Duration::minutes(1);
        if let Some(mut t) = exists(minute) {
            let mut s = minute - Duration::seconds(1);
            while s > wall {
                match exists(s) {
                    Some(earlier) => t = earlier,
                    None => break,
                }
                s -= Duration::seconds(1);
            }
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// The next occurrences of an expression, for an operator checking it before
/// saving it (`courier cron next`). Displays as one line per occurrence: the
/// instant in UTC, the same instant in the zone (both RFC 3339), the weekday in
/// the zone, and a note where daylight saving time moved or repeated it.
#[derive(Debug, Clone)]
pub struct Preview {
    expr: String,
    recurrence: Recurrence,
    after: DateTime<Utc>,
    occurrences: Vec<DateTime<Utc>>,
}

/// Parses `expr` in zone `tz` and lists its first `count` occurrences after
/// `after`.
pub fn preview(
    expr: &str,
    tz: &str,
    after: DateTime<Utc>,
    count: usize,
) -> Result<Preview, RecurrenceError> {
    let recurrence = Recurrence::parse(expr, tz)?;
    let occurrences = recurrence.occurrences(after).take(count).collect();
    Ok(Preview {
        expr: expr.trim().to_string(),
        recurrence,
        after,
        occurrences,
    })
}

impl Preview {
    /// The occurrences found (fewer than asked when the expression runs out).
    pub fn occurrences(&self) -> &[DateTime<Utc>] {
        &self.occurrences
    }

    /// What daylight saving time did to an occurrence, if anything.
    fn note(&self, t: DateTime<Utc>) -> Option<String> {
        let tz = self.recurrence.tz;
        let local = t.with_timezone(&tz);
        let wall = local.naive_local();
        if !self.recurrence.cron.is_time_matching(&wall).unwrap_or(true) {
            return Some(
                "moved by DST: the scheduled time did not exist; runs when the clock jumps".into(),
            );
        }
        match tz.from_local_datetime(&wall) {
            LocalResult::Ambiguous(first, _) if first == local => Some(format!(
                "DST: {} happens twice today; this is the first",
                wall.format("%H:%M")
            )),
            LocalResult::Ambiguous(..) => {
                Some(format!("DST: the second {} today", wall.format("%H:%M")))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        writeln!(f, "# {} in {}", self.expr, self.recurrence.tz)?;
        writeln!(f, "# read as {}", self.recurrence.dialect)?;
        if self.occurrences.is_empty() {
            return writeln!(f, "# no occurrence after {}", rfc3339(self.after));
        }
        writeln!(
            f,
            "# next {} after {}:",
            self.occurrences.len(),
            rfc3339(self.after)
        )?;
        for &t in &self.occurrences {
            let local = t.with_timezone(&self.recurrence.tz);
            write!(
                f,
                "{}\t{}\t{}",
                rfc3339(t),
                local.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                local.format("%a")
            )?;
            match self.note(t) {
                Some(note) => writeln!(f, "\t{note}")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
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
mod tests;
