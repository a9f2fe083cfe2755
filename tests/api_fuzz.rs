//! Hostile input: generated JSON bodies, ids and query strings against every
//! route of the real server on a real Postgres. No input may produce a 5xx.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

use courier_testkit::{insert_account, TestApp};

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

/// The API with [`TOKEN`] and a client without keep-alive, over a database
/// holding an account and a group (`group_id`) attached to it, whose ids
/// the generators use.
async fn spawn_with_rows(group_id: &str) -> (TestApp, uuid::Uuid, uuid::Uuid) {
    // No keep-alive: the server may answer a malformed request before reading
    // its body and then close the connection (correct HTTP); a pooled client
    // can send the next request into that closing connection and get
    // `IncompleteMessage` (seen once in CI, not reproducible with the seed).
    let app = TestApp::builder()
        .token(TOKEN)
        .http_client(
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        )
        .spawn()
        .await;
    let account = insert_account(app.pool(), "fuzz").await;
    let group: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_groups (group_id, name, account_id) VALUES ($1, 'g', $2) RETURNING id",
    )
    .bind(group_id)
    .bind(account)
    .fetch_one(app.pool())
    .await
    .unwrap();
    (app, account, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_input_produces_a_server_error() {
    // Real rows so generated ids sometimes hit existing records.
    let (app, account, group) = spawn_with_rows("120363000000000001@g.us").await;
    let (base, http) = (&app.base, &app.http);
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
        ("POST", "/v1/accounts/{id}/retire"),
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
        ("POST", "/ui/accounts/{id}/login/start?{q}"),
        ("POST", "/v1/accounts/{id}/login-link"),
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

// ---------------------------------------------------------------------------
// Driven by the OpenAPI document: every documented operation, with path and
// query parameters and JSON bodies generated from its own schemas (valid
// shapes, wrong types, hostile strings). A new route is fuzzed the day it is
// documented. The seed is printed; COURIER_FUZZ_SEED replays a run.

use rand::{Rng, SeedableRng};

/// Strings that have broken parsers elsewhere, plus valid-looking values so
/// some requests get past validation.
const NASTY: &[&str] = &[
    "",
    " ",
    "a",
    "\u{0}",
    "../../etc/passwd",
    "/etc/passwd",
    "%00",
    "'; DROP TABLE mkt_wap_accounts; --",
    "<script>alert(1)</script>",
    "+447700900123",
    "447700900123@c.us",
    "120363000000000001@g.us",
    "123456789@lid",
    "2099-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "not-a-date",
    "22:00",
    "25:61",
    "UTC",
    "Asia/Kolkata",
    "Mars/Olympus",
    "*/5 * * * *",
    "https://example.com/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "ftp://x/y",
    "image",
    "text",
    "individual",
    "group",
    "send",
    "queued",
    "failed",
    "ﷺ😀\u{202e}",
];

struct Gen<'a> {
    doc: &'a Value,
    ids: Vec<String>,
    rng: rand::rngs::StdRng,
}

impl Gen<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                &self.doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    fn string(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => "x".repeat(self.rng.random_range(1000..70_000)),
            1 | 2 => self.ids[self.rng.random_range(0..self.ids.len())].clone(),
            _ => NASTY[self.rng.random_range(0..NASTY.len())].to_string(),
        }
    }

    fn scalar(&mut self) -> Value {
        match self.rng.random_range(0..7) {
            0 => Value::Null,
            1 => json!(self.rng.random::<bool>()),
            2 => json!([0i64, 1, -1, 3, 100, i64::MAX, i64::MIN][self.rng.random_range(0..7)]),
            3 => json!(1e308),
            4 => json!(u64::MAX),
            5 => json!([]),
            _ => Value::String(self.string()),
        }
    }

    /// A value for `schema`: mostly the right shape, sometimes not.
    fn value(&mut self, schema: &Value, depth: u32) -> Value {
        let schema = self.resolve(schema).clone();
        if depth > 4 || self.rng.random_ratio(1, 12) {
            return self.scalar();
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = schema[key].as_array().filter(|a| !a.is_empty()) {
                let pick = alts[self.rng.random_range(0..alts.len())].clone();
                return self.value(&pick, depth + 1);
            }
        }
        if let Some(all) = schema["allOf"].as_array() {
            let mut out = Map::new();
            for s in all.clone() {
                if let Value::Object(m) = self.value(&s, depth + 1) {
                    out.extend(m);
                }
            }
            return Value::Object(out);
        }
        if let Some(options) = schema["enum"].as_array().filter(|a| !a.is_empty()) {
            if self.rng.random_ratio(4, 5) {
                return options[self.rng.random_range(0..options.len())].clone();
            }
        }
        // OpenAPI 3.1: `type` may list several (["string", "null"]).
        let types: Vec<String> = match &schema["type"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            _ if schema["properties"].is_object() => vec!["object".into()],
            _ => vec![],
        };
        let Some(ty) =
            (!types.is_empty()).then(|| types[self.rng.random_range(0..types.len())].clone())
        else {
            return self.scalar();
        };
        match ty.as_str() {
            "null" => Value::Null,
            "boolean" => json!(self.rng.random::<bool>()),
            "integer" => json!(
                [0i64, 1, 2, 5, -1, 1000, i32::MAX as i64 + 1, i64::MAX]
                    [self.rng.random_range(0..8)]
            ),
            "number" => json!([0.0, 0.5, -1.0, 1e12][self.rng.random_range(0..4)]),
            "string" => match schema["format"].as_str() {
                Some("uuid") if self.rng.random_ratio(3, 4) => {
                    json!(self.ids[self.rng.random_range(0..3)])
                }
                Some("date-time") if self.rng.random_ratio(1, 2) => {
                    json!(
                        ["2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]
                            [self.rng.random_range(0..2)]
                    )
                }
                _ => Value::String(self.string()),
            },
            "array" => {
                let n = self.rng.random_range(0..4);
                let items = schema["items"].clone();
                Value::Array((0..n).map(|_| self.value(&items, depth + 1)).collect())
            }
            "object" => {
                let required: Vec<String> = schema["required"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut out = Map::new();
                if let Some(props) = schema["properties"].as_object() {
                    for (k, s) in props.clone() {
                        let keep = if required.contains(&k) { 19 } else { 12 };
                        if self.rng.random_ratio(keep, 20) {
                            let v = self.value(&s, depth + 1);
                            out.insert(k, v);
                        }
                    }
                }
                if self.rng.random_ratio(1, 10) {
                    out.insert(self.string(), self.scalar());
                }
                Value::Object(out)
            }
            _ => self.scalar(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_survives_inputs_generated_from_its_schema() {
    let (app, account, group) = spawn_with_rows("120363000000000002@g.us").await;
    let (base, http) = (&app.base, &app.http);
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Found by this test (seed 6172272762196364758): a NUL in a text field
    // reached Postgres, which refuses it, and came back as a 503.
    let nul = http
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(TOKEN)
        .json(&json!({"account_name": "\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), 422);
    let seed = std::env::var("COURIER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("openapi fuzz seed: {seed} (COURIER_FUZZ_SEED={seed} replays it)");
    let mut g = Gen {
        doc: &doc,
        ids: vec![
            account.to_string(),
            group.to_string(),
            uuid::Uuid::new_v4().to_string(),
            "not-a-uuid".into(),
            "%2e%2e".into(),
        ],
        rng: rand::rngs::StdRng::seed_from_u64(seed),
    };
    let per_operation = 100;
    let mut operations = 0;
    let mut by_status = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            operations += 1;
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let body_schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
            for _ in 0..per_operation {
                let mut url = path.clone();
                // `%2e%2e` is resolved by the client into another route.
                let mut another_route = false;
                let mut query = Vec::new();
                for p in &params {
                    let name = p["name"].as_str().unwrap();
                    match p["in"].as_str() {
                        Some("path") => {
                            let id = g.ids[g.rng.random_range(0..g.ids.len())].clone();
                            another_route |= id.contains('%');
                            url = url.replace(&format!("{{{name}}}"), &id);
                        }
                        Some("query") if g.rng.random_ratio(2, 3) => {
                            let mut v = match g.value(&p["schema"], 1) {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            // URIs over 64 KiB cannot even be built.
                            if v.len() > 8000 {
                                let mut n = 8000;
                                while !v.is_char_boundary(n) {
                                    n -= 1;
                                }
                                v.truncate(n);
                            }
                            query.push((name.to_string(), v));
                        }
                        _ => {}
                    }
                }
                let mut rb = http
                    .request(m.clone(), format!("{base}{url}"))
                    .bearer_auth(TOKEN)
                    .query(&query);
                let body = (!body_schema.is_null()).then(|| g.value(&body_schema, 0));
                if let Some(b) = &body {
                    rb = rb.json(b);
                }
                let resp = rb.send().await.unwrap();
                let status = resp.status().as_u16();
                *by_status.entry(status).or_insert(0u32) += 1;
                // An event stream (GET /v1/events) never ends: its status
                // is the answer.
                if resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v == "text/event-stream")
                {
                    continue;
                }
                let text = resp.text().await.unwrap();
                assert!(
                    status < 500,
                    "seed {seed}: {method} {url} {query:?} with {body:?} -> {status}: {text}"
                );
                // Every status a route answers is one its operation declares.
                assert!(
                    another_route || op["responses"][status.to_string()].is_object(),
                    "seed {seed}: {method} {path} answered {status}, which /openapi.json does not declare \
                     ({method} {url} {query:?} with {body:?}: {text})"
                );
                if status >= 400 && status != 404 {
                    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                        panic!("seed {seed}: {method} {url} -> {status}, non-JSON error body: {text:?}")
                    });
                    assert!(v["error"].is_string() && v["detail"].is_string(), "{text}");
                }
            }
        }
    }
    eprintln!("openapi fuzz: {operations} operations x {per_operation}: {by_status:?}");
    assert!(operations >= 20, "the document lists the API");
    assert!(
        by_status.keys().any(|s| *s < 300),
        "some generated requests must get past validation"
    );
}
