//! `lethe bench`: Lethe against plain PyTorch, row by row, on this machine.
//!
//! Each row runs twice in fresh processes, so peak memory is per row and one
//! side's caches cannot help the other: `lethe bench --run-row SPEC` (this
//! engine's training loops) and `python bench/pytorch_reference.py SPEC` (the same
//! work in PyTorch, same libtorch). The table gives images per second for both and
//! their ratio (> 1 means Lethe is faster), and peak resident memory.

pub mod rows;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

use rows::{RowResult, RowSpec, default_rows};

/// `lethe bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Only rows whose name contains this text (repeatable).
    #[arg(long = "row")]
    pub rows: Vec<String>,
    /// Python with torch for the reference side (default: the project's .venv).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script (default: bench/pytorch_reference.py in the sources).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Intra-op threads on both sides (default: libtorch's default here).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Append the table, with machine and versions, to this Markdown file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Internal: run one row spec (JSON) in this process and print its result.
    #[arg(long, hide = true)]
    pub run_row: Option<String>,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The row.
    pub spec: RowSpec,
    /// Lethe's measurement.
    pub lethe: RowResult,
    /// PyTorch's measurement.
    pub pytorch: RowResult,
}

impl Comparison {
    /// Lethe's throughput over PyTorch's.
    pub fn ratio(&self) -> f64 {
        self.lethe.images_per_sec / self.pytorch.images_per_sec.max(1e-12)
    }
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the command.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.run_row {
        let spec: RowSpec = serde_json::from_str(spec).context("--run-row: bad row spec")?;
        let result = rows::run_row(&spec).with_context(|| format!("row `{}`", spec.name))?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| source_root().join(".venv/bin/python"));
    let reference = args
        .reference
        .clone()
        .unwrap_or_else(|| source_root().join("bench/pytorch_reference.py"));
    for (what, p) in [("python", &python), ("reference script", &reference)] {
        if !p.exists() {
            bail!(
                "{}: no such {what} (run installer/setup.sh, or pass --python/--reference)",
                p.display()
            );
        }
    }
    let threads = args.threads.unwrap_or_else(tch::get_num_threads);
    let specs: Vec<RowSpec> = default_rows(threads)
        .into_iter()
        .filter(|r| args.rows.is_empty() || args.rows.iter().any(|f| r.name.contains(f)))
        .collect();
    if specs.is_empty() {
        bail!("no row matches {:?}", args.rows);
    }
    let exe = std::env::current_exe()?;
    let mut table = Vec::new();
    for spec in specs {
        let json = serde_json::to_string(&spec)?;
        eprintln!("bench: {} ...", spec.name);
        let lethe = measure(Command::new(&exe).args(["bench", "--run-row", &json]))
            .with_context(|| format!("Lethe side of `{}`", spec.name))?;
        let pytorch = measure(Command::new(&python).arg(&reference).arg(&json))
            .with_context(|| format!("PyTorch side of `{}`", spec.name))?;
        let row = Comparison {
            spec,
            lethe,
            pytorch,
        };
        eprintln!(
            "bench: {}: {:.1} vs {:.1} images/s ({:.2}x)",
            row.spec.name,
            row.lethe.images_per_sec,
            row.pytorch.images_per_sec,
            row.ratio()
        );
        table.push(row);
    }
    let text = render(&table);
    print!("{text}");
    if let Some(path) = &args.record {
        record(path, &text, threads)?;
        eprintln!("bench: appended to {}", path.display());
    }
    Ok(())
}

/// Runs one side of a row and reads its JSON result from stdout.
fn measure(cmd: &mut Command) -> anyhow::Result<RowResult> {
    let out = cmd.output().context("cannot start it")?;
    if !out.status.success() {
        bail!(
            "it failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("unreadable result {line:?}"))
}

/// The comparison as a Markdown table.
pub fn render(rows: &[Comparison]) -> String {
    let mut out = String::from(
        "| row | batch × steps | Lethe img/s | PyTorch img/s | ratio | Lethe peak MiB | PyTorch peak MiB |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} × {} | {:.1} | {:.1} | {:.2}× | {:.0} | {:.0} |\n",
            r.spec.name,
            r.spec.batch,
            r.spec.steps,
            r.lethe.images_per_sec,
            r.pytorch.images_per_sec,
            r.ratio(),
            r.lethe.peak_rss_mib,
            r.pytorch.peak_rss_mib
        ));
    }
    out
}

fn record(path: &Path, table: &str, threads: i32) -> anyhow::Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = String::from_utf8_lossy(
        &Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_string();
    let torch = crate::runtime::RuntimeReport::probe().libtorch_version;
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.push_str(&format!(
        "\n## {date}: CPU, {threads} threads\n\nMachine: {cpu}, {cores} cores. Lethe {} (tch 0.26) and PyTorch, both on libtorch {torch} from the project's venv.\n\n{table}",
        env!("CARGO_PKG_VERSION"),
    ));
    crate::jobs::atomic::write_atomic(path, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))
}
