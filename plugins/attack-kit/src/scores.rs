//! Song & Mittal's per-sample membership metrics ("Systematic Evaluation of
//! Privacy Risks of Machine Learning Models", USENIX Security 2021) from a
//! model's class probabilities `p` and the true label `y`.
//!
//! Each metric is turned into a *member value*, higher = more member-like, so
//! every attack thresholds the same way (`value >= threshold` ⇒ member).

/// Logs are taken of `max(p, 1e-30)`, as in Song & Mittal's code, so a zero
/// probability gives a large finite value instead of infinity.
const SMALL: f64 = 1e-30;

fn neg_log(p: f64) -> f64 {
    -(p.max(SMALL)).ln()
}

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

    /// The member value of one sample: correctness (0/1), confidence `p_y`,
    /// `-H(p)` or `-M(p, y)`. `y` outside `p` counts as a wrong, zero-confidence
    /// prediction.
    pub fn member_value(self, p: &[f64], y: usize) -> f64 {
        match self {
            Metric::Correctness => {
                if predicted_class(p) == Some(y) {
                    1.0
                } else {
                    0.0
                }
            }
            Metric::Confidence => p.get(y).copied().unwrap_or(0.0),
            Metric::Entropy => -entropy(p),
            Metric::ModifiedEntropy => -modified_entropy(p, y),
        }
    }
}

/// Index of the largest probability (the first on ties, like `argmax`).
pub fn predicted_class(p: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in p.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Shannon entropy `-Σ p_i log p_i`.
pub fn entropy(p: &[f64]) -> f64 {
    p.iter().map(|&pi| pi * neg_log(pi)).sum()
}

/// Modified entropy `M(p, y) = -(1 - p_y) log p_y - Σ_{i≠y} p_i log(1 - p_i)`:
/// low when the true class is confident *and* the other classes are not, which
/// plain entropy cannot tell from a confident wrong prediction.
///
/// (The Unlearn-Sparse evaluation code indexed the true class wrongly and took
/// `log p_i` where `log(1 - p_i)` belongs; this is the paper's definition.)
pub fn modified_entropy(p: &[f64], y: usize) -> f64 {
    p.iter()
        .enumerate()
        .map(|(i, &pi)| {
            if i == y {
                (1.0 - pi) * neg_log(pi)
            } else {
                pi * neg_log(1.0 - pi)
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_entropy_matches_the_definition_by_hand() {
        let p = [0.7, 0.2, 0.1];
        // -(0.3) ln 0.7 - 0.2 ln 0.8 - 0.1 ln 0.9
        let by_hand = -0.3 * 0.7f64.ln() - 0.2 * 0.8f64.ln() - 0.1 * 0.9f64.ln();
        assert!((modified_entropy(&p, 0) - by_hand).abs() < 1e-15);
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
        assert_eq!(modified_entropy(&[1.0, 0.0], 0), 0.0);
        let m = modified_entropy(&[1.0, 0.0], 1);
        assert!(m.is_finite() && m > 60.0, "{m}");
    }

    #[test]
    fn member_values_point_the_same_way() {
        let confident_right = [0.98, 0.01, 0.01];
        let unsure = [0.4, 0.35, 0.25];
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
        assert!((entropy(&[0.5, 0.5]) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(predicted_class(&[0.2, 0.5, 0.5]), Some(1));
        assert_eq!(Metric::Confidence.member_value(&[0.5], 3), 0.0);
    }
}
