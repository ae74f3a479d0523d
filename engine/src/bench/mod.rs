//! `lethe bench`: Lethe against plain PyTorch, row by row, on this machine.
//!
//! Each side of a row runs in fresh processes, so peak memory is per row and one
//! side's caches cannot help the other, `--repeat` times, alternating sides so
//! that a burst of other work on the machine hits both; the table gives each
//! side's median run and the range of the per-run ratios: `lethe bench --run-row SPEC` (this
//! engine's training loops) and `python bench/pytorch_reference.py SPEC` (the same
//! work in PyTorch, same libtorch). The table gives images per second for both and
//! their ratio (> 1 means Lethe is faster), and peak resident memory. The
//! unlearning rows ([`unlearn`]) time one whole run on the demo on both sides.
//! Binaries that can measure more (the desktop app: frame time of the heatmap)
//! add sections with [`run_with`].

pub mod rows;
pub mod shadows;
pub mod unlearn;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

use rows::{RowResult, RowSpec, default_rows};
use shadows::{ShadowSpec, default_shadow_rows};
use unlearn::{UnlearnSpec, default_unlearn_rows};

/// A row spec of either kind, as passed to `--run-row` and the reference script.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Spec {
    /// Shadow models trained and run (has `"kind": "shadows"`).
    Shadows(ShadowSpec),
    /// A whole unlearning run (has `"kind": "unlearn"`).
    Unlearn(UnlearnSpec),
    /// Training throughput.
    Throughput(RowSpec),
}

impl Spec {
    /// How much faster `lethe` was than `pytorch` on this row (> 1: faster).
    fn ratio(&self, lethe: &RowResult, pytorch: &RowResult) -> f64 {
        match self {
            Spec::Throughput(_) => lethe.images_per_sec / pytorch.images_per_sec.max(1e-12),
            Spec::Unlearn(_) | Spec::Shadows(_) => pytorch.seconds / lethe.seconds.max(1e-12),
        }
    }

    /// Row name.
    pub fn name(&self) -> &str {
        match self {
            Spec::Unlearn(s) => &s.name,
            Spec::Throughput(s) => &s.name,
            Spec::Shadows(s) => &s.name,
        }
    }
}

/// A section a binary adds to the benchmark (name for `--row` filters, and the
/// measurement, returning Markdown).
pub struct ExtraSection {
    /// Name matched by `--row`.
    pub name: String,
    /// Runs the measurement and returns its Markdown section.
    pub run: Box<dyn Fn(i32) -> anyhow::Result<String>>,
}

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
    /// Runs of each side per row (alternating); the table shows the median run of
    /// each side. One run of a short row can be off by 20 % on a 2-core machine.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub repeat: u32,
    /// Internal: run one row spec (JSON) in this process and print its result.
    #[arg(long, hide = true)]
    pub run_row: Option<String>,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The row.
    pub spec: Spec,
    /// Lethe's median run.
    pub lethe: RowResult,
    /// PyTorch's median run.
    pub pytorch: RowResult,
    /// Lowest and highest ratio of the i-th Lethe run to the i-th PyTorch run
    /// (equal with one run).
    pub ratio_range: (f64, f64),
    /// Runs of each side.
    pub runs: usize,
}

