//! Courier takes over the previous system's database (docs/migration.md).
//!
//! The previous system's tables are built from the seed documents' column
//! lists (tests/fixtures/seed_schema.sql), filled with rows in every state
//! its documents name (each status word, NULLs, arrays, JSONB, numbers as
//! people type them), and migrated by Courier's own migration entry point,
//! the one `courier migrate` and every role run. Every row must still be
//! there, mapped as documented, and served by the API; a second run changes
//! nothing; a table Courier cannot use stops the migration with one error
//! and leaves the database as it was.

use std::collections::BTreeSet;

use courier::db::{self, AdoptError, Adoption, DbError};
use courier_testkit::{empty_database, fresh_database, TestApp, TestDb};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const SEED_SCHEMA: &str = include_str!("fixtures/seed_schema.sql");

/// Rows in every state the seed documents name.
const SEED_ROWS: &str = r#"
INSERT INTO mkt_campaigns (id, name, status) VALUES
    ('c0000000-0000-0000-0000-000000000001', 'Winter feed', 'running');
INSERT INTO mkt_con_content (id, campaign_id, title, body) VALUES
    ('c1000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000001', 'Offer', 'Feed at 10% off');
INSERT INTO mkt_con_schedule (campaign_id, content_id, status) VALUES
    ('c0000000-0000-0000-0000-000000000001', 'c1000000-0000-0000-0000-000000000001', 'scheduled');

