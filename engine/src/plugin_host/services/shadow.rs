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
use crate::exec::{ExecutorConfig, Stage, StageEvent, Unit, UnitSpec, unit::UNIT_FORMAT};
use crate::plugin_host::HostServices;
use crate::shadows::train::ShadowContext;
use crate::shadows::{
    PreparedShadows, SHADOW_ESTIMATE_ENV, ShadowCache, ShadowError, ShadowPlan, ShadowRecipe,
    ShadowRequest, TargetSpec, UnlearnSetup, default_cache_dir, estimate, prepare,
};
use crate::worker::child::JobFiles;

/// How `lethe.shadow/1` behaves in a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    /// The cache folder.
    pub cache_dir: PathBuf,
    /// Only estimate the cost, record it as the `shadow_estimate` JSON result
    /// and stop the run (`lethe attack --estimate`).
    pub estimate_only: bool,
    /// Train the missing models as units on this executor (one
    /// [`UnitSpec::TrainShadows`] per model) instead of in this process;
    /// `None` or a local executor of one job trains them here.
    pub executor: Option<ExecutorConfig>,
    /// The job's files, which the units load again (needed with `executor`).
    pub job_files: Option<JobFiles>,
    /// The unlearning method already resolved (a shadow unit's, from the
    /// attack's worker): used as is instead of searching the plugin folders.
    pub method: Option<crate::shadows::ShadowMethod>,
}

impl Default for ShadowSettings {
    /// [`default_cache_dir`], training allowed, in this process.
    fn default() -> Self {
        ShadowSettings {
            cache_dir: default_cache_dir(),
            estimate_only: false,
            executor: None,
            job_files: None,
            method: None,
        }
    }
}

impl ShadowSettings {
    /// From the worker's environment: `$LETHE_SHADOW_CACHE` (else the default
    /// folder), `$LETHE_SHADOW_ESTIMATE_ONLY=1` and `$LETHE_EXECUTOR` (an
    /// unreadable executor is ignored with a message on stderr, the models then
    /// train here).
    pub fn from_env() -> Self {
        let executor = match ExecutorConfig::from_env() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{e}; shadow models train in this worker");
                None
            }
        };
        ShadowSettings {
            cache_dir: default_cache_dir(),
            estimate_only: std::env::var(SHADOW_ESTIMATE_ENV).is_ok_and(|v| v == "1"),
            executor,
            job_files: None,
            method: None,
        }
    }
}

/// The prepared models and the summary string lent to the plugin.
#[derive(Debug, Default)]
pub(super) struct ShadowState {
    prepared: Option<PreparedShadows>,
    /// NUL-terminated summary; its buffer stays put until the next `prepare`.
    pub(super) summary: CString,
    /// Largest stack of shadow models trained at once, when set
    /// ([`EngineServices::with_shadow_stack`]); else `$LETHE_SHADOW_STACK`.
    stack: Option<usize>,
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

    /// Trains up to `models` small shadow models at once (0 or 1: one after
    /// another) instead of what `$LETHE_SHADOW_STACK` says (default: see
    /// [`crate::shadows::train::stack_from_env`]).
    pub fn with_shadow_stack(self, models: usize) -> Self {
        lock(&self.shadow_state).stack = Some(models);
        self
    }

