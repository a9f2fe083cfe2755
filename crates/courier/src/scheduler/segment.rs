//! Expanding a contact segment on the server.
//!
//! A segment (`target_segment_tags`) can match 100 000 contacts. Shipping them
//! to the scheduler and 100 000 messages back costs more than writing them, so
//! the segment part of an expansion is two statements inside the expansion's
//! transaction:
//! 1. [`survey`]: how many contacts match, grouped by their preferred account
//!    (plus the opted-out and the unusable ones, for the schedule's note). The
//!    [`Assigner`] then books the contacts that keep their preferred account
//!    and picks, in order, the accounts of the others ([`plan`]): the same
//!    rules and the same load spreading as for any other recipient.
//! 2. [`insert`]: one statement that selects the matching contacts again,
//!    maps the n-th contact without a usable preference (in scan order: no
//!    sort, no index walk over a random key) onto the n-th pick,
//!    and writes each message, its first event, its send job and the contact's
//!    new preferred account (data-modifying CTEs). Each of those steps is the
//!    fragment of the table's owner ([`crate::message::create::insert_ctes`],
//!    [`crate::queue::fragments::insert_jobs`],
//!    [`crate::directory::remember_accounts_cte`]); this module only maps
//!    contacts to rows, so the statement stays one scan of the contacts.
//!
//! The preference update locks the contacts it changes until the commit. Two
//! expansions of overlapping segments at once (only without the leader
//! election) can deadlock on them; Postgres then aborts one, nothing of it is
//! committed, and its schedule row is still due at the next tick.
//!
//! The messages are those [`crate::message::create_batch_in`] would write for
//! the same recipients: same columns and statuses (the same fragment), same
//! idempotency key
//! (`sched:<schedule>:<occurrence>:<chat>`), same job (`send`, key
//! `send:<message id>`), and ids that are UUIDv7 like the client's, so message
//! ids still sort by creation time.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::assign::{Assigner, Choice, Need};
use super::schedule::Schedule;
use crate::jobs::JobKind;
use crate::message::create::content_columns;
use crate::message::{self, Source};
use crate::{directory, queue};

/// A contact's chat id, as `targets` builds it.
const CHAT_SQL: &str = "coalesce(wa_id, phone_number || '@c.us')";

/// Whether the contact's chat id is one `ChatId::parse` accepts. The table's
/// CHECKs already make `phone_number` E.164 and `wa_id` `<digits>@c.us` or
/// `<digits>@lid`; what they allow and the parser does not is a `c.us` user
/// that is not an E.164 number (length, leading zero) or an over-long `lid`.
/// Plain string tests, not a regex: this runs once per contact.
const VALID_SQL: &str = "(wa_id IS NULL OR CASE WHEN right(wa_id, 5) = '@c.us' \
     THEN length(wa_id) BETWEEN 12 AND 20 AND left(wa_id, 1) <> '0' \
     ELSE length(wa_id) <= 24 END)";

/// What the segment holds, once the chats already targeted otherwise are
/// taken out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Survey {
    /// Recipients by preferred account (`None`: no preference).
    pub by_preference: Vec<(Option<Uuid>, i64)>,
    /// Opted-out contacts left out.
    pub opted_out: i64,
    /// Contacts whose chat id is not valid, left out.
    pub invalid: i64,
}

impl Survey {
    /// Contacts that get a message.
    pub(crate) fn recipients(&self) -> i64 {
        self.by_preference.iter().map(|(_, n)| n).sum()
    }
}

/// Counts the contacts matching `tags`, leaving out the chats in `exclude`
/// (recipients already resolved another way).
pub(crate) async fn survey(
    conn: &mut PgConnection,
    tags: &[String],
    exclude: &[String],
) -> Result<Survey, sqlx::Error> {
    let rows: Vec<(Option<Uuid>, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT preferred_account_id, \
                count(*) FILTER (WHERE NOT opted_out AND valid), \
                count(*) FILTER (WHERE opted_out), \
                count(*) FILTER (WHERE NOT opted_out AND NOT valid) \
         FROM (SELECT preferred_account_id, opted_out, {CHAT_SQL} AS chat, {VALID_SQL} AS valid \
               FROM mkt_wap_contacts WHERE segment_tags @> $1::text[]) c \
         WHERE NOT EXISTS (SELECT 1 FROM unnest($2::text[]) AS x(chat) WHERE x.chat = c.chat) \
         GROUP BY preferred_account_id"
    )))
    .bind(tags)
    .bind(exclude)
    .fetch_all(conn)
    .await?;
    let mut out = Survey::default();
    for (preferred, n, opted_out, invalid) in rows {
        if n > 0 {
            out.by_preference.push((preferred, n));
        }
        out.opted_out += opted_out;
        out.invalid += invalid;
    }
    Ok(out)
}

