//! `lethe audit verify` and `lethe audit log`.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use super::{AuditLog, Record, STARTED, audit_path};

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

/// Whether `r` is the start of a job that has no end record in `records`.
fn unfinished(r: &Record, ended: &std::collections::HashSet<i64>) -> bool {
    r.entry.status == STARTED && !ended.contains(&r.seq)
}

fn print_record(r: &Record, ended: &std::collections::HashSet<i64>) {
    let status = match r.entry.status.as_str() {
        "succeeded" => "ok",
        STARTED if unfinished(r, ended) => "UNFINISHED",
        STARTED => "started",
        _ => "FAILED",
    };
    let user = match &r.env_user {
        Some(env) => format!("{} ($USER={env})", r.user),
        None => r.user.clone(),
    };
    println!(
        "#{:<5} {}  {:<9} {:<10} {}@{}  {}",
        r.seq,
        date(r.time_unix),
        r.entry.kind,
        status,
        user,
        r.host,
        r.entry.subject
    );
    if let Some(s) = r.started {
        println!("        ends the job started in record #{s}");
    }
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
    if unfinished(r, ended) {
        println!(
            "        started, never ended: the job was killed or crashed (or is still running)"
        );
    } else if r.entry.status != "succeeded" && r.entry.status != STARTED {
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
            let all = log.records()?;
            let ended: std::collections::HashSet<i64> =
                all.iter().filter_map(|r| r.started).collect();
            let open: Vec<i64> = all
                .iter()
                .filter(|r| unfinished(r, &ended))
                .map(|r| r.seq)
                .collect();
            let records: Vec<Record> = all
                .into_iter()
                .filter(|r| kind.as_ref().is_none_or(|k| &r.entry.kind == k))
                .collect();
            if json {
                // Start records say whether their job ended.
                let mut out = Vec::new();
                for r in &records {
                    let mut v = serde_json::to_value(r)?;
                    if r.entry.status == STARTED
                        && let Some(m) = v.as_object_mut()
                    {
                        m.insert("unfinished".into(), unfinished(r, &ended).into());
                    }
                    out.push(v);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for r in &records {
                    print_record(r, &ended);
                }
                let v = log.verify(None)?;
                let open = match open.len() {
                    0 => String::new(),
                    n => format!(
                        "; {n} job(s) started and never ended: {}",
                        open.iter()
                            .map(|s| format!("#{s}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                println!(
                    "{} records; head {}{open}{}",
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
