//! U-LiRA's per-sample p-values against an independent SciPy computation on
//! fixed shadow outputs: the Gaussians fitted as LiRA does, widened to
//! predictive distributions (`σ² (n+1)/(n−1)`), the likelihood-ratio region
//! found by `numpy.roots` and measured with `scipy.stats.norm` under OUT, and
//! the same p-values again by brute force (the OUT density integrated over a
//! fine grid where the ratio is at least the observed one), for per-example
//! and global variances, with σ_in above, below and equal to σ_out.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_attack_kit::lira::{self, Fit, Gaussian, Observation, Spread};

mod common;
use common::{Lcg, python};
use serde_json::{Value, json};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from scipy.stats import norm
d = json.load(sys.stdin)
t = np.array(d["target"]); S = np.array(d["shadow"]); M = np.array(d["inside"], bool)
n = len(t)
def fit(mask):
    mu = np.array([S[mask[:, j], j].mean() for j in range(n)])
    var = np.array([S[mask[:, j], j].var() for j in range(n)])
    cnt = mask.sum(0)
    return mu, np.sqrt(var), np.sqrt((var * cnt).sum() / cnt.sum()), cnt
mi, si, gi, ni = fit(M)
mo, so, go, no = fit(~M)
def widen(sd, cnt):
    return sd * np.sqrt((cnt + 1.0) / (cnt - 1.0))
def lr(x, a_mu, a_sd, b_mu, b_sd):
    return norm.logpdf(x, a_mu, a_sd) - norm.logpdf(x, b_mu, b_sd)
def pvalue_roots(x, a_mu, a_sd, b_mu, b_sd):
    L = lr(x, a_mu, a_sd, b_mu, b_sd)
    # ratio(phi) - L as a polynomial in phi
    A = 0.5 * (1 / b_sd**2 - 1 / a_sd**2)
    B = a_mu / a_sd**2 - b_mu / b_sd**2
    C = 0.5 * (b_mu**2 / b_sd**2 - a_mu**2 / a_sd**2) + np.log(b_sd / a_sd) - L
    if abs(A) < 1e-12 / min(a_sd, b_sd)**2:
        r = -C / B
        return norm.sf(r, b_mu, b_sd) if B > 0 else norm.cdf(r, b_mu, b_sd)
    r = np.sort(np.real(np.roots([A, B, C])))
    if A > 0:
        return norm.cdf(r[0], b_mu, b_sd) + norm.sf(r[1], b_mu, b_sd)
    return norm.cdf(r[1], b_mu, b_sd) - norm.cdf(r[0], b_mu, b_sd)
def pvalue_grid(x, a_mu, a_sd, b_mu, b_sd):
    g = np.linspace(b_mu - 14 * b_sd, b_mu + 14 * b_sd, 400001)
    keep = lr(g, a_mu, a_sd, b_mu, b_sd) >= lr(x, a_mu, a_sd, b_mu, b_sd)
    dens = norm.pdf(g, b_mu, b_sd) * keep
    return float(np.trapezoid(dens, g))
out = {}
for tag, sdi, sdo in [("pe", si, so), ("gl", np.full(n, gi), np.full(n, go))]:
    a_sd, b_sd = widen(sdi + 1e-30, ni), widen(sdo + 1e-30, no)
    out["roots_" + tag] = [float(pvalue_roots(t[j], mi[j], a_sd[j], mo[j], b_sd[j])) for j in range(n)]
    out["grid_" + tag] = [pvalue_grid(t[j], mi[j], a_sd[j], mo[j], b_sd[j]) for j in range(n)]
# The bare formula on hand-picked Gaussians: sd_in above, below and equal to sd_out.
out["bare"] = [float(pvalue_roots(*c)) for c in d["bare"]]
print(json.dumps(out))
"#;

fn close(ours: &[f64], theirs: &Value, what: &str, abs: f64, rel: f64) {
    let theirs: Vec<f64> = serde_json::from_value(theirs.clone()).unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(
            (a - b).abs() <= abs + rel * b.abs(),
            "{what}[{i}]: ours {a}, scipy {b}"
        );
    }
}

#[test]
fn ulira_pvalues_match_scipy_roots_and_a_brute_force_integral() {
    let (k, n) = (9usize, 40usize);
    let mut rng = Lcg(11);
    // IN values sit higher and, for half the samples, spread wider than OUT.
    let inside: Vec<Vec<bool>> = (0..k)
        .map(|m| (0..n).map(|j| (m * 7 + j * 3) % 9 < 4 + j % 2).collect())
        .collect();
    let shadow: Vec<Vec<f64>> = (0..k)
        .map(|m| {
            (0..n)
                .map(|j| {
                    let noise = rng.uniform() - 0.5;
                    if inside[m][j] {
                        2.0 + noise * if j % 2 == 0 { 4.0 } else { 1.0 }
                    } else {
                        noise * 2.0
                    }
                })
                .collect()
        })
        .collect();
    let target: Vec<f64> = (0..n).map(|_| (rng.uniform() - 0.3) * 6.0).collect();
    // [x, mean_in, sd_in, mean_out, sd_out]
    let bare = [
        [1.2, 1.5, 2.0, 0.0, 1.0],   // sd_in > sd_out: two tails
        [0.7, 1.5, 0.5, 0.0, 1.0],   // sd_in < sd_out: an interval
        [0.3, 1.5, 1.0, 0.0, 1.0],   // equal: one upper tail
        [-0.4, -1.0, 1.0, 0.0, 1.0], // equal, IN below OUT: one lower tail
        [4.5, 4.0, 0.3, 0.0, 1.0],   // far tail
    ];
    let theirs = python(
        SCRIPT,
        &json!({"target": target, "shadow": shadow, "inside": inside, "bare": bare}),
    );
    let obs: Vec<Observation> = (0..n)
        .map(|j| Observation {
            target: target[j],
            shadows: (0..k).map(|m| shadow[m][j]).collect(),
            inside: (0..k).map(|m| inside[m][j]).collect(),
        })
        .collect();
    for (fit, tag) in [
        (Fit::PerExample, "pe"),
        (Fit::Global(Spread::pooled(&obs)), "gl"),
    ] {
        let ours = lira::online_pvalues(&obs, fit).unwrap();
        close(&ours, &theirs[format!("roots_{tag}")], tag, 1e-12, 1e-9);
        // The grid integral is good to about 1e-6.
        close(&ours, &theirs[format!("grid_{tag}")], tag, 2e-6, 1e-4);
        // Not degenerate: small and large p-values both occur.
        assert!(ours.iter().any(|p| *p < 0.05), "{tag}: {ours:?}");
        assert!(ours.iter().any(|p| *p > 0.5), "{tag}: {ours:?}");
    }
    let g = |mean, sd| Gaussian { mean, sd };
    let bare_ours: Vec<f64> = bare
        .iter()
        .map(|c| lira::lr_pvalue(c[0], g(c[1], c[2]), g(c[3], c[4])))
        .collect();
    close(&bare_ours, &theirs["bare"], "bare", 1e-15, 1e-9);
    // The far tail is resolved, not rounded to 0.
    assert!(bare_ours[4] > 0.0 && bare_ours[4] < 1e-4, "{bare_ours:?}");
}
