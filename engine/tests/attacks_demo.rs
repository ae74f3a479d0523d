//! The membership attacks (plugins/attack-*) on the bundled demo, each through a
//! real `lethe-cli worker` process, with the metric set computed by the engine
//! from the plugin's score files:
//!
//! * the original classifier's forget set is member-like (AUC interval above
//!   0.5) and a model retrained without it (`lethe demo`'s exact unlearning,
//!   run once and shared) is not (interval around 0.5);
//! * the engine's AUC equals scikit-learn's on the plugin's own score files;
//! * the RBF SVM inside the plugin decides like scikit-learn's `SVC(C=3,
//!   gamma="auto")` fitted on the same (exported) features of the demo;
//! * EncoderMI runs on the demo encoder with 10 views (45 similarities).
//!
//! The demo classifier generalises well (train 100 %, test 98 %), so its
//! membership signal is weak: the forget AUC is about 0.53 and the attack
//! barely separates other training samples from unseen ones (the report's
//! `weak_attack` flag says so). The assertions below hold with that margin;
//! stronger attacks (LiRA, RMIA) are future work.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::eval::attack::{AttackReport, AttackRequest, run_attack};
use lethe_engine::jobs::demo::{DemoOptions, run_demo};
use lethe_engine::metrics::MetricOptions;
use lethe_engine::train::Flow;
use lethe_engine::worker::WorkerOptions;
use lethe_engine::worker::protocol::DescriptorInfo;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

fn demo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo")
        .join(file)
}

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
fn plugin(name: &str) -> PathBuf {
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

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("attacks_demo_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo's retrained model (exact unlearning of forget.txt), made once.
fn retrained() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = scratch("retrain").join("run");
        let opts = DemoOptions {
            resources: demo("").parent().unwrap().to_path_buf(),
            out_dir: out,
            device: tch::Device::Cpu,
        };
        let report = run_demo(&opts, &mut |_| Flow::Continue).unwrap();
        report.unlearned_checkpoint
    })
}

fn attack(library: &str, id: &str, checkpoint: &Path, params: Value, out: &Path) -> AttackReport {
    let mut worker = WorkerOptions::with_exe(EXE);
    worker.timeout = Some(Duration::from_secs(1800));
    let req = AttackRequest {
        library: plugin(library),
        descriptor: DescriptorInfo {
            id: id.into(),
            name: id.into(),
            version: "0.1.0".into(),
            kind: "attack".into(),
            description: String::new(),
            citation: String::new(),
            schema: Default::default(),
        },
        params,
        checkpoint: checkpoint.to_path_buf(),
        data: demo("mnist10k.npz"),
        forget: demo("forget.txt"),
        out_dir: out.to_path_buf(),
        seed: 0,
        device: "cpu".into(),
        metrics: MetricOptions::default(),
    };
    run_attack(&worker, &req, |_| {}).unwrap()
}

fn python(script: &str, input: &Value) -> Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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

