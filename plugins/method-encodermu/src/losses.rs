//! The three terms of EncoderMU's loss, eq. (2) of the paper:
//! `L = α·L_MEMtrain + β·L_GP + γ·L_Norm`, each a pure function of tensors.
//!
//! * `L_MEMtrain`: the model's own training loss on member data (cross-entropy or
//!   InfoNCE); it comes from [`lethe_plugin_kit::Objective`], not from here.
//! * `L_GP`, eq. (1): the WGAN-GP penalty `mean_i (‖∇_z D(z_i)‖₂ − 1)²` at points
//!   `z_i` interpolated between a member (forget) and a non-member input. The paper
//!   lets the model being unlearned play WGAN's critic `D`, members standing for
//!   "real" and non-members for "fake" samples; its output is a vector, so, as
//!   WGAN-GP code does with `grad_outputs = ones`, the gradient taken is that of the
//!   sum of its outputs.
//! * `L_Norm`: the mean L2 norm of the model's outputs on member data, which lowers
//!   its prediction confidence.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Kind, Tensor};

/// `t·members + (1 − t)·non_members` per sample; `t` is `[B]` in `[0, 1]`, the
/// inputs `[B, ...]` of one shape.
pub fn interpolate(
    members: &Tensor,
    non_members: &Tensor,
    t: &Tensor,
) -> Result<Tensor, PluginError> {
    if members.size() != non_members.size() {
        return Err(PluginError::msg(format!(
            "cannot interpolate between inputs of shapes {:?} and {:?}",
            members.size(),
            non_members.size()
        )));
    }
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, members.dim().saturating_sub(1)));
    let t = t.f_to_kind(members.kind())?.f_view(shape.as_slice())?;
    Ok(non_members.f_add(&t.f_mul(&members.f_sub(non_members)?)?)?)
}

/// `mean_i (‖g_i‖₂ − 1)²` over the rows of per-sample gradients `g` (`[B, ...]`).
pub fn penalty_from_gradients(gradients: &Tensor) -> Result<Tensor, PluginError> {
    let norms = row_norms(gradients)?;
    Ok(norms.f_sub_scalar(1.0)?.f_square()?.f_mean(Kind::Float)?)
}

/// L2 norm of each row, `sqrt(Σ x² + 1e-12)`: the tiny floor keeps the
/// derivative finite at a zero row (dead ReLU features, a flat critic), where
/// `x/‖x‖` is 0/0 and one NaN would poison every weight.
fn row_norms(x: &Tensor) -> Result<Tensor, PluginError> {
    Ok(x.f_flatten(1, -1)?
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
        .f_add_scalar(1e-12)?
        .f_sqrt()?)
}

/// The WGAN-GP term at the points `z` (`[B, ...]`, detached): runs `critic` on them
/// and differentiates the sum of its outputs with respect to `z`, keeping the graph
/// so that the penalty itself can be back-propagated into the critic's parameters.
pub fn gradient_penalty<F>(z: &Tensor, mut critic: F) -> Result<Tensor, PluginError>
where
    F: FnMut(&Tensor) -> Result<Tensor, PluginError>,
{
    let z = z.f_detach()?.set_requires_grad(true);
    let out = critic(&z)?;
    if !out.requires_grad() {
        return Err(PluginError::msg(
            "the critic's output does not depend on its input through autograd \
             (is the model in eval mode?)",
        ));
    }
    let total = out.f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&total], &[&z], true, true)?;
    let g = grads
        .into_iter()
        .next()
        .ok_or_else(|| PluginError::msg("autograd returned no gradient for the critic input"))?;
    penalty_from_gradients(&g)
}

/// Mean over rows of the L2 norm of `outputs` (`[B, D]`, or any `[B, ...]`).
pub fn mean_output_norm(outputs: &Tensor) -> Result<Tensor, PluginError> {
    Ok(row_norms(outputs)?.f_mean(Kind::Float)?)
}

/// Coefficients of eq. (2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// α, on the member training loss.
    pub member: f64,
    /// β, on the gradient penalty.
    pub penalty: f64,
    /// γ, on the output norm.
    pub norm: f64,
}

