//! The plain-language verdict of a deletion, and the fixed thresholds behind it.
//!
//! The rules follow the evaluation practice of the unlearning papers Lethe
//! implements and of the membership-inference literature:
//!
//! * **Membership.** An attack's AUC on the forget set (as members) against
//!   held-out non-members should sit at chance. With a retrained model attacked
//!   the same way, the unlearned AUC must be within [`AUC_RETRAIN_GAP`] of the
//!   retrained one (the "gap to retrain" the papers report). Without one, the
//!   AUC's bootstrap interval must reach into the chance band
//!   [`AUC_CHANCE_LOW`, `AUC_CHANCE_HIGH`]: an interval wholly above it means the
//!   forgotten samples still look like members; wholly below it means they now
//!   stand out as *less* member-like than unseen data, which is itself a leak
//!   (over-unlearning, the "Streisand effect").
//! * **Low false-positive rates** (Carlini et al., LiRA): at 1 % FPR the attack's
//!   TPR on the forget set must not be shown above [`TPR_FACTOR`] × 1 % (the lower
//!   end of its interval), or, with a retrained model, above the retrained TPR by
//!   more than [`TPR_RETRAIN_GAP`].
//! * **An attack that cannot see membership proves nothing**: when the attack's
//!   AUC on held-out *members* has an interval containing 0.5, its pass counts as
//!   inconclusive.
//! * **Utility**: test accuracy (TA) may drop by at most [`TA_DROP`] from the
//!   original (or fall at most that far below the retrained model).
//! * **Forget accuracy**: UA may exceed TA by at most [`UA_TA_GAP`] (a forgotten
//!   sample should be classified no better than an unseen one), or, with a
//!   retrained model, differ from its UA by at most [`UA_RETRAIN_GAP`].

use serde::Serialize;

use super::format::{num, pct, pts, rate, with_ci};
use super::sources::{AttackView, EvaluationView, MembershipView};

/// Lower end of the AUC chance band.
pub const AUC_CHANCE_LOW: f64 = 0.45;
/// Upper end of the AUC chance band.
pub const AUC_CHANCE_HIGH: f64 = 0.55;
/// Largest |AUC − AUC of the retrained model| that passes.
pub const AUC_RETRAIN_GAP: f64 = 0.05;
/// The FPR of the low-FPR check.
pub const TPR_CHECK_FPR: f64 = 0.01;
/// TPR at [`TPR_CHECK_FPR`] may be at most this multiple of the FPR.
pub const TPR_FACTOR: f64 = 3.0;
/// Largest excess of TPR over the retrained model's TPR at [`TPR_CHECK_FPR`].
pub const TPR_RETRAIN_GAP: f64 = 0.02;
/// Largest drop in test accuracy.
pub const TA_DROP: f64 = 0.03;
/// Largest excess of forget accuracy over test accuracy.
pub const UA_TA_GAP: f64 = 0.05;
/// Largest |UA − UA of the retrained model|.
pub const UA_RETRAIN_GAP: f64 = 0.05;

/// Slack for comparing measured values with thresholds, so a value printed as
/// equal to the threshold (0.95 − 1.0 is 0.05000000000000004) meets it.
const EPS: f64 = 1e-9;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Met.
    Pass,
    /// Not met.
    Fail,
    /// Cannot be decided from these results.
    Inconclusive,
}

impl Outcome {
    /// `PASS`, `FAIL`, `INCONCLUSIVE`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// One rule applied to one result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The rule, with its threshold.
    pub rule: String,
    /// What was measured.
    pub measured: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Overall outcome.
    pub outcome: Outcome,
    /// One sentence.
    pub headline: String,
    /// The checks behind it.
    pub checks: Vec<Check>,
}

