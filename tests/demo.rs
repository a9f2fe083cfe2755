//! `courier demo --short`, the README's first command, end to end: embedded
//! Postgres, the simulator, real Chromium, the API, the worker and the
//! scheduler in one process.

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_pipeline_and_every_message_arrives_once() {
    let dir = tempfile::Builder::new()
        .prefix("courier-demo-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["demo", "--short", "--timeout-secs", "300"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "[7/7] summary",
        "active as +447700900101",
        "3 groups discovered",
        "messages queued by the scheduler",
        "6 messages reached the simulator (0 duplicates)",
        "/ui/accounts/",
        "done in",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // Every account's row in the summary: 2 sent, 2 delivered, 0 failed.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("| Demo sender"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for r in rows {
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        assert_eq!(&cells[3..5], &["2", "2"], "{r}");
        assert_eq!(cells[6], "0", "no failures: {r}");
    }
    // The terminal shows progress only: the log lines (at the default
    // `info`) went to the file named at the start.
    let log = dir.path().join(".courier/demo.log");
    assert!(
        stdout.contains(&format!("logs: {}", log.display())),
        "the log file is not named:\n{stdout}"
    );
    assert!(
        !stderr.contains(" INFO ") && !stderr.contains(" WARN "),
        "log lines on the terminal:\n{stderr}"
    );
    assert!(
        !stdout.contains(" INFO ") && !stdout.contains(" WARN "),
        "log lines on the terminal:\n{stdout}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("queue worker started"), "{logged}");
    // The URLs printed at the end say that they stop with the demo.
    assert!(
        stdout.contains("These stop when the demo ends (run `courier demo --follow` to keep them)"),
        "{stdout}"
    );
    // The embedded cluster was stopped on exit.
    assert!(!dir.path().join(".courier/pg/postmaster.pid").exists());
}
