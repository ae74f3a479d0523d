//! Opening a dataset by path alone, and the summary behind `lethe data inspect`.

use super::cifar::{CifarKind, is_cifar_dir, load_cifar, load_cifar_dir};
use super::dataset::{Dataset, Format, hash_hex};
use super::error::DataError;
use super::idx::{is_idx_dir, load_idx, load_idx_dir};
use super::image_folder::{ChannelMode, load_image_folder};
use super::tensor_file::{load_npz, load_safetensors};
use std::path::{Path, PathBuf};

/// Opens a dataset, choosing the loader from the path:
///
/// * `.npz`, `.safetensors` files: tensor files;
/// * an IDX images file (name containing `idx3`): paired with the labels file of the
///   same name with `images`→`labels` and `idx3`→`idx1`;
/// * a `.bin` file: a CIFAR-10 batch, or CIFAR-100 if its size only fits that layout;
/// * a folder with `train-images-idx3-ubyte`: MNIST-style (train, then `t10k` if present);
/// * a folder with `data_batch_N.bin` or `train.bin`: CIFAR-10/100 (train, then test);
/// * any other folder: an ImageFolder with [`ChannelMode::Auto`].
pub fn load(path: &Path) -> Result<Dataset, DataError> {
    if let Some(dir) = super::named::installed(path) {
        return super::named::load(path, &dir);
    }
    if path.is_dir() {
        return if is_idx_dir(path) {
            load_idx_dir(path)
        } else if is_cifar_dir(path) {
            load_cifar_dir(path)
        } else {
            load_image_folder(path, ChannelMode::Auto)
        };
    }
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".npz") {
        load_npz(path)
    } else if name.ends_with(".safetensors") {
        load_safetensors(path)
    } else if name.contains("idx3") {
        let labels = name.replace("images", "labels").replace("idx3", "idx1");
        let labels_path = path.with_file_name(&labels);
        if labels == name || !labels_path.is_file() {
            return Err(DataError::Unrecognised {
                path: path.to_path_buf(),
                reason: format!("IDX images file without its labels file {labels}"),
            });
        }
        load_idx(path, &labels_path)
    } else if name.ends_with(".bin") {
        let len = meta.len();
        let kind = if len % 3073 != 0 && len % 3074 == 0 {
            CifarKind::Cifar100
        } else {
            CifarKind::Cifar10
        };
        load_cifar(&[path.to_path_buf()], kind)
    } else {
        Err(DataError::Unrecognised {
            path: path.to_path_buf(),
            reason:
                "expected .npz, .safetensors, an IDX images file, a CIFAR .bin batch or a folder"
                    .into(),
        })
    }
}

/// What `lethe data inspect` prints about a dataset.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DatasetSummary {
    /// The path inspected.
    pub path: PathBuf,
    /// The detected format.
    pub format: Format,
    /// Number of samples.
    pub len: usize,
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    /// `(class name, sample count)` by label.
    pub classes: Vec<(String, usize)>,
    /// SHA-256 of the first sample's pixels.
    pub first_hash: String,
    /// Sizes of a recorded train/val/test split, if the source has one.
    pub split: Option<[usize; 3]>,
}

impl DatasetSummary {
    /// Summarises a loaded dataset.
    pub fn of(path: &Path, dataset: &Dataset) -> Self {
        DatasetSummary {
            path: path.to_path_buf(),
            format: dataset.format(),
            len: dataset.len(),
            shape: [dataset.channels(), dataset.height(), dataset.width()],
            classes: dataset
                .classes()
                .iter()
                .cloned()
                .zip(dataset.class_counts())
                .collect(),
            first_hash: dataset.hashes().first().map(hash_hex).unwrap_or_default(),
            split: dataset
                .recorded_split()
                .map(|s| [s.train.len(), s.val.len(), s.test.len()]),
        }
    }
}

/// Loads `path` (see [`load`]) and summarises it.
pub fn inspect(path: &Path) -> Result<DatasetSummary, DataError> {
    let dataset = load(path)?;
    Ok(DatasetSummary::of(path, &dataset))
}

impl std::fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [c, h, w] = self.shape;
        writeln!(f, "path: {}", self.path.display())?;
        writeln!(f, "format: {}", self.format)?;
        writeln!(f, "samples: {}", self.len)?;
        writeln!(f, "shape: [{c}, {h}, {w}] (channels, height, width), uint8")?;
        writeln!(f, "classes: {}", self.classes.len())?;
        for (label, (name, count)) in self.classes.iter().enumerate() {
            // Unnamed classes are named by their label; don't print it twice.
            if *name == label.to_string() {
                writeln!(f, "  {label:>3}: {count}")?;
            } else {
                writeln!(f, "  {label:>3} {name}: {count}")?;
            }
        }
        if let Some([train, val, test]) = self.split {
            writeln!(f, "recorded split: train {train}, val {val}, test {test}")?;
        }
        write!(f, "first sample sha256: {}", self.first_hash)
    }
}
