//! The simulator's HTTP surface: the page (HTML, JS, CSS), the page's own API
//! under `/_page/api` (long-polled state, send, QR reload, "Use here",
//! participants) and the control API under `/_control`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::model::{AckTimingPatch, FaultsPatch, MessageView, Outgoing, ParticipantSpec, SimError};
use super::Shared;
use courier::browser::selectors::AckLevel;

type Sim = State<Arc<Shared>>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// A JSON error: `{"error": code, "message": text, "field": name?}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        let status = match &e {
            SimError::UnknownAccount(_)
            | SimError::UnknownChat(_)
            | SimError::UnknownMessage(_) => StatusCode::NOT_FOUND,
            SimError::AccountExists(_)
            | SimError::DuplicateId(_)
            | SimError::StaleToken(_)
            | SimError::NotReady(_) => StatusCode::CONFLICT,
            SimError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            SimError::NotLoggedIn => StatusCode::UNAUTHORIZED,
            SimError::Blocked => StatusCode::FORBIDDEN,
            SimError::Quota => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            field: e.field(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// `axum::Json`, with rejections (bad JSON, unknown fields, wrong types) as JSON 4xx.
pub(crate) struct Json<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(ApiError {
                status: match &rejection {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::BAD_REQUEST,
                },
                code: "bad_request",
                message: rejection.body_text(),
                field: None,
            }),
        }
    }
}

fn ok<T: Serialize>(v: T) -> Response {
    axum::Json(v).into_response()
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/send", get(index))
        .route("/_page/app.js", get(app_js))
        .route("/_page/app.css", get(app_css))
        .route("/_page/api/state", post(page_state))
        .route("/_page/api/send", post(page_send))
        .route("/_page/api/qr/reload", post(page_qr_reload))
        .route("/_page/api/takeover", post(page_takeover))
        .route("/_page/api/logout", post(page_logout))
        .route("/_page/api/participants", post(page_participants))
        .route("/_page/api/chat", post(page_chat))
        .route("/_page/api/exists", post(page_exists))
        .route("/_control/reset", post(control_reset))
        .route(
            "/_control/accounts",
            post(create_account).get(list_accounts),
        )
        .route("/_control/accounts/{id}", get(get_account))
        .route("/_control/accounts/{id}/qr", get(get_qr))
        .route("/_control/accounts/{id}/qr.svg", get(get_qr_svg))
        .route("/_control/accounts/{id}/scan", post(scan))
        .route("/_control/accounts/{id}/logout", post(logout))
        .route("/_control/accounts/{id}/faults", put(set_faults))
        .route("/_control/accounts/{id}/ack-timing", put(set_ack_timing))
        .route("/_control/accounts/{id}/chats", post(add_chat))
        .route("/_control/accounts/{id}/messages", get(account_messages))
        .route(
            "/_control/accounts/{id}/messages/{msg}/ack",
            put(set_message_ack),
        )
        .route("/_control/messages", get(all_messages))
        .route("/_control/contacts", post(add_contact))
        .route("/_control/groups", post(create_group))
        .route("/_control/groups/{id}/participants", post(add_participants))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no route {}", uri.path()),
        field: None,
    }
}

// ---------------------------------------------------------------- the page

#[derive(Debug, Deserialize)]
struct IndexQuery {
    account: Option<String>,
}

