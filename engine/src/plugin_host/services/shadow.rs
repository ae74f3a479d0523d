//! `lethe.shadow/1` over [`EngineServices`]: the attack's request becomes a
//! [`ShadowPlan`] over the job's splits, the models come from the cache or are
//! trained with the attacked model's recipe ([`crate::shadows`]), and their
//! logits are served per split.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use lethe_plugin_api::sdk::LogLevel;
use serde_json::{Value, json};
use tch::Tensor;

use super::{DataSplit, EngineServices, ServiceError, ServiceEvent, lock};
use crate::plugin_host::HostServices;
use crate::shadows::train::ShadowContext;
use crate::shadows::{
    PreparedShadows, SHADOW_ESTIMATE_ENV, ShadowCache, ShadowError, ShadowPlan, ShadowRecipe,
    ShadowRequest, default_cache_dir, estimate, prepare,
};

/// How `lethe.shadow/1` behaves in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowSettings {
    /// The cache folder.
    pub cache_dir: PathBuf,
    /// Only estimate the cost, record it as the `shadow_estimate` JSON result
    /// and stop the run (`lethe attack --estimate`).
    pub estimate_only: bool,
}

impl Default for ShadowSettings {
    /// [`default_cache_dir`], training allowed.
    fn default() -> Self {
        ShadowSettings {
            cache_dir: default_cache_dir(),
            estimate_only: false,
        }
    }
}

impl ShadowSettings {
    /// From the worker's environment: `$LETHE_SHADOW_CACHE` (else the default
    /// folder) and `$LETHE_SHADOW_ESTIMATE_ONLY=1`.
    pub fn from_env() -> Self {
        ShadowSettings {
            cache_dir: default_cache_dir(),
            estimate_only: std::env::var(SHADOW_ESTIMATE_ENV).is_ok_and(|v| v == "1"),
        }
    }
}

/// The prepared models and the summary string lent to the plugin.
#[derive(Debug, Default)]
pub(super) struct ShadowState {
    prepared: Option<PreparedShadows>,
    /// NUL-terminated summary; its buffer stays put until the next `prepare`.
    pub(super) summary: CString,
}

fn split_named(name: &str) -> Result<DataSplit, ServiceError> {
    Ok(match name {
        "forget" => DataSplit::Forget,
        "retain" => DataSplit::Retain,
        "validation" => DataSplit::Validation,
        "test" => DataSplit::Test,
        other => {
            return Err(ServiceError::InvalidArgument(format!(
                "shadow request: unknown split `{other}` (forget, retain, validation or test)"
            )));
        }
    })
}

impl EngineServices {
    /// Uses `settings` for `lethe.shadow/1` (by default: the default cache
    /// folder, training allowed).
    pub fn with_shadows(mut self, settings: ShadowSettings) -> Self {
        self.shadow = settings;
        self
    }

    /// The dataset rows of the request's targets, and every row of the job.
    fn shadow_rows(&self, request: &ShadowRequest) -> Result<(Vec<i64>, Vec<i64>), ServiceError> {
        let mut targets = Vec::new();
        for t in &request.targets {
            let split = split_named(&t.split)?;
            let rows = self
                .splits
                .get(split)
                .ok_or(ServiceError::NoSuchSplit(split.name()))?;
            match &t.positions {
                None => targets.extend_from_slice(rows),
                Some(positions) => {
                    for &p in positions {
                        let row = rows.get(p).ok_or_else(|| {
                            ServiceError::InvalidArgument(format!(
                                "shadow request: position {p} is past the end of the {} split ({} samples)",
                                split.name(),
                                rows.len()
                            ))
                        })?;
                        targets.push(*row);
                    }
                }
            }
        }
        let mut all = Vec::new();
        for split in [
            DataSplit::Forget,
            DataSplit::Retain,
            DataSplit::Validation,
            DataSplit::Test,
        ] {
            if let Some(rows) = self.splits.get(split) {
                all.extend_from_slice(rows);
            }
        }
        Ok((targets, all))
    }