INSERT INTO mkt_wap_accounts (id, account_name, phone_number, status, health_score, daily_usage_count,
                              daily_usage_limit, session_data, session_storage_path, rate_limit_config) VALUES
    ('a0000000-0000-0000-0000-000000000001', 'inactive one', '919800000001', 'inactive', 100, 0, 200, '{}', NULL, '{}'),
    ('a0000000-0000-0000-0000-000000000002', 'active one', '+91 98000-00002', 'active', 87, 12, 200,
        '{"qrCode": null, "lastConnected": "2025-12-01T10:00:00Z"}',
        './whatsapp-sessions/session-a0000000-0000-0000-0000-000000000002', '{"perMinute": 5, "perHour": 60}'),
    ('a0000000-0000-0000-0000-000000000003', 'warming one', NULL, 'warming', 100, 0, 200,
        '{"qrCode": "2@abc"}', './whatsapp-sessions/session-a0000000-0000-0000-0000-000000000003', '{}'),
    ('a0000000-0000-0000-0000-000000000004', 'standby one', '919800000004', 'standby', 64, 3, 150, '{}', NULL, '{}'),
    ('a0000000-0000-0000-0000-000000000005', 'banned one', '919800000005', 'banned', 0, 0, 200, '{}', NULL, '{}'),
    ('a0000000-0000-0000-0000-000000000006', 'stuck one', NULL, 'authenticating', 100, 0, 200, '{}', NULL, '{}'),
    ('a0000000-0000-0000-0000-000000000007', 'odd one', '919800000007', 'Reconnecting', 100, 0, 200, '{}', NULL, '{}'),
    ('a0000000-0000-0000-0000-000000000008', NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('a0000000-0000-0000-0000-000000000009', '  shouting one ', '919800000009', 'ACTIVE', 100, -1, 200, '{}', NULL, '[1, 2]');

INSERT INTO mkt_wap_groups (id, group_id, name, member_count, region, state, district, segment_tags, account_id, metadata) VALUES
    ('b0000000-0000-0000-0000-000000000001', '120363000000000001@g.us', 'Poultry farmers north', 210,
        'north', 'Punjab', 'Ludhiana', '{poultry,farmers}', 'a0000000-0000-0000-0000-000000000002', '{"source": "discover"}'),
    ('b0000000-0000-0000-0000-000000000002', '120363000000000002', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

INSERT INTO mkt_wap_contacts (id, phone_number, name, engagement_score, group_memberships, scraped_from_groups, source) VALUES
    ('d0000000-0000-0000-0000-000000000001', '919811111111', 'Ravi', 40,
        '{b0000000-0000-0000-0000-000000000001}', '{b0000000-0000-0000-0000-000000000001}', 'scrape'),
    ('d0000000-0000-0000-0000-000000000002', '+91 98111-11112', NULL, NULL, NULL, NULL, 'import');

INSERT INTO mkt_wap_messages (id, campaign_id, content_id, account_id, message_type, channel_type,
                              target_group_id, target_contact_id, message_text, media_url, status,
                              error_message, retry_count, whatsapp_message_id, sent_at, delivered_at, read_at) VALUES
    ('e0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000001', NULL, NULL, 'text', 'group',
        'b0000000-0000-0000-0000-000000000001', NULL, 'pending hello', NULL, 'pending', NULL, 0, NULL, NULL, NULL, NULL),
    ('e0000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000001', NULL, 'a0000000-0000-0000-0000-000000000002',
        'text', 'individual', NULL, 'd0000000-0000-0000-0000-000000000001', 'queued hello', NULL, 'queued', NULL, 0, NULL, NULL, NULL, NULL),
    ('e0000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000001', NULL, 'a0000000-0000-0000-0000-000000000002',
        'image', 'group', 'b0000000-0000-0000-0000-000000000001', NULL, NULL, 'https://cdn.example/feed.jpg', 'sending', NULL, 0, NULL, NULL, NULL, NULL),
    ('e0000000-0000-0000-0000-000000000004', 'c0000000-0000-0000-0000-000000000001', 'c1000000-0000-0000-0000-000000000001',
        'a0000000-0000-0000-0000-000000000002', 'text', 'group', 'b0000000-0000-0000-0000-000000000001', NULL, 'sent hello', NULL,
        'sent', NULL, 0, 'true_120363000000000001@g.us_3EB0A1', now() - interval '3 hours', NULL, NULL),
    ('e0000000-0000-0000-0000-000000000005', 'c0000000-0000-0000-0000-000000000001', NULL, 'a0000000-0000-0000-0000-000000000002',
        'text', 'individual', NULL, 'd0000000-0000-0000-0000-000000000002', 'delivered hello', NULL, 'delivered', NULL, 0, NULL,
        now() - interval '3 hours', now() - interval '2 hours', NULL),
    ('e0000000-0000-0000-0000-000000000006', 'c0000000-0000-0000-0000-000000000001', NULL, 'a0000000-0000-0000-0000-000000000002',
        'link', 'individual', NULL, 'd0000000-0000-0000-0000-000000000001', 'read hello https://example.com', NULL, 'read', NULL, 0, NULL,
        now() - interval '3 hours', now() - interval '2 hours', now() - interval '1 hour'),
    ('e0000000-0000-0000-0000-000000000007', 'c0000000-0000-0000-0000-000000000001', NULL, 'a0000000-0000-0000-0000-000000000004',
        'text', 'group', 'b0000000-0000-0000-0000-000000000002', NULL, 'failed hello', NULL, 'failed', 'Evaluation failed: timeout', 3,
        NULL, NULL, NULL, NULL),
    ('e0000000-0000-0000-0000-000000000008', 'c0000000-0000-0000-0000-000000000001', NULL, NULL, NULL, 'broadcast',
        NULL, NULL, 'to a broadcast list', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('e0000000-0000-0000-0000-000000000009', 'c0000000-0000-0000-0000-000000000001', NULL, NULL, 'sticker', NULL,
        NULL, NULL, NULL, NULL, 'pending', NULL, 0, NULL, NULL, NULL, NULL);
"#;

fn id(n: &str) -> Uuid {
    n.parse().unwrap()
}

async fn seeded() -> TestDb {
    let db = empty_database().await.unwrap();
    sqlx::raw_sql(SEED_SCHEMA).execute(&db.pool).await.unwrap();
    sqlx::raw_sql(SEED_ROWS).execute(&db.pool).await.unwrap();
    db
}

/// Every table's rows, as text, in id order: what "changes nothing" compares.
async fn data(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for t in [
        "mkt_campaigns",
        "mkt_con_content",
        "mkt_wap_accounts",
        "mkt_wap_groups",
        "mkt_wap_contacts",
        "mkt_wap_messages",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {t} t ORDER BY id"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        out.extend(rows);
    }
    out
}

/// Tables, columns (type, nullability), constraints and indexes.
async fn schema(pool: &PgPool) -> BTreeSet<String> {
    let q = |sql: &'static str| sqlx::query_scalar::<_, String>(sql).fetch_all(pool);
    let mut out = BTreeSet::new();
    out.extend(
        q("SELECT format('column %s.%s %s%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
                         CASE WHEN a.attnotnull THEN ' not null' ELSE '' END) \
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped")
        .await
        .unwrap(),
    );
    out.extend(
        q("SELECT format('constraint %s.%s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)) \
           FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'")
        .await
        .unwrap(),
    );
    out.extend(
        q("SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'")
            .await
            .unwrap(),
    );
    out.extend(
        q("SELECT format('trigger %s.%s', tgrelid::regclass, tgname) FROM pg_trigger WHERE NOT tgisinternal")
            .await
            .unwrap(),
    );
    out
}

async fn ids(pool: &PgPool, table: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {table}")))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn listed(v: &Value) -> BTreeSet<Uuid> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_previous_systems_database_is_adopted_and_every_row_is_served() {
    let db = seeded().await;
    let p = db.pool.clone();
    let before: Vec<BTreeSet<Uuid>> = all_ids(&p).await;

    let report = db::migrate(&p).await.expect("the seed schema is adopted");
    let Adoption::Adopted(summary) = &report.adoption else {
        panic!("expected an adoption, got {:?}", report.adoption)
    };
    assert_eq!(summary.tables.len(), 4, "{summary:?}");
    assert!(summary.changed_values > 0);
    // Every later migration applied on top.
    let last = db::MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert_eq!(report.applied.last().map(|a| a.0), Some(last), "{report:?}");
    assert!(
        !report.applied.iter().any(|a| a.0 == 1),
        "0001 is recorded by the adoption, not run"
    );

    // Every row is still there.
    assert_eq!(all_ids(&p).await, before);

    // Accounts, mapped as documented.
    let account = |n: &'static str| {
        let p = p.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<String>, Option<String>, String, i32, String)>(
                "SELECT status, status_reason, pause_reason, phone_number, account_name, health_score, \
                        rate_limit_config::text FROM mkt_wap_accounts WHERE id = $1",
            )
            .bind(id(n))
            .fetch_one(&p)
            .await
            .unwrap()
        }
    };
    let a = account("a0000000-0000-0000-0000-000000000001").await;
    assert_eq!((a.0.as_str(), a.1), ("inactive", None));
    let a = account("a0000000-0000-0000-0000-000000000002").await;
    assert_eq!(a.0, "active");
    assert_eq!(a.3.as_deref(), Some("919800000002"), "formatting removed");
    assert_eq!(a.5, 87);
    assert_eq!(a.6, r#"{"perHour": 60, "perMinute": 5}"#);
    let a = account("a0000000-0000-0000-0000-000000000003").await;
    assert_eq!(a.0, "warming");
    assert!(a.1.unwrap().contains("warm-up"));
    let a = account("a0000000-0000-0000-0000-000000000004").await;
    assert_eq!(a.0, "paused", "standby is a manual pause");
    assert!(a.2.unwrap().contains("standby"), "with its reason");
    assert_eq!(
        account("a0000000-0000-0000-0000-000000000005").await.0,
        "banned"
    );
    let a = account("a0000000-0000-0000-0000-000000000006").await;
    assert_eq!(a.0, "inactive");
    assert!(
        a.1.unwrap().contains("'authenticating'"),
        "the original word is kept"
    );
    let a = account("a0000000-0000-0000-0000-000000000007").await;
    assert_eq!(a.0, "inactive");
    assert!(a.1.unwrap().contains("'Reconnecting'"));
    let a = account("a0000000-0000-0000-0000-000000000008").await;
    assert_eq!(
        (a.0.as_str(), a.3, a.4.as_str(), a.5, a.6.as_str()),
        ("inactive", None, "account a0000000", 100, "{}")
    );
    let a = account("a0000000-0000-0000-0000-000000000009").await;
    assert_eq!(
        (a.0.as_str(), a.4.as_str(), a.6.as_str()),
        ("active", "shouting one", "{}")
    );
    // The seed's own columns are kept as they were.
    let path: Option<String> = sqlx::query_scalar(
        "SELECT session_storage_path FROM mkt_wap_accounts WHERE id = 'a0000000-0000-0000-0000-000000000003'",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(
        path.as_deref(),
        Some("./whatsapp-sessions/session-a0000000-0000-0000-0000-000000000003")
    );
    let source: String = sqlx::query_scalar(
        "SELECT source FROM mkt_wap_contacts WHERE id = 'd0000000-0000-0000-0000-000000000002'",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(source, "import");

    // Every changed value is logged with its original.
    let logged: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT column_name, old_value, new_value FROM courier_adoption_changes \
         WHERE row_id = 'a0000000-0000-0000-0000-000000000002' ORDER BY id",
    )
    .fetch_all(&p)
    .await
    .unwrap();
    assert_eq!(
        logged,
        vec![(
            "phone_number".into(),
            Some("+91 98000-00002".into()),
            Some("919800000002".into())
        )]
    );

    // Groups, contacts and their memberships.
    let groups: Vec<(String, String, Vec<String>)> =
        sqlx::query_as("SELECT group_id, name, segment_tags FROM mkt_wap_groups ORDER BY id")
            .fetch_all(&p)
            .await
            .unwrap();
    assert_eq!(
        groups,
        vec![
            (
                "120363000000000001@g.us".into(),
                "Poultry farmers north".into(),
                vec!["poultry".into(), "farmers".into()]
            ),
            ("120363000000000002@g.us".into(), String::new(), vec![]),
        ]
    );
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mkt_wap_group_members WHERE group_id = 'b0000000-0000-0000-0000-000000000001' \
           AND contact_id = 'd0000000-0000-0000-0000-000000000001'",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(members, 1);
    let phones: Vec<String> =
        sqlx::query_scalar("SELECT phone_number FROM mkt_wap_contacts ORDER BY id")
            .fetch_all(&p)
            .await
            .unwrap();
    assert_eq!(phones, vec!["919811111111", "919811111112"]);

    // Messages: status words and targets.
    #[derive(sqlx::FromRow)]
    struct Msg {
        status: String,
        target_chat_id: String,
        error_message: Option<String>,
        waiting_reason: Option<String>,
    }
    let msgs: Vec<Msg> = sqlx::query_as(
        "SELECT status, target_chat_id, error_message, waiting_reason FROM mkt_wap_messages ORDER BY id",
    )
    .fetch_all(&p)
    .await
    .unwrap();
    let got: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| (m.status.as_str(), m.target_chat_id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("pending", "120363000000000001@g.us"),
            ("pending", "919811111111@c.us"),
            ("failed", "120363000000000001@g.us"),
            ("sent", "120363000000000001@g.us"),
            ("delivered", "919811111112@c.us"),
            ("read", "919811111111@c.us"),
            ("failed", "120363000000000002@g.us"),
            ("failed", "0@c.us"),
            ("failed", "0@c.us"),
        ]
    );
    let error = |i: usize| msgs[i].error_message.as_deref().unwrap_or_default();
    assert!(msgs[1]
        .waiting_reason
        .as_deref()
        .unwrap()
        .contains("queued"));
    assert!(error(2).contains("outcome unknown"));
    assert_eq!(error(6), "Evaluation failed: timeout");
    assert!(error(7).contains("no status"));
    assert!(error(8).contains("nothing to send"));

    // The API serves every row: /v1 and the admin UI's routes.
    let all_accounts = ids(&p, "mkt_wap_accounts").await;
    let all_messages = ids(&p, "mkt_wap_messages").await;
    let all_groups = ids(&p, "mkt_wap_groups").await;
    let app = TestApp::builder().database(db.clone()).spawn().await;
    let (s, v) = app.get("/v1/accounts").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_accounts);
    let (s, v) = app.get("/whatsapp/accounts").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_accounts);
    let (s, v) = app.get("/v1/messages?limit=500").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_messages);
    let (s, v) = app.get("/whatsapp/messages").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_messages);
    for m in &all_messages {
        let (s, v) = app.get(&format!("/v1/messages/{m}")).await;
        assert!(s.is_success(), "{m}: {v}");
    }
    let (s, v) = app.get("/v1/groups").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_groups);
    let (s, v) = app.get("/whatsapp/groups").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(listed(&v), all_groups);
    let (s, v) = app
        .get("/whatsapp/accounts/a0000000-0000-0000-0000-000000000004")
        .await;
    assert!(s.is_success(), "{v}");
    // The admin UI reads the seed's word; Courier's own is beside it.
    assert_eq!(v["status"], "standby", "{v}");
    assert_eq!(v["courierStatus"], "paused", "{v}");
    let (s, v) = app.get("/whatsapp/stats").await;
    assert!(s.is_success(), "{v}");

    // A second run changes nothing and says so.
    let rows = data(&p).await;
    let shape = schema(&p).await;
    let again = db::migrate(&p).await.unwrap();
    assert!(
        matches!(again.adoption, Adoption::AlreadyAdopted { .. }),
        "{:?}",
        again.adoption
    );
    assert!(again.applied.is_empty());
    assert_eq!(data(&p).await, rows);
    assert_eq!(schema(&p).await, shape);
}

