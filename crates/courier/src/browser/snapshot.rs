//! Session snapshots: the profile's session state (Local Storage and
//! IndexedDB) packed, encrypted with XChaCha20-Poly1305 under the key in
//! `browser.session_key`, and stored in `mkt_wap_accounts.session_snapshot`
//! (through [`crate::account::session`], the row's owner).
//!
//! This is Courier's RemoteAuth: a worker on another machine, with an empty
//! profile, restores the snapshot before opening Chromium and comes back
//! ready without a QR. The account id is the AEAD's associated data, so a
//! snapshot cannot be replayed onto another account; a wrong key or a
//! tampered blob is refused with [`SnapshotError::Decrypt`].
//!
//! Take snapshots only from a closed (flushed) profile: Chromium writes
//! localStorage lazily.
//!
//! Two kinds share the sealing: profile files (`CSNAP1`, a local browser,
//! whose profile directory is on the worker's disk) and the WhatsApp Web
//! origin's storage as the page exported it by script (`CSTOR1`: its
//! IndexedDB databases and localStorage as JSON, see `page/storage.js`), the
//! only kind a remote browser (`browser.webdriver_url`) can give or take,
//! since its disk is not the worker's. Either is refused over
//! `browser.snapshot_max_bytes` ([`check_size`]).
//!
//! This file is the format (pack, seal, open, restore files) and imports
//! nothing of the crate, so the configuration can check a key with it;
//! [`save`] and [`restore`] (in `store`) move a snapshot between a profile
//! and the account row.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use uuid::Uuid;

mod store;

pub use self::store::{load, restore, save, save_storage};

/// The profile subdirectories that hold the session.
pub const SESSION_DIRS: &[&str] = &["Default/Local Storage", "Default/IndexedDB"];

const MAGIC: &[u8; 6] = b"CSNAP1";
const STORAGE_MAGIC: &[u8; 6] = b"CSTOR1";
const NONCE_LEN: usize = 24;

/// Errors packing, sealing, opening or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The key is not 64 hex characters.
    #[error("browser.session_key must be 32 bytes written as 64 hex characters")]
    BadKey,
    /// Decryption failed: the key differs from the one that sealed it, or the
    /// blob was altered, or it belongs to another account.
    #[error("cannot decrypt the session snapshot: wrong browser.session_key, or the snapshot is corrupt or belongs to another account")]
    Decrypt,
    /// The decrypted content is not a snapshot.
    #[error("session snapshot is malformed: {0}")]
    Malformed(&'static str),
    /// Reading or writing profile files failed.
    #[error("session snapshot I/O on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The profile already holds session state; restoring would overwrite it.
    #[error("profile {0} is not empty; refusing to restore over it")]
    ProfileNotEmpty(PathBuf),
    /// A query failed.
    #[error("session snapshot query")]
    Db(#[from] sqlx::Error),
    /// The snapshot is over `browser.snapshot_max_bytes`; nothing was stored.
    #[error("session snapshot is {bytes} bytes, over browser.snapshot_max_bytes ({max}); not stored: the session stays in the open browser (and its profile), but another browser would need a QR until a snapshot fits")]
    TooLarge {
        /// The packed size (or the size counted so far when the page stopped).
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Export was asked of a page whose session is not connected and synced
    /// (mid-login, loading, a fault screen): its storage may hold a half-made
    /// session, so it is never snapshotted.
    #[error("refusing to snapshot a session that is not CONNECTED and synced (WhatsApp Web state {state}, synced: {synced}); only a connected, synced session is exported")]
    NotConnected {
        /// `Socket.state`.
        state: String,
        /// `hasSynced`.
        synced: bool,
    },
    /// The stored snapshot holds profile files, which a remote browser cannot load.
    #[error("the stored session snapshot holds profile files (taken by a worker without browser.webdriver_url); a remote browser loads only a snapshot exported from the page: log the account in once through the remote browser")]
    FilesOnRemote,
    /// The page's origin already holds storage: importing would mix two sessions.
    #[error("the browser already holds WhatsApp Web storage ({0}); refusing to import the snapshot over it")]
    OriginNotEmpty(String),
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// The session files of a profile directory.
    Files(Vec<SnapshotFile>),
    /// The origin's storage as the page exported it: JSON, see `page/storage.js`.
    Storage(Vec<u8>),
}

/// Refuses `bytes` over `max` with [`SnapshotError::TooLarge`].
pub fn check_size(bytes: usize, max: u64) -> Result<(), SnapshotError> {
    let bytes = bytes as u64;
    if bytes > max {
        return Err(SnapshotError::TooLarge { bytes, max });
    }
    Ok(())
}

/// Packs an exported origin storage (JSON) for sealing.
pub fn pack_storage(json: &[u8]) -> Vec<u8> {
    let mut out = STORAGE_MAGIC.to_vec();
    out.extend_from_slice(json);
    out
}

/// Unpacks either kind.
pub fn unpack_any(buf: &[u8]) -> Result<Snapshot, SnapshotError> {
    if let Some(json) = buf.strip_prefix(STORAGE_MAGIC) {
        serde_json::from_slice::<serde_json::Value>(json)
            .map_err(|_| SnapshotError::Malformed("the storage export is not JSON"))?;
        return Ok(Snapshot::Storage(json.to_vec()));
    }
    unpack(buf).map(Snapshot::Files)
}

/// The snapshot key (from `browser.session_key`).
#[derive(Clone)]
pub struct SnapshotKey([u8; 32]);

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey([redacted])")
    }
}

