//! Shadow ("reference") models for likelihood-ratio membership attacks (LiRA,
//! RMIA), trained by the engine and cached on disk.
//!
//! An attack plugin asks for `K` models through `lethe.shadow/1` with a
//! [`ShadowRequest`]; the engine
//!
//! 1. resolves the attacked model's training recipe ([`ShadowRecipe`]: its own
//!    `lethe train` record, or that of the checkpoint it was unlearned from);
//! 2. plans a pool of the job's samples and, for each model, a random half of
//!    it to train on ([`ShadowPlan`]): online, the attack's targets are in the
//!    pool and each is in the training half of about half the models (the
//!    balanced design of the LiRA code); offline, no model ever sees a target;
//! 3. keys the models by everything that determines them (architecture,
//!    recipe, data content, pool, `K`, seed: [`ShadowPlan::key`]) and loads
//!    the ones a previous run left in the cache ([`cache`]);
//! 4. estimates the cost of the rest from a timed mini-batch
//!    ([`estimate`]) and trains them ([`prepare`]), keeping
//!    each model's logits on every sample of the dataset, not the model.
//!
//! The attacked checkpoint's weights play no part in the shadow models, so an
//! original model and the models unlearned from it share one set of shadows:
//! attacking "before" and "after" trains them once.
//!
//! A request with an `unlearn` block ([`ShadowUnlearn`], U-LiRA) also runs the
//! unlearning method on each model ([`unlearn`]) and serves the unlearned
//! copies' logits; the trained models are the same ones (same key), kept with
//! their weights.

pub mod cache;
mod plan;
mod recipe;
pub mod train;
pub mod unlearn;

pub use cache::{SHADOW_CACHE_ENV, SHADOW_ESTIMATE_ENV, ShadowCache, default_cache_dir};
pub use plan::ShadowPlan;
pub use recipe::ShadowRecipe;
pub use train::{PreparedShadows, ShadowEstimate, ShadowProgress, estimate, prepare};
pub use unlearn::{ShadowMethod, ShadowUnlearn, UnlearnSetup};

use serde::{Deserialize, Serialize};

/// Why shadow models could not be provided. The message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The request does not make sense (no models, unknown split, bad position).
    #[error("shadow request: {0}")]
    Request(String),
    /// The attacked model does not say how it was trained.
    #[error("{0}")]
    Recipe(String),
    /// Training a shadow model failed.
    #[error("training shadow model {model}: {source}")]
    Train {
        /// 0-based model number.
        model: usize,
        /// What went wrong.
        source: crate::train::TrainError,
    },
    /// The cache could not be read or written.
    #[error("shadow cache {path}: {message}")]
    Cache {
        /// File or folder at fault.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The models could not be built.
    #[error("{0}")]
    Model(#[from] crate::models::ModelError),
    /// The job was cancelled while models were training; finished models stay
    /// in the cache.
    #[error("cancelled while training shadow models ({done} of {total} ready)")]
    Cancelled {
        /// Models ready (cached or trained).
        done: usize,
        /// Models asked for.
        total: usize,
    },
    /// The host was asked for the cost only (`lethe attack --estimate`).
    #[error(
        "estimate only: {to_train} of {models} shadow models would be trained, about {seconds:.0} s; nothing was trained"
    )]
    EstimateOnly {
        /// Models asked for.
        models: usize,
        /// Models not in the cache.
        to_train: usize,
        /// Estimated seconds.
        seconds: f64,
    },
}

/// Online or offline (see [`ShadowPlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowMode {
    /// Targets are in the pool; each is in about half the training halves.
    Online,
    /// No model trains on a target.
    Offline,
}

/// Samples of one split the attack asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// `forget`, `retain`, `validation` or `test`.
    pub split: String,
    /// Positions within the split; `None` = all of it.
    #[serde(default)]
    pub positions: Option<Vec<usize>>,
}

/// What an attack asks for (the JSON of `lethe.shadow/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// Number of models, `K`.
    pub models: usize,
    /// Online or offline.
    pub mode: ShadowMode,
    /// The samples the attack asks about.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Pool size (targets included online, excluded offline); 0 = every sample.
    #[serde(default)]
    pub population: usize,
    /// Epochs per model; 0 = the recipe's.
    #[serde(default)]
    pub epochs: usize,
    /// Seed of the pool, the halves and the models' initialisation and batches.
    #[serde(default)]
    pub seed: u64,
    /// Unlearn each model after training (U-LiRA): the models served are the
    /// unlearned copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlearn: Option<Box<ShadowUnlearn>>,
}

/// Most models one request may ask for: each is a full training run.
pub const MAX_MODELS: usize = 1024;

impl ShadowRequest {
    /// Parses and checks the plugin's JSON.
    pub fn parse(json: &str) -> Result<ShadowRequest, ShadowError> {
        let req: ShadowRequest = serde_json::from_str(json)
            .map_err(|e| ShadowError::Request(format!("not a valid request: {e}")))?;
        if req.models == 0 || req.models > MAX_MODELS {
            return Err(ShadowError::Request(format!(
                "`models` must be 1 to {MAX_MODELS}, got {}",
                req.models
            )));
        }
        if req.mode == ShadowMode::Online && req.models < 2 {
            return Err(ShadowError::Request(
                "online attacks need at least 2 models (some trained with each target, some without)"
                    .into(),
            ));
        }
        if req.unlearn.as_ref().is_some_and(|u| u.forget.is_empty()) {
            return Err(ShadowError::Request(
                "`unlearn.forget` names no samples: say which targets the shadow models forget"
                    .into(),
            ));
        }
        Ok(req)
    }
}
