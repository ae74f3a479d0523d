//! Retrain (exact unlearning): start over from a fresh initialisation and train
//! on the retain set only, with the original training recipe. The gold standard
//! every approximate method is measured against; it never reads a forget
//! example, and for a given seed (and job seed) it is deterministic.

mod recipe;

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch;
use lethe_plugin_kit::epoch::{for_each_batch_with, report_epoch};
use lethe_plugin_kit::eval::evaluate;
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::prepare;
use lethe_plugin_kit::prune::zero_pruned;
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use serde_json::json;

/// Exact unlearning by retraining on the retain set.
pub struct Retrain {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    follow_original: bool,
    max_epochs: usize,
}

impl Plugin for Retrain {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.retrain",
            "Retrain (exact)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Exact unlearning: re-initialises the model (same architecture, seeded) and \
             trains it from scratch on the retain set only; never reads a forget example. \
             With recipe = original, the epochs, batch size, learning rate, optimiser (SGD \
             with momentum, or Adam), weight decay, schedule, augmentation and temperature \
             recorded in the checkpoint are used (the form's values fill what it does not record). Classifiers: \
             cross-entropy; encoders: the objective the checkpoint records (SimCLR NT-Xent, or \
             MoCo InfoNCE with a momentum encoder and a queue of random unit vectors at the start, \
             as lethe train), the summary's objective says which ran. Form defaults: the OPTML original \
             recipe (182 epochs, lr 0.1, ×0.1 at 50 %/75 %); Alignment Calibration retrains \
             encoders for 800 epochs at lr 0.06, cosine.",
        )
        .citation(
            "Bourtoule et al., \"Machine Unlearning\", IEEE S&P 2021; the exact-unlearning \
             reference in Jia et al., \"Model Sparsity Can Simplify Machine Unlearning\", \
             NeurIPS 2023.",
        )
        .param(
            ParamSpec::choice("recipe", "Recipe", &["original", "form"], "original")
                .group("Method")
                .help("original: the checkpoint's recorded training settings win over the form's."),
        )
        .param(
            ParamSpec::int("max_epochs", "Epoch cap", 0, 100_000, 0)
                .group("Method")
                .help("Train at most this many epochs (0: no cap); for quick trials only, no longer exact."),
        );
        let d = params::optimiser(
            d,
            &OptimDefaults {
                lr: 0.1,
                epochs: 182,
                batch_size: 256,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: "step",
            },
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Retrain {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            follow_original: p.str("recipe")? == "original",
            max_epochs: usize::try_from(p.i64("max_epochs")?).unwrap_or(0),
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        // Pruning masks come from the original weights (the sparse architecture
        // the original was pruned to), then the weights start over.
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let (mut optim, training, notes) = if self.follow_original {
            recipe::apply(&prep.recipe, &self.optim, &self.training)
        } else {
            (self.optim.clone(), self.training, Vec::new())
        };
        let drop_last = self.follow_original && recipe::drop_last(&prep.recipe);
        for note in &notes {
            ctx.warn(note);
        }
        if self.max_epochs > 0 && optim.epochs > self.max_epochs {
            ctx.warn(&format!(
                "training {} of the recipe's {} epochs (epoch cap): the result is not an exact retrain",
                self.max_epochs, optim.epochs
            ));
            optim.epochs = self.max_epochs;
        }
        ctx.model_reinitialize(self.seed)?;
        tch::manual_seed(i64::try_from(self.seed).unwrap_or(i64::MAX));
        zero_pruned(&prep.params, &prep.masks)?;
        // After the re-initialisation: a MoCo key encoder starts from the new
        // weights and its queue from random keys, as MoCo's training does.
        let objective = prep.objective(&training);
        objective.limit_queue(ctx)?;
        ctx.info(&format!("retraining with {}", objective.loss_name()));
        let bs = optim.batch_size;
        let max = training.max_batches;
        let mut steps = steps_per_epoch(ctx, Split::Retain, bs, max)?;
        if drop_last {
            let n = ctx.data_len(Split::Retain)?.unwrap_or(0);
            steps = steps.min(usize::try_from(n / u64::from(bs)).unwrap_or(usize::MAX));
        }
        let mut trainer = Trainer::new(prep.params, prep.masks, &optim, steps)?;
        let mut seen = 0i64;
        for epoch in 0..optim.epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let stats =
                for_each_batch_with(ctx, Split::Retain, bs, true, max, drop_last, |ctx, x, y| {
                    let loss = objective.loss(ctx, x, y)?;
                    let value = loss.f_double_value(&[])?;
                    trainer.step(&loss)?;
                    Ok(value)
                })?;
            seen += stats.samples;
            report_epoch(
                ctx,
                epoch + 1,
                optim.epochs,
                json!({"retain_loss": stats.mean_loss(), "lr": lr}),
            );
        }
        // Retrain must not read the forget set, even to report on it: the test
        // split shows how well it learnt instead.
        let test = evaluate(ctx, &objective, Split::Test, bs, 0).ok();
        let summary = json!({
            "method": "retrain",
            "model_kind": objective.kind.name(),
            "recipe_source": if self.follow_original && !prep.recipe.as_object().is_none_or(|m| m.is_empty()) { "original" } else { "form" },
            "epochs": optim.epochs,
            "batch_size": bs,
            "lr": optim.lr,
            "optimizer": match optim.adam {
                Some(a) => json!({"kind": "adam", "beta1": a.beta1, "beta2": a.beta2, "eps": a.eps}),
                None => json!({"kind": "sgd", "momentum": optim.sgd.momentum}),
            },
            "momentum": optim.adam.is_none().then_some(optim.sgd.momentum),
            "weight_decay": optim.sgd.weight_decay,
            "schedule": format!("{:?}", optim.schedule),
            "augment": training.augment,
            "drop_last": drop_last,
            "temperature": objective.temperature,
            "objective": objective.describe(),
            "steps": trainer.steps(),
            "retain_examples_seen": seen,
            "test_loss": test.map(|t| t.loss),
            "test_acc": test.and_then(|t| t.accuracy),
            "notes": notes,
        });
        ctx.put_json("summary", &summary)?;
        ctx.progress_metrics(1.0, "done", &summary);
        ctx.save_model()
    }
}

lethe_plugin_api::declare_plugin!(Retrain);
