//! `/v1/jobs`: enqueue any kind of job (single or an all-or-nothing batch),
//! inspect, list with cursor pagination, and cancel before start.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use courier_jobs::{JobKind, JobPayload, ValidationError};

use super::contract::{self, field};
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::queue::{self, Job, NewJob, QueueError};

/// Most jobs in one batch.
pub(crate) const MAX_BATCH: usize = 10_000;
/// Longest idempotency key.
pub(crate) const MAX_KEY_LEN: usize = 200;

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// Id (time-ordered).
    pub id: Uuid,
    /// Kind.
    #[schema(value_type = JobKind)]
    pub kind: String,
    /// The account whose session runs it.
    pub account_id: Uuid,
    /// Payload (the kind's payload type).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The job's state.
    #[schema(value_type = queue::JobState)]
    pub state: String,
    /// Lower runs first.
    pub priority: i16,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Attempts so far.
    pub attempt: i32,
    /// Attempt limit.
    pub max_attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// Why it waits (budget, pacing, pause…).
    pub waiting_reason: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            account_id: j.account_id,
            payload: j.payload,
            state: j.state_name,
            priority: j.priority,
            run_at: j.run_at,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            last_error: j.last_error,
            waiting_reason: j.waiting_reason,
            idempotency_key: j.idempotency_key,
            created_at: j.created_at,
            finished_at: j.finished_at,
        }
    }
}

/// Body of `POST /v1/jobs` (and each item of a batch). Its document is a
/// `oneOf` on `kind`, each with that kind's payload (see [`EnqueueJob::schema`]);
/// the handler parses the payload by the kind, naming the field at fault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueJob {
    /// `send`, `discover`, `scrape`, `retry`, `health_check`, `login`.
    pub kind: JobKind,
    /// The account whose session runs it.
    pub account_id: Uuid,
    /// The kind's payload (see the job-definitions crate).
    pub payload: serde_json::Value,
    /// Not before (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
    /// Lower runs first (-1000..=1000, default 100).
    #[serde(default, deserialize_with = "contract::opt_int")]
    pub priority: Option<i64>,
    /// Makes a repeated enqueue return the existing job (also `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// Lowest and highest priority.
pub(crate) const PRIORITY: std::ops::RangeInclusive<i64> = -1000..=1000;

/// The schema of one kind's enqueue request: `EnqueueJob<Kind>`.
fn enqueue_variant(kind: JobKind, payload: &str) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        AdditionalProperties, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
    };
    let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
    ObjectBuilder::new()
        .description(Some(format!("Enqueue a `{kind}` job.")))
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some([kind.as_str()])),
        )
        .required("kind")
        .property(
            "account_id",
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .description(Some("The account whose session runs it.")),
        )
        .required("account_id")
        .property("payload", utoipa::openapi::Ref::from_schema_name(payload))
        .required("payload")
        .property(
            "run_at",
            ObjectBuilder::new()
                .schema_type(nullable(Type::String))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("Not before (RFC 3339).")),
        )
        .property(
            "priority",
            ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .minimum(Some(*PRIORITY.start() as f64))
                .maximum(Some(*PRIORITY.end() as f64))
                .description(Some("Lower runs first (default 100).")),
        )
        .property("idempotency_key", field::opt_key())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// Each kind, its payload type and the component names.
fn kinds() -> [(
    JobKind,
    String,
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
); 6] {
    use courier_jobs::{discover, maintenance, retry, scrape, send};
    use utoipa::{PartialSchema, ToSchema};
    [
        (
            JobKind::Send,
            send::SendJob::name().into(),
            send::SendJob::schema(),
        ),
        (
            JobKind::Discover,
            discover::DiscoverJob::name().into(),
            discover::DiscoverJob::schema(),
        ),
        (
            JobKind::Scrape,
            scrape::ScrapeJob::name().into(),
            scrape::ScrapeJob::schema(),
        ),
        (
            JobKind::Retry,
            retry::RetryJob::name().into(),
            retry::RetryJob::schema(),
        ),
        (
            JobKind::HealthCheck,
            maintenance::HealthCheckJob::name().into(),
            maintenance::HealthCheckJob::schema(),
        ),
        (
            JobKind::Login,
            maintenance::LoginJob::name().into(),
            maintenance::LoginJob::schema(),
        ),
    ]
}

fn variant_name(kind: JobKind) -> String {
    let camel: String = kind
        .as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("Enqueue{camel}Job")
}

impl utoipa::PartialSchema for EnqueueJob {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{Discriminator, OneOfBuilder};
        let mut discriminator = Discriminator::new("kind");
        let mut one_of = OneOfBuilder::new().description(Some(
            "A job to enqueue: `kind` says which payload it carries.",
        ));
        for (kind, _, _) in kinds() {
            let name = variant_name(kind);
            discriminator
                .mapping
                .insert(kind.as_str().into(), format!("#/components/schemas/{name}"));
            one_of = one_of.item(utoipa::openapi::Ref::from_schema_name(name));
        }
        one_of.discriminator(Some(discriminator)).into()
    }
}

