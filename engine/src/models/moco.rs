//! MoCo building blocks: a momentum (EMA) copy of an encoder and a queue of
//! normalized keys.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::ModelError;
use super::config::ArchConfig;
use super::encoder::Model;

/// A frozen copy of the online encoder (backbone + head), updated only by
/// exponential moving average: `θ_k ← m·θ_k + (1−m)·θ_q`.
#[derive(Debug)]
pub struct MomentumEncoder {
    vs: nn::VarStore,
    model: Model,
    momentum: f64,
}

impl MomentumEncoder {
    /// Builds a copy of `config` on `online`'s device and copies `online`'s
    /// weights and BatchNorm statistics into it.
    pub fn new(
        online: &nn::VarStore,
        config: &ArchConfig,
        momentum: f64,
    ) -> Result<Self, ModelError> {
        if !(0.0..=1.0).contains(&momentum) {
            return Err(ModelError::InvalidConfig(format!(
                "momentum must be in [0, 1], got {momentum}"
            )));
        }
        let mut vs = nn::VarStore::new(online.device());
        let model = Model::new(&vs.root(), config)?;
        vs.copy(online)
            .map_err(|e| ModelError::InvalidConfig(format!("momentum copy: {e}")))?;
        // Keys carry no gradient in MoCo; freezing also keeps this store out of any optimizer.
        vs.freeze();
        Ok(MomentumEncoder {
            vs,
            model,
            momentum,
        })
    }

    /// EMA update from the online store. Only the online store's trainable
    /// variables are averaged: the key encoder's BatchNorm running statistics
    /// evolve from its own forward passes, as in the MoCo reference code.
    pub fn update(&mut self, online: &nn::VarStore) -> Result<(), ModelError> {
        let m = self.momentum;
        let online_vars = online.variables();
        let mut own = self.vs.variables();
        tch::no_grad(|| {
            for (name, q) in &online_vars {
                if !q.requires_grad() {
                    continue;
                }
                let k = own.get_mut(name).ok_or_else(|| {
                    ModelError::InvalidConfig(format!("momentum encoder has no variable {name}"))
                })?;
                let step = k.f_mul_scalar_(m).and_then(|_| k.f_add_(&(q * (1.0 - m))));
                let _: Tensor = step.map_err(|e| {
                    ModelError::InvalidConfig(format!("momentum update of {name}: {e}"))
                })?;
            }
            Ok(())
        })
    }

    /// Keys for a batch: the projection of `xs`, computed without gradient.
    /// `train` selects BatchNorm batch statistics (MoCo trains with them).
    pub fn keys(&self, xs: &Tensor, train: bool) -> Tensor {
        tch::no_grad(|| self.model.forward_t(xs, train))
    }

    /// The copied model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The store holding the key encoder's variables (e.g. to checkpoint it).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The EMA coefficient.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }
}

/// Ring buffer of `K` L2-normalized keys of dimension `dim`; enqueuing a batch
/// evicts (dequeues) the oldest keys.
#[derive(Debug)]
pub struct KeyQueue {
    keys: Tensor,
    ptr: i64,
}

impl KeyQueue {
    /// Creates a queue filled with random unit vectors (as MoCo does), so
    /// that negatives exist from the first step.
    pub fn new(capacity: i64, dim: i64, device: Device) -> Result<Self, ModelError> {
        if capacity <= 0 || dim <= 0 {
            return Err(ModelError::InvalidConfig(format!(
                "queue capacity and dim must be positive, got {capacity}×{dim}"
            )));
        }
        let keys = normalize(&Tensor::randn([capacity, dim], (Kind::Float, device)));
        Ok(KeyQueue { keys, ptr: 0 })
    }

    /// Number of keys held (the capacity K).
    pub fn capacity(&self) -> i64 {
        self.keys.size()[0]
    }

    /// Key dimension.
    pub fn dim(&self) -> i64 {
        self.keys.size()[1]
    }

    /// Write position: index where the next key goes (the oldest key).
    pub fn position(&self) -> i64 {
        self.ptr
    }

    /// All keys, `K×dim`, detached.
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Normalizes and enqueues `batch` (`B×dim`), overwriting the oldest
    /// entries and wrapping around; a batch larger than K keeps its last K rows.
    pub fn enqueue(&mut self, batch: &Tensor) -> Result<(), ModelError> {
        let size = batch.size();
        if size.len() != 2 || size[1] != self.dim() {
            return Err(ModelError::InvalidConfig(format!(
                "queue expects B×{} keys, got {size:?}",
                self.dim()
            )));
        }
        let k = self.capacity();
        let mut batch = normalize(
            &batch
                .detach()
                .to_kind(Kind::Float)
                .to_device(self.keys.device()),
        );
        if size[0] > k {
            batch = batch.narrow(0, size[0] - k, k);
        }
        let b = batch.size()[0];
        tch::no_grad(|| {
            let first = b.min(k - self.ptr);
            self.keys
                .narrow(0, self.ptr, first)
                .copy_(&batch.narrow(0, 0, first));
            if first < b {
                self.keys
                    .narrow(0, 0, b - first)
                    .copy_(&batch.narrow(0, first, b - first));
            }
        });
        self.ptr = (self.ptr + b) % k;
        Ok(())
    }
}

fn normalize(t: &Tensor) -> Tensor {
    let norm = t.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
    t / norm
}