fn membership_check(
    name: &str,
    u: &MembershipView,
    retrain: Option<&MembershipView>,
    reference: Option<&MembershipView>,
) -> Check {
    let level = u.auc_ci.map_or(95.0, |c| c.level * 100.0);
    let (outcome, rule, measured, reason) = match retrain {
        Some(r) => {
            let gap = u.auc - r.auc;
            let ok = gap.abs() <= AUC_RETRAIN_GAP + EPS;
            (
                if ok { Outcome::Pass } else { Outcome::Fail },
                format!("|AUC − AUC(retrain)| ≤ {}", num(AUC_RETRAIN_GAP, 2)),
                format!(
                    "AUC {} vs retrain {} (gap {})",
                    with_ci(u.auc, u.auc_pair()),
                    num(r.auc, 4),
                    num(gap, 4)
                ),
                if ok {
                    "the attack sees the forgotten samples as it does on a model that never trained on them".to_string()
                } else if gap > 0.0 {
                    "the forgotten samples still look more like training data than on the retrained model".to_string()
                } else {
                    "the forgotten samples look less like training data than on the retrained model: over-unlearning, itself detectable".to_string()
                },
            )
        }
        None => {
            let (lo, hi) = u.auc_pair().unwrap_or((u.auc, u.auc));
            let rule = format!(
                "{level:.0}% interval of the forget-set AUC reaches into [{}, {}]",
                num(AUC_CHANCE_LOW, 2),
                num(AUC_CHANCE_HIGH, 2)
            );
            let measured = format!("AUC {}", with_ci(u.auc, u.auc_pair()));
            if lo > AUC_CHANCE_HIGH + EPS {
                (
                    Outcome::Fail,
                    rule,
                    measured,
                    "the attack still tells the forgotten samples from unseen data".to_string(),
                )
            } else if hi < AUC_CHANCE_LOW - EPS {
                (
                    Outcome::Fail,
                    rule,
                    measured,
                    "the forgotten samples stand out as less member-like than unseen data: over-unlearning, itself detectable".to_string(),
                )
            } else {
                (
                    Outcome::Pass,
                    rule,
                    measured,
                    "the attack cannot tell the forgotten samples from unseen data".to_string(),
                )
            }
        }
    };
    let weak = reference
        .and_then(|r| r.auc_ci)
        .is_some_and(|c| c.low <= 0.5 && 0.5 <= c.high);
    if outcome == Outcome::Pass && weak {
        return Check {
            name: name.to_string(),
            rule,
            measured,
            outcome: Outcome::Inconclusive,
            reason: "the attack cannot tell held-out members from non-members on this model either (interval contains 0.5), so its silence proves little".into(),
        };
    }
    Check {
        name: name.to_string(),
        rule,
        measured,
        outcome,
        reason,
    }
}

fn low_fpr_check(name: &str, u: &MembershipView, retrain: Option<&MembershipView>) -> Check {
    let fpr = TPR_CHECK_FPR;
    let Some(t) = u.tpr_at(fpr) else {
        return Check {
            name: name.to_string(),
            rule: format!("TPR at {} FPR", rate(fpr)),
            measured: "not computed".into(),
            outcome: Outcome::Inconclusive,
            reason: format!("the attack results hold no TPR at {} FPR", rate(fpr)),
        };
    };
    let measured = with_ci(t.tpr, t.ci.map(|c| (c.low, c.high)));
    if !t.resolved {
        return Check {
            name: name.to_string(),
            rule: format!("TPR at {} FPR", rate(fpr)),
            measured,
            outcome: Outcome::Inconclusive,
            reason: format!(
                "too few non-members ({}) to measure a {} false-positive rate",
                u.non_members,
                rate(fpr)
            ),
        };
    }
    let low = t.ci.map_or(t.tpr, |c| c.low);
    let (limit, rule) = match retrain.and_then(|r| r.tpr_at(fpr)) {
        Some(r) => (
            r.tpr + TPR_RETRAIN_GAP,
            format!(
                "TPR at {} FPR ≤ TPR(retrain) {} + {}",
                rate(fpr),
                num(r.tpr, 4),
                num(TPR_RETRAIN_GAP, 2)
            ),
        ),
        None => (
            TPR_FACTOR * fpr,
            format!(
                "lower end of the TPR interval at {} FPR ≤ {}",
                rate(fpr),
                num(TPR_FACTOR * fpr, 2)
            ),
        ),
    };
    let ok = low <= limit + EPS;
    Check {
        name: name.to_string(),
        rule,
        measured: format!("TPR {measured}"),
        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        reason: if ok {
            "no forgotten sample is singled out with confidence".into()
        } else {
            "the attack confidently identifies some forgotten samples".into()
        },
    }
}

