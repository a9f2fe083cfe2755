//! Expanding one due schedule into messages and send jobs, in one transaction.
//!
//! The transaction locks the schedule row (`FOR UPDATE SKIP LOCKED`), writes
//! every message, event and job of every occurrence being expanded, and moves
//! the schedule on (status, `last_occurrence_at`, `next_occurrence_at`) before
//! it commits. So:
//! - a crash (even `kill -9`) before the commit leaves nothing behind, and the
//!   row is still due; after the commit the row is no longer due;
//! - a second scheduler skips the locked row, and once it is committed no
//!   longer sees it as due;
//! - each message still carries the idempotency key `sched:<schedule>:<occurrence
//!   unix seconds>:<chat id>`, so even a repeated expansion of the same
//!   occurrence (a hand-edited row) creates nothing twice.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics::counter;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::assign::{self, Choice, Need};
use super::occurrence::plan;
use super::schedule::{Schedule, ScheduleRow, Timing};
use super::segment::{self, Survey};
use super::targets::{self, Recipient};
use super::SchedulerError;
use crate::config::Settings;
use crate::message::{create_batch_in, NewMessage, Source};
use crate::metrics::{JOBS_ENQUEUED, SCHEDULER_EXPANSIONS};

/// What happened to one schedule row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Occurrences were expanded into messages.
    Expanded,
    /// A recurring schedule had nothing due yet; its next occurrence was set.
    Rescheduled,
    /// The row was marked `failed` with this reason.
    Failed(String),
    /// Nothing says who it goes to yet (a row without target columns whose
    /// campaign names no recipient, or without a campaign): it stays
    /// `scheduled` with this reason and is looked at again in a minute.
    Waiting(String),
}

/// The result of expanding one schedule row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The schedule.
    pub schedule_id: Uuid,
    /// What happened.
    pub outcome: Outcome,
    /// Occurrences expanded.
    pub occurrences: Vec<DateTime<Utc>>,
    /// Missed occurrences skipped by the catch-up policy.
    pub skipped: Vec<DateTime<Utc>>,
    /// Recipients per occurrence.
    pub recipients: usize,
    /// Messages created with a send job.
    pub queued: usize,
    /// Messages created waiting for an account.
    pub pending: usize,
    /// Messages that already existed (idempotency key seen before).
    pub existing: usize,
    /// Time spent per stage, in order (for the benchmark and debug logs).
    pub stages: Vec<(&'static str, Duration)>,
}

/// Times the stages of one expansion.
struct Stages {
    stages: Vec<(&'static str, Duration)>,
    last: Instant,
}

impl Stages {
    fn start() -> Self {
        Self {
            stages: Vec::new(),
            last: Instant::now(),
        }
    }

    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.stages.push((stage, now - self.last));
        self.last = now;
    }
}

/// A due schedule: a WhatsApp row, `scheduled`, its time come, and its
/// campaign not held (`paused`/`cancelled`: [`super::campaign`]). A held
/// campaign's row is not due; it expands when the campaign resumes, by its
/// catch-up policy.
fn due_sql() -> String {
    format!(
        "SELECT s.id, s.campaign_id, s.content_id, s.scheduled_at, s.cron_expression, \
        s.timezone, s.catch_up_policy, s.target_group_ids, s.target_contact_ids, \
        s.target_phone_numbers, s.target_segment_tags, s.target_group_filter, s.account_id, \
        s.last_occurrence_at, (c.id IS NOT NULL) AS content_found, c.body, c.message_type, \
        c.media_url, c.link_url, now() AS now \
     FROM mkt_con_schedule s LEFT JOIN mkt_con_content c ON c.id = s.content_id \
     WHERE s.channel = 'whatsapp' AND s.status = 'scheduled' \
       AND coalesce(s.next_occurrence_at, s.scheduled_at) <= now() \
       AND {not_held} \
     ORDER BY coalesce(s.next_occurrence_at, s.scheduled_at), s.id \
     LIMIT 1 FOR UPDATE OF s SKIP LOCKED",
        not_held = not_held("s")
    )
}

/// Schedule `s`'s campaign does not hold its sends.
fn not_held(s: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM mkt_campaigns hc WHERE hc.id = {s}.campaign_id AND {})",
        crate::queue::store::held_campaign("hc.status")
    )
}

/// How long a waiting row waits before it is looked at again.
const WAIT_SECS: f64 = 60.0;