impl Comparison {
    /// The row from every run of each side (the same number on both, at least one):
    /// each side's median run by the row's measure, and the range of the paired
    /// ratios.
    pub fn from_runs(spec: Spec, lethe: Vec<RowResult>, pytorch: Vec<RowResult>) -> Self {
        let runs = lethe.len().min(pytorch.len()).max(1);
        let (lo, hi) = lethe
            .iter()
            .zip(&pytorch)
            .map(|(l, p)| spec.ratio(l, p))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r), hi.max(r))
            });
        let measure = |r: &RowResult| match spec {
            Spec::Throughput(_) => r.images_per_sec,
            Spec::Unlearn(_) | Spec::Shadows(_) => r.seconds,
        };
        let median = |mut v: Vec<RowResult>| {
            v.sort_by(|a, b| measure(a).total_cmp(&measure(b)));
            // An even count takes the lower middle: a real run, not an average.
            v.get(v.len().saturating_sub(1) / 2).cloned()
        };
        let empty = RowResult {
            images_per_sec: 0.0,
            seconds: 0.0,
            peak_rss_mib: 0.0,
            forget_loss_before: None,
            forget_loss_after: None,
            page_faults_per_step: None,
        };
        Comparison {
            lethe: median(lethe).unwrap_or_else(|| empty.clone()),
            pytorch: median(pytorch).unwrap_or(empty),
            ratio_range: if lo <= hi { (lo, hi) } else { (0.0, 0.0) },
            runs,
            spec,
        }
    }

    /// The ratio cell: the medians' ratio, with the per-run range when there
    /// was more than one run.
    fn ratio_cell(&self) -> String {
        if self.runs > 1 {
            format!(
                "{:.2}× ({:.2}–{:.2})",
                self.ratio(),
                self.ratio_range.0,
                self.ratio_range.1
            )
        } else {
            format!("{:.2}×", self.ratio())
        }
    }

    /// How much faster Lethe is (> 1: faster): throughput over PyTorch's, or
    /// PyTorch's wall time over Lethe's for an unlearning run.
    pub fn ratio(&self) -> f64 {
        self.spec.ratio(&self.lethe, &self.pytorch)
    }
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the command.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    run_with(args, Vec::new())
}

