//! The simulator driven by real headless Chromium through fantoccini, the way
//! Courier's browser driver will drive WhatsApp Web: QR rotation and reload,
//! stale scans, login and `last-wid-md`, profile reuse, every fault, and ack
//! progression. Selectors come from `config/selectors.toml`, and each screen
//! is checked against the whole contract.
//!
//! The tests take a process-wide lock so only one Chromium runs at a time
//! (CI machines have 2 cores); each starts one chromedriver for its sessions.

use std::time::{Duration, Instant};

use courier::browser::{AckLevel, ChromeDriver, DriverOptions, Selectors};
use courier_sim::{SimConfig, Simulator};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PHONE: &str = "+447700900123";

struct World {
    sim: Simulator,
    driver: ChromeDriver,
    http: reqwest::Client,
    sel: Selectors,
    _profiles: tempfile::TempDir,
}

impl World {
    async fn start(config: SimConfig) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let driver = ChromeDriver::start(DriverOptions::default()).await.unwrap();
        Self {
            sim,
            driver,
            http: reqwest::Client::new(),
            sel: Selectors::builtin(),
            _profiles: tempfile::tempdir().unwrap(),
        }
    }

    fn profile(&self, name: &str) -> std::path::PathBuf {
        self._profiles.path().join(name)
    }

    async fn browser(&self, profile: &str) -> Client {
        self.driver.session(&self.profile(profile)).await.unwrap()
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.sim.url(), path);
        let mut req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            _ => self.http.post(url),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.control(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    async fn faults(&self, account: &str, f: Value) {
        self.ok(
            "PUT",
            &format!("/_control/accounts/{account}/faults"),
            Some(f),
        )
        .await;
    }

    /// Opens the account's page and logs it in by scanning the QR it shows.
    async fn login(&self, c: &Client, account: &str) {
        c.goto(&self.sim.page_url(account)).await.unwrap();
        let token = qr_token(c, &self.sel).await;
        self.ok(
            "POST",
            &format!("/_control/accounts/{account}/scan"),
            Some(json!({ "token": token, "phone": PHONE })),
        )
        .await;
        wait(c, &self.sel.main.ready, 10).await;
    }

    /// Every contract selector of `screen` matches on the page now.
    async fn assert_contract(&self, c: &Client, screen: &str) {
        let screens = self.sel.css_by_screen();
        let (_, list) = screens.iter().find(|(s, _)| *s == screen).unwrap();
        for (name, css) in list {
            let found = c.find_all(Locator::Css(css)).await.unwrap();
            assert!(
                !found.is_empty(),
                "{screen}: contract selector {name} = `{css}` matches nothing"
            );
        }
    }
}

async fn wait(c: &Client, css: &str, secs: u64) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(secs))
        .every(Duration::from_millis(25))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let html = c.source().await.unwrap_or_default();
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let body = html
                .get(html.find("<body").unwrap_or(0)..)
                .unwrap_or_default();
            panic!("`{css}` did not appear in {secs}s ({e}) at {url}; page:\n{body:.3000}")
        }
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

async fn qr_token(c: &Client, sel: &Selectors) -> String {
    let canvas = sel.login.qr_canvas.clone();
    wait(c, &canvas, 10).await;
    wait(c, &sel.login.qr_container, 1)
        .await
        .attr(&sel.login.qr_ref_attr)
        .await
        .unwrap()
        .unwrap()
}

async fn storage(c: &Client, key: &str) -> Value {
    c.execute(
        "return localStorage.getItem(arguments[0]);",
        vec![json!(key)],
    )
    .await
    .unwrap()
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_BROWSER_AT_A_TIME.lock().await
}

