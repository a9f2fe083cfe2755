//! One delivery attempt: the signed POST, the endpoint's answer read under
//! the limits, and what the answer means for the delivery row and the job.
//!
//! Rules (docs/webhooks.md):
//! - a subscription's deliveries go out one at a time (its queue lane) and in
//!   the log's order: a job whose delivery is not the head of the line
//!   snoozes behind the head;
//! - 2xx with an answer within `webhooks.max_response_bytes` is delivered;
//!   410 Gone disables the subscription (its pending deliveries stay pending
//!   and go out if it is enabled again); anything else (3xx: redirects are
//!   not followed, 4xx, 5xx, a timeout, a refused address, an answer too
//!   large) is retried with backoff, no attempt of the queue spent, until
//!   `webhooks.horizon` after the first attempt; then the delivery is dead.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::WebhookSettings;
use crate::events::Event;
use crate::media::address::AddressPolicy;

/// What a run of a delivery job came to (the worker's handler maps it onto
/// the queue's outcomes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delivered.
    Done,
    /// Nothing to do: delivered before, subscription disabled or deleted.
    Idle,
    /// Run again at `until` (a retry's backoff, or behind the head of the
    /// line); no attempt of the queue is spent.
    Wait {
        /// When.
        until: DateTime<Utc>,
        /// Why (shown on the job).
        reason: String,
    },
    /// Our side failed (the database): the queue retries the job.
    Retry(String),
    /// Dead-lettered: the job is discarded with this reason.
    Dead(String),
}

/// The retry wait after `attempts` failed attempts: `base · 2^(attempts-1)`
/// capped at `max`, plus `jitter` (a fraction in 0..=0.25 of it).
pub fn backoff(attempts: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let d = base.saturating_mul(1u32 << exp).min(max);
    d + d.mul_f64(jitter.clamp(0.0, 0.25))
}

/// The HTTP side: a client that reaches only permitted addresses, follows no
/// redirect, and gives up after `webhooks.timeout`.
#[derive(Debug, Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    settings: WebhookSettings,
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status, if the endpoint answered.
    pub status: Option<u16>,
    /// Why it failed (`None`: accepted).
    pub error: Option<String>,
}

impl Answer {
    fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

impl Deliverer {
    /// From `[webhooks]` (its `allow_cidrs` were checked at start).
    pub fn new(settings: &WebhookSettings) -> Result<Self, crate::media::address::BadCidr> {
        let policy = Arc::new(AddressPolicy::new(&settings.allow_cidrs)?);
        let http = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(crate::media::GuardedResolver::new(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("Courier-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with rustls builds");
        Ok(Self {
            http,
            policy,
            settings: settings.clone(),
        })
    }

    /// The address policy (creation checks use it too).
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// POSTs `event` to `url`, signed with each of `secrets`.
    pub async fn post(&self, url: &str, secrets: &[&str], event: &Event) -> Answer {
        self.post_body(url, secrets, &event.public_id(), &event.body())
            .await
    }

    /// POSTs `body` as message `id` to `url`, signed with each of `secrets`
    /// (the current secret, and during a rotation's overlap the replaced
    /// one: `webhook-signature` then carries both, space-separated, as
    /// Standard Webhooks allows).
    pub async fn post_body(
        &self,
        url: &str,
        secrets: &[&str],
        id: &str,
        body: &serde_json::Value,
    ) -> Answer {
        let fail = |status: Option<u16>, e: String| Answer {
            status,
            error: Some(e),
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return fail(None, format!("url `{url}`: {e}")),
        };
        // IP literals never reach the resolver: check them here, every time.
        if let Err(e) = self.policy.check_url(&parsed) {
            return fail(None, crate::error::chain(&e));
        }
        let body = serde_json::to_vec(body).expect("a JSON value serialises");
        let ts = Utc::now().timestamp();
        let signature = super::sign::signatures(secrets, id, ts, &body);
        let sent = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("no answer within {:?}", self.settings.timeout)
                } else {
                    crate::error::chain(&e)
                };
                return fail(None, what);
            }
        };
        let status = resp.status();
        // Read the answer (bounded): a keep-alive connection needs it read,
        // and an endpoint that streams without end must not hold us.
        let max = self.settings.max_response_bytes;
        let mut read: u64 = 0;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    read += c.len() as u64;
                    if read > max {
                        return fail(
                            Some(status.as_u16()),
                            format!("answer larger than webhooks.max_response_bytes ({max} bytes)"),
                        );
                    }
                }
                Ok(None) => break,
                Err(e) => return fail(Some(status.as_u16()), crate::error::chain(&e)),
            }
        }
        if status.is_success() {
            Answer {
                status: Some(status.as_u16()),
                error: None,
            }
        } else if status.is_redirection() {
            fail(
                Some(status.as_u16()),
                format!("answered {status}; redirects are not followed"),
            )
        } else {
            fail(Some(status.as_u16()), format!("answered {status}"))
        }
    }
}

