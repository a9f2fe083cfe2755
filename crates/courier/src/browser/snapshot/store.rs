//! Snapshots to and from the account row: the profile side is the format's
//! (`super`), the row's writes are the account's ([`crate::account::session`]).

use std::path::Path;

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    check_size, collect, open, pack, pack_storage, restore_files, seal, unpack_any, Snapshot,
    SnapshotError, SnapshotKey,
};
use crate::account::session;

/// Snapshots a closed profile into the account's row, refused over `max`
/// bytes (packed). Returns the sealed size.
pub async fn save(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
    profile: &Path,
    max: u64,
) -> Result<usize, SnapshotError> {
    let files = collect(profile)?;
    let packed = pack(&files);
    check_size(packed.len(), max)?;
    let sealed = seal(key, account, &packed);
    session::save_snapshot(pool, account, &sealed).await?;
    Ok(sealed.len())
}

/// Stores an origin storage export (JSON from the page) as the account's
/// snapshot, refused over `max` bytes (packed). Returns the sealed size.
pub async fn save_storage(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
    json: &[u8],
    max: u64,
) -> Result<usize, SnapshotError> {
    let packed = pack_storage(json);
    check_size(packed.len(), max)?;
    let sealed = seal(key, account, &packed);
    session::save_snapshot(pool, account, &sealed).await?;
    Ok(sealed.len())
}

/// The account's snapshot, opened, if it has one.
pub async fn load(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
) -> Result<Option<Snapshot>, SnapshotError> {
    match session::snapshot(pool, account).await? {
        Some(blob) => Ok(Some(unpack_any(&open(key, account, &blob)?)?)),
        None => Ok(None),
    }
}

/// Restores the account's snapshot into an empty `profile`. Returns whether
/// there was one to restore.
pub async fn restore(
    pool: &PgPool,
    key: &SnapshotKey,
    account: Uuid,
    profile: &Path,
) -> Result<bool, SnapshotError> {
    match load(pool, key, account).await? {
        Some(Snapshot::Files(files)) => {
            restore_files(profile, &files)?;
            Ok(true)
        }
        // An export from a page goes back through a page (the pool imports it).
        Some(Snapshot::Storage(_)) | None => Ok(false),
    }
}
