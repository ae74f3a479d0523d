//! SFR-on, Saliency Forgetting in the Remain-preserving manifold online (Huang
//! et al., NeurIPS 2024), for classification as the authors' code runs it:
//!
//! * a forget–remain balanced weight-saliency mask: weights whose forget-set
//!   Fisher diagonal is at least `γ` times their retain-set Fisher diagonal;
//! * `iterations` steps of SGD on retain batches (cross-entropy, cosine rate);
//!   every `forget_every`-th step is preceded by a forget step: adaptive
//!   gradient ascent, `−α_t·Σ_i w_i·ℓ_i` with `w_i ∝ ℓ_i^(−λ)` (detached,
//!   normalised), its gradient restricted to the salient weights and clipped to
//!   a norm of `max_norm`; `α_t` decays on the same cosine as the rate;
//! * the fast-slow update `θ ← θ_prev + β·(θ − θ_prev)` after each step, which
//!   the reference runs with `β = 1` (no damping).

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{Cycle, report_epoch};
use lethe_plugin_kit::flat::{flatten_params, layout, unflatten};
use lethe_plugin_kit::importance::{Importance, accumulate};
use lethe_plugin_kit::optim::{Schedule, Sgd, SgdConfig};
use lethe_plugin_kit::params::{self, Prune, Training};
use lethe_plugin_kit::{batch_size, evaluate, finish, prepare};
use serde_json::json;

/// The reference's `AdaptiveLoss` (mean reduction) of per-sample losses `l`:
/// `Σ_i w_i·l_i` with `w_i = c_i / Σ_j c_j`, `c_i = 1 / (l_i^λ + 1e-15)` detached,
/// so the examples already forgotten (high loss) weigh less.
pub fn adaptive_loss(per_sample: &Tensor, lambda: f64) -> Result<Tensor, PluginError> {
    let coef = per_sample
        .f_detach()?
        .f_pow_tensor_scalar(lambda)?
        .f_add_scalar(1e-15)?
        .f_reciprocal()?;
    let w = coef.f_div(&coef.f_sum(DType::Float)?)?;
    Ok(w.f_mul(per_sample)?.f_sum(DType::Float)?)
}

/// The forget step's loss: `−α·adaptive_loss(l)`.
pub fn forget_step_loss(
    per_sample: &Tensor,
    lambda: f64,
    alpha: f64,
) -> Result<Tensor, PluginError> {
    Ok(adaptive_loss(per_sample, lambda)?.f_mul_scalar(-alpha)?)
}

/// The saliency mask (flat): `(F_f + 1e-15)/(F_r + 1e-15) ≥ γ`.
pub fn saliency_mask(forget: &Tensor, retain: &Tensor, gamma: f64) -> Result<Tensor, PluginError> {
    Ok(forget
        .f_add_scalar(1e-15)?
        .f_div(&retain.f_add_scalar(1e-15)?)?
        .f_ge(gamma)?)
}

/// Multiplies each parameter's gradient by its mask (when given), then scales all
/// gradients so that their joint norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`max_norm / (norm + 1e-6)`, capped at
/// 1). Returns the norm before clipping.
pub fn mask_and_clip(
    params: &[(String, Tensor)],
    masks: Option<&[Tensor]>,
    max_norm: f64,
) -> Result<f64, PluginError> {
    tch::no_grad(|| {
        let mut sq = 0.0;
        for (i, (_, p)) in params.iter().enumerate() {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            if let Some(m) = masks.and_then(|m| m.get(i)) {
                let _ = g.f_mul_(&m.f_to_kind(g.kind())?)?;
            }
            sq += g.f_square()?.f_sum(DType::Double)?.f_double_value(&[])?;
        }
        let norm = sq.sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for (_, p) in params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.f_mul_scalar_(coef)?;
                }
            }
        }
        Ok(norm)
    })
}

/// SFR-on.
pub struct SfrOn {
    lr: f64,
    sgd: SgdConfig,
    batch_size: u32,
    forget_batch: u32,
    iterations: usize,
    forget_every: usize,
    forget_alpha: f64,
    max_norm: f64,
    lambda: f64,
    gamma: f64,
    use_mask: bool,
    ema_beta: f64,
    training: Training,
    prune: Prune,
    seed: u64,
}

