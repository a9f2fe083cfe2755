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
        .env("COURIER__LOG__LEVEL", "warn")
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
    // The embedded cluster was stopped on exit.
    assert!(!dir.path().join(".courier/pg/postmaster.pid").exists());
}
