//! `POST /v1/accounts/{id}/login-link`: a short-lived signed link to one
//! account's login page, for a person to open in a browser (see
//! `access::link`). The link carries no API token.

use axum::extract::State;
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::AppState;

/// A signed login-page link.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LoginLinkView {
    /// The page's absolute URL: `api.public_url`, or the request's `Host`,
    /// followed by `path`.
    pub url: String,
    /// The page's path and query (`/ui/accounts/{id}/login?expires=…&sig=…`).
    pub path: String,
    /// When the link stops working (`api.login_link_ttl` from now).
    pub expires_at: DateTime<Utc>,
}

/// Create a signed link to the account's login page, valid for
/// `api.login_link_ttl` (default 10 minutes). It opens that account's login
/// page (QR, status, start login) and nothing else; no API token is in it.
#[utoipa::path(post, path = "/v1/accounts/{id}/login-link", tag = "accounts",
    operation_id = "createLoginLink",
    params(("id" = Uuid, Path, description = "account id")),
    responses(
        (status = 201, body = LoginLinkView, description = "the signed link"),
        (status = 400, body = ErrorBody, description = "the id is not a UUID"),
        (status = 401, body = ErrorBody, description = "missing, unknown, expired or revoked token"),
        (status = 403, body = ErrorBody, description = "the token lacks `admin`, or is restricted to another account"),
        (status = 404, body = ErrorBody, description = "no such account"),
        (status = 503, body = ErrorBody, description = "the database is unavailable")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<LoginLinkView>), ApiError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mkt_wap_accounts WHERE id = $1)")
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::NotFound("account"));
    }
    let ttl = chrono::Duration::from_std(state.settings.api.login_link_ttl)
        .unwrap_or_else(|_| chrono::Duration::minutes(10));
    let link = state.link_key().await?.sign(id, Utc::now() + ttl);
    let path = link.path();
    let base = match &state.settings.api.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("http://{h}"))
            .unwrap_or_default(),
    };
    Ok((
        StatusCode::CREATED,
        Json(LoginLinkView {
            url: format!("{base}{path}"),
            path,
            expires_at: link.expires_at,
        }),
    ))
}
