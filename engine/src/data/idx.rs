//! MNIST and Fashion-MNIST IDX files (`*-images-idx3-ubyte`, `*-labels-idx1-ubyte`),
//! plain or gzipped as they are distributed.

use super::dataset::{Dataset, Format, RawSamples};
use super::error::DataError;
use super::tensor_file::check_inflated_size;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const IDX_UBYTE: u8 = 0x08;

/// Reads an IDX file of `ndim` dimensions, transparently gunzipping it when it starts
/// with the gzip magic (the official MNIST mirrors ship `.gz`, and users often forget to
/// unpack). A gzip stream declares no trustworthy size, so the IDX header inside it is
/// read first and the stream is inflated to at most the size that header promises (and
/// not at all when that is out of proportion to the compressed file).
fn read_idx_file(path: &Path, ndim: u8) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let corrupt =
        |e: std::io::Error| DataError::format(path, format!("corrupt or truncated gzip: {e}"));
    let mut gz = GzDecoder::new(raw.as_slice());
    let header_len = 4 + 4 * usize::from(ndim);
    let mut out = vec![0u8; header_len];
    let mut got = 0;
    while got < header_len {
        match gz.read(&mut out[got..]).map_err(corrupt)? {
            0 => break,
            n => got += n,
        }
    }
    out.truncate(got);
    // Header errors (bad magic, wrong type) are reported by parse_idx as usual.
    let Some(dims) = out.get(4..header_len) else {
        return Ok(out);
    };
    let payload = dims
        .chunks_exact(4)
        .try_fold(1u64, |acc, d| {
            acc.checked_mul(u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
        })
        .unwrap_or(u64::MAX);
    let total = payload.saturating_add(header_len as u64);
    check_inflated_size(path, "gzip stream", total, raw.len() as u64)?;
    // One byte past the promise, so that trailing data is still reported.
    gz.take(total.saturating_sub(header_len as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    Ok(out)
}

/// Parses an IDX header and returns the dimensions and the payload, which must be exactly
/// as long as the dimensions say.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    ndim: u8,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    if bytes.len() < 4 {
        return Err(DataError::format(path, "truncated IDX file: no header"));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            "not an IDX file (bad magic number)",
        ));
    }
    if bytes[2] != IDX_UBYTE {
        return Err(DataError::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] != ndim {
        return Err(DataError::format(
            path,
            format!("IDX file has {} dimensions, expected {ndim}", bytes[3]),
        ));
    }
    let header_len = 4 + 4 * ndim as usize;
    let header = bytes
        .get(4..header_len)
        .ok_or_else(|| DataError::format(path, "truncated IDX header"))?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(
                path,
                format!("IDX dimensions {dims:?} are impossibly large"),
            )
        })?;
    let payload = &bytes[header_len..];
    if payload.len() < expected {
        return Err(DataError::format(
            path,
            format!(
                "truncated IDX file: header promises {expected} data bytes, found {}",
                payload.len()
            ),
        ));
    }
    if payload.len() > expected {
        return Err(DataError::format(
            path,
            format!(
                "IDX file has {} bytes after the {expected} the header promises",
                payload.len() - expected
            ),
        ));
    }
    Ok((dims, payload))
}

/// Loads an images file and its labels file. Images become `[N, 1, H, W]`; class names
/// are the label numbers (IDX files carry none).
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    read_idx_pair(images, labels)?.into_dataset(Vec::new(), images, Format::Idx)
}

fn read_idx_pair(images: &Path, labels: &Path) -> Result<RawSamples, DataError> {
    let image_bytes = read_idx_file(images, 3)?;
    let (dims, pixels) = parse_idx(images, &image_bytes, 3)?;
    let label_bytes = read_idx_file(labels, 1)?;
    let (ldims, label_data) = parse_idx(labels, &label_bytes, 1)?;
    if ldims[0] != dims[0] {
        return Err(DataError::format(
            labels,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                dims[0],
                images.display()
            ),
        ));
    }
    Ok(RawSamples {
        pixels: pixels.to_vec(),
        shape: [1, dims[1], dims[2]],
        labels: label_data.iter().map(|&l| i64::from(l)).collect(),
    })
}

