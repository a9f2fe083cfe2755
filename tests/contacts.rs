//! `/v1/contacts` and the seed's `/whatsapp/...` routes as the admin UI uses
//! them, against a real server and a real Postgres (no browser: the browser
//! side of opt-out, initialize and disconnect is in tests/admin_ui.rs).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use courier_testkit::{insert_account, spawn_app, TestApp};

async fn contact(app: &TestApp, phone: &str, name: &str, tags: &[&str]) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO mkt_wap_contacts (phone_number, name, segment_tags) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(phone)
    .bind(name)
    .bind(tags.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    .fetch_one(app.pool())
    .await
    .unwrap()
}

async fn active_account(app: &TestApp, name: &str) -> Uuid {
    let id = insert_account(app.pool(), name).await;
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'active' WHERE id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    id
}

async fn csv(app: &TestApp, body: &str) -> (StatusCode, Value) {
    app.send(
        app.request(Method::POST, "/v1/contacts/import")
            .header("content-type", "text/csv")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn contacts_are_filtered_tagged_and_paged() {
    let app = spawn_app().await;
    let a = contact(&app, "919800000001", "Asha Rao", &["broiler"]).await;
    let b = contact(&app, "919800000002", "Bala", &["layer"]).await;
    let c = contact(&app, "919800000003", "Chitra", &["broiler", "feed"]).await;
    // A group with one member.
    let g: Uuid = sqlx::query_scalar(
        "INSERT INTO mkt_wap_groups (group_id, name) VALUES ('120363000000000001@g.us', 'Farmers') RETURNING id",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    sqlx::query("INSERT INTO mkt_wap_group_members (group_id, contact_id) VALUES ($1, $2)")
        .bind(g)
        .bind(b)
        .execute(app.pool())
        .await
        .unwrap();

    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = app.get("/v1/contacts?tag=broiler").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut want = vec![a.to_string(), c.to_string()];
    want.sort();
    assert_eq!(ids(&v), want);
    let (_, v) = app.get(&format!("/v1/contacts?group_id={g}")).await;
    assert_eq!(ids(&v), [b.to_string()]);
    let (_, v) = app.get("/v1/contacts?search=asha").await;
    assert_eq!(ids(&v), [a.to_string()]);
    let (_, v) = app.get("/v1/contacts?search=%2B91%2098000%2000003").await;
    assert_eq!(ids(&v), [c.to_string()]);
    // Paging: a cursor over every contact, two at a time.
    let (_, p1) = app.get("/v1/contacts?limit=2").await;
    assert_eq!(p1.as_array().unwrap().len(), 2);
    let last = p1[1]["id"].as_str().unwrap();
    let (_, p2) = app.get(&format!("/v1/contacts?limit=2&after={last}")).await;
    assert_eq!(p2.as_array().unwrap().len(), 1);
    let (s, v) = app.get("/v1/contacts?limit=501").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "limit");

    // Tag and untag.
    let (s, v) = app
        .post_json(
            &format!("/v1/contacts/{b}/tags"),
            json!({"tags": ["vip", " broiler "]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["segment_tags"], json!(["broiler", "layer", "vip"]));
    let (s, v) = app
        .send(app.request(Method::DELETE, &format!("/v1/contacts/{b}/tags/layer")))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["segment_tags"], json!(["broiler", "vip"]));
    let (s, v) = app
        .post_json(&format!("/v1/contacts/{b}/tags"), json!({"tags": [" "]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "tags[0]");
    let (s, _) = app
        .post_json(
            &format!("/v1/contacts/{}/tags", Uuid::nil()),
            json!({"tags": ["x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // /v1 stays strict.
    let (s, v) = app
        .post_json(
            &format!("/v1/contacts/{b}/tags"),
            json!({"tags": ["x"], "colour": "red"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn an_opt_out_fails_queued_sends_and_refuses_new_ones_until_opted_back_in() {
    let app = spawn_app().await;
    let account = active_account(&app, "Sales").await;
    let asha = contact(&app, "919800000001", "Asha", &[]).await;
    // Queued before the opt-out: a send through the API to her number.
    let (s, v) = app
        .post_json(
            "/v1/messages",
            json!({"account_id": account, "channel_type": "individual",
                   "target_phone": "+919800000001", "message_text": "hello"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let queued = v["messages"][0]["id"].as_str().unwrap().to_string();

    let (s, v) = app
        .post_json(
            &format!("/v1/contacts/{asha}/opt-out"),
            json!({"reason": "replied STOP"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["contact"]["opted_out"], true);
    assert_eq!(v["contact"]["opt_out_reason"], "replied STOP");
    assert_eq!(v["messages_failed"], 1);
    let (_, m) = app.get(&format!("/v1/messages/{queued}")).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error_message"], "opted out");
    // Its job was withdrawn: nothing will claim it, no budget is spent.
    let state: String = sqlx::query_scalar(
        "SELECT j.state FROM queue_jobs j JOIN mkt_wap_messages m ON m.job_id = j.id WHERE m.id = $1::uuid",
    )
    .bind(&queued)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(state, "cancelled");

    // New sends are refused, naming the contact: by number, by chat id, in a broadcast.
    for body in [
        json!({"account_id": account, "channel_type": "individual", "target_phone": "919800000001", "message_text": "x"}),
        json!({"account_id": account, "channel_type": "individual", "target_chat_id": "919800000001@c.us", "message_text": "x"}),
        json!({"account_id": account, "channel_type": "broadcast", "recipients": ["919800000009", "+919800000001"], "message_text": "x"}),
    ] {
        let (s, v) = app.post_json("/v1/messages", &body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{body} → {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(&asha.to_string()),
            "{v}"
        );
        assert!(v["detail"].as_str().unwrap().contains("opted out"), "{v}");
    }
    // The seed route refuses it the same way.
    let (s, v) = app
        .post_json(
            "/whatsapp/messages",
            json!({"accountId": account, "channelType": "individual", "targetPhone": "919800000001", "messageText": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A retry of the failed message is refused too.
    let (s, v) = app
        .post_json(&format!("/v1/messages/{queued}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("opted out"), "{v}");
    // Nothing new was created for her.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (_, list) = app.get("/v1/contacts?opted_out=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Opting back in: sends go through again.
    let (s, v) = app
        .post_json(&format!("/v1/contacts/{asha}/opt-in"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["opted_out"], false);
    assert_eq!(v["opt_out_reason"], Value::Null);
    let (s, v) = app
        .post_json(
            "/v1/messages",
            json!({"account_id": account, "channel_type": "individual", "target_phone": "919800000001", "message_text": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn a_csv_import_is_all_or_nothing_with_an_error_per_row() {
    let app = spawn_app().await;
    contact(&app, "919800000001", "Asha", &["old"]).await;
    // One bad row refuses the whole file, and every bad row is named.
    let (s, v) = csv(
        &app,
        "phone_number,name,tags,opted_out\n919800000001,Asha R,new,\n12,Short,,\n919800000002,Bala,,perhaps\n",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["rejected"], 2);
    assert_eq!(v["rows"][0]["line"], 3);
    assert_eq!(v["rows"][0]["column"], "phone_number");
    assert_eq!(v["rows"][1]["line"], 4);
    assert_eq!(v["rows"][1]["column"], "opted_out");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_contacts")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "nothing was written");
    let name: String = sqlx::query_scalar("SELECT name FROM mkt_wap_contacts")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(name, "Asha");

    // A clean file: created, updated (tags added), opted out.
    let (s, v) = csv(
        &app,
        "phone,name,tags,opted_out\n919800000001,Asha R,new,\n\"+91 98000 00002\",\"Bala, K\",broiler;layer,yes\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"rows": 2, "created": 1, "updated": 1, "opted_out": 1})
    );
    let (_, list) = app.get("/v1/contacts").await;
    let list = list.as_array().unwrap();
    let asha = list
        .iter()
        .find(|c| c["phone_number"] == "919800000001")
        .unwrap();
    assert_eq!(asha["name"], "Asha R");
    assert_eq!(asha["segment_tags"], json!(["new", "old"]));
    let bala = list
        .iter()
        .find(|c| c["phone_number"] == "919800000002")
        .unwrap();
    assert_eq!(bala["name"], "Bala, K");
    assert_eq!(bala["opted_out"], true);
    assert_eq!(bala["opt_out_reason"], "imported");
    // An import never opts anyone back in.
    let (s, v) = csv(&app, "phone,opted_out\n919800000002,no\n").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = app.get("/v1/contacts?opted_out=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The wrong content type and an oversized file.
    let (s, _) = app
        .post_json("/v1/contacts/import", json!({"csv": "phone\n1"}))
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("phone\n{}", "919800000003\n".repeat(500_000));
    let (s, v) = csv(&app, &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

#[tokio::test]
async fn the_seed_routes_answer_as_the_admin_ui_expects() {
    let app = courier_testkit::TestApp::builder()
        .settings(|s| s.api.cors_origins = vec!["https://admin.example.com".into()])
        .spawn()
        .await;

    // CORS: a preflight from the configured origin is answered without a
    // token; another origin gets no CORS headers.
    let pre = app
        .http
        .request(Method::OPTIONS, app.url("/whatsapp/accounts"))
        .header("origin", "https://admin.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let r = app
        .request(Method::GET, "/whatsapp/accounts")
        .header("origin", "https://admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let r = app
        .request(Method::GET, "/whatsapp/accounts")
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // Create with the whole object the UI holds: unknown fields ignored.
    let (s, a) = app
        .post_json(
            "/whatsapp/accounts",
            json!({"accountName": "Sales 1", "phoneNumber": "", "status": "inactive",
                   "healthScore": 100, "dailyUsageLimit": 200, "sessionData": {"x": [1]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "inactive");
    assert_eq!(a["courierStatus"], "inactive");
    assert_eq!(a["dailyUsageCount"], 0);
    let id: Uuid = a["id"].as_str().unwrap().parse().unwrap();
    // ... while /v1 stays strict.
    let (s, _) = app
        .post_json(
            "/v1/accounts",
            json!({"account_name": "Sales 2", "health_score": 100}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Status words: Courier's statuses in the seed's five words.
    for (courier, seed) in [
        ("qr_pending", "warming"),
        ("warming", "warming"),
        ("active", "active"),
        ("paused", "standby"),
        ("disconnected", "inactive"),
        ("banned", "banned"),
    ] {
        sqlx::query("UPDATE mkt_wap_accounts SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(courier)
            .execute(app.pool())
            .await
            .unwrap();
        let (_, v) = app.get(&format!("/whatsapp/accounts/{id}")).await;
        assert_eq!(v["status"], seed, "{courier}");
        assert_eq!(v["courierStatus"], courier);
        let (_, list) = app.get("/whatsapp/accounts").await;
        assert_eq!(list[0]["status"], seed, "{courier}");
    }

    // dailyUsageCount follows the budget's send log (the last 24 h).
    sqlx::query(
        "INSERT INTO account_sends (account_id, job_id, epoch, sent_at) \
         SELECT $1, gen_random_uuid(), 1, now() - make_interval(hours => h) FROM unnest(ARRAY[0, 1, 5, 30]) h",
    )
    .bind(id)
    .execute(app.pool())
    .await
    .unwrap();
    let (_, v) = app.get(&format!("/whatsapp/accounts/{id}")).await;
    assert_eq!(v["dailyUsageCount"], 3, "{v}");
    assert_eq!(v["dailyUsageLimit"], 200);

    // Lists return every row, past 500 (no silent cap).
    sqlx::query(
        "INSERT INTO mkt_wap_groups (group_id, name, region) \
         SELECT '120363' || lpad(i::text, 12, '0') || '@g.us', 'Group ' || i, 'AP' FROM generate_series(1, 1203) i",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let (s, v) = app.get("/whatsapp/groups?region=AP&page=1&sort=name").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1203);
    assert!(v[0]["groupId"].as_str().unwrap().ends_with("@g.us"));

    // PUT with the whole group object: the metadata changes, the rest is ignored.
    let mut group = v[0].clone();
    let gid = group["id"].as_str().unwrap().to_string();
    group["district"] = json!("Guntur");
    group["segmentTags"] = json!(["broiler"]);
    group["memberCount"] = json!(999);
    let (s, v) = app
        .send(
            app.request(Method::PUT, &format!("/whatsapp/groups/{gid}"))
                .json(&group),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["district"], "Guntur");
    assert_eq!(v["segmentTags"], json!(["broiler"]));
    assert_ne!(v["memberCount"], 999);

    // Messages: sent with extra fields, listed (every row), in the seed's words.
    sqlx::query("UPDATE mkt_wap_accounts SET status = 'active' WHERE id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    let (s, m) = app
        .post_json(
            "/whatsapp/messages",
            json!({"accountId": id, "messageType": "text", "messageText": "Hello",
                   "channelType": "individual", "targetPhone": "919800000001",
                   "campaignName": "ignored", "retryCount": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    assert_eq!(m["status"], "queued");
    let mid = m["id"].as_str().unwrap().to_string();
    let (_, list) = app
        .get(
            "/whatsapp/messages?status=&accountId="
                .replace("accountId=", &format!("accountId={id}"))
                .as_str(),
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (_, one) = app.get(&format!("/whatsapp/messages/{mid}")).await;
    assert_eq!(one["messageText"], "Hello", "{one}");
    let (s, _) = app
        .post_json(&format!("/whatsapp/messages/{mid}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "only failed messages are retried");
    let (s, st) = app.get("/whatsapp/stats").await;
    assert_eq!(s, StatusCode::OK, "{st}");

    // The QR route: no QR yet, in the seed's words.
    let (s, q) = app.get(&format!("/whatsapp/accounts/{id}/qr")).await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["qrCode"], Value::Null);
    assert_eq!(q["status"], "active");

    // Discover and scrape enqueue jobs (a body with extra fields is fine).
    let (s, j) = app
        .post_json(
            &format!("/whatsapp/accounts/{id}/groups/discover"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["kind"], "discover");
    sqlx::query("INSERT INTO mkt_wap_account_groups (account_id, group_id) VALUES ($1, $2::uuid)")
        .bind(id)
        .bind(&gid)
        .execute(app.pool())
        .await
        .unwrap();
    let (s, j) = app
        .post_json(
            &format!("/whatsapp/groups/{gid}/scrape-contacts"),
            json!({"accountId": id, "limit": 50}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(j["kind"], "scrape");

    // Disconnect: the account needs a new QR, its snapshot is gone, and a
    // logout job will unlink the device through its browser session.
    sqlx::query("UPDATE mkt_wap_accounts SET session_snapshot = '\\x00'::bytea WHERE id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    let (s, d) = app
        .post_json(&format!("/whatsapp/accounts/{id}/disconnect"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["success"], true);
    assert_eq!(d["status"], "inactive");
    assert_eq!(d["courierStatus"], "disconnected");
    let (snapshot, logout): (bool, i64) = sqlx::query_as(
        "SELECT session_snapshot IS NOT NULL, \
                (SELECT count(*) FROM queue_jobs WHERE account_id = $1 AND kind = 'logout') \
         FROM mkt_wap_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(!snapshot);
    assert_eq!(logout, 1);
}
