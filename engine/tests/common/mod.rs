//! Helpers shared by the engine's integration tests: a Python oracle
//! (scikit-learn, PyTorch, SciPy) in the project's venv, the demo files, and the
//! plugin libraries cargo built beside the test binary. Each test binary uses
//! some of them, hence the `dead_code` allowances.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `script` with the venv's Python, `input` as JSON on stdin, and parses
/// the JSON it prints.
#[allow(dead_code)]
pub fn python(script: &str, input: &Value) -> Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run installer/setup.sh)", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The path of `file` in `resources/demo`, as a string for a command line.
#[allow(dead_code)]
pub fn demo(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo")
        .join(file)
        .display()
        .to_string()
}

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
#[allow(dead_code)]
pub fn plugin(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join(&file);
        if p.exists() {
            return p;
        }
    }
    panic!("{file} not found next to {}", exe.display());
}
