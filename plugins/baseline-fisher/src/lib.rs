//! Fisher forgetting: estimate the diagonal Fisher information of the retain
//! set, then add Gaussian noise whose variance is its clamped inverse,
//! `θ = θ₀ + √(α·min(1/(F + 1e-8), v_max))·N(0, 1)`: weights the retain set does
//! not pin down are scrambled, those it needs barely move.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::for_each_batch;
use lethe_plugin_kit::flat::{flatten_params, grad_flat, layout, unflatten};
use lethe_plugin_kit::optim::assign_masked;
use lethe_plugin_kit::params::{self, Prune, Training};
use lethe_plugin_kit::per_sample::per_sample_grads;
use lethe_plugin_kit::{ModelKind, Objective, batch_size, evaluate, finish, prepare};
use serde_json::json;

/// Added to the Fisher before inverting, as in the reference code.
const EPS: f64 = 1e-8;

/// The reference's tighter clamp of the class layer's inverse Fisher.
const CLASS_LAYER_MAX: f64 = 1e2;

/// The reference's variance boost for the class layer and 1-D parameters.
const BOOST: f64 = 10.0;

/// How the noise variance is made from the Fisher diagonal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formulation {
    /// As the code behind the published numbers (Golatkar et al.'s `get_mean_var`,
    /// copied by the OPTML benchmark): per parameter, `min(1/(F + 1e-8), v_max)`
    /// (and `min(…, 100)` on the class layer), times α, averaged over each weight
    /// row (dimension 1) for parameters of two or more dimensions, then ×10 for
    /// the class layer and for 1-D parameters.
    Reference,
    /// The paper's formula per weight: `α·min(1/(F + 1e-8), v_max)`.
    PerWeight,
}

