//! The LiRA and RMIA maths of the attack kit against an independent NumPy /
//! SciPy implementation (the project venv) on the same fixed logits: the
//! logit-scaled confidence, per-example and global Gaussian fits, online
//! log likelihood ratios (`scipy.stats.norm.logpdf`), offline z-values, and
//! RMIA's `Pr(x)` online and offline (`a`), ratios and pairwise-LR scores for
//! two values of γ. The membership mask is random, so offline scores must
//! ignore the IN models the data happens to have.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_attack_kit::lira::{self, Fit, Spread};
use lethe_attack_kit::rmia::{self, Reference};

mod common;
use common::{Lcg, python};
use serde_json::{Value, json};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from scipy.stats import norm
from scipy.special import logsumexp, softmax
d = json.load(sys.stdin)
T = np.array(d["target"]); S = np.array(d["shadow"]); M = np.array(d["inside"], bool)
y = np.array(d["labels"]); nx = d["nx"]; a = d["a"]
n = len(y); idx = np.arange(n)
def phi(L):
    other = L.copy(); other[..., idx, y] = -np.inf
    return L[..., idx, y] - logsumexp(other, axis=-1)
pt, ps = phi(T), phi(S)
def fit(mask):
    mu = np.array([ps[mask[:, j], j].mean() for j in range(n)])
    var = np.array([ps[mask[:, j], j].var() for j in range(n)])
    cnt = mask.sum(0)
    return mu, np.sqrt(var), np.sqrt((var * cnt).sum() / cnt.sum())
mi, si, gi = fit(M)
mo, so, go = fit(~M)
out = {
    "phi": pt.tolist(),
    "online_pe": (norm.logpdf(pt, mi, si + 1e-30) - norm.logpdf(pt, mo, so + 1e-30)).tolist(),
    "online_gl": (norm.logpdf(pt, mi, gi + 1e-30) - norm.logpdf(pt, mo, go + 1e-30)).tolist(),
    "offline_pe": ((pt - mo) / (so + 1e-30)).tolist(),
    "offline_gl": ((pt - mo) / (go + 1e-30)).tolist(),
}
pT = softmax(T, -1)[idx, y]
pS = softmax(S, -1)[:, idx, y]
pr = {"online": pS.mean(0),
      "offline": 0.5 * ((1 + a) * np.array([pS[~M[:, j], j].mean() for j in range(n)]) + (1 - a))}
for mode in ["online", "offline"]:
    r = pT / pr[mode]
    rx, rz = r[:nx], r[nx:]
    for g in [1.0, 2.0]:
        out[f"rmia_{mode}_{g:g}"] = (rx[:, None] / rz[None, :] >= g).mean(1).tolist()
    out[f"pr_{mode}"] = pr[mode].tolist()
print(json.dumps(out))
"#;

fn close(ours: &[f64], theirs: &Value, what: &str, tol: f64) {
    let theirs: Vec<f64> = serde_json::from_value(theirs.clone()).unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what}[{i}]: ours {a}, numpy {b}"
        );
    }
}

#[test]
fn lira_and_rmia_scores_match_numpy_and_scipy() {
    let (k, n, c, nx) = (7usize, 60usize, 4usize, 36usize);
    let mut rng = Lcg(2024);
    // Logits with a wide range, including confident rows (p_y within 1e-12 of 1).
    let mut logits = || -> Vec<f64> {
        (0..c)
            .map(|_| (rng.uniform() - 0.5) * 12.0 + if rng.uniform() < 0.2 { 25.0 } else { 0.0 })
            .collect()
    };
    let target: Vec<Vec<f64>> = (0..n).map(|_| logits()).collect();
    let shadow: Vec<Vec<Vec<f64>>> = (0..k).map(|_| (0..n).map(|_| logits()).collect()).collect();
    let mut rng = Lcg(7);
    let labels: Vec<usize> = (0..n)
        .map(|_| (rng.uniform() * c as f64) as usize)
        .collect();
    // Every sample has at least 2 IN and 2 OUT models, otherwise random.
    let inside: Vec<Vec<bool>> = (0..k)
        .map(|m| {
            (0..n)
                .map(|j| match m {
                    0 | 1 => true,
                    2 | 3 => false,
                    _ => (j * 31 + m * 17) % 5 < 2,
                })
                .collect()
        })
        .collect();
    let a = 0.3;
    let theirs = python(
        SCRIPT,
        &json!({"target": target, "shadow": shadow, "inside": inside, "labels": labels,
                "nx": nx, "a": a}),
    );

    let phi = |l: &[f64], y: usize| lira::logit_confidence(l, y).unwrap();
    let obs: Vec<lira::Observation> = (0..n)
        .map(|j| lira::Observation {
            target: phi(&target[j], labels[j]),
            shadows: (0..k).map(|m| phi(&shadow[m][j], labels[j])).collect(),
            inside: (0..k).map(|m| inside[m][j]).collect(),
        })
        .collect();
    let phis: Vec<f64> = obs.iter().map(|o| o.target).collect();
    close(&phis, &theirs["phi"], "phi", 1e-12);
    let global = Fit::Global(Spread::pooled(&obs));
    for (fit, tag) in [(Fit::PerExample, "pe"), (global, "gl")] {
        let on = lira::online_scores(&obs, fit).unwrap();
        close(
            &on,
            &theirs[format!("online_{tag}")],
            &format!("online {tag}"),
            1e-9,
        );
        let off = lira::offline_scores(&obs, fit).unwrap();
        close(
            &off,
            &theirs[format!("offline_{tag}")],
            &format!("offline {tag}"),
            1e-9,
        );
    }

    // The global spread is the attack's, shared: a subset scored with it gets
    // exactly the scores it had among all samples.
    let part = lira::online_scores(&obs[nx..], global).unwrap();
    let whole = lira::online_scores(&obs, global).unwrap();
    assert_eq!(part, whole[nx..]);

    let p = |l: &[f64], y: usize| rmia::probability(l, y).unwrap();
    let robs: Vec<rmia::Observation> = (0..n)
        .map(|j| rmia::Observation {
            target: p(&target[j], labels[j]),
            references: (0..k).map(|m| p(&shadow[m][j], labels[j])).collect(),
            inside: (0..k).map(|m| inside[m][j]).collect(),
        })
        .collect();
    for (reference, tag) in [
        (Reference::Online, "online"),
        (Reference::Offline { a }, "offline"),
    ] {
        let pr: Vec<f64> = robs
            .iter()
            .map(|o| rmia::marginal(o, reference).unwrap())
            .collect();
        close(
            &pr,
            &theirs[format!("pr_{tag}")],
            &format!("Pr(x) {tag}"),
            1e-12,
        );
        for gamma in [1.0, 2.0] {
            let s = rmia::scores(&robs[..nx], &robs[nx..], reference, gamma).unwrap();
            close(
                &s,
                &theirs[format!("rmia_{tag}_{gamma}")],
                &format!("RMIA {tag} gamma {gamma}"),
                1e-12,
            );
            // Not all equal: the data exercises the comparison.
            assert!(s.iter().any(|v| *v != s[0]), "{tag} {gamma}: {s:?}");
        }
    }
}
