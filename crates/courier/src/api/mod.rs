//! The HTTP API (axum): the `/v1` JSON API for admins and the campaign system,
//! the seed-compatible `/whatsapp/...` routes, probes, and the OpenAPI document.
//!
//! Every `/v1` and `/whatsapp` route needs a bearer token with the route's
//! scope (`auth::ROUTES`); the login page needs a signed link instead;
//! `/livez`, `/readyz`, `/openapi.json`, the docs UI at `/docs` and
//! `/runbook` (the operations guide the alerts link to) need nothing. Inputs
//! are parsed into domain types at the edge; errors are `{error, field,
//! detail}` with 400/401/403/404/409/413/415/422 — the only 5xx is a 503 when
//! the database is unreachable. The document is exact: what it calls valid,
//! the server accepts (or answers 404/409 for state it cannot know), and
//! every status a route can return is declared ([`contract`]).

pub(crate) mod accounts;
pub(crate) mod auth;
pub(crate) mod compat;
pub(crate) mod contacts;
pub mod contract;
pub mod error;
pub(crate) mod events;
pub(crate) mod extract;
pub(crate) mod groups;
pub(crate) mod jobs;
pub mod login;
pub(crate) mod login_link;
pub(crate) mod messages;
pub mod runbook;
pub(crate) mod schedules;
pub(crate) mod stats;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted (a 10,000-job batch fits).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// The bootstrap token's hash (`api.token`; the clear text is not kept).
    pub bootstrap: Option<crate::access::token::Bootstrap>,
    /// The login-link key, read from the database on first use.
    link_key: Arc<tokio::sync::OnceCell<crate::access::LinkKey>>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// The effective configuration (budget defaults, health thresholds, …).
    pub settings: Arc<crate::config::Settings>,
    /// The event-log follower of `/v1/events`, started by the first stream.
    pub events: Arc<tokio::sync::OnceCell<crate::events::stream::Hub>>,
}

impl AppState {
    /// State over `pool` with `token` as the bootstrap admin token (only
    /// its hash is kept), metrics behind a token.
    pub fn new(pool: PgPool, token: &str) -> Self {
        Self::named_tokens_only(pool).with_bootstrap(Some(token))
    }

    /// State over `pool` that accepts named tokens only (no `api.token`).
    pub fn named_tokens_only(pool: PgPool) -> Self {
        Self {
            pool,
            bootstrap: None,
            link_key: Arc::default(),
            metrics: crate::metrics::install(),
            metrics_public: false,
            settings: Arc::new(crate::config::Settings::defaults()),
            events: Arc::default(),
        }
    }

    /// Accepts `token` (hashed here) as the bootstrap admin token.
    pub fn with_bootstrap(mut self, token: Option<&str>) -> Self {
        self.bootstrap = token.map(crate::access::token::Bootstrap::new);
        self
    }

    /// Uses `settings` (and its `api.metrics_public`). The state keeps no
    /// copy of `api.token`: only the hash given to [`AppState::new`].
    pub fn with_settings(mut self, mut settings: crate::config::Settings) -> Self {
        settings.api.token = None;
        self.metrics_public = settings.api.metrics_public;
        self.settings = Arc::new(settings);
        self
    }

    /// The key that signs login links (made on first use, shared by every
    /// replica through the database).
    pub(crate) async fn link_key(&self) -> Result<crate::access::LinkKey, sqlx::Error> {
        self.link_key
            .get_or_try_init(|| crate::access::LinkKey::load_or_create(&self.pool))
            .await
            .cloned()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier API", description = "Durable, budget-aware WhatsApp campaign sending."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "accounts"), (name = "groups"), (name = "jobs"), (name = "messages"), (name = "stats"), (name = "schedules"), (name = "webhooks"), (name = "events"), (name = "contacts"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API token: a named token from `courier tokens create` \
                             (`courier_…`) or the bootstrap `api.token`. Each token has scopes: \
                             `read` (every GET), `enqueue` (creating jobs, messages, retries, \
                             discovery and scrapes; cancelling jobs; creating, pausing and \
                             resuming schedules) and `admin` (everything, \
                             including account management, log in and out, limits, group updates, \
                             QR codes and login links). A token may be restricted to one account. \
                             Missing, unknown, expired or revoked token: 401; a valid token \
                             without the route's scope or for another account: 403 naming what \
                             is missing. See docs/api.md for the scope of every route.",
                        ))
                        .build(),
                ),
            );
    }
}

