//! The contrastive unlearning loss of Lee et al. on one forget batch against one
//! retain batch, as a pure function of embeddings and labels.
//!
//! With L2-normalised embeddings and `S = z_u z_rᵀ / τ`, each forget sample `i`
//! contributes `−mean_{j∈N_i} S_ij + log Σ_{j∈P_i} exp S_ij`, where `P_i` are the
//! retain samples of its class and `N_i` those of other classes: minimising it
//! pulls the sample towards other classes and pushes it away from its own. In
//! class unlearning `P_i` is empty (the retain set has no sample of the forgotten
//! class) and the second term is 0, which is the reference code's
//! `log(1 + Σ_{P_i} …)` with nothing to sum. The reference subtracts each row's
//! maximum first, for numerical stability only; `logsumexp` does that here.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Kind, Tensor};

/// Rows scaled to unit L2 norm.
pub fn normalize(z: &Tensor) -> Result<Tensor, PluginError> {
    let norm = z
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(z.f_div(&norm)?)
}

/// The loss and its two parts, each a mean over the forget rows.
#[derive(Debug)]
pub struct Terms {
    /// `pull + push`.
    pub loss: Tensor,
    /// `−mean_{N_i} S_ij`: towards other classes.
    pub pull: Tensor,
    /// `log Σ_{P_i} exp S_ij` (0 when `P_i` is empty): away from its own class.
    pub push: Tensor,
}

/// The loss of forget embeddings `z_u` (`[Bu, D]`, labels `y_u`) against retain
/// embeddings `z_r` (`[Br, D]`, labels `y_r`) at temperature `tau`.
pub fn contrastive_unlearning_loss(
    z_u: &Tensor,
    y_u: &Tensor,
    z_r: &Tensor,
    y_r: &Tensor,
    tau: f64,
) -> Result<Terms, PluginError> {
    let s = normalize(z_u)?
        .f_matmul(&normalize(z_r)?.f_tr()?)?
        .f_div_scalar(tau)?;
    let same = y_u.f_unsqueeze(1)?.f_eq_tensor(&y_r.f_unsqueeze(0)?)?;
    let diff = same.f_logical_not()?;
    let n_diff = diff
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
        .f_clamp_min(1.0)?;
    let pull = s
        .f_mul(&diff.f_to_kind(s.kind())?)?
        .f_sum_dim_intlist([1i64].as_slice(), false, s.kind())?
        .f_div(&n_diff)?
        .f_neg()?;
    // A finite fill, not -inf: a row with no same-class sample must give a
    // finite log-sum-exp, or its (discarded) gradient would be NaN and leak.
    let masked = s.f_masked_fill(&diff, -1e4)?;
    let lse = masked.f_logsumexp([1i64].as_slice(), false)?;
    let has_same = same.f_any_dim(1, false)?;
    let push = lse.f_where_self(&has_same, &lse.f_zeros_like()?)?;
    let pull = pull.f_mean(Kind::Float)?;
    let push = push.f_mean(Kind::Float)?;
    Ok(Terms {
        loss: pull.f_add(&push)?,
        pull,
        push,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn hand_computed_sample_unlearning() {
        // Forget: u0 = e1 (class 0), u1 = e2 (class 1). Retain: r0 = e1 (class 0),
        // r1 = e2 (class 1), r2 = (1,1)/√2 (class 0). τ = 0.5.
        let z_u = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0]).view([2, 2]);
        let y_u = Tensor::from_slice(&[0i64, 1]);
        let z_r = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 5.0, 5.0]).view([3, 2]);
        let y_r = Tensor::from_slice(&[0i64, 1, 0]);
        let t = contrastive_unlearning_loss(&z_u, &y_u, &z_r, &y_r, 0.5).unwrap();
        let c = std::f64::consts::FRAC_1_SQRT_2;
        // u0: S = (1, 0, c)/0.5 = (2, 0, 2c). Same class {r0, r2}, other {r1}.
        let pull0 = -0.0;
        let push0 = (2f64.exp() + (2.0 * c).exp()).ln();
        // u1: S = (0, 2, 2c). Same {r1}, other {r0, r2}.
        let pull1 = -(0.0 + 2.0 * c) / 2.0;
        let push1 = 2.0;
        let (pull, push) = ((pull0 + pull1) / 2.0, (push0 + push1) / 2.0);
        assert!((v(&t.pull) - pull).abs() < 1e-5, "{} vs {pull}", v(&t.pull));
        assert!((v(&t.push) - push).abs() < 1e-5, "{} vs {push}", v(&t.push));
        assert!((v(&t.loss) - (pull + push)).abs() < 1e-5);
    }

    #[test]
    fn class_unlearning_has_no_push_term_and_finite_gradients() {
        // Forget class 2 only; the retain batch has classes 0 and 1.
        let z_u = Tensor::from_slice(&[1.0f32, 1.0, -1.0, 2.0])
            .view([2, 2])
            .set_requires_grad(true);
        let y_u = Tensor::from_slice(&[2i64, 2]);
        let z_r = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let y_r = Tensor::from_slice(&[0i64, 1]);
        let t = contrastive_unlearning_loss(&z_u, &y_u, &z_r, &y_r, 0.7).unwrap();
        assert_eq!(v(&t.push), 0.0);
        // pull: −mean over both retain rows of cos/τ, per forget row.
        let c0 = (1.0 / 2f64.sqrt() + 1.0 / 2f64.sqrt()) / 2.0 / 0.7;
        let c1 = (-1.0 / 5f64.sqrt() + 2.0 / 5f64.sqrt()) / 2.0 / 0.7;
        assert!((v(&t.pull) + (c0 + c1) / 2.0).abs() < 1e-5);
        t.loss.backward();
        let g = Vec::<f32>::try_from(z_u.grad().flatten(0, -1)).unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }

    #[test]
    fn minimising_it_moves_a_forget_embedding_to_another_class() {
        // One forget sample of class 0 near the class-0 retain cluster; a few steps
        // of gradient descent on the loss move it closer to class 1.
        let z = Tensor::from_slice(&[1.0f32, 0.1])
            .view([1, 2])
            .set_requires_grad(true);
        let y_u = Tensor::from_slice(&[0i64]);
        let z_r = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0]).view([3, 2]);
        let y_r = Tensor::from_slice(&[0i64, 0, 1]);
        let cos_to_class1 = |z: &Tensor| v(&normalize(&z.detach()).unwrap().get(0).get(1));
        let before = cos_to_class1(&z);
        for _ in 0..50 {
            let t = contrastive_unlearning_loss(&z, &y_u, &z_r, &y_r, 0.7).unwrap();
            t.loss.backward();
            lethe_plugin_api::tch::no_grad(|| {
                let mut z = z.shallow_clone();
                let _ = z.f_sub_(&z.grad().f_mul_scalar(0.5).unwrap()).unwrap();
                let _ = z.grad().zero_();
            });
        }
        assert!(
            cos_to_class1(&z) > before + 0.5,
            "{before} -> {}",
            cos_to_class1(&z)
        );
    }
}