impl Plugin for SfrOn {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.sfron",
            "SFR-on",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Saliency Forgetting in the Remain-preserving manifold online. A forget-remain \
             balanced saliency mask keeps the weights whose forget-set Fisher diagonal is at \
             least γ times their retain-set one. Then `iterations` SGD steps on retain batches \
             (cross-entropy, cosine rate); before every `forget_every`-th of them a forget step \
             ascends the adaptive forget loss α_t·Σ w_i·ℓ_i (w_i ∝ ℓ_i^−λ, normalised, so \
             examples already forgotten weigh less) with its gradient restricted to the \
             salient weights and clipped to norm `max_norm`; α_t follows the cosine from α. \
             Saves the mask as `saliency_mask` (flat, 1 = salient, layout in \
             `parameter_layout`). Classifiers: cross-entropy; encoders: NT-Xent of two \
             augmented views, per sample for the adaptive weights (our reading; the paper \
             treats classifiers and diffusion models). Reference settings (CIFAR-10, 10 % \
             random forgetting, ResNet-18): SGD lr 0.01, momentum 0.9, weight decay 5e-4, \
             1500 iterations, batch 128, forget step every 5, α 25, max norm 7, λ 0.5, γ 1, \
             β 1.",
        )
        .citation(
            "Huang, Cheng, Zheng, Wang, He, Li and Huang, \"Unified Gradient-Based Machine \
             Unlearning with Remain Geometry Enhancement\", NeurIPS 2024; reference code \
             github.com/K1nght/Unified-Unlearning-w-Remain-Geometry (Classification).",
        )
        .param(
            ParamSpec::float("lr", "Learning rate", 1e-7, 10.0, 0.01)
                .log_scale()
                .group("Optimiser")
                .help("Base rate of the cosine schedule over all iterations."),
        )
        .param(ParamSpec::float("momentum", "Momentum", 0.0, 0.999, 0.9).group("Optimiser"))
        .param(ParamSpec::float("weight_decay", "Weight decay", 0.0, 0.1, 5e-4).group("Optimiser"))
        .param(ParamSpec::int("iterations", "Iterations", 1, 10_000_000, 1500).group("Optimiser"))
        .param(ParamSpec::int("batch_size", "Batch size", 1, 8192, 128).group("Optimiser"))
        .param(
            ParamSpec::int("forget_batch_size", "Forget batch size", 1, 8192, 128)
                .group("Method"),
        )
        .param(
            ParamSpec::int("forget_every", "Forget step every", 1, 1_000_000, 5)
                .group("Method")
                .help("A forget step precedes every this-many-th retain step."),
        )
        .param(
            ParamSpec::float("forget_alpha", "Forget weight α", 0.0, 1e6, 25.0)
                .group("Method")
                .help("Initial weight of the ascended forget loss (cosine-decayed)."),
        )
        .param(
            ParamSpec::float("max_norm", "Forget gradient norm", 1e-6, 1e6, 7.0)
                .log_scale()
                .group("Method")
                .help("The forget step's masked gradient is clipped to this norm."),
        )
        .param(
            ParamSpec::float("lambda", "Adaptive exponent λ", 0.0, 10.0, 0.5)
                .group("Method")
                .help("Forget examples weigh ∝ loss^−λ (0: plain mean). On a saturated model whose forget losses underflow to 0, λ > 0 puts all weight on those and the ascent stalls; use 0 there."),
        )
        .param(
            ParamSpec::float("gamma", "Saliency threshold γ", 0.0, 1e9, 1.0)
                .group("Method")
                .help("A weight is salient when its forget Fisher is at least γ times its retain Fisher."),
        )
        .param(
            ParamSpec::bool("mask", "Saliency mask", true)
                .group("Method")
                .help("Restrict the forget steps to salient weights."),
        )
        .param(
            ParamSpec::float("ema_beta", "Fast-slow β", 0.0, 1.0, 1.0)
                .group("Method")
                .help("After each step θ ← θ_prev + β·(θ − θ_prev); 1 (the reference) leaves the step as is."),
        )
        .param(
            ParamSpec::bool("augment", "Augment classifier inputs", true)
                .group("Data")
                .help("Classifiers: train on augmented inputs (the model's training recipe). The saliency mask is computed on plain inputs."),
        )
        .param(
            ParamSpec::float("temperature", "InfoNCE temperature", 0.01, 10.0, 0.5)
                .log_scale()
                .group("Encoders"),
        );
        params::pruning(params::seed(d))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(SfrOn {
            lr: p.f64("lr")?,
            sgd: SgdConfig {
                momentum: p.f64("momentum")?,
                weight_decay: p.f64("weight_decay")?,
            },
            batch_size: batch_size(p.i64("batch_size")?),
            forget_batch: batch_size(p.i64("forget_batch_size")?),
            iterations: usize::try_from(p.i64("iterations")?).unwrap_or(1).max(1),
            forget_every: usize::try_from(p.i64("forget_every")?).unwrap_or(1).max(1),
            forget_alpha: p.f64("forget_alpha")?,
            max_norm: p.f64("max_norm")?,
            lambda: p.f64("lambda")?,
            gamma: p.f64("gamma")?,
            use_mask: p.bool("mask")?,
            ema_beta: p.f64("ema_beta")?,
            training: Training {
                augment: p.bool("augment")?,
                temperature: p.f64("temperature")?,
                max_batches: 0,
            },
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&self.training);
        let plain = prep.objective(&Training {
            augment: false,
            ..self.training
        });
        let bs = self.batch_size;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;

        let saliency = if self.use_mask {
            let (mut f_f, mut f_r) = (Importance::default(), Importance::default());
            accumulate(
                ctx,
                &plain,
                &prep.params,
                Split::Forget,
                self.forget_batch,
                &mut [&mut f_f],
            )?;
            accumulate(
                ctx,
                &plain,
                &prep.params,
                Split::Retain,
                bs,
                &mut [&mut f_r],
            )?;
            let flat = saliency_mask(&f_f.mean()?, &f_r.mean()?, self.gamma)?;
            let count = flat.f_sum(DType::Int64)?.f_int64_value(&[])?;
            ctx.info(&format!(
                "saliency mask: {count} of {} weights are salient (γ = {})",
                flat.numel(),
                self.gamma
            ));
            ctx.put_tensor("saliency_mask", &flat.f_to_kind(DType::Uint8)?)?;
            ctx.put_json("parameter_layout", &layout(&prep.params))?;
            let parts = unflatten(&flat.f_to_kind(DType::Float)?, &prep.params)?;
            Some((parts, count))
        } else {
            None
        };

        let mut sgd = Sgd::new(
            prep.params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            self.sgd,
        )
        .with_masks(prep.masks)?;
        let mut forget = Cycle::new(Split::Forget, self.forget_batch);
        let mut retain = Cycle::new(Split::Retain, bs);
        let schedule = Schedule::Cosine;
        let n = self.iterations;
        let report_every = n.div_ceil(10).max(1);
        let mut previous = (self.ema_beta < 1.0)
            .then(|| flatten_params(sgd.params()))
            .transpose()?;
        let (mut f_sum, mut f_n, mut r_sum, mut r_n, mut norm_sum) =
            (0.0, 0usize, 0.0, 0usize, 0.0);
        for step in 0..n {
            ctx.check_cancelled()?;
            let lr = schedule.rate(self.lr, step, n);
            ctx.model_set_train(true)?;
            if step % self.forget_every == 0 {
                let alpha = schedule.rate(self.forget_alpha, step, n);
                let (xf, yf) = forget.next_batch(ctx)?;
                let per_sample = objective.per_sample(ctx, &xf, &yf)?;
                let loss = forget_step_loss(&per_sample, self.lambda, alpha)?;
                f_sum += adaptive_loss(&per_sample, self.lambda)?.f_double_value(&[])?;
                f_n += 1;
                sgd.zero_grad()?;
                loss.f_backward()?;
                let masks = saliency.as_ref().map(|(m, _)| m.as_slice());
                norm_sum += mask_and_clip(sgd.params(), masks, self.max_norm)?;
                sgd.step(lr)?;
            }
            let (xr, yr) = retain.next_batch(ctx)?;
            let loss = objective.loss(ctx, &xr, &yr)?;
            r_sum += loss.f_double_value(&[])?;
            r_n += 1;
            sgd.zero_grad()?;
            loss.f_backward()?;
            sgd.step(lr)?;
            if let Some(prev) = previous.as_mut() {
                let now = flatten_params(sgd.params())?;
                let damped = prev.f_add(&now.f_sub(prev)?.f_mul_scalar(self.ema_beta)?)?;
                lethe_plugin_kit::optim::assign_masked(
                    sgd.params(),
                    &unflatten(&damped, sgd.params())?,
                    sgd.masks(),
                )?;
                *prev = damped;
            }
            if (step + 1) % report_every == 0 || step + 1 == n {
                report_epoch(
                    ctx,
                    (step + 1).div_ceil(report_every),
                    n.div_ceil(report_every),
                    json!({
                        "step": step + 1,
                        "forget_loss": f_sum / f_n.max(1) as f64,
                        "retain_loss": r_sum / r_n.max(1) as f64,
                        "forget_grad_norm": norm_sum / f_n.max(1) as f64,
                        "lr": lr,
                    }),
                );
                (f_sum, f_n, r_sum, r_n, norm_sum) = (0.0, 0, 0.0, 0, 0.0);
            }
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({
                "method": "sfron", "iterations": n,
                "forget_steps": n.div_ceil(self.forget_every),
                "salient_weights": saliency.as_ref().map(|(_, c)| *c),
                "forget_alpha": self.forget_alpha, "lambda": self.lambda, "gamma": self.gamma,
                "max_norm": self.max_norm, "ema_beta": self.ema_beta,
            }),
        )
    }
}

