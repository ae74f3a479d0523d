//! Self-supervised contrastive training: SimCLR (two augmented views, NT-Xent) and
//! MoCo (query encoder, momentum key encoder, queue of negatives).

use tch::nn::{ModuleT, VarStore};
use tch::{Kind, Tensor};

use super::augment::{AugmentConfig, to_unit_float};
use super::events::{Flow, TrainEvent, TrainSummary};
use super::losses::{moco_infonce_per_sample, normalize, nt_xent};
use super::supervised::run_epochs;
use super::{TrainConfig, TrainError};
use crate::models::{KeyQueue, MomentumEncoder};

/// What both contrastive loops prepare before their first step: the seed, the data on
/// the device, the view augmentation and the optimiser.
struct Setup {
    n: i64,
    device: tch::Device,
    images: Tensor,
    aug: AugmentConfig,
    opt: tch::nn::Optimizer,
}

impl Setup {
    fn new(vs: &VarStore, images: &Tensor, cfg: &TrainConfig) -> Result<Self, TrainError> {
        tch::manual_seed(cfg.seed as i64);
        let device = vs.device();
        Ok(Setup {
            n: images.size().first().copied().unwrap_or(0),
            device,
            images: images.to_device(device),
            aug: cfg
                .augment
                .clone()
                .unwrap_or_else(AugmentConfig::contrastive),
            opt: cfg.build_optimizer(vs)?,
        })
    }
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
    let Setup {
        n,
        device,
        images,
        aug,
        mut opt,
    } = Setup::new(vs, images, cfg)?;
    let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
        let x = to_unit_float(&images.index_select(0, idx));
        let z1 = model.forward_t(&aug.apply(&x), true);
        let z2 = model.forward_t(&aug.apply(&x), true);
        Ok(nt_xent(&z1, &z2, temperature))
    };
    run_epochs(n, cfg, &mut opt, device, on_event, &mut step)
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

/// Trains a MoCo query encoder `query` (images → projection) against its momentum
/// encoder `key` (an EMA copy built from the same architecture), drawing negatives
/// from `queue`.
#[allow(clippy::too_many_arguments)]
pub fn train_moco(
    query: &dyn ModuleT,
    query_vs: &VarStore,
    key: &mut MomentumEncoder,
    queue: &mut KeyQueue,
    images: &Tensor,
    temperature: f64,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainSummary, TrainError> {
    let Setup {
        n,
        device,
        images,
        aug,
        mut opt,
    } = Setup::new(query_vs, images, cfg)?;
    let mut pending: Option<Tensor> = None;
    let invalid = |e: crate::models::ModelError| TrainError::Invalid(e.to_string());
    let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
        // The previous step's optimiser update has happened: fold it into the key
        // encoder and retire its keys into the queue before computing this loss.
        if let Some(k) = pending.take() {
            key.update(query_vs).map_err(invalid)?;
            queue.enqueue(&normalize(&k)).map_err(invalid)?;
        }
        let x = to_unit_float(&images.index_select(0, idx));
        let q = query.forward_t(&aug.apply(&x), true);
        let k = key.keys(&aug.apply(&x), true).detach();
        let loss = moco_infonce_per_sample(&q, &k, queue.keys(), temperature).mean(Kind::Float);
        pending = Some(k);
        Ok(loss)
    };
    let summary = run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?;
    if let Some(k) = pending.take() {
        key.update(query_vs).map_err(invalid)?;
        queue.enqueue(&normalize(&k)).map_err(invalid)?;
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
    fn moco_runs_and_moves_the_key_encoder() {
        let arch = crate::models::ArchConfig {
            backbone: crate::models::BackboneConfig::Mlp {
                input_dim: 3 * 8 * 8,
                hidden: vec![32],
            },
            head: crate::models::HeadConfig::LinearProjection { out_dim: 8 },
        };
        let qvs = VarStore::new(Device::Cpu);
        let q = crate::models::Model::new(&qvs.root(), &arch).unwrap();
        let mut key = MomentumEncoder::new(&qvs, &arch, 0.99).unwrap();
        let snapshot: std::collections::BTreeMap<String, Tensor> = key
            .var_store()
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut queue = KeyQueue::new(32, 8, Device::Cpu).unwrap();
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            lr: 0.05,
            ..TrainConfig::default()
        };
        let x = images();
        let s = train_moco(&q, &qvs, &mut key, &mut queue, &x, 0.1, &cfg, &mut |_| {
            Flow::Continue
        })
        .unwrap();
        assert!(s.final_loss.is_finite());
        let after = key.var_store().variables();
        assert!(
            snapshot.iter().any(|(n, t)| !after[n].equal(t)),
            "the EMA moved the key encoder"
        );
        assert_eq!(queue.position(), (4 * 16) % 32);
    }
}