/// What the handler needs about a delivery, in one read.
#[derive(Debug, sqlx::FromRow)]
struct Line {
    position: i64,
    status: String,
    first_attempt_at: Option<DateTime<Utc>>,
    attempts: i32,
    url: String,
    secret: String,
    /// The secret a rotation replaced, while its overlap lasts.
    previous_secret: Option<String>,
    enabled: bool,
    /// The head of the subscription's line and when it runs next.
    head: Option<i64>,
    head_next: Option<DateTime<Utc>>,
    /// No older transaction can still add an earlier delivery.
    settled: bool,
    now: DateTime<Utc>,
    /// The event (read in the same statement; `None` if pruned).
    e_type: Option<String>,
    e_account: Option<Uuid>,
    e_campaign: Option<Uuid>,
    e_data: Option<serde_json::Value>,
    e_at: Option<DateTime<Utc>>,
    e_xid: Option<i64>,
}

impl Line {
    fn event(&self, position: i64) -> Option<Event> {
        Some(Event {
            position,
            xid: self.e_xid?,
            kind: self.e_type.clone()?,
            account_id: self.e_account,
            campaign_id: self.e_campaign,
            data: self.e_data.clone()?,
            occurred_at: self.e_at?,
        })
    }
}

/// How long a job waits, polling, for older transactions to end before it
/// snoozes: they are usually a statement or two long, and a snooze costs a
/// round of the queue.
const SETTLE_WAIT: Duration = Duration::from_millis(50);

/// Runs one `webhook` job. `lease_lost` is checked before the POST.
pub async fn run(
    pool: &PgPool,
    deliverer: &Deliverer,
    subscription: Uuid,
    position: i64,
    lease_lost: &(dyn Fn() -> bool + Send + Sync),
) -> Step {
    let step = match attempt(pool, deliverer, subscription, Some(position), lease_lost).await {
        Ok(step) => step,
        Err(e) => return Step::Retry(crate::error::chain(&e)),
    };
    // Also when ours had gone out already (an earlier drain sent it): any
    // run of the lane moves its line on.
    if matches!(step, Step::Done | Step::Idle) {
        drain(pool, deliverer, subscription, lease_lost).await;
    }
    step
}

/// Most deliveries one job sends after its own, and for how long at most
/// (far below `queue.job_timeout`; the lane's slot is then free to rotate).
const DRAIN_MAX: usize = 200;
const DRAIN_FOR: Duration = Duration::from_secs(1);

/// After a delivery went out, the lane's next due deliveries go out too, in
/// order, from the same run: the endpoint then waits for one POST and one
/// write per event, not for a queue round per event. Their own jobs still
/// run and find them delivered. Stops at the first delivery that is not
/// due, fails, or after [`DRAIN_MAX`] or [`DRAIN_FOR`]; a failure is recorded on its row as
/// any attempt's, and its own job retries it at its time.
async fn drain(
    pool: &PgPool,
    deliverer: &Deliverer,
    subscription: Uuid,
    lease_lost: &(dyn Fn() -> bool + Send + Sync),
) {
    let started = std::time::Instant::now();
    for _ in 0..DRAIN_MAX {
        if lease_lost() || started.elapsed() >= DRAIN_FOR {
            return;
        }
        // The next due delivery, found by the attempt's own read.
        match Box::pin(attempt(pool, deliverer, subscription, None, lease_lost)).await {
            Ok(Step::Done) => {}
            _ => return,
        }
    }
}

