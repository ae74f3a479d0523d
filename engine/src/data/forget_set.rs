//! Forget sets: the training samples an unlearning run must forget, chosen by index list,
//! by class, at random, or by matching a data subject's own image files to training
//! samples by content hash.
//!
//! Every constructor validates against the training part of a split: a forget set is a
//! non-empty, duplicate-free, proper subset of the training samples.

use super::dataset::{Dataset, SampleHash, hash_pixels};
use super::error::DataError;
use super::image_decode::{decode_image_file, is_image_file};
use super::image_folder::{check_same, sorted_entries};
use super::rng::SplitMix64;
use super::split::Split;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Why a forget set could not be made. Each variant names the file and line (or image
/// file) at fault, because these files are written by hand or by other tools.
#[derive(Debug, thiserror::Error)]
pub enum ForgetSetError {
    /// The list file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The list file's extension is not `.csv`, `.txt` or `.json`.
    #[error("{}: unsupported forget-list format (use .csv, .txt or .json)", path.display())]
    UnsupportedListFormat {
        /// The file.
        path: PathBuf,
    },
    /// A line (or JSON entry) is not a sample index.
    #[error("{}:{line}: cannot read {text:?} as a sample index: {reason}", path.display())]
    Unparseable {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
        /// What was expected.
        reason: String,
    },
    /// An index outside the dataset.
    #[error("{}:{line}: index {index} is out of range (the dataset has {len} samples, 0..{len})", path.display())]
    OutOfRange {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The index.
        index: i64,
        /// Dataset size.
        len: usize,
    },
    /// An index of a validation or test sample: those were never trained on.
    #[error("{}:{line}: sample {index} is not in the training split", path.display())]
    NotInTrain {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The index.
        index: i64,
    },
    /// The same index twice.
    #[error("{}:{line}: index {index} is listed twice (first on line {first_line})", path.display())]
    Duplicate {
        /// The list file.
        path: PathBuf,
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first occurrence.
        first_line: usize,
        /// The index.
        index: i64,
    },
    /// Nothing to forget.
    #[error("{origin}: the forget set is empty")]
    Empty {
        /// Where the set came from (a file, a class, a fraction).
        origin: String,
    },
    /// Forgetting every training sample leaves nothing to retain.
    #[error(
        "{origin}: the forget set is the whole training set ({len} samples); nothing would be retained"
    )]
    WholeTrainSet {
        /// Where the set came from.
        origin: String,
        /// Training set size.
        len: usize,
    },
    /// A class label the dataset does not have.
    #[error("class {class} does not exist (the dataset has classes 0..{num_classes})")]
    UnknownClass {
        /// The label asked for.
        class: i64,
        /// Number of classes.
        num_classes: usize,
    },
    /// A fraction outside (0, 1).
    #[error("fraction {fraction} must be strictly between 0 and 1")]
    InvalidFraction {
        /// The fraction asked for.
        fraction: f64,
    },
    /// A file in a forget folder that is not a PNG/JPEG.
    #[error("{}: not an image file (forget folders may hold only .png, .jpg, .jpeg)", path.display())]
    UnknownFile {
        /// The file.
        path: PathBuf,
    },
    /// An image in a forget folder could not be decoded or has the wrong size.
    #[error(transparent)]
    Image(#[from] DataError),
    /// Two files in a forget folder hold the same picture.
    #[error("{}: same picture as {}", path.display(), first.display())]
    DuplicateFile {
        /// The second file.
        path: PathBuf,
        /// The first file with that content.
        first: PathBuf,
    },
    /// Files that match no training sample.
    #[error(
        "{} of {total} file(s) match no training sample: {}; a picture that matches nothing cannot be forgotten (the model never trained on it, or it was edited): take it out of the folder and run again",
        files.len(),
        list_files(files)
    )]
    Unmatched {
        /// The unmatched files.
        files: Vec<PathBuf>,
        /// Files examined.
        total: usize,
    },
}

fn list_files(files: &[PathBuf]) -> String {
    const SHOWN: usize = 5;
    let mut text = files
        .iter()
        .take(SHOWN)
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        text.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    text
}

/// Sorted stable indices of training samples to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetSet {
    indices: Vec<i64>,
    origin: String,
}

impl ForgetSet {
    /// The stable indices, ascending.
    pub fn indices(&self) -> &[i64] {
        &self.indices
    }

    /// Number of samples to forget.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Always false: empty forget sets are rejected.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Where the set came from, for reports ("forget.csv", "class 3", …).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether the set is whole classes: no training sample outside it has the
    /// label of a sample in it (class-wise forgetting, as UNSIR requires).
    pub fn is_whole_classes(&self, dataset: &Dataset, train: &[i64]) -> bool {
        // Stable indices need not be positions: map them through the dataset.
        let labels: HashMap<i64, i64> = dataset
            .indices()
            .iter()
            .copied()
            .zip(dataset.label_slice().iter().copied())
            .collect();
        let label = |i: i64| labels.get(&i).copied();
        let forget: HashSet<i64> = self.indices.iter().copied().collect();
        let classes: HashSet<i64> = self.indices.iter().filter_map(|&i| label(i)).collect();
        !train
            .iter()
            .filter(|i| !forget.contains(i))
            .any(|&i| label(i).is_some_and(|l| classes.contains(&l)))
    }

