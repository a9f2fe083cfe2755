//! Logging accounts in: start the QR flow, fetch the current QR (SVG, PNG or
//! JSON), a tiny self-refreshing login page for people (opened with a signed
//! link, see `access::link`), and disconnect. Also
//! the group discovery and scrape triggers, which enqueue browser jobs.
//!
//! The browser layer drives the page and writes `qr_token`/`qr_expires_at` on
//! every rotation; this module only reads them, so any API replica can serve
//! the QR of an account driven by any worker.

use axum::extract::State;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use courier_jobs::discover::DiscoverJob;
use courier_jobs::maintenance::LoginJob;
use courier_jobs::scrape::ScrapeJob;

use super::auth::{check_link, LinkQuery};
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::jobs::JobView;
use super::AppState;
use crate::queue::{self, NewJob};

/// The account's login state, as the QR endpoint and the login page show it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct QrState {
    /// Account status (`qr_pending` while a QR is shown).
    pub status: String,
    /// Why it is in that status.
    pub status_reason: Option<String>,
    /// The current QR token (the `data-ref` value), while one is valid.
    pub qr_token: Option<String>,
    /// When the token stops being valid.
    pub qr_expires_at: Option<DateTime<Utc>>,
    /// The number, once logged in.
    pub phone_number: Option<String>,
}

/// The account's login state (the seed's QR and initialize answers).
pub(crate) async fn qr_state_of(state: &AppState, id: Uuid) -> Result<QrState, ApiError> {
    qr_state(state, id).await
}

async fn qr_state(state: &AppState, id: Uuid) -> Result<QrState, ApiError> {
    sqlx::query_as(
        "SELECT status, status_reason, \
                CASE WHEN qr_expires_at > now() THEN qr_token END AS qr_token, \
                CASE WHEN qr_expires_at > now() THEN qr_expires_at END AS qr_expires_at, \
                phone_number FROM mkt_wap_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("account"))
}

/// Enqueues `job` unless an unfinished job of the same kind exists for the
/// account; returns (job, created).
async fn enqueue_once(state: &AppState, job: NewJob) -> Result<(queue::Job, bool), ApiError> {
    let existing: Option<queue::Job> = sqlx::query_as(
        "SELECT * FROM queue_jobs WHERE account_id = $1 AND kind = $2 AND payload = $3 \
         AND state IN ('available', 'scheduled', 'running', 'retryable') ORDER BY id LIMIT 1",
    )
    .bind(job.account_id)
    .bind(job.kind.as_str())
    .bind(&job.payload)
    .fetch_optional(&state.pool)
    .await?;
    if let Some(j) = existing {
        return Ok((j, false));
    }
    let e = queue::enqueue(&state.pool, &job)
        .await
        .map_err(ApiError::from)?;
    metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => job.kind.as_str()).increment(1);
    let j = queue::get_job(&state.pool, e.id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound("job"))?;
    Ok((j, true))
}

async fn account_status(state: &AppState, id: Uuid) -> Result<String, ApiError> {
    sqlx::query_scalar("SELECT status FROM mkt_wap_accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("account"))
}

/// Start the QR login flow (enqueues a `login` job; a second call while one is
/// pending returns it).
#[utoipa::path(post, path = "/v1/accounts/{id}/login", tag = "accounts", operation_id = "loginAccount",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 202, body = JobView, description = "A login job was enqueued"),
        (status = 200, body = JobView, description = "A login is already under way"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The account is banned or already logged in")))]
pub async fn login(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    match account_status(&state, id).await?.as_str() {
        "banned" => {
            return Err(ApiError::Conflict(
                "the account is banned by WhatsApp; it cannot log in".into(),
            ))
        }
        "active" => {
            return Err(ApiError::Conflict(
                "the account is already logged in".into(),
            ))
        }
        "retired" => {
            return Err(ApiError::Conflict(
                "the account is retired; it cannot log in".into(),
            ))
        }
        _ => {}
    }
    let job = NewJob::new(id, &LoginJob { account_id: id })
        .map_err(ApiError::from)?
        .priority(0);
    let (j, created) = enqueue_once(&state, job).await?;
    Ok((
        if created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        Json(j.into()),
    ))
}

/// Disconnect: the account stops sending and must log in again (status
/// `disconnected`, which raises no alert: a logout WhatsApp did is
/// `logged_out`); its queued sends move to other accounts (nothing is lost).
/// The device is unlinked too: a `logout` job logs out in WhatsApp Web
/// through the account's browser session, then deletes the profile; the
/// stored snapshot is cleared at once. The next login shows a QR.
#[utoipa::path(post, path = "/v1/accounts/{id}/logout", tag = "accounts", operation_id = "logoutAccount",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, body = QrState, description = "Disconnected (the unlink runs as a `logout` job)"),
        (status = 404, body = ErrorBody, description = "No such account")))]