/// Applies the rules to the results.
pub fn decide(
    evaluation: Option<&EvaluationView>,
    retrain_eval: Option<&EvaluationView>,
    attacks: &[&AttackView],
    retrain_attacks: &[&AttackView],
) -> Verdict {
    let mut checks = Vec::new();
    for a in attacks {
        let r = retrain_attacks
            .iter()
            .find(|r| r.attack.id == a.attack.id)
            .map(|r| &r.metrics.forget);
        checks.push(membership_check(
            &format!("membership: {}", a.attack.name),
            &a.metrics.forget,
            r,
            a.metrics.reference.as_ref(),
        ));
        checks.push(low_fpr_check(
            &format!("low FPR: {}", a.attack.name),
            &a.metrics.forget,
            r,
        ));
    }
    if attacks.is_empty() {
        checks.push(Check {
            name: "membership".into(),
            rule: "at least one membership-inference attack on the unlearned model".into(),
            measured: "none found".into(),
            outcome: Outcome::Inconclusive,
            reason: "no attack was run on the unlearned model (lethe attack)".into(),
        });
    }
    match evaluation {
        Some(e) => {
            let u = &e.utility;
            let ta_ref = retrain_eval
                .map(|r| ("retrain", r.utility.test.accuracy))
                .or_else(|| {
                    e.original_utility
                        .as_ref()
                        .map(|o| ("original", o.test.accuracy))
                });
            match ta_ref {
                Some((who, ta)) => {
                    let drop = ta - u.test.accuracy;
                    let ok = drop <= TA_DROP + EPS;
                    checks.push(Check {
                        name: "utility: test accuracy".into(),
                        rule: format!("TA({who}) − TA ≤ {}", pts(TA_DROP)),
                        measured: format!("TA {} vs {who} {} ({})", pct(u.test.accuracy), pct(ta), pts(-drop)),
                        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
                        reason: if ok {
                            "the model keeps its accuracy on unseen data".into()
                        } else {
                            "the model lost accuracy on unseen data".into()
                        },
                    });
                }
                None => checks.push(Check {
                    name: "utility: test accuracy".into(),
                    rule: format!("TA(original) − TA ≤ {}", pts(TA_DROP)),
                    measured: format!("TA {}", pct(u.test.accuracy)),
                    outcome: Outcome::Inconclusive,
                    reason: "the evaluation has no original model to compare with (lethe evaluate --original)".into(),
                }),
            }
            let (ok, rule, measured) = match retrain_eval {
                Some(r) => {
                    let gap = u.forget.accuracy - r.utility.forget.accuracy;
                    (
                        gap.abs() <= UA_RETRAIN_GAP + EPS,
                        format!("|UA − UA(retrain)| ≤ {}", pts(UA_RETRAIN_GAP)),
                        format!(
                            "UA {} vs retrain {} ({})",
                            pct(u.forget.accuracy),
                            pct(r.utility.forget.accuracy),
                            pts(gap)
                        ),
                    )
                }
                None => {
                    let gap = u.forget.accuracy - u.test.accuracy;
                    (
                        gap <= UA_TA_GAP + EPS,
                        format!("UA − TA ≤ {}", pts(UA_TA_GAP)),
                        format!(
                            "UA {} vs TA {} ({})",
                            pct(u.forget.accuracy),
                            pct(u.test.accuracy),
                            pts(gap)
                        ),
                    )
                }
            };
            checks.push(Check {
                name: "forget accuracy".into(),
                rule,
                measured,
                outcome: if ok { Outcome::Pass } else { Outcome::Fail },
                reason: if ok {
                    "forgotten samples are classified no better than unseen ones".into()
                } else {
                    "the model still classifies the forgotten samples as if it had trained on them"
                        .into()
                },
            });
        }
        None => checks.push(Check {
            name: "utility".into(),
            rule: "an evaluation of the unlearned model".into(),
            measured: "none found".into(),
            outcome: Outcome::Inconclusive,
            reason: "no evaluation of the unlearned model (lethe evaluate)".into(),
        }),
    }
    let outcome = if checks.iter().any(|c| c.outcome == Outcome::Fail) {
        Outcome::Fail
    } else if checks.iter().any(|c| c.outcome == Outcome::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome == outcome)
        .map(|c| c.reason.as_str())
        .collect();
    let headline = match outcome {
        Outcome::Pass => "Forgotten: the attacks run cannot tell the forgotten samples from data the model never saw, and the model keeps its accuracy.".to_string(),
        Outcome::Fail => format!("Not shown to be forgotten: {}.", join_unique(&failing)),
        Outcome::Inconclusive => format!("Inconclusive: {}.", join_unique(&failing)),
    };
    Verdict {
        outcome,
        headline,
        checks,
    }
}

