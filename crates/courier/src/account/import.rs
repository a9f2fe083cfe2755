//! `courier import-sessions`: the previous system's linked phones, taken over
//! without a new QR scan (docs/migration.md).
//!
//! Each whatsapp-web.js `LocalAuth` folder under the given directory
//! (`session-<clientId>`, see [`crate::browser::import`]) is matched to an
//! account: by `session_storage_path` (the previous system stored the
//! folder's path there; its last component is compared, since the path was
//! written on another machine or relative to another directory), or else by
//! client id (a client id that contains the account's id, or equals its
//! phone number). A folder that matches no account, or more than one, is
//! reported and left alone.
//!
//! A matched folder is checked whole ([`check_profile`]), then, under the
//! account's lease (so no worker opens the profile meanwhile, and an account
//! a worker drives is refused), copied to `<browser.profiles_dir>/<account>`
//! (mode 0700), checked again, sealed into the account's snapshot when
//! `browser.session_key` is set (so a worker on any machine restores it), and
//! recorded in `mkt_wap_session_imports`. The account's next login opens
//! that profile and comes up without a QR.
//!
//! Nothing is ever half-done for an account: a damaged folder is skipped
//! before anything is written; a failure after the copy removes the copy.
//! An account already imported is not imported again, and an account that
//! already has a profile in Courier's store is not overwritten.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::browser::import::{check_profile, copy_profile, find_profiles, LocalAuthProfile};
use crate::browser::snapshot::{self, SnapshotKey};
use crate::config::Settings;
use crate::queue::store::{acquire_account, release_lease};

/// Errors that stop an import run (per-folder problems are outcomes instead).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The directory to import from cannot be read.
    #[error("cannot read the session directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database's schema is older than this binary.
    #[error("the database has no mkt_wap_session_imports table: run `courier migrate` first")]
    NotMigrated,
    /// `browser.session_key` is not a valid key.
    #[error("browser.session_key")]
    Key(#[source] snapshot::SnapshotError),
    /// A query failed.
    #[error("import-sessions query")]
    Db(#[from] sqlx::Error),
    /// Taking or releasing an account's lease failed.
    #[error("import-sessions lease")]
    Lease(#[from] crate::queue::QueueError),
}

/// How a folder was matched to its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// The account's `session_storage_path` names the folder.
    SessionStoragePath,
    /// The folder's client id names the account (its id or phone number).
    ClientId,
}

impl MatchedBy {
    fn as_str(self) -> &'static str {
        match self {
            MatchedBy::SessionStoragePath => "session_storage_path",
            MatchedBy::ClientId => "client_id",
        }
    }
}

/// What happened to one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied, recorded (and sealed into a snapshot when `snapshot`).
    Imported {
        /// The account.
        account: Uuid,
        /// How it was matched.
        matched_by: MatchedBy,
        /// Where the profile is now.
        profile_dir: PathBuf,
        /// Files copied.
        files: u64,
        /// Bytes copied.
        bytes: u64,
        /// Whether a sealed snapshot was stored.
        snapshot: bool,
    },
    /// `--dry-run`: would be imported.
    WouldImport {
        /// The account.
        account: Uuid,
        /// How it was matched.
        matched_by: MatchedBy,
        /// Where the profile would go.
        profile_dir: PathBuf,
        /// Files to copy.
        files: u64,
        /// Bytes to copy.
        bytes: u64,
    },
    /// Imported by an earlier run: nothing to do.
    AlreadyImported {
        /// The account.
        account: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// No account matches: left alone.
    Unmatched,
    /// Several accounts match: left alone.
    Ambiguous {
        /// The candidates.
        accounts: Vec<Uuid>,
    },
    /// The folder is damaged or incomplete: skipped, the account unchanged.
    Damaged {
        /// The account it matched.
        account: Uuid,
        /// What is wrong.
        problem: String,
    },
    /// A worker holds the account's lease: refused, the account unchanged.
    Leased {
        /// The account.
        account: Uuid,
        /// The worker.
        owner: String,
        /// Until when (unless renewed).
        until: DateTime<Utc>,
    },
    /// Courier already keeps a profile for the account: not overwritten.
    ProfileExists {
        /// The account.
        account: Uuid,
        /// The existing profile.
        profile_dir: PathBuf,
    },
}

