//! The SQLite side of the audit trail: schema, append, read, verify.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditError, Entry, Record, current_user, host_name};

/// The link of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS records_append_only_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the Lethe audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the Lethe audit log is append-only'); END;
";

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
}

impl Row {
    /// `SHA-256(prev_hash ‖ "\n" ‖ canonical)`, canonical being the JSON array of
    /// the stored fields in column order.
    fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
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
        .to_string();
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(canonical.as_bytes());
        format!("{:x}", h.finalize())
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
        Ok(AuditLog {
            conn,
            path: path.to_path_buf(),
        })
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
        let mut row = Row {
            seq,
            time_unix,
            user: current_user(),
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
        };
        row.hash = row.compute_hash();
        tx.execute(
            "INSERT INTO records (seq, time_unix, user, host, lethe_version, kind, status, \
             subject, plugin, inputs, outputs, details, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.to_record(row)
    }

    fn rows(&self) -> Result<Vec<Row>, AuditError> {
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT seq, time_unix, user, host, lethe_version, kind, status, subject, plugin, \
             inputs, outputs, details, prev_hash, hash FROM records ORDER BY seq",
        ))?;
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
            host: row.host,
            lethe_version: row.lethe_version,
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
            if row.compute_hash() != row.hash {
                problems.push(Problem {
                    seq: row.seq,
                    message: format!(
                        "record #{} ({} at {}) was changed after it was written: its fields \
                         no longer match its hash",
                        row.seq, row.kind, row.time_unix
                    ),
                });
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
        let forged = row.compute_hash();
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