impl SnapshotKey {
    /// Parses 64 hex characters.
    pub fn parse(hex: &str) -> Result<Self, SnapshotError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(SnapshotError::BadKey);
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| SnapshotError::BadKey)?;
        }
        Ok(Self(key))
    }

    /// A random key (tests, `courier bench`).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The key as 64 hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// One file of a snapshot, path relative to the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the session files of `profile` (LOCK files skipped).
pub fn collect(profile: &Path) -> Result<Vec<SnapshotFile>, SnapshotError> {
    let mut out = Vec::new();
    for dir in SESSION_DIRS {
        let root = profile.join(dir);
        if root.is_dir() {
            walk(profile, &root, &mut out)?;
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(profile: &Path, dir: &Path, out: &mut Vec<SnapshotFile>) -> Result<(), SnapshotError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(io(&path))?;
        if ty.is_dir() {
            walk(profile, &path, out)?;
        } else if ty.is_file() && entry.file_name() != "LOCK" {
            let rel = path
                .strip_prefix(profile)
                .map_err(|_| SnapshotError::Malformed("path outside the profile"))?;
            out.push(SnapshotFile {
                path: rel.to_string_lossy().into_owned(),
                data: std::fs::read(&path).map_err(io(&path))?,
            });
        }
    }
    Ok(())
}

/// Packs files into one buffer: magic, then (u32 path length, path, u64 data length, data)*.
pub fn pack(files: &[SnapshotFile]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for f in files {
        out.extend_from_slice(&(f.path.len() as u32).to_le_bytes());
        out.extend_from_slice(f.path.as_bytes());
        out.extend_from_slice(&(f.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    out
}

/// The inverse of [`pack`]; refuses absolute paths and `..`.
pub fn unpack(mut buf: &[u8]) -> Result<Vec<SnapshotFile>, SnapshotError> {
    if !buf.starts_with(MAGIC) {
        return Err(SnapshotError::Malformed("bad magic"));
    }
    buf = &buf[MAGIC.len()..];
    let mut files = Vec::new();
    let take = |n: usize, buf: &mut &[u8]| -> Result<Vec<u8>, SnapshotError> {
        if buf.len() < n {
            return Err(SnapshotError::Malformed("truncated"));
        }
        let (a, b) = buf.split_at(n);
        *buf = b;
        Ok(a.to_vec())
    };
    while !buf.is_empty() {
        let n = u32::from_le_bytes(take(4, &mut buf)?.try_into().expect("4 bytes")) as usize;
        let path = String::from_utf8(take(n, &mut buf)?)
            .map_err(|_| SnapshotError::Malformed("path is not UTF-8"))?;
        let p = Path::new(&path);
        if p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || !SESSION_DIRS.iter().any(|d| p.starts_with(d))
        {
            return Err(SnapshotError::Malformed(
                "path outside the session directories",
            ));
        }
        let len = u64::from_le_bytes(take(8, &mut buf)?.try_into().expect("8 bytes")) as usize;
        let data = take(len, &mut buf)?;
        files.push(SnapshotFile { path, data });
    }
    Ok(files)
}

/// Encrypts `plain` for `account`: nonce (24 bytes) then ciphertext.
pub fn seal(key: &SnapshotKey, account: Uuid, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: account.as_bytes(),
            },
        )
        .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a [`seal`]ed blob of `account`.
pub fn open(key: &SnapshotKey, account: Uuid, sealed: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    if sealed.len() < NONCE_LEN {
        return Err(SnapshotError::Decrypt);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    key.cipher()
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ct,
                aad: account.as_bytes(),
            },
        )
        .map_err(|_| SnapshotError::Decrypt)
}

/// Whether the profile holds no session state yet.
pub fn profile_is_empty(profile: &Path) -> bool {
    SESSION_DIRS.iter().all(|d| !profile.join(d).exists())
}

/// Writes `files` into `profile` (created 0700), which must hold no session state.
pub fn restore_files(profile: &Path, files: &[SnapshotFile]) -> Result<(), SnapshotError> {
    if !profile_is_empty(profile) {
        return Err(SnapshotError::ProfileNotEmpty(profile.to_path_buf()));
    }
    for f in files {
        let path = profile.join(&f.path);
        if let Some(parent) = path.parent() {
            create_private_dir(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &f.data).map_err(io(&path))?;
    }
    Ok(())
}

/// Creates `dir` and its parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_only_opens_with_its_key_and_account() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p");
        let ls = p.join("Default/Local Storage/leveldb");
        create_private_dir(&ls).unwrap();
        std::fs::write(ls.join("000003.log"), b"last-wid-md").unwrap();
        std::fs::write(ls.join("LOCK"), b"").unwrap();
        create_private_dir(&p.join("Default/IndexedDB/x.leveldb")).unwrap();
        std::fs::write(p.join("Default/IndexedDB/x.leveldb/CURRENT"), b"MANIFEST").unwrap();
        let files = collect(&p).unwrap();
        assert_eq!(files.len(), 2, "LOCK is skipped: {files:?}");

        let key = SnapshotKey::random();
        let account = Uuid::new_v4();
        let sealed = seal(&key, account, &pack(&files));
        assert_eq!(
            unpack(&open(&key, account, &sealed).unwrap()).unwrap(),
            files
        );
        assert!(matches!(
            open(&SnapshotKey::random(), account, &sealed),
            Err(SnapshotError::Decrypt)
        ));
        assert!(matches!(
            open(&key, Uuid::new_v4(), &sealed),
            Err(SnapshotError::Decrypt)
        ));

        let q = dir.path().join("q");
        restore_files(&q, &files).unwrap();
        assert_eq!(collect(&q).unwrap(), files);
        assert!(matches!(
            restore_files(&q, &files),
            Err(SnapshotError::ProfileNotEmpty(_))
        ));
    }

    #[test]
    fn unpack_refuses_paths_outside_the_session_dirs() {
        for bad in ["../etc/passwd", "/etc/passwd", "Default/Cookies"] {
            let buf = pack(&[SnapshotFile {
                path: bad.into(),
                data: vec![1],
            }]);
            assert!(unpack(&buf).is_err(), "{bad}");
        }
        assert!(unpack(b"CSNAP1\x05\x00").is_err());
    }

    #[test]
    fn storage_exports_round_trip_and_sizes_over_the_limit_are_refused() {
        let json = br#"{"origin":"https://web.whatsapp.com","localStorage":{"last-wid-md":"\"1:2@c.us\""},"indexedDB":[]}"#;
        let key = SnapshotKey::random();
        let account = Uuid::new_v4();
        let sealed = seal(&key, account, &pack_storage(json));
        assert_eq!(
            unpack_any(&open(&key, account, &sealed).unwrap()).unwrap(),
            Snapshot::Storage(json.to_vec())
        );
        assert!(matches!(
            unpack_any(&pack(&[])).unwrap(),
            Snapshot::Files(f) if f.is_empty()
        ));
        assert!(unpack_any(b"CSTOR1{not json").is_err());
        check_size(100, 100).unwrap();
        let e = check_size(101, 100).unwrap_err();
        assert!(matches!(
            e,
            SnapshotError::TooLarge {
                bytes: 101,
                max: 100
            }
        ));
        assert!(e.to_string().contains("browser.snapshot_max_bytes"), "{e}");
    }

    #[test]
    fn keys_parse_from_hex_only() {
        let k = SnapshotKey::random();
        assert_eq!(SnapshotKey::parse(&k.to_hex()).unwrap().0, k.0);
        assert!(SnapshotKey::parse("abc").is_err());
        assert!(SnapshotKey::parse(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{k:?}"), "SnapshotKey([redacted])");
    }
}
