//! The one in-memory dataset type every loader produces.

use super::error::DataError;
use super::split::Split;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Which file format a dataset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// MNIST / Fashion-MNIST IDX files (optionally gzipped).
    Idx,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary batches (fine labels).
    Cifar100,
    /// Class subfolders of PNG/JPEG files.
    ImageFolder,
    /// NumPy `.npz` archive with `x` and `y`.
    Npz,
    /// safetensors file with `x` and `y`.
    Safetensors,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Idx => "IDX (MNIST-style)",
            Format::Cifar10 => "CIFAR-10 binary",
            Format::Cifar100 => "CIFAR-100 binary",
            Format::ImageFolder => "image folder",
            Format::Npz => "npz",
            Format::Safetensors => "safetensors",
        })
    }
}

/// A SHA-256 content hash of one sample's decoded pixels (u8, CHW order).
pub type SampleHash = [u8; 32];

/// Hashes one sample's pixels. Shared by the loaders and forget-set matching so that a
/// photo and the training sample it came from hash identically.
pub fn hash_pixels(chw: &[u8]) -> SampleHash {
    Sha256::digest(chw).into()
}

/// Lower-case hex of a hash, for display and reports.
pub fn hash_hex(hash: &SampleHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decoded samples before they become a [`Dataset`]: CHW u8 pixels sample after sample.
pub(crate) struct RawSamples {
    pub(crate) pixels: Vec<u8>,
    pub(crate) shape: [usize; 3],
    pub(crate) labels: Vec<i64>,
}

impl RawSamples {
    pub(crate) fn into_dataset(
        self,
        classes: Vec<String>,
        source: &Path,
        format: Format,
    ) -> Result<Dataset, DataError> {
        Dataset::from_pixels(
            self.pixels,
            self.shape,
            self.labels,
            classes,
            source,
            format,
        )
    }

    /// Appends an official test part after the training part, so that both share one
    /// stable index space and the official split is kept.
    pub(crate) fn train_then_test(
        source: &Path,
        mut train: RawSamples,
        test: RawSamples,
    ) -> Result<(RawSamples, Split), DataError> {
        if train.shape != test.shape {
            return Err(DataError::format(
                source,
                format!(
                    "train images are {:?} but test images are {:?}",
                    train.shape, test.shape
                ),
            ));
        }
        let (n_train, n_test) = (train.labels.len(), test.labels.len());
        train.pixels.extend_from_slice(&test.pixels);
        train.labels.extend_from_slice(&test.labels);
        let split = Split {
            train: (0..n_train as i64).collect(),
            val: Vec::new(),
            test: (n_train as i64..(n_train + n_test) as i64).collect(),
        };
        Ok((train, split))
    }
}

/// Unnamed classes always allowed, whatever the sample count (ImageNet's 1,000 classes,
/// so that a few samples of a large label space still load).
const MIN_CLASS_CAP: usize = 1000;

/// Most unnamed classes a dataset may have (labels `0..MAX_CLASSES`).
pub(crate) const MAX_CLASSES: usize = 100_000;

/// Images, labels and per-sample content hashes, all on the CPU.
///
/// A sample's *stable index* is its position in the source's file order; it is what
/// forget sets, splits and reports refer to. [`Dataset::subset`] keeps each sample's
/// stable index (see [`Dataset::indices`]).
pub struct Dataset {
    /// u8 `[N, C, H, W]`.
    images: Tensor,
    /// i64 `[N]`.
    labels: Tensor,
    labels_vec: Vec<i64>,
    hashes: Vec<SampleHash>,
    indices: Vec<i64>,
    classes: Vec<String>,
    shape: [usize; 3],
    source: PathBuf,
    format: Format,
    recorded_split: Option<Split>,
}

// By hand: the derived form would print every hash of every sample.
impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("source", &self.source)
            .field("format", &self.format)
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("classes", &self.classes.len())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Builds a dataset from CHW u8 pixels laid out sample after sample.
    ///
    /// `classes` may be empty, in which case classes are named `"0"`, `"1"`, … up to the
    /// largest label. Labels must lie in `0..classes.len()`.
    pub(crate) fn from_pixels(
        pixels: Vec<u8>,
        shape: [usize; 3],
        labels: Vec<i64>,
        mut classes: Vec<String>,
        source: &Path,
        format: Format,
    ) -> Result<Self, DataError> {
        let [c, h, w] = shape;
        if labels.is_empty() {
            return Err(DataError::Empty {
                path: source.to_path_buf(),
                detail: String::new(),
            });
        }
        let per = c.checked_mul(h).and_then(|x| x.checked_mul(w)).unwrap_or(0);
        if per == 0 || Some(pixels.len()) != labels.len().checked_mul(per) {
            return Err(DataError::format(
                source,
                format!(
                    "{} labels but {} pixel bytes for {c}x{h}x{w} images",
                    labels.len(),
                    pixels.len()
                ),
            ));
        }
        if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, l)| **l < 0) {
            return Err(DataError::format(
                source,
                format!("sample {i} has negative label {bad}"),
            ));
        }
        let max_label = labels.iter().copied().max().unwrap_or(0);
        // Unnamed classes get one name per label value up to the largest, so a single
        // label of 2^62 would ask for that many names: the class count is bounded by
        // the samples there are (with room for small sets of a large label space).
        let class_cap = labels.len().clamp(MIN_CLASS_CAP, MAX_CLASSES);
        if classes.is_empty() && max_label as u64 >= class_cap as u64 {
            let i = labels.iter().position(|&l| l == max_label).unwrap_or(0);
            return Err(DataError::format(
                source,
                format!(
                    "sample {i} has label {max_label}, but {} samples can use at most {class_cap} classes (labels 0..{}); labels must be class numbers counted from 0",
                    labels.len(),
                    class_cap - 1
                ),
            ));
        }
        if classes.is_empty() {
            classes = (0..=max_label).map(|k| k.to_string()).collect();
        } else if let Some((i, &bad)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= classes.len())
        {
            return Err(DataError::format(
                source,
                format!(
                    "sample {i} has label {bad} but there are only {} class names",
                    classes.len()
                ),
            ));
        }
        let hashes = pixels.chunks_exact(per).map(hash_pixels).collect();
        let n = labels.len();
        let dims = [n as i64, c as i64, h as i64, w as i64];
        let images = Tensor::from_slice(&pixels).view(dims);
        Ok(Dataset {
            images,
            labels: Tensor::from_slice(&labels),
            labels_vec: labels,
            hashes,
            indices: (0..n as i64).collect(),
            classes,
            shape,
            source: source.to_path_buf(),
            format,
            recorded_split: None,
        })
    }

    /// Names the classes (as many names as there are classes).
    pub(crate) fn with_classes(mut self, classes: Vec<String>) -> Result<Self, DataError> {
        if classes.len() != self.classes.len() {
            return Err(DataError::format(
                &self.source,
                format!(
                    "{} class names for {} classes",
                    classes.len(),
                    self.classes.len()
                ),
            ));
        }
        self.classes = classes;
        Ok(self)
    }

    /// Attaches a split recorded in the source file, after checking it fits.
    pub(crate) fn with_recorded_split(mut self, split: Split) -> Result<Self, DataError> {
        split
            .validate(self.len())
            .map_err(|e| DataError::format(&self.source, format!("recorded split: {e}")))?;
        self.recorded_split = Some(split);
        Ok(self)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels_vec.len()
    }

    /// Whether there are no samples (loaders never produce an empty dataset).
    pub fn is_empty(&self) -> bool {
        self.labels_vec.is_empty()
    }

    /// Channels per image (1 or 3 for the built-in loaders).
    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.shape[1]
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.shape[2]
    }

    /// Number of classes (at least one more than the largest label).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Class names, indexed by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// u8 images `[N, C, H, W]` on the CPU.
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// i64 labels `[N]` on the CPU.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// Labels as a plain slice.
    pub fn label_slice(&self) -> &[i64] {
        &self.labels_vec
    }

    /// Per-sample SHA-256 of the CHW u8 pixels.
    pub fn hashes(&self) -> &[SampleHash] {
        &self.hashes
    }

    /// The stable index (position in the source file order) of each row.
    pub fn indices(&self) -> &[i64] {
        &self.indices
    }

    /// Where the data was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The format it was read in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A train/val/test split stored alongside the data (the demo file and MNIST/CIFAR
    /// folders with both train and test parts have one).
    pub fn recorded_split(&self) -> Option<&Split> {
        self.recorded_split.as_ref()
    }

    /// Samples per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels_vec {
            // Labels are validated at construction, so this index is in range.
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The rows at `positions` (positions in this dataset, which equal stable indices for a
    /// freshly loaded one), keeping their stable indices and hashes.
    pub fn subset(&self, positions: &[i64]) -> Result<Dataset, DataError> {
        let len = self.len();
        if let Some(&bad) = positions.iter().find(|&&p| p < 0 || p as usize >= len) {
            return Err(DataError::Position { position: bad, len });
        }
        let pick = Tensor::from_slice(positions);
        let pos = |p: i64| p as usize;
        Ok(Dataset {
            images: self.images.index_select(0, &pick),
            labels: self.labels.index_select(0, &pick),
            labels_vec: positions.iter().map(|&p| self.labels_vec[pos(p)]).collect(),
            hashes: positions.iter().map(|&p| self.hashes[pos(p)]).collect(),
            indices: positions.iter().map(|&p| self.indices[pos(p)]).collect(),
            classes: self.classes.clone(),
            shape: self.shape,
            source: self.source.clone(),
            format: self.format,
            recorded_split: None,
        })
    }

    /// Images as f32 in `[0, 1]`, `[N, C, H, W]`.
    pub fn to_float(&self) -> Tensor {
        self.images.to_kind(Kind::Float) / 255.0
    }

    /// One sample's CHW u8 pixels (for previews and for writing a sample back out).
    pub fn sample_pixels(&self, position: usize) -> Result<Vec<u8>, DataError> {
        if position >= self.len() {
            return Err(DataError::Position {
                position: position as i64,
                len: self.len(),
            });
        }
        let flat = self.images.get(position as i64).flatten(0, -1).contiguous();
        Vec::<u8>::try_from(&flat).map_err(|source| DataError::Tensor {
            path: self.source.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_far_beyond_the_sample_count_are_refused_before_naming_classes() {
        let src = Path::new("labels.npz");
        let start = std::time::Instant::now();
        let e = Dataset::from_pixels(
            vec![0; 2],
            [1, 1, 1],
            vec![0, 1 << 40],
            Vec::new(),
            src,
            Format::Npz,
        )
        .unwrap_err()
        .to_string();
        assert!(start.elapsed().as_secs() < 2);
        assert!(
            e.contains("labels.npz") && e.contains("sample 1 has label 1099511627776"),
            "{e}"
        );

        // A few samples of a large label space are fine.
        let d = Dataset::from_pixels(
            vec![0; 3],
            [1, 1, 1],
            vec![9, 999, 0],
            Vec::new(),
            src,
            Format::Npz,
        )
        .unwrap();
        assert_eq!(d.classes().len(), 1000);
    }
}
