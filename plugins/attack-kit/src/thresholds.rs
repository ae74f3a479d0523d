//! Thresholds on member values (`value >= threshold` ⇒ member), fitted on
//! shadow members and non-members.

/// Song & Mittal's `_thre_setting`: among the observed values (members first,
/// then non-members, in order), the first that maximises
/// `½ (TPR + TNR)`, i.e. balanced accuracy, which makes unequal shadow sets fair.
/// `None` when either side is empty or holds a NaN.
pub fn best_threshold(members: &[f64], non_members: &[f64]) -> Option<f64> {
    if members.is_empty() || non_members.is_empty() {
        return None;
    }
    if members.iter().chain(non_members).any(|v| v.is_nan()) {
        return None;
    }
    let mut m = members.to_vec();
    let mut n = non_members.to_vec();
    m.sort_by(f64::total_cmp);
    n.sort_by(f64::total_cmp);
    let (lm, ln) = (m.len() as f64, n.len() as f64);
    // Same arithmetic as the reference, so ties break the same way.
    let (mut thr, mut max_acc) = (0.0, 0.0);
    for &t in members.iter().chain(non_members) {
        let tr_ratio = (m.len() - m.partition_point(|v| *v < t)) as f64 / lm;
        let te_ratio = n.partition_point(|v| *v < t) as f64 / ln;
        let acc = 0.5 * (tr_ratio + te_ratio);
        if acc > max_acc {
            thr = t;
            max_acc = acc;
        }
    }
    Some(thr)
}

/// One threshold per class, falling back to the global one for a class that
/// lacks shadow members or non-members (Song & Mittal's code has no fallback
/// and would compare against an arbitrary 0 there).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassThresholds {
    /// Per class, `None` where the class lacked shadow data.
    pub per_class: Vec<Option<f64>>,
    /// Fitted on all shadow data.
    pub global: f64,
}

impl ClassThresholds {
    /// Fits global and per-class thresholds. Labels at or above `classes` only
    /// count for the global threshold.
    pub fn fit(
        member_values: &[f64],
        member_labels: &[usize],
        non_values: &[f64],
        non_labels: &[usize],
        classes: usize,
    ) -> Option<ClassThresholds> {
        let global = best_threshold(member_values, non_values)?;
        let pick = |values: &[f64], labels: &[usize], c: usize| -> Vec<f64> {
            values
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == c)
                .map(|(v, _)| *v)
                .collect()
        };
        let per_class = (0..classes)
            .map(|c| {
                best_threshold(
                    &pick(member_values, member_labels, c),
                    &pick(non_values, non_labels, c),
                )
            })
            .collect();
        Some(ClassThresholds { per_class, global })
    }

    /// Only the global threshold, for every class.
    pub fn global_only(member_values: &[f64], non_values: &[f64]) -> Option<ClassThresholds> {
        Some(ClassThresholds {
            per_class: Vec::new(),
            global: best_threshold(member_values, non_values)?,
        })
    }

    /// The threshold that applies to a sample of class `label`.
    pub fn threshold(&self, label: usize) -> f64 {
        self.per_class
            .get(label)
            .copied()
            .flatten()
            .unwrap_or(self.global)
    }

    /// `value − threshold(label)`: a score whose sign is the attack's decision
    /// (`>= 0` ⇒ member) and whose order ranks samples across classes.
    pub fn margin(&self, value: f64, label: usize) -> f64 {
        value - self.threshold(label)
    }
}

/// EncoderMI's threshold search: `points` evenly spaced thresholds on
/// `[lo, hi]` (the reference uses 501 on `[0, 1]` for cosine similarities); the
/// first with the highest balanced accuracy wins. Returns the threshold and
/// that accuracy; `None` when a side is empty or `points < 2`.
pub fn grid_threshold(
    members: &[f64],
    non_members: &[f64],
    lo: f64,
    hi: f64,
    points: usize,
) -> Option<(f64, f64)> {
    if members.is_empty() || non_members.is_empty() || points < 2 {
        return None;
    }
    let mut best: Option<(f64, f64)> = None;
    for k in 0..points {
        let t = lo + (hi - lo) * k as f64 / (points - 1) as f64;
        let acc = balanced_accuracy(members, non_members, t);
        if best.is_none_or(|(_, b)| acc > b) {
            best = Some((t, acc));
        }
    }
    best
}

