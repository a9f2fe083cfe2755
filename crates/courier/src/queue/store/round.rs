//! One round of a worker's slots in one statement: completions, claims, send
//! slots and the domain's policy fragment.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::RUNNABLE;
use crate::account::budget::{Limits, Window};
use crate::queue::{Job, Lease, Policy, QueueError};

/// Whether the window of `secs` seconds (a budget window plus
/// `budget::SEND_DEADLINE`) has room for one more send of
/// `lease.account_id` at `clock.ts` with the cap `lease.{cap}`: the cap-th most
/// recent send (one backward index probe) is at or before `ts - W`.
fn window_room(cap: &str, secs: i64) -> String {
    format!(
        "(CASE WHEN lease.known < lease.{cap} THEN true \
         ELSE lease.{cap} > 0 AND coalesce((SELECT s.sent_at FROM account_sends s \
         WHERE s.account_id = lease.account_id ORDER BY s.sent_at DESC \
         OFFSET lease.{cap} - 1 LIMIT 1) <= (SELECT ts FROM clock) - make_interval(secs => {secs}), true) END)"
    )
}

/// One account's request in a [`claim_batch`].
#[derive(Debug, Clone)]
pub struct ClaimAsk {
    /// The lease to claim under.
    pub lease: Lease,
    /// Whether budget-spending kinds may be claimed (the Rust budget said yes).
    pub sends_allowed: bool,
    /// Window caps checked in SQL before a send is granted.
    pub limits: Limits,
    /// An upper bound on the account's sends in any window ending now: the
    /// holder's copy of the send log (loaded under this lease, plus every
    /// slot granted since; only the holder can add to the log), or
    /// `i64::MAX` when there is none. A window whose cap is above it cannot
    /// be full, so its index probe is skipped.
    pub known_sends: i64,
}

/// A job claimed by [`claim_batch`], with its send slot when it spends budget.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRow {
    /// The job, now running.
    #[sqlx(flatten)]
    pub job: Job,
    /// The send slot granted (database clock) for budget-spending kinds.
    pub slot_at: Option<DateTime<Utc>>,
}

/// What one [`claim_batch`] statement did.
#[derive(Debug, Default)]
pub struct Round {
    /// Jobs completed (the others asked for were fenced).
    pub completed: Vec<Uuid>,
    /// Jobs claimed, at most one per account.
    pub claimed: Vec<ClaimedRow>,
}

/// A row of [`claim_batch`]'s result: a completed job's id, or a claimed job.
enum RoundRow {
    Completed(Uuid),
    Claimed(Box<ClaimedRow>),
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for RoundRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        match row.try_get::<Option<Uuid>, _>("completed_id")? {
            Some(id) => Ok(Self::Completed(id)),
            None => Ok(Self::Claimed(Box::new(ClaimedRow::from_row(row)?))),
        }
    }
}

