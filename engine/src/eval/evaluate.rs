//! `lethe evaluate`'s work as a library call: the utility of a model on the
//! job's splits (and, for encoders, the alignment audit against the
//! original), written as `evaluation.json` into a new folder. Studies call it
//! for every run; the CLI prints it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::Device;

use super::alignment::{AlignmentConfig, AlignmentReport, alignment_audit};
use super::job_data::JobData;
use super::utility::{Utility, evaluate_utility};
use crate::checkpoint::{self, CheckpointMeta, LoadOptions};
use crate::jobs::atomic::write_atomic;
use crate::jobs::train::{TrainJob, file_sha256};
use crate::models::Model;
use crate::train::augment::AugmentConfig;
use crate::train::probe::{ProbeCache, ProbeRecipe};

/// What to evaluate, and how (the settings of `lethe evaluate` and of a
/// study's `[evaluate]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// The model to evaluate.
    pub checkpoint: PathBuf,
    /// The model before unlearning: its utility beside, and for encoders the
    /// alignment audit.
    pub original: Option<PathBuf>,
    /// The dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// Split seed (when the dataset records none) and the probe's seed.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// The linear probe that reads encoders, by preset name (`reference`, the
    /// Alignment Calibration code's; `fast`, for tests).
    #[serde(default = "default_probe")]
    pub probe: String,
    /// That probe's epochs instead of the preset's.
    #[serde(default)]
    pub probe_epochs: Option<usize>,
    /// Run the alignment audit even when the models are not both encoders.
    pub alignment: bool,
    /// Augmented views per sample in the audit.
    pub pairs: usize,
    /// Samples in the stored alignment matrices.
    pub matrix_samples: usize,
    /// Most forget samples the audit reads.
    pub alignment_max: usize,
}

/// The probe preset when none is named: the reference's.
pub fn default_probe() -> String {
    "reference".into()
}

/// `evaluation.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    /// The evaluated model.
    pub checkpoint: PathBuf,
    /// Its SHA-256.
    pub checkpoint_sha256: Option<String>,
    /// The model before unlearning, if given.
    pub original: Option<PathBuf>,
    /// Its SHA-256.
    pub original_sha256: Option<String>,
    /// The dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget_list: PathBuf,
    /// Class names.
    pub classes: Vec<String>,
    /// Forget samples.
    pub forget_count: usize,
    /// Retained training samples.
    pub retain_count: usize,
    /// Test samples.
    pub test_count: usize,
    /// Validation samples.
    pub validation_count: usize,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Utility of the evaluated model.
    pub utility: Utility,
    /// Utility of the original model.
    pub original_utility: Option<Utility>,
    /// The alignment audit (original → evaluated).
    pub alignment: Option<AlignmentReport>,
    /// Where its matrices went.
    pub alignment_file: Option<PathBuf>,
}

/// The augmentation an encoder was trained with, from its checkpoint.
fn training_augment(meta: Option<&CheckpointMeta>) -> Option<AugmentConfig> {
    meta.and_then(|m| m.provenance.notes.get("job"))
        .and_then(|j| serde_json::from_str::<TrainJob>(j).ok())
        .and_then(|job| job.train.augment)
}

fn device_of(name: &str) -> anyhow::Result<Device> {
    let resolved = crate::runtime::resolve_device(name)?;
    Ok(match resolved.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .with_context(|| format!("device {other}: expected cuda:N"))?,
    })
}

/// The work of `lethe evaluate` without printing: evaluates `req.checkpoint`
/// (and, with `original_utility`, the original beside it) and writes
/// `evaluation.json` (and `alignment.safetensors`) into the new folder `out`.
/// Studies call it with `original_utility` off (the original, when wanted, is a
/// row of their table).
pub fn evaluate_into(
    req: &EvaluateRequest,
    out: &Path,
    original_utility: bool,
) -> anyhow::Result<EvaluationReport> {
    let device = device_of(&req.device)?;
    let data = JobData::load(&req.data, &req.forget, req.seed)?;
    let load = |p: &Path| {
        checkpoint::load_model(p, device, &LoadOptions::default())
            .with_context(|| format!("cannot load {}", p.display()))
    };
    let model = load(&req.checkpoint)?;
    let original = req.original.as_deref().map(load).transpose()?;
    let probe = ProbeRecipe::preset(&req.probe)?.with(req.probe_epochs, req.seed);
    // Shared with attacks on the same model (`lethe.probe/1`) and with the
    // next evaluation of it.
    let cache = ProbeCache::default();
    eprintln!("evaluate: utility of {}", req.checkpoint.display());
    let utility = evaluate_utility(&model, &data, device, &probe, Some(&cache))?;
    let original_utility = match original.as_ref().filter(|_| original_utility) {
        Some(o) => {
            eprintln!("evaluate: utility of the original");
            Some(evaluate_utility(o, &data, device, &probe, Some(&cache))?)
        }
        None => None,
    };
    let both_encoders = matches!(model.model, Model::Encoder(_))
        && original
            .as_ref()
            .is_some_and(|o| matches!(o.model, Model::Encoder(_)));
    let mut alignment = None;
    let mut alignment_file = None;
    if let Some(o) = original.as_ref().filter(|_| both_encoders || req.alignment) {
        eprintln!("evaluate: alignment audit (forgetting score, AM, AGM)");
        let cfg = AlignmentConfig {
            pairs: req.pairs,
            matrix_samples: req.matrix_samples,
            max_samples: req.alignment_max,
            seed: req.seed,
            augment: training_augment(o.meta.as_ref()).unwrap_or_else(AugmentConfig::contrastive),
            ..AlignmentConfig::default()
        };
        let forget = data.dataset.subset(data.forget.indices())?;
        let (report, t) = alignment_audit(
            &o.model,
            &model.model,
            forget.images(),
            forget.indices(),
            &cfg,
            device,
        )?;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join("alignment.safetensors");
        let meta = CheckpointMeta::new(
            None,
            Some(format!(
                "lethe evaluate: alignment of {} vs {}",
                req.checkpoint.display(),
                req.original.as_deref().unwrap_or(Path::new("")).display()
            )),
        );
        checkpoint::save_tensors(
            &path,
            &[
                ("am_before".into(), t.am_before),
                ("am_after".into(), t.am_after),
                ("agm".into(), t.agm),
                ("fs_per_sample".into(), t.fs_per_sample),
                ("heatmap_indices".into(), t.heatmap_indices),
            ],
            &meta,
            false,
        )?;
        alignment = Some(report);
        alignment_file = Some(path);
    }
    let report = EvaluationReport {
        checkpoint: req.checkpoint.clone(),
        checkpoint_sha256: file_sha256(&req.checkpoint),
        original: req.original.clone(),
        original_sha256: req.original.as_deref().and_then(file_sha256),
        data: req.data.clone(),
        forget_list: req.forget.clone(),
        classes: data.dataset.classes().to_vec(),
        forget_count: data.forget.len(),
        retain_count: data.retain.len(),
        test_count: data.split.test.len(),
        validation_count: data.split.val.len(),
        seed: req.seed,
        device: crate::runtime::device_name(device),
        utility,
        original_utility,
        alignment,
        alignment_file,
    };
    let json = serde_json::to_vec_pretty(&report)?;
    write_atomic(&out.join("evaluation.json"), &json, false)?;
    Ok(report)
}
