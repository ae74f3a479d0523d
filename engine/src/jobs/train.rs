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
}

/// A training job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainJob {
    /// Dataset file or folder.
    pub data: PathBuf,
    /// Backbone.
    pub backbone: Backbone,
    /// Objective.
    pub task: Task,
    /// Optimiser, schedule, epochs, seed, augmentation.
    pub train: TrainConfig,
    /// Contrastive temperature (SimCLR 0.5, MoCo 0.1 in the papers).
    pub temperature: f64,
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
    /// Accuracy per split.
    pub accuracy: SplitAccuracy,
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

/// The architecture a job trains.
pub fn arch_for(backbone: Backbone, task: Task, dataset: &Dataset) -> Result<ArchConfig, JobError> {
    let c = dataset.channels() as i64;
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
    let arch = arch_for(job.backbone, job.task, &dataset)?;
    let (x_train, y_train) = subset_images(&dataset, &split.train)?;
    tch::manual_seed(job.train.seed as i64);
    let vs = VarStore::new(device);
    let model = Model::new(&vs.root(), &arch)?;
    let summary = match job.task {
        Task::Classifier => {
            train_classifier(&model, &vs, &x_train, &y_train, &job.train, on_event)?
        }
        Task::Simclr => train_simclr(&model, &vs, &x_train, job.temperature, &job.train, on_event)?,
        Task::Moco => {
            let moco = MocoConfig {
                temperature: job.temperature,
                ..MocoConfig::default()
            };
            let mut key = MomentumEncoder::new(&vs, &arch, moco.momentum)?;
            let queue_len = 4096.min(split.train.len() as i64);
            let mut queue = KeyQueue::new(queue_len, arch.out_dim(), device)?;
            train_moco(
                &model,
                &vs,
                &mut key,
                &mut queue,
                &x_train,
                moco.temperature,
                &job.train,
                on_event,
            )?
        }
    };
    let accuracy = measure(&model, &dataset, &split, job, device)?;
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
    checkpoint::save(&job.out, &vs, &meta, job.overwrite)?;
    Ok(TrainOutcome {
        checkpoint: job.out.clone(),
        arch,
        accuracy,
        final_loss: summary.final_loss,
        samples_per_sec: summary.samples_per_sec,
        seconds: summary.seconds,
    })
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
