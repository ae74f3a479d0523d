//! `lethe demo`: the deletion job a new user runs first, on the bundled MNIST demo.
//!
//! It loads the bundled classifier and forget set, unlearns by exact retraining on the
//! retain set (the reference every other method is measured against), and compares the
//! original and unlearned models: utility on retain/forget/test and a loss-threshold
//! membership-inference attack on the forget set. The method and attack plugins
//! replace the fixed choices here as they land.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use super::JobError;
use super::atomic::write_atomic;
use super::train::{TrainJob, file_sha256, split_of};
use crate::checkpoint::{self, CheckpointMeta, LoadOptions};
use crate::data::{self, Dataset, ForgetSet};
use crate::metrics::roc_auc;
use crate::models::Model;
use crate::train::supervised::{accuracy, predict_logits, train_classifier};
use crate::train::{Flow, TrainConfig, TrainEvent};

/// The files of the bundled demo, relative to the resources folder.
pub const DEMO_DATA: &str = "demo/mnist10k.npz";
/// The bundled supervised classifier.
pub const DEMO_CLASSIFIER: &str = "demo/classifier.safetensors";
/// The bundled forget set (sample indices, one per line).
pub const DEMO_FORGET: &str = "demo/forget.txt";

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `resources/` folder.
    pub resources: PathBuf,
    /// A new folder for this run's outputs.
    pub out_dir: PathBuf,
    /// Compute device.
    pub device: Device,
}

/// Utility and leakage of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEval {
    /// Accuracy on the retained training samples.
    pub retain_accuracy: f64,
    /// Accuracy on the forget set.
    pub forget_accuracy: f64,
    /// Accuracy on the held-out test split.
    pub test_accuracy: f64,
    /// Mean cross-entropy on the forget set.
    pub forget_loss: f64,
    /// Mean cross-entropy on the test split.
    pub test_loss: f64,
    /// AUC of the loss-threshold attack, forget set (members) vs test (non-members):
    /// 0.5 means the attack cannot tell the forget set from unseen data.
    pub mia_auc: f64,
}

/// The demo's report, also written as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Dataset file and its SHA-256.
    pub dataset: String,
    /// Dataset hash.
    pub dataset_sha256: Option<String>,
    /// Original checkpoint and its SHA-256.
    pub checkpoint: String,
    /// Checkpoint hash.
    pub checkpoint_sha256: Option<String>,
    /// Where the forget set came from.
    pub forget_set: String,
    /// Samples forgotten.
    pub forget_count: usize,
    /// Samples retained.
    pub retain_count: usize,
    /// Unlearning method.
    pub method: String,
    /// Its settings.
    pub settings: TrainConfig,
    /// Device used.
    pub device: String,
    /// The original model.
    pub original: ModelEval,
    /// The unlearned model.
    pub unlearned: ModelEval,
    /// Wall time of the unlearning step, seconds.
    pub unlearning_seconds: f64,
    /// The unlearned checkpoint written.
    pub unlearned_checkpoint: PathBuf,
}

fn per_sample_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(
        &labels.to_device(logits.device()).to_kind(Kind::Int64),
        None,
        tch::Reduction::None,
        -100,
        0.0,
    )
}

fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )
    .unwrap_or_default()
}

/// Evaluates `model` on the retain, forget and test parts of `dataset`.
pub fn evaluate_deletion(
    model: &dyn ModuleT,
    dataset: &Dataset,
    retain: &[i64],
    forget: &[i64],
    test: &[i64],
    device: Device,
) -> Result<ModelEval, JobError> {
    let part = |idx: &[i64]| -> Result<(Tensor, Tensor), JobError> {
        let s = dataset.subset(idx)?;
        let logits = predict_logits(model, s.images(), 512, device);
        Ok((logits, s.labels().shallow_clone()))
    };
    let (lr, yr) = part(retain)?;
    let (lf, yf) = part(forget)?;
    let (lt, yt) = part(test)?;
    let loss_f = floats(&per_sample_loss(&lf, &yf));
    let loss_t = floats(&per_sample_loss(&lt, &yt));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    // Lower loss = more member-like, so the attack's score is the negated loss.
    let neg = |v: &[f64]| v.iter().map(|l| -l).collect::<Vec<_>>();
    let mia_auc = roc_auc(&neg(&loss_f), &neg(&loss_t))
        .ok_or_else(|| JobError::Invalid("loss is NaN on the forget or test set".into()))?;
    Ok(ModelEval {
        retain_accuracy: accuracy(&lr, &yr),
        forget_accuracy: accuracy(&lf, &yf),
        test_accuracy: accuracy(&lt, &yt),
        forget_loss: mean(&loss_f),
        test_loss: mean(&loss_t),
        mia_auc,
    })
}

