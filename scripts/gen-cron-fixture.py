#!/usr/bin/env python3
"""Writes tests/fixtures/cron_next.tsv: cron expressions with their next
occurrences, computed by croniter (a cron implementation Courier did not write).

tests/cron.rs checks Courier's `Recurrence` against every row. Run after
editing CASES (needs `pip install croniter tzdata`):
    python3 scripts/gen-cron-fixture.py

Two deliberate settings, both there to get Vixie cron's answers:
- `implement_cron_bug=True`: a day field that *starts* with `*` (`*/2`) counts
  as unrestricted, so the two day fields are AND-ed, as Vixie's and cronie's
  entry.c do (`if (ch == '*') e->flags |= DOM_STAR;`). Without it croniter
  ORs them.
- Fall-back overlap: croniter runs a fixed-time job (minute and hour fields not
  starting with `*`) at both instances of a repeated wall-clock time. Vixie
  cron runs it once, at the first ("those jobs that fall into the repeated time
  will not be re-run"), and so does Courier (docs/scheduler.md, "Daylight
  saving time"). For those jobs the script drops the second instance; each row
  where that changed the answer says so in `source` (`croniter+vixie-overlap`)
  and keeps croniter's own list in `croniter_as_is`.

Zones come from the `tzdata` package (the system zone files are ignored), so
the output depends only on the versions named in the file's header.
"""
import datetime as dt
import importlib.metadata
import pathlib
import platform
import zoneinfo

from croniter import croniter

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cron_next.tsv"
UTC = dt.timezone.utc
COUNT = 4