/// How the segment's contacts get their accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Accounts a contact keeps when it prefers them.
    pub keep: Vec<Uuid>,
    /// The accounts of the other contacts, in order (the n-th such contact
    /// gets `picks[n % len]`). Empty: they all wait.
    pub picks: Vec<Uuid>,
    /// Why they wait, when `picks` is empty.
    pub wait: Option<String>,
}

/// Books the segment's contacts on `assigner`, by the rules of
/// [`super::assign`]: a pinned account for all; otherwise a contact keeps an
/// eligible preferred account, and the others are spread by remaining budget
/// and health.
pub(crate) fn plan(assigner: &mut Assigner, pinned: Option<Uuid>, survey: &Survey) -> Plan {
    let mut out = Plan::default();
    let mut others: i64 = 0;
    for &(preferred, n) in &survey.by_preference {
        match preferred {
            Some(p) if pinned.is_none() && assigner.is_eligible(p) => {
                assigner.book(p, n);
                out.keep.push(p);
            }
            _ => others += n,
        }
    }
    let need = Need {
        pinned,
        group: None,
        preferred: None,
    };
    for _ in 0..others {
        match assigner.choose(&need) {
            Choice::Account(a) => out.picks.push(a),
            Choice::Wait(why) => {
                // The same need waits for the same reason every time.
                out.picks.clear();
                out.wait = Some(why);
                break;
            }
        }
    }
    out
}

/// What [`insert`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// Contacts selected.
    pub recipients: i64,
    /// New messages with a send job.
    pub queued: i64,
    /// New messages waiting for an account.
    pub pending: i64,
}

/// Writes the segment's messages for one occurrence (see the module docs).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    schedule: &Schedule,
    occurrence: DateTime<Utc>,
    tags: &[String],
    exclude: &[String],
    plan: &Plan,
) -> Result<Inserted, sqlx::Error> {
    let (text, media_url, media_path, caption, link) = content_columns(&schedule.content);
    let (message_prefix, message_start) = id_base();
    let (job_prefix, job_start) = id_base();
    let key_prefix = format!("sched:{}:{}:", schedule.id, occurrence.timestamp());
    // One statement: the contacts are scanned once, and each table's step
    // is its owner's fragment over the rows before it.
    let messages = message::create::insert_ctes(
        "m",
        "(SELECT ($6 || lpad(to_hex($7 + i), 12, '0'))::uuid AS id, \
                 CASE WHEN account IS NOT NULL \
                      THEN ($8 || lpad(to_hex($9 + i), 12, '0'))::uuid END AS job_id, \
                 account AS account_id, $10 AS campaign_id, $11 AS content_id, \
                 $12 AS schedule_id, 'individual' AS channel_type, chat AS target_chat_id, \
                 NULL::uuid AS target_group_id, id AS target_contact_id, \
                 $13 AS message_type, $14 AS message_text, $15 AS media_url, \
                 $16 AS media_path, $17 AS media_caption, $18 AS link_url, \
                 $19 || chat AS idempotency_key, \
                 CASE WHEN account IS NULL THEN $5 END AS waiting_reason \
          FROM a)",
        "$20",
    );
    let jobs = queue::fragments::insert_jobs(
        "j",
        "(SELECT job_id AS id, $21 AS kind, account_id, \
                 jsonb_build_object('message_id', id) AS payload, 100 AS priority, \
                 now() AS run_at, $22 AS max_attempts, 'send:' || id AS idempotency_key \
          FROM m WHERE job_id IS NOT NULL)",
    );
    let preferences = directory::remember_accounts_cte(
        "p",
        "(SELECT target_contact_id AS contact_id, account_id FROM m)",
    );
    let row: (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH c AS ( \
            SELECT id, chat, pref, coalesce(pref = ANY($3::uuid[]), false) AS keep \
            FROM (SELECT id, {CHAT_SQL} AS chat, preferred_account_id AS pref \
                  FROM mkt_wap_contacts \
                  WHERE segment_tags @> $1::text[] AND NOT opted_out AND {VALID_SQL}) s \
            WHERE NOT EXISTS (SELECT 1 FROM unnest($2::text[]) AS x(chat) WHERE x.chat = s.chat)), \
         n AS ( \
            SELECT id, chat, pref, keep, row_number() OVER w AS i, \
                   count(*) FILTER (WHERE NOT keep) OVER w AS k \
            FROM c WINDOW w AS (ROWS UNBOUNDED PRECEDING)), \
         a AS ( \
            SELECT id, chat, i, \
                   CASE WHEN keep THEN pref \
                        WHEN cardinality($4::uuid[]) > 0 \
                        THEN ($4::uuid[])[1 + (k - 1) % cardinality($4::uuid[])] END AS account \
            FROM n), \
         {messages}, {jobs}, {preferences} \
         SELECT (SELECT count(*) FROM a), \
                count(*) FILTER (WHERE account_id IS NOT NULL), \
                count(*) FILTER (WHERE account_id IS NULL) \
         FROM m"
    )))
    .bind(tags)
    .bind(exclude)
    .bind(&plan.keep)
    .bind(&plan.picks)
    .bind(
        plan.wait
            .clone()
            .unwrap_or_else(|| "no eligible account".into()),
    )
    .bind(message_prefix)
    .bind(message_start)
    .bind(job_prefix)
    .bind(job_start)
    .bind(schedule.campaign_id)
    .bind(schedule.content_id)
    .bind(schedule.id)
    .bind(schedule.content.message_type())
    .bind(text)
    .bind(media_url)
    .bind(media_path)
    .bind(caption)
    .bind(link)
    .bind(key_prefix)
    .bind(Source::Scheduler.as_str())
    .bind(JobKind::Send.as_str())
    .bind(JobKind::Send.default_max_attempts())
    .fetch_one(conn)
    .await?;
    Ok(Inserted {
        recipients: row.0,
        queued: row.1,
        pending: row.2,
    })
}

