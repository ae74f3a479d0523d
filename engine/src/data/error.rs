//! Errors from loading datasets. Every variant names the file it is about, because the
//! user usually has several candidate files open and needs to know which one to fix.

use std::path::PathBuf;

/// Why a dataset could not be loaded or a split could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is corrupt, truncated or not in the format it claims.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// An image's size differs from the rest of the dataset; images are never resized,
    /// because resizing would change their content hashes.
    #[error(
        "{}: image is {found_h}x{found_w} but the dataset's images are {expected_h}x{expected_w} (first seen in {}); images are not resized",
        path.display(),
        reference.display()
    )]
    Size {
        /// The offending image.
        path: PathBuf,
        /// Its height.
        found_h: usize,
        /// Its width.
        found_w: usize,
        /// The dataset's height.
        expected_h: usize,
        /// The dataset's width.
        expected_w: usize,
        /// The file (or dataset) that fixed the expected size.
        reference: PathBuf,
    },
    /// An image's channel count differs from the rest of an ImageFolder in `Auto` mode.
    #[error(
        "{}: image has {found} channel(s) but {} has {expected}; choose grayscale or RGB explicitly to convert",
        path.display(),
        reference.display()
    )]
    Channels {
        /// The offending image.
        path: PathBuf,
        /// Its channel count after dropping alpha.
        found: usize,
        /// The channel count of the first image.
        expected: usize,
        /// The first image.
        reference: PathBuf,
    },
    /// The dataset holds no samples.
    #[error("{}: no samples found{}", path.display(), if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Empty {
        /// The file or folder.
        path: PathBuf,
        /// What was looked for.
        detail: String,
    },
    /// The path is not a dataset format Lethe recognises.
    #[error("{}: unrecognised dataset: {reason}", path.display())]
    Unrecognised {
        /// The path.
        path: PathBuf,
        /// What was expected.
        reason: String,
    },
    /// A split could not be made with the requested sizes.
    #[error("invalid split: {0}")]
    Split(String),
    /// Subset positions outside the dataset.
    #[error("position {position} is outside the dataset of {len} samples")]
    Position {
        /// The position asked for.
        position: i64,
        /// The dataset's size.
        len: usize,
    },
    /// libtorch refused an operation on the loaded data.
    #[error("{}: {source}", path.display())]
    Tensor {
        /// The dataset's source.
        path: PathBuf,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