/// The noise variance of every parameter, flat in `params`' order, from the flat
/// Fisher diagonal. `class_layer` tells which parameters form the class layer.
pub fn noise_variance(
    params: &[(String, Tensor)],
    fisher: &Tensor,
    alpha: f64,
    max_variance: f64,
    formulation: Formulation,
    class_layer: impl Fn(&str) -> bool,
) -> Result<Tensor, PluginError> {
    tch::no_grad(|| {
        let inverse = fisher
            .f_add_scalar(EPS)?
            .f_reciprocal()?
            .f_clamp_max(max_variance)?;
        if formulation == Formulation::PerWeight {
            return Ok(inverse.f_mul_scalar(alpha)?);
        }
        let mut parts = Vec::with_capacity(params.len());
        for ((name, p), f) in params.iter().zip(unflatten(&inverse, params)?) {
            let class = class_layer(name);
            let mut v = if class {
                f.f_clamp_max(CLASS_LAYER_MAX)?
            } else {
                f
            };
            v = v.f_mul_scalar(alpha)?;
            let size = p.size();
            if size.len() > 1 {
                v = v
                    .f_mean_dim([1i64].as_slice(), true, DType::Float)?
                    .f_expand(size.as_slice(), false)?
                    .f_contiguous()?;
            }
            if class || size.len() == 1 {
                v = v.f_mul_scalar(BOOST)?;
            }
            parts.push(v.f_reshape([-1])?);
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    })
}

/// Diagonal-Fisher noise.
pub struct Fisher {
    formulation: Formulation,
    alpha: f64,
    max_variance: f64,
    samples: i64,
    batch_size: u32,
    temperature: f64,
    prune: Prune,
    seed: u64,
}

impl Plugin for Fisher {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.fisher",
            "Fisher forgetting",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Estimates the diagonal Fisher information F on the retain set, then perturbs \
             every weight with Gaussian noise of variance α·min(1/(F + 1e-8), max_variance). \
             Classifiers: the true Fisher, Σ_y p(y|x)·(∂ log p(y|x)/∂θ)², one example at a \
             time. Encoders: the empirical Fisher of each example's NT-Xent term within its \
             batch. Saves F as the `fisher_diagonal` result (flat, layout in \
             `parameter_layout`). formulation = reference (default) follows the code behind \
             the published numbers: the class layer's inverse Fisher is clamped at 100, the \
             variance is averaged over each weight row and multiplied by 10 for the class \
             layer and 1-D parameters; per_weight applies the paper's formula to every weight.",
        )
        .citation(
            "Golatkar, Achille and Soatto, \"Eternal Sunshine of the Spotless Net: Selective \
             Forgetting in Deep Networks\", CVPR 2020; benchmarked in Jia et al., \"Model \
             Sparsity Can Simplify Machine Unlearning\", NeurIPS 2023.",
        )
        .param(
            ParamSpec::choice("formulation", "Formulation", &["reference", "per_weight"], "reference")
                .group("Method")
                .help("reference: as the published code (row-averaged variance, class layer clamped at 100, ×10 for the class layer and 1-D parameters); per_weight: the paper's formula for every weight."),
        )
        .param(
            ParamSpec::float("alpha", "Noise scale α", 1e-12, 10.0, 3e-6)
                .log_scale()
                .group("Method")
                .help("Variance multiplier (Golatkar et al.'s code: 3e-6)."),
        )
        .param(
            ParamSpec::float("max_variance", "Inverse-Fisher clamp", 1e-6, 1e12, 1e3)
                .log_scale()
                .group("Method")
                .help("Upper bound on 1/(F + 1e-8) before scaling by α."),
        )
        .param(
            ParamSpec::int("samples", "Retain examples", 0, 100_000_000, 0)
                .group("Method")
                .help("Retain examples the Fisher is estimated on (0: all; otherwise a random subset)."),
        )
        .param(
            ParamSpec::int("batch_size", "Batch size", 2, 8192, 64)
                .group("Data")
                .help("Examples loaded at once; for encoders, the batch each NT-Xent term is computed in."),
        )
        .param(
            ParamSpec::float("temperature", "InfoNCE temperature", 0.01, 10.0, 0.5)
                .log_scale()
                .group("Encoders"),
        );
        params::pruning(params::seed(d))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Fisher {
            formulation: match p.str("formulation")? {
                "per_weight" => Formulation::PerWeight,
                _ => Formulation::Reference,
            },
            alpha: p.f64("alpha")?,
            max_variance: p.f64("max_variance")?,
            samples: p.i64("samples")?,
            batch_size: batch_size(p.i64("batch_size")?),
            temperature: p.f64("temperature")?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&Training {
            augment: false,
            temperature: self.temperature,
            max_batches: 0,
        });
        let before = evaluate(ctx, &objective, Split::Forget, self.batch_size, 0)?;
        let theta0 = flatten_params(&prep.params)?;
        let (fisher, used) =
            diagonal_fisher(ctx, &objective, &prep.params, self.samples, self.batch_size)?;
        ctx.progress_metrics(
            0.9,
            "Fisher estimated",
            &json!({"fisher_samples": used, "fisher_mean": fisher.f_mean(DType::Float)?.f_double_value(&[])?}),
        );
        // The class layer is the classifier's `fc` (torchvision naming); the
        // reference recognised it by its first dimension equalling the number of
        // classes, which can also catch a convolution with as many channels.
        let is_classifier = matches!(objective.kind, ModelKind::Classifier { .. });
        let variance = noise_variance(
            &prep.params,
            &fisher,
            self.alpha,
            self.max_variance,
            self.formulation,
            |name| is_classifier && name.starts_with("fc."),
        )?;
        let noise = variance.f_sqrt()?.f_mul(&variance.f_randn_like()?)?;
        let theta = theta0.f_add(&noise)?;
        assign_masked(&prep.params, &unflatten(&theta, &prep.params)?, &prep.masks)?;
        ctx.put_tensor("fisher_diagonal", &fisher)?;
        ctx.put_json("parameter_layout", &layout(&prep.params))?;
        finish(
            ctx,
            &objective,
            self.batch_size,
            &before,
            json!({
                "method": "fisher",
                "formulation": match self.formulation {
                    Formulation::Reference => "reference",
                    Formulation::PerWeight => "per_weight",
                },
                "fisher_samples": used,
                "alpha": self.alpha,
                "max_variance": self.max_variance,
                "noise_std_mean": variance.f_sqrt()?.f_mean(DType::Float)?.f_double_value(&[])?,
            }),
        )
    }
}