# (expression, zone, after (UTC), what the row shows)
CASES = [
    # Weekdays: 0 or 7 is Sunday, 1 is Monday (2026-01-01 is a Thursday).
    ("0 9 * * 1-5", "UTC", "2026-01-01T00:00:00Z", "weekday range: Monday to Friday"),
    ("0 9 * * MON-FRI", "UTC", "2026-01-01T00:00:00Z", "weekday names range"),
    ("0 9 * * 0", "UTC", "2026-01-01T00:00:00Z", "0 is Sunday"),
    ("0 9 * * 7", "UTC", "2026-01-01T00:00:00Z", "7 is Sunday too"),
    ("0 9 * * SUN", "UTC", "2026-01-01T00:00:00Z", "Sunday by name"),
    ("0 9 * * 5-7", "UTC", "2026-01-01T00:00:00Z", "range ending in 7: Friday, Saturday, Sunday"),
    ("0 9 * * 1,3,5", "UTC", "2026-01-01T00:00:00Z", "weekday list"),
    ("0 9 * * mon,wed,fri", "UTC", "2026-01-01T00:00:00Z", "lower-case weekday names"),
    ("0 9 * * 6", "UTC", "2026-01-01T00:00:00Z", "6 is Saturday"),
    # Minutes and hours: steps, ranges, lists.
    ("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z", "every 15 minutes"),
    ("5-20/5 10 * * *", "UTC", "2026-01-01T00:00:00Z", "range with a step"),
    ("0 */6 * * *", "UTC", "2026-01-01T01:00:00Z", "hour step"),
    ("0 9-17/4 * * *", "UTC", "2026-01-01T00:00:00Z", "hour range with a step"),
    ("15,45 8,20 * * *", "UTC", "2026-01-01T00:00:00Z", "minute and hour lists"),
    ("0 9 * * *", "UTC", "2026-01-01T09:00:00Z", "strictly after: an occurrence at `after` is not repeated"),
    # Day of month, month, and both day fields.
    ("0 9 1 * MON", "UTC", "2026-01-01T00:00:00Z", "both day fields restricted: the 1st OR Mondays"),
    ("0 9 13 * FRI", "UTC", "2026-01-01T00:00:00Z", "the 13th OR Fridays"),
    ("0 9 1,15 * 3", "UTC", "2026-01-01T00:00:00Z", "day list OR Wednesdays"),
    ("0 9 */2 * MON", "UTC", "2026-01-01T00:00:00Z", "a day field starting with * counts as unrestricted: odd days AND Mondays (Vixie)"),
    ("0 9 1-7 * */2", "UTC", "2026-01-01T00:00:00Z", "days 1-7 AND Sun/Tue/Thu/Sat (Vixie)"),
    ("0 12 * JAN,JUL MON", "UTC", "2026-01-01T00:00:00Z", "month names; day of month * leaves Mondays only"),
    ("0 0 1 JAN *", "UTC", "2026-01-01T00:00:00Z", "yearly by month name"),
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", "leap day"),
    ("0 0 31 * *", "UTC", "2026-01-01T00:00:00Z", "the 31st skips shorter months"),
    ("59 23 31 12 *", "UTC", "2026-06-01T00:00:00Z", "year boundary"),
    ("@weekly", "UTC", "2026-01-01T00:00:00Z", "nickname: 0 0 * * 0"),
    ("@hourly", "UTC", "2026-01-01T00:30:00Z", "nickname: 0 * * * *"),
    # A zone without DST; weekdays are the zone's, not UTC's.
    ("30 8 * * 1-5", "Asia/Kolkata", "2026-01-01T00:00:00Z", "no DST: +05:30 all year"),
    ("0 0 * * SUN", "Asia/Kolkata", "2026-01-01T00:00:00Z", "Sunday 00:00 IST is Saturday 18:30 UTC"),
    ("0 9 * * 1-5", "Asia/Kolkata", "2026-03-06T00:00:00Z", "no change on the US and EU DST dates"),
    # America/New_York: spring forward 2026-03-08 02:00 -> 03:00 (EST -> EDT).
    ("0 9 * * 1-5", "America/New_York", "2026-03-06T00:00:00Z", "09:00 local holds across spring forward"),
    ("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", "fixed time in the gap runs when the clock jumps (03:00)"),
    ("0 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "fixed time at the gap's start"),
    ("0,30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z", "two fixed times in the gap: one run at 03:00"),
    ("*/30 * * * *", "America/New_York", "2026-03-08T06:10:00Z", "wildcard minutes: times in the gap are skipped"),
    ("30 * * * *", "America/New_York", "2026-03-08T05:00:00Z", "wildcard hour: 02:30 is skipped"),
    # America/New_York: fall back 2026-11-01 02:00 -> 01:00 (EDT -> EST).
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", "fixed time in the repeated hour runs once, at the first 01:30"),
    ("30 1 * * *", "America/New_York", "2026-11-01T05:45:00Z", "from between the two 01:30s: not again until the next day"),
    ("0 1,2 * * *", "America/New_York", "2026-11-01T04:00:00Z", "hour list: 01:00 once, then 02:00"),
    ("*/30 * * * *", "America/New_York", "2026-11-01T04:40:00Z", "wildcard minutes run in both passes of the repeated hour"),
    ("30 * * * *", "America/New_York", "2026-11-01T04:00:00Z", "wildcard hour runs in both passes"),
    ("0 9 * * MON-FRI", "America/New_York", "2026-10-30T00:00:00Z", "09:00 local holds across fall back"),
    # Europe/Berlin: spring forward 2026-03-29 02:00 -> 03:00, fall back 2026-10-25 03:00 -> 02:00.
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", "fixed time in the gap runs at 03:00"),
    ("*/20 2-3 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", "wildcard minutes: 02:xx does not exist"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "fixed time in the repeated hour runs once"),
    ("*/30 2 * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", "wildcard minutes in both passes of 02:xx"),
    ("0 3 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "03:00 right after the repeated hour happens once"),
    ("0 9 * * 0", "Europe/Berlin", "2026-03-27T00:00:00Z", "Sundays at 09:00 across spring forward"),
    ("0 9 * * 7", "Europe/Berlin", "2026-10-23T00:00:00Z", "Sundays (7) at 09:00 across fall back"),
]


def is_fixed_time(expr: str) -> bool:
    """Vixie's test: a job is fixed-time unless its minute or hour field starts with `*`."""
    if expr.startswith("@"):
        return expr != "@hourly"
    minute, hour = expr.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def is_second_instance(t: dt.datetime, zone: zoneinfo.ZoneInfo) -> bool:
    """Whether `t` is the later of two instants sharing one wall-clock time."""
    wall = t.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return first != second and t.astimezone(UTC) == second


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(expr: str, zone_name: str, after: str, why: str) -> str:
    zone = zoneinfo.ZoneInfo(zone_name)
    start = dt.datetime.fromisoformat(after.replace("Z", "+00:00")).astimezone(zone)
    it = croniter(expr, start, implement_cron_bug=True)
    raw = [it.get_next(dt.datetime) for _ in range(COUNT * 2)]
    kept = raw
    if is_fixed_time(expr):
        kept = [t for t in raw if not is_second_instance(t, zone)]
    expected, as_is = kept[:COUNT], raw[:COUNT]
    if expected == as_is:
        source, croniter_as_is = "croniter", "-"
    else:
        source, croniter_as_is = "croniter+vixie-overlap", ",".join(map(rfc3339, as_is))
    return "\t".join(
        [expr, zone_name, after, ",".join(map(rfc3339, expected)), source, croniter_as_is, why]
    )


def main() -> None:
    zoneinfo.reset_tzpath(to=[])  # zones from the tzdata package only
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("croniter", "python-dateutil", "tzdata")
    )
    lines = [
        "# Next occurrences of cron expressions in a time zone, for tests/cron.rs.",
        f"# Computed by croniter: {versions}, Python {platform.python_version()}.",
        "# Generated by scripts/gen-cron-fixture.py; do not edit by hand.",
        "# Columns: expression, IANA zone, after (exclusive), the next occurrences in UTC,",
        "# where they come from, croniter's own list where it differs, what the row shows.",
        "# source `croniter`: croniter's answer as is (run with implement_cron_bug=True,",
        "#   Vixie's rule for a day field starting with `*`).",
        "# source `croniter+vixie-overlap`: croniter repeats a fixed-time job in a fall-back",
        "#   hour; Vixie cron and Courier run it once, so the repeat is removed.",
        "\t".join(["expr", "zone", "after", "expected_utc", "source", "croniter_as_is", "why"]),
    ]
    lines += [row(*case) for case in CASES]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} rows to {OUT}")


if __name__ == "__main__":
    main()
