//! What the account row keeps of its browser session: the sealed snapshot
//! (`session_snapshot`, Courier's RemoteAuth) and the profile directory the
//! last worker opened (`session_storage_path`).
//!
//! The browser adapter packs, seals and opens snapshots
//! (`crate::browser::snapshot`) and knows where profiles live; it stores and
//! reads them through these functions, so the account row has one writer.

use sqlx::PgPool;
use uuid::Uuid;

/// Stores `sealed` as the account's session snapshot, stamped now.
pub(crate) async fn save_snapshot(
    pool: &PgPool,
    account: Uuid,
    sealed: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_accounts SET session_snapshot = $2, session_snapshot_at = now() WHERE id = $1",
    )
    .bind(account)
    .bind(sealed)
    .execute(pool)
    .await?;
    Ok(())
}

/// The account's sealed session snapshot, if it has one.
pub(crate) async fn snapshot(pool: &PgPool, account: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    Ok(
        sqlx::query_scalar("SELECT session_snapshot FROM mkt_wap_accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}

/// Records the profile directory the account's session was opened from.
/// Written only when it changed: a session opens on every reconnect, and an
/// unchanged path is not worth a new row version.
pub(crate) async fn record_storage_path(
    pool: &PgPool,
    account: Uuid,
    path: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_accounts SET session_storage_path = $2 \
         WHERE id = $1 AND session_storage_path IS DISTINCT FROM $2",
    )
    .bind(account)
    .bind(path)
    .execute(pool)
    .await?;
    Ok(())
}

/// An operator's disconnect: the account stops sending and must log in
/// again. It becomes `disconnected`, not `logged_out`: the logout alert is
/// for sessions WhatsApp ended, not for what an operator asked for. A banned
/// account stays `banned` and a retired one `retired` (both final). Its QR
/// and its stored snapshot go too, so no worker restores the session it was
/// disconnected from.
pub(crate) async fn disconnect(pool: &PgPool, account: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_accounts SET \
         status = CASE WHEN status IN ('banned', 'retired') THEN status ELSE 'disconnected' END, \
         status_reason = CASE WHEN status IN ('banned', 'retired') THEN status_reason \
                              ELSE 'disconnected by an admin' END, \
         status_changed_at = CASE WHEN status IN ('banned', 'retired') THEN status_changed_at ELSE now() END, \
         status_deadline = NULL, pause_reason = NULL, paused_until = NULL, paused_from = NULL, \
         qr_token = NULL, qr_expires_at = NULL, session_snapshot = NULL, session_snapshot_at = NULL \
         WHERE id = $1",
    )
    .bind(account)
    .execute(pool)
    .await?;
    Ok(())
}

/// After the device was unlinked (`logout` job): the account keeps no
/// session: no snapshot and no profile path (the profile was deleted).
pub(crate) async fn forget(pool: &PgPool, account: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mkt_wap_accounts SET session_snapshot = NULL, session_snapshot_at = NULL, \
         session_storage_path = NULL WHERE id = $1",
    )
    .bind(account)
    .execute(pool)
    .await?;
    Ok(())
}
