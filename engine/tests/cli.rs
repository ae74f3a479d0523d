//! The headless binary runs and reports its runtime.

use std::process::Command;

#[test]
fn doctor_prints_the_runtime() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe-cli"))
        .arg("doctor")
        .output()
        .expect("run lethe-cli doctor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libtorch: 2.13.0"), "{text}");
    assert!(text.contains("cuda: "), "{text}");
}
