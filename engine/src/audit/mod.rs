//! The audit trail: every job, its inputs and outputs with their SHA-256, and every
//! export, appended to a local SQLite database in the workspace
//! (`<workspace>/audit.sqlite`).
//!
//! Each record carries the hash of the record before it and its own hash,
//! `SHA-256(prev_hash ‖ "\n" ‖ canonical record)`, so changing a stored field breaks
//! that record's hash and recomputing it breaks the next record's link; a deleted
//! record leaves a gap in the sequence numbers (or, at the end, below SQLite's own
//! sequence counter). Triggers refuse `UPDATE` and `DELETE`, so an honest mistake
//! cannot rewrite history; someone who drops the triggers and rewrites the whole chain
//! and the counter is only caught against a head hash kept elsewhere (`lethe audit
//! verify --expect-head`), which is why `lethe audit log` prints it.
//!
//! A job is recorded twice: when it starts (status `started`) and when it ends
//! (its status, outputs and a link to the start record), so a job killed outright
//! still leaves its start; `lethe audit log` lists such a start as unfinished. The
//! user of a record is the account of the process's uid (and `$USER` beside it
//! when that names someone else).
//!
//! Record formats: format 1 (records written before start records and uids, the
//! `format` column empty) hash their first twelve columns; format 2 hash those and
//! the uid, `$USER` and start link too (see `log.rs`). Both verify.
//!
//! [`key`] keeps the workspace's Ed25519 signing key (deletion certificates).

pub mod cli;
mod hash;
pub mod jobs;
pub mod key;
mod log;

pub use hash::{folder_files, path_sha256};
pub use log::{AuditLog, GENESIS, Problem, Verification};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The database's file name inside a workspace.
pub const AUDIT_FILE: &str = "audit.sqlite";

/// Environment variable naming the workspace when `--workspace` is not given.
pub const WORKSPACE_ENV: &str = "LETHE_WORKSPACE";

/// The workspace: `flag`, else `$LETHE_WORKSPACE`, else the current folder.
pub fn workspace_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(WORKSPACE_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The audit database of a workspace.
pub fn audit_path(workspace: &Path) -> PathBuf {
    workspace.join(AUDIT_FILE)
}

/// The audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite refused an operation on the database.
    #[error("audit log {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A stored JSON field does not parse (the database was edited by hand).
    #[error("audit log {path}: record #{seq} has a malformed `{field}` field: {message}")]
    Malformed {
        /// The database file.
        path: PathBuf,
        /// The record.
        seq: i64,
        /// The column.
        field: &'static str,
        /// The parser's message.
        message: String,
    },
}

/// A file a job read or wrote, with its hash when it could be read (folders hash
/// as a sorted manifest of their files' hashes, like `sha256sum`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// What it is to the job (`checkpoint`, `forget list`, `model`, …).
    pub role: String,
    /// The path as the job was given it.
    pub path: String,
    /// Its SHA-256 (hex), `None` when it could not be read.
    pub sha256: Option<String>,
}

impl FileRef {
    /// Hashes `path` now.
    pub fn of(role: &str, path: &Path) -> FileRef {
        FileRef {
            role: role.to_string(),
            path: path.display().to_string(),
            sha256: path_sha256(path),
        }
    }

    /// One entry per file under `dir` (sorted by path), the role being the path
    /// relative to `dir`.
    pub fn folder(dir: &Path) -> Vec<FileRef> {
        folder_files(dir)
            .into_iter()
            .map(|p| {
                let role = p
                    .strip_prefix(dir)
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|_| p.display().to_string());
                FileRef::of(&role, &p)
            })
            .collect()
    }
}

/// The plugin a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    /// Descriptor id.
    pub id: String,
    /// Descriptor version.
    pub version: String,
    /// The library file.
    pub library: String,
    /// Its SHA-256.
    pub sha256: Option<String>,
}

/// What to append: one job or export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `unlearn`, `evaluate`, `attack`, `report`, `demo`, …
    pub kind: String,
    /// `succeeded` or `failed: <why>`.
    pub status: String,
    /// One line saying what it was about (method id, model, report format…).
    pub subject: String,
    /// The plugin, for plugin jobs.
    pub plugin: Option<PluginRef>,
    /// Files read.
    pub inputs: Vec<FileRef>,
    /// Files written.
    pub outputs: Vec<FileRef>,
    /// Settings (parameters, seed, device…).
    pub details: Value,
}

/// The status of a job's start record.
pub const STARTED: &str = "started";

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When it was appended (Unix seconds).
    pub time_unix: i64,
    /// Who ran it: the account of the process's uid (format 2; `uid N` when the
    /// password database has none), or the login name format 1 recorded.
    pub user: String,
    /// The process's numeric uid (format 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `$USER`, when it named someone else than the uid's account (format 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_user: Option<String>,
    /// On which machine.
    pub host: String,
    /// Lethe version that wrote it.
    pub lethe_version: String,
    /// The job or export.
    pub entry: Entry,
    /// For the end record of a job: the sequence number of its start record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    /// Record format: 1 (written before uids and start records) or 2.
    pub format: i64,
    /// Hash of the record before (64 zeros for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// Who runs this process: the account of its uid, and `$USER` when it differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The account name of the uid (`getpwuid_r`), or `uid N` without one.
    pub login: String,
    /// The real uid.
    pub uid: u32,
    /// `$USER`, when set and not the account name (it can be set to anything).
    pub env_user: Option<String>,
}

impl std::fmt::Display for Identity {
    /// `alice`, or `alice ($USER=bob)` when `$USER` says otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.env_user {
            Some(env) => write!(f, "{} ($USER={env})", self.login),
            None => f.write_str(&self.login),
        }
    }
}

/// Who runs this process (see [`Identity`]).
pub fn identity() -> Identity {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let login = login_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    let env_user = std::env::var("USER")
        .ok()
        .filter(|v| !v.trim().is_empty() && *v != login);
    Identity {
        login,
        uid,
        env_user,
    }
}

/// Who runs this process, for people: the account of the process's uid, with
/// `$USER` beside it when that names someone else (`alice ($USER=bob)`); the
/// environment alone is never trusted.
pub fn current_user() -> String {
    identity().to_string()
}

/// The account name of `uid` from the password database.
fn login_name(uid: libc::uid_t) -> Option<String> {
    let mut pwd: libc::passwd = unsafe {
        // SAFETY: passwd is a plain C struct; all-zero is a valid (empty) value
        // that getpwuid_r overwrites.
        std::mem::zeroed()
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and the buffer
    // length is its real size; on success `result` points at `pwd`, whose string
    // fields point into `buf`, both alive below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// This machine's host name.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success (the last byte stays 0 for the truncated case).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
