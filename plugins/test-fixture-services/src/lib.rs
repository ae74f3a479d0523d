//! Test plugin for the job-services tests (engine/tests/plugin_services.rs):
//!
//! * `org.lethe.test.services.ascent` (method): a few steps of gradient ascent on
//!   the forget set's cross-entropy through the host's model, data and result
//!   extensions (forward → loss → backward → SGD step on the host's parameters),
//!   then saves the model;
//! * `org.lethe.test.services.probe` (method): runs one forget batch through the
//!   head its parameter names and stores the inputs and the output, so tests can
//!   see augmentation and a missing head's error through the real ABI;
//! * `org.lethe.test.services.eval-grad` (method): the gradient of the forget
//!   set's cross-entropy through an eval-mode forward (and whether a forward
//!   under the plugin's own `no_grad` records a graph), so tests can check that
//!   grad mode is the caller's, not tied to train/eval mode;
//! * `org.lethe.test.services.shadows` (attack): asks the host for shadow models
//!   (`lethe.shadow/1`, ABI 1.2) and stores their logits and training halves on
//!   each split with the host's summary, so tests can check training, the
//!   membership design and the cache through the real ABI.
#![deny(missing_docs)]

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Augment, Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, ShadowMode,
    ShadowRequest, ShadowTargets, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Reduction, Tensor};
use serde_json::json;

/// Gradient ascent on the forget set with plain SGD on the host's parameters.
pub struct Ascent {
    steps: i64,
    lr: f64,
    batch_size: u32,
}

impl Plugin for Ascent {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.services.ascent",
            "Services ascent test",
            "0.3.0",
            Kind::Method,
        )
        .description("Gradient ascent on the forget set through the job services.")
        .param(ParamSpec::int("steps", "Steps", 1, 100, 3))
        .param(ParamSpec::float("lr", "Learning rate", 0.0, 10.0, 0.1))
        .param(ParamSpec::int("batch_size", "Batch size", 1, 4096, 8))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(Ascent {
            steps: params.i64("steps")?,
            lr: params.f64("lr")?,
            batch_size: u32::try_from(params.i64("batch_size")?)
                .map_err(|_| PluginError::msg("batch_size out of range"))?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.model_set_train(true)?;
        let mut params = ctx.model_parameters()?;
        let mut batches_seen = 0i64;
        for step in 0..self.steps {
            ctx.check_cancelled()?;
            let mut total = 0.0;
            for batch in ctx.batches(Split::Forget, self.batch_size, true, false)? {
                let (x, y) = batch?;
                let logits = ctx.model_forward(ModelHead::Classifier, &x)?;
                let loss =
                    logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
                total += loss.f_double_value(&[])?;
                // Ascent: descend on the negated loss.
                loss.f_neg()?.f_backward()?;
                tch::no_grad(|| -> Result<(), PluginError> {
                    for (_, p) in params.iter_mut() {
                        let mut g = p.grad();
                        if g.defined() {
                            let _ = p.f_sub_(&g.f_mul_scalar(self.lr)?)?;
                            let _ = g.f_zero_()?;
                        }
                    }
                    Ok(())
                })?;
                batches_seen += 1;
            }
            ctx.progress_metrics(
                (step + 1) as f64 / self.steps as f64,
                "ascent",
                &json!({"step": step + 1, "forget_loss_sum": total}),
            );
        }
        ctx.model_set_train(false)?;
        // The forget labels in loader order (unshuffled), to check the split.
        let mut labels = Vec::new();
        for batch in ctx.batches(Split::Forget, self.batch_size, false, false)? {
            labels.push(batch?.1);
        }
        ctx.put_tensor("forget_labels", &Tensor::f_cat(&labels, 0)?)?;
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let (forget, retain, validation) = (
            ctx.data_len(Split::Forget)?,
            ctx.data_len(Split::Retain)?,
            ctx.data_len(Split::Validation)?,
        );
        ctx.put_json(
            "summary",
            &json!({"batches": batches_seen, "params": names,
                    "forget": forget, "retain": retain, "validation": validation}),
        )?;
        ctx.save_model()
    }
}

