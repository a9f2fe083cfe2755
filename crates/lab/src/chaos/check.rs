//! The invariants a chaos run checks, as pure functions over what the
//! simulator read back and what the database holds, plus the statistics of
//! the report. No I/O here, so each rule is unit-tested on its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

/// Most events inside any window `(t - w, t]`, `times` sorted ascending.
pub fn max_in_window(times: &[DateTime<Utc>], w: Duration) -> (usize, Option<DateTime<Utc>>) {
    let mut best = (0, None);
    let mut lo = 0;
    for (hi, &t) in times.iter().enumerate() {
        while times[lo] <= t - w {
            lo += 1;
        }
        let n = hi - lo + 1;
        if n > best.0 {
            best = (n, Some(t));
        }
    }
    best
}

/// An account's limits per window, in seconds: `[(60, per_minute), (3600,
/// per_hour), (86400, per_day)]`.
pub type WindowLimits = [(i64, u32); 3];

/// A window in which an account received more messages than its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetViolation {
    /// The account (simulator id = Courier account id).
    pub account: String,
    /// Window length in seconds.
    pub window_secs: i64,
    /// The limit.
    pub limit: u32,
    /// The most messages seen in one such window.
    pub seen: usize,
    /// The end of that window.
    pub at: DateTime<Utc>,
}

/// Judges every account's receive times (from the simulator's own clock)
/// against its limits over sliding windows. Accounts without limits are
/// reported as a violation of a zero limit: every account must be known.
pub fn budget_violations(
    received: &HashMap<String, Vec<DateTime<Utc>>>,
    limits: &HashMap<String, WindowLimits>,
) -> Vec<BudgetViolation> {
    let mut out = Vec::new();
    let mut accounts: Vec<&String> = received.keys().collect();
    accounts.sort();
    for account in accounts {
        let mut times = received[account].clone();
        times.sort();
        let windows = limits
            .get(account)
            .copied()
            .unwrap_or([(60, 0), (3600, 0), (86_400, 0)]);
        for (secs, limit) in windows {
            let (seen, at) = max_in_window(&times, Duration::seconds(secs));
            if seen > limit as usize {
                out.push(BudgetViolation {
                    account: account.clone(),
                    window_secs: secs,
                    limit,
                    seen,
                    at: at.expect("a non-empty window has an end"),
                });
            }
        }
    }
    out
}

/// What the simulator received, reconciled with what was expected (one
/// message per chat: every target of the run is a distinct chat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Expected chats that received exactly one message.
    pub delivered: usize,
    /// Extra copies: for each chat, messages received beyond the first.
    pub duplicates: usize,
    /// The chats that received more than one message.
    pub duplicated_chats: Vec<String>,
    /// Messages to chats nobody asked for.
    pub unexpected: usize,
    /// Expected chats that received nothing (the database says why, or
    /// they are lost).
    pub not_received: Vec<String>,
}

/// Reconciles `received` chats (one entry per message that reached the
/// simulator) with the `expected` ones.
pub fn reconcile(expected: &HashSet<String>, received: &[String]) -> Reconciled {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for chat in received {
        *counts.entry(chat.as_str()).or_default() += 1;
    }
    let mut out = Reconciled::default();
    for (chat, n) in &counts {
        if !expected.contains(*chat) {
            out.unexpected += n;
            continue;
        }
        out.delivered += 1;
        if *n > 1 {
            out.duplicates += n - 1;
            out.duplicated_chats.push(chat.to_string());
        }
    }
    let mut missing: Vec<String> = expected
        .iter()
        .filter(|c| !counts.contains_key(c.as_str()))
        .cloned()
        .collect();
    missing.sort();
    out.not_received = missing;
    out
}