    /// Training samples not in the forget set, ascending.
    pub fn retain(&self, train: &[i64]) -> Vec<i64> {
        let forget: HashSet<i64> = self.indices.iter().copied().collect();
        let mut retain: Vec<i64> = train
            .iter()
            .copied()
            .filter(|i| !forget.contains(i))
            .collect();
        retain.sort_unstable();
        retain
    }

    /// Final checks shared by every constructor.
    fn finish(
        mut indices: Vec<i64>,
        origin: String,
        train: &[i64],
    ) -> Result<Self, ForgetSetError> {
        indices.sort_unstable();
        indices.dedup();
        if indices.is_empty() {
            return Err(ForgetSetError::Empty { origin });
        }
        let train_unique: HashSet<i64> = train.iter().copied().collect();
        if indices.len() >= train_unique.len() {
            return Err(ForgetSetError::WholeTrainSet {
                origin,
                len: train_unique.len(),
            });
        }
        Ok(ForgetSet { indices, origin })
    }

    /// The forget set a path names: a folder of the data subject's pictures,
    /// matched by content as [`match_image_folder`] does (every picture must
    /// match: one that matches nothing is an error naming it, since it was
    /// asked to be forgotten), or a list file ([`ForgetSet::from_list_file`]).
    pub fn from_path(
        path: &Path,
        dataset: &Dataset,
        train: &[i64],
    ) -> Result<ForgetSet, ForgetSetError> {
        if path.is_dir() {
            match_image_folder(path, dataset, train)?.into_forget_set(train)
        } else {
            ForgetSet::from_list_file(path, dataset.len(), train)
        }
    }

    /// Reads sample indices from a `.txt` (one per line; blank lines and `#` comments
    /// ignored), `.csv` (first column, or the column headed `index`; an optional header
    /// line) or `.json` (an array of integers, or `{"indices": [...]}`) file.
    /// `dataset_len` bounds the indices; each must be a training sample.
    pub fn from_list_file(
        path: &Path,
        dataset_len: usize,
        train: &[i64],
    ) -> Result<Self, ForgetSetError> {
        let text = std::fs::read_to_string(path).map_err(|source| ForgetSetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let entries = match ext.as_str() {
            "txt" => super::forget_list::parse_txt(path, &text)?,
            "csv" => super::forget_list::parse_csv(path, &text)?,
            "json" => super::forget_list::parse_json(path, &text)?,
            _ => {
                return Err(ForgetSetError::UnsupportedListFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        let train_set: HashSet<i64> = train.iter().copied().collect();
        let mut first_line: HashMap<i64, usize> = HashMap::new();
        for &(index, line) in &entries {
            let path = path.to_path_buf();
            if index < 0 || index as usize >= dataset_len {
                return Err(ForgetSetError::OutOfRange {
                    path,
                    line,
                    index,
                    len: dataset_len,
                });
            }
            if let Some(&first_line) = first_line.get(&index) {
                return Err(ForgetSetError::Duplicate {
                    path,
                    line,
                    first_line,
                    index,
                });
            }
            if !train_set.contains(&index) {
                return Err(ForgetSetError::NotInTrain { path, line, index });
            }
            first_line.insert(index, line);
        }
        let indices = entries.into_iter().map(|(i, _)| i).collect();
        Self::finish(indices, path.display().to_string(), train)
    }

    /// Every training sample whose label is `class`.
    pub fn from_class(
        dataset: &Dataset,
        train: &[i64],
        class: i64,
    ) -> Result<Self, ForgetSetError> {
        if class < 0 || class as usize >= dataset.num_classes() {
            return Err(ForgetSetError::UnknownClass {
                class,
                num_classes: dataset.num_classes(),
            });
        }
        let train_set: HashSet<i64> = train.iter().copied().collect();
        let indices = dataset
            .indices()
            .iter()
            .zip(dataset.label_slice())
            .filter(|&(i, &l)| l == class && train_set.contains(i))
            .map(|(&i, _)| i)
            .collect();
        let name = dataset
            .classes()
            .get(class as usize)
            .cloned()
            .unwrap_or_default();
        Self::finish(indices, format!("class {class} ({name})"), train)
    }

    /// `round(fraction × |train|)` training samples drawn with SplitMix64(`seed`); the
    /// same seed always picks the same samples.
    pub fn random_fraction(
        train: &[i64],
        fraction: f64,
        seed: u64,
    ) -> Result<Self, ForgetSetError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(ForgetSetError::InvalidFraction { fraction });
        }
        let mut pool: Vec<i64> = train.to_vec();
        pool.sort_unstable();
        pool.dedup();
        let k = (fraction * pool.len() as f64).round() as usize;
        SplitMix64::new(seed).shuffle(&mut pool);
        pool.truncate(k);
        Self::finish(
            pool,
            format!("random {fraction} of train (seed {seed})"),
            train,
        )
    }

    /// Matches a folder of images to training samples and makes the forget set; fails if
    /// any file matches nothing. Use [`match_image_folder`] first to show the counts.
    pub fn from_image_folder(
        dir: &Path,
        dataset: &Dataset,
        train: &[i64],
    ) -> Result<Self, ForgetSetError> {
        match_image_folder(dir, dataset, train)?.into_forget_set(train)
    }
}

/// One image file of a forget folder and the training samples it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedFile {
    /// The file.
    pub path: PathBuf,
    /// Stable indices of the training samples with the same pixels (more than one when
    /// the training set holds duplicates; all of them are forgotten).
    pub indices: Vec<i64>,
}

/// The outcome of matching a forget folder against the training set.
#[derive(Debug, Clone)]
pub struct FolderMatch {
    /// The folder.
    pub dir: PathBuf,
    /// Files that matched at least one training sample.
    pub matched: Vec<MatchedFile>,
    /// Files that matched none.
    pub unmatched: Vec<PathBuf>,
}

impl FolderMatch {
    /// Number of files that matched.
    pub fn matched_count(&self) -> usize {
        self.matched.len()
    }