/// Runs the first forget batch through one head and stores inputs and output.
pub struct Probe {
    head: ModelHead,
    augment: bool,
}

impl Plugin for Probe {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.services.probe",
            "Services probe test",
            "0.3.0",
            Kind::Method,
        )
        .description("One forget batch through a chosen head.")
        .param(ParamSpec::choice(
            "head",
            "Head",
            &["encoder", "classifier", "projection"],
            "classifier",
        ))
        .param(ParamSpec::bool("augment", "Augment", false))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let head = match params.str("head")? {
            "encoder" => ModelHead::Encoder,
            "projection" => ModelHead::Projection,
            _ => ModelHead::Classifier,
        };
        Ok(Probe {
            head,
            augment: params.bool("augment")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let mut batches = ctx.batches(Split::Forget, 4096, false, self.augment)?;
        let (x, _) = batches
            .next()
            .ok_or_else(|| PluginError::msg("empty forget split"))??;
        drop(batches);
        ctx.put_tensor("inputs", &x)?;
        let out = ctx.model_forward(self.head, &x)?;
        ctx.put_tensor("output", &out.f_to_kind(DType::Float)?)
    }
}

/// Exercises the ABI 1.1 extensions: two augmented views of the first forget
/// batch (`lethe.augment/1`), the training recipe and a re-initialisation
/// (`lethe.model-init/1`), observed through a parameter handle taken before it.
pub struct Fresh {
    recipe: Augment,
    seed: i64,
}

impl Plugin for Fresh {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.services.fresh",
            "Augment and re-initialise test",
            "0.1.0",
            Kind::Method,
        )
        .description("Two augmented views, the recipe, then a fresh model.")
        .param(ParamSpec::choice(
            "recipe",
            "Recipe",
            &["training", "contrastive", "light"],
            "contrastive",
        ))
        .param(ParamSpec::int("seed", "Seed", 0, 1_000_000, 3))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let recipe = match params.str("recipe")? {
            "training" => Augment::Training,
            "light" => Augment::Light,
            _ => Augment::Contrastive,
        };
        Ok(Fresh {
            recipe,
            seed: params.i64("seed")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let mut batches = ctx.batches(Split::Forget, 4096, false, false)?;
        let (x, _) = batches
            .next()
            .ok_or_else(|| PluginError::msg("empty forget split"))??;
        drop(batches);
        let views = [ctx.augment(&x, self.recipe)?, ctx.augment(&x, self.recipe)?];
        ctx.put_tensor("view0", &views[0])?;
        ctx.put_tensor("view1", &views[1])?;
        let recipe = ctx.training_recipe()?;
        ctx.put_json("recipe", &recipe)?;
        let params = ctx.model_parameters()?;
        let (name, first) = params
            .first()
            .ok_or_else(|| PluginError::msg("the model has no parameters"))?;
        ctx.model_reinitialize(u64::try_from(self.seed).unwrap_or(0))?;
        // The handle taken before the reset must see the fresh values.
        ctx.put_tensor(&format!("after.{name}"), &first.f_detach()?)?;
        ctx.save_model()
    }
}

/// Cross-entropy of the whole forget split through an eval-mode classifier
/// forward, back-propagated; stores the loss, each parameter's gradient
/// (`grad.<name>`) and a summary saying whether outputs carried a graph.
pub struct EvalGrad;