/// The `p`-th percentile (0–100, nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// Time from `t0` to the first receive after it, per account, then the
/// largest over `accounts` (those that sent anything after `t0`; an account
/// with no more work does not count). `None` when none of them sent again.
pub fn recovery(
    received: &HashMap<String, Vec<DateTime<Utc>>>,
    accounts: &[String],
    t0: DateTime<Utc>,
) -> Option<Duration> {
    accounts
        .iter()
        .filter_map(|a| {
            received
                .get(a)?
                .iter()
                .filter(|&&t| t > t0)
                .min()
                .map(|&t| t - t0)
        })
        .max()
}

/// Time from `t0` to the first receive after it, over all accounts.
pub fn recovery_any(
    received: &HashMap<String, Vec<DateTime<Utc>>>,
    t0: DateTime<Utc>,
) -> Option<Duration> {
    received
        .values()
        .flatten()
        .filter(|&&t| t > t0)
        .min()
        .map(|&t| t - t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn max_in_window_counts_half_open_windows() {
        // 0, 30, 59 fit in one minute; 60 pushes 0 out of (0, 60].
        let times = [t(0), t(30), t(59), t(60)];
        assert_eq!(
            max_in_window(&times, Duration::seconds(60)),
            (3, Some(t(59)))
        );
        assert_eq!(max_in_window(&[], Duration::seconds(60)), (0, None));
        let burst = [t(0), t(0), t(0)];
        assert_eq!(max_in_window(&burst, Duration::seconds(1)).0, 3);
    }

    #[test]
    fn max_in_window_matches_brute_force() {
        let mut times: Vec<DateTime<Utc>> = (0..200).map(|i| t((i * 37) % 500)).collect();
        times.sort();
        for w in [1, 10, 60, 300] {
            let w = Duration::seconds(w);
            let brute = times
                .iter()
                .map(|&e| times.iter().filter(|&&s| s > e - w && s <= e).count())
                .max()
                .unwrap();
            assert_eq!(max_in_window(&times, w).0, brute);
        }
    }

    #[test]
    fn a_window_over_the_limit_is_a_violation_naming_account_and_window() {
        let limits: HashMap<String, WindowLimits> =
            [("a".to_string(), [(60, 2), (3600, 10), (86_400, 100)])].into();
        let ok: HashMap<String, Vec<DateTime<Utc>>> =
            [("a".to_string(), vec![t(0), t(30), t(61), t(95)])].into();
        assert!(budget_violations(&ok, &limits).is_empty());
        let bad: HashMap<String, Vec<DateTime<Utc>>> =
            [("a".to_string(), vec![t(0), t(30), t(59)])].into();
        let v = budget_violations(&bad, &limits);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].window_secs, v[0].limit, v[0].seen), (60, 2, 3));
        let unknown: HashMap<String, Vec<DateTime<Utc>>> = [("b".to_string(), vec![t(0)])].into();
        assert_eq!(budget_violations(&unknown, &limits).len(), 3);
    }

    #[test]
    fn reconcile_counts_duplicates_unexpected_and_missing() {
        let expected: HashSet<String> = ["1@c.us", "2@c.us", "3@c.us"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let received: Vec<String> = ["1@c.us", "2@c.us", "2@c.us", "9@c.us"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = reconcile(&expected, &received);
        assert_eq!(r.delivered, 2);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.duplicated_chats, vec!["2@c.us".to_string()]);
        assert_eq!(r.unexpected, 1);
        assert_eq!(r.not_received, vec!["3@c.us".to_string()]);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 100.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn recovery_is_the_slowest_affected_account_to_send_again() {
        let received: HashMap<String, Vec<DateTime<Utc>>> = [
            ("a".to_string(), vec![t(0), t(12)]),
            ("b".to_string(), vec![t(5), t(20)]),
            ("c".to_string(), vec![t(1)]),
        ]
        .into();
        let accounts = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            recovery(&received, &accounts, t(2)),
            Some(Duration::seconds(10))
        );
        assert_eq!(recovery(&received, &accounts, t(30)), None);
        assert_eq!(recovery_any(&received, t(2)), Some(Duration::seconds(3)));
    }
}