/// The authenticated `/v1` routes and their OpenAPI description.
fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create, accounts::list))
        .routes(routes!(accounts::get))
        .routes(routes!(accounts::pause))
        .routes(routes!(accounts::resume))
        .routes(routes!(accounts::retire))
        .routes(routes!(accounts::update_limits))
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
        .routes(routes!(login_link::create))
        .routes(routes!(login::qr))
        .routes(routes!(login::discover))
        .routes(routes!(login::scrape))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::create_batch))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(messages::create, messages::list))
        .routes(routes!(messages::get))
        .routes(routes!(messages::retry))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::get))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(groups::list))
        .routes(routes!(groups::get, groups::update))
        .routes(routes!(contacts::list))
        .routes(routes!(contacts::get))
        .routes(routes!(contacts::tag))
        .routes(routes!(contacts::untag))
        .routes(routes!(contacts::opt_out))
        .routes(routes!(contacts::opt_in))
        .routes(routes!(contacts::import))
        .routes(routes!(stats::get))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::replay))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(events::stream))
}

/// The OpenAPI document for every route, with the statuses every
/// authenticated operation shares ([`contract::CommonResponses`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = v1().split_for_parts().1;
    utoipa::Modify::modify(&contract::CommonResponses, &mut doc);
    doc
}

/// The document as served at `/openapi.json`: [`openapi`] plus the JSON
/// Schema keywords utoipa cannot express ([`contract::refine`]).
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).expect("the OpenAPI document serializes");
    contract::refine(&mut doc);
    doc
}

/// Builds the whole router.
pub fn router(state: AppState) -> Router {
    let (v1, _) = v1().split_for_parts();
    // `/docs`: Swagger UI, its assets compiled into the binary (no CDN), over
    // the same document `/openapi.json` serves. Both are open.
    let docs: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", openapi_json())
        .into();
    let protected = v1
        .merge(compat::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let metrics_route = Router::new().route("/metrics", get(render_metrics));
    let (protected, open) = if state.metrics_public {
        (protected, metrics_route)
    } else {
        (
            protected.merge(
                metrics_route.route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    auth::require_token,
                )),
            ),
            Router::new(),
        )
    };
    let request_id = HeaderName::from_static("x-request-id");
    let cors = cors(&state.settings.api.cors_origins);
    let app = Router::new()
        .merge(protected)
        .merge(open)
        .route("/ui/accounts/{id}/login", get(login::login_page))
        .route("/ui/accounts/{id}/login/events", get(login::login_events))
        .route(
            "/ui/accounts/{id}/login/start",
            axum::routing::post(login::login_page_start),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/runbook", get(runbook::serve))
        .merge(docs)
        .fallback(|| async { error::ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(axum::middleware::from_fn(record_http))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path only: queries may carry a login link's signature.
                // `token` is the authenticated token's name, never its secret.
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(),
                token = tracing::field::Empty)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    // Outermost, so a browser's preflight (which carries no token) is
    // answered before authentication and routing.
    match cors {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// CORS for the configured origins (`api.cors_origins`): the seed's admin
/// UI calls the `/whatsapp` routes from the browser. `None` when none is set
/// (then no CORS header is sent, and `OPTIONS` is a 405 as before).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| crate::config::parse_origin(o))
        .filter_map(|o| HeaderValue::from_str(&o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(Duration::from_secs(600)),
    )
}

async fn render_metrics(State(state): State<AppState>) -> String {
    crate::metrics::render(&state.metrics)
}

/// Counts requests by matched route (not raw path: ids would explode the
/// label set), method and status.
async fn record_http(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(crate::metrics::HTTP_REQUEST_SECONDS, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    match ping {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