fn join_unique(items: &[&str]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for i in items {
        if !seen.contains(i) {
            seen.push(i);
        }
    }
    seen.join("; ")
}

#[cfg(test)]
mod tests {
    use super::super::sources::{IntervalView, RocView, TprView};
    use super::*;

    fn m(auc: f64, lo: f64, hi: f64, tpr: f64, tpr_lo: f64) -> MembershipView {
        MembershipView {
            members: 300,
            non_members: 1000,
            auc,
            auc_ci: Some(IntervalView {
                low: lo,
                high: hi,
                level: 0.95,
            }),
            tpr_at_fpr: vec![TprView {
                fpr: 0.01,
                tpr,
                ci: Some(IntervalView {
                    low: tpr_lo,
                    high: tpr + 0.01,
                    level: 0.95,
                }),
                resolved: true,
            }],
            efficacy: None,
            roc: RocView::default(),
        }
    }

    #[test]
    fn membership_rules_without_retrain_use_the_chance_band() {
        let pass = membership_check("a", &m(0.52, 0.48, 0.56, 0.0, 0.0), None, None);
        assert_eq!(pass.outcome, Outcome::Pass);
        let leak = membership_check("a", &m(0.62, 0.57, 0.66, 0.0, 0.0), None, None);
        assert_eq!(leak.outcome, Outcome::Fail);
        let over = membership_check("a", &m(0.38, 0.33, 0.44, 0.0, 0.0), None, None);
        assert_eq!(over.outcome, Outcome::Fail);
        assert!(over.reason.contains("over-unlearning"));
        let weak_ref = m(0.5, 0.46, 0.54, 0.0, 0.0);
        let weak = membership_check("a", &m(0.5, 0.47, 0.53, 0.0, 0.0), None, Some(&weak_ref));
        assert_eq!(weak.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn retrain_turns_the_rules_into_gaps() {
        let r = m(0.60, 0.56, 0.64, 0.05, 0.03);
        let close = membership_check("a", &m(0.63, 0.59, 0.67, 0.0, 0.0), Some(&r), None);
        assert_eq!(close.outcome, Outcome::Pass, "{close:?}");
        let far = membership_check("a", &m(0.70, 0.66, 0.74, 0.0, 0.0), Some(&r), None);
        assert_eq!(far.outcome, Outcome::Fail);
        let tpr_ok = low_fpr_check("t", &m(0.6, 0.5, 0.7, 0.06, 0.05), Some(&r));
        assert_eq!(tpr_ok.outcome, Outcome::Pass);
        let tpr_bad = low_fpr_check("t", &m(0.6, 0.5, 0.7, 0.12, 0.09), Some(&r));
        assert_eq!(tpr_bad.outcome, Outcome::Fail);
        let alone = low_fpr_check("t", &m(0.6, 0.5, 0.7, 0.06, 0.04), None);
        assert_eq!(alone.outcome, Outcome::Fail, "lower end 0.04 > 3 x 1%");
        let edge = membership_check(
            "a",
            &m(0.65, 0.6, 0.7, 0.0, 0.0),
            Some(&m(0.6, 0.55, 0.65, 0.0, 0.0)),
            None,
        );
        assert_eq!(
            edge.outcome,
            Outcome::Pass,
            "a gap printed as the threshold meets it"
        );
    }

    #[test]
    fn no_results_make_an_inconclusive_verdict() {
        let v = decide(None, None, &[], &[]);
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(v.headline.contains("no attack"), "{}", v.headline);
    }
}
