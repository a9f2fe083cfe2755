//! Cron expressions mean what Unix cron means: checked against a table of
//! next occurrences that Courier did not compute (tests/fixtures/cron_next.tsv,
//! written by croniter through scripts/gen-cron-fixture.py), and through the
//! command operators use to check an expression before saving it. No database.

use std::process::Command;

use chrono::{DateTime, Utc};
use courier::scheduler::occurrence::Recurrence;

const TABLE: &str = include_str!("fixtures/cron_next.tsv");

/// One row of the table.
struct Row {
    line: usize,
    expr: &'static str,
    zone: &'static str,
    after: DateTime<Utc>,
    expected: Vec<DateTime<Utc>>,
    source: &'static str,
    why: &'static str,
}

fn rows() -> Vec<Row> {
    let instant = |s: &str| s.parse::<DateTime<Utc>>().expect("an RFC 3339 instant");
    TABLE
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.starts_with("expr\t") && !l.is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "line {}: 7 tab-separated columns", i + 1);
            Row {
                line: i + 1,
                expr: f[0],
                zone: f[1],
                after: instant(f[2]),
                expected: f[3].split(',').map(instant).collect(),
                source: f[4],
                why: f[6],
            }
        })
        .collect()
}

#[test]
fn every_expression_in_the_table_fires_when_croniter_says() {
    let rows = rows();
    let mut wrong = Vec::new();
    for r in &rows {
        let got: Vec<DateTime<Utc>> = match Recurrence::parse(r.expr, r.zone) {
            Ok(rec) => rec.occurrences(r.after).take(r.expected.len()).collect(),
            Err(e) => {
                wrong.push(format!("line {}: `{}` ({}): {e}", r.line, r.expr, r.why));
                continue;
            }
        };
        if got != r.expected {
            wrong.push(format!(
                "line {}: `{}` in {} after {} ({}, {}):\n  expected {:?}\n  got      {:?}",
                r.line, r.expr, r.zone, r.after, r.why, r.source, r.expected, got
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows disagree:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[test]
fn starting_from_any_occurrence_gives_the_one_after_it() {
    // The scheduler restarts from the last occurrence it expanded.
    for r in rows() {
        let rec = Recurrence::parse(r.expr, r.zone).unwrap();
        for pair in r.expected.windows(2) {
            assert_eq!(
                rec.next_after(pair[0]),
                Some(pair[1]),
                "line {}: `{}` in {} after {}",
                r.line,
                r.expr,
                r.zone,
                pair[0]
            );
        }
    }
}

#[test]
fn the_table_covers_weekdays_days_and_dst_in_two_zones() {
    let rows = rows();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for zone in ["UTC", "Asia/Kolkata", "America/New_York", "Europe/Berlin"] {
        assert!(rows.iter().any(|r| r.zone == zone), "no row in {zone}");
    }
    for r in &rows {
        assert!(
            ["croniter", "croniter+vixie-overlap"].contains(&r.source),
            "line {}: unknown source {}",
            r.line,
            r.source
        );
    }
    assert!(rows.iter().any(|r| r.source == "croniter+vixie-overlap"));
}

fn courier() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    // Never inherit a developer's overrides: the command needs no configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn courier_cron_next_prints_occurrences_in_utc_and_in_the_zone() {
    let out = courier()
        .args(["cron", "next", "0 9 * * 1-5", "--tz", "America/New_York"])
        .args(["--count", "3", "--after", "2026-03-06T00:00:00Z"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "2026-03-06T14:00:00Z\t2026-03-06T09:00:00-05:00\tFri",
            "2026-03-09T13:00:00Z\t2026-03-09T09:00:00-04:00\tMon",
            "2026-03-10T13:00:00Z\t2026-03-10T09:00:00-04:00\tTue",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("0 or 7 = Sunday"), "{stdout}");
}

#[test]
fn courier_cron_next_says_when_dst_moves_an_occurrence() {
    let out = courier()
        .args(["cron", "next", "30 2 * * *", "--tz", "Europe/Berlin"])
        .args(["--count", "2", "--after", "2026-03-28T12:00:00Z"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("2026-03-29T01:00:00Z\t2026-03-29T03:00:00+02:00\tSun\tmoved by DST"),
        "{stdout}"
    );
}

#[test]
fn courier_cron_next_explains_an_expression_it_refuses() {
    let out = courier()
        .args(["cron", "next", "0 9 * * 8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid cron expression `0 9 * * 8`"),
        "{stderr}"
    );
}
