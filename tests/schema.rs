//! The status enums and the database's CHECK lists say the same thing.
//!
//! Each status column is guarded by a CHECK constraint (`status IN (…)`); the
//! Rust side has one enum per column. This reads the constraints back from a
//! migrated database (`pg_get_constraintdef`, what Postgres itself enforces,
//! not the migration text) and compares them word for word, in order, with
//! the enums' `ALL` lists. A status added on one side only fails here.

use courier::account::AccountStatus;
use courier::events::EventType;
use courier::message::{FailureClass, MessageStatus, Source};
use courier::queue::JobState;
use courier_testkit::fresh_database;

/// The quoted words of a `CHECK (col = ANY (ARRAY['a'::text, …]))` definition.
fn words(def: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = def;
    while let Some(start) = rest.find('\'') {
        let after = &rest[start + 1..];
        let end = after.find('\'').expect("closing quote");
        out.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

async fn check_list(pool: &sqlx::PgPool, table: &str, column: &str) -> Vec<String> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         WHERE t.relname = $1 AND c.contype = 'c' \
           AND pg_get_constraintdef(c.oid) LIKE 'CHECK ((' || $2 || ' = ANY%'",
    )
    .bind(table)
    .bind(column)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        defs.len(),
        1,
        "one CHECK list on {table}.{column}: {defs:?}"
    );
    words(&defs[0])
}

#[test]
fn the_check_parser_reads_postgres_definitions() {
    assert_eq!(
        words("CHECK ((status = ANY (ARRAY['a'::text, 'b_c'::text])))"),
        vec!["a", "b_c"]
    );
}

#[tokio::test]
async fn every_status_enum_matches_its_check_list() {
    let db = fresh_database().await.unwrap();
    let p = &db.pool;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let accounts: Vec<&str> = AccountStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        check_list(p, "mkt_wap_accounts", "status").await,
        names(&accounts)
    );

    // A pause remembers only a status a resume can return to.
    let resumable: Vec<&str> = AccountStatus::ALL
        .iter()
        .filter(|s| s.is_resumable())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        check_list(p, "mkt_wap_accounts", "paused_from").await,
        names(&resumable)
    );

    let messages: Vec<&str> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        check_list(p, "mkt_wap_messages", "status").await,
        names(&messages)
    );
    assert_eq!(
        check_list(p, "mkt_wap_message_events", "status").await,
        names(&messages)
    );

    let sources: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        check_list(p, "mkt_wap_message_events", "source").await,
        names(&sources)
    );

    // The enums read straight from text columns.
    for status in AccountStatus::ALL {
        let read: AccountStatus = sqlx::query_scalar("SELECT $1::text")
            .bind(status.as_str())
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(read, status);
    }
    for status in MessageStatus::ALL {
        let read: MessageStatus = sqlx::query_scalar("SELECT $1::text")
            .bind(status.as_str())
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(read, status);
    }

    let classes: Vec<&str> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        check_list(p, "mkt_wap_messages", "failure_class").await,
        names(&classes)
    );

    let jobs: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(check_list(p, "queue_jobs", "state").await, names(&jobs));

    let events: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        check_list(p, "courier_events", "type").await,
        names(&events)
    );
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_status_word_the_enum_does_not_know_is_refused_by_the_database() {
    // The other direction: the CHECK is live, so no row can carry a status
    // the enums would fail to read.
    let db = fresh_database().await.unwrap();
    let err =
        sqlx::query("INSERT INTO mkt_wap_accounts (account_name, status) VALUES ('x', 'warm')")
            .execute(&db.pool)
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("mkt_wap_accounts_status_check"),
        "{err}"
    );
    assert!("warm".parse::<AccountStatus>().is_err());
    db.drop_database().await.unwrap();
}
