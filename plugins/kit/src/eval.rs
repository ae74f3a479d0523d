//! Loss (and accuracy, for classifiers) of the model on a split, in eval mode
//! and without gradients: the before/after numbers a method reports.

use crate::epoch::{batch_ticker, for_each_batch_ticking};
use crate::losses::{Objective, cross_entropy_per_sample};
use crate::model::ModelKind;
use crate::progress::phase;
use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError, Split};
use lethe_plugin_api::tch::{self, Kind};
use serde_json::{Value, json};

/// Loss and accuracy on a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss per example (cross-entropy, or for encoders the objective's
    /// InfoNCE, see [`Objective::measure_per_sample`]).
    pub loss: f64,
    /// Top-1 accuracy (classifiers only).
    pub accuracy: Option<f64>,
    /// Examples evaluated.
    pub samples: i64,
}

impl Evaluation {
    /// `{"<prefix>_loss": .., "<prefix>_acc": ..}`.
    pub fn to_json(&self, prefix: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(format!("{prefix}_loss"), json!(self.loss));
        if let Some(a) = self.accuracy {
            m.insert(format!("{prefix}_acc"), json!(a));
        }
        Value::Object(m)
    }
}

/// Evaluates `split` (first `max_batches` batches when non-zero) without
/// augmenting classifier inputs; leaves the model in eval mode. An evaluation
/// that outlasts the report interval reports `measuring the <split> split ·
/// batch i/N` at an unknown fraction (it cannot tell where the run stands; the
/// host keeps the run's).
pub fn evaluate(
    ctx: &mut HostContext,
    objective: &Objective,
    split: Split,
    batch_size: u32,
    max_batches: usize,
) -> Result<Evaluation, PluginError> {
    ctx.model_set_train(false)?;
    let mut correct = 0i64;
    let label = format!("measuring the {} split", split.name());
    let mut ticker = batch_ticker(ctx, &label, split, batch_size, max_batches);
    let stats = tch::no_grad(|| {
        for_each_batch_ticking(
            ctx,
            split,
            batch_size,
            false,
            max_batches,
            false,
            &mut ticker,
            |ctx, x, y| {
                Ok(match objective.kind {
                    ModelKind::Classifier { .. } => {
                        let logits = ctx.model_forward(ModelHead::Classifier, x)?;
                        correct += logits
                            .f_argmax(-1, false)?
                            .f_eq_tensor(y)?
                            .f_sum(Kind::Int64)?
                            .f_int64_value(&[])?;
                        cross_entropy_per_sample(&logits, y)?
                            .f_mean(Kind::Float)?
                            .f_double_value(&[])?
                    }
                    ModelKind::Encoder { .. } => objective
                        .measure_per_sample(ctx, x, y)?
                        .f_mean(Kind::Float)?
                        .f_double_value(&[])?,
                })
            },
        )
    })?;
    Ok(Evaluation {
        loss: stats.mean_loss(),
        accuracy: objective
            .kind
            .is_classifier()
            .then(|| correct as f64 / stats.samples.max(1) as f64),
        samples: stats.samples,
    })
}

/// The common end of a method: evaluates the forget split again, writes the
/// `summary` JSON result (`extra`, the model kind, forget loss/accuracy before
/// and after), reports it as the final progress and saves the model.
///
/// Announces the measurement at fraction 1: training is over when a method
/// finishes (an early stop included), and the last fraction it reported is at
/// most 1, so the run's fractions stay non-decreasing.
pub fn finish(
    ctx: &mut HostContext,
    objective: &Objective,
    batch_size: u32,
    before: &Evaluation,
    extra: Value,
) -> Result<(), PluginError> {
    phase(ctx, 1.0, "measuring the forget set after unlearning")?;
    let after = evaluate(ctx, objective, Split::Forget, batch_size, 0)?;
    let mut summary = match extra {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    summary.insert("model_kind".into(), json!(objective.kind.name()));
    summary
        .entry("objective")
        .or_insert_with(|| objective.describe());
    for (prefix, e) in [("forget_before", before), ("forget_after", &after)] {
        if let Value::Object(m) = e.to_json(prefix) {
            summary.extend(m);
        }
    }
    let summary = Value::Object(summary);
    ctx.put_json("summary", &summary)?;
    ctx.progress_metrics(1.0, "done", &summary);
    ctx.save_model()
}
