//! A Lethe plugin: gradient ascent on the forget set.
//!
//! Build with `cargo build --release`, then drop `target/release/lib<name>.so` into
//! a Lethe plugins folder. See plugin-api/README.md for the rules.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch;

/// Maximises the classification loss on the forget set for a few epochs.
pub struct GradientAscent {
    lr: f64,
    epochs: i64,
    batch_size: i64,
}

impl Plugin for GradientAscent {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.example.gradient-ascent",
            "Gradient ascent (template)",
            "0.1.0",
            Kind::Method,
        )
        .description("Maximises the loss on the forget set.")
        .citation("Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020.")
        .param(
            ParamSpec::float("lr", "Learning rate", 1e-6, 1.0, 1e-3)
                .log_scale()
                .group("Optimiser"),
        )
        .param(ParamSpec::int("epochs", "Epochs", 1, 100, 1).help("Passes over the forget set."))
        .param(ParamSpec::int("batch_size", "Batch size", 1, 4096, 64).group("Optimiser"))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        // Already validated against the schema above, defaults filled in.
        Ok(GradientAscent {
            lr: params.f64("lr")?,
            epochs: params.i64("epochs")?,
            batch_size: params.i64("batch_size")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.model_set_train(true)?;
        // These share storage with the host's model: updating them updates it.
        let mut params = ctx.model_parameters()?;
        let batch_size = u32::try_from(self.batch_size).unwrap_or(u32::MAX);
        for epoch in 0..self.epochs {
            let mut loss_sum = 0.0;
            for batch in ctx.batches(Split::Forget, batch_size, true, false)? {
                ctx.check_cancelled()?;
                let (x, y) = batch?;
                let logits = ctx.model_forward(ModelHead::Classifier, &x)?;
                let loss = logits.f_cross_entropy_loss::<tch::Tensor>(
                    &y,
                    None,
                    tch::Reduction::Mean,
                    -100,
                    0.0,
                )?;
                loss.f_backward()?;
                loss_sum += loss.f_double_value(&[])?;
                tch::no_grad(|| -> Result<(), PluginError> {
                    for (_, p) in params.iter_mut() {
                        let grad = p.grad();
                        if !grad.defined() {
                            continue;
                        }
                        // Ascent: step *up* the gradient, then clear it.
                        let _ = p.f_add_(&grad.f_mul_scalar(self.lr)?)?;
                        let _ = p.grad().f_zero_()?;
                    }
                    Ok(())
                })?;
            }
            let done = epoch + 1;
            ctx.progress_metrics(
                done as f64 / self.epochs as f64,
                &format!("epoch {done}/{}", self.epochs),
                &serde_json::json!({"epoch": done, "forget_loss": loss_sum}),
            );
        }
        ctx.save_model()
    }
}

lethe_plugin_api::declare_plugin!(GradientAscent);