async fn all_ids(p: &PgPool) -> Vec<BTreeSet<Uuid>> {
    let mut out = Vec::new();
    for t in [
        "mkt_campaigns",
        "mkt_con_content",
        "mkt_con_schedule",
        "mkt_wap_accounts",
        "mkt_wap_groups",
        "mkt_wap_contacts",
        "mkt_wap_messages",
    ] {
        out.push(ids(p, t).await);
    }
    out
}

/// The adopted database has every table, column, constraint, index and
/// trigger a fresh Courier database has, with the same definitions (so the
/// migrations after 0001, and the ones to come, find what they expect); the
/// previous system's own columns and indexes are extra.
#[tokio::test]
async fn an_adopted_database_has_the_shape_of_a_fresh_one() {
    let fresh = fresh_database().await.unwrap();
    let adopted = seeded().await;
    db::migrate(&adopted.pool).await.unwrap();
    let want = schema(&fresh.pool).await;
    let got = schema(&adopted.pool).await;
    let missing: Vec<&String> = want
        .iter()
        // The test kit's own table in fresh databases.
        .filter(|s| !s.contains("queue_handler_records"))
        // The campaign system's status words are its own: 0001 creates
        // these CHECKs only with tables it creates, never on existing ones.
        .filter(|s| {
            !s.starts_with("constraint mkt_campaigns.mkt_campaigns_status_check")
                && !s.starts_with("constraint mkt_con_schedule.mkt_con_schedule_status_check")
        })
        .filter(|s| !got.contains(*s))
        .collect();
    assert!(missing.is_empty(), "missing after adoption:\n{missing:#?}");
}

