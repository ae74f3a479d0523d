//! What a study folder holds, and reading it back:
//!
//! ```text
//! <study>/
//!   study.json                 the study (spec with absolute paths, input hashes, device)
//!   runs/<row>-seed<S>/        one folder per row and seed (row: retrain, original, a method)
//!     model/                   the unlearned model and the method's results (retrain: from the cache)
//!     evaluation/              evaluation.json (+ alignment.safetensors for encoders)
//!     attack-<name>/           attack.json and the attack's score files
//!     metrics.safetensors      per-class accuracy [retain, test, forget, validation] × classes,
//!                              and per attack its forget-set scores and ROC curve
//!     result.json              this run's [`RunResult`]; written last, so a folder without it
//!                              is an unfinished run
//!   results.json, table.txt, table.csv   the [`StudyResults`] and its table, once complete
//! ```
//!
//! [`StudyResults::load`] reads `study.json` and every finished run, whatever
//! the state of the study; [`StudyResults::table`] builds the comparison table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StudyError;
use super::spec::{MetricKey, StudySpec};
use super::table::{Column, ComparisonTable, RowInput, build_table};

/// Version of the stored files; readers refuse other versions.
pub const FORMAT: u32 = 1;
/// The study's own file.
pub const STUDY_FILE: &str = "study.json";
/// A finished run's record, inside its run folder.
pub const RESULT_FILE: &str = "result.json";
/// The folder holding the run folders.
pub const RUNS_DIR: &str = "runs";
/// The complete results (written once every run has finished).
pub const RESULTS_FILE: &str = "results.json";

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Exact retraining: the reference.
    Retrain,
    /// The model before unlearning.
    Original,
    /// A compared method.
    Method,
}

impl RowKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RowKind::Retrain => "retrain",
            RowKind::Original => "original",
            RowKind::Method => "method",
        }
    }
}

/// Content hashes of the study's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputHashes {
    /// SHA-256 of the checkpoint file.
    pub checkpoint_sha256: String,
    /// SHA-256 of the data file (a folder: of its file manifest).
    pub data_sha256: String,
    /// SHA-256 of the forget set's sorted stable indices.
    pub forget_sha256: String,
    /// Samples in the forget set.
    pub forget_count: usize,
}

/// `study.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The study, paths absolute.
    pub spec: StudySpec,
    /// Its inputs' hashes.
    pub inputs: InputHashes,
    /// The device the runs use (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    /// Lethe version that started the study.
    pub lethe_version: String,
    /// When the study folder was created.
    pub created_unix: u64,
}

/// A plugin as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRun {
    /// Descriptor id.
    pub id: String,
    /// Descriptor name.
    pub name: String,
    /// Descriptor version.
    pub version: String,
    /// The library file.
    pub library: PathBuf,
    /// The complete parameters (defaults filled, seed set).
    pub params: Value,
}

/// How a retrain result was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheUse {
    /// The cache key (SHA-256 of the settings).
    pub key: String,
    /// The cache entry's folder.
    pub entry: PathBuf,
    /// Whether an earlier result was reused (nothing trained).
    pub reused: bool,
}

/// One attack on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRun {
    /// The study's name for it.
    pub name: String,
    /// The plugin.
    pub plugin: PluginRun,
    /// Its `attack.json`, relative to the run folder.
    pub report: PathBuf,
    /// Wall time of the attack job.
    pub seconds: f64,
}

/// `result.json`: one row of the study at one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`FORMAT`].
    pub format: u32,
    /// Row label (`Retrain`, `Original` or the method's name).
    pub row: String,
    /// What the row is.
    pub kind: RowKind,
    /// The seed.
    pub seed: u64,
    /// The unlearning plugin (none for the original).
    pub method: Option<PluginRun>,
    /// The evaluated model, relative to the run folder (absolute for the original).
    pub model: PathBuf,
    /// SHA-256 of the model file.
    pub model_sha256: String,
    /// SHA-256 of its tensors alone (equal for equal weights saved at different times).
    pub weights_sha256: String,
    /// Run time (RTE) in seconds: the method's worker job; for Retrain the
    /// training behind the result, also when it came from the cache.
    pub seconds: f64,
    /// For Retrain: the cache entry used.
    pub retrain_cache: Option<CacheUse>,
    /// Every metric of the run, unscaled (fractions), by key (`ra`, `mia.auc`,
    /// `mia.tpr@1%`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// `evaluation.json`, relative to the run folder.
    pub evaluation: PathBuf,
    /// The attacks.
    pub attacks: Vec<AttackRun>,
    /// When the run finished.
    pub finished_unix: u64,
}

/// A study and its finished runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyResults {
    /// `study.json`.
    pub manifest: StudyManifest,
    /// Finished runs, by row (table order), then seed.
    pub runs: Vec<RunResult>,
}

/// The rows of a study, in table order: Retrain, Original (if asked), methods.
pub fn rows(spec: &StudySpec) -> Vec<(String, RowKind)> {
    let mut rows = vec![("Retrain".to_string(), RowKind::Retrain)];
    if spec.original {
        rows.push(("Original".into(), RowKind::Original));
    }
    rows.extend(
        spec.methods
            .iter()
            .map(|m| (m.name.clone(), RowKind::Method)),
    );
    rows
}

/// The folder of a row's run at `seed`, relative to the study folder.
pub fn run_folder(row: &str, seed: u64) -> PathBuf {
    Path::new(RUNS_DIR).join(format!("{}-seed{seed}", row.to_ascii_lowercase()))
}

