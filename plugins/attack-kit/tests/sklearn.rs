//! The attack kit's learners against scikit-learn on the same data, run through
//! the project's venv: `SVC(C=3, gamma="auto", kernel="rbf")` decision values and
//! predictions (the Unlearn-Sparse / SalUn attack) and `LogisticRegression`
//! coefficients (EncoderMI's classifier variant).
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_attack_kit::Features;
use lethe_attack_kit::logistic::{Logistic, Standardizer};
use lethe_attack_kit::svm::{Svc, SvcConfig, SvmError};
mod common;

use common::{Lcg, python};
use serde_json::json;

const SVC_SCRIPT: &str = r#"
import json, sys
import numpy as np
from sklearn.svm import SVC
d = json.load(sys.stdin)
X = np.array(d["x"], dtype=np.float64).reshape(len(d["y"]), -1)
T = np.array(d["t"], dtype=np.float64).reshape(-1, X.shape[1])
clf = SVC(C=3, gamma="auto", kernel="rbf").fit(X, np.array(d["y"]))
print(json.dumps({"dec": clf.decision_function(T).tolist(),
                  "pred": clf.predict(T).tolist(),
                  "n_sv": int(clf.support_.size),
                  "intercept": float(clf.intercept_[0])}))
"#;

/// Fits both SVMs on `(x, member)` and compares them on `targets`.
fn compare_svc(x: &Features, member: &[bool], targets: &Features) -> (f64, usize) {
    let y: Vec<i32> = member.iter().map(|&m| i32::from(m)).collect();
    let sk = python(
        SVC_SCRIPT,
        &json!({"x": x.data(), "y": y, "t": targets.data()}),
    );
    let ours = Svc::fit(x, member, &SvcConfig::default()).unwrap();
    assert!(!ours.hit_max_iter);
    let dec = ours.decision_function(targets);
    let sk_dec: Vec<f64> = serde_json::from_value(sk["dec"].clone()).unwrap();
    let sk_pred: Vec<i32> = serde_json::from_value(sk["pred"].clone()).unwrap();
    let max_diff = dec
        .iter()
        .zip(&sk_dec)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    // Both solvers stop within tol = 1e-3 of the optimum, so decisions agree to
    // about that; predictions may only differ where the decision is about 0.
    let mut disagreements = 0;
    for (k, (d, p)) in dec.iter().zip(&sk_pred).enumerate() {
        if (*d > 0.0) != (*p == 1) {
            disagreements += 1;
            assert!(
                d.abs() < 5e-3,
                "target {k}: ours {d}, sklearn {}",
                sk_dec[k]
            );
        }
    }
    let sk_n_sv = sk["n_sv"].as_u64().unwrap() as usize;
    let n_sv = ours.support_count();
    assert!(
        n_sv.abs_diff(sk_n_sv) <= 2 + sk_n_sv / 100,
        "{n_sv} support vectors vs sklearn {sk_n_sv}"
    );
    let sk_rho = -sk["intercept"].as_f64().unwrap();
    eprintln!(
        "decision values differ by up to {max_diff:.2e}; {disagreements} predictions differ; \
         {n_sv} support vectors (sklearn {sk_n_sv}); rho {:.6} (sklearn {sk_rho:.6}); {} iterations",
        ours.rho(),
        ours.iterations
    );
    assert!(
        (ours.rho() - sk_rho).abs() < 1e-2,
        "rho {} vs {sk_rho}",
        ours.rho()
    );
    (max_diff, disagreements)
}

#[test]
fn rbf_svm_matches_scikit_learn_on_confidence_scores() {
    // The Unlearn-Sparse feature: true-class confidence, members piled up near 1
    // (with exact ties), non-members spread lower.
    let mut r = Lcg(3);
    let mut x = Vec::new();
    let mut member = Vec::new();
    for i in 0..400 {
        let m = i % 2 == 0;
        let v = if m {
            if r.uniform() < 0.3 {
                1.0
            } else {
                1.0 - 0.2 * r.uniform() * r.uniform()
            }
        } else {
            1.0 - 0.6 * r.uniform()
        };
        x.push(v);
        member.push(m);
    }
    let targets: Vec<f64> = (0..150).map(|k| k as f64 / 149.0).collect();
    let (max_diff, disagreements) =
        compare_svc(&Features::column(&x), &member, &Features::column(&targets));
    assert!(
        max_diff < 2e-3,
        "decision values differ by up to {max_diff}"
    );
    assert!(disagreements <= 1, "{disagreements} predictions differ");
}

