//! SGD over the host model's parameters (PyTorch's `torch.optim.SGD` rule:
//! `d = g + wd·p; buf = μ·buf + d; p -= lr·buf`), with learning-rate schedules
//! and per-parameter 0/1 masks.
//!
//! A mask freezes weights *exactly*: where it is 0 the new value is selected
//! from the old one (`where(mask, p - lr·buf, p)`), and the momentum buffer keeps
//! its old entry, so neither the gradient, nor weight decay, nor momentum moves
//! them, not even by a rounding error or a sign of zero. (Multiplying the step by
//! the mask would not do: `-0.0 + 0.0` is `+0.0`, and `0 · inf` is NaN.) This is
//! what SalUn's saliency mask and a pruning mask need; the reference SalUn code
//! masked only the gradient, so weight decay and momentum still moved "frozen"
//! weights.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{self, Kind, Tensor};

/// One optional boolean mask per parameter (`true` = may change), aligned with
/// the parameter list; `None` = the whole tensor may change.
pub type Masks = Vec<Option<Tensor>>;

/// Learning rate over a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Cosine decay from the base rate to zero over all steps.
    Cosine,
    /// Multiplied by `gamma` at each milestone (fractions of the run), like the
    /// reference code's `MultiStepLR` at epochs 91 and 136 of 182.
    Step {
        /// Fractions of the run in `(0, 1)`.
        milestones: Vec<f64>,
        /// Factor applied at each milestone.
        gamma: f64,
    },
}

impl Schedule {
    /// From a schema choice: `constant`, `cosine` or `step` (×0.1 at 50 % and 75 %).
    pub fn from_name(name: &str) -> Result<Self, PluginError> {
        match name {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step {
                milestones: vec![0.5, 0.75],
                gamma: 0.1,
            }),
            other => Err(PluginError::msg(format!(
                "unknown schedule `{other}` (constant, cosine or step)"
            ))),
        }
    }

    /// Rate at step `step` (0-based) of `total`.
    pub fn rate(&self, base: f64, step: usize, total: usize) -> f64 {
        let progress = step as f64 / total.max(1) as f64;
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => 0.5 * base * (1.0 + (std::f64::consts::PI * progress).cos()),
            Schedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| progress >= m).count();
                base * gamma.powi(i32::try_from(passed).unwrap_or(i32::MAX))
            }
        }
    }
}

/// SGD hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0: none).
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

/// SGD over `(name, tensor)` parameters that share storage with the host model.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
    masks: Masks,
}

impl Sgd {
    /// An optimiser over `params` (e.g. from `ctx.model_parameters()`), unmasked.
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Self {
        let n = params.len();
        Sgd {
            config,
            params,
            buffers: (0..n).map(|_| None).collect(),
            masks: (0..n).map(|_| None).collect(),
        }
    }

    /// Restricts updates to where `masks` are true (see the module docs).
    pub fn with_masks(mut self, masks: Masks) -> Result<Self, PluginError> {
        check_masks(&self.params, &masks)?;
        self.masks = masks;
        Ok(self)
    }

    /// The parameters.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The masks (all `None` when unmasked).
    pub fn masks(&self) -> &Masks {
        &self.masks
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) -> Result<(), PluginError> {
        zero_grads(&self.params)
    }

    /// One step at rate `lr` from the gradients in `.grad()`; parameters without a
    /// gradient are left alone. Clears the gradients afterwards.
    pub fn step(&mut self, lr: f64) -> Result<(), PluginError> {
        let SgdConfig {
            momentum,
            weight_decay,
        } = self.config;
        tch::no_grad(|| -> Result<(), PluginError> {
            for ((p, buf), mask) in self
                .params
                .iter_mut()
                .map(|(_, p)| p)
                .zip(self.buffers.iter_mut())
                .zip(self.masks.iter())
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if weight_decay != 0.0 {
                    g.f_add(&p.f_mul_scalar(weight_decay)?)?
                } else {
                    g.f_detach_copy()?
                };
                if momentum != 0.0 {
                    let next = match buf.as_ref() {
                        Some(b) => b.f_mul_scalar(momentum)?.f_add(&d)?,
                        None => d.shallow_clone(),
                    };
                    let next = match (mask, buf.as_ref()) {
                        (Some(m), Some(b)) => next.f_where_self(m, b)?,
                        (Some(m), None) => next.f_where_self(m, &next.f_zeros_like()?)?,
                        (None, _) => next,
                    };
                    d = next.shallow_clone();
                    *buf = Some(next);
                }
                let stepped = p.f_sub(&d.f_mul_scalar(lr)?)?;
                let stepped = match mask {
                    Some(m) => stepped.f_where_self(m, p)?,
                    None => stepped,
                };
                p.f_copy_(&stepped)?;
            }
            Ok(())
        })?;
        self.zero_grad()
    }
}

/// One boolean mask of the parameter's shape (or `None`) per parameter.
pub(crate) fn check_masks(params: &[(String, Tensor)], masks: &Masks) -> Result<(), PluginError> {
    if masks.len() != params.len() {
        return Err(PluginError::msg(format!(
            "{} masks for {} parameters",
            masks.len(),
            params.len()
        )));
    }
    for ((name, p), m) in params.iter().zip(masks) {
        if let Some(m) = m
            && (m.size() != p.size() || m.kind() != Kind::Bool)
        {
            return Err(PluginError::msg(format!(
                "mask for `{name}` is {:?} {:?}, the parameter {:?}",
                m.kind(),
                m.size(),
                p.size()
            )));
        }
    }
    Ok(())
}

