//! The live side of the event log, for `GET /v1/events`: one reader per
//! process ([`Hub`]) follows the log and broadcasts each event to every open
//! stream; each stream first catches up from the log itself, then follows
//! the broadcast ([`follow`]).
//!
//! The log is the truth, notifications only hints: the hub reads the log
//! when `courier_events` is notified, again every `webhooks.poll_interval`,
//! and again shortly after a read that saw events not yet readable (an
//! older transaction still running). A replica that missed a notification
//! is late by at most the poll interval; it never skips or reorders.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};

use super::{Cursor, Event, Filter};

/// Events a stream may fall behind the hub before it goes back to the log.
const BROADCAST_CAPACITY: usize = 4096;
/// Events read per statement.
const BATCH: i64 = 1000;
/// How soon to look again when the log holds events not yet readable.
const UNSETTLED_RETRY: Duration = Duration::from_millis(10);

/// The process's follower of the event log.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Hub {
    /// Starts following the log from its current end (a background task
    /// that lives as long as the process).
    pub async fn start(pool: PgPool, poll: Duration) -> Result<Self, sqlx::Error> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cursor = super::head(&pool).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen("courier_events").await?;
        let hub = Self { tx: tx.clone() };
        tokio::spawn(run(pool, listener, tx, cursor, poll));
        Ok(hub)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

async fn run(
    pool: PgPool,
    mut listener: PgListener,
    tx: broadcast::Sender<Arc<Event>>,
    mut cursor: Cursor,
    poll: Duration,
) {
    let all = Filter::default();
    let mut wait = Duration::ZERO;
    loop {
        if !wait.is_zero() {
            // A notification, the poll interval, or a retry for unsettled
            // events, whichever comes first. A broken listener reconnects by
            // itself on the next recv; meanwhile the poll carries on.
            let _ = tokio::time::timeout(wait, listener.recv()).await;
        }
        wait = poll;
        loop {
            match super::read_after(&pool, cursor, &all, BATCH).await {
                Ok(batch) => {
                    let n = batch.len() as i64;
                    for e in batch {
                        cursor = e.cursor();
                        // No receivers is fine: nobody is streaming.
                        let _ = tx.send(Arc::new(e));
                    }
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), "reading the event log; retrying");
                    break;
                }
            }
        }
        if matches!(super::unsettled_after(&pool, cursor).await, Ok(true)) {
            wait = UNSETTLED_RETRY;
        }
    }
}

/// Streams every event after `from` that passes `filter`, in the log's
/// order, into `out` until the receiver is dropped.
pub async fn follow(
    hub: Hub,
    pool: PgPool,
    from: Cursor,
    filter: Filter,
    out: mpsc::Sender<Arc<Event>>,
) {
    let mut cursor = from;
    'catch_up: loop {
        // Subscribe before reading the log: whatever the hub broadcasts from
        // now on arrives below, and whatever it broadcast before is readable
        // to the read that follows (readability only grows).
        let mut live = hub.subscribe();
        loop {
            match super::read_after(&pool, cursor, &filter, BATCH).await {
                Ok(batch) => {
                    let n = batch.len() as i64;
                    for e in batch {
                        cursor = e.cursor();
                        if out.send(Arc::new(e)).await.is_err() {
                            return;
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), "stream catch-up; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if out.is_closed() {
                        return;
                    }
                }
            }
        }
        loop {
            let got = tokio::select! {
                got = live.recv() => got,
                // The client left while nothing happened.
                () = out.closed() => return,
            };
            match got {
                Ok(e) => {
                    if e.cursor() <= cursor {
                        continue;
                    }
                    cursor = e.cursor();
                    if filter.matches(&e) && out.send(e).await.is_err() {
                        return;
                    }
                }
                // Fell behind the broadcast: back to the log.
                Err(broadcast::error::RecvError::Lagged(_)) => continue 'catch_up,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