/// One folder and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderReport {
    /// The folder.
    pub folder: PathBuf,
    /// Its `LocalAuth` client id.
    pub client_id: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
}

/// What a run did, folder by folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Every `LocalAuth` folder found, in name order.
    pub folders: Vec<FolderReport>,
}

impl ImportReport {
    /// How many accounts this run changed.
    pub fn imported(&self) -> usize {
        self.folders
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Imported { .. }))
            .count()
    }
}

impl fmt::Display for FolderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        match &self.outcome {
            Outcome::Imported { account, matched_by, profile_dir, files, bytes, snapshot } => write!(
                f,
                "{name}: imported into account {account} (matched by {}), {files} files, {bytes} bytes, now {}{}",
                matched_by.as_str(),
                profile_dir.display(),
                if *snapshot { "; sealed snapshot stored" } else { "" }
            ),
            Outcome::WouldImport { account, matched_by, profile_dir, files, bytes } => write!(
                f,
                "{name}: would import into account {account} (matched by {}), {files} files, {bytes} bytes, to {}",
                matched_by.as_str(),
                profile_dir.display()
            ),
            Outcome::AlreadyImported { account, at } => write!(
                f,
                "{name}: already imported into account {account} at {}; nothing to do",
                at.to_rfc3339()
            ),
            Outcome::Unmatched => write!(
                f,
                "{name}: no account matches (neither session_storage_path nor client id); left alone"
            ),
            Outcome::Ambiguous { accounts } => write!(
                f,
                "{name}: matches several accounts ({}); left alone",
                accounts.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
            ),
            Outcome::Damaged { account, problem } => write!(
                f,
                "{name}: skipped, account {account} unchanged: the profile is damaged or incomplete: {problem}"
            ),
            Outcome::Leased { account, owner, until } => write!(
                f,
                "{name}: refused, account {account} unchanged: worker {owner} holds its lease (until {}); stop it first",
                until.to_rfc3339()
            ),
            Outcome::ProfileExists { account, profile_dir } => write!(
                f,
                "{name}: skipped, account {account} already has a Courier profile at {}; not overwritten",
                profile_dir.display()
            ),
        }
    }
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    phone_number: Option<String>,
    session_storage_path: Option<String>,
}

/// The last component of a stored path, as the previous system wrote it.
fn last_component(path: &str) -> Option<&str> {
    path.trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .filter(|s| !s.is_empty())
}

fn matches(
    profile: &LocalAuthProfile,
    accounts: &[AccountRow],
) -> Result<(Uuid, MatchedBy), Outcome> {
    let name = profile
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let by_path: Vec<Uuid> = accounts
        .iter()
        .filter(|a| {
            a.session_storage_path
                .as_deref()
                .and_then(last_component)
                .is_some_and(|c| c == name)
        })
        .map(|a| a.id)
        .collect();
    let pick = |ids: Vec<Uuid>, how| match ids.len() {
        0 => None,
        1 => Some(Ok((ids[0], how))),
        _ => Some(Err(Outcome::Ambiguous { accounts: ids })),
    };
    if let Some(r) = pick(by_path, MatchedBy::SessionStoragePath) {
        return r;
    }
    let Some(client) = profile.client_id.as_deref().map(str::to_lowercase) else {
        return Err(Outcome::Unmatched);
    };
    let by_client: Vec<Uuid> = accounts
        .iter()
        .filter(|a| {
            client.contains(&a.id.to_string())
                || a.phone_number
                    .as_deref()
                    .is_some_and(|p| client.trim_start_matches('+') == p)
        })
        .map(|a| a.id)
        .collect();
    pick(by_client, MatchedBy::ClientId).unwrap_or(Err(Outcome::Unmatched))
}

