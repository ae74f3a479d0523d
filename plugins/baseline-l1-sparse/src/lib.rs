//! l1-sparse unlearning: fine-tune on the retain set with a linearly decaying l1
//! penalty, `ℓ_retain + α_t‖θ‖₁`, `α_t = α(1 − t/(E − E_no_l1))`, pushing the
//! model towards the sparse solutions that unlearn better.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_kit::epoch::{for_each_batch, report_epoch};
use lethe_plugin_kit::l1::{l1_coefficient, l1_norm};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{evaluate, finish, prepare};
use serde_json::json;

/// Fine-tuning with a decaying l1 penalty.
pub struct L1Sparse {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    alpha: f64,
    no_l1_epochs: usize,
}

impl Plugin for L1Sparse {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.l1-sparse",
            "l1-sparse fine-tuning",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Fine-tunes on the retain set with an l1 penalty α_t·‖θ‖₁ whose coefficient \
             decays linearly from α to 0 over the first E − no_l1_epochs epochs (sparsity-\
             aware unlearning). Cross-entropy for classifiers; for encoders the InfoNCE they were trained with (SimCLR NT-Xent or MoCo). \
             Reference settings: lr 0.01, 10 epochs, α 5e-4 (1e-6-1e-3 for encoders).",
        )
        .citation(
            "Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, \"Model Sparsity Can Simplify \
             Machine Unlearning\", NeurIPS 2023.",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(0.01, 10))
            .param(
                ParamSpec::float("alpha", "l1 coefficient α", 1e-8, 1.0, 5e-4)
                    .log_scale()
                    .group("Method")
                    .help("Initial weight of ‖θ‖₁ in the loss."),
            )
            .param(
                ParamSpec::int("no_l1_epochs", "Epochs without l1", 0, 10_000, 0)
                    .group("Method")
                    .help("Final epochs trained without the penalty."),
            );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(L1Sparse {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            alpha: p.f64("alpha")?,
            no_l1_epochs: usize::try_from(p.i64("no_l1_epochs")?).unwrap_or(0),
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&self.training);
        // A MoCo encoder's queue starts as a trained one: keys of training samples.
        objective.fill_queue(ctx, Split::Retain, self.optim.batch_size)?;
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let steps = steps_per_epoch(ctx, Split::Retain, bs, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let alpha = l1_coefficient(self.alpha, epoch, epochs, self.no_l1_epochs);
            let stats = for_each_batch(ctx, Split::Retain, bs, true, max, |ctx, x, y| {
                let task = objective.loss(ctx, x, y)?;
                let value = task.f_double_value(&[])?;
                let loss = if alpha > 0.0 {
                    task.f_add(&l1_norm(trainer.params())?.f_mul_scalar(alpha)?)?
                } else {
                    task
                };
                trainer.step(&loss)?;
                Ok(value)
            })?;
            let norm = l1_norm(trainer.params())?.f_double_value(&[])?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({"retain_loss": stats.mean_loss(), "l1_norm": norm, "alpha": alpha, "lr": lr}),
            );
        }
        let norm = l1_norm(trainer.params())?.f_double_value(&[])?;
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "l1-sparse", "steps": trainer.steps(), "l1_norm": norm}),
        )
    }
}

lethe_plugin_api::declare_plugin!(L1Sparse);
