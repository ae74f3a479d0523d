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
//!   sum of its outputs. The critic runs in eval mode ([`Critic`],
//!   [`model_gradient_penalty`]): WGAN-GP penalises each sample's own input
//!   gradient, and Gulrajani et al. removed batch normalisation from the critic
//!   because in train mode it makes every output depend on the whole batch, so the
//!   gradient at `z_i` would also carry the other samples' terms. The model being
//!   unlearned cannot drop its BatchNorm layers, but in eval mode each layer is a
//!   fixed affine map of its own sample (running statistics), which restores the
//!   per-sample gradient; it is also the function the model computes when it is
//!   queried (membership attacks query it in eval mode), and the interpolated
//!   points, which are no data, no longer move the running statistics.
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

/// The gradient of the sum of `critic`'s outputs with respect to its input, at the
/// points `z` (`[B, ...]`, detached); row `i` is sample `i`'s input gradient as
/// long as the critic treats samples independently. The graph is kept so that a
/// penalty on these gradients can be back-propagated into the critic's parameters.
pub fn input_gradients<F>(z: &Tensor, mut critic: F) -> Result<Tensor, PluginError>
where
    F: FnMut(&Tensor) -> Result<Tensor, PluginError>,
{
    let z = z.f_detach()?.set_requires_grad(true);
    let out = critic(&z)?;
    if !out.requires_grad() {
        return Err(PluginError::msg(
            "the critic's output does not depend on its input through autograd \
             (a host older than 2.0 records no graph in eval mode)",
        ));
    }
    let total = out.f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&total], &[&z], true, true)?;
    grads
        .into_iter()
        .next()
        .ok_or_else(|| PluginError::msg("autograd returned no gradient for the critic input"))
}

/// The WGAN-GP term at the points `z` (`[B, ...]`, detached): runs `critic` on them
/// and penalises the [`input_gradients`], keeping the graph so that the penalty
/// itself can be back-propagated into the critic's parameters.
pub fn gradient_penalty<F>(z: &Tensor, critic: F) -> Result<Tensor, PluginError>
where
    F: FnMut(&Tensor) -> Result<Tensor, PluginError>,
{
    penalty_from_gradients(&input_gradients(z, critic)?)
}

/// A model that plays WGAN-GP's critic: it can be switched between train and
/// eval mode and run on a batch (the host's model in the plugin, a small
/// BatchNorm net in the tests).
pub trait Critic {
    /// Switches the model to train (`true`) or eval (`false`) mode.
    fn set_train(&mut self, train: bool) -> Result<(), PluginError>;
    /// The critic's outputs `[B, ...]` for the inputs `z`, differentiable into
    /// `z` and the parameters in either mode.
    fn forward(&mut self, z: &Tensor) -> Result<Tensor, PluginError>;
}

/// [`input_gradients`] of `critic` in eval mode, then back to train mode (the
/// mode the training step runs in): per-sample gradients even through
/// BatchNorm, see the module documentation.
pub fn model_input_gradients<C: Critic>(critic: &mut C, z: &Tensor) -> Result<Tensor, PluginError> {
    critic.set_train(false)?;
    let g = input_gradients(z, |z| critic.forward(z));
    // Restore train mode even when the pass failed, then report the first error.
    let restored = critic.set_train(true);
    let g = g?;
    restored?;
    Ok(g)
}