/// The recipe the original model was trained with, read from its checkpoint.
fn original_recipe(meta: Option<&CheckpointMeta>, path: &Path) -> Result<TrainConfig, JobError> {
    let job = meta
        .and_then(|m| m.provenance.notes.get("job"))
        .and_then(|j| serde_json::from_str::<TrainJob>(j).ok())
        .ok_or_else(|| {
            JobError::Invalid(format!(
                "{} does not record how it was trained (no `job` in its Lethe metadata); \
                 retraining needs the original recipe",
                path.display()
            ))
        })?;
    Ok(job.train)
}

/// Runs the demo deletion and writes `unlearned.safetensors` and `report.json` into
/// `opts.out_dir`, which must not exist yet.
pub fn run_demo(
    opts: &DemoOptions,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<DemoReport, JobError> {
    if opts.out_dir.exists() {
        return Err(JobError::Invalid(format!(
            "output folder {} already exists; outputs are never overwritten",
            opts.out_dir.display()
        )));
    }
    let data_path = opts.resources.join(DEMO_DATA);
    let ckpt_path = opts.resources.join(DEMO_CLASSIFIER);
    let forget_path = opts.resources.join(DEMO_FORGET);
    let dataset = data::load(&data_path)?;
    let split = split_of(&dataset, 0)?;
    let forget = ForgetSet::from_list_file(&forget_path, dataset.len(), &split.train)?;
    let retain = forget.retain(&split.train);

    let original = checkpoint::load_model(&ckpt_path, opts.device, &LoadOptions::default())?;
    let recipe = original_recipe(original.meta.as_ref(), &ckpt_path)?;
    let before = evaluate_deletion(
        &original.model,
        &dataset,
        &retain,
        forget.indices(),
        &split.test,
        opts.device,
    )?;

    // Exact unlearning: the same recipe, from scratch, on the retain set only.
    let retain_set = dataset.subset(&retain)?;
    tch::manual_seed(recipe.seed as i64);
    let vs = VarStore::new(opts.device);
    let model = Model::new(&vs.root(), &original.arch)?;
    let summary = train_classifier(
        &model,
        &vs,
        retain_set.images(),
        retain_set.labels(),
        &recipe,
        on_event,
    )?;
    if summary.stopped {
        return Err(JobError::Invalid("the demo was cancelled".into()));
    }
    let after = evaluate_deletion(
        &model,
        &dataset,
        &retain,
        forget.indices(),
        &split.test,
        opts.device,
    )?;

    std::fs::create_dir_all(&opts.out_dir).map_err(|source| JobError::Write {
        path: opts.out_dir.clone(),
        source,
    })?;
    let out_ckpt = opts.out_dir.join("unlearned.safetensors");
    let mut meta = CheckpointMeta::new(
        Some(original.arch.clone()),
        Some(format!(
            "retrain of {} without {}",
            ckpt_path.display(),
            forget.origin()
        )),
    );
    meta.provenance
        .notes
        .insert("forget_set".into(), forget_path.display().to_string());
    // Where it came from, as plugin results record it: shadow-model attacks
    // train their shadows with the original's recipe.
    let original_path = std::fs::canonicalize(&ckpt_path).unwrap_or_else(|_| ckpt_path.clone());
    meta.provenance.notes.insert(
        "original_checkpoint".into(),
        original_path.display().to_string(),
    );
    checkpoint::save(&out_ckpt, &vs, &meta, false)?;
    let report = DemoReport {
        dataset: data_path.display().to_string(),
        dataset_sha256: file_sha256(&data_path),
        checkpoint: ckpt_path.display().to_string(),
        checkpoint_sha256: file_sha256(&ckpt_path),
        forget_set: forget.origin().to_string(),
        forget_count: forget.len(),
        retain_count: retain.len(),
        method: "retrain (exact unlearning)".into(),
        settings: recipe,
        device: crate::runtime::device_name(opts.device),
        original: before,
        unlearned: after,
        unlearning_seconds: summary.seconds,
        unlearned_checkpoint: out_ckpt,
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| JobError::Invalid(format!("cannot serialise the report: {e}")))?;
    write_atomic(&opts.out_dir.join("report.json"), &json, false)?;
    Ok(report)
}
