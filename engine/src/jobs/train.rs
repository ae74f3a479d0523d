//! `lethe train`: train a built-in architecture on a dataset and save it as a Lethe
//! checkpoint that records every setting used.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::JobError;
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::{self, Dataset, Split};
use crate::models::{ArchConfig, BackboneConfig, HeadConfig, Model};
use crate::models::{KeyQueue, MomentumEncoder};
use crate::train::contrastive::{MocoConfig, train_moco, train_simclr};
use crate::train::probe::{extract, train_linear_probe};
use crate::train::prune::{
    Mask, PruneRecipe, SPARSITY_NOTE, Sparsity, prune_and_retrain, snapshot, trainable,
};
use crate::train::supervised::{evaluate, train_classifier};
use crate::train::{Flow, Schedule, TrainConfig, TrainEvent};

/// What the model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Supervised classifier (cross-entropy).
    Classifier,
    /// SimCLR encoder (NT-Xent, MLP projection head).
    Simclr,
    /// MoCo encoder (InfoNCE with a momentum encoder and a queue, linear head).
    Moco,
}

/// Built-in backbones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    /// Two conv layers + a dense layer, for 28×28 inputs.
    SmallCnn,
    /// CIFAR ResNet-18 (3×3 stride-1 stem, no max-pool).
    Resnet18,
    /// Fully-connected ReLU layers on the flattened images (`--hidden` sets the widths).
    Mlp,
}

impl Backbone {
    /// The name the command line uses (`small-cnn`, `resnet18`, `mlp`).
    pub fn cli_name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{self:?}"))
    }
}

/// Hidden widths of `--backbone mlp` when none are given: the 784-512-512-10
/// network of the leaky demo (resources/demo/README.md).
pub const DEFAULT_MLP_HIDDEN: [i64; 2] = [512, 512];

/// Largest first MLP layer accepted (weights), so that a full-resolution
/// photo set fails with a message instead of an out-of-memory abort.
const MAX_MLP_FIRST_LAYER: i64 = 1 << 28;

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    /// Dataset file or folder.
    pub data: PathBuf,
    /// Backbone.
    pub backbone: Backbone,
    /// Objective.
    pub task: Task,
    /// Hidden widths of an MLP backbone (empty: [`DEFAULT_MLP_HIDDEN`]); must
    /// be empty for the other backbones. Older records have no such field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<i64>,
    /// Optimiser, schedule, epochs, seed, augmentation.
    pub train: TrainConfig,
    /// Contrastive temperature (SimCLR 0.5, MoCo 0.1 in the papers).
    pub temperature: f64,
    /// Make a sparse model: after the dense training, prune by OMP and retrain
    /// with the mask fixed (see [`crate::train::prune`]). Older records have no
    /// such field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneRecipe>,
    /// Where to write the checkpoint (never overwritten unless `overwrite`).
    pub out: PathBuf,
    /// Replace an existing output file.
    pub overwrite: bool,
}

/// Accuracy of the trained model on each split (linear probe for encoders).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitAccuracy {
    /// Training split.
    pub train: f64,
    /// Validation split.
    pub val: f64,
    /// Test split.
    pub test: f64,
}

/// What a training job produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// Its architecture.
    pub arch: ArchConfig,
    /// Accuracy per split (of the sparse model when pruned).
    pub accuracy: SplitAccuracy,
    /// The dense model's accuracy before pruning, when pruned.
    pub dense_accuracy: Option<SplitAccuracy>,
    /// What pruning did, when pruned.
    pub sparsity: Option<Sparsity>,
    /// Mean loss of the last epoch.
    pub final_loss: f64,
    /// Training throughput.
    pub samples_per_sec: f64,
    /// Wall time of the training loop.
    pub seconds: f64,
}

/// The split to use: the one recorded in the data file, else a seeded 80/10/10 one.
pub fn split_of(dataset: &Dataset, seed: u64) -> Result<Split, JobError> {
    match dataset.recorded_split() {
        Some(s) => Ok(s.clone()),
        None => Ok(Split::from_fractions(dataset.len(), 0.1, 0.1, seed)?),
    }
}

