//! The training-throughput rows of `lethe bench`, run with the engine's real
//! training loops on synthetic images. `bench/pytorch_reference.py` runs the same
//! spec in PyTorch: same model, batch size, steps, optimiser, augmentation and
//! threads; only the framework differs.

use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use crate::models::{ArchConfig, BackboneConfig, HeadConfig, KeyQueue, Model, MomentumEncoder};
use crate::train::augment::AugmentConfig;
use crate::train::contrastive::{train_moco, train_simclr};
use crate::train::probe::train_linear_probe;
use crate::train::supervised::train_classifier;
use crate::train::{Flow, OptimizerConfig, Schedule, TrainConfig, TrainError};

/// What a row trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Cross-entropy on class logits, crop + flip augmentation.
    Supervised,
    /// SimCLR NT-Xent (τ 0.5) on two contrastive views.
    Simclr,
    /// MoCo InfoNCE (τ 0.1, momentum 0.99, queue 4096) on two contrastive views.
    Moco,
    /// Linear probe of a frozen encoder: features of crop+flip views, then a
    /// cross-entropy step on the linear head (the papers' augmented probe).
    Probe,
}

/// Which backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Net {
    /// CIFAR ResNet-18 on 3×32×32.
    Resnet18,
    /// The demo's small CNN on 1×28×28.
    SmallCnn,
}

/// One throughput row: everything both implementations need to do the same work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowSpec {
    /// Row name in the table.
    pub name: String,
    /// Backbone.
    pub net: Net,
    /// Objective.
    pub task: Task,
    /// Images per step.
    pub batch: i64,
    /// Timed optimiser steps.
    pub steps: i64,
    /// Untimed steps first (allocator and kernel warm-up on both sides).
    pub warmup: i64,
    /// Intra-op threads.
    pub threads: i32,
    /// Seed for the synthetic data and initialisation.
    pub seed: i64,
}

/// The rows `lethe bench` runs, sized to finish in well under ten minutes on two
/// CPU cores for both implementations together.
pub fn default_rows(threads: i32) -> Vec<RowSpec> {
    let row = |name: &str, net, task, batch, steps| RowSpec {
        name: name.into(),
        net,
        task,
        batch,
        steps,
        warmup: 1,
        threads,
        seed: 0,
    };
    // Steps chosen for 2-10 s of timed work per side on 2 cores (single runs of
    // under 1.5 s swung by ±20 %; `--repeat` takes the median of several), with
    // the whole comparison inside ten minutes.
    vec![
        row(
            "resnet18 supervised",
            Net::Resnet18,
            Task::Supervised,
            128,
            2,
        ),
        row("resnet18 simclr", Net::Resnet18, Task::Simclr, 64, 2),
        row("resnet18 moco", Net::Resnet18, Task::Moco, 64, 2),
        row("resnet18 linear probe", Net::Resnet18, Task::Probe, 128, 2),
        row("cnn supervised", Net::SmallCnn, Task::Supervised, 128, 60),
        row("cnn simclr", Net::SmallCnn, Task::Simclr, 128, 30),
        row("cnn moco", Net::SmallCnn, Task::Moco, 128, 30),
        row("cnn linear probe", Net::SmallCnn, Task::Probe, 256, 30),
    ]
}

/// What one side measured for a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    /// Training images processed per second in the timed steps.
    pub images_per_sec: f64,
    /// Wall time of the timed steps.
    pub seconds: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Unlearning rows: mean loss on the forget split before the run, as the
    /// method reported it (the same number on both sides shows they loaded the
    /// same model and data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_loss_before: Option<f64>,
    /// Unlearning rows: the same after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_loss_after: Option<f64>,
    /// Throughput rows: minor page faults of the process per timed step. Each is a
    /// fresh zeroed page (about 1.5 µs on the 2-core benchmark machine): memory the
    /// allocator gave back to the kernel and the next step took again. Unlike the
    /// timings, this barely moves with other work on the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults_per_step: Option<f64>,
}

fn arch(spec: &RowSpec) -> ArchConfig {
    let backbone = match spec.net {
        Net::Resnet18 => BackboneConfig::resnet18(3),
        Net::SmallCnn => BackboneConfig::small_cnn(1),
    };
    let f = backbone.feature_dim();
    let head = match spec.task {
        Task::Supervised => HeadConfig::Classifier { num_classes: 10 },
        Task::Simclr => HeadConfig::MlpProjection {
            hidden_dim: f,
            out_dim: 128,
        },
        Task::Moco => HeadConfig::LinearProjection { out_dim: 128 },
        Task::Probe => HeadConfig::None,
    };
    ArchConfig { backbone, head }
}

