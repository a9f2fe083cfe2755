//! Tests of `config`.

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(Sources {
        dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")),
        vars: Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    })
}

#[test]
fn defaults_load_and_validate() {
    let s = load(&[]).unwrap();
    assert!(s.database.url.is_none());
    assert_eq!(s.embedded.database, "courier");
}

#[test]
fn env_vars_override_nested_keys() {
    let s = load(&[
        ("COURIER__DATABASE__MAX_CONNECTIONS", "7"),
        ("COURIER__API__LISTEN", "0.0.0.0:9000"),
    ])
    .unwrap();
    assert_eq!(s.database.max_connections, 7);
    assert_eq!(s.api.listen.port(), 9000);
}

#[test]
fn bad_value_names_the_key() {
    let err =
        crate::error::chain(&load(&[("COURIER__DATABASE__MAX_CONNECTIONS", "lots")]).unwrap_err());
    assert!(err.contains("max_connections"), "{err}");
    let err =
        crate::error::chain(&load(&[("COURIER__DATABASE__MAX_CONNECTIONS", "0")]).unwrap_err());
    assert!(err.contains("database.max_connections"), "{err}");
}

#[test]
fn unknown_key_is_refused() {
    let err =
        crate::error::chain(&load(&[("COURIER__DATABASE__MAX_CONECTIONS", "3")]).unwrap_err());
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn secrets_are_redacted_everywhere() {
    let s = load(&[
        ("COURIER__DATABASE__URL", "postgres://u:hunter2hunter2@h/db"),
        ("COURIER__API__TOKEN", "tok-0123456789abcdef"),
    ])
    .unwrap();
    let shown = format!("{s:?}\n{}", s.to_redacted_toml());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert_eq!(s.api.token.unwrap().expose(), "tok-0123456789abcdef");
}

#[test]
fn bad_database_url_is_refused() {
    let err = crate::error::chain(&load(&[("COURIER__DATABASE__URL", "mysql://x")]).unwrap_err());
    assert!(err.contains("database.url"), "{err}");
}

#[test]
fn builtin_defaults_validate() {
    Settings::defaults().validate().unwrap();
}

#[test]
fn media_settings_are_validated_with_the_key_named() {
    let mut s = Settings::defaults();
    assert!(
        s.browser.media_allow_cidrs.is_empty(),
        "public addresses only by default"
    );
    s.browser.media_allow_cidrs = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
    s.validate().unwrap();
    s.browser.media_allow_cidrs = vec!["10.0.0.0/33".into()];
    let e = s.validate().unwrap_err().to_string();
    assert!(
        e.contains("browser.media_allow_cidrs") && e.contains("10.0.0.0/33"),
        "{e}"
    );
    let mut s = Settings::defaults();
    s.browser.media_timeout = std::time::Duration::ZERO;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("browser.media_timeout"), "{e}");
}

#[test]
fn the_no_browser_retry_defaults_to_15s_and_is_read_and_refused_at_zero_by_name() {
    let s = Settings::defaults();
    assert_eq!(
        s.browser.unavailable_retry,
        std::time::Duration::from_secs(15)
    );
    let s = load(&[("COURIER__BROWSER__UNAVAILABLE_RETRY", "2m")]).unwrap();
    assert_eq!(
        s.browser.unavailable_retry,
        std::time::Duration::from_secs(120)
    );
    let e =
        crate::error::chain(&load(&[("COURIER__BROWSER__UNAVAILABLE_RETRY", "0s")]).unwrap_err());
    assert!(e.contains("browser.unavailable_retry"), "{e}");
}

#[test]
fn login_link_settings_are_validated_with_the_key_named() {
    let s = Settings::defaults();
    assert_eq!(s.api.login_link_ttl, std::time::Duration::from_secs(600));
    assert_eq!(s.api.public_url, None);
    for (ttl, ok) in [(0, false), (1, true), (86_400, true), (86_401, false)] {
        let mut s = Settings::defaults();
        s.api.login_link_ttl = std::time::Duration::from_secs(ttl);
        match s.validate() {
            Ok(()) => assert!(ok, "{ttl}s accepted"),
            Err(e) => {
                assert!(!ok, "{ttl}s refused: {e}");
                assert!(e.to_string().contains("api.login_link_ttl"), "{e}");
            }
        }
    }
    for (url, ok) in [
        ("https://courier.example.com", true),
        ("http://10.0.0.5:8080/", true),
        ("courier.example.com", false),
        ("ftp://courier.example.com", false),
        ("https://courier.example.com/?token=x", false),
    ] {
        let mut s = Settings::defaults();
        s.api.public_url = Some(url.into());
        match s.validate() {
            Ok(()) => assert!(ok, "{url} accepted"),
            Err(e) => {
                assert!(!ok, "{url} refused: {e}");
                assert!(e.to_string().contains("api.public_url"), "{e}");
            }
        }
    }
}

#[test]
fn a_remote_browser_needs_a_session_key_and_snapshots_a_positive_limit() {
    let url = ("COURIER__BROWSER__WEBDRIVER_URL", "http://grid:4444/wd/hub");
    let err = crate::error::chain(&load(&[url]).unwrap_err());
    assert!(
        err.contains("browser.session_key") && err.contains("webdriver_url"),
        "{err}"
    );
    let key = ("COURIER__BROWSER__SESSION_KEY", "ab".repeat(32));
    let s = load(&[url, (key.0, key.1.as_str())]).unwrap();
    assert_eq!(s.browser.snapshot_max_bytes, 64 << 20);
    let err = crate::error::chain(
        &load(&[("COURIER__BROWSER__WEBDRIVER_URL", "grid:4444")]).unwrap_err(),
    );
    assert!(err.contains("browser.webdriver_url"), "{err}");
    let err =
        crate::error::chain(&load(&[("COURIER__BROWSER__SNAPSHOT_MAX_BYTES", "0")]).unwrap_err());
    assert!(err.contains("browser.snapshot_max_bytes"), "{err}");
}

#[test]
fn retention_and_rotation_settings_are_validated_with_the_key_named() {
    let d = Settings::defaults().webhooks;
    assert_eq!(d.events_retain, std::time::Duration::from_secs(7 * 86_400));
    assert_eq!(d.retain_dead, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(d.prune_batch, 5000);
    let refused = |tweak: fn(&mut Settings), key: &str| {
        let mut s = Settings::defaults();
        tweak(&mut s);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    };
    refused(
        |s| s.webhooks.events_retain = std::time::Duration::ZERO,
        "webhooks.events_retain",
    );
    refused(
        |s| s.webhooks.retain_delivered = std::time::Duration::ZERO,
        "webhooks.retain_delivered",
    );
    refused(|s| s.webhooks.prune_batch = 0, "webhooks.prune_batch");
    refused(
        |s| s.webhooks.rotation_overlap = std::time::Duration::from_secs(8 * 86_400),
        "webhooks.rotation_overlap",
    );
}
