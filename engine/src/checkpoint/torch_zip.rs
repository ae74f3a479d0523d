//! Reading the zip archives written by `torch.save` (PyTorch ≥ 1.6) and
//! `torch.jit.save`: `<archive>/data.pkl` describes the objects, and each
//! tensor storage is a raw little-endian entry `<archive>/data/<key>`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tch::{Kind, Tensor};
use zip::{CompressionMethod, ZipArchive};

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
    let f = zip
        .by_name(name)
        .map_err(|e| CheckpointError::corrupt(path, format!("entry {name}: {e}")))?;
    // torch.save and torch.jit.save store every entry uncompressed, so the bytes
    // read can never exceed the file's size; a compressed entry could be a zip
    // bomb (kilobytes that inflate to gigabytes) and no torch writer makes one.
    if f.compression() != CompressionMethod::Stored {
        return Err(CheckpointError::unsupported(
            path,
            format!(
                "entry {name} is compressed ({:?}); torch.save writes only uncompressed entries, so the archive was repacked by another tool: re-save it with torch.save",
                f.compression()
            ),
        ));
    }
    let declared = f.size();
    if declared != f.compressed_size() {
        return Err(CheckpointError::corrupt(
            path,
            format!(
                "entry {name} declares {declared} bytes but stores {}",
                f.compressed_size()
            ),
        ));
    }
    // The declared size is only a hint: a damaged header must not trigger a huge allocation.
    let hint = usize::try_from(declared).unwrap_or(0).min(1 << 26);
    let mut buf = Vec::with_capacity(hint);
    // Never more than declared, whatever the entry's data says; the zip reader
    // checks the CRC at the end, so flipped bytes surface here.
    let mut limited = f.take(declared.saturating_add(1));
    limited
        .read_to_end(&mut buf)
        .map_err(|e| CheckpointError::corrupt(path, format!("entry {name}: {e}")))?;
    if buf.len() as u64 != declared {
        return Err(CheckpointError::corrupt(
            path,
            format!(
                "entry {name} declares {declared} bytes but holds {}",
                buf.len()
            ),
        ));
    }
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
    let mut walk = Walk::new(path);
    let refs = match kind {
        ZipKind::TorchSave => select_state_dict(&value, &mut walk)?,
        ZipKind::TorchScript => {
            let mut out = Vec::new();
            collect_module(&value, "", &mut out, 0, &mut walk)?;
            out
        }
    };
    let file_len = std::fs::metadata(path)
        .map_err(|e| CheckpointError::io(path, e))?
        .len();
    let mut m = Materializer {
        zip: &mut zip,
        prefix: &prefix,
        cache: HashMap::new(),
        path,
        budget: materialize_budget(file_len),
        file_len,
    };
    let mut tensors = Vec::with_capacity(refs.len());
    for (name, r) in refs {
        let t = m.tensor(&r, &name)?;
        tensors.push((name, t));
    }
    Ok((tensors, kind))
}

/// Bytes of tensors a torch archive may turn into: every view of a storage is
/// copied out, so views that overlap (weight tying, stride-0 `expand`) could
/// otherwise ask for far more memory than the file holds. Real checkpoints
/// need about the file's size; a little expansion is allowed on top.
fn materialize_budget(file_len: u64) -> u64 {
    file_len.saturating_mul(4).saturating_add(64 << 20)
}

/// Most container visits the search for the state dict may make. Pickle
/// containers can refer to themselves and to each other many times over, so
/// an unbounded walk could take exponential time; a real checkpoint needs a
/// visit per dict and module.
const MAX_WALK_VISITS: usize = 1_000_000;

/// Bookkeeping for walks over the unpickled object graph.
struct Walk<'p> {
    path: &'p Path,
    visits: usize,
}

impl<'p> Walk<'p> {
    fn new(path: &'p Path) -> Self {
        Walk { path, visits: 0 }
    }