/// `½ (share of members >= t + share of non-members < t)`.
pub fn balanced_accuracy(members: &[f64], non_members: &[f64], t: f64) -> f64 {
    let tpr = members.iter().filter(|v| **v >= t).count() as f64 / members.len().max(1) as f64;
    let tnr =
        non_members.iter().filter(|v| **v < t).count() as f64 / non_members.len().max(1) as f64;
    0.5 * (tpr + tnr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Song & Mittal's loop, verbatim (O(n²)).
    fn reference(tr: &[f64], te: &[f64]) -> f64 {
        let (mut thre, mut max_acc) = (0.0, 0.0);
        for &value in tr.iter().chain(te) {
            let tr_ratio = tr.iter().filter(|v| **v >= value).count() as f64 / tr.len() as f64;
            let te_ratio = te.iter().filter(|v| **v < value).count() as f64 / te.len() as f64;
            let acc = 0.5 * (tr_ratio + te_ratio);
            if acc > max_acc {
                thre = value;
                max_acc = acc;
            }
        }
        thre
    }

    #[test]
    fn fast_threshold_equals_the_reference_loop_including_ties() {
        let mut x: u64 = 7;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 40) as f64 / 8.0
        };
        for round in 0..50 {
            let m: Vec<f64> = (0..(5 + round)).map(|_| next() + 0.7).collect();
            let n: Vec<f64> = (0..(3 + 2 * round)).map(|_| next()).collect();
            assert_eq!(
                best_threshold(&m, &n),
                Some(reference(&m, &n)),
                "round {round}"
            );
        }
        assert_eq!(best_threshold(&[], &[1.0]), None);
        assert_eq!(best_threshold(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn class_dependent_thresholds_separate_what_a_global_one_cannot() {
        // Class 0: members at 0.9+, non-members at 0.8. Class 1: members at 0.5+,
        // non-members at 0.3. A global threshold must misclassify one class.
        let mv = [0.9, 0.95, 0.92, 0.5, 0.55, 0.6];
        let ml = [0, 0, 0, 1, 1, 1];
        let nv = [0.8, 0.81, 0.79, 0.3, 0.31, 0.29];
        let nl = [0, 0, 0, 1, 1, 1];
        let t = ClassThresholds::fit(&mv, &ml, &nv, &nl, 3).unwrap();
        assert_eq!(t.threshold(0), 0.9);
        assert_eq!(t.threshold(1), 0.5);
        // Class 2 has no shadow data: the global threshold applies.
        assert_eq!(t.per_class[2], None);
        assert_eq!(t.threshold(2), t.global);
        let correct = |v: &[f64], l: &[usize], member: bool| {
            v.iter()
                .zip(l)
                .filter(|(v, l)| (t.margin(**v, **l) >= 0.0) == member)
                .count()
        };
        assert_eq!(correct(&mv, &ml, true) + correct(&nv, &nl, false), 12);
        let g = ClassThresholds::global_only(&mv, &nv).unwrap();
        let global_correct = mv.iter().filter(|v| **v >= g.global).count()
            + nv.iter().filter(|v| **v < g.global).count();
        assert!(global_correct < 12, "{global_correct}");
    }

    #[test]
    fn grid_search_finds_the_gap() {
        let (t, acc) = grid_threshold(&[0.8, 0.9, 0.85], &[0.1, 0.2, 0.5], 0.0, 1.0, 501).unwrap();
        assert_eq!(acc, 1.0);
        // The first grid point above 0.5: 0.502.
        assert!((t - 0.502).abs() < 1e-12, "{t}");
        assert_eq!(grid_threshold(&[], &[0.1], 0.0, 1.0, 501), None);
    }
}