impl ToSchema for EnqueueJob {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        for (kind, payload, schema) in kinds() {
            schemas.push((variant_name(kind), enqueue_variant(kind, &payload).into()));
            schemas.push((payload, schema));
        }
    }
}

fn typed<P: JobPayload>(account: Uuid, payload: &serde_json::Value) -> Result<NewJob, ApiError> {
    let mut payload = payload.clone();
    contract::integral_floats(&mut payload);
    let p: P =
        serde_json::from_value(payload).map_err(|e| ApiError::invalid("payload", e.to_string()))?;
    NewJob::new(account, &p).map_err(|e| match e {
        QueueError::Invalid(v) => ApiError::Validation(v.within("payload")),
        other => ApiError::invalid("payload", crate::error::chain(&other)),
    })
}

impl EnqueueJob {
    /// Validates into a queue job.
    pub(crate) fn parse(self, header_key: Option<&str>) -> Result<NewJob, ApiError> {
        use courier_jobs::{discover, maintenance, retry, scrape, send};
        let mut job = match self.kind {
            JobKind::Send => typed::<send::SendJob>(self.account_id, &self.payload)?,
            JobKind::Discover => typed::<discover::DiscoverJob>(self.account_id, &self.payload)?,
            JobKind::Scrape => typed::<scrape::ScrapeJob>(self.account_id, &self.payload)?,
            JobKind::Retry => typed::<retry::RetryJob>(self.account_id, &self.payload)?,
            JobKind::HealthCheck => {
                typed::<maintenance::HealthCheckJob>(self.account_id, &self.payload)?
            }
            JobKind::Login => typed::<maintenance::LoginJob>(self.account_id, &self.payload)?,
            JobKind::Logout => {
                return Err(ApiError::invalid(
                    "kind",
                    "logout jobs are made by POST /v1/accounts/{id}/logout, \
                     which also stops the account's sends",
                ))
            }
            JobKind::Webhook => {
                return Err(ApiError::invalid(
                    "kind",
                    "webhook jobs are made by Courier's event log; \
                     manage subscriptions at /v1/webhooks",
                ))
            }
        };
        if let Some(p) = self.priority {
            if !PRIORITY.contains(&p) {
                return Err(ApiError::invalid(
                    "priority",
                    format!(
                        "is {p}; must be between {} and {}",
                        PRIORITY.start(),
                        PRIORITY.end()
                    ),
                ));
            }
            job = job.priority(p as i16);
        }
        if let Some(at) = self.run_at {
            job = job.run_at(at);
        }
        if let Some(k) = &self.idempotency_key {
            check_key("idempotency_key", k)?;
        }
        let key = self.idempotency_key.as_deref().or(header_key);
        if let Some(k) = key {
            job = job.idempotency_key(Some(k.to_string()));
        }
        Ok(job)
    }
}

/// An idempotency key: 1 to 200 printable characters.
pub(crate) fn check_key(field: &str, k: &str) -> Result<(), ApiError> {
    contract::check_len(field, contract::KEY, 1, MAX_KEY_LEN, k)
}

fn header_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII characters"))?;
    contract::check_len("Idempotency-Key", contract::HEADER_KEY, 1, MAX_KEY_LEN, k)?;
    Ok(Some(k))
}

async fn account_exists(state: &AppState, ids: &[Uuid]) -> Result<(), ApiError> {
    let missing: Option<(i32, Uuid)> = sqlx::query_as(
        "SELECT (i - 1)::int, u FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, i) \
         WHERE NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = u) ORDER BY i LIMIT 1",
    )
    .bind(ids)
    .fetch_optional(&state.pool)
    .await?;
    match missing {
        Some((i, id)) => Err(ApiError::missing(
            format!("jobs[{i}].account_id"),
            format!("no account {id}"),
        )),
        None => Ok(()),
    }
}

/// Enqueue one job: 202 with the new job, or 200 with the existing job for a
/// repeated idempotency key.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", operation_id = "createJob", request_body = EnqueueJob,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]([ -~]*[!-~])?$",
        min_length = 1, max_length = 200,
        description = "Idempotency key (the body's `idempotency_key` wins)")),
    responses((status = 202, body = JobView, description = "Enqueued"),
        (status = 200, body = JobView, description = "The existing job for the idempotency key"),
        (status = 404, body = ErrorBody, description = "No such account (`field`: account_id)"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<EnqueueJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = body.parse(header_key(&headers)?)?;
    // An unknown account is caught by the foreign key (422 `account_id`): one
    // round trip fewer on the hot path.
    let (row, created) = queue::store::enqueue_one(&state.pool, &job)
        .await
        .map_err(ApiError::from)?;
    if created {
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => job.kind.as_str()).increment(1);
    }
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row.into())))
}

