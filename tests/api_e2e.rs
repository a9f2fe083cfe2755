//! The whole flow through the HTTP API only, with real Chromium, chromedriver
//! and the simulator: create an account, log it in with the QR (the login page
//! checked in headless Chromium, with screenshots), discover, scrape, send to
//! a group, and watch the message reach `read` through `GET /v1/messages/{id}`;
//! and the seed admin UI's initialize/disconnect with an opted-out contact.

use std::time::{Duration, Instant};

use courier::browser::driver::{ChromeDriver, DriverOptions};
use courier_sim::SimConfig;
use courier_testkit::TestApp;
use serde_json::{json, Value};

const TOKEN: &str = "e2e-token-0123456789";
const PHONE: &str = "447700900321";

/// `GET path`, which must answer 200.
async fn get(api: &TestApp, path: &str) -> Value {
    let (s, v) = api.get(path).await;
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

/// `POST path` with `body`, which must succeed.
async fn post(api: &TestApp, path: &str, body: Value) -> Value {
    let (s, v) = api.post_json(path, body).await;
    assert!(s.is_success(), "POST {path}: {s} {v}");
    v
}

async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_does_everything_through_the_api_and_the_message_is_read() {
    // The API and a browser worker on the simulator, as `courier run` would
    // start them.
    let api = TestApp::builder()
        .token(TOKEN)
        .simulator(SimConfig {
            first_ref: Duration::from_secs(20),
            next_ref: Duration::from_secs(10),
            loading: Duration::from_millis(300),
            ..SimConfig::default()
        })
        .worker()
        .settings(|s| {
            s.queue.capacity = 2;
            s.queue.poll_interval = Duration::from_millis(200);
            s.delivery.typing_per_char = Duration::ZERO;
        })
        .spawn()
        .await;
    let ctl = api.sim_control();

    // 1. Create the account and start its login.
    let acc = post(&api, "/v1/accounts", json!({"account_name": "E2E"})).await;
    let id = acc["id"].as_str().unwrap().to_string();
    ctl.create_account(&id, Some(PHONE)).await.unwrap();
    let job = post(&api, &format!("/v1/accounts/{id}/login"), json!({})).await;
    assert_eq!(job["kind"], "login");

    // 2. The login page, in a real browser, shows the QR.
    let viewer = ChromeDriver::start(DriverOptions::default()).await.unwrap();
    let page = viewer
        .session(&api.dir.path().join("viewer"))
        .await
        .unwrap();
    // The page opens with a signed link, as an admin tool hands it out.
    let login_url = api.login_link(&id).await;
    assert!(!login_url.contains(TOKEN));
    until("the QR in the database", 60, || async {
        get(&api, &format!("/v1/accounts/{id}/qr")).await["qr_token"].is_string()
    })
    .await;
    page.goto(&login_url).await.unwrap();
    until("the QR on the login page", 20, || async {
        page.source()
            .await
            .map(|s| s.contains("<svg"))
            .unwrap_or(false)
    })
    .await;
    let shot = page.screenshot().await.unwrap();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(api.dir.path().join("login-qr.png"), &shot).unwrap();
    let text = page
        .find(fantoccini::Locator::Css("#status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("Scan this code"), "{text}");

    // 3. The phone scans the QR the API serves; the account becomes active.
    let qr = get(&api, &format!("/v1/accounts/{id}/qr")).await;
    let token = qr["qr_token"].as_str().unwrap();
    ctl.scan(&id, token, PHONE).await.unwrap();
    until("status active", 60, || async {
        get(&api, &format!("/v1/accounts/{id}")).await["status"] == "active"
    })
    .await;
    assert_eq!(
        get(&api, &format!("/v1/accounts/{id}")).await["phone_number"],
        PHONE
    );

    // 4. The login page refreshes itself into "connected".
    until("the login page to say connected", 20, || async {
        page.source()
            .await
            .map(|s| s.contains(&format!("Connected as +{PHONE}")))
            .unwrap_or(false)
    })
    .await;
    let shot = page.screenshot().await.unwrap();
    std::fs::write(api.dir.path().join("login-connected.png"), &shot).unwrap();
    assert!(shot.len() > 1000);
    page.close().await.unwrap();

    // 5. Discover and scrape through the API.
    let participants: Vec<Value> = (0..25)
        .map(|i| json!({"phone": format!("9198765{i:05}"), "name": format!("Farmer {i}"), "admin": i == 0}))
        .collect();
    ctl.create_group("Layer Farmers", participants, &[id.as_str()])
        .await
        .unwrap();
    post(
        &api,
        &format!("/v1/accounts/{id}/groups/discover"),
        json!({}),
    )
    .await;
    until("the group to be discovered", 60, || async {
        get(&api, "/v1/groups")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let group = get(&api, "/v1/groups").await[0].clone();
    assert_eq!(group["name"], "Layer Farmers");
    let gid = group["id"].as_str().unwrap().to_string();
    post(&api, &format!("/v1/groups/{gid}/scrape"), json!({})).await;
    until("the members to be scraped", 60, || async {
        get(&api, "/v1/stats").await["contacts"] == 25
    })
    .await;

    // 6. Send to the group and watch it reach `read`.
    let sent = post(&api, "/v1/messages", json!({"account_id": id, "channel_type": "group", "target_group_id": gid, "message_text": "Layer mash 10% off this week"}))
        .await;
    let mid = sent["messages"][0]["id"].as_str().unwrap().to_string();
    until("the message to be read", 90, || async {
        get(&api, &format!("/v1/messages/{mid}")).await["status"] == "read"
    })
    .await;
    let detail = get(&api, &format!("/v1/messages/{mid}")).await;
    let statuses: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "sending", "sent", "delivered", "read"],
        "{detail}"
    );
    assert!(detail["wa_message_id"]
        .as_str()
        .unwrap()
        .starts_with("true_"));
    let reached = ctl.messages(&id).await.unwrap();
    assert_eq!(
        reached.messages.len(),
        1,
        "exactly one copy reached WhatsApp"
    );

    api.shutdown().await.unwrap();
}

/// The seed admin UI's account lifecycle on real Chromium and the simulator:
/// `initialize` answers with the QR to show; after the scan, a queued send to
/// a contact who opted out meanwhile fails `opted out` in the worker without
/// reaching WhatsApp; `disconnect` logs the device out in WhatsApp Web,
/// deletes the profile and the snapshot; the next `initialize` shows a QR
/// again instead of coming back logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_initializes_with_a_qr_and_disconnect_unlinks_the_device() {
    let api = TestApp::builder()
        .token(TOKEN)
        .simulator(SimConfig {
            first_ref: Duration::from_secs(20),
            next_ref: Duration::from_secs(10),
            loading: Duration::from_millis(300),
            ..SimConfig::default()
        })
        .worker()
        .settings(|s| {
            s.queue.capacity = 2;
            s.queue.poll_interval = Duration::from_millis(200);
            s.delivery.typing_per_char = Duration::ZERO;
        })
        .spawn()
        .await;
    let ctl = api.sim_control();
    let acc = post(&api, "/whatsapp/accounts", json!({"accountName": "UI"})).await;
    let id = acc["id"].as_str().unwrap().to_string();
    ctl.create_account(&id, Some(PHONE)).await.unwrap();

    // 1. initialize answers with the QR the UI shows.
    let init = post(
        &api,
        &format!("/whatsapp/accounts/{id}/initialize"),
        json!({}),
    )
    .await;
    assert_eq!(init["success"], true, "{init}");
    assert_eq!(init["status"], "warming", "{init}");
    assert!(
        init["qrCode"]
            .as_str()
            .is_some_and(|q| q.starts_with("data:image/svg+xml")),
        "{init}"
    );
    let token = init["qrToken"].as_str().unwrap();
    ctl.scan(&id, token, PHONE).await.unwrap();
    until("status active", 60, || async {
        get(&api, &format!("/whatsapp/accounts/{id}")).await["status"] == "active"
    })
    .await;

    // 2. A send queued for a contact, who then opts out before the worker
    // claims it (the API refuses new sends; this one is already queued):
    // the worker fails it `opted out`, nothing reaches WhatsApp.
    let contact = "919800000077";
    sqlx::query("INSERT INTO mkt_wap_contacts (phone_number) VALUES ($1)")
        .bind(contact)
        .execute(api.pool())
        .await
        .unwrap();
    post(
        &api,
        &format!("/v1/accounts/{id}/pause"),
        json!({"reason": "hold the send"}),
    )
    .await;
    let m = post(
        &api,
        "/v1/messages",
        json!({"account_id": id, "channel_type": "individual", "target_phone": contact, "message_text": "hi"}),
    )
    .await;
    let mid = m["messages"][0]["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE mkt_wap_contacts SET opted_out = true WHERE phone_number = $1")
        .bind(contact)
        .execute(api.pool())
        .await
        .unwrap();
    post(&api, &format!("/v1/accounts/{id}/resume"), json!({})).await;
    until("the send to fail", 60, || async {
        get(&api, &format!("/v1/messages/{mid}")).await["status"] == "failed"
    })
    .await;
    let msg = get(&api, &format!("/v1/messages/{mid}")).await;
    assert_eq!(msg["error_message"], "opted out", "{msg}");
    assert_eq!(ctl.messages(&id).await.unwrap().messages.len(), 0);
    let slots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM account_sends WHERE account_id = $1::uuid")
            .bind(&id)
            .fetch_one(api.pool())
            .await
            .unwrap();
    assert_eq!(slots, 0, "no budget spent on an opted-out contact");

    // 3. disconnect unlinks the device in WhatsApp Web and forgets the profile.
    let profile = api.settings.browser.profiles_dir.join(&id);
    assert!(profile.exists());
    let d = post(
        &api,
        &format!("/whatsapp/accounts/{id}/disconnect"),
        json!({}),
    )
    .await;
    assert_eq!(d["status"], "inactive", "{d}");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The phone holds no link any more: `unpaired`, or `pairing` once the
    // logged-out page shows its next QR (which it may do before a look here).
    while ctl.account(&id).await.unwrap()["link"] == "paired" {
        if Instant::now() >= deadline {
            let job: Option<(String, i32, Option<String>, Value)> = sqlx::query_as(
                "SELECT state, attempt, last_error, errors FROM queue_jobs \
                 WHERE account_id = $1::uuid AND kind = 'logout'",
            )
            .bind(&id)
            .fetch_optional(api.pool())
            .await
            .unwrap();
            let status: String =
                sqlx::query_scalar("SELECT status FROM mkt_wap_accounts WHERE id = $1::uuid")
                    .bind(&id)
                    .fetch_one(api.pool())
                    .await
                    .unwrap();
            let sim = ctl.account(&id).await.unwrap();
            panic!("the device is still linked on the phone after 60 s: account {status}, logout job {job:?}, simulator {sim}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until("the logout job done", 60, || async {
        let st: String = sqlx::query_scalar(
            "SELECT state FROM queue_jobs WHERE account_id = $1::uuid AND kind = 'logout'",
        )
        .bind(&id)
        .fetch_one(api.pool())
        .await
        .unwrap();
        st == "completed"
    })
    .await;
    assert!(!profile.exists(), "the profile is deleted");
    let (snapshot, path): (bool, Option<String>) = sqlx::query_as(
        "SELECT session_snapshot IS NOT NULL, session_storage_path FROM mkt_wap_accounts WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(api.pool())
    .await
    .unwrap();
    assert!(!snapshot && path.is_none());

    // 4. The next initialize needs a new QR.
    let again = post(
        &api,
        &format!("/whatsapp/accounts/{id}/initialize"),
        json!({}),
    )
    .await;
    assert!(again["qrCode"].is_string(), "{again}");
    assert_eq!(again["status"], "warming");
}
