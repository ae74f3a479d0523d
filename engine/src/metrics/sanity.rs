//! Warnings that keep a membership result from being misread.
//!
//! * **Over-unlearning**: an attack AUC on the forget set clearly *below* 0.5
//!   means the forget set now looks less member-like than data the model never
//!   saw. That is a leak of its own (the "Streisand effect"): an observer learns
//!   which samples were deleted.
//! * **Distribution shift**: when the forget set and the non-members differ in
//!   their class mix or in the inputs themselves, an attack separates them
//!   without any membership signal, and its AUC overstates the leak.

use serde::Serialize;

use super::bootstrap::Interval;

/// How much a flag matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// The number may be misleading.
    Warning,
}

/// One sanity warning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanityFlag {
    /// Stable identifier (`over_unlearning`, `label_shift`, `input_shift`, ...).
    pub code: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What it means, for the user.
    pub message: String,
}

/// AUC more than this far below 0.5, with the whole interval below 0.5, counts
/// as over-unlearning.
pub const OVER_UNLEARNING_MARGIN: f64 = 0.05;

/// Flags an AUC on the forget set that is significantly below chance.
pub fn over_unlearning(auc: f64, ci: Option<&Interval>) -> Option<SanityFlag> {
    let significant = ci.is_none_or(|c| c.high < 0.5);
    (auc < 0.5 - OVER_UNLEARNING_MARGIN && significant).then(|| SanityFlag {
        code: "over_unlearning",
        severity: Severity::Warning,
        message: format!(
            "the forget set looks less member-like than unseen data (AUC {auc:.3}{}): \
             over-unlearning is itself a signal that reveals which samples were deleted",
            ci.map(|c| format!(", {:.0}% CI {:.3}–{:.3}", c.level * 100.0, c.low, c.high))
                .unwrap_or_default()
        ),
    })
}

/// Total-variation distance between the class histograms of two label lists:
/// half the summed absolute difference of class shares, in `[0, 1]`.
pub fn label_distance(a: &[i64], b: &[i64]) -> f64 {
    let classes = a
        .iter()
        .chain(b)
        .copied()
        .max()
        .map_or(0, |m| m.max(0) as usize + 1);
    let hist = |l: &[i64]| {
        let mut h = vec![0.0; classes];
        for &y in l {
            if let Some(slot) = usize::try_from(y).ok().and_then(|y| h.get_mut(y)) {
                *slot += 1.0 / l.len().max(1) as f64;
            }
        }
        h
    };
    let (ha, hb) = (hist(a), hist(b));
    ha.iter().zip(&hb).map(|(x, y)| (x - y).abs()).sum::<f64>() / 2.0
}

/// Class mixes further apart than this are flagged.
pub const LABEL_SHIFT_LIMIT: f64 = 0.2;

/// Flags members and non-members whose class mixes differ.
pub fn label_shift(what: &str, distance: f64) -> Option<SanityFlag> {
    (distance > LABEL_SHIFT_LIMIT).then(|| SanityFlag {
        code: "label_shift",
        severity: Severity::Warning,
        message: format!(
            "{what}: the class mixes differ (total-variation distance {distance:.2}); an attack \
             can separate them by class alone, so its AUC overstates membership leakage \
             (expected for class-wise forgetting)"
        ),
    })
}

/// A model-free classifier separating the inputs better than this (with its
/// interval above 0.5) is flagged.
pub const INPUT_SHIFT_AUC: f64 = 0.6;

/// Flags inputs that a model-free ("blind") classifier tells apart.
pub fn input_shift(what: &str, auc: f64, ci: Option<&Interval>) -> Option<SanityFlag> {
    let significant = ci.is_none_or(|c| c.low > 0.5);
    (auc >= INPUT_SHIFT_AUC && significant).then(|| SanityFlag {
        code: "input_shift",
        severity: Severity::Warning,
        message: format!(
            "{what}: a classifier that never sees the model tells them apart from the pixels \
             alone (AUC {auc:.3}); the two sets come from different distributions, so attack \
             AUCs measure that shift as much as membership"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fire_only_when_clear() {
        let ci = |low, high| Interval {
            low,
            high,
            level: 0.95,
        };
        assert!(over_unlearning(0.3, Some(&ci(0.25, 0.36))).is_some());
        assert!(over_unlearning(0.44, Some(&ci(0.35, 0.52))).is_none());
        assert!(over_unlearning(0.49, Some(&ci(0.48, 0.495))).is_none());
        assert!(over_unlearning(0.5, None).is_none());
        assert_eq!(label_distance(&[0, 0, 1, 1], &[0, 1]), 0.0);
        assert_eq!(label_distance(&[0, 0], &[1, 1]), 1.0);
        assert!((label_distance(&[0, 0, 0, 1], &[0, 1]) - 0.25).abs() < 1e-12);
        assert!(label_shift("forget vs test", 0.9).is_some());
        assert!(label_shift("forget vs test", 0.05).is_none());
        assert!(input_shift("x", 0.7, Some(&ci(0.65, 0.75))).is_some());
        assert!(input_shift("x", 0.7, Some(&ci(0.45, 0.9))).is_none());
        assert!(input_shift("x", 0.52, Some(&ci(0.51, 0.53))).is_none());
    }
}
