//! MoCo's key side inside the plugin. The host's model has no momentum encoder
//! (a MoCo checkpoint holds the query encoder only), so the plugin keeps one: an
//! exponential moving average of the model's parameters, started from the
//! original weights. Keys are computed by swapping those averages into the host
//! model's parameter storage for one forward pass, without gradients, and
//! swapping the live weights back before the query pass builds its graph.
//!
//! What the swap cannot separate: normalisation buffers (BatchNorm running
//! statistics) are not parameters, so the key pass updates the live model's
//! running statistics as a query pass would; the key encoder tracks the query
//! encoder closely (momentum 0.99), so this is a small, documented drift, and
//! batch statistics (train mode) are what both passes normalise with.

use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError};
use lethe_plugin_api::tch::{self, Tensor};

/// Momentum copies of the model's parameters.
#[derive(Debug)]
pub struct MomentumEncoder {
    live: Vec<Tensor>,
    keys: Vec<Tensor>,
    momentum: f64,
}

impl MomentumEncoder {
    /// Copies of `params` (which share storage with the host model).
    pub fn new(params: &[(String, Tensor)], momentum: f64) -> Result<Self, PluginError> {
        let live: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let keys = tch::no_grad(|| -> Result<Vec<Tensor>, PluginError> {
            live.iter().map(|p| Ok(p.f_detach_copy()?)).collect()
        })?;
        Ok(MomentumEncoder {
            live,
            keys,
            momentum,
        })
    }

    /// `key ← m·key + (1 − m)·live` for every parameter.
    pub fn update(&mut self) -> Result<(), PluginError> {
        let m = self.momentum;
        tch::no_grad(|| -> Result<(), PluginError> {
            for (k, p) in self.keys.iter_mut().zip(&self.live) {
                let next = k.f_mul_scalar(m)?.f_add(&p.f_mul_scalar(1.0 - m)?)?;
                k.f_copy_(&next)?;
            }
            Ok(())
        })
    }

    /// `head` of the momentum encoder on `x`, without gradients. Must run before
    /// the query pass of the same step: the swap bumps the parameters' versions,
    /// which would invalidate a graph already built on them.
    pub fn forward(
        &mut self,
        ctx: &mut HostContext,
        head: ModelHead,
        x: &Tensor,
    ) -> Result<Tensor, PluginError> {
        tch::no_grad(|| -> Result<Tensor, PluginError> {
            let saved: Vec<Tensor> = self
                .live
                .iter()
                .map(|p| Ok(p.f_detach_copy()?))
                .collect::<Result<_, PluginError>>()?;
            self.load(&self.keys)?;
            let out = ctx.model_forward(head, x);
            self.load(&saved)?;
            out
        })
    }

    fn load(&self, values: &[Tensor]) -> Result<(), PluginError> {
        for (p, v) in self.live.iter().zip(values) {
            p.shallow_clone().f_copy_(v)?;
        }
        Ok(())
    }

    /// The momentum copies (for tests and diagnostics).
    pub fn keys(&self) -> &[Tensor] {
        &self.keys
    }
}

/// MoCo's queue of negative keys, a ring buffer of L2-normalised rows.
#[derive(Debug)]
pub struct KeyQueue {
    keys: Tensor,
    filled: i64,
    next: i64,
}

impl KeyQueue {
    /// An empty queue of `capacity` rows (at least one).
    pub fn new(capacity: i64, dim: i64, device: tch::Device) -> Result<Self, PluginError> {
        Ok(KeyQueue {
            keys: Tensor::f_zeros([capacity.max(1), dim], (tch::Kind::Float, device))?,
            filled: 0,
            next: 0,
        })
    }

    /// Rows in the queue.
    pub fn capacity(&self) -> i64 {
        self.keys.size().first().copied().unwrap_or(0)
    }

    /// Whether every row holds a key.
    pub fn is_full(&self) -> bool {
        self.filled >= self.capacity()
    }

    /// The filled rows.
    pub fn keys(&self) -> Result<Tensor, PluginError> {
        Ok(self.keys.f_narrow(0, 0, self.filled)?)
    }

    /// Writes `batch` (`[B, D]`, detached) at the ring position, oldest first out.
    pub fn enqueue(&mut self, batch: &Tensor) -> Result<(), PluginError> {
        let cap = self.capacity();
        let batch = crate::losses::normalize(&batch.f_detach()?)?;
        let b = batch.size().first().copied().unwrap_or(0).min(cap);
        let batch = batch.f_narrow(0, 0, b)?;
        tch::no_grad(|| -> Result<(), PluginError> {
            let first = b.min(cap - self.next);
            self.keys
                .f_narrow(0, self.next, first)?
                .f_copy_(&batch.f_narrow(0, 0, first)?)?;
            if first < b {
                self.keys
                    .f_narrow(0, 0, b - first)?
                    .f_copy_(&batch.f_narrow(0, first, b - first)?)?;
            }
            Ok(())
        })?;
        self.next = (self.next + b) % cap;
        self.filled = (self.filled + b).min(cap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::{Device, Kind};

    #[test]
    fn the_queue_wraps_and_keeps_the_newest_keys() {
        let mut q = KeyQueue::new(3, 2, Device::Cpu).unwrap();
        let rows = |v: &[f32]| Tensor::from_slice(v).view([-1, 2]);
        q.enqueue(&rows(&[1.0, 0.0, 0.0, 2.0])).unwrap();
        assert!(!q.is_full());
        assert_eq!(q.keys().unwrap().size(), [2, 2]);
        q.enqueue(&rows(&[-3.0, 0.0, 0.0, -1.0])).unwrap();
        assert!(q.is_full());
        let got = Vec::<f32>::try_from(q.keys().unwrap().flatten(0, -1)).unwrap();
        // Row 0 was overwritten by the fourth key; rows are normalised.
        assert_eq!(got, [0.0, -1.0, 0.0, 1.0, -1.0, 0.0]);
    }

    #[test]
    fn momentum_update_moves_keys_towards_the_live_weights() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut enc = MomentumEncoder::new(&[("w".into(), p.shallow_clone())], 0.9).unwrap();
        tch::no_grad(|| {
            let _ = p
                .shallow_clone()
                .f_copy_(&Tensor::from_slice(&[11.0f32, 2.0]));
        });
        enc.update().unwrap();
        let k = Vec::<f32>::try_from(enc.keys()[0].to_kind(Kind::Float)).unwrap();
        assert!(
            (k[0] - 2.0).abs() < 1e-6 && (k[1] - 2.0).abs() < 1e-6,
            "{k:?}"
        );
    }
}
