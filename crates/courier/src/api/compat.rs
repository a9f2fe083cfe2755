//! The seed's `/whatsapp/...` routes, so the existing admin UI keeps working:
//! thin adapters over the `/v1` handlers that speak camelCase. The mapping is
//! documented in `docs/api.md`. Unlike `/v1`, these routes are lenient where
//! the UI sends whole objects: unknown body fields and query parameters are
//! ignored. Lists return every row (the UI does not page); account statuses
//! are shown in the seed's words (`status`), with Courier's own in
//! `courierStatus`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::{accounts, groups, login, messages, stats, AppState};

/// Renames object keys from snake_case to camelCase, recursively.
pub(crate) fn camel(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (to_camel(&k), camel(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(camel).collect()),
        other => other,
    }
}

fn to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Renames object keys from camelCase to snake_case (top level: request bodies).
pub(crate) fn snake(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut out = String::with_capacity(k.len() + 4);
                    for c in k.chars() {
                        if c.is_ascii_uppercase() {
                            out.push('_');
                            out.push(c.to_ascii_lowercase());
                        } else {
                            out.push(c);
                        }
                    }
                    (out, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The seed's account status words (what the admin UI shows) for a Courier
/// status: `inactive`, `warming`, `active`, `standby`, `banned`. A login in
/// progress is `warming`, as the seed set it when its QR appeared.
pub(crate) fn seed_status(courier: &str) -> &'static str {
    match courier {
        "active" => "active",
        "warming" | "starting" | "qr_pending" | "authenticating" => "warming",
        "standby" | "paused" => "standby",
        "banned" => "banned",
        // inactive, logged_out, failed, disconnected, retired, anything new
        _ => "inactive",
    }
}

/// An account view in the seed's words: camelCase, `status` a seed word,
/// Courier's status kept in `courierStatus`.
fn seed_account(v: Value) -> Value {
    let mut v = camel(v);
    if let Some(o) = v.as_object_mut() {
        if let Some(Value::String(st)) = o.get("status").cloned() {
            o.insert("courierStatus".into(), Value::String(st.clone()));
            o.insert("status".into(), Value::String(seed_status(&st).into()));
        }
    }
    v
}

/// Reads a seed body leniently: any JSON object (the UI sends whole
/// objects); `Content-Type` is not insisted on. An empty body is `{}`.
fn seed_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(Value::Null) => Ok(Value::Object(Default::default())),
        Ok(_) => Err(ApiError::BadRequest {
            field: None,
            detail: "the body must be a JSON object".into(),
        }),
        Err(e) => Err(ApiError::BadRequest {
            field: None,
            detail: e.to_string(),
        }),
    }
}

/// Parses a seed body into a `/v1` request type, ignoring the fields that
/// type does not know (the `/v1` types refuse them: `/v1` stays strict).
fn from_seed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    let mut v = snake(v);
    // Drop what serde names as unknown, one field at a time (bounded by the
    // number of keys).
    let keys = v.as_object().map_or(0, |o| o.len());
    for _ in 0..=keys {
        match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => return Ok(t),
            Err(e) => {
                let msg = e.to_string();
                let unknown = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                let removed = match (unknown, v.as_object_mut()) {
                    (Some(k), Some(o)) => o.remove(&k).is_some(),
                    _ => false,
                };
                if !removed {
                    break;
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| {
        let detail = e.to_string();
        let field = detail.split('`').nth(1).map(|f| {
            // Report the seed's own (camelCase) name.
            camel(Value::Object(
                [(f.to_string(), Value::Null)].into_iter().collect(),
            ))
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default()
        });
        ApiError::BadRequest { field, detail }
    })
}

fn json<T: serde::Serialize>(v: T) -> Json<Value> {
    Json(camel(serde_json::to_value(v).unwrap_or(Value::Null)))
}

/// The routes.
/// Error bodies of the seed routes name the field as the UI spells it
/// (`messageText`, not `message_text`): the handlers they share with `/v1`
/// name the `/v1` field.
async fn seed_field_names(resp: axum::response::Response) -> axum::response::Response {
    if !resp.status().is_client_error() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Error bodies are a few hundred bytes; anything else passes unread.
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return axum::response::Response::from_parts(parts, axum::body::Body::empty()),
    };
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) if o.get("field").is_some_and(Value::is_string) => {
            if let Some(Value::String(f)) = o.get_mut("field") {
                *f = to_camel(f);
            }
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            axum::body::Bytes::from(serde_json::to_vec(&o).unwrap_or_else(|_| bytes.to_vec()))
        }
        _ => bytes,
    };
    axum::response::Response::from_parts(parts, axum::body::Body::from(out))
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/whatsapp/accounts",
            get(list_accounts).post(create_account),
        )
        .route("/whatsapp/accounts/{id}", get(get_account))
        .route("/whatsapp/groups", get(list_groups))
        .route("/whatsapp/groups/{id}", get(get_group).put(update_group))
        .route("/whatsapp/stats", get(get_stats))
        .route(
            "/whatsapp/accounts/{id}/initialize",
            axum::routing::post(initialize),
        )
        .route(
            "/whatsapp/accounts/{id}/disconnect",
            axum::routing::post(disconnect),
        )
        .route("/whatsapp/accounts/{id}/qr", get(get_qr))
        .route(
            "/whatsapp/accounts/{id}/groups/discover",
            axum::routing::post(discover),
        )
        .route(
            "/whatsapp/groups/{id}/scrape-contacts",
            axum::routing::post(scrape),
        )
        .route("/whatsapp/messages", get(list_messages).post(send_message))
        .route("/whatsapp/messages/{id}", get(get_message))
        .route(
            "/whatsapp/messages/{id}/retry",
            axum::routing::post(retry_message),
        )
        .layer(axum::middleware::map_response(seed_field_names))
}

