//! Snapshots to and from the account row: the profile side is the format's
//! (`super`), the row's writes are the account's ([`crate::account::session`]).

use std::path::Path;

use sqlx::PgPool;
use uuid::Uuid;

use super::{collect, open, pack, restore_files, seal, unpack, SnapshotError, SnapshotKey};
use crate::account::session;

/// Snapshots a closed profile into the account's row. Returns the sealed size.
pub async fn save(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
    profile: &Path,
) -> Result<usize, SnapshotError> {
    let files = collect(profile)?;
    let sealed = seal(key, account, &pack(&files));
    session::save_snapshot(pool, account, &sealed).await?;
    Ok(sealed.len())
}

/// Restores the account's snapshot into an empty `profile`. Returns whether
/// there was one to restore.
pub async fn restore(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
    profile: &Path,
) -> Result<bool, SnapshotError> {
    let blob = session::snapshot(pool, account).await?;
    let Some(blob) = blob else {
        return Ok(false);
    };
    let files = unpack(&open(key, account, &blob)?)?;
    restore_files(profile, &files)?;
    Ok(true)
}
