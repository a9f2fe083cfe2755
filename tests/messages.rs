//! Creating messages: rows, events and send jobs commit together; keys dedupe.

use courier::jobs::send::Content;
use courier::jobs::{ChatId, MessageBody};
use courier::message::{create_batch, NewMessage, Source};
use courier_testkit::fresh_database;

fn msg(account: Option<uuid::Uuid>, chat: &str, key: &str) -> NewMessage {
    NewMessage {
        account_id: account,
        campaign_id: None,
        content_id: None,
        schedule_id: None,
        channel_type: "individual",
        chat_id: ChatId::parse(chat).unwrap(),
        target_group_id: None,
        target_contact_id: None,
        content: Content::Text {
            body: MessageBody::parse("hello").unwrap(),
        },
        idempotency_key: Some(key.into()),
        run_at: None,
        priority: 100,
        waiting_reason: None,
    }
}

#[tokio::test]
async fn messages_jobs_and_events_are_created_together_and_keys_dedupe() {
    let t = fresh_database().await.unwrap();
    let account: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO mkt_wap_accounts (account_name) VALUES ('a') RETURNING id")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    let batch = vec![
        msg(Some(account), "447700900001@c.us", "k1"),
        msg(Some(account), "447700900002@c.us", "k2"),
        msg(None, "447700900003@c.us", "k3"),
    ];
    let out = create_batch(&t.pool, &batch, Source::Api).await.unwrap();
    assert!(out.iter().all(|c| c.created));
    assert!(out[0].job_id.is_some() && out[1].job_id.is_some());
    assert!(out[2].job_id.is_none(), "no account: no job yet");

    let statuses: Vec<(String, Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT status, job_id, waiting_reason FROM mkt_wap_messages ORDER BY idempotency_key",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(statuses[0].0, "queued");
    assert_eq!(statuses[0].1, out[0].job_id);
    assert_eq!(statuses[2].0, "pending");
    assert_eq!(statuses[2].2.as_deref(), Some("no eligible account"));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE kind = 'send'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 2);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mkt_wap_message_events WHERE source = 'api'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(events, 3);

    // The same request again creates nothing and returns the same ids.
    let again = create_batch(&t.pool, &batch, Source::Api).await.unwrap();
    for (a, b) in out.iter().zip(&again) {
        assert!(!b.created);
        assert_eq!(a.message_id, b.message_id);
        assert_eq!(a.job_id, b.job_id);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM mkt_wap_messages")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(total, 3);
}
