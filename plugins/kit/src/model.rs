//! Which kind of model a job runs on: the loss a method uses follows from it.

use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError, Split};
use lethe_plugin_api::tch::Tensor;

/// What the job's model is, as far as a method's loss is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// It has class logits: methods use cross-entropy.
    Classifier {
        /// Number of classes (width of the logits).
        classes: i64,
    },
    /// It has no classifier: methods use InfoNCE over two augmented views, on the
    /// output of `head` (the projection when there is one, as SimCLR trains it).
    Encoder {
        /// [`ModelHead::Projection`] or [`ModelHead::Encoder`].
        head: ModelHead,
    },
}

impl ModelKind {
    /// Whether the model has class logits.
    pub fn is_classifier(self) -> bool {
        matches!(self, ModelKind::Classifier { .. })
    }

    /// `"classifier"` or `"encoder"`, for summaries.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Classifier { .. } => "classifier",
            ModelKind::Encoder { .. } => "encoder",
        }
    }
}

fn unsupported(e: &PluginError) -> bool {
    matches!(e, PluginError::Host { status, .. } if *status == LetheStatus::UNSUPPORTED)
}

/// Finds the model's kind by running one retain example through its heads, in
/// eval mode (so normalisation statistics are not touched). Leaves the model in
/// eval mode. Reads from the retain split only, so it is safe for methods that
/// must never see a forget example.
pub fn model_kind(ctx: &mut HostContext) -> Result<ModelKind, PluginError> {
    let mut probe = ctx.batches(Split::Retain, 1, false, false)?;
    let (x, _) = probe
        .next()
        .ok_or_else(|| PluginError::msg("the retain split is empty"))??;
    drop(probe);
    model_kind_of(ctx, &x)
}

/// [`model_kind`] on a given input batch.
pub fn model_kind_of(ctx: &mut HostContext, x: &Tensor) -> Result<ModelKind, PluginError> {
    ctx.model_set_train(false)?;
    match ctx.model_forward(ModelHead::Classifier, x) {
        Ok(logits) => {
            let classes = logits.size().last().copied().unwrap_or(0);
            if classes < 2 {
                return Err(PluginError::msg(format!(
                    "the classifier has {classes} output(s); cross-entropy needs at least 2 classes"
                )));
            }
            Ok(ModelKind::Classifier { classes })
        }
        Err(e) if unsupported(&e) => match ctx.model_forward(ModelHead::Projection, x) {
            Ok(_) => Ok(ModelKind::Encoder {
                head: ModelHead::Projection,
            }),
            Err(e) if unsupported(&e) => Ok(ModelKind::Encoder {
                head: ModelHead::Encoder,
            }),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}
