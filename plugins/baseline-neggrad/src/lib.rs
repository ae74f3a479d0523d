//! NegGrad: descend the loss on retain examples and ascend it on forget
//! examples in the same batches, `(Σ_retain ℓ − w·Σ_forget ℓ) / (n_r + n_f)`.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::Kind as DType;
use lethe_plugin_kit::epoch::{Cycle, for_each_batch, mixed_batch_sizes, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{evaluate, finish, prepare};
use serde_json::json;

/// Retain descent plus weighted forget ascent.
pub struct NegGrad {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    forget_weight: f64,
}

impl Plugin for NegGrad {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.neggrad",
            "NegGrad",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Fine-tunes on batches mixing retain and forget examples (in proportion to the \
             split sizes), descending the retain loss and ascending the forget loss: \
             (Σ_retain ℓ − w·Σ_forget ℓ)/(n_r + n_f). Cross-entropy for classifiers, NT-Xent \
             for encoders. Reference settings: 10 epochs, w = 1 (Alignment Calibration).",
        )
        .citation(
            "Golatkar, Achille and Soatto, \"Eternal Sunshine of the Spotless Net: Selective \
             Forgetting in Deep Networks\", CVPR 2020; Thudi et al., \"Unrolling SGD\", \
             EuroS&P 2022; Kurmanji et al., \"Towards Unbounded Machine Unlearning\", \
             NeurIPS 2023 (NegGrad+).",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(0.01, 10)).param(
            ParamSpec::float("forget_weight", "Forget weight", 0.0, 100.0, 1.0)
                .group("Method")
                .help("w: how strongly the forget loss is ascended relative to the retain loss."),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(NegGrad {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            forget_weight: p.f64("forget_weight")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&self.training);
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let (n_r, n_f) = (
            ctx.data_len(Split::Retain)?.unwrap_or(0),
            ctx.data_len(Split::Forget)?.unwrap_or(0),
        );
        let (br, bf) = mixed_batch_sizes(bs, n_r, n_f);
        let steps = steps_per_epoch(ctx, Split::Retain, br, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let mut forget = Cycle::new(Split::Forget, bf);
        let w = self.forget_weight;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let (mut f_sum, mut f_n) = (0.0, 0i64);
            let stats = for_each_batch(ctx, Split::Retain, br, true, max, |ctx, x, y| {
                let (xf, yf) = forget.next_batch(ctx)?;
                let lr_ = objective.per_sample(ctx, x, y)?;
                let lf = objective.per_sample(ctx, &xf, &yf)?;
                let n = (lr_.size()[0] + lf.size()[0]) as f64;
                let loss = lr_
                    .f_sum(DType::Float)?
                    .f_sub(&lf.f_sum(DType::Float)?.f_mul_scalar(w)?)?
                    .f_div_scalar(n)?;
                f_sum += lf.f_sum(DType::Float)?.f_double_value(&[])?;
                f_n += lf.size()[0];
                let retain_mean = lr_.f_mean(DType::Float)?.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(retain_mean)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({
                    "retain_loss": stats.mean_loss(),
                    "forget_loss": f_sum / f_n.max(1) as f64,
                    "lr": lr,
                }),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "neggrad", "steps": trainer.steps(), "forget_weight": w,
                   "retain_batch": br, "forget_batch": bf}),
        )
    }
}

lethe_plugin_api::declare_plugin!(NegGrad);
