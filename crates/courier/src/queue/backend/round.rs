//! The round tasks: each batches its accounts' completions and claims into
//! one statement ([`store::claim_batch`]) on a connection of its own.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::queue::handler::Outcome;
use crate::queue::store;

use super::outcome::record;
use super::*;

/// Most requests one batched statement serves.
const BATCH_MAX: usize = 512;

/// How many round tasks a process runs (each with its own connection), so
/// one round's statement overlaps with another's. Two beat four, three and
/// one in alternating benchmark runs (docs/queue.md).
pub(crate) const ROUND_TASKS: usize = 2;

/// A round task's own connection, taken out of the pool: it runs nothing but
/// the round statement, under a generic plan. Postgres re-plans a prepared
/// statement for every execution while the custom plan looks cheaper, and for
/// the round statement that planning took 1.4 ms of a 4.8 ms execution (50
/// claims); its generic plan runs as fast and is planned once per connection.
/// Like every cached plan it is made again when the statistics of a table it
/// reads change (`ANALYZE`, autovacuum), so it follows the tables as they
/// grow just as a custom plan would. The setting would not suit every
/// statement, so the connection leaves the pool (the pool opens another in
/// its place) and is closed, never returned, after an error.
struct RoundConnection(Option<sqlx::PgConnection>);

impl RoundConnection {
    async fn get(&mut self, pool: &PgPool) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        if self.0.is_none() {
            let mut conn = pool.acquire().await?.detach();
            sqlx::query("SET plan_cache_mode = force_generic_plan")
                .execute(&mut conn)
                .await?;
            self.0 = Some(conn);
        }
        Ok(self.0.as_mut().expect("set above"))
    }
}

/// Serves its share of the accounts in rounds: every request that arrived
/// while the previous round ran forms the next one (natural batching, no
/// delay when idle). A round writes failures and snoozes one by one, then
/// completes every finished job and claims for every waiting slot in one
/// statement ([`store::claim_batch`]). A slot hands its finished job's
/// completion over and asks for its next job at once (it does not wait for
/// the write), so one statement completes the previous job and claims the
/// next: the completion runs first inside it, as the one-running-job-per-
/// account index requires, and the two no longer wait for each other.
pub(crate) async fn run_rounds(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stop: CancellationToken,
) {
    let mut conn = RoundConnection(None);
    loop {
        let first = tokio::select! {
            // On shutdown, keep writing outcomes until every slot is gone.
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = stop.cancelled(), if rx.is_empty() => break,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut claims = Vec::new();
        let mut done = Vec::new();
        let mut other = Vec::new();
        for r in batch {
            match r {
                Request::Claim(c) => claims.push(c),
                Request::Ack(a) if matches!(a.result, Ok(Outcome::Completed)) => done.push(*a),
                Request::Ack(a) => other.push(*a),
            }
        }
        for a in other {
            let AckRequest {
                claimed,
                result,
                permanent,
                reply,
            } = a;
            record(&shared, &claimed, result, permanent).await;
            let _ = reply.send(());
        }
        if !claims.is_empty() || !done.is_empty() {
            round(&shared, &mut conn, done, claims).await;
        }
    }
    if let Some(c) = conn.0.take() {
        use sqlx::Connection;
        let _ = c.close().await;
    }
}

/// Completes the round's finished jobs and claims for its waiting slots, in
/// one statement ([`store::claim_batch`]).
async fn round(
    shared: &Shared,
    conn: &mut RoundConnection,
    done: Vec<AckRequest>,
    mut claims: Vec<ClaimRequest>,
) {
    if shared.stop.is_cancelled() {
        // Shutting down: no new claims, but the outcomes are still written.
        for r in claims.drain(..) {
            let _ = r.reply.send(Ok(None));
        }
    }
    let keys: Vec<(uuid::Uuid, uuid::Uuid, i64)> = done
        .iter()
        .map(|a| {
            (
                a.claimed.job.id,
                a.claimed.job.account_id,
                a.claimed.lease.lease.epoch,
            )
        })
        .collect();
    let asks: Vec<store::ClaimAsk> = claims.iter().map(|r| r.ask.clone()).collect();
    let started = Instant::now();
    let result = match conn.get(&shared.pool).await {
        Ok(c) => store::claim_batch(c, &shared.policy, &shared.owner, &keys, &asks).await,
        Err(e) => Err(e.into()),
    };
    if result.is_err() {
        // The connection may be broken: the next round opens another.
        conn.0 = None;
    }
    tracing::trace!(
        completions = keys.len(),
        asks = asks.len(),
        claimed = result.as_ref().map(|r| r.claimed.len()).unwrap_or(0),
        took_us = started.elapsed().as_micros() as u64,
        "round"
    );
    match result {
        Ok(round) => {
            let completed: std::collections::HashSet<uuid::Uuid> =
                round.completed.into_iter().collect();
            for a in done {
                if !completed.contains(&a.claimed.job.id) {
                    fenced(&a.claimed);
                }
                let _ = a.reply.send(());
            }
            let mut by_account: std::collections::HashMap<uuid::Uuid, store::ClaimedRow> = round
                .claimed
                .into_iter()
                .map(|r| (r.job.account_id, r))
                .collect();
            for r in claims {
                let row = by_account.remove(&r.ask.lease.account_id);
                let _ = r.reply.send(Ok(row));
            }
        }
        Err(e) => {
            // Nothing of the statement happened: the slots ask again, and
            // the completions are written one by one (a claim's error must
            // not cost a finished job its outcome).
            let msg = crate::error::chain(&e);
            for r in claims {
                let _ = r.reply.send(Err(msg.clone()));
            }
            if !done.is_empty() {
                tracing::warn!(error = %msg, "batched round failed; writing its completions one by one");
            }
            for a in done {
                record(shared, &a.claimed, Ok(Outcome::Completed), false).await;
                let _ = a.reply.send(());
            }
        }
    }
}
