//! Tensor files: a NumPy `.npz` (plain or compressed) or a `.safetensors` file holding
//! `x` (uint8, `[N, C, H, W]` or `[N, H, W]`) and `y` (integer labels, `[N]`).
//!
//! Optional extras: `train_idx`, `val_idx`, `test_idx` (a recorded split, all three or
//! none) and, in safetensors metadata, `classes` as a JSON list of names.

use super::dataset::{Dataset, Format, RawSamples};
use super::error::DataError;
use super::split::Split;
use std::io::Read;
use std::path::Path;

/// Element types we accept; the names follow NumPy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Other,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::U8 | Elem::I8 => 1,
            Elem::I16 | Elem::U16 => 2,
            Elem::I32 | Elem::U32 => 4,
            // `Other` arrays are refused before any element is interpreted; 8 is a placeholder.
            Elem::I64 | Elem::U64 | Elem::Other => 8,
        }
    }
}

/// One array as read from the file: little-endian bytes.
struct Array {
    elem: Elem,
    /// The type as the file spelled it, for error messages.
    type_name: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Array {
    /// Integer elements widened to i64 (u64 values above i64::MAX are rejected).
    fn to_i64(&self, path: &Path, name: &str) -> Result<Vec<i64>, DataError> {
        let chunks = self.data.chunks_exact(self.elem.size());
        let bad_type = || {
            DataError::format(
                path,
                format!("`{name}` must hold integers, found {}", self.type_name),
            )
        };
        let out: Vec<i64> = match self.elem {
            Elem::U8 => self.data.iter().map(|&b| i64::from(b)).collect(),
            Elem::I8 => self.data.iter().map(|&b| i64::from(b as i8)).collect(),
            Elem::I16 => chunks
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Elem::U16 => chunks
                .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Elem::I32 => chunks
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Elem::U32 => chunks
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Elem::I64 | Elem::U64 => {
                let mut v = Vec::with_capacity(self.data.len() / 8);
                for c in chunks {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    if self.elem == Elem::U64 && u64::from_le_bytes(b) > i64::MAX as u64 {
                        return Err(DataError::format(path, format!("`{name}` value too large")));
                    }
                    v.push(i64::from_le_bytes(b));
                }
                v
            }
            Elem::Other => return Err(bad_type()),
        };
        Ok(out)
    }
}

/// Loads a `.npz` file.
pub fn load_npz(path: &Path) -> Result<Dataset, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| DataError::format(path, format!("not a valid npz (zip) archive: {e}")))?;
    let mut get = |name: &str| -> Result<Option<Array>, DataError> {
        let entry_name = format!("{name}.npy");
        let entry = match zip.by_name(&entry_name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(DataError::format(path, format!("{entry_name}: {e}"))),
        };
        let declared = entry.size();
        check_inflated_size(path, &entry_name, declared, entry.compressed_size())?;
        let mut bytes = Vec::new();
        // Never more than declared: the directory's sizes are what was checked.
        entry
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| {
                // A sound file can need more memory than this process may use
                // (the app's previews run under a limit): say so, not "corrupt".
                let why = if e.kind() == std::io::ErrorKind::OutOfMemory {
                    format!(
                        "{entry_name}: its {declared} bytes do not fit in the memory this \
                         process may use ({e})"
                    )
                } else {
                    format!("{entry_name}: corrupt or truncated: {e}")
                };
                DataError::format(path, why)
            })?;
        if bytes.len() as u64 != declared {
            return Err(DataError::format(
                path,
                format!(
                    "{entry_name}: declares {declared} bytes but holds {}",
                    bytes.len()
                ),
            ));
        }
        parse_npy(path, &entry_name, &bytes).map(Some)
    };
    let x = get("x")?;
    let y = get("y")?;
    let split = [get("train_idx")?, get("val_idx")?, get("test_idx")?];
    assemble(path, x, y, split, Vec::new(), Format::Npz)
}