/// `α·member + β·penalty + γ·norm`.
pub fn total(
    w: &Weights,
    member: &Tensor,
    penalty: &Tensor,
    norm: &Tensor,
) -> Result<Tensor, PluginError> {
    Ok(member
        .f_mul_scalar(w.member)?
        .f_add(&penalty.f_mul_scalar(w.penalty)?)?
        .f_add(&norm.f_mul_scalar(w.norm)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn interpolation_is_per_sample() {
        let m = Tensor::from_slice(&[1.0f32, 1.0, 10.0, 10.0]).view([2, 1, 2]);
        let n = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 2.0]).view([2, 1, 2]);
        let t = Tensor::from_slice(&[0.25f32, 0.5]);
        let z = interpolate(&m, &n, &t).unwrap();
        assert_eq!(values(&z), vec![0.25, 0.25, 5.0, 6.0]);
        assert!(interpolate(&m, &n.view([1, 4]), &t).is_err());
    }

    #[test]
    fn penalty_of_hand_computed_gradients() {
        // Rows (3, 4) and (0, 0.5): norms 5 and 0.5, penalties 16 and 0.25.
        let g = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.5]).view([2, 2]);
        assert!((scalar(&penalty_from_gradients(&g).unwrap()) - 8.125).abs() < 1e-6);
    }

    #[test]
    fn gradient_penalty_of_a_linear_and_a_quadratic_critic() {
        // D(z) = z·W with W 2×3: ∇_z Σ_k D_k = row sums of W, the same for every
        // sample: (1+2+0, 0+0+2) = (3, 2), norm √13.
        let w = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 0.0, 0.0, 2.0]).view([2, 3]);
        let z = Tensor::from_slice(&[0.3f32, -1.0, 2.0, 5.0]).view([2, 2]);
        let gp = gradient_penalty(&z, |z| Ok(z.matmul(&w))).unwrap();
        let want = (13f64.sqrt() - 1.0).powi(2);
        assert!(
            (scalar(&gp) - want).abs() < 1e-5,
            "{} vs {want}",
            scalar(&gp)
        );

        // D(z) = Σ_k z_k² : gradient 2z; rows (0.3, -1) → norm 2·√1.09, (2, 5) → 2·√29.
        let gp = gradient_penalty(&z, |z| Ok(z.square())).unwrap();
        let want =
            ((2.0 * 1.09f64.sqrt() - 1.0).powi(2) + (2.0 * 29f64.sqrt() - 1.0).powi(2)) / 2.0;
        assert!(
            (scalar(&gp) - want).abs() < 1e-4,
            "{} vs {want}",
            scalar(&gp)
        );
    }

    #[test]
    fn the_penalty_back_propagates_into_the_critic() {
        // D(z) = z·w (one output): ∇_z D = w, GP = (‖w‖ − 1)², dGP/dw = 2(‖w‖−1)·w/‖w‖.
        let w = Tensor::from_slice(&[3.0f32, 4.0])
            .view([2, 1])
            .set_requires_grad(true);
        let z = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.5]).view([2, 2]);
        let gp = gradient_penalty(&z, |z| Ok(z.matmul(&w))).unwrap();
        gp.backward();
        let got = values(&w.grad());
        for (g, want) in got.iter().zip([2.0 * 4.0 * 0.6, 2.0 * 4.0 * 0.8]) {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn an_input_independent_critic_is_refused() {
        let z = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let c = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        assert!(gradient_penalty(&z, |_| Ok(c.shallow_clone())).is_err());
    }

    #[test]
    fn zero_rows_have_finite_gradients() {
        let out = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let loss = mean_output_norm(&out).unwrap() + penalty_from_gradients(&out).unwrap();
        loss.backward();
        assert!(values(&out.grad()).iter().all(|g| g.is_finite()));
    }

    #[test]
    fn output_norm_and_total() {
        let out = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
        let norm = mean_output_norm(&out).unwrap();
        assert!((scalar(&norm) - 3.0).abs() < 1e-6);
        let w = Weights {
            member: 2.0,
            penalty: 0.5,
            norm: 0.1,
        };
        let one = Tensor::from(1.0f32);
        let t = total(&w, &one, &Tensor::from(4.0f32), &norm).unwrap();
        assert!((scalar(&t) - (2.0 + 2.0 + 0.3)).abs() < 1e-6);
    }

    /// The gradient penalty of a small conv net, against PyTorch's autograd
    /// (`torch.autograd.grad(..., grad_outputs=ones, create_graph=True)`, the
    /// WGAN-GP reference formulation), including the penalty's gradient with
    /// respect to the critic's weights.
    #[test]
    fn gradient_penalty_matches_pytorch_on_a_conv_critic() {
        lethe_plugin_api::tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        let w1 = Tensor::randn([3, 1, 3, 3], opts).set_requires_grad(true);
        let w2 = Tensor::randn([4, 27], opts).set_requires_grad(true);
        let members = Tensor::rand([2, 1, 5, 5], opts);
        let non = Tensor::rand([2, 1, 5, 5], opts);
        let t = Tensor::from_slice(&[0.3f32, 0.8]);
        let z = interpolate(&members, &non, &t).unwrap();
        let critic = |z: &Tensor| -> Result<Tensor, PluginError> {
            let h = z
                .f_conv2d(&w1, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)?
                .f_tanh()?
                .f_flatten(1, -1)?;
            Ok(h.f_matmul(&w2.f_tr()?)?.f_relu()?)
        };
        let gp = gradient_penalty(&z, critic).unwrap();
        gp.backward();
        let input = serde_json::json!({
            "w1": values(&w1.detach()), "w2": values(&w2.detach()),
            "m": values(&members), "n": values(&non), "t": [0.3, 0.8],
        });
        let script = r#"
import json, sys, torch
d = json.load(sys.stdin)
w1 = torch.tensor(d["w1"], dtype=torch.float64).view(3, 1, 3, 3).requires_grad_()
w2 = torch.tensor(d["w2"], dtype=torch.float64).view(4, 27).requires_grad_()
m = torch.tensor(d["m"], dtype=torch.float64).view(2, 1, 5, 5)
n = torch.tensor(d["n"], dtype=torch.float64).view(2, 1, 5, 5)
t = torch.tensor(d["t"], dtype=torch.float64).view(2, 1, 1, 1)
z = (t * m + (1 - t) * n).requires_grad_()
out = torch.relu(torch.tanh(torch.nn.functional.conv2d(z, w1)).flatten(1) @ w2.T)
g, = torch.autograd.grad(out, z, grad_outputs=torch.ones_like(out), create_graph=True)
gp = ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
gp.backward()
print(json.dumps({"gp": gp.item(), "dw1": w1.grad.flatten().tolist(), "dw2": w2.grad.flatten().tolist()}))
"#;
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        let mut child = Command::new(python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the project venv (installer/setup.sh) has torch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        assert!(
            close(scalar(&gp), theirs["gp"].as_f64().unwrap()),
            "{theirs}"
        );
        for (ours, key) in [(values(&w1.grad()), "dw1"), (values(&w2.grad()), "dw2")] {
            let theirs: Vec<f64> = serde_json::from_value(theirs[key].clone()).unwrap();
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(close(*a, *b), "{key}: {a} vs {b}");
            }
        }
    }
}
