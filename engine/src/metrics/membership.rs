//! The metric set of a membership-inference attack, from its per-sample
//! scores (higher = more member-like) on a set treated as members and a set of
//! non-members, and optionally its own member/non-member decisions.
//!
//! Following Carlini et al. (LiRA, 2022), low-FPR operating points are reported
//! beside AUC: TPR at 1%, 0.1% and 0.01% FPR is the highest TPR reached at an
//! FPR not above the target. With `n` non-members the smallest non-zero FPR is
//! `1/n`; a target below it reads the curve at FPR 0 and is marked unresolved.

use serde::Serialize;

use super::bootstrap::{Interval, SortedScores};
use super::confusion::{Confusion, DecisionMetrics};
use super::roc::RocCurve;

/// Settings of [`membership_metrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOptions {
    /// FPR targets for the TPR-at-FPR operating points.
    pub fprs: Vec<f64>,
    /// Bootstrap replicates (0: no intervals).
    pub resamples: usize,
    /// Interval coverage.
    pub level: f64,
    /// Bootstrap seed.
    pub seed: u64,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            fprs: vec![0.01, 0.001, 0.0001],
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// TPR at one FPR target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TprAtFpr {
    /// The FPR target.
    pub fpr: f64,
    /// Highest TPR with FPR ≤ target.
    pub tpr: f64,
    /// Bootstrap interval.
    pub ci: Option<Interval>,
    /// Whether the non-member count can resolve this FPR (`1/n ≤ fpr`).
    pub resolved: bool,
}

/// Everything reported for one members-vs-non-members comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipMetrics {
    /// Samples treated as members.
    pub members: usize,
    /// Non-members.
    pub non_members: usize,
    /// Area under the ROC curve (0.5: the attack cannot tell them apart).
    pub auc: f64,
    /// Bootstrap interval of the AUC.
    pub auc_ci: Option<Interval>,
    /// Low-FPR operating points.
    pub tpr_at_fpr: Vec<TprAtFpr>,
    /// Metrics of the attack's own decisions, when it made any.
    pub decisions: Option<DecisionMetrics>,
    /// Counts behind [`MembershipMetrics::decisions`].
    pub confusion: Option<Confusion>,
    /// Share of the members the attack called non-members: for the forget set,
    /// the "MIA efficacy" of the unlearning papers (higher = more forgotten).
    pub efficacy: Option<f64>,
    /// The ROC curve, one point per distinct score.
    pub roc: RocCurve,
}

/// Computes the metric set; `None` when a side is empty or a score is NaN.
/// Decisions are used only when given for both sides, with the right lengths.
pub fn membership_metrics(
    members: &[f64],
    non_members: &[f64],
    decisions: Option<(&[bool], &[bool])>,
    opts: &MetricOptions,
) -> Option<MembershipMetrics> {
    let sorted = SortedScores::new(members, non_members)?;
    let (auc, tprs) = sorted.point(&opts.fprs);
    let intervals = sorted.bootstrap(&opts.fprs, opts.resamples, opts.level, opts.seed);
    let tpr_at_fpr = opts
        .fprs
        .iter()
        .zip(tprs)
        .enumerate()
        .map(|(k, (&fpr, tpr))| TprAtFpr {
            fpr,
            tpr,
            ci: intervals.as_ref().map(|(_, t)| t[k]),
            resolved: 1.0 / non_members.len() as f64 <= fpr,
        })
        .collect();
    let confusion = decisions
        .filter(|(m, n)| m.len() == members.len() && n.len() == non_members.len())
        .map(|(m, n)| Confusion::from_predictions(m, n));
    let decisions = confusion.map(|c| c.metrics());
    Some(MembershipMetrics {
        members: members.len(),
        non_members: non_members.len(),
        auc,
        auc_ci: intervals.map(|(a, _)| a),
        tpr_at_fpr,
        efficacy: decisions.map(|d| 1.0 - d.recall),
        decisions,
        confusion,
        roc: RocCurve::new(members, non_members),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::roc_auc;

    #[test]
    fn point_estimates_agree_with_the_curve_and_the_rank_statistic() {
        let m = [0.9, 0.8, 0.8, 0.4, 0.3];
        let n = [0.8, 0.5, 0.2, 0.1, 0.1, 0.0];
        let opts = MetricOptions {
            fprs: vec![0.0, 0.2, 0.5],
            resamples: 0,
            ..MetricOptions::default()
        };
        let r = membership_metrics(&m, &n, None, &opts).unwrap();
        assert!((r.auc - roc_auc(&m, &n).unwrap()).abs() < 1e-15);
        for t in &r.tpr_at_fpr {
            assert_eq!(t.tpr, r.roc.tpr_at_fpr(t.fpr), "at {}", t.fpr);
        }
        assert_eq!(r.tpr_at_fpr[0].tpr, 0.2);
        assert!(!r.tpr_at_fpr[0].resolved && r.tpr_at_fpr[1].resolved);
        assert!(r.auc_ci.is_none() && r.decisions.is_none() && r.efficacy.is_none());
    }

    #[test]
    fn decisions_give_efficacy_and_wrong_lengths_are_ignored() {
        let m = [0.9, 0.8, 0.2, 0.1];
        let n = [0.3, 0.2];
        let opts = MetricOptions {
            resamples: 0,
            ..MetricOptions::default()
        };
        let pm = [true, true, false, false];
        let pn = [true, false];
        let r = membership_metrics(&m, &n, Some((&pm, &pn)), &opts).unwrap();
        assert_eq!(r.efficacy, Some(0.5));
        let d = r.decisions.unwrap();
        assert_eq!(d.precision, 2.0 / 3.0);
        assert_eq!(d.balanced_accuracy, 0.5);
        let bad = membership_metrics(&m, &n, Some((&pm[..2], &pn)), &opts).unwrap();
        assert!(bad.decisions.is_none());
        assert!(membership_metrics(&[], &n, None, &opts).is_none());
    }

    #[test]
    fn bootstrap_intervals_cover_the_estimate_narrow_with_n_and_repeat_with_the_seed() {
        let gen_scores = |n: usize, shift: f64, seed: u64| {
            let mut r = crate::data::SplitMix64::new(seed);
            (0..n)
                .map(|_| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + shift)
                .collect::<Vec<_>>()
        };
        let opts = MetricOptions {
            resamples: 400,
            seed: 5,
            ..MetricOptions::default()
        };
        let small = membership_metrics(
            &gen_scores(60, 0.2, 1),
            &gen_scores(60, 0.0, 2),
            None,
            &opts,
        )
        .unwrap();
        let large = membership_metrics(
            &gen_scores(2000, 0.2, 1),
            &gen_scores(2000, 0.0, 2),
            None,
            &opts,
        )
        .unwrap();
        for r in [&small, &large] {
            let ci = r.auc_ci.unwrap();
            assert!(ci.contains(r.auc), "{ci:?} {}", r.auc);
            assert!(ci.low > 0.5, "a shift of 0.2 is detectable: {ci:?}");
        }
        let width = |r: &MembershipMetrics| r.auc_ci.map(|c| c.high - c.low).unwrap();
        assert!(width(&large) < width(&small) / 3.0);
        // Uniform(0,1) shifted by 0.2: AUC = 1 - 0.8²/2 = 0.68.
        assert!((large.auc - 0.68).abs() < 0.02, "{}", large.auc);
        let again = membership_metrics(
            &gen_scores(60, 0.2, 1),
            &gen_scores(60, 0.0, 2),
            None,
            &opts,
        )
        .unwrap();
        assert_eq!(again.auc_ci, small.auc_ci);
    }
}
