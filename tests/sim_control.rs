//! The simulator's control API and page API over plain HTTP: exact read-back,
//! no duplicates, ack progression, QR rotation and 4xx on bad input.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use courier_sim::{SimConfig, Simulator, StartError};
use serde_json::{json, Value};

/// Refs that outlive any test step, even on a loaded machine.
fn fast() -> SimConfig {
    SimConfig {
        first_ref: Duration::from_secs(30),
        next_ref: Duration::from_secs(10),
        max_refs: 3,
        loading: Duration::from_millis(100),
        poll_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    }
}

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
}

impl Harness {
    async fn start(config: SimConfig) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        Self {
            sim,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// One page load of `account`, driven over the page API.
    fn page(&self, account: &str, client: &str) -> Page<'_> {
        Page {
            h: self,
            account: account.into(),
            client: client.into(),
            session: None,
            chat: None,
        }
    }

    /// Creates an account and logs a page in (QR, scan, loading, main).
    async fn logged_in(&self, account: &str, phone: &str) -> Page<'_> {
        self.ok("POST", "/_control/accounts", Some(json!({ "id": account })))
            .await;
        let mut page = self.page(account, &format!("client-{account}"));
        let v = page.state(None).await;
        assert_eq!(v["view"]["screen"], "qr");
        let token = v["view"]["token"].as_str().unwrap().to_string();
        self.ok(
            "POST",
            &format!("/_control/accounts/{account}/scan"),
            Some(json!({ "token": token, "phone": phone })),
        )
        .await;
        page.until_screen("main").await;
        page
    }
}

struct Page<'a> {
    h: &'a Harness,
    account: String,
    client: String,
    session: Option<String>,
    chat: Option<String>,
}

impl Page<'_> {
    fn auth(&self) -> Value {
        json!({ "account": self.account, "client": self.client, "session": self.session })
    }

    async fn state(&mut self, etag: Option<&str>) -> Value {
        let mut body = self.auth();
        body["chat"] = json!(self.chat);
        body["etag"] = json!(etag);
        let v = self.h.ok("POST", "/_page/api/state", Some(body)).await;
        if let Some(t) = v["view"]["session"]["token"].as_str() {
            self.session = Some(t.to_string());
        }
        v
    }

    async fn until_screen(&mut self, screen: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut etag: Option<String> = None;
        loop {
            let v = self.state(etag.as_deref()).await;
            if v["view"]["screen"] == screen {
                return v;
            }
            assert!(Instant::now() < deadline, "never reached {screen}: {v}");
            etag = v["etag"].as_str().map(String::from);
        }
    }

    async fn send(&self, id: &str, chat: &str, body: &str) -> (u16, Value) {
        let mut req = self.auth();
        req["message"] = json!({ "id": id, "chat": chat, "body": body });
        self.h.call("POST", "/_page/api/send", Some(req)).await
    }
}

#[tokio::test]
async fn the_simulator_refuses_non_loopback_addresses() {
    let err = Simulator::start("0.0.0.0:0".parse().unwrap(), fast())
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::NotLoopback(_)), "{err}");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    let h = Harness::start(fast()).await;
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "GET",
            "/_control/accounts/nobody",
            None,
            404,
            "unknown account `nobody`",
        ),
        ("GET", "/_control/accounts/nobody/qr", None, 404, "nobody"),
        (
            "POST",
            "/_control/accounts/nobody/scan",
            Some(json!({ "token": "x", "phone": "+447700900123" })),
            404,
            "unknown account",
        ),
        (
            "POST",
            "/_control/accounts",
            Some(json!({ "id": "x", "phone": "07700 900123" })),
            422,
            "starts with 0",
        ),
        (
            "POST",
            "/_control/accounts",
            Some(json!({ "id": "bad id!" })),
            422,
            "`id`",
        ),
        (
            "POST",
            "/_control/accounts",
            Some(json!({ "idd": "x" })),
            422,
            "unknown field `idd`",
        ),
        (
            "POST",
            "/_control/groups",
            Some(json!({ "name": "" })),
            422,
            "`name`",
        ),
        (
            "POST",
            "/_control/groups",
            Some(json!({ "name": "g", "participants": [{ "id": "12@g.us" }] })),
            422,
            "participants",
        ),
        (
            "POST",
            "/_control/groups/120363000000000001@g.us/participants",
            Some(json!({ "participants": [] })),
            404,
            "unknown chat",
        ),
        (
            "POST",
            "/_control/contacts",
            Some(json!({ "phone": "+1 abc" })),
            422,
            "contains `a`",
        ),
        ("GET", "/_control/nothing-here", None, 404, "no route"),
    ];
    for (method, path, body, status, needle) in cases {
        let (s, v) = h.call(method, path, body).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert!(v["error"].is_string(), "{method} {path}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }

    // Malformed JSON and a missing content type are JSON 4xx too.
    let r = h
        .http
        .post(format!("{}/_control/accounts", h.sim.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");

    // An account that exists: malformed phone and stale tokens on scan.
    h.ok("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    let (s, v) = h
        .call("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("account_exists")));
    let (s, v) = h.call("GET", "/_control/accounts/a1/qr", None).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("stale_token")), "{v}");
    let mut page = h.page("a1", "c1");
    let token = page.state(None).await["view"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = h
        .call(
            "POST",
            "/_control/accounts/a1/scan",
            Some(json!({ "token": token, "phone": "12" })),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("phone")), "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/_control/accounts/a1/scan",
            Some(json!({ "token": "2@forged,a,b,c,WEB", "phone": "+447700900123" })),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("stale_token")), "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/_control/accounts/a1/chats",
            Some(json!({ "chat": "not-a-chat" })),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("chat")), "{v}");
    let (s, _) = h
        .call(
            "PUT",
            "/_control/accounts/a1/ack-timing",
            Some(json!({ "stop": "bogus" })),
        )
        .await;
    assert_eq!(s, 422);

    // Page calls before login are refused, not panicked on.
    let (s, v) = page
        .send("3EB0000000000001", "447700900123@c.us", "hi")
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("not_logged_in")),
        "{v}"
    );
}

