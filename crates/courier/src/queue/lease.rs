//! Account leases: which worker process drives which account.
//!
//! A lease has an owner (this process's id), an expiry extended by a
//! heartbeat, and an epoch: the fencing token. Acquiring (or taking over an
//! expired lease) increments the epoch; every write for the account checks it
//! (see [`super::store`]). The [`LeaseKeeper`] extends all of a process's leases
//! in one statement per heartbeat and flags the ones it could not extend as
//! lost, so the slot driving that account stops at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store;

/// A held lease: the account, the fencing token, and the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The account.
    pub account_id: Uuid,
    /// The fencing token.
    pub epoch: i64,
    /// The owning worker process.
    pub owner: Arc<str>,
}

/// A lease registered with the keeper, with its "lost" flag.
#[derive(Debug, Clone)]
pub struct HeldLease {
    /// The lease.
    pub lease: Lease,
    /// Set when a heartbeat or a fenced write found the lease gone.
    pub lost: Arc<AtomicBool>,
}

impl HeldLease {
    /// Whether the lease is known to be gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Marks it gone.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

/// Heartbeats every lease of one process.
#[derive(Debug, Clone)]
pub(crate) struct LeaseKeeper {
    pool: PgPool,
    owner: Arc<str>,
    ttl: Duration,
    held: Arc<Mutex<HashMap<Uuid, HeldLease>>>,
}

impl LeaseKeeper {
    /// A keeper for `owner`'s leases.
    pub(crate) fn new(pool: PgPool, owner: Arc<str>, ttl: Duration) -> Self {
        Self {
            pool,
            owner,
            ttl,
            held: Arc::default(),
        }
    }

    /// Starts keeping `lease`.
    pub(crate) fn hold(&self, lease: Lease) -> HeldLease {
        let held = HeldLease {
            lease,
            lost: Arc::new(AtomicBool::new(false)),
        };
        self.held
            .lock()
            .expect("lease registry poisoned")
            .insert(held.lease.account_id, held.clone());
        crate::metrics::record_lease(held.lease.account_id, true);
        held
    }

    /// Stops keeping `lease` (released or lost). A newer lease on the same
    /// account (another slot took it over) is kept.
    pub(crate) fn forget(&self, lease: &Lease) {
        let mut held = self.held.lock().expect("lease registry poisoned");
        if held
            .get(&lease.account_id)
            .is_some_and(|h| h.lease.epoch == lease.epoch)
        {
            held.remove(&lease.account_id);
            crate::metrics::record_lease(lease.account_id, false);
        }
    }

    /// Number of leases held.
    pub(crate) fn len(&self) -> usize {
        self.held.lock().expect("lease registry poisoned").len()
    }

    /// One heartbeat: extends every held lease; flags the ones that are gone.
    pub(crate) async fn beat(&self) -> Result<(), super::QueueError> {
        let snapshot: Vec<HeldLease> = self
            .held
            .lock()
            .expect("lease registry poisoned")
            .values()
            .cloned()
            .collect();
        if snapshot.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(Uuid, i64)> = snapshot
            .iter()
            .map(|h| (h.lease.account_id, h.lease.epoch))
            .collect();
        let kept = store::extend_leases(&self.pool, &self.owner, &pairs, self.ttl).await?;
        for h in snapshot {
            if !kept.contains(&h.lease.account_id) {
                tracing::warn!(account_id = %h.lease.account_id, epoch = h.lease.epoch,
                    "lease lost (expired and taken over); stopping work on the account");
                h.mark_lost();
                self.forget(&h.lease);
            }
        }
        Ok(())
    }

    /// Heartbeats every `interval` until `stop`.
    pub(crate) async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.beat().await {
                        tracing::error!(error = %crate::error::chain(&e), "lease heartbeat failed");
                    }
                }
            }
        }
    }
}