/// A base for a run of UUIDv7 ids made in SQL: the text of a fresh v7 id up to
/// its last group, and a start for the 48-bit counter that replaces that group
/// (RFC 9562 allows a counter in the random bits; its top bit is cleared so
/// `start + n` cannot overflow the group).
fn id_base() -> (String, i64) {
    let id = Uuid::now_v7();
    let text = id.hyphenated().to_string();
    let last = u64::from_str_radix(&text[24..], 16).expect("a uuid's last group is hex");
    (text[..24].to_string(), (last & ((1 << 47) - 1)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::assign::AccountLoad;

    fn acc(n: u128, remaining: i64) -> AccountLoad {
        AccountLoad {
            id: Uuid::from_u128(n),
            eligible: true,
            unavailable: None,
            remaining,
            health: 100,
        }
    }

    #[test]
    fn ids_from_a_base_are_v7_and_ordered() {
        let (prefix, start) = id_base();
        let ids: Vec<Uuid> = (1..=3)
            .map(|i| Uuid::parse_str(&format!("{prefix}{:012x}", start + i)).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn preferred_accounts_are_kept_and_the_rest_spread_by_budget() {
        let mut a = Assigner::new(vec![acc(1, 100), acc(2, 300), acc(3, 50)], &[]);
        let survey = Survey {
            by_preference: vec![(Some(Uuid::from_u128(2)), 200), (None, 250)],
            ..Survey::default()
        };
        let p = plan(&mut a, None, &survey);
        assert_eq!(p.keep, vec![Uuid::from_u128(2)]);
        assert_eq!(p.picks.len(), 250);
        let count = |n| p.picks.iter().filter(|&&x| x == Uuid::from_u128(n)).count();
        // After booking 200 on account 2, the remaining budgets are 100, 100, 50.
        assert_eq!((count(1), count(2), count(3)), (100, 100, 50));
    }

    #[test]
    fn a_pinned_account_takes_everyone_and_an_unavailable_one_makes_them_wait() {
        let mut banned = acc(9, 100);
        banned.eligible = false;
        banned.unavailable = Some("is banned".into());
        let mut a = Assigner::new(vec![acc(1, 100), banned], &[]);
        let survey = Survey {
            by_preference: vec![(Some(Uuid::from_u128(1)), 5), (None, 5)],
            ..Survey::default()
        };
        let p = plan(&mut a, Some(Uuid::from_u128(1)), &survey);
        assert!(p.keep.is_empty());
        assert_eq!(p.picks, vec![Uuid::from_u128(1); 10]);
        let p = plan(&mut a, Some(Uuid::from_u128(9)), &survey);
        assert!(p.picks.is_empty());
        assert!(p.wait.unwrap().contains("is banned"));
        let mut none = Assigner::new(vec![], &[]);
        let p = plan(&mut none, None, &survey);
        assert_eq!(p.wait.as_deref(), Some("no active, healthy account"));
    }
}