/// Expands the oldest due schedule nobody else is expanding. `None`: nothing due.
pub async fn expand_next(
    pool: &PgPool,
    settings: &Settings,
) -> Result<Option<Expansion>, SchedulerError> {
    let mut tx = pool.begin().await?;
    let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(due_sql()))
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    let mut out = match Schedule::parse(&row) {
        Err(e) if e.waits() => {
            let reason = e.to_string();
            wait(&mut tx, row.id, &reason).await?;
            Expansion::with_outcome(row.id, Outcome::Waiting(reason))
        }
        Err(e) => {
            let reason = e.to_string();
            fail(&mut tx, row.id, &reason).await?;
            Expansion::failed(row.id, reason)
        }
        Ok(schedule) => expand_in(&mut tx, &schedule, row.now, settings).await?,
    };
    let committing = Instant::now();
    tx.commit().await?;
    out.stages.push(("commit", committing.elapsed()));
    match &out.outcome {
        Outcome::Failed(reason) => {
            counter!(SCHEDULER_EXPANSIONS, "outcome" => "failed").increment(1);
            tracing::warn!(schedule_id = %out.schedule_id, %reason, "schedule failed");
        }
        Outcome::Waiting(reason) => {
            counter!(SCHEDULER_EXPANSIONS, "outcome" => "waiting").increment(1);
            tracing::info!(schedule_id = %out.schedule_id, %reason, "schedule waits");
        }
        Outcome::Expanded | Outcome::Rescheduled => {
            counter!(SCHEDULER_EXPANSIONS, "outcome" => "queued")
                .increment(out.occurrences.len() as u64);
            counter!(JOBS_ENQUEUED, "kind" => "send").increment(out.queued as u64);
            if !out.skipped.is_empty() {
                counter!(SCHEDULER_EXPANSIONS, "outcome" => "skipped")
                    .increment(out.skipped.len() as u64);
                tracing::warn!(schedule_id = %out.schedule_id, skipped = out.skipped.len(),
                    first = %out.skipped[0], "missed occurrences skipped by the catch-up policy");
            }
            if matches!(out.outcome, Outcome::Expanded) {
                tracing::info!(schedule_id = %out.schedule_id, occurrences = out.occurrences.len(),
                    recipients = out.recipients, queued = out.queued, pending = out.pending,
                    existing = out.existing, "schedule expanded");
            }
        }
    }
    Ok(Some(out))
}

impl Expansion {
    fn failed(schedule_id: Uuid, reason: String) -> Self {
        Self::with_outcome(schedule_id, Outcome::Failed(reason))
    }

    fn with_outcome(schedule_id: Uuid, outcome: Outcome) -> Self {
        Self {
            schedule_id,
            outcome,
            occurrences: Vec::new(),
            skipped: Vec::new(),
            recipients: 0,
            queued: 0,
            pending: 0,
            existing: 0,
            stages: Vec::new(),
        }
    }
}

