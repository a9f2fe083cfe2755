//! Hostile input for the pure parsers: phone numbers, chat ids, message
//! bodies, media paths and URLs, job payloads, cron expressions with time
//! zones, `rate_limit_config` JSON, and what Courier reads off the WhatsApp
//! Web page (QR tokens, ack icons, the own-number wid, whole page views).
//!
//! Property tests (proptest) run in CI: generated inputs, both arbitrary and
//! shaped to be nearly valid, must never panic, and every refusal must be a
//! typed error that names the problem. The same targets run under libFuzzer
//! in `fuzz/` (by hand, nightly).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use courier::account::login::{Deadlines, LoginMachine, PageView};
use courier::browser::{AckLevel, Selectors};
use courier::jobs::send::MediaSource;
use courier::jobs::{ChatId, MessageBody, PhoneNumber};
use courier::scheduler::occurrence::Recurrence;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::String),
        "[0-9]{1,2}:[0-9]{1,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The `rate_limit_config` keys with any JSON value each.
fn rate_limit_config() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "per_minute",
        "per_hour",
        "per_day",
        "daily_limit",
        "min_gap_seconds",
        "jitter_seconds",
        "quiet_hours",
        "start",
        "end",
    ]);
    let quiet = (
        "\\PC{0,8}|[0-9]{1,3}:[0-9]{1,3}",
        "\\PC{0,8}|[0-9]{1,3}:[0-9]{1,3}",
    )
        .prop_map(|(s, e)| json!({"start": s, "end": e}));
    let value = prop_oneof![4 => any_json(), 1 => quiet];
    prop::collection::btree_map(keys, value, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        "[0-9]{1,3}",
        "[0-9]{1,2}-[0-9]{1,3}",
        "\\*/[0-9]{1,3}",
        "[0-9]{1,2}(,[0-9]{1,2}){1,3}",
        "(MON|TUE|FRI|SUN|JAN|DEC|L|W|#|\\?)",
        "\\PC{0,4}",
    ]
}

fn cron_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(cron_field(), 4..9).prop_map(|f| f.join(" ")),
        "\\PC{0,40}",
    ]
}

fn time_zone() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "UTC",
            "Asia/Kolkata",
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "America/Sao_Paulo",
            " Asia/Kathmandu ",
        ])
        .prop_map(str::to_string),
        "\\PC{0,20}",
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 .. 2200, including DST edges by sheer number.
    (0i64..7_258_118_400).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

