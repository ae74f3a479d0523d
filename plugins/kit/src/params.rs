//! Schema entries the baselines share, with their parsing, so every method names
//! and bounds them the same way.

use crate::adam::AdamConfig;
use crate::batch_size;
use crate::optim::{Schedule, SgdConfig};
use crate::prune::PruneScope;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, Params, PluginError};

/// Reference defaults of a method's optimiser.
#[derive(Debug, Clone, Copy)]
pub struct OptimDefaults {
    /// Learning rate.
    pub lr: f64,
    /// Epochs.
    pub epochs: i64,
    /// Batch size.
    pub batch_size: i64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// `constant`, `cosine` or `step`.
    pub schedule: &'static str,
}

impl OptimDefaults {
    /// The OPTML Unlearn-Sparse / SalUn defaults (SGD, momentum 0.9, weight decay
    /// 5e-4, batch 256, constant rate: their 91/136-epoch milestones never trigger
    /// within an unlearning run) with a method's rate and epochs.
    pub const fn optml(lr: f64, epochs: i64) -> Self {
        OptimDefaults {
            lr,
            epochs,
            batch_size: 256,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: "constant",
        }
    }
}

/// Adds `lr`, `epochs`, `batch_size`, `momentum`, `weight_decay`, `schedule`.
pub fn optimiser(d: Descriptor, defaults: &OptimDefaults) -> Descriptor {
    d.param(
        ParamSpec::float("lr", "Learning rate", 1e-7, 10.0, defaults.lr)
            .log_scale()
            .group("Optimiser"),
    )
    .param(
        ParamSpec::int("epochs", "Epochs", 1, 10_000, defaults.epochs)
            .group("Optimiser")
            .help("Passes over the method's data."),
    )
    .param(
        ParamSpec::int("batch_size", "Batch size", 2, 8192, defaults.batch_size).group("Optimiser"),
    )
    .param(
        ParamSpec::float("momentum", "Momentum", 0.0, 0.999, defaults.momentum).group("Optimiser"),
    )
    .param(
        ParamSpec::float(
            "weight_decay",
            "Weight decay",
            0.0,
            0.1,
            defaults.weight_decay,
        )
        .group("Optimiser")
        .help("L2 penalty added to the gradient (PyTorch SGD's weight_decay)."),
    )
    .param(
        ParamSpec::choice(
            "schedule",
            "Learning-rate schedule",
            &["constant", "cosine", "step"],
            defaults.schedule,
        )
        .group("Optimiser")
        .help("step: ×0.1 at 50 % and 75 % of the run (the reference 91/136 of 182 epochs)."),
    )
}

/// Parsed [`optimiser`] entries.
#[derive(Debug, Clone)]
pub struct Optim {
    /// Base learning rate.
    pub lr: f64,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: u32,
    /// Momentum and weight decay.
    pub sgd: SgdConfig,
    /// Adam instead of SGD (then `sgd` is unused). No form offers it; the
    /// retrain baseline sets it to follow a model trained with Adam.
    pub adam: Option<AdamConfig>,
    /// Learning-rate schedule.
    pub schedule: Schedule,
}

impl Optim {
    /// Reads the [`optimiser`] entries.
    pub fn from_params(p: &Params) -> Result<Self, PluginError> {
        Ok(Optim {
            lr: p.f64("lr")?,
            epochs: usize::try_from(p.i64("epochs")?.max(1)).unwrap_or(1),
            batch_size: batch_size(p.i64("batch_size")?),
            sgd: SgdConfig {
                momentum: p.f64("momentum")?,
                weight_decay: p.f64("weight_decay")?,
            },
            adam: None,
            schedule: Schedule::from_name(p.str("schedule")?)?,
        })
    }
}

/// Adds `augment`, `temperature` and `max_batches`.
pub fn training(d: Descriptor) -> Descriptor {
    d.param(
        ParamSpec::bool("augment", "Augment classifier inputs", true)
            .group("Data")
            .help("Classifiers: train on augmented inputs (the model's training recipe). Encoders always see two augmented views."),
    )
    .param(
        ParamSpec::float("temperature", "InfoNCE temperature", 0.0, 10.0, 0.0)
            .group("Encoders")
            .help("Encoders: the InfoNCE temperature; 0: the one the checkpoint records, else SimCLR's 0.5 or MoCo's 0.1. The objective follows the recorded task: SimCLR NT-Xent, or MoCo InfoNCE with a momentum encoder (0.99) and a queue (4096)."),
    )
    .param(
        ParamSpec::int("max_batches", "Batches per epoch", 0, 1_000_000, 0)
            .group("Data")
            .help("Stop each epoch after this many batches (0: the whole split); for quick trials."),
    )
}

/// Parsed [`training`] entries.
#[derive(Debug, Clone, Copy)]
pub struct Training {
    /// Augment classifier inputs.
    pub augment: bool,
    /// InfoNCE temperature (0: the checkpoint's, else the task's default).
    pub temperature: f64,
    /// Batches per epoch (0: all).
    pub max_batches: usize,
}

impl Training {
    /// Reads the [`training`] entries.
    pub fn from_params(p: &Params) -> Result<Self, PluginError> {
        Ok(Training {
            augment: p.bool("augment")?,
            temperature: p.f64("temperature")?,
            max_batches: usize::try_from(p.i64("max_batches")?).unwrap_or(0),
        })
    }
}

/// Adds `seed`.
pub fn seed(d: Descriptor) -> Descriptor {
    d.param(
        ParamSpec::int("seed", "Seed", 0, i64::from(u32::MAX), 0).help(
            "Seeds libtorch's generator: augmentation, random labels, noise, initialisation.",
        ),
    )
}

/// Reads `seed`.
pub fn read_seed(p: &Params) -> Result<u64, PluginError> {
    Ok(u64::try_from(p.i64("seed")?).unwrap_or(0))
}

/// Adds `prune_ratio` and `prune_scope`.
pub fn pruning(d: Descriptor) -> Descriptor {
    d.param(
        ParamSpec::float("prune_ratio", "Prune ratio", 0.0, 0.999, 0.0)
            .group("Sparsity")
            .help("One-shot global magnitude pruning right before the method, without retraining; pruned weights stay zero. A variant: Jia et al.'s \"95 % sparse\" setting prunes and retrains first (lethe train --prune-ratio 0.95), and the host keeps such a model's zeros for every method."),
    )
    .param(
        ParamSpec::choice("prune_scope", "Prune", &["weights", "conv"], "weights")
            .group("Sparsity")
            .help("weights: every weight matrix and kernel; conv: convolution kernels only (the reference ResNet pruner)."),
    )
}

/// Parsed [`pruning`] entries.
#[derive(Debug, Clone, Copy)]
pub struct Prune {
    /// Fraction of prunable weights to zero.
    pub ratio: f64,
    /// Which weights are prunable.
    pub scope: PruneScope,
}

impl Prune {
    /// Reads the [`pruning`] entries.
    pub fn from_params(p: &Params) -> Result<Self, PluginError> {
        Ok(Prune {
            ratio: p.f64("prune_ratio")?,
            scope: PruneScope::from_name(p.str("prune_scope")?)?,
        })
    }

    /// No pruning.
    pub const NONE: Prune = Prune {
        ratio: 0.0,
        scope: PruneScope::Weights,
    };
}
