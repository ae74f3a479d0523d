//! How the shadow models are trained: the attacked model's architecture with
//! the training settings recorded by `lethe train` in its checkpoint, or in the
//! checkpoint it was unlearned from (an unlearned model was not trained by a
//! recipe of its own; LiRA's shadows imitate the original training).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ShadowError;
use crate::checkpoint::CheckpointMeta;
use crate::jobs::train::{Task, TrainJob};
use crate::models::{ArchConfig, HeadConfig};
use crate::train::TrainConfig;

/// Provenance notes are followed this many checkpoints back at most.
const MAX_HOPS: usize = 4;

/// The settings shadow models are trained with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowRecipe {
    /// The attacked model's architecture.
    pub arch: ArchConfig,
    /// Optimiser, schedule, epochs, batch size, augmentation of the original run.
    pub train: TrainConfig,
    /// The checkpoint whose `lethe train` record this is.
    pub source: PathBuf,
    /// That record, which a shadow model's checkpoint carries too (with its
    /// own seed) so that a method reading the training recipe finds it.
    #[serde(skip)]
    pub job: Option<TrainJob>,
}

fn job_of(meta: Option<&CheckpointMeta>) -> Option<TrainJob> {
    meta.and_then(|m| m.provenance.notes.get("job"))
        .and_then(|j| serde_json::from_str::<TrainJob>(j).ok())
}

/// A provenance path as written (often relative to where the job ran): as is,
/// else beside the checkpoint that names it.
fn resolve(note: &str, from: &Path) -> Option<PathBuf> {
    let p = PathBuf::from(note);
    if p.exists() {
        return Some(p);
    }
    let dir = from.parent()?;
    let beside = dir.join(&p);
    if beside.exists() {
        return Some(beside);
    }
    let by_name = dir.join(p.file_name()?);
    by_name.exists().then_some(by_name)
}

impl ShadowRecipe {
    /// The recipe for attacking `checkpoint` (architecture `arch`, metadata
    /// `meta`): its own `job` record, else the one of the checkpoint its
    /// `original_checkpoint` note names (followed up to a few hops).
    pub fn resolve(
        arch: &ArchConfig,
        meta: Option<&CheckpointMeta>,
        checkpoint: &Path,
    ) -> Result<ShadowRecipe, ShadowError> {
        if !matches!(arch.head, HeadConfig::Classifier { .. }) {
            return Err(ShadowError::Recipe(format!(
                "shadow models are classifiers (LiRA and RMIA read class probabilities); {} is a \
                 {arch} without a classifier",
                checkpoint.display()
            )));
        }
        let mut meta = meta.cloned();
        let mut source = checkpoint.to_path_buf();
        let mut trail = vec![checkpoint.display().to_string()];
        for _ in 0..=MAX_HOPS {
            if let Some(job) = job_of(meta.as_ref()) {
                if job.task != Task::Classifier {
                    return Err(ShadowError::Recipe(format!(
                        "{} was trained as {:?}, not as a classifier; shadow models need a \
                         supervised recipe",
                        source.display(),
                        job.task
                    )));
                }
                return Ok(ShadowRecipe {
                    arch: arch.clone(),
                    train: job.train.clone(),
                    source,
                    job: Some(job),
                });
            }
            let Some(note) = meta
                .as_ref()
                .and_then(|m| m.provenance.notes.get("original_checkpoint"))
                .cloned()
            else {
                break;
            };
            let Some(next) = resolve(&note, &source) else {
                return Err(ShadowError::Recipe(format!(
                    "{} was made from {note}, which is not there any more; shadow models are \
                     trained with that model's recorded recipe (looked via {})",
                    source.display(),
                    trail.join(" → ")
                )));
            };
            let ck = crate::checkpoint::read(&next).map_err(|e| {
                ShadowError::Recipe(format!("reading the original checkpoint: {e}"))
            })?;
            trail.push(next.display().to_string());
            meta = ck.meta;
            source = next;
        }
        Err(ShadowError::Recipe(format!(
            "{} records no training recipe (no `lethe train` record, and no original checkpoint \
             that has one; looked at {}). Shadow models are trained with the attacked model's \
             recipe: attack a model trained by `lethe train`, or one unlearned from such a model",
            checkpoint.display(),
            trail.join(" → ")
        )))
    }

    /// The recipe with `epochs` replaced when not 0.
    pub fn with_epochs(&self, epochs: usize) -> TrainConfig {
        let mut cfg = self.train.clone();
        if epochs > 0 {
            cfg.epochs = epochs;
        }
        cfg
    }
}
