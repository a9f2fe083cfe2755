//! The campaign system's `mkt_campaigns.status`, obeyed: a campaign that is
//! `paused` or `cancelled` holds its sends, and one that comes back releases
//! them. Held, never failed: the campaign system owns the word and may change
//! it back, so nothing of the campaign's is withdrawn or spent.
//!
//! Three places make up the rule:
//! - the queue's claim never claims a `send`/`retry` job of a held campaign
//!   (`queue::store::campaign_gate`), whatever enqueued it, from the instant
//!   the campaign system writes the status;
//! - the expansion does not expand a held campaign's schedules
//!   ([`super::expand`]); they expand when it resumes, by their catch-up
//!   policy;
//! - this step, run by the scheduler on every tick, makes the hold visible and
//!   cheap: the held campaign's due jobs are parked (`scheduled` an hour
//!   ahead, so the claim does not walk past them), its waiting messages and
//!   its due schedules get the reason, and when the campaign is no longer
//!   held all of that is undone at once. `courier_campaign_holds` remembers
//!   which campaigns it holds, across restarts and leader changes.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::SchedulerError;
use crate::message::assignment;
use crate::queue::fragments;
use crate::queue::store::{held_campaign, RUNNABLE};

/// Every reason this step writes starts with this, so the release finds its
/// own and leaves any other reason alone.
pub const HOLD_PREFIX: &str = "held: campaign ";

/// How far ahead a held job is parked (the claim's gate holds it if it comes
/// due while the campaign is still held; the next pass parks it again).
const PARK_SECS: f64 = 3600.0;

/// How often a held campaign's due jobs are parked again (a retry or an API
/// send may have added one).
const REPARK_SECS: f64 = 60.0;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// Campaigns newly held.
    pub held: usize,
    /// Campaigns released.
    pub released: usize,
    /// Jobs parked.
    pub parked: u64,
    /// Jobs released.
    pub freed: u64,
}

/// The reason shown on a held campaign's messages, jobs and schedules.
pub fn reason(campaign: Uuid, name: &str, status: &str) -> String {
    format!(
        "{HOLD_PREFIX}{name:?} ({campaign}) is {}; its sends wait until it resumes",
        status.trim().to_lowercase()
    )
}

/// One pass: holds what became held, parks what came due, releases what is
/// no longer held. One transaction.
pub async fn apply(pool: &PgPool) -> Result<Holds, SchedulerError> {
    let mut tx = pool.begin().await?;
    // One pass at a time (two leaders for a moment, or a test calling it):
    // the second waits for the first, then finds nothing to do.
    sqlx::query("LOCK TABLE courier_campaign_holds IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let held_now: Vec<(Uuid, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, name, status FROM mkt_campaigns WHERE {}",
        held_campaign("status")
    )))
    .fetch_all(&mut *tx)
    .await?;
    let known: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT campaign_id, parked_at IS NULL OR parked_at < now() - make_interval(secs => $1) \
         FROM courier_campaign_holds",
    )
    .bind(REPARK_SECS)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Holds::default();

    let released: Vec<Uuid> = known
        .iter()
        .map(|k| k.0)
        .filter(|id| !held_now.iter().any(|h| h.0 == *id))
        .collect();
    if !released.is_empty() {
        out.freed = release(&mut tx, &released).await?;
        out.released = released.len();
    }

    for (id, name, status) in &held_now {
        let due = match known.iter().find(|k| k.0 == *id) {
            None => {
                out.held += 1;
                true
            }
            Some(k) => k.1,
        };
        if due {
            out.parked += hold(&mut tx, *id, &reason(*id, name, status), status).await?;
        }
    }
    tx.commit().await?;
    if out.held > 0 || out.released > 0 || out.parked > 0 {
        tracing::info!(
            held = out.held,
            released = out.released,
            parked = out.parked,
            freed = out.freed,
            "campaign holds"
        );
    }
    Ok(out)
}

/// Holds campaign `id`: parks its due jobs, puts the reason on its waiting
/// messages and due schedules, records the hold. Returns jobs parked.
async fn hold(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
    status: &str,
) -> Result<u64, SchedulerError> {
    // Messages not started (or whose send must be checked first: `sending`
    // with a runnable job), with their runnable jobs.
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.id, j.id FROM mkt_wap_messages m \
         LEFT JOIN queue_jobs j ON j.id = m.job_id AND j.state IN {RUNNABLE} \
         WHERE m.campaign_id = $1 AND m.status IN ('pending', 'queued', 'sending') \
           AND (m.status <> 'sending' OR j.id IS NOT NULL) \
           AND m.waiting_reason IS DISTINCT FROM $2 \
         ORDER BY m.id"
    )))
    .bind(id)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    let messages: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let reasons = vec![reason.to_string(); messages.len()];
    assignment::set_waiting_reasons(&mut *conn, &messages, &reasons).await?;
    // Every runnable job of the campaign, also those whose message already
    // had the reason (a job that came due since the last pass).
    let jobs: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT j.id FROM mkt_wap_messages m JOIN queue_jobs j ON j.id = m.job_id \
         WHERE m.campaign_id = $1 AND j.state IN {RUNNABLE} AND j.run_at <= now()"
    )))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let parked = fragments::park(&mut *conn, &jobs, PARK_SECS, reason).await?;
    sqlx::query(
        "UPDATE mkt_con_schedule SET status_reason = $2, updated_at = now() \
         WHERE campaign_id = $1 AND status = 'scheduled' AND channel = 'whatsapp' \
           AND status_reason IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO courier_campaign_holds (campaign_id, status, parked_at) VALUES ($1, $2, now()) \
         ON CONFLICT (campaign_id) DO UPDATE SET status = EXCLUDED.status, parked_at = now()",
    )
    .bind(id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    Ok(parked)
}

/// Releases campaigns `ids`: their parked jobs run now, the hold's reasons
/// go from their messages and schedules, the holds are forgotten. Returns
/// jobs released.
async fn release(conn: &mut PgConnection, ids: &[Uuid]) -> Result<u64, SchedulerError> {
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT m.id, m.job_id FROM mkt_wap_messages m \
         WHERE m.campaign_id = ANY($1) AND m.status IN ('pending', 'queued', 'sending') \
         ORDER BY m.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let messages: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let jobs: Vec<Uuid> = rows.iter().filter_map(|r| r.1).collect();
    let freed = fragments::release_parked(&mut *conn, &jobs, HOLD_PREFIX).await?;
    assignment::clear_waiting_reasons(&mut *conn, &messages, HOLD_PREFIX).await?;
    sqlx::query(
        "UPDATE mkt_con_schedule SET status_reason = NULL, updated_at = now() \
         WHERE campaign_id = ANY($1) AND starts_with(status_reason, $2)",
    )
    .bind(ids)
    .bind(HOLD_PREFIX)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM courier_campaign_holds WHERE campaign_id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_campaign_and_starts_with_the_prefix() {
        let r = reason(Uuid::nil(), "Winter feed", " Paused ");
        assert!(r.starts_with(HOLD_PREFIX), "{r}");
        assert!(r.contains("\"Winter feed\""), "{r}");
        assert!(r.contains("is paused;"), "{r}");
    }
}
