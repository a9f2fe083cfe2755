//! Tests of `page`.

use super::typed;

#[test]
fn line_breaks_are_typed_as_shift_enter() {
    assert_eq!(typed("plain"), "plain");
    assert_eq!(typed("a\tb"), "a b");
    assert_eq!(
        typed("a\nb\r\nc\rd"),
        "a\u{E008}\u{E007}\u{E000}b\u{E008}\u{E007}\u{E000}c\u{E008}\u{E007}\u{E000}d"
    );
}
