//! A training run: SGD (or Adam) with a learning-rate schedule over a known
//! number of steps, stepping on a loss.

use crate::adam::Adam;
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

/// The optimiser a [`Trainer`] steps.
#[derive(Debug)]
enum Stepper {
    Sgd(Sgd),
    Adam(Adam),
}

/// SGD (or Adam, when [`Optim::adam`] is set) plus schedule over
/// `epochs × steps_per_epoch` steps.
#[derive(Debug)]
pub struct Trainer {
    opt: Stepper,
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
        let opt = match optim.adam {
            Some(adam) => Stepper::Adam(Adam::new(params, adam).with_masks(masks)?),
            None => Stepper::Sgd(Sgd::new(params, optim.sgd).with_masks(masks)?),
        };
        Ok(Trainer {
            opt,
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

    /// Back-propagates `loss` and takes one optimiser step.
    pub fn step(&mut self, loss: &Tensor) -> Result<(), PluginError> {
        let lr = self.lr();
        match &mut self.opt {
            Stepper::Sgd(o) => {
                o.zero_grad()?;
                loss.f_backward()?;
                o.step(lr)?;
            }
            Stepper::Adam(o) => {
                o.zero_grad()?;
                loss.f_backward()?;
                o.step(lr)?;
            }
        }
        self.done += 1;
        Ok(())
    }

    /// The parameters being trained.
    pub fn params(&self) -> &[(String, Tensor)] {
        match &self.opt {
            Stepper::Sgd(o) => o.params(),
            Stepper::Adam(o) => o.params(),
        }
    }

    /// The SGD optimiser (`None` when the run uses Adam).
    pub fn sgd(&self) -> Option<&Sgd> {
        match &self.opt {
            Stepper::Sgd(o) => Some(o),
            Stepper::Adam(_) => None,
        }
    }
}
