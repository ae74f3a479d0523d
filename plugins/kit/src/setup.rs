//! The common start of every baseline: seed libtorch, find the model's kind,
//! take its parameters, read its training recipe, prune if asked.

use crate::losses::Objective;
use crate::moco::{EncoderTask, Moco, resolve_temperature};
use crate::model::{ModelKind, model_kind};
use crate::optim::Masks;
use crate::params::{Prune, Training};
use crate::prune::magnitude_prune;
use lethe_plugin_api::sdk::{Augment, HostContext, PluginError};
use lethe_plugin_api::tch::{self, Tensor};
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::rc::Rc;

/// What [`prepare`] found and did.
#[derive(Debug)]
pub struct Prepared {
    /// The model's kind.
    pub kind: ModelKind,
    /// The model's parameters, sharing storage with it.
    pub params: Vec<(String, Tensor)>,
    /// Pruning masks (all `None` without pruning): keep them in every update.
    pub masks: Masks,
    /// The original training recipe (`{}` when the checkpoint records none or
    /// the host cannot say).
    pub recipe: Value,
}

impl Prepared {
    /// The objective for this model: cross-entropy, or for an encoder the one
    /// its checkpoint records it was trained with (`task`: MoCo's InfoNCE with
    /// a momentum encoder and a queue over [`Prepared::params`] as they are when
    /// training starts, else SimCLR's NT-Xent), with the augmentation recipe the
    /// model was trained with (encoders whose checkpoint records none get the
    /// SimCLR recipe, since InfoNCE needs strong views). The temperature is the
    /// form's when positive, else the recorded one, else the task's default
    /// (SimCLR 0.5, MoCo 0.1).
    pub fn objective(&self, training: &Training) -> Objective {
        let recorded = self.recipe.get("augment").is_some_and(|a| !a.is_null());
        let recipe = match self.kind {
            ModelKind::Encoder { .. } if !recorded => Augment::Contrastive,
            _ => Augment::Training,
        };
        let task = self.encoder_task();
        let (temperature, _) = resolve_temperature(training.temperature, &self.recipe, task);
        let moco = match (self.kind, task) {
            (ModelKind::Encoder { .. }, EncoderTask::Moco) => {
                Some(Rc::new(RefCell::new(Moco::new(&self.params, temperature))))
            }
            _ => None,
        };
        Objective {
            kind: self.kind,
            temperature,
            augment: training.augment,
            recipe,
            moco,
        }
    }

    /// The contrastive task the checkpoint records (SimCLR when none).
    pub fn encoder_task(&self) -> EncoderTask {
        EncoderTask::of_recipe(&self.recipe)
    }
}

/// The original training recipe, `{}` when unavailable.
pub fn training_recipe(ctx: &mut HostContext) -> Result<Value, PluginError> {
    match ctx.training_recipe() {
        Ok(v) => Ok(v),
        Err(PluginError::MissingExtension(_)) => Ok(Value::Object(Map::new())),
        Err(e) => Err(e),
    }
}

/// Seeds libtorch with `seed`, finds the model's kind, takes its parameters and
/// prunes them when `prune.ratio > 0` (reporting what it pruned in the log and
/// the `pruning` JSON result).
pub fn prepare(ctx: &mut HostContext, seed: u64, prune: &Prune) -> Result<Prepared, PluginError> {
    tch::manual_seed(i64::try_from(seed).unwrap_or(i64::MAX));
    let kind = model_kind(ctx)?;
    let params = ctx.model_parameters()?;
    let recipe = training_recipe(ctx)?;
    let masks = prune_now(ctx, &params, prune)?;
    Ok(Prepared {
        kind,
        params,
        masks,
        recipe,
    })
}

/// Prunes `params` when `prune.ratio > 0`; the masks (all `None` otherwise).
pub fn prune_now(
    ctx: &mut HostContext,
    params: &[(String, Tensor)],
    prune: &Prune,
) -> Result<Masks, PluginError> {
    if prune.ratio <= 0.0 {
        return Ok(params.iter().map(|_| None).collect());
    }
    let out = magnitude_prune(params, prune.ratio, prune.scope)?;
    if out.prunable == 0 {
        return Err(PluginError::msg(format!(
            "prune_ratio {} was asked for, but the model has no {:?} parameters to prune",
            prune.ratio, prune.scope
        )));
    }
    ctx.info(&format!(
        "pruned {} of {} prunable weights ({:.2} %)",
        out.pruned,
        out.prunable,
        100.0 * out.pruned as f64 / out.prunable as f64
    ));
    ctx.put_json(
        "pruning",
        &json!({
            "ratio": prune.ratio,
            "scope": format!("{:?}", prune.scope).to_lowercase(),
            "pruned": out.pruned,
            "prunable": out.prunable,
            "parameters": params
                .iter()
                .zip(&out.masks)
                .filter(|(_, m)| m.is_some())
                .map(|((n, _), _)| n.clone())
                .collect::<Vec<_>>(),
        }),
    )?;
    Ok(out.masks)
}