/// The architecture a job trains (`hidden`: the MLP's widths, see
/// [`TrainJob::hidden`]).
pub fn arch_for(
    backbone: Backbone,
    hidden: &[i64],
    task: Task,
    dataset: &Dataset,
) -> Result<ArchConfig, JobError> {
    let c = dataset.channels() as i64;
    if backbone != Backbone::Mlp && !hidden.is_empty() {
        return Err(JobError::Invalid(format!(
            "hidden widths {hidden:?} apply to the MLP backbone only, not to {}",
            backbone.cli_name()
        )));
    }
    let bb = match backbone {
        Backbone::SmallCnn => {
            if dataset.height() != 28 || dataset.width() != 28 {
                return Err(JobError::Invalid(format!(
                    "the small CNN expects 28×28 images; {} has {}×{}",
                    dataset.source().display(),
                    dataset.height(),
                    dataset.width()
                )));
            }
            BackboneConfig::small_cnn(c)
        }
        Backbone::Resnet18 => BackboneConfig::resnet18(c),
        Backbone::Mlp => mlp_backbone(hidden, dataset)?,
    };
    let d = bb.feature_dim();
    let head = match task {
        Task::Classifier => HeadConfig::Classifier {
            num_classes: dataset.num_classes() as i64,
        },
        Task::Simclr => HeadConfig::MlpProjection {
            hidden_dim: d,
            out_dim: 128.min(d),
        },
        Task::Moco => HeadConfig::LinearProjection {
            out_dim: 128.min(d),
        },
    };
    Ok(ArchConfig { backbone: bb, head })
}

/// The MLP on `dataset`'s flattened images: every sample must be one
/// fixed-size image (C·H·W inputs) and the widths positive.
fn mlp_backbone(hidden: &[i64], dataset: &Dataset) -> Result<BackboneConfig, JobError> {
    let hidden = if hidden.is_empty() {
        DEFAULT_MLP_HIDDEN.to_vec()
    } else {
        hidden.to_vec()
    };
    if let Some(w) = hidden.iter().find(|w| **w <= 0) {
        return Err(JobError::Invalid(format!(
            "MLP hidden widths must be positive, got {w} in {hidden:?}"
        )));
    }
    let (c, h, w) = (dataset.channels(), dataset.height(), dataset.width());
    let input_dim = [c, h, w]
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(i64::try_from(d).ok()?))
        .filter(|d| *d > 0);
    let first = input_dim.and_then(|d| d.checked_mul(hidden[0]));
    match (input_dim, first) {
        (Some(d), Some(f)) if f <= MAX_MLP_FIRST_LAYER => Ok(BackboneConfig::Mlp {
            input_dim: d,
            hidden,
        }),
        (Some(d), _) => Err(JobError::Invalid(format!(
            "{}: its {c}×{h}×{w} images flatten to {d} inputs, too many for an MLP (first layer \
             {d}×{} weights, at most {MAX_MLP_FIRST_LAYER}); use a convolutional backbone",
            dataset.source().display(),
            hidden[0],
        ))),
        (None, _) => Err(JobError::Invalid(format!(
            "{}: the MLP flattens each image, but the samples are {c}×{h}×{w} (no pixels to \
             flatten)",
            dataset.source().display()
        ))),
    }
}

/// SHA-256 of a file (or `None` for a folder), for provenance.
pub fn file_sha256(path: &Path) -> Option<String> {
    if path.is_dir() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    Some(format!("{:x}", Sha256::digest(&bytes)))
}

fn subset_images(dataset: &Dataset, idx: &[i64]) -> Result<(Tensor, Tensor), JobError> {
    let s = dataset.subset(idx)?;
    Ok((s.images().shallow_clone(), s.labels().shallow_clone()))
}