/// Imports (or with `dry_run`, plans) every `LocalAuth` folder under `from`.
pub async fn import_sessions(
    pool: &PgPool,
    settings: &Settings,
    from: &Path,
    dry_run: bool,
) -> Result<ImportReport, ImportError> {
    let profiles = find_profiles(from).map_err(|source| ImportError::Dir {
        path: from.to_path_buf(),
        source,
    })?;
    let migrated: bool =
        sqlx::query_scalar("SELECT to_regclass('mkt_wap_session_imports') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !migrated {
        return Err(ImportError::NotMigrated);
    }
    let key = match &settings.browser.session_key {
        Some(k) => Some(SnapshotKey::parse(k.expose()).map_err(ImportError::Key)?),
        None => None,
    };
    let accounts: Vec<AccountRow> = sqlx::query_as(
        "SELECT id, phone_number, session_storage_path FROM mkt_wap_accounts ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let mut report = ImportReport::default();
    for profile in profiles {
        let outcome = match matches(&profile, &accounts) {
            Err(outcome) => outcome,
            Ok((account, how)) => {
                import_one(
                    pool,
                    settings,
                    key.as_ref(),
                    &profile,
                    account,
                    how,
                    dry_run,
                )
                .await?
            }
        };
        report.folders.push(FolderReport {
            folder: profile.path,
            client_id: profile.client_id,
            outcome,
        });
    }
    Ok(report)
}

async fn import_one(
    pool: &PgPool,
    settings: &Settings,
    key: Option<&SnapshotKey>,
    profile: &LocalAuthProfile,
    account: Uuid,
    matched_by: MatchedBy,
    dry_run: bool,
) -> Result<Outcome, ImportError> {
    let done: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT imported_at FROM mkt_wap_session_imports WHERE account_id = $1")
            .bind(account)
            .fetch_optional(pool)
            .await?;
    if let Some(at) = done {
        return Ok(Outcome::AlreadyImported { account, at });
    }
    let summary = match check_profile(&profile.path) {
        Ok(s) => s,
        Err(defect) => {
            return Ok(Outcome::Damaged {
                account,
                problem: defect.to_string(),
            })
        }
    };
    let profile_dir = settings.browser.profiles_dir.join(account.to_string());
    let occupied = std::fs::read_dir(&profile_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Ok(Outcome::ProfileExists {
            account,
            profile_dir,
        });
    }
    if dry_run {
        let held: Option<(Option<String>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT owner, expires_at FROM account_leases \
             WHERE account_id = $1 AND owner IS NOT NULL AND expires_at > now()",
        )
        .bind(account)
        .fetch_optional(pool)
        .await?;
        if let Some((owner, until)) = held {
            return Ok(Outcome::Leased {
                account,
                owner: owner.unwrap_or_default(),
                until,
            });
        }
        return Ok(Outcome::WouldImport {
            account,
            matched_by,
            profile_dir,
            files: summary.files,
            bytes: summary.bytes,
        });
    }
    let owner = format!("import-sessions:{}", std::process::id());
    let Some(lease) = acquire_account(
        pool,
        account,
        &owner,
        Duration::from_secs(600),
        settings.queue.max_rescues,
    )
    .await?
    else {
        let (owner, until): (Option<String>, DateTime<Utc>) =
            sqlx::query_as("SELECT owner, expires_at FROM account_leases WHERE account_id = $1")
                .bind(account)
                .fetch_one(pool)
                .await?;
        return Ok(Outcome::Leased {
            account,
            owner: owner.unwrap_or_default(),
            until,
        });
    };
    let result = copy_and_record(
        pool,
        key.map(|k| (k, settings.browser.snapshot_max_bytes)),
        profile,
        account,
        matched_by,
        &profile_dir,
        &summary.fingerprint,
    )
    .await;
    release_lease(pool, &lease).await?;
    match result {
        Ok(Ok(snapshot)) => Ok(Outcome::Imported {
            account,
            matched_by,
            profile_dir,
            files: summary.files,
            bytes: summary.bytes,
            snapshot,
        }),
        Ok(Err(problem)) => {
            let _ = std::fs::remove_dir_all(&profile_dir);
            Ok(Outcome::Damaged { account, problem })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&profile_dir);
            Err(e)
        }
    }
}