/// One attempt at delivery `position`, or (`None`) at the subscription's
/// next due one.
async fn attempt(
    pool: &PgPool,
    deliverer: &Deliverer,
    subscription: Uuid,
    position: Option<i64>,
    lease_lost: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Step, sqlx::Error> {
    let started = std::time::Instant::now();
    let line = loop {
        let line: Option<Line> = sqlx::query_as(
            "SELECT d.position, d.status, d.first_attempt_at, d.attempts, s.url, s.secret, \
                    CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END \
                        AS previous_secret, s.enabled, \
                    h.position AS head, h.next_attempt_at AS head_next, \
                    d.xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS settled, \
                    now() AS now, e.type AS e_type, e.account_id AS e_account, \
                    e.campaign_id AS e_campaign, e.data AS e_data, e.occurred_at AS e_at, \
                    e.xid AS e_xid \
             FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
             LEFT JOIN courier_events e ON e.position = d.position \
             LEFT JOIN LATERAL (SELECT p.position, p.next_attempt_at FROM webhook_deliveries p \
                                WHERE p.subscription_id = d.subscription_id AND p.status = 'pending' \
                                ORDER BY p.xid, p.position LIMIT 1) h ON true \
             WHERE d.subscription_id = $1 AND d.position = coalesce($2, \
                 (SELECT n.position FROM webhook_deliveries n \
                  WHERE n.subscription_id = $1 AND n.status = 'pending' \
                    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now()) \
                  ORDER BY n.xid, n.position LIMIT 1))",
        )
        .bind(subscription)
        .bind(position)
        .fetch_optional(pool)
        .await?;
        match line {
            // The subscription was deleted meanwhile (or nothing is due).
            None => return Ok(Step::Idle),
            Some(l) if l.settled || l.status != "pending" || started.elapsed() >= SETTLE_WAIT => {
                break l
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    let position = line.position;
    if line.status != "pending" || !line.enabled {
        // Delivered by an earlier run, or the subscription is disabled (its
        // pending deliveries get new jobs when it is enabled again).
        return Ok(Step::Idle);
    }
    if let Some(next) = line
        .head_next
        .filter(|t| *t > line.now && line.head == Some(position))
    {
        // Our own retry is not due yet (claimed early, e.g. after a drain
        // tried us).
        return Ok(Step::Wait {
            until: next,
            reason: "waiting for the retry's time".into(),
        });
    }
    if !line.settled {
        return Ok(Step::Wait {
            until: line.now + chrono::Duration::milliseconds(10),
            reason: "an older transaction may still add an earlier event".into(),
        });
    }
    if let Some(head) = line.head.filter(|h| *h != position) {
        let behind = |until: DateTime<Utc>| Step::Wait {
            until: until + chrono::Duration::milliseconds(1),
            reason: format!("behind evt_{head} of the same subscription"),
        };
        // An earlier event of this subscription waits for its retry: go
        // right after it.
        if let Some(next) = line.head_next.filter(|t| *t > line.now) {
            return Ok(behind(next));
        }
        // The head is due, yet its job did not come first: it has none (a
        // crash loop discarded it) or it runs later. Deliver it from here
        // (the lane runs one job at a time), then come back for ours.
        let step = Box::pin(attempt(
            pool,
            deliverer,
            subscription,
            Some(head),
            lease_lost,
        ))
        .await?;
        return Ok(match step {
            Step::Wait { until, .. } => behind(until),
            Step::Retry(e) => Step::Retry(e),
            Step::Done | Step::Idle | Step::Dead(_) => behind(line.now),
        });
    }
    let Some(event) = line.event(position) else {
        mark_dead(
            pool,
            subscription,
            position,
            None,
            "the event is no longer in the log",
        )
        .await?;
        return Ok(Step::Dead("the event is no longer in the log".into()));
    };
    if lease_lost() {
        return Ok(Step::Retry("lost the lane's lease".into()));
    }
    let secrets: Vec<&str> = std::iter::once(line.secret.as_str())
        .chain(line.previous_secret.as_deref())
        .collect();
    let answer = deliverer.post(&line.url, &secrets, &event).await;
    let settings = &deliverer.settings;
    match &answer.error {
        None => {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), \
                    attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, now()), \
                    last_attempt_at = now(), next_attempt_at = NULL, last_status = $3, last_error = NULL \
                 WHERE subscription_id = $1 AND position = $2",
            )
            .bind(subscription)
            .bind(position)
            .bind(answer.status.map(i32::from))
            .execute(pool)
            .await
            ?;
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "delivered")
                .increment(1);
            let latency = (Utc::now() - event.occurred_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!(crate::metrics::WEBHOOK_LATENCY_SECONDS)
                .record(latency.as_secs_f64());
            Ok(Step::Done)
        }
        Some(_) if answer.gone() => {
            let reason = format!(
                "the endpoint answered 410 Gone at {} (evt_{position})",
                line.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            record_failure(pool, subscription, position, &answer, None).await?;
            if let Err(e) = super::disable(pool, subscription, &reason).await {
                return Ok(Step::Retry(crate::error::chain(&e)));
            }
            tracing::warn!(%subscription, "webhook subscription disabled: {reason}");
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "gone").increment(1);
            // Not delivered: nothing more goes out on this subscription.
            Ok(Step::Idle)
        }
        Some(error) => {
            let first = line.first_attempt_at.unwrap_or(line.now);
            let horizon = first + chrono::Duration::from_std(settings.horizon).unwrap_or_default();
            let attempts = u32::try_from(line.attempts).unwrap_or(0) + 1;
            let wait = backoff(
                attempts,
                settings.backoff_base,
                settings.backoff_max,
                rand::rng().random_range(0.0..=0.25),
            );
            let next = line.now + chrono::Duration::from_std(wait).unwrap_or_default();
            if line.now >= horizon {
                mark_dead(pool, subscription, position, answer.status, error).await?;
                metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "dead")
                    .increment(1);
                metrics::counter!(crate::metrics::WEBHOOK_DEAD_LETTERS).increment(1);
                tracing::warn!(%subscription, position, attempts, error = %error, "webhook delivery dead-lettered");
                return Ok(Step::Dead(format!(
                    "dead-lettered after {attempts} attempts: {error}"
                )));
            }
            // The last try falls on the horizon itself.
            let next = next.min(horizon);
            record_failure(pool, subscription, position, &answer, Some(next)).await?;
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "failed")
                .increment(1);
            tracing::info!(%subscription, position, attempts, %next, error = %error, "webhook delivery failed; will retry");
            Ok(Step::Wait {
                until: next,
                reason: format!("attempt {attempts} failed: {error}"),
            })
        }
    }
}

