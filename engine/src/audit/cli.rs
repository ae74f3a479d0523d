//! `lethe audit verify` and `lethe audit log`.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use super::{AuditLog, Record, audit_path};

/// `lethe audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain: fails (exit 1) naming each changed, missing or
    /// unlinked record.
    Verify {
        /// Also require the log to end in this hash (as `lethe audit log` printed
        /// it earlier), so a rewritten or truncated log is caught too.
        #[arg(long, value_name = "SHA256")]
        expect_head: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the records, oldest first.
    Log {
        /// Print JSON (every field) instead of one line per record.
        #[arg(long)]
        json: bool,
        /// Only records of this kind (`unlearn`, `evaluate`, `attack`, `report`).
        #[arg(long)]
        kind: Option<String>,
    },
}

fn date(unix: i64) -> String {
    crate::report::format::utc_datetime(unix)
}

fn print_record(r: &Record) {
    println!(
        "#{:<5} {}  {:<9} {:<8} {}@{}  {}",
        r.seq,
        date(r.time_unix),
        r.entry.kind,
        if r.entry.status == "succeeded" {
            "ok"
        } else {
            "FAILED"
        },
        r.user,
        r.host,
        r.entry.subject
    );
    if let Some(p) = &r.entry.plugin {
        println!(
            "        plugin {} {} {} sha256 {}",
            p.id,
            p.version,
            p.library,
            p.sha256.as_deref().unwrap_or("-")
        );
    }
    for (dir, files) in [("in ", &r.entry.inputs), ("out", &r.entry.outputs)] {
        for f in files {
            println!(
                "        {dir} {} {} ({})",
                f.sha256.as_deref().unwrap_or("(unreadable)"),
                f.path,
                f.role
            );
        }
    }
    if r.entry.status != "succeeded" {
        println!("        {}", r.entry.status);
    }
    println!("        hash {}", r.hash);
}

/// Runs an audit command on the log of `workspace`.
pub fn run(command: AuditCommand, workspace: &Path) -> anyhow::Result<()> {
    let path = audit_path(workspace);
    if !path.is_file() {
        bail!(
            "{}: no audit log here (it is created by the first unlearn, evaluate, attack or \
             report job in this workspace; see --workspace)",
            path.display()
        );
    }
    let log = AuditLog::open_existing(&path)?;
    match command {
        AuditCommand::Verify { expect_head, json } => {
            let v = log.verify(expect_head.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v.ok() {
                println!(
                    "{}: {} records, chain intact; head {}",
                    path.display(),
                    v.records,
                    v.head
                );
            } else {
                for p in &v.problems {
                    println!("TAMPERED: {}", p.message);
                }
            }
            if !v.ok() {
                bail!(
                    "{}: the audit log does not verify ({} problem(s))",
                    path.display(),
                    v.problems.len()
                );
            }
        }
        AuditCommand::Log { json, kind } => {
            let records: Vec<Record> = log
                .records()?
                .into_iter()
                .filter(|r| kind.as_ref().is_none_or(|k| &r.entry.kind == k))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                for r in &records {
                    print_record(r);
                }
                let v = log.verify(None)?;
                println!(
                    "{} records; head {}{}",
                    v.records,
                    v.head,
                    if v.ok() {
                        ""
                    } else {
                        " (does NOT verify: run `lethe audit verify`)"
                    }
                );
            }
        }
    }
    Ok(())
}
