//! Training the shadow models a plan names (or loading them from the cache),
//! and what that will cost.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use super::cache::ShadowCache;
use super::plan::ShadowPlan;
use super::recipe::ShadowRecipe;
use super::unlearn::{self, UnlearnSetup};
use super::{ShadowError, ShadowMode};
use crate::checkpoint::CheckpointMeta;
use crate::data::Dataset;
use crate::models::{HeadConfig, Model};
use crate::train::augment::to_unit_float;
use crate::train::prune::{PruneRecipe, SPARSITY_NOTE, Sparsity, prune_and_retrain, snapshot};
use crate::train::stacked::{self, StackMember};
use crate::train::supervised::{predict_logits, train_classifier};
use crate::train::{Flow, TrainConfig};

/// Shadow models trained at once in one stack at most, by default on CUDA.
pub const DEFAULT_STACK: usize = 16;

/// Environment variable that sets the largest stack (`0` or `1`: the models train
/// one after another).
pub const SHADOW_STACK_ENV: &str = "LETHE_SHADOW_STACK";

/// Models larger than this (parameters) train one after another: stacking pays where
/// one model's steps are too small to keep the device busy (issue #25 item 3), and
/// a stack of large models would hold K copies of their optimiser state.
pub const STACK_MAX_PARAMS: i64 = 4_000_000;

/// The largest stack `$LETHE_SHADOW_STACK` asks for, else the default for
/// `device`: [`DEFAULT_STACK`] on CUDA, 1 (one after another) on the CPU, where
/// measured on 2 cores 16 leaky-demo MLPs took 9.3 s stacked against 6.4 s one
/// after another (libtorch's batched matrix products and the stacked optimiser
/// state, 130 MB, run slower there than 16 cache-sized single models). An
/// unreadable value is ignored with a message on stderr.
pub fn stack_from_env(device: Device) -> usize {
    let default = if device.is_cuda() { DEFAULT_STACK } else { 1 };
    match std::env::var(SHADOW_STACK_ENV) {
        Err(_) => default,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{SHADOW_STACK_ENV}={v} is not a number of models; using {default}");
            default
        }),
    }
}

/// What a set of shadow models costs, before anything is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowEstimate {
    /// Cache key of the set.
    pub key: String,
    /// Its cache folder.
    pub cache_dir: PathBuf,
    /// Online or offline.
    pub mode: ShadowMode,
    /// Models asked for.
    pub models: usize,
    /// Models already in the cache.
    pub cached: usize,
    /// Models to train.
    pub to_train: usize,
    /// Pool size.
    pub pool: usize,
    /// Target samples.
    pub targets: usize,
    /// Mean training-half size.
    pub train_samples_per_model: usize,
    /// Epochs per model.
    pub epochs: usize,
    /// Batch size of the recipe.
    pub batch_size: i64,
    /// Optimiser steps per model.
    pub steps_per_model: usize,
    /// Timed seconds per optimiser step (`None` when nothing is to be trained).
    pub seconds_per_step: Option<f64>,
    /// Estimated seconds per model, logits on every sample included.
    pub seconds_per_model: f64,
    /// Estimated seconds for the models to train.
    pub seconds: f64,
    /// Device the estimate was timed on.
    pub device: String,
    /// The checkpoint whose recipe the models follow.
    pub recipe_source: PathBuf,
    /// Cache key of the unlearned copies (U-LiRA requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlearn_key: Option<String>,
    /// The method the copies are unlearned with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlearn_method: Option<String>,
    /// Unlearned copies to make (their trained models are counted in
    /// `to_train` only when their checkpoints are not cached).
    #[serde(default)]
    pub to_unlearn: usize,
    /// Estimated seconds per unlearning run (the deletion's own wall time
    /// scaled to a shadow's training set); `None` when nothing says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_unlearn: Option<f64>,
}

/// Models ready for an attack.
#[derive(Debug)]
pub struct PreparedShadows {
    /// Logits of every model on every dataset row: float `[K, N, C]`, CPU.
    pub logits: Tensor,
    /// Training halves: bool `[K, N]`, CPU.
    pub members: Tensor,
    /// The estimate made before training.
    pub estimate: ShadowEstimate,
    /// Models loaded from the cache.
    pub cached: usize,
    /// Models trained now.
    pub trained: usize,
    /// Wall time of [`prepare`].
    pub seconds: f64,
}