async fn fail(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_con_schedule SET status = 'failed', status_reason = $2, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The row waits: still `scheduled`, the reason in `status_reason`, due
/// again in [`WAIT_SECS`]. For a recurring row `last_occurrence_at` stays, so
/// the occurrences that pass meanwhile are caught up by its policy.
async fn wait(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_con_schedule SET status_reason = $2, \
            next_occurrence_at = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .bind(WAIT_SECS)
    .execute(conn)
    .await?;
    Ok(())
}

/// The idempotency key of one message of a schedule occurrence.
pub fn message_key(schedule: Uuid, occurrence: DateTime<Utc>, chat: &str) -> String {
    format!("sched:{schedule}:{}:{chat}", occurrence.timestamp())
}

/// Why one long function: the expansion is one transaction of ordered
/// steps (occurrences, targets, assignment, messages and jobs, the row's new
/// status and notes), each reading what the one before decided; it reads as
/// the sequence docs/scheduler.md describes.
///
/// Expands `schedule` inside the caller's transaction (which holds its row).
pub async fn expand_in(
    conn: &mut PgConnection,
    schedule: &Schedule,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<Expansion, SchedulerError> {
    let (occurrences, skipped, next, recurring) = match &schedule.timing {
        Timing::Once(at) => (vec![*at], Vec::new(), None, false),
        Timing::Recurring {
            recurrence,
            policy,
            after,
        } => {
            let p = plan(recurrence, *after, now, *policy);
            (p.expand, p.skipped, p.next, true)
        }
    };
    let mut out = Expansion {
        schedule_id: schedule.id,
        outcome: Outcome::Expanded,
        occurrences: occurrences.clone(),
        skipped: skipped.clone(),
        recipients: 0,
        queued: 0,
        pending: 0,
        existing: 0,
        stages: Vec::new(),
    };
    let last = occurrences.iter().chain(&skipped).max().copied();
    let mut notes: Vec<String> = Vec::new();
    if !skipped.is_empty() {
        notes.push(skipped_note(&skipped, &schedule.timing));
    }

    if occurrences.is_empty() {
        // Recurring, nothing due now: remember the next occurrence (and any
        // occurrences skipped on the way).
        out.outcome = Outcome::Rescheduled;
        if next.is_none() {
            notes.push("the cron expression has no further occurrence".into());
        }
        move_on(conn, schedule.id, recurring, last, next, &notes, false).await?;
        return Ok(out);
    }

    let mut clock = Stages::start();
    let resolved = targets::resolve(conn, &schedule.targets).await?;
    notes.extend(resolved.notes.iter().cloned());
    clock.lap("resolve explicit targets");
    let tags = &schedule.targets.segment_tags;
    let survey = if tags.is_empty() {
        Survey::default()
    } else {
        segment::survey(conn, tags, &resolved.covered).await?
    };
    clock.lap("survey segment");
    let opted_out = resolved.opted_out as i64 + survey.opted_out;
    if opted_out > 0 {
        notes.push(format!("{opted_out} opted-out contact(s) left out"));
    }
    let invalid = resolved.invalid as i64 + survey.invalid;
    if invalid > 0 {
        notes.push(format!(
            "{invalid} target(s) with an invalid chat id left out"
        ));
    }
    let recipients = resolved.recipients.len() + survey.recipients() as usize;
    if recipients == 0 && !schedule.targets.is_explicit() {
        // The campaign system's row: its campaign names nobody (yet). Not a
        // failure: the campaign's messages may come later.
        let campaign = schedule.targets.campaign.unwrap_or_default();
        let reason = format!(
            "waiting for targets: the row sets no target column, and campaign {campaign} \
             names no recipient to derive them from (none of its messages in mkt_wap_messages \
             has a target_group_id or target_contact_id{}); set a target column, or send the \
             campaign's messages; looked at again every minute",
            if notes.is_empty() {
                String::new()
            } else {
                format!("; {}", notes.join("; "))
            }
        );
        wait(conn, schedule.id, &reason).await?;
        return Ok(Expansion::with_outcome(
            schedule.id,
            Outcome::Waiting(reason),
        ));
    }
    if recipients == 0 {
        let reason = format!(
            "empty target: the targets resolve to no recipient{}",
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        );
        fail(conn, schedule.id, &reason).await?;
        return Ok(Expansion::failed(schedule.id, reason));
    }
    out.recipients = recipients;

    let mut groups: Vec<Uuid> = resolved
        .recipients
        .iter()
        .filter_map(|r| r.group_id)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let mut assigner = assign::load(conn, settings, &groups).await?;
    let choices: Vec<Choice> = resolved
        .recipients
        .iter()
        .map(|r| {
            assigner.choose(&Need {
                pinned: schedule.pinned,
                group: r.group_id,
                preferred: r.preferred,
            })
        })
        .collect();
    let plan = segment::plan(&mut assigner, schedule.pinned, &survey);
    clock.lap("assign accounts");

    let batch = settings.scheduler.batch_size.max(1);
    let mut msgs: Vec<NewMessage> = Vec::with_capacity(batch.min(resolved.recipients.len()));
    for occurrence in &occurrences {
        for (chunk, chunk_choices) in resolved.recipients.chunks(batch).zip(choices.chunks(batch)) {
            msgs.clear();
            msgs.extend(
                chunk
                    .iter()
                    .zip(chunk_choices)
                    .map(|(r, c)| new_message(schedule, *occurrence, r, c)),
            );
            for created in create_batch_in(conn, &msgs, Source::Scheduler).await? {
                match (created.created, created.job_id) {
                    (false, _) => out.existing += 1,
                    (true, Some(_)) => out.queued += 1,
                    (true, None) => out.pending += 1,
                }
            }
        }
        clock.lap("write explicit targets");
        if survey.recipients() > 0 {
            let written =
                segment::insert(conn, schedule, *occurrence, tags, &resolved.covered, &plan)
                    .await?;
            out.queued += written.queued as usize;
            out.pending += written.pending as usize;
            out.existing += (written.recipients - written.queued - written.pending) as usize;
            clock.lap("write segment (messages, events, jobs, preferences)");
        }
    }
    if out.pending > 0 {
        let mut reasons: Vec<&str> = choices
            .iter()
            .filter_map(|c| match c {
                Choice::Wait(w) => Some(w.as_str()),
                Choice::Account(_) => None,
            })
            .chain(plan.wait.as_deref())
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        notes.push(format!(
            "{} message(s) wait for an account: {}",
            out.pending,
            reasons.join("; ")
        ));
    }

    // Keep each contact with the account it got, when it had none (the
    // segment's contacts got theirs in the statement that wrote them).
    let sticky: Vec<(Uuid, Uuid)> = resolved
        .recipients
        .iter()
        .zip(&choices)
        .filter_map(|(r, c)| match (r.contact_id, r.preferred, c) {
            (Some(contact), None, Choice::Account(a)) => Some((contact, *a)),
            _ => None,
        })
        .collect();
    if !sticky.is_empty() {
        crate::directory::remember_accounts(conn, &sticky).await?;
    }
    clock.lap("preferences of explicit contacts");

    move_on(conn, schedule.id, recurring, last, next, &notes, true).await?;
    clock.lap("schedule status");
    out.stages = clock.stages;
    Ok(out)
}

fn new_message(
    schedule: &Schedule,
    occurrence: DateTime<Utc>,
    r: &Recipient,
    choice: &Choice,
) -> NewMessage {
    let chat = r.chat_id.to_string();
    let (account_id, waiting_reason) = match choice {
        Choice::Account(a) => (Some(*a), None),
        Choice::Wait(why) => (None, Some(why.clone())),
    };
    NewMessage {
        account_id,
        campaign_id: schedule.campaign_id,
        content_id: schedule.content_id,
        schedule_id: Some(schedule.id),
        channel_type: r.channel_type(),
        idempotency_key: Some(message_key(schedule.id, occurrence, &chat)),
        chat_id: r.chat_id.clone(),
        target_group_id: r.group_id,
        target_contact_id: r.contact_id,
        content: schedule.content.clone(),
        run_at: None,
        priority: 100,
        waiting_reason,
    }
}

fn skipped_note(skipped: &[DateTime<Utc>], timing: &Timing) -> String {
    let policy = match timing {
        Timing::Recurring { policy, .. } => format!("{policy:?}").to_lowercase(),
        Timing::Once(_) => String::new(),
    };
    let shown: Vec<String> = skipped.iter().take(5).map(|t| t.to_rfc3339()).collect();
    format!(
        "skipped {} missed occurrence(s) by catch_up_policy={policy}: {}{}",
        skipped.len(),
        shown.join(", "),
        if skipped.len() > 5 { ", …" } else { "" }
    )
}

/// Moves the schedule on after an expansion (or a reschedule).
async fn move_on(
    conn: &mut PgConnection,
    id: Uuid,
    recurring: bool,
    last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    notes: &[String],
    expanded: bool,
) -> Result<(), sqlx::Error> {
    // A one-off, or a recurrence with no further occurrence, is fully queued.
    let done = !recurring || next.is_none();
    let reason = if notes.is_empty() {
        None
    } else {
        Some(notes.join("; "))
    };
    sqlx::query(
        "UPDATE mkt_con_schedule SET \
            status = CASE WHEN $2 THEN 'queued' ELSE status END, \
            last_occurrence_at = coalesce($3, last_occurrence_at), \
            next_occurrence_at = $4, \
            expanded_at = CASE WHEN $6 THEN now() ELSE expanded_at END, \
            status_reason = CASE WHEN $5::text IS NOT NULL OR $6 THEN $5 ELSE status_reason END, \
            updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(done)
    .bind(last)
    .bind(next)
    .bind(reason)
    .bind(expanded)
    .execute(conn)
    .await?;
    Ok(())
}

/// The scheduler's lag: the age in seconds of the oldest due schedule not yet
/// expanded (0 when none is due).
pub async fn lag_seconds(pool: &PgPool) -> Result<f64, sqlx::Error> {
    let lag: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT extract(epoch FROM now() - min(coalesce(next_occurrence_at, scheduled_at)))::float8 \
         FROM mkt_con_schedule s \
         WHERE channel = 'whatsapp' AND status = 'scheduled' \
           AND coalesce(next_occurrence_at, scheduled_at) <= now() AND {}",
        not_held("s")
    )))
    .fetch_one(pool)
    .await?;
    Ok(lag.unwrap_or(0.0).max(0.0))
}