pub async fn logout(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<QrState>, ApiError> {
    let status = account_status(&state, id).await?;
    crate::account::session::disconnect(&state.pool, id).await?;
    if status != "retired" {
        // Ahead of any login enqueued after it (priority), so a new QR
        // never shows on the profile about to be deleted.
        let job = NewJob::new(id, &courier_jobs::maintenance::LogoutJob { account_id: id })
            .map_err(ApiError::from)?
            .priority(-1000);
        enqueue_once(&state, job).await?;
    }
    qr_state(&state, id).await.map(Json)
}

fn qr_code(token: &str) -> Result<qrcode::QrCode, ApiError> {
    qrcode::QrCode::new(token.as_bytes())
        .map_err(|e| ApiError::Conflict(format!("the QR token cannot be drawn: {e}")))
}

/// The QR token as an SVG image; a token too long to encode is a 409.
pub fn svg(token: &str) -> Result<String, ApiError> {
    Ok(qr_code(token)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(264, 264)
        .quiet_zone(true)
        .build())
}

/// The QR token as a PNG image; a token too long to encode is a 409.
pub fn png(token: &str) -> Result<Vec<u8>, ApiError> {
    let img = qr_code(token)?
        .render::<image::Luma<u8>>()
        .min_dimensions(264, 264)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ApiError::Conflict(format!("cannot encode PNG: {e}")))?;
    Ok(out.into_inner())
}

/// The current QR: `Accept: image/svg+xml` → SVG, `image/png` → PNG, anything
/// else → JSON with the token and its expiry. Images are 404 when no QR is
/// valid right now.
#[utoipa::path(get, path = "/v1/accounts/{id}/qr", tag = "accounts", operation_id = "getAccountQr",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 200, description = "The login state as JSON, or the QR as SVG or PNG by `Accept`",
            content((QrState = "application/json"), (String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 404, body = ErrorBody, description = "No such account, or (for an image) no valid QR right now"),
        (status = 409, body = ErrorBody, description = "The QR token cannot be drawn")))]
