//! Values read off the WhatsApp Web page: ack icons and labels, ack codes,
//! the own-number wid, and QR tokens drawn for the login page.
#![no_main]
use courier::browser::{AckLevel, Selectors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Option<&str>, i64, &str, &str)| {
    let (icon, label, code, wid, qr) = input;
    let _ = Selectors::builtin().ack_from_icon(icon, label);
    if let Some(a) = AckLevel::from_code(code) {
        assert_eq!(i64::from(a.code()), code);
    }
    if let Some(phone) = courier::account::login::phone_from_wid(wid) {
        assert!(courier_jobs::PhoneNumber::parse(&phone).is_ok());
    }
    assert_eq!(
        courier::api::login::svg(qr).is_ok(),
        courier::api::login::png(qr).is_ok()
    );
});
