//! Reading a deletion's stored results: the run record, its evaluations and its
//! attacks, as `lethe unlearn`, `lethe evaluate` and `lethe attack` wrote them.
//!
//! A deletion is a run folder. Its evaluations and attacks are the direct
//! subfolders holding `evaluation.json` or `attack.json` (what
//! `lethe evaluate --out RUN/evaluation` and `lethe attack --out RUN/attack-NAME`
//! make, and where the GUI puts its `evaluation-TIME` folders), plus any folders
//! given explicitly. Each result is matched to a model by the SHA-256 it
//! recorded: the unlearned model, the original, or the retrained reference.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ReportError;
use crate::audit::path_sha256;
use crate::jobs::run_record::{
    ForgetRequest, HashedPath, PluginFile, RUN_FILE, RunRecord, Software,
};

/// Accuracy and loss on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitView {
    /// Samples.
    pub samples: usize,
    /// Accuracy.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// The linear probe that read an encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Epochs (evaluations written before probes had recipes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// The recipe's preset and epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<ProbeRecipeView>,
}

/// The part of a probe's recipe that names it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecipeView {
    /// `reference` or `fast`.
    pub preset: String,
    /// Epochs.
    pub epochs: usize,
}

/// RA / TA / UA of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtilityView {
    /// `classifier` or `linear probe`.
    pub reader: String,
    /// The probe, for encoders.
    #[serde(default)]
    pub probe: Option<ProbeView>,
    /// Retain split (RA).
    pub retain: SplitView,
    /// Test split (TA).
    pub test: SplitView,
    /// Forget set (UA).
    pub forget: SplitView,
}

/// Mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatView {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
}

/// The alignment audit's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignmentView {
    /// Forget samples behind FS.
    pub samples: usize,
    /// View pairs per sample.
    pub pairs: usize,
    /// Forgetting score.
    pub forgetting_score: StatView,
    /// Negative alignment (off-diagonal AGM).
    pub negative_alignment: StatView,
    /// Samples in the full matrices.
    pub matrix_size: usize,
}

/// `evaluation.json`, the fields a report uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationView {
    /// The folder it was read from.
    #[serde(skip_deserializing)]
    pub folder: PathBuf,
    /// The evaluated model.
    pub checkpoint: PathBuf,
    /// Its SHA-256.
    pub checkpoint_sha256: Option<String>,
    /// The original, when given.
    #[serde(default)]
    pub original: Option<PathBuf>,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Utility of the evaluated model.
    pub utility: UtilityView,
    /// Utility of the original.
    #[serde(default)]
    pub original_utility: Option<UtilityView>,
    /// The alignment audit.
    #[serde(default)]
    pub alignment: Option<AlignmentView>,
    /// Where its matrices are.
    #[serde(default)]
    pub alignment_file: Option<PathBuf>,
}

impl EvaluationView {
    /// The alignment file, found in the evaluation folder when the recorded path
    /// no longer resolves (folders get moved).
    pub fn alignment_path(&self) -> Option<PathBuf> {
        let p = self.alignment_file.as_ref()?;
        if p.is_file() {
            return Some(p.clone());
        }
        let local = self.folder.join(p.file_name()?);
        local.is_file().then_some(local)
    }
}

/// A bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalView {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Coverage.
    pub level: f64,
}

/// TPR at one FPR target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TprView {
    /// Target FPR.
    pub fpr: f64,
    /// TPR there.
    pub tpr: f64,
    /// Interval.
    pub ci: Option<IntervalView>,
    /// Whether the non-member count resolves the target.
    pub resolved: bool,
}

/// ROC points.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RocView {
    /// FPRs, ascending.
    pub fpr: Vec<f64>,
    /// TPRs.
    pub tpr: Vec<f64>,
}

/// One members-vs-non-members comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipView {
    /// Members.
    pub members: usize,
    /// Non-members.
    pub non_members: usize,
    /// AUC.
    pub auc: f64,
    /// Its interval.
    pub auc_ci: Option<IntervalView>,
    /// Low-FPR points.
    pub tpr_at_fpr: Vec<TprView>,
    /// Share of members called non-members.
    #[serde(default)]
    pub efficacy: Option<f64>,
    /// The curve (left out of the report's JSON: the attack's own file has it).
    #[serde(default, skip_serializing)]
    pub roc: RocView,
}

impl MembershipView {
    /// The interval of the AUC as a pair.
    pub fn auc_pair(&self) -> Option<(f64, f64)> {
        self.auc_ci.map(|c| (c.low, c.high))
    }

