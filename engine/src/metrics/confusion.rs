//! Hard-decision metrics of a membership attack: counts of members and
//! non-members it called "member", and the usual ratios.

use serde::Serialize;

/// Decisions of an attack on labelled members and non-members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Members called members.
    pub tp: usize,
    /// Non-members called members.
    pub fp: usize,
    /// Non-members called non-members.
    pub tn: usize,
    /// Members called non-members.
    pub fn_: usize,
}

/// The ratios of a [`Confusion`], as scikit-learn defines them (0 where a
/// denominator is 0, as its `zero_division=0`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecisionMetrics {
    /// `(tp + tn) / all`.
    pub accuracy: f64,
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`, the true-positive rate.
    pub recall: f64,
    /// `fp / (fp + tn)`.
    pub fpr: f64,
    /// `(recall + tn / (tn + fp)) / 2`.
    pub balanced_accuracy: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Confusion {
    /// Counts from the attack's decisions (`true` = member) on members and on
    /// non-members.
    pub fn from_predictions(on_members: &[bool], on_non_members: &[bool]) -> Self {
        let tp = on_members.iter().filter(|p| **p).count();
        let fp = on_non_members.iter().filter(|p| **p).count();
        Confusion {
            tp,
            fn_: on_members.len() - tp,
            fp,
            tn: on_non_members.len() - fp,
        }
    }

    /// Counts for the decision `score >= threshold`.
    pub fn at_threshold(members: &[f64], non_members: &[f64], threshold: f64) -> Self {
        let m: Vec<bool> = members.iter().map(|s| *s >= threshold).collect();
        let n: Vec<bool> = non_members.iter().map(|s| *s >= threshold).collect();
        Self::from_predictions(&m, &n)
    }

    /// The ratios.
    pub fn metrics(&self) -> DecisionMetrics {
        let recall = ratio(self.tp, self.tp + self.fn_);
        let tnr = ratio(self.tn, self.tn + self.fp);
        DecisionMetrics {
            accuracy: ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_),
            precision: ratio(self.tp, self.tp + self.fp),
            recall,
            fpr: ratio(self.fp, self.fp + self.tn),
            balanced_accuracy: (recall + tnr) / 2.0,
        }
    }
}