/// A progress report while models train.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowProgress {
    /// Share of the training done, `[0, 1]`.
    pub fraction: f64,
    /// Status line.
    pub message: String,
}

/// Everything a plan is trained with.
#[derive(Debug, Clone, Copy)]
pub struct ShadowContext<'a> {
    /// The job's dataset (rows as in the plan).
    pub dataset: &'a Dataset,
    /// The training recipe.
    pub recipe: &'a ShadowRecipe,
    /// Epochs per model (0 = the recipe's).
    pub epochs: usize,
    /// The cache.
    pub cache: &'a ShadowCache,
    /// Compute device.
    pub device: Device,
    /// Unlearn each model after training (U-LiRA).
    pub unlearn: Option<&'a UnlearnSetup>,
    /// Train up to this many small models at once ([`train_stacks`]); 0 or 1
    /// trains them one after another.
    pub stack: usize,
}

fn classes(ctx: &ShadowContext<'_>) -> i64 {
    match ctx.recipe.arch.head {
        HeadConfig::Classifier { num_classes } => num_classes,
        _ => ctx.dataset.num_classes() as i64,
    }
}

fn steps(n: usize, cfg: &TrainConfig) -> usize {
    let bs = cfg.batch_size.max(1) as usize;
    let per_epoch = if cfg.drop_last {
        n / bs
    } else {
        n.div_ceil(bs)
    };
    per_epoch.max(1) * cfg.epochs
}

/// Times a few optimiser steps of the recipe (after a warm-up step) and the
/// logits of a batch, on a fresh model: seconds per step, seconds per row.
fn time_steps(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    cfg: &TrainConfig,
) -> Result<(f64, f64), ShadowError> {
    // libtorch's first steps on a fresh model are slow (kernel, allocator and
    // thread-pool set-up: on the demo's small CNN the first six took 2-10 times
    // a steady step), and a busy machine adds spikes: warm up, then take the
    // median of several timed steps.
    const WARM_UP: usize = 6;
    const TIMED: usize = 7;
    let mut rows = plan.training_rows(0);
    if rows.is_empty() {
        rows = plan.pool.clone();
    }
    let take = (cfg.batch_size.max(1) as usize).min(rows.len());
    let idx = Tensor::from_slice(&rows[..take]);
    let x = ctx
        .dataset
        .images()
        .index_select(0, &idx)
        .to_device(ctx.device);
    let y = ctx
        .dataset
        .labels()
        .index_select(0, &idx)
        .to_device(ctx.device)
        .to_kind(Kind::Int64);
    tch::manual_seed(plan.model_seed(0) as i64);
    let vs = VarStore::new(ctx.device);
    let model = Model::new(&vs.root(), &ctx.recipe.arch)?;
    let mut opt = cfg
        .build_optimizer(&vs)
        .map_err(|source| ShadowError::Train { model: 0, source })?;
    let mut step = || {
        let x = to_unit_float(&x);
        let x = match &cfg.augment {
            Some(a) => a.apply(&x),
            None => x,
        };
        let loss = model.forward_t(&x, true).cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        // Waits for the device, so the clock measures the work.
        let _ = loss.double_value(&[]);
    };
    for _ in 0..WARM_UP {
        step();
    }
    let mut times: Vec<f64> = (0..TIMED)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let per_step = times[TIMED / 2];
    let start = Instant::now();
    let n = ctx.dataset.len().min(512) as i64;
    let logits = predict_logits(
        &model,
        &ctx.dataset.images().narrow(0, 0, n),
        512,
        ctx.device,
    );
    let _ = logits.sum(Kind::Float).double_value(&[]);
    let per_row = start.elapsed().as_secs_f64() / n.max(1) as f64;
    Ok((per_step, per_row))
}