/// Runs a training job on `device`.
pub fn run_train_job(
    job: &TrainJob,
    device: Device,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainOutcome, JobError> {
    if !job.overwrite && job.out.exists() {
        return Err(JobError::Invalid(format!(
            "{} exists; choose another output or pass --overwrite",
            job.out.display()
        )));
    }
    let dataset = data::load(&job.data)?;
    let split = split_of(&dataset, job.train.seed)?;
    let arch = arch_for(job.backbone, &job.hidden, job.task, &dataset)?;
    if let Some(p) = &job.prune {
        p.validate(job.train.epochs)?;
    }
    let (x_train, y_train) = subset_images(&dataset, &split.train)?;
    tch::manual_seed(job.train.seed as i64);
    let vs = VarStore::new(device);
    let model = Model::new(&vs.root(), &arch)?;
    let train = |cfg: &TrainConfig, on_event: &mut dyn FnMut(&TrainEvent) -> Flow| {
        fit(job, cfg, &model, &vs, &arch, &x_train, &y_train, on_event)
    };
    let Some(recipe) = &job.prune else {
        let summary = train(&job.train, on_event)?;
        return finish(
            job, &model, &vs, arch, &dataset, &split, device, summary, None,
        );
    };
    if !trainable(&vs).iter().any(|(_, p)| recipe.scope.covers(p)) {
        // Said now, not after the dense training.
        Mask::omp(&[], recipe.ratio, recipe.scope)?;
    }
    // The reference's `rewind_lt`: the weights (and batch-norm statistics)
    // after this dense epoch are what the sparse model is retrained from.
    let mut rewind = None;
    let dense_summary = train(&job.train, &mut |e: &TrainEvent| {
        if recipe.is_rewind_point(e) {
            rewind = Some(snapshot(&vs));
        }
        on_event(e)
    })?;
    if dense_summary.stopped {
        // A dense model saved under a recipe that says sparse would mislead.
        return Err(JobError::Invalid(
            "training was stopped before pruning; nothing was saved".into(),
        ));
    }
    let dense_accuracy = measure(&model, &dataset, &split, job, device)?;
    let cfg = TrainConfig {
        epochs: recipe.retrain_epochs,
        ..job.train.clone()
    };
    let (record, summary) = prune_and_retrain(
        &vs,
        recipe,
        rewind,
        |on_event: &mut dyn FnMut(&TrainEvent) -> Flow| train(&cfg, on_event),
        on_event,
    )?;
    let sparse = Sparse {
        record,
        dense_accuracy,
    };
    finish(
        job,
        &model,
        &vs,
        arch,
        &dataset,
        &split,
        device,
        summary,
        Some(sparse),
    )
}

/// What pruning made of the model, for its provenance.
struct Sparse {
    record: Sparsity,
    dense_accuracy: SplitAccuracy,
}

/// Trains `model` by `job`'s objective with `cfg`.
#[allow(clippy::too_many_arguments)]
fn fit(
    job: &TrainJob,
    cfg: &TrainConfig,
    model: &Model,
    vs: &VarStore,
    arch: &ArchConfig,
    x_train: &Tensor,
    y_train: &Tensor,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<crate::train::TrainSummary, JobError> {
    Ok(match job.task {
        Task::Classifier => train_classifier(model, vs, x_train, y_train, cfg, on_event)?,
        Task::Simclr => train_simclr(model, vs, x_train, job.temperature, cfg, on_event)?,
        Task::Moco => {
            let moco = MocoConfig {
                temperature: job.temperature,
                ..MocoConfig::default()
            };
            let mut key = MomentumEncoder::new(vs, arch, moco.momentum)?;
            let queue_len = 4096.min(x_train.size()[0]);
            let mut queue = KeyQueue::new(queue_len, arch.out_dim(), vs.device())?;
            train_moco(
                model,
                vs,
                &mut key,
                &mut queue,
                x_train,
                moco.temperature,
                cfg,
                on_event,
            )?
        }
    })
}

/// Measures, records and saves the trained model.
#[allow(clippy::too_many_arguments)]
fn finish(
    job: &TrainJob,
    model: &Model,
    vs: &VarStore,
    arch: ArchConfig,
    dataset: &Dataset,
    split: &Split,
    device: Device,
    summary: crate::train::TrainSummary,
    sparse: Option<Sparse>,
) -> Result<TrainOutcome, JobError> {
    let accuracy = measure(model, dataset, split, job, device)?;
    let mut meta = CheckpointMeta::new(
        Some(arch.clone()),
        Some(format!("lethe train ({:?})", job.task)),
    );
    let notes = &mut meta.provenance.notes;
    notes.insert("job".into(), serde_json::to_string(job).unwrap_or_default());
    notes.insert("data".into(), job.data.display().to_string());
    if let Some(h) = file_sha256(&job.data) {
        notes.insert("data_sha256".into(), h);
    }
    notes.insert(
        "accuracy".into(),
        serde_json::to_string(&accuracy).unwrap_or_default(),
    );
    notes.insert("device".into(), format!("{device:?}"));
    if let Some(s) = &sparse {
        notes.insert(
            SPARSITY_NOTE.into(),
            serde_json::to_string(&s.record).unwrap_or_default(),
        );
        notes.insert(
            "dense_accuracy".into(),
            serde_json::to_string(&s.dense_accuracy).unwrap_or_default(),
        );
    }
    checkpoint::save(&job.out, vs, &meta, job.overwrite)?;
    let (sparsity, dense_accuracy) = match sparse {
        Some(s) => (Some(s.record), Some(s.dense_accuracy)),
        None => (None, None),
    };
    Ok(TrainOutcome {
        checkpoint: job.out.clone(),
        arch,
        accuracy,
        dense_accuracy,
        sparsity,
        final_loss: summary.final_loss,
        samples_per_sec: summary.samples_per_sec,
        seconds: summary.seconds,
    })
}

/// Prunes the model in `src` by OMP (no retraining) and saves it to `dst`
/// (never replacing a file) with `src`'s provenance and the pruning record
/// under [`SPARSITY_NOTE`]: what `lethe unlearn --prune-ratio` unlearns.
pub fn prune_checkpoint(
    src: &Path,
    dst: &Path,
    ratio: f64,
    scope: crate::train::prune::PruneScope,
) -> Result<Sparsity, JobError> {
    let loaded = checkpoint::load_model(src, Device::Cpu, &checkpoint::LoadOptions::default())?;
    let (_, record) = Mask::omp(&trainable(&loaded.vs), ratio, scope)?;
    let mut meta = loaded
        .meta
        .unwrap_or_else(|| CheckpointMeta::new(Some(loaded.arch.clone()), None));
    meta.arch = Some(loaded.arch);
    let notes = &mut meta.provenance.notes;
    notes.insert(
        SPARSITY_NOTE.into(),
        serde_json::to_string(&record).unwrap_or_default(),
    );
    notes.insert("pruned_from".into(), src.display().to_string());
    checkpoint::save(dst, &loaded.vs, &meta, false)?;
    Ok(record)
}

fn measure(
    model: &Model,
    dataset: &Dataset,
    split: &Split,
    job: &TrainJob,
    device: Device,
) -> Result<SplitAccuracy, JobError> {
    let (xt, yt) = subset_images(dataset, &split.train)?;
    let (xv, yv) = subset_images(dataset, &split.val)?;
    let (xs, ys) = subset_images(dataset, &split.test)?;
    if job.task == Task::Classifier {
        return Ok(SplitAccuracy {
            train: evaluate(model, &xt, &yt, device),
            val: evaluate(model, &xv, &yv, device),
            test: evaluate(model, &xs, &ys, device),
        });
    }
    // Encoders are read through a linear probe on frozen backbone features.
    let feat = |x: &Tensor| model.features(x, false);
    let probe_cfg = TrainConfig {
        epochs: 30,
        batch_size: 256,
        lr: 0.5,
        weight_decay: 0.0,
        schedule: Schedule::Cosine,
        seed: job.train.seed,
        augment: None,
        ..TrainConfig::default()
    };
    let (probe, _) = train_linear_probe(
        &feat,
        &xt,
        &yt,
        dataset.num_classes() as i64,
        device,
        &probe_cfg,
        &mut |_| Flow::Continue,
    )?;
    Ok(SplitAccuracy {
        train: probe.accuracy(&extract(&feat, &xt, device), &yt),
        val: probe.accuracy(&extract(&feat, &xv, device), &yv),
        test: probe.accuracy(&extract(&feat, &xs, device), &ys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Format;

    fn images(n: usize, shape: [usize; 3]) -> Dataset {
        let per: usize = shape.iter().product();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        Dataset::from_pixels(
            vec![7; n * per],
            shape,
            labels,
            Vec::new(),
            Path::new("pictures.npz"),
            Format::Npz,
        )
        .unwrap()
    }

    #[test]
    fn the_mlp_flattens_the_images_with_the_default_or_given_widths() {
        let ds = images(6, [1, 28, 28]);
        let arch = arch_for(Backbone::Mlp, &[], Task::Classifier, &ds).unwrap();
        assert_eq!(
            arch.backbone,
            BackboneConfig::Mlp {
                input_dim: 784,
                hidden: vec![512, 512]
            }
        );
        assert_eq!(arch.head, HeadConfig::Classifier { num_classes: 3 });
        let rgb = images(2, [3, 8, 8]);
        let arch = arch_for(Backbone::Mlp, &[64, 32, 16], Task::Simclr, &rgb).unwrap();
        assert_eq!(
            arch.backbone,
            BackboneConfig::Mlp {
                input_dim: 192,
                hidden: vec![64, 32, 16]
            }
        );
        // The model built from it takes the images as they come.
        let vs = VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), &arch).unwrap();
        let out = tch::nn::ModuleT::forward_t(&model, &rgb.to_float(), false);
        assert_eq!(out.size(), vec![2, arch.out_dim()]);
    }

    /// Issue 18 item 10: `lethe train --prune-ratio 0.95` trains dense, prunes by
    /// OMP, rewinds and retrains with the mask fixed; the checkpoint has exactly
    /// the requested sparsity in the pruned layers, records the rule and both
    /// accuracies, and the retrained (not merely pruned) model is what it saves.
    #[test]
    fn a_sparse_original_is_trained_pruned_and_retrained_with_the_mask_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo/mnist10k-2k.npz");
        let out = dir.path().join("sparse.safetensors");
        let job = TrainJob {
            data: data.clone(),
            backbone: Backbone::Mlp,
            task: Task::Classifier,
            hidden: vec![32],
            train: TrainConfig {
                epochs: 2,
                batch_size: 64,
                lr: 0.05,
                ..TrainConfig::default()
            },
            temperature: 0.5,
            prune: Some(PruneRecipe {
                ratio: 0.95,
                scope: crate::train::prune::PruneScope::Weights,
                rewind_epoch: 1,
                retrain_epochs: 2,
            }),
            out: out.clone(),
            overwrite: false,
        };
        let mut epochs = Vec::new();
        let outcome = run_train_job(&job, Device::Cpu, &mut |e: &TrainEvent| {
            if e.step == e.steps {
                epochs.push(e.epoch);
            }
            Flow::Continue
        })
        .unwrap();
        // Two dense epochs, then two of retraining.
        assert_eq!(epochs, vec![1, 2, 1, 2]);
        let record = outcome.sparsity.clone().unwrap();
        let dense = outcome.dense_accuracy.clone().unwrap();
        eprintln!(
            "dense test accuracy {:.4}, sparse (95 %, retrained) {:.4}",
            dense.test, outcome.accuracy.test
        );
        // 784·32 + 32·10 weights; round(0.95 · 25408) = 24138 (24137.6).
        assert_eq!(record.prunable, 25_408);
        assert_eq!(record.pruned, 24_138);
        assert_eq!(record.rule, "omp");
        assert_eq!((record.rewind_epoch, record.retrain_epochs), (1, 2));
        let loaded = checkpoint::load_model(&out, Device::Cpu, &Default::default()).unwrap();
        let params = trainable(&loaded.vs);
        let mut zeros = 0;
        for (name, p) in &params {
            let z = p.eq(0.0).sum(tch::Kind::Int64).int64_value(&[]);
            if p.dim() >= 2 {
                assert!(record.layers.contains(name), "{name} not recorded");
                zeros += z;
            } else {
                assert_eq!(z, 0, "{name}: a bias was pruned");
            }
        }
        assert_eq!(
            zeros, record.pruned,
            "the saved model is not exactly 95 % sparse"
        );
        // Both accuracies are recorded; the retrained sparse MLP still learns.
        let meta = loaded.meta.unwrap();
        let notes = &meta.provenance.notes;
        let saved: Sparsity = serde_json::from_str(&notes[SPARSITY_NOTE]).unwrap();
        assert_eq!(saved, record);
        let acc: SplitAccuracy = serde_json::from_str(&notes["accuracy"]).unwrap();
        let dense_saved: SplitAccuracy = serde_json::from_str(&notes["dense_accuracy"]).unwrap();
        assert_eq!(acc.test, outcome.accuracy.test);
        assert_eq!(dense_saved.test, dense.test);
        assert!(acc.test > 0.5, "sparse test accuracy {}", acc.test);
        // The recipe the host hands to methods and shadow models carries it.
        assert_eq!(meta.training_recipe()["prune"]["ratio"], 0.95);
        // A scope the model lacks is refused before any training.
        let conv = TrainJob {
            prune: Some(PruneRecipe {
                scope: crate::train::prune::PruneScope::Conv,
                ..job.prune.clone().unwrap()
            }),
            out: dir.path().join("conv.safetensors"),
            ..job.clone()
        };
        let err = run_train_job(&conv, Device::Cpu, &mut |_| Flow::Continue)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no convolution kernels"), "{err}");
    }

    #[test]
    fn unusable_mlp_settings_are_refused_with_the_reason() {
        let ds = images(2, [1, 28, 28]);
        let err = arch_for(Backbone::SmallCnn, &[64], Task::Classifier, &ds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MLP backbone only, not to small-cnn"), "{err}");
        let err = arch_for(Backbone::Mlp, &[64, 0], Task::Classifier, &ds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be positive"), "{err}");
        // Full-size photos: 786,432 inputs times 512 is past the limit.
        let photos = images(1, [3, 512, 512]);
        let err = arch_for(Backbone::Mlp, &[], Task::Classifier, &photos)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pictures.npz") && err.contains("3×512×512") && err.contains("786432"),
            "{err}"
        );
        // The same photos with a narrow first layer are fine.
        assert!(arch_for(Backbone::Mlp, &[128], Task::Classifier, &photos).is_ok());
    }
}
