//! Media paths and URLs: the enqueue-time and send-time checks agree, and
//! only http(s) URLs get through.
#![no_main]
use courier_jobs::send::MediaSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(MediaSource::Path(p)) = MediaSource::parse_path(s) {
        assert!(courier::media::check_relative(&p).is_ok());
    }
    if let Ok(MediaSource::Url(u)) = MediaSource::parse_url(s) {
        assert!(matches!(u.scheme(), "http" | "https"));
        let _ = courier::media::AddressPolicy::default().check_url(&u);
    }
});
