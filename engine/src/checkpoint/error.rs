//! Checkpoint errors. Every variant names the file involved.

use std::fmt;
use std::path::PathBuf;

use crate::models::ModelError;

/// A tensor whose shape differs between the file and the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor name.
    pub name: String,
    /// Shape the architecture expects.
    pub expected: Vec<i64>,
    /// Shape found in the file.
    pub found: Vec<i64>,
}

/// Differences between a state dict and an architecture's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MismatchDetails {
    /// Variables the architecture needs but the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file the architecture has no use for.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes.
    pub shapes: Vec<ShapeMismatch>,
}

impl MismatchDetails {
    /// True when the state dict fits the architecture exactly.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }
}

// Long lists are cut so that an error about a wrong file stays readable.
const SHOWN: usize = 8;

fn list(f: &mut fmt::Formatter<'_>, label: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(
        f,
        "; {label} ({}): {}",
        items.len(),
        items
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if items.len() > SHOWN {
        write!(f, ", … and {} more", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for MismatchDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<String> = self
            .shapes
            .iter()
            .map(|s| format!("{} expected {:?} found {:?}", s.name, s.expected, s.found))
            .collect();
        write!(f, "state dict does not fit")?;
        list(f, "shape differences", &shapes)?;
        list(f, "missing keys", &self.missing)?;
        list(f, "unexpected keys", &self.unexpected)
    }
}

/// Errors reading, writing or applying checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a format Lethe knows.
    #[error("{}: not a recognised checkpoint ({reason})", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What the file looked like.
        reason: String,
    },
    /// The file is damaged or cut short.
    #[error("{}: corrupt or truncated checkpoint: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A valid file holding something Lethe cannot use.
    #[error("{}: unsupported checkpoint content: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported and what to do instead.
        reason: String,
    },
    /// The weights do not fit the architecture.
    #[error("{}: weights do not fit {arch}: {details}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The architecture tried.
        arch: String,
        /// Missing/unexpected keys and shape differences.
        details: MismatchDetails,
    },
    /// No known architecture matches the keys and shapes.
    #[error("{}: cannot detect the architecture: {reason}", path.display())]
    UnknownArchitecture {
        /// The file.
        path: PathBuf,
        /// Why detection failed.
        reason: String,
    },
    /// Refused to replace an existing file.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// libtorch reported an error for this file.
    #[error("{}: {source}", path.display())]
    Torch {
        /// The file.
        path: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The architecture description is invalid.
    #[error("{}: {source}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// The model error.
        source: ModelError,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CheckpointError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CheckpointError::Unsupported {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn torch(path: impl Into<PathBuf>, source: tch::TchError) -> Self {
        CheckpointError::Torch {
            path: path.into(),
            source,
        }
    }
}