    /// The dataset rows `specs` name.
    fn rows_of(&self, specs: &[TargetSpec]) -> Result<Vec<i64>, ServiceError> {
        let mut targets = Vec::new();
        for t in specs {
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
        Ok(targets)
    }

    /// The dataset rows of the request's targets, and every row of the job.
    fn shadow_rows(&self, request: &ShadowRequest) -> Result<(Vec<i64>, Vec<i64>), ServiceError> {
        let targets = self.rows_of(&request.targets)?;
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

    /// The request's `unlearn` block resolved: the method (by default the one
    /// that made the attacked model, with its parameters), found in the plugin
    /// folders, and the rows each shadow forgets (which must be targets).
    fn unlearn_setup(
        &self,
        request: &ShadowRequest,
        targets: &[i64],
    ) -> Result<Option<UnlearnSetup>, ServiceError> {
        let Some(u) = &request.unlearn else {
            return Ok(None);
        };
        let bad = |m: String| ServiceError::Shadow(ShadowError::Request(m));
        let files = self.shadow.job_files.clone().ok_or_else(|| {
            ServiceError::BadState(
                "unlearned shadow models need the job's files (only a worker's jobs have them)"
                    .into(),
            )
        })?;
        let notes = self.meta.as_ref().map(|m| &m.provenance.notes);
        let note = |name: &str| notes.and_then(|n| n.get(name)).cloned();
        let model = self
            .job
            .original_checkpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from("the attacked model"));
        let worker = crate::worker::WorkerOptions::current_exe()
            .map_err(|e| ServiceError::BadState(format!("cannot find this program: {e}")))?;
        let (method, version, library, params) = match &self.shadow.method {
            Some(m) => (
                m.id.clone(),
                m.version.clone(),
                m.library.clone(),
                m.params.clone(),
            ),
            None => {
                let method = u.method.clone().or_else(|| note("plugin_id")).ok_or_else(|| {
                    bad(format!(
                        "{} records no unlearning method (it is not the output of `lethe unlearn`): \
                         there is no deletion to imitate on the shadow models",
                        model.display()
                    ))
                })?;
                let params = match &u.params {
                    Some(p) => p.clone(),
                    None => match note("params") {
                        Some(text) => serde_json::from_str(&text).map_err(|e| {
                            bad(format!(
                                "{}: its recorded method parameters are not JSON: {e}",
                                model.display()
                            ))
                        })?,
                        None => Value::Object(Default::default()),
                    },
                };
                let (library, descriptor) = crate::worker::find_plugin(
                    &crate::worker::WorkerOptions {
                        timeout: Some(std::time::Duration::from_secs(120)),
                        ..worker.clone()
                    },
                    &crate::worker::plugin_dirs(&[]),
                    &method,
                )
                .map_err(bad)?;
                if descriptor.kind != "method" {
                    return Err(bad(format!(
                        "`{method}` is a {}, not an unlearning method",
                        descriptor.kind
                    )));
                }
                if u.method.is_none()
                    && let Some(v) = note("plugin_version")
                    && v != descriptor.version
                {
                    return Err(bad(format!(
                        "{} was unlearned by {method} {v}, but {} offers version {}: the shadow \
                         models must be unlearned by the method that made the model",
                        model.display(),
                        library.display(),
                        descriptor.version
                    )));
                }
                (method, descriptor.version, library, params)
            }
        };
        let library_sha256 = crate::plugin_host::trust::file_sha256(&library)
            .map_err(|e| bad(format!("{}: {e}", library.display())))?;
        let mut forget_rows = self.rows_of(&u.forget)?;
        forget_rows.sort_unstable();
        forget_rows.dedup();
        let mut sorted_targets = targets.to_vec();
        sorted_targets.sort_unstable();
        if let Some(r) = forget_rows
            .iter()
            .find(|r| sorted_targets.binary_search(r).is_err())
        {
            return Err(bad(format!(
                "`unlearn.forget` names sample {r}, which is not among the request's targets"
            )));
        }
        let reference = crate::jobs::run_record::RunRecord::load(
            model.parent().unwrap_or(std::path::Path::new(".")),
        )
        .ok()
        .map(|r| {
            let len = |split| self.splits.get(split).map_or(0, Vec::len);
            let trained = len(DataSplit::Retain) + len(DataSplit::Forget);
            (r.seconds, trained)
        });
        Ok(Some(UnlearnSetup {
            method,
            version,
            library,
            library_sha256,
            params,
            forget_rows,
            data: files.data,
            seed: files.seed,
            device: files.device,
            worker,
            reference,
        }))
    }

    /// The plan of `request` over the job's splits, the recipe the models
    /// follow and the cache: the same for the attack's worker and for a
    /// shadow unit on another node.
    fn shadow_setup(
        &self,
        request: &ShadowRequest,
    ) -> Result<(ShadowPlan, ShadowRecipe, ShadowCache, Option<UnlearnSetup>), ServiceError> {
        let (targets, all) = self.shadow_rows(request)?;
        let plan = ShadowPlan::new(request, &all, &targets)?;
        let unlearn = self.unlearn_setup(request, &targets)?;
        let checkpoint = self
            .job
            .original_checkpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from("the job's model"));
        let recipe = ShadowRecipe::resolve(&self.arch, self.meta.as_ref(), &checkpoint)?;
        Ok((
            plan,
            recipe,
            ShadowCache::new(&self.shadow.cache_dir),
            unlearn,
        ))
    }

