//! Gradients of single examples' losses, for curvature estimates (Fisher,
//! WoodFisher). Classifiers: each example through the model alone, so the
//! gradient is exactly that of its own cross-entropy. Encoders: InfoNCE needs the
//! rest of the batch as negatives, so each example's loss is its InfoNCE term
//! within the batch ([`Objective::measure_per_sample`]), differentiated separately.

use crate::flat::grad_flat;
use crate::losses::{Objective, cross_entropy};
use crate::model::ModelKind;
use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError};
use lethe_plugin_api::tch::Tensor;

/// Calls `each(flat_gradient)` for every example of the batch `(x, y)`, in order.
/// Switches the model to eval mode, as the reference code (OPTML's Fisher and
/// WoodFisher) does: normalisation layers use their running statistics, which
/// stay put, and a single example is normalised like any other.
pub fn per_sample_grads<F>(
    ctx: &mut HostContext,
    objective: &Objective,
    params: &[(String, Tensor)],
    x: &Tensor,
    y: &Tensor,
    mut each: F,
) -> Result<(), PluginError>
where
    F: FnMut(Tensor) -> Result<(), PluginError>,
{
    ctx.model_set_train(false)?;
    let n = x.size().first().copied().unwrap_or(0);
    match objective.kind {
        ModelKind::Classifier { .. } => {
            for i in 0..n {
                let logits = ctx.model_forward(ModelHead::Classifier, &x.f_narrow(0, i, 1)?)?;
                let loss = cross_entropy(&logits, &y.f_narrow(0, i, 1)?)?;
                each(grad_flat(&loss, params, false)?)?;
            }
        }
        ModelKind::Encoder { .. } => {
            let losses = objective.measure_per_sample(ctx, x, y)?;
            for i in 0..n {
                each(grad_flat(&losses.f_get(i)?, params, i + 1 < n)?)?;
            }
        }
    }
    Ok(())
}
