//! `lethe report` and `lethe report verify`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::certificate::{self, Certificate, Level, VerifyRequest};
use super::{Certified, DeletionSources, Format, Report};
use crate::audit::{Entry, FileRef};

/// `lethe report`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    /// `verify`: check a deletion certificate instead of writing a report.
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    /// A deletion run folder (`lethe unlearn --out`, with `run.json`, or a GUI run
    /// folder; its subfolders holding `evaluation.json` or `attack.json` are read
    /// too), or a study folder (`lethe study`, with `study.json`). A folder named
    /// `verify` is given as `./verify`.
    #[arg(required = true)]
    pub run: Option<PathBuf>,
    /// Output format. A deletion report is certified: signed with the workspace's
    /// Ed25519 key (made on first use), its certificate shown in the report and
    /// written beside it as `<report>.cert.json`.
    #[arg(long, value_enum, default_value = "pdf")]
    pub format: Format,
    /// Output file (default: `<RUN>/report.<ext>`; never overwritten unless
    /// `--overwrite`, nor is its `.cert.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output file (and its `.cert.json`).
    #[arg(long)]
    pub overwrite: bool,
    /// Another evaluation folder of this deletion (repeatable).
    #[arg(long = "evaluation", value_name = "DIR")]
    pub evaluations: Vec<PathBuf>,
    /// Another attack folder of this deletion (repeatable).
    #[arg(long = "attack", value_name = "DIR")]
    pub attacks: Vec<PathBuf>,
    /// The run folder of a retrained model on the same request (with its own
    /// evaluation and attack subfolders): adds the gaps to retrain.
    #[arg(long, value_name = "DIR")]
    pub retrain: Option<PathBuf>,
    /// Generation time to stamp (Unix seconds; default now): the same results
    /// with the same stamp give byte-identical reports (a certified report also
    /// needs the same certificate: its audit head changes as the log grows).
    #[arg(long, value_name = "UNIX")]
    pub timestamp: Option<i64>,
}

/// `lethe report …`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Check a deletion certificate: its Ed25519 signature (and whether this
    /// workspace's key made it), the given files against the certified hashes,
    /// and the certified audit log head against the workspace's log. Exits 1
    /// naming whatever differs.
    Verify(VerifyArgs),
}

/// `lethe report verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate: `<report>.cert.json`, a JSON report, or a PDF/HTML report
    /// with its `.cert.json` beside it.
    pub file: PathBuf,
    /// The unlearned model to check against the certificate.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// The original model to check.
    #[arg(long, value_name = "FILE")]
    pub original: Option<PathBuf>,
    /// The forget list to check.
    #[arg(long, value_name = "FILE")]
    pub forget: Option<PathBuf>,
    /// The dataset to check.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Print JSON (every finding) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lethe report` (or `lethe report verify`); records the report job in
/// the audit log of `workspace`, when it starts and when it ends.
pub fn run(args: ReportArgs, workspace: Option<&Path>) -> anyhow::Result<()> {
    if let Some(ReportCommand::Verify(v)) = args.command {
        return run_verify(v, workspace);
    }
    let Some(run) = args.run.clone() else {
        bail!("give a run or study folder, or `verify FILE`");
    };
    let src = DeletionSources {
        run: run.clone(),
        evaluations: args.evaluations.clone(),
        attacks: args.attacks.clone(),
        retrain: args.retrain.clone(),
    };
    let report = Report::open(&src)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| run.join(format!("report.{}", args.format.extension())));
    let now = args.timestamp.unwrap_or_else(crate::audit::unix_now);
    let deletion = match &report {
        Report::Deletion(d) => Some(d.as_ref()),
        Report::Study(_) => None,
    };
    let cert_path = deletion.map(|_| certificate::detached_path(&out));
    for p in std::iter::once(&out).chain(cert_path.as_ref()) {
        if !args.overwrite && p.exists() {
            bail!(
                "cannot write the report {}: {} exists and is never overwritten (--overwrite \
                 replaces it)",
                out.display(),
                p.display()
            );
        }
    }
    let verdict = deletion.map(|d| d.verdict.outcome);
    let mut entry = Entry {
        kind: "report".into(),
        status: crate::audit::STARTED.into(),
        subject: format!("{} report of {}", args.format.extension(), run.display()),
        plugin: None,
        inputs: report
            .input_files()
            .iter()
            .map(|p| FileRef::of("result", p))
            .collect(),
        outputs: Vec::new(),
        details: serde_json::json!({
            "format": args.format,
            "generated_unix": now,
            "verdict": verdict,
        }),
    };
    let ws = crate::audit::jobs::workspace_for(workspace, Some(&out));
    // The start record is the audit head the certificate names.
    let started = crate::audit::jobs::begin(&ws, &entry).context(
        "the audit record of the report's start could not be written, so no report was made",
    )?;
    let result = write_report(&report, &args, now, &out, cert_path.as_deref(), &started);
    entry.status = crate::audit::jobs::status_of(&result);
    entry.outputs = std::iter::once(&out)
        .chain(cert_path.as_ref())
        .filter(|p| p.is_file())
        .map(|p| {
            let role = if Some(p) == cert_path.as_ref() {
                "certificate"
            } else {
                "report"
            };
            FileRef::of(role, p)
        })
        .collect();
    if let (Ok(Some(signed)), Some(m)) = (&result, entry.details.as_object_mut()) {
        m.insert("certificate".into(), signed.to_value());
    }
    let ended = crate::audit::jobs::end(&started, &entry);
    let signed = result.with_context(|| format!("cannot write the report {}", out.display()))?;
    ended.context("the report was written but its audit record could not be")?;
    match &report {
        Report::Deletion(d) => println!(
            "{}: {} — {}",
            out.display(),
            d.verdict.outcome.label(),
            d.verdict.headline
        ),
        Report::Study(s) => println!("{}: {}", out.display(), s.table.title),
    }
    if let (Some(signed), Some(cert_path)) = (signed, &cert_path) {
        let c = &signed.certificate;
        println!(
            "{}: certificate signed by key {} (audit head #{})",
            cert_path.display(),
            c.signer.public_key_sha256,
            c.audit.head_seq
        );
    }
    Ok(())
}

