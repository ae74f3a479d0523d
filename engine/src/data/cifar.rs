//! CIFAR-10 and CIFAR-100 binary batches (the "binary version" from the CIFAR site).
//!
//! CIFAR-10 records are 1 label byte + 3072 pixel bytes; CIFAR-100 records are a coarse
//! and a fine label byte + 3072 pixel bytes. Pixels are already CHW (1024 R, 1024 G,
//! 1024 B), so they are copied as is. CIFAR-100 uses the fine (100-class) label.

use super::dataset::{Dataset, Format, RawSamples};
use super::error::DataError;
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which CIFAR layout a batch file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes, two label bytes (coarse, fine) per record.
    Cifar100,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    fn format(self) -> Format {
        match self {
            CifarKind::Cifar10 => Format::Cifar10,
            CifarKind::Cifar100 => Format::Cifar100,
        }
    }
}

fn read_batches(files: &[PathBuf], kind: CifarKind) -> Result<RawSamples, DataError> {
    let record = kind.label_bytes() + PIXELS;
    let mut raw = RawSamples {
        pixels: Vec::new(),
        shape: [3, 32, 32],
        labels: Vec::new(),
    };
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::format(
                file,
                format!(
                    "truncated or not a {kind:?} batch: {} bytes is not a whole number of {record}-byte records",
                    bytes.len()
                ),
            ));
        }
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[kind.label_bytes() - 1];
            if usize::from(label) >= kind.num_classes() {
                return Err(DataError::format(
                    file,
                    format!(
                        "record {i} has label {label}, but {kind:?} has {} classes",
                        kind.num_classes()
                    ),
                ));
            }
            raw.labels.push(i64::from(label));
            raw.pixels.extend_from_slice(&rec[kind.label_bytes()..]);
        }
    }
    Ok(raw)
}

/// Loads batch files in the order given; stable indices run through them in that order.
/// Class names are CIFAR-10's standard names, or `0..99` for CIFAR-100 unless a
/// `fine_label_names.txt` sits beside the first file.
pub fn load_cifar(files: &[PathBuf], kind: CifarKind) -> Result<Dataset, DataError> {
    let first = files.first().ok_or_else(|| DataError::Empty {
        path: PathBuf::new(),
        detail: "no CIFAR batch files given".into(),
    })?;
    let classes = class_names(first.parent().unwrap_or(Path::new(".")), kind)?;
    read_batches(files, kind)?.into_dataset(classes, first, kind.format())
}

fn class_names(dir: &Path, kind: CifarKind) -> Result<Vec<String>, DataError> {
    let (file, fallback): (&str, Vec<String>) = match kind {
        CifarKind::Cifar10 => (
            "batches.meta.txt",
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        ),
        CifarKind::Cifar100 => (
            "fine_label_names.txt",
            (0..100).map(|k| k.to_string()).collect(),
        ),
    };
    let path = dir.join(file);
    if !path.is_file() {
        return Ok(fallback);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != kind.num_classes() {
        return Err(DataError::format(
            &path,
            format!(
                "{} class names, expected {}",
                names.len(),
                kind.num_classes()
            ),
        ));
    }
    Ok(names)
}

/// The train and test batch files of a CIFAR folder, if it is one.
fn find_batches(dir: &Path) -> Option<(CifarKind, Vec<PathBuf>, Vec<PathBuf>)> {
    let c10: Vec<PathBuf> = (1..=5)
        .map(|k| dir.join(format!("data_batch_{k}.bin")))
        .filter(|p| p.is_file())
        .collect();
    if !c10.is_empty() {
        let test = dir.join("test_batch.bin");
        let test = if test.is_file() {
            vec![test]
        } else {
            Vec::new()
        };
        return Some((CifarKind::Cifar10, c10, test));
    }
    let train = dir.join("train.bin");
    if train.is_file() {
        let test = dir.join("test.bin");
        let test = if test.is_file() {
            vec![test]
        } else {
            Vec::new()
        };
        return Some((CifarKind::Cifar100, vec![train], test));
    }
    None
}

/// Whether `dir` looks like an unpacked `cifar-10-batches-bin` or `cifar-100-binary`.
pub(crate) fn is_cifar_dir(dir: &Path) -> bool {
    find_batches(dir).is_some()
}

/// Loads a CIFAR folder: training batches, then the test batch when present, recording
/// the official split.
pub fn load_cifar_dir(dir: &Path) -> Result<Dataset, DataError> {
    let (kind, train_files, test_files) =
        find_batches(dir).ok_or_else(|| DataError::Unrecognised {
            path: dir.to_path_buf(),
            reason: "no data_batch_N.bin (CIFAR-10) or train.bin (CIFAR-100)".into(),
        })?;
    let classes = class_names(dir, kind)?;
    let train = read_batches(&train_files, kind)?;
    if test_files.is_empty() {
        return train.into_dataset(classes, dir, kind.format());
    }
    let test = read_batches(&test_files, kind)?;
    let (all, split) = RawSamples::train_then_test(dir, train, test)?;
    all.into_dataset(classes, dir, kind.format())?
        .with_recorded_split(split)
}
