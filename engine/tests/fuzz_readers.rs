//! Robustness ("fuzz") tests of every reader of outside files (issue 22, item 4):
//! the pickle VM, torch zip archives, safetensors checkpoints with Lethe metadata,
//! npz/npy and safetensors datasets, IDX (plain and gzipped), CIFAR batches, PNG and
//! JPEG decoding, forget lists (txt, csv, json), study.toml and plugin parameters
//! (JSON checked against a plugin's schema).
//!
//! Each target starts from real seeds (the bundled demo checkpoint and study file,
//! and small files built here the way torch, NumPy, the MNIST and CIFAR
//! distributions and image encoders write them), applies a few byte mutations
//! (bit flips, interesting integers over headers, truncations, insertions,
//! deletions, duplicated ranges, dictionary tokens such as pickle opcodes or TOML
//! syntax), and requires the reader to answer `Ok` or a clean `Err` (naming the
//! file) within [`CASE_LIMIT`], never to panic. Where a checksum would stop every mutation at the
//! door (zip CRCs, PNG chunk CRCs), the mutation is also applied inside the
//! container, which is then rebuilt or re-checksummed.
//!
//! The default case counts keep the whole file near 45 s in a debug build on two
//! cores (the targets run one after the other: `RUST_TEST_THREADS=1`). For a longer run, set `PROPTEST_CASES` (cases per target; the
//! demo-npz target, 0.1-0.4 s a case, takes a 500th of it), e.g.
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --release -p lethe-engine --test fuzz_readers -- --nocapture
//! ```
//!
//! Every target prints its case count and slowest case (`--nocapture`). A case
//! that panics is shrunk and reported by proptest; one that aborts the process (a
//! stack overflow) leaves its input in `target/tmp/fuzz_readers/<target>/`.
#![allow(clippy::unwrap_used)]

