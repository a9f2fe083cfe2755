//! Hostile input: generated JSON bodies, ids and query strings against every
//! route of the real server on a real Postgres. No input may produce a 5xx.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

use courier::api::{self, AppState};
use courier::testing::fresh_database;

const TOKEN: &str = "fuzz-token-0123456789";

/// Field names the routes know, so generated objects reach deep validation
/// paths rather than failing on the first unknown key every time.
const KEYS: &[&str] = &[
    "account_name",
    "phone_number",
    "timezone",
    "kind",
    "account_id",
    "payload",
    "run_at",
    "priority",
    "idempotency_key",
    "jobs",
    "message_id",
    "retry_number",
    "group_id",
    "channel_type",
    "message_type",
    "message_text",
    "media_url",
    "media_path",
    "caption",
    "link_url",
    "target_group_id",
    "target_chat_id",
    "target_phone",
    "recipients",
    "reason",
    "until",
    "rate_limit_config",
    "per_minute",
    "per_hour",
    "per_day",
    "quiet_hours",
    "start",
    "end",
    "region",
    "state",
    "district",
    "segment_tags",
    "accountName",
    "messageText",
    "channelType",
    "targetPhone",
    "accountId",
];

fn scalar(ids: Vec<String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::String),
        proptest::sample::select(vec![
            "+447700900123",
            "447700900123@c.us",
            "120363000000000001@g.us",
            "123@lid",
            "https://example.com/a.png",
            "http://127.0.0.1/x",
            "ftp://x",
            "../etc/passwd",
            "2099-01-01T00:00:00Z",
            "not-a-date",
            "Asia/Kolkata",
            "Mars/Base",
            "22:00",
            "text",
            "image",
            "group",
            "individual",
            "broadcast",
            "send",
            "discover",
            "scrape",
            "retry",
            "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        proptest::sample::select(ids).prop_map(Value::String),
    ]
}

fn value(ids: Vec<String>) -> impl Strategy<Value = Value> {
    scalar(ids).prop_recursive(3, 40, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_input_produces_a_server_error() {
    let db = fresh_database().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(
        listener,
        AppState::new(db.pool.clone(), TOKEN),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();

    // Real rows so generated ids sometimes hit existing records.
    let account: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_accounts (account_name) VALUES ('fuzz') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let group: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_groups (group_id, name, account_id) VALUES ('120363000000000001@g.us', 'g', $1) RETURNING id",
    )
    .bind(account)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let ids = vec![
        account.to_string(),
        group.to_string(),
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".to_string(),
        "%00".to_string(),
    ];
    let routes: &[(&str, &str)] = &[
        ("POST", "/v1/accounts"),
        ("GET", "/v1/accounts/{id}"),
        ("POST", "/v1/accounts/{id}/pause"),
        ("POST", "/v1/accounts/{id}/resume"),
        ("PATCH", "/v1/accounts/{id}/limits"),
        ("GET", "/v1/groups?{q}"),
        ("PATCH", "/v1/groups/{id}"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/batch"),
        ("GET", "/v1/jobs?{q}"),
        ("POST", "/v1/jobs/{id}/cancel"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages?{q}"),
        ("GET", "/v1/messages/{id}"),
        ("POST", "/v1/messages/{id}/retry"),
        ("POST", "/whatsapp/accounts"),
        ("POST", "/whatsapp/messages"),
        ("PUT", "/whatsapp/groups/{id}"),
        ("POST", "/v1/accounts/{id}/login"),
        ("POST", "/v1/accounts/{id}/logout"),
        ("GET", "/v1/accounts/{id}/qr"),
        ("POST", "/v1/accounts/{id}/groups/discover"),
        ("POST", "/v1/groups/{id}/scrape"),
        ("GET", "/ui/accounts/{id}/login?{q}"),
    ];
    // Mostly flat objects of known keys (they parse, and reach validation),
    // sometimes anything at all.
    let flat = prop::collection::vec((proptest::sample::select(KEYS), scalar(ids.clone())), 0..8)
        .prop_map(|kv| {
            Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>(),
            )
        });
    let body = prop_oneof![3 => flat, 1 => value(ids.clone())];
    let strategy = (
        proptest::sample::select(routes.to_vec()),
        body,
        proptest::sample::select(ids),
        "[a-z_]{1,12}=[\\PC]{0,12}(&[a-z_]{1,12}=[0-9a-z-]{0,40}){0,3}",
    );
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let mut cases = Vec::new();
    for _ in 0..1000 {
        cases.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    // Valid bodies per route, with one or two fields replaced by generated
    // values: these get past parsing and exercise field validation.
    let a = account.to_string();
    let templates = [
        (
            "/v1/accounts",
            json!({"account_name": "n", "phone_number": "+447700900123", "timezone": "UTC"}),
        ),
        (
            "/v1/jobs",
            json!({"kind": "discover", "account_id": a, "payload": {"account_id": a}, "priority": 1}),
        ),
        (
            "/v1/messages",
            json!({"account_id": a, "channel_type": "individual", "target_phone": "+447700900123", "message_text": "hi"}),
        ),
        (
            "/pause",
            json!({"reason": "r", "until": "2099-01-01T00:00:00Z"}),
        ),
        (
            "/limits",
            json!({"rate_limit_config": {"per_minute": 1, "per_hour": 2, "per_day": 3}}),
        ),
    ];
    let mutations = (
        proptest::sample::select((0..templates.len()).collect::<Vec<_>>()),
        prop::collection::vec(
            (proptest::sample::select(KEYS), scalar(vec![a.clone()])),
            1..3,
        ),
    );
    let mut mutated = Vec::new();
    for _ in 0..600 {
        let (t, changes) = mutations.new_tree(&mut runner).unwrap().current();
        let (route, mut body) = templates[t].clone();
        for (k, v) in changes {
            if body.get(k).is_some() {
                body[k] = v;
            }
        }
        let path = match route {
            "/pause" => format!("/v1/accounts/{a}/pause"),
            "/limits" => format!("/v1/accounts/{a}/limits"),
            r => r.to_string(),
        };
        let method = if route == "/limits" { "PATCH" } else { "POST" };
        mutated.push(((method, path), body));
    }
    let mut by_status = std::collections::BTreeMap::new();
    let all = cases
        .into_iter()
        .map(|((method, route), body, id, query)| {
            (
                (method, route.replace("{id}", &id).replace("{q}", &query)),
                body,
            )
        })
        .chain(mutated);
    for ((method, path), body) in all {
        let req = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body);
        let resp = req.send().await.unwrap();
        let status = resp.status();
        *by_status.entry(status.as_u16()).or_insert(0) += 1;
        let text = resp.text().await.unwrap();
        assert!(
            status.as_u16() < 500,
            "{method} {path} with {body} -> {status}: {text}"
        );
        if !status.is_success() && status.as_u16() != 404 {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON error body: {text}"));
            assert!(v["error"].is_string() && v["detail"].is_string(), "{text}");
        }
    }
    eprintln!("status counts over 1600 generated requests: {by_status:?}");
    assert!(
        by_status.keys().any(|s| *s < 300),
        "some generated requests must succeed"
    );
}
