//! Fine-tuning (FT): keep training on the retain set only, so the forget set's
//! influence fades through catastrophic forgetting. Cross-entropy for
//! classifiers, InfoNCE over two augmented views for encoders.

use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_kit::epoch::{for_each_batch, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{evaluate, finish, prepare};
use serde_json::json;

/// Fine-tuning on the retain set.
pub struct Finetune {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
}

impl Plugin for Finetune {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.finetune",
            "Fine-tune (FT)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Trains the model on the retain set only for a few epochs, so what it learnt \
             from the forget set fades (catastrophic forgetting). Cross-entropy for \
             classifiers; for encoders the InfoNCE they were trained with (SimCLR NT-Xent, or \
             MoCo's with a momentum encoder and a queue, as the checkpoint records). Reference \
             settings: lr 0.01, 10 epochs (OPTML Unlearn-Sparse); 0.003-0.03 for encoders \
             (Alignment Calibration).",
        )
        .citation(
            "Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, \"Model Sparsity Can Simplify \
             Machine Unlearning\", NeurIPS 2023 (FT baseline); Warnecke et al., \"Machine \
             Unlearning of Features and Labels\", NDSS 2023.",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(0.01, 10));
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Finetune {
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
        let steps = steps_per_epoch(ctx, Split::Retain, bs, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let stats = for_each_batch(ctx, Split::Retain, bs, true, max, |ctx, x, y| {
                let loss = objective.loss(ctx, x, y)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({"retain_loss": stats.mean_loss(), "lr": lr}),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "finetune", "steps": trainer.steps()}),
        )
    }
}

lethe_plugin_api::declare_plugin!(Finetune);
