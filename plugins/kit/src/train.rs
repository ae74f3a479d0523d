//! A training run: SGD with a learning-rate schedule over a known number of
//! steps, stepping on a loss.

use crate::optim::{Masks, Schedule, Sgd};
use crate::params::Optim;
use lethe_plugin_api::sdk::{HostContext, PluginError, Split};
use lethe_plugin_api::tch::Tensor;

/// Steps one epoch over `split` takes in batches of `batch_size`, at most
/// `max_batches` when non-zero.
pub fn steps_per_epoch(
    ctx: &mut HostContext,
    split: Split,
    batch_size: u32,
    max_batches: usize,
) -> Result<usize, PluginError> {
    let n = ctx.data_len(split)?.unwrap_or(0);
    let steps = usize::try_from(n.div_ceil(u64::from(batch_size.max(1)))).unwrap_or(usize::MAX);
    Ok(if max_batches > 0 {
        steps.min(max_batches)
    } else {
        steps
    })
}

/// SGD plus schedule over `epochs × steps_per_epoch` steps.
#[derive(Debug)]
pub struct Trainer {
    sgd: Sgd,
    base_lr: f64,
    schedule: Schedule,
    total: usize,
    done: usize,
}

impl Trainer {
    /// A run over `params` (updates restricted by `masks`) with `optim`'s
    /// settings, `steps_per_epoch` steps per epoch.
    pub fn new(
        params: Vec<(String, Tensor)>,
        masks: Masks,
        optim: &Optim,
        steps_per_epoch: usize,
    ) -> Result<Self, PluginError> {
        Ok(Trainer {
            sgd: Sgd::new(params, optim.sgd).with_masks(masks)?,
            base_lr: optim.lr,
            schedule: optim.schedule.clone(),
            total: optim.epochs.saturating_mul(steps_per_epoch).max(1),
            done: 0,
        })
    }

    /// The rate the next step uses.
    pub fn lr(&self) -> f64 {
        self.schedule.rate(self.base_lr, self.done, self.total)
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.done
    }

    /// Back-propagates `loss` and takes one SGD step.
    pub fn step(&mut self, loss: &Tensor) -> Result<(), PluginError> {
        self.sgd.zero_grad()?;
        loss.f_backward()?;
        self.sgd.step(self.lr())?;
        self.done += 1;
        Ok(())
    }

    /// The parameters being trained.
    pub fn params(&self) -> &[(String, Tensor)] {
        self.sgd.params()
    }

    /// The optimiser.
    pub fn sgd(&self) -> &Sgd {
        &self.sgd
    }
}