    /// TPR at the target closest to `fpr`.
    pub fn tpr_at(&self, fpr: f64) -> Option<&TprView> {
        self.tpr_at_fpr
            .iter()
            .find(|t| (t.fpr - fpr).abs() <= fpr * 1e-6)
    }
}

/// The attack's metric set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackMetricsView {
    /// Forget set vs held-out non-members.
    pub forget: MembershipView,
    /// Held-out members vs the same non-members.
    #[serde(default)]
    pub reference: Option<MembershipView>,
}

/// A count with its exact interval (`per_sample.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShareView {
    /// Samples flagged.
    pub k: u64,
    /// Samples.
    pub n: u64,
    /// `k / n`.
    pub fraction: f64,
    /// Lower end of the exact interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl ShareView {
    /// `k/n = 14.0 % [7.9 %, 22.4 %]`.
    pub fn text(&self) -> String {
        format!(
            "{}/{} = {:.1} % [{:.1} %, {:.1} %]",
            self.k,
            self.n,
            self.fraction * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

/// The per-sample section of one attack (`per_sample.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSampleSharesView {
    /// Significance level.
    pub alpha: f64,
    /// Forgotten samples with p < alpha.
    pub forget: ShareView,
    /// Never-seen samples with p < alpha.
    #[serde(default)]
    pub nonmember: Option<ShareView>,
    /// Retained samples with p < alpha.
    #[serde(default)]
    pub member: Option<ShareView>,
}

/// One attack of a per-sample verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSampleSideView {
    /// Forget set vs never-seen samples.
    pub forget: MembershipView,
    /// The per-sample shares.
    pub per_sample: Option<PerSampleSharesView>,
}

/// A sample line of a per-sample verification.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleLineView {
    /// Dataset row.
    pub row: i64,
    /// p-value on the original model.
    pub p_before: f64,
    /// p-value on the unlearned model.
    pub p_after: f64,
}

/// The onion effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnionView {
    /// Retained samples compared.
    pub samples: u64,
    /// Significant only after.
    pub newly_significant: u64,
    /// Significant only before.
    pub no_longer_significant: u64,
    /// The largest increases of exposure.
    pub most_exposed: Vec<SampleLineView>,
}

/// The settings a verification ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSampleSettingsView {
    /// Shadow models.
    pub shadow_models: u64,
    /// Significance level.
    pub alpha: f64,
}

/// `per_sample.json` of `lethe verify-samples`, the fields a report uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSampleView {
    /// The folder it was read from.
    #[serde(skip_deserializing)]
    pub folder: PathBuf,
    /// SHA-256 of the file (the certificate names it).
    #[serde(skip_deserializing)]
    pub file_sha256: Option<String>,
    /// The unlearned model's hash when verified.
    #[serde(default)]
    pub unlearned_sha256: Option<String>,
    /// The method whose copies the shadows were.
    pub method: String,
    /// Settings.
    pub settings: PerSampleSettingsView,
    /// U-LiRA on the unlearned model.
    pub after: PerSampleSideView,
    /// LiRA on the original.
    pub before: PerSampleSideView,
    /// Forgotten samples told apart best after the deletion.
    pub most_distinguishable: Vec<SampleLineView>,
    /// Retained samples.
    pub onion: OnionView,
    /// Wall time.
    #[serde(default)]
    pub seconds: f64,
}

/// Reads `per_sample.json` from `dir`.
pub fn read_per_sample(dir: &Path) -> Result<PerSampleView, ReportError> {
    let path = dir.join("per_sample.json");
    let mut v: PerSampleView = read_json(&path)?;
    v.folder = dir.to_path_buf();
    v.file_sha256 = path_sha256(&path);
    Ok(v)
}

/// A sanity warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagView {
    /// Code.
    pub code: String,
    /// `Info` or `Warning`.
    pub severity: String,
    /// Message.
    pub message: String,
}

/// What attack ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackInfoView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Library.
    pub library: PathBuf,
    /// Parameters as given.
    #[serde(default)]
    pub params: Value,
}

/// Bootstrap settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapView {
    /// Replicates.
    pub resamples: usize,
    /// Coverage.
    pub level: f64,
    /// Seed.
    pub seed: u64,
}

