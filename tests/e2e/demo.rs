//! The Quickstart's main job, run as a user would: `lethe-cli demo`.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_e2e::{require_binary, workspace_root};
use std::process::Command;

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn demo_deletion_forgets_and_never_overwrites() {
    let tmp = std::env::temp_dir().join(format!("lethe-demo-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out_dir = tmp.join("run");
    let original = workspace_root().join("resources/demo/classifier.safetensors");
    let original_hash = sha256(&original);

    let run = |dir: &std::path::Path| {
        Command::new(require_binary("lethe-cli"))
            .args(["demo", "--device", "cpu", "--out"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run(&out_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("forget accuracy"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    let (o, u) = (&report["original"], &report["unlearned"]);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert_eq!(report["forget_count"], 300);
    assert_eq!(report["retain_count"], 5700);
    // The bundled model was fitted on the forget set; the retrained one never saw it,
    // so its loss there rises to the level of unseen data.
    assert!(f(o, "forget_loss") < 0.01, "{o}");
    assert!(f(u, "forget_loss") > 10.0 * f(o, "forget_loss"), "{o} {u}");
    assert!(f(u, "forget_accuracy") <= f(o, "forget_accuracy"));
    assert!(f(u, "retain_accuracy") > 0.95, "{u}");
    assert!(
        (f(u, "test_accuracy") - f(o, "test_accuracy")).abs() < 0.03,
        "{o} {u}"
    );
    let auc = f(u, "mia_auc");
    assert!((0.0..=1.0).contains(&auc));

    // The unlearned checkpoint is a readable Lethe checkpoint.
    let ckpt = out_dir.join("unlearned.safetensors");
    let inspect = Command::new(require_binary("lethe-cli"))
        .args(["checkpoint", "inspect"])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // Outputs are never overwritten, and the original is untouched.
    let again = run(&out_dir);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(sha256(&original), original_hash);
    std::fs::remove_dir_all(&tmp).unwrap();
}
