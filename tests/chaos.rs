//! The CI chaos run: `courier chaos --profile ci` as a real process (which
//! starts its own Postgres, simulator, API, scheduler and three workers with
//! Chromium), under kill -9, Postgres restarts, browser kills, simulator
//! faults and SIGSTOP past the lease. It must exit 0 and report zero
//! duplicates, losses and budget violations.

use std::process::Command;

fn row(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells[1] == name)
            .then(|| cells[2].parse().ok())
            .flatten()
    })
}

#[test]
fn the_ci_chaos_run_loses_nothing_duplicates_nothing_and_keeps_every_budget() {
    let seed = std::env::var("COURIER_CHAOS_SEED").unwrap_or_else(|_| "20261122".into());
    let out = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["chaos", "--profile", "ci", "--seed", &seed])
        .env_remove("COURIER__DATABASE__URL")
        .env("COURIER__LOG__LEVEL", "warn,sqlx=error")
        .output()
        .expect("courier chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "courier chaos failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for name in ["duplicates", "losses", "budget violations"] {
        assert_eq!(
            row(&stdout, name),
            Some(0),
            "`{name}` must be 0 in the report:\n{stdout}"
        );
    }
    let delivered = row(&stdout, "delivered (reached the simulator)").unwrap_or(0);
    assert!(delivered > 0, "nothing was delivered:\n{stdout}");
    let faults = row(&stdout, "**all**").unwrap_or(0);
    assert!(
        faults >= 10,
        "too few faults injected ({faults}):\n{stdout}"
    );
}
