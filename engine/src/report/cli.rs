//! `lethe report`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::{DeletionSources, Format, Report};
use crate::audit::{Entry, FileRef};

/// `lethe report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A deletion run folder (`lethe unlearn --out`, with `run.json`, or a GUI run
    /// folder; its subfolders holding `evaluation.json` or `attack.json` are read
    /// too), or a study folder (`lethe study`, with `study.json`).
    pub run: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "pdf")]
    pub format: Format,
    /// Output file (default: `<RUN>/report.<ext>`; never overwritten unless
    /// `--overwrite`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output file.
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
    /// with the same stamp give byte-identical reports.
    #[arg(long, value_name = "UNIX")]
    pub timestamp: Option<i64>,
}

/// Runs `lethe report`; records the export in the audit log of `workspace`.
pub fn run(args: ReportArgs, workspace: Option<&Path>) -> anyhow::Result<()> {
    let src = DeletionSources {
        run: args.run.clone(),
        evaluations: args.evaluations.clone(),
        attacks: args.attacks.clone(),
        retrain: args.retrain.clone(),
    };
    let report = Report::open(&src)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join(format!("report.{}", args.format.extension())));
    let now = args.timestamp.unwrap_or_else(crate::audit::unix_now);
    super::write(&report, args.format, now, &out, args.overwrite)
        .with_context(|| format!("cannot write the report {}", out.display()))?;
    let verdict = match &report {
        Report::Deletion(d) => {
            println!(
                "{}: {} — {}",
                out.display(),
                d.verdict.outcome.label(),
                d.verdict.headline
            );
            Some(d.verdict.outcome)
        }
        Report::Study(s) => {
            println!("{}: {}", out.display(), s.table.title);
            None
        }
    };
    let entry = Entry {
        kind: "report".into(),
        status: "succeeded".into(),
        subject: format!(
            "{} report of {}",
            args.format.extension(),
            args.run.display()
        ),
        plugin: None,
        inputs: report
            .input_files()
            .iter()
            .map(|p| FileRef::of("result", p))
            .collect(),
        outputs: vec![FileRef::of("report", &out)],
        details: serde_json::json!({
            "format": args.format,
            "generated_unix": now,
            "verdict": verdict,
        }),
    };
    let ws = crate::audit::jobs::workspace_for(workspace, Some(&out));
    crate::audit::jobs::record(&ws, &entry)
        .context("the report was written but its audit record could not be")?;
    Ok(())
}
