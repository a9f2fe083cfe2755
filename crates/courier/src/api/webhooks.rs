//! `/v1/webhooks`: subscriptions to Courier's events, their deliveries and
//! dead letters ([`crate::webhook`]; docs/webhooks.md). Managing
//! subscriptions is an admin's business (scope `admin` once tokens have
//! scopes).

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::contract;
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::events::EventType;
use crate::media::address::AddressPolicy;
use crate::webhook::{self, Change, Delivery, Spec, Subscription};

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// The endpoint: http(s), a public address unless `webhooks.allow_cidrs` allows it.
    #[schema(schema_with = contract::field::url)]
    pub url: String,
    /// The event types to receive (at least one).
    #[schema(min_items = 1)]
    pub event_types: Vec<EventType>,
    /// Only events of this account.
    pub account_id: Option<Uuid>,
    /// Only events of this campaign.
    pub campaign_id: Option<Uuid>,
    /// Free text, up to 500 characters.
    #[schema(schema_with = contract::field::opt_plain::<500>)]
    pub description: Option<String>,
}

/// A new subscription with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedWebhook {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    /// Shown only in this answer; it is never logged nor returned again.
    pub secret: String,
}

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /v1/webhooks/{id}`: only the fields given change; `null`
/// clears a filter or the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWebhook {
    /// New endpoint (checked like at creation).
    #[schema(schema_with = contract::field::opt_url)]
    pub url: Option<String>,
    /// New event types (at least one).
    #[schema(min_items = 1)]
    pub event_types: Option<Vec<EventType>>,
    /// New account filter (`null` clears it).
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<Uuid>)]
    pub account_id: Option<Option<Uuid>>,
    /// New campaign filter (`null` clears it).
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<Uuid>)]
    pub campaign_id: Option<Option<Uuid>>,
    /// New description (`null` clears it).
    #[serde(default, deserialize_with = "double")]
    #[schema(schema_with = contract::field::opt_plain::<500>)]
    pub description: Option<Option<String>>,
    /// Enable (pending deliveries go out again, in order) or disable.
    pub enabled: Option<bool>,
}

fn policy(state: &AppState) -> Result<AddressPolicy, ApiError> {
    // Checked by Settings::validate at start; a state built without it
    // fails here with the key named.
    AddressPolicy::new(&state.settings.webhooks.allow_cidrs)
        .map_err(|e| ApiError::Conflict(format!("webhooks.allow_cidrs: {e}")))
}

fn check_types(types: &[EventType]) -> Result<(), ApiError> {
    if types.is_empty() {
        return Err(ApiError::invalid(
            "event_types",
            format!(
                "must name at least one of {}",
                EventType::ALL.map(|t| t.as_str()).join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<(), ApiError> {
    match d {
        Some(d) => contract::check_len("description", contract::NO_NUL, 0, 500, d),
        None => Ok(()),
    }
}

fn check_url_form(url: &str) -> Result<(), ApiError> {
    contract::check("url", contract::HTTP_URL, url)
}

/// Subscribe an endpoint to events. The answer carries the signing secret,
/// the only time it is shown.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody, description = "no such account (`account_id`)"),
        (status = 409, body = ErrorBody, description = "the URL's host does not resolve, or resolves to an address webhooks.allow_cidrs does not allow"),
        (status = 422, body = ErrorBody, description = "malformed URL, no or unknown event type, description too long")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    check_types(&body.event_types)?;
    check_description(body.description.as_deref())?;
    check_url_form(&body.url)?;
    let url = webhook::check_url(&policy(&state)?, &body.url).await?;
    let (subscription, secret) = webhook::create(
        &state.pool,
        Spec {
            url,
            description: body.description,
            event_types: body.event_types,
            account_id: body.account_id,
            campaign_id: body.campaign_id,
        },
    )
    .await?;
    tracing::info!(subscription = %subscription.id, url = %subscription.url, "webhook subscription created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            subscription,
            secret,
        }),
    ))
}

/// List webhook subscriptions (without secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    responses((status = 200, body = [Subscription]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`")))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<Subscription>>, ApiError> {
    Ok(Json(webhook::list(&state.pool).await?))
}

/// Get one webhook subscription (without its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "getWebhook",
    params(("id" = Uuid, Path, description = "subscription id")),
    responses((status = 200, body = Subscription), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(webhook::get(&state.pool, id).await?))
}

