//! Did the unlearning work? Utility of a model on the job's splits, the
//! encoder-level audit of the Alignment Calibration paper, and the engine side
//! of membership attacks (which run as plugins; their scores come back as files
//! and the metric set is computed here, in one place).
//!
//! * [`job_data`]: the dataset, split and forget set exactly as a job sees them;
//! * [`utility`]: retain / test / forget accuracy (RA, TA, UA), per class,
//!   directly for classifiers and through a linear probe for encoders;
//! * [`alignment`]: forgetting score FS, Alignment Matrix AM before and after,
//!   Alignment Gap Matrix AGM and negative alignment;
//! * [`shift`]: a model-free check that two sample sets come from the same
//!   distribution;
//! * [`attack`]: reads an attack plugin's score files into the metric set;
//! * [`evaluate`]: `lethe evaluate`'s work ([`evaluate::EvaluateRequest`]);
//! * [`per_sample`]: U-LiRA after and LiRA before a deletion, side by side
//!   (`lethe verify-samples`);
//! * [`cli`]: `lethe evaluate`, `lethe attack` and `lethe verify-samples`.

pub mod alignment;
pub mod attack;
pub mod cli;
pub mod evaluate;
pub mod job_data;
pub mod per_sample;
pub mod shift;
pub mod utility;

/// An evaluation failed; the message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the dataset failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The forget set is unusable.
    #[error(transparent)]
    ForgetSet(#[from] crate::data::ForgetSetError),
    /// Reading a checkpoint or a result file failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Training the linear probe failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// A job-level step failed.
    #[error(transparent)]
    Job(#[from] crate::jobs::JobError),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A setting or input does not fit.
    #[error("{0}")]
    Invalid(String),
}