/// `<attack>.tpr@<p>%` in its canonical spelling (`1`, `0.1`, `0.01`).
pub fn tpr_key(attack: &str, fpr: f64) -> String {
    let pct = format!("{:.6}", fpr * 100.0);
    let pct = pct.trim_end_matches('0').trim_end_matches('.');
    format!("{attack}.tpr@{pct}%")
}

/// The stored key a table column reads (TPR keys canonicalised).
pub fn stored_key(key: &str) -> String {
    match MetricKey::parse(key) {
        Some(MetricKey::Tpr(a, pct)) => tpr_key(&a, pct / 100.0),
        _ => key.to_string(),
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StudyError> {
    let bytes = std::fs::read(path).map_err(|e| StudyError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StudyError::Stored {
        path: path.to_path_buf(),
        message: format!("not a Lethe study file of format {FORMAT}: {e}"),
    })
}

impl StudyManifest {
    /// Reads `study.json` from a study folder.
    pub fn load(dir: &Path) -> Result<StudyManifest, StudyError> {
        let path = dir.join(STUDY_FILE);
        if !path.is_file() {
            return Err(StudyError::Stored {
                path,
                message: "no such file: not a study folder (made by `lethe study FILE`)".into(),
            });
        }
        let m: StudyManifest = read_json(&path)?;
        if m.format != FORMAT {
            return Err(StudyError::Stored {
                path,
                message: format!("format {} (this Lethe reads {FORMAT})", m.format),
            });
        }
        Ok(m)
    }
}

impl RunResult {
    /// Reads a run folder's `result.json`; `None` when the run has not finished.
    pub fn load(run_dir: &Path) -> Result<Option<RunResult>, StudyError> {
        let path = run_dir.join(RESULT_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let r: RunResult = read_json(&path)?;
        if r.format != FORMAT {
            return Err(StudyError::Stored {
                path,
                message: format!("format {} (this Lethe reads {FORMAT})", r.format),
            });
        }
        Ok(Some(r))
    }
}

impl StudyResults {
    /// Reads a study folder: `study.json` and every finished run.
    pub fn load(dir: &Path) -> Result<StudyResults, StudyError> {
        let manifest = StudyManifest::load(dir)?;
        let mut runs = Vec::new();
        for (row, _) in rows(&manifest.spec) {
            for &seed in &manifest.spec.seeds {
                if let Some(r) = RunResult::load(&dir.join(run_folder(&row, seed)))? {
                    runs.push(r);
                }
            }
        }
        Ok(StudyResults { manifest, runs })
    }

    /// `(row, seed)` of every run not finished yet.
    pub fn missing(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (row, _) in rows(&self.manifest.spec) {
            for &seed in &self.manifest.spec.seeds {
                if !self.runs.iter().any(|r| r.row == row && r.seed == seed) {
                    out.push((row.clone(), seed));
                }
            }
        }
        out
    }

    /// The table columns of the study.
    pub fn columns(&self) -> Vec<Column> {
        let spec = &self.manifest.spec;
        let avg = spec.avg_gap_keys();
        spec.metric_keys()
            .iter()
            .filter_map(|k| {
                let key = MetricKey::parse(k)?;
                Some(Column {
                    key: stored_key(k),
                    label: spec.labels.get(k).cloned().unwrap_or_else(|| key.label()),
                    scale: key.scale(),
                    decimals: if key == MetricKey::Fs { 4 } else { 2 },
                    in_avg_gap: avg.contains(k),
                })
            })
            .collect()
    }

    /// The comparison table over the finished runs.
    pub fn table(&self) -> ComparisonTable {
        let spec = &self.manifest.spec;
        let rows: Vec<RowInput> = rows(spec)
            .into_iter()
            .map(|(label, kind)| RowInput {
                runs: self
                    .runs
                    .iter()
                    .filter(|r| r.row == label)
                    .map(|r| (r.seed, derived(&r.metrics), r.seconds))
                    .collect(),
                label,
                kind,
            })
            .collect();
        let missing = self.missing().len();
        let mut title = format!(
            "Study {}: {} method(s) × {} seed(s) on {} ({} forget samples), gaps to Retrain",
            spec.name,
            spec.methods.len(),
            spec.seeds.len(),
            spec.checkpoint
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.manifest.inputs.forget_count,
        );
        if missing > 0 {
            title.push_str(&format!(" [incomplete: {missing} run(s) missing]"));
        }
        let table = build_table(title, self.columns(), rows);
        match &spec.avg_gap_label {
            Some(label) => table.with_avg_gap_label(label),
            None => table,
        }
    }
}

/// A run's stored metrics with those computed from them: `forget_error`
/// (1 − `ua`, the "UA" of the OPTML and DAU tables), also for runs stored
/// before it existed.
fn derived(metrics: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut m = metrics.clone();
    if let Some(ua) = metrics.get("ua") {
        m.entry("forget_error".into()).or_insert(1.0 - ua);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpr_keys_are_canonical() {
        assert_eq!(tpr_key("mia", 0.01), "mia.tpr@1%");
        assert_eq!(tpr_key("mia", 0.001), "mia.tpr@0.1%");
        assert_eq!(tpr_key("mia", 0.0001), "mia.tpr@0.01%");
        assert_eq!(stored_key("mia.tpr@1.0%"), "mia.tpr@1%");
        assert_eq!(stored_key("ra"), "ra");
        assert_eq!(run_folder("FT", 3), Path::new("runs/ft-seed3"));
    }
}