    /// Loads or trains the models `request_json` asks for; returns the summary
    /// the plugin reads (models, cached, trained, estimate, recipe, key).
    pub fn shadow_prepare(&self, request_json: &str) -> Result<Value, ServiceError> {
        let request = ShadowRequest::parse(request_json)?;
        let (targets, all) = self.shadow_rows(&request)?;
        let plan = ShadowPlan::new(&request, &all, &targets)?;
        let checkpoint = self
            .job
            .original_checkpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from("the job's model"));
        let recipe = ShadowRecipe::resolve(&self.arch, self.meta.as_ref(), &checkpoint)?;
        let cache = ShadowCache::new(&self.shadow.cache_dir);
        let state = lock(&self.state);
        let ctx = ShadowContext {
            dataset: &state.dataset,
            recipe: &recipe,
            epochs: request.epochs,
            cache: &cache,
            device: self.device,
        };
        let est = estimate(&plan, &ctx)?;
        self.log(
            LogLevel::Info,
            &format!(
                "shadow models ({}): {} needed, {} cached, {} to train, about {:.0} s \
                 ({} steps of {:.3} s each per model, recipe of {})",
                request_mode(&request),
                est.models,
                est.cached,
                est.to_train,
                est.seconds,
                est.steps_per_model,
                est.seconds_per_step.unwrap_or(0.0),
                recipe.source.display()
            ),
        );
        let est_json = serde_json::to_value(&est).unwrap_or(Value::Null);
        if self.shadow.estimate_only {
            drop(state);
            self.put_json("shadow_estimate", &est_json.to_string())?;
            return Err(ShadowError::EstimateOnly {
                models: est.models,
                to_train: est.to_train,
                seconds: est.seconds,
            }
            .into());
        }
        let cancelled = || self.cancel.load(Ordering::SeqCst);
        let mut progress = |p: crate::shadows::ShadowProgress| {
            self.emit(ServiceEvent::Progress {
                fraction: Some(p.fraction),
                message: p.message,
                metrics: None,
            });
        };
        let prepared = prepare(&plan, &ctx, est, &cancelled, &mut progress)?;
        drop(state);
        let summary = json!({
            "models": plan.models(),
            "mode": plan.mode,
            "cached": prepared.cached,
            "trained": prepared.trained,
            "seconds": prepared.seconds,
            "pool": plan.pool.len(),
            "targets": plan.targets,
            "estimate": est_json,
            "recipe": {
                "source": recipe.source,
                "train": recipe.with_epochs(request.epochs),
                "arch": recipe.arch,
            },
            "request": serde_json::to_value(&request).unwrap_or(Value::Null),
            "key": prepared.estimate.key,
            "cache_dir": prepared.estimate.cache_dir,
        });
        let mut shadow = lock(&self.shadow_state);
        shadow.summary = CString::new(summary.to_string()).unwrap_or_default();
        shadow.prepared = Some(prepared);
        Ok(summary)
    }

    /// The prepared models' logits on `split` (`[K, n, C]`) and training
    /// halves (`[K, n]`), in split order.
    pub fn shadow_logits(&self, split: DataSplit) -> Result<(Tensor, Tensor), ServiceError> {
        let shadow = lock(&self.shadow_state);
        let prepared = shadow.prepared.as_ref().ok_or_else(|| {
            ServiceError::BadState("no shadow models yet: call prepare first".into())
        })?;
        let rows = self
            .splits
            .get(split)
            .ok_or(ServiceError::NoSuchSplit(split.name()))?;
        let idx = Tensor::f_from_slice(rows)?;
        Ok((
            prepared.logits.f_index_select(1, &idx)?,
            prepared.members.f_index_select(1, &idx)?,
        ))
    }

    /// Pointer to the last summary, for the ABI (valid until the next prepare).
    pub(super) fn shadow_summary_ptr(&self) -> *const std::ffi::c_char {
        lock(&self.shadow_state).summary.as_ptr()
    }
}

fn request_mode(r: &ShadowRequest) -> &'static str {
    match r.mode {
        crate::shadows::ShadowMode::Online => "online",
        crate::shadows::ShadowMode::Offline => "offline",
    }
}
