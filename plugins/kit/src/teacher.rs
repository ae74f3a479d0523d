//! Teachers inside a plugin. The host runs one model; methods that distil from
//! a frozen copy of it (SCRUB, Bad Teacher) or from another set of weights (an
//! incompetent, randomly initialised teacher) keep those weights here and swap
//! them into the host model's parameter storage for one forward pass, without
//! gradients, then swap the live weights back. The same snapshots serve to
//! rewind the model to an earlier state.
//!
//! What the swap cannot separate: normalisation buffers (BatchNorm running
//! statistics) are not parameters. The teacher pass runs in eval mode, as the
//! reference code's teachers do, so it reads the live model's running
//! statistics (which the student's train-mode passes move) instead of the
//! teacher's own. Models without normalisation buffers (the demo's CNN and MLP)
//! are unaffected.

use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError};
use lethe_plugin_api::tch::{self, Kind, Tensor};

/// A set of values for the model's parameters, kept apart from the model.
#[derive(Debug)]
pub struct FrozenWeights {
    live: Vec<Tensor>,
    values: Vec<Tensor>,
}

impl FrozenWeights {
    /// A copy of the current values of `params` (which share storage with the
    /// host model).
    pub fn capture(params: &[(String, Tensor)]) -> Result<Self, PluginError> {
        let live: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let values = tch::no_grad(|| -> Result<Vec<Tensor>, PluginError> {
            live.iter().map(|p| Ok(p.f_detach_copy()?)).collect()
        })?;
        Ok(FrozenWeights { live, values })
    }

    /// Other values for `params` (one tensor per parameter, same shapes).
    pub fn from_values(
        params: &[(String, Tensor)],
        values: Vec<Tensor>,
    ) -> Result<Self, PluginError> {
        if values.len() != params.len() {
            return Err(PluginError::msg(format!(
                "{} teacher tensors for {} parameters",
                values.len(),
                params.len()
            )));
        }
        for ((name, p), v) in params.iter().zip(&values) {
            if p.size() != v.size() {
                return Err(PluginError::msg(format!(
                    "teacher tensor for `{name}` has shape {:?}, the parameter {:?}",
                    v.size(),
                    p.size()
                )));
            }
        }
        let values = tch::no_grad(|| -> Result<Vec<Tensor>, PluginError> {
            values
                .iter()
                .zip(params)
                .map(|(v, (_, p))| Ok(v.f_to_kind(p.kind())?.f_to_device(p.device())?))
                .collect()
        })?;
        Ok(FrozenWeights {
            live: params.iter().map(|(_, p)| p.shallow_clone()).collect(),
            values,
        })
    }

    /// The kept values, in parameter order.
    pub fn values(&self) -> &[Tensor] {
        &self.values
    }

    /// `head` of the model at these weights on `x`, in eval mode and without
    /// gradients; the live weights are back in place afterwards. Leaves the
    /// model in eval mode: switch it back to train mode before a student pass.
    /// Must run before the student pass of the same step: the swap bumps the
    /// parameters' versions, which would invalidate a graph already built on
    /// them.
    pub fn forward(
        &self,
        ctx: &mut HostContext,
        head: ModelHead,
        x: &Tensor,
    ) -> Result<Tensor, PluginError> {
        ctx.model_set_train(false)?;
        tch::no_grad(|| -> Result<Tensor, PluginError> {
            let saved: Vec<Tensor> = self
                .live
                .iter()
                .map(|p| Ok(p.f_detach_copy()?))
                .collect::<Result<_, PluginError>>()?;
            load(&self.live, &self.values)?;
            let out = ctx.model_forward(head, x);
            load(&self.live, &saved)?;
            out
        })
    }

    /// Writes these values into the model (e.g. to rewind it).
    pub fn load_into_model(&self) -> Result<(), PluginError> {
        tch::no_grad(|| load(&self.live, &self.values))
    }
}

fn load(live: &[Tensor], values: &[Tensor]) -> Result<(), PluginError> {
    for (p, v) in live.iter().zip(values) {
        p.shallow_clone().f_copy_(v)?;
    }
    Ok(())
}

/// Hinton's distillation loss as RepDistiller's `DistillKL` (used by SCRUB's
/// reference code) computes it: `Σ_batch KL(softmax(t/T) ‖ softmax(s/T)) · T² / B`
/// for student logits `s` and teacher logits `t` (`[B, C]`).
pub fn distill_kl(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    let b = student.size().first().copied().unwrap_or(1).max(1) as f64;
    let log_s = student
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let log_t = teacher
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let kl = log_t.f_exp()?.f_mul(&log_t.f_sub(&log_s)?)?;
    Ok(kl
        .f_sum(Kind::Float)?
        .f_mul_scalar(temperature * temperature / b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distillation_is_zero_for_equal_logits_and_positive_otherwise() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 0.5, -1.0]).view([2, 3]);
        let b = Tensor::from_slice(&[3.0f32, 2.0, 1.0, 0.0, 0.5, -1.0]).view([2, 3]);
        assert!(distill_kl(&a, &a, 4.0).unwrap().double_value(&[]).abs() < 1e-7);
        // Only the first row differs: KL of the reversed softmax at T = 1, over B = 2.
        let p: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let z: f64 = p.iter().sum();
        let (ps, pt): (Vec<f64>, Vec<f64>) = (
            p.iter().map(|x| x / z).collect(),
            p.iter().rev().map(|x| x / z).collect(),
        );
        let kl: f64 = pt.iter().zip(&ps).map(|(t, s)| t * (t / s).ln()).sum();
        let got = distill_kl(&a, &b, 1.0).unwrap().double_value(&[]);
        assert!((got - kl / 2.0).abs() < 1e-5, "{got} vs {}", kl / 2.0);
    }

    #[test]
    fn capture_and_load_restore_the_values() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let params = vec![("w".to_string(), p.shallow_clone())];
        let frozen = FrozenWeights::capture(&params).unwrap();
        tch::no_grad(|| {
            let _ = p
                .shallow_clone()
                .f_copy_(&Tensor::from_slice(&[5.0f32, 6.0]));
        });
        frozen.load_into_model().unwrap();
        assert_eq!(Vec::<f32>::try_from(p.detach()).unwrap(), vec![1.0, 2.0]);
        let bad = FrozenWeights::from_values(
            &params,
            vec![Tensor::zeros([3], (Kind::Float, tch::Device::Cpu))],
        );
        assert!(bad.is_err());
    }
}