async fn index(State(sim): Sim, Query(q): Query<IndexQuery>) -> Response {
    if let Some(a) = &q.account {
        let latency = sim.world.lock().map(|w| w.latency(a)).unwrap_or_default();
        tokio::time::sleep(latency).await;
    }
    let config = json!({
        "selectors": sim.selectors,
        "waweb": sim.names.names_json(),
        "variant": match sim.dom { super::DomVariant::Standard => "standard", super::DomVariant::Alternate => "alternate" },
    });
    // `</` cannot end the script element early once escaped.
    let config = config.to_string().replace("</", "<\\/");
    Html(INDEX_HTML.replace("/*SIM_CONFIG*/null", &config)).into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

/// Who is asking: every page call names its account, its page-load id and
/// the session token it holds (if any).
#[derive(Debug, Deserialize)]
struct PageAuth {
    account: String,
    client: String,
    #[serde(default)]
    session: Option<String>,
}

impl PageAuth {
    fn check(&self) -> Result<(), ApiError> {
        if self.client.is_empty() || self.client.len() > 100 {
            return Err(SimError::Invalid {
                field: "client",
                problem: "must be 1 to 100 characters".into(),
            }
            .into());
        }
        Ok(())
    }
}

async fn page_latency(sim: &Shared, account: &str) {
    let latency = sim
        .world
        .lock()
        .map(|w| w.latency(account))
        .unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

#[derive(Debug, Deserialize)]
struct StateReq {
    #[serde(flatten)]
    auth: PageAuth,
    #[serde(default)]
    chat: Option<String>,
    #[serde(default)]
    etag: Option<String>,
}

/// Long-poll: answers as soon as this page's view differs from `etag`, or
/// after the poll timeout with the same view.
async fn page_state(State(sim): Sim, Json(req): Json<StateReq>) -> Result<Response, ApiError> {
    req.auth.check()?;
    page_latency(&sim, &req.auth.account).await;
    let give_up = Instant::now() + sim.poll_timeout;
    let mut rx = sim.changes.subscribe();
    loop {
        rx.borrow_and_update();
        let now = Instant::now();
        let (view, next) = {
            let mut w = sim.world.lock().map_err(|_| poisoned())?;
            w.page_view(
                &req.auth.account,
                &req.auth.client,
                req.auth.session.as_deref(),
                req.chat.as_deref(),
                now,
            )?
        };
        let view = serde_json::to_value(&view).unwrap_or(Value::Null);
        let etag = etag_of(&view);
        if req.etag.as_deref() != Some(etag.as_str()) || now >= give_up {
            return Ok(ok(json!({ "etag": etag, "view": view })));
        }
        let wake = next.map_or(give_up, |n| n.min(give_up));
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(ok(json!({ "etag": etag, "view": view }))) },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

fn etag_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn poisoned() -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: "simulator state lock poisoned".into(),
        field: None,
    }
}

#[derive(Debug, Deserialize)]
struct SendReq {
    #[serde(flatten)]
    auth: PageAuth,
    message: Outgoing,
}

async fn page_send(State(sim): Sim, Json(req): Json<SendReq>) -> Result<Response, ApiError> {
    req.auth.check()?;
    page_latency(&sim, &req.auth.account).await;
    let r = {
        let mut w = sim.world.lock().map_err(|_| poisoned())?;
        w.send(
            &req.auth.account,
            &req.auth.client,
            req.auth.session.as_deref(),
            req.message,
            Instant::now(),
        )
    };
    // A refused send is recorded too (the page shows it failed): wake pollers either way.
    sim.changed();
    let outcome = r?;
    tracing::debug!(account = %req.auth.account, id = %outcome.message.id, "sim received message");
    Ok(ok(outcome))
}

async fn page_qr_reload(State(sim): Sim, Json(auth): Json<PageAuth>) -> Result<Response, ApiError> {
    auth.check()?;
    page_latency(&sim, &auth.account).await;
    sim.world.lock().map_err(|_| poisoned())?.restart_pairing(
        &auth.account,
        &auth.client,
        Instant::now(),
    )?;
    sim.changed();
    Ok(ok(json!({ "ok": true })))
}

async fn page_takeover(State(sim): Sim, Json(auth): Json<PageAuth>) -> Result<Response, ApiError> {
    auth.check()?;
    page_latency(&sim, &auth.account).await;
    sim.world
        .lock()
        .map_err(|_| poisoned())?
        .take_over(&auth.account)?;
    sim.changed();
    Ok(ok(json!({ "ok": true })))
}

/// The page's own logout (`Socket.logout()`): the device is unlinked, as
/// the phone's linked-devices list would show; its pages go to the QR.
async fn page_logout(State(sim): Sim, Json(auth): Json<PageAuth>) -> Result<Response, ApiError> {
    auth.check()?;
    page_latency(&sim, &auth.account).await;
    sim.world
        .lock()
        .map_err(|_| poisoned())?
        .logout(&auth.account)?;
    sim.changed();
    Ok(ok(json!({ "ok": true })))
}

#[derive(Debug, Deserialize)]
struct ParticipantsReq {
    #[serde(flatten)]
    auth: PageAuth,
    chat: String,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    20
}

async fn page_participants(
    State(sim): Sim,
    Json(req): Json<ParticipantsReq>,
) -> Result<Response, ApiError> {
    req.auth.check()?;
    page_latency(&sim, &req.auth.account).await;
    let w = sim.world.lock().map_err(|_| poisoned())?;
    w.account_view(&req.auth.account)?;
    let (total, page) = w.participants(&req.chat, req.offset, req.limit)?;
    Ok(ok(json!({ "total": total, "participants": page })))
}

#[derive(Debug, Deserialize)]
struct ChatReq {
    #[serde(flatten)]
    auth: PageAuth,
    chat: String,
}

async fn page_chat(State(sim): Sim, Json(req): Json<ChatReq>) -> Result<Response, ApiError> {
    req.auth.check()?;
    page_latency(&sim, &req.auth.account).await;
    let w = sim.world.lock().map_err(|_| poisoned())?;
    w.account_view(&req.auth.account)?;
    Ok(ok(w.chat_view(&req.chat)?))
}

#[derive(Debug, Deserialize)]
struct ExistsReq {
    #[serde(flatten)]
    auth: PageAuth,
    id: String,
}

/// The exists query (`queryWidExists`): whether a number is registered.
async fn page_exists(State(sim): Sim, Json(req): Json<ExistsReq>) -> Result<Response, ApiError> {
    req.auth.check()?;
    page_latency(&sim, &req.auth.account).await;
    let mut w = sim.world.lock().map_err(|_| poisoned())?;
    Ok(ok(
        json!({ "exists": w.query_exists(&req.auth.account, &req.id)? }),
    ))
}

// ---------------------------------------------------------------- control

/// Runs `f` on the world under the lock, wakes pages, and answers JSON.
fn mutate<T: Serialize>(
    sim: &Shared,
    f: impl FnOnce(&mut super::model::World) -> Result<T, SimError>,
) -> Result<Response, ApiError> {
    let r = {
        let mut w = sim.world.lock().map_err(|_| poisoned())?;
        f(&mut w)?
    };
    sim.changed();
    Ok(ok(r))
}

async fn control_reset(State(sim): Sim) -> Result<Response, ApiError> {
    mutate(&sim, |w| {
        w.reset();
        Ok(json!({ "ok": true }))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn create_account(
    State(sim): Sim,
    Json(req): Json<CreateAccount>,
) -> Result<Response, ApiError> {
    let r = mutate(&sim, |w| {
        w.create_account(req.id, req.phone.as_deref(), req.name)
    })?;
    Ok((StatusCode::CREATED, r).into_response())
}

async fn list_accounts(State(sim): Sim) -> Result<Response, ApiError> {
    let w = sim.world.lock().map_err(|_| poisoned())?;
    Ok(ok(json!({ "accounts": w.accounts() })))
}

async fn get_account(State(sim): Sim, Path(id): Path<String>) -> Result<Response, ApiError> {
    let w = sim.world.lock().map_err(|_| poisoned())?;
    Ok(ok(w.account_view(&id)?))
}

async fn get_qr(State(sim): Sim, Path(id): Path<String>) -> Result<Response, ApiError> {
    let w = sim.world.lock().map_err(|_| poisoned())?;
    let (token, index, left) = w.current_qr(&id, Instant::now())?;
    Ok(ok(json!({
        "token": token,
        "index": index,
        "expires_in_ms": left.as_millis() as u64,
    })))
}

async fn get_qr_svg(State(sim): Sim, Path(id): Path<String>) -> Result<Response, ApiError> {
    let token = {
        let w = sim.world.lock().map_err(|_| poisoned())?;
        w.current_qr(&id, Instant::now())?.0
    };
    let svg = qrcode::QrCode::new(token.as_bytes())
        .map(|c| {
            c.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(256, 256)
                .build()
        })
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("cannot draw QR: {e}"),
            field: None,
        })?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanReq {
    token: String,
    phone: String,
}

async fn scan(
    State(sim): Sim,
    Path(id): Path<String>,
    Json(req): Json<ScanReq>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| {
        w.scan(&id, &req.token, &req.phone, Instant::now())
    })
}

async fn logout(State(sim): Sim, Path(id): Path<String>) -> Result<Response, ApiError> {
    mutate(&sim, |w| w.logout(&id))
}

async fn set_faults(
    State(sim): Sim,
    Path(id): Path<String>,
    Json(req): Json<FaultsPatch>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| w.set_faults(&id, req))
}

async fn set_ack_timing(
    State(sim): Sim,
    Path(id): Path<String>,
    Json(req): Json<AckTimingPatch>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| w.set_ack_timing(&id, req))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddChat {
    chat: String,
}

async fn add_chat(
    State(sim): Sim,
    Path(id): Path<String>,
    Json(req): Json<AddChat>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| w.add_chat(&id, &req.chat))
}

