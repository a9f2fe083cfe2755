//! Foundation: schema, migrations, the embedded cluster and the binary's edge.

use std::process::Command;

use courier::db::{self, EmbeddedOptions, EmbeddedPostgres};
use courier_testkit::fresh_database;

fn courier() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    // Never inherit a developer's overrides.
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn sql_state(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().unwrap_or_default().to_string(),
        other => panic!("expected a database error, got {other}"),
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let t = fresh_database().await.unwrap();
    let again = db::migrate(&t.pool).await.unwrap();
    assert!(
        again.applied.is_empty(),
        "re-run applied {:?}",
        again.applied
    );
    // Running the migrator directly twice more changes nothing either.
    db::MIGRATOR.run(&t.pool).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n as usize, db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn check_constraints_reject_bad_statuses() {
    let t = fresh_database().await.unwrap();
    let p = &t.pool;
    let e = sqlx::query(
        "INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('a', 'authenticatingg')",
    )
    .execute(p)
    .await
    .unwrap_err();
    assert_eq!(sql_state(e), "23514");
    let account: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO mkt_wap_accounts (account_name) VALUES ('a') RETURNING id")
            .fetch_one(p)
            .await
            .unwrap();
    for (table, sql) in [
        (
            "accounts.health",
            "UPDATE mkt_wap_accounts SET health_score = 101",
        ),
        (
            "accounts.phone",
            "UPDATE mkt_wap_accounts SET phone_number = '+44 77'",
        ),
        (
            "schedule",
            "INSERT INTO mkt_con_schedule (status) VALUES ('done')",
        ),
        (
            "schedule.policy",
            "INSERT INTO mkt_con_schedule (catch_up_policy) VALUES ('sometimes')",
        ),
        (
            "campaigns",
            "INSERT INTO mkt_campaigns (name, status) VALUES ('c', 'live')",
        ),
        (
            "groups.id",
            "INSERT INTO mkt_wap_groups (group_id) VALUES ('123@c.us')",
        ),
    ] {
        let e = sqlx::query(sql).execute(p).await.unwrap_err();
        assert_eq!(sql_state(e), "23514", "{table}");
    }
    let msg = |status: &str| {
        format!(
            "INSERT INTO mkt_wap_messages (account_id, channel_type, target_chat_id, message_text, status) \
             VALUES ('{account}', 'individual', '447700900123@c.us', 'hi', '{status}') RETURNING id"
        )
    };
    let e = sqlx::query(sqlx::AssertSqlSafe(msg("delivred")))
        .execute(p)
        .await
        .unwrap_err();
    assert_eq!(sql_state(e), "23514");
    let id: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(msg("queued")))
        .fetch_one(p)
        .await
        .unwrap();

    // The event log is append-only.
    sqlx::query("INSERT INTO mkt_wap_message_events (message_id, status, source) VALUES ($1, 'queued', 'api')")
        .bind(id)
        .execute(p)
        .await
        .unwrap();
    let e = sqlx::query("UPDATE mkt_wap_message_events SET status = 'read'")
        .execute(p)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = sqlx::query("INSERT INTO mkt_wap_message_events (message_id, status, source) VALUES ($1, 'sent', 'somebody')")
        .bind(id)
        .execute(p)
        .await
        .unwrap_err();
    assert_eq!(sql_state(e), "23514");
}

