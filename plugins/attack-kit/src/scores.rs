//! Song & Mittal's per-sample membership metrics ("Systematic Evaluation of
//! Privacy Risks of Machine Learning Models", USENIX Security 2021) from a
//! model's class log-probabilities `lp` (log-softmax, in `f64`) and the true
//! label `y`.
//!
//! Two numerical points matter on well-fitted models, where members are told
//! apart from non-members by *how* close to certain the prediction is:
//!
//! * `p_y` rounds to 1.0 (in `f32` at a logit margin of ~17, in `f64` at ~37),
//!   so everything is computed from log-probabilities, with
//!   `1 − p_y = Σ_{i≠y} p_i` summed in log space;
//! * the interesting values span many orders of magnitude (an entropy of 1e-20
//!   against 1e-6), so [`Metric::member_value`] is on a log scale: the logit
//!   `log(p_y / (1 − p_y))` (LiRA's scaling) for confidence, `−log H` and
//!   `−log M` for the entropies. Thresholds on these make the same decisions as
//!   thresholds on the raw metrics (the maps are monotone), but a sample's
//!   distance from its class threshold is now comparable across classes, which
//!   is what ranking (AUC, TPR at low FPR) needs.
//!
//! [`Metric::value`] is the paper's raw quantity (what an SVM is fitted on).

/// Logs of probabilities are floored here, like Song & Mittal's clamp of `p` at
/// 1e-30, so a zero probability gives a large finite value instead of infinity.
const LOG_FLOOR: f64 = -69.077_552_789_821_37;

/// Floor of the log-scaled member values (`log` of the smallest positive f64).
const TINY_LOG: f64 = -745.0;

/// The four metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// 1 when the prediction is right, else 0.
    Correctness,
    /// Probability of the true class.
    Confidence,
    /// Shannon entropy of the prediction (lower = member).
    Entropy,
    /// Modified entropy (lower = member).
    ModifiedEntropy,
}

impl Metric {
    /// From a parameter value (`correctness`, `confidence`, `entropy`,
    /// `modified-entropy`).
    pub fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "correctness" => Metric::Correctness,
            "confidence" => Metric::Confidence,
            "entropy" => Metric::Entropy,
            "modified-entropy" | "modified_entropy" | "m-entropy" => Metric::ModifiedEntropy,
            _ => return None,
        })
    }

    /// The parameter value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Correctness => "correctness",
            Metric::Confidence => "confidence",
            Metric::Entropy => "entropy",
            Metric::ModifiedEntropy => "modified-entropy",
        }
    }

    /// The paper's quantity: correctness (0/1), confidence `p_y`, entropy
    /// `H(p)` or modified entropy `M(p, y)`. `y` outside `lp` counts as a wrong,
    /// zero-confidence prediction.
    pub fn value(self, lp: &[f64], y: usize) -> f64 {
        match self {
            Metric::Correctness => correctness(lp, y),
            Metric::Confidence => lp.get(y).map_or(0.0, |l| l.exp()),
            Metric::Entropy => entropy(lp),
            Metric::ModifiedEntropy => modified_entropy(lp, y),
        }
    }

    /// Higher = more member-like, in the same order as the paper's quantity, on
    /// a log scale: correctness, `log(p_y / (1 − p_y))`, `−log H`, `−log M`.
    pub fn member_value(self, lp: &[f64], y: usize) -> f64 {
        let neg_log = |v: f64| -(v.max(0.0).ln().max(TINY_LOG));
        match self {
            Metric::Correctness => correctness(lp, y),
            Metric::Confidence => match lp.get(y) {
                Some(&l) => l.max(LOG_FLOOR) - log_rest(lp, y).max(TINY_LOG),
                None => LOG_FLOOR,
            },
            Metric::Entropy => neg_log(entropy(lp)),
            Metric::ModifiedEntropy => neg_log(modified_entropy(lp, y)),
        }
    }
}

fn correctness(lp: &[f64], y: usize) -> f64 {
    if predicted_class(lp) == Some(y) {
        1.0
    } else {
        0.0
    }
}

/// `log(1 − p_y) = log Σ_{i≠y} p_i`, exact where `p_y` rounds to 1.
fn log_rest(lp: &[f64], y: usize) -> f64 {
    let max = lp
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != y)
        .map(|(_, l)| *l)
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = lp
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != y)
        .map(|(_, l)| (l - max).exp())
        .sum();
    max + sum.ln()
}

