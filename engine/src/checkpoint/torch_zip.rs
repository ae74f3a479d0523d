//! Reading the zip archives written by `torch.save` (PyTorch ≥ 1.6) and
//! `torch.jit.save`: `<archive>/data.pkl` describes the objects, and each
//! tensor storage is a raw little-endian entry `<archive>/data/<key>`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tch::{Kind, Tensor};
use zip::ZipArchive;

use super::error::CheckpointError;
use super::pickle::{self, TensorRef, Value};

type Archive = ZipArchive<BufReader<File>>;

/// Which kind of torch archive a zip file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZipKind {
    /// `torch.save(obj)`.
    TorchSave,
    /// `torch.jit.save(module)`.
    TorchScript,
}

struct Opened {
    zip: Archive,
    prefix: String,
    kind: ZipKind,
}

fn open(path: &Path) -> Result<Opened, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let zip = ZipArchive::new(BufReader::new(file))
        .map_err(|e| CheckpointError::corrupt(path, format!("unreadable zip archive ({e})")))?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    let Some(pkl) = names
        .iter()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
    else {
        return Err(CheckpointError::UnknownFormat {
            path: path.to_owned(),
            reason: "zip archive without data.pkl, so not written by torch.save".into(),
        });
    };
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_owned();
    let script = names.iter().any(|n| {
        *n == format!("{prefix}constants.pkl") || n.starts_with(&format!("{prefix}code/"))
    });
    let kind = if script {
        ZipKind::TorchScript
    } else {
        ZipKind::TorchSave
    };
    Ok(Opened { zip, prefix, kind })
}

/// Kind of the archive at `path` (reads only the zip directory).
pub(crate) fn zip_kind(path: &Path) -> Result<ZipKind, CheckpointError> {
    Ok(open(path)?.kind)
}

fn read_entry(zip: &mut Archive, name: &str, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| CheckpointError::corrupt(path, format!("entry {name}: {e}")))?;
    // The declared size is only a hint: a damaged header must not trigger a huge allocation.
    let hint = usize::try_from(f.size()).unwrap_or(0).min(1 << 26);
    let mut buf = Vec::with_capacity(hint);
    // The zip reader checks the CRC at the end, so flipped bytes surface here.
    f.read_to_end(&mut buf)
        .map_err(|e| CheckpointError::corrupt(path, format!("entry {name}: {e}")))?;
    Ok(buf)
}

/// Reads the tensors of a torch archive. For `torch.save` files the state
/// dict is located inside the pickled object (see [`select_state_dict`]);
/// for TorchScript the module tree's parameters and buffers are collected.
pub(crate) fn read(path: &Path) -> Result<(Vec<(String, Tensor)>, ZipKind), CheckpointError> {
    let Opened {
        mut zip,
        prefix,
        kind,
    } = open(path)?;
    let order = format!("{prefix}byteorder");
    if zip.file_names().any(|n| n == order) {
        let b = read_entry(&mut zip, &order, path)?;
        if b != b"little" {
            return Err(CheckpointError::unsupported(
                path,
                "big-endian torch archive",
            ));
        }
    }
    let pkl = read_entry(&mut zip, &format!("{prefix}data.pkl"), path)?;
    let value = pickle::unpickle(&pkl)
        .map_err(|e| CheckpointError::corrupt(path, format!("data.pkl: {e}")))?;
    let refs = match kind {
        ZipKind::TorchSave => select_state_dict(&value, path)?,
        ZipKind::TorchScript => {
            let mut out = Vec::new();
            collect_module(&value, "", &mut out, 0);
            out
        }
    };
    let mut cache: HashMap<String, Tensor> = HashMap::new();
    let mut tensors = Vec::with_capacity(refs.len());
    for (name, r) in refs {
        let t = materialize(&mut zip, &prefix, &mut cache, &r, &name, path)?;
        tensors.push((name, t));
    }
    Ok((tensors, kind))
}

/// Keys under which training scripts commonly nest the model's state dict.
const NESTED_KEYS: &[&str] = &[
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "model_state",
    "network",
    "weights",
    "params",
];

fn dict_entries(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Some(d.borrow().clone()),
        _ => None,
    }
}

fn holds_tensors(v: &Value, depth: usize) -> bool {
    depth < 8
        && dict_entries(v).is_some_and(|e| {
            e.iter()
                .any(|(_, v)| matches!(v, Value::Tensor(_)) || holds_tensors(v, depth + 1))
        })
}

/// Finds the state dict inside a `torch.save` payload: the dict itself when
/// it maps names to tensors, otherwise the entry under a conventional key
/// (`state_dict`, `model`, `net`, …), otherwise the only nested dict that
/// holds tensors.
fn select_state_dict(v: &Value, path: &Path) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    select_in(v, path, 0)
}