/// The cost of `plan`: models cached and to train, and the time the rest will
/// take, from a timed mini-batch of the recipe on `ctx.device`.
pub fn estimate(plan: &ShadowPlan, ctx: &ShadowContext<'_>) -> Result<ShadowEstimate, ShadowError> {
    let (key, _) = plan.key(ctx.recipe, ctx.epochs, ctx.dataset);
    let models = plan.models();
    let unlearn_key = ctx.unlearn.map(|u| u.key(&key).0);
    let (cached, to_train, to_unlearn) = match &unlearn_key {
        None => {
            let cached = ctx.cache.count(&key, models);
            (cached, models - cached, 0)
        }
        Some(ukey) => {
            // An unlearned copy needs its trained model's checkpoint, which
            // a plain LiRA run does not keep.
            let missing: Vec<usize> = (0..models)
                .filter(|&k| !ctx.cache.model_path(ukey, k).exists())
                .collect();
            let untrained = missing
                .iter()
                .filter(|&&k| !ctx.cache.weights_path(&key, k).exists())
                .count();
            (models - missing.len(), untrained, missing.len())
        }
    };
    let cfg = ctx.recipe.with_epochs(ctx.epochs);
    let mean_train = (0..models)
        .map(|k| plan.training_rows(k).len())
        .sum::<usize>()
        .checked_div(models)
        .unwrap_or(0);
    let seconds_per_unlearn = ctx.unlearn.and_then(|u| u.seconds_per_model(mean_train));
    let steps_per_model = steps(mean_train, &cfg);
    let (per_step, per_row) = if to_train > 0 {
        let (s, r) = time_steps(plan, ctx, &cfg)?;
        (Some(s), r)
    } else {
        (None, 0.0)
    };
    let seconds_per_model =
        per_step.unwrap_or(0.0) * steps_per_model as f64 + per_row * ctx.dataset.len() as f64;
    // The unlearned copy's logits on every row come on top of the method.
    let unlearn_seconds = to_unlearn as f64
        * (seconds_per_unlearn.unwrap_or(0.0) + per_row * ctx.dataset.len() as f64);
    Ok(ShadowEstimate {
        cache_dir: ctx.cache.dir(&key),
        key,
        mode: plan.mode,
        models,
        cached,
        to_train,
        pool: plan.pool.len(),
        targets: plan.targets,
        train_samples_per_model: mean_train,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        steps_per_model,
        seconds_per_step: per_step,
        seconds_per_model,
        seconds: seconds_per_model * to_train as f64 + unlearn_seconds,
        device: crate::runtime::device_name(ctx.device),
        recipe_source: ctx.recipe.source.clone(),
        unlearn_key,
        unlearn_method: ctx.unlearn.map(|u| u.method.clone()),
        to_unlearn,
        seconds_per_unlearn,
    })
}