    /// Number of files that matched nothing.
    pub fn unmatched_count(&self) -> usize {
        self.unmatched.len()
    }

    /// The forget set, refusing if any file matched nothing (a photo we cannot find must
    /// not be silently ignored when someone asked for it to be forgotten).
    pub fn into_forget_set(self, train: &[i64]) -> Result<ForgetSet, ForgetSetError> {
        if !self.unmatched.is_empty() {
            return Err(ForgetSetError::Unmatched {
                total: self.matched.len() + self.unmatched.len(),
                files: self.unmatched,
            });
        }
        let files = self.matched.len();
        let indices: Vec<i64> = self.matched.into_iter().flat_map(|m| m.indices).collect();
        let origin = format!(
            "{}: {files} picture(s) matched {} training sample(s), none unmatched",
            self.dir.display(),
            indices.len()
        );
        ForgetSet::finish(indices, origin, train)
    }
}

/// Decodes every image in `dir` exactly as the ImageFolder loader does (converted to the
/// dataset's channel count, never resized) and looks its pixel hash up among the training
/// samples. Non-image files, undecodable or wrongly sized images and two files with the
/// same picture are errors naming the file; files matching nothing are reported.
pub fn match_image_folder(
    dir: &Path,
    dataset: &Dataset,
    train: &[i64],
) -> Result<FolderMatch, ForgetSetError> {
    let train_set: HashSet<i64> = train.iter().copied().collect();
    let mut by_hash: HashMap<SampleHash, Vec<i64>> = HashMap::new();
    for (hash, &index) in dataset.hashes().iter().zip(dataset.indices()) {
        if train_set.contains(&index) {
            by_hash.entry(*hash).or_default().push(index);
        }
    }
    let files = sorted_entries(dir).map_err(|e| match e {
        DataError::Io { path, source } => ForgetSetError::Io { path, source },
        other => ForgetSetError::Image(other),
    })?;
    let shape = [dataset.channels(), dataset.height(), dataset.width()];
    let mut seen: HashMap<SampleHash, PathBuf> = HashMap::new();
    let mut result = FolderMatch {
        dir: dir.to_path_buf(),
        matched: Vec::new(),
        unmatched: Vec::new(),
    };
    for file in files {
        if file.is_dir() || !is_image_file(&file) {
            return Err(ForgetSetError::UnknownFile { path: file });
        }
        let image = decode_image_file(&file)?.into_channels(dataset.channels());
        check_same(&file, &image, shape, dataset.source())?;
        let hash = hash_pixels(&image.pixels);
        if let Some(first) = seen.get(&hash) {
            return Err(ForgetSetError::DuplicateFile {
                path: file,
                first: first.clone(),
            });
        }
        seen.insert(hash, file.clone());
        match by_hash.get(&hash) {
            Some(indices) => result.matched.push(MatchedFile {
                path: file,
                indices: indices.clone(),
            }),
            None => result.unmatched.push(file),
        }
    }
    if result.matched.is_empty() && result.unmatched.is_empty() {
        return Err(ForgetSetError::Empty {
            origin: dir.display().to_string(),
        });
    }
    Ok(result)
}

impl Split {
    /// `(forget, retain)`: the forget set's indices and the rest of the training part.
    pub fn forget_retain(&self, forget: &ForgetSet) -> (Vec<i64>, Vec<i64>) {
        (forget.indices().to_vec(), forget.retain(&self.train))
    }
}
