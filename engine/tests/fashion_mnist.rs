//! Fashion-MNIST from Debian's `dataset-fashion-mnist` (installed by
//! installer/setup.sh) by its short name: the 70,000 images read against an
//! independent reader (NumPy over the gzipped IDX files), its class names, the
//! seeded 5,000-image validation split, the short name on the command line and
//! in a study file, and the error when the package is missing.
#![allow(clippy::unwrap_used)]

mod common;

use lethe_engine::data::{self, named};
use serde_json::json;
use std::path::Path;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

#[test]
fn the_installed_dataset_loads_by_short_name_with_names_and_a_validation_split() {
    let d = data::load(Path::new("fashion-mnist")).unwrap();
    assert_eq!(d.len(), 70_000);
    assert_eq!((d.channels(), d.height(), d.width()), (1, 28, 28));
    assert_eq!(d.classes(), named::FASHION_MNIST_CLASSES.map(String::from));
    let s = d.recorded_split().unwrap();
    assert_eq!(
        (s.train.len(), s.val.len(), s.test.len()),
        (55_000, 5_000, 10_000)
    );
    // The test set is the distribution's t10k file; validation comes out of train.
    assert_eq!(s.test, (60_000..70_000).collect::<Vec<i64>>());
    assert!(s.val.iter().all(|&i| i < 60_000));
    let mut all: Vec<i64> = s.train.iter().chain(&s.val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..60_000).collect::<Vec<i64>>());
    // The same split every time (seeded), and the folder's own path reads the same.
    let again = data::load(Path::new(named::FASHION_MNIST_DIR)).unwrap();
    assert_eq!(again.recorded_split(), d.recorded_split());

    // Against NumPy reading the gzipped IDX files itself.
    let theirs = common::python(
        r#"
import gzip, json, sys, hashlib
import numpy as np
d = json.load(sys.stdin)["dir"]
def idx(name, header):
    with gzip.open(f"{d}/{name}", "rb") as f:
        b = f.read()
    return np.frombuffer(b, dtype=np.uint8, offset=header)
xs = np.concatenate([idx("train-images-idx3-ubyte.gz", 16), idx("t10k-images-idx3-ubyte.gz", 16)]).reshape(-1, 784)
ys = np.concatenate([idx("train-labels-idx1-ubyte.gz", 8), idx("t10k-labels-idx1-ubyte.gz", 8)])
print(json.dumps({
    "n": int(len(ys)),
    "counts": np.bincount(ys).tolist(),
    "first": hashlib.sha256(xs[0].tobytes()).hexdigest(),
    "last": hashlib.sha256(xs[-1].tobytes()).hexdigest(),
    "labels_head": ys[:20].tolist(),
    "pixel_sum": int(xs.astype(np.int64).sum()),
}))
"#,
        &json!({"dir": named::FASHION_MNIST_DIR}),
    );
    assert_eq!(theirs["n"], 70_000);
    let counts: Vec<usize> = theirs["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(d.class_counts(), counts);
    assert_eq!(
        data::hash_hex(&d.hashes()[0]),
        theirs["first"].as_str().unwrap()
    );
    assert_eq!(
        data::hash_hex(&d.hashes()[69_999]),
        theirs["last"].as_str().unwrap()
    );
    let head: Vec<i64> = theirs["labels_head"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(&d.label_slice()[..20], head.as_slice());
    let sum: i64 = d.images().sum(tch::Kind::Int64).int64_value(&[]);
    assert_eq!(sum, theirs["pixel_sum"].as_i64().unwrap());
}

#[test]
fn the_short_name_works_on_the_command_line_and_says_what_to_install_when_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["data", "inspect", "fashion-mnist", "--json"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["len"], 70_000);
    assert_eq!(
        j["path"],
        named::FASHION_MNIST_DIR,
        "records name the real folder"
    );
    assert_eq!(j["classes"][9][0], "Ankle boot");

    let out = Command::new(EXE)
        .args(["data", "inspect", "fashion-mnist"])
        .current_dir(tmp.path())
        .env(named::FASHION_MNIST_ENV, tmp.path().join("not-installed"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("dataset-fashion-mnist") && msg.contains("installer/setup.sh"),
        "{msg}"
    );
}

#[test]
fn a_study_file_may_name_the_dataset_by_its_short_name() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo");
    let text: String = std::fs::read_to_string(demo.join("study.toml"))
        .unwrap()
        .lines()
        .map(|l| {
            let line = if l.starts_with("data =") {
                "data = \"fashion-mnist\"".to_string()
            } else if let Some(v) = l.strip_prefix("checkpoint = \"") {
                format!("checkpoint = \"{}/{v}", demo.display())
            } else if let Some(v) = l.strip_prefix("forget = \"") {
                format!("forget = \"{}/{v}", demo.display())
            } else {
                l.to_string()
            };
            line + "\n"
        })
        .collect();
    assert!(text.contains("data = \"fashion-mnist\""));
    let file = tmp.path().join("study.toml");
    std::fs::write(&file, text).unwrap();
    // The demo's checkpoint and forget list do not fit Fashion-MNIST, but the
    // data path is what is checked here: it names the installed folder.
    match lethe_engine::study::StudySpec::load(&file) {
        Ok(s) => assert_eq!(s.data, Path::new(named::FASHION_MNIST_DIR)),
        Err(e) => assert!(
            !e.to_string().contains("fashion-mnist:"),
            "the short name was not resolved: {e}"
        ),
    }
}
