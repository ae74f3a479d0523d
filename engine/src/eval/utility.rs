//! Utility of a model on the job's splits: retain accuracy (RA), test accuracy
//! (TA) and forget ("unlearn") accuracy (UA), overall and per class. A
//! classifier is read directly; an encoder has no classes, so, as in the
//! papers, a linear probe is trained on its frozen features of the retain
//! split and read instead. A good unlearning result sits near the retrained
//! model, typically UA ≈ TA < RA.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::EvalError;
use super::job_data::JobData;
use crate::checkpoint::LoadedModel;
use crate::models::Model;
use crate::train::Flow;
use crate::train::probe::{ProbeCache, ProbeError, ProbeRecipe, extract, probe_for};
use crate::train::supervised::predict_logits;

/// Accuracy and loss of one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitUtility {
    /// Samples in the split.
    pub samples: usize,
    /// Top-1 accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy per class; `None` for classes absent from the split.
    pub per_class: Vec<Option<f64>>,
}

/// How an encoder was read: the probe's recipe, cache key, whether it came
/// from the cache, and its accuracy on the retain samples it trained on.
pub use crate::train::probe::ProbeRun as ProbeInfo;

/// RA / TA / UA (and validation) of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utility {
    /// `classifier`, or `linear probe` for encoders.
    pub reader: String,
    /// The probe's settings, for encoders.
    pub probe: Option<ProbeInfo>,
    /// Retained training samples (RA).
    pub retain: SplitUtility,
    /// Held-out test samples (TA).
    pub test: SplitUtility,
    /// The forget set (UA).
    pub forget: SplitUtility,
    /// Validation samples, when the split has any.
    pub validation: Option<SplitUtility>,
}

fn split_utility(
    logits: &Tensor,
    labels: &Tensor,
    classes: usize,
) -> Result<SplitUtility, EvalError> {
    let labels = labels
        .f_to_device(logits.device())?
        .f_to_kind(Kind::Int64)?;
    let n = labels.size().first().copied().unwrap_or(0) as usize;
    if n == 0 {
        return Ok(SplitUtility {
            samples: 0,
            accuracy: 0.0,
            loss: 0.0,
            per_class: vec![None; classes],
        });
    }
    let loss = logits
        .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)?
        .f_double_value(&[])?;
    let pred = Vec::<i64>::try_from(logits.f_argmax(1, false)?.f_to_device(Device::Cpu)?)?;
    let truth = Vec::<i64>::try_from(labels.f_to_device(Device::Cpu)?)?;
    let mut right = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    for (p, t) in pred.iter().zip(&truth) {
        if let Some(slot) = usize::try_from(*t).ok().filter(|t| *t < classes) {
            total[slot] += 1;
            right[slot] += usize::from(p == t);
        }
    }
    let correct = pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
    Ok(SplitUtility {
        samples: n,
        accuracy: correct as f64 / n as f64,
        loss,
        per_class: right
            .iter()
            .zip(&total)
            .map(|(r, t)| (*t > 0).then(|| *r as f64 / *t as f64))
            .collect(),
    })
}

/// Images to logits, batch by batch.
type LogitsFn<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;

/// Evaluates `model` on the retain, test, forget and validation rows of `data`;
/// an encoder through the probe of `probe`, from `cache` when it holds it
/// (the same head an attack on the same model and retain samples gets).
pub fn evaluate_utility(
    model: &LoadedModel,
    data: &JobData,
    device: Device,
    probe: &ProbeRecipe,
    cache: Option<&ProbeCache>,
) -> Result<Utility, EvalError> {
    let classes = data.dataset.num_classes();
    let parts = |rows: &[i64]| data.dataset.subset(rows);
    let retain = parts(&data.retain)?;
    let test = parts(&data.split.test)?;
    let forget = parts(data.forget.indices())?;
    let validation = if data.split.val.is_empty() {
        None
    } else {
        Some(parts(&data.split.val)?)
    };
    // Logits are computed batch by batch without gradients (`map_batches`);
    // only the probe's head trains.
    let (reader, info, logits_of): (String, Option<ProbeInfo>, LogitsFn<'_>) = match &model.model {
        Model::Classifier(_) => (
            "classifier".into(),
            None,
            Box::new(|images: &Tensor| predict_logits(&model.model, images, 512, device)),
        ),
        Model::Encoder(_) => {
            let feat = move |x: &Tensor| model.model.features(x, false);
            let (head, run) = probe_for(
                &model.vs,
                &feat,
                retain.images(),
                retain.labels(),
                classes as i64,
                probe,
                device,
                cache,
                &mut |_, _, _| Flow::Continue,
            )
            .map_err(|e| match e {
                ProbeError::Train(t) => EvalError::Train(t),
                ProbeError::Cache(c) => EvalError::Checkpoint(c),
                ProbeError::Cancelled => EvalError::Invalid("probe training was cancelled".into()),
            })?;
            (
                "linear probe on the frozen encoder features, trained on retain".into(),
                Some(run),
                Box::new(move |images: &Tensor| {
                    let _guard = tch::no_grad_guard();
                    head.logits(&extract(&feat, images, device))
                }),
            )
        }
    };
    let score = |set: &crate::data::Dataset| -> Result<SplitUtility, EvalError> {
        let _guard = tch::no_grad_guard();
        split_utility(&logits_of(set.images()), set.labels(), classes)
    };
    Ok(Utility {
        reader,
        probe: info,
        retain: score(&retain)?,
        test: score(&test)?,
        forget: score(&forget)?,
        validation: validation.as_ref().map(score).transpose()?,
    })
}
