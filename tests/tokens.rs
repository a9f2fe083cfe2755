//! API tokens and login links, against a real server and a real Postgres:
//! scopes per route class, tokens restricted to one account, expiry,
//! revocation, last use, two tokens side by side, `courier tokens`, and the
//! signed login-page link that replaced `?token=`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use courier_testkit::{spawn_app, TestApp, TEST_TOKEN};

async fn account(app: &TestApp, name: &str) -> String {
    let (s, a) = app
        .post_json("/v1/accounts", json!({"account_name": name}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    a["id"].as_str().unwrap().to_string()
}

/// `method path` with `secret` as the bearer token and an optional JSON body.
async fn call(
    app: &TestApp,
    secret: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = app.http.request(method, app.url(path)).bearer_auth(secret);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    app.send(rb).await
}

fn discover_job(account: &str) -> Value {
    json!({"kind": "discover", "account_id": account, "payload": {"account_id": account}})
}

fn message(account: &str) -> Value {
    json!({"account_id": account, "channel_type": "individual",
           "target_phone": "+447700900123", "message_text": "hello"})
}

fn assert_forbidden(what: &str, (status, body): &(StatusCode, Value), naming: &str, secret: &str) {
    assert_eq!(*status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert_eq!(body["error"], "forbidden", "{what}: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(naming), "{what}: `{naming}` in {body}");
    assert!(
        !body.to_string().contains(secret),
        "{what}: the body names the token"
    );
}

#[tokio::test]
async fn a_read_token_cannot_enqueue_and_an_enqueue_token_cannot_pause_an_account() {
    let app = spawn_app().await;
    let acc = account(&app, "scopes").await;
    let read = app.create_token("reader", "read", None).await;
    let enqueue = app.create_token("producer", "enqueue", None).await;
    let admin = app.create_token("operator", "admin", None).await;

    // read: every GET, nothing that creates work.
    let (s, list) = call(&app, &read, Method::GET, "/v1/accounts", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let refused = call(
        &app,
        &read,
        Method::POST,
        "/v1/jobs",
        Some(discover_job(&acc)),
    )
    .await;
    assert_forbidden(
        "read token, POST /v1/jobs",
        &refused,
        "`enqueue` scope",
        &read,
    );
    assert_eq!(refused.1["field"], "scope");
    let refused = call(
        &app,
        &read,
        Method::POST,
        "/v1/messages",
        Some(message(&acc)),
    )
    .await;
    assert_forbidden(
        "read token, POST /v1/messages",
        &refused,
        "`enqueue`",
        &read,
    );
    let refused = call(&app, &read, Method::POST, "/whatsapp/messages",
        Some(json!({"accountId": acc, "channelType": "individual", "targetPhone": "+447700900123", "messageText": "x"}))).await;
    assert_forbidden(
        "read token, seed POST /whatsapp/messages",
        &refused,
        "`enqueue`",
        &read,
    );

    // enqueue: creates work, manages no account, reads nothing.
    let (s, j) = call(
        &app,
        &enqueue,
        Method::POST,
        "/v1/jobs",
        Some(discover_job(&acc)),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    let (s, m) = call(
        &app,
        &enqueue,
        Method::POST,
        "/v1/messages",
        Some(message(&acc)),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    let pause = format!("/v1/accounts/{acc}/pause");
    let refused = call(
        &app,
        &enqueue,
        Method::POST,
        &pause,
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_forbidden("enqueue token, pause", &refused, "`admin` scope", &enqueue);
    let refused = call(&app, &enqueue, Method::GET, "/v1/accounts", None).await;
    assert_forbidden("enqueue token, GET", &refused, "`read`", &enqueue);
    let refused = call(
        &app,
        &enqueue,
        Method::POST,
        &format!("/v1/accounts/{acc}/login-link"),
        None,
    )
    .await;
    assert_forbidden("enqueue token, login link", &refused, "`admin`", &enqueue);

    // admin implies the others.
    let (s, p) = call(
        &app,
        &admin,
        Method::POST,
        &pause,
        Some(json!({"reason": "maintenance"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "paused");
    let (s, _) = call(&app, &admin, Method::GET, "/v1/jobs", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, &admin, Method::POST, "/v1/jobs",
        Some(json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "idempotency_key": "again"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

/// The routes an `enqueue` token may call (method, path with `{id}`), as the
/// scope table in docs/api.md states them.
const ENQUEUE_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/batch"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/{id}/retry"),
    ("POST", "/v1/accounts/{id}/groups/discover"),
    ("POST", "/v1/groups/{id}/scrape"),
    // The campaign system's schedules: it writes them, and pauses and
    // resumes its own.
    ("POST", "/v1/schedules"),
    ("POST", "/v1/schedules/{id}/pause"),
    ("POST", "/v1/schedules/{id}/resume"),
    ("POST", "/whatsapp/messages"),
    ("POST", "/whatsapp/messages/{id}/retry"),
    ("POST", "/whatsapp/accounts/{id}/groups/discover"),
    ("POST", "/whatsapp/groups/{id}/scrape-contacts"),
];

/// The seed routes, which the OpenAPI document does not list.
const SEED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/whatsapp/accounts"),
    ("POST", "/whatsapp/accounts"),
    ("GET", "/whatsapp/accounts/{id}"),
    ("GET", "/whatsapp/groups"),
    ("GET", "/whatsapp/groups/{id}"),
    ("PUT", "/whatsapp/groups/{id}"),
    ("GET", "/whatsapp/stats"),
    ("GET", "/whatsapp/messages"),
    ("POST", "/whatsapp/messages"),
    ("GET", "/whatsapp/accounts/{id}/qr"),
    ("POST", "/whatsapp/accounts/{id}/initialize"),
    ("POST", "/whatsapp/accounts/{id}/disconnect"),
    ("POST", "/whatsapp/accounts/{id}/groups/discover"),
    ("POST", "/whatsapp/groups/{id}/scrape-contacts"),
    ("GET", "/whatsapp/messages/{id}"),
    ("POST", "/whatsapp/messages/{id}/retry"),
    ("GET", "/metrics"),
];

#[tokio::test]
async fn every_route_needs_the_scope_of_its_class() {
    let app = spawn_app().await;
    let read = app.create_token("reader", "read", None).await;
    let enqueue = app.create_token("producer", "enqueue", None).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The document says what the scopes are, and names the new operation.
    let scheme = doc["components"]["securitySchemes"]["bearer"]["description"]
        .as_str()
        .unwrap_or_default();
    for scope in ["`read`", "`enqueue`", "`admin`", "403"] {
        assert!(scheme.contains(scope), "{scope} in {scheme}");
    }
    assert_eq!(
        doc["paths"]["/v1/accounts/{id}/login-link"]["post"]["operationId"],
        "createLoginLink"
    );
    let mut routes: Vec<(String, String)> = SEED_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 40, "{routes:?}");
    let (s, _) = app
        .send(app.http.head(app.url("/v1/stats")).bearer_auth(&read))
        .await;
    assert_eq!(s, StatusCode::OK, "HEAD is a read");
    let id = Uuid::new_v4().to_string();
    for (method, route) in &routes {
        let path = route.replace("{id}", &id);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        // The QR is a login credential while it is shown, and webhook
        // subscriptions are an admin's: admin only.
        let is_read =
            method == "GET" && !route.ends_with("/qr") && !route.starts_with("/v1/webhooks");
        let is_enqueue = ENQUEUE_ROUTES.contains(&(method.as_str(), route.as_str()));
        for (who, secret, allowed) in [("read", &read, is_read), ("enqueue", &enqueue, is_enqueue)]
        {
            let (s, body) = if route == "/v1/events" {
                // A stream never ends: the status is the answer.
                let resp = app
                    .http
                    .get(app.url(&path))
                    .bearer_auth(secret)
                    .send()
                    .await
                    .unwrap();
                (resp.status(), json!({"error": "forbidden"}))
            } else {
                call(&app, secret, m.clone(), &path, Some(json!({}))).await
            };
            assert_ne!(
                s,
                StatusCode::UNAUTHORIZED,
                "{who} token on {method} {route}: {body}"
            );
            if allowed {
                assert_ne!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{who} token on {method} {route}: {body}"
                );
            } else {
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{who} token on {method} {route}: {body}"
                );
                assert_eq!(body["error"], "forbidden");
            }
        }
    }
}

#[tokio::test]
async fn a_token_restricted_to_one_account_reaches_that_account_only() {
    let app = spawn_app().await;
    let mine = account(&app, "mine").await;
    let other = account(&app, "other").await;
    let secret = app
        .create_token("tenant", "read,enqueue", Some(mine.parse().unwrap()))
        .await;
    let restricted = "restricted to account";
    // Jobs and messages on both accounts, made with the bootstrap token.
    let (_, other_job) = app.post_json("/v1/jobs", discover_job(&other)).await;
    let (_, other_msg) = app.post_json("/v1/messages", message(&other)).await;
    let other_msg = other_msg["messages"][0]["id"].as_str().unwrap().to_string();

    // Its own account: yes. Another's, or every account's: 403.
    let (s, a) = call(
        &app,
        &secret,
        Method::GET,
        &format!("/v1/accounts/{mine}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    for path in [
        format!("/v1/accounts/{other}"),
        format!("/v1/jobs/{}", other_job["id"].as_str().unwrap()),
        format!("/v1/messages/{other_msg}"),
        format!("/v1/jobs?account_id={other}"),
        format!("/v1/messages?account_id={other}"),
        format!("/whatsapp/accounts/{other}"),
    ] {
        let r = call(&app, &secret, Method::GET, &path, None).await;
        assert_forbidden(&path, &r, restricted, &secret);
    }
    for path in [
        "/v1/accounts",
        "/v1/stats",
        "/whatsapp/accounts",
        "/metrics",
    ] {
        let r = call(&app, &secret, Method::GET, path, None).await;
        assert_forbidden(path, &r, "covers every account", &secret);
    }

    // Enqueue bodies: another account is refused; a missing account_id is
    // its own.
    let retry_other = format!("/v1/messages/{other_msg}/retry");
    for (what, path, body) in [
        (
            "a job for another account",
            "/v1/jobs",
            Some(discover_job(&other)),
        ),
        (
            "a message for another account",
            "/v1/messages",
            Some(message(&other)),
        ),
        (
            "a batch with another account's job",
            "/v1/jobs/batch",
            Some(json!({"jobs": [discover_job(&mine), discover_job(&other)]})),
        ),
        // A job on its own account whose payload names another account's message.
        (
            "a retry job for another account's message",
            "/v1/jobs",
            Some(json!({"kind": "retry", "account_id": mine,
                        "payload": {"message_id": other_msg, "retry_number": 1}})),
        ),
        ("another account's retry", retry_other.as_str(), None),
    ] {
        let r = call(&app, &secret, Method::POST, path, body).await;
        assert_forbidden(what, &r, restricted, &secret);
    }
    let (s, j) = call(
        &app,
        &secret,
        Method::POST,
        "/v1/jobs",
        Some(json!({"kind": "discover", "payload": {"account_id": mine}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["account_id"], mine.as_str());
    let (s, m) = call(
        &app,
        &secret,
        Method::POST,
        "/v1/messages",
        Some(message(&mine)),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");

    // Lists show its account only, asked or not.
    let (s, page) = call(&app, &secret, Method::GET, "/v1/jobs", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let jobs = page["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty());
    assert!(
        jobs.iter().all(|j| j["account_id"] == mine.as_str()),
        "{page}"
    );
    let (s, msgs) = call(&app, &secret, Method::GET, "/v1/messages", None).await;
    assert_eq!(s, StatusCode::OK, "{msgs}");
    let msgs = msgs.as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["account_id"], mine.as_str());
    let (s, _) = call(
        &app,
        &secret,
        Method::GET,
        &format!("/v1/jobs?account_id={mine}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // The bootstrap token still sees both.
    let (_, all) = app.get("/v1/jobs").await;
    assert!(all["jobs"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn revoked_and_expired_tokens_get_401_at_once_while_another_keeps_working() {
    let app = spawn_app().await;
    let old = app.create_token("ci-2026-01", "read", None).await;
    let new = app.create_token("ci-2026-02", "read", None).await;
    // Two live tokens: rotation without downtime.
    for t in [&old, &new] {
        let (s, _) = call(&app, t, Method::GET, "/v1/stats", None).await;
        assert_eq!(s, StatusCode::OK);
    }
    courier::access::token::revoke(app.pool(), "ci-2026-01")
        .await
        .unwrap();
    let (s, body) = call(&app, &old, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked: {body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(!body.to_string().contains(&old));
    let (s, _) = call(&app, &new, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::OK, "the other token is untouched");
    // A revoked name can be taken again.
    let again = app.create_token("ci-2026-01", "read", None).await;
    assert_ne!(again, old);

    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'ci-2026-02'",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let (s, _) = call(&app, &new, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired");
    // The bootstrap token (api.token) still works, as admin.
    let (s, _) = app
        .post_json("/v1/accounts", json!({"account_name": "still"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn last_used_at_is_written_about_once_a_minute() {
    let app = spawn_app().await;
    let secret = app.create_token("watcher", "read", None).await;
    let last = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_used_at FROM api_tokens WHERE name = 'watcher'",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    assert_eq!(last().await, None, "never used");
    call(&app, &secret, Method::GET, "/v1/stats", None).await;
    let first = last().await.expect("written on first use");
    for _ in 0..5 {
        call(&app, &secret, Method::GET, "/v1/stats", None).await;
    }
    assert_eq!(last().await, Some(first), "not rewritten within the minute");
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now() - interval '61 seconds' WHERE name = 'watcher'",
    )
    .execute(app.pool())
    .await
    .unwrap();
    call(&app, &secret, Method::GET, "/v1/stats", None).await;
    let later = last().await.unwrap();
    assert!(
        later > first - chrono::Duration::seconds(1),
        "{later} vs {first}"
    );
    assert!(later > chrono::Utc::now() - chrono::Duration::seconds(10));
}

fn courier_cli(app: &TestApp) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_courier"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("COURIER__DATABASE__URL", &app.db.url)
        .env("COURIER__LOG__LEVEL", "warn");
    cmd
}

fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_tokens_creates_lists_and_revokes_with_clear_errors() {
    let app = spawn_app().await;
    let acc = account(&app, "cli").await;
    let cli = |args: &[&str]| {
        let mut cmd = courier_cli(&app);
        cmd.arg("tokens").args(args);
        run(&mut cmd)
    };
    let (ok, out, err) = tokio::task::block_in_place(|| {
        cli(&[
            "create",
            "--name",
            "ci",
            "--scope",
            "read,enqueue",
            "--expires-in",
            "30d",
        ])
    });
    assert!(ok, "{out}{err}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("a secret line in:\n{out}"))
        .to_string();
    assert!(
        secret.starts_with("courier_") && secret.len() > 40,
        "{secret}"
    );
    assert!(
        out.contains("read,enqueue") && out.contains("shown once"),
        "{out}"
    );
    let (s, _) = call(&app, &secret, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::OK, "the printed secret works");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_hash FROM api_tokens WHERE name = 'ci'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 32, "only a SHA-256 is stored");

    let (ok, out, err) = tokio::task::block_in_place(|| {
        cli(&[
            "create",
            "--name",
            "tenant",
            "--scope",
            "read",
            "--account",
            &acc,
            "--expires-in",
            "never",
        ])
    });
    assert!(ok, "{out}{err}");

    // Bad input, named.
    for (args, says) in [
        (
            vec!["create", "--name", "ci", "--scope", "read"],
            "a token named `ci` already exists",
        ),
        (
            vec!["create", "--name", "x", "--scope", "read,write"],
            "unknown scope `write`",
        ),
        (
            vec![
                "create",
                "--name",
                "x",
                "--scope",
                "read",
                "--expires-in",
                "soon",
            ],
            "invalid expiry `soon`",
        ),
        (
            vec!["create", "--name", "bad name", "--scope", "read"],
            "invalid token name",
        ),
        (
            vec![
                "create",
                "--name",
                "x",
                "--scope",
                "read",
                "--account",
                &Uuid::nil().to_string(),
            ],
            "no account",
        ),
        (
            vec!["revoke", "nobody"],
            "no active token named or with id `nobody`",
        ),
    ] {
        let (ok, out, err) = tokio::task::block_in_place(|| cli(&args));
        assert!(!ok, "{args:?} must fail: {out}");
        assert!(err.contains(says), "{args:?}: `{says}` in {err}");
    }

    let (ok, list, err) = tokio::task::block_in_place(|| cli(&["list"]));
    assert!(ok, "{err}");
    assert!(
        !list.contains(&secret),
        "list never shows a secret:\n{list}"
    );
    assert!(list.contains(&secret[..14]), "it shows the prefix:\n{list}");
    for needle in [
        "NAME",
        "ci",
        "tenant",
        "read,enqueue",
        &acc,
        "LAST USED",
        "active",
    ] {
        assert!(list.contains(needle), "`{needle}` in:\n{list}");
    }

    let (ok, out, err) = tokio::task::block_in_place(|| cli(&["revoke", "ci"]));
    assert!(ok && out.contains("revoked token `ci`"), "{out}{err}");
    let (s, _) = call(&app, &secret, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked at once");
    let (_, list, _) = tokio::task::block_in_place(|| cli(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.contains(" ci ") && l.contains("revoked")),
        "{list}"
    );
}

// ---------------------------------------------------------------------------
// The login page's signed link.

fn with_query(url: &str, query: &str) -> String {
    format!("{}?{query}", url.split('?').next().unwrap())
}

#[tokio::test]
async fn a_signed_login_link_opens_its_accounts_page_and_nothing_else() {
    let app = spawn_app().await;
    let acc = account(&app, "Linked <phone>").await;
    let other = account(&app, "other").await;
    let url = app.login_link(&acc).await;
    let (_, link) = app
        .post_json(&format!("/v1/accounts/{acc}/login-link"), json!({}))
        .await;
    let expires: chrono::DateTime<chrono::Utc> =
        link["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(590) && left <= chrono::Duration::seconds(601),
        "about 10 minutes by default: {left}"
    );
    assert!(
        url.starts_with(&format!("{}/ui/accounts/{acc}/login?expires=", app.base)),
        "{url}"
    );
    assert!(!url.contains(TEST_TOKEN));
    let query = url.split_once('?').unwrap().1.to_string();

    // The page, with no API token anywhere in it.
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Linked &lt;phone&gt;"), "{html}");
    assert!(!html.contains(TEST_TOKEN), "{html}");
    assert!(html.contains("Start login"), "{html}");

    // Its "Start login" button starts the QR flow with the link's authority.
    let start = format!("{}/ui/accounts/{acc}/login/start?{query}", app.base);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects.post(&start).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/ui/accounts/{acc}/login?{query}")
    );
    let (_, jobs) = app
        .get(&format!("/v1/jobs?account_id={acc}&kind=login"))
        .await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");

    // The QR, once the worker has one.
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'qr_pending', qr_token = 'ref-1,a,b,c,1', qr_expires_at = now() + interval '60 seconds' WHERE id = $1::uuid")
        .bind(&acc)
        .execute(app.pool())
        .await
        .unwrap();
    let html = app
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<svg") && html.contains("http-equiv=\"refresh\""),
        "{html}"
    );

    // Another account's page with this link, a tampered signature, no link,
    // and the old `?token=`: 401, and no login is started.
    let other_page = format!("{}/ui/accounts/{other}/login?{query}", app.base);
    let sig = query.split("sig=").nth(1).unwrap().to_string();
    let mut flipped = sig.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let tampered = with_query(
        &url,
        &query.replace(&sig, std::str::from_utf8(&flipped).unwrap()),
    );
    let later = with_query(
        &url,
        &query.replace(
            &format!("expires={}", expires.timestamp()),
            &format!("expires={}", expires.timestamp() + 3600),
        ),
    );
    for (what, u) in [
        ("another account", other_page.clone()),
        ("a tampered signature", tampered),
        ("a pushed-back expiry", later),
        ("no link", with_query(&url, "")),
        (
            "the API token",
            with_query(&url, &format!("token={TEST_TOKEN}")),
        ),
    ] {
        let r = app.http.get(&u).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.contains("signed link"), "{what}: {body}");
    }
    let r = app
        .http
        .post(format!(
            "{}/ui/accounts/{other}/login/start?{query}",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .http
        .post(format!(
            "{}/ui/accounts/{acc}/login/start?token={TEST_TOKEN}",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, jobs) = app
        .get(&format!("/v1/jobs?account_id={other}&kind=login"))
        .await;
    assert!(jobs["jobs"].as_array().unwrap().is_empty(), "{jobs}");

    // The link is no API token.
    for secret in [sig.as_str(), query.as_str()] {
        let (s, _) = call(
            &app,
            secret,
            Method::GET,
            &format!("/v1/accounts/{acc}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    // A token restricted to another account cannot make this account's link.
    let theirs = app
        .create_token("theirs", "admin", Some(other.parse().unwrap()))
        .await;
    let r = call(
        &app,
        &theirs,
        Method::POST,
        &format!("/v1/accounts/{acc}/login-link"),
        None,
    )
    .await;
    assert_forbidden(
        "another account's login link",
        &r,
        "restricted to account",
        &theirs,
    );
    let (s, _) = call(
        &app,
        &theirs,
        Method::POST,
        &format!("/v1/accounts/{other}/login-link"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post_json(
            &format!("/v1/accounts/{}/login-link", Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_login_link_stops_working_at_its_expiry() {
    let app = TestApp::builder()
        .settings(|s| s.api.login_link_ttl = Duration::from_secs(2))
        .spawn()
        .await;
    let acc = account(&app, "short").await;
    let url = app.login_link(&acc).await;
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "valid at first");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "expired");
    let body = r.text().await.unwrap();
    assert!(body.contains("expired"), "{body}");
    let start = url.replace("/login?", "/login/start?");
    let r = app.http.post(&start).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "its button too");
    // A link signed in the past by the cluster's own key is just as dead.
    let key = courier::access::LinkKey::load_or_create(app.pool())
        .await
        .unwrap();
    let stale = key.sign(
        acc.parse().unwrap(),
        chrono::Utc::now() - chrono::Duration::seconds(1),
    );
    let r = app.http.get(app.url(&stale.path())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // …while a fresh one from the same key opens the page: every replica
    // shares the key through the database.
    let fresh = key.sign(
        acc.parse().unwrap(),
        chrono::Utc::now() + chrono::Duration::minutes(1),
    );
    let r = app.http.get(app.url(&fresh.path())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