use lethe_engine::checkpoint::{self, LoadOptions};
use lethe_engine::data::{self, CifarKind, ForgetSet};
use lethe_engine::study::StudySpec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long one read may take in a debug build before the case counts as hung (the
/// issue's one second is for release builds; a debug build of the readers runs
/// several times slower, and the two cores are shared with the other targets).
const CASE_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// Mutations

/// Where a mutation lands: near the start (headers), near the end (zip central
/// directories, trailers) or anywhere.
#[derive(Debug, Clone, Copy)]
struct At {
    region: u8,
    raw: u32,
}

const HEAD: usize = 4096;
const TAIL: usize = 1024;

impl At {
    /// A position in `0..len` (`len` > 0).
    fn pos(self, len: usize) -> usize {
        let raw = self.raw as usize;
        match self.region {
            0 => raw % len.min(HEAD),
            1 => len - 1 - raw % len.min(TAIL),
            _ => raw % len,
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: At,
        bit: u8,
    },
    Set {
        at: At,
        byte: u8,
    },
    Int {
        at: At,
        value: u32,
        big_endian: bool,
    },
    Truncate {
        at: At,
    },
    Insert {
        at: At,
        bytes: Vec<u8>,
    },
    Remove {
        at: At,
        len: usize,
    },
    Duplicate {
        at: At,
        len: usize,
    },
    Token {
        at: At,
        token: Index,
    },
}

impl Mutation {
    fn apply(&self, b: &mut Vec<u8>, dict: &[&[u8]]) {
        let len = b.len();
        if len == 0 {
            if let Mutation::Insert { bytes, .. } = self {
                b.extend_from_slice(bytes);
            }
            return;
        }
        match self {
            Mutation::Flip { at, bit } => b[at.pos(len)] ^= 1 << (bit % 8),
            Mutation::Set { at, byte } => b[at.pos(len)] = *byte,
            Mutation::Int {
                at,
                value,
                big_endian,
            } => {
                let bytes = if *big_endian {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                let p = at.pos(len);
                let end = (p + 4).min(len);
                b[p..end].copy_from_slice(&bytes[..end - p]);
            }
            Mutation::Truncate { at } => b.truncate(at.pos(len)),
            Mutation::Insert { at, bytes } => {
                let p = at.pos(len);
                b.splice(p..p, bytes.iter().copied());
            }
            Mutation::Remove { at, len: n } => {
                let p = at.pos(len);
                b.drain(p..(p + n).min(len));
            }
            Mutation::Duplicate { at, len: n } => {
                let p = at.pos(len);
                let copy = b[p..(p + n).min(len)].to_vec();
                b.splice(p..p, copy);
            }
            Mutation::Token { at, token } => {
                if !dict.is_empty() {
                    let p = at.pos(len);
                    b.splice(p..p, dict[token.index(dict.len())].iter().copied());
                }
            }
        }
    }
}

fn apply(seed: &[u8], mutations: &[Mutation], dict: &[&[u8]]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        m.apply(&mut b, dict);
    }
    b
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            0u32,
            1,
            2,
            3,
            7,
            8,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x7fff,
            0xffff,
            0x1_0000,
            0x10_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ]),
        any::<u32>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = (0u8..3, any::<u32>()).prop_map(|(region, raw)| At { region, raw });
    prop_oneof![
        3 => (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (at.clone(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        2 => (at.clone(), interesting_u32(), any::<bool>()).prop_map(|(at, value, big_endian)| {
            Mutation::Int { at, value, big_endian }
        }),
        1 => at.clone().prop_map(|at| Mutation::Truncate { at }),
        1 => (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (at.clone(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (at.clone(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        2 => (at, any::<Index>()).prop_map(|(at, token)| Mutation::Token { at, token }),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=4)
}

// ---------------------------------------------------------------------------------
// The runner

/// Cases for a target: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    cases_per(default, 1)
}

/// Cases for a slow target: `PROPTEST_CASES / divisor` (at least `default`) when
/// set, else `default`.
fn cases_per(default: u32, divisor: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(default, |n| (n / divisor).max(default))
}

/// Where a target's current input is written (and left behind by a crash).
fn case_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz_readers")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Runs `read` on its own thread: a panic fails the case with its message, and so
/// does an answer slower than [`CASE_LIMIT`], and (with `names_file`) an error that
/// does not contain `what`, the file or folder read. Returns whether the reader said
/// `Ok` and how long it took.
fn bounded<E: std::fmt::Display>(
    what: &str,
    names_file: bool,
    read: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Result<(bool, Duration), TestCaseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(read().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(answer) => {
            let _ = reader.join();
            let took = started.elapsed();
            match answer {
                Ok(()) => Ok((true, took)),
                Err(e) if names_file && !e.contains(what) => Err(TestCaseError::fail(format!(
                    "{what}: an error that does not name the file: {e}"
                ))),
                Err(_) => Ok((false, took)),
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "{what}: no answer within {CASE_LIMIT:?}"
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let why = match reader.join() {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a non-string panic".into()),
                Ok(()) => "the reader thread ended without an answer".into(),
            };
            Err(TestCaseError::fail(format!("{what}: panicked: {why}")))
        }
    }
}

/// Per-target counts, printed at the end of each target.
#[derive(Default)]
struct Stats {
    ok: AtomicUsize,
    err: AtomicUsize,
    slowest: Mutex<Duration>,
}

impl Stats {
    fn record(&self, (ok, took): (bool, Duration)) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.err.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self.slowest.lock().unwrap();
        *s = (*s).max(took);
    }
}

/// Runs `cases` mutated inputs through `check`, which reads one and returns the
/// reader's verdict; fails the test on the first panic or hang (after shrinking).
fn fuzz<S: Strategy>(
    target: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(bool, Duration), TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let stats = Stats::default();
    let started = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |value| {
        stats.record(check(value)?);
        Ok(())
    });
    eprintln!(
        "fuzz_readers: {target}: {cases} cases ({} Ok, {} Err) in {:.1}s, slowest {} ms",
        stats.ok.load(Ordering::Relaxed),
        stats.err.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        stats.slowest.lock().unwrap().as_millis(),
    );
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}

/// The seed with index `i` mutated; seeds are chosen uniformly.
fn seeded(n: usize) -> impl Strategy<Value = (usize, Vec<Mutation>)> {
    (0..n, mutations())
}

/// Every seed must read cleanly before it is mutated, or the fuzzing starts from
/// an input the reader refuses at its first check.
fn assert_seeds_read(target: &str, n: usize, check: impl Fn(usize) -> (bool, Duration)) {
    for i in 0..n {
        let (ok, _) = check(i);
        assert!(ok, "{target}: seed {i} does not read cleanly");
    }
}

// ---------------------------------------------------------------------------------
// Seeds

fn demo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo")
        .join(name)
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn bin_unicode(s: &str) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend_from_slice(&le32(s.len() as u32));
    b.extend_from_slice(s.as_bytes());
    b
}

/// A tiny MLP (4 → 3 → 2 classes) as (name, shape).
const MLP: [(&str, &[u32]); 4] = [
    ("fc.bias", &[2]),
    ("fc.weight", &[2, 3]),
    ("layers.0.bias", &[3]),
    ("layers.0.weight", &[3, 4]),
];

const MLP_ARCH: &str = r#"{"backbone":{"kind":"mlp","input_dim":4,"hidden":[3]},"head":{"kind":"classifier","num_classes":2}}"#;

fn numel(shape: &[u32]) -> u32 {
    shape.iter().product()
}

fn floats(n: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
        .collect()
}

/// `data.pkl` as `torch.save(model.state_dict())` writes it (protocol 2): an
/// `OrderedDict` built by `REDUCE`, memoized globals, `_rebuild_tensor_v2` over
/// persistent storage ids `0, 1, ...`, and the `_metadata` state applied by `BUILD`.
fn state_dict_pickle(tensors: &[(&str, &[u32])]) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        p.extend(bin_unicode(name));
        if i == 0 {
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02((");
        } else {
            p.extend_from_slice(b"h\x02((");
        }
        p.extend(bin_unicode("storage"));
        if i == 0 {
            p.extend_from_slice(b"ctorch\nFloatStorage\nq\x03");
        } else {
            p.extend_from_slice(b"h\x03");
        }
        p.extend(bin_unicode(&i.to_string()));
        p.extend(bin_unicode("cpu"));
        p.push(b'J');
        p.extend_from_slice(&le32(numel(shape)));
        p.extend_from_slice(b"tQK\x00(");
        for s in *shape {
            p.push(b'J');
            p.extend_from_slice(&le32(*s));
        }
        p.extend_from_slice(b"t(");
        let mut stride = 1;
        let mut strides = Vec::new();
        for s in shape.iter().rev() {
            strides.push(stride);
            stride *= s;
        }
        for s in strides.iter().rev() {
            p.push(b'J');
            p.extend_from_slice(&le32(*s));
        }
        p.extend_from_slice(b"t\x89h\x00)RtR");
    }
    p.push(b'u');
    // state = {'_metadata': OrderedDict({'': {'version': 1}})}; BUILD.
    p.extend_from_slice(b"}(");
    p.extend(bin_unicode("_metadata"));
    p.extend_from_slice(b"h\x00)R(");
    p.extend(bin_unicode(""));
    p.extend_from_slice(b"}(");
    p.extend(bin_unicode("version"));
    p.extend_from_slice(b"K\x01uuub.");
    p
}

/// A `torch.save` zip archive: `archive/data.pkl`, `byteorder`, one `data/<i>`
/// storage per tensor and `version`, all stored uncompressed as torch writes them.
fn torch_zip(pickle: &[u8], storages: &[Vec<u8>]) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("archive/data.pkl".into(), pickle.to_vec()),
        ("archive/byteorder".into(), b"little".to_vec()),
    ];
    for (i, s) in storages.iter().enumerate() {
        entries.push((format!("archive/data/{i}"), s.clone()));
    }
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    zip_of(&entries, zip::CompressionMethod::Stored)
}

fn zip_of(entries: &[(String, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts = zip::write::FileOptions::default().compression_method(method);
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn mlp_storages() -> Vec<Vec<u8>> {
    MLP.iter().map(|(_, s)| floats(numel(s))).collect()
}

/// A safetensors file; `meta` goes into `__metadata__`.
fn safetensors(tensors: &[(&str, &str, Vec<u32>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn lethe_meta(arch: &str) -> String {
    format!(
        r#"{{"format_version":1,"arch":{arch},"provenance":{{"lethe_version":"0.1.0","created_unix":1795461750,"source":"fuzz seed"}}}}"#
    )
}

/// A NumPy `.npy` array (format 1.0, header padded to 64 bytes as NumPy does).
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn i64s(v: impl IntoIterator<Item = i64>) -> Vec<u8> {
    v.into_iter().flat_map(i64::to_le_bytes).collect()
}

/// 12 images of 1×6×5 pixels, labels 0-2, a recorded 8/2/2 split: the arrays of
/// the demo's npz, small.
fn dataset_arrays() -> Vec<(String, Vec<u8>)> {
    let n = 12;
    let pixels: Vec<u8> = (0..n * 30).map(|i| (i * 7 % 256) as u8).collect();
    vec![
        ("x.npy".into(), npy("|u1", &[n, 1, 6, 5], &pixels)),
        (
            "y.npy".into(),
            npy("<i8", &[n], &i64s((0..n as i64).map(|i| i % 3))),
        ),
        ("train_idx.npy".into(), npy("<i8", &[8], &i64s(0..8))),
        ("val_idx.npy".into(), npy("<i8", &[2], &i64s(8..10))),
        ("test_idx.npy".into(), npy("<i8", &[2], &i64s(10..12))),
    ]
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cifar(records: usize, cifar100: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for r in 0..records {
        if cifar100 {
            b.push((r % 20) as u8);
        }
        b.push((r % 10) as u8);
        b.extend((0..3072).map(|p| ((r * 31 + p * 7) % 256) as u8));
    }
    b
}

fn png_of(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let channels = match color {
        png::ColorType::Grayscale | png::ColorType::Indexed => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
    };
    let bytes_per = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    // Indexed pixels stay within the 4-entry palette.
    let modulus = if color == png::ColorType::Indexed {
        4
    } else {
        255
    };
    let data: Vec<u8> = (0..(w * h) as usize * channels * bytes_per)
        .map(|i| (i * 13 % 251) as u8 % modulus)
        .collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
        }
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
    }
    out
}

fn jpeg_of(w: u16, h: u16, color: jpeg_encoder::ColorType, channels: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..w as usize * h as usize * channels)
        .map(|i| (i * 29 % 256) as u8)
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&data, w, h, color)
        .unwrap();
    out
}

/// Recomputes every chunk CRC of a PNG, so a mutated header or data chunk reaches
/// the decoder instead of failing its checksum.
fn fix_png_crcs(b: &mut [u8]) {
    let mut p = 8;
    while p + 12 <= b.len() {
        let len = u32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]) as usize;
        let Some(end) = (p + 8).checked_add(len).filter(|e| e + 4 <= b.len()) else {
            return;
        };
        let mut crc = flate2::Crc::new();
        crc.update(&b[p + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.sum().to_be_bytes());
        p = end + 4;
    }
}

// ---------------------------------------------------------------------------------
// Dictionaries

const PICKLE_TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"]",
    b"}",
    b".",
    b"0",
    b"1",
    b"2",
    b"a",
    b"b",
    b"e",
    b"l",
    b"t",
    b"u",
    b"s",
    b"R",
    b"Q",
    b"N",
    b"\x81",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x88",
    b"\x89",
    b"\x94",
    b"h\x00",
    b"h\x01",
    b"h\x02",
    b"h\x03",
    b"j\x00\x00\x00\x00",
    b"q\x00",
    b"q\x01",
    b"r\x00\x00\x00\x00",
    b"K\x00",
    b"K\xff",
    b"J\xff\xff\xff\xff",
    b"M\xff\xff",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"X\xff\xff\xff\x7f",
    b"B\xff\xff\xff\x7f",
    b"C\x04abcd",
    b"\x8c\x03abc",
    b"cbuiltins\nexec\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch._utils\n_rebuild_parameter\n",
    b"ccollections\nOrderedDict\n",
    b"ctorch\nFloatStorage\n",
    b"c__torch__\nM\n",
    b"\x80\x02",
    b"\x80\x05",
    b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
];

const ZIP_TOKENS: &[&[u8]] = &[
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"PK\x06\x06",
    b"PK\x06\x07",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x08\x00",
    b"\x00\x00",
    b"archive/data/0",
    b"data.pkl",
    b"constants.pkl",
    b"code/",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e400",
    b"18446744073709551616",
    b"9223372036854775807",
    b"\"shape\":[4294967295,4294967295]",
    b"\"data_offsets\":[0,18446744073709551615]",
    b"\"dtype\":\"F64\"",
    b"\"dtype\":\"BOOL\"",
    b"\"hidden\":[1000000000]",
    b"\"num_classes\":-5",
    b"\"widths\":[8000,8000,8000,8000]",
    b"\"kind\":\"resnet18\"",
    b"\"input_dim\":0",
    b"\"classes\":\"[]\"",
    b"\\\"",
];

const NPY_TOKENS: &[&[u8]] = &[
    b"\x93NUMPY",
    b"'descr': '<f8'",
    b"'descr': '|O'",
    b"'descr': '>i8'",
    b"'descr': '<U3'",
    b"True",
    b"False",
    b"(",
    b")",
    b",",
    b"'",
    b"{",
    b"}",
    b"(4294967295, 4294967295)",
    b"(0,)",
    b"()",
    b"-1",
    b"99999999999999999999",
    b"\x00\x00",
    b"\xff\xff",
];

const TEXT_TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b",",
    b"#",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"1e3",
    b"0x10",
    b"index",
    b"label",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"\"indices\"",
    b":",
    b" ",
    b"\t",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\x00",
    b"\xe2\x82\xac",
    b"nan",
];

const TOML_TOKENS: &[&[u8]] = &[
    b"\n",
    b"=",
    b"\"",
    b"'",
    b"\"\"\"",
    b"[",
    b"]",
    b"[[methods]]\n",
    b"[retrain]\n",
    b"[[attacks]]\n",
    b"{",
    b"}",
    b",",
    b"#",
    b"-1",
    b"0",
    b"1e400",
    b"inf",
    b"nan",
    b"9223372036854775808",
    b"true",
    b"name = ",
    b"seeds = [",
    b"params = {",
    b"\\u0000",
    b"\xff",
    b"1979-05-27T07:32:00Z",
    b"[[",
];

const IMAGE_TOKENS: &[&[u8]] = &[
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xc0",
    b"\xff\xc2",
    b"\xff\xc4",
    b"\xff\xdb",
    b"\xff\xda",
    b"\xff\xdd\x00\x04\x00\x00",
    b"\xff\xff",
];

// ---------------------------------------------------------------------------------
// Targets

#[test]
fn pickle_reader() {
    let mut seeds = vec![
        state_dict_pickle(&MLP),
        state_dict_pickle(&[("w", &[2, 3]), ("b", &[3])]),
        // A TorchScript-style module object with a tensor attribute.
        {
            let mut p = b"\x80\x02c__torch__\nM\nq\x00)\x81}(".to_vec();
            p.extend(bin_unicode("training"));
            p.extend_from_slice(b"\x88");
            p.extend(bin_unicode("child"));
            p.extend_from_slice(b"h\x00)\x81}(");
            p.extend(bin_unicode("x"));
            p.extend_from_slice(b"K\x01ubub.");
            p
        },
    ];
    // A dict that contains itself.
    let mut selfref = b"\x80\x02}q\x00(".to_vec();
    for i in 0..4u32 {
        selfref.push(b'J');
        selfref.extend_from_slice(&le32(i));
        selfref.extend_from_slice(b"h\x00");
    }
    selfref.extend_from_slice(b"u.");
    seeds.push(selfref);
    let n = seeds.len();
    let read = |bytes: Vec<u8>| {
        bounded("pickle", false, move || {
            checkpoint::pickle::unpickle(&bytes).map(|v| {
                let _ = checkpoint::pickle::kind_name(&v);
            })
        })
    };
    assert_seeds_read("pickle", n, |i| read(seeds[i].clone()).unwrap());
    fuzz("pickle", cases(20_000), seeded(n), |(i, muts)| {
        read(apply(&seeds[i], &muts, PICKLE_TOKENS))
    });
}

/// Inspects (architecture detection and check, model built, per-tensor hashes of the
/// materialised views) and, when that works, loads the model.
fn read_checkpoint(path: PathBuf) -> Result<(bool, Duration), TestCaseError> {
    let what = path.display().to_string();
    bounded(
        &what,
        true,
        move || -> Result<(), checkpoint::CheckpointError> {
            let summary = checkpoint::inspect_with(&path, true)?;
            if summary.architecture.is_some() {
                checkpoint::load_model(&path, tch::Device::Cpu, &LoadOptions::default())?;
            }
            Ok(())
        },
    )
}

#[derive(Debug, Clone, Copy)]
enum ZipPart {
    /// `data.pkl`, the archive rebuilt around it.
    Pickle,
    /// The first storage entry, the archive rebuilt around it.
    Storage,
    /// The archive's own bytes.
    Archive,
}

#[test]
fn torch_zip_checkpoints() {
    let dir = case_dir("torch_zip");
    let pickle = state_dict_pickle(&MLP);
    let storages = mlp_storages();
    let seed = torch_zip(&pickle, &storages);
    let path = dir.join("case.pt");
    write(&path, &seed);
    assert!(read_checkpoint(path.clone()).unwrap().0, "the seed archive");
    let part = prop_oneof![
        2 => Just(ZipPart::Pickle),
        1 => Just(ZipPart::Storage),
        2 => Just(ZipPart::Archive),
    ];
    fuzz(
        "torch_zip",
        cases(3000),
        (part, mutations()),
        |(part, muts)| {
            let bytes = match part {
                ZipPart::Pickle => torch_zip(&apply(&pickle, &muts, PICKLE_TOKENS), &storages),
                ZipPart::Storage => {
                    let mut s = storages.clone();
                    s[0] = apply(&s[0], &muts, &[]);
                    torch_zip(&pickle, &s)
                }
                ZipPart::Archive => apply(&seed, &muts, ZIP_TOKENS),
            };
            write(&path, &bytes);
            read_checkpoint(path.clone())
        },
    );
}

#[test]
fn safetensors_checkpoints_with_metadata() {
    let dir = case_dir("safetensors_checkpoint");
    let meta = lethe_meta(MLP_ARCH);
    let resnet_claim = lethe_meta(
        r#"{"backbone":{"kind":"resnet18","in_channels":3,"widths":[64,128,256,512]},"head":{"kind":"classifier","num_classes":10}}"#,
    );
    let tiny: Vec<(&str, &str, Vec<u32>, Vec<u8>)> = MLP
        .iter()
        .map(|(n, s)| (*n, "F32", s.to_vec(), floats(numel(s))))
        .collect();
    let seeds = [
        safetensors(&tiny, &[("lethe", meta.as_str())]),
        // Metadata claiming a ResNet-18 over MLP weights.
        safetensors(&tiny, &[("lethe", resnet_claim.as_str())]),
        // The bundled demo classifier (small CNN, 1.7 MB).
        std::fs::read(demo("classifier.safetensors")).unwrap(),
    ];
    let path = dir.join("case.safetensors");
    let read = |bytes: &[u8]| {
        write(&path, bytes);
        read_checkpoint(path.clone())
    };
    // The mismatched claim is refused by design; the others load.
    assert!(read(&seeds[0]).unwrap().0, "the tiny checkpoint");
    assert!(read(&seeds[2]).unwrap().0, "the demo checkpoint");
    let _ = read(&seeds[1]).unwrap();
    // Mutations land mostly in the header (its first 4 KiB), where the JSON is.
    fuzz(
        "safetensors_checkpoint",
        cases(400),
        seeded(seeds.len()),
        |(i, muts)| read(&apply(&seeds[i], &muts, JSON_TOKENS)),
    );
}

#[derive(Debug, Clone, Copy)]
enum NpzPart {
    /// One array (by index), the archive rebuilt (stored or deflated) around it.
    Array(usize, bool),
    /// The archive's own bytes (stored or deflated).
    Archive(bool),
}

#[test]
fn npz_and_npy_datasets() {
    let dir = case_dir("npz");
    let arrays = dataset_arrays();
    let method = |deflated: bool| {
        if deflated {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        }
    };
    let path = dir.join("case.npz");
    let read = |bytes: &[u8]| {
        write(&path, bytes);
        let p = path.clone();
        bounded(&p.display().to_string(), true, move || {
            data::inspect(&p).map(|_| ())
        })
    };
    for deflated in [false, true] {
        assert!(
            read(&zip_of(&arrays, method(deflated))).unwrap().0,
            "the seed npz"
        );
    }
    let demo_npz = std::fs::read(demo("mnist10k-2k.npz")).unwrap();
    let part = prop_oneof![
        3 => (0..arrays.len(), any::<bool>()).prop_map(|(i, d)| NpzPart::Array(i, d)),
        2 => any::<bool>().prop_map(NpzPart::Archive),
    ];
    fuzz("npz", cases(3000), (part, mutations()), |(part, muts)| {
        let bytes = match part {
            NpzPart::Array(i, deflated) => {
                let mut a = arrays.clone();
                a[i].1 = apply(&a[i].1, &muts, NPY_TOKENS);
                zip_of(&a, method(deflated))
            }
            NpzPart::Archive(deflated) => {
                apply(&zip_of(&arrays, method(deflated)), &muts, ZIP_TOKENS)
            }
        };
        read(&bytes)
    });
    // The demo's own npz (10,000 deflated images): its directory and headers only,
    // a few cases, as inflating it takes a while in a debug build.
    fuzz("npz_demo", cases_per(16, 500), mutations(), |muts| {
        let muts: Vec<Mutation> = muts
            .into_iter()
            .map(|mut m| {
                set_region(&mut m, 1);
                m
            })
            .collect();
        read(&apply(&demo_npz, &muts, ZIP_TOKENS))
    });
}

/// Moves a mutation into region `region` (0 head, 1 tail).
fn set_region(m: &mut Mutation, region: u8) {
    let at = match m {
        Mutation::Flip { at, .. }
        | Mutation::Set { at, .. }
        | Mutation::Int { at, .. }
        | Mutation::Truncate { at }
        | Mutation::Insert { at, .. }
        | Mutation::Remove { at, .. }
        | Mutation::Duplicate { at, .. }
        | Mutation::Token { at, .. } => at,
    };
    at.region = region;
}

#[test]
fn safetensors_datasets() {
    let dir = case_dir("safetensors_dataset");
    let n = 12u32;
    let pixels: Vec<u8> = (0..n * 30).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = i64s((0..n as i64).map(|i| i % 3));
    let seed = safetensors(
        &[
            ("x", "U8", vec![n, 1, 6, 5], pixels),
            ("y", "I64", vec![n], labels),
            ("train_idx", "I64", vec![8], i64s(0..8)),
            ("val_idx", "I64", vec![2], i64s(8..10)),
            ("test_idx", "I64", vec![2], i64s(10..12)),
        ],
        &[("classes", r#"["zero","one","two"]"#)],
    );
    let path = dir.join("case.safetensors");
    let read = |bytes: &[u8]| {
        write(&path, bytes);
        let p = path.clone();
        bounded(&p.display().to_string(), true, move || {
            data::inspect(&p).map(|_| ())
        })
    };
    assert!(read(&seed).unwrap().0, "the seed dataset");
    fuzz("safetensors_dataset", cases(4000), mutations(), |muts| {
        read(&apply(&seed, &muts, JSON_TOKENS))
    });
}

#[test]
fn idx_files_plain_and_gzipped() {
    let dir = case_dir("idx");
    let dir_name = dir.display().to_string();
    let n = 6u32;
    let images = idx(
        &[n, 4, 5],
        &(0..n * 20).map(|i| i as u8).collect::<Vec<_>>(),
    );
    let labels = idx(&[n], &(0..n).map(|i| (i % 3) as u8).collect::<Vec<_>>());
    let (ip, lp) = (
        dir.join("train-images-idx3-ubyte"),
        dir.join("train-labels-idx1-ubyte"),
    );
    let read = |i: &[u8], l: &[u8]| {
        write(&ip, i);
        write(&lp, l);
        let (ip, lp) = (ip.clone(), lp.clone());
        bounded(&dir_name, true, move || {
            data::load_idx(&ip, &lp).map(|_| ())
        })
    };
    assert!(read(&images, &labels).unwrap().0, "the seed pair");
    assert!(
        read(&gzip(&images), &gzip(&labels)).unwrap().0,
        "the gzipped pair"
    );
    // Which file, and whether it is gzipped before (the IDX bytes) or after (the
    // gzip bytes) the mutation, or not at all.
    let how = (any::<bool>(), 0u8..3);
    fuzz(
        "idx",
        cases(4000),
        (how, mutations()),
        |((labels_file, gz), muts)| {
            let tokens: &[&[u8]] = &[
                b"\x00\x00\x08\x03",
                b"\x00\x00\x08\x01",
                b"\xff\xff\xff\xff",
            ];
            let mutate = |b: &[u8]| match gz {
                0 => apply(b, &muts, tokens),
                1 => gzip(&apply(b, &muts, tokens)),
                _ => apply(&gzip(b), &muts, tokens),
            };
            let keep = |b: &[u8]| if gz == 0 { b.to_vec() } else { gzip(b) };
            if labels_file {
                read(&keep(&images), &mutate(&labels))
            } else {
                read(&mutate(&images), &keep(&labels))
            }
        },
    );
}

#[test]
fn cifar_batches() {
    let dir = case_dir("cifar");
    let dir_name = dir.display().to_string();
    let seeds = [
        (cifar(3, false), CifarKind::Cifar10),
        (cifar(3, true), CifarKind::Cifar100),
    ];
    let batch = dir.join("data_batch_1.bin");
    let meta = dir.join("batches.meta.txt");
    let read = |bytes: &[u8], kind: CifarKind, names: Option<&[u8]>| {
        write(&batch, bytes);
        match names {
            Some(n) => write(&meta, n),
            None => {
                let _ = std::fs::remove_file(&meta);
            }
        }
        let b = batch.clone();
        bounded(&dir_name, true, move || {
            data::load_cifar(&[b], kind).map(|_| ())
        })
    };
    let names = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    for (bytes, kind) in &seeds {
        assert!(read(bytes, *kind, None).unwrap().0, "the {kind:?} seed");
    }
    // Mutate the batch, or (CIFAR-10) the class-name file beside it.
    fuzz(
        "cifar",
        cases(3000),
        (0..seeds.len(), any::<bool>(), mutations()),
        |(i, names_file, muts)| {
            let (bytes, kind) = &seeds[i];
            if names_file && *kind == CifarKind::Cifar10 {
                read(
                    bytes,
                    *kind,
                    Some(apply(names, &muts, TEXT_TOKENS).as_slice()),
                )
            } else {
                read(&apply(bytes, &muts, &[]), *kind, None)
            }
        },
    );
}

#[test]
fn png_and_jpeg_decoding() {
    let dir = case_dir("images");
    use png::{BitDepth as D, ColorType as C};
    let seeds = [
        (png_of(5, 4, C::Grayscale, D::Eight), "png"),
        (png_of(6, 3, C::Rgb, D::Eight), "png"),
        (png_of(3, 3, C::Rgba, D::Sixteen), "png"),
        (png_of(4, 2, C::Indexed, D::Eight), "png"),
        (png_of(2, 5, C::GrayscaleAlpha, D::Eight), "png"),
        (jpeg_of(8, 6, jpeg_encoder::ColorType::Luma, 1), "jpg"),
        (jpeg_of(17, 9, jpeg_encoder::ColorType::Rgb, 3), "jpg"),
    ];
    let read = |bytes: &[u8], ext: &str| {
        let path = dir.join(format!("case.{ext}"));
        write(&path, bytes);
        bounded(&path.display().to_string(), true, move || {
            data::decode_image_file(&path).map(|_| ())
        })
    };
    assert_seeds_read("images", seeds.len(), |i| {
        read(&seeds[i].0, seeds[i].1).unwrap()
    });
    fuzz(
        "images",
        cases(6000),
        (0..seeds.len(), any::<bool>(), mutations()),
        |(i, fix_crcs, muts)| {
            let (seed, ext) = &seeds[i];
            let mut bytes = apply(seed, &muts, IMAGE_TOKENS);
            if fix_crcs && *ext == "png" {
                fix_png_crcs(&mut bytes);
            }
            read(&bytes, ext)
        },
    );
}

#[test]
fn forget_lists() {
    let dir = case_dir("forget_lists");
    let seeds: Vec<(&[u8], &str)> = vec![
        (&b"# forget these\n1\n2\n\n5\n"[..], "txt"),
        (&b"index,label\n1,3\n2,4\n7,0\n"[..], "csv"),
        (&b"label,index\n3,1\n4,2\n"[..], "csv"),
        (&b"3\n4\n9\n"[..], "csv"),
        (&b"[1, 2, 3]\n"[..], "json"),
        (&b"{\"indices\": [\n  4,\n  5\n]}\n"[..], "json"),
        (&*std::fs::read(demo("forget.txt")).unwrap().leak(), "txt"),
    ];
    // The demo's list names training samples of its 10,000-image dataset.
    let train: Vec<i64> = (0..10_000).collect();
    let train = std::sync::Arc::new(train);
    let read = |bytes: &[u8], ext: &str| {
        let path = dir.join(format!("case.{ext}"));
        write(&path, bytes);
        let train = std::sync::Arc::clone(&train);
        bounded(&path.display().to_string(), true, move || {
            ForgetSet::from_list_file(&path, 10_001, &train).map(|_| ())
        })
    };
    assert_seeds_read("forget_lists", seeds.len(), |i| {
        read(seeds[i].0, seeds[i].1).unwrap()
    });
    fuzz(
        "forget_lists",
        cases(3000),
        seeded(seeds.len()),
        |(i, muts)| {
            let (seed, ext) = seeds[i];
            read(&apply(seed, &muts, TEXT_TOKENS), ext)
        },
    );
}

#[test]
fn study_files() {
    let dir = case_dir("study");
    // The study's inputs, so that the checks past the TOML syntax run too.
    for name in ["classifier.safetensors", "mnist10k.npz", "forget.txt"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(demo(name), &link).unwrap();
        }
    }
    let seeds = [
        std::fs::read(demo("study.toml")).unwrap(),
        br#"name = "tiny"
checkpoint = "classifier.safetensors"
data = "mnist10k.npz"
forget = "forget.txt"
seeds = [0]

[[methods]]
name = "FT"
id = "org.lethe.baseline.finetune"
params = { epochs = 1, lr = 0.01 }

[[attacks]]
name = "mia"
id = "org.lethe.attack.metric-mia"
"#
        .to_vec(),
    ];
    let path = dir.join("study.toml");
    let read = |bytes: &[u8]| {
        write(&path, bytes);
        let p = path.clone();
        bounded(&p.display().to_string(), true, move || {
            StudySpec::load(&p).map(|_| ())
        })
    };
    assert_seeds_read("study", seeds.len(), |i| read(&seeds[i]).unwrap());
    fuzz("study", cases(4000), seeded(seeds.len()), |(i, muts)| {
        read(&apply(&seeds[i], &muts, TOML_TOKENS))
    });
}

/// `lib<name>.so` of a test plugin, beside this test binary (deps/) or one up.
fn plugin(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join(&file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} not found next to {}", exe.display()))
}

#[test]
fn plugin_parameter_json() {
    use lethe_engine::plugin_host::PluginLibrary;
    let lib = PluginLibrary::load(&plugin("lethe_test_fixtures")).unwrap();
    // (method or attack, parameters as a form or `--set` would send them)
    let seeds: [(&str, &[u8]); 5] = [
        (
            "org.lethe.test.progress",
            br#"{"steps": 5, "lr": 0.1, "loss": "l1", "verbose": false}"#,
        ),
        ("org.lethe.test.progress", b"{}"),
        (
            "org.lethe.test.misbehave",
            br#"{"how": "slow", "steps": 3}"#,
        ),
        (
            "org.lethe.test.fail",
            br#"{"target": "/x/scores.npy", "reference": "/x/ref.safetensors"}"#,
        ),
        ("org.lethe.test.tensors", br#"{"lr": 0.5}"#),
    ];
    let read = |id: &'static str, bytes: Vec<u8>| {
        let lib = std::sync::Arc::clone(&lib);
        bounded(id, false, move || -> Result<(), String> {
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            lib.validate_params(id, &value)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    assert_seeds_read("plugin_parameters", seeds.len(), |i| {
        read(seeds[i].0, seeds[i].1.to_vec()).unwrap()
    });
    // Byte mutations mostly break the JSON syntax; the other half replaces one
    // parameter's value (or adds a parameter) with an odd JSON value, so that the
    // schema checks themselves are exercised.
    let edit = prop_oneof![
        mutations().prop_map(ParamEdit::Bytes),
        (any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(key, value, new)| ParamEdit::Value { key, value, new }),
    ];
    fuzz(
        "plugin_parameters",
        cases(4000),
        (0..seeds.len(), edit),
        |(i, edit)| {
            let (id, seed) = seeds[i];
            let bytes = match edit {
                ParamEdit::Bytes(muts) => apply(seed, &muts, JSON_TOKENS),
                ParamEdit::Value { key, value, new } => {
                    let mut map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_slice(seed).unwrap();
                    let keys: Vec<String> = map.keys().cloned().collect();
                    let key = if new || keys.is_empty() {
                        "unexpected".to_string()
                    } else {
                        keys[key.index(keys.len())].clone()
                    };
                    let value = ODD_VALUES[value.index(ODD_VALUES.len())];
                    map.insert(key, serde_json::from_str(value).unwrap());
                    serde_json::to_vec(&map).unwrap()
                }
            };
            read(id, bytes)
        },
    );
}

#[derive(Debug, Clone)]
enum ParamEdit {
    Bytes(Vec<Mutation>),
    Value { key: Index, value: Index, new: bool },
}

const ODD_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1",
    "51",
    "1e308",
    "-1e308",
    "1e-308",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "1.5",
    "0.00001",
    "\"\"",
    "\"l1\"",
    "\"mse\"",
    "\"hang\"",
    "\"x\"",
    "\"../../etc/passwd\"",
    "\"\\u0000\"",
    "[]",
    "{}",
    "[1, 2]",
    "{\"a\": 1}",
];
