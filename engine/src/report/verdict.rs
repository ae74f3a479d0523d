//! The plain-language verdict of a deletion, and the rules behind it.
//!
//! The question is whether the unlearned model behaves on the forgotten samples
//! as a model that never trained on them would — the retrained model, the
//! unlearning papers' reference — and whether the evidence is strong enough to
//! say so. The rules are built so that they are right by construction:
//!
//! * **Exact retraining is the reference.** A run of the exact-retraining
//!   baseline (no epoch cap, the original recipe) forgets by definition; the
//!   checks that compare with the reference pass for it, and only the checks
//!   that need no reference (membership at chance, utility) judge it.
//! * **Other methods are judged against a retrained reference on the same forget
//!   set.** Without one, the forgetting checks answer INCONCLUSIVE and say to
//!   make one; they never FAIL on a guess.
//! * **Every comparison uses an interval for its sample size** — Wilson score
//!   intervals for accuracies, Newcombe's interval for a difference of two,
//!   Hanley & McNeil's standard error for an AUC — and a difference fails only
//!   when it is both statistically clear and larger than the tolerance; the
//!   message says which way it goes (forgets too little, or too much: a forget
//!   set that now stands out is itself a leak).
//! * **Membership evidence counts only with power.** Before an attack's silence
//!   is taken as forgetting, the same attack must be able to see membership on
//!   these samples where it exists: on the *original* model, which trained on
//!   them (when it was attacked too), else on held-out training samples, with the
//!   forget set's size. An attack that could not tell the original used them, or
//!   a forget set too small for it to tell, gives INCONCLUSIVE with the number of
//!   samples that would be needed — so the original model is never passed by the
//!   rule that is meant to pass a forgetting one.
//! * **Low false-positive rates** (Carlini et al., LiRA): at 1 % FPR the attack's
//!   TPR on the forget set must not be shown above [`TPR_FACTOR`] × 1 % (or above
//!   the retrained model's by [`TPR_RETRAIN_GAP`]); a forget set too small to
//!   hold one true positive at that rate cannot be judged there.

use serde::Serialize;

use super::format::{num, pct, pts, rate, with_ci};
use super::sources::{AttackView, EvaluationView, MembershipView, SplitView};

/// The two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;
/// TPR at [`TPR_CHECK_FPR`] may be at most this multiple of the FPR.
pub const TPR_FACTOR: f64 = 3.0;
/// The FPR of the low-FPR check.
pub const TPR_CHECK_FPR: f64 = 0.01;
/// Largest excess of TPR over the retrained model's TPR at [`TPR_CHECK_FPR`].
pub const TPR_RETRAIN_GAP: f64 = 0.02;
/// Tolerance on a drop in test accuracy (against the retrained or original model).
pub const TA_DROP: f64 = 0.03;
/// Tolerance on |UA − UA(retrain)|: retrained models of different seeds differ
/// by a few points on their own.
pub const UA_RETRAIN_GAP: f64 = 0.05;
/// The descriptor id of exact retraining.
pub const RETRAIN_ID: &str = "org.lethe.baseline.retrain";

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
    /// What to do about it, when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Overall outcome.
    pub outcome: Outcome,
    /// One sentence.
    pub headline: String,
    /// What to do next (for FAIL and INCONCLUSIVE), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// The checks behind it.
    pub checks: Vec<Check>,
}

/// What the verdict is drawn from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// The evaluation of the judged model.
    pub evaluation: Option<&'a EvaluationView>,
    /// The evaluation of a retrained model on the same forget set.
    pub retrain_eval: Option<&'a EvaluationView>,
    /// Attacks on the judged model.
    pub attacks: &'a [&'a AttackView],
    /// The same attacks on the retrained model.
    pub retrain_attacks: &'a [&'a AttackView],
    /// The same attacks on the original model (which trained on the forget set).
    pub original_attacks: &'a [&'a AttackView],
    /// The judged model is exact retraining: the reference itself.
    pub is_reference: bool,
}

/// Whether a run of `method` with `params` is exact retraining (the reference):
/// the retrain baseline with no epoch cap and the checkpoint's own recipe.
pub fn is_exact_retraining(method: &str, params: &serde_json::Value) -> bool {
    method == RETRAIN_ID
        && params
            .get("max_epochs")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
            == 0
        && params
            .get("recipe")
            .and_then(serde_json::Value::as_str)
            .is_none_or(|r| r == "original")
}

