//! The result files of an attack, which the engine reads back to compute the
//! metric set (AUC, ROC, TPR at low FPR, bootstrap intervals, efficacy) in one
//! place for every attack:
//!
//! * `scores_<role>`: float64 `[n]`, one membership score per sample, higher =
//!   more member-like (forget scores in forget-split order, the others in the
//!   order their roles were drawn, see [`crate::sets`]);
//! * `predictions_<role>`: uint8 `[n]`, the attack's own decision (1 = member);
//! * optionally `pvalues_<role>` (float64 `[n]`, per-sample p-values against
//!   "never saw it") and `positions_<role>` (int64 `[n]`, split positions);
//! * `attack_summary` (JSON): the attack's settings, fitted thresholds, roles.
//!
//! Roles: `forget` (the target), `nonmember` and `member` (held out of the
//! fit), `shadow_member` and `shadow_nonmember` (the fit's own data, for
//! diagnostics).

use lethe_plugin_api::sdk::{HostContext, PluginError};
use lethe_plugin_api::tch::Tensor;
use serde_json::Value;

/// Name of the JSON summary result.
pub const SUMMARY: &str = "attack_summary";

/// A set of samples the attack scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The forget split: is it still member-like?
    Forget,
    /// Held-out members (retain rows not used in the fit).
    Member,
    /// Held-out non-members.
    NonMember,
    /// The fit's members.
    ShadowMember,
    /// The fit's non-members.
    ShadowNonMember,
}

impl Role {
    /// The suffix of its result names.
    pub fn name(self) -> &'static str {
        match self {
            Role::Forget => "forget",
            Role::Member => "member",
            Role::NonMember => "nonmember",
            Role::ShadowMember => "shadow_member",
            Role::ShadowNonMember => "shadow_nonmember",
        }
    }
}

/// Writes the scores and decisions of one role (nothing for an empty role).
pub fn put_scores(
    ctx: &mut HostContext,
    role: Role,
    scores: &[f64],
    predictions: &[bool],
) -> Result<(), PluginError> {
    if scores.len() != predictions.len() {
        return Err(PluginError::msg(format!(
            "{} scores but {} predictions for {}",
            scores.len(),
            predictions.len(),
            role.name()
        )));
    }
    if scores.is_empty() {
        return Ok(());
    }
    if let Some(bad) = scores.iter().position(|s| s.is_nan()) {
        return Err(PluginError::msg(format!(
            "score {bad} of {} is NaN",
            role.name()
        )));
    }
    let p: Vec<u8> = predictions.iter().map(|&m| u8::from(m)).collect();
    ctx.put_tensor(
        &format!("scores_{}", role.name()),
        &Tensor::from_slice(scores),
    )?;
    ctx.put_tensor(
        &format!("predictions_{}", role.name()),
        &Tensor::from_slice(&p),
    )
}

/// Writes the per-sample p-values of one role (`pvalues_<role>`, float64
/// `[n]`, the same order as its scores): the probability of a score at least
/// as member-like from a model that never saw the sample. Nothing for an
/// empty role.
pub fn put_pvalues(ctx: &mut HostContext, role: Role, pvalues: &[f64]) -> Result<(), PluginError> {
    if pvalues.is_empty() {
        return Ok(());
    }
    if let Some(bad) = pvalues.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(PluginError::msg(format!(
            "p-value {bad} of {} is {}, not in [0, 1]",
            role.name(),
            pvalues[bad]
        )));
    }
    ctx.put_tensor(
        &format!("pvalues_{}", role.name()),
        &Tensor::from_slice(pvalues),
    )
}

/// Writes the split positions of one role's samples (`positions_<role>`,
/// int64 `[n]`, the order of its scores), so that a report can name them.
pub fn put_positions(
    ctx: &mut HostContext,
    role: Role,
    positions: &[u64],
) -> Result<(), PluginError> {
    let p: Vec<i64> = positions
        .iter()
        .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
        .collect();
    ctx.put_tensor(
        &format!("positions_{}", role.name()),
        &Tensor::from_slice(&p),
    )
}

/// Writes the summary JSON.
pub fn put_summary(ctx: &mut HostContext, summary: &Value) -> Result<(), PluginError> {
    ctx.put_json(SUMMARY, summary)
}

/// The share of `predictions` that say member.
pub fn member_rate(predictions: &[bool]) -> f64 {
    predictions.iter().filter(|m| **m).count() as f64 / predictions.len().max(1) as f64
}

/// Scores every role of `gathered` with `score` (a sample's score and member
/// decision), writes them, and returns per-role member rates for the summary
/// (the forget rate's complement is the paper-style efficacy).
pub fn put_gathered(
    ctx: &mut HostContext,
    gathered: &crate::sets::Gathered,
    score: &dyn Fn(&crate::sets::Sample) -> (f64, bool),
) -> Result<Value, PluginError> {
    let mut rates = serde_json::Map::new();
    for (role, samples) in [
        (Role::Forget, &gathered.forget),
        (Role::Member, &gathered.members),
        (Role::NonMember, &gathered.nonmembers),
        (Role::ShadowMember, &gathered.shadow_members),
        (Role::ShadowNonMember, &gathered.shadow_nonmembers),
    ] {
        let (scores, predictions): (Vec<f64>, Vec<bool>) = samples.iter().map(score).unzip();
        put_scores(ctx, role, &scores, &predictions)?;
        if !samples.is_empty() {
            rates.insert(
                role.name().to_string(),
                serde_json::json!({"samples": samples.len(), "predicted_member": member_rate(&predictions)}),
            );
        }
    }
    let forget_rate = rates
        .get("forget")
        .and_then(|r| r["predicted_member"].as_f64());
    let shadow_balanced = match (
        rates
            .get("shadow_member")
            .and_then(|r| r["predicted_member"].as_f64()),
        rates
            .get("shadow_nonmember")
            .and_then(|r| r["predicted_member"].as_f64()),
    ) {
        (Some(tpr), Some(fpr)) => Some((tpr + 1.0 - fpr) / 2.0),
        _ => None,
    };
    Ok(serde_json::json!({
        "member_rates": rates,
        "efficacy": forget_rate.map(|r| 1.0 - r),
        "shadow_balanced_accuracy": shadow_balanced,
    }))
}
