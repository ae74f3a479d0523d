//! Studies: one checkpoint and forget set, several unlearning methods, several
//! seeds, every one compared with exact retraining, as the unlearning papers'
//! tables do.
//!
//! * [`spec`]: the `study.toml` format (see `resources/demo/study.toml`);
//! * [`runner`]: runs (or reuses) retrain, each method in a worker, the
//!   evaluation and every attack on each result, into a study folder;
//! * [`cache`]: the retrain-result cache, keyed by checkpoint, data, forget
//!   set, seed and retrain settings;
//! * [`results`]: what a study folder holds ([`StudyResults`], one
//!   [`RunResult`] per method and seed), re-openable by the CLI and the GUI;
//! * [`table`]: the comparison table (gap to retrain, Avg. Gap, run time,
//!   mean ± std over seeds, best per column), as data and as text/CSV;
//! * [`hash`]: content hashes of inputs and models;
//! * [`cli`]: `lethe study FILE` and `lethe study show DIR`.

pub mod cache;
pub mod cli;
pub mod hash;
pub mod results;
pub mod runner;
pub mod spec;
pub mod table;

pub use results::{RowKind, RunResult, StudyResults};
pub use spec::StudySpec;
pub use table::{Cell, ComparisonTable, TableRow};

use std::path::PathBuf;

/// A study failed; the message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The study file is unreadable or malformed.
    #[error("{}: {message}", path.display())]
    Spec {
        /// The study file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file of the study folder or the cache could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A stored result does not fit (another study, another format).
    #[error("{}: {message}", path.display())]
    Stored {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading the data or the forget list failed.
    #[error(transparent)]
    Eval(Box<crate::eval::EvalError>),
    /// A plugin could not be found, or its parameters are invalid.
    #[error("{0}")]
    Plugin(String),
    /// A job of the study failed.
    #[error("{what} failed: {message}")]
    Job {
        /// Which run and step, e.g. `FT, seed 1: unlearning`.
        what: String,
        /// The failure, with the worker's log when there is one.
        message: String,
    },
}

impl From<crate::eval::EvalError> for StudyError {
    fn from(e: crate::eval::EvalError) -> Self {
        StudyError::Eval(Box::new(e))
    }
}

impl StudyError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> StudyError {
        StudyError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
