//! Self-supervised contrastive training: SimCLR (two augmented views, NT-Xent) and
//! MoCo (query encoder, momentum key encoder, queue of negatives).

use tch::nn::{ModuleT, VarStore};
use tch::{Kind, Tensor};

use super::augment::{AugmentConfig, to_unit_float};
use super::events::{Flow, TrainEvent, TrainSummary};
use super::losses::{moco_infonce_per_sample, normalize, nt_xent};
use super::supervised::run_epochs;
use super::{TrainConfig, TrainError};

fn views_config(cfg: &TrainConfig) -> AugmentConfig {
    cfg.augment.clone().unwrap_or_else(AugmentConfig::contrastive)
}

/// Trains `model` (images → projection) with SimCLR's NT-Xent on two augmented views.
pub fn train_simclr(
    model: &dyn ModuleT,
    vs: &VarStore,
    images: &Tensor,
    temperature: f64,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainSummary, TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    tch::manual_seed(cfg.seed as i64);
    let device = vs.device();
    let images = images.to_device(device);
    let aug = views_config(cfg);
    let mut opt = cfg.build_optimizer(vs)?;
    let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
        let x = to_unit_float(&images.index_select(0, idx));
        let z1 = model.forward_t(&aug.apply(&x), true);
        let z2 = model.forward_t(&aug.apply(&x), true);
        Ok(nt_xent(&z1, &z2, temperature))
    };
    run_epochs(n, cfg, &mut opt, device, on_event, &mut step)
}

/// MoCo's queue of normalised keys from earlier batches: the negatives.
#[derive(Debug)]
pub struct KeyQueue {
    keys: Tensor,
    ptr: i64,
}

impl KeyQueue {
    /// A queue of `size` random unit keys of dimension `dim`, as MoCo initialises it.
    pub fn new(size: i64, dim: i64, device: tch::Device) -> Self {
        KeyQueue {
            keys: normalize(&Tensor::randn([size, dim], (Kind::Float, device))),
            ptr: 0,
        }
    }

    /// The keys, `[K, D]`.
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Replaces the oldest keys with `k` (detached, normalised), wrapping around.
    pub fn push(&mut self, k: &Tensor) {
        let _guard = tch::no_grad_guard();
        let size = self.keys.size()[0];
        let k = normalize(&k.detach());
        let n = k.size()[0].min(size);
        for i in 0..n {
            let row = (self.ptr + i) % size;
            self.keys.get(row).copy_(&k.get(i));
        }
        self.ptr = (self.ptr + n) % size;
    }
}

/// Moves every trainable variable of `key` towards the one of the same name in `query`:
/// `key = m·key + (1−m)·query`. Buffers (BatchNorm statistics) follow the key encoder's
/// own forward passes, as in MoCo.
pub fn momentum_update(key: &VarStore, query: &VarStore, m: f64) -> Result<(), TrainError> {
    let _guard = tch::no_grad_guard();
    let qvars = query.variables();
    for (name, mut kv) in key.variables() {
        if !kv.requires_grad() && qvars.get(&name).is_some_and(|q| q.requires_grad()) {
            continue;
        }
        let q = qvars.get(&name).ok_or_else(|| {
            TrainError::Invalid(format!("momentum encoder has {name}, the query encoder not"))
        })?;
        if !q.requires_grad() {
            continue;
        }
        let updated = &kv * m + q * (1.0 - m);
        kv.copy_(&updated);
    }
    Ok(())
}

/// MoCo settings beyond the shared [`TrainConfig`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct MocoConfig {
    /// EMA factor of the key encoder (0.99 in the Alignment Calibration runs).
    pub momentum: f64,
    /// InfoNCE temperature (0.1 there).
    pub temperature: f64,
}

impl Default for MocoConfig {
    fn default() -> Self {
        MocoConfig {
            momentum: 0.99,
            temperature: 0.1,
        }
    }
}

