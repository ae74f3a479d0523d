//! Lethe's native format: safetensors with a `lethe` metadata entry holding
//! JSON ([`CheckpointMeta`]) so the architecture can be rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::error::CheckpointError;
use crate::models::ArchConfig;

/// Metadata key under which Lethe stores its JSON.
pub const METADATA_KEY: &str = "lethe";

/// Where a checkpoint came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Lethe version that wrote the file.
    pub lethe_version: String,
    /// Seconds since the Unix epoch when the file was written.
    pub created_unix: u64,
    /// Free-form origin, e.g. the CLI command or the imported file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Further settings worth recording (seed, epochs, method, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl Provenance {
    /// Provenance stamped with this Lethe version and the current time.
    pub fn now(source: Option<String>) -> Self {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Provenance {
            lethe_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_unix,
            source,
            notes: BTreeMap::new(),
        }
    }
}

/// The JSON stored in a Lethe checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Version of this metadata layout.
    pub format_version: u32,
    /// The architecture, when the weights belong to a built-in model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<ArchConfig>,
    /// Where the weights came from.
    pub provenance: Provenance,
}

impl CheckpointMeta {
    /// The training settings recorded with the weights (`lethe train`'s job, its
    /// `train` section flattened in; paths left out), or an empty object.
    pub fn training_recipe(&self) -> serde_json::Value {
        use serde_json::Value;
        let job: Option<Value> = self
            .provenance
            .notes
            .get("job")
            .and_then(|text| serde_json::from_str(text).ok());
        let mut recipe = serde_json::Map::new();
        if let Some(Value::Object(job)) = job {
            for (k, v) in job {
                match (k.as_str(), v) {
                    ("data" | "out" | "overwrite", _) => {}
                    ("train", Value::Object(train)) => recipe.extend(train),
                    (_, v) => {
                        recipe.insert(k, v);
                    }
                }
            }
        }
        Value::Object(recipe)
    }

    /// Metadata for weights of `arch`, stamped now.
    pub fn new(arch: Option<ArchConfig>, source: Option<String>) -> Self {
        CheckpointMeta {
            format_version: 1,
            arch,
            provenance: Provenance::now(source),
        }
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// Raw little-endian bytes of a tensor in row-major order.
pub(crate) fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, tch::TchError> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut buf, numel)?;
    Ok(buf)
}

/// Reads a safetensors file: tensors sorted by name, plus Lethe metadata
/// when present.
/// Tensors and optional metadata read from a safetensors file.
pub(crate) type Contents = (Vec<(String, Tensor)>, Option<CheckpointMeta>);

pub(crate) fn read(path: &Path) -> Result<Contents, CheckpointError> {
    let bytes = fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::corrupt(path, format!("safetensors: {e:?}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| CheckpointError::corrupt(path, format!("safetensors: {e:?}")))?;
    let meta = match header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(json) => Some(serde_json::from_str::<CheckpointMeta>(json).map_err(|e| {
            CheckpointError::corrupt(path, format!("invalid `{METADATA_KEY}` metadata: {e}"))
        })?),
        None => None,
    };
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            CheckpointError::unsupported(path, format!("tensor {name}: dtype {:?}", view.dtype()))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| CheckpointError::torch(path, e))?;
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, meta))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `tensors` and `meta` to `path` atomically: the data goes to a
/// temporary file in the same directory, is synced, and is then linked into
/// place, so readers never see a partial file. Without `overwrite` an
/// existing file is never replaced.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
    overwrite: bool,
) -> Result<(), CheckpointError> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).ok_or_else(|| {
            CheckpointError::unsupported(path, format!("tensor {name}: kind {:?}", t.kind()))
        })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data = tensor_bytes(t).map_err(|e| CheckpointError::torch(path, e))?;
        owned.push((name.clone(), dtype, shape, data));
    }
    let views = owned
        .iter()
        .map(|(n, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (n.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CheckpointError::unsupported(path, format!("safetensors: {e:?}")))?;
    let json = serde_json::to_string(meta)
        .map_err(|e| CheckpointError::unsupported(path, e.to_string()))?;
    let info = Some(HashMap::from([(METADATA_KEY.to_owned(), json)]));
    let bytes = safetensors::tensor::serialize(views, &info)
        .map_err(|e| CheckpointError::unsupported(path, format!("safetensors: {e:?}")))?;
    write_atomic(path, &bytes, overwrite)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Atomic write; see [`save_tensors`].
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    overwrite: bool,
) -> Result<(), CheckpointError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| CheckpointError::io(&tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| CheckpointError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CheckpointError::io(&tmp, e))?;
        drop(f);
        if overwrite {
            return fs::rename(&tmp, path).map_err(|e| CheckpointError::io(path, e));
        }
        // A hard link fails if the destination exists, which makes the
        // no-clobber check and the publish a single atomic step.
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(CheckpointError::AlreadyExists {
                    path: path.to_owned(),
                })
            }
            Err(_) if path.exists() => Err(CheckpointError::AlreadyExists {
                path: path.to_owned(),
            }),
            // Filesystems without hard links: rename is still atomic.
            Err(_) => fs::rename(&tmp, path).map_err(|e| CheckpointError::io(path, e)),
        }
    })();
    // After a rename the temp is gone already; otherwise it must not linger.
    let _ = fs::remove_file(&tmp);
    result
}