lethe_plugin_api::declare_plugin!(SfrOn);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::losses::{cross_entropy, cross_entropy_per_sample};
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// On a linear classifier and fixed batches: the saliency mask from the
    /// forget and retain Fisher diagonals, the forget step's total loss
    /// (adaptive, α-weighted ascent) and its masked, clipped gradient, and the
    /// retain step's loss, against the reference's `get_weight_saliency_mask`,
    /// `AdaptiveLoss`, gradient masking and `clip_grad_norm` in PyTorch.
    #[test]
    fn mask_forget_step_and_retain_loss_match_the_reference_in_pytorch() {
        tch::manual_seed(13);
        let o = (DType::Float, Device::Cpu);
        let w = (Tensor::randn([3, 4], o) * 2.0).set_requires_grad(true);
        let b = Tensor::randn([3], o).set_requires_grad(true);
        let params = vec![
            ("fc.bias".to_string(), b.shallow_clone()),
            ("fc.weight".to_string(), w.shallow_clone()),
        ];
        let xf = Tensor::randn([6, 4], o) * 2.0;
        let yf = Tensor::from_slice(&[0i64, 1, 2, 2, 1, 0]);
        let xr = [Tensor::randn([5, 4], o), Tensor::randn([5, 4], o)];
        let yr = [
            Tensor::from_slice(&[2i64, 0, 1, 1, 2]),
            Tensor::from_slice(&[0i64, 0, 2, 1, 1]),
        ];
        let logits = |x: &Tensor| x.matmul(&w.tr()) + &b;
        let (mut f_f, mut f_r) = (Importance::default(), Importance::default());
        f_f.add(&cross_entropy(&logits(&xf), &yf).unwrap(), &params)
            .unwrap();
        for (x, y) in xr.iter().zip(&yr) {
            f_r.add(&cross_entropy(&logits(x), y).unwrap(), &params)
                .unwrap();
        }
        let mask = saliency_mask(&f_f.mean().unwrap(), &f_r.mean().unwrap(), 1.0).unwrap();
        let n_sel = mask.sum(DType::Int64).int64_value(&[]);
        assert!(
            n_sel > 0 && n_sel < 15,
            "{n_sel} salient: pick another seed"
        );
        let parts = unflatten(&mask.to_kind(DType::Float), &params).unwrap();
        // A small max norm so that the clip bites on this tiny model.
        let (lambda, alpha, max_norm) = (0.5, 25.0, 0.05);
        let per_sample = cross_entropy_per_sample(&logits(&xf), &yf).unwrap();
        let loss = forget_step_loss(&per_sample, lambda, alpha).unwrap();
        loss.backward();
        let norm = mask_and_clip(&params, Some(&parts), max_norm).unwrap();
        assert!(norm > max_norm, "the clip should bite: {norm}");
        let grad = Tensor::cat(&[b.grad().reshape([-1]), w.grad().reshape([-1])], 0);
        let retain_loss = cross_entropy(&logits(&xr[0]), &yr[0]).unwrap();

        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn as nn
d = json.load(sys.stdin)
m = nn.Linear(4, 3)
with torch.no_grad():
    m.weight.copy_(torch.tensor(d["w"]).view(3, 4)); m.bias.copy_(torch.tensor(d["b"]))
xf = torch.tensor(d["xf"]).view(6, 4); yf = torch.tensor(d["yf"]).long()
xr = [torch.tensor(x).view(5, 4) for x in d["xr"]]; yr = [torch.tensor(y).long() for y in d["yr"]]
crit = nn.CrossEntropyLoss()
def fisher(batches):
    g = {n: 0 for n, _ in m.named_parameters()}
    for x, y in batches:
        m.zero_grad(); crit(m(x), y).backward()
        for n, p in m.named_parameters():
            g[n] += p.grad.data ** 2 / len(batches)
    return g
ff, fr = fisher([(xf, yf)]), fisher(list(zip(xr, yr)))
mask = {n: (ff[n] + 1e-15) / (fr[n] + 1e-15) >= d["gamma"] for n in ff}
class AdaptiveLoss(nn.Module):
    def __init__(self, lambd):
        super().__init__(); self.f = nn.CrossEntropyLoss(reduction="none"); self.lambd = lambd
    def forward(self, predict, target):
        ori = self.f(predict, target)
        coef = 1 / (torch.pow(ori.detach().clone(), self.lambd) + 1e-15)
        return ((coef / coef.sum()) * ori * predict.shape[0]).mean()
m.zero_grad()
loss = d["alpha"] * -AdaptiveLoss(d["lambda"])(m(xf), yf)
loss.backward()
for n, p in m.named_parameters():
    p.grad *= mask[n]
norm = torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm=d["max_norm"])
flat = lambda t: t["bias"].flatten().tolist() + t["weight"].flatten().tolist()
print(json.dumps({"mask": [float(v) for v in flat(mask)], "loss": loss.item(), "norm": norm.item(),
                  "grad": m.bias.grad.flatten().tolist() + m.weight.grad.flatten().tolist(),
                  "retain": crit(m(xr[0]), yr[0]).item()}))