    /// Loads or trains the models `request_json` asks for; returns the summary
    /// the plugin reads (models, cached, trained, estimate, recipe, key).
    pub fn shadow_prepare(&self, request_json: &str) -> Result<Value, ServiceError> {
        let request = ShadowRequest::parse(request_json)?;
        let (plan, recipe, cache, unlearn) = self.shadow_setup(&request)?;
        let unlearn = unlearn.as_ref();
        let est = self.with_shadow_ctx(&request, &recipe, &cache, unlearn, |ctx| {
            estimate(&plan, ctx)
        })?;
        if let Some(u) = unlearn {
            self.log(
                LogLevel::Info,
                &format!(
                    "each shadow model is unlearned with {} {} ({} of {} copies cached, {} to make; \
                     about {} s per unlearning run)",
                    u.method,
                    u.version,
                    est.models - est.to_unlearn,
                    est.models,
                    est.to_unlearn,
                    est.seconds_per_unlearn
                        .map_or("an unknown number of".into(), |s| format!("{s:.0}"))
                ),
            );
        }
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
            self.put_json("shadow_estimate", &est_json.to_string())?;
            return Err(ShadowError::EstimateOnly {
                models: est.models,
                to_train: est.to_train,
                seconds: est.seconds,
            }
            .into());
        }
        if est.to_train + est.to_unlearn > 0
            && let Some(executor) = self.shadow.executor.as_ref().filter(|e| !e.is_inline())
        {
            self.train_on_executor(executor, &request, &plan, &est, &cache, unlearn)?;
        }
        let done = self.with_shadow_ctx(&request, &recipe, &cache, unlearn, |ctx| {
            self.finish_prepare(&request, &plan, &recipe, ctx, est, est_json)
        })?;
        self.keep_prepared(done)
    }

    /// Runs `f` on the shadow context of `request` over the job's dataset,
    /// holding the state's lock meanwhile.
    fn with_shadow_ctx<R>(
        &self,
        request: &ShadowRequest,
        recipe: &ShadowRecipe,
        cache: &ShadowCache,
        unlearn: Option<&UnlearnSetup>,
        f: impl FnOnce(&ShadowContext<'_>) -> R,
    ) -> R {
        let stack = lock(&self.shadow_state)
            .stack
            .unwrap_or_else(|| crate::shadows::train::stack_from_env(self.device));
        let state = lock(&self.state);
        f(&ShadowContext {
            dataset: &state.dataset,
            recipe,
            epochs: request.epochs,
            cache,
            device: self.device,
            unlearn,
            stack,
        })
    }

    /// Keeps prepared models for the plugin; the summary it reads.
    fn keep_prepared(
        &self,
        (summary, prepared): (Value, PreparedShadows),
    ) -> Result<Value, ServiceError> {
        let mut shadow = lock(&self.shadow_state);
        shadow.summary = CString::new(summary.to_string()).unwrap_or_default();
        shadow.prepared = Some(prepared);
        Ok(summary)
    }

    /// Trains the models of `plan` missing from the cache as units on
    /// `executor` (one unit per model, one Slurm array), in a stage folder
    /// inside the cache set's folder; returns when all are in the cache.
    fn train_on_executor(
        &self,
        executor: &ExecutorConfig,
        request: &ShadowRequest,
        plan: &ShadowPlan,
        est: &crate::shadows::ShadowEstimate,
        cache: &ShadowCache,
        unlearn: Option<&UnlearnSetup>,
    ) -> Result<(), ServiceError> {
        let files = self.shadow.job_files.clone().ok_or_else(|| {
            ServiceError::BadState(
                "shadow models on an executor need the job's files (only a worker's jobs have them)"
                    .into(),
            )
        })?;
        let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let served = est.unlearn_key.as_deref().unwrap_or(&est.key);
        let missing: Vec<usize> = (0..plan.models())
            .filter(|&k| !cache.model_path(served, k).exists())
            .collect();
        let cache_dir = abs(cache.root());
        let units = missing
            .iter()
            .map(|&k| Unit {
                name: format!("shadow model {k}"),
                spec: UnitSpec::TrainShadows {
                    format: UNIT_FORMAT,
                    checkpoint: abs(&files.checkpoint),
                    data: abs(&files.data),
                    forget: abs(&files.forget),
                    seed: files.seed,
                    device: files.device.clone(),
                    request: request.clone(),
                    models: vec![k],
                    key: est.key.clone(),
                    cache_dir: cache_dir.clone(),
                    method: unlearn.map(|u| Box::new(u.method())),
                },
            })
            .collect::<Vec<_>>();
        let program =
            crate::exec::unit_program().map_err(|e| ServiceError::BadState(e.to_string()))?;
        // One folder per set of missing models: a second attack asking for the
        // same set while the first still trains re-attaches to its tasks.
        let stage = Stage {
            dir: abs(&cache.dir(served)).join(format!("jobs-{}", missing.len())),
            name: format!("shadow models {}", &est.key[..est.key.len().min(12)]),
            units,
            program,
        };
        self.log(
            LogLevel::Info,
            &format!(
                "training {} shadow model(s) on {} (unit files in {})",
                missing.len(),
                executor.describe(),
                stage.dir.display()
            ),
        );
        let total = missing.len();
        let mut finished = 0usize;
        let cancelled = || self.cancel.load(Ordering::SeqCst);
        let mut on_event = |e: StageEvent| match e {
            StageEvent::Finished { unit, result } => {
                finished += 1;
                self.emit(ServiceEvent::Progress {
                    fraction: Some(finished as f64 / total.max(1) as f64),
                    message: format!(
                        "shadow model {} ready ({finished}/{total}, {:.0} s on {})",
                        missing[unit], result.seconds, result.host
                    ),
                    metrics: None,
                });
            }
            StageEvent::Submitted {
                units,
                job,
                attempt,
            } => self.log(
                LogLevel::Info,
                &format!(
                    "{} shadow model(s) submitted{} (attempt {attempt})",
                    units.len(),
                    job.map(|j| format!(" as Slurm job {j}"))
                        .unwrap_or_default()
                ),
            ),
            StageEvent::Failed { message, retry, .. } => self.log(
                LogLevel::Warn,
                &format!(
                    "{message}{}",
                    if retry { "; submitting it again" } else { "" }
                ),
            ),
            StageEvent::Reattached { units } => self.log(
                LogLevel::Info,
                &format!("following {} shadow task(s) already queued", units.len()),
            ),
            StageEvent::Running { .. } => {}
        };
        let outcome = crate::exec::run_stage(executor, &stage, &cancelled, &mut on_event)
            .map_err(|e| ServiceError::Shadow(ShadowError::Request(e.to_string())))?;
        if outcome.cancelled {
            return Err(ShadowError::Cancelled {
                done: plan.models() - total + finished,
                total: plan.models(),
            }
            .into());
        }
        if let Some((_, why)) = outcome.failed.first() {
            return Err(ServiceError::Shadow(ShadowError::Request(format!(
                "{} of {total} shadow model(s) failed on {}; first: {why}",
                outcome.failed.len(),
                executor.describe()
            ))));
        }
        Ok(())
    }

    /// Trains models `models` of `request` into the cache, in this process (a
    /// [`UnitSpec::TrainShadows`] unit); refuses when the plan's key is not
    /// `key`. The number trained.
    pub fn shadow_train_only(
        &self,
        request: &ShadowRequest,
        models: &[usize],
        key: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<usize, ServiceError> {
        let (plan, recipe, cache, unlearn) = self.shadow_setup(request)?;
        self.with_shadow_ctx(request, &recipe, &cache, unlearn.as_ref(), |ctx| {
            let (mine, spec) = plan.key(&recipe, request.epochs, ctx.dataset);
            if mine != key {
                return Err(ServiceError::Shadow(ShadowError::Request(format!(
                    "this node plans shadow models with key {mine}, the attack asked for {key}: the data, the checkpoint or Lethe differ between the machines"
                ))));
            }
            cache.write_spec(key, &spec)?;
            let cancelled = || self.cancel.load(Ordering::SeqCst);
            // Small models of the unit train together first; the loop then finds
            // them in the cache (or, with U-LiRA, their checkpoints to unlearn).
            let mut made: std::collections::BTreeSet<usize> =
                crate::shadows::train::train_stacks(
                    &plan,
                    ctx,
                    key,
                    models,
                    models.len(),
                    &cancelled,
                    &mut |p| log(&p.message),
                )?
                .into_iter()
                .collect();
            for &k in models {
                if k >= plan.models() {
                    return Err(ServiceError::Shadow(ShadowError::Request(format!(
                        "model {k} asked for, the request has {}",
                        plan.models()
                    ))));
                }
                if crate::shadows::train::train_one(&plan, ctx, key, k, &cancelled, &mut |p| {
                    log(&p.message)
                })? {
                    made.insert(k);
                }
            }
            Ok(made.len())
        })
    }

    /// Loads (or trains here) every model of `plan` and keeps them for the plugin.
    fn finish_prepare(
        &self,
        request: &ShadowRequest,
        plan: &ShadowPlan,
        recipe: &ShadowRecipe,
        ctx: &ShadowContext<'_>,
        est: crate::shadows::ShadowEstimate,
        est_json: Value,
    ) -> Result<(Value, PreparedShadows), ServiceError> {
        let cancelled = || self.cancel.load(Ordering::SeqCst);
        let mut progress = |p: crate::shadows::ShadowProgress| {
            self.emit(ServiceEvent::Progress {
                fraction: Some(p.fraction),
                message: p.message,
                metrics: None,
            });
        };
        let prepared = prepare(plan, ctx, est, &cancelled, &mut progress)?;
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
            "request": serde_json::to_value(request).unwrap_or(Value::Null),
            "key": prepared.estimate.key,
            "cache_dir": prepared.estimate.cache_dir,
            "unlearn": ctx.unlearn.map(|u| json!({
                "method": u.method,
                "version": u.version,
                "params": u.params,
                "forget_samples": u.forget_rows.len(),
                "key": prepared.estimate.unlearn_key,
            })),
        });
        Ok((summary, prepared))
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
