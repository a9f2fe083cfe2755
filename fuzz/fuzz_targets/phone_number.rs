//! `PhoneNumber::parse`: never panics; what it accepts round-trips.
#![no_main]
use courier_jobs::PhoneNumber;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(p) = PhoneNumber::parse(s) {
        assert!((7..=15).contains(&p.digits().len()));
        assert_eq!(PhoneNumber::parse(&p.e164()).unwrap(), p);
    }
});
