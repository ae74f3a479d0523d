//! The SQLite side of the audit trail: schema, append, read, verify.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditError, Entry, Record, host_name, identity};

/// The link of the first record (and the head of an empty log).
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The format of the records this version writes (see [`Row::compute_hash`]).
const FORMAT: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_unix INTEGER NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    lethe_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    subject TEXT NOT NULL,
    plugin TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    format INTEGER,
    uid INTEGER,
    env_user TEXT,
    started INTEGER
);
CREATE TRIGGER IF NOT EXISTS records_append_only_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the Lethe audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the Lethe audit log is append-only'); END;
";

/// Columns added by record format 2, in order; a log made before them gets them
/// (empty for its old records) when it is next opened for writing.
const FORMAT2_COLUMNS: [(&str, &str); 4] = [
    ("format", "INTEGER"),
    ("uid", "INTEGER"),
    ("env_user", "TEXT"),
    ("started", "INTEGER"),
];

/// The columns as stored; the hash covers exactly these strings, so a record
/// verifies whatever JSON library reads it later.
struct Row {
    seq: i64,
    time_unix: i64,
    user: String,
    host: String,
    lethe_version: String,
    kind: String,
    status: String,
    subject: String,
    plugin: String,
    inputs: String,
    outputs: String,
    details: String,
    prev_hash: String,
    hash: String,
    /// Empty for format 1.
    format: Option<i64>,
    uid: Option<i64>,
    env_user: Option<String>,
    started: Option<i64>,
}

impl Row {
    /// The record format (an empty column is format 1).
    fn format(&self) -> i64 {
        self.format.unwrap_or(1)
    }

    /// `SHA-256(prev_hash ‖ "\n" ‖ canonical)`. Format 1: canonical is the JSON
    /// array of the twelve stored fields from `seq` to `details`, in column order.
    /// Format 2: the array `["lethe-audit/2", seq, time_unix, user, uid, env_user,
    /// host, lethe_version, kind, status, subject, plugin, inputs, outputs,
    /// details, started]` (absent values as `null`). `None` for an unknown format.
    fn compute_hash(&self) -> Option<String> {
        let canonical = match self.format() {
            1 => self.canonical_v1(),
            2 => serde_json::json!([
                "lethe-audit/2",
                self.seq,
                self.time_unix,
                self.user,
                self.uid,
                self.env_user,
                self.host,
                self.lethe_version,
                self.kind,
                self.status,
                self.subject,
                self.plugin,
                self.inputs,
                self.outputs,
                self.details,
                self.started,
            ])
            .to_string(),
            _ => return None,
        };
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(canonical.as_bytes());
        Some(format!("{:x}", h.finalize()))
    }

    fn canonical_v1(&self) -> String {
        serde_json::json!([
            self.seq,
            self.time_unix,
            self.user,
            self.host,
            self.lethe_version,
            self.kind,
            self.status,
            self.subject,
            self.plugin,
            self.inputs,
            self.outputs,
            self.details,
        ])
        .to_string()
    }

    /// Whether a format-1 record carries format-2 fields its hash does not cover.
    fn has_uncovered_fields(&self) -> bool {
        self.format() == 1
            && (self.uid.is_some() || self.env_user.is_some() || self.started.is_some())
    }
}

/// One thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The record at fault (the first missing one for deletions).
    pub seq: i64,
    /// What is wrong, for people.
    pub message: String,
}

/// The result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records read.
    pub records: usize,
    /// Hash of the last record (the genesis link for an empty log).
    pub head: String,
    /// Everything that does not check out; empty when the chain is intact.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An open audit database.
pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens (creating when missing) the database at `path`.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |source| AuditError::Sql {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing folder surfaces as SQLite's "unable to open" below.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err)?;
        // Several Lethe processes (GUI, CLI) may append at once.
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let mut log = AuditLog {
            conn,
            path: path.to_path_buf(),
        };
        log.add_format2_columns()?;
        Ok(log)
    }

    /// Adds the format-2 columns to a log made before them (old records keep
    /// them empty and verify as format 1). In one immediate transaction, so two
    /// processes opening the same old log do not both add them.
    fn add_format2_columns(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError::Sql {
            path: path.clone(),
            source,
        };
        if self.has_format2_columns()? {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let present = columns(&tx).map_err(err)?;
        for (name, ty) in FORMAT2_COLUMNS {
            if !present.iter().any(|c| c == name) {
                tx.execute_batch(&format!("ALTER TABLE records ADD COLUMN {name} {ty}"))
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn has_format2_columns(&self) -> Result<bool, AuditError> {
        let present = self.sql(columns(&self.conn))?;
        Ok(FORMAT2_COLUMNS
            .iter()
            .all(|(name, _)| present.iter().any(|c| c == name)))
    }

    /// Opens an existing database read-only (verifying or listing never changes
    /// it, not even by restoring dropped triggers).
    pub fn open_existing(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |source| AuditError::Sql {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(err(rusqlite::Error::InvalidPath(path.to_path_buf())));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        Ok(AuditLog {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, AuditError> {
        r.map_err(|source| AuditError::Sql {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends `entry` as the current user on this host at `time_unix`, linked
    /// to the last record, in one immediate transaction (so two processes never
    /// link to the same predecessor).
    pub fn append(&mut self, entry: &Entry, time_unix: i64) -> Result<Record, AuditError> {
        self.append_linked(entry, time_unix, None)
    }

    /// [`append`](Self::append), for the end record of a job whose start is
    /// record `started`.
    pub fn append_linked(
        &mut self,
        entry: &Entry,
        time_unix: i64,
        started: Option<i64>,
    ) -> Result<Record, AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        // Continue SQLite's counter, not max(seq), so a deleted tail is not reused.
        let counter: Option<i64> = tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'records'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let seq = counter.unwrap_or(0).max(last.as_ref().map_or(0, |l| l.0)) + 1;
        let who = identity();
        let mut row = Row {
            seq,
            time_unix,
            user: who.login,
            host: host_name(),
            lethe_version: env!("CARGO_PKG_VERSION").to_string(),
            kind: entry.kind.clone(),
            status: entry.status.clone(),
            subject: entry.subject.clone(),
            plugin: json(&entry.plugin),
            inputs: json(&entry.inputs),
            outputs: json(&entry.outputs),
            details: json(&entry.details),
            prev_hash: last.map_or_else(|| GENESIS.to_string(), |l| l.1),
            hash: String::new(),
            format: Some(FORMAT),
            uid: Some(i64::from(who.uid)),
            env_user: who.env_user,
            started,
        };
        row.hash = row.compute_hash().unwrap_or_default();
        tx.execute(
            "INSERT INTO records (seq, time_unix, user, host, lethe_version, kind, status, \
             subject, plugin, inputs, outputs, details, prev_hash, hash, format, uid, \
             env_user, started) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
             ?17, ?18)",
            params![
                row.seq,
                row.time_unix,
                row.user,
                row.host,
                row.lethe_version,
                row.kind,
                row.status,
                row.subject,
                row.plugin,
                row.inputs,
                row.outputs,
                row.details,
                row.prev_hash,
                row.hash,
                row.format,
                row.uid,
                row.env_user,
                row.started
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.to_record(row)
    }

    fn rows(&self) -> Result<Vec<Row>, AuditError> {
        // A log made before format 2, opened read-only, lacks its columns.
        let extra = if self.has_format2_columns()? {
            "format, uid, env_user, started"
        } else {
            "NULL, NULL, NULL, NULL"
        };
        let mut stmt = self.sql(self.conn.prepare(&format!(
            "SELECT seq, time_unix, user, host, lethe_version, kind, status, subject, plugin, \
             inputs, outputs, details, prev_hash, hash, {extra} FROM records ORDER BY seq"
        )))?;
        let rows = self.sql(stmt.query_map([], |r| {
            Ok(Row {
                seq: r.get(0)?,
                time_unix: r.get(1)?,
                user: r.get(2)?,
                host: r.get(3)?,
                lethe_version: r.get(4)?,
                kind: r.get(5)?,
                status: r.get(6)?,
                subject: r.get(7)?,
                plugin: r.get(8)?,
                inputs: r.get(9)?,
                outputs: r.get(10)?,
                details: r.get(11)?,
                prev_hash: r.get(12)?,
                hash: r.get(13)?,
                format: r.get(14)?,
                uid: r.get(15)?,
                env_user: r.get(16)?,
                started: r.get(17)?,
            })
        }))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.sql(r)?);
        }
        Ok(out)
    }

    fn to_record(&self, row: Row) -> Result<Record, AuditError> {
        let seq = row.seq;
        fn parse<T: serde::de::DeserializeOwned>(
            path: &Path,
            seq: i64,
            field: &'static str,
            text: &str,
        ) -> Result<T, AuditError> {
            serde_json::from_str(text).map_err(|e| AuditError::Malformed {
                path: path.to_path_buf(),
                seq,
                field,
                message: e.to_string(),
            })
        }
        Ok(Record {
            seq,
            time_unix: row.time_unix,
            entry: Entry {
                kind: row.kind,
                status: row.status,
                subject: row.subject,
                plugin: parse(&self.path, seq, "plugin", &row.plugin)?,
                inputs: parse(&self.path, seq, "inputs", &row.inputs)?,
                outputs: parse(&self.path, seq, "outputs", &row.outputs)?,
                details: parse(&self.path, seq, "details", &row.details)?,
            },
            user: row.user,
            uid: row.uid.and_then(|u| u32::try_from(u).ok()),
            env_user: row.env_user,
            host: row.host,
            lethe_version: row.lethe_version,
            started: row.started,
            format: row.format.unwrap_or(1),
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }

    /// Every record, oldest first.
    pub fn records(&self) -> Result<Vec<Record>, AuditError> {
        self.rows()?
            .into_iter()
            .map(|r| self.to_record(r))
            .collect()
    }

    /// Checks the chain: contiguous sequence numbers from 1, each record's link to
    /// its predecessor, each record's hash over its stored fields, no deleted tail
    /// (against SQLite's sequence counter), and the head against `expect_head`.
    pub fn verify(&self, expect_head: Option<&str>) -> Result<Verification, AuditError> {
        let rows = self.rows()?;
        let mut problems = Vec::new();
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_string();
        for row in &rows {
            if row.seq > expected_seq {
                problems.push(Problem {
                    seq: expected_seq,
                    message: if row.seq == expected_seq + 1 {
                        format!("record #{expected_seq} is missing (deleted)")
                    } else {
                        format!(
                            "records #{expected_seq} to #{} are missing (deleted)",
                            row.seq - 1
                        )
                    },
                });
            }
            if row.prev_hash != prev {
                problems.push(Problem {
                    seq: row.seq,
                    message: format!(
                        "record #{}: its link to the record before does not match \
                         (that record was changed or deleted)",
                        row.seq
                    ),
                });
            }
            match row.compute_hash() {
                None => problems.push(Problem {
                    seq: row.seq,
                    message: format!(
                        "record #{} has record format {}, which this version of Lethe does \
                         not know (written by a newer one?)",
                        row.seq,
                        row.format()
                    ),
                }),
                Some(h) if h != row.hash => problems.push(Problem {
                    seq: row.seq,
                    message: format!(
                        "record #{} ({} at {}) was changed after it was written: its fields \
                         no longer match its hash",
                        row.seq, row.kind, row.time_unix
                    ),
                }),
                Some(_) if row.has_uncovered_fields() => problems.push(Problem {
                    seq: row.seq,
                    message: format!(
                        "record #{} ({} at {}) was changed after it was written: it is a \
                         format-1 record with a uid, $USER or start link added",
                        row.seq, row.kind, row.time_unix
                    ),
                }),
                Some(_) => {}
            }
            prev = row.hash.clone();
            expected_seq = row.seq + 1;
        }
        let counter: Option<i64> = self.sql(
            self.conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'records'",
                    [],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        if let Some(c) = counter
            && c >= expected_seq
        {
            problems.push(Problem {
                seq: expected_seq,
                message: if c == expected_seq {
                    format!("record #{c}, the last one written, is missing (deleted)")
                } else {
                    format!("records #{expected_seq} to #{c}, the last ones written, are missing (deleted)")
                },
            });
        }
        if let Some(want) = expect_head
            && !want.eq_ignore_ascii_case(&prev)
        {
            problems.push(Problem {
                seq: expected_seq - 1,
                message: format!(
                    "the log ends in {prev}, not in the expected head {want}: records were \
                     removed or the chain was rewritten"
                ),
            });
        }
        Ok(Verification {
            records: rows.len(),
            head: prev,
            problems,
        })
    }
}

/// The column names of the records table.
fn columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('records')")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// The stored text of an entry field (serde_json cannot fail on these types:
/// their maps have string keys).
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::super::FileRef;
    use super::*;

    fn entry(kind: &str) -> Entry {
        Entry {
            kind: kind.into(),
            status: "succeeded".into(),
            subject: format!("{kind} job"),
            plugin: None,
            inputs: vec![FileRef {
                role: "checkpoint".into(),
                path: "/m.safetensors".into(),
                sha256: Some("ab".repeat(32)),
            }],
            outputs: vec![],
            details: serde_json::json!({"seed": 1}),
        }
    }

    fn log_with(n: usize) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(&dir.path().join("audit.sqlite")).unwrap();
        for i in 0..n {
            log.append(&entry(&format!("job{i}")), 1000 + i as i64)
                .unwrap();
        }
        (dir, log)
    }

    fn unlock(log: &AuditLog) {
        log.conn
            .execute_batch(
                "DROP TRIGGER records_append_only_update; DROP TRIGGER records_append_only_delete;",
            )
            .unwrap();
    }

    #[test]
    fn an_untouched_log_verifies_and_records_read_back() {
        let (_d, log) = log_with(3);
        let v = log.verify(None).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.records, 3);
        let recs = log.records().unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].prev_hash, GENESIS);
        assert_eq!(recs[1].prev_hash, recs[0].hash);
        assert_eq!(v.head, recs[2].hash);
        assert_eq!(recs[2].entry, entry("job2"));
        assert!(log.verify(Some(&recs[2].hash)).unwrap().ok());
        assert!(!log.verify(Some(&recs[1].hash)).unwrap().ok());
        let empty = log_with(0).1.verify(None).unwrap();
        assert!(empty.ok() && empty.records == 0 && empty.head == GENESIS);
    }

    #[test]
    fn updates_and_deletes_are_refused_by_the_database() {
        let (_d, log) = log_with(2);
        let e = log
            .conn
            .execute("UPDATE records SET user = 'x' WHERE seq = 1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(log.conn.execute("DELETE FROM records", []).is_err());
    }

    #[test]
    fn an_edited_field_is_named_and_a_rehashed_edit_breaks_the_next_link() {
        let (_d, log) = log_with(3);
        unlock(&log);
        log.conn
            .execute("UPDATE records SET status = 'failed' WHERE seq = 2", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert_eq!(v.problems.len(), 1, "{v:?}");
        assert_eq!(v.problems[0].seq, 2);
        assert!(v.problems[0].message.contains("record #2"), "{v:?}");
        // Forge record 2's hash too: then record 3 no longer links to it.
        let row = log.rows().unwrap().remove(1);
        let forged = row.compute_hash().unwrap();
        log.conn
            .execute("UPDATE records SET hash = ?1 WHERE seq = 2", [&forged])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert_eq!(v.problems.len(), 1, "{v:?}");
        assert_eq!(v.problems[0].seq, 3);
    }

    #[test]
    fn deleted_records_are_detected_in_the_middle_and_at_the_end() {
        let (_d, log) = log_with(4);
        unlock(&log);
        log.conn
            .execute("DELETE FROM records WHERE seq = 2", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 2 && p.message.contains("missing"))
        );
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 3 && p.message.contains("link"))
        );
        log.conn
            .execute("DELETE FROM records WHERE seq = 4", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 4 && p.message.contains("last one written")),
            "{v:?}"
        );
    }

    /// A log as Lethe wrote it before record format 2: the old table (no
    /// format, uid, env_user or started columns) and format-1 hashes.
    fn old_log(dir: &Path, n: i64) -> PathBuf {
        let path = dir.join("audit.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, time_unix INTEGER \
             NOT NULL, user TEXT NOT NULL, host TEXT NOT NULL, lethe_version TEXT NOT NULL, \
             kind TEXT NOT NULL, status TEXT NOT NULL, subject TEXT NOT NULL, plugin TEXT NOT \
             NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL, details TEXT NOT NULL, \
             prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
        )
        .unwrap();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let mut row = Row {
                seq,
                time_unix: 1000 + seq,
                user: "olduser".into(),
                host: "oldhost".into(),
                lethe_version: "0.0.9".into(),
                kind: "unlearn".into(),
                status: "succeeded".into(),
                subject: format!("old job {seq}"),
                plugin: "null".into(),
                inputs: "[]".into(),
                outputs: "[]".into(),
                details: "{}".into(),
                prev_hash: prev.clone(),
                hash: String::new(),
                format: None,
                uid: None,
                env_user: None,
                started: None,
            };
            row.hash = row.compute_hash().unwrap();
            conn.execute(
                "INSERT INTO records (seq, time_unix, user, host, lethe_version, kind, status, \
                 subject, plugin, inputs, outputs, details, prev_hash, hash) VALUES (?1, ?2, \
                 ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    row.seq,
                    row.time_unix,
                    row.user,
                    row.host,
                    row.lethe_version,
                    row.kind,
                    row.status,
                    row.subject,
                    row.plugin,
                    row.inputs,
                    row.outputs,
                    row.details,
                    row.prev_hash,
                    row.hash
                ],
            )
            .unwrap();
            prev = row.hash;
        }
        path
    }

    #[test]
    fn a_format_1_log_reads_verifies_and_grows_with_format_2_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_log(dir.path(), 2);
        // Read-only (`lethe audit verify` / `log`): the old table as it is.
        let ro = AuditLog::open_existing(&path).unwrap();
        let v = ro.verify(None).unwrap();
        assert!(v.ok() && v.records == 2, "{v:?}");
        let old = ro.records().unwrap();
        assert_eq!((old[0].format, old[0].uid, old[0].started), (1, None, None));
        assert_eq!(old[1].user, "olduser");
        drop(ro);
        // Opened for writing: the new columns are added, old records keep verifying,
        // and a new record links to the old head.
        let mut log = AuditLog::open(&path).unwrap();
        assert!(log.has_format2_columns().unwrap());
        let r = log.append(&entry("new"), 5000).unwrap();
        assert_eq!((r.seq, r.format), (3, 2));
        assert_eq!(r.prev_hash, old[1].hash);
        let v = log.verify(None).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(log.records().unwrap()[..2], old[..]);
        // Opening it again changes nothing.
        drop(log);
        assert!(AuditLog::open(&path).unwrap().verify(None).unwrap().ok());
        // A format-2 field slipped into a format-1 record is caught, and so is a
        // format-2 record passed off as format 1.
        let log = AuditLog::open(&path).unwrap();
        unlock(&log);
        log.conn
            .execute("UPDATE records SET started = 1 WHERE seq = 2", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 2 && p.message.contains("format-1 record")),
            "{v:?}"
        );
        log.conn
            .execute("UPDATE records SET started = NULL WHERE seq = 2; ", [])
            .unwrap();
        log.conn
            .execute("UPDATE records SET format = NULL WHERE seq = 3", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 3 && p.message.contains("changed")),
            "{v:?}"
        );
        log.conn
            .execute("UPDATE records SET format = 7 WHERE seq = 3", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 3 && p.message.contains("format 7")),
            "{v:?}"
        );
    }

    #[test]
    fn records_name_the_uid_s_account_and_link_a_job_s_end_to_its_start() {
        let (_d, mut log) = log_with(0);
        let mut e = entry("job");
        e.status = super::super::STARTED.into();
        let start = log.append(&e, 10).unwrap();
        e.status = "succeeded".into();
        let end = log.append_linked(&e, 11, Some(start.seq)).unwrap();
        assert_eq!((start.started, end.started), (None, Some(start.seq)));
        let who = identity();
        for r in log.records().unwrap() {
            assert_eq!(r.format, 2);
            assert_eq!(r.user, who.login);
            assert_eq!(r.uid, Some(who.uid));
            assert_eq!(r.env_user, who.env_user);
        }
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(who.uid, uid);
        // The account name, as `id -un` prints it.
        if let Ok(o) = std::process::Command::new("id").arg("-un").output()
            && o.status.success()
        {
            assert_eq!(who.login, String::from_utf8_lossy(&o.stdout).trim());
        }
        // The link is covered by the hash.
        unlock(&log);
        log.conn
            .execute("UPDATE records SET started = NULL WHERE seq = 2", [])
            .unwrap();
        let v = log.verify(None).unwrap();
        assert!(v.problems.iter().any(|p| p.seq == 2), "{v:?}");
    }

    #[test]
    fn appends_continue_after_a_deleted_tail_instead_of_reusing_its_number() {
        let (_d, mut log) = log_with(2);
        unlock(&log);
        log.conn
            .execute("DELETE FROM records WHERE seq = 2", [])
            .unwrap();
        let r = log.append(&entry("later"), 5000).unwrap();
        assert_eq!(r.seq, 3);
        let v = log.verify(None).unwrap();
        assert!(v.problems.iter().any(|p| p.seq == 2), "{v:?}");
    }
}
