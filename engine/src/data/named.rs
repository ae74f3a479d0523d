//! Datasets known by a short name: real datasets a user installs from their
//! distribution rather than downloads, so `--data fashion-mnist` works wherever
//! a dataset path does.
//!
//! * `fashion-mnist`: Zalando's Fashion-MNIST (MIT licence), 60,000 training and
//!   10,000 test images of clothing, from Debian's package `dataset-fashion-mnist`
//!   (its four IDX files in `/usr/share/datasets/fashion-mnist`). Loaded by its
//!   short name it gets its class names and a validation split: 5,000 of the
//!   60,000 training images, drawn with [`VALIDATION_SEED`], as the Alignment
//!   Calibration protocol holds out (55,000 / 5,000 / 10,000).

use super::{DataError, Dataset, Split};
use std::path::{Path, PathBuf};

/// The short name of Fashion-MNIST.
pub const FASHION_MNIST: &str = "fashion-mnist";
/// Where Debian's `dataset-fashion-mnist` puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The Debian package that provides it.
pub const FASHION_MNIST_PACKAGE: &str = "dataset-fashion-mnist";
/// Fashion-MNIST's class names, by label (from its README).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Validation images held out of Fashion-MNIST's training set.
pub const VALIDATION: usize = 5_000;
/// The seed that draws them (fixed: the split is part of the dataset's identity).
pub const VALIDATION_SEED: u64 = 0;

/// Environment variable overriding [`FASHION_MNIST_DIR`] (a copy elsewhere).
pub const FASHION_MNIST_ENV: &str = "LETHE_FASHION_MNIST_DIR";

/// The folder a short name stands for, when `path` is one and no file or
/// folder of that name exists (a real path always wins).
pub fn resolve(path: &Path) -> Option<PathBuf> {
    if path.exists() || path.as_os_str() != FASHION_MNIST {
        return None;
    }
    Some(
        std::env::var_os(FASHION_MNIST_ENV)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), PathBuf::from),
    )
}

/// The installed folder a dataset path is, when it is one (by its short name,
/// or the folder itself however it is written): it then loads with its class
/// names and validation split.
pub fn installed(path: &Path) -> Option<PathBuf> {
    if let Some(dir) = resolve(path) {
        return Some(dir);
    }
    let dir = std::env::var_os(FASHION_MNIST_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), PathBuf::from);
    let same = match (std::fs::canonicalize(path), std::fs::canonicalize(&dir)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same.then_some(dir)
}

/// `path` with a short name replaced by the folder it stands for (for records
/// and hashes, which need the real path).
/// A short name whose folder is missing stays as it is, so that loading it
/// says which package to install.
pub fn resolved(path: &Path) -> PathBuf {
    resolve(path)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Parses a `--data` argument: a path, or a short name (kept as the folder it
/// stands for, so records and hashes name the real files).
pub fn parse_data_arg(s: &str) -> Result<PathBuf, String> {
    Ok(resolved(Path::new(s)))
}

/// The short names and what they are, for help texts and pickers.
pub fn known() -> Vec<(&'static str, &'static str)> {
    vec![(
        FASHION_MNIST,
        "Fashion-MNIST, 70,000 images (Debian package dataset-fashion-mnist)",
    )]
}

/// Loads a dataset given by short name.
pub(super) fn load(name: &Path, dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Unrecognised {
            path: name.to_path_buf(),
            reason: format!(
                "the short name for Fashion-MNIST, but {} does not exist: install the Debian \
                 package {FASHION_MNIST_PACKAGE} (installer/setup.sh does; or apt install \
                 {FASHION_MNIST_PACKAGE}), or point {FASHION_MNIST_ENV} at a copy of its four IDX files",
                dir.display()
            ),
        });
    }
    let d = super::load_idx_dir(dir)?;
    let Some(recorded) = d.recorded_split().cloned() else {
        return Err(DataError::format(
            dir,
            "expected Fashion-MNIST's train and t10k files (60,000 + 10,000 images)",
        ));
    };
    if d.num_classes() != FASHION_MNIST_CLASSES.len() || recorded.train.len() <= VALIDATION {
        return Err(DataError::format(
            dir,
            format!(
                "this is not Fashion-MNIST: {} classes, {} training images",
                d.num_classes(),
                recorded.train.len()
            ),
        ));
    }
    // Hold out the validation images from the training set, the same ones
    // on every machine.
    let picks = Split::from_counts(
        recorded.train.len(),
        recorded.train.len() - VALIDATION,
        VALIDATION,
        0,
        VALIDATION_SEED,
    )?;
    let mut train: Vec<i64> = picks
        .train
        .iter()
        .map(|&i| recorded.train[i as usize])
        .collect();
    let mut val: Vec<i64> = picks
        .val
        .iter()
        .map(|&i| recorded.train[i as usize])
        .collect();
    train.sort_unstable();
    val.sort_unstable();
    let split = Split {
        train,
        val,
        test: recorded.test.clone(),
    };
    d.with_classes(
        FASHION_MNIST_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect(),
    )?
    .with_recorded_split(split)
}
