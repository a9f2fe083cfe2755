//! The previous system's linked phones on disk: whatsapp-web.js `LocalAuth`
//! profiles, found, checked and copied into Courier's profile store
//! (`courier import-sessions`, see [`crate::account::import`]).
//!
//! `LocalAuth` gives each client a Chromium user-data directory of its own,
//! `<dataPath>/session-<clientId>` (`<dataPath>/session` without a client id),
//! and hands it to Puppeteer as `userDataDir`: the same thing Courier keeps
//! per account as `<profiles_dir>/<account id>`. So a profile moves over as a
//! copy, and the next Chromium Courier opens on it is logged in.
//!
//! What makes it logged in is WhatsApp Web's state in `Default/Local Storage`
//! and `Default/IndexedDB`, both LevelDB databases. A profile copied while
//! its browser ran, or only partly, has LevelDB files missing, shorter than
//! recorded, or cut mid-record; Chromium would open it and quietly drop what
//! it cannot read, and the account would come up asking for a QR. So before
//! anything is copied (and again on the copy) every LevelDB of the session is
//! read the way LevelDB recovers it: `CURRENT` names a manifest, the manifest
//! and the write-ahead logs are whole records with valid CRC32C checksums, and
//! every table file the manifest lists is there with its recorded size.
//! This file is filesystem work only: no database, no queue.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A `LocalAuth` session folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAuthProfile {
    /// The folder (`…/session-<clientId>`).
    pub path: PathBuf,
    /// The client id from its name; `None` for the bare `session` folder.
    pub client_id: Option<String>,
}

/// Why a profile cannot be taken over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileDefect {
    /// No `Default/` directory: not a Chromium profile.
    #[error("not a Chromium profile (no Default/ directory)")]
    NotAProfile,
    /// No session state at all.
    #[error("no WhatsApp Web session state (Default/Local Storage/leveldb is missing): the phone was never linked here, or the copy is partial")]
    NoSession,
    /// A browser still runs on it.
    #[error("in use by a running browser (pid {0}): stop the previous system first")]
    InUse(i32),
    /// A LevelDB of the session is damaged or incomplete.
    #[error("{db}: {problem}")]
    Damaged {
        /// The database directory, relative to the profile.
        db: String,
        /// What is wrong.
        problem: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// The error.
        error: String,
    },
}

/// What a sound profile holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSummary {
    /// Files in the profile.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// LevelDB databases checked.
    pub databases: usize,
    /// A digest of the session files (names, sizes, contents): equal
    /// digests mean the same session.
    pub fingerprint: String,
}

