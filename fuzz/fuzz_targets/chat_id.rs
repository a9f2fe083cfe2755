//! `ChatId::parse` and `MessageBody::parse`: never panic; chat ids round-trip.
#![no_main]
use courier_jobs::{ChatId, MessageBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(c) = ChatId::parse(s) {
        assert_eq!(ChatId::parse(&c.to_string()).unwrap(), c);
    }
    let _ = MessageBody::parse(s);
});