fn messages_json(ok_: Vec<(String, MessageView)>, refused: Vec<(String, MessageView)>) -> Value {
    let list = |v: Vec<(String, MessageView)>| -> Vec<Value> {
        v.into_iter()
            .map(|(account, m)| {
                let mut j = serde_json::to_value(m).unwrap_or(Value::Null);
                j["account"] = json!(account);
                j
            })
            .collect()
    };
    json!({ "count": ok_.len(), "messages": list(ok_), "refused": list(refused) })
}

async fn account_messages(State(sim): Sim, Path(id): Path<String>) -> Result<Response, ApiError> {
    let w = sim.world.lock().map_err(|_| poisoned())?;
    let (m, r) = w.messages(Some(&id), Instant::now())?;
    Ok(ok(messages_json(m, r)))
}

async fn all_messages(State(sim): Sim) -> Result<Response, ApiError> {
    let w = sim.world.lock().map_err(|_| poisoned())?;
    let (m, r) = w.messages(None, Instant::now())?;
    Ok(ok(messages_json(m, r)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopReq {
    stop: AckLevel,
}

async fn set_message_ack(
    State(sim): Sim,
    Path((id, msg)): Path<(String, String)>,
    Json(req): Json<StopReq>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| {
        w.set_message_stop(&id, &msg, req.stop, Instant::now())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddContact {
    phone: String,
    #[serde(default)]
    name: Option<String>,
    /// Accounts whose chat list gets this contact.
    #[serde(default)]
    accounts: Vec<String>,
    /// `false`: the number is not registered on WhatsApp (the exists query
    /// says so, and sends to it are refused).
    #[serde(default)]
    on_whatsapp: Option<bool>,
}

async fn add_contact(State(sim): Sim, Json(req): Json<AddContact>) -> Result<Response, ApiError> {
    mutate(&sim, |w| {
        for a in &req.accounts {
            w.account_view(a)?;
        }
        let id = w.add_contact(&req.phone, req.name)?;
        if let Some(on) = req.on_whatsapp {
            w.set_registered(&req.phone, on)?;
        }
        for a in &req.accounts {
            w.add_chat(a, &id)?;
        }
        Ok(json!({ "id": id }))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    participants: Vec<ParticipantSpec>,
    /// Accounts that are members (the group shows in their chat list).
    #[serde(default)]
    accounts: Vec<String>,
}

async fn create_group(State(sim): Sim, Json(req): Json<CreateGroup>) -> Result<Response, ApiError> {
    let r = mutate(&sim, |w| {
        for a in &req.accounts {
            w.account_view(a)?;
        }
        let id = w.create_group(req.id.as_deref(), req.name, req.participants)?;
        for a in &req.accounts {
            w.add_chat(a, &id)?;
        }
        let (total, _) = w.participants(&id, 0, 0)?;
        Ok(json!({ "id": id, "participants": total }))
    })?;
    Ok((StatusCode::CREATED, r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddParticipants {
    participants: Vec<ParticipantSpec>,
}

async fn add_participants(
    State(sim): Sim,
    Path(id): Path<String>,
    Json(req): Json<AddParticipants>,
) -> Result<Response, ApiError> {
    mutate(&sim, |w| {
        let total = w.add_participants(&id, req.participants)?;
        Ok(json!({ "id": id, "participants": total }))
    })
}

#[cfg(test)]
mod tests {
    use super::APP_JS;
    use courier::browser::waweb::{referenced_keys, WaWeb};

    /// The simulator serves only modules `config/wa-web.toml` names: its page
    /// defines modules by the file's keys (and `define` refuses any other at
    /// load), and spells no module name itself.
    #[test]
    fn the_simulator_exposes_only_modules_from_the_names_file() {
        let names = WaWeb::builtin();
        let defined: Vec<String> = referenced_keys(APP_JS)
            .into_iter()
            .filter(|(section, _)| *section == "modules")
            .map(|(_, k)| k)
            .collect();
        assert!(
            defined.len() >= 10,
            "the scan sees the definitions: {defined:?}"
        );
        for k in &defined {
            assert!(
                names.modules.contains_key(k),
                "the simulator defines module `{k}`, which config/wa-web.toml does not list"
            );
        }
        for k in names.modules.keys() {
            assert!(
                defined.contains(k),
                "the simulator lacks module `{k}` of the file"
            );
        }
        assert!(!APP_JS.contains("WAWeb"), "app.js spells a module name");
    }
}
