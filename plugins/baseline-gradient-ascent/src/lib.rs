//! Gradient ascent (GA): maximise the loss on the forget set (negated
//! cross-entropy for classifiers, negated InfoNCE for encoders).

use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_kit::epoch::{for_each_batch, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{evaluate, finish, prepare};
use serde_json::json;

/// Gradient ascent on the forget set.
pub struct GradientAscent {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
}

impl Plugin for GradientAscent {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.gradient-ascent",
            "Gradient ascent (GA)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Steps up the gradient of the loss on the forget set only (SGD on the negated \
             loss): cross-entropy for classifiers; for encoders the InfoNCE they were trained \
             with (SimCLR NT-Xent, or MoCo's with a momentum encoder and a queue). Fast, but unbounded: too many steps destroy the model. Reference \
             settings: lr 1e-4, 5 epochs (OPTML Unlearn-Sparse); 1e-6-1e-4 for encoders.",
        )
        .citation(
            "Thudi, Deza, Chandrasekaran and Papernot, \"Unrolling SGD: Understanding \
             Factors Influencing Machine Unlearning\", EuroS&P 2022; Golatkar, Achille and \
             Soatto, \"Eternal Sunshine of the Spotless Net\", CVPR 2020; benchmarked in \
             Jia et al., \"Model Sparsity Can Simplify Machine Unlearning\", NeurIPS 2023.",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(1e-4, 5));
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(GradientAscent {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
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
        let steps = steps_per_epoch(ctx, Split::Forget, bs, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let stats = for_each_batch(ctx, Split::Forget, bs, true, max, |ctx, x, y| {
                let loss = objective.loss(ctx, x, y)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss.f_neg()?)?;
                Ok(value)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({"forget_loss": stats.mean_loss(), "lr": lr}),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "gradient-ascent", "steps": trainer.steps()}),
        )
    }
}

lethe_plugin_api::declare_plugin!(GradientAscent);
