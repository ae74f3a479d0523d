//! Whole jobs the CLI, the worker and the GUI run: training a model on a dataset, and
//! the demo deletion.

pub mod atomic;
pub mod demo;
pub mod run_record;
pub mod train;

/// A job failed; the message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Reading the dataset failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The forget set is unusable.
    #[error(transparent)]
    ForgetSet(#[from] crate::data::ForgetSetError),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Building the model failed.
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Writing an output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting or input does not fit the job.
    #[error("{0}")]
    Invalid(String),
}