impl Plugin for EvalGrad {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.services.eval-grad",
            "Eval-mode gradient test",
            "0.1.0",
            Kind::Method,
        )
        .description("Gradient of the forget loss through an eval-mode forward.")
    }

    fn create(_params: &Params) -> Result<Self, PluginError> {
        Ok(EvalGrad)
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let mut batches = ctx.batches(Split::Forget, 4096, false, false)?;
        let (x, y) = batches
            .next()
            .ok_or_else(|| PluginError::msg("empty forget split"))??;
        drop(batches);
        ctx.model_set_train(false)?;
        let inference = tch::no_grad(|| ctx.model_forward(ModelHead::Classifier, &x))?;
        let logits = ctx.model_forward(ModelHead::Classifier, &x)?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
        let params = ctx.model_parameters()?;
        let graph = loss.requires_grad();
        if graph {
            loss.f_backward()?;
        }
        for (name, p) in &params {
            let g = p.grad();
            if g.defined() {
                ctx.put_tensor(&format!("grad.{name}"), &g)?;
            }
        }
        ctx.put_tensor("loss", &loss.f_detach()?)?;
        ctx.put_json(
            "summary",
            &json!({"graph": graph, "no_grad_graph": inference.requires_grad()}),
        )
    }
}

/// Shadow models through `lethe.shadow/1`: their logits and training halves
/// on every split (`logits.<split>`, `members.<split>`) and the host's summary
/// (`shadow_summary`). With `logits_first`, asks for logits before preparing
/// (the host must refuse).
pub struct Shadows {
    request: ShadowRequest,
    logits_first: bool,
}

impl Plugin for Shadows {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.services.shadows",
            "Shadow models test",
            "0.1.0",
            Kind::Attack,
        )
        .description("Shadow-model logits through the job services.")
        .param(ParamSpec::int("models", "Models", 1, 64, 4))
        .param(ParamSpec::choice(
            "mode",
            "Mode",
            &["online", "offline"],
            "online",
        ))
        .param(ParamSpec::int("population", "Population", 0, 1_000_000, 0))
        .param(ParamSpec::int("epochs", "Epochs", 0, 1000, 0))
        .param(ParamSpec::int("seed", "Seed", 0, 1_000_000, 0))
        .param(ParamSpec::choice(
            "targets",
            "Targets",
            &["forget", "forget+test3", "bad-position"],
            "forget",
        ))
        .param(ParamSpec::bool(
            "logits_first",
            "Logits before prepare",
            false,
        ))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let count = |k: &str| -> Result<u64, PluginError> {
            Ok(u64::try_from(params.i64(k)?).unwrap_or(0))
        };
        let mut targets = vec![ShadowTargets {
            split: Split::Forget,
            positions: None,
        }];
        match params.str("targets")? {
            "forget+test3" => targets.push(ShadowTargets {
                split: Split::Test,
                positions: Some(vec![0, 1, 2]),
            }),
            "bad-position" => targets.push(ShadowTargets {
                split: Split::Test,
                positions: Some(vec![1_000_000]),
            }),
            _ => {}
        }
        Ok(Shadows {
            request: ShadowRequest {
                models: u32::try_from(count("models")?).unwrap_or(1),
                mode: if params.str("mode")? == "offline" {
                    ShadowMode::Offline
                } else {
                    ShadowMode::Online
                },
                targets,
                population: count("population")?,
                epochs: u32::try_from(count("epochs")?).unwrap_or(0),
                seed: count("seed")?,
                unlearn: None,
            },
            logits_first: params.bool("logits_first")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        if self.logits_first {
            let _early = ctx.shadow_logits(Split::Forget)?;
        }
        let summary = ctx.shadow_prepare(&self.request)?;
        ctx.put_json("shadow_summary", &summary)?;
        for split in [Split::Forget, Split::Retain, Split::Test] {
            let (logits, members) = ctx.shadow_logits(split)?;
            ctx.put_tensor(&format!("logits.{}", split.name()), &logits)?;
            ctx.put_tensor(
                &format!("members.{}", split.name()),
                &members.f_to_kind(DType::Uint8)?,
            )?;
        }
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(Ascent, Probe, Fresh, EvalGrad, Shadows);