    fn visit(&mut self) -> Result<(), CheckpointError> {
        self.visits += 1;
        if self.visits > MAX_WALK_VISITS {
            return Err(CheckpointError::unsupported(
                self.path,
                format!(
                    "data.pkl's objects refer to each other more than {MAX_WALK_VISITS} times; refusing to search them for a state dict"
                ),
            ));
        }
        Ok(())
    }
}

fn rc_id<T>(rc: &std::rc::Rc<T>) -> usize {
    std::rc::Rc::as_ptr(rc) as *const () as usize
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

/// Whether a dict within 8 levels of nested dicts below `v` holds a tensor.
/// Each dict is looked at once per question, so a dict that contains itself
/// (or many references to one big dict) costs its size, not an exponential.
fn holds_tensors(v: &Value, walk: &mut Walk<'_>) -> Result<bool, CheckpointError> {
    let mut seen = HashSet::new();
    let mut todo = vec![(v.clone(), 0usize)];
    while let Some((v, depth)) = todo.pop() {
        let Value::Dict(d) = &v else { continue };
        if depth >= 8 || !seen.insert(rc_id(d)) {
            continue;
        }
        walk.visit()?;
        for (_, inner) in d.borrow().iter() {
            match inner {
                Value::Tensor(_) => return Ok(true),
                Value::Dict(_) => todo.push((inner.clone(), depth + 1)),
                _ => {}
            }
        }
    }
    Ok(false)
}

/// Finds the state dict inside a `torch.save` payload: the dict itself when
/// it maps names to tensors, otherwise the entry under a conventional key
/// (`state_dict`, `model`, `net`, …), otherwise the only nested dict that
/// holds tensors.
fn select_state_dict(
    v: &Value,
    walk: &mut Walk<'_>,
) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    select_in(v, walk, 0)
}

