//! SalUn: find the weights most salient to the forget loss (largest
//! `|∇_θ ℓ_forget|`, global top fraction), then run random-label unlearning that
//! may change only those. The mask holds through weight decay and momentum (the
//! reference code masked only the gradient, so both still moved "frozen"
//! weights); non-salient weights stay bit-identical.

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{Cycle, for_each_batch, mixed_batch_sizes, report_epoch};
use lethe_plugin_kit::flat::{grad_flat, layout, unflatten};
use lethe_plugin_kit::losses::cross_entropy;
use lethe_plugin_kit::optim::Masks;
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::prune::intersect;
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{ModelKind, evaluate, finish, prepare};
use serde_json::json;

/// Saliency-masked random-label unlearning.
pub struct SalUn {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    mask_ratio: f64,
}

impl Plugin for SalUn {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.salun",
            "SalUn",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .description(
            "Weight saliency: accumulates the gradient of the forget-set cross-entropy over \
             one pass, keeps the global top fraction of |gradient| as the saliency mask, \
             then trains on batches mixing forget examples with random labels and retain \
             examples, updating only salient weights (exactly: weight decay and momentum \
             cannot move the others). Saves the mask as the `saliency_mask` result (flat, \
             1 = salient, layout in `parameter_layout`). Classifiers only. Reference \
             settings: mask ratio 0.5, lr 0.013, 10 epochs (CIFAR-10).",
        )
        .citation(
            "Fan, Liu, Zhang, Wong, Wei and Liu, \"SalUn: Empowering Machine Unlearning via \
             Gradient-based Weight Saliency in Both Image Classification and Generation\", \
             ICLR 2024.",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(0.013, 10)).param(
            ParamSpec::float("mask_ratio", "Salient fraction", 0.0, 1.0, 0.5)
                .group("Method")
                .help("Fraction of all weights, by forget-gradient magnitude, that may change."),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(SalUn {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            mask_ratio: p.f64("mask_ratio")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let ModelKind::Classifier { classes } = prep.kind else {
            return Err(PluginError::msg(
                "SalUn's random-label update needs class logits, but the model is an encoder",
            ));
        };
        let objective = prep.objective(&self.training);
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;

        let saliency = forget_gradient(ctx, &prep.params, bs)?;
        let salient = top_fraction(&saliency, &prep.masks, &prep.params, self.mask_ratio)?;
        let mask_flat = Tensor::f_cat(
            &salient
                .iter()
                .map(|m| m.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        let chosen = mask_flat.f_sum(DType::Int64)?.f_int64_value(&[])?;
        ctx.put_tensor("saliency_mask", &mask_flat.f_to_kind(DType::Uint8)?)?;
        ctx.put_json("parameter_layout", &layout(&prep.params))?;
        ctx.info(&format!(
            "saliency mask: {chosen} of {} weights may change",
            mask_flat.numel()
        ));
        let salient: Masks = salient.into_iter().map(Some).collect();
        let masks = intersect(&salient, &prep.masks)?;

        let (n_r, n_f) = (
            ctx.data_len(Split::Retain)?.unwrap_or(0),
            ctx.data_len(Split::Forget)?.unwrap_or(0),
        );
        let (br, bf) = mixed_batch_sizes(bs, n_r, n_f);
        let steps = steps_per_epoch(ctx, Split::Retain, br, max)?;
        let mut trainer = Trainer::new(prep.params, masks, &self.optim, steps)?;
        let mut forget = Cycle::new(Split::Forget, bf);
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let stats = for_each_batch(ctx, Split::Retain, br, true, max, |ctx, x, y| {
                let (xf, yf) = forget.next_batch(ctx)?;
                let random = Tensor::f_randint(classes, yf.size(), (DType::Int64, yf.device()))?;
                let inputs = Tensor::f_cat(&[x, &xf], 0)?;
                let labels = Tensor::f_cat(&[y, &random], 0)?;
                let loss = objective
                    .per_sample_with_labels(ctx, &inputs, &labels)?
                    .f_mean(DType::Float)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({"mixed_loss": stats.mean_loss(), "lr": lr}),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "salun", "steps": trainer.steps(), "mask_ratio": self.mask_ratio,
                   "salient_weights": chosen, "retain_batch": br, "forget_batch": bf}),
        )
    }
}

/// `|Σ_batches ∇ mean CE(forget batch)|` as one flat vector (the reference
/// accumulates batch-mean gradients the same way; the sign of the loss does not
/// matter under the absolute value).
fn forget_gradient(
    ctx: &mut HostContext,
    params: &[(String, Tensor)],
    batch_size: u32,
) -> Result<Tensor, PluginError> {
    // Eval mode, as the reference's `save_gradient_ratio` (model.eval()): the
    // saliency must not move normalisation statistics.
    ctx.model_set_train(false)?;
    let mut total: Option<Tensor> = None;
    for_each_batch(ctx, Split::Forget, batch_size, false, 0, |ctx, x, y| {
        let logits = ctx.model_forward(lethe_plugin_api::sdk::ModelHead::Classifier, x)?;
        let loss = cross_entropy(&logits, y)?;
        let g = grad_flat(&loss, params, false)?;
        total = Some(match total.take() {
            Some(t) => t.f_add(&g)?,
            None => g,
        });
        Ok(loss.f_double_value(&[])?)
    })?;
    total
        .ok_or_else(|| PluginError::msg("the forget split is empty"))?
        .f_abs()
        .map_err(PluginError::from)
}

/// Boolean masks (per parameter) of the `ratio` largest saliencies overall;
/// pruned weights (false in `prune`) are never chosen.
fn top_fraction(
    saliency: &Tensor,
    prune: &Masks,
    params: &[(String, Tensor)],
    ratio: f64,
) -> Result<Vec<Tensor>, PluginError> {
    tch::no_grad(|| {
        let allowed = Tensor::f_cat(
            &params
                .iter()
                .zip(prune)
                .map(|((_, p), m)| match m {
                    Some(m) => m.f_reshape([-1]),
                    None => Tensor::f_ones([p.numel() as i64], (DType::Bool, p.device())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        // Pruned weights rank below every real saliency (all of which are >= 0).
        let score = saliency.f_masked_fill(&allowed.f_logical_not()?, -1.0)?;
        let n = score.numel() as i64;
        let k = ((ratio * n as f64).round() as i64).clamp(0, n);
        let mut mask = Tensor::f_zeros([n], (DType::Bool, score.device()))?;
        if k > 0 {
            let (_, idx) = score.f_topk(k, 0, true, false)?;
            mask = mask.f_index_fill(0, &idx, 1)?;
        }
        let mask = mask.f_logical_and(&allowed)?;
        let parts = unflatten(&mask.f_to_kind(DType::Float)?, params)?;
        parts
            .into_iter()
            .map(|t| t.f_to_kind(DType::Bool).map_err(PluginError::from))
            .collect()
    })
}

lethe_plugin_api::declare_plugin!(SalUn);