/// Decompressed bytes any archive entry or gzip stream may reach whatever its
/// compression ratio.
pub(crate) const INFLATE_FREE: u64 = 64 << 20;

/// Largest ratio of decompressed to compressed size accepted above
/// [`INFLATE_FREE`]. Image data compresses 2-10x (MNIST about 5x), so a
/// larger ratio on a large entry is a decompression bomb: a few kilobytes
/// that would inflate to gigabytes.
pub(crate) const INFLATE_RATIO: u64 = 100;

/// Refuses an entry whose decompressed size is both large and out of
/// proportion to its compressed size, before anything is inflated.
pub(crate) fn check_inflated_size(
    path: &Path,
    entry: &str,
    inflated: u64,
    compressed: u64,
) -> Result<(), DataError> {
    if inflated > INFLATE_FREE && inflated / compressed.max(1) > INFLATE_RATIO {
        return Err(DataError::format(
            path,
            format!(
                "{entry}: {compressed} compressed bytes claim to inflate to {inflated} (more than {INFLATE_RATIO}x and over {} MiB); refusing a likely decompression bomb (save without compression, e.g. np.savez, if this is real)",
                INFLATE_FREE >> 20
            ),
        ));
    }
    Ok(())
}

/// Parses one `.npy` member (format versions 1–3, C order, little-endian).
fn parse_npy(path: &Path, entry: &str, bytes: &[u8]) -> Result<Array, DataError> {
    let err = |reason: String| DataError::format(path, format!("{entry}: {reason}"));
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(err("not a .npy array (bad magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| err("truncated header".into()))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(err(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| err("truncated header".into()))?;
    let header = String::from_utf8_lossy(header);
    let descr = dict_value(&header, "descr").ok_or_else(|| err("header has no descr".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(&header, "fortran_order")
        .ok_or_else(|| err("header has no fortran_order".into()))?;
    if fortran.starts_with("True") {
        return Err(err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let shape_text =
        dict_value(&header, "shape").ok_or_else(|| err("header has no shape".into()))?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(format!("bad shape {shape_text}")))?;
    if descr.starts_with('>') && !descr.ends_with("u1") && !descr.ends_with("i1") {
        return Err(err(format!("big-endian dtype {descr} is not supported")));
    }
    let elem = match descr.trim_start_matches(['<', '|', '=', '>']) {
        "u1" => Elem::U8,
        "i1" => Elem::I8,
        "i2" => Elem::I16,
        "u2" => Elem::U16,
        "i4" => Elem::I32,
        "u4" => Elem::U32,
        "i8" => Elem::I64,
        "u8" => Elem::U64,
        _ => Elem::Other,
    };
    let data = bytes.get(start + header_len..).unwrap_or_default();
    if elem != Elem::Other {
        let expected = shape
            .iter()
            .try_fold(elem.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| err(format!("shape {shape:?} is impossibly large")))?;
        if data.len() != expected {
            return Err(err(format!(
                "truncated or padded data: shape {shape:?} needs {expected} bytes, found {}",
                data.len()
            )));
        }
    }
    Ok(Array {
        elem,
        type_name: descr.to_string(),
        shape,
        data: data.to_vec(),
    })
}

/// The raw text of `key`'s value in a NumPy header dict such as
/// `{'descr': '|u1', 'fortran_order': False, 'shape': (3, 28, 28), }`.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(q) = rest.strip_prefix('\'') {
        q.find('\'')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

/// Loads a `.safetensors` file.
pub fn load_safetensors(path: &Path) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| DataError::format(path, format!("not a valid safetensors file: {e:?}")))?;
    let get = |name: &str| -> Option<Array> {
        let view = st.tensor(name).ok()?;
        use safetensors::Dtype as D;
        let elem = match view.dtype() {
            D::U8 => Elem::U8,
            D::I8 => Elem::I8,
            D::I16 => Elem::I16,
            D::U16 => Elem::U16,
            D::I32 => Elem::I32,
            D::U32 => Elem::U32,
            D::I64 => Elem::I64,
            D::U64 => Elem::U64,
            _ => Elem::Other,
        };
        Some(Array {
            elem,
            type_name: format!("{:?}", view.dtype()),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        })
    };
    let classes = match safetensors::SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, meta)| {
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("classes").cloned())
        }) {
        None => Vec::new(),
        Some(json) => serde_json::from_str::<Vec<String>>(&json).map_err(|e| {
            DataError::format(
                path,
                format!("metadata `classes` is not a JSON list of names: {e}"),
            )
        })?,
    };
    let split = [get("train_idx"), get("val_idx"), get("test_idx")];
    assemble(
        path,
        get("x"),
        get("y"),
        split,
        classes,
        Format::Safetensors,
    )
}

