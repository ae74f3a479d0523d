//! The unlearning-run rows of `lethe bench`: one whole `lethe unlearn` on the
//! demo against the same run written in plain PyTorch
//! (`bench/pytorch_reference.py`, spec `"kind": "unlearn"`). Both sides are timed
//! from process start to exit — loading libtorch, the checkpoint and the data,
//! the before/after evaluation and saving the model included — because that is
//! what a user waits for.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::rows::RowResult;

/// One unlearning run to time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlearnSpec {
    /// Always `"unlearn"`: tells the two row kinds apart in `--run-row`.
    pub kind: String,
    /// Row name in the table.
    pub name: String,
    /// The method, as the reference script names it (`finetune` or
    /// `alignment-calibration`).
    pub method: String,
    /// Checkpoint to unlearn.
    pub checkpoint: PathBuf,
    /// Dataset.
    pub data: PathBuf,
    /// Forget list.
    pub forget: PathBuf,
    /// Epochs (everything else: the plugin's defaults, which the reference
    /// script mirrors).
    pub epochs: i64,
    /// Intra-op threads.
    pub threads: i32,
    /// Seed.
    pub seed: i64,
}

impl UnlearnSpec {
    /// The plugin id of `method`.
    pub fn plugin_id(&self) -> Option<&'static str> {
        match self.method.as_str() {
            "finetune" => Some("org.lethe.baseline.finetune"),
            "alignment-calibration" => Some("org.lethe.method.alignment-calibration"),
            _ => None,
        }
    }
}

/// The unlearning rows: fine-tuning the demo classifier and Alignment
/// Calibration of the demo SimCLR encoder, at the plugins' default settings
/// except for the epoch count (the papers' 10 epochs would take most of the
/// ten-minute budget on two cores; per-epoch cost is what is compared).
pub fn default_unlearn_rows(demo: &Path, threads: i32) -> Vec<UnlearnSpec> {
    let row = |name: &str, method: &str, checkpoint: &str, epochs| UnlearnSpec {
        kind: "unlearn".into(),
        name: name.into(),
        method: method.into(),
        checkpoint: demo.join(checkpoint),
        data: demo.join("mnist10k.npz"),
        forget: demo.join("forget.txt"),
        epochs,
        threads,
        seed: 0,
    };
    vec![
        row(
            "demo unlearn: fine-tune classifier",
            "finetune",
            "classifier.safetensors",
            2,
        ),
        row(
            "demo unlearn: alignment calibration",
            "alignment-calibration",
            "encoder.safetensors",
            2,
        ),
    ]
}

/// Runs `lethe unlearn` for `spec` as a child of this process and measures it.
/// Peak memory is the largest child's (the worker process, which holds the
/// model); this process runs nothing else, so no earlier row can count.
pub fn run_unlearn_row(spec: &UnlearnSpec) -> anyhow::Result<RowResult> {
    let id = spec
        .plugin_id()
        .ok_or_else(|| anyhow::anyhow!("unknown method `{}`", spec.method))?;
    let scratch = std::env::temp_dir().join(format!("lethe-bench-{}", std::process::id()));
    let out = scratch.join("run");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let output = Command::new(exe)
        .env("OMP_NUM_THREADS", spec.threads.to_string())
        .args(["unlearn", "--method", id, "--device", "cpu", "--checkpoint"])
        .arg(&spec.checkpoint)
        .arg("--data")
        .arg(&spec.data)
        .arg("--forget")
        .arg(&spec.forget)
        .args(["--seed", &spec.seed.to_string()])
        .args(["--set", &format!("epochs={}", spec.epochs)])
        .arg("--out")
        .arg(&out)
        // A timed run is no deletion: its audit record stays in the scratch
        // folder instead of the log of whatever folder the bench ran from.
        .arg("--workspace")
        .arg(&scratch)
        .output()?;
    let seconds = start.elapsed().as_secs_f64();
    let summary: Value = std::fs::read(out.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    if !output.status.success() {
        anyhow::bail!(
            "lethe unlearn failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(RowResult {
        // Not a throughput row: the comparison is on `seconds`.
        images_per_sec: 0.0,
        seconds,
        peak_rss_mib: children_peak_rss_mib(),
        forget_loss_before: summary.get("forget_before_loss").and_then(Value::as_f64),
        forget_loss_after: summary.get("forget_after_loss").and_then(Value::as_f64),
        page_faults_per_step: None,
    })
}

/// Peak resident set size of the largest waited-for child, in MiB.
fn children_peak_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage; RUSAGE_CHILDREN is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    usage.ru_maxrss as f64 / 1024.0
}
