//! For plugin unit tests: runs a Python script under the project's PyTorch
//! (`.venv/bin/python`, installed by `installer/setup.sh`) with a JSON value on
//! stdin and returns the JSON it prints, so a loss can be pinned against an
//! independent PyTorch re-implementation on a fixed batch.

use lethe_plugin_api::tch::{Kind, Tensor};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The project's Python (`<workspace>/.venv/bin/python`).
pub fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// Runs `script` with `input` on stdin and parses its stdout as JSON. Panics with
/// the script's stderr when it fails (a test helper).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn torch_oracle(script: &str, input: &Value) -> Value {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the project venv (installer/setup.sh) has torch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the PyTorch oracle failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the oracle prints JSON")
}

/// A tensor's values as f64, flattened (to compare with the oracle's JSON).
#[allow(clippy::unwrap_used)]
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}
