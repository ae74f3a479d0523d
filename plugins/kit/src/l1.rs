//! The l1-sparse penalty of Jia et al. (NeurIPS 2023): fine-tune on the retain
//! set with `α_t · ‖θ‖₁` added to the loss, `α_t` decaying linearly to zero.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Kind, Tensor};

/// `‖θ‖₁` over all parameters, differentiable (its gradient is `sign(θ)`).
pub fn l1_norm(params: &[(String, Tensor)]) -> Result<Tensor, PluginError> {
    let mut total: Option<Tensor> = None;
    for (_, p) in params {
        let s = p.f_abs()?.f_sum(Kind::Float)?;
        total = Some(match total {
            Some(t) => t.f_add(&s)?,
            None => s,
        });
    }
    total.ok_or_else(|| PluginError::msg("the model has no parameters"))
}

/// The reference schedule: `α (1 − epoch / (E − no_l1_epochs))` for the first
/// `E − no_l1_epochs` epochs (0-based `epoch`), zero afterwards.
pub fn l1_coefficient(alpha: f64, epoch: usize, epochs: usize, no_l1_epochs: usize) -> f64 {
    let span = epochs.saturating_sub(no_l1_epochs);
    if epoch < span {
        alpha * (1.0 - epoch as f64 / span as f64)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficient_decays_linearly_then_stops() {
        let c: Vec<f64> = (0..6).map(|e| l1_coefficient(1.0, e, 6, 2)).collect();
        assert_eq!(c, vec![1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        assert_eq!(l1_coefficient(0.5, 0, 1, 0), 0.5);
        assert_eq!(l1_coefficient(0.5, 0, 1, 1), 0.0);
    }

    #[test]
    fn norm_and_gradient() {
        let p = Tensor::from_slice(&[1.5f32, -2.0, 0.25]).set_requires_grad(true);
        let n = l1_norm(&[("w".into(), p.shallow_clone())]).unwrap();
        assert!((n.double_value(&[]) - 3.75).abs() < 1e-6);
        n.backward();
        assert_eq!(
            Vec::<f32>::try_from(p.grad()).unwrap(),
            vec![1.0, -1.0, 1.0]
        );
    }
}
