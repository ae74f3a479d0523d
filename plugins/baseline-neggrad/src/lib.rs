//! NegGrad: descend the loss on retain examples and ascend it on forget
//! examples in the same batches, `(Σ_retain ℓ − w·Σ_forget ℓ) / (n_r + n_f)`.
//!
//! Each batch mixes retain and forget examples and goes through the model once
//! ([`mixed_batch_loss`]), as in the Alignment Calibration code behind the
//! encoder baselines (`algs.py`, `unlearn_mode == 'ng'`: one NT-Xent with
//! per-row reduction over the shuffled retain ∪ unlearn batch, then
//! `(loss[retain rows].sum() − loss[unlearn rows].sum()) / len(loss)`). For an
//! encoder the difference matters: a forget example's InfoNCE takes its
//! negatives from the whole mixed batch, not from a batch of forget examples
//! alone; for a classifier with BatchNorm the forget rows are normalised with the
//! mixed batch's statistics, as a shuffled concatenation of the two sets gives.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{Cycle, for_each_batch, mixed_batch_sizes, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{ModelKind, Objective, evaluate, finish, prepare};
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
             (Σ_retain ℓ − w·Σ_forget ℓ)/(n_r + n_f). Each mixed batch goes through the model \
             once: cross-entropy for classifiers; for encoders one InfoNCE over the whole mixed \
             batch, as the Alignment Calibration reference code computes it: SimCLR NT-Xent \
             (two augmented views, every other sample a negative) or, for a MoCo encoder, \
             MoCo's InfoNCE (keys from a momentum encoder, negatives from a queue, the \
             batch's keys enqueued). Reference settings: 10 epochs, w = 1 \
             (Alignment Calibration). See FIDELITY.md, NegGrad.",
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
        // A MoCo encoder's queue starts as a trained one: keys of training samples.
        objective.fill_queue(ctx, Split::Retain, self.optim.batch_size)?;
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
                let m = mixed_batch_loss((x, y), (&xf, &yf), w, |x, y| {
                    objective.per_sample(ctx, x, y)
                })?;
                f_sum += m.forget.f_sum(DType::Float)?.f_double_value(&[])?;
                f_n += m.forget.size()[0];
                let retain_mean = m.retain.f_mean(DType::Float)?.f_double_value(&[])?;
                trainer.step(&m.loss)?;
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
                   "retain_batch": br, "forget_batch": bf,
                   "objective": objective_name(&objective),
                   "objective_settings": objective.describe()}),
        )
    }
}

/// What the summary says ran: the loss and that each mixed batch was one pass.
fn objective_name(objective: &Objective) -> String {
    match objective.kind {
        ModelKind::Classifier { .. } => {
            "(Σ_retain CE − w·Σ_forget CE)/n over one forward pass of each mixed batch".into()
        }
        ModelKind::Encoder { .. } => format!(
            "(Σ_retain ℓ − w·Σ_forget ℓ)/n, ℓ the per-sample {} of one InfoNCE over each \
             mixed retain+forget batch",
            objective.loss_name()
        ),
    }
}

/// NegGrad's loss on one mixed batch and its per-sample parts.
#[derive(Debug)]
pub struct MixedLoss {
    /// `(Σ_retain ℓ − w·Σ_forget ℓ) / (n_r + n_f)`.
    pub loss: Tensor,
    /// The retain examples' losses `[n_r]`.
    pub retain: Tensor,
    /// The forget examples' losses `[n_f]`.
    pub forget: Tensor,
}

/// Stacks the retain rows and the forget rows into one batch, runs
/// `per_sample(inputs, labels)` once on it (so an encoder's InfoNCE contrasts
/// every sample with the whole mixed batch), and flips the sign of the forget
/// part: `(Σ_retain ℓ − w·Σ_forget ℓ) / (n_r + n_f)`.
pub fn mixed_batch_loss<F>(
    (xr, yr): (&Tensor, &Tensor),
    (xf, yf): (&Tensor, &Tensor),
    w: f64,
    mut per_sample: F,
) -> Result<MixedLoss, PluginError>
where
    F: FnMut(&Tensor, &Tensor) -> Result<Tensor, PluginError>,
{
    let n_r = xr.size().first().copied().unwrap_or(0);
    let x = Tensor::f_cat(&[xr, xf], 0)?;
    let y = Tensor::f_cat(&[yr, yf], 0)?;
    let l = per_sample(&x, &y)?;
    let n = l.size().first().copied().unwrap_or(0);
    let retain = l.f_narrow(0, 0, n_r)?;
    let forget = l.f_narrow(0, n_r, n - n_r)?;
    let loss = retain
        .f_sum(DType::Float)?
        .f_sub(&forget.f_sum(DType::Float)?.f_mul_scalar(w)?)?
        .f_div_scalar(n.max(1) as f64)?;
    Ok(MixedLoss {
        loss,
        retain,
        forget,
    })
}

lethe_plugin_api::declare_plugin!(NegGrad);

#[cfg(test)]
mod tests;