fn seed_accounts<T: serde::Serialize>(v: T) -> Json<Value> {
    match serde_json::to_value(v).unwrap_or(Value::Null) {
        Value::Array(a) => Json(Value::Array(a.into_iter().map(seed_account).collect())),
        other => Json(seed_account(other)),
    }
}

async fn list_accounts(state: State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(seed_accounts(accounts::list(state).await?.0))
}

async fn get_account(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(seed_accounts(accounts::get(state, id).await?.0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedCreateAccount {
    account_name: String,
    phone_number: Option<String>,
    timezone: Option<String>,
}

async fn create_account(
    state: State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: SeedCreateAccount = seed_typed(&body)?;
    let (status, account) = accounts::create(
        state,
        Json(accounts::CreateAccount {
            account_name: body.account_name,
            phone_number: body.phone_number.filter(|p| !p.trim().is_empty()),
            timezone: body.timezone,
        }),
    )
    .await?;
    Ok((status, seed_accounts(account.0)))
}

/// A seed body as a lenient camelCase type (unknown fields ignored).
fn seed_typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_value(seed_body(body)?).map_err(|e| {
        let detail = e.to_string();
        let field = detail.split('`').nth(1).map(str::to_string);
        ApiError::BadRequest { field, detail }
    })
}

/// Lists in the seed's shape: every row, read from the `/v1` list a page
/// of 500 at a time (the UI does not page, and must not lose rows past
/// the first page).
const PAGE: i64 = 500;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedGroupFilter {
    search: Option<String>,
    region: Option<String>,
    account_id: Option<Uuid>,
    tag: Option<String>,
}

async fn list_groups(
    State(state): State<AppState>,
    Query(f): Query<SeedGroupFilter>,
) -> Result<Json<Value>, ApiError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let filter = groups::GroupFilter {
            search: f.search.clone(),
            region: f.region.clone(),
            tag: f.tag.clone(),
            account_id: f.account_id,
            limit: Some(PAGE),
            after,
        };
        let page = groups::list(State(state.clone()), Query(filter)).await?.0;
        let full = page.len() as i64 == PAGE;
        after = page.last().map(|g| g.id);
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(json(all))
}

async fn get_group(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(json(groups::get(state, id).await?.0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedUpdateGroup {
    region: Option<String>,
    state: Option<String>,
    district: Option<String>,
    segment_tags: Option<Vec<String>>,
}

async fn update_group(
    state: State<AppState>,
    id: Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: SeedUpdateGroup = seed_typed(&body)?;
    let body = groups::UpdateGroup {
        region: b.region,
        state: b.state,
        district: b.district,
        segment_tags: b.segment_tags,
    };
    Ok(json(groups::update(state, id, Json(body)).await?.0))
}

/// `POST /whatsapp/messages`: the seed's body (`accountId`, `messageText`,
/// `channelType`, `targetGroupId`, …); answers with the (first) message.
async fn send_message(
    state: State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: messages::SendMessage = from_seed(seed_body(&body)?)?;
    let (status, out) = messages::create(state, Json(req)).await?;
    let mut list = out.0.messages;
    let first = if list.len() == 1 {
        serde_json::to_value(list.remove(0)).unwrap_or(Value::Null)
    } else {
        serde_json::to_value(list).unwrap_or(Value::Null)
    };
    Ok((status, Json(camel(first))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedMessageFilter {
    status: Option<String>,
    account_id: Option<Uuid>,
    campaign_id: Option<Uuid>,
}

async fn list_messages(
    State(state): State<AppState>,
    Query(f): Query<SeedMessageFilter>,
) -> Result<Json<Value>, ApiError> {
    // The UI's "all" filter sends an empty status.
    let status = f.status.filter(|s| !s.is_empty() && s != "all");
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let filter = messages::MessageFilter {
            status: status.clone(),
            account_id: f.account_id,
            campaign_id: f.campaign_id,
            limit: Some(PAGE),
            after,
        };
        let page = messages::list(State(state.clone()), Query(filter)).await?.0;
        let full = page.len() as i64 == PAGE;
        after = page.last().map(|m| m.id);
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(json(all))
}

async fn get_message(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(json(messages::get(state, id).await?.0))
}

async fn retry_message(
    state: State<AppState>,
    id: Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, m) = messages::retry(state, id).await?;
    Ok((status, json(m.0)))
}

/// How long `initialize` waits for the QR (or the session coming back
/// without one) before answering with what there is.
const INITIALIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The QR token as an SVG data URL the old UI puts in an `<img>`.
fn qr_data_url(token: &str) -> Option<String> {
    let svg = login::svg(token).ok()?;
    let encoded: String = svg
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b' '
            | b'='
            | b':'
            | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!("data:image/svg+xml;charset=utf-8,{encoded}"))
}

/// The login state in the seed's words, with the QR (`qrCode`, a data URL)
/// when one is shown.
fn seed_qr_state(id: Uuid, st: &login::QrState) -> Value {
    let mut v = serde_json::to_value(st).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("account_id".into(), Value::String(id.to_string()));
        o.insert("courier_status".into(), Value::String(st.status.clone()));
        o.insert(
            "status".into(),
            Value::String(seed_status(&st.status).into()),
        );
        o.insert(
            "qr_code".into(),
            st.qr_token
                .as_deref()
                .and_then(qr_data_url)
                .map_or(Value::Null, Value::String),
        );
        o.insert(
            "connected".into(),
            Value::Bool(matches!(st.status.as_str(), "active" | "warming")),
        );
    }
    camel(v)
}

/// `POST /whatsapp/accounts/:id/initialize`: starts the QR login and waits
/// (up to 20 s) for what the UI shows next: the QR (`qrCode`, a data URL,
/// with `qrToken` and `qrExpiresAt`), or the account connected without one
/// (a session that came back). Past the wait it answers with the state so
/// far; `GET /whatsapp/accounts/:id/qr` keeps serving the rotating QR. An
/// account already logged in answers 200 `connected: true`.
async fn initialize(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (code, job) = match login::login(State(state.clone()), Path(id)).await {
        Ok((code, job)) => (code, Some(job.0)),
        Err(ApiError::Conflict(msg)) => {
            let st = login::qr_state_of(&state, id).await?;
            if st.status == "active" || st.status == "warming" {
                (StatusCode::OK, None)
            } else {
                return Err(ApiError::Conflict(msg));
            }
        }
        Err(e) => return Err(e),
    };
    let deadline = tokio::time::Instant::now() + INITIALIZE_WAIT;
    let st = loop {
        let st = login::qr_state_of(&state, id).await?;
        let settled = st.qr_token.is_some()
            || matches!(
                st.status.as_str(),
                "active" | "warming" | "failed" | "banned" | "logged_out"
            );
        if job.is_none() || settled || tokio::time::Instant::now() >= deadline {
            break st;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut v = seed_qr_state(id, &st);
    if let Some(o) = v.as_object_mut() {
        o.insert("success".into(), Value::Bool(true));
        o.insert(
            "job".into(),
            job.map_or(Value::Null, |j| {
                camel(serde_json::to_value(j).unwrap_or(Value::Null))
            }),
        );
    }
    Ok((code, Json(v)))
}

/// `POST /whatsapp/accounts/:id/disconnect`: unlinks the device (see
/// `POST /v1/accounts/{id}/logout`) and answers in the seed's words.
async fn disconnect(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let st = login::logout(State(state), Path(id)).await?.0;
    let mut v = seed_qr_state(id, &st);
    if let Some(o) = v.as_object_mut() {
        o.insert("success".into(), Value::Bool(true));
    }
    Ok(Json(v))
}

/// The seed's QR endpoint: JSON with the token, its expiry, and the QR as an
/// SVG data URL (`qrCode`) the old UI can put in an `<img>`.
async fn get_qr(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let st = login::qr_state_of(&state, id).await?;
    Ok(Json(seed_qr_state(id, &st)))
}

async fn discover(
    state: State<AppState>,
    id: Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, job) = login::discover(state, id).await?;
    Ok((status, json(job.0)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedScrape {
    account_id: Option<Uuid>,
}

async fn scrape(
    state: State<AppState>,
    id: Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let seed: SeedScrape = seed_typed(&body)?;
    let body: axum::body::Bytes = match seed.account_id {
        Some(a) => serde_json::to_vec(&serde_json::json!({ "account_id": a }))
            .unwrap_or_default()
            .into(),
        None => axum::body::Bytes::new(),
    };
    let (status, job) = login::scrape(state, id, body).await?;
    Ok((status, json(job.0)))
}

async fn get_stats(state: State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(json(stats::get(state).await?.0))
}

#[cfg(test)]
mod tests {
    use super::camel;

    #[test]
    fn camel_cases_nested_keys() {
        let v = serde_json::json!({"phone_number": "1", "rate_limit_config": {"per_minute": 3}, "a": [{"b_c": 1}]});
        assert_eq!(
            camel(v),
            serde_json::json!({"phoneNumber": "1", "rateLimitConfig": {"perMinute": 3}, "a": [{"bC": 1}]})
        );
    }
}
