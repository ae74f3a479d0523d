//! Adam over the host model's parameters, with PyTorch's update rule (L2 weight
//! decay added to the gradient, bias-corrected moments, `eps` outside the square
//! root), so that a model trained by `lethe train --adam` can be retrained by a
//! plugin with the same optimiser. Masks freeze weights exactly, as in
//! [`crate::optim::Sgd`]: where a mask is 0 neither the weight nor its moments
//! change.

use crate::optim::Masks;
use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{self, Tensor};

/// Adam hyperparameters (PyTorch's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 weight decay added to the gradient (not AdamW's decoupled decay).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moment of one parameter.
#[derive(Debug)]
struct Moments {
    m: Tensor,
    v: Tensor,
}

/// Adam over `(name, tensor)` parameters that share storage with the host model.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    moments: Vec<Option<Moments>>,
    masks: Masks,
    steps: i32,
}

impl Adam {
    /// An optimiser over `params` (e.g. from `ctx.model_parameters()`), unmasked.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let n = params.len();
        Adam {
            config,
            params,
            moments: (0..n).map(|_| None).collect(),
            masks: (0..n).map(|_| None).collect(),
            steps: 0,
        }
    }

    /// Restricts updates to where `masks` are true.
    pub fn with_masks(mut self, masks: Masks) -> Result<Self, PluginError> {
        crate::optim::check_masks(&self.params, &masks)?;
        self.masks = masks;
        Ok(self)
    }

    /// The parameters.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) -> Result<(), PluginError> {
        crate::optim::zero_grads(&self.params)
    }

    /// One step at rate `lr` from the gradients in `.grad()`; parameters without a
    /// gradient are left alone (their moments too, as in PyTorch). Clears the
    /// gradients afterwards.
    pub fn step(&mut self, lr: f64) -> Result<(), PluginError> {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        self.steps = self.steps.saturating_add(1);
        let correction1 = 1.0 - beta1.powi(self.steps);
        let correction2_sqrt = (1.0 - beta2.powi(self.steps)).sqrt();
        tch::no_grad(|| -> Result<(), PluginError> {
            for (((_, p), state), mask) in self
                .params
                .iter_mut()
                .zip(self.moments.iter_mut())
                .zip(self.masks.iter())
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = if weight_decay != 0.0 {
                    g.f_add(&p.f_mul_scalar(weight_decay)?)?
                } else {
                    g.f_detach_copy()?
                };
                let (m, v) = match state.as_ref() {
                    Some(s) => (s.m.shallow_clone(), s.v.shallow_clone()),
                    None => (g.f_zeros_like()?, g.f_zeros_like()?),
                };
                let m_next = m
                    .f_mul_scalar(beta1)?
                    .f_add(&g.f_mul_scalar(1.0 - beta1)?)?;
                let v_next = v
                    .f_mul_scalar(beta2)?
                    .f_add(&g.f_mul(&g)?.f_mul_scalar(1.0 - beta2)?)?;
                let denom = v_next
                    .f_sqrt()?
                    .f_div_scalar(correction2_sqrt)?
                    .f_add_scalar(eps)?;
                let stepped = p.f_sub(&m_next.f_div(&denom)?.f_mul_scalar(lr / correction1)?)?;
                let (m_next, v_next, stepped) = match mask {
                    Some(k) => (
                        m_next.f_where_self(k, &m)?,
                        v_next.f_where_self(k, &v)?,
                        stepped.f_where_self(k, p)?,
                    ),
                    None => (m_next, v_next, stepped),
                };
                p.f_copy_(&stepped)?;
                *state = Some(Moments {
                    m: m_next,
                    v: v_next,
                });
            }
            Ok(())
        })?;
        self.zero_grad()
    }
}

/// Checked by the tests against libtorch's own `torch::optim::Adam` (through
/// `tch::nn::Adam`), the implementation `lethe train --adam` uses.
#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::nn::{self, OptimizerConfig};
    use lethe_plugin_api::tch::{Device, Kind};

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.detach().flatten(0, -1).to_kind(Kind::Double)).unwrap()
    }

    /// A small least-squares problem: the same loss on both optimisers' copies.
    fn loss(w: &Tensor, b: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
        (x.matmul(w) + b - y).square().mean(Kind::Float)
    }

    #[test]
    fn follows_libtorch_adam_with_weight_decay() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([32, 6], opts);
        let y = Tensor::randn([32, 2], opts);
        let vs = nn::VarStore::new(Device::Cpu);
        let w_ref = vs.root().randn("w", &[6, 2], 0.0, 1.0);
        let b_ref = vs.root().zeros("b", &[2]);
        let wd = 0.01;
        let mut reference = nn::Adam {
            beta1: 0.9,
            beta2: 0.999,
            wd,
            eps: 1e-8,
            amsgrad: false,
        }
        .build(&vs, 0.05)
        .unwrap();
        let start = values(&w_ref);
        let w = w_ref.detach().copy().set_requires_grad(true);
        let b = b_ref.detach().copy().set_requires_grad(true);
        let mut ours = Adam::new(
            vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            AdamConfig {
                weight_decay: wd,
                ..AdamConfig::default()
            },
        );
        // Rates change between steps, as under a schedule.
        for step in 0..40 {
            let lr = 0.05 * (1.0 - step as f64 / 50.0);
            reference.set_lr(lr);
            reference.backward_step(&loss(&w_ref, &b_ref, &x, &y));
            loss(&w, &b, &x, &y).backward();
            ours.step(lr).unwrap();
        }
        assert!(start.iter().zip(values(&w)).all(|(a, b)| a != &b));
        for (a, b) in [(&w_ref, &w), (&b_ref, &b)] {
            for (r, o) in values(a).iter().zip(values(b)) {
                assert!((r - o).abs() < 1e-5, "libtorch {r} vs ours {o}");
            }
        }
    }

    #[test]
    fn masked_weights_and_their_moments_stay_put() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let p = Tensor::randn([8, 8], opts).set_requires_grad(true);
        let before = values(&p);
        let mask = Tensor::rand([8, 8], opts).gt(0.5);
        let mut adam = Adam::new(vec![("p".into(), p.shallow_clone())], AdamConfig::default())
            .with_masks(vec![Some(mask.shallow_clone())])
            .unwrap();
        for _ in 0..5 {
            p.square().sum(Kind::Float).backward();
            adam.step(0.1).unwrap();
        }
        let keep = Vec::<bool>::try_from(mask.flatten(0, -1)).unwrap();
        let after = values(&p);
        for ((b, a), k) in before.iter().zip(&after).zip(&keep) {
            if *k {
                assert_ne!(a, b, "a free weight did not move");
            } else {
                assert_eq!(a, b, "a masked weight moved");
            }
        }
        let m = &adam.moments[0].as_ref().unwrap().m;
        let frozen = m.masked_select(&mask.logical_not());
        assert_eq!(frozen.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
