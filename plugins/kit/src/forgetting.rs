//! Sample or class unlearning: methods whose schedule or stopping rule differs
//! between forgetting random samples and forgetting a whole class (Contrastive
//! Unlearning's early stop, Discriminative Adversarial Unlearning's λ schedule)
//! tell them apart the same way.

use crate::batch_size;
use lethe_plugin_api::sdk::{HostContext, PluginError, Split};
use lethe_plugin_api::tch::Device;
use std::collections::BTreeSet;

/// What the forget set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgetting {
    /// Samples whose classes stay represented in the retain set.
    Samples,
    /// Every training sample of one class: the retain set has none of it.
    Class(i64),
}

impl Forgetting {
    /// `"sample"` or `"class"`, for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Forgetting::Samples => "sample",
            Forgetting::Class(_) => "class",
        }
    }
}

/// The labels occurring in `split` (empty when the job has no such split).
pub fn labels_of(ctx: &mut HostContext, split: Split) -> Result<BTreeSet<i64>, PluginError> {
    let mut seen = BTreeSet::new();
    if ctx.data_len(split)?.unwrap_or(0) == 0 {
        return Ok(seen);
    }
    for batch in ctx.batches(split, batch_size(1024), false, false)? {
        ctx.check_cancelled()?;
        let (_, y) = batch?;
        seen.extend(Vec::<i64>::try_from(&y.f_to_device(Device::Cpu)?)?);
    }
    Ok(seen)
}

/// [`Forgetting::Class`] when every forget sample has one label that no retain
/// sample has, else [`Forgetting::Samples`]. Reads labels only.
pub fn detect(ctx: &mut HostContext) -> Result<Forgetting, PluginError> {
    let forget = labels_of(ctx, Split::Forget)?;
    let only = match forget.iter().next() {
        Some(&c) if forget.len() == 1 => c,
        _ => return Ok(Forgetting::Samples),
    };
    let retain = labels_of(ctx, Split::Retain)?;
    Ok(if retain.contains(&only) {
        Forgetting::Samples
    } else {
        Forgetting::Class(only)
    })
}