#[tokio::test]
async fn login_lifecycle_qr_rotation_scan_storage_profile_reuse_and_revocation() {
    let _one = lock().await;
    let w = World::start(SimConfig {
        first_ref: Duration::from_millis(1500),
        next_ref: Duration::from_millis(1000),
        max_refs: 3,
        loading: Duration::from_millis(600),
        ..SimConfig::default()
    })
    .await;
    w.ok("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    let sel = &w.sel;
    let c = w.browser("p1").await;
    c.goto(&w.sim.page_url("a1")).await.unwrap();

    // The QR: a token with five fields in div[data-ref], drawn on a canvas.
    let t0 = qr_token(&c, sel).await;
    assert_eq!(t0.split(',').count(), 5, "{t0}");
    w.assert_contract(&c, "qr").await;
    let drawn = js(
        &c,
        "const c = document.querySelector('div[data-ref] canvas'); \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let dark = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++; \
         return [c.width, dark];",
    )
    .await;
    assert!(drawn[0].as_u64().unwrap() >= 100, "{drawn}");
    assert!(drawn[1].as_u64().unwrap() > 1000, "QR not drawn: {drawn}");
    let qr = w.ok("GET", "/_control/accounts/a1/qr", None).await;
    assert_eq!(qr["token"], t0.as_str());

    // It changes in place: the element we hold stays valid.
    let container = wait(&c, &sel.login.qr_container, 1).await;
    let rotated_at = Instant::now();
    let t1 = loop {
        let now = container
            .attr(&sel.login.qr_ref_attr)
            .await
            .unwrap()
            .unwrap_or_default();
        if now != t0 {
            break now;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "never rotated"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let first_life = rotated_at.elapsed();
    assert!(first_life < Duration::from_millis(1900), "{first_life:?}");

    // The phone scanning the rotated-out token is refused.
    let (s, v) = w
        .control(
            "POST",
            "/_control/accounts/a1/scan",
            Some(json!({ "token": t0, "phone": PHONE })),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "stale_token");

    // Refs run out: the reload button appears inside div[data-ref] and rotation stops.
    let button = wait(&c, &sel.login.qr_reload_button, 5).await;
    w.assert_contract(&c, "qr_expired").await;
    assert!(!exists(&c, &sel.login.qr_canvas).await);
    let (s, _) = w.control("GET", "/_control/accounts/a1/qr", None).await;
    assert_eq!(s, 409);
    button.click().await.unwrap();
    let t3 = qr_token(&c, sel).await;
    assert!(t3 != t0 && t3 != t1);

    // Scan: loading with a progress bar, then the main screen.
    w.ok(
        "POST",
        "/_control/accounts/a1/scan",
        Some(json!({ "token": t3, "phone": PHONE })),
    )
    .await;
    wait(&c, &sel.loading.progress, 5).await;
    w.assert_contract(&c, "loading").await;
    let scanned = Instant::now();
    wait(&c, &sel.main.ready, 5).await;
    assert!(scanned.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        storage(&c, &sel.storage.last_wid_md_key).await,
        json!("\"447700900123:1@c.us\"")
    );
    assert_eq!(
        storage(&c, &sel.storage.last_wid_key).await,
        json!("\"447700900123@c.us\"")
    );
    c.close().await.unwrap();

    // Same profile, new browser: straight to the main screen, no QR.
    let c = w.browser("p1").await;
    let reopened = Instant::now();
    c.goto(&w.sim.page_url("a1")).await.unwrap();
    let mut saw_qr = false;
    while !exists(&c, &sel.main.ready).await {
        saw_qr |= exists(&c, &sel.login.qr_container).await;
        assert!(
            reopened.elapsed() < Duration::from_secs(10),
            "main never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!saw_qr, "a restored profile showed the QR");
    assert_eq!(
        storage(&c, &sel.storage.last_wid_md_key).await,
        json!("\"447700900123:1@c.us\"")
    );
    c.close().await.unwrap();

    // Revoked while the browser was closed: the page logs out (post_logout=1) and shows the QR.
    w.ok("POST", "/_control/accounts/a1/logout", None).await;
    let c = w.browser("p1").await;
    c.goto(&w.sim.page_url("a1")).await.unwrap();
    qr_token(&c, sel).await;
    let url = c.current_url().await.unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == sel.loading.post_logout_param && v == "1"),
        "{url}"
    );
    assert_eq!(storage(&c, &sel.storage.last_wid_md_key).await, Value::Null);
    c.close().await.unwrap();
}

/// Reads the ack level of the message row `data_id`.
async fn ack_of(c: &Client, sel: &Selectors, data_id: &str) -> Option<AckLevel> {
    let v = c
        .execute(
            "const r = [...document.querySelectorAll('div[data-id]')].find(e => e.getAttribute('data-id') === arguments[0]); \
             if (!r) return null; const i = r.querySelector(arguments[1]); \
             return i ? [i.getAttribute(arguments[2]), i.getAttribute('aria-label')] : null;",
            vec![json!(data_id), json!(sel.ack.icon), json!(sel.ack.icon_attr)],
        )
        .await
        .unwrap();
    let icon = v.get(0)?.as_str()?;
    sel.ack_from_icon(icon, v.get(1).and_then(Value::as_str))
}

async fn open_chat(c: &Client, sel: &Selectors, chat: &str) {
    let item = wait(
        c,
        &format!(
            "{}[{}=\"{chat}\"]",
            sel.chat_list.item, sel.chat_list.chat_id_attr
        ),
        5,
    )
    .await;
    item.click().await.unwrap();
    wait(c, &sel.conversation.compose, 5).await;
}

/// The `data-id` of the newest outgoing row.
async fn last_outgoing(c: &Client, sel: &Selectors) -> String {
    let rows = c
        .find_all(Locator::Css(&sel.message.outgoing))
        .await
        .unwrap();
    rows.last()
        .expect("an outgoing row")
        .attr(&sel.message.id_attr)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn chats_send_acks_media_link_preview_and_group_info() {
    let _one = lock().await;
    let w = World::start(SimConfig {
        loading: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let sel = &w.sel;
    w.ok("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    w.ok(
        "PUT",
        "/_control/accounts/a1/ack-timing",
        Some(json!({ "server_ms": 400, "device_ms": 400, "read_ms": 400 })),
    )
    .await;
    let contact = "447700900200@c.us";
    w.ok(
        "POST",
        "/_control/contacts",
        Some(json!({ "phone": "+447700900200", "name": "Bob", "accounts": ["a1"] })),
    )
    .await;
    let participants: Vec<Value> = (0..250)
        .map(|i| match i {
            0 => json!({ "phone": "+447700900123", "super_admin": true, "name": "Owner" }),
            1 => json!({ "phone": "+447700800001", "admin": true }),
            2 => json!({ "id": "123456789012345@lid", "phone": "+447700800002", "name": "Hidden" }),
            _ => json!({ "phone": format!("+4477007{i:05}") }),
        })
        .collect();
    let gid = w
        .ok(
            "POST",
            "/_control/groups",
            Some(json!({ "name": "Big group", "participants": participants, "accounts": ["a1"] })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let c = w.browser("p1").await;
    w.login(&c, "a1").await;
    w.assert_contract(&c, "main").await;
    let items = c.find_all(Locator::Css(&sel.chat_list.item)).await.unwrap();
    assert_eq!(items.len(), 2);

    // Text with a URL: a preview while composing, acks advancing in order.
    open_chat(&c, sel, contact).await;
    w.assert_contract(&c, "chat").await;
    assert!(
        !exists(&c, &sel.conversation.send_button).await,
        "the send button shows only once there is text"
    );
    let compose = wait(&c, &sel.conversation.compose, 1).await;
    compose
        .send_keys("Sale today https://example.com/offer")
        .await
        .unwrap();
    wait(&c, &sel.conversation.compose_link_preview, 3).await;
    w.assert_contract(&c, "chat_typing").await;
    wait(&c, &sel.conversation.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    let data_id = last_outgoing(&c, sel).await;
    assert!(
        data_id.starts_with(&format!("true_{contact}_")),
        "{data_id}"
    );
    let mut levels = Vec::new();
    let started = Instant::now();
    loop {
        if let Some(l) = ack_of(&c, sel, &data_id).await {
            if levels.last() != Some(&l) {
                levels.push(l);
            }
            if l == AckLevel::Read {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{levels:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        levels,
        vec![
            AckLevel::Pending,
            AckLevel::Server,
            AckLevel::Device,
            AckLevel::Read
        ]
    );
    assert!(
        exists(
            &c,
            &format!("{} {}", sel.message.outgoing, sel.message.link_preview)
        )
        .await
    );
    let back = w.ok("GET", "/_control/accounts/a1/messages", None).await;
    assert_eq!(back["count"], 1);
    assert_eq!(back["messages"][0]["data_id"], data_id.as_str());
    assert_eq!(
        back["messages"][0]["body"],
        "Sale today https://example.com/offer"
    );
    assert_eq!(
        back["messages"][0]["link_preview"],
        "https://example.com/offer"
    );

    // READ may never come: stop this account's next messages at two ticks.
    w.ok(
        "PUT",
        "/_control/accounts/a1/ack-timing",
        Some(json!({ "stop": "device", "server_ms": 50, "device_ms": 50, "read_ms": 50 })),
    )
    .await;
    let compose = wait(&c, &sel.conversation.compose, 1).await;
    compose.send_keys("no read receipt").await.unwrap();
    wait(&c, &sel.conversation.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    let second = last_outgoing(&c, sel).await;
    assert_ne!(second, data_id);
    eventually("two ticks", 3, || async {
        ack_of(&c, sel, &second).await == Some(AckLevel::Device)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ack_of(&c, sel, &second).await, Some(AckLevel::Device));
    assert_eq!(ack_of(&c, sel, &data_id).await, Some(AckLevel::Read));

    // Media: an image with a caption, and a document without one.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("promo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let pdf = dir.path().join("terms.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 tiny").unwrap();
    let mp4 = dir.path().join("clip.mp4");
    std::fs::write(&mp4, b"\0\0\0\x18ftypmp42").unwrap();
    wait(&c, &sel.attach.attach_button, 1)
        .await
        .click()
        .await
        .unwrap();
    wait(&c, &sel.attach.media_input, 1)
        .await
        .send_keys(png.to_str().unwrap())
        .await
        .unwrap();
    wait(&c, &sel.attach.caption, 3)
        .await
        .send_keys("Look at this")
        .await
        .unwrap();
    wait(&c, &sel.attach.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    wait(&c, &sel.attach.document_input, 3)
        .await
        .send_keys(pdf.to_str().unwrap())
        .await
        .unwrap();
    wait(&c, &sel.attach.send_button, 3)
        .await
        .click()
        .await
        .unwrap();
    wait(&c, &sel.attach.media_input, 3)
        .await
        .send_keys(mp4.to_str().unwrap())
        .await
        .unwrap();
    wait(&c, &sel.attach.send_button, 3)
        .await
        .click()
        .await
        .unwrap();
    eventually("the three media messages", 5, || async {
        w.ok("GET", "/_control/accounts/a1/messages", None).await["count"] == 5
    })
    .await;
    let back = w.ok("GET", "/_control/accounts/a1/messages", None).await;
    let image = &back["messages"][2];
    assert_eq!(image["media"]["kind"], "image");
    assert_eq!(image["media"]["name"], "promo.png");
    assert_eq!(image["body"], "Look at this");
    let doc = &back["messages"][3];
    assert_eq!(doc["media"]["kind"], "document");
    assert_eq!(doc["media"]["name"], "terms.pdf");
    assert!(doc["body"].is_null());
    let video = &back["messages"][4];
    assert_eq!(video["media"]["kind"], "video");
    assert_eq!(video["media"]["mime"], "video/mp4");
    assert_eq!(
        c.find_all(Locator::Css(&format!(
            "{} {}",
            sel.message.outgoing, sel.message.media
        )))
        .await
        .unwrap()
        .len(),
        3
    );

    // Group info: 250 members, rendered lazily as the list scrolls.
    open_chat(&c, sel, &gid).await;
    wait(&c, &sel.conversation.header_title, 1)
        .await
        .click()
        .await
        .unwrap();
    wait(&c, &sel.group_info.participant, 5).await;
    w.assert_contract(&c, "group_info").await;
    let count_text = wait(&c, &sel.group_info.member_count, 1)
        .await
        .text()
        .await
        .unwrap();
    assert!(count_text.contains("250"), "{count_text}");
    let first_batch = c
        .find_all(Locator::Css(&sel.group_info.participant))
        .await
        .unwrap()
        .len();
    assert!(
        first_batch < 250,
        "rendered {first_batch} without scrolling"
    );
    let scroll = format!(
        "const l = document.querySelector('{}'); l.scrollTop = l.scrollHeight; \
         return document.querySelectorAll('{}').length;",
        sel.group_info.list.replace('\'', "\\'"),
        sel.group_info.participant.replace('\'', "\\'")
    );
    let mut scrolls = 0;
    eventually("all 250 participants", 15, || {
        scrolls += 1;
        let (c, scroll) = (&c, &scroll);
        async move { js(c, scroll).await == json!(250) }
    })
    .await;
    assert!(scrolls > 3, "needed only {scrolls} scrolls");
    let row = |id: &str| {
        format!(
            "{}[{}=\"{id}\"]",
            sel.group_info.participant, sel.group_info.participant_id_attr
        )
    };
    let lid = wait(&c, &row("123456789012345@lid"), 1).await;
    let name = lid
        .find(Locator::Css(&sel.group_info.name))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let phone = lid
        .find(Locator::Css(&sel.group_info.phone))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!((name.as_str(), phone.as_str()), ("Hidden", "+447700800002"));
    let badge = |id: &str| {
        let css = format!("{} {}", row(id), sel.group_info.admin_badge);
        let c = &c;
        async move {
            match c.find(Locator::Css(&css)).await {
                Ok(e) => Some(e.text().await.unwrap()),
                Err(_) => None,
            }
        }
    };
    assert_eq!(
        badge("447700900123@c.us").await.as_deref(),
        Some(sel.group_info.super_admin_text.as_str())
    );
    assert_eq!(
        badge("447700800001@c.us").await.as_deref(),
        Some(sel.group_info.admin_text.as_str())
    );
    assert_eq!(badge("447700700003@c.us").await, None);

    // `/send?phone=` opens a chat with a number not in the list, as on the real site.
    c.goto(&format!(
        "{}/send?account=a1&phone=447700900300",
        w.sim.url()
    ))
    .await
    .unwrap();
    let title = wait(&c, &sel.conversation.header_title, 10).await;
    assert_eq!(title.text().await.unwrap(), "+447700900300");
    wait(&c, &sel.conversation.compose, 1)
        .await
        .send_keys("hello stranger")
        .await
        .unwrap();
    wait(&c, &sel.conversation.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    eventually("the message to the new chat", 5, || async {
        w.ok("GET", "/_control/accounts/a1/messages", None).await["count"] == 6
    })
    .await;
    let back = w.ok("GET", "/_control/accounts/a1/messages", None).await;
    assert_eq!(back["messages"][5]["chat"], "447700900300@c.us");
    c.close().await.unwrap();
}

#[tokio::test]
async fn every_fault_appears_as_specified() {
    let _one = lock().await;
    let w = World::start(SimConfig {
        loading: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let sel = &w.sel;
    w.ok("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    let contact = "447700900200@c.us";
    w.ok(
        "POST",
        "/_control/contacts",
        Some(json!({ "phone": "+447700900200", "accounts": ["a1"] })),
    )
    .await;
    w.ok(
        "PUT",
        "/_control/accounts/a1/ack-timing",
        Some(json!({ "server_ms": 50, "device_ms": 50, "read_ms": 50 })),
    )
    .await;
    let c = w.browser("p1").await;
    w.login(&c, "a1").await;

    // Authenticated but never ready: the loading screen stays.
    w.faults("a1", json!({ "stuck_loading": true })).await;
    c.goto(&w.sim.page_url("a1")).await.unwrap();
    wait(&c, &sel.loading.progress, 5).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(exists(&c, &sel.loading.progress).await);
    assert!(!exists(&c, &sel.main.ready).await);
    assert_eq!(
        storage(&c, &sel.storage.last_wid_md_key).await,
        json!("\"447700900123:1@c.us\""),
        "the own number is readable even when ready never comes"
    );
    w.faults("a1", json!({ "stuck_loading": false })).await;
    wait(&c, &sel.main.ready, 5).await;

    // "Open in another window": the conflict screen until "Use here".
    w.faults("a1", json!({ "conflict": true })).await;
    let use_here = wait(&c, &sel.faults.use_here_button, 5).await;
    w.assert_contract(&c, "conflict").await;
    assert_eq!(use_here.text().await.unwrap(), sel.faults.use_here_text);
    assert!(!exists(&c, &sel.main.ready).await);
    use_here.click().await.unwrap();
    wait(&c, &sel.main.ready, 5).await;
    let acct = w.ok("GET", "/_control/accounts/a1", None).await;
    assert_eq!(acct["faults"]["conflict"], false);

    // Blocked: the ban screen.
    w.faults("a1", json!({ "blocked": true })).await;
    wait(&c, &sel.faults.banned, 5).await;
    w.assert_contract(&c, "banned").await;
    assert!(!exists(&c, &sel.main.ready).await);
    w.faults("a1", json!({ "blocked": false })).await;
    wait(&c, &sel.main.ready, 5).await;

    // A send refused for quota: an error toast and the message marked failed.
    open_chat(&c, sel, contact).await;
    w.faults("a1", json!({ "refuse_sends": true })).await;
    wait(&c, &sel.conversation.compose, 1)
        .await
        .send_keys("over quota")
        .await
        .unwrap();
    wait(&c, &sel.conversation.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    let toast = wait(&c, &sel.conversation.toast, 5).await;
    assert!(toast.text().await.unwrap().contains("limit"));
    let refused = last_outgoing(&c, sel).await;
    eventually("the failed icon", 3, || async {
        ack_of(&c, sel, &refused).await == Some(AckLevel::Error)
    })
    .await;
    let back = w.ok("GET", "/_control/accounts/a1/messages", None).await;
    assert_eq!(back["count"], 0);
    assert_eq!(back["refused"].as_array().unwrap().len(), 1);
    w.faults("a1", json!({ "refuse_sends": false })).await;

    // A page reload mid-send: the message reached WhatsApp exactly once and
    // shows again (with its ack) after the reload.
    w.faults("a1", json!({ "reload_mid_send": 1 })).await;
    js(&c, "window.__beforeReload = true; return 1;").await;
    wait(&c, &sel.conversation.compose, 1)
        .await
        .send_keys("sent while reloading")
        .await
        .unwrap();
    wait(&c, &sel.conversation.send_button, 1)
        .await
        .click()
        .await
        .unwrap();
    eventually("the reload", 5, || async {
        c.execute("return window.__beforeReload === true;", vec![])
            .await
            .map(|v| v == json!(false))
            .unwrap_or(false)
    })
    .await;
    wait(&c, &sel.main.ready, 5).await;
    let back = w.ok("GET", "/_control/accounts/a1/messages", None).await;
    assert_eq!(back["count"], 1);
    let sent = back["messages"][0]["data_id"].as_str().unwrap().to_string();
    open_chat(&c, sel, contact).await;
    eventually("the row after reload", 5, || async {
        ack_of(&c, sel, &sent).await == Some(AckLevel::Read)
    })
    .await;
    let rows = c
        .find_all(Locator::Css(&format!("div[data-id=\"{sent}\"]")))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        w.ok("GET", "/_control/accounts/a1", None).await["faults"]["reload_mid_send"],
        0
    );

    // A slow page: every page response is delayed.
    let t = Instant::now();
    c.goto(&w.sim.page_url("a1")).await.unwrap();
    wait(&c, &sel.main.ready, 10).await;
    let fast = t.elapsed();
    w.faults("a1", json!({ "latency_ms": 700 })).await;
    let t = Instant::now();
    c.goto(&w.sim.page_url("a1")).await.unwrap();
    wait(&c, &sel.main.ready, 10).await;
    let slow = t.elapsed();
    assert!(
        slow >= fast + Duration::from_millis(1000),
        "fast {fast:?}, slow {slow:?}"
    );
    w.faults("a1", json!({ "latency_ms": 0 })).await;

    // Logout while the page is open: it navigates to post_logout=1 and shows the QR.
    w.ok("POST", "/_control/accounts/a1/logout", None).await;
    qr_token(&c, sel).await;
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().contains("post_logout=1"), "{url}");
    assert_eq!(storage(&c, &sel.storage.last_wid_md_key).await, Value::Null);
    let acct = w.ok("GET", "/_control/accounts/a1", None).await;
    assert_ne!(acct["link"], "paired");
    c.close().await.unwrap();
}

/// Runs `body` (an async function body over `N`, the names of
/// `config/wa-web.toml`, and `R(key)`, which requires a module by its key)
/// in the page and returns what it returns.
async fn in_page(c: &Client, body: &str) -> Value {
    let names = courier::browser::WaWeb::builtin().names_json();
    let script = format!(
        "var done = arguments[arguments.length - 1]; var N = arguments[0]; \
         function R(k) {{ var d = N.mod[k]; var m = window.require(d.module); return d.export ? m[d.export] : m; }} \
         (async function () {{ {body} }})().then(function (v) {{ done({{ ok: v === undefined ? null : v }}); }}, \
           function (e) {{ done({{ err: String(e && e.message || e) }}); }});"
    );
    let v = c.execute_async(&script, vec![names]).await.unwrap();
    assert!(v.get("err").is_none(), "in-page error: {v}");
    v["ok"].clone()
}

#[tokio::test]
async fn the_page_serves_whatsapp_webs_module_contract_from_the_names_file() {
    let _one = lock().await;
    let w = World::start(SimConfig {
        loading: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    w.ok("POST", "/_control/accounts", Some(json!({ "id": "m1" })))
        .await;
    let c = w.browser("m1").await;
    c.goto(&w.sim.page_url("m1")).await.unwrap();
    let token = qr_token(&c, &w.sel).await;

    // Every module of the file is there with the methods the file lists for
    // it; a name the file lacks is not.
    let names = courier::browser::WaWeb::builtin();
    let v = in_page(
        &c,
        "var out = {}; Object.keys(N.mod).forEach(function (k) { \
           var d = N.mod[k]; var m = null; try { m = R(k); } catch (e) { m = null; } \
           out[d.module] = m === null || m === undefined ? null : \
             Object.keys(N.m).filter(function (x) { return m[N.m[x]] !== undefined; }); }); \
         var unknown = null; try { window.require('WAWebNotAModule'); } catch (e) { unknown = String(e.message); } \
         return { mods: out, unknown: unknown };",
    )
    .await;
    for (key, m) in &names.modules {
        let members = v["mods"][&m.module]
            .as_array()
            .unwrap_or_else(|| panic!("module {} ({key}) missing: {v}", m.module));
        for (member, n) in &names.members {
            let listed_for_it =
                n.of.as_deref()
                    .is_some_and(|of| of.split([',', ' ']).any(|w| w == key));
            if listed_for_it {
                assert!(
                    members.iter().any(|x| x == member),
                    "{}.{member} missing: {members:?}",
                    m.module
                );
            }
        }
    }
    assert!(
        v["unknown"]
            .as_str()
            .is_some_and(|e| e.contains("Cannot find module")),
        "{v}"
    );

    // Before the scan: a QR is needed, and Conn.ref is the token on screen.
    let s = in_page(
        &c,
        "var S = R('Socket'); return [S.state, S.hasSynced, R('Conn').ref];",
    )
    .await;
    assert_eq!(s, json!(["UNPAIRED", false, token]));
    w.ok(
        "POST",
        "/_control/accounts/m1/scan",
        Some(json!({ "token": token, "phone": PHONE })),
    )
    .await;
    let v = in_page(
        &c,
        "var S = R('Socket'); var seen = []; \
         await new Promise(function (res) { S.on(N.ev.change_hasSynced, function () { res(); }); \
           if (S.hasSynced) res(); }); \
         var me = R('MeUser').getMaybeMePnUser(); return [S.state, S.hasSynced, me._serialized];",
    )
    .await;
    assert_eq!(v, json!(["CONNECTED", true, "447700900123@c.us"]));

    // Chats and groups; group metadata refreshed; @lid members with the
    // phone number their contact carries; admin flags.
    w.ok(
        "POST",
        "/_control/groups",
        Some(json!({ "id": "120363000000000001@g.us", "name": "Growers", "accounts": ["m1"], "participants": [
            { "phone": "+447700800001", "super_admin": true },
            { "id": "111122223333444@lid", "phone": "+447700800002", "admin": true },
            { "id": "555566667777888@lid" }
        ] })),
    )
    .await;
    w.ok(
        "POST",
        "/_control/contacts",
        Some(json!({ "phone": "+447700800009", "on_whatsapp": false })),
    )
    .await;
    let v = in_page(
        &c,
        "var C = R('Collections'); var gid = '120363000000000001@g.us'; \
         for (var i = 0; i < 100 && !C.Chat.get(gid); i++) await new Promise(function (r) { setTimeout(r, 20); }); \
         var chat = C.Chat.get(gid); var wid = R('WidFactory').createWid(gid); \
         await C.GroupMetadata.update(wid); \
         var ps = chat.groupMetadata.participants.getModelsArray().map(function (p) { \
           return [p.id._serialized, p.isAdmin, p.isSuperAdmin, p.contact.phoneNumber ? p.contact.phoneNumber._serialized : null]; }); \
         var yes = await R('QueryExists').queryWidExists(R('WidFactory').createWid('447700800001@c.us')); \
         var no = await R('QueryExists').queryWidExists(R('WidFactory').createWid('447700800009@c.us')); \
         return { title: chat.formattedTitle, group: !!chat.groupMetadata, ps: ps, \
                  yes: yes.wid ? yes.wid._serialized : null, no: no.wid === undefined };",
    )
    .await;
    assert_eq!(v["title"], "Growers");
    assert_eq!(v["group"], true);
    assert_eq!(
        v["ps"],
        json!([
            ["447700800001@c.us", true, true, null],
            ["111122223333444@lid", true, false, "447700800002@c.us"],
            ["555566667777888@lid", false, false, null]
        ])
    );
    assert_eq!(v["yes"], "447700800001@c.us");
    assert_eq!(v["no"], true);

    // A send: two promises, the first when the message is in the chat, the
    // second when the server has it; change:ack events as acks arrive.
    w.ok(
        "PUT",
        "/_control/accounts/m1/ack-timing",
        Some(json!({ "server_ms": 150, "device_ms": 100, "read_ms": 100 })),
    )
    .await;
    let v = in_page(
        &c,
        "var C = R('Collections'); var K = R('MsgKey'); var order = []; var acks = []; \
         C.Msg.on(N.ev.change_ack, function (m, ack) { acks.push(ack); }); \
         var found = await R('FindChat').findOrCreateLatestChat(R('WidFactory').createWid('447700800001@c.us')); \
         var chat = found.chat; var me = R('MeUser').getMaybeMePnUser(); \
         var key = new K({ from: me, to: chat.id, id: await K.newId(), selfDir: 'out' }); \
         var pair = R('SendMsg').addAndSendMsgToChat(chat, { id: key, ack: 0, body: 'via modules', type: 'chat', \
           from: me, to: chat.id, local: true, self: 'out', t: Math.floor(Date.now() / 1000), isNewMsg: true }); \
         pair[0].then(function () { order.push('added'); }); pair[1].then(function () { order.push('sent'); }); \
         await pair[0]; var ackAtAdd = C.Msg.get(key._serialized).ack; await pair[1]; \
         for (var i = 0; i < 100 && acks.indexOf(3) < 0; i++) await new Promise(function (r) { setTimeout(r, 20); }); \
         return { id: key._serialized, order: order, ackAtAdd: ackAtAdd, acks: acks };",
    )
    .await;
    assert_eq!(v["order"], json!(["added", "sent"]));
    assert_eq!(v["ackAtAdd"], 0);
    assert_eq!(v["acks"], json!([1, 2, 3]), "{v}");
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("true_447700800001@c.us_3EB0"), "{id}");
    let back = w.ok("GET", "/_control/accounts/m1/messages", None).await;
    assert_eq!(back["count"], 1);
    assert_eq!(back["messages"][0]["data_id"], id);

    // Media from bytes: a File made in the page, wrapped and prepared.
    let v = in_page(
        &c,
        "var f = new File([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], 'p.png', { type: 'image/png' }); \
         var o = await R('MediaOpaqueData').createFromData(f, f.type); \
         var md = await R('PrepRawMedia').prepRawMedia(o, { asDocument: false }).waitForPrep(); \
         return [md.type, md.mimetype, md.filename, md.size];",
    )
    .await;
    assert_eq!(v, json!(["image", "image/png", "p.png", 7]));
    c.close().await.unwrap();
}
