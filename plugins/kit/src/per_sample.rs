//! Gradients of single examples' losses, for curvature estimates (Fisher,
//! WoodFisher). Classifiers: each example through the model alone, so the
//! gradient is exactly that of its own cross-entropy. Encoders: InfoNCE needs the
//! rest of the batch as negatives, so each example's loss is its NT-Xent term
//! within the batch, differentiated separately.

use crate::flat::grad_flat;
use crate::losses::{Objective, cross_entropy};
use crate::model::ModelKind;
use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError};
use lethe_plugin_api::tch::Tensor;

/// Calls `each(flat_gradient)` for every example of the batch `(x, y)`, in order.
/// Switches the model to train mode: the host records a graph only there.
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
    ctx.model_set_train(true)?;
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
            let losses = objective.per_sample(ctx, x, y)?;
            for i in 0..n {
                each(grad_flat(&losses.f_get(i)?, params, i + 1 < n)?)?;
            }
        }
    }
    Ok(())
}

/// Names of parameters that look like normalisation layers (1-D `*.weight`, as
/// BatchNorm's scale), whose behaviour depends on train/eval mode.
pub fn normalisation_layers(params: &[(String, Tensor)]) -> Vec<String> {
    params
        .iter()
        .filter(|(name, p)| p.dim() == 1 && name.ends_with("weight"))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Warns, once per run, that gradients are taken in train mode: the host records
/// a graph only there, so a model with normalisation layers normalises with
/// batch statistics (single examples for per-example gradients) and updates its
/// running averages while the method reads gradients, unlike the reference code,
/// which takes them in eval mode.
pub fn warn_train_mode_gradients(ctx: &HostContext, params: &[(String, Tensor)]) {
    let layers = normalisation_layers(params);
    if let Some(first) = layers.first() {
        ctx.warn(&format!(
            "the model has {} normalisation layer(s) (e.g. `{first}`): gradients are taken in \
             train mode (the host records gradients only there), so they use batch statistics \
             and the running statistics move; the reference code takes them in eval mode",
            layers.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::{Device, Kind};

    #[test]
    fn one_dimensional_weights_are_normalisation_layers() {
        let t = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let params = vec![
            ("bn1.bias".to_string(), t(&[4])),
            ("bn1.weight".to_string(), t(&[4])),
            ("conv1.weight".to_string(), t(&[4, 3, 3, 3])),
            ("fc.bias".to_string(), t(&[10])),
        ];
        assert_eq!(
            normalisation_layers(&params),
            vec!["bn1.weight".to_string()]
        );
        assert!(normalisation_layers(&params[2..]).is_empty());
    }
}
