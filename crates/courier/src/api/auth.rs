//! Who may call which route: bearer tokens (the bootstrap `api.token`, held
//! as a hash, and the named tokens of `courier tokens`), the scope each route
//! needs — one table, [`ROUTES`] — and what a token restricted to one
//! account may reach. Also the check of signed login-page links.
//!
//! - No token, an unknown, expired or revoked one: 401.
//! - A valid token without the route's scope: 403 naming the scope.
//! - A token restricted to an account, on another account's resource, or on
//!   a route that covers every account: 403. On list routes its account's
//!   filter is applied for it (asking for another account is a 403); in
//!   enqueue bodies `account_id` defaults to its account (another is a 403).
//!
//! Nothing here logs a secret: the request span gets the token's *name*.

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt as _;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::access::token::{self, Principal, Scope};

/// Where a route's account is, for a token restricted to one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The route covers every account (lists of accounts, stats, metrics,
    /// creating an account): refused to a restricted token.
    Global,
    /// `{id}` is the account.
    Account,
    /// `{id}` is a job; its account is the job's.
    Job,
    /// `{id}` is a message; its account is the message's.
    Message,
    /// `{id}` is a group; the account must be one of its accounts.
    Group,
    /// A list filtered by this query parameter: forced to the token's account.
    Query(&'static str),
    /// A JSON body naming the account in this field: it defaults to the
    /// token's account and must be it.
    Body(&'static str),
    /// `POST /v1/jobs`: the body's `account_id`, and `payload.account_id`
    /// when the payload names one.
    Job1,
    /// `POST /v1/jobs/batch`: [`Target::Job1`] for every item of `jobs`.
    JobBatch,
    /// `{id}` is a group ([`Target::Group`]) and the optional body names the
    /// reading account in this field ([`Target::Body`]).
    GroupBody(&'static str),
}

/// One route's requirement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// HTTP method.
    pub(crate) method: &'static str,
    /// The route as the router matches it (`MatchedPath`).
    pub(crate) route: &'static str,
    /// The scope it needs (`admin` also grants `read` and `enqueue`).
    pub(crate) scope: Scope,
    /// Where its account is.
    pub(crate) target: Target,
}

const fn rule(method: &'static str, route: &'static str, scope: Scope, target: Target) -> Rule {
    Rule {
        method,
        route,
        scope,
        target,
    }
}

use Scope::{Admin, Enqueue, Read};
use Target::{Account, Global, Group, GroupBody, Job, Job1, JobBatch, Message};

/// Every authenticated route, the scope it needs and where its account is.
/// `read`: reading. `enqueue`: creating work (jobs, messages, retries,
/// discovery, scrapes) and cancelling jobs. `admin`: managing accounts, log
/// in and out, limits, group updates, login links — and the QR code, a
/// login credential while it is shown. A route missing here needs `admin`
/// and is refused to restricted tokens (a test checks none is missing).
pub(crate) const ROUTES: &[Rule] = &[
    rule("GET", "/v1/accounts", Read, Global),
    rule("POST", "/v1/accounts", Admin, Global),
    rule("GET", "/v1/accounts/{id}", Read, Account),
    rule("POST", "/v1/accounts/{id}/pause", Admin, Account),
    rule("POST", "/v1/accounts/{id}/resume", Admin, Account),
    rule("PATCH", "/v1/accounts/{id}/limits", Admin, Account),
    rule("POST", "/v1/accounts/{id}/login", Admin, Account),
    rule("POST", "/v1/accounts/{id}/logout", Admin, Account),
    rule("POST", "/v1/accounts/{id}/retire", Admin, Account),
    rule("POST", "/v1/accounts/{id}/login-link", Admin, Account),
    rule("GET", "/v1/accounts/{id}/qr", Admin, Account),
    rule(
        "POST",
        "/v1/accounts/{id}/groups/discover",
        Enqueue,
        Account,
    ),
    rule(
        "POST",
        "/v1/groups/{id}/scrape",
        Enqueue,
        GroupBody("account_id"),
    ),
    rule("GET", "/v1/groups", Read, Target::Query("account_id")),
    rule("GET", "/v1/groups/{id}", Read, Group),
    rule("PATCH", "/v1/groups/{id}", Admin, Group),
    rule("POST", "/v1/jobs", Enqueue, Job1),
    rule("GET", "/v1/jobs", Read, Target::Query("account_id")),
    rule("POST", "/v1/jobs/batch", Enqueue, JobBatch),
    rule("GET", "/v1/jobs/{id}", Read, Job),
    rule("POST", "/v1/jobs/{id}/cancel", Enqueue, Job),
    rule("POST", "/v1/messages", Enqueue, Target::Body("account_id")),
    rule("GET", "/v1/messages", Read, Target::Query("account_id")),
    rule("GET", "/v1/messages/{id}", Read, Message),
    rule("POST", "/v1/messages/{id}/retry", Enqueue, Message),
    // Schedules belong to campaigns, not to one account.
    rule("GET", "/v1/schedules", Read, Global),
    rule("POST", "/v1/schedules", Enqueue, Global),
    rule("GET", "/v1/schedules/{id}", Read, Global),
    rule("POST", "/v1/schedules/{id}/pause", Enqueue, Global),
    rule("POST", "/v1/schedules/{id}/resume", Enqueue, Global),
    rule("GET", "/v1/stats", Read, Global),
    // Contacts belong to no account: the routes cover every account.
    rule("GET", "/v1/contacts", Read, Global),
    rule("GET", "/v1/contacts/{id}", Read, Global),
    rule("POST", "/v1/contacts/{id}/tags", Admin, Global),
    rule("DELETE", "/v1/contacts/{id}/tags/{tag}", Admin, Global),
    rule("POST", "/v1/contacts/{id}/opt-out", Admin, Global),
    rule("POST", "/v1/contacts/{id}/opt-in", Admin, Global),
    rule("POST", "/v1/contacts/import", Admin, Global),
    // Webhook subscriptions may cover every account: admin, unrestricted.
    rule("POST", "/v1/webhooks", Admin, Global),
    rule("GET", "/v1/webhooks", Admin, Global),
    rule("GET", "/v1/webhooks/{id}", Admin, Global),
    rule("PATCH", "/v1/webhooks/{id}", Admin, Global),
    rule("DELETE", "/v1/webhooks/{id}", Admin, Global),
    rule("POST", "/v1/webhooks/{id}/test", Admin, Global),
    rule("GET", "/v1/webhooks/{id}/deliveries", Admin, Global),
    rule("POST", "/v1/webhooks/{id}/rotate-secret", Admin, Global),
    rule(
        "POST",
        "/v1/webhooks/{id}/deliveries/{position}/replay",
        Admin,
        Global,
    ),
    // The event stream: a restricted token sees its account's events.
    rule("GET", "/v1/events", Read, Target::Query("account_id")),
    rule("GET", "/metrics", Read, Global),
    // The seed's routes (compat.rs), camelCase.
    rule("GET", "/whatsapp/accounts", Read, Global),
    rule("POST", "/whatsapp/accounts", Admin, Global),
    rule("GET", "/whatsapp/accounts/{id}", Read, Account),
    rule("POST", "/whatsapp/accounts/{id}/initialize", Admin, Account),
    rule("POST", "/whatsapp/accounts/{id}/disconnect", Admin, Account),
    rule("GET", "/whatsapp/accounts/{id}/qr", Admin, Account),
    rule(
        "POST",
        "/whatsapp/accounts/{id}/groups/discover",
        Enqueue,
        Account,
    ),
    rule(
        "POST",
        "/whatsapp/groups/{id}/scrape-contacts",
        Enqueue,
        GroupBody("accountId"),
    ),
    rule("GET", "/whatsapp/groups", Read, Target::Query("accountId")),
    rule("GET", "/whatsapp/groups/{id}", Read, Group),
    rule("PUT", "/whatsapp/groups/{id}", Admin, Group),
    rule("GET", "/whatsapp/stats", Read, Global),
    rule(
        "GET",
        "/whatsapp/messages",
        Read,
        Target::Query("accountId"),
    ),
    rule(
        "POST",
        "/whatsapp/messages",
        Enqueue,
        Target::Body("accountId"),
    ),
    rule("GET", "/whatsapp/messages/{id}", Read, Message),
    rule("POST", "/whatsapp/messages/{id}/retry", Enqueue, Message),
];

/// The rule for `method` on `route` (`HEAD` is a `GET`, as axum serves it).
pub(crate) fn rule_for(method: &str, route: &str) -> Option<&'static Rule> {
    let method = if method == "HEAD" { "GET" } else { method };
    ROUTES
        .iter()
        .find(|r| r.method == method && r.route == route)
}

