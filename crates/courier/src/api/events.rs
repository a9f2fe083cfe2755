//! `GET /v1/events`: the event log as Server-Sent Events
//! ([`crate::events::stream`]). Each event is `id: <position>`,
//! `event: <type>`, `data: <the webhook body>`; a client resumes with
//! `Last-Event-ID`. Comment lines keep idle streams open
//! (`webhooks.heartbeat`). Reading events needs scope `read` once tokens
//! have scopes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use super::AppState;
use crate::events::stream::{follow, Hub};
use crate::events::{Cursor, Event, EventType, Filter};

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Comma-separated event types (default: every type).
    #[param(
        pattern = r"^ *(((message\.(queued|sent|delivered|read|failed)|account\.(status_changed|qr_changed|paused|resumed)|schedule\.expanded)) *)?(, *(((message\.(queued|sent|delivered|read|failed)|account\.(status_changed|qr_changed|paused|resumed)|schedule\.expanded)) *)?)*$"
    )]
    pub types: Option<String>,
    /// Only events of this account.
    pub account_id: Option<Uuid>,
    /// Only events of this campaign.
    pub campaign_id: Option<Uuid>,
    /// Resume after this event position (as `Last-Event-ID`; the header
    /// wins). 0: from the oldest event the log holds.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

pub(crate) fn parse_types(types: Option<&str>) -> Result<Vec<EventType>, ApiError> {
    if let Some(t) = types {
        super::contract::check("types", super::contract::EVENT_TYPES, t)?;
    }
    types
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| EventType::parse(t).map_err(|e| ApiError::invalid("types", e)))
        .collect()
}

/// Where a stream starts, and whether the client must be told it lost its
/// place.
pub(crate) struct Start {
    /// The stream continues after this.
    pub from: Cursor,
    /// The `Last-Event-ID` (or `?after=`) the log does not hold.
    pub lost: Option<i64>,
}

/// Where a stream starts: after `Last-Event-ID` (or `?after=`), else at the
/// log's current end. An id the log does not hold (pruned after
/// `webhooks.events_retain`, or never an event) cannot be placed: the
/// stream starts at the log's end and says so first (`event: reset`).
async fn start(
    state: &AppState,
    headers: &HeaderMap,
    after: Option<i64>,
) -> Result<Start, ApiError> {
    if after.is_some_and(|p| p < 0) {
        return Err(ApiError::invalid(
            "after",
            "must be an event position (a whole number)",
        ));
    }
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID",
                        "must be an event position (a whole number)",
                    )
                })?,
        ),
        None => after,
    };
    let from = match last {
        Some(p) => crate::events::cursor_after(&state.pool, p).await?,
        None => Some(crate::events::head(&state.pool).await?),
    };
    Ok(match from {
        Some(from) => Start { from, lost: None },
        None => Start {
            from: crate::events::head(&state.pool).await?,
            lost: last,
        },
    })
}

/// The first frame of a stream whose `Last-Event-ID` the log does not
/// hold. Its `id` is the event the stream continues after (so a browser
/// that reconnects resumes from here, not from the lost id again).
fn reset(lost: i64, from: Cursor) -> SseEvent {
    SseEvent::default()
        .id(from.position.to_string())
        .event("reset")
        .data(
            serde_json::json!({
                "type": "reset",
                "last_event_id": lost,
                "resumed_after": from.position,
                "reason": format!(
                    "evt_{lost} is not in the event log: it was pruned \
                     (webhooks.events_retain) or never was an event. Events after it may \
                     be missing from this stream: reload the state you follow, then carry \
                     on with the events that come next"
                ),
            })
            .to_string(),
        )
}

/// The process's hub, started at the first stream.
async fn hub(state: &AppState) -> Result<Hub, ApiError> {
    let pool = state.pool.clone();
    let poll = state.settings.webhooks.poll_interval;
    Ok(state
        .events
        .get_or_try_init(|| Hub::start(pool, poll))
        .await?
        .clone())
}

/// Counts a stream open while it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!(crate::metrics::EVENT_STREAMS).increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::EVENT_STREAMS).decrement(1.0);
    }
}

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.position.to_string())
        .event(e.kind.clone())
        .data(e.body().to_string())
}

/// The stream of events after `from` that pass `filter`, preceded by an
/// `event: reset` frame when the client's `Last-Event-ID` (`lost`) was not
/// in the log.
pub(crate) async fn sse(
    state: &AppState,
    from: Cursor,
    lost: Option<i64>,
    filter: Filter,
) -> Result<Response, ApiError> {
    let hub = hub(state).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Event>>(256);
    tokio::spawn(follow(hub, state.pool.clone(), from, filter, tx));
    let open = Open::new();
    let first = futures::stream::iter(lost.map(|p| Ok::<_, Infallible>(reset(p, from))));
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(first.chain(futures::stream::unfold(
            (rx, open),
            |(mut rx, open)| async move {
                let e = rx.recv().await?;
                Some((Ok(to_sse(&e)), (rx, open)))
            },
        )));
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.settings.webhooks.heartbeat)
                .text("heartbeat"),
        )
        .into_response())
}

/// Follow Courier's events live (Server-Sent Events): messages queued, sent,
/// delivered, read, failed; account status, QR, pauses; schedule expansions.
/// Resumable with `Last-Event-ID`; heartbeats as comment lines. An id the
/// log no longer holds (pruned after `webhooks.events_retain`) is answered
/// with an `event: reset` frame first, then the events from now on.
#[utoipa::path(get, path = "/v1/events", tag = "events", operation_id = "streamEvents",
    params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, description = "resume after this event position")),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "`id: <position>`, `event: <type>`, `data: {id, type, timestamp, version, data}`; first an `event: reset` frame (`data: {type, last_event_id, resumed_after, reason}`) when `Last-Event-ID` is no longer in the log"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the token lacks scope `read`"),
        (status = 422, body = ErrorBody, description = "unknown event type, bad Last-Event-ID")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filter = Filter {
        types: parse_types(q.types.as_deref())?,
        account_id: q.account_id,
        campaign_id: q.campaign_id,
    };
    let start = start(&state, &headers, q.after).await?;
    sse(&state, start.from, start.lost, filter).await
}
