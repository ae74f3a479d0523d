//! Percentile bootstrap intervals for ROC statistics (AUC, TPR at a fixed
//! FPR). Members and non-members are resampled separately, with replacement,
//! keeping both sizes: the uncertainty of a membership attack comes from which
//! samples happen to be in each set.
//!
//! The pooled scores are sorted once; a resample is a vector of multiplicities,
//! so each replicate is a linear sweep rather than a new sort.

use serde::Serialize;

use crate::data::SplitMix64;

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    /// Whether `x` lies inside (ends included).
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Distinct scores, descending, with which pooled samples share each.
#[derive(Debug, Clone)]
pub(crate) struct SortedScores {
    /// Per distinct score: indices into members and into non-members.
    groups: Vec<(Vec<usize>, Vec<usize>)>,
    members: usize,
    non_members: usize,
}

impl SortedScores {
    /// `None` when a side is empty or holds a NaN.
    pub(crate) fn new(members: &[f64], non_members: &[f64]) -> Option<Self> {
        if members.is_empty() || non_members.is_empty() {
            return None;
        }
        if members.iter().chain(non_members).any(|s| s.is_nan()) {
            return None;
        }
        let mut pooled: Vec<(f64, bool, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, true, i))
            .chain(non_members.iter().enumerate().map(|(i, &s)| (s, false, i)))
            .collect();
        pooled.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        let mut last: Option<f64> = None;
        for (s, member, i) in pooled {
            if last != Some(s) {
                groups.push((Vec::new(), Vec::new()));
                last = Some(s);
            }
            if let Some(g) = groups.last_mut() {
                if member {
                    g.0.push(i);
                } else {
                    g.1.push(i);
                }
            }
        }
        Some(SortedScores {
            groups,
            members: members.len(),
            non_members: non_members.len(),
        })
    }

    /// AUC and, per entry of `fprs`, the highest TPR at an FPR not above it,
    /// with each sample counted `wm[i]` / `wn[i]` times.
    pub(crate) fn sweep(&self, wm: &[u32], wn: &[u32], fprs: &[f64]) -> (f64, Vec<f64>) {
        let p: f64 = wm.iter().map(|w| f64::from(*w)).sum();
        let n: f64 = wn.iter().map(|w| f64::from(*w)).sum();
        let (mut tp, mut fp, mut area) = (0.0f64, 0.0f64, 0.0f64);
        let mut tpr_at = vec![0.0; fprs.len()];
        for (gm, gn) in &self.groups {
            let dtp: f64 = gm.iter().map(|&i| f64::from(wm[i])).sum();
            let dfp: f64 = gn.iter().map(|&i| f64::from(wn[i])).sum();
            // Trapezoid over the step: ties count one half, as Mann–Whitney.
            area += dfp * (tp + dtp / 2.0);
            tp += dtp;
            fp += dfp;
            let (fpr, tpr) = (fp / n, tp / p);
            for (k, &target) in fprs.iter().enumerate() {
                if fpr <= target {
                    tpr_at[k] = tpr;
                }
            }
        }
        (area / (p * n), tpr_at)
    }

    /// Unit weights: the statistics of the sample itself.
    pub(crate) fn point(&self, fprs: &[f64]) -> (f64, Vec<f64>) {
        self.sweep(&vec![1; self.members], &vec![1; self.non_members], fprs)
    }

    /// Percentile intervals of the AUC and of each TPR at `fprs` over
    /// `resamples` replicates drawn from `seed`. `None` for no resamples.
    pub(crate) fn bootstrap(
        &self,
        fprs: &[f64],
        resamples: usize,
        level: f64,
        seed: u64,
    ) -> Option<(Interval, Vec<Interval>)> {
        if resamples == 0 {
            return None;
        }
        let mut rng = SplitMix64::new(seed);
        let mut aucs = Vec::with_capacity(resamples);
        let mut tprs = vec![Vec::with_capacity(resamples); fprs.len()];
        let mut wm = vec![0u32; self.members];
        let mut wn = vec![0u32; self.non_members];
        for _ in 0..resamples {
            wm.fill(0);
            wn.fill(0);
            for _ in 0..self.members {
                wm[rng.below(self.members as u64) as usize] += 1;
            }
            for _ in 0..self.non_members {
                wn[rng.below(self.non_members as u64) as usize] += 1;
            }
            let (auc, at) = self.sweep(&wm, &wn, fprs);
            aucs.push(auc);
            for (k, t) in at.into_iter().enumerate() {
                tprs[k].push(t);
            }
        }
        Some((
            percentile_interval(&mut aucs, level),
            tprs.iter_mut()
                .map(|v| percentile_interval(v, level))
                .collect(),
        ))
    }
}

/// Quantile with linear interpolation between order statistics (NumPy's
/// default `percentile`). `values` must be sorted and non-empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// The central `level` interval of `values` (sorted in place).
pub fn percentile_interval(values: &mut [f64], level: f64) -> Interval {
    if values.is_empty() {
        return Interval {
            low: f64::NAN,
            high: f64::NAN,
            level,
        };
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Interval {
        low: quantile(values, tail),
        high: quantile(values, 1.0 - tail),
        level,
    }
}