/// Finds `<prefix>-images…idx3…` and `<prefix>-labels…idx1…` in `dir` (covers the
/// official `train-images-idx3-ubyte`, `t10k-images.idx3-ubyte` and `.gz` spellings).
fn find_pair(dir: &Path, prefix: &str) -> Result<Option<(PathBuf, PathBuf)>, DataError> {
    let mut images = None;
    let mut labels = None;
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in entries {
        names.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    names.sort();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with(&format!("{prefix}-images")) && name.contains("idx3") {
            images.get_or_insert(path);
        } else if name.starts_with(&format!("{prefix}-labels")) && name.contains("idx1") {
            labels.get_or_insert(path);
        }
    }
    Ok(images.zip(labels))
}

/// Whether `dir` looks like an MNIST-style folder (has a training images/labels pair).
pub(crate) fn is_idx_dir(dir: &Path) -> bool {
    matches!(find_pair(dir, "train"), Ok(Some(_)))
}

/// Loads an MNIST-style folder: the `train` pair, followed by the `t10k` pair when
/// present. With both, the dataset records the official split (train first, test after,
/// no validation part).
pub fn load_idx_dir(dir: &Path) -> Result<Dataset, DataError> {
    let (train_images, train_labels) =
        find_pair(dir, "train")?.ok_or_else(|| DataError::Unrecognised {
            path: dir.to_path_buf(),
            reason: "no train-images-idx3-ubyte / train-labels-idx1-ubyte pair".into(),
        })?;
    let train = read_idx_pair(&train_images, &train_labels)?;
    let Some((test_images, test_labels)) = find_pair(dir, "t10k")? else {
        return train.into_dataset(Vec::new(), dir, Format::Idx);
    };
    let test = read_idx_pair(&test_images, &test_labels)?;
    let (all, split) = RawSamples::train_then_test(dir, train, test)?;
    all.into_dataset(Vec::new(), dir, Format::Idx)?
        .with_recorded_split(split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_bombs::{deflate_zeros, gzip};
    use std::time::{Duration, Instant};

    #[test]
    fn a_gzip_bomb_is_refused_before_it_is_inflated() {
        // An IDX images header for 1.3 million 28x28 images (1 GiB), followed by that
        // many zero bytes deflated 160:1 into about 6 MB.
        let n: u32 = (1 << 30) / 784;
        let mut idx = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            idx.extend_from_slice(&d.to_be_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte.gz");
        std::fs::write(&path, gzip(&deflate_idx(&idx, u64::from(n) * 784))).unwrap();
        let start = Instant::now();
        let e = read_idx_file(&path, 3).unwrap_err().to_string();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            e.contains("train-images-idx3-ubyte.gz") && e.contains("decompression bomb"),
            "{e}"
        );

        // A modest gzipped file still loads.
        let mut small = idx[..4].to_vec();
        for d in [2u32, 2, 2] {
            small.extend_from_slice(&d.to_be_bytes());
        }
        small.extend_from_slice(&[0; 8]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &small).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let bytes = read_idx_file(&path, 3).unwrap();
        assert_eq!(bytes.len(), 16 + 8);
    }

    /// A deflate stream of `header` (stored block) followed by `zeros` zero bytes.
    fn deflate_idx(header: &[u8], zeros: u64) -> Vec<u8> {
        let mut s = vec![0u8]; // BFINAL 0, BTYPE 00 (stored), padded to a byte
        s.extend_from_slice(&(header.len() as u16).to_le_bytes());
        s.extend_from_slice(&(!(header.len() as u16)).to_le_bytes());
        s.extend_from_slice(header);
        s.extend_from_slice(&deflate_zeros(zeros));
        s
    }
}