/// The bearer token of a request, if it carries one.
fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Middleware on every authenticated route: the token, the route's scope,
/// the token's account.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match authorize(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn authorize(state: &AppState, mut req: Request) -> Result<Request, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    // Fail closed: a route the table forgot needs admin and no restriction.
    let (scope, target) =
        rule_for(req.method().as_str(), &route).map_or((Admin, Global), |r| (r.scope, r.target));
    let principal = {
        let presented = bearer(&req).ok_or(ApiError::Unauthorized)?;
        authenticate(state, presented)
            .await?
            .ok_or(ApiError::Unauthorized)?
    };
    tracing::Span::current().record("token", principal.name.as_str());
    if !principal.grants(scope) {
        return Err(ApiError::Forbidden {
            field: Some("scope".into()),
            detail: format!(
                "this route needs the `{scope}` scope{}; the token has {}",
                if scope == Admin { "" } else { " (or admin)" },
                principal
                    .scopes
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if let Some(account) = principal.account_id {
        req = restrict(state, req, &route, account, target).await?;
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

/// The principal behind a presented secret: the bootstrap token (compared by
/// hash, in constant time) or a live named token.
async fn authenticate(state: &AppState, presented: &str) -> Result<Option<Principal>, ApiError> {
    let hashed = token::hash(presented);
    if state.bootstrap.as_ref().is_some_and(|b| b.matches(&hashed)) {
        return Ok(Some(Principal::bootstrap()));
    }
    Ok(token::authenticate(&state.pool, presented, &hashed).await?)
}

fn restricted(account: Uuid) -> ApiError {
    ApiError::Forbidden {
        field: None,
        detail: format!("this token is restricted to account {account}"),
    }
}

/// Checks (and, for lists and bodies, narrows) a request of a token
/// restricted to `account`.
async fn restrict(
    state: &AppState,
    mut req: Request,
    route: &str,
    account: Uuid,
    target: Target,
) -> Result<Request, ApiError> {
    // Percent-decoded, as the handler's `Path` reads it; an id that is not a
    // UUID is refused here rather than passed on.
    let path_id = if route.contains("{id}") {
        let params = req
            .extract_parts::<RawPathParams>()
            .await
            .map_err(|_| restricted(account))?;
        let id = params
            .iter()
            .find(|(k, _)| *k == "id")
            .and_then(|(_, v)| Uuid::parse_str(v).ok())
            .ok_or_else(|| restricted(account))?;
        Some(id)
    } else {
        None
    };
    let owner_sql = match target {
        Target::Job => Some("SELECT account_id = $2 FROM queue_jobs WHERE id = $1"),
        Target::Message => Some("SELECT account_id = $2 FROM mkt_wap_messages WHERE id = $1"),
        Target::Group | Target::GroupBody(_) => Some(
            "SELECT g.account_id IS NOT DISTINCT FROM $2 OR EXISTS (SELECT 1 FROM mkt_wap_account_groups ag \
             WHERE ag.group_id = g.id AND ag.account_id = $2) FROM mkt_wap_groups g WHERE g.id = $1",
        ),
        _ => None,
    };
    match (target, path_id) {
        (Target::Global, _) => {
            return Err(ApiError::Forbidden {
                field: None,
                detail: format!(
                    "this token is restricted to account {account}; this route covers every account"
                ),
            })
        }
        (Target::Account, Some(id)) if id != account => return Err(restricted(account)),
        _ => {}
    }
    if let (Some(sql), Some(id)) = (owner_sql, path_id) {
        // A resource that does not exist is left to the handler (404).
        let mine: Option<Option<bool>> = sqlx::query_scalar(sql)
            .bind(id)
            .bind(account)
            .fetch_optional(&state.pool)
            .await?;
        if mine.is_some_and(|m| m != Some(true)) {
            return Err(restricted(account));
        }
    }
    match target {
        Target::Query(field) => {
            let uri = narrow_query(req.uri(), field, account)?;
            *req.uri_mut() = uri;
            Ok(req)
        }
        Target::Body(field) | Target::GroupBody(field) => {
            let empty_is_object = matches!(target, Target::GroupBody(_));
            map_body(req, account, empty_is_object, |v| {
                own_account(v, field, account)
            })
            .await
        }
        Target::Job1 | Target::JobBatch => {
            // The payloads' own references (the message a send or retry job
            // sends, the group a scrape reads) must be the account's too.
            let mut refs = PayloadRefs::default();
            let req = map_body(req, account, false, |v| {
                if target == Target::Job1 {
                    refs.add(v);
                    return own_job(v, account);
                }
                if let Some(jobs) = v.get_mut("jobs").and_then(Value::as_array_mut) {
                    for j in jobs {
                        refs.add(j);
                        own_job(j, account)?;
                    }
                }
                Ok(())
            })
            .await?;
            refs.check(state, account).await?;
            Ok(req)
        }
        _ => Ok(req),
    }
}

/// The list's query with `field` forced to `account`: added when absent,
/// refused when it names another account.
fn narrow_query(uri: &Uri, field: &str, account: Uuid) -> Result<Uri, ApiError> {
    let query = uri.query().unwrap_or("");
    let mut named = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == field {
            named = true;
            if Uuid::parse_str(&v).ok() != Some(account) {
                return Err(restricted(account));
            }
        }
    }
    if named {
        return Ok(uri.clone());
    }
    let sep = if query.is_empty() { "" } else { "&" };
    let pq = format!("{}?{query}{sep}{field}={account}", uri.path());
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| restricted(account))?);
    Uri::from_parts(parts).map_err(|_| restricted(account))
}

/// In a JSON object, `field` defaults to `account` and must be it.
fn own_account(v: &mut Value, field: &str, account: Uuid) -> Result<(), ApiError> {
    let Some(obj) = v.as_object_mut() else {
        return Ok(()); // not an object: the handler refuses it
    };
    match obj.get(field) {
        None | Some(Value::Null) => {
            obj.insert(field.to_string(), Value::String(account.to_string()));
            Ok(())
        }
        Some(Value::String(s)) if Uuid::parse_str(s).ok() == Some(account) => Ok(()),
        Some(_) => Err(restricted(account)),
    }
}

/// The messages and groups that job payloads name.
#[derive(Default)]
struct PayloadRefs {
    messages: Vec<Uuid>,
    groups: Vec<Uuid>,
}

impl PayloadRefs {
    fn add(&mut self, job: &Value) {
        let id = |k: &str| {
            job.get("payload")
                .and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        self.messages.extend(id("message_id"));
        self.groups.extend(id("group_id"));
    }

    /// 403 if a named message or group exists and is another account's.
    async fn check(&self, state: &AppState, account: Uuid) -> Result<(), ApiError> {
        if self.messages.is_empty() && self.groups.is_empty() {
            return Ok(());
        }
        let foreign: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM mkt_wap_messages m WHERE m.id = ANY($1) \
                            AND m.account_id IS DISTINCT FROM $3) \
                 OR EXISTS (SELECT 1 FROM mkt_wap_groups g WHERE g.id = ANY($2) \
                            AND g.account_id IS DISTINCT FROM $3 AND NOT EXISTS ( \
                                SELECT 1 FROM mkt_wap_account_groups ag \
                                WHERE ag.group_id = g.id AND ag.account_id = $3))",
        )
        .bind(&self.messages)
        .bind(&self.groups)
        .bind(account)
        .fetch_one(&state.pool)
        .await?;
        if foreign {
            return Err(restricted(account));
        }
        Ok(())
    }
}

/// A job body: its `account_id`, and its payload's when it names one.
fn own_job(v: &mut Value, account: Uuid) -> Result<(), ApiError> {
    own_account(v, "account_id", account)?;
    match v.get("payload").and_then(|p| p.get("account_id")) {
        None => Ok(()),
        Some(Value::String(s)) if Uuid::parse_str(s).ok() == Some(account) => Ok(()),
        Some(_) => Err(restricted(account)),
    }
}

/// Reads the body as JSON, applies `f`, and puts it back. A body that is not
/// JSON is passed on untouched (the handler refuses it); `empty_is_object`:
/// an empty body counts as `{}` (the optional scrape body).
async fn map_body(
    req: Request,
    account: Uuid,
    empty_is_object: bool,
    f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::BadRequest {
            field: None,
            detail: format!(
                "the body could not be read (at most {} bytes)",
                super::MAX_BODY_BYTES
            ),
        })?;
    let parsed = if empty_is_object && bytes.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Object(Default::default()))
    } else {
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    let Some(mut v) = parsed else {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    };
    f(&mut v)?;
    let out = serde_json::to_vec(&v).map_err(|_| restricted(account))?;
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Request::from_parts(parts, Body::from(out)))
}

