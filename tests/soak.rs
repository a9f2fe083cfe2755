//! The soak sampler against real processes: chromedriver and two headless
//! Chromium sessions started by this test, found in this process's tree and
//! grouped by their `--user-data-dir`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_lab::soak::sample_browser_tree;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium(profile: &std::path::Path) -> Kill {
    Kill(
        Command::new("/usr/bin/chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    )
}

#[test]
fn sampler_finds_chromedriver_and_each_chromium_session_in_its_own_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("session-a"), dir.path().join("session-b"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Kill(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let _a = chromium(&p1);
    let _b = chromium(&p2);

    // Chromium forks its helpers (zygote, utility, renderer) over a second or two.
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mem = loop {
        let m = sample_browser_tree(me);
        if m.sessions.len() == 2 && m.sessions.values().all(|s| s.procs >= 2) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "two Chromium sessions with helpers not found: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let keys: Vec<&String> = mem.sessions.keys().collect();
    assert_eq!(
        keys,
        [&p1.display().to_string(), &p2.display().to_string()],
        "sessions keyed by their --user-data-dir"
    );
    assert_eq!(mem.chromedriver.procs, 1, "{mem:?}");
    assert!(mem.chromedriver.pss_kib > 0);
    for s in mem.sessions.values() {
        assert!(s.pss_kib > 1024, "a session's PSS is over 1 MiB: {s:?}");
        assert!(s.rss_kib >= s.pss_kib);
    }
    let all = mem.chromium();
    assert_eq!(
        all.procs,
        mem.sessions.values().map(|s| s.procs).sum::<usize>()
    );
}
