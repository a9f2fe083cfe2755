//! Tests of `occurrence`.

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

fn next(expr: &str, tz: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let r = Recurrence::parse(expr, tz).unwrap_or_else(|e| panic!("{e}"));
    r.occurrences(after).take(n).collect()
}

fn weekdays(times: &[DateTime<Utc>]) -> Vec<String> {
    times.iter().map(|t| t.format("%a").to_string()).collect()
}

// 2026-01-01 is a Thursday.

#[test]
fn five_field_weekdays_count_from_sunday_as_0_so_1_5_is_monday_to_friday() {
    let week = next("0 9 * * 1-5", "UTC", utc(2026, 1, 1, 0, 0), 5);
    assert_eq!(weekdays(&week), ["Thu", "Fri", "Mon", "Tue", "Wed"]);
    let week = next("0 9 * * MON-FRI", "UTC", utc(2026, 1, 1, 0, 0), 5);
    assert_eq!(weekdays(&week), ["Thu", "Fri", "Mon", "Tue", "Wed"]);
}

#[test]
fn sunday_is_0_or_7_or_sun() {
    for expr in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN", "0 9 * * sun"] {
        assert_eq!(
            next(expr, "UTC", utc(2026, 1, 1, 0, 0), 2),
            [utc(2026, 1, 4, 9, 0), utc(2026, 1, 11, 9, 0)],
            "{expr}"
        );
    }
    let weekend = next("0 9 * * 6-7", "UTC", utc(2026, 1, 1, 0, 0), 2);
    assert_eq!(weekdays(&weekend), ["Sat", "Sun"]);
}

#[test]
fn with_both_day_fields_restricted_either_day_matches() {
    // The 1st of the month (a Thursday), and every Monday.
    assert_eq!(
        next("0 9 1 * MON", "UTC", utc(2026, 1, 1, 0, 0), 3),
        [
            utc(2026, 1, 1, 9, 0),
            utc(2026, 1, 5, 9, 0),
            utc(2026, 1, 12, 9, 0)
        ]
    );
}

#[test]
fn a_day_field_that_starts_with_a_star_counts_as_unrestricted_as_in_vixie_cron() {
    // `*/2` is odd days, yet Vixie's parser marks the field as `*`: the
    // two fields are AND-ed, so odd days that are Mondays.
    assert_eq!(
        next("0 9 */2 * MON", "UTC", utc(2026, 1, 1, 0, 0), 2),
        [utc(2026, 1, 5, 9, 0), utc(2026, 1, 19, 9, 0)]
    );
    // `+` asks croner for the AND explicitly; it is left alone.
    assert_eq!(
        next("0 9 1 * +MON", "UTC", utc(2026, 1, 1, 0, 0), 1),
        [utc(2026, 6, 1, 9, 0)]
    );
}

#[test]
fn nicknames_are_the_expressions_vixie_cron_gives_them() {
    let after = utc(2026, 1, 1, 0, 30);
    for (nick, expr) in NICKNAMES {
        assert_eq!(
            next(nick, "UTC", after, 3),
            next(expr, "UTC", after, 3),
            "{nick}"
        );
    }
    let e = Recurrence::parse("@reboot", "UTC").unwrap_err();
    assert!(e.to_string().contains("unknown nickname"), "{e}");
}

#[test]
fn six_and_seven_field_expressions_keep_the_cron_crates_meaning() {
    // Expected values: what the `cron` crate 0.17 (Courier's parser until
    // this change) gives for the same expressions.
    let after = utc(2026, 1, 1, 0, 0);
    let r = Recurrence::parse("0 0 9 * * 1-5", "UTC").unwrap();
    assert_eq!(r.dialect(), Dialect::Quartz);
    let week: Vec<_> = r.occurrences(after).take(4).collect();
    assert_eq!(weekdays(&week), ["Thu", "Sun", "Mon", "Tue"], "1 is Sunday");
    assert_eq!(
        weekdays(&next("0 0 9 * * 7", "UTC", after, 1)),
        ["Sat"],
        "7 is Saturday"
    );
    assert_eq!(
        next("0 0 9 1 * MON", "UTC", after, 2),
        [utc(2026, 6, 1, 9, 0), utc(2027, 2, 1, 9, 0)],
        "both day fields must match"
    );
    assert_eq!(
        next("0 30 8 * * SAT 2027", "UTC", after, 1),
        [utc(2027, 1, 2, 8, 30)]
    );
    assert_eq!(
        next("30 15 10 ? * MON-FRI", "UTC", after, 2),
        [
            utc(2026, 1, 1, 10, 15) + chrono::Duration::seconds(30),
            utc(2026, 1, 2, 10, 15) + chrono::Duration::seconds(30)
        ]
    );
    assert!(Recurrence::parse("0 0 9 * * 0", "UTC").is_err());
}

