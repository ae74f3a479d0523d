//! `lethe-cli data inspect` on the demo file and on a broken one.

use std::path::PathBuf;
use std::process::Command;

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lethe-cli"))
        .args(["data", "inspect"])
        .args(args)
        .output()
        .expect("run lethe-cli data inspect")
}

fn demo() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo/mnist10k.npz")
        .display()
        .to_string()
}

#[test]
fn inspect_prints_format_size_shape_classes_and_first_hash() {
    let out = inspect(&[&demo()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "format: npz",
        "samples: 10000",
        "shape: [1, 28, 28]",
        "classes: 10",
        "    1: 1127",
        "recorded split: train 6000, val 1000, test 3000",
        "first sample sha256: ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn inspect_json_is_machine_readable() {
    let out = inspect(&[&demo(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["len"], 10_000);
    assert_eq!(v["shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(v["classes"].as_array().map(Vec::len), Some(10));
    assert_eq!(v["first_hash"].as_str().map(str::len), Some(64));
}

#[test]
fn inspect_of_a_truncated_file_fails_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cut = dir.path().join("cut.npz");
    let bytes = std::fs::read(demo()).expect("read demo");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).expect("write");
    let out = inspect(&[cut.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.npz") && err.contains("not a valid npz"),
        "{err}"
    );
}
