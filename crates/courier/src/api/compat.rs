//! The seed's `/whatsapp/...` routes, so the existing admin UI keeps working:
//! thin adapters over the `/v1` handlers that speak camelCase. The mapping is
//! documented in `docs/api.md`.

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

fn from_seed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(snake(v)).map_err(|e| {
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
}

async fn list_accounts(state: State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(json(accounts::list(state).await?.0))
}

async fn get_account(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(json(accounts::get(state, id).await?.0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedCreateAccount {
    account_name: String,
    phone_number: Option<String>,
    timezone: Option<String>,
}

async fn create_account(
    state: State<AppState>,
    Json(body): Json<SeedCreateAccount>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, account) = accounts::create(
        state,
        Json(accounts::CreateAccount {
            account_name: body.account_name,
            phone_number: body.phone_number,
            timezone: body.timezone,
        }),
    )
    .await?;
    Ok((status, json(account.0)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedGroupFilter {
    search: Option<String>,
    region: Option<String>,
    account_id: Option<Uuid>,
}

async fn list_groups(
    state: State<AppState>,
    Query(f): Query<SeedGroupFilter>,
) -> Result<Json<Value>, ApiError> {
    let filter = groups::GroupFilter {
        search: f.search,
        region: f.region,
        tag: None,
        account_id: f.account_id,
        limit: Some(500),
        after: None,
    };
    Ok(json(groups::list(state, Query(filter)).await?.0))
}

async fn get_group(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(json(groups::get(state, id).await?.0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedUpdateGroup {
    region: Option<String>,
    state: Option<String>,
    district: Option<String>,
    segment_tags: Option<Vec<String>>,
}

async fn update_group(
    state: State<AppState>,
    id: Path<Uuid>,
    Json(b): Json<SeedUpdateGroup>,
) -> Result<Json<Value>, ApiError> {
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
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: messages::SendMessage = from_seed(body)?;
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedMessageFilter {
    status: Option<String>,
    account_id: Option<Uuid>,
    campaign_id: Option<Uuid>,
}

async fn list_messages(
    state: State<AppState>,
    Query(f): Query<SeedMessageFilter>,
) -> Result<Json<Value>, ApiError> {
    let filter = messages::MessageFilter {
        status: f.status,
        account_id: f.account_id,
        campaign_id: f.campaign_id,
        limit: Some(500),
        after: None,
    };
    Ok(json(messages::list(state, Query(filter)).await?.0))
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

async fn initialize(
    state: State<AppState>,
    id: Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, job) = login::login(state, id).await?;
    Ok((status, json(job.0)))
}

async fn disconnect(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    Ok(json(login::logout(state, id).await?.0))
}

/// The seed's QR endpoint: JSON with the token, its expiry, and the QR as an
/// SVG data URL (`qrCode`) the old UI can put in an `<img>`.
async fn get_qr(state: State<AppState>, id: Path<Uuid>) -> Result<Json<Value>, ApiError> {
    let resp = login::qr(state, id, axum::http::HeaderMap::new()).await?;
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(token) = v.get("qr_token").and_then(Value::as_str) {
        let svg = qrcode::QrCode::new(token.as_bytes())
            .map(|c| c.render::<qrcode::render::svg::Color<'_>>().build())
            .unwrap_or_default();
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
        v["qr_code"] = Value::String(format!("data:image/svg+xml;charset=utf-8,{encoded}"));
    }
    Ok(Json(camel(v)))
}

async fn discover(
    state: State<AppState>,
    id: Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, job) = login::discover(state, id).await?;
    Ok((status, json(job.0)))
}

async fn scrape(
    state: State<AppState>,
    id: Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        body
    } else {
        let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            field: None,
            detail: e.to_string(),
        })?;
        serde_json::to_vec(&snake(v)).unwrap_or_default().into()
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
