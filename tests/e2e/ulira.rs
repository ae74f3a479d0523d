//! U-LiRA (`org.lethe.attack.ulira`) on the leaky demo, as a user runs it:
//! `lethe unlearn`, then `lethe attack --estimate` and `lethe attack` on the
//! unlearned model. Eight shadow MLPs are trained once (the recipe of the
//! demo model) and unlearned by each deletion's own method and parameters:
//!
//! * a do-nothing deletion (fine-tuning at lr 1e-7 for one epoch) is caught:
//!   the forget set is told from never-seen samples (AUC interval above 0.5);
//! * the model retrained without the forget set is at chance, sample by
//!   sample: the AUC interval holds 0.5, and the never-seen samples' share
//!   with p < alpha (the test's own false-positive line) lies within the
//!   forgotten samples' exact interval;
//! * a fine-tuning deletion gets its per-sample report with intervals;
//! * the shadows are trained once and every unlearned copy is cached: a second
//!   run trains and unlearns nothing and gives the same scores;
//! * `lethe verify-samples` on the fine-tuning deletion sets U-LiRA after
//!   beside LiRA on the original before (which leaks), on the same shadows,
//!   with the most distinguishable forgotten samples and the retained samples
//!   whose exposure grew.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod support;

use lethe_e2e::require_binary;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::{demo_dir, plugin_library};

/// `lethe-cli ARGS` with the test's plugins, workspace and shadow cache; its
/// stdout, panicking with both streams when it fails.
fn lethe(scratch: &Path, args: &[&str]) -> (String, String) {
    let plugins = plugin_library("lethe_attack_ulira");
    // The deletions' methods, built with the e2e crate, sit beside it.
    let _ = plugin_library("lethe_baseline_retrain");
    let _ = plugin_library("lethe_baseline_finetune");
    let out = Command::new(require_binary("lethe-cli"))
        .arg("--plugins")
        .arg(plugins.parent().unwrap())
        .arg("--workspace")
        .arg(scratch)
        .args(args)
        .env("LETHE_SHADOW_CACHE", scratch.join("shadows"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "lethe-cli {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

fn demo_args<'a>(data: &'a str, forget: &'a str) -> [&'a str; 6] {
    ["--data", data, "--forget", forget, "--device", "cpu"]
}

const SHADOWS: [&str; 4] = [
    "--set",
    "shadow_models=8",
    "--set",
    "shadow_population=4000",
];

/// Unlearns the leaky demo's forget set with `method` and `sets` into `out`.
fn unlearn(scratch: &Path, method: &str, sets: &[&str], out: &Path) {
    let d = demo_dir();
    let (model, data, forget) = (
        d.join("leaky-mlp.safetensors"),
        d.join("mnist10k-2k.npz"),
        d.join("forget-2k.txt"),
    );
    let mut args = vec![
        "unlearn",
        "--method",
        method,
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(demo_args(data.to_str().unwrap(), forget.to_str().unwrap()));
    args.extend(sets);
    lethe(scratch, &args);
}

/// U-LiRA on `model` into `out`: attack.json, and stderr (the progress lines).
fn ulira(scratch: &Path, model: &Path, out: &Path) -> (Value, String) {
    let d = demo_dir();
    let (data, forget) = (d.join("mnist10k-2k.npz"), d.join("forget-2k.txt"));
    let mut args = vec![
        "attack",
        "--attack",
        "org.lethe.attack.ulira",
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(demo_args(data.to_str().unwrap(), forget.to_str().unwrap()));
    args.extend(SHADOWS);
    let (_, stderr) = lethe(scratch, &args);
    let report = serde_json::from_slice(&std::fs::read(out.join("attack.json")).unwrap()).unwrap();
    (report, stderr)
}

/// Model files anywhere under `dir` (0 when it does not exist).
fn safetensors_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                safetensors_under(&p)
            } else {
                usize::from(p.extension().is_some_and(|e| e == "safetensors"))
            }
        })
        .sum()
}

