//! `Recurrence::parse(expr, tz)` and the next occurrences: never panic, and
//! occurrences move forward. Input: `<tz>\n<expr>`.
#![no_main]
use chrono::{TimeZone, Utc};
use courier::scheduler::occurrence::Recurrence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let (tz, expr) = s.split_once('\n').unwrap_or(("UTC", s));
    if let Ok(r) = Recurrence::parse(expr, tz) {
        let mut prev = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        for next in r.occurrences(prev).take(3) {
            assert!(next > prev);
            prev = next;
        }
    }
});