/// What the database looked like: rows and shape.
async fn snapshot(p: &PgPool) -> (Vec<String>, BTreeSet<String>) {
    (data(p).await, schema(p).await)
}

#[tokio::test]
async fn a_column_of_an_incompatible_type_stops_the_adoption_and_changes_nothing() {
    let db = seeded().await;
    let p = &db.pool;
    sqlx::query("ALTER TABLE mkt_wap_groups ALTER COLUMN member_count TYPE bigint")
        .execute(p)
        .await
        .unwrap();
    let before = snapshot(p).await;
    let err = db::migrate(p)
        .await
        .expect_err("bigint is not Courier's integer");
    let DbError::Adopt(AdoptError::Incompatible {
        table,
        column,
        found,
        ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (table.as_str(), column.as_str(), found.as_str()),
        ("mkt_wap_groups", "member_count", "bigint")
    );
    let text = err.to_string();
    assert!(
        text.contains("mkt_wap_groups") && text.contains("member_count") && text.contains("bigint"),
        "{text}"
    );
    assert_eq!(snapshot(p).await, before, "nothing changed");
}

#[tokio::test]
async fn a_row_that_still_breaks_a_rule_is_named_and_nothing_changes() {
    let db = seeded().await;
    let p = &db.pool;
    sqlx::query(
        "INSERT INTO mkt_wap_contacts (id, phone_number, source) \
         VALUES ('d0000000-0000-0000-0000-000000000009', '098111 11119', 'typed')",
    )
    .execute(p)
    .await
    .unwrap();
    let before = snapshot(p).await;
    let err = db::migrate(p)
        .await
        .expect_err("a national number is not E.164");
    let text = err.to_string();
    assert!(
        text.contains("mkt_wap_contacts")
            && text.contains("d0000000-0000-0000-0000-000000000009")
            && text.contains("phone_number")
            && text.contains("'098111 11119'"),
        "{text}"
    );
    assert_eq!(snapshot(p).await, before, "nothing changed");
    // Fixed, it goes through.
    sqlx::query("UPDATE mkt_wap_contacts SET phone_number = '919811111119' WHERE source = 'typed'")
        .execute(p)
        .await
        .unwrap();
    let report = db::migrate(p).await.unwrap();
    assert!(matches!(report.adoption, Adoption::Adopted(_)));
}

#[tokio::test]
async fn a_fresh_database_needs_no_adoption() {
    let db = empty_database().await.unwrap();
    let report = db::migrate(&db.pool).await.unwrap();
    assert_eq!(report.adoption, Adoption::NotNeeded);
    assert!(report.applied.iter().any(|a| a.0 == 1));
    let again = db::migrate(&db.pool).await.unwrap();
    assert_eq!(again.adoption, Adoption::NotNeeded);
    assert!(again.applied.is_empty());
}

/// Every role migrates at start: two processes starting on the previous
/// system's database at once adopt it once, and both come up.
#[tokio::test]
async fn two_processes_starting_at_once_adopt_once() {
    let db = seeded().await;
    let (a, b) = tokio::join!(db::migrate(&db.pool), db::migrate(&db.pool));
    let outcomes = [a.unwrap().adoption, b.unwrap().adoption];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Adoption::Adopted(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Adoption::AlreadyAdopted { .. })),
        "{outcomes:?}"
    );
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM courier_adoption")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(records, 1);
}