/// The `LocalAuth` session folders directly under `dir`, by name.
pub fn find_profiles(dir: &Path) -> io::Result<Vec<LocalAuthProfile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let client_id = match name.as_str() {
            "session" => None,
            n => match n.strip_prefix("session-") {
                Some(id) if !id.is_empty() => Some(id.to_string()),
                _ => continue,
            },
        };
        out.push(LocalAuthProfile {
            path: entry.path(),
            client_id,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> ProfileDefect {
    ProfileDefect::Unreadable {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// Checks that `profile` is a whole, logged-in-capable Chromium profile that
/// no browser holds (see the module docs).
pub fn check_profile(profile: &Path) -> Result<ProfileSummary, ProfileDefect> {
    if !profile.join("Default").is_dir() {
        return Err(ProfileDefect::NotAProfile);
    }
    if let Ok(target) = fs::read_link(profile.join("SingletonLock")) {
        let target = target.to_string_lossy().into_owned();
        let (host, pid) = target.rsplit_once('-').unwrap_or(("", ""));
        let here = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let here = here.trim();
        if let Ok(pid) = pid.parse::<i32>() {
            if host == here && Path::new(&format!("/proc/{pid}")).exists() {
                return Err(ProfileDefect::InUse(pid));
            }
        }
    }
    let local = profile.join("Default/Local Storage/leveldb");
    if !local.is_dir() {
        return Err(ProfileDefect::NoSession);
    }
    let mut dbs = vec![local];
    if let Ok(rd) = fs::read_dir(profile.join("Default/IndexedDB")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && p.to_string_lossy().ends_with(".leveldb") {
                dbs.push(p);
            }
        }
    }
    dbs.sort();
    for db in &dbs {
        check_leveldb(db).map_err(|problem| ProfileDefect::Damaged {
            db: db.strip_prefix(profile).unwrap_or(db).display().to_string(),
            problem,
        })?;
    }
    let mut files = 0;
    let mut bytes = 0;
    let mut digest = Fnv::default();
    walk(profile, &mut |path, meta| {
        files += 1;
        bytes += meta.len();
        let rel = path.strip_prefix(profile).unwrap_or(path);
        if rel.starts_with("Default/Local Storage") || rel.starts_with("Default/IndexedDB") {
            digest.write(rel.to_string_lossy().as_bytes());
            digest.write(&meta.len().to_le_bytes());
            digest.write(&fs::read(path).map_err(|e| unreadable(path, e))?);
        }
        Ok(())
    })?;
    Ok(ProfileSummary {
        files,
        bytes,
        databases: dbs.len(),
        fingerprint: format!("{:016x}", digest.0),
    })
}

/// FNV-1a, 64 bits: a stable digest (std's hasher is seeded per process).
struct Fnv(u64);
impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Files under `dir`, in name order, skipping Chromium's lock files.
fn walk(
    dir: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<(), ProfileDefect>,
) -> Result<(), ProfileDefect> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with("Singleton") {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
        if meta.is_dir() {
            walk(&path, f)?;
        } else if meta.is_file() {
            f(&path, &meta)?;
        }
    }
    Ok(())
}

/// Copies `from` to `to` (which must not exist): through a temporary sibling
/// renamed into place at the end, so `to` is either whole or absent. Dirs are
/// 0700 and files 0600; Chromium's lock files are not copied.
pub fn copy_profile(from: &Path, to: &Path) -> io::Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    super::snapshot::create_private_dir(parent)?;
    let tmp = parent.join(format!(
        ".import-{}-{}",
        to.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    let result = copy_dir(from, &tmp).and_then(|()| fs::rename(&tmp, to));
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with("Singleton") {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let meta = fs::symlink_metadata(&src)?;
        if meta.is_dir() {
            copy_dir(&src, &dst)?;
        } else if meta.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// LevelDB, read as its recovery reads it (leveldb/doc/log_format.md and
// table_format.md; db/version_edit.cc for the manifest's records).
// ---------------------------------------------------------------------------

const BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;

/// Checks one LevelDB directory; the error says what is wrong.
fn check_leveldb(dir: &Path) -> Result<(), String> {
    let current = fs::read_to_string(dir.join("CURRENT"))
        .map_err(|e| format!("CURRENT cannot be read ({e})"))?;
    let manifest = current.trim_end_matches('\n');
    if !manifest.starts_with("MANIFEST-") || manifest.contains('/') || !current.ends_with('\n') {
        return Err(format!("CURRENT is damaged ({current:?})"));
    }
    let data = fs::read(dir.join(manifest))
        .map_err(|e| format!("{manifest} named by CURRENT cannot be read ({e})"))?;
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut log_number = None;
    for record in records(&data).map_err(|e| format!("{manifest}: {e}"))? {
        apply_edit(&record, &mut live, &mut log_number).map_err(|e| format!("{manifest}: {e}"))?;
    }
    for (number, size) in &live {
        let found = ["ldb", "sst"]
            .iter()
            .map(|ext| dir.join(format!("{number:06}.{ext}")))
            .find_map(|p| fs::metadata(p).ok());
        match found {
            None => {
                return Err(format!(
                    "table file {number:06}.ldb listed in {manifest} is missing"
                ))
            }
            Some(m) if m.len() != *size => {
                return Err(format!(
                    "table file {number:06}.ldb has {} bytes, {manifest} records {size}",
                    m.len()
                ))
            }
            Some(_) => {}
        }
    }
    // The write-ahead logs from the manifest's log number on hold the
    // latest writes (a login's keys among them): they must be whole.
    let Some(log_number) = log_number else {
        return Err(format!("{manifest} records no log number"));
    };
    let mut logs = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if n >= log_number {
                logs.push((n, e.path()));
            }
        }
    }
    if log_number > 0 && !logs.iter().any(|(n, _)| *n == log_number) {
        return Err(format!("write-ahead log {log_number:06}.log is missing"));
    }
    for (n, path) in logs {
        let data = fs::read(&path).map_err(|e| format!("{n:06}.log cannot be read ({e})"))?;
        records(&data).map_err(|e| format!("{n:06}.log: {e}"))?;
    }
    Ok(())
}

/// The records of a LevelDB log-format file: every fragment whole and its
/// checksum right, fragments in a valid order.
fn records(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut partial: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < data.len() {
        let left_in_block = BLOCK - at % BLOCK;
        if left_in_block < HEADER {
            at += left_in_block; // trailer
            continue;
        }
        if data.len() - at < HEADER {
            return Err(format!("cut off inside a record header at byte {at}"));
        }
        let h = &data[at..at + HEADER];
        let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let kind = h[6];
        if kind == 0 && len == 0 && crc == 0 {
            // Zero padding (preallocated space): the rest of the block is empty.
            at += left_in_block;
            continue;
        }
        let start = at + HEADER;
        if start + len > data.len() {
            return Err(format!(
                "cut off: a record at byte {at} needs {len} bytes, the file ends after {}",
                data.len() - start
            ));
        }
        if HEADER + len > left_in_block {
            return Err(format!("a record at byte {at} crosses a block boundary"));
        }
        let payload = &data[start..start + len];
        let mut c = crc32c(0, &[kind]);
        c = crc32c(c, payload);
        if unmask(crc) != c {
            return Err(format!("checksum mismatch in the record at byte {at}"));
        }
        match (kind, partial.as_mut()) {
            (1, None) => out.push(payload.to_vec()),
            (2, None) => partial = Some(payload.to_vec()),
            (3, Some(p)) => p.extend_from_slice(payload),
            (4, Some(p)) => {
                p.extend_from_slice(payload);
                out.push(partial.take().unwrap_or_default());
            }
            _ => return Err(format!("record fragments out of order at byte {at}")),
        }
        at = start + len;
    }
    if partial.is_some() {
        return Err("cut off inside a fragmented record".into());
    }
    Ok(out)
}

fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(0xa282_ead8);
    rot.rotate_left(15)
}

/// CRC-32C (Castagnoli), continuing from `crc`.
fn crc32c(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("a version edit is cut off")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint is too long".into())
}

fn slice(buf: &mut &[u8]) -> Result<(), String> {
    let n = usize::try_from(varint(buf)?).map_err(|_| "a length is too large")?;
    if buf.len() < n {
        return Err("a version edit is cut off".into());
    }
    *buf = &buf[n..];
    Ok(())
}

/// Applies one manifest record (a version edit) to the live table files.
fn apply_edit(
    mut edit: &[u8],
    live: &mut BTreeMap<u64, u64>,
    log_number: &mut Option<u64>,
) -> Result<(), String> {
    let buf = &mut edit;
    while !buf.is_empty() {
        match varint(buf)? {
            1 => slice(buf)?,
            2 => *log_number = Some(varint(buf)?),
            3 | 4 | 9 => {
                varint(buf)?;
            }
            5 => {
                varint(buf)?;
                slice(buf)?;
            }
            6 => {
                varint(buf)?;
                live.remove(&varint(buf)?);
            }
            7 => {
                varint(buf)?;
                let number = varint(buf)?;
                let size = varint(buf)?;
                slice(buf)?;
                slice(buf)?;
                live.insert(number, size);
            }
            tag => return Err(format!("unknown version edit tag {tag}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let c = crc32c(crc32c(0, &[kind]), payload);
        let masked = c.rotate_right(15).wrapping_add(0xa282_ead8);
        let mut out = masked.to_le_bytes().to_vec();
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn whole_records_read_back_and_a_cut_or_altered_one_is_refused() {
        let mut file = record(1, b"hello");
        file.extend(record(2, b"wor"));
        file.extend(record(4, b"ld"));
        assert_eq!(
            records(&file).unwrap(),
            vec![b"hello".to_vec(), b"world".to_vec()]
        );
        assert!(records(&file[..file.len() - 1])
            .unwrap_err()
            .contains("cut off"));
        let mut bad = file.clone();
        bad[HEADER + 1] ^= 1;
        assert!(records(&bad).unwrap_err().contains("checksum"));
        assert!(records(&record(4, b"x"))
            .unwrap_err()
            .contains("out of order"));
    }

    #[test]
    fn a_manifest_lists_live_tables_and_the_log() {
        // log number 5, new file 7 (level 0, 100 bytes), then file 7 deleted and 9 added.
        let mut e1 = vec![2, 5, 7, 0, 7, 100, 1, b'a', 1, b'b'];
        e1.extend([6, 0, 7, 7, 1, 9, 42, 1, b'a', 1, b'z']);
        let mut live = BTreeMap::new();
        let mut log = None;
        apply_edit(&e1, &mut live, &mut log).unwrap();
        assert_eq!(log, Some(5));
        assert_eq!(live.into_iter().collect::<Vec<_>>(), vec![(9, 42)]);
        assert!(apply_edit(&[8, 1], &mut BTreeMap::new(), &mut None).is_err());
    }

    #[test]
    fn local_auth_folders_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["session-abc", "session", "other", "session-"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("session-file"), b"").unwrap();
        let found = find_profiles(dir.path()).unwrap();
        let ids: Vec<Option<&str>> = found.iter().map(|p| p.client_id.as_deref()).collect();
        assert_eq!(ids, vec![None, Some("abc")]);
    }
}
