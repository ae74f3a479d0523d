//! Diagonal importances (empirical Fisher) as SSD's and SFR-on's reference
//! code estimate them: the mean over batches of the squared gradient of each
//! batch's mean loss, model in eval mode, as one flat vector over the
//! parameters (order of `ctx.model_parameters()`).

use crate::epoch::for_each_batch;
use crate::flat::grad_flat;
use crate::losses::Objective;
use lethe_plugin_api::sdk::{HostContext, PluginError, Split};
use lethe_plugin_api::tch::Tensor;

/// Mean over batches of the squared gradient of each batch's loss, as one flat
/// vector over the parameters.
#[derive(Debug, Default)]
pub struct Importance {
    sum: Option<Tensor>,
    batches: usize,
}

impl Importance {
    /// Adds the squared gradient of scalar `loss` with respect to `params`.
    pub fn add(&mut self, loss: &Tensor, params: &[(String, Tensor)]) -> Result<(), PluginError> {
        self.add_squared(&grad_flat(loss, params, false)?.f_square()?)
    }

    /// Adds one batch's squared gradient (flat).
    pub fn add_squared(&mut self, g2: &Tensor) -> Result<(), PluginError> {
        self.sum = Some(match self.sum.take() {
            Some(s) => s.f_add(g2)?,
            None => g2.f_detach_copy()?,
        });
        self.batches += 1;
        Ok(())
    }

    /// Batches added.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The mean (an error when no batch was added).
    pub fn mean(&self) -> Result<Tensor, PluginError> {
        let sum = self
            .sum
            .as_ref()
            .ok_or_else(|| PluginError::msg("no batches to estimate an importance from"))?;
        Ok(sum.f_div_scalar(self.batches as f64)?)
    }
}

/// Adds the squared gradient of every batch of `split` to each of `into`.
pub fn accumulate(
    ctx: &mut HostContext,
    objective: &Objective,
    params: &[(String, Tensor)],
    split: Split,
    bs: u32,
    into: &mut [&mut Importance],
) -> Result<(), PluginError> {
    // Eval mode, as SSD's and SFR-on's reference code (`model.eval()`).
    ctx.model_set_train(false)?;
    for_each_batch(ctx, split, bs, false, 0, |ctx, x, y| {
        // A measurement: no MoCo run state is read or changed.
        let loss = objective
            .measure_per_sample(ctx, x, y)?
            .f_mean(lethe_plugin_api::tch::Kind::Float)?;
        let g2 = grad_flat(&loss, params, false)?.f_square()?;
        for imp in into.iter_mut() {
            imp.add_squared(&g2)?;
        }
        Ok(loss.f_double_value(&[])?)
    })?;
    Ok(())
}
