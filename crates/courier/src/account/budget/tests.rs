//! Tests of `budget`.

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