/// Wilson score interval (95 %) of a proportion of `k` successes in `n` trials.
pub fn wilson(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Newcombe's hybrid score interval (95 %) of `k1/n1 − k2/n2` (his method 10),
/// built from the two Wilson intervals: the difference, its low and high end.
pub fn newcombe_diff(k1: f64, n1: f64, k2: f64, n2: f64) -> (f64, f64, f64) {
    let (p1, p2) = (k1 / n1.max(1.0), k2 / n2.max(1.0));
    let (l1, u1) = wilson(k1, n1);
    let (l2, u2) = wilson(k2, n2);
    let d = p1 - p2;
    (
        d,
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    )
}

/// Hanley & McNeil's (1982) standard error of an AUC from `pos` positives and
/// `neg` negatives.
pub fn auc_se(auc: f64, pos: f64, neg: f64) -> f64 {
    let a = auc.clamp(1e-6, 1.0 - 1e-6);
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var = (a * (1.0 - a) + (pos - 1.0) * (q1 - a * a) + (neg - 1.0) * (q2 - a * a))
        / (pos.max(1.0) * neg.max(1.0));
    var.max(0.0).sqrt()
}

/// Whether an attack whose AUC on members is `auc` would show it with `pos`
/// members against `neg` non-members: the lower end of its 95 % interval above 0.5.
pub fn detectable(auc: f64, pos: f64, neg: f64) -> bool {
    auc - Z95 * auc_se(auc, pos, neg) > 0.5
}

/// The fewest forget samples with which a leak of AUC `auc` shows against `neg`
/// non-members (`None`: not with any number; more non-members are needed too).
pub fn members_needed(auc: f64, neg: f64) -> Option<usize> {
    if auc <= 0.5 || !detectable(auc, 1e12, neg) {
        return None;
    }
    let (mut lo, mut hi) = (1usize, 2usize);
    while !detectable(auc, hi as f64, neg) {
        lo = hi;
        hi = hi.checked_mul(2)?;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if detectable(auc, mid as f64, neg) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The standard error of a view's AUC: from its interval, else Hanley & McNeil.
fn se_of(v: &MembershipView) -> f64 {
    match v.auc_ci {
        Some(c) if c.high > c.low => {
            let z = normal_quantile(0.5 + c.level / 2.0);
            (c.high - c.low) / (2.0 * z)
        }
        _ => auc_se(v.auc, v.members as f64, v.non_members as f64),
    }
}

/// The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A tolerance in percentage points, in words ("3 points").
fn points(v: f64) -> String {
    format!("{} points", num(v * 100.0, 0))
}

/// A measured difference in percentage points, one decimal ("8.0 points").
fn points_1(v: f64) -> String {
    format!("{} points", num(v * 100.0, 1))
}

fn check(name: &str, rule: String, measured: String, outcome: Outcome, reason: String) -> Check {
    Check {
        name: name.to_string(),
        rule,
        measured,
        outcome,
        reason,
        next_step: None,
    }
}

fn with_next(mut c: Check, next: impl Into<String>) -> Check {
    c.next_step = Some(next.into());
    c
}

const MAKE_REFERENCE: &str = "run Retrain (exact) on the same checkpoint, data and forget set, \
     then evaluate and attack it the same way: the report compares with it";

/// Membership: does the attack still tell the forgotten samples from unseen data
/// (or, with a retrained model, tell them apart more than on that model), and
/// could it have told at all?
fn membership_check(
    name: &str,
    u: &MembershipView,
    retrain: Option<&MembershipView>,
    original: Option<&MembershipView>,
    held_out: Option<&MembershipView>,
) -> Check {
    let measured = format!(
        "AUC {} ({} forgotten vs {} unseen samples)",
        with_ci(u.auc, u.auc_pair()),
        u.members,
        u.non_members
    );
    let rule = match retrain {
        Some(_) => "the forget-set AUC does not differ from the retrained model's (95 % interval of the difference contains 0), with an attack shown able to see the leak".to_string(),
        None => "the forget-set AUC's 95 % interval contains 0.5, with an attack shown able to see the leak".to_string(),
    };
    let inconclusive = |reason: String, next: String| {
        with_next(
            check(
                name,
                rule.clone(),
                measured.clone(),
                Outcome::Inconclusive,
                reason,
            ),
            next,
        )
    };
    // Power: the leak the attack sees where membership is certain.
    let (source, leak) = match (original, held_out) {
        (Some(o), _) => ("the original model, which trained on these samples,", o),
        (None, Some(h)) => ("held-out training samples", h),
        (None, None) => {
            return inconclusive(
                "the attack scored no held-out training samples and the original model was not attacked, so nothing shows it could see a leak".into(),
                "attack the original model the same way (or use an attack that scores held-out members)".into(),
            );
        }
    };
    let leak_low = leak
        .auc_pair()
        .map_or(leak.auc - Z95 * se_of(leak), |p| p.0);
    if leak_low <= 0.5 {
        let reason = format!(
            "the attack cannot tell that {source} used them either (AUC {}), so its silence here proves nothing",
            with_ci(leak.auc, leak.auc_pair())
        );
        let next = match members_needed(leak.auc, u.non_members as f64) {
            Some(n) if n > u.members && original.is_some() => format!(
                "this forget set is too small to test: at least {n} samples are needed for this attack to detect a leak of AUC {} (it has {})",
                num(leak.auc, 3),
                u.members
            ),
            _ => "use a stronger attack (LiRA or RMIA with more shadow models)".into(),
        };
        return inconclusive(reason, next);
    }
    if original.is_none() && !detectable(leak.auc, u.members as f64, u.non_members as f64) {
        let needed = members_needed(leak.auc, u.non_members as f64);
        return inconclusive(
            format!(
                "too few samples to tell: with {} forgotten samples this attack could not detect even the leak it sees on {source} (AUC {})",
                u.members,
                num(leak.auc, 3)
            ),
            match needed {
                Some(n) => format!(
                    "this forget set is too small to test: at least {n} samples are needed for this attack to detect a leak of AUC {}",
                    num(leak.auc, 3)
                ),
                None => "more held-out non-members are needed as well".into(),
            },
        );
    }
    let powered = format!(
        "the same attack tells {source} from unseen data (AUC {})",
        with_ci(leak.auc, leak.auc_pair())
    );
    // Against a retrained model the question is whether the attack sees a
    // difference between models, so it must tell the original (which trained
    // on the samples) from the retrained one; seeing the original's samples
    // apart from unseen data is not enough when it sees the retrained model's
    // too (a class-mix or a generalisation gap does that), and without this the
    // untouched original would pass as a deletion.
    if let (Some(r), Some(o)) = (retrain, original) {
        let d = o.auc - r.auc;
        let se = (se_of(o).powi(2) + se_of(r).powi(2)).sqrt();
        let lo = d - Z95 * se;
        if lo <= 0.0 {
            let next = if d > 0.0 {
                // The difference's standard error shrinks as 1/sqrt(n).
                let n = (u.members as f64 * (Z95 * se / d).powi(2)).ceil();
                format!(
                    "use a stronger attack (LiRA or RMIA with more shadow models), or a larger forget set: with this attack about {} samples are needed to tell the original model from the retrained one (it has {})",
                    n as usize, u.members
                )
            } else {
                "use a stronger attack (LiRA or RMIA with more shadow models)".into()
            };
            return inconclusive(
                format!(
                    "the attack cannot tell the original model, which trained on these samples, from the retrained one (AUC {} vs {}; difference {} [{}, {}]), so it cannot show whether a deletion worked",
                    with_ci(o.auc, o.auc_pair()),
                    with_ci(r.auc, r.auc_pair()),
                    num(d, 4),
                    num(lo, 4),
                    num(d + Z95 * se, 4)
                ),
                next,
            );
        }
    }
    match retrain {
        Some(r) => {
            let d = u.auc - r.auc;
            let se = (se_of(u).powi(2) + se_of(r).powi(2)).sqrt();
            let (lo, hi) = (d - Z95 * se, d + Z95 * se);
            let measured = format!(
                "{measured}; retrained {} (difference {} [{}, {}])",
                with_ci(r.auc, r.auc_pair()),
                num(d, 4),
                num(lo, 4),
                num(hi, 4)
            );
            if lo > 0.0 {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Fail,
                    format!(
                        "forgets too little: the forgotten samples still look more like training data than on the retrained model; {powered}"
                    ),
                )
            } else if hi < 0.0 {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Fail,
                    format!(
                        "forgets too much: the forgotten samples look less like training data than on the retrained model (over-unlearning, itself detectable); {powered}"
                    ),
                )
            } else {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Pass,
                    format!(
                        "the attack sees the forgotten samples as it does on the retrained model, and {powered}"
                    ),
                )
            }
        }
        None => {
            let (lo, hi) = u
                .auc_pair()
                .unwrap_or((u.auc - Z95 * se_of(u), u.auc + Z95 * se_of(u)));
            if lo > 0.5 {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Fail,
                    format!(
                        "forgets too little: the attack still tells the forgotten samples from unseen data; {powered}"
                    ),
                )
            } else if hi < 0.5 {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Fail,
                    format!(
                        "forgets too much: the forgotten samples stand out as less member-like than unseen data (over-unlearning, itself detectable); {powered}"
                    ),
                )
            } else {
                check(
                    name,
                    rule,
                    measured,
                    Outcome::Pass,
                    format!(
                        "the attack cannot tell the forgotten samples from unseen data, and {powered}"
                    ),
                )
            }
        }
    }
}

