//! torchvision-style ImageFolder: `root/<class>/<image>.png|jpg`, classes and files in
//! sorted name order so that stable indices do not depend on the file system.

use super::dataset::{Dataset, Format, RawSamples};
use super::error::DataError;
use super::image_decode::{DecodedImage, decode_image_file, is_image_file};
use std::path::{Path, PathBuf};

/// How an ImageFolder's channel count is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelMode {
    /// Every image must decode to the same channel count as the first; a mix of grayscale
    /// and colour is an error naming the first file that differs.
    #[default]
    Auto,
    /// Convert everything to one grayscale channel.
    Gray,
    /// Convert everything to three RGB channels.
    Rgb,
}

/// Sorted entries of `dir` that are not hidden (dot files are OS metadata such as
/// `.DS_Store`, never data).
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads `root/<class>/<image>` files. Class names are the sorted subfolder names; within
/// a class, files are sorted by name; non-image files are skipped (as torchvision does).
/// All images must have the same size (nothing is resized).
pub fn load_image_folder(root: &Path, mode: ChannelMode) -> Result<Dataset, DataError> {
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            detail: "no class subfolders".into(),
        });
    }
    let mut classes = Vec::new();
    let mut raw = RawSamples {
        pixels: Vec::new(),
        shape: [0, 0, 0],
        labels: Vec::new(),
    };
    let mut reference: Option<PathBuf> = None;
    for (label, dir) in class_dirs.iter().enumerate() {
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let files: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::Empty {
                path: dir.clone(),
                detail: "class folder has no PNG or JPEG files".into(),
            });
        }
        for file in files {
            let image = decode_for_mode(&file, mode)?;
            let shape = [image.channels, image.height, image.width];
            match &reference {
                None => {
                    raw.shape = shape;
                    reference = Some(file.clone());
                }
                Some(first) => check_same(&file, &image, raw.shape, first)?,
            }
            raw.pixels.extend_from_slice(&image.pixels);
            raw.labels.push(label as i64);
        }
    }
    raw.into_dataset(classes, root, Format::ImageFolder)
}

fn decode_for_mode(file: &Path, mode: ChannelMode) -> Result<DecodedImage, DataError> {
    let image = decode_image_file(file)?;
    Ok(match mode {
        ChannelMode::Auto => image,
        ChannelMode::Gray => image.into_channels(1),
        ChannelMode::Rgb => image.into_channels(3),
    })
}

/// Checks an image against the dataset's `[C, H, W]`, naming both files on a mismatch.
pub(crate) fn check_same(
    file: &Path,
    image: &DecodedImage,
    expected: [usize; 3],
    reference: &Path,
) -> Result<(), DataError> {
    let [c, h, w] = expected;
    if (image.height, image.width) != (h, w) {
        return Err(DataError::Size {
            path: file.to_path_buf(),
            found_h: image.height,
            found_w: image.width,
            expected_h: h,
            expected_w: w,
            reference: reference.to_path_buf(),
        });
    }
    if image.channels != c {
        return Err(DataError::Channels {
            path: file.to_path_buf(),
            found: image.channels,
            expected: c,
            reference: reference.to_path_buf(),
        });
    }
    Ok(())
}