/// Index of the largest entry (the first on ties, like `argmax`).
pub fn predicted_class(lp: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in lp.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Shannon entropy `-Σ p_i log p_i`. The largest class's term uses
/// `−log p = −log1p(−(1 − p))` with `1 − p` from the other classes, so a
/// near-certain prediction keeps its (tiny) share.
pub fn entropy(lp: &[f64]) -> f64 {
    let top = predicted_class(lp);
    lp.iter()
        .enumerate()
        .map(|(i, &l)| {
            if Some(i) == top {
                let rest = log_rest(lp, i).exp();
                l.exp() * -(-rest).ln_1p()
            } else {
                -l.exp() * l.max(LOG_FLOOR)
            }
        })
        .sum()
}

/// Modified entropy `M(p, y) = -(1 - p_y) log p_y - Σ_{i≠y} p_i log(1 - p_i)`:
/// low when the true class is confident *and* the other classes are not, which
/// plain entropy cannot tell from a confident wrong prediction.
///
/// (The Unlearn-Sparse evaluation code indexed the true class wrongly and took
/// `log p_i` where `log(1 - p_i)` belongs; this is the paper's definition.)
pub fn modified_entropy(lp: &[f64], y: usize) -> f64 {
    lp.iter()
        .enumerate()
        .map(|(i, &l)| {
            if i == y {
                // (1 − p_y) from the other classes; −log p_y = −log1p(−(1 − p_y)).
                let q = log_rest(lp, y).exp();
                let neg_log_p = if q < 0.5 {
                    -(-q).ln_1p()
                } else {
                    -l.max(LOG_FLOOR)
                };
                q * neg_log_p
            } else {
                -l.exp() * (-l.exp()).ln_1p().max(LOG_FLOOR)
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(p: &[f64]) -> Vec<f64> {
        p.iter().map(|v| v.ln()).collect()
    }

    #[test]
    fn modified_entropy_matches_the_definition_by_hand() {
        let p = logs(&[0.7, 0.2, 0.1]);
        // -(0.3) ln 0.7 - 0.2 ln 0.8 - 0.1 ln 0.9
        let by_hand = -0.3 * 0.7f64.ln() - 0.2 * 0.8f64.ln() - 0.1 * 0.9f64.ln();
        assert!((modified_entropy(&p, 0) - by_hand).abs() < 1e-15);
        assert_eq!(
            Metric::ModifiedEntropy.value(&p, 0),
            modified_entropy(&p, 0)
        );
        assert!((modified_entropy(&p, 0) - 0.162_167_3).abs() < 1e-6);
        // A confident wrong prediction is *not* member-like, unlike under entropy.
        let wrong = -0.8 * 0.2f64.ln() - 0.7 * 0.3f64.ln() - 0.1 * 0.9f64.ln();
        assert!((modified_entropy(&p, 1) - wrong).abs() < 1e-15);
        assert!((modified_entropy(&p, 1) - 2.140_867).abs() < 1e-5);
        assert!(modified_entropy(&p, 1) > modified_entropy(&p, 0));
        // The buggy variant (log p_i in place of log(1 - p_i)) gives another number.
        let buggy = -0.3 * 0.7f64.ln() - 0.2 * 0.2f64.ln() - 0.1 * 0.1f64.ln();
        assert!((modified_entropy(&p, 0) - buggy).abs() > 0.1);
        // Certain and right: zero; certain and wrong: huge but finite.
        assert_eq!(modified_entropy(&logs(&[1.0, 0.0]), 0), 0.0);
        let m = modified_entropy(&logs(&[1.0, 0.0]), 1);
        assert!(m.is_finite() && m > 60.0, "{m}");
    }

    #[test]
    fn member_values_point_the_same_way() {
        let confident_right = logs(&[0.98, 0.01, 0.01]);
        let unsure = logs(&[0.4, 0.35, 0.25]);
        for metric in [
            Metric::Correctness,
            Metric::Confidence,
            Metric::Entropy,
            Metric::ModifiedEntropy,
        ] {
            assert_eq!(Metric::parse(metric.name()), Some(metric));
            let a = metric.member_value(&confident_right, 0);
            let b = metric.member_value(&unsure, 1);
            assert!(a > b, "{metric:?}: {a} vs {b}");
        }
        assert!((entropy(&logs(&[0.5, 0.5])) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(predicted_class(&[0.2, 0.5, 0.5]), Some(1));
        assert_eq!(Metric::Confidence.value(&[0.5f64.ln()], 3), 0.0);
    }

    #[test]
    fn confident_samples_stay_apart_on_a_log_scale() {
        // Logit margins of 40 and 45, as log_softmax computes them in f64: p_y
        // and log p_y are exactly 1 and 0 for both; the other class is not.
        let lp = |margin: f64| vec![0.0, -margin];
        let (a, b) = (lp(40.0), lp(45.0));
        assert_eq!(Metric::Confidence.value(&a, 0), 1.0);
        assert_eq!(Metric::Confidence.value(&b, 0), 1.0);
        for metric in [Metric::Confidence, Metric::Entropy, Metric::ModifiedEntropy] {
            let (va, vb) = (metric.member_value(&a, 0), metric.member_value(&b, 0));
            assert!(vb > va, "{metric:?}: {vb} should exceed {va}");
        }
        // The logit of p_y = 1 - e^-40 is 40; the entropies are ~41 e^-40 and e^-80.
        assert!((Metric::Confidence.member_value(&a, 0) - 40.0).abs() < 1e-9);
        let h = 41.0 * (-40f64).exp();
        assert!((entropy(&a) - h).abs() < 1e-9 * h, "{} vs {h}", entropy(&a));
        let m = 2.0 * (-80f64).exp();
        assert!(
            (modified_entropy(&a, 0) - m).abs() < 1e-9 * m,
            "{} vs {m}",
            modified_entropy(&a, 0)
        );
        // Log scale: a ratio of values becomes a difference.
        assert!((Metric::ModifiedEntropy.member_value(&a, 0) - (80.0 - 2f64.ln())).abs() < 1e-9);
    }
}