/// Body of `POST /v1/jobs/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueBatch {
    /// Up to 10,000 jobs; all are enqueued or none.
    #[schema(min_items = 1, max_items = 10_000)]
    pub jobs: Vec<EnqueueJob>,
}

/// One result of a batch, in input order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchItem {
    /// The job id.
    pub id: Uuid,
    /// False when an existing job was returned for the key.
    pub created: bool,
}

/// Enqueue up to 10,000 jobs in one statement, all or nothing.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", operation_id = "createJobBatch", request_body = EnqueueBatch,
    responses((status = 202, body = [BatchItem], description = "Enqueued, in input order"),
        (status = 404, body = ErrorBody, description = "No such account (`field`: jobs[i].account_id)"),
        (status = 409, body = ErrorBody, description = "Two jobs of the batch conflict"),
        (status = 422, body = ErrorBody, description = "A field breaks the document")))]
pub(crate) async fn create_batch(
    State(state): State<AppState>,
    Json(body): Json<EnqueueBatch>,
) -> Result<(StatusCode, Json<Vec<BatchItem>>), ApiError> {
    if body.jobs.is_empty() {
        return Err(ApiError::invalid("jobs", "is empty"));
    }
    if body.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("has {} jobs; at most {MAX_BATCH}", body.jobs.len()),
        ));
    }
    let jobs: Vec<NewJob> = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, j)| {
            j.parse(None).map_err(|e| match e {
                ApiError::Validation(v) => ApiError::Validation(v.within(&format!("jobs[{i}]"))),
                other => other,
            })
        })
        .collect::<Result<_, _>>()?;
    let mut accounts: Vec<Uuid> = jobs.iter().map(|j| j.account_id).collect();
    accounts.sort();
    accounts.dedup();
    account_exists(&state, &accounts).await?;
    let out = queue::enqueue_batch(&state.pool, &jobs)
        .await
        .map_err(ApiError::from)?;
    for (j, e) in jobs.iter().zip(&out) {
        if e.created {
            metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => j.kind.as_str())
                .increment(1);
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(
            out.into_iter()
                .map(|e| BatchItem {
                    id: e.id,
                    created: e.created,
                })
                .collect(),
        ),
    ))
}

/// Get a job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "getJob",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView, description = "The job"),
        (status = 404, body = ErrorBody, description = "No such job")))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, ApiError> {
    queue::get_job(&state.pool, id)
        .await
        .map_err(ApiError::from)?
        .map(|j| Json(j.into()))
        .ok_or(ApiError::NotFound("job"))
}

/// Filters and cursor for `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFilter {
    /// Only this state.
    #[param(value_type = Option<queue::JobState>)]
    pub state: Option<String>,
    /// Only this kind.
    #[param(value_type = Option<JobKind>)]
    pub kind: Option<String>,
    /// Only this account.
    pub account_id: Option<Uuid>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Cursor: jobs after this id (ids are time-ordered).
    pub after: Option<Uuid>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs, oldest first.
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<Uuid>,
}

/// List jobs, filtered, oldest first, with a cursor.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", operation_id = "listJobs", params(JobFilter),
    responses((status = 200, body = JobPage, description = "A page of jobs"),
        (status = 422, body = ErrorBody, description = "A parameter breaks the document")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(f): Query<JobFilter>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(s) = &f.state {
        if queue::JobState::parse(s).is_none() {
            return Err(ApiError::invalid(
                "state",
                format!("unknown state `{s}`; expected available, scheduled, running, retryable, completed, discarded or cancelled"),
            ));
        }
    }
    if let Some(k) = &f.kind {
        k.parse::<JobKind>()
            .map_err(|e: ValidationError| ApiError::Validation(e))?;
    }
    let rows: Vec<Job> = sqlx::query_as(
        "SELECT * FROM queue_jobs
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2)
           AND ($3::uuid IS NULL OR account_id = $3) AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5",
    )
    .bind(f.state)
    .bind(f.kind)
    .bind(f.account_id)
    .bind(f.after)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let jobs: Vec<JobView> = rows
        .into_iter()
        .take(limit as usize)
        .map(Into::into)
        .collect();
    let next = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Json(JobPage { jobs, next }))
}

/// Cancel a job that has not started: 409 once it runs or finished.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancelJob",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView, description = "Cancelled"),
        (status = 404, body = ErrorBody, description = "No such job"),
        (status = 409, body = ErrorBody, description = "The job has started or finished")))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, ApiError> {
    let job = queue::cancel(&state.pool, id)
        .await
        .map_err(ApiError::from)?;
    metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => job.kind.clone(), "outcome" => "cancelled")
        .increment(1);
    Ok(Json(job.into()))
}
