//! ROC curves and AUC for membership scores (higher score = "more likely a member").

use serde::Serialize;

/// Area under the ROC curve of `members` vs `non_members`: the probability that a
/// random member scores higher than a random non-member, ties counting one half
/// (the Mann–Whitney statistic, which is what scikit-learn's `roc_auc_score` computes).
/// `None` when either side is empty or a score is NaN.
pub fn roc_auc(members: &[f64], non_members: &[f64]) -> Option<f64> {
    if members.is_empty() || non_members.is_empty() {
        return None;
    }
    if members.iter().chain(non_members).any(|s| s.is_nan()) {
        return None;
    }
    // Average ranks over the pooled scores, ties sharing their mean rank.
    let mut pooled: Vec<(f64, bool)> = members
        .iter()
        .map(|&s| (s, true))
        .chain(non_members.iter().map(|&s| (s, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_members = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for p in &pooled[i..=j] {
            if p.1 {
                rank_sum_members += mean_rank;
            }
        }
        i = j + 1;
    }
    let m = members.len() as f64;
    let n = non_members.len() as f64;
    Some((rank_sum_members - m * (m + 1.0) / 2.0) / (m * n))
}

/// ROC curve points, one per distinct threshold, from (0,0) to (1,1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocCurve {
    /// False-positive rates, ascending.
    pub fpr: Vec<f64>,
    /// True-positive rates at the same thresholds.
    pub tpr: Vec<f64>,
}

impl RocCurve {
    /// Builds the curve by sweeping the threshold down through the pooled scores.
    pub fn new(members: &[f64], non_members: &[f64]) -> Self {
        let mut pooled: Vec<(f64, bool)> = members
            .iter()
            .map(|&s| (s, true))
            .chain(non_members.iter().map(|&s| (s, false)))
            .filter(|p| !p.0.is_nan())
            .collect();
        pooled.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (p, n) = (members.len().max(1) as f64, non_members.len().max(1) as f64);
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut curve = RocCurve {
            fpr: vec![0.0],
            tpr: vec![0.0],
        };
        let mut i = 0;
        while i < pooled.len() {
            let t = pooled[i].0;
            while i < pooled.len() && pooled[i].0 == t {
                if pooled[i].1 {
                    tp += 1.0;
                } else {
                    fp += 1.0;
                }
                i += 1;
            }
            curve.fpr.push(fp / n);
            curve.tpr.push(tp / p);
        }
        curve
    }

    /// Highest TPR reached at an FPR not above `max_fpr` (0 if none).
    pub fn tpr_at_fpr(&self, max_fpr: f64) -> f64 {
        self.fpr
            .iter()
            .zip(&self.tpr)
            .filter(|(f, _)| **f <= max_fpr)
            .map(|(_, t)| *t)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn perfect_random_and_inverted_scores() {
        assert_eq!(roc_auc(&[2.0, 3.0], &[0.0, 1.0]), Some(1.0));
        assert_eq!(roc_auc(&[0.0, 1.0], &[2.0, 3.0]), Some(0.0));
        assert_eq!(roc_auc(&[1.0, 1.0], &[1.0]), Some(0.5));
        assert_eq!(roc_auc(&[], &[1.0]), None);
        assert_eq!(roc_auc(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn auc_and_curve_match_scikit_learn() {
        // Scores with ties, drawn from a fixed generator.
        let mut x: u64 = 42;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 20) as f64 / 4.0
        };
        let members: Vec<f64> = (0..37).map(|_| next() + 0.5).collect();
        let non: Vec<f64> = (0..51).map(|_| next()).collect();
        let script = format!(
            "import json; from sklearn.metrics import roc_auc_score, roc_curve\n\
             m = {members:?}; n = {non:?}\n\
             y = [1]*len(m) + [0]*len(n)\n\
             f, t, _ = roc_curve(y, m + n, drop_intermediate=False)\n\
             print(json.dumps([roc_auc_score(y, m + n), list(f), list(t)]))"
        );
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let out = Command::new(python).args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (auc, fpr, tpr): (f64, Vec<f64>, Vec<f64>) =
            serde_json::from_slice(&out.stdout).unwrap();
        let ours = roc_auc(&members, &non).unwrap();
        assert!((ours - auc).abs() < 1e-12, "{ours} vs sklearn {auc}");
        let curve = RocCurve::new(&members, &non);
        assert_eq!(curve.fpr.len(), fpr.len());
        for i in 0..fpr.len() {
            assert!((curve.fpr[i] - fpr[i]).abs() < 1e-12);
            assert!((curve.tpr[i] - tpr[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn tpr_at_low_fpr_reads_the_curve() {
        let c = RocCurve::new(&[5.0, 4.0, 1.0], &[3.0, 2.0, 0.0]);
        assert_eq!(c.tpr_at_fpr(0.0), 2.0 / 3.0);
        assert_eq!(c.tpr_at_fpr(1.0), 1.0);
    }
}