#[tokio::test]
async fn qr_refs_rotate_and_a_rotated_token_is_refused() {
    let h = Harness::start(SimConfig {
        first_ref: Duration::from_millis(1000),
        next_ref: Duration::from_millis(400),
        ..fast()
    })
    .await;
    h.ok("POST", "/_control/accounts", Some(json!({ "id": "a1" })))
        .await;
    let mut page = h.page("a1", "c1");
    let first = page.state(None).await;
    let t0 = first["view"]["token"].as_str().unwrap().to_string();
    assert_eq!(t0.split(',').count(), 5, "{t0}");
    assert!(first["view"]["modules"].as_array().unwrap().len() >= 21);
    let qr = h.ok("GET", "/_control/accounts/a1/qr", None).await;
    assert_eq!(qr["token"], t0.as_str());
    assert_eq!(qr["index"], 0);

    // The long-poll (held up to 2 s) answers when the ref rotates, at 1 s.
    let started = Instant::now();
    let second = page.state(first["etag"].as_str()).await;
    let t1 = second["view"]["token"].as_str().unwrap().to_string();
    assert_ne!(t0, t1);
    assert!(started.elapsed() < Duration::from_millis(1900));

    let (s, v) = h
        .call(
            "POST",
            "/_control/accounts/a1/scan",
            Some(json!({ "token": t0, "phone": "+447700900123" })),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("stale_token")), "{v}");

    // Refs run out after 3 (at 1.8 s): no token, then a reload starts a fresh set.
    let mut out = page.state(None).await;
    while !out["view"]["token"].is_null() {
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        out = page.state(out["etag"].as_str()).await;
    }
    assert_eq!(out["view"]["screen"], "qr");
    let (s, _) = h.call("GET", "/_control/accounts/a1/qr", None).await;
    assert_eq!(s, 409);
    h.ok("POST", "/_page/api/qr/reload", Some(page.auth()))
        .await;
    let again = page.state(None).await;
    let t3 = again["view"]["token"].as_str().unwrap();
    assert!(t3 != t0 && t3 != t1);
    h.ok(
        "POST",
        "/_control/accounts/a1/scan",
        Some(json!({ "token": t3, "phone": "+447700900123" })),
    )
    .await;
    let v = page.until_screen("main").await;
    assert_eq!(v["view"]["session"]["last_wid_md"], "447700900123:1@c.us");
    assert_eq!(v["view"]["session"]["last_wid"], "447700900123@c.us");
}