/// The WGAN-GP term with `critic` in eval mode ([`model_input_gradients`]).
pub fn model_gradient_penalty<C: Critic>(
    critic: &mut C,
    z: &Tensor,
) -> Result<Tensor, PluginError> {
    penalty_from_gradients(&model_input_gradients(critic, z)?)
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
    use lethe_plugin_api::tch::{Device, nn};
    use lethe_plugin_kit::oracle::torch_oracle;
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
    /// A small critic with a BatchNorm layer, `Linear(4, 6) → BatchNorm1d(6) → ReLU
    /// → Linear(6, 3)`, whose running statistics and affine parameters are not
    /// the identity, so that eval mode is visibly different from train mode.
    struct BnCritic {
        _vs: nn::VarStore,
        l1: nn::Linear,
        bn: nn::BatchNorm,
        l2: nn::Linear,
        train: bool,
    }

    impl BnCritic {
        fn new() -> Self {
            lethe_plugin_api::tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let root = vs.root();
            let l1 = nn::linear(&root / "l1", 4, 6, Default::default());
            let bn = nn::batch_norm1d(&root / "bn", 6, Default::default());
            let l2 = nn::linear(&root / "l2", 6, 3, Default::default());
            let mut c = BnCritic {
                _vs: vs,
                l1,
                bn,
                l2,
                train: true,
            };
            lethe_plugin_api::tch::no_grad(|| {
                let opts = (Kind::Float, Device::Cpu);
                if let (Some(w), Some(b)) = (c.bn.ws.as_mut(), c.bn.bs.as_mut()) {
                    w.copy_(&(Tensor::rand([6], opts) + 0.5));
                    b.copy_(&(Tensor::randn([6], opts) * 0.3));
                }
                // Training passes move the running statistics off (0, 1).
                for _ in 0..20 {
                    let x = Tensor::randn([16, 4], opts) * 2.0 + 1.0;
                    let _ = c.forward(&x).unwrap();
                }
            });
            c
        }

        fn params(&self) -> Vec<(&'static str, Tensor)> {
            let bn_w = self.bn.ws.as_ref().unwrap();
            let bn_b = self.bn.bs.as_ref().unwrap();
            vec![
                ("l1w", self.l1.ws.shallow_clone()),
                ("l1b", self.l1.bs.as_ref().unwrap().shallow_clone()),
                ("bnw", bn_w.shallow_clone()),
                ("bnb", bn_b.shallow_clone()),
                ("l2w", self.l2.ws.shallow_clone()),
            ]
        }
    }

    impl Critic for BnCritic {
        fn set_train(&mut self, train: bool) -> Result<(), PluginError> {
            self.train = train;
            Ok(())
        }

        fn forward(&mut self, z: &Tensor) -> Result<Tensor, PluginError> {
            Ok(z.apply(&self.l1)
                .apply_t(&self.bn, self.train)
                .relu()
                .apply(&self.l2))
        }
    }

    /// Item 7 of issue 18: sample `i`'s input gradient must not depend on sample
    /// `j` (WGAN-GP's per-sample penalty). Changing only the last sample of the
    /// batch leaves the other samples' gradients as they were; in train mode the
    /// same critic mixes them (checked too, so the test can tell the difference),
    /// and the penalty pass leaves the critic in train mode with its running
    /// statistics untouched.
    #[test]
    fn penalty_gradients_do_not_mix_samples_through_batchnorm() {
        let mut critic = BnCritic::new();
        let opts = (Kind::Float, Device::Cpu);
        let z = Tensor::randn([4, 4], opts);
        let z2 = z.copy();
        z2.narrow(0, 3, 1).copy_(&Tensor::randn([1, 4], opts));
        let (mean0, var0) = (critic.bn.running_mean.copy(), critic.bn.running_var.copy());

        let g = model_input_gradients(&mut critic, &z).unwrap();
        let g2 = model_input_gradients(&mut critic, &z2).unwrap();
        assert!(
            critic.train,
            "train mode is restored after the penalty pass"
        );
        let first3 = |g: &Tensor| values(&g.narrow(0, 0, 3));
        for (a, b) in first3(&g).iter().zip(first3(&g2)) {
            assert!(
                (a - b).abs() < 1e-6,
                "{:?} vs {:?}",
                first3(&g),
                first3(&g2)
            );
        }
        let last = |g: &Tensor| values(&g.narrow(0, 3, 1));
        assert_ne!(last(&g), last(&g2));
        assert_eq!(values(&critic.bn.running_mean), values(&mean0));
        assert_eq!(values(&critic.bn.running_var), values(&var0));
        // Each sample's gradient is that of a batch of one (eval-mode BatchNorm).
        for i in 0..4 {
            let gi = model_input_gradients(&mut critic, &z.narrow(0, i, 1)).unwrap();
            for (a, b) in values(&gi).iter().zip(values(&g.narrow(0, i, 1))) {
                assert!((a - b).abs() < 1e-6);
            }
        }

        // The same critic in train mode (the penalty before the fix) mixes samples.
        critic.set_train(true).unwrap();
        let t = input_gradients(&z, |z| critic.forward(z)).unwrap();
        let t2 = input_gradients(&z2, |z| critic.forward(z)).unwrap();
        let moved = first3(&t)
            .iter()
            .zip(first3(&t2))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-3,
            "train-mode BatchNorm should mix samples: {moved}"
        );
    }

    /// The penalty of the BatchNorm critic and its gradient into every weight,
    /// against PyTorch with the critic in `eval()` mode.
    #[test]
    fn bn_critic_penalty_matches_pytorch_in_eval_mode() {
        let mut critic = BnCritic::new();
        let opts = (Kind::Float, Device::Cpu);
        let z = Tensor::randn([5, 4], opts);
        let gp = model_gradient_penalty(&mut critic, &z).unwrap();
        gp.backward();
        let mut input = serde_json::json!({
            "z": values(&z),
            "mean": values(&critic.bn.running_mean),
            "var": values(&critic.bn.running_var),
            "l2b": values(critic.l2.bs.as_ref().unwrap()),
        });
        for (name, t) in critic.params() {
            input[name] = serde_json::json!(values(&t.detach()));
        }
        let script = r#"
import json, sys, torch
d = json.load(sys.stdin)
T = lambda k, *s: torch.tensor(d[k], dtype=torch.float64).view(*s)
net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).double()
with torch.no_grad():
    net[0].weight.copy_(T("l1w", 6, 4)); net[0].bias.copy_(T("l1b", 6))
    net[1].weight.copy_(T("bnw", 6)); net[1].bias.copy_(T("bnb", 6))
    net[1].running_mean.copy_(T("mean", 6)); net[1].running_var.copy_(T("var", 6))
    net[3].weight.copy_(T("l2w", 3, 6)); net[3].bias.copy_(T("l2b", 3))
net.eval()
z = T("z", 5, 4).requires_grad_()
out = net(z)
g, = torch.autograd.grad(out, z, grad_outputs=torch.ones_like(out), create_graph=True)
gp = ((g.norm(2, dim=1) - 1) ** 2).mean()
gp.backward()
grads = {"l1w": net[0].weight, "l1b": net[0].bias, "bnw": net[1].weight, "bnb": net[1].bias, "l2w": net[3].weight}
print(json.dumps({"gp": gp.item(), **{k: p.grad.flatten().tolist() for k, p in grads.items()}}))
"#;
        let theirs = torch_oracle(script, &input);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        let want = theirs["gp"].as_f64().unwrap();
        assert!(close(scalar(&gp), want), "{} vs {want}", scalar(&gp));
        for (name, t) in critic.params() {
            let ours = values(&t.grad());
            let want: Vec<f64> = serde_json::from_value(theirs[name].clone()).unwrap();
            assert_eq!(ours.len(), want.len(), "{name}");
            for (a, b) in ours.iter().zip(&want) {
                assert!(close(*a, *b), "{name}: {ours:?} vs {want:?}");
            }
        }
    }
}