async fn record_failure(
    pool: &PgPool,
    subscription: Uuid,
    position: i64,
    answer: &Answer,
    next: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, \
            first_attempt_at = coalesce(first_attempt_at, now()), last_attempt_at = now(), \
            next_attempt_at = $3, last_status = $4, last_error = $5 \
         WHERE subscription_id = $1 AND position = $2",
    )
    .bind(subscription)
    .bind(position)
    .bind(next)
    .bind(answer.status.map(i32::from))
    .bind(&answer.error)
    .execute(pool)
    .await?;
    Ok(())
}

async fn mark_dead(
    pool: &PgPool,
    subscription: Uuid,
    position: i64,
    status: Option<u16>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'dead', dead_at = now(), attempts = attempts + 1, \
            first_attempt_at = coalesce(first_attempt_at, now()), last_attempt_at = now(), \
            next_attempt_at = NULL, last_status = $3, last_error = $4 \
         WHERE subscription_id = $1 AND position = $2",
    )
    .bind(subscription)
    .bind(position)
    .bind(status.map(i32::from))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_plus_at_most_a_quarter() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(5), s(600), 0.0), s(5));
        assert_eq!(backoff(2, s(5), s(600), 0.0), s(10));
        assert_eq!(backoff(4, s(5), s(600), 0.0), s(40));
        assert_eq!(backoff(20, s(5), s(600), 0.0), s(600));
        assert_eq!(backoff(200, s(5), s(600), 0.0), s(600));
        assert_eq!(backoff(1, s(4), s(600), 0.25), s(5));
        assert_eq!(backoff(1, s(4), s(600), 9.0), s(5));
    }
}
