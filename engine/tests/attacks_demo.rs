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
//! * EncoderMI runs on the demo encoder with 10 views (45 similarities);
//! * LiRA (online) trains its shadow models once, with the demo recipe, for
//!   the original and the retrained model alike (the second attack and RMIA
//!   on the same models train nothing; the cost estimate says so before each
//!   run), and the retrained model's forget set is not member-like;
//! * the transformer attack (Yuan & Zhang) fits and scores the demo.
//!
//! The demo classifier generalises well (train 100 %, test 98 %), so its
//! membership signal is weak: the forget AUC is about 0.53 and the attack
//! barely separates other training samples from unseen ones (the report's
//! `weak_attack` flag says so). The assertions below hold with that margin;
//! stronger attacks (LiRA, RMIA) are future work.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod common;
use common::python;
use lethe_engine::eval::attack::{
    AttackEstimate, AttackReport, AttackRequest, estimate_attack, run_attack,
};
use lethe_engine::jobs::demo::{DemoOptions, run_demo};
use lethe_engine::metrics::MetricOptions;
use lethe_engine::train::Flow;
use lethe_engine::worker::WorkerOptions;
use lethe_engine::worker::protocol::DescriptorInfo;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// The shadow-model cache of this test run (emptied once, shared by the tests).
fn shadow_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch("shadow_cache"))
}

fn worker() -> WorkerOptions {
    let mut worker = WorkerOptions::with_exe(EXE);
    worker.timeout = Some(Duration::from_secs(1800));
    worker.env.push((
        lethe_engine::shadows::SHADOW_CACHE_ENV.into(),
        shadow_cache().display().to_string(),
    ));
    worker
}

fn request(library: &str, id: &str, checkpoint: &Path, params: Value, out: &Path) -> AttackRequest {
    AttackRequest {
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
    }
}

fn attack(library: &str, id: &str, checkpoint: &Path, params: Value, out: &Path) -> AttackReport {
    let req = request(library, id, checkpoint, params, out);
    run_attack(&worker(), &req, |_| {}).unwrap()
}

