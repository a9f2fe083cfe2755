//! Tests of `page`.

use super::bridge::BRIDGE_JS;
use super::send::{first_url, mime_of};
use crate::browser::waweb::{referenced_keys, WaWeb};

#[test]
fn the_first_url_of_a_text_is_the_one_previewed() {
    assert_eq!(
        first_url("see https://example.com/a?b=1 now"),
        Some("https://example.com/a?b=1")
    );
    assert_eq!(first_url("x http://h.test"), Some("http://h.test"));
    assert_eq!(first_url("no link"), None);
}

#[test]
fn media_types_follow_the_file_extension() {
    assert_eq!(mime_of("a.JPG"), "image/jpeg");
    assert_eq!(mime_of("clip.mp4"), "video/mp4");
    assert_eq!(mime_of("report.pdf"), "application/pdf");
    assert_eq!(mime_of("noext"), "application/octet-stream");
}

/// The driver reads every WhatsApp Web name from `config/wa-web.toml`: each
/// name its in-page script references through the helpers is in the file,
/// and the script spells no module or member name of the file itself.
#[test]
fn the_page_bridge_uses_only_names_from_the_names_file() {
    let names = WaWeb::builtin();
    let code: String = BRIDGE_JS
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let keys = referenced_keys(&code);
    assert!(
        keys.len() > 40,
        "the scan sees the helpers ({} found)",
        keys.len()
    );
    for (section, key) in &keys {
        let known = match *section {
            "modules" => names.modules.contains_key(key),
            "members" => names.members.contains_key(key),
            "events" => names.events.contains_key(key),
            "states" => names.states.contains_key(key),
            _ => false,
        };
        assert!(
            known,
            "bridge.js uses {section} `{key}`, which config/wa-web.toml does not list"
        );
    }
    // No literal module names, and no member reached around the helpers
    // (`.state`, `.getModelsArray(`…).
    assert!(
        !BRIDGE_JS.contains("WAWeb"),
        "bridge.js spells a module name"
    );
    assert!(!BRIDGE_JS.contains("require('") && !BRIDGE_JS.contains("require(\""));
    for (key, n) in &names.members {
        let name = n.name.as_deref().unwrap_or(key);
        for pattern in [
            format!(".{name}("),
            format!(".{name};"),
            format!(".{name})"),
            format!(".{name},"),
            format!(".{name} "),
        ] {
            assert!(
                !code.contains(&pattern),
                "bridge.js reaches member `{name}` directly (`{pattern}`), not through get/call/put"
            );
        }
    }
    // A key the file lacks is caught by the same scan.
    let bad = referenced_keys("call(x, 'sendMessageViaDom')");
    assert!(!names.members.contains_key(&bad[0].1));
}