/// `attack.json`, the fields a report uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackView {
    /// The folder it was read from.
    #[serde(skip_deserializing)]
    pub folder: PathBuf,
    /// The attack.
    pub attack: AttackInfoView,
    /// The attacked model.
    pub checkpoint: PathBuf,
    /// Its SHA-256.
    pub checkpoint_sha256: Option<String>,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Bootstrap.
    pub bootstrap: BootstrapView,
    /// Metrics.
    pub metrics: AttackMetricsView,
    /// Warnings.
    #[serde(default)]
    pub flags: Vec<FlagView>,
    /// Wall time.
    #[serde(default)]
    pub seconds: f64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Input {
        path: path.to_path_buf(),
        message: format!("not a Lethe result file: {e}"),
    })
}

/// Reads `evaluation.json` from `folder` (or the file itself).
pub fn read_evaluation(folder: &Path) -> Result<EvaluationView, ReportError> {
    let (dir, file) = split(folder, "evaluation.json");
    let mut v: EvaluationView = read_json(&file)?;
    v.folder = dir;
    Ok(v)
}

/// Reads `attack.json` from `folder` (or the file itself).
pub fn read_attack(folder: &Path) -> Result<AttackView, ReportError> {
    let (dir, file) = split(folder, "attack.json");
    let mut v: AttackView = read_json(&file)?;
    v.folder = dir;
    Ok(v)
}

fn split(p: &Path, name: &str) -> (PathBuf, PathBuf) {
    if p.is_dir() {
        (p.to_path_buf(), p.join(name))
    } else {
        (
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
            p.to_path_buf(),
        )
    }
}

/// The direct subfolders of `dir` holding `name`, sorted by name.
pub fn subfolders_with(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.join(name).is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The run record of a run folder: `run.json` from `lethe unlearn`, or for a GUI
/// run folder (`job.json` + `output/`) one rebuilt from the job's settings, its
/// hashes taken now.
pub fn read_run(run_dir: &Path) -> Result<(RunRecord, PathBuf), ReportError> {
    if run_dir.join(RUN_FILE).is_file() {
        let r = RunRecord::load(run_dir).map_err(|e| ReportError::Input {
            path: run_dir.join(RUN_FILE),
            message: e.to_string(),
        })?;
        return Ok((r, run_dir.to_path_buf()));
    }
    let job = run_dir.join("job.json");
    if job.is_file() {
        let v: Value = read_json(&job)?;
        let spec = &v["spec"];
        let s = |k: &str| spec[k].as_str().unwrap_or_default().to_string();
        if spec["kind"].as_str() != Some("method") {
            return Err(ReportError::Input {
                path: job,
                message: "not an unlearning run (a deletion report needs a method run)".into(),
            });
        }
        let out = run_dir.join("output");
        let model = out.join("model.safetensors");
        let version = crate::checkpoint::read(&model)
            .ok()
            .and_then(|c| c.meta)
            .and_then(|m| m.provenance.notes.get("plugin_version").cloned())
            .unwrap_or_else(|| "unknown".into());
        let secs = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let record = RunRecord {
            format: 1,
            user: "not recorded (GUI run)".into(),
            host: "not recorded (GUI run)".into(),
            started_unix: secs("started") as i64,
            finished_unix: secs("finished") as i64,
            seconds: (secs("finished") - secs("started")).max(0.0),
            method: PluginFile {
                id: s("plugin_id"),
                name: s("plugin_name"),
                version,
                library: HashedPath::of(Path::new(&s("library"))),
            },
            params_given: spec["params"].clone(),
            params: spec["params"].clone(),
            seed: spec["seed"].as_u64().unwrap_or(0),
            device: s("device"),
            original: HashedPath::of(Path::new(&s("checkpoint"))),
            data: HashedPath::of(Path::new(&s("data"))),
            forget: ForgetRequest::read(Path::new(&s("forget"))),
            unlearned: model.is_file().then(|| HashedPath::of(&model)),
            outputs: crate::audit::FileRef::folder(&out),
            software: Software {
                lethe: "not recorded (GUI run)".into(),
                libtorch: "not recorded".into(),
                tch: "not recorded".into(),
                cuda_devices: 0,
                cudnn: None,
                threads: 0,
                os: "not recorded".into(),
            },
        };
        return Ok((record, run_dir.to_path_buf()));
    }
    Err(ReportError::Input {
        path: run_dir.to_path_buf(),
        message: format!(
            "not a deletion run folder: no {RUN_FILE} (written by `lethe unlearn`) and no job.json (GUI)"
        ),
    })
}

/// Whether the file at `path` still has the recorded hash (`None`: nothing
/// recorded or the file is gone).
pub fn still_matches(h: &HashedPath) -> Option<bool> {
    let recorded = h.sha256.as_ref()?;
    path_sha256(&h.path).map(|now| &now == recorded)
}