pub async fn qr(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = qr_state(&state, id).await?;
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let image = accept.contains("image/svg") || accept.contains("image/png");
    if !image {
        return Ok(Json(st).into_response());
    }
    let token = st.qr_token.ok_or(ApiError::NotFound("current QR code"))?;
    let no_store = (CACHE_CONTROL, "no-store");
    if accept.contains("image/svg") {
        Ok(([(CONTENT_TYPE, "image/svg+xml"), no_store], svg(&token)?).into_response())
    } else {
        Ok(([(CONTENT_TYPE, "image/png"), no_store], png(&token)?).into_response())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What keeps the login page live: the page follows its account's events
/// (`login/events`, same query string, so the same authentication as the
/// page) and reloads when the QR or the status changes. Without scripts, or
/// when the stream fails, it reloads every 3 s as before.
const LIVE: &str = r#"<noscript><meta http-equiv="refresh" content="3"></noscript><script>
(function(){var s=new EventSource(location.pathname+"/events"+location.search);
["account.status_changed","account.qr_changed","account.paused","account.resumed"].forEach(function(t){s.addEventListener(t,function(){s.close();location.reload();});});
s.onerror=function(){s.close();setTimeout(function(){location.reload();},3000);};})();
</script>"#;

/// `GET /ui/accounts/{id}/login/events?expires=…&sig=…`: the login page's
/// live feed, the account's status and QR events as Server-Sent Events,
/// authenticated like the page itself (the same signed link).
pub(crate) async fn login_events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    check_link(&state, id, &link).await?;
    use crate::events::{EventType, Filter};
    let filter = Filter {
        types: vec![
            EventType::AccountStatusChanged,
            EventType::AccountQrChanged,
            EventType::AccountPaused,
            EventType::AccountResumed,
        ],
        account_id: Some(id),
        campaign_id: None,
    };
    let from = crate::events::head(&state.pool).await?;
    super::events::sse(&state, from, None, filter).await
}

/// The page's own links keep the signed link's query; the page is never
/// cached, and sends no referrer (its URL carries the signature).
fn page_headers() -> [(axum::http::HeaderName, &'static str); 2] {
    [
        (CACHE_CONTROL, "no-store"),
        (axum::http::header::REFERRER_POLICY, "no-referrer"),
    ]
}

/// `GET /ui/accounts/{id}/login?expires=…&sig=…`: the live QR and status,
/// reloaded when the account's events say it changed (every 3 s without
/// scripts), "connected as +<number>" when done, and a
/// button that starts a login when none is under way. Opened with a signed
/// link (`POST /v1/accounts/{id}/login-link`), never with an API token.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    check_link(&state, id, &link).await?;
    let query = link.to_query();
    let st = qr_state(&state, id).await?;
    let name: String =
        sqlx::query_scalar("SELECT account_name FROM mkt_wap_accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
    let (body, refresh) = match (st.status.as_str(), &st.qr_token, &st.phone_number) {
        ("active" | "warming" | "standby", _, Some(phone)) => (
            format!(
                r#"<p class="ok" id="status">Connected as +{}</p>"#,
                escape(phone)
            ),
            false,
        ),
        (_, Some(token), _) => (
            format!(
                r#"<div id="qr">{}</div><p id="status">Scan this code with WhatsApp on the phone: Settings → Linked devices → Link a device.</p><p class="muted">Code valid until {}</p>"#,
                svg(token)?,
                st.qr_expires_at
                    .map(|t| t.format("%H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            ),
            true,
        ),
        (status, None, _) => (
            format!(
                r#"<p id="status">Status: {}{}</p>{}"#,
                escape(status),
                st.status_reason
                    .as_deref()
                    .map(|r| format!(" ({})", escape(r)))
                    .unwrap_or_default(),
                if matches!(status, "banned" | "active") {
                    String::new()
                } else {
                    format!(
                        r#"<p class="muted">Waiting for a QR code…</p><form method="post" action="/ui/accounts/{id}/login/start?{}"><button id="start" type="submit">Start login</button></form>"#,
                        escape(&query)
                    )
                }
            ),
            !matches!(status, "banned"),
        ),
    };
    let meta = if refresh { LIVE } else { "" };
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">{meta}<title>Log in {name}</title>
<style>body{{font-family:sans-serif;max-width:420px;margin:40px auto;text-align:center}}#qr svg{{width:264px;height:264px}}.ok{{color:#128c7e;font-size:1.4em}}.muted{{color:#777}}</style>
</head><body><h1>{name}</h1>{body}<p class="muted">This link works until {until}.</p></body></html>"#,
        name = escape(&name),
        until = link
            .expires_at()
            .map(|t| t.format("%H:%M:%S UTC").to_string())
            .unwrap_or_default(),
    );
    Ok((page_headers(), Html(html)).into_response())
}

/// `POST /ui/accounts/{id}/login/start?expires=…&sig=…`: the page's "Start
/// login" button. Starts the QR flow with the link's authority (this account
/// only), then back to the page (303), which shows the outcome.
pub(crate) async fn login_page_start(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    check_link(&state, id, &link).await?;
    match login(State(state), Path(id)).await {
        // Banned or already logged in: the page says so.
        Ok(_) | Err(ApiError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    let to = format!("/ui/accounts/{id}/login?{}", link.to_query());
    Ok((
        StatusCode::SEE_OTHER,
        page_headers(),
        [(axum::http::header::LOCATION, to)],
    )
        .into_response())
}

/// Discover the account's groups (enqueues a `discover` job).
#[utoipa::path(post, path = "/v1/accounts/{id}/groups/discover", tag = "groups", operation_id = "discoverGroups",
    params(("id" = Uuid, Path, description = "account id")),
    responses((status = 202, body = JobView, description = "A discover job was enqueued"),
        (status = 200, body = JobView, description = "A discover job is already pending"),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The account is banned")))]
pub async fn discover(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    if account_status(&state, id).await? == "banned" {
        return Err(ApiError::Conflict("the account is banned".into()));
    }
    let job = NewJob::new(id, &DiscoverJob { account_id: id }).map_err(ApiError::from)?;
    let (j, created) = enqueue_once(&state, job).await?;
    Ok((
        if created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        Json(j.into()),
    ))
}

/// Body of `POST /v1/groups/{id}/scrape` (optional).
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ScrapeRequest {
    /// The account that reads the group (default: a member account, preferring an active one).
    pub account_id: Option<Uuid>,
}

/// Scrape a group's participants into contacts (enqueues a `scrape` job).
#[utoipa::path(post, path = "/v1/groups/{id}/scrape", tag = "groups", operation_id = "scrapeGroup",
    params(("id" = Uuid, Path, description = "group id")),
    request_body(content = Option<ScrapeRequest>, description = "Optional: the account that reads the group"),
    responses((status = 202, body = JobView, description = "A scrape job was enqueued"),
        (status = 200, body = JobView, description = "A scrape job is already pending"),
        (status = 404, body = ErrorBody, description = "No such group"),
        (status = 409, body = ErrorBody, description = "The account is not a member of the group, or no account can read it")))]
pub async fn scrape(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    // The body is optional: empty means "pick a member account".
    let req: ScrapeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ScrapeRequest::default()
    } else {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if !v.is_null() {
                super::extract::objects_only(&v)?;
            }
        }
        serde_json::from_slice::<Option<ScrapeRequest>>(&body)
            .map_err(|e| ApiError::BadRequest {
                field: None,
                detail: e.to_string(),
            })?
            .unwrap_or_default()
    };
    let members: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT a.id, a.status FROM mkt_wap_accounts a \
         WHERE a.id IN (SELECT account_id FROM mkt_wap_account_groups WHERE group_id = $1 \
                        UNION SELECT account_id FROM mkt_wap_groups WHERE id = $1 AND account_id IS NOT NULL) \
         ORDER BY (a.status = 'active') DESC, a.health_score DESC, a.id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mkt_wap_groups WHERE id = $1)")
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::NotFound("group"));
    }
    let account = match req.account_id {
        Some(a) if members.iter().any(|(m, _)| *m == a) => a,
        Some(a) => {
            return Err(ApiError::conflict_on(
                "account_id",
                format!("account {a} is not a member of this group"),
            ))
        }
        None => members
            .iter()
            .find(|(_, s)| s != "banned")
            .map(|(a, _)| *a)
            .ok_or_else(|| {
                ApiError::Conflict(
                    "no account that can read this group; discover groups first".into(),
                )
            })?,
    };
    let job = NewJob::new(
        account,
        &ScrapeJob {
            account_id: account,
            group_id: id,
        },
    )
    .map_err(ApiError::from)?;
    let (j, created) = enqueue_once(&state, job).await?;
    Ok((
        if created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        Json(j.into()),
    ))
}
