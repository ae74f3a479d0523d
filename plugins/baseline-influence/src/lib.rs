//! Influence unlearning (IU): one Newton-like step that removes the forget set's
//! influence, `θ ← θ + α·H⁻¹v`, where `v` is the reference code's difference of
//! forget and retain gradients and `H = λI + (1/N)Σ gᵢgᵢᵀ` the empirical Fisher of
//! N retain examples, inverted by the WoodFisher recursion (Sherman-Morrison, one
//! rank-one update per example) in blocks along the flat parameter vector.

mod woodfisher;

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{Kind as DType, Tensor};
use lethe_plugin_kit::epoch::for_each_batch;
use lethe_plugin_kit::flat::{flatten_params, grad_flat, layout, unflatten};
use lethe_plugin_kit::optim::assign_masked;
use lethe_plugin_kit::params::{self, Prune, Training};
use lethe_plugin_kit::per_sample::per_sample_grads;
use lethe_plugin_kit::{Objective, batch_size, evaluate, finish, prepare};
use serde_json::json;
use woodfisher::BlockInverse;

/// WoodFisher influence unlearning.
pub struct Influence {
    alpha: f64,
    damping: f64,
    samples: i64,
    block_size: i64,
    batch_size: u32,
    temperature: f64,
    prune: Prune,
    seed: u64,
}

impl Plugin for Influence {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.influence",
            "Influence unlearning (WoodFisher)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Removes the forget set's influence in one step θ ← θ + α·H⁻¹v: v = (n_f/(n_f+n_r))·\
             (mean forget gradient − mean retain gradient), H = λI + (1/N)Σ gᵢgᵢᵀ over the \
             per-example gradients of the first N retain examples, inverted exactly by the \
             WoodFisher (Sherman-Morrison) recursion within blocks of the flat parameter \
             vector (block size 0: one dense block, for small models; memory d × block \
             size floats, float64 when that is at most 16M entries). Saves v \
             (`influence_direction`) and H⁻¹v (`ihvp`). Cross-entropy for classifiers, \
             per-example NT-Xent within a batch for encoders.",
        )
        .citation(
            "Izzo, Smart, Chaudhuri and Zou, \"Approximate Data Deletion from Machine \
             Learning Models\", AISTATS 2021; Koh and Liang, \"Understanding Black-box \
             Predictions via Influence Functions\", ICML 2017; Singh and Alistarh, \
             \"WoodFisher: Efficient Second-Order Approximation for Neural Network \
             Compression\", NeurIPS 2020; benchmarked in Jia et al., \"Model Sparsity Can \
             Simplify Machine Unlearning\", NeurIPS 2023.",
        )
        .param(
            ParamSpec::float("alpha", "Step scale α", 1e-6, 1e4, 0.2)
                .log_scale()
                .group("Method")
                .help("Multiplies H⁻¹v (the reference's unlearning `alpha`)."),
        )
        .param(
            ParamSpec::float("damping", "Damping λ", 1e-8, 1e4, 1.0)
                .log_scale()
                .group("Method")
                .help("H starts as λI; the reference recursion starts from the identity (λ = 1)."),
        )
        .param(
            ParamSpec::int("samples", "Fisher examples N", 1, 1_000_000, 1000)
                .group("Method")
                .help("Retain examples whose gradients build H (reference: 1000)."),
        )
        .param(
            ParamSpec::int("block_size", "Block size", 0, 1_000_000, 128)
                .group("Method")
                .help("Exact inverse within blocks of this many consecutive weights; 0: one dense block."),
        )
        .param(
            ParamSpec::int("batch_size", "Batch size", 2, 8192, 256)
                .group("Data")
                .help("Batch of the forget/retain gradient passes; for encoders also the batch of each per-example NT-Xent term."),
        )
        .param(
            ParamSpec::float("temperature", "InfoNCE temperature", 0.01, 10.0, 0.5)
                .log_scale()
                .group("Encoders"),
        );
        params::pruning(params::seed(d))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Influence {
            alpha: p.f64("alpha")?,
            damping: p.f64("damping")?,
            samples: p.i64("samples")?,
            block_size: p.i64("block_size")?,
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
        let bs = self.batch_size;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let theta0 = flatten_params(&prep.params)?;

        let (g_f, n_f) = gradient_sum(ctx, &objective, &prep.params, Split::Forget, bs)?;
        let (g_r, n_r) = gradient_sum(ctx, &objective, &prep.params, Split::Retain, bs)?;
        let (nf, nr) = (n_f as f64, n_r as f64);
        let v = g_f
            .f_div_scalar(nf + nr)?
            .f_sub(&g_r.f_mul_scalar(nf / ((nf + nr) * nr.max(1.0)))?)?;
        ctx.progress(0.3, "gradients done; inverting the Fisher");

        let want = self.samples.min(n_r);
        let mut inverse = BlockInverse::new(
            theta0.numel() as i64,
            self.block_size,
            self.damping,
            want as f64,
            theta0.device(),
        )?;
        let mut used = 0i64;
        let batches = usize::try_from((want + i64::from(bs) - 1) / i64::from(bs)).unwrap_or(0);
        for_each_batch(ctx, Split::Retain, bs, false, batches, |ctx, x, y| {
            let take = (want - used).min(x.size()[0]);
            let (x, y) = (x.f_narrow(0, 0, take)?, y.f_narrow(0, 0, take)?);
            per_sample_grads(ctx, &objective, &prep.params, &x, &y, |g| {
                inverse.update(&g)
            })?;
            used += take;
            ctx.progress(
                0.3 + 0.6 * used as f64 / want.max(1) as f64,
                "inverting the Fisher",
            );
            Ok(0.0)
        })?;
        let ihvp = inverse.apply(&v)?;
        let theta = theta0.f_add(&ihvp.f_mul_scalar(self.alpha)?)?;
        assign_masked(&prep.params, &unflatten(&theta, &prep.params)?, &prep.masks)?;

        ctx.put_tensor("influence_direction", &v)?;
        ctx.put_tensor("ihvp", &ihvp)?;
        ctx.put_json("parameter_layout", &layout(&prep.params))?;
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({
                "method": "influence",
                "fisher_samples": used,
                "damping": self.damping,
                "block_size": inverse.block_size(),
                "alpha": self.alpha,
                "forget_examples": n_f,
                "retain_examples": n_r,
                "step_norm": ihvp.f_norm()?.f_double_value(&[])? * self.alpha,
            }),
        )
    }
}

/// Σ over the split's examples of their loss gradients (batch mean × batch size),
/// as a flat vector, and the number of examples.
fn gradient_sum(
    ctx: &mut HostContext,
    objective: &Objective,
    params: &[(String, Tensor)],
    split: Split,
    batch_size: u32,
) -> Result<(Tensor, i64), PluginError> {
    // Eval mode, as the reference's `woodfisher` (model.eval()).
    ctx.model_set_train(false)?;
    let mut total: Option<Tensor> = None;
    let stats = for_each_batch(ctx, split, batch_size, false, 0, |ctx, x, y| {
        let loss = objective.loss(ctx, x, y)?;
        let n = x.size()[0] as f64;
        let g = grad_flat(&loss, params, false)?.f_mul_scalar(n)?;
        total = Some(match total.take() {
            Some(t) => t.f_add(&g)?,
            None => g,
        });
        Ok(loss.f_double_value(&[])?)
    })?;
    let total = total.ok_or_else(|| PluginError::msg(format!("the {split:?} split is empty")))?;
    Ok((total.f_to_kind(DType::Float)?, stats.samples))
}

lethe_plugin_api::declare_plugin!(Influence);