#[tokio::test]
async fn embedded_cluster_survives_a_restart_with_its_data() {
    let dir = tempfile::Builder::new()
        .prefix("courier-emb-")
        .tempdir_in("/tmp")
        .unwrap();
    let data_dir = dir.path().join("pg");
    // The server user must be able to reach the directory when we are root.
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(dir.path()).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let opts = EmbeddedOptions {
        data_dir: data_dir.clone(),
        bin_dir: None,
        run_as: "postgres".into(),
        database: "courier".into(),
        unsafe_no_fsync: false,
    };

    let pg = db::start_embedded(opts.clone()).await.unwrap();
    assert!(pg.initialised_here() && pg.started_here());
    db::ensure_database(&pg, "courier").await.unwrap();
    let pool = db::connect(&pg.url(), 2, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO mkt_wap_accounts (account_name, phone_number) VALUES ('kept', '447700900123')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap()
        .unwrap();

    let pg = db::start_embedded(opts).await.unwrap();
    assert!(!pg.initialised_here(), "the data directory must be reused");
    assert!(pg.started_here());
    let pool = db::connect(&pg.url(), 2, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let name: String = sqlx::query_scalar(
        "SELECT account_name FROM mkt_wap_accounts WHERE phone_number = '447700900123'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(name, "kept");
    assert!(db::migrate(&pool).await.unwrap().applied.is_empty());
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn missing_server_binaries_name_the_package() {
    let e = EmbeddedPostgres::start(EmbeddedOptions {
        data_dir: "/tmp/courier-never".into(),
        bin_dir: Some("/nonexistent/bin".into()),
        run_as: "postgres".into(),
        database: "courier".into(),
        unsafe_no_fsync: true,
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("embedded.bin_dir") && e.contains("initdb"),
        "{e}"
    );
    let e = db::EmbeddedError::BinariesNotFound.to_string();
    assert!(e.contains("apt-get install postgresql"), "{e}");
}

#[test]
fn migrate_starts_its_own_cluster_then_reuses_it() {
    let dir = tempfile::Builder::new()
        .prefix("courier-demo-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = || {
        let out = courier()
            .arg("migrate")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "migrate failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = run();
    assert!(first.contains("new cluster initialised"), "{first}");
    assert!(first.contains("applied migration"), "{first}");
    let second = run();
    assert!(second.contains("existing cluster reused"), "{second}");
    assert!(second.contains("schema up to date"), "{second}");
    // The process stopped the cluster it started.
    assert!(!dir.path().join(".courier/pg/postmaster.pid").exists());
}

#[test]
fn bad_config_is_one_clear_line_and_a_failure() {
    let out = courier()
        .arg("config")
        .env("COURIER__DATABASE__MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("max_connections"),
        "{err}"
    );
}

#[test]
fn unreachable_database_is_one_clear_line_and_a_failure() {
    let out = courier()
        .arg("migrate")
        .env(
            "COURIER__DATABASE__URL",
            "postgres://u:sekrit@127.0.0.1:1/x",
        )
        .env("COURIER__DATABASE__CONNECT_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(!err.contains("sekrit"), "the password leaked: {err}");
}

#[test]
fn config_prints_effective_settings_with_secrets_redacted() {
    let out = courier()
        .arg("config")
        .env("COURIER__DATABASE__URL", "postgres://u:sekrit@db/x")
        .env("COURIER__API__TOKEN", "0123456789abcdef-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("[database]") && s.contains("[redacted]"), "{s}");
    assert!(
        !s.contains("sekrit") && !s.contains("0123456789abcdef"),
        "{s}"
    );
}

/// Every role serves its metrics: `courier scheduler`, run as the real
/// binary, answers `/metrics` on `scheduler.metrics_listen`, reports itself
/// the leader, and as the leader publishes the database-derived gauges (which
/// no API replica publishes any more). Before, the scheduler had no listener,
/// so its lag, leader and the database gauges had no data in compose.
#[tokio::test]
async fn the_scheduler_serves_its_metrics_and_the_leader_publishes_the_database_gauges() {
    let t = fresh_database().await.unwrap();
    sqlx::query("INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('m', 'active')")
        .execute(&t.pool)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["scheduler"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COURIER__DATABASE__URL", &t.url)
        .env(
            "COURIER__SCHEDULER__METRICS_LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .env("COURIER__SCHEDULER__TICK", "200ms")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        if let Ok(r) = reqwest::get(&url).await {
            let body = r.text().await.unwrap_or_default();
            if body.contains("courier_scheduler_leader 1")
                && body.contains("courier_accounts{status=\"active\"} 1")
            {
                break body;
            }
            if std::time::Instant::now() >= deadline {
                panic!("the scheduler's /metrics lacks the leader or the account gauge:\n{body}");
            }
        } else if std::time::Instant::now() >= deadline {
            panic!("the scheduler serves no /metrics on {url}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(body.contains("courier_scheduler_lag_seconds"), "{body}");

    // Leadership lost (its lock connection killed, another session takes
    // the lock): the old leader stops publishing the database gauges at
    // once. Before, its recorder repeated the last values for ever, next to
    // the new leader's, doubling every sum an alert reads.
    let mut rival = t.pool.acquire().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
               AND granted AND ((classid::int8 << 32) | objid::int8) = $1",
        )
        .bind(courier::scheduler::leader::LOCK_KEY)
        .execute(&mut *rival)
        .await
        .unwrap();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(courier::scheduler::leader::LOCK_KEY)
            .fetch_one(&mut *rival)
            .await
            .unwrap();
        if got {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never free"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let body = loop {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if body.contains("courier_scheduler_leader 0") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never noticed it lost leadership:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for gone in [
        "courier_accounts",
        "courier_messages{",
        "courier_queue_depth",
    ] {
        assert!(
            !body.lines().any(|l| l.starts_with(gone)),
            "a former leader still publishes {gone}:\n{body}"
        );
    }
    child.kill().await.unwrap();
}

#[test]
fn browser_max_open_of_zero_and_the_old_idle_close_key_are_refused_by_name() {
    for (key, value, named) in [
        ("COURIER__BROWSER__MAX_OPEN", "0", "browser.max_open"),
        (
            "COURIER__BROWSER__IDLE_CLOSE_AFTER",
            "0s",
            "browser.idle_close_after",
        ),
        ("COURIER__BROWSER__IDLE_CLOSE", "30s", "idle_close"),
    ] {
        let out = courier().arg("config").env(key, value).output().unwrap();
        assert!(!out.status.success(), "{key}={value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(named), "{key}={value}: {err}");
    }
}