/// `courier` with only the test database configured.
fn courier(url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_courier"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COURIER") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("COURIER__DATABASE__URL", url);
    cmd
}

fn run(mut cmd: std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What an operator sees: `courier migrate` says what it adopted, then that
/// there is nothing left to adopt; `courier import-sessions` refuses a
/// directory it cannot read and, on a dry run, says it changed nothing.
#[tokio::test]
async fn the_commands_say_what_they_did() {
    let db = seeded().await;
    let mut cmd = courier(&db.url);
    cmd.arg("migrate");
    let (ok, first) = run(cmd);
    assert!(ok, "{first}");
    assert!(
        first.contains("adopted the previous system's tables: mkt_wap_accounts, mkt_wap_groups, mkt_wap_contacts, mkt_wap_messages"),
        "{first}"
    );
    assert!(first.contains("applied migration 2 queue"), "{first}");
    let mut cmd = courier(&db.url);
    cmd.arg("migrate");
    let (ok, second) = run(cmd);
    assert!(ok, "{second}");
    assert!(second.contains("nothing to adopt now"), "{second}");
    assert!(second.contains("schema up to date"), "{second}");

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = courier(&db.url);
    cmd.args(["import-sessions", "--dry-run", "--from"])
        .arg(dir.path().join("missing"));
    let (ok, out) = run(cmd);
    assert!(!ok);
    assert!(out.contains("cannot read the session directory"), "{out}");
    std::fs::create_dir(dir.path().join("session-nobody")).unwrap();
    let mut cmd = courier(&db.url);
    cmd.args(["import-sessions", "--dry-run", "--from"])
        .arg(dir.path());
    let (ok, out) = run(cmd);
    assert!(ok, "{out}");
    assert!(out.contains("session-nobody: no account matches"), "{out}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");
}

/// A previous system with only some of the tables (here: accounts alone)
/// gets the others created as 0001 would, and the same shape as a fresh
/// database.
#[tokio::test]
async fn a_database_with_only_some_of_the_tables_is_adopted_too() {
    let db = empty_database().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE mkt_wap_accounts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
             phone_number text, account_name text, status text); \
         INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('only one', 'standby');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let report = db::migrate(&db.pool).await.unwrap();
    let Adoption::Adopted(summary) = &report.adoption else {
        panic!("{:?}", report.adoption)
    };
    assert_eq!(summary.tables, vec!["mkt_wap_accounts"]);
    assert!(summary.created.contains(&"mkt_wap_messages".to_string()));
    let fresh = fresh_database().await.unwrap();
    let want = schema(&fresh.pool).await;
    let got = schema(&db.pool).await;
    let missing: Vec<&String> = want
        .iter()
        .filter(|s| !s.contains("queue_handler_records"))
        .filter(|s| !got.contains(*s))
        .collect();
    assert!(missing.is_empty(), "missing after adoption:\n{missing:#?}");
    let status: String = sqlx::query_scalar("SELECT status FROM mkt_wap_accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "paused");
}

/// The campaign system's own schedule rows (tests/fixtures/seed_schema.sql:
/// campaign, content, channel, time, status; none of Courier's target
/// columns) expand to the campaign's audience as the seed stored it, or
/// wait with the reason; the seed's campaign status words are obeyed.
#[tokio::test]
async fn the_campaign_systems_schedule_rows_expand_to_the_campaigns_audience_or_wait() {
    use courier::scheduler::{Outcome, Scheduler};
    let db = seeded().await;
    let p = db.pool.clone();
    // Written the seed's way, before Courier ever ran: a campaign with no
    // message yet, and a paused one (the seed has no CHECK on the word).
    sqlx::raw_sql(
        "INSERT INTO mkt_campaigns (id, name, status) VALUES
             ('c0000000-0000-0000-0000-000000000002', 'Spring', 'active'),
             ('c0000000-0000-0000-0000-000000000003', 'Paused one', ' Paused');
         INSERT INTO mkt_con_content (id, campaign_id, title, body) VALUES
             ('c1000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000002', 'Hi', 'Spring is here'),
             ('c1000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000003', 'Hi', 'Later');
         INSERT INTO mkt_con_schedule (id, campaign_id, content_id, status) VALUES
             ('5c000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000002',
              'c1000000-0000-0000-0000-000000000002', 'scheduled'),
             ('5c000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000003',
              'c1000000-0000-0000-0000-000000000003', 'scheduled');
         INSERT INTO mkt_wap_messages (campaign_id, account_id, channel_type, target_group_id, message_text, status)
             VALUES ('c0000000-0000-0000-0000-000000000003', 'a0000000-0000-0000-0000-000000000002', 'group',
                     'b0000000-0000-0000-0000-000000000001', 'earlier', 'sent');",
    )
    .execute(&p)
    .await
    .unwrap();
    db::migrate(&p).await.unwrap();
    let seed_row: Uuid = sqlx::query_scalar(
        "SELECT id FROM mkt_con_schedule WHERE campaign_id = 'c0000000-0000-0000-0000-000000000001'",
    )
    .fetch_one(&p)
    .await
    .unwrap();

    let scheduler = Scheduler::new(p.clone(), &courier::config::Settings::defaults());
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.holds.held, 1, "{report:?}");

    // "Winter feed": its messages went to two groups and two contacts.
    let e = report
        .expansions
        .iter()
        .find(|e| e.schedule_id == seed_row)
        .unwrap_or_else(|| panic!("the seed's row expanded: {report:?}"));
    assert_eq!(e.outcome, Outcome::Expanded, "{e:?}");
    assert_eq!((e.recipients, e.queued, e.pending), (4, 3, 1), "{e:?}");
    type Sent = (String, String, Option<Uuid>, Option<String>, Option<String>);
    let sent: Vec<Sent> = sqlx::query_as(
        "SELECT target_chat_id, status, account_id, message_text, waiting_reason FROM mkt_wap_messages \
         WHERE schedule_id = $1 ORDER BY target_chat_id",
    )
    .bind(seed_row)
    .fetch_all(&p)
    .await
    .unwrap();
    let chats: Vec<&str> = sent.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        chats,
        [
            "120363000000000001@g.us",
            "120363000000000002@g.us",
            "919811111111@c.us",
            "919811111112@c.us"
        ]
    );
    assert!(sent
        .iter()
        .all(|m| m.3.as_deref() == Some("Feed at 10% off")));
    // The group goes through the account that found it and sent there before.
    assert_eq!(
        (sent[0].1.as_str(), sent[0].2),
        ("queued", Some(id("a0000000-0000-0000-0000-000000000002")))
    );
    // No account is a member of the other group: it waits, with the reason.
    assert_eq!(sent[1].1, "pending");
    assert!(
        sent[1]
            .4
            .as_deref()
            .unwrap_or("")
            .contains("member of group"),
        "{:?}",
        sent[1]
    );
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, status_reason FROM mkt_con_schedule WHERE id = $1")
            .bind(seed_row)
            .fetch_one(&p)
            .await
            .unwrap();
    assert_eq!(status, "queued", "{reason:?}");

    // "Spring" has sent nothing: the row waits, and says so; it is not failed.
    let spring = id("5c000000-0000-0000-0000-000000000002");
    let e = report
        .expansions
        .iter()
        .find(|e| e.schedule_id == spring)
        .unwrap();
    assert!(
        matches!(&e.outcome, Outcome::Waiting(r) if r.contains("names no recipient")),
        "{e:?}"
    );
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, status_reason FROM mkt_con_schedule WHERE id = $1")
            .bind(spring)
            .fetch_one(&p)
            .await
            .unwrap();
    assert_eq!(status, "scheduled");
    assert!(reason
        .unwrap_or_default()
        .starts_with("waiting for targets"));
    // Once the campaign has an audience, the row expands at its next look.
    sqlx::raw_sql(
        "INSERT INTO mkt_wap_messages (campaign_id, channel_type, target_contact_id, message_text, status, target_chat_id)
             VALUES ('c0000000-0000-0000-0000-000000000002', 'individual', 'd0000000-0000-0000-0000-000000000001',
                     'hello', 'sent', '919811111111@c.us');
         UPDATE mkt_con_schedule SET next_occurrence_at = now() WHERE id = '5c000000-0000-0000-0000-000000000002';",
    )
    .execute(&p)
    .await
    .unwrap();
    let report = scheduler.tick().await.unwrap();
    let e = report
        .expansions
        .iter()
        .find(|e| e.schedule_id == spring)
        .unwrap();
    assert_eq!((&e.outcome, e.recipients), (&Outcome::Expanded, 1), "{e:?}");

    // " Paused" (the seed's word, as typed): held, not expanded, the reason shown.
    let paused = id("5c000000-0000-0000-0000-000000000003");
    assert!(report.expansions.iter().all(|e| e.schedule_id != paused));
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, status_reason FROM mkt_con_schedule WHERE id = $1")
            .bind(paused)
            .fetch_one(&p)
            .await
            .unwrap();
    assert_eq!(status, "scheduled");
    assert!(reason.unwrap_or_default().contains("\"Paused one\""));
    // Resumed in the campaign system: it expands.
    sqlx::query("UPDATE mkt_campaigns SET status = 'running' WHERE id = 'c0000000-0000-0000-0000-000000000003'")
        .execute(&p)
        .await
        .unwrap();
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.holds.released, 1);
    let e = report
        .expansions
        .iter()
        .find(|e| e.schedule_id == paused)
        .unwrap();
    assert_eq!((&e.outcome, e.recipients), (&Outcome::Expanded, 1), "{e:?}");
}