/// Certifies (deletions) and writes the report and its detached certificate.
fn write_report(
    report: &Report,
    args: &ReportArgs,
    now: i64,
    out: &Path,
    cert_path: Option<&Path>,
    started: &crate::audit::jobs::Started,
) -> anyhow::Result<Option<certificate::SignedCertificate>> {
    let signed = match (report, cert_path) {
        (Report::Deletion(d), Some(_)) => {
            let key = crate::audit::key::load_or_create(&started.workspace)?;
            if key.created() {
                eprintln!(
                    "made this workspace's signing key {} (Ed25519, fingerprint {}); keep it \
                     private, it signs the deletion certificates made here",
                    key.path().display(),
                    key.public().fingerprint()
                );
            }
            Some(Certificate::of(d, now, &started.record, &key.public()).sign(&key)?)
        }
        _ => None,
    };
    let file_name = cert_path
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let certified = signed.as_ref().map(|s| Certified {
        signed: s,
        file_name: &file_name,
    });
    let bytes = super::render_with(report, args.format, now, certified)?;
    crate::jobs::atomic::write_atomic(out, &bytes, args.overwrite)?;
    if let (Some(s), Some(p)) = (&signed, cert_path) {
        crate::jobs::atomic::write_atomic(p, &s.to_file_bytes()?, args.overwrite)?;
    }
    Ok(signed)
}

/// The workspace a certificate is checked against: `flag`, else
/// `$LETHE_WORKSPACE`, else the nearest folder holding the file (or above it)
/// with a project or an audit log, else the current folder. Unlike a job's
/// output, any log above the file counts: checking only reads it.
fn verify_workspace(flag: Option<&Path>, file: &Path) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(env) = std::env::var_os(crate::audit::WORKSPACE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(env);
    }
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    abs.ancestors()
        .skip(1)
        .find(|d| {
            d.join("lethe-project.json").is_file() || d.join(crate::audit::AUDIT_FILE).is_file()
        })
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `lethe report verify`: prints every finding; fails naming what differs.
fn run_verify(args: VerifyArgs, workspace: Option<&Path>) -> anyhow::Result<()> {
    let ws = verify_workspace(workspace, &args.file);
    let v = certificate::verify(&VerifyRequest {
        file: args.file.clone(),
        model: args.model,
        original: args.original,
        forget: args.forget,
        data: args.data,
        workspace: ws,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if v.file != args.file {
            println!("reading {}", v.file.display());
        }
        for f in &v.findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Fail => "FAIL",
                Level::Note => "note",
            };
            println!("{tag}  {}", f.message);
        }
    }
    let failures = v.failures().count();
    if failures > 0 {
        bail!(
            "{} does not verify: {failures} problem(s), {}",
            v.file.display(),
            if args.json {
                "the findings of level \"fail\" above"
            } else {
                "each marked FAIL above"
            }
        );
    }
    if !args.json
        && let Some(c) = &v.certificate
    {
        println!(
            "verified: the deletion of {} ({}: {}), certified {} by key {}, audit head #{}",
            c.run,
            c.verdict.outcome,
            c.method.id,
            c.issued,
            c.signer.public_key_sha256,
            c.audit.head_seq
        );
    }
    Ok(())
}