/// Checks `x`/`y` and builds the dataset, with the recorded split if there is one.
fn assemble(
    path: &Path,
    x: Option<Array>,
    y: Option<Array>,
    split: [Option<Array>; 3],
    classes: Vec<String>,
    format: Format,
) -> Result<Dataset, DataError> {
    let x = x.ok_or_else(|| DataError::format(path, "no array named `x` (the images)"))?;
    let y = y.ok_or_else(|| DataError::format(path, "no array named `y` (the labels)"))?;
    if x.elem != Elem::U8 {
        return Err(DataError::format(
            path,
            format!(
                "`x` must be uint8 pixels, found {}; convert with (x * 255).round().astype('uint8')",
                x.type_name
            ),
        ));
    }
    let shape = match x.shape.as_slice() {
        &[_, c, h, w] => [c, h, w],
        &[_, h, w] => [1, h, w],
        other => {
            return Err(DataError::format(
                path,
                format!("`x` has shape {other:?}; expected [N, C, H, W] or [N, H, W]"),
            ));
        }
    };
    if y.shape.len() != 1 || y.shape[0] != x.shape[0] {
        return Err(DataError::format(
            path,
            format!(
                "`y` has shape {:?} but `x` holds {} images",
                y.shape, x.shape[0]
            ),
        ));
    }
    let labels = y.to_i64(path, "y")?;
    let dataset = RawSamples {
        pixels: x.data,
        shape,
        labels,
    }
    .into_dataset(classes, path, format)?;
    match split {
        [None, None, None] => Ok(dataset),
        [Some(train), Some(val), Some(test)] => {
            let split = Split {
                train: train.to_i64(path, "train_idx")?,
                val: val.to_i64(path, "val_idx")?,
                test: test.to_i64(path, "test_idx")?,
            };
            dataset.with_recorded_split(split)
        }
        _ => Err(DataError::format(
            path,
            "a recorded split needs all of `train_idx`, `val_idx` and `test_idx`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_bombs::{deflate_zeros, zip_one};
    use std::time::{Duration, Instant};

    #[test]
    fn an_npz_zip_bomb_is_refused_before_it_is_inflated() {
        // x.npy declared as 1 GiB, deflated 160:1 into about 6 MB.
        let inflated = 1u64 << 30;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.npz");
        std::fs::write(&path, zip_one("x.npy", &deflate_zeros(inflated), inflated)).unwrap();
        let start = Instant::now();
        let e = load_npz(&path).unwrap_err().to_string();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            e.contains("bomb.npz") && e.contains("x.npy") && e.contains("decompression bomb"),
            "{e}"
        );

        // An entry inflating to more than it declares is cut at the declared size.
        let path = dir.path().join("liar.npz");
        std::fs::write(&path, zip_one("x.npy", &deflate_zeros(10 << 20), 1000)).unwrap();
        let e = load_npz(&path).unwrap_err().to_string();
        assert!(e.contains("liar.npz") && e.contains("x.npy"), "{e}");
    }
}
