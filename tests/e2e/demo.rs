//! The Quickstart's main job, run as a user would: `lethe-cli demo`. It carries
//! out the demo's deletion request with the product's own commands (exact
//! retraining through the retrain plugin in a worker, the evaluation, a
//! membership attack on the original and on the unlearned model) and writes the
//! compliance report (HTML and PDF) into the run folder.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod support;

use lethe_e2e::{require_binary, workspace_root};
use std::path::Path;
use std::process::Command;
use support::plugin_library;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn demo_deletion_is_attacked_reported_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the two plugins the demo runs, as a user's plugin folder would hold.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["lethe_baseline_retrain", "lethe_attack_metric"] {
        let src = plugin_library(name);
        std::fs::copy(&src, plugins.join(src.file_name().unwrap())).unwrap();
    }
    let out_dir = tmp.path().join("run");
    let original = workspace_root().join("resources/demo/leaky-mlp.safetensors");
    let original_hash = sha256(&original);

    let run = |dir: &Path| {
        Command::new(require_binary("lethe-cli"))
            .arg("--plugins")
            .arg(&plugins)
            .args(["demo", "--device", "cpu", "--out"])
            .arg(dir)
            .current_dir(tmp.path())
            .env_remove("LETHE_PLUGIN_PATH")
            .env_remove("LETHE_WORKSPACE")
            .env("XDG_DATA_HOME", tmp.path().join("no-user-plugins"))
            .output()
            .unwrap()
    };
    let out = run(&out_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Each step says what it does and the command that does it.
    for step in [
        "lethe --plugins",
        " unlearn --method org.lethe.baseline.retrain",
        " attack --attack org.lethe.attack.metric-mia",
        " report ",
    ] {
        assert!(stderr.contains(step), "no `{step}` in:\n{stderr}");
    }
    assert!(stdout.contains("forget accuracy"), "{stdout}");
    assert!(stdout.contains("attack AUC on the forget set"), "{stdout}");

    // The compliance report, in both formats, where the demo says it is.
    for (file, magic) in [
        ("report.pdf", &b"%PDF-"[..]),
        ("report.html", &b"<!DOCTYPE html"[..]),
    ] {
        let path = out_dir.join(file);
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(magic),
            "{file} starts {:?}",
            &bytes[..20.min(bytes.len())]
        );
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(
        html.contains(&original_hash),
        "the report names the original's SHA-256"
    );

    // The deletion: exact retraining, recorded with the plugin that ran it.
    let record = json(&out_dir.join("run.json"));
    assert_eq!(record["method"]["id"], "org.lethe.baseline.retrain");
    assert_eq!(record["original"]["sha256"], original_hash.as_str());
    assert_eq!(record["forget"]["samples"], 100);

    // The retrained model never saw the forget set: its accuracy there drops
    // towards its test accuracy, while the original fits it perfectly.
    let eval = json(&out_dir.join("evaluation/evaluation.json"));
    let acc = |v: &str, split: &str| eval[v][split]["accuracy"].as_f64().unwrap();
    assert!(acc("original_utility", "forget") > 0.99, "{eval}");
    assert!(
        acc("utility", "forget") < acc("original_utility", "forget"),
        "{eval}"
    );
    assert!(acc("utility", "retain") > 0.95, "{eval}");
    assert!(
        (acc("utility", "test") - acc("original_utility", "test")).abs() < 0.03,
        "{eval}"
    );
    // The attack sees the original was fitted to the forget set (its interval
    // lies above chance); after retraining it no longer does, and the report
    // says the deletion passes.
    let auc = |dir: &str| {
        let a = json(&out_dir.join(dir).join("attack.json"));
        let f = &a["metrics"]["forget"];
        (
            f["auc"].as_f64().unwrap(),
            f["auc_ci"]["low"].as_f64().unwrap(),
        )
    };
    let (before, before_low) = auc("attack-metric-original");
    let (after, after_low) = auc("attack-metric");
    assert!(
        before_low > 0.5,
        "the leak is seen: {before} (low {before_low})"
    );
    assert!(after < before, "{after} vs {before}");
    assert!(
        after_low < 0.5,
        "after retraining, chance is within the interval: {after_low}"
    );
    assert!(
        stdout.contains("report.pdf: PASS") || stderr.contains("report.pdf: PASS"),
        "{stdout}\n{stderr}"
    );

    // Every step is in the audit log beside the run folder, and it verifies.
    let verify = Command::new(require_binary("lethe-cli"))
        .args(["--workspace"])
        .arg(tmp.path())
        .args(["audit", "log", "--json"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let log = String::from_utf8_lossy(&verify.stdout);
    for kind in ["unlearn", "evaluate", "attack", "report"] {
        assert!(
            log.contains(&format!("\"{kind}\"")),
            "no {kind} record in {log}"
        );
    }
    assert!(!workspace_root().join("tests/audit.sqlite").exists());

    // Outputs are never overwritten, and the original is untouched.
    let again = run(&out_dir);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(sha256(&original), original_hash);
}