fn select_in(
    v: &Value,
    path: &Path,
    depth: usize,
) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    let entries = match v {
        Value::Dict(d) => d.borrow().clone(),
        Value::Object(o) => {
            return Err(CheckpointError::unsupported(
                path,
                format!(
                    "the file holds a pickled `{}` object (torch.save(model)); save model.state_dict() instead, or export TorchScript",
                    o.borrow().class
                ),
            ));
        }
        other => {
            return Err(CheckpointError::unsupported(
                path,
                format!(
                    "expected a state dict, found a pickled {}",
                    pickle::kind_name(other)
                ),
            ));
        }
    };
    let direct: Vec<(String, TensorRef)> = entries
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
            _ => None,
        })
        .collect();
    if !direct.is_empty() {
        return Ok(direct);
    }
    let key_of = |k: &Value| match k {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    };
    if depth < 4 {
        for want in NESTED_KEYS {
            if let Some((_, inner)) = entries
                .iter()
                .find(|(k, _)| key_of(k).as_deref() == Some(*want))
                && (holds_tensors(inner, 0) || matches!(inner, Value::Object(_)))
            {
                return select_in(inner, path, depth + 1);
            }
        }
        let candidates: Vec<&(Value, Value)> = entries
            .iter()
            .filter(|(_, v)| holds_tensors(v, 0))
            .collect();
        if let [(_, inner)] = candidates.as_slice() {
            return select_in(inner, path, depth + 1);
        }
        if candidates.len() > 1 {
            let keys: Vec<String> = candidates.iter().filter_map(|(k, _)| key_of(k)).collect();
            return Err(CheckpointError::unsupported(
                path,
                format!(
                    "several nested state dicts ({}); cannot tell which one is the model",
                    keys.join(", ")
                ),
            ));
        }
    }
    let keys: Vec<String> = entries
        .iter()
        .filter_map(|(k, _)| key_of(k))
        .take(12)
        .collect();
    Err(CheckpointError::unsupported(
        path,
        format!("no tensors found (top-level keys: {})", keys.join(", ")),
    ))
}

/// Walks a TorchScript module object: its state is a dict of attributes,
/// where tensors are parameters/buffers and objects are submodules.
fn collect_module(v: &Value, prefix: &str, out: &mut Vec<(String, TensorRef)>, depth: usize) {
    if depth > 64 {
        return;
    }
    let Value::Object(o) = v else { return };
    let Some(state) = o.borrow().state.clone() else {
        return;
    };
    let Some(entries) = dict_entries(&state) else {
        return;
    };
    for (k, v) in entries {
        let Value::Str(k) = k else { continue };
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match &v {
            Value::Tensor(t) => out.push((name, t.clone())),
            Value::Object(_) => collect_module(&v, &name, out, depth + 1),
            _ => {}
        }
    }
}

fn storage_kind(storage_type: &str) -> Option<Kind> {
    Some(match storage_type {
        "FloatStorage" | "dtype:float32" | "dtype:float" => Kind::Float,
        "DoubleStorage" | "dtype:float64" | "dtype:double" => Kind::Double,
        "HalfStorage" | "dtype:float16" | "dtype:half" => Kind::Half,
        "BFloat16Storage" | "dtype:bfloat16" => Kind::BFloat16,
        "LongStorage" | "dtype:int64" | "dtype:long" => Kind::Int64,
        "IntStorage" | "dtype:int32" | "dtype:int" => Kind::Int,
        "ShortStorage" | "dtype:int16" | "dtype:short" => Kind::Int16,
        "CharStorage" | "dtype:int8" => Kind::Int8,
        "ByteStorage" | "UntypedStorage" | "dtype:uint8" => Kind::Uint8,
        "BoolStorage" | "dtype:bool" => Kind::Bool,
        _ => return None,
    })
}

fn materialize(
    zip: &mut Archive,
    prefix: &str,
    cache: &mut HashMap<String, Tensor>,
    r: &TensorRef,
    name: &str,
    path: &Path,
) -> Result<Tensor, CheckpointError> {
    let bad = |reason: String| CheckpointError::corrupt(path, format!("tensor {name}: {reason}"));
    let kind = storage_kind(&r.storage.storage_type).ok_or_else(|| {
        CheckpointError::unsupported(
            path,
            format!("tensor {name}: storage type {}", r.storage.storage_type),
        )
    })?;
    if r.size.len() != r.stride.len()
        || r.size.iter().chain(&r.stride).any(|&x| x < 0)
        || r.offset < 0
    {
        return Err(bad(format!(
            "invalid view (size {:?}, stride {:?}, offset {})",
            r.size, r.stride, r.offset
        )));
    }
    let numel = i64::try_from(r.storage.numel).map_err(|_| bad("storage too large".into()))?;
    // Bounds are checked here because as_strided would read past the storage otherwise.
    if r.size.iter().all(|&s| s > 0) {
        let last = r
            .size
            .iter()
            .zip(&r.stride)
            .try_fold(r.offset, |acc, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|x| acc.checked_add(x))
            });
        if last.is_none_or(|l| l >= numel) {
            return Err(bad(format!(
                "view (size {:?}, stride {:?}, offset {}) exceeds storage of {numel}",
                r.size, r.stride, r.offset
            )));
        }
    }
    let key = &r.storage.key;
    let storage = match cache.get(key) {
        Some(t) if t.kind() == kind => t.shallow_clone(),
        _ => {
            let bytes = read_entry(zip, &format!("{prefix}data/{key}"), path)?;
            let need = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(kind.elt_size_in_bytes()))
                .ok_or_else(|| bad(format!("storage of {numel} elements is too large")))?;
            if bytes.len() < need {
                return Err(bad(format!(
                    "storage data/{key} has {} bytes, needs {need}",
                    bytes.len()
                )));
            }
            let t = Tensor::f_from_data_size(&bytes[..need], &[numel], kind)
                .map_err(|e| CheckpointError::torch(path, e))?;
            cache.insert(key.clone(), t.shallow_clone());
            t
        }
    };
    storage
        .f_as_strided(r.size.as_slice(), r.stride.as_slice(), r.offset)
        .and_then(|t| t.f_contiguous())
        .map_err(|e| CheckpointError::torch(path, e))
}