/// The leak the forget-set size warning assumes: a membership AUC of 0.6, about
/// what a loss-based attack sees on a model that fits its training data.
pub const TYPICAL_LEAK_AUC: f64 = 0.6;

/// Forget samples a deletion needs before its verdict can be more than
/// INCONCLUSIVE, against `non_members` unseen samples: enough for an attack to
/// detect a [`TYPICAL_LEAK_AUC`] leak, and for one true positive at the low-FPR
/// check's limit.
pub fn forget_samples_needed(non_members: usize) -> usize {
    members_needed(TYPICAL_LEAK_AUC, non_members as f64)
        .unwrap_or(usize::MAX)
        .max(low_fpr_needed())
}

/// Forget samples needed for one true positive at the low-FPR check's limit.
fn low_fpr_needed() -> usize {
    (1.0 / (TPR_FACTOR * TPR_CHECK_FPR)).ceil() as usize
}

fn low_fpr_check(name: &str, u: &MembershipView, retrain: Option<&MembershipView>) -> Check {
    let fpr = TPR_CHECK_FPR;
    let rule_name = format!("TPR at {} FPR", rate(fpr));
    let Some(t) = u.tpr_at(fpr) else {
        return check(
            name,
            rule_name,
            "not computed".into(),
            Outcome::Inconclusive,
            format!("the attack results hold no TPR at {} FPR", rate(fpr)),
        );
    };
    let measured = format!("TPR {}", with_ci(t.tpr, t.ci.map(|c| (c.low, c.high))));
    if !t.resolved {
        return with_next(
            check(
                name,
                rule_name,
                measured,
                Outcome::Inconclusive,
                format!(
                    "too few unseen samples ({}) to measure a {} false-positive rate",
                    u.non_members,
                    rate(fpr)
                ),
            ),
            format!(
                "attack with at least {} unseen samples",
                (1.0 / fpr).ceil() as usize
            ),
        );
    }
    if u.members < low_fpr_needed() {
        return with_next(
            check(
                name,
                rule_name,
                measured,
                Outcome::Inconclusive,
                format!(
                    "too few forgotten samples ({}) to show a TPR above {} at {} FPR",
                    u.members,
                    num(TPR_FACTOR * fpr, 2),
                    rate(fpr)
                ),
            ),
            format!(
                "this forget set is too small for the low-FPR test: at least {} samples are needed",
                low_fpr_needed()
            ),
        );
    }
    let low = t.ci.map_or(t.tpr, |c| c.low);
    let (limit, rule) = match retrain.and_then(|r| r.tpr_at(fpr)) {
        Some(r) => (
            r.tpr + TPR_RETRAIN_GAP,
            format!(
                "lower end of the TPR interval at {} FPR ≤ TPR(retrain) {} + {}",
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
    check(
        name,
        rule,
        measured,
        if ok { Outcome::Pass } else { Outcome::Fail },
        if ok {
            "no forgotten sample is singled out with confidence".into()
        } else {
            "forgets too little: the attack confidently identifies some forgotten samples".into()
        },
    )
}

fn count(s: &SplitView) -> (f64, f64) {
    let n = s.samples as f64;
    ((s.accuracy * n).round(), n)
}

/// A difference `a − b` of two accuracies: `(d, low, high)`.
fn acc_diff(a: &SplitView, b: &SplitView) -> (f64, f64, f64) {
    let (k1, n1) = count(a);
    let (k2, n2) = count(b);
    newcombe_diff(k1, n1, k2, n2)
}

fn utility_check(e: &EvaluationView, retrain: Option<&EvaluationView>) -> Check {
    let name = "utility: test accuracy";
    let u = &e.utility.test;
    let reference = retrain
        .map(|r| ("the retrained model", &r.utility.test))
        .or_else(|| {
            e.original_utility
                .as_ref()
                .map(|o| ("the original", &o.test))
        });
    let Some((who, r)) = reference else {
        return with_next(
            check(
                name,
                format!("TA(reference) − TA ≤ {}", points(TA_DROP)),
                format!("TA {} on {} samples", pct(u.accuracy), u.samples),
                Outcome::Inconclusive,
                "the evaluation has no original or retrained model to compare with".into(),
            ),
            "evaluate with the original model given (lethe evaluate --original)",
        );
    };
    // The drop, reference − judged.
    let (d, lo, hi) = acc_diff(r, u);
    let rule = format!(
        "TA may fall at most {} below {who}'s; a larger drop fails when its 95 % interval excludes 0",
        points(TA_DROP)
    );
    let measured = format!(
        "TA {} vs {} ({} samples; drop {} [{}, {}])",
        pct(u.accuracy),
        pct(r.accuracy),
        u.samples,
        pts(d),
        pts(lo),
        pts(hi)
    );
    if d <= TA_DROP + EPS {
        check(
            name,
            rule,
            measured,
            Outcome::Pass,
            format!(
                "the model keeps its accuracy on unseen data (within {} of {who})",
                points(TA_DROP)
            ),
        )
    } else if lo > 0.0 {
        check(
            name,
            rule,
            measured,
            Outcome::Fail,
            format!(
                "the model lost accuracy on unseen data: {} below {who}",
                points_1(d)
            ),
        )
    } else {
        with_next(
            check(
                name,
                rule,
                measured,
                Outcome::Inconclusive,
                format!(
                    "test accuracy is {} below {who}, but the test set is too small to tell that from chance",
                    points_1(d)
                ),
            ),
            "evaluate on a larger test split",
        )
    }
}

fn forget_accuracy_check(
    e: &EvaluationView,
    retrain: Option<&EvaluationView>,
    is_reference: bool,
) -> Check {
    let name = "forget accuracy";
    let u = &e.utility;
    if is_reference {
        return check(
            name,
            "UA as the retrained reference's".into(),
            format!(
                "UA {} on {} forgotten samples (TA {})",
                pct(u.forget.accuracy),
                u.forget.samples,
                pct(u.test.accuracy)
            ),
            Outcome::Pass,
            "this model is exact retraining, the reference other methods are compared with: it forgets by definition".into(),
        );
    }
    let Some(r) = retrain else {
        return with_next(
            check(
                name,
                format!("|UA − UA(retrain)| ≤ {}", points(UA_RETRAIN_GAP)),
                format!(
                    "UA {} on {} forgotten samples (TA {}, for information)",
                    pct(u.forget.accuracy),
                    u.forget.samples,
                    pct(u.test.accuracy)
                ),
                Outcome::Inconclusive,
                "no retrained reference on this forget set: a model that never saw a sample still classifies easy ones, so forget accuracy means nothing without one".into(),
            ),
            MAKE_REFERENCE,
        );
    };
    let rf = &r.utility.forget;
    let (d, lo, hi) = acc_diff(&u.forget, rf);
    let rule = format!(
        "UA within {} of the retrained model's; a larger difference fails when its 95 % interval excludes 0",
        points(UA_RETRAIN_GAP)
    );
    let measured = format!(
        "UA {} vs retrained {} ({} samples; difference {} [{}, {}])",
        pct(u.forget.accuracy),
        pct(rf.accuracy),
        u.forget.samples,
        pts(d),
        pts(lo),
        pts(hi)
    );
    let significant = lo > 0.0 || hi < 0.0;
    let too_wide = (hi - lo) / 2.0 > 2.0 * UA_RETRAIN_GAP;
    if d.abs() > UA_RETRAIN_GAP + EPS && significant {
        let reason = if d > 0.0 {
            format!(
                "forgets too little: the forgotten samples are classified {} better than by the retrained model",
                points_1(d)
            )
        } else {
            format!(
                "forgets too much: the forgotten samples are classified {} worse than by the retrained model (over-unlearning, itself detectable)",
                points_1(-d)
            )
        };
        check(name, rule, measured, Outcome::Fail, reason)
    } else if too_wide || d.abs() > UA_RETRAIN_GAP + EPS {
        let n = u.forget.samples;
        with_next(
            check(
                name,
                rule,
                measured,
                Outcome::Inconclusive,
                format!(
                    "{} forgotten samples are too few to compare forget accuracy with the retrained model within {}",
                    n,
                    points(UA_RETRAIN_GAP)
                ),
            ),
            format!(
                "this forget set is too small to test forget accuracy: at least {} samples are needed",
                ua_samples_needed(rf.accuracy)
            ),
        )
    } else {
        check(
            name,
            rule,
            measured,
            Outcome::Pass,
            format!(
                "the forgotten samples are classified as the retrained model classifies them (within {})",
                points(UA_RETRAIN_GAP)
            ),
        )
    }
}

/// Forget samples with which two equal accuracies `p` have a 95 % difference
/// interval no wider than ±2 × [`UA_RETRAIN_GAP`].
fn ua_samples_needed(p: f64) -> usize {
    (1..=1_000_000usize)
        .find(|&n| {
            let k = (p * n as f64).round();
            let (_, lo, hi) = newcombe_diff(k, n as f64, k, n as f64);
            (hi - lo) / 2.0 <= 2.0 * UA_RETRAIN_GAP
        })
        .unwrap_or(1_000_000)
}

/// Why an attack's result on exact retraining does not fail it: retraining
/// forgets by definition, so what the attack sees there is not membership.
const NOT_MEMBERSHIP: &str = "yet this model is exact retraining, which forgets by definition: \
     what the attack sees here is not membership (a class mix or a shift between the forget set and the unseen samples does this), so it cannot judge deletions of this forget set";

/// Why an attack's result does not fail a method without a retrained model.
const NO_REFERENCE: &str = "but without a retrained model on the same forget set nothing shows that retraining would look different (a class mix or a shift between the forget set and the unseen samples makes it look the same)";

/// A forgetting check that failed becomes INCONCLUSIVE, its reason kept and
/// `why` added: without a retrained reference a deletion is never failed on a
/// guess of what retraining would show.
fn unless_failed(mut c: Check, why: &str, next: Option<&str>) -> Check {
    if c.outcome != Outcome::Fail {
        return c;
    }
    c.outcome = Outcome::Inconclusive;
    // What was seen stays; the judgement it led to does not.
    let seen = ["forgets too little: ", "forgets too much: "]
        .iter()
        .find_map(|p| c.reason.strip_prefix(p))
        .unwrap_or(&c.reason)
        .to_string();
    c.reason = format!("{seen}, {why}");
    c.next_step = next.map(str::to_string).or(c.next_step);
    c
}

/// Applies the rules to the results.
pub fn decide(ev: &Evidence<'_>) -> Verdict {
    let mut checks = Vec::new();
    for a in ev.attacks {
        let same = |list: &[&AttackView]| {
            list.iter()
                .find(|r| r.attack.id == a.attack.id)
                .map(|r| r.metrics.forget.clone())
        };
        let retrain = if ev.is_reference {
            None
        } else {
            same(ev.retrain_attacks)
        };
        let original = same(ev.original_attacks);
        let judged = [
            membership_check(
                &format!("membership: {}", a.attack.name),
                &a.metrics.forget,
                retrain.as_ref(),
                original.as_ref(),
                a.metrics.reference.as_ref(),
            ),
            low_fpr_check(
                &format!("low FPR: {}", a.attack.name),
                &a.metrics.forget,
                retrain.as_ref(),
            ),
        ];
        for c in judged {
            checks.push(match (&retrain, ev.is_reference) {
                (Some(_), _) => c,
                (None, true) => unless_failed(c, NOT_MEMBERSHIP, None),
                (None, false) => unless_failed(c, NO_REFERENCE, Some(MAKE_REFERENCE)),
            });
        }
    }
    if ev.attacks.is_empty() {
        checks.push(with_next(
            check(
                "membership",
                "at least one membership-inference attack on the unlearned model".into(),
                "none found".into(),
                Outcome::Inconclusive,
                "no attack was run on the unlearned model".into(),
            ),
            "attack the unlearned model (and the original, to show the attack can see a leak)",
        ));
    }
    let retrain_eval = if ev.is_reference {
        None
    } else {
        ev.retrain_eval
    };
    match ev.evaluation {
        Some(e) => {
            checks.push(utility_check(e, retrain_eval));
            checks.push(forget_accuracy_check(e, retrain_eval, ev.is_reference));
        }
        None => checks.push(with_next(
            check(
                "utility",
                "an evaluation of the unlearned model".into(),
                "none found".into(),
                Outcome::Inconclusive,
                "the unlearned model was not evaluated".into(),
            ),
            "evaluate the unlearned model",
        )),
    }
    let outcome = if checks.iter().any(|c| c.outcome == Outcome::Fail) {
        Outcome::Fail
    } else if checks.iter().any(|c| c.outcome == Outcome::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    let deciding: Vec<&Check> = checks.iter().filter(|c| c.outcome == outcome).collect();
    let reasons: Vec<&str> = deciding.iter().map(|c| c.reason.as_str()).collect();
    let headline = match outcome {
        Outcome::Pass => "Forgotten: the attacks, shown able to see a leak, cannot tell the forgotten samples from data the model never saw, and the model keeps its accuracy.".to_string(),
        Outcome::Fail => format!("Not forgotten: {}.", join_unique(&reasons)),
        Outcome::Inconclusive => format!("Inconclusive: {}.", join_unique(&reasons)),
    };
    let next_step = match outcome {
        Outcome::Pass => None,
        _ => deciding
            .iter()
            .find_map(|c| c.next_step.clone())
            .or_else(|| {
                (outcome == Outcome::Fail).then(|| {
                    "try another method or stronger settings (more epochs, a higher forget weight), then evaluate and attack again".to_string()
                })
            }),
    };
    Verdict {
        outcome,
        headline,
        next_step,
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

/// The rules in one paragraph, for the report.
pub fn rules_text() -> String {
    format!(
        "Rules (fixed in Lethe {}): exact retraining is the reference and forgets by definition; other methods are compared with a retrained model on the same forget set, and without one the forgetting checks are INCONCLUSIVE. Accuracies are compared with 95 % intervals for their sample sizes (Wilson, Newcombe): forget accuracy fails when it differs from the retrained model's by more than {} and the interval of the difference excludes 0 (the message says which way), test accuracy when it falls more than {} below the reference's with the same certainty. An attack counts only when it is shown able to see membership on these samples (on the original model when it was attacked, else on held-out training samples, with Hanley & McNeil's standard error for the forget set's size) and, with a retrained model, only when it tells the original model from the retrained one (the interval of their difference excludes 0); then the forget-set AUC fails when its interval excludes 0.5 (or, with a retrained model, when the interval of the difference excludes 0), in either direction. TPR at {} FPR must not be shown above {} (or the retrained TPR + {}); forget sets under {} samples cannot be judged there. Without a retrained model (and on exact retraining itself) an attack result that would fail is INCONCLUSIVE instead: only the comparison with retraining shows that what the attack sees is membership. PASS needs every check met, FAIL any check failed, otherwise INCONCLUSIVE.",
        env!("CARGO_PKG_VERSION"),
        points(UA_RETRAIN_GAP),
        points(TA_DROP),
        rate(TPR_CHECK_FPR),
        num(TPR_FACTOR * TPR_CHECK_FPR, 2),
        num(TPR_RETRAIN_GAP, 2),
        low_fpr_needed(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::sources::{IntervalView, RocView, TprView};
    use super::*;
    use serde_json::json;

    /// A membership result: AUC with its interval, `n` members against 600
    /// non-members, TPR at 1 % FPR with the lower end of its interval.
    fn m(auc: f64, lo: f64, hi: f64, n: usize, tpr: f64, tpr_lo: f64) -> MembershipView {
        MembershipView {
            members: n,
            non_members: 600,
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
                    high: tpr + 0.02,
                    level: 0.95,
                }),
                resolved: true,
            }],
            efficacy: None,
            roc: RocView::default(),
        }
    }

    fn attack(forget: MembershipView, reference: Option<MembershipView>) -> AttackView {
        let mut a: AttackView = serde_json::from_value(json!({
            "attack": {"id": "org.lethe.attack.metric", "name": "metric MIA", "version": "1",
                       "library": "/lib/x.so"},
            "checkpoint": "/m.safetensors", "checkpoint_sha256": null, "seed": 0,
            "device": "cpu", "bootstrap": {"resamples": 200, "level": 0.95, "seed": 0},
            "metrics": {"forget": serde_json::to_value(&forget).unwrap()},
        }))
        .unwrap();
        a.metrics.reference = reference;
        a
    }

    /// An evaluation: (UA, forget samples), TA on 600, and the original's TA.
    fn eval(ua: f64, n: usize, ta: f64, original_ta: Option<f64>) -> EvaluationView {
        let utility = |ua: f64, ta: f64| {
            json!({"reader": "classifier",
                   "retain": {"samples": 1000, "accuracy": 1.0, "loss": 0.0},
                   "test": {"samples": 600, "accuracy": ta, "loss": 0.3},
                   "forget": {"samples": n, "accuracy": ua, "loss": 0.3}})
        };
        serde_json::from_value(json!({
            "checkpoint": "/m.safetensors", "checkpoint_sha256": null, "seed": 0,
            "device": "cpu", "utility": utility(ua, ta),
            "original_utility": original_ta.map(|t| utility(1.0, t)),
        }))
        .unwrap()
    }

    fn verdict(
        e: &EvaluationView,
        retrain_eval: Option<&EvaluationView>,
        a: &AttackView,
        retrain: Option<&AttackView>,
        original: Option<&AttackView>,
        is_reference: bool,
    ) -> Verdict {
        decide(&Evidence {
            evaluation: Some(e),
            retrain_eval,
            attacks: &[a],
            retrain_attacks: &retrain.into_iter().collect::<Vec<_>>(),
            original_attacks: &original.into_iter().collect::<Vec<_>>(),
            is_reference,
        })
    }

    fn outcome_of<'a>(v: &'a Verdict, name: &str) -> &'a Check {
        v.checks
            .iter()
            .find(|c| c.name.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} check in {v:#?}"))
    }

    // The leaky demo's numbers (`lethe demo`): 100 forgotten samples, the metric
    // MIA's AUC on the original model 0.596 [0.550, 0.646], on the retrained one
    // 0.551 [0.495, 0.607]; the original classifies all 100, the retrained 93.
    fn original_attack() -> AttackView {
        attack(m(0.596, 0.550, 0.646, 100, 0.03, 0.0), None)
    }
    fn retrained_attack() -> AttackView {
        attack(m(0.551, 0.495, 0.607, 100, 0.02, 0.0), None)
    }

    #[test]
    fn exact_retraining_passes_on_the_leaky_demo() {
        let v = verdict(
            &eval(0.93, 100, 0.915, Some(0.918)),
            None,
            &retrained_attack(),
            None,
            Some(&original_attack()),
            true,
        );
        assert_eq!(v.outcome, Outcome::Pass, "{v:#?}");
        assert!(v.next_step.is_none());
        assert!(
            outcome_of(&v, "forget accuracy")
                .reason
                .contains("by definition")
        );
    }

    /// Retraining forgets by definition: an attack that still sets its forget
    /// set apart measures something else, and says so instead of failing it.
    #[test]
    fn exact_retraining_is_never_failed_by_an_attack() {
        let shifted = attack(m(0.62, 0.57, 0.67, 100, 0.03, 0.0), None);
        let v = verdict(
            &eval(0.93, 100, 0.915, Some(0.918)),
            None,
            &shifted,
            None,
            Some(&original_attack()),
            true,
        );
        assert_eq!(v.outcome, Outcome::Inconclusive, "{v:#?}");
        let mem = outcome_of(&v, "membership");
        assert!(
            mem.reason
                .contains("what the attack sees here is not membership"),
            "{}",
            mem.reason
        );
    }

    #[test]
    fn the_original_model_judged_as_a_deletion_fails_in_the_right_direction() {
        // A do-nothing method: its model is the original.
        let v = verdict(
            &eval(1.0, 100, 0.918, Some(0.918)),
            Some(&eval(0.93, 100, 0.915, Some(0.918))),
            &original_attack(),
            Some(&retrained_attack()),
            Some(&original_attack()),
            false,
        );
        assert_eq!(v.outcome, Outcome::Fail, "{v:#?}");
        let ua = outcome_of(&v, "forget accuracy");
        assert_eq!(ua.outcome, Outcome::Fail);
        assert!(ua.reason.starts_with("forgets too little"), "{}", ua.reason);
        // Judged alone (no reference) it is never failed on a guess: the attack
        // sees the forgotten samples apart from unseen data, but on the leaky
        // demo it sees the retrained model's too (0.551).
        let alone = verdict(
            &eval(1.0, 100, 0.918, Some(0.918)),
            None,
            &original_attack(),
            None,
            Some(&original_attack()),
            false,
        );
        assert_eq!(alone.outcome, Outcome::Inconclusive, "{alone:#?}");
        let mem = outcome_of(&alone, "membership");
        assert_eq!(mem.outcome, Outcome::Inconclusive);
        assert!(
            mem.reason
                .starts_with("the attack still tells the forgotten samples from unseen data")
                && mem.reason.contains("without a retrained model"),
            "{}",
            mem.reason
        );
        assert!(
            mem.next_step
                .as_deref()
                .unwrap()
                .starts_with("run Retrain (exact)")
        );
        // ...while forget accuracy without a reference never fails on a guess.
        assert_eq!(
            outcome_of(&alone, "forget accuracy").outcome,
            Outcome::Inconclusive
        );
    }

    /// What the window showed on the leaky demo: the metric MIA tells the
    /// original from unseen data but not from the retrained model (its AUC
    /// there is 0.55 too), and the retrained model classifies 95 of the 100.
    /// The untouched original and a 1-epoch fine-tune passed; neither may.
    #[test]
    fn an_attack_that_cannot_tell_the_original_from_the_retrained_model_judges_nothing() {
        let original = original_attack();
        let retrained = attack(m(0.5505, 0.4951, 0.6069, 100, 0.02, 0.0), None);
        let fine_tuned = attack(m(0.5728, 0.5195, 0.6269, 100, 0.04, 0.0), None);
        let reference = eval(0.95, 100, 0.918, Some(0.918));
        for (name, model, ua) in [
            ("original", &original, 1.0),
            ("fine-tuned", &fine_tuned, 1.0),
        ] {
            let v = verdict(
                &eval(ua, 100, 0.89, Some(0.918)),
                Some(&reference),
                model,
                Some(&retrained),
                Some(&original),
                false,
            );
            assert_ne!(v.outcome, Outcome::Pass, "{name}: {v:#?}");
            let mem = outcome_of(&v, "membership");
            assert_eq!(mem.outcome, Outcome::Inconclusive, "{name}: {mem:?}");
            assert!(
                mem.reason.contains("cannot tell the original model")
                    && mem.reason.contains("0.5960"),
                "{}",
                mem.reason
            );
            let next = mem.next_step.clone().unwrap();
            assert!(
                next.contains("stronger attack") && next.contains("samples are needed"),
                "{next}"
            );
        }
        // The same attack with a leak it can see between the models still judges.
        let sharper = attack(m(0.75, 0.70, 0.80, 100, 0.2, 0.0), None);
        let v = verdict(
            &eval(0.95, 100, 0.918, Some(0.918)),
            Some(&reference),
            &retrained,
            Some(&retrained),
            Some(&sharper),
            false,
        );
        assert_eq!(
            outcome_of(&v, "membership").outcome,
            Outcome::Pass,
            "{v:#?}"
        );
    }

    #[test]
    fn five_samples_are_inconclusive_for_the_original_and_the_retrained_model() {
        // The numbers: the original's AUC 0.636 [0.493, 0.766] on 5 samples.
        let original = attack(m(0.636, 0.493, 0.766, 5, 0.2, 0.0), None);
        let retrained = attack(m(0.52, 0.30, 0.74, 5, 0.0, 0.0), None);
        for (model, is_reference, ua) in [(&retrained, true, 1.0), (&original, false, 1.0)] {
            let v = verdict(
                &eval(ua, 5, 0.918, Some(0.918)),
                None,
                model,
                None,
                Some(&original),
                is_reference,
            );
            assert_eq!(v.outcome, Outcome::Inconclusive, "{v:#?}");
            let next = v.next_step.clone().unwrap_or_default();
            let needed = members_needed(0.636, 600.0).unwrap();
            assert!(
                next.contains(&format!("at least {needed} samples")),
                "{next}"
            );
            assert!(needed > 5);
        }
    }

    #[test]
    fn membership_compares_with_the_retrained_model_in_both_directions() {
        let held_out = m(0.62, 0.60, 0.64, 2000, 0.05, 0.04);
        let r = m(0.50, 0.47, 0.53, 1000, 0.01, 0.005);
        let close = membership_check(
            "a",
            &m(0.51, 0.48, 0.54, 1000, 0.0, 0.0),
            Some(&r),
            None,
            Some(&held_out),
        );
        assert_eq!(close.outcome, Outcome::Pass, "{close:?}");
        let above = membership_check(
            "a",
            &m(0.58, 0.55, 0.61, 1000, 0.0, 0.0),
            Some(&r),
            None,
            Some(&held_out),
        );
        assert_eq!(above.outcome, Outcome::Fail);
        assert!(above.reason.starts_with("forgets too little"));
        let below = membership_check(
            "a",
            &m(0.42, 0.39, 0.45, 1000, 0.0, 0.0),
            Some(&r),
            None,
            Some(&held_out),
        );
        assert_eq!(below.outcome, Outcome::Fail);
        assert!(below.reason.starts_with("forgets too much"));
        // A wider interval no longer passes more easily: a blind attack says nothing.
        let blind = m(0.505, 0.47, 0.54, 2000, 0.0, 0.0);
        let c = membership_check(
            "a",
            &m(0.5, 0.3, 0.7, 1000, 0.0, 0.0),
            None,
            None,
            Some(&blind),
        );
        assert_eq!(c.outcome, Outcome::Inconclusive);
        let none = membership_check("a", &m(0.5, 0.45, 0.55, 1000, 0.0, 0.0), None, None, None);
        assert_eq!(none.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn accuracy_messages_follow_the_sign_of_the_difference() {
        let retrained = eval(1.0, 200, 0.92, Some(0.92));
        // DAU in the issue: 80 % against the retrained model's 100 %.
        let low = forget_accuracy_check(&eval(0.80, 200, 0.92, None), Some(&retrained), false);
        assert_eq!(low.outcome, Outcome::Fail);
        assert!(low.reason.starts_with("forgets too much"), "{}", low.reason);
        let r90 = eval(0.90, 200, 0.92, None);
        let high = forget_accuracy_check(&eval(1.0, 200, 0.92, None), Some(&r90), false);
        assert!(
            high.reason.starts_with("forgets too little"),
            "{}",
            high.reason
        );
        // On 5 samples the same gap is inconclusive, with the number needed.
        let r5 = eval(1.0, 5, 0.92, None);
        let few = forget_accuracy_check(&eval(0.8, 5, 0.92, None), Some(&r5), false);
        assert_eq!(few.outcome, Outcome::Inconclusive);
        assert!(few.next_step.unwrap().contains("at least"));
        // Utility: a significant drop fails, a small one passes.
        let bad = utility_check(&eval(0.9, 100, 0.80, Some(0.92)), None);
        assert_eq!(bad.outcome, Outcome::Fail);
        assert!(bad.reason.contains("lost accuracy"));
        let fine = utility_check(&eval(0.9, 100, 0.91, Some(0.92)), None);
        assert_eq!(fine.outcome, Outcome::Pass);
    }

    #[test]
    fn exact_retraining_is_recognised_by_id_and_uncapped_recipe() {
        assert!(is_exact_retraining(RETRAIN_ID, &json!({})));
        assert!(is_exact_retraining(
            RETRAIN_ID,
            &json!({"max_epochs": 0, "recipe": "original"})
        ));
        assert!(!is_exact_retraining(RETRAIN_ID, &json!({"max_epochs": 3})));
        assert!(!is_exact_retraining(RETRAIN_ID, &json!({"recipe": "form"})));
        assert!(!is_exact_retraining(
            "org.lethe.baseline.finetune",
            &json!({})
        ));
    }

    #[test]
    fn no_results_make_an_inconclusive_verdict() {
        let v = decide(&Evidence::default());
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(v.headline.contains("no attack"), "{}", v.headline);
        assert!(v.next_step.is_some());
    }

    #[test]
    fn the_forget_set_size_warning_matches_the_verdicts_own_needs() {
        let n = forget_samples_needed(600);
        assert!(n >= low_fpr_needed() && n > 5, "{n}");
        assert_eq!(
            n,
            members_needed(TYPICAL_LEAK_AUC, 600.0)
                .unwrap()
                .max(low_fpr_needed())
        );
        // The leaky demo's 100 samples are enough; the 5 are not.
        assert!(n <= 100);
    }

    #[test]
    fn members_needed_is_the_smallest_detecting_size() {
        let n = members_needed(0.6, 600.0).unwrap();
        assert!(detectable(0.6, n as f64, 600.0));
        assert!(!detectable(0.6, (n - 1) as f64, 600.0));
        assert_eq!(members_needed(0.5, 600.0), None);
        // Two non-members cannot show a small leak, however many members.
        assert_eq!(members_needed(0.55, 2.0), None);
    }
}