/// The diagonal Fisher over `samples` retain examples (0: all), as one flat
/// vector, and the number of examples used.
fn diagonal_fisher(
    ctx: &mut HostContext,
    objective: &Objective,
    params: &[(String, Tensor)],
    samples: i64,
    batch_size: u32,
) -> Result<(Tensor, i64), PluginError> {
    let retain = i64::try_from(ctx.data_len(Split::Retain)?.unwrap_or(0)).unwrap_or(i64::MAX);
    let want = if samples > 0 {
        samples.min(retain)
    } else {
        retain
    };
    let total: usize = params.iter().map(|(_, p)| p.numel()).sum();
    let device = params
        .first()
        .map(|(_, p)| p.device())
        .ok_or_else(|| PluginError::msg("the model has no parameters"))?;
    let mut fisher = Tensor::f_zeros([total as i64], (DType::Float, device))?;
    let mut used = 0i64;
    // A subset should represent the whole retain set: shuffle when sampling.
    let shuffle = want < retain;
    let batches =
        usize::try_from((want + i64::from(batch_size) - 1) / i64::from(batch_size)).unwrap_or(0);
    for_each_batch(
        ctx,
        Split::Retain,
        batch_size,
        shuffle,
        batches,
        |ctx, x, y| {
            let take = (want - used).min(x.size()[0]);
            if take <= 0 {
                return Ok(0.0);
            }
            let (x, y) = (x.f_narrow(0, 0, take)?, y.f_narrow(0, 0, take)?);
            match objective.kind {
                ModelKind::Classifier { classes } => {
                    // Eval mode, as the reference's `hessian` (model.eval()).
                    ctx.model_set_train(false)?;
                    for i in 0..take {
                        let logits =
                            ctx.model_forward(ModelHead::Classifier, &x.f_narrow(0, i, 1)?)?;
                        let log_p = logits.f_log_softmax(-1, DType::Float)?.f_reshape([-1])?;
                        let p = Vec::<f64>::try_from(
                            log_p.f_detach()?.f_exp()?.f_to_kind(DType::Double)?,
                        )?;
                        for c in 0..classes {
                            let g = grad_flat(&log_p.f_get(c)?, params, c + 1 < classes)?;
                            let w = p
                                .get(usize::try_from(c).unwrap_or(0))
                                .copied()
                                .unwrap_or(0.0);
                            fisher = fisher.f_add(&g.f_square()?.f_mul_scalar(w)?)?;
                        }
                    }
                }
                ModelKind::Encoder { .. } => {
                    per_sample_grads(ctx, objective, params, &x, &y, |g| {
                        fisher = fisher.f_add(&g.f_square()?)?;
                        Ok(())
                    })?;
                }
            }
            used += take;
            ctx.progress(
                0.9 * used as f64 / want.max(1) as f64,
                "estimating the Fisher",
            );
            Ok(0.0)
        },
    )?;
    if used == 0 {
        return Err(PluginError::msg(
            "no retain examples to estimate the Fisher on",
        ));
    }
    Ok((fisher.f_div_scalar(used as f64)?, used))
}

lethe_plugin_api::declare_plugin!(Fisher);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// The noise variance of both formulations on a fixed Fisher over a small
    /// conv net's parameters (conv, 1-D norm parameters, class layer), against
    /// the reference's per-parameter rule written in PyTorch. The Fisher spans
    /// eight decades so that both clamps bite.
    #[test]
    fn noise_variance_matches_the_reference_rule_in_pytorch() {
        tch::manual_seed(17);
        let o = (DType::Float, Device::Cpu);
        let shapes: [(&str, &[i64]); 5] = [
            ("conv.weight", &[4, 2, 3, 3]),
            ("bn.weight", &[4]),
            ("bn.bias", &[4]),
            ("fc.weight", &[3, 4]),
            ("fc.bias", &[3]),
        ];
        let params: Vec<(String, Tensor)> = shapes
            .iter()
            .map(|(n, s)| (n.to_string(), Tensor::zeros(*s, o)))
            .collect();
        let total: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
        // 10^u, u uniform in [-6, 2].
        let fisher = (Tensor::rand([total], o) * 8.0 - 6.0)
            .g_mul_scalar(10f64.ln())
            .exp();
        let (alpha, max_variance) = (3e-6, 1e3);
        let ours = |f| {
            values(
                &noise_variance(&params, &fisher, alpha, max_variance, f, |n| {
                    n.starts_with("fc.")
                })
                .unwrap(),
            )
        };
        let theirs = torch_oracle(
            r#"
import json, sys, torch
inp = json.load(sys.stdin)
fisher = torch.tensor(inp["fisher"], dtype=torch.float64)
out, per_weight, at = [], [], 0
for name, shape in inp["shapes"]:
    n = 1
    for d in shape:
        n *= d
    f = fisher[at:at + n].reshape(shape)
    at += n
    per_weight.append((inp["alpha"] * (1.0 / (f + 1e-8)).clamp(max=inp["max"])).reshape(-1))
    # get_mean_var of the published code, with the class layer named.
    last = name.startswith("fc.")
    var = (1.0 / (f + 1e-8)).clamp(max=inp["max"])
    if last:
        var = var.clamp(max=1e2)
    var = inp["alpha"] * var
    if var.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(f).clone()
    if last or var.ndim == 1:
        var = var * 10
    out.append(var.reshape(-1))
print(json.dumps({"reference": torch.cat(out).tolist(),
                  "per_weight": torch.cat(per_weight).tolist()}))
"#,
            &json!({
                "fisher": values(&fisher),
                "shapes": shapes.iter().map(|(n, s)| json!([n, s])).collect::<Vec<_>>(),
                "alpha": alpha,
                "max": max_variance,
            }),
        );
        for (f, key) in [
            (Formulation::Reference, "reference"),
            (Formulation::PerWeight, "per_weight"),
        ] {
            let (a, b) = (ours(f), theirs[key].as_array().unwrap().clone());
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let y = y.as_f64().unwrap();
                assert!(
                    (x - y).abs() <= 1e-5 * y.abs(),
                    "{key} [{i}]: ours {x}, PyTorch {y}"
                );
            }
        }
        // The clamps did bite: some inverse Fishers were above 100 and 1000.
        let inv = values(&fisher.reciprocal());
        assert!(inv.iter().any(|v| *v > 1e3) && inv.iter().any(|v| *v < 1e2));
    }
}