/// Copies, checks the copy, seals the snapshot and records the import.
/// `Ok(Err(problem))`: the copy is not the profile that was checked.
async fn copy_and_record(
    pool: &PgPool,
    key: Option<(&SnapshotKey, u64)>,
    profile: &LocalAuthProfile,
    account: Uuid,
    matched_by: MatchedBy,
    profile_dir: &Path,
    fingerprint: &str,
) -> Result<Result<bool, String>, ImportError> {
    // An empty directory left by an earlier open goes; a non-empty one was refused.
    let _ = std::fs::remove_dir(profile_dir);
    if let Err(e) = copy_profile(&profile.path, profile_dir) {
        return Ok(Err(format!("copying failed: {e}")));
    }
    let copied = match check_profile(profile_dir) {
        Ok(s) => s,
        Err(defect) => return Ok(Err(format!("the copy is not whole: {defect}"))),
    };
    if copied.fingerprint != fingerprint {
        return Ok(Err(
            "the folder changed while it was copied (is the previous system still running?)".into(),
        ));
    }
    let sealed = match key {
        Some((key, max)) => match snapshot::save(pool, key, account, profile_dir, max).await {
            Ok(_) => true,
            // The copy logs in on this machine; only a move needs the snapshot.
            Err(e @ snapshot::SnapshotError::TooLarge { .. }) => {
                tracing::warn!(account_id = %account, error = %e, "imported without a snapshot");
                false
            }
            Err(e) => {
                return Ok(Err(format!(
                    "sealing the session snapshot failed: {}",
                    crate::error::chain(&e)
                )))
            }
        },
        None => false,
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO mkt_wap_session_imports \
           (account_id, source_path, client_id, matched_by, profile_dir, files, bytes, fingerprint, snapshot) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(account)
    .bind(profile.path.to_string_lossy().as_ref())
    .bind(profile.client_id.as_deref())
    .bind(matched_by.as_str())
    .bind(profile_dir.to_string_lossy().as_ref())
    .bind(copied.files as i64)
    .bind(copied.bytes as i64)
    .bind(fingerprint)
    .bind(sealed)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE mkt_wap_accounts SET session_storage_path = $2 WHERE id = $1")
        .bind(account)
        .bind(profile_dir.to_string_lossy().as_ref())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, phone: Option<&str>, path: Option<&str>) -> AccountRow {
        AccountRow {
            id: id.parse().unwrap(),
            phone_number: phone.map(Into::into),
            session_storage_path: path.map(Into::into),
        }
    }

    fn folder(name: &str) -> LocalAuthProfile {
        LocalAuthProfile {
            path: PathBuf::from("/old/sessions").join(name),
            client_id: name.strip_prefix("session-").map(Into::into),
        }
    }

    #[test]
    fn folders_match_by_stored_path_then_by_client_id() {
        let a = "a0000000-0000-0000-0000-000000000001";
        let b = "b0000000-0000-0000-0000-000000000002";
        let accounts = vec![
            account(
                a,
                Some("919800000001"),
                Some("./whatsapp-sessions/session-main-phone/"),
            ),
            account(b, Some("919800000002"), None),
        ];
        assert_eq!(
            matches(&folder("session-main-phone"), &accounts),
            Ok((a.parse().unwrap(), MatchedBy::SessionStoragePath))
        );
        assert_eq!(
            matches(&folder(&format!("session-account-{b}")), &accounts),
            Ok((b.parse().unwrap(), MatchedBy::ClientId))
        );
        assert_eq!(
            matches(&folder("session-919800000002"), &accounts),
            Ok((b.parse().unwrap(), MatchedBy::ClientId))
        );
        assert_eq!(
            matches(&folder("session-nobody"), &accounts),
            Err(Outcome::Unmatched)
        );
        let twice = vec![
            account(a, None, Some("/x/session-shared")),
            account(b, None, Some("C:\\wa\\session-shared")),
        ];
        assert!(matches!(
            matches(&folder("session-shared"), &twice),
            Err(Outcome::Ambiguous { accounts }) if accounts.len() == 2
        ));
    }
}