#[test]
fn a_leading_star_in_the_minute_or_hour_field_makes_a_wall_clock_job() {
    for (expr, rule) in [
        ("*/15 * * * *", DstRule::WallClock),
        ("30 * * * *", DstRule::WallClock),
        ("@hourly", DstRule::WallClock),
        ("0 */2 * * *", DstRule::WallClock),
        ("*/10 0 9 * * *", DstRule::WallClock),
        ("30 2 * * *", DstRule::FixedTime),
        ("0 1,2 * * *", DstRule::FixedTime),
        ("0 9-17 * * *", DstRule::FixedTime),
        ("@daily", DstRule::FixedTime),
        ("0 0 9 * * *", DstRule::FixedTime),
    ] {
        assert_eq!(
            Recurrence::parse(expr, "UTC").unwrap().dst_rule(),
            rule,
            "{expr}"
        );
    }
}

#[test]
fn a_fixed_time_the_clock_skips_runs_when_the_clock_jumps() {
    // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    assert_eq!(
        next("30 2 * * *", "America/New_York", utc(2026, 3, 7, 0, 0), 3),
        [
            utc(2026, 3, 7, 7, 30),
            utc(2026, 3, 8, 7, 0),
            utc(2026, 3, 9, 6, 30)
        ]
    );
    // Two skipped times make one run.
    assert_eq!(
        next("0,30 2 * * *", "America/New_York", utc(2026, 3, 8, 5, 0), 2),
        [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0)]
    );
}

#[test]
fn a_wall_clock_job_skips_the_times_the_clock_skips() {
    assert_eq!(
        next(
            "*/30 * * * *",
            "America/New_York",
            utc(2026, 3, 8, 6, 10),
            3
        ),
        [
            utc(2026, 3, 8, 6, 30),
            utc(2026, 3, 8, 7, 0),
            utc(2026, 3, 8, 7, 30)
        ],
        "01:30 EST, then 03:00 and 03:30 EDT"
    );
}

#[test]
fn a_fixed_time_the_clock_repeats_runs_once_at_its_first_instance() {
    // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens
    // at 05:30 and at 06:30 UTC.
    let day = |after| next("30 1 * * *", "America/New_York", after, 2);
    let expected = [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)];
    assert_eq!(day(utc(2026, 11, 1, 0, 0)), expected);
    // Asked from between the two instances (as a restarted scheduler
    // would), the second one is still not an occurrence.
    assert_eq!(
        next("30 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 30), 1),
        [utc(2026, 11, 2, 6, 30)]
    );
    assert_eq!(
        next("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 0), 1),
        [utc(2026, 11, 2, 6, 30)]
    );
}

#[test]
fn a_wall_clock_job_runs_in_both_passes_of_a_repeated_hour() {
    let both_passes = [
        utc(2026, 11, 1, 5, 0),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 0),
        utc(2026, 11, 1, 6, 30),
        utc(2026, 11, 1, 7, 0),
    ];
    let from = |after| next("*/30 * * * *", "America/New_York", after, 5);
    assert_eq!(from(utc(2026, 11, 1, 4, 40)), both_passes);
    // From inside either pass, nothing of the rest is lost.
    assert_eq!(from(utc(2026, 11, 1, 5, 10))[..4], both_passes[1..]);
    assert_eq!(from(utc(2026, 11, 1, 6, 10))[..2], both_passes[3..]);
}

#[test]
fn an_impossible_date_has_no_occurrence() {
    let r = Recurrence::parse("0 0 30 2 *", "UTC").unwrap();
    assert_eq!(r.next_after(utc(2026, 1, 1, 0, 0)), None);
}

#[test]
fn a_step_needs_a_start() {
    let e = Recurrence::parse("/15 * * * *", "UTC").unwrap_err();
    assert!(e.to_string().contains("write `*/15`"), "{e}");
    // `0/15` is `0-59/15`, as it was.
    assert_eq!(
        next("0/15 9 * * *", "UTC", utc(2026, 1, 1, 0, 0), 2),
        [utc(2026, 1, 1, 9, 0), utc(2026, 1, 1, 9, 15)]
    );
}

#[test]
fn the_preview_shows_each_occurrence_in_utc_and_in_the_zone() {
    let p = preview("30 2 * * 0", "Europe/Berlin", utc(2026, 3, 20, 0, 0), 2).unwrap();
    let text = p.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "2026-03-22T01:30:00Z\t2026-03-22T02:30:00+01:00\tSun",
            "2026-03-29T01:00:00Z\t2026-03-29T03:00:00+02:00\tSun\t\
             moved by DST: the scheduled time did not exist; runs when the clock jumps",
        ],
        "{text}"
    );
    assert!(text.contains("# 30 2 * * 0 in Europe/Berlin"), "{text}");
    let repeated = preview("0 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12, 0), 1)
        .unwrap()
        .to_string();
    assert!(
        repeated.contains("\tDST: 02:00 happens twice today; this is the first"),
        "{repeated}"
    );
    let none = preview("0 0 30 2 *", "UTC", utc(2026, 1, 1, 0, 0), 3).unwrap();
    assert!(none.occurrences().is_empty());
    assert!(none
        .to_string()
        .contains("# no occurrence after 2026-01-01T00:00:00Z"));
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