/// One round of a worker's account slots, in one statement: completes the
/// jobs in `done` (`(job, account, epoch)`, each fenced by its lease), then
/// claims the next runnable job of every account in `asks`, and for
/// budget-spending kinds reserves the send slot — and moves the job's message
/// to `sending` with its attempt start and event — in the same statement.
/// Accounts whose lease is gone or that are paused get nothing.
///
/// An account's previous job and its next one can be in the same round: the
/// completion runs first (the claim waits on its row count), so when the
/// claim makes the next job `running`, the one-running-job index sees the
/// previous one as already finished by this transaction.
///
/// Completions need no share lock on the lease row: a takeover rescues the
/// running job (an update of the same job row), so the two serialise on that
/// row and whichever comes second matches nothing. `lease_epoch = epoch` alone
/// says the job is running under that lease (a CHECK ties a non-null epoch to
/// `running`); naming `state = 'running'` too let the planner scan the whole
/// one-running index and filter every running job against every request
/// (1.1 ms of a 1.5 ms statement at 190 running jobs).
///
/// The windows are checked without counting the log: for a window W with cap
/// L, fewer than L sends lie in `(t - W, t]` iff the L-th most recent send is
/// at or before `t - W`, so each window is one backward probe of the
/// `(account_id, sent_at)` index (`OFFSET L-1 LIMIT 1`) instead of a count
/// of every send in it. The probe reads the log itself (the delivery handler
/// moves a slot's `sent_at` forward to when WhatsApp accepted the message, so
/// no copy held elsewhere would do), under the lease's share lock, so nobody
/// else can append for the account meanwhile. Every slot of a round is
/// granted at the instant the windows were checked at (`clock.ts`).
pub async fn claim_batch(
    conn: &mut sqlx::PgConnection,
    policy: &Policy,
    owner: &str,
    done: &[(Uuid, Uuid, i64)],
    asks: &[ClaimAsk],
) -> Result<Round, QueueError> {
    let done_ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
    let done_accounts: Vec<Uuid> = done.iter().map(|d| d.1).collect();
    let done_epochs: Vec<i64> = done.iter().map(|d| d.2).collect();
    let accounts: Vec<Uuid> = asks.iter().map(|a| a.lease.account_id).collect();
    let epochs: Vec<i64> = asks.iter().map(|a| a.lease.epoch).collect();
    let sends_ok: Vec<bool> = asks.iter().map(|a| a.sends_allowed).collect();
    let pm: Vec<i64> = asks
        .iter()
        .map(|a| i64::from(a.limits.per_minute))
        .collect();
    let ph: Vec<i64> = asks.iter().map(|a| i64::from(a.limits.per_hour)).collect();
    let pd: Vec<i64> = asks.iter().map(|a| i64::from(a.limits.per_day)).collect();
    let known: Vec<i64> = asks.iter().map(|a| a.known_sends).collect();
    let rows: Vec<RoundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH fin AS ( \
            SELECT * FROM unnest($10::uuid[], $11::uuid[], $12::int8[]) AS f(id, account_id, epoch) \
         ), done AS ( \
            UPDATE queue_jobs q SET state = 'completed', finished_at = now(), lease_epoch = NULL \
            FROM fin JOIN account_leases l ON l.account_id = fin.account_id AND l.epoch = fin.epoch \
            WHERE l.owner = $7 AND q.id = fin.id AND q.lease_epoch = fin.epoch \
            RETURNING q.id \
         ), done_n AS MATERIALIZED (SELECT count(*) AS n FROM done \
         ), req AS ( \
            SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], \
                                 $9::int8[]) \
                AS r(account_id, epoch, sends_ok, per_minute, per_hour, per_day, known) \
         ), lease AS ( \
            SELECT r.* FROM account_leases l \
            JOIN req r ON r.account_id = l.account_id AND r.epoch = l.epoch \
            WHERE l.owner = $7 ORDER BY l.account_id FOR SHARE OF l \
         ), clock AS MATERIALIZED (SELECT clock_timestamp() AS ts \
         ), budget AS MATERIALIZED ( \
            SELECT lease.account_id, lease.epoch, coalesce(a.status, 'lane') AS status, \
                   lease.sends_ok \
                   AND {minute} AND {hour} AND {day} \
                   AS may_send \
            FROM lease LEFT JOIN mkt_wap_accounts a ON a.id = lease.account_id \
            WHERE (a.id IS NOT NULL OR EXISTS (SELECT 1 FROM queue_lanes q WHERE q.id = lease.account_id)) \
              AND NOT (a.status IS NOT NULL AND a.status = 'paused' \
                       AND (a.paused_until IS NULL OR a.paused_until > now())) \
              AND (SELECT n FROM done_n) >= 0 \
         ), pick AS ( \
            SELECT j.id, budget.epoch FROM budget CROSS JOIN LATERAL ( \
                SELECT q.id FROM queue_jobs q \
                WHERE q.account_id = budget.account_id AND q.state IN {RUNNABLE} AND q.run_at <= now() \
                  AND (budget.may_send OR q.kind <> ALL($8)) \
                  AND {gate} AND {campaign} \
                ORDER BY q.priority, q.run_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED \
            ) j \
         ), claimed AS ( \
            UPDATE queue_jobs q SET state = 'running', attempt = q.attempt + 1, attempted_at = now(), \
                lease_epoch = pick.epoch, attempted_by = $7, waiting_reason = NULL \
            FROM pick WHERE q.id = pick.id \
            RETURNING q.* \
         ), sent AS ( \
            INSERT INTO account_sends (account_id, job_id, epoch, sent_at) \
            SELECT account_id, id, lease_epoch, (SELECT ts FROM clock) FROM claimed WHERE kind = ANY($8) \
         ){policy} \
         SELECT NULL::uuid AS completed_id, claimed.*, \
                CASE WHEN claimed.kind = ANY($8) THEN (SELECT ts FROM clock) END AS slot_at \
         FROM claimed \
         UNION ALL \
         SELECT done.id, (NULL::queue_jobs).*, NULL FROM done",
        minute = window_room("per_minute", Window::Minute.guarded_secs()),
        hour = window_room("per_hour", Window::Hour.guarded_secs()),
        day = window_room("per_day", Window::Day.guarded_secs()),
        policy = policy.slot_ctes("claimed", "(SELECT ts FROM clock)"),
        gate = status_gate!("budget.status", "q.kind"),
        campaign = super::campaign_gate("q.kind", "q.payload"),
    )))
    .bind(&accounts)
    .bind(&epochs)
    .bind(&sends_ok)
    .bind(&pm)
    .bind(&ph)
    .bind(&pd)
    .bind(owner)
    .bind(&crate::queue::BUDGET_KINDS[..])
    .bind(&known)
    .bind(&done_ids)
    .bind(&done_accounts)
    .bind(&done_epochs)
    .fetch_all(conn)
    .await?;
    let mut round = Round::default();
    for row in rows {
        match row {
            RoundRow::Completed(id) => round.completed.push(id),
            RoundRow::Claimed(c) => round.claimed.push(*c),
        }
    }
    Ok(round)
}
