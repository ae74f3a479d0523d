//! The verdict's statistics against independent computations in Python: Wilson
//! intervals against SciPy's `binomtest(...).proportion_ci("wilson")`,
//! Newcombe's difference interval built from SciPy's Wilson ends, and Hanley &
//! McNeil's AUC standard error against the spread of AUCs in a NumPy simulation
//! (scikit-learn's `roc_auc_score` on binormal scores of the same sizes).
#![allow(clippy::unwrap_used)]

mod common;

use lethe_engine::report::verdict::{auc_se, newcombe_diff, wilson};
use serde_json::json;

#[test]
fn wilson_and_newcombe_intervals_match_scipy() {
    let cases = [
        (0, 5),
        (5, 5),
        (4, 5),
        (93, 100),
        (100, 100),
        (551, 600),
        (1, 1000),
    ];
    let theirs = common::python(
        r#"
import json, sys
from scipy.stats import binomtest
cases = json.load(sys.stdin)
out = []
for k, n in cases:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    out.append([ci.low, ci.high])
print(json.dumps(out))
"#,
        &json!(cases),
    );
    for (i, &(k, n)) in cases.iter().enumerate() {
        let (lo, hi) = wilson(k as f64, n as f64);
        let want = &theirs[i];
        assert!(
            (lo - want[0].as_f64().unwrap()).abs() < 1e-9,
            "{k}/{n}: {lo} vs {want}"
        );
        assert!(
            (hi - want[1].as_f64().unwrap()).abs() < 1e-9,
            "{k}/{n}: {hi} vs {want}"
        );
    }

    let pairs = [
        (100, 100, 93, 100),
        (4, 5, 5, 5),
        (160, 200, 200, 200),
        (551, 600, 549, 600),
    ];
    let theirs = common::python(
        r#"
import json, sys, math
from scipy.stats import binomtest
def w(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high
out = []
for k1, n1, k2, n2 in json.load(sys.stdin):
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = w(k1, n1), w(k2, n2)
    d = p1 - p2
    # Newcombe (1998), method 10.
    out.append([d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
                d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)])
print(json.dumps(out))
"#,
        &json!(pairs),
    );
    for (i, &(k1, n1, k2, n2)) in pairs.iter().enumerate() {
        let (d, lo, hi) = newcombe_diff(k1 as f64, n1 as f64, k2 as f64, n2 as f64);
        for (ours, theirs) in [d, lo, hi].iter().zip(theirs[i].as_array().unwrap()) {
            assert!(
                (ours - theirs.as_f64().unwrap()).abs() < 1e-9,
                "{:?}",
                pairs[i]
            );
        }
    }
}

#[test]
fn hanley_mcneil_standard_errors_match_simulated_auc_spreads() {
    // (separation of the binormal means, positives, negatives)
    let cases = [
        (0.36, 100, 600),
        (0.36, 5, 600),
        (1.0, 50, 50),
        (0.0, 300, 300),
    ];
    let theirs = common::python(
        r#"
import json, sys
import numpy as np
from sklearn.metrics import roc_auc_score
rng = np.random.default_rng(0)
out = []
for mu, n_pos, n_neg in json.load(sys.stdin):
    aucs = []
    for _ in range(1500):
        pos = rng.normal(mu, 1.0, n_pos)
        neg = rng.normal(0.0, 1.0, n_neg)
        aucs.append(roc_auc_score(np.r_[np.ones(n_pos), np.zeros(n_neg)], np.r_[pos, neg]))
    aucs = np.array(aucs)
    out.append([float(aucs.mean()), float(aucs.std(ddof=1))])
print(json.dumps(out))
"#,
        &json!(cases),
    );
    for (i, &(_, pos, neg)) in cases.iter().enumerate() {
        let mean = theirs[i][0].as_f64().unwrap();
        let spread = theirs[i][1].as_f64().unwrap();
        let se = auc_se(mean, pos as f64, neg as f64);
        // Hanley & McNeil's exponential approximation is within ~10 % of the
        // binormal truth at these sizes; the simulation's own error is ~1 %.
        assert!(
            (se / spread - 1.0).abs() < 0.12,
            "case {:?}: Hanley-McNeil {se} vs simulated {spread} (AUC {mean})",
            cases[i]
        );
    }
}