/// Trains a MoCo query encoder `query` (images → projection) against the momentum
/// encoder `key` (same architecture and variable names, its own `VarStore`).
#[allow(clippy::too_many_arguments)]
pub fn train_moco(
    query: &dyn ModuleT,
    query_vs: &VarStore,
    key: &dyn ModuleT,
    key_vs: &VarStore,
    queue: &mut KeyQueue,
    images: &Tensor,
    moco: &MocoConfig,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainSummary, TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    tch::manual_seed(cfg.seed as i64);
    let device = query_vs.device();
    let images = images.to_device(device);
    let aug = views_config(cfg);
    let mut opt = cfg.build_optimizer(query_vs)?;
    let mut pending: Option<Tensor> = None;
    let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
        // The previous step's optimiser update has happened: fold it into the key
        // encoder and retire its keys into the queue before computing this loss.
        if let Some(k) = pending.take() {
            momentum_update(key_vs, query_vs, moco.momentum)?;
            queue.push(&k);
        }
        let x = to_unit_float(&images.index_select(0, idx));
        let q = query.forward_t(&aug.apply(&x), true);
        let k = {
            let _guard = tch::no_grad_guard();
            key.forward_t(&aug.apply(&x), true).detach()
        };
        let loss = moco_infonce_per_sample(&q, &k, queue.keys(), moco.temperature).mean(Kind::Float);
        pending = Some(k);
        Ok(loss)
    };
    let summary = run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?;
    if let Some(k) = pending.take() {
        momentum_update(key_vs, query_vs, moco.momentum)?;
        queue.push(&k);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn};

    fn net(vs: &VarStore) -> impl ModuleT + use<> {
        let p = vs.root();
        nn::seq_t()
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(&p / "l1", 3 * 8 * 8, 32, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&p / "l2", 32, 8, Default::default()))
    }

    fn images() -> Tensor {
        tch::manual_seed(4);
        Tensor::rand([64, 3, 8, 8], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn simclr_lowers_its_loss() {
        let vs = VarStore::new(Device::Cpu);
        let model = net(&vs);
        let cfg = TrainConfig {
            epochs: 8,
            batch_size: 32,
            lr: 0.1,
            ..TrainConfig::default()
        };
        let mut losses = Vec::new();
        train_simclr(&model, &vs, &images(), 0.5, &cfg, &mut |e| {
            if e.step == e.steps {
                losses.push(e.loss);
            }
            Flow::Continue
        })
        .unwrap();
        assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
    }

    #[test]
    fn queue_wraps_and_keeps_unit_rows() {
        let mut q = KeyQueue::new(5, 3, Device::Cpu);
        let k = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        q.push(&k);
        q.push(&k);
        assert_eq!(q.ptr, 3);
        let norms = q.keys().norm_scalaropt_dim(2, [1i64].as_slice(), false);
        assert!(norms.allclose(&Tensor::ones([5], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    }

    #[test]
    fn momentum_update_is_an_ema() {
        let qvs = VarStore::new(Device::Cpu);
        let kvs = VarStore::new(Device::Cpu);
        let _q = net(&qvs);
        let _k = net(&kvs);
        let name = "l1.weight";
        let before_k = kvs.variables()[name].copy();
        let qv = qvs.variables()[name].copy();
        momentum_update(&kvs, &qvs, 0.9).unwrap();
        let expect = &before_k * 0.9 + &qv * 0.1;
        assert!(kvs.variables()[name].allclose(&expect, 1e-6, 1e-6, false));
    }

    #[test]
    fn moco_runs_and_moves_the_key_encoder() {
        let qvs = VarStore::new(Device::Cpu);
        let mut kvs = VarStore::new(Device::Cpu);
        let q = net(&qvs);
        let k = net(&kvs);
        kvs.copy(&qvs).unwrap();
        let before = kvs.variables()["l2.weight"].copy();
        let mut queue = KeyQueue::new(32, 8, Device::Cpu);
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            lr: 0.05,
            ..TrainConfig::default()
        };
        let s = train_moco(
            &q,
            &qvs,
            &k,
            &kvs,
            &mut queue,
            &images(),
            &MocoConfig::default(),
            &cfg,
            &mut |_| Flow::Continue,
        )
        .unwrap();
        assert!(s.final_loss.is_finite());
        assert!(!kvs.variables()["l2.weight"].equal(&before));
    }
}