/// Loads or trains every model of `plan`. `cancelled` is polled every step;
/// `progress` hears about each epoch. Models finished before a cancel stay in
/// the cache.
pub fn prepare(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    estimate: ShadowEstimate,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(ShadowProgress),
) -> Result<PreparedShadows, ShadowError> {
    let start = Instant::now();
    let (key, spec) = plan.key(ctx.recipe, ctx.epochs, ctx.dataset);
    ctx.cache.write_spec(&key, &spec)?;
    let unlearning = match ctx.unlearn {
        Some(setup) => {
            let (ukey, uspec) = setup.key(&key);
            ctx.cache.write_spec(&ukey, &uspec)?;
            Some((setup, ukey))
        }
        None => None,
    };
    let rows = ctx.dataset.len();
    let classes = classes(ctx);
    let total = plan.models();
    let cfg = ctx.recipe.with_epochs(ctx.epochs);
    let to_do = match unlearning {
        Some(_) => estimate.to_unlearn,
        None => estimate.to_train,
    };
    let (mut cached, mut trained) = (0usize, 0usize);
    let all: Vec<usize> = (0..total).collect();
    let stacked = train_stacks(plan, ctx, &key, &all, to_do, cancelled, progress)?;
    let mut all_logits = Vec::with_capacity(total);
    let mut all_masks = Vec::with_capacity(total * rows);
    for k in 0..total {
        if cancelled() {
            return Err(ShadowError::Cancelled {
                done: cached + trained,
                total,
            });
        }
        let mask = plan.member_mask(k, rows);
        let served_key = unlearning
            .as_ref()
            .map_or(key.as_str(), |(_, u)| u.as_str());
        if let Some(l) = ctx.cache.load(served_key, k, classes, &mask) {
            if stacked.contains(&k) {
                trained += 1;
            } else {
                cached += 1;
            }
            all_logits.push(l);
            all_masks.extend(mask);
            continue;
        }
        let done = trained;
        let mut report = |within: f64, message: String| {
            progress(ShadowProgress {
                fraction: ((done as f64 + within) / to_do.max(1) as f64).min(1.0),
                message: format!("shadow model {}/{to_do} (#{k}): {message}", done + 1),
            });
        };
        let made = make_model(
            plan,
            ctx,
            &key,
            unlearning
                .as_ref()
                .map(|(setup, ukey)| (*setup, ukey.as_str())),
            &cfg,
            k,
            &mask,
            cancelled,
            &mut report,
        )?;
        let Some(logits) = made else {
            return Err(ShadowError::Cancelled {
                done: cached + trained,
                total,
            });
        };
        trained += 1;
        all_logits.push(logits);
        all_masks.extend(mask);
    }
    let logits = Tensor::f_stack(&all_logits, 0)?;
    let members = Tensor::from_slice(&all_masks).view([total as i64, rows as i64]);
    Ok(PreparedShadows {
        logits,
        members,
        estimate,
        cached,
        trained,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How many models of `ctx` may train in one stack: 1 unless the recipe's model is
/// a small MLP classifier that [`stacked::stackable`] accepts and the original is
/// not sparse (a pruned recipe trains one after another).
fn stack_limit(ctx: &ShadowContext<'_>, cfg: &TrainConfig) -> usize {
    if ctx.stack < 2 || shadow_pruning(ctx, cfg).is_some() {
        return 1;
    }
    let channels = ctx.dataset.images().size().get(1).copied().unwrap_or(1);
    if !stacked::stackable(&ctx.recipe.arch, cfg, channels) {
        return 1;
    }
    let params = match &ctx.recipe.arch.backbone {
        crate::models::BackboneConfig::Mlp { input_dim, hidden } => {
            let mut d_in = *input_dim;
            let mut n = 0;
            for &h in hidden.iter().chain(std::iter::once(&classes(ctx))) {
                n += (d_in + 1) * h;
                d_in = h;
            }
            n
        }
        _ => i64::MAX,
    };
    if params > STACK_MAX_PARAMS {
        return 1;
    }
    ctx.stack
}

/// Trains the models of `ks` that the cache lacks (their logits under `key`, and
/// with U-LiRA their checkpoints, unless their unlearned copies are there) in
/// stacks of up to `ctx.stack`, when their recipe allows (`stack_limit`); each
/// model's entries are the ones `train_model` would make, within float
/// tolerance (its own seed, initialisation, half, batch order and draws:
/// [`stacked::train_stacked`]). The models trained; none when stacking does not
/// apply or fewer than two are missing (the caller trains the rest one by one).
/// Progress numbers the models out of `numbered`.
pub fn train_stacks(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    key: &str,
    ks: &[usize],
    numbered: usize,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(ShadowProgress),
) -> Result<Vec<usize>, ShadowError> {
    let cfg = ctx.recipe.with_epochs(ctx.epochs);
    let limit = stack_limit(ctx, &cfg);
    if limit < 2 {
        return Ok(Vec::new());
    }
    let rows = ctx.dataset.len();
    let classes = classes(ctx);
    let ukey = ctx.unlearn.map(|u| u.key(key).0);
    let todo: Vec<usize> = ks
        .iter()
        .copied()
        .filter(|&k| k < plan.models())
        .filter(|&k| {
            let mask = plan.member_mask(k, rows);
            match &ukey {
                None => ctx.cache.load(key, k, classes, &mask).is_none(),
                Some(u) => {
                    ctx.cache.load(u, k, classes, &mask).is_none()
                        && ctx.cache.weights(key, k).is_none()
                }
            }
        })
        .collect();
    if todo.len() < 2 {
        return Ok(Vec::new());
    }
    // Balanced stacks: 17 models in stacks of 16 would leave one alone.
    let stacks = todo.len().div_ceil(limit);
    let per = todo.len().div_ceil(stacks);
    let mut done = Vec::with_capacity(todo.len());
    for chunk in todo.chunks(per) {
        let started = Instant::now();
        let mut models = Vec::with_capacity(chunk.len());
        for &k in chunk {
            let mut c = cfg.clone();
            c.seed = plan.model_seed(k);
            // As train_model: the model's seed, then its initialisation.
            tch::manual_seed(c.seed as i64);
            let vs = VarStore::new(ctx.device);
            let model = Model::new(&vs.root(), &ctx.recipe.arch)?;
            models.push((k, c, vs, model, plan.training_rows(k)));
        }
        let members: Vec<StackMember<'_>> = models
            .iter()
            .map(|(_, c, vs, _, rows)| StackMember {
                vs,
                rows,
                seed: c.seed,
            })
            .collect();
        let first = done.len() + 1;
        let last = done.len() + chunk.len();
        let names = format!("#{}–#{}", chunk[0], chunk[chunk.len() - 1]);
        let mut on_event = |e: &crate::train::TrainEvent| {
            if cancelled() {
                return Flow::Stop;
            }
            if e.step == e.steps {
                let within = e.epoch as f64 / e.epochs.max(1) as f64;
                progress(ShadowProgress {
                    fraction: ((first - 1) as f64 + within * chunk.len() as f64)
                        / numbered.max(1) as f64,
                    message: format!(
                        "shadow model {first}/{numbered} to {last}/{numbered} (a stack of {}: \
                         {names}): epoch {}/{}, loss {:.4}",
                        chunk.len(),
                        e.epoch,
                        e.epochs,
                        e.loss
                    ),
                });
            }
            Flow::Continue
        };
        let summary = stacked::train_stacked(
            &ctx.recipe.arch,
            ctx.dataset.images(),
            ctx.dataset.labels(),
            &members,
            &cfg,
            &mut on_event,
        )
        .map_err(|source| ShadowError::Train {
            model: chunk[0],
            source,
        })?;
        if summary.stopped {
            // Ready: what was cached before, and the stacks finished before this one.
            return Err(ShadowError::Cancelled {
                done: ks.len() - todo.len() + done.len(),
                total: ks.len(),
            });
        }
        let stores: Vec<&VarStore> = models.iter().map(|(_, _, vs, _, _)| vs).collect();
        let all_logits =
            stacked::predict_stacked(&ctx.recipe.arch, &stores, ctx.dataset.images(), 512)
                .map_err(|source| ShadowError::Train {
                    model: chunk[0],
                    source,
                })?;
        let seconds = started.elapsed().as_secs_f64() / chunk.len() as f64;
        for ((k, c, vs, _, _), logits) in models.iter().zip(all_logits) {
            if ukey.is_some() {
                save_weights(ctx, key, *k, vs, c, None)?;
            }
            let logits = logits.to_kind(Kind::Float).to_device(Device::Cpu);
            let mask = plan.member_mask(*k, rows);
            ctx.cache.store(key, *k, &logits, &mask, seconds)?;
            done.push(*k);
        }
    }
    Ok(done)
}

/// Trains model `k` of `plan` and stores its logits in the cache (and its
/// checkpoint, when `keep_weights`); its logits, or `None` when `cancelled`
/// stopped it. `on_epoch(epoch, epochs, loss)`.
#[allow(clippy::too_many_arguments)]
fn train_model(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    key: &str,
    cfg: &TrainConfig,
    k: usize,
    mask: &[bool],
    keep_weights: bool,
    cancelled: &dyn Fn() -> bool,
    on_epoch: &mut dyn FnMut(usize, usize, f64),
) -> Result<Option<Tensor>, ShadowError> {
    let started = Instant::now();
    let train_rows = plan.training_rows(k);
    let idx = Tensor::from_slice(&train_rows);
    let x = ctx.dataset.images().index_select(0, &idx);
    let y = ctx.dataset.labels().index_select(0, &idx);
    let mut cfg = cfg.clone();
    cfg.seed = plan.model_seed(k);
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(ctx.device);
    let model = Model::new(&vs.root(), &ctx.recipe.arch)?;
    let mut on_event = |e: &crate::train::TrainEvent| {
        if cancelled() {
            return Flow::Stop;
        }
        if e.step == e.steps {
            on_epoch(e.epoch, e.epochs, e.loss);
        }
        Flow::Continue
    };
    // A sparse original's shadows are made as it was: dense, pruned by OMP,
    // retrained with the mask fixed.
    let prune = shadow_pruning(ctx, &cfg);
    let mut rewind = None;
    let summary = train_classifier(&model, &vs, &x, &y, &cfg, &mut |e| {
        if prune.as_ref().is_some_and(|p| p.is_rewind_point(e)) {
            rewind = Some(snapshot(&vs));
        }
        on_event(e)
    })
    .map_err(|source| ShadowError::Train { model: k, source })?;
    if summary.stopped {
        return Ok(None);
    }
    let mut sparsity = None;
    if let Some(p) = &prune {
        let retrain = TrainConfig {
            epochs: p.retrain_epochs,
            ..cfg.clone()
        };
        let (record, summary) = prune_and_retrain(
            &vs,
            p,
            rewind,
            |on_event: &mut dyn FnMut(&crate::train::TrainEvent) -> Flow| {
                train_classifier(&model, &vs, &x, &y, &retrain, on_event)
            },
            &mut on_event,
        )
        .map_err(|source| ShadowError::Train { model: k, source })?;
        if summary.stopped {
            return Ok(None);
        }
        sparsity = Some(record);
    }
    if keep_weights {
        save_weights(ctx, key, k, &vs, &cfg, sparsity.as_ref())?;
    }
    let logits = predict_logits(&model, ctx.dataset.images(), 512, ctx.device)
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    ctx.cache
        .store(key, k, &logits, mask, started.elapsed().as_secs_f64())?;
    Ok(Some(logits))
}

/// Makes model `k` of `plan` now: trained (its logits stored under `key`),
/// or with `unlearning` (the setup and its key) trained and unlearned (see
/// [`unlearned_model`]). Its served logits, or `None` when `cancelled`
/// stopped it. `report(fraction of this model, message)`.
#[allow(clippy::too_many_arguments)]
fn make_model(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    key: &str,
    unlearning: Option<(&UnlearnSetup, &str)>,
    cfg: &TrainConfig,
    k: usize,
    mask: &[bool],
    cancelled: &dyn Fn() -> bool,
    report: &mut dyn FnMut(f64, String),
) -> Result<Option<Tensor>, ShadowError> {
    if let Some((setup, ukey)) = unlearning {
        return unlearned_model(
            plan,
            ctx,
            (key, ukey),
            setup,
            cfg,
            k,
            mask,
            cancelled,
            report,
        );
    }
    let mut on_epoch = |epoch: usize, epochs: usize, loss: f64| {
        report(
            epoch as f64 / epochs.max(1) as f64,
            format!("epoch {epoch}/{epochs}, loss {loss:.4}"),
        )
    };
    train_model(
        plan,
        ctx,
        key,
        cfg,
        k,
        mask,
        false,
        cancelled,
        &mut on_epoch,
    )
}

/// The pruning a shadow model of the recipe gets, if the original is sparse.
/// Shadows trained for another number of epochs than the original (the
/// attack's `epochs`) are retrained for as many, rewound no later than their
/// last epoch.
fn shadow_pruning(ctx: &ShadowContext<'_>, cfg: &TrainConfig) -> Option<PruneRecipe> {
    let mut p = ctx.recipe.job.as_ref()?.prune.clone()?;
    if cfg.epochs != ctx.recipe.train.epochs {
        p.retrain_epochs = cfg.epochs;
        p.rewind_epoch = p.rewind_epoch.min(cfg.epochs);
    }
    Some(p)
}

/// Keeps model `k`'s checkpoint in the cache, with the architecture and a
/// `lethe train` record of its own (the recipe with the model's seed), as a
/// method unlearning it expects of a trained model.
fn save_weights(
    ctx: &ShadowContext<'_>,
    key: &str,
    k: usize,
    vs: &VarStore,
    cfg: &TrainConfig,
    sparsity: Option<&Sparsity>,
) -> Result<(), ShadowError> {
    let path = ctx.cache.weights_path(key, k);
    let mut meta = CheckpointMeta::new(
        Some(ctx.recipe.arch.clone()),
        Some("lethe shadow model".into()),
    );
    let notes = &mut meta.provenance.notes;
    notes.insert("key".into(), key.to_string());
    notes.insert("model".into(), k.to_string());
    if let Some(job) = &ctx.recipe.job {
        let mut job = job.clone();
        job.train = cfg.clone();
        notes.insert(
            "job".into(),
            serde_json::to_string(&job).unwrap_or_default(),
        );
    }
    // Its unlearned copy then keeps the mask, as the original's does.
    if let Some(record) = sparsity {
        notes.insert(
            SPARSITY_NOTE.into(),
            serde_json::to_string(record).unwrap_or_default(),
        );
    }
    crate::checkpoint::save(&path, vs, &meta, true).map_err(|e| ShadowError::Cache {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// Model `k`'s unlearned copy: its trained model (from the cache, else
/// trained now with its checkpoint kept) unlearned by `setup`'s method in a
/// worker, its logits stored under `keys.1`; `None` when `cancelled` stopped
/// it. `report(fraction of this model, message)`.
#[allow(clippy::too_many_arguments)]
fn unlearned_model(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    (key, ukey): (&str, &str),
    setup: &UnlearnSetup,
    cfg: &TrainConfig,
    k: usize,
    mask: &[bool],
    cancelled: &dyn Fn() -> bool,
    report: &mut dyn FnMut(f64, String),
) -> Result<Option<Tensor>, ShadowError> {
    let weights = match ctx.cache.weights(key, k) {
        Some(w) => w,
        None => {
            let mut on_epoch = |epoch: usize, epochs: usize, loss: f64| {
                report(
                    0.5 * epoch as f64 / epochs.max(1) as f64,
                    format!("training, epoch {epoch}/{epochs}, loss {loss:.4}"),
                )
            };
            if train_model(plan, ctx, key, cfg, k, mask, true, cancelled, &mut on_epoch)?.is_none()
            {
                return Ok(None);
            }
            ctx.cache.weights_path(key, k)
        }
    };
    let started = Instant::now();
    let training = plan.training_rows(k);
    let forget = setup.forget_of(&training);
    let logits = if forget.is_empty() {
        // None of the targets is in this model's half: nothing to forget.
        unlearn::logits_of(&weights, ctx.dataset.images(), ctx.device)?
    } else {
        let work = ctx.cache.dir(ukey).join(format!("work-{k:04}"));
        let mut on_progress = |f: Option<f64>, m: String| {
            report(
                0.5 + 0.5 * f.unwrap_or(0.0).clamp(0.0, 1.0),
                format!(
                    "unlearning {} samples with {}: {m}",
                    forget.len(),
                    setup.method
                ),
            )
        };
        let Some(model) = unlearn::run_method(
            setup,
            &weights,
            &training,
            &forget,
            &work,
            cancelled,
            &mut on_progress,
        )?
        else {
            return Ok(None);
        };
        let logits = unlearn::logits_of(&model, ctx.dataset.images(), ctx.device)?;
        // The copy's logits are what is kept; its checkpoint can be made again.
        let _ = std::fs::remove_dir_all(&work);
        logits
    };
    ctx.cache
        .store(ukey, k, &logits, mask, started.elapsed().as_secs_f64())?;
    Ok(Some(logits))
}

/// Model `k` of `plan` (whose cache key is `key`, [`ShadowPlan::key`]) into
/// the cache, unless it is there already (a shadow unit on an executor), and
/// with an unlearning context its unlearned copy: whether anything was made
/// now.
pub fn train_one(
    plan: &ShadowPlan,
    ctx: &ShadowContext<'_>,
    key: &str,
    k: usize,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(ShadowProgress),
) -> Result<bool, ShadowError> {
    let rows = ctx.dataset.len();
    let mask = plan.member_mask(k, rows);
    let cfg = ctx.recipe.with_epochs(ctx.epochs);
    let mut report = |fraction: f64, message: String| {
        progress(ShadowProgress {
            fraction,
            message: format!("shadow model #{k}: {message}"),
        });
    };
    let unlearning = ctx.unlearn.map(|setup| (setup, setup.key(key)));
    let served = unlearning
        .as_ref()
        .map_or(key, |(_, (ukey, _))| ukey.as_str());
    if ctx.cache.load(served, k, classes(ctx), &mask).is_some() {
        return Ok(false);
    }
    if let Some((_, (ukey, uspec))) = &unlearning {
        ctx.cache.write_spec(ukey, uspec)?;
    }
    let made = make_model(
        plan,
        ctx,
        key,
        unlearning
            .as_ref()
            .map(|(setup, (ukey, _))| (*setup, ukey.as_str())),
        &cfg,
        k,
        &mask,
        cancelled,
        &mut report,
    )?;
    match made {
        Some(_) => Ok(true),
        None => Err(ShadowError::Cancelled { done: 0, total: 1 }),
    }
}
