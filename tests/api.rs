//! The HTTP API against a real server and a real Postgres.

use reqwest::StatusCode;
use serde_json::{json, Value};

use courier_testkit::{spawn_app, TestApp, TestDb, TEST_TOKEN as TOKEN};

#[tokio::test]
async fn every_protected_route_requires_the_token() {
    let app = spawn_app().await;
    for path in [
        "/v1/accounts",
        "/v1/groups",
        "/v1/stats",
        "/whatsapp/accounts",
        "/whatsapp/stats",
    ] {
        let url = format!("{}{path}", app.base);
        let none = app.http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        let wrong = app
            .http
            .get(&url)
            .bearer_auth("test-token-0123456788")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let basic = app
            .http
            .get(&url)
            .basic_auth("x", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // Probes and the OpenAPI document are open.
    for path in ["/livez", "/readyz", "/openapi.json"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn accounts_are_created_validated_and_listed() {
    let app = spawn_app().await;
    let (s, a) = app
        .post_json("/v1/accounts", json!({"account_name": "Sales 1", "phone_number": "+44 7700 900123", "timezone": "Asia/Kolkata"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["phone_number"], "447700900123");
    assert_eq!(a["status"], "inactive");
    assert_eq!(a["health_score"], 100);
    assert_eq!(a["timezone"], "Asia/Kolkata");
    let id = a["id"].as_str().unwrap();

    let (s, got) = app.get(&format!("/v1/accounts/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["account_name"], "Sales 1");
    let (s, list) = app.get("/v1/accounts").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Field-level errors.
    for (body, field, status) in [
        (
            json!({"account_name": ""}),
            "account_name",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"account_name": "x", "phone_number": "12ab"}),
            "phone_number",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"account_name": "x", "timezone": "Mars/Olympus"}),
            "timezone",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"account_name": 5}),
            "account_name",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"account_name": "x", "bogus": 1}),
            "bogus",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, e) = app.post_json("/v1/accounts", body.clone()).await;
        assert_eq!(s, status, "{body} -> {e}");
        assert_eq!(e["field"], field, "{body} -> {e}");
        assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // A phone number belongs to one account.
    let (s, e) = app
        .post_json(
            "/v1/accounts",
            json!({"account_name": "dup", "phone_number": "447700900123"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // Unknown and malformed ids.
    let (s, _) = app
        .get(&format!("/v1/accounts/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = app.get("/v1/accounts/not-a-uuid").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // A body that is not JSON at all.
    let (s, e) = app
        .send(
            app.request(reqwest::Method::POST, "/v1/accounts")
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = app
        .send(
            app.request(reqwest::Method::POST, "/v1/accounts")
                .body("account_name=x"),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{e}");
    assert_eq!(e["error"], "unsupported_media_type");
    // serde reads a struct from an array of its fields; the document says
    // object, and so does the server.
    let (s, e) = app
        .post_json("/v1/accounts", json!(["x", null, null]))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}

async fn seed_group(db: &TestDb, gid: &str, name: &str) -> uuid::Uuid {
    sqlx::query_scalar("INSERT INTO mkt_wap_groups (group_id, name, member_count) VALUES ($1, $2, 10) RETURNING id")
        .bind(gid)
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn groups_are_filtered_and_tagged() {
    let app = spawn_app().await;
    let g1 = seed_group(&app.db, "120363000000000001@g.us", "Poultry Farmers Pune").await;
    let _g2 = seed_group(&app.db, "120363000000000002@g.us", "Feed Dealers Nashik").await;

    let (s, g) = app
        .patch_json(&format!("/v1/groups/{g1}"), json!({"region": "west", "district": "Pune", "segment_tags": ["farmer", "layer", "farmer"]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["segment_tags"], json!(["farmer", "layer"]));
    assert_eq!(g["region"], "west");

    let (_, by_tag) = app.get("/v1/groups?tag=farmer").await;
    assert_eq!(by_tag.as_array().unwrap().len(), 1);
    let (_, by_search) = app.get("/v1/groups?search=dealers").await;
    assert_eq!(by_search[0]["name"], "Feed Dealers Nashik");
    let (_, by_region) = app.get("/v1/groups?region=west").await;
    assert_eq!(by_region.as_array().unwrap().len(), 1);
    let (_, all) = app.get("/v1/groups?limit=1").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let after = all[0]["id"].as_str().unwrap();
    let (_, next) = app.get(&format!("/v1/groups?limit=1&after={after}")).await;
    assert_eq!(next.as_array().unwrap().len(), 1);
    assert_ne!(next[0]["id"], all[0]["id"]);

    // Patching only the region keeps the tags.
    let (_, g) = app
        .patch_json(&format!("/v1/groups/{g1}"), json!({"region": "north"}))
        .await;
    assert_eq!(g["segment_tags"], json!(["farmer", "layer"]));

    for (body, field) in [
        (json!({"segment_tags": ["ok", " "]}), "segment_tags[1]"),
        (json!({"region": "x".repeat(101)}), "region"),
    ] {
        let (s, e) = app.patch_json(&format!("/v1/groups/{g1}"), body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e["field"], field);
    }
    let (s, _) = app.get("/v1/groups?limit=0").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app.get("/v1/groups?color=red").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .patch_json(&format!("/v1/groups/{}", uuid::Uuid::new_v4()), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn seed_routes_speak_camel_case() {
    let app = spawn_app().await;
    let (s, a) = app
        .post_json(
            "/whatsapp/accounts",
            json!({"accountName": "Legacy", "phoneNumber": "919876543210"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["accountName"], "Legacy");
    assert_eq!(a["healthScore"], 100);
    assert!(a.get("account_name").is_none());
    let g = seed_group(&app.db, "120363000000000003@g.us", "Legacy group").await;
    let (s, g) = app
        .send(
            app.request(reqwest::Method::PUT, &format!("/whatsapp/groups/{g}"))
                .json(&json!({"segmentTags": ["broiler"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["segmentTags"], json!(["broiler"]));
    let (_, stats) = app.get("/whatsapp/stats").await;
    assert_eq!(stats["accountsTotal"], 1);
    assert_eq!(stats["groups"], 1);
}

#[tokio::test]
async fn stats_count_by_status() {
    let app = spawn_app().await;
    for name in ["a", "b"] {
        app.post_json("/v1/accounts", json!({"account_name": name}))
            .await;
    }
    let (s, st) = app.get("/v1/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["accounts"]["inactive"], 2);
    assert_eq!(st["accounts_total"], 2);
    assert_eq!(st["messages_total"], 0);
}

#[tokio::test]
async fn openapi_describes_every_route_and_its_errors() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/accounts",
        "/v1/accounts/{id}",
        "/v1/groups",
        "/v1/groups/{id}",
        "/v1/stats",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(doc["paths"]["/v1/accounts"]["post"]["responses"]["422"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let app = spawn_app().await;
    let (s, e) = app.get("/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"], "not_found");
}

#[tokio::test]
async fn metrics_count_requests_by_route_not_by_id() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();
    app.get(&format!("/v1/accounts/{id}")).await;
    courier::metrics::sample_database(
        &app.db.pool,
        courier::metrics::SampleOptions::from_settings(&courier::config::Settings::defaults()),
    )
    .await
    .unwrap();
    let resp = app
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            r#"courier_http_requests_total{route="/v1/accounts/{id}",method="GET",status="404"}"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(&id.to_string()),
        "raw ids must not become labels"
    );
    assert!(
        text.contains(r#"courier_messages{status="queued"} 0"#),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

async fn account(app: &TestApp, name: &str) -> String {
    let (s, a) = app
        .post_json("/v1/accounts", json!({"account_name": name}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    a["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn jobs_enqueue_idempotently_list_and_cancel() {
    let app = spawn_app().await;
    let acc = account(&app, "jobs").await;
    let body = json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "idempotency_key": "d-1"});
    let (s, j) = app.post_json("/v1/jobs", body.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["state"], "available");
    let (s, again) = app.post_json("/v1/jobs", body).await;
    assert_eq!(s, StatusCode::OK, "a repeated key returns the existing job");
    assert_eq!(again["id"], j["id"]);
    // The key may come in a header too.
    let hdr = app
        .send(
            app.request(reqwest::Method::POST, "/v1/jobs")
                .header("Idempotency-Key", "d-2")
                .json(&json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "run_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(hdr.0, StatusCode::ACCEPTED);
    assert_eq!(hdr.1["idempotency_key"], "d-2");
    assert_eq!(hdr.1["state"], "scheduled");

    let (s, page) = app.get("/v1/jobs?kind=discover&limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!("/v1/jobs?kind=discover&limit=1&after={next}"))
        .await;
    assert_eq!(page2["jobs"].as_array().unwrap().len(), 1);
    assert!(page2["next"].is_null());

    let id = j["id"].as_str().unwrap();
    let (s, c) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "cancelled");
    let (s, e) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = app.get(&format!("/v1/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    for (body, field, status) in [
        // Not one of the document's kinds: the body does not parse.
        (
            json!({"kind": "explode", "account_id": acc, "payload": {}}),
            "kind",
            StatusCode::BAD_REQUEST,
        ),
        // Well formed, but no such account: 404 naming the field.
        (
            json!({"kind": "discover", "account_id": uuid::Uuid::new_v4(), "payload": {"account_id": acc}}),
            "account_id",
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"kind": "scrape", "account_id": acc, "payload": {"account_id": acc}}),
            "payload",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "retry", "account_id": acc, "payload": {"message_id": uuid::Uuid::new_v4(), "retry_number": 0}}),
            "payload.retry_number",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "priority": 5000}),
            "priority",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, e) = app.post_json("/v1/jobs", body.clone()).await;
        assert_eq!(s, status, "{body} -> {e}");
        assert_eq!(e["field"], field, "{body} -> {e}");
    }
    let (s, _) = app.get("/v1/jobs?state=exploded").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn job_batches_are_all_or_nothing() {
    let app = spawn_app().await;
    let acc = account(&app, "batch").await;
    let good = |i: usize| json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "idempotency_key": format!("b-{i}")});
    let mut jobs: Vec<Value> = (0..500).map(good).collect();
    jobs.push(json!({"kind": "discover", "account_id": acc, "payload": {}}));
    let (s, e) = app.post_json("/v1/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["field"], "jobs[500].payload");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing is queued when one job is bad");

    let jobs: Vec<Value> = (0..500).map(good).collect();
    let (s, out) = app.post_json("/v1/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(out.as_array().unwrap().len(), 500);
    assert!(out.as_array().unwrap().iter().all(|i| i["created"] == true));
    let (_, again) = app
        .post_json(
            "/v1/jobs/batch",
            json!({"jobs": (0..3).map(good).collect::<Vec<_>>()}),
        )
        .await;
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["created"] == false));
    assert_eq!(again[0]["id"], out[0]["id"]);

    let too_many: Vec<Value> = (0..10_001).map(good).collect();
    let (s, e) = app
        .post_json("/v1/jobs/batch", json!({"jobs": too_many}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["field"], "jobs");
    let (s, _) = app.post_json("/v1/jobs/batch", json!({"jobs": []})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn messages_are_validated_queued_listed_and_retried() {
    let app = spawn_app().await;
    let acc = account(&app, "sender").await;
    let other = account(&app, "other").await;
    let gid = seed_group(&app.db, "120363000000000009@g.us", "Farmers").await;
    sqlx::query("INSERT INTO mkt_wap_account_groups (account_id, group_id) VALUES ($1::uuid, $2)")
        .bind(&acc)
        .bind(gid)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let (s, r) = app
        .post_json("/v1/messages", json!({"account_id": acc, "channel_type": "group", "target_group_id": gid, "message_text": "Hello farmers", "idempotency_key": "m-1"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    let m = &r["messages"][0];
    assert_eq!(m["status"], "queued");
    assert_eq!(m["target_chat_id"], "120363000000000009@g.us");
    assert!(m["job_id"].is_string());
    let (s, again) = app
        .post_json("/v1/messages", json!({"account_id": acc, "channel_type": "group", "target_group_id": gid, "message_text": "Hello farmers", "idempotency_key": "m-1"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["messages"][0]["id"], m["id"]);

    let (s, b) = app
        .post_json("/v1/messages", json!({"account_id": acc, "channel_type": "broadcast", "recipients": ["+44 7700 900001", "447700900002@c.us", "+447700900001"], "message_type": "link", "link_url": "https://example.com/offer", "message_text": "See"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        b["messages"].as_array().unwrap().len(),
        2,
        "duplicates collapse"
    );
    assert_eq!(
        b["messages"][0]["message_text"],
        "See https://example.com/offer"
    );

    let id = m["id"].as_str().unwrap();
    let (s, d) = app.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["events"][0]["status"], "queued");
    assert_eq!(d["events"][0]["source"], "api");
    let (_, queued) = app.get("/v1/messages?status=queued").await;
    assert_eq!(queued.as_array().unwrap().len(), 3);

    // Retry only failed messages, at most max_retries times.
    let (s, e) = app
        .post_json(&format!("/v1/messages/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    sqlx::query("UPDATE mkt_wap_messages SET status = 'failed', error_message = 'quota' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, r) = app
        .post_json(&format!("/v1/messages/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "queued");
    assert_eq!(r["retry_count"], 1);
    let kind: String = sqlx::query_scalar("SELECT kind FROM queue_jobs WHERE id = $1::uuid")
        .bind(r["job_id"].as_str().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(kind, "retry");
    sqlx::query(
        "UPDATE mkt_wap_messages SET status = 'failed', retry_count = 3 WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (s, e) = app
        .post_json(&format!("/v1/messages/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    let long = "x".repeat(65_537);
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    for (body, field, status) in [
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "12ab", "message_text": "hi"}),
            "target_phone",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_chat_id": "nonsense", "message_text": "hi"}),
            "target_chat_id",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900001", "message_text": "  "}),
            "message_text",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900001", "message_text": long}),
            "message_text",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900001", "message_type": "image", "media_url": "ftp://x/y"}),
            "media_url",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900001", "message_type": "image", "media_path": "../../etc/passwd"}),
            "media_path",
            invalid,
        ),
        (
            json!({"account_id": other, "channel_type": "group", "target_group_id": gid, "message_text": "hi"}),
            "target_group_id",
            StatusCode::CONFLICT,
        ),
        (
            json!({"account_id": acc, "channel_type": "group", "target_chat_id": "120363999999999999@g.us", "message_text": "hi"}),
            "target_chat_id",
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"account_id": acc, "channel_type": "megaphone", "message_text": "hi"}),
            "channel_type",
            invalid,
        ),
        (
            json!({"account_id": acc, "channel_type": "broadcast", "recipients": ["+447700900001", "120363000000000009@g.us"], "message_text": "hi"}),
            "recipients[1]",
            invalid,
        ),
        // No foreign key guards the campaign-system ids any more
        // (docs/schema.md); the API checks them itself.
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900003", "message_text": "hi", "campaign_id": uuid::Uuid::now_v7()}),
            "campaign_id",
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900003", "message_text": "hi", "content_id": uuid::Uuid::now_v7()}),
            "content_id",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (s, e) = app.post_json("/v1/messages", body.clone()).await;
        assert_eq!(s, status, "{e}");
        assert_eq!(e["field"], field, "{e}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(total, 3, "rejected requests queue nothing");

    // Existing campaign-system rows are accepted and linked.
    let (campaign, content): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "WITH c AS (INSERT INTO mkt_campaigns (name) VALUES ('spring') RETURNING id) \
         INSERT INTO mkt_con_content (campaign_id, body) SELECT id, 'hi' FROM c \
         RETURNING campaign_id, id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (s, r) = app
        .post_json("/v1/messages", json!({"account_id": acc, "channel_type": "individual", "target_phone": "+447700900003", "message_text": "hi", "campaign_id": campaign, "content_id": content}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["messages"][0]["campaign_id"], campaign.to_string());
    assert_eq!(r["messages"][0]["content_id"], content.to_string());
}

#[tokio::test]
async fn accounts_pause_resume_limits_and_show_their_budget() {
    let app = spawn_app().await;
    let acc = account(&app, "budgeted").await;
    let (s, a) = app
        .patch_json(&format!("/v1/accounts/{acc}/limits"), json!({"rate_limit_config": {"per_minute": 2, "per_hour": 30, "per_day": 100, "quiet_hours": {"start": "22:00", "end": "07:00"}}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["daily_usage_limit"], 100);
    for (cfg, field, status) in [
        // Outside the document's types: the body does not parse.
        (
            json!({"per_minute": -1}),
            "rate_limit_config.per_minute",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"per_mintue": 3}),
            "rate_limit_config.per_mintue",
            StatusCode::BAD_REQUEST,
        ),
        (json!([1, 2]), "rate_limit_config", StatusCode::BAD_REQUEST),
        // Parsed, but past a declared bound or pattern.
        (
            json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}),
            "rate_limit_config.quiet_hours.start",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"per_day": 100_001}),
            "rate_limit_config.per_day",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // Each valid, together in conflict (with the defaults filled in).
        (
            json!({"per_minute": 50, "per_hour": 10}),
            "rate_limit_config",
            StatusCode::CONFLICT,
        ),
    ] {
        let (s, e) = app
            .patch_json(
                &format!("/v1/accounts/{acc}/limits"),
                json!({"rate_limit_config": cfg}),
            )
            .await;
        assert_eq!(s, status, "{cfg} -> {e}");
        assert_eq!(e["field"], field, "{cfg} -> {e}");
    }
    // An integral float is an integer to JSON Schema, and so to the server.
    let (s, a) = app
        .patch_json(
            &format!("/v1/accounts/{acc}/limits"),
            json!({"rate_limit_config": {"per_minute": 2.0, "per_hour": 30, "per_day": 100}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // Two sends in the last minute fill the per-minute window.
    sqlx::query("INSERT INTO account_sends (account_id, job_id, epoch, sent_at) SELECT $1::uuid, gen_random_uuid(), 1, now() - interval '10 seconds' FROM generate_series(1, 2)")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, d) = app.get(&format!("/v1/accounts/{acc}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let minute = d["budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "minute")
        .unwrap()
        .clone();
    assert_eq!(minute["limit"], 2);
    assert_eq!(minute["used"], 2);
    assert_eq!(minute["remaining"], 0);
    assert!(d["next_send_reason"].is_string(), "{d}");
    assert!(d["lease"].is_null());

    let (s, p) = app
        .post_json(
            &format!("/v1/accounts/{acc}/pause"),
            json!({"reason": "campaign review"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "paused");
    assert_eq!(p["pause_reason"], "campaign review");
    assert!(p["paused_until"].is_null());
    let (s, r) = app
        .post_json(&format!("/v1/accounts/{acc}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    // Back to what the pause interrupted: this account never logged in, so
    // it is inactive again (resuming used to make it `active`).
    assert_eq!(r["status"], "inactive");
    let (s, _) = app
        .post_json(&format!("/v1/accounts/{acc}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, e) = app
        .post_json(&format!("/v1/accounts/{acc}/pause"), json!({"reason": ""}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // A past `until` is well formed; it conflicts with the clock.
    let (s, e) = app
        .post_json(
            &format!("/v1/accounts/{acc}/pause"),
            json!({"reason": "x", "until": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["field"], "until");
}

#[tokio::test]
async fn seed_message_routes_take_camel_case_bodies() {
    let app = spawn_app().await;
    let acc = account(&app, "legacy-sender").await;
    let (s, m) = app
        .post_json("/whatsapp/messages", json!({"accountId": acc, "messageType": "text", "messageText": "Hello from PoultryCo!", "channelType": "individual", "targetPhone": "+919876543210"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["targetChatId"], "919876543210@c.us");
    let id = m["id"].as_str().unwrap();
    let (s, d) = app.get(&format!("/whatsapp/messages/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["events"][0]["source"], "api");
    let (_, list) = app
        .get(&format!("/whatsapp/messages?status=queued&accountId={acc}"))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, e) = app
        .post_json(
            "/whatsapp/messages",
            json!({"accountId": acc, "channelType": "individual", "bogusField": 1}),
        )
        .await;
    // Unknown fields are ignored on the seed routes (the UI sends whole
    // objects); what is missing is still named, as the UI spells it.
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["field"], "messageText");
    let (s, _) = app
        .post_json(&format!("/whatsapp/messages/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn login_enqueues_once_and_the_qr_is_served_as_json_svg_and_png() {
    let app = spawn_app().await;
    let acc = account(&app, "qr").await;
    let (s, j) = app
        .post_json(&format!("/v1/accounts/{acc}/login"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["kind"], "login");
    let (s, again) = app
        .post_json(&format!("/v1/accounts/{acc}/login"), json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a login under way is returned, not duplicated"
    );
    assert_eq!(again["id"], j["id"]);

    // No QR yet: JSON says so, images are 404.
    let (s, q) = app.get(&format!("/v1/accounts/{acc}/qr")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(q["qr_token"].is_null());
    let r = app
        .request(reqwest::Method::GET, &format!("/v1/accounts/{acc}/qr"))
        .header("accept", "image/svg+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The browser layer stores the QR it sees.
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'qr_pending', qr_token = '2@abc,def,ghi,jkl,1', qr_expires_at = now() + interval '20 seconds' WHERE id = $1::uuid")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, q) = app.get(&format!("/v1/accounts/{acc}/qr")).await;
    assert_eq!(q["qr_token"], "2@abc,def,ghi,jkl,1");
    assert!(q["qr_expires_at"].is_string());
    let r = app
        .request(reqwest::Method::GET, &format!("/v1/accounts/{acc}/qr"))
        .header("accept", "image/svg+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().starts_with("<?xml"));
    let r = app
        .request(reqwest::Method::GET, &format!("/v1/accounts/{acc}/qr"))
        .header("accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(&r.bytes().await.unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let (_, seed) = app.get(&format!("/whatsapp/accounts/{acc}/qr")).await;
    assert!(seed["qrCode"]
        .as_str()
        .unwrap()
        .starts_with("data:image/svg+xml"));

    // An expired token is not served.
    sqlx::query("UPDATE mkt_wap_accounts SET qr_expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, q) = app.get(&format!("/v1/accounts/{acc}/qr")).await;
    assert!(q["qr_token"].is_null());

    // Logout keeps the jobs and marks the account: `disconnected`, which
    // raises no alert (`logged_out` is for sessions WhatsApp ended).
    let (s, out) = app
        .post_json(&format!("/v1/accounts/{acc}/logout"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(out["status"], "disconnected");
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'banned' WHERE id = $1::uuid")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, _) = app
        .post_json(&format!("/v1/accounts/{acc}/login"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a banned account cannot log in");
}

#[tokio::test]
async fn the_login_page_needs_a_signed_link_and_shows_qr_then_connected() {
    let app = spawn_app().await;
    let acc = account(&app, "Page <test>").await;
    let url = app.login_link(&acc).await;
    let page = |url: String| app.http.get(url).send();
    let bare = format!("{}/ui/accounts/{acc}/login", app.base);
    assert_eq!(
        page(bare.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The API token is no longer accepted in the URL.
    assert_eq!(
        page(format!("{bare}?token={TOKEN}"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'qr_pending', qr_token = 'ref-1,a,b,c,1', qr_expires_at = now() + interval '60 seconds' WHERE id = $1::uuid")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let html = page(url.clone()).await.unwrap().text().await.unwrap();
    assert!(
        html.contains("<svg") && html.contains("http-equiv=\"refresh\""),
        "{html}"
    );
    assert!(html.contains("Page &lt;test&gt;"), "names are escaped");
    assert!(!html.contains(TOKEN), "no API token in the page");
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'active', phone_number = '447700900123', qr_token = NULL WHERE id = $1::uuid")
        .bind(&acc)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let html = page(url).await.unwrap().text().await.unwrap();
    assert!(html.contains("Connected as +447700900123"), "{html}");
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "a connected page stops refreshing"
    );
}

#[tokio::test]
async fn discover_and_scrape_enqueue_browser_jobs() {
    let app = spawn_app().await;
    let acc = account(&app, "disc").await;
    let (s, j) = app
        .post_json(&format!("/v1/accounts/{acc}/groups/discover"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["kind"], "discover");
    let g = seed_group(&app.db, "120363000000000077@g.us", "g").await;
    let (s, e) = app
        .post_json(&format!("/v1/groups/{g}/scrape"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "no member account yet: {e}");
    sqlx::query("INSERT INTO mkt_wap_account_groups (account_id, group_id) VALUES ($1::uuid, $2)")
        .bind(&acc)
        .bind(g)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, j) = app
        .send(app.request(reqwest::Method::POST, &format!("/v1/groups/{g}/scrape")))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["payload"]["group_id"], g.to_string());
    let (s, e) = app
        .post_json(
            &format!("/v1/groups/{g}/scrape"),
            json!({"account_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "not a member: {e}");
    assert_eq!(e["field"], "account_id");
    let (s, _) = app
        .post_json(
            &format!("/v1/groups/{}/scrape", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, j) = app
        .post_json(
            &format!("/whatsapp/groups/{g}/scrape-contacts"),
            json!({"accountId": acc}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the same scrape is under way: {j}");
}

/// The document's bounds are the server's: `priority` at each declared bound
/// is accepted, one past it is refused with the declared 422 (not a 400 from
/// an i16 overflow), and an integral float is an integer, as in JSON Schema.
#[tokio::test]
async fn priority_is_accepted_up_to_the_documented_bound_and_refused_past_it() {
    let app = spawn_app().await;
    let acc = account(&app, "bounds").await;
    let (_, doc) = app.get("/openapi.json").await;
    let priority = &doc["components"]["schemas"]["EnqueueDiscoverJob"]["properties"]["priority"];
    let (min, max) = (
        priority["minimum"]
            .as_i64()
            .expect("priority has a minimum"),
        priority["maximum"]
            .as_i64()
            .expect("priority has a maximum"),
    );
    assert_eq!((min, max), (-1000, 1000));
    let create = &doc["paths"]["/v1/jobs"]["post"]["responses"];
    let job = |p: Value| json!({"kind": "discover", "account_id": acc, "payload": {"account_id": acc}, "priority": p});
    for p in [json!(min), json!(max), json!(max as f64)] {
        let (s, j) = app.post_json("/v1/jobs", job(p.clone())).await;
        assert!(
            s == StatusCode::ACCEPTED || s == StatusCode::OK,
            "{p} -> {s} {j}"
        );
        assert!(create[s.as_str()].is_object(), "{s} is declared");
    }
    for p in [
        json!(max + 1),
        json!(min - 1),
        json!(40_000),
        json!(-3_501_047),
    ] {
        let (s, e) = app.post_json("/v1/jobs", job(p.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p} -> {e}");
        assert_eq!(e["field"], "priority");
        assert!(create["422"].is_object(), "422 is declared for createJob");
    }
}

/// Job payloads are typed per kind: `oneOf` on `kind`, each with its payload.
#[tokio::test]
async fn job_payloads_are_typed_per_kind_in_the_document() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let enqueue = &schemas["EnqueueJob"];
    assert_eq!(
        enqueue["discriminator"]["propertyName"], "kind",
        "{enqueue}"
    );
    let mapping = enqueue["discriminator"]["mapping"].as_object().unwrap();
    let kinds: Vec<&str> = mapping.keys().map(String::as_str).collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    for (kind, payload, field) in [
        ("send", "SendJob", "message_id"),
        ("discover", "DiscoverJob", "account_id"),
        ("scrape", "ScrapeJob", "group_id"),
        ("retry", "RetryJob", "retry_number"),
        ("health_check", "HealthCheckJob", "account_id"),
        ("login", "LoginJob", "account_id"),
    ] {
        let name = mapping[kind].as_str().unwrap().rsplit('/').next().unwrap();
        let variant = &schemas[name];
        assert_eq!(
            variant["properties"]["kind"]["enum"],
            json!([kind]),
            "{name}"
        );
        assert_eq!(
            variant["properties"]["payload"]["$ref"],
            format!("#/components/schemas/{payload}"),
            "{name}"
        );
        assert!(
            schemas[payload]["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{payload} requires {field}"
        );
    }
    assert_eq!(
        schemas["RetryJob"]["properties"]["retry_number"]["minimum"],
        1
    );
}

/// `/docs` serves Swagger UI from the binary (no CDN) without a token, over
/// the same document as `/openapi.json`.
#[tokio::test]
async fn docs_ui_is_served_offline_without_a_token() {
    let app = spawn_app().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();
    let page = get("/docs/").await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for tag in html
        .split("<script")
        .skip(1)
        .chain(html.split("<link").skip(1))
    {
        let src = tag.split('>').next().unwrap_or_default();
        assert!(
            !src.contains("http://") && !src.contains("https://"),
            "an asset from the network: {src}"
        );
    }
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let r = get(asset).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset.ends_with("initializer.js") {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
}

/// `/v1/schedules`: create (checked as the scheduler reads it), list with
/// filters and paging, get, pause and resume; a campaign system's row is
/// listed too; reading needs `read`, writing `enqueue`.
#[tokio::test]
async fn schedules_are_created_checked_listed_paused_and_resumed() {
    let app = spawn_app().await;
    let p = app.pool().clone();
    let (campaign, content): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "WITH c AS (INSERT INTO mkt_campaigns (name) VALUES ('spring') RETURNING id) \
         INSERT INTO mkt_con_content (campaign_id, body) SELECT id, 'Hello' FROM c RETURNING campaign_id, id",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    // The campaign system's own row, written its way.
    let seed: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_con_schedule (campaign_id, content_id, scheduled_at) \
         VALUES ($1, $2, now() + interval '1 day') RETURNING id",
    )
    .bind(campaign)
    .bind(content)
    .fetch_one(&p)
    .await
    .unwrap();

    let body = |extra: Value| {
        let mut b = json!({"content_id": content, "campaign_id": campaign,
                           "scheduled_at": "2099-01-01T09:00:00Z"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, status, field) in [
        (
            json!({"cron_expression": "every day"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cron_expression",
        ),
        (
            json!({"cron_expression": "61 * * * *"}),
            StatusCode::CONFLICT,
            "cron_expression",
        ),
        (
            json!({"timezone": "Mars/Olympus"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "timezone",
        ),
        (
            json!({"target_phone_numbers": ["12"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target_phone_numbers[0]",
        ),
        (
            json!({"content_id": uuid::Uuid::nil()}),
            StatusCode::NOT_FOUND,
            "content_id",
        ),
        (
            json!({"account_id": uuid::Uuid::nil()}),
            StatusCode::NOT_FOUND,
            "account_id",
        ),
        (
            json!({"catch_up_policy": "sometimes"}),
            StatusCode::BAD_REQUEST,
            "catch_up_policy",
        ),
    ] {
        let (got, b) = app.post_json("/v1/schedules", body(extra.clone())).await;
        assert_eq!(got, status, "{extra}: {b}");
        assert_eq!(b["field"], field, "{extra}: {b}");
    }
    let (st, b) = app
        .post_json(
            "/v1/schedules",
            body(json!({"cron_expression": "61 * * * *"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("invalid cron expression"),
        "{b}"
    );

    let (st, made) = app
        .post_json(
            "/v1/schedules",
            body(
                json!({"cron_expression": "0 9 * * 1-5", "timezone": "Asia/Kolkata",
                        "target_segment_tags": ["vip"], "catch_up_policy": "skip"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["status"], "scheduled");
    assert_eq!(made["timezone"], "Asia/Kolkata");
    assert_eq!(made["catch_up_policy"], "skip");
    assert_eq!(made["held"], false);
    let id = made["id"].as_str().unwrap().to_string();

    // Listed with the campaign system's row, a page at a time.
    let (st, all) = app
        .get(&format!("/v1/schedules?campaign_id={campaign}"))
        .await;
    assert_eq!(st, StatusCode::OK);
    let mut ids: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().into())
        .collect();
    let mut want = vec![id.clone(), seed.to_string()];
    want.sort();
    ids.sort();
    assert_eq!(ids, want);
    let (_, page1) = app
        .get(&format!("/v1/schedules?campaign_id={campaign}&limit=1"))
        .await;
    let first = page1[0]["id"].as_str().unwrap().to_string();
    let (_, page2) = app
        .get(&format!(
            "/v1/schedules?campaign_id={campaign}&limit=1&after={first}"
        ))
        .await;
    assert_eq!(page2.as_array().unwrap().len(), 1);
    assert_ne!(page2[0]["id"], page1[0]["id"]);
    let (st, _) = app.get("/v1/schedules?limit=0").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Pause and resume; the status filter sees it.
    let (st, paused) = app
        .post_json(&format!("/v1/schedules/{id}/pause"), json!({}))
        .await;
    assert_eq!(
        (st, paused["status"].as_str()),
        (StatusCode::OK, Some("paused")),
        "{paused}"
    );
    let (_, listed) = app.get("/v1/schedules?status=paused").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let (st, again) = app
        .post_json(&format!("/v1/schedules/{id}/pause"), json!({}))
        .await;
    assert_eq!(
        (st, again["status"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    let (st, resumed) = app
        .post_json(&format!("/v1/schedules/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (st, resumed["status"].as_str()),
        (StatusCode::OK, Some("scheduled"))
    );
    sqlx::query("UPDATE mkt_con_schedule SET status = 'failed' WHERE id = $1")
        .bind(seed)
        .execute(&p)
        .await
        .unwrap();
    let (st, b) = app
        .post_json(&format!("/v1/schedules/{seed}/pause"), json!({}))
        .await;
    assert_eq!(
        (st, b["field"].as_str()),
        (StatusCode::CONFLICT, Some("status")),
        "{b}"
    );
    let (st, _) = app
        .get(&format!("/v1/schedules/{}", uuid::Uuid::nil()))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A paused campaign shows on its schedules.
    sqlx::query("UPDATE mkt_campaigns SET status = 'paused' WHERE id = $1")
        .bind(campaign)
        .execute(&p)
        .await
        .unwrap();
    let (_, one) = app.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(
        (one["held"].as_bool(), one["campaign_status"].as_str()),
        (Some(true), Some("paused"))
    );

    // Scopes: read lists, only enqueue (or admin) writes.
    let reader = app.create_token("reader", "read", None).await;
    let url = app.url("/v1/schedules");
    let r = app
        .http
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .post(&url)
        .bearer_auth(&reader)
        .json(&body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let writer = app.create_token("writer", "enqueue", None).await;
    let r = app
        .http
        .post(&url)
        .bearer_auth(&writer)
        .json(&body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
