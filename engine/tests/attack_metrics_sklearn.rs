//! The membership metric set against scikit-learn / NumPy on the same scores:
//! AUC (`roc_auc_score`), the ROC curve (`roc_curve`), TPR at low FPR read off
//! that curve the LiRA way, accuracy / precision / recall / balanced accuracy of
//! the attack's decisions, and the percentile bootstrap of AUC and TPR@FPR
//! (different random streams, so the intervals agree to Monte-Carlo precision).
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod common;
use common::python;
use lethe_engine::metrics::{MetricOptions, membership_metrics};
use serde_json::json;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import (roc_auc_score, roc_curve, accuracy_score, precision_score,
                             recall_score, balanced_accuracy_score)
d = json.load(sys.stdin)
m, n = np.array(d["m"]), np.array(d["n"])
y = np.r_[np.ones(len(m)), np.zeros(len(n))]
s = np.r_[m, n]
p = np.r_[d["pm"], d["pn"]]
fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
at = [float(tpr[fpr <= t].max()) for t in d["fprs"]]
rng = np.random.default_rng(0)
from scipy.stats import rankdata
bm = m[rng.integers(0, len(m), (d["b"], len(m)))]
bn = n[rng.integers(0, len(n), (d["b"], len(n)))]
ranks = rankdata(np.c_[bm, bn], axis=1)[:, :len(m)].sum(1)
aucs = (ranks - len(m) * (len(m) + 1) / 2) / (len(m) * len(n))
# Highest TPR with FPR <= t: score above the (k+1)-th largest non-member, k = floor(t n).
desc = -np.sort(-bn, axis=1)
tprs = []
for t in d["fprs"]:
    k = int(np.floor(t * len(n) + 1e-9))
    tprs.append(np.ones(d["b"]) if k >= len(n) else (bm > desc[:, k:k + 1]).mean(1))
ci = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
print(json.dumps({
    "auc": roc_auc_score(y, s), "fpr": fpr.tolist(), "tpr": tpr.tolist(), "at": at,
    "acc": accuracy_score(y, p), "prec": precision_score(y, p), "rec": recall_score(y, p),
    "bal": balanced_accuracy_score(y, p),
    "auc_ci": ci(aucs), "tpr_ci": [ci(v) for v in tprs]}))
"#;

#[test]
fn metric_set_matches_scikit_learn_on_the_same_scores() {
    // Scores on a coarse grid (many ties), members shifted up; decisions from a
    // threshold with some noise, as an attack's own predictions would be.
    let mut r = Lcg(11);
    let grid = |v: f64| (v * 50.0).round() / 50.0;
    let m: Vec<f64> = (0..700).map(|_| grid(r.next() * 0.8 + 0.15)).collect();
    let n: Vec<f64> = (0..900).map(|_| grid(r.next() * 0.8)).collect();
    let decide = |s: &f64, r: &mut Lcg| (*s > 0.5) ^ (r.next() < 0.1);
    let pm: Vec<bool> = m.iter().map(|s| decide(s, &mut r)).collect();
    let pn: Vec<bool> = n.iter().map(|s| decide(s, &mut r)).collect();
    let fprs = [0.1, 0.01, 0.001];
    let b = 2000;
    let opts = MetricOptions {
        fprs: fprs.to_vec(),
        resamples: b,
        level: 0.95,
        seed: 3,
    };
    let ours = membership_metrics(&m, &n, Some((&pm, &pn)), &opts).unwrap();
    let as_int = |v: &[bool]| v.iter().map(|&x| i32::from(x)).collect::<Vec<_>>();
    let sk = python(
        SCRIPT,
        &json!({"m": m, "n": n, "pm": as_int(&pm), "pn": as_int(&pn), "fprs": fprs, "b": b}),
    );
    let f = |k: &str| sk[k].as_f64().unwrap();
    let v = |k: &str| -> Vec<f64> { serde_json::from_value(sk[k].clone()).unwrap() };

    assert!(
        (ours.auc - f("auc")).abs() < 1e-12,
        "{} vs {}",
        ours.auc,
        f("auc")
    );
    assert_eq!(ours.roc.fpr.len(), v("fpr").len());
    for (a, b) in ours.roc.fpr.iter().zip(v("fpr")) {
        assert!((a - b).abs() < 1e-12);
    }
    for (a, b) in ours.roc.tpr.iter().zip(v("tpr")) {
        assert!((a - b).abs() < 1e-12);
    }
    for (t, want) in ours.tpr_at_fpr.iter().zip(v("at")) {
        assert!(
            (t.tpr - want).abs() < 1e-12,
            "TPR@{}: {} vs {want}",
            t.fpr,
            t.tpr
        );
    }
    let d = ours.decisions.unwrap();
    assert!((d.accuracy - f("acc")).abs() < 1e-12);
    assert!((d.precision - f("prec")).abs() < 1e-12);
    assert!((d.recall - f("rec")).abs() < 1e-12);
    assert!((d.balanced_accuracy - f("bal")).abs() < 1e-12);
    assert!((ours.efficacy.unwrap() - (1.0 - f("rec"))).abs() < 1e-12);

    // Bootstrap: same procedure, different generators; with 2000 replicates the
    // percentile ends agree to Monte-Carlo error.
    let auc_ci = ours.auc_ci.unwrap();
    let sk_auc_ci = v("auc_ci");
    assert!(auc_ci.contains(ours.auc));
    assert!(
        (auc_ci.low - sk_auc_ci[0]).abs() < 0.006 && (auc_ci.high - sk_auc_ci[1]).abs() < 0.006,
        "{auc_ci:?} vs {sk_auc_ci:?}"
    );
    let sk_tpr_ci: Vec<Vec<f64>> = serde_json::from_value(sk["tpr_ci"].clone()).unwrap();
    for (t, want) in ours.tpr_at_fpr.iter().zip(&sk_tpr_ci) {
        let ci = t.ci.unwrap();
        assert!(
            (ci.low - want[0]).abs() < 0.03 && (ci.high - want[1]).abs() < 0.03,
            "TPR@{}: {ci:?} vs {want:?}",
            t.fpr
        );
    }
    // 1/900 non-members cannot resolve 0.1% FPR.
    assert!(ours.tpr_at_fpr[1].resolved && !ours.tpr_at_fpr[2].resolved);
}