fn forget_list() -> Vec<i64> {
    std::fs::read_to_string(demo("forget.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

#[test]
fn metric_attack_finds_the_forget_set_in_the_original_and_not_in_the_retrained_model() {
    let dir = scratch("metric");
    let params = json!({"metric": "modified-entropy"});
    let original = attack(
        "lethe_attack_metric",
        "org.lethe.attack.metric-mia",
        &demo("classifier.safetensors"),
        params.clone(),
        &dir.join("original"),
    );
    let unlearned = attack(
        "lethe_attack_metric",
        "org.lethe.attack.metric-mia",
        retrained(),
        params,
        &dir.join("retrained"),
    );
    let (o, u) = (&original.metrics.forget, &unlearned.metrics.forget);
    let (oc, uc) = (o.auc_ci.unwrap(), u.auc_ci.unwrap());
    eprintln!(
        "forget AUC: original {:.4} [{:.4}, {:.4}], retrained {:.4} [{:.4}, {:.4}]",
        o.auc, oc.low, oc.high, u.auc, uc.low, uc.high
    );
    assert_eq!((o.members, o.non_members), (300, 1000));
    assert!(oc.low > 0.5, "original forget set not member-like: {oc:?}");
    assert!(uc.contains(0.5), "retrained forget set: {uc:?}");
    assert!(o.auc > u.auc + 0.02, "{} vs {}", o.auc, u.auc);
    // Unlearning by retraining makes more of the forget set look unseen.
    assert!(u.efficacy.unwrap() > o.efficacy.unwrap());

    // The engine's AUC from the plugin's own score files, checked by scikit-learn.
    let sk = python(
        r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score
d = json.load(sys.stdin)["dir"]
f = load_file(d + "/scores_forget.safetensors")["scores_forget"]
n = load_file(d + "/scores_nonmember.safetensors")["scores_nonmember"]
p = load_file(d + "/predictions_forget.safetensors")["predictions_forget"]
print(json.dumps({"auc": roc_auc_score(np.r_[np.ones(len(f)), np.zeros(len(n))], np.r_[f, n]),
                  "efficacy": 1 - p.mean()}))
"#,
        &json!({"dir": dir.join("original")}),
    );
    assert!((o.auc - sk["auc"].as_f64().unwrap()).abs() < 1e-12);
    assert!((o.efficacy.unwrap() - sk["efficacy"].as_f64().unwrap()).abs() < 1e-12);

    // Per-sample scores line up with the forget list; the summary records the
    // fitted class thresholds and the roles.
    let indices: Vec<i64> = original.forget_scores.iter().map(|s| s.index).collect();
    assert_eq!(indices, forget_list());
    let thresholds = original.plugin_summary["thresholds"]["per_class"]
        .as_array()
        .unwrap();
    assert_eq!(thresholds.len(), 10);
    assert!(thresholds.iter().all(|t| t.is_f64()), "{thresholds:?}");
    assert_eq!(
        original.plugin_summary["roles"]["heldout_nonmembers"]["split"],
        "validation"
    );
    // A random forget set: no shift flags, no over-unlearning.
    for r in [&original, &unlearned] {
        let codes: Vec<&str> = r.flags.iter().map(|f| f.code).collect();
        assert!(
            !codes
                .iter()
                .any(|c| ["over_unlearning", "label_shift", "input_shift"].contains(c)),
            "{codes:?}"
        );
        // No input shift between random samples (cross-fitted AUCs of sets that
        // do not differ sit at or a little below 0.5).
        for check in &r.checks.input_shift {
            assert!(check.auc < 0.55, "{check:?}");
        }
        assert!(r.checks.label_distance.forget_vs_nonmembers < 0.1);
    }
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.join("original/attack.json")).unwrap()).unwrap();
    assert_eq!(written["metrics"]["forget"]["auc"].as_f64(), Some(o.auc));
}

#[test]
fn svm_attack_decides_like_scikit_learn_on_the_demo_features() {
    let dir = scratch("svm");
    let report = attack(
        "lethe_attack_svm",
        "org.lethe.attack.svm-mia",
        &demo("classifier.safetensors"),
        json!({"feature": "confidence", "shadow_size": 800, "write_features": true}),
        &dir.join("original"),
    );
    let s = &report.plugin_summary;
    assert_eq!(s["svm"]["c"], 3.0);
    assert_eq!(s["svm"]["gamma"], 1.0);
    assert_eq!(s["svm"]["hit_max_iter"], false);
    let sk = python(
        r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
from sklearn.svm import SVC
d = json.load(sys.stdin)["dir"]
L = lambda n: load_file(f"{d}/{n}.safetensors")[n]
X = np.r_[L("features_shadow_member"), L("features_shadow_nonmember")]
y = np.r_[np.ones(len(L("features_shadow_member"))), np.zeros(len(L("features_shadow_nonmember")))]
clf = SVC(C=3, gamma="auto", kernel="rbf").fit(X, y)
T = L("features_forget")
print(json.dumps({"dec": clf.decision_function(T).tolist(), "pred": clf.predict(T).tolist(),
                  "ours": L("scores_forget").tolist(), "n": len(X)}))
"#,
        &json!({"dir": dir.join("original")}),
    );
    assert_eq!(sk["n"], 1600);
    let dec: Vec<f64> = serde_json::from_value(sk["dec"].clone()).unwrap();
    let ours: Vec<f64> = serde_json::from_value(sk["ours"].clone()).unwrap();
    let pred: Vec<f64> = serde_json::from_value(sk["pred"].clone()).unwrap();
    assert_eq!(ours.len(), 300);
    let max_diff = ours
        .iter()
        .zip(&dec)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(max_diff < 5e-3, "decision values differ by {max_diff}");
    let agree = ours
        .iter()
        .zip(&pred)
        .filter(|(d, p)| (**d > 0.0) == (**p == 1.0))
        .count();
    assert!(
        agree >= 299,
        "{agree}/300 decisions agree with scikit-learn"
    );
    // Efficacy is the share of the forget set the SVM calls non-member.
    let e = report.metrics.forget.efficacy.unwrap();
    let called_non = report
        .forget_scores
        .iter()
        .filter(|s| s.member == Some(false))
        .count();
    assert!((e - called_non as f64 / 300.0).abs() < 1e-12);
}

#[test]
fn encodermi_scores_the_demo_encoder_with_45_similarities_per_sample() {
    let dir = scratch("encodermi");
    for variant in ["threshold", "classifier"] {
        let report = attack(
            "lethe_attack_encodermi",
            "org.lethe.attack.encodermi",
            &demo("encoder.safetensors"),
            json!({"variant": variant, "shadow_size": 200, "heldout_size": 300}),
            &dir.join(variant),
        );
        let s = &report.plugin_summary;
        assert_eq!(s["pairs_per_sample"], 45);
        assert_eq!(s["variant"], variant);
        assert_eq!(report.forget_scores.len(), 300);
        let f = &report.metrics.forget;
        assert_eq!(f.non_members, 300);
        assert_eq!(report.metrics.reference.as_ref().unwrap().members, 300);
        assert!((0.0..=1.0).contains(&f.auc));
        if variant == "threshold" {
            let t = s["threshold"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&t));
            // The score is the mean of cosine similarities, and the decisions
            // are exactly `score >= threshold`.
            for fs in &report.forget_scores {
                assert!((-1.0..=1.0).contains(&fs.score));
                assert_eq!(fs.member, Some(fs.score >= t));
            }
            // Augmented views of one image are aligned by a trained encoder.
            let m = s["shadow_mean_similarity"]["members"].as_f64().unwrap();
            assert!(m > 0.5, "{m}");
        } else {
            assert_eq!(s["classifier"]["weights"].as_array().unwrap().len(), 45);
        }
    }
}