/// Change a subscription: URL, types, filters, description, enabled.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "updateWebhook",
    params(("id" = Uuid, Path, description = "subscription id")),
    request_body = UpdateWebhook,
    responses((status = 200, body = Subscription), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the URL's host does not resolve, or resolves to an address webhooks.allow_cidrs does not allow"),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateWebhook>,
) -> Result<Json<Subscription>, ApiError> {
    if let Some(t) = &body.event_types {
        check_types(t)?;
    }
    check_description(body.description.clone().flatten().as_deref())?;
    let url = match &body.url {
        Some(u) => {
            check_url_form(u)?;
            Some(webhook::check_url(&policy(&state)?, u).await?)
        }
        None => None,
    };
    let sub = webhook::update(
        &state.pool,
        id,
        Change {
            url,
            description: body.description,
            event_types: body.event_types,
            account_id: body.account_id,
            campaign_id: body.campaign_id,
            enabled: body.enabled,
        },
    )
    .await?;
    Ok(Json(sub))
}

/// Delete a subscription with its deliveries and pending jobs.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = Uuid, Path, description = "subscription id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    webhook::delete(&state.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a test delivery came to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TestResult {
    /// The endpoint accepted it (2xx).
    pub delivered: bool,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// The `webhook-id` sent (`evt_test_…`).
    pub event_id: String,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// Send a signed `webhook.test` event to the endpoint now and report the
/// answer (not queued, not retried; the subscription does not change).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", operation_id = "testWebhook",
    params(("id" = Uuid, Path, description = "subscription id")),
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<TestResult>, ApiError> {
    let sub = webhook::get(&state.pool, id).await?;
    let secrets = webhook::secrets(&state.pool, id).await?;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let deliverer = crate::webhook::deliver::Deliverer::new(&state.settings.webhooks)
        .map_err(|e| ApiError::Conflict(format!("webhooks.allow_cidrs: {e}")))?;
    let event_id = format!("evt_test_{}", Uuid::now_v7().simple());
    let body = serde_json::json!({
        "id": event_id,
        "type": "webhook.test",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "version": crate::events::BODY_VERSION,
        "data": {"subscription_id": id},
    });
    let started = Instant::now();
    let answer = deliverer
        .post_body(&sub.url, &secrets, &event_id, &body)
        .await;
    Ok(Json(TestResult {
        delivered: answer.error.is_none(),
        status: answer.status,
        error: answer.error,
        event_id,
        duration_ms: started.elapsed().as_millis() as u64,
    }))
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    /// Only `pending`, `delivered` or `dead` (the dead letters).
    #[param(pattern = "^(pending|delivered|dead)$")]
    pub status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A subscription's deliveries, newest first; `?status=dead` lists its dead letters.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = Uuid, Path, description = "subscription id"), DeliveryQuery),
    responses((status = 200, body = [Delivery]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(Json(
        webhook::deliveries(&state.pool, id, q.status.as_deref(), limit).await?,
    ))
}

/// Replay a dead (or delivered) delivery: it goes out again, with the same
/// `webhook-id`, ahead of the subscription's later pending events. A dead
/// letter keeps its event in the log; a delivered delivery's event may have
/// been pruned (`webhooks.events_retain`), and then it cannot be replayed.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{position}/replay", tag = "webhooks",
    operation_id = "replayWebhookDelivery",
    params(("id" = Uuid, Path, description = "subscription id"),
        ("position" = i64, Path, description = "the event's position (`evt_<position>`)")),
    responses((status = 202, body = Delivery), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the delivery is still pending, or its event left the log (webhooks.events_retain)")))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    Path((id, position)): Path<(Uuid, i64)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let d = webhook::replay(&state.pool, id, position).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

/// Query of `POST /v1/webhooks/{id}/rotate-secret`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateQuery {
    /// How long the replaced secret keeps signing beside the new one, in
    /// seconds (default `webhooks.rotation_overlap`; 0: it stops at once,
    /// for a secret that leaked; at most 7 days).
    #[param(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<i64>,
}

/// A new secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RotatedSecret {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The new `whsec_…` secret. Shown only in this answer; never logged
    /// nor returned again.
    pub secret: String,
}

/// Give a subscription a new signing secret, returned this once. During the
/// overlap (`previous_secret_expires_at`) each request carries two
/// signatures in `webhook-signature`, one per secret, so a receiver that
/// holds either verifies; after it, only the new secret signs.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    params(("id" = Uuid, Path, description = "subscription id"), RotateQuery),
    responses((status = 200, body = RotatedSecret), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `admin`"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "overlap_seconds out of range")))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<RotateQuery>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let overlap = match q.overlap_seconds {
        None => state.settings.webhooks.rotation_overlap,
        Some(s) if (0..=604_800).contains(&s) => std::time::Duration::from_secs(s as u64),
        Some(_) => {
            return Err(ApiError::invalid(
                "overlap_seconds",
                "must be between 0 and 604800 (7 days)",
            ))
        }
    };
    let rotated = webhook::rotate_secret(&state.pool, id, overlap).await?;
    // The secrets themselves are never logged.
    tracing::info!(subscription = %id, overlap_s = overlap.as_secs(), "webhook secret rotated");
    Ok(Json(RotatedSecret {
        subscription: rotated.subscription,
        secret: rotated.secret.expose().to_string(),
    }))
}
