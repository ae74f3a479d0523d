//! Random-label unlearning (RL): each epoch, one pass over the forget set with
//! uniformly random labels, then one cross-entropy pass over the retain set.
//! Classifiers only (encoders have no labels to randomise).

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{for_each_batch, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{ModelKind, evaluate, finish, prepare};
use serde_json::json;

/// Random labels on the forget set, then a retain pass, per epoch.
pub struct RandomLabel {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
}

impl Plugin for RandomLabel {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.random-label",
            "Random labels (RL)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .description(
            "Each epoch: one pass over the forget set trained towards uniformly random \
             labels (fresh each batch), then one cross-entropy pass over the retain set. \
             Classifiers only. Reference settings: lr 0.01, 10 epochs (OPTML Unlearn-Sparse).",
        )
        .citation(
            "Graves, Nagisetty and Ganesh, \"Amnesiac Machine Learning\", AAAI 2021; Hayase \
             et al., \"Selective Forgetting of Deep Networks at a Finer Level than Samples\", \
             2020; benchmarked in Jia et al., \"Model Sparsity Can Simplify Machine \
             Unlearning\", NeurIPS 2023.",
        );
        let d = params::optimiser(d, &OptimDefaults::optml(0.01, 10));
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(RandomLabel {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let ModelKind::Classifier { classes } = prep.kind else {
            return Err(PluginError::msg(
                "random-label unlearning needs class logits, but the model is an encoder",
            ));
        };
        let objective = prep.objective(&self.training);
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let steps = steps_per_epoch(ctx, Split::Forget, bs, max)?
            + steps_per_epoch(ctx, Split::Retain, bs, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let forget = for_each_batch(ctx, Split::Forget, bs, true, max, |ctx, x, y| {
                let random = Tensor::f_randint(classes, y.size(), (DType::Int64, y.device()))?;
                let loss = objective
                    .per_sample_with_labels(ctx, x, &random)?
                    .f_mean(DType::Float)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            let retain = for_each_batch(ctx, Split::Retain, bs, true, max, |ctx, x, y| {
                let loss = objective.loss(ctx, x, y)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({
                    "forget_random_label_loss": forget.mean_loss(),
                    "retain_loss": retain.mean_loss(),
                    "lr": lr,
                }),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "random-label", "steps": trainer.steps()}),
        )
    }
}

lethe_plugin_api::declare_plugin!(RandomLabel);
