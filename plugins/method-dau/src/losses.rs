//! The pieces of Discriminative Adversarial Unlearning's objective as pure
//! functions of tensors: the Barlow-Twins cross-correlation regulariser between
//! forget and validation features and the defender's total. The attacker's
//! inputs (softmax, sensitivity to input noise, one-hot label) and its
//! membership loss live with the attacker in `lethe_attack_kit::transformer`,
//! shared with the transformer attack plugin.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Kind, Tensor};

/// The Barlow-Twins regulariser between `a` and `b` (`[B, D]`, row `i` of each
/// paired): with mean-centred features and
/// `C_ij = Σ_b a_bi b_bj / (√(Σ_b a_bi²) √(Σ_b b_bj²))`,
/// `Σ_i (1 − C_ii)² + λ_off · Σ_i Σ_{j≠i} C_ij²`. Features that are constant over
/// the batch (dead units) get a zero column instead of 0/0.
pub fn barlow_twins(a: &Tensor, b: &Tensor, off_diagonal: f64) -> Result<Tensor, PluginError> {
    let centre = |z: &Tensor| -> Result<Tensor, PluginError> {
        let z = z.f_to_kind(Kind::Float)?;
        let mean = z.f_mean_dim([0i64].as_slice(), true, Kind::Float)?;
        let z = z.f_sub(&mean)?;
        let norm = z
            .f_square()?
            .f_sum_dim_intlist([0i64].as_slice(), true, Kind::Float)?
            .f_add_scalar(1e-12)?
            .f_sqrt()?;
        Ok(z.f_div(&norm)?)
    };
    let c = centre(a)?.f_tr()?.f_matmul(&centre(b)?)?;
    let d = c.size().first().copied().unwrap_or(0);
    let eye = Tensor::f_eye(d, (Kind::Float, c.device()))?;
    let on = c
        .f_diagonal(0, 0, 1)?
        .f_sub_scalar(1.0)?
        .f_square()?
        .f_sum(Kind::Float)?;
    let off = c
        .f_mul(&eye.f_neg()?.f_add_scalar(1.0)?)?
        .f_square()?
        .f_sum(Kind::Float)?;
    Ok(on.f_add(&off.f_mul_scalar(off_diagonal)?)?)
}

/// How the defender opposes the attacker (§3.3 of the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opposition {
    /// Eq. (1): maximise the attacker's loss, `− λ·L_A`.
    MinMax,
    /// The practical variant the paper suggests against weak gradients: make the
    /// forget samples look like non-members, `+ λ·CE(A(forget), non-member)`.
    Flipped,
}

/// The defender's loss: `CE(retain) ∓ λ·attack_term + w·L_BT`, where
/// `attack_term` is the attacker's membership loss ([`Opposition::MinMax`],
/// subtracted) or the flipped-label loss on forget samples
/// ([`Opposition::Flipped`], added).
pub fn defender_loss(
    retain_ce: &Tensor,
    attack_term: &Tensor,
    barlow: &Tensor,
    lambda: f64,
    barlow_weight: f64,
    opposition: Opposition,
) -> Result<Tensor, PluginError> {
    let signed = match opposition {
        Opposition::MinMax => -lambda,
        Opposition::Flipped => lambda,
    };
    Ok(retain_ce
        .f_add(&attack_term.f_mul_scalar(signed)?)?
        .f_add(&barlow.f_mul_scalar(barlow_weight)?)?)
}

/// λ at defender iteration `iteration` (0-based): the paper sets λ to 0 after the
/// first `off_after` iterations of class-wise forgetting, when forgetting the
/// class is done and only utility remains to recover.
pub fn lambda_at(lambda: f64, iteration: usize, class_forgetting: bool, off_after: usize) -> f64 {
    if class_forgetting && iteration >= off_after {
        0.0
    } else {
        lambda
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn barlow_twins_by_hand() {
        // a = columns (1,2,3) and (1,0,−1): centred (−1,0,1) and (1,0,−1), unit
        // norm √2. b = columns (0,0,3) and (2,4,6): centred (−1,−1,2)/√6·… and
        // (−2,0,2)/√8. C = [[cos(a0,b0), cos(a0,b1)], [cos(a1,b0), cos(a1,b1)]].
        let a = Tensor::from_slice(&[1.0f32, 1.0, 2.0, 0.0, 3.0, -1.0]).view([3, 2]);
        let b = Tensor::from_slice(&[0.0f32, 2.0, 0.0, 4.0, 3.0, 6.0]).view([3, 2]);
        let cos = |x: [f64; 3], y: [f64; 3]| {
            let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
            let n = |z: [f64; 3]| z.iter().map(|t| t * t).sum::<f64>().sqrt();
            dot / (n(x) * n(y))
        };
        let (a0, a1) = ([-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]);
        let (b0, b1) = ([-1.0, -1.0, 2.0], [-2.0, 0.0, 2.0]);
        let c = [[cos(a0, b0), cos(a0, b1)], [cos(a1, b0), cos(a1, b1)]];
        let want = (1.0 - c[0][0]).powi(2)
            + (1.0 - c[1][1]).powi(2)
            + 5e-3 * (c[0][1].powi(2) + c[1][0].powi(2));
        let got = v(&barlow_twins(&a, &b, 5e-3).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Identical inputs with decorrelated features: zero.
        let z = Tensor::from_slice(&[1.0f32, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0]).view([4, 2]);
        assert!(v(&barlow_twins(&z, &z, 5e-3).unwrap()).abs() < 1e-6);
    }

    #[test]
    fn barlow_twins_is_finite_on_dead_features() {
        let a = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 2.0])
            .view([2, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 1.0]).view([2, 2]);
        let l = barlow_twins(&a, &b, 5e-3).unwrap();
        l.backward();
        assert!(v(&l).is_finite());
        assert!(values(&a.grad()).iter().all(|g| g.is_finite()));
    }

    #[test]
    fn defender_loss_and_lambda_schedule() {
        let (ce, att, bt) = (
            Tensor::from(0.5f32),
            Tensor::from(0.7f32),
            Tensor::from(2.0f32),
        );
        let m = v(&defender_loss(&ce, &att, &bt, 2.0, 0.1, Opposition::MinMax).unwrap());
        assert!((m - (0.5 - 1.4 + 0.2)).abs() < 1e-6);
        let f = v(&defender_loss(&ce, &att, &bt, 2.0, 0.1, Opposition::Flipped).unwrap());
        assert!((f - (0.5 + 1.4 + 0.2)).abs() < 1e-6);
        assert_eq!(lambda_at(1.0, 29, true, 30), 1.0);
        assert_eq!(lambda_at(1.0, 30, true, 30), 0.0);
        assert_eq!(lambda_at(1.0, 300, false, 30), 1.0);
    }
}
