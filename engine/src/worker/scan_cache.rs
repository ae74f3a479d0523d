//! What plugin scans found, kept by library hash: the desktop app scans its
//! plugin folders at every start, and loading a library runs its code. A library
//! already described (same bytes, same Lethe) is not loaded again; a library
//! that killed the worker scanning it is *quarantined*: listed with the reason
//! and not loaded again until its file changes or the user asks for a rescan.
//!
//! The file is `plugin-scan.json` in Lethe's cache folder ([`default_location`]);
//! it holds only descriptions and reasons, never code, and a damaged file is
//! ignored (the next scan rewrites it).

use super::protocol::ScannedFile;
use crate::plugin_host::trust::file_sha256;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable naming Lethe's cache folder.
pub const CACHE_DIR_ENV: &str = "LETHE_CACHE_DIR";

/// `$LETHE_CACHE_DIR/plugin-scan.json`, else under `$XDG_CACHE_HOME/lethe`,
/// else `~/.cache/lethe`.
pub fn default_location() -> Option<PathBuf> {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = nonempty(CACHE_DIR_ENV)
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("lethe")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache").join("lethe")))?;
    Some(dir.join("plugin-scan.json"))
}

/// One library as last scanned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// SHA-256 of the library file.
    pub sha256: String,
    /// Where it was.
    pub path: PathBuf,
    /// What it offered, or why it was refused.
    pub scanned: ScannedFile,
    /// It killed (or stalled) the worker scanning it.
    pub quarantined: bool,
    /// When (unix seconds).
    pub at: f64,
}

/// The cache file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanCache {
    /// The Lethe that wrote it: another version re-scans everything (its host
    /// checks may differ).
    pub lethe_version: String,
    /// Entries by hash, at most one per hash.
    pub entries: Vec<CacheEntry>,
}

impl ScanCache {
    /// Reads the cache; a missing, damaged or other-version file reads as empty.
    pub fn read(file: &Path) -> ScanCache {
        let ours = env!("CARGO_PKG_VERSION");
        std::fs::read(file)
            .ok()
            // The cache is ours, but bounded anyway: it lists a few dozen libraries.
            .filter(|b| b.len() <= 16 << 20)
            .and_then(|b| serde_json::from_slice::<ScanCache>(&b).ok())
            .filter(|c| c.lethe_version == ours)
            .unwrap_or_else(|| ScanCache {
                lethe_version: ours.to_string(),
                entries: Vec::new(),
            })
    }

    /// Writes it atomically (temporary file and rename).
    pub fn write(&self, file: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::jobs::atomic::write_atomic(file, &bytes, true).map_err(std::io::Error::other)
    }

    /// The entry for this hash.
    pub fn get(&self, sha256: &str) -> Option<&CacheEntry> {
        self.entries.iter().find(|e| e.sha256 == sha256)
    }

    /// Adds or replaces the entry for its hash.
    pub fn put(&mut self, entry: CacheEntry) {
        self.entries.retain(|e| e.sha256 != entry.sha256);
        self.entries.push(entry);
    }

    /// Forgets every quarantine (the user asked for a full rescan).
    pub fn clear_quarantine(&mut self) {
        self.entries.retain(|e| !e.quarantined);
    }
}

/// Forgets the quarantined libraries in the cache file, if there is one.
pub fn clear_quarantine(file: &Path) -> std::io::Result<()> {
    if !file.exists() {
        return Ok(());
    }
    let mut cache = ScanCache::read(file);
    cache.clear_quarantine();
    cache.write(file)
}

/// The hash of each library (`None`: unreadable, scanned without the cache).
pub(super) fn hashes(libraries: &[PathBuf]) -> Vec<Option<String>> {
    libraries.iter().map(|l| file_sha256(l).ok()).collect()
}

/// The scan result a quarantined library gets instead of being loaded.
pub(super) fn quarantined(entry: &CacheEntry, path: &Path, cache_file: &Path) -> ScannedFile {
    let why = entry
        .scanned
        .outcome
        .as_ref()
        .err()
        .cloned()
        .unwrap_or_default();
    ScannedFile {
        path: path.to_path_buf(),
        outcome: Err(format!(
            "quarantined, not loaded: it killed the worker scanning it on {} ({why}); replace the \
             file, or rescan (the app's Rescan, or delete {}) to try it again",
            crate::report::format::utc_datetime(entry.at as i64),
            cache_file.display()
        )),
    }
}