/// Clears the gradient of every parameter that has one.
pub(crate) fn zero_grads(params: &[(String, Tensor)]) -> Result<(), PluginError> {
    for (_, p) in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.f_zero_()?;
        }
    }
    Ok(())
}

/// Writes `new` into the parameters where `masks` allow (everywhere for `None`),
/// keeping the other entries bit-identical: for one-shot updates (noise, Newton
/// steps) under a pruning mask.
pub fn assign_masked(
    params: &[(String, Tensor)],
    new: &[Tensor],
    masks: &Masks,
) -> Result<(), PluginError> {
    tch::no_grad(|| -> Result<(), PluginError> {
        for (i, ((_, p), n)) in params.iter().zip(new).enumerate() {
            let mut p = p.shallow_clone();
            let value = match masks.get(i).and_then(Option::as_ref) {
                Some(m) => n.f_where_self(m, &p)?,
                None => n.shallow_clone(),
            };
            p.f_copy_(&value)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        Vec::<f32>::try_from(t.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    fn leaf(values: &Tensor) -> Tensor {
        values.detach().copy().set_requires_grad(true)
    }

    #[test]
    fn masked_weights_stay_bit_identical_under_momentum_and_weight_decay() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let init = Tensor::randn([64, 33], opts);
        // Negative zeros and huge values are where `p + 0·step` would go wrong.
        let _ = init.narrow(1, 0, 1).fill_(-0.0);
        let _ = init.narrow(1, 1, 1).fill_(3.0e38);
        let p = leaf(&init);
        let mask = Tensor::rand([64, 33], opts).gt(0.5);
        let _ = mask.narrow(1, 0, 2).fill_(0);
        let target = Tensor::randn([64, 33], opts);
        let mut sgd = Sgd::new(
            vec![("w".into(), p.shallow_clone())],
            SgdConfig {
                momentum: 0.9,
                weight_decay: 5e-4,
            },
        )
        .with_masks(vec![Some(mask.shallow_clone())])
        .unwrap();
        let before = bits(&init);
        for _ in 0..25 {
            let loss = (&p - &target).square().sum(Kind::Float) * 0.5;
            loss.backward();
            sgd.step(0.05).unwrap();
        }
        let after = bits(&p.detach());
        let keep = Vec::<bool>::try_from(mask.flatten(0, -1)).unwrap();
        let mut changed = 0;
        for ((b, a), k) in before.iter().zip(&after).zip(&keep) {
            if *k {
                changed += usize::from(a != b);
            } else {
                assert_eq!(a, b, "a masked weight moved");
            }
        }
        let free = keep.iter().filter(|&&k| k).count();
        assert!(
            free > 500 && changed == free,
            "{changed} of {free} free weights moved"
        );
        // The momentum buffer holds nothing where the mask is 0.
        let buf = sgd.buffers[0].as_ref().unwrap();
        let masked_buf = buf.masked_select(&mask.logical_not());
        assert_eq!(masked_buf.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn unmasked_sgd_follows_the_pytorch_rule() {
        let p = leaf(&Tensor::from_slice(&[1.0f32, -2.0]));
        let mut sgd = Sgd::new(
            vec![("w".into(), p.shallow_clone())],
            SgdConfig {
                momentum: 0.5,
                weight_decay: 0.1,
            },
        );
        // Gradient of sum(p) is 1 everywhere.
        let mut expect = [1.0f64, -2.0];
        let mut buf = [0.0f64; 2];
        for step in 0..3 {
            p.sum(Kind::Float).backward();
            sgd.step(0.1).unwrap();
            for i in 0..2 {
                let d = 1.0 + 0.1 * expect[i];
                buf[i] = if step == 0 { d } else { 0.5 * buf[i] + d };
                expect[i] -= 0.1 * buf[i];
            }
        }
        let got = Vec::<f64>::try_from(p.detach().to_kind(Kind::Double)).unwrap();
        for (g, e) in got.iter().zip(expect) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.rate(0.1, 5, 10), 0.1);
        assert!((Schedule::Cosine.rate(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert_eq!(Schedule::Cosine.rate(0.1, 0, 10), 0.1);
        let step = Schedule::from_name("step").unwrap();
        assert_eq!(step.rate(1.0, 4, 10), 1.0);
        assert!((step.rate(1.0, 5, 10) - 0.1).abs() < 1e-12);
        assert!((step.rate(1.0, 8, 10) - 0.01).abs() < 1e-12);
        assert!(Schedule::from_name("nope").is_err());
    }

    #[test]
    fn assign_masked_keeps_masked_entries() {
        let p = Tensor::from_slice(&[-0.0f32, 1.0, 2.0]);
        let new = Tensor::from_slice(&[5.0f32, 6.0, 7.0]);
        let mask = Tensor::from_slice(&[false, true, false]);
        assign_masked(
            &[("w".into(), p.shallow_clone())],
            &[new],
            &vec![Some(mask)],
        )
        .unwrap();
        assert_eq!(
            bits(&p),
            vec![(-0.0f32).to_bits(), 6.0f32.to_bits(), 2.0f32.to_bits()]
        );
    }
}