fn page_view() -> impl Strategy<Value = PageView> {
    (
        "\\PC{0,30}",
        proptest::option::of("\\PC{0,60}"),
        any::<[bool; 6]>(),
        proptest::option::of("\\PC{0,20}|[0-9]{7,15}"),
        proptest::option::of("\\PC{0,20}|[0-9]{7,20}@(c\\.us|lid)"),
    )
        .prop_map(|(url, qr, b, phone, own_id)| PageView {
            url,
            qr,
            qr_exhausted: b[0],
            loading: b[1],
            main: b[2],
            conflict: b[3],
            banned: b[4],
            logged_out: b[5],
            phone,
            own_id,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn phone_numbers_parse_or_say_why(
        s in prop_oneof!["\\PC{0,30}", "\\+?[0-9 ()./-]{0,24}", "00[0-9]{5,18}"],
    ) {
        match PhoneNumber::parse(&s) {
            Ok(p) => {
                prop_assert!((7..=15).contains(&p.digits().len()), "{}", p.digits());
                prop_assert!(p.digits().bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(PhoneNumber::parse(&p.e164()).unwrap(), p);
            }
            Err(e) => prop_assert!(!e.field.is_empty() && !e.detail.is_empty()),
        }
    }

    #[test]
    fn chat_ids_parse_or_say_why(
        s in prop_oneof![
            "\\PC{0,40}",
            "[0-9+-]{0,20}(:[0-9]{1,3})?@(c\\.us|g\\.us|lid|s\\.whatsapp\\.net|broadcast|newsletter|)",
            "[0-9]{10,20}-[0-9]{6,12}@g\\.us",
        ],
    ) {
        match ChatId::parse(&s) {
            Ok(c) => prop_assert_eq!(ChatId::parse(&c.to_string()).unwrap(), c),
            Err(e) => prop_assert!(!e.field.is_empty() && !e.detail.is_empty()),
        }
    }

    #[test]
    fn message_bodies_and_media_sources_parse_or_say_why(
        s in prop_oneof![
            "\\PC{0,64}",
            "(\\.\\./|/|\\./|[a-z]{1,4}/){0,4}[a-z.]{0,8}",
            "(https?|ftp|file|javascript|data)://[a-z0-9.:@\\[\\]]{0,20}/[\\PC]{0,10}",
        ],
    ) {
        if let Err(e) = MessageBody::parse(&s) {
            prop_assert!(!e.detail.is_empty());
        }
        match MediaSource::parse_path(&s) {
            Ok(MediaSource::Path(p)) => {
                // The enqueue-time check and the send-time one agree.
                prop_assert!(courier::media::check_relative(&p).is_ok(), "{}", p);
            }
            Ok(other) => prop_assert!(false, "parse_path gave {other:?}"),
            Err(e) => prop_assert_eq!(e.field, "media_path"),
        }
        match MediaSource::parse_url(&s) {
            Ok(MediaSource::Url(u)) => prop_assert!(matches!(u.scheme(), "http" | "https")),
            Ok(other) => prop_assert!(false, "parse_url gave {other:?}"),
            Err(e) => prop_assert_eq!(e.field, "media_url"),
        }
        if let Ok(u) = url::Url::parse(&s) {
            let _ = courier::media::AddressPolicy::default().check_url(&u);
        }
    }

    #[test]
    fn job_payloads_from_any_json_deserialize_or_fail_cleanly(v in any_json()) {
        use courier::jobs::{discover, retry, scrape, send, JobPayload};
        fn check<J: JobPayload>(v: &Value) -> Result<(), TestCaseError> {
            if let Ok(job) = serde_json::from_value::<J>(v.clone()) {
                if let Err(e) = job.validate() {
                    prop_assert!(!e.field.is_empty() && !e.detail.is_empty());
                }
                let _ = job.idempotency_key();
            }
            Ok(())
        }
        check::<send::SendJob>(&v)?;
        check::<discover::DiscoverJob>(&v)?;
        check::<scrape::ScrapeJob>(&v)?;
        check::<retry::RetryJob>(&v)?;
    }

    #[test]
    fn cron_with_time_zones_parses_or_says_why_and_runs_forward(
        expr in cron_expr(),
        tz in time_zone(),
        after in instant(),
    ) {
        match Recurrence::parse(&expr, &tz) {
            Ok(r) => {
                let mut prev = after;
                for next in r.occurrences(after).take(3) {
                    prop_assert!(next > prev, "{expr} in {tz}: {next} after {prev}");
                    prev = next;
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn rate_limit_config_resolves_or_names_the_key(
        v in prop_oneof![3 => rate_limit_config(), 1 => any_json()],
    ) {
        let defaults = courier::config::Settings::defaults().budget.limits();
        match defaults.resolve(&v) {
            Ok(l) => {
                // Whatever was accepted is usable by the budget gate.
                let _ = l.effective(3, &[5, 10], 50, 60);
            }
            Err(courier::account::budget::BudgetError::Config { key, problem }) => {
                prop_assert!(!key.is_empty() && !problem.is_empty());
            }
        }
    }

    #[test]
    fn what_the_page_shows_never_panics_the_reader(
        icon in "\\PC{0,20}|msg-(check|dblcheck|time|dblcheck-ack)",
        label in proptest::option::of("\\PC{0,20}| ?(Sent|Delivered|Read|Pending) ?"),
        code in any::<i64>(),
        wid in "\\PC{0,30}|\"?[0-9]{0,17}(:[0-9]{1,2})?@(c\\.us|lid)\"?",
    ) {
        let sel = Selectors::builtin();
        let _ = sel.ack_from_icon(&icon, label.as_deref());
        if let Some(a) = AckLevel::from_code(code) {
            prop_assert_eq!(i64::from(a.code()), code);
        }
        if let Some(phone) = courier::account::login::phone_from_wid(&wid) {
            prop_assert!(PhoneNumber::parse(&phone).is_ok(), "{wid} gave {phone}");
        }
    }

    #[test]
    fn the_login_machine_survives_any_sequence_of_page_views(
        views in prop::collection::vec((page_view(), 0u64..120_000), 1..20),
    ) {
        let start = Instant::now();
        let deadlines = Deadlines {
            starting: Duration::from_secs(60),
            qr: Duration::from_secs(300),
            authenticating: Duration::from_secs(120),
        };
        let mut m = LoginMachine::start(start, deadlines);
        let mut t = start;
        for (view, ms) in views {
            t += Duration::from_millis(ms);
            let _ = m.observe(&view, t);
            let _ = m.check_deadline(t);
            if m.state().is_transient() {
                prop_assert!(m.deadline().is_some(), "{:?} has no deadline", m.state());
            }
        }
    }
}

proptest! {
    // Drawing a QR is slow in a debug build: fewer cases.
    #![proptest_config(ProptestConfig { cases: 40, ..config() })]

    #[test]
    fn any_qr_token_is_drawn_or_refused_with_a_conflict(
        qr in "\\PC{0,40}|[A-Za-z0-9+/=,@]{2900,3100}",
    ) {
        // QR tokens are drawn for the login page; too long is a 409, not a panic.
        let svg = courier::api::login::svg(&qr);
        let png = courier::api::login::png(&qr);
        prop_assert_eq!(svg.is_ok(), png.is_ok());
        if let Err(e) = svg {
            prop_assert!(e.to_string().contains("cannot be drawn"), "{e}");
        }
    }
}
