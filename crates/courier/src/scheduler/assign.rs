//! Account assignment: which account sends a message.
//!
//! Rules, in order (see `docs/scheduler.md`):
//! 1. A pinned account (the schedule's `account_id`) wins, unless it is
//!    unavailable (banned, logged out, failed, paused beyond the threshold):
//!    then the message waits with that reason.
//! 2. Otherwise the candidates are the *eligible* accounts (status `active`,
//!    health at or above `health.pause_below`) — for a group only those that
//!    are members of it (`mkt_wap_account_groups`).
//! 3. The contact's `preferred_account_id` wins among the candidates (a
//!    contact stays with one sender).
//! 4. Otherwise the candidate with the highest score: remaining daily budget
//!    weighted by health. Each assignment lowers the account's remaining
//!    budget, so a batch spreads across accounts in proportion to what they
//!    can still send.
//! 5. No candidate: the message waits, with the reason.
//!
//! [`Assigner`] is pure; [`load`] reads the facts it needs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::Settings;

/// One account as the assigner sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccountLoad {
    /// The account.
    pub id: Uuid,
    /// Active and healthy: may be given new work.
    pub eligible: bool,
    /// Why its queued work must move (banned, logged out, long pause), if so.
    pub unavailable: Option<String>,
    /// Sends it can still make today (its effective daily cap minus sends in
    /// the last 24 h and sends already queued). May go negative.
    pub remaining: i64,
    /// Health score 0..=100.
    pub health: i32,
}

/// What one message needs from an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Need {
    /// The schedule pinned this account.
    pub pinned: Option<Uuid>,
    /// A group message: only member accounts can send it.
    pub group: Option<Uuid>,
    /// The contact's preferred account.
    pub preferred: Option<Uuid>,
}

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Send through this account.
    Account(Uuid),
    /// No account can take it now; why.
    Wait(String),
}

/// Assigns accounts to messages, spreading load as it goes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assigner {
    accounts: Vec<AccountLoad>,
    index: HashMap<Uuid, usize>,
    /// Group id → indexes of eligible member accounts.
    members: HashMap<Uuid, Vec<usize>>,
    eligible: Vec<usize>,
}

impl Assigner {
    /// An assigner over `accounts`, with group memberships `(group, account)`.
    pub(crate) fn new(accounts: Vec<AccountLoad>, memberships: &[(Uuid, Uuid)]) -> Self {
        let index: HashMap<Uuid, usize> = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id, i))
            .collect();
        let eligible = (0..accounts.len())
            .filter(|&i| accounts[i].eligible)
            .collect();
        let mut members: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (group, account) in memberships {
            if let Some(&i) = index.get(account) {
                if accounts[i].eligible {
                    members.entry(*group).or_default().push(i);
                }
            }
        }
        Self {
            accounts,
            index,
            members,
            eligible,
        }
    }

    /// The account facts.
    pub(crate) fn account(&self, id: Uuid) -> Option<&AccountLoad> {
        self.index.get(&id).map(|&i| &self.accounts[i])
    }

    /// Whether `id` may be given new work (active and healthy).
    pub(crate) fn is_eligible(&self, id: Uuid) -> bool {
        self.index
            .get(&id)
            .is_some_and(|&i| self.accounts[i].eligible)
    }

    /// Books `n` messages against `id`'s remaining budget (a contact that
    /// keeps its preferred account, counted in bulk).
    pub(crate) fn book(&mut self, id: Uuid, n: i64) {
        if let Some(&i) = self.index.get(&id) {
            self.accounts[i].remaining -= n;
        }
    }

    /// Picks an account for one message and books it against that account's
    /// remaining budget.
    pub(crate) fn choose(&mut self, need: &Need) -> Choice {
        if let Some(pinned) = need.pinned {
            return match self.index.get(&pinned) {
                None => Choice::Wait(format!("pinned account {pinned} does not exist")),
                Some(&i) => match &self.accounts[i].unavailable {
                    Some(why) => Choice::Wait(format!("pinned account {pinned} {why}")),
                    None => {
                        self.accounts[i].remaining -= 1;
                        Choice::Account(pinned)
                    }
                },
            };
        }
        let candidates: &[usize] = match need.group {
            Some(g) => match self.members.get(&g) {
                Some(m) => m,
                None => {
                    return Choice::Wait(format!(
                        "no active, healthy account is a member of group {g}"
                    ))
                }
            },
            None => &self.eligible,
        };
        if candidates.is_empty() {
            return Choice::Wait("no active, healthy account".into());
        }
        let preferred = need
            .preferred
            .and_then(|p| self.index.get(&p).copied())
            .filter(|i| candidates.contains(i));
        let pick = preferred.unwrap_or_else(|| {
            *candidates
                .iter()
                .max_by(|&&a, &&b| {
                    score(&self.accounts[a])
                        .total_cmp(&score(&self.accounts[b]))
                        // Equal scores: the earlier account, for stable output.
                        .then(b.cmp(&a))
                })
                .expect("candidates is not empty")
        });
        self.accounts[pick].remaining -= 1;
        Choice::Account(self.accounts[pick].id)
    }
}