fn images(spec: &RowSpec, n: i64) -> (Tensor, Tensor) {
    let shape = match spec.net {
        Net::Resnet18 => [n, 3, 32, 32],
        Net::SmallCnn => [n, 1, 28, 28],
    };
    let x = Tensor::randint(256, shape, (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
    let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
    (x, y)
}

fn config(spec: &RowSpec) -> TrainConfig {
    let augment = match spec.task {
        Task::Supervised | Task::Probe => AugmentConfig::crop_flip(),
        Task::Simclr | Task::Moco => AugmentConfig::contrastive(),
    };
    TrainConfig {
        epochs: 1,
        batch_size: spec.batch,
        lr: 0.01,
        weight_decay: 5e-4,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        schedule: Schedule::Constant,
        seed: spec.seed as u64,
        drop_last: true,
        augment: Some(augment),
    }
}

/// Runs `steps` optimiser steps of `spec` on the CPU and returns how long they took
/// and the process's minor page faults meanwhile.
fn train_steps(
    spec: &RowSpec,
    model: &Model,
    vs: &VarStore,
    moco: &mut Option<(MomentumEncoder, KeyQueue)>,
    steps: i64,
) -> Result<(f64, i64), TrainError> {
    let (x, y) = images(spec, steps * spec.batch);
    let cfg = config(spec);
    let mut go = |_: &crate::train::TrainEvent| Flow::Continue;
    let faults = minor_faults();
    let start = Instant::now();
    match spec.task {
        Task::Supervised => {
            train_classifier(model, vs, &x, &y, &cfg, &mut go)?;
        }
        Task::Simclr => {
            train_simclr(model, vs, &x, 0.5, &cfg, &mut go)?;
        }
        Task::Moco => {
            let (key, queue) = moco
                .as_mut()
                .ok_or_else(|| TrainError::Invalid("no momentum encoder".into()))?;
            train_moco(model, vs, key, queue, &x, 0.1, &cfg, &mut go)?;
        }
        Task::Probe => {
            let features = |t: &Tensor| model.forward_t(t, false);
            train_linear_probe(&features, &x, &y, 10, Device::Cpu, &cfg, &mut go)?;
        }
    }
    Ok((start.elapsed().as_secs_f64(), minor_faults() - faults))
}

/// Runs one row in this process (warm-up, then the timed steps).
pub fn run_row(spec: &RowSpec) -> Result<RowResult, TrainError> {
    tch::set_num_threads(spec.threads);
    tch::manual_seed(spec.seed);
    let arch = arch(spec);
    let vs = VarStore::new(Device::Cpu);
    let model = Model::new(&vs.root(), &arch).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let mut moco = match spec.task {
        Task::Moco => Some((
            MomentumEncoder::new(&vs, &arch, 0.99)
                .map_err(|e| TrainError::Invalid(e.to_string()))?,
            KeyQueue::new(4096, 128, Device::Cpu)
                .map_err(|e| TrainError::Invalid(e.to_string()))?,
        )),
        _ => None,
    };
    if spec.warmup > 0 {
        train_steps(spec, &model, &vs, &mut moco, spec.warmup)?;
    }
    let (seconds, faults) = train_steps(spec, &model, &vs, &mut moco, spec.steps)?;
    Ok(RowResult {
        images_per_sec: (spec.steps * spec.batch) as f64 / seconds.max(1e-9),
        seconds,
        peak_rss_mib: peak_rss_mib(),
        forget_loss_before: None,
        forget_loss_after: None,
        page_faults_per_step: Some(faults as f64 / spec.steps.max(1) as f64),
    })
}

/// This process's minor page faults so far (all threads).
fn minor_faults() -> i64 {
    rusage().map_or(0, |u| u.ru_minflt)
}

/// This process's peak resident set size (`ru_maxrss`, KiB on Linux), in MiB.
pub fn peak_rss_mib() -> f64 {
    rusage().map_or(0.0, |u| u.ru_maxrss as f64 / 1024.0)
}

fn rusage() -> Option<libc::rusage> {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage; RUSAGE_SELF is always valid.
    (unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0).then_some(usage)
}
