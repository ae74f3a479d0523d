//! Training loops shared by the demo, the baselines and the plugins: supervised
//! (cross-entropy), contrastive (SimCLR NT-Xent, MoCo InfoNCE with a queue) and linear
//! probing of a frozen encoder.
//!
//! Data stays on the compute device for the whole run: batches are index selections of
//! one device tensor and augmentation is batched on the device, so no host-side data
//! loader sits between epochs and the accelerator.

pub mod augment;
pub mod batches;
pub mod contrastive;
pub mod events;
pub mod heap;
pub mod losses;
pub mod optim;
pub mod probe;
pub mod prune;
pub mod stacked;
pub mod supervised;

pub use events::{Flow, TrainEvent, TrainSummary};
pub use optim::{OptimizerConfig, Schedule, TrainConfig};

/// Why a training run could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// libtorch refused an operation (shape, dtype or device problem).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Nothing to train on.
    #[error("the {0} set is empty")]
    Empty(&'static str),
    /// Inputs and labels disagree, or a configuration value is unusable.
    #[error("invalid training input: {0}")]
    Invalid(String),
    /// The loss became NaN or infinite; training stops instead of saving garbage.
    #[error("loss is not finite at epoch {epoch}, step {step} (lower the learning rate?)")]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
    },
}