"#,
            &json!({"w": values(&w), "b": values(&b), "xf": values(&xf), "yf": values(&yf),
                    "xr": xr.iter().map(values).collect::<Vec<_>>(),
                    "yr": yr.iter().map(values).collect::<Vec<_>>(),
                    "gamma": 1.0, "lambda": lambda, "alpha": alpha, "max_norm": max_norm}),
        );
        let list = |k: &str| -> Vec<f64> {
            theirs[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        assert_eq!(values(&mask.to_kind(DType::Float)), list("mask"));
        let l = loss.double_value(&[]);
        assert!(
            close(l, theirs["loss"].as_f64().unwrap()),
            "{l} vs {}",
            theirs["loss"]
        );
        assert!(
            close(norm, theirs["norm"].as_f64().unwrap()),
            "{norm} vs {}",
            theirs["norm"]
        );
        for (g, t) in values(&grad).iter().zip(list("grad")) {
            assert!(close(*g, t), "{:?} vs {:?}", values(&grad), list("grad"));
        }
        let r = retain_loss.double_value(&[]);
        assert!(close(r, theirs["retain"].as_f64().unwrap()));
    }

    #[test]
    fn adaptive_weights_favour_examples_not_yet_forgotten() {
        let l = Tensor::from_slice(&[0.01f32, 4.0]).set_requires_grad(true);
        let loss = adaptive_loss(&l, 0.5).unwrap();
        loss.backward();
        let g = values(&l.grad());
        // Weights ∝ l^-1/2: 10 and 0.5, normalised.
        assert!(
            (g[0] - 10.0 / 10.5).abs() < 1e-5 && (g[1] - 0.5 / 10.5).abs() < 1e-5,
            "{g:?}"
        );
        // λ = 0 is the plain mean.
        let plain = adaptive_loss(&l.detach(), 0.0).unwrap().double_value(&[]);
        assert!((plain - 2.005).abs() < 1e-5);
    }
}