/// Runs the command with the sections only this binary can measure.
pub fn run_with(args: BenchArgs, extras: Vec<ExtraSection>) -> anyhow::Result<()> {
    if let Some(spec) = &args.run_row {
        let spec: Spec = serde_json::from_str(spec).context("--run-row: bad row spec")?;
        let result = match &spec {
            Spec::Throughput(s) => rows::run_row(s).map_err(anyhow::Error::from),
            Spec::Unlearn(s) => unlearn::run_unlearn_row(s),
            Spec::Shadows(s) => shadows::run_shadow_row(s),
        }
        .with_context(|| format!("row `{}`", spec.name()))?;
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
    let wanted = |name: &str| args.rows.is_empty() || args.rows.iter().any(|f| name.contains(f));
    let demo = source_root().join("resources/demo");
    let specs: Vec<Spec> = default_rows(threads)
        .into_iter()
        .map(Spec::Throughput)
        .chain(
            default_unlearn_rows(&demo, threads)
                .into_iter()
                .map(Spec::Unlearn),
        )
        .chain(
            default_shadow_rows(&demo, threads)
                .into_iter()
                .map(Spec::Shadows),
        )
        .filter(|s| wanted(s.name()))
        .collect();
    let extras: Vec<ExtraSection> = extras.into_iter().filter(|e| wanted(&e.name)).collect();
    if specs.is_empty() && extras.is_empty() {
        bail!("no row matches {:?}", args.rows);
    }
    let exe = std::env::current_exe()?;
    let mut table = Vec::new();
    for spec in specs {
        let json = serde_json::to_string(&spec)?;
        let name = spec.name().to_string();
        eprintln!("bench: {name} ...");
        let (mut lethe, mut pytorch) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            lethe.push(
                measure(Command::new(&exe).args(["bench", "--run-row", &json]))
                    .with_context(|| format!("Lethe side of `{name}`"))?,
            );
            pytorch.push(
                measure(Command::new(&python).arg(&reference).arg(&json))
                    .with_context(|| format!("PyTorch side of `{name}`"))?,
            );
        }
        let row = Comparison::from_runs(spec, lethe, pytorch);
        eprintln!("bench: {name}: {}", row.ratio_cell());
        table.push(row);
    }
    let mut text = render(&table);
    for extra in &extras {
        eprintln!("bench: {} ...", extra.name);
        let section = (extra.run)(threads).with_context(|| format!("row `{}`", extra.name))?;
        text.push('\n');
        text.push_str(&section);
    }
    print!("{text}");
    if let Some(path) = &args.record {
        record(path, &text, threads, args.repeat)?;
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

/// The comparison as Markdown tables: throughput rows, then unlearning runs.
pub fn render(rows: &[Comparison]) -> String {
    let mut out = String::new();
    let throughput: Vec<_> = rows
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Throughput(s) => Some((s, r)),
            Spec::Unlearn(_) | Spec::Shadows(_) => None,
        })
        .collect();
    if !throughput.is_empty() {
        out.push_str(
            "| row | batch × steps | Lethe img/s | PyTorch img/s | ratio | Lethe peak MiB | PyTorch peak MiB | Lethe page faults/step | PyTorch page faults/step |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let faults = |r: &RowResult| {
            r.page_faults_per_step
                .map_or_else(|| "n/a".into(), |f| format!("{f:.0}"))
        };
        for (s, r) in throughput {
            out.push_str(&format!(
                "| {} | {} × {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {} | {} |\n",
                s.name,
                s.batch,
                s.steps,
                r.lethe.images_per_sec,
                r.pytorch.images_per_sec,
                r.ratio_cell(),
                r.lethe.peak_rss_mib,
                r.pytorch.peak_rss_mib,
                faults(&r.lethe),
                faults(&r.pytorch)
            ));
        }
    }
    let runs: Vec<_> = rows
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Unlearn(s) => Some((s, r)),
            Spec::Throughput(_) | Spec::Shadows(_) => None,
        })
        .collect();
    if !runs.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(
            "Whole unlearning runs, process start to exit (ratio: PyTorch's time over Lethe's):\n\n\
             | run | epochs | Lethe s | PyTorch s | ratio | forget loss before → after (Lethe; PyTorch) | Lethe peak MiB | PyTorch peak MiB |\n\
             | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n",
        );
        let loss = |r: &RowResult| match (r.forget_loss_before, r.forget_loss_after) {
            (Some(a), Some(b)) => format!("{a:.4} → {b:.4}"),
            _ => "n/a".into(),
        };
        for (s, r) in runs {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {} | {}; {} | {:.0} | {:.0} |\n",
                s.name,
                s.epochs,
                r.lethe.seconds,
                r.pytorch.seconds,
                r.ratio_cell(),
                loss(&r.lethe),
                loss(&r.pytorch),
                r.lethe.peak_rss_mib,
                r.pytorch.peak_rss_mib
            ));
        }
    }
    let sets: Vec<_> = rows
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Shadows(s) => Some((s, r)),
            _ => None,
        })
        .collect();
    if !sets.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(
            "Shadow models trained and run on every sample, data loaded to last logits (ratio: PyTorch's time over Lethe's):\n\n\
             | row | models × epochs | Lethe s | PyTorch s | ratio | Lethe peak MiB | PyTorch peak MiB |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for (s, r) in sets {
            out.push_str(&format!(
                "| {} | {} × {} | {:.1} | {:.1} | {} | {:.0} | {:.0} |\n",
                s.name,
                s.models,
                s.epochs,
                r.lethe.seconds,
                r.pytorch.seconds,
                r.ratio_cell(),
                r.lethe.peak_rss_mib,
                r.pytorch.peak_rss_mib
            ));
        }
    }
    out
}

fn record(path: &Path, table: &str, threads: i32, repeat: u32) -> anyhow::Result<()> {
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
    // Other work on the machine skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.push_str(&format!(
        "\n## {date}: CPU, {threads} threads\n\nMachine: {cpu}, {cores} cores, load average {load} at the end. Lethe {} (tch 0.26) and PyTorch, both on libtorch {torch} from the project's venv. Each side ran {repeat} time(s) per row, alternating; figures are each side's median run, the ratio's range in brackets is over the paired runs.\n\n{table}",
        env!("CARGO_PKG_VERSION"),
    ));
    crate::jobs::atomic::write_atomic(path, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))
}