#[tokio::test]
async fn read_back_counts_every_message_exactly_once() {
    let h = Harness::start(fast()).await;
    let page = h.logged_in("a1", "+447700900123").await;
    h.ok(
        "POST",
        "/_control/contacts",
        Some(json!({ "phone": "+447700900200", "name": "Bob", "accounts": ["a1"] })),
    )
    .await;
    let gid = h
        .ok(
            "POST",
            "/_control/groups",
            Some(json!({ "name": "Promo", "accounts": ["a1"],
                "participants": [{ "phone": "+447700900200", "admin": true }] })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // 60 sends, half to the contact, half to the group, concurrently; then
    // 20 of them again with the same ID (a client retrying after a timeout).
    let ids: Vec<String> = (0..60).map(|i| format!("3EB0{i:016X}")).collect();
    let chat_of = |i: usize| {
        if i % 2 == 0 {
            "447700900200@c.us".to_string()
        } else {
            gid.clone()
        }
    };
    let sends = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let chat = chat_of(i);
            let page = &page;
            async move { page.send(id, &chat, &format!("hello {i}")).await }
        })
        .collect::<Vec<_>>();
    for (s, v) in futures::future::join_all(sends).await {
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["duplicate"], false);
    }
    for (i, id) in ids.iter().enumerate().take(20) {
        let (s, v) = page.send(id, &chat_of(i), &format!("hello {i}")).await;
        assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    }
    // The same ID for different content is refused, not recorded.
    let (s, v) = page.send(&ids[0], &chat_of(0), "something else").await;
    assert_eq!((s, v["error"].as_str()), (409, Some("duplicate_id")));

    let back = h.ok("GET", "/_control/accounts/a1/messages", None).await;
    let msgs = back["messages"].as_array().unwrap();
    assert_eq!(back["count"], 60);
    assert_eq!(msgs.len(), 60);
    let unique: HashSet<&str> = msgs.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 60);
    assert_eq!(unique, ids.iter().map(String::as_str).collect());
    for m in msgs {
        let (id, chat) = (m["id"].as_str().unwrap(), m["chat"].as_str().unwrap());
        assert_eq!(m["data_id"], format!("true_{chat}_{id}"));
        assert!(m["received_at"].is_string());
    }
    let to_group = msgs.iter().filter(|m| m["chat"] == gid.as_str()).count();
    assert_eq!(to_group, 30);
    // A second account's sends are its own.
    let other = h.logged_in("a2", "+447700900124").await;
    for i in 0..5 {
        let (s, v) = other
            .send(&format!("3EB1{i:016X}"), "447700900200@c.us", "from a2")
            .await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(
        h.ok("GET", "/_control/accounts/a2/messages", None).await["count"],
        5
    );
    assert_eq!(
        h.ok("GET", "/_control/accounts/a1/messages", None).await["count"],
        60
    );
    let all = h.ok("GET", "/_control/messages", None).await;
    assert_eq!(all["count"], 65);
    let from_a2 = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["account"] == "a2")
        .count();
    assert_eq!(from_a2, 5);

    // Reset forgets everything.
    h.ok("POST", "/_control/reset", None).await;
    assert_eq!(h.ok("GET", "/_control/messages", None).await["count"], 0);
    let (s, _) = h.call("GET", "/_control/accounts/a1", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn refused_sends_are_failed_and_not_counted_as_delivered() {
    let h = Harness::start(fast()).await;
    let page = h.logged_in("a1", "+447700900123").await;
    let chat = "447700900200@c.us";
    assert_eq!(page.send("3EB0000000000001", chat, "one").await.0, 200);
    h.ok(
        "PUT",
        "/_control/accounts/a1/faults",
        Some(json!({ "refuse_sends": true })),
    )
    .await;
    let (s, v) = page.send("3EB0000000000002", chat, "two").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("quota")), "{v}");
    h.ok(
        "PUT",
        "/_control/accounts/a1/faults",
        Some(json!({ "refuse_sends": false })),
    )
    .await;
    assert_eq!(page.send("3EB0000000000003", chat, "three").await.0, 200);
    let back = h.ok("GET", "/_control/accounts/a1/messages", None).await;
    assert_eq!(back["count"], 2);
    let refused = back["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["id"], "3EB0000000000002");
    assert_eq!(refused[0]["ack"], "error");
    assert_eq!(refused[0]["ack_code"], -1);
}

