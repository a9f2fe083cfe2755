//! Queue lanes: lease keys that are not WhatsApp accounts.
//!
//! A job's `account_id` names what the queue leases. Most jobs run through an
//! account's browser session; a lane is a key for work that needs none (a
//! webhook subscription's deliveries). The engine treats a lane like an
//! account that is never paused, has no budget and no session: one holder at
//! a time (so its jobs run one by one, in claim order), and a lane that waits
//! on a slow endpoint holds only its own slot. Deleting a lane deletes its
//! jobs and lease (migration 0019).

use uuid::Uuid;

use crate::queue::QueueError;

/// Creates lane `id` (`purpose`: what it serves, `a-z_`) in the caller's
/// transaction; an existing lane is left as it is.
pub async fn create_lane(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    purpose: &str,
) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO queue_lanes (id, purpose) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(purpose)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes lane `id` with its jobs and lease, in the caller's transaction.
pub async fn drop_lane(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<(), QueueError> {
    sqlx::query("DELETE FROM queue_lanes WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
