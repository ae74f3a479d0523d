//! The result files of an attack, which the engine reads back to compute the
//! metric set (AUC, ROC, TPR at low FPR, bootstrap intervals, efficacy) in one
//! place for every attack:
//!
//! * `scores_<role>`: float64 `[n]`, one membership score per sample in split
//!   order, higher = more member-like;
//! * `predictions_<role>`: uint8 `[n]`, the attack's own decision (1 = member);
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
    ctx.put_tensor(&format!("scores_{}", role.name()), &Tensor::from_slice(scores))?;
    ctx.put_tensor(&format!("predictions_{}", role.name()), &Tensor::from_slice(&p))
}

/// Writes the summary JSON.
pub fn put_summary(ctx: &mut HostContext, summary: &Value) -> Result<(), PluginError> {
    ctx.put_json(SUMMARY, summary)
}

/// The share of `predictions` that say member.
pub fn member_rate(predictions: &[bool]) -> f64 {
    predictions.iter().filter(|m| **m).count() as f64 / predictions.len().max(1) as f64
}