#[tokio::test]
async fn acks_advance_in_order_and_stop_where_told() {
    let h = Harness::start(fast()).await;
    let page = h.logged_in("a1", "+447700900123").await;
    h.ok(
        "PUT",
        "/_control/accounts/a1/ack-timing",
        // Steps far enough apart that a 20 ms poll sees each level even on a
        // loaded machine.
        Some(json!({ "server_ms": 400, "device_ms": 600, "read_ms": 800 })),
    )
    .await;
    let chat = "447700900200@c.us";
    page.send("3EB0000000000010", chat, "runs to read").await;
    page.send("3EB0000000000011", chat, "stops at device").await;
    h.ok(
        "PUT",
        "/_control/accounts/a1/messages/3EB0000000000011/ack",
        Some(json!({ "stop": "device" })),
    )
    .await;
    let order = ["pending", "server", "device", "read"];
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(), Vec::new()];
    // Poll until the first message reads (10 s at most), then a little longer
    // to see that the second one stays where it was told to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settled: Option<Instant> = None;
    while Instant::now() < deadline
        && settled.is_none_or(|t| t.elapsed() < Duration::from_millis(400))
    {
        let back = h.ok("GET", "/_control/accounts/a1/messages", None).await;
        for (i, m) in back["messages"].as_array().unwrap().iter().enumerate() {
            let level = order
                .iter()
                .position(|o| m["ack"] == *o)
                .expect("known level");
            seen[i].push(level);
        }
        if settled.is_none() && seen[0].last() == Some(&3) {
            settled = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in &seen {
        assert!(s.windows(2).all(|w| w[0] <= w[1]), "regressed: {s:?}");
    }
    assert!(
        seen[0].contains(&1) && seen[0].contains(&2),
        "{:?}",
        seen[0]
    );
    assert_eq!(*seen[0].last().unwrap(), 3);
    assert_eq!(*seen[1].last().unwrap(), 2, "{:?}", seen[1]);

    // Lowering the stop below what was shown never takes the ack back.
    let v = h
        .ok(
            "PUT",
            "/_control/accounts/a1/messages/3EB0000000000010/ack",
            Some(json!({ "stop": "pending" })),
        )
        .await;
    assert_eq!(v["ack"], "read");
    let (s, _) = h
        .call(
            "PUT",
            "/_control/accounts/a1/messages/3EB0FFFFFFFFFFFF/ack",
            Some(json!({ "stop": "device" })),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn group_participants_come_in_pages() {
    let h = Harness::start(fast()).await;
    let page = h.logged_in("a1", "+447700900123").await;
    let participants: Vec<Value> = (0..250)
        .map(|i| {
            if i % 5 == 0 {
                json!({ "id": format!("{}@lid", 900000000 + i), "phone": format!("+4477009{:05}", i), "name": format!("P{i}") })
            } else {
                json!({ "phone": format!("+4477009{:05}", i), "admin": i == 1, "super_admin": i == 2 })
            }
        })
        .collect();
    let g = h
        .ok(
            "POST",
            "/_control/groups",
            Some(json!({ "name": "Big", "participants": participants, "accounts": ["a1"] })),
        )
        .await;
    assert_eq!(g["participants"], 250);
    let gid = g["id"].as_str().unwrap();
    let mut seen = HashSet::new();
    let mut offset = 0;
    loop {
        let mut req = page.auth();
        req["chat"] = json!(gid);
        req["offset"] = json!(offset);
        let v = h.ok("POST", "/_page/api/participants", Some(req)).await;
        assert_eq!(v["total"], 250);
        let ps = v["participants"].as_array().unwrap();
        if ps.is_empty() {
            break;
        }
        assert!(ps.len() <= 20);
        for p in ps {
            assert!(seen.insert(p["id"].as_str().unwrap().to_string()));
        }
        offset += ps.len();
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.contains("900000000@lid") && seen.contains("447700900001@c.us"));
}

#[tokio::test]
async fn the_typed_control_client_logs_in_and_reads_back() {
    let h = Harness::start(fast()).await;
    let ctl = h.sim.control();
    ctl.create_account("a1", Some("+447700900123"))
        .await
        .unwrap();
    let err = ctl.qr("a1").await.unwrap_err().to_string();
    assert!(err.contains("stale_token"), "{err}");
    let mut page = h.page("a1", "c1");
    page.state(None).await;
    let wrong = ctl
        .scan_when_shown("a1", "+447700900999", Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("phone"), "{wrong}");
    ctl.scan_when_shown("a1", "+447700900123", Duration::from_secs(2))
        .await
        .unwrap();
    page.until_screen("main").await;
    let chat = ctl
        .add_contact("+447700900200", Some("Bob"), &["a1"])
        .await
        .unwrap();
    assert_eq!(page.send("3EB0000000000001", &chat, "hi").await.0, 200);
    ctl.faults("a1", json!({ "refuse_sends": true }))
        .await
        .unwrap();
    assert_eq!(page.send("3EB0000000000002", &chat, "no").await.0, 429);
    let back = ctl.messages("a1").await.unwrap();
    assert_eq!(back.messages.len(), 1);
    assert_eq!(back.messages[0].account, "a1");
    assert_eq!(back.messages[0].message.body.as_deref(), Some("hi"));
    assert_eq!(back.refused.len(), 1);
    let err = ctl.messages("nobody").await.unwrap_err().to_string();
    assert!(err.contains("unknown_account"), "{err}");
}