fn estimate(library: &str, id: &str, checkpoint: &Path, params: Value) -> AttackEstimate {
    let req = request(library, id, checkpoint, params, Path::new("never-written"));
    estimate_attack(&worker(), &req).unwrap()
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

/// The engine's AUC of forget vs non-members, recomputed by scikit-learn from
/// the score files.
fn sklearn_auc(dir: &Path) -> f64 {
    python(
        r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score
d = json.load(sys.stdin)["dir"]
f = load_file(d + "/scores_forget.safetensors")["scores_forget"]
n = load_file(d + "/scores_nonmember.safetensors")["scores_nonmember"]
print(json.dumps(roc_auc_score(np.r_[np.ones(len(f)), np.zeros(len(n))], np.r_[f, n])))
"#,
        &json!({"dir": dir}),
    )
    .as_f64()
    .unwrap()
}

#[test]
fn lira_and_rmia_share_shadow_models_across_the_original_and_the_retrained_model() {
    let dir = scratch("lira");
    // A cheap budget: 4 shadow models on halves of a 1200-sample pool (the
    // 1200 samples asked about), 4 epochs of the demo recipe instead of 30.
    // Far too weak to find the forget set in the original (see the README);
    // checked here: the machinery, and that the retrained model's forget set
    // looks like unseen data.
    let params = json!({
        "variant": "online", "shadow_models": 4, "shadow_epochs": 4,
        "shadow_population": 1200, "heldout_size": 300, "z_samples": 300,
    });
    let lira = ("lethe_attack_lira", "org.lethe.attack.lira");
    let before = estimate(
        lira.0,
        lira.1,
        &demo("classifier.safetensors"),
        params.clone(),
    );
    let e = before.shadows.as_ref().unwrap();
    assert_eq!((e.models, e.cached, e.to_train), (4, 0, 4));
    assert_eq!(
        (e.pool, e.targets, e.epochs, e.batch_size),
        (1200, 1200, 4, 64)
    );
    // Each pool sample is in 2 of the 4 halves: 600 samples, 10 batches an epoch.
    assert_eq!(e.train_samples_per_model, 600);
    assert_eq!(e.steps_per_model, 40);
    assert!(
        e.seconds > 0.0 && e.seconds_per_step.unwrap() > 0.0,
        "{e:?}"
    );
    assert!(e.recipe_source.ends_with("classifier.safetensors"));

    let original = attack(
        lira.0,
        lira.1,
        &demo("classifier.safetensors"),
        params.clone(),
        &dir.join("original"),
    );
    let s = &original.plugin_summary["shadows"];
    assert_eq!(
        (s["trained"].as_u64(), s["cached"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(s["key"].as_str(), Some(e.key.as_str()));
    // The retrained model records the demo classifier as its original: the
    // same recipe, the same models, nothing to train.
    // So `lethe attack --estimate` says, and makes no output folder.
    let out = dir.join("estimate-never-written");
    let cli = Command::new(EXE)
        .args([
            "--plugins",
            plugin(lira.0).parent().unwrap().to_str().unwrap(),
        ])
        .args([
            "attack",
            "--attack",
            lira.1,
            "--estimate",
            "--device",
            "cpu",
        ])
        .arg("--checkpoint")
        .arg(retrained())
        .arg("--data")
        .arg(demo("mnist10k.npz"))
        .arg("--forget")
        .arg(demo("forget.txt"))
        .arg("--out")
        .arg(&out)
        .args(["--params", &params.to_string()])
        .env(
            lethe_engine::shadows::SHADOW_CACHE_ENV,
            shadow_cache().as_os_str(),
        )
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        printed.contains("org.lethe.attack.lira: 4 online shadow models, 4 cached, 0 to train"),
        "{printed}"
    );
    assert!(printed.contains("nothing to train"), "{printed}");
    assert!(!out.exists());
    let unlearned = attack(
        lira.0,
        lira.1,
        retrained(),
        params.clone(),
        &dir.join("retrained"),
    );
    let s = &unlearned.plugin_summary["shadows"];
    assert_eq!(
        (s["trained"].as_u64(), s["cached"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(s["key"].as_str(), Some(e.key.as_str()));

    let (o, u) = (&original.metrics.forget, &unlearned.metrics.forget);
    let (oc, uc) = (o.auc_ci.unwrap(), u.auc_ci.unwrap());
    eprintln!(
        "LiRA forget AUC: original {:.4} [{:.4}, {:.4}], retrained {:.4} [{:.4}, {:.4}]; \
         held-out members {:.4}",
        o.auc,
        oc.low,
        oc.high,
        u.auc,
        uc.low,
        uc.high,
        original.metrics.reference.as_ref().unwrap().auc
    );
    assert_eq!((o.members, o.non_members), (300, 300));
    assert!(uc.contains(0.5), "retrained forget set: {uc:?}");
    assert!((o.auc - sklearn_auc(&dir.join("original"))).abs() < 1e-12);
    for r in [&original, &unlearned] {
        let sm = &r.plugin_summary;
        assert_eq!(sm["variant"], "online");
        assert_eq!(sm["variance"], "global");
        // Decisions call at most 5 % of the population samples members.
        let pop = sm["results"]["member_rates"]["shadow_nonmember"]["predicted_member"]
            .as_f64()
            .unwrap();
        assert!(pop <= 0.05, "{pop}");
        let t = sm["decision"]["threshold"].as_f64().unwrap();
        for f in &r.forget_scores {
            assert_eq!(f.member, Some(f.score > t));
        }
    }
    let indices: Vec<i64> = original.forget_scores.iter().map(|s| s.index).collect();
    assert_eq!(indices, forget_list());

    // RMIA online on the same request shape reuses the very same models.
    let r = attack(
        "lethe_attack_rmia",
        "org.lethe.attack.rmia",
        &demo("classifier.safetensors"),
        json!({
            "mode": "online", "reference_models": 4, "shadow_epochs": 4,
            "shadow_population": 1200, "heldout_size": 300, "z_samples": 300,
        }),
        &dir.join("rmia"),
    );
    let s = &r.plugin_summary["shadows"];
    assert_eq!(
        (s["trained"].as_u64(), s["cached"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(s["key"].as_str(), Some(e.key.as_str()));
    assert_eq!(
        (
            r.plugin_summary["mode"].as_str(),
            r.plugin_summary["gamma"].as_f64()
        ),
        (Some("online"), Some(2.0))
    );
    eprintln!(
        "RMIA forget AUC: original {:.4} {:?}",
        r.metrics.forget.auc, r.metrics.forget.auc_ci
    );
    // Scores are shares of the 300 population samples.
    for f in &r.forget_scores {
        assert!((0.0..=1.0).contains(&f.score));
        assert!((f.score * 300.0 - (f.score * 300.0).round()).abs() < 1e-9);
    }
}

#[test]
fn transformer_attack_fits_and_scores_the_demo() {
    let dir = scratch("transformer");
    let report = attack(
        "lethe_attack_transformer",
        "org.lethe.attack.transformer",
        &demo("classifier.safetensors"),
        // Small and short: the demo's near-one-hot softmax gives the attacker
        // little to learn (its fitting is tested on separable data in the kit).
        json!({"shadow_size": 200, "heldout_size": 300, "epochs": 20, "lr": 0.01}),
        &dir.join("original"),
    );
    let s = &report.plugin_summary;
    assert_eq!(s["attacker"]["classes"], 10);
    assert_eq!(s["attacker"]["epochs"], 20);
    assert_eq!(s["sensitivity"]["draws"], 10);
    assert_eq!(s["roles"]["shadow_members"]["rows"], "0..200");
    assert_eq!(report.forget_scores.len(), 300);
    assert_eq!(report.metrics.forget.non_members, 300);
    assert_eq!(report.metrics.reference.as_ref().unwrap().members, 300);
    // The score is the attacker's member log-odds; the decision is its sign.
    for f in &report.forget_scores {
        assert!(f.score.is_finite());
        assert_eq!(f.member, Some(f.score >= 0.0));
    }
    let fit = report.metrics.shadow.as_ref().unwrap();
    eprintln!(
        "transformer: shadow fit AUC {:.4}, forget AUC {:.4}, final training accuracy {}",
        fit.auc, report.metrics.forget.auc, s["attacker"]["final_accuracy"]
    );
}