/// The query of a login-page URL: `expires` and `sig`. Anything else (an
/// old `?token=`) is ignored: it grants nothing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LinkQuery {
    expires: Option<String>,
    sig: Option<String>,
}

impl LinkQuery {
    /// `expires=…&sig=…`, for the page's own links (the values as they
    /// came, URL-encoded again).
    pub(crate) fn to_query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("expires", self.expires.as_deref().unwrap_or(""))
            .append_pair("sig", self.sig.as_deref().unwrap_or(""))
            .finish()
    }

    /// The expiry it states (checked or not).
    pub(crate) fn expires_at(&self) -> Option<chrono::DateTime<Utc>> {
        let secs = self.expires.as_deref()?.parse::<i64>().ok()?;
        chrono::DateTime::from_timestamp(secs, 0)
    }
}

/// Checks a signed login link for account `id`: 401 unless it is genuine,
/// for this account, and not expired.
pub(crate) async fn check_link(state: &AppState, id: Uuid, q: &LinkQuery) -> Result<(), ApiError> {
    let key = state.link_key().await?;
    let expires = q.expires.as_deref().and_then(|e| e.parse::<i64>().ok());
    key.verify(id, expires, q.sig.as_deref(), Utc::now())
        .map_err(ApiError::Link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_list_is_narrowed_to_its_account() {
        let a = Uuid::new_v4();
        let u: Uri = "/v1/jobs?state=failed".parse().unwrap();
        assert_eq!(
            narrow_query(&u, "account_id", a).unwrap().to_string(),
            format!("/v1/jobs?state=failed&account_id={a}")
        );
        let u: Uri = "/v1/jobs".parse().unwrap();
        assert_eq!(
            narrow_query(&u, "account_id", a).unwrap().to_string(),
            format!("/v1/jobs?account_id={a}")
        );
        let own: Uri = format!("/v1/jobs?account_id={}", a.to_string().to_uppercase())
            .parse()
            .unwrap();
        assert!(narrow_query(&own, "account_id", a).is_ok());
        let other: Uri = format!("/v1/jobs?account_id={a}&account_id={}", Uuid::new_v4())
            .parse()
            .unwrap();
        assert!(narrow_query(&other, "account_id", a).is_err());
        let bad: Uri = "/v1/jobs?account_id=nope".parse().unwrap();
        assert!(narrow_query(&bad, "account_id", a).is_err());
    }

    #[test]
    fn restricted_bodies_default_to_and_must_name_their_account() {
        let a = Uuid::new_v4();
        let mut v = serde_json::json!({"kind": "discover"});
        own_job(&mut v, a).unwrap();
        assert_eq!(v["account_id"], a.to_string());
        let mut other = serde_json::json!({"account_id": Uuid::new_v4()});
        assert!(own_job(&mut other, a).is_err());
        let mut sneaky =
            serde_json::json!({"account_id": a, "payload": {"account_id": Uuid::new_v4()}});
        assert!(own_job(&mut sneaky, a).is_err());
        let mut not_a_string = serde_json::json!({"accountId": 5});
        assert!(own_account(&mut not_a_string, "accountId", a).is_err());
    }

    #[test]
    fn every_documented_operation_has_a_rule() {
        let doc = serde_json::to_value(crate::api::openapi()).unwrap();
        let mut missing = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let m = method.to_uppercase();
                if rule_for(&m, path).is_none() {
                    missing.push(format!("{m} {path}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes without a scope rule: {missing:?}"
        );
    }

    #[test]
    fn the_scope_table_in_docs_api_md_is_this_table() {
        let md = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md"),
        )
        .unwrap();
        let section = md
            .split("## Tokens and scopes")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a `Tokens and scopes` section in docs/api.md");
        let documented: Vec<(String, String)> = section
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let route = cells.next()?.trim_end_matches('`').to_string();
                Some((route, cells.next()?.to_string()))
            })
            .collect();
        let coded: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (format!("{} {}", r.method, r.route), r.scope.to_string()))
            .collect();
        assert_eq!(
            documented, coded,
            "docs/api.md's scope table and ROUTES differ"
        );
    }

    #[test]
    fn every_rule_is_unique() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[..i]
                    .iter()
                    .any(|o| o.method == r.method && o.route == r.route),
                "{} {} twice",
                r.method,
                r.route
            );
        }
    }
}