#[test]
fn rbf_svm_matches_scikit_learn_on_probability_vectors() {
    // Three-class probability rows, two overlapping clouds.
    let mut r = Lcg(17);
    let mut rows = Vec::new();
    let mut member = Vec::new();
    for i in 0..300 {
        let m = i % 3 != 0;
        let sharp = if m { 4.0 } else { 1.5 };
        let logits: Vec<f64> = (0..3).map(|_| sharp * r.uniform()).collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        rows.push(logits.iter().map(|l| l.exp() / z).collect::<Vec<_>>());
        member.push(m);
    }
    let x = Features::from_rows(&rows).unwrap();
    let targets = Features::from_rows(&rows[..120]).unwrap();
    let (max_diff, disagreements) = compare_svc(&x, &member, &targets);
    assert!(
        max_diff < 5e-3,
        "decision values differ by up to {max_diff}"
    );
    assert!(disagreements <= 2, "{disagreements} predictions differ");
}

#[test]
fn svm_refuses_one_class_and_bad_input() {
    let x = Features::column(&[0.1, 0.2]);
    assert!(matches!(
        Svc::fit(&x, &[true, true], &SvcConfig::default()),
        Err(SvmError::OneClass { members: 2, .. })
    ));
    assert!(Svc::fit(&x, &[true], &SvcConfig::default()).is_err());
    let nan = Features::column(&[0.1, f64::NAN]);
    assert!(Svc::fit(&nan, &[true, false], &SvcConfig::default()).is_err());
}

#[test]
fn logistic_regression_matches_scikit_learn() {
    let mut r = Lcg(29);
    let (n, d) = (500, 6);
    let mut data = Vec::new();
    let mut member = Vec::new();
    for i in 0..n {
        let m = i % 2 == 1;
        for k in 0..d {
            let shift = if m { 0.15 * k as f64 } else { 0.0 };
            data.push(r.uniform() + shift + 0.3 * (k as f64));
        }
        member.push(m);
    }
    let raw = Features::new(data, d).unwrap();
    let x = Standardizer::fit(&raw).apply(&raw);
    let y: Vec<i32> = member.iter().map(|&m| i32::from(m)).collect();
    let sk = python(
        r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
d = json.load(sys.stdin)
X = np.array(d["x"]).reshape(len(d["y"]), -1)
Xs = StandardScaler().fit_transform(X)
m = LogisticRegression(C=1.0, tol=1e-12, max_iter=100000).fit(Xs, d["y"])
print(json.dumps({"w": m.coef_[0].tolist(), "b": float(m.intercept_[0]),
                  "scaled": Xs.ravel().tolist()}))
"#,
        &json!({"x": raw.data(), "y": y}),
    );
    let scaled: Vec<f64> = serde_json::from_value(sk["scaled"].clone()).unwrap();
    for (a, b) in x.data().iter().zip(&scaled) {
        assert!((a - b).abs() < 1e-12, "standardised {a} vs {b}");
    }
    let ours = Logistic::fit(&x, &member, 1.0).unwrap();
    let w: Vec<f64> = serde_json::from_value(sk["w"].clone()).unwrap();
    for (a, b) in ours.weights.iter().zip(&w) {
        assert!((a - b).abs() < 1e-5, "weights {:?} vs {w:?}", ours.weights);
    }
    let b = sk["b"].as_f64().unwrap();
    assert!(
        (ours.intercept - b).abs() < 1e-5,
        "{} vs {b}",
        ours.intercept
    );
    // The signal is real: the fitted model separates better than chance.
    let dec = ours.decision_function(&x);
    let right = dec
        .iter()
        .zip(&member)
        .filter(|(z, m)| (**z > 0.0) == **m)
        .count();
    assert!(right as f64 / n as f64 > 0.7, "{right}/{n}");
}
