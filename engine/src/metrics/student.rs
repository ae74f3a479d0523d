//! Student's t distribution (CDF and quantile) and the intervals over seeds
//! that the unlearning papers report: the mean with a two-sided t-interval,
//! and the paired comparison of a method with Retrain seed by seed.
//!
//! The CDF goes through the regularized incomplete beta function (Lentz's
//! continued fraction, the classic Numerical Recipes formulation), the quantile
//! through bisection on it; both are checked against SciPy in
//! `engine/tests/student_t.rs`.

use serde::{Deserialize, Serialize};

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; |relative error| < 1e-14).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    // Lentz keeps every denominator away from 0.
    let away = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / away(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step, then odd step of the continued fraction.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / away(1.0 + aa * d);
        c = away(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / away(1.0 + aa * d);
        c = away(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function `I_x(a, b)`.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2);
    // beyond it, use the symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// `P(T ≤ t)` for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, x);
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (bisection on
/// [`t_cdf`] to 1e-12).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let mut hi = 1.0;
    while t_cdf(hi, df) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// A mean over seeds with its two-sided t-interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanInterval {
    /// The values, in seed order.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Lower end (`None` below two values).
    pub low: Option<f64>,
    /// Upper end.
    pub high: Option<f64>,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
}

/// The mean of the finite `values` with the `level` t-interval
/// `mean ± t_{(1+level)/2, n−1} · s/√n` (as `scipy.stats.t.interval` with
/// `scale = scipy.stats.sem`); `None` without values.
pub fn mean_t_interval(values: &[f64], level: f64) -> Option<MeanInterval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let (low, high) = if v.len() > 1 {
        let s = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let half = t_quantile(0.5 + level / 2.0, n - 1.0) * s / n.sqrt();
        (Some(mean - half), Some(mean + half))
    } else {
        (None, None)
    };
    Some(MeanInterval {
        values: v,
        mean,
        low,
        high,
        level,
    })
}

impl MeanInterval {
    /// Whether the interval holds `x` (never, without an interval).
    pub fn contains(&self, x: f64) -> bool {
        matches!((self.low, self.high), (Some(l), Some(h)) if l <= x && x <= h)
    }
}
