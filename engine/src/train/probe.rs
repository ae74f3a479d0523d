//! Linear probing: a linear classifier trained on the frozen features of an encoder,
//! the standard way to read the utility of a contrastive encoder.

use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

use super::augment::to_unit_float;
use super::events::{Flow, TrainEvent, TrainSummary};
use super::supervised::{accuracy, map_batches, run_epochs};
use super::{TrainConfig, TrainError};

/// A trained linear head over frozen features.
#[derive(Debug)]
pub struct LinearProbe {
    /// The head's variables (only these were trained).
    pub vs: VarStore,
    /// The head.
    pub linear: nn::Linear,
}

impl LinearProbe {
    /// Logits for precomputed features.
    pub fn logits(&self, features: &Tensor) -> Tensor {
        self.linear.forward(&features.to_device(self.vs.device()))
    }

    /// Accuracy on precomputed features.
    pub fn accuracy(&self, features: &Tensor, labels: &Tensor) -> f64 {
        let _guard = tch::no_grad_guard();
        accuracy(&self.logits(features), labels)
    }
}

/// Frozen features of `images` through `features` (eval mode, no gradients).
pub fn extract(features: &dyn Fn(&Tensor) -> Tensor, images: &Tensor, device: Device) -> Tensor {
    map_batches(images, 512, device, features)
}

/// Trains a linear probe on `features(images)`.
///
/// Without augmentation in `cfg`, features are computed once and the head trains on
/// them (fast, the default here). With augmentation, every step re-encodes augmented
/// images, as in the papers' 100-epoch probe.
pub fn train_linear_probe(
    features: &dyn Fn(&Tensor) -> Tensor,
    images: &Tensor,
    labels: &Tensor,
    num_classes: i64,
    device: Device,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<(LinearProbe, TrainSummary), TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    if labels.size().first().copied().unwrap_or(0) != n {
        return Err(TrainError::Invalid(
            "images and labels differ in length".into(),
        ));
    }
    if n == 0 {
        return Err(TrainError::Empty("probe training"));
    }
    tch::manual_seed(cfg.seed as i64);
    let dim = {
        let _guard = tch::no_grad_guard();
        let x = to_unit_float(&images.narrow(0, 0, 1).to_device(device));
        features(&x).size().last().copied().unwrap_or(0)
    };
    let vs = VarStore::new(device);
    let linear = nn::linear(vs.root() / "probe", dim, num_classes, Default::default());
    let mut opt = cfg.build_optimizer(&vs)?;
    let labels = labels.to_device(device).to_kind(Kind::Int64);
    let summary = match &cfg.augment {
        None => {
            let feats = extract(features, images, device);
            let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
                let f = feats.index_select(0, idx);
                Ok(linear
                    .forward(&f)
                    .cross_entropy_for_logits(&labels.index_select(0, idx)))
            };
            run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?
        }
        Some(aug) => {
            let images = images.to_device(device);
            let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
                let x = aug.apply(&to_unit_float(&images.index_select(0, idx)));
                let f = {
                    let _guard = tch::no_grad_guard();
                    features(&x).detach()
                };
                Ok(linear
                    .forward(&f)
                    .cross_entropy_for_logits(&labels.index_select(0, idx)))
            };
            run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?
        }
    };
    Ok((LinearProbe { vs, linear }, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_a_linearly_separable_feature_and_leaves_the_encoder_alone() {
        tch::manual_seed(8);
        let n = 200;
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
        let x = (Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu)) * 0.05
            + y.to_kind(Kind::Float).view([n, 1, 1, 1]) * 0.3)
            .clamp(0.0, 1.0);
        // A fixed "encoder": its weights must not change during probing.
        let enc_vs = VarStore::new(Device::Cpu);
        let enc = nn::linear(enc_vs.root() / "enc", 4, 6, Default::default());
        let before = enc.ws.copy();
        let feat = |t: &Tensor| enc.forward(&t.flatten(1, -1));
        let cfg = TrainConfig {
            epochs: 30,
            batch_size: 50,
            lr: 0.5,
            weight_decay: 0.0,
            ..TrainConfig::default()
        };
        let (probe, _) =
            train_linear_probe(&feat, &x, &y, 3, Device::Cpu, &cfg, &mut |_| Flow::Continue)
                .unwrap();
        let acc = probe.accuracy(&extract(&feat, &x, Device::Cpu), &y);
        assert!(acc > 0.9, "probe accuracy {acc}");
        assert!(enc.ws.equal(&before));
    }
}