fn auc(r: &Value) -> (f64, f64, f64) {
    let m = &r["metrics"]["forget"];
    (
        m["auc"].as_f64().unwrap(),
        m["auc_ci"]["low"].as_f64().unwrap(),
        m["auc_ci"]["high"].as_f64().unwrap(),
    )
}

#[test]
fn ulira_catches_a_do_nothing_deletion_and_passes_retraining_sample_by_sample() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let d = demo_dir();
    let (nop, retrain, finetune) = (s.join("nop"), s.join("retrain"), s.join("finetune"));
    unlearn(
        s,
        "org.lethe.baseline.finetune",
        &["--set", "lr=1e-7", "--set", "epochs=1"],
        &nop,
    );
    unlearn(s, "org.lethe.baseline.retrain", &[], &retrain);
    unlearn(s, "org.lethe.baseline.finetune", &[], &finetune);

    // The estimate names the unlearning runs and trains nothing.
    let (data, forget) = (d.join("mnist10k-2k.npz"), d.join("forget-2k.txt"));
    let ft_model = finetune.join("model.safetensors");
    let mut args = vec![
        "attack",
        "--attack",
        "org.lethe.attack.ulira",
        "--checkpoint",
        ft_model.to_str().unwrap(),
        "--estimate",
    ];
    args.extend(demo_args(data.to_str().unwrap(), forget.to_str().unwrap()));
    args.extend(SHADOWS);
    let (estimate, _) = lethe(s, &args);
    assert!(
        estimate.contains("8 to train")
            && estimate.contains("each unlearned with org.lethe.baseline.finetune: 8 of 8"),
        "{estimate}"
    );
    assert_eq!(
        safetensors_under(&s.join("shadows")),
        0,
        "the estimate trained something"
    );

    let (nop_r, _) = ulira(s, &nop.join("model.safetensors"), &s.join("att-nop"));
    let (rt_r, rt_log) = ulira(s, &retrain.join("model.safetensors"), &s.join("att-rt"));
    let (ft_r, _) = ulira(s, &ft_model, &s.join("att-ft"));

    // Shadows trained once (by the first attack), each copy unlearned by the
    // deletion's own method.
    assert!(rt_log.contains("0 to train"), "{rt_log}");
    assert!(
        rt_log.contains("unlearned with org.lethe.baseline.retrain"),
        "{rt_log}"
    );
    let method = |r: &Value| r["plugin_summary"]["shadows"]["unlearn"]["method"].clone();
    assert_eq!(method(&nop_r), "org.lethe.baseline.finetune");
    assert_eq!(method(&rt_r), "org.lethe.baseline.retrain");
    assert_eq!(
        nop_r["plugin_summary"]["shadows"]["unlearn"]["params"]["lr"],
        1e-7
    );

    let (nop_auc, nop_lo, _) = auc(&nop_r);
    let (rt_auc, rt_lo, rt_hi) = auc(&rt_r);
    eprintln!(
        "do-nothing AUC {nop_auc:.3} (low {nop_lo:.3}); retrain AUC {rt_auc:.3} [{rt_lo:.3}, {rt_hi:.3}]; fine-tune {:?}",
        auc(&ft_r)
    );
    assert!(
        nop_lo > 0.5,
        "a do-nothing deletion must be caught: {nop_auc} (low {nop_lo})"
    );
    assert!(
        rt_lo < 0.5 && 0.5 < rt_hi,
        "retraining is at chance: {rt_auc} [{rt_lo}, {rt_hi}]"
    );
    assert!(nop_auc > rt_auc + 0.1, "{nop_auc} vs {rt_auc}");

    let per = |r: &Value| r["metrics"]["per_sample"].clone();
    let (rt_p, ft_p) = (per(&rt_r), per(&ft_r));
    // Retrained: the never-seen samples' share lies within the forgotten
    // samples' exact interval (the forget set is flagged at the test's own
    // false-positive rate).
    let share = |p: &Value, role: &str, end: &str| p[role][end].as_f64().unwrap();
    let never = share(&rt_p, "nonmember", "fraction");
    assert!(
        share(&rt_p, "forget", "low") <= never && never <= share(&rt_p, "forget", "high"),
        "retrained model: forgotten samples flagged unlike never-seen ones: {rt_p}"
    );
    // The fine-tuning deletion's per-sample report: every line with its
    // interval, the histogram holding every forgotten sample.
    assert_eq!(ft_p["alpha"], 0.05);
    for role in ["forget", "nonmember", "member"] {
        let q = &ft_p[role];
        assert_eq!(q["n"], 100, "{role}: {q}");
        let (lo, f, hi) = (
            q["low"].as_f64().unwrap(),
            q["fraction"].as_f64().unwrap(),
            q["high"].as_f64().unwrap(),
        );
        assert!(lo <= f && f <= hi && hi - lo > 0.01, "{role}: {q}");
    }
    let bins: u64 = ft_p["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(bins, 100);
    let tensors = [
        "pvalues_forget",
        "pvalues_member",
        "pvalues_nonmember",
        "positions_member",
    ];
    for t in tensors {
        assert!(
            s.join("att-ft").join(format!("{t}.safetensors")).is_file(),
            "{t}"
        );
    }

    // Again: everything from the cache, the same scores.
    let (again, log) = ulira(s, &retrain.join("model.safetensors"), &s.join("att-rt2"));
    assert!(log.contains("8 of 8 copies cached, 0 to make"), "{log}");
    assert_eq!(again["forget_scores"], rt_r["forget_scores"]);

    // The whole per-sample verification of the fine-tuning deletion: U-LiRA
    // after (from the cache: same settings as above) and LiRA on the original
    // before, on the same trained shadows.
    // Inside the run folder, where the deletion's report finds it.
    let out = finetune.join("verify-samples-test");
    let (text, log) = lethe(
        s,
        &[
            "verify-samples",
            finetune.to_str().unwrap(),
            "--shadow-models",
            "8",
            "--shadow-population",
            "4000",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    // Nothing trains: U-LiRA's copies are cached, and LiRA on the original
    // finds U-LiRA's trained shadow models.
    assert!(
        log.matches("8 cached, 0 to train").count() == 2 && !log.contains("epoch "),
        "LiRA must reuse U-LiRA's trained shadows:\n{log}"
    );
    for line in [
        "before (original, LiRA)",
        "never-seen samples with p < 0.05",
        "onion effect",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("per_sample.json")).unwrap()).unwrap();
    assert_eq!(report["method"], "org.lethe.baseline.finetune");
    // The original leaks: LiRA tells its forget set from never-seen samples.
    let before = &report["before"]["forget"];
    assert!(
        before["auc_ci"]["low"].as_f64().unwrap() > 0.5,
        "the original model must leak: {before}"
    );
    // After = the U-LiRA run above, from the cache.
    assert_eq!(
        report["after"]["forget"]["auc"],
        ft_r["metrics"]["forget"]["auc"]
    );
    let forget_rows: Vec<i64> = std::fs::read_to_string(demo_dir().join("forget-2k.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let most = report["most_distinguishable"].as_array().unwrap();
    assert_eq!(most.len(), 10);
    let p_after: Vec<f64> = most
        .iter()
        .map(|l| l["p_after"].as_f64().unwrap())
        .collect();
    assert!(p_after.windows(2).all(|w| w[0] <= w[1]), "{p_after:?}");
    assert!(
        most.iter()
            .all(|l| forget_rows.contains(&l["row"].as_i64().unwrap()))
    );
    let onion = &report["onion"];
    assert_eq!(onion["samples"], 100);
    for l in onion["most_exposed"].as_array().unwrap() {
        let row = l["row"].as_i64().unwrap();
        assert!(
            !forget_rows.contains(&row),
            "retained row {row} is in the forget list"
        );
        assert!(
            l["p_after"].as_f64().unwrap() < l["p_before"].as_f64().unwrap(),
            "{l}"
        );
    }
}