fn select_in(
    v: &Value,
    walk: &mut Walk<'_>,
    depth: usize,
) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    let path = walk.path;
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
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), TensorRef::clone(t))),
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
                && (matches!(inner, Value::Object(_)) || holds_tensors(inner, walk)?)
            {
                return select_in(inner, walk, depth + 1);
            }
        }
        // Asked once per distinct dict: a dict listing the same big dict under
        // many keys must not be searched once per key.
        let mut answers: HashMap<usize, bool> = HashMap::new();
        let mut candidates: Vec<&(Value, Value)> = Vec::new();
        for entry in &entries {
            let Value::Dict(d) = &entry.1 else { continue };
            let holds = match answers.get(&rc_id(d)) {
                Some(&h) => h,
                None => {
                    let h = holds_tensors(&entry.1, walk)?;
                    answers.insert(rc_id(d), h);
                    h
                }
            };
            if holds {
                candidates.push(entry);
            }
        }
        if let [(_, inner)] = candidates.as_slice() {
            return select_in(inner, walk, depth + 1);
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
/// Every visit counts against the walk's budget: a module listing itself, or
/// the same submodule many times on each of 64 levels, would otherwise be
/// walked an exponential number of times.
fn collect_module(
    v: &Value,
    prefix: &str,
    out: &mut Vec<(String, TensorRef)>,
    depth: usize,
    walk: &mut Walk<'_>,
) -> Result<(), CheckpointError> {
    if depth > 64 {
        return Ok(());
    }
    let Value::Object(o) = v else { return Ok(()) };
    walk.visit()?;
    let Some(state) = o.borrow().state.clone() else {
        return Ok(());
    };
    let Some(entries) = dict_entries(&state) else {
        return Ok(());
    };
    for (k, v) in entries {
        let Value::Str(k) = &k else { continue };
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &v {
            Value::Tensor(t) => out.push((name, TensorRef::clone(t))),
            Value::Object(_) => collect_module(&v, &name, out, depth + 1, walk)?,
            _ => {}
        }
    }
    Ok(())
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

/// Turns tensor references into tensors, reading each storage once per dtype.
struct Materializer<'a> {
    zip: &'a mut Archive,
    prefix: &'a str,
    cache: HashMap<(String, String), Tensor>,
    path: &'a Path,
    /// Bytes still allowed (see [`materialize_budget`]).
    budget: u64,
    file_len: u64,
}

impl Materializer<'_> {
    fn spend(&mut self, bytes: u64, name: &str, what: &str) -> Result<(), CheckpointError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(CheckpointError::corrupt(
                self.path,
                format!(
                    "tensor {name}: {what} of {bytes} bytes would exceed the {} bytes a {}-byte archive may expand to",
                    materialize_budget(self.file_len),
                    self.file_len
                ),
            )),
        }
    }

    fn tensor(&mut self, r: &TensorRef, name: &str) -> Result<Tensor, CheckpointError> {
        let path = self.path;
        let bad =
            |reason: String| CheckpointError::corrupt(path, format!("tensor {name}: {reason}"));
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
        let elt = kind.elt_size_in_bytes() as u64;
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
        // A stride-0 view of one element can claim any size: its element count is
        // checked against the budget before contiguous() allocates it.
        let view_bytes = r
            .size
            .iter()
            .try_fold(elt, |acc, &s| acc.checked_mul(s as u64))
            .ok_or_else(|| bad(format!("view of size {:?} is impossibly large", r.size)))?;
        let what = if view_bytes > r.storage.numel.saturating_mul(elt) {
            format!(
                "a view larger than its storage of {numel} elements (size {:?}, stride {:?})",
                r.size, r.stride
            )
        } else {
            "a view".to_owned()
        };
        self.spend(view_bytes, name, &what)?;
        let key = &r.storage.key;
        let cache_key = (key.clone(), r.storage.storage_type.clone());
        let storage = match self.cache.get(&cache_key) {
            Some(t) => t.shallow_clone(),
            None => {
                let bytes = read_entry(self.zip, &format!("{}data/{key}", self.prefix), path)?;
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
                self.spend(need as u64, name, &format!("storage data/{key}"))?;
                let t = Tensor::f_from_data_size(&bytes[..need], &[numel], kind)
                    .map_err(|e| CheckpointError::torch(path, e))?;
                self.cache.insert(cache_key, t.shallow_clone());
                t
            }
        };
        storage
            .f_as_strided(r.size.as_slice(), r.stride.as_slice(), r.offset)
            .and_then(|t| t.f_contiguous())
            .map_err(|e| CheckpointError::torch(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};
    use zip::write::FileOptions;

    fn le32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    /// `data.pkl` of `{'w': <tensor>}` viewing storage `0` (FloatStorage of
    /// `numel` elements) with `size` and `stride`.
    fn state_dict_pkl(size: &[u32], stride: &[u32], numel: u32) -> Vec<u8> {
        let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00w".to_vec();
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ");
        p.extend_from_slice(&le32(numel));
        p.extend_from_slice(b"tQK\x00(");
        for s in size {
            p.push(b'J');
            p.extend_from_slice(&le32(*s));
        }
        p.extend_from_slice(b"t(");
        for s in stride {
            p.push(b'J');
            p.extend_from_slice(&le32(*s));
        }
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRu.");
        p
    }

    /// Writes a torch-style archive `archive/<name>` for each entry.
    fn write_archive(
        dir: &Path,
        entries: &[(&str, &[u8], CompressionMethod)],
    ) -> std::path::PathBuf {
        let path = dir.join("crafted.pt");
        let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, data, method) in entries {
            let opts = FileOptions::default().compression_method(*method);
            w.start_file(format!("archive/{name}"), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        path
    }

    fn timed<T>(f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        out
    }

    fn floats(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    #[test]
    fn reads_a_plain_archive_and_a_small_expanded_view() {
        let dir = tempfile::tempdir().unwrap();
        let pkl = state_dict_pkl(&[2, 3], &[3, 1], 6);
        let data = floats(6);
        let path = write_archive(
            dir.path(),
            &[
                ("data.pkl", &pkl, CompressionMethod::Stored),
                ("data/0", &data, CompressionMethod::Stored),
            ],
        );
        let (tensors, kind) = read(&path).unwrap();
        assert_eq!(kind, ZipKind::TorchSave);
        assert_eq!(tensors[0].1.size(), [2, 3]);

        // torch.zeros(1).expand(1000) saved as is: stride 0, a small view.
        let pkl = state_dict_pkl(&[1000], &[0], 1);
        let path = write_archive(
            dir.path(),
            &[
                ("data.pkl", &pkl, CompressionMethod::Stored),
                ("data/0", &floats(1), CompressionMethod::Stored),
            ],
        );
        let (tensors, _) = read(&path).unwrap();
        assert_eq!(tensors[0].1.size(), [1000]);
    }

    #[test]
    fn views_far_larger_than_their_storage_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        // One float expanded to 100000 x 100000 x 100 (4 TB) with stride 0.
        let pkl = state_dict_pkl(&[100_000, 100_000, 100], &[0, 0, 0], 1);
        let path = write_archive(
            dir.path(),
            &[
                ("data.pkl", &pkl, CompressionMethod::Stored),
                ("data/0", &floats(1), CompressionMethod::Stored),
            ],
        );
        let e = timed(|| read(&path).unwrap_err()).to_string();
        assert!(
            e.contains("crafted.pt")
                && e.contains("tensor w")
                && e.contains("larger than its storage"),
            "{e}"
        );
    }

    #[test]
    fn compressed_entries_are_refused_without_inflating_them() {
        let dir = tempfile::tempdir().unwrap();
        let pkl = state_dict_pkl(&[4], &[1], 4);
        // 16 MiB of zeros deflate to a few kilobytes: the shape of a zip bomb.
        let zeros = vec![0u8; 16 << 20];
        let path = write_archive(
            dir.path(),
            &[
                ("data.pkl", &pkl, CompressionMethod::Stored),
                ("data/0", &zeros, CompressionMethod::Deflated),
            ],
        );
        assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
        let e = timed(|| read(&path).unwrap_err()).to_string();
        assert!(
            e.contains("crafted.pt") && e.contains("entry archive/data/0 is compressed"),
            "{e}"
        );
    }

    #[test]
    fn self_referring_dicts_are_searched_in_linear_time() {
        // d = {}; d[0] = d, ..., 200 times: the old depth-8 walk made 200^8 visits.
        let mut pkl = b"\x80\x02}q\x00(".to_vec();
        for i in 0..200u32 {
            pkl.push(b'J');
            pkl.extend_from_slice(&le32(i));
            pkl.extend_from_slice(b"h\x00");
        }
        pkl.extend_from_slice(b"u.");
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(dir.path(), &[("data.pkl", &pkl, CompressionMethod::Stored)]);
        let e = timed(|| read(&path).unwrap_err()).to_string();
        assert!(
            e.contains("crafted.pt") && e.contains("no tensors found"),
            "{e}"
        );
    }

    #[test]
    fn self_referring_torchscript_modules_are_refused() {
        // A module whose attributes a and b are the module itself: 2^64 paths.
        let mut pkl = b"\x80\x02c__torch__\nM\n)\x81q\x00}(".to_vec();
        pkl.extend_from_slice(b"X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bh\x00ub.");
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(
            dir.path(),
            &[
                ("data.pkl", &pkl, CompressionMethod::Stored),
                ("constants.pkl", b"\x80\x02).", CompressionMethod::Stored),
            ],
        );
        let e = timed(|| read(&path).unwrap_err()).to_string();
        assert!(
            e.contains("crafted.pt") && e.contains("refer to each other"),
            "{e}"
        );
    }
}
