//! Every SQL statement of the queue engine.
//!
//! Writes a worker makes for an account take the account's lease row `FOR
//! SHARE` and check `epoch = $epoch AND owner = $owner` in the same statement:
//! a takeover (which updates that row) waits for them, and after a takeover
//! they match nothing. A fenced write returns `false` / `None`; the caller must
//! stop driving the account.
//!
//! Times come from the database clock (`now()`, `clock_timestamp()`), so
//! several machines with drifting clocks agree.

use std::time::Duration;

/// States the claim considers (with `run_at <= now()`).
pub(crate) const RUNNABLE: &str = "('available', 'scheduled', 'retryable')";

/// Only maintenance kinds run for a logged-out, banned or failed account
/// (`account::AccountStatus::is_unavailable`), only a login or the logout
/// that unlinks it for one an operator disconnected, nothing for a retired one: its other jobs stay
/// queued (never claimed, never failed) until it logs in again or the
/// scheduler re-assigns them. `{a}` is the account id expression; `kind` is
/// the job's. The same rule for a status already at hand is [`status_gate!`].
macro_rules! session_gate {
    ($a:literal) => {
        concat!(
            "(NOT EXISTS (SELECT 1 FROM mkt_wap_accounts g WHERE g.id = ",
            $a,
            " AND NOT ",
            status_gate!("g.status", "kind"),
            "))"
        )
    };
}

/// Whether a job of kind `{k}` may run for an account in status `{s}` (see
/// [`session_gate!`]).
macro_rules! status_gate {
    ($s:literal, $k:literal) => {
        concat!(
            "(CASE ",
            $s,
            " WHEN 'retired' THEN false",
            " WHEN 'disconnected' THEN ",
            $k,
            " IN ('login', 'logout')",
            " WHEN 'logged_out' THEN ",
            $k,
            " IN ('login', 'health_check', 'logout')",
            " WHEN 'banned' THEN ",
            $k,
            " IN ('login', 'health_check', 'logout')",
            " WHEN 'failed' THEN ",
            $k,
            " IN ('login', 'health_check', 'logout')",
            " ELSE true END)"
        )
    };
}

/// The `mkt_campaigns.status` words that hold a campaign's sends: its
/// `send`/`retry` jobs are never claimed while the campaign has one of them
/// (compared trimmed and in lower case: the campaign system owns the column
/// and its words). The one list; the scheduler's hold step and expansion use
/// it too ([`held_campaign`]). docs/scheduler.md, "Campaign status".
pub(crate) const HELD_CAMPAIGN_STATUSES: [&str; 3] = ["paused", "cancelled", "canceled"];

/// Whether the campaign status expression `status` holds sends: an SQL
/// boolean over [`HELD_CAMPAIGN_STATUSES`].
pub(crate) fn held_campaign(status: &str) -> String {
    let words: Vec<String> = HELD_CAMPAIGN_STATUSES
        .iter()
        .map(|w| format!("'{w}'"))
        .collect();
    format!("(lower(btrim({status})) IN ({}))", words.join(", "))
}

/// The claim's campaign gate: a `send`/`retry` job (kind `{kind}`, payload
/// `{payload}`) whose message belongs to a held campaign is not claimable.
/// It sits in every statement that claims a job ([`claim`], [`claim_batch`]),
/// whatever made the job (a schedule, `POST /v1/messages`, a retry, a job
/// pushed straight into the queue), so no path sends for a paused or
/// cancelled campaign; the job stays queued, its attempts unspent. The
/// scheduler also parks such jobs out of the claim's way
/// (`scheduler::campaign`), so a large held campaign costs the claim nothing.
pub(crate) fn campaign_gate(kind: &str, payload: &str) -> String {
    format!(
        "({kind} NOT IN ('send', 'retry') OR NOT EXISTS ( \
            SELECT 1 FROM mkt_wap_messages hm JOIN mkt_campaigns hc ON hc.id = hm.campaign_id \
            WHERE hm.id = ({payload}->>'message_id')::uuid AND {held}))",
        held = held_campaign("hc.status")
    )
}

fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

/// The lease check shared by fenced writes: a CTE named `lease`.
const LEASE_CTE: &str = "lease AS (SELECT 1 FROM account_leases \
     WHERE account_id = $1 AND epoch = $2 AND owner = $3 FOR SHARE)";

mod claim;
mod enqueue;
mod jobs;
mod lanes;
mod lease;
mod round;
mod work;

pub use claim::*;
pub use enqueue::*;
pub use jobs::*;
pub use lanes::*;
pub use lease::*;
pub use round::*;
pub use work::*;