/// Higher is better: remaining budget weighted by health. Monotone in
/// `remaining` whatever its sign, so an over-booked fleet still spreads.
fn score(a: &AccountLoad) -> f64 {
    let w = f64::from(a.health.clamp(1, 100)) / 100.0;
    let r = a.remaining as f64;
    if r > 0.0 {
        r * w
    } else {
        r / w
    }
}

/// Why an account's queued work must move, if it must.
pub(crate) fn unavailable_reason(
    status: &str,
    paused_until: Option<DateTime<Utc>>,
    status_changed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    threshold: Duration,
) -> Option<String> {
    let threshold = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
    match status {
        "banned" => Some("is banned".into()),
        "logged_out" => Some("is logged out".into()),
        "failed" => Some("has failed".into()),
        "disconnected" => Some("was disconnected by an operator".into()),
        "retired" => Some("is retired".into()),
        "paused" => match paused_until {
            Some(until) if until > now + threshold => {
                Some(format!("is paused until {}", until.to_rfc3339()))
            }
            None if status_changed_at + threshold < now => {
                Some("is paused by hand beyond the reassignment threshold".into())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Reads every account's load and the group memberships of `groups`.
pub(crate) async fn load(
    conn: &mut PgConnection,
    settings: &Settings,
    groups: &[Uuid],
) -> Result<Assigner, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        status: String,
        health_score: i32,
        rate_limit_config: serde_json::Value,
        created_at: DateTime<Utc>,
        paused_until: Option<DateTime<Utc>>,
        status_changed_at: DateTime<Utc>,
        sent: i64,
        queued: i64,
        now: DateTime<Utc>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.status, a.health_score, a.rate_limit_config, a.created_at, \
                a.paused_until, a.status_changed_at, \
                (SELECT count(*) FROM account_sends s WHERE s.account_id = a.id \
                   AND s.sent_at > now() - interval '86400 seconds') AS sent, \
                (SELECT count(*) FROM queue_jobs j WHERE j.account_id = a.id \
                   AND j.state IN ('available', 'scheduled', 'retryable') \
                   AND j.kind IN ('send', 'retry')) \
                + (SELECT count(*) FROM queue_jobs j WHERE j.account_id = a.id \
                   AND j.state = 'running' AND j.kind IN ('send', 'retry')) AS queued, \
                now() AS now \
         FROM mkt_wap_accounts a ORDER BY a.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let defaults = settings.budget.limits();
    let accounts = rows
        .into_iter()
        .map(|r| {
            let limits = defaults
                .resolve(&r.rate_limit_config)
                .unwrap_or_else(|_| defaults.clone())
                .effective(
                    (r.now - r.created_at).num_days(),
                    &settings.budget.warmup,
                    r.health_score,
                    settings.health.caution,
                );
            AccountLoad {
                id: r.id,
                eligible: r.status == "active" && r.health_score >= settings.health.pause_below,
                unavailable: unavailable_reason(
                    &r.status,
                    r.paused_until,
                    r.status_changed_at,
                    r.now,
                    settings.scheduler.reassign_after,
                ),
                remaining: i64::from(limits.per_day) - r.sent - r.queued,
                health: r.health_score,
            }
        })
        .collect();
    let memberships: Vec<(Uuid, Uuid)> = if groups.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT group_id, account_id FROM mkt_wap_account_groups WHERE group_id = ANY($1)",
        )
        .bind(groups)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok(Assigner::new(accounts, &memberships))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(n: u128, remaining: i64, health: i32) -> AccountLoad {
        AccountLoad {
            id: Uuid::from_u128(n),
            eligible: true,
            unavailable: None,
            remaining,
            health,
        }
    }

    #[test]
    fn load_spreads_in_proportion_to_remaining_budget() {
        let mut a = Assigner::new(vec![acc(1, 100, 100), acc(2, 50, 100)], &[]);
        let mut counts = HashMap::new();
        for _ in 0..150 {
            let Choice::Account(id) = a.choose(&Need::default()) else {
                panic!()
            };
            *counts.entry(id).or_insert(0) += 1;
        }
        assert_eq!(counts[&Uuid::from_u128(1)], 100);
        assert_eq!(counts[&Uuid::from_u128(2)], 50);
        // Over-booked: still alternates rather than piling on one account.
        let Choice::Account(x) = a.choose(&Need::default()) else {
            panic!()
        };
        let Choice::Account(y) = a.choose(&Need::default()) else {
            panic!()
        };
        assert_ne!(x, y);
    }

    #[test]
    fn health_weighs_the_choice() {
        let mut a = Assigner::new(vec![acc(1, 100, 30), acc(2, 60, 100)], &[]);
        assert_eq!(
            a.choose(&Need::default()),
            Choice::Account(Uuid::from_u128(2))
        );
    }

    #[test]
    fn pinned_wins_and_waits_when_unavailable() {
        let mut banned = acc(3, 100, 0);
        banned.eligible = false;
        banned.unavailable = Some("is banned".into());
        let mut a = Assigner::new(vec![acc(1, 100, 100), acc(2, 0, 10), banned], &[]);
        let pinned = Need {
            pinned: Some(Uuid::from_u128(2)),
            ..Need::default()
        };
        assert_eq!(a.choose(&pinned), Choice::Account(Uuid::from_u128(2)));
        let pinned_banned = Need {
            pinned: Some(Uuid::from_u128(3)),
            ..Need::default()
        };
        let Choice::Wait(why) = a.choose(&pinned_banned) else {
            panic!()
        };
        assert!(why.contains("is banned"), "{why}");
    }

    #[test]
    fn groups_go_only_through_member_accounts() {
        let g = Uuid::from_u128(100);
        let mut a = Assigner::new(
            vec![acc(1, 1000, 100), acc(2, 10, 100)],
            &[(g, Uuid::from_u128(2))],
        );
        let need = Need {
            group: Some(g),
            ..Need::default()
        };
        assert_eq!(a.choose(&need), Choice::Account(Uuid::from_u128(2)));
        let other = Need {
            group: Some(Uuid::from_u128(101)),
            ..Need::default()
        };
        assert!(matches!(a.choose(&other), Choice::Wait(w) if w.contains("member of group")));
    }

    #[test]
    fn a_contact_stays_with_its_preferred_account_when_eligible() {
        let mut ineligible = acc(3, 500, 100);
        ineligible.eligible = false;
        let mut a = Assigner::new(vec![acc(1, 1000, 100), acc(2, 1, 100), ineligible], &[]);
        let keep = Need {
            preferred: Some(Uuid::from_u128(2)),
            ..Need::default()
        };
        assert_eq!(a.choose(&keep), Choice::Account(Uuid::from_u128(2)));
        let gone = Need {
            preferred: Some(Uuid::from_u128(3)),
            ..Need::default()
        };
        assert_eq!(a.choose(&gone), Choice::Account(Uuid::from_u128(1)));
    }

    #[test]
    fn no_eligible_account_waits_with_the_reason() {
        let mut a = Assigner::new(vec![], &[]);
        assert_eq!(
            a.choose(&Need::default()),
            Choice::Wait("no active, healthy account".into())
        );
    }

    #[test]
    fn unavailability_rules() {
        let now = Utc::now();
        let t = Duration::from_secs(600);
        assert!(unavailable_reason("banned", None, now, now, t).is_some());
        assert!(unavailable_reason("logged_out", None, now, now, t).is_some());
        assert!(unavailable_reason("active", None, now, now, t).is_none());
        let soon = now + chrono::Duration::minutes(5);
        let later = now + chrono::Duration::hours(6);
        assert!(unavailable_reason("paused", Some(soon), now, now, t).is_none());
        assert!(unavailable_reason("paused", Some(later), now, now, t).is_some());
        assert!(unavailable_reason("paused", None, now, now, t).is_none());
        let long_ago = now - chrono::Duration::hours(1);
        assert!(unavailable_reason("paused", None, long_ago, now, t).is_some());
    }
}
