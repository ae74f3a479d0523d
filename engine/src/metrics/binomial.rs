//! A proportion with its exact (Clopper–Pearson) interval: how many of the
//! forgotten samples an attacker can still tell apart, stated with the
//! uncertainty a small forget set carries.

use serde::{Deserialize, Serialize};

use super::student::incomplete_beta;

/// `k` successes out of `n`, their share and its two-sided exact interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// Successes.
    pub k: usize,
    /// Trials.
    pub n: usize,
    /// `k / n` (0 for `n` = 0).
    pub fraction: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
}

/// The `p` quantile of the Beta(a, b) distribution (bisection on the
/// regularized incomplete beta to 1e-13).
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if incomplete_beta(a, b, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// `k` of `n` with the Clopper–Pearson interval at `level`: the Beta(k,
/// n − k + 1) quantile at (1 − level)/2 below (0 when k = 0) and the Beta(k + 1,
/// n − k) quantile at (1 + level)/2 above (1 when k = n).
pub fn clopper_pearson(k: usize, n: usize, level: f64) -> Proportion {
    let tail = (1.0 - level) / 2.0;
    let (kf, nf) = (k as f64, n as f64);
    let (low, high) = if n == 0 {
        (0.0, 1.0)
    } else {
        (
            if k == 0 {
                0.0
            } else {
                beta_quantile(tail, kf, nf - kf + 1.0)
            },
            if k >= n {
                1.0
            } else {
                beta_quantile(1.0 - tail, kf + 1.0, nf - kf)
            },
        )
    };
    Proportion {
        k,
        n,
        fraction: if n == 0 { 0.0 } else { kf / nf },
        low,
        high,
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_exact_and_the_interval_holds_the_share() {
        let p = clopper_pearson(0, 10, 0.95);
        assert_eq!(p.low, 0.0);
        // (0.025)^(1/10) from below: 1 − 0.025^(1/10) = 0.3085.
        assert!((p.high - (1.0 - 0.025f64.powf(0.1))).abs() < 1e-9, "{p:?}");
        let all = clopper_pearson(10, 10, 0.95);
        assert_eq!(all.high, 1.0);
        assert!((all.low - 0.025f64.powf(0.1)).abs() < 1e-9, "{all:?}");
        let mid = clopper_pearson(7, 20, 0.95);
        assert!(mid.low < 0.35 && 0.35 < mid.high);
    }
}
