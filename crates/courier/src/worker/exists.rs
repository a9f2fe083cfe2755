//! Whether a number is on WhatsApp, remembered per worker: the page's exists
//! query (`queryWidExists`) runs before the first send to a number, and its
//! answer is kept for `delivery.exists_ttl` so later sends to the same number
//! ask nothing. In memory: a worker that restarts asks again, once per
//! number (a table would need a migration and buys little: the query is one
//! round trip, and an answer may change anyway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answers older than the TTL are forgotten; the map is bounded.
#[derive(Debug)]
pub(crate) struct ExistsCache {
    ttl: Duration,
    answers: Mutex<HashMap<String, (bool, Instant)>>,
}

/// Most numbers remembered; past it, expired answers are dropped first, then
/// everything (the cache is an optimisation, not a record).
const MAX_ENTRIES: usize = 100_000;

impl ExistsCache {
    /// An empty cache keeping answers for `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Mutex::default(),
        }
    }

    /// The remembered answer for `number`, if still fresh at `now`.
    pub(crate) fn get(&self, number: &str, now: Instant) -> Option<bool> {
        let answers = self.answers.lock().expect("exists cache");
        answers
            .get(number)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(on, _)| *on)
    }

    /// Remembers the answer for `number` from `now`.
    pub(crate) fn put(&self, number: &str, on: bool, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut answers = self.answers.lock().expect("exists cache");
        if answers.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            answers.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if answers.len() >= MAX_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(number.to_string(), (on, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_for_the_ttl_then_asked_again() {
        let c = ExistsCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(c.get("447700900001", t0), None);
        c.put("447700900001", false, t0);
        assert_eq!(
            c.get("447700900001", t0 + Duration::from_secs(59)),
            Some(false)
        );
        assert_eq!(c.get("447700900001", t0 + Duration::from_secs(60)), None);
        c.put("447700900001", true, t0 + Duration::from_secs(61));
        assert_eq!(
            c.get("447700900001", t0 + Duration::from_secs(62)),
            Some(true)
        );
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let c = ExistsCache::new(Duration::ZERO);
        let t0 = Instant::now();
        c.put("1", true, t0);
        assert_eq!(c.get("1", t0), None);
    }
}
