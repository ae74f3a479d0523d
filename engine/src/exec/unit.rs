//! One unit of work as a file (`lethe-cli run-job SPEC.json`), and its outcome
//! file (`SPEC.json.result.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ExecError, io_err};
use crate::shadows::ShadowRequest;

/// Bumped when a spec's meaning changes; a unit refuses a spec of another
/// format instead of guessing.
pub const UNIT_FORMAT: u32 = 1;

/// What one unit does. Paths are absolute (a node may start in another folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnitSpec {
    /// One run (row and seed) of a study: the model (retrain through the
    /// cache, or a method in a worker), its evaluation and every attack, into
    /// the study folder, exactly as `lethe study` does it in one process.
    StudyRun {
        /// Spec format ([`UNIT_FORMAT`]).
        format: u32,
        /// The study folder (holds `study.json`, the study as started).
        study: PathBuf,
        /// The row: a method's name, `Retrain` or `Original`.
        row: String,
        /// The seed.
        seed: u64,
        /// The retrain cache; `None` retrains.
        cache: Option<PathBuf>,
        /// Plugin folders, in search order.
        plugin_dirs: Vec<PathBuf>,
        /// Echo the workers' progress into the unit's log.
        verbose: bool,
    },
    /// Shadow models of one attack request, trained into the shadow cache with
    /// the attacked model's recipe (the same plan the attack's worker makes).
    TrainShadows {
        /// Spec format ([`UNIT_FORMAT`]).
        format: u32,
        /// The attacked model's checkpoint (its recipe is the models').
        checkpoint: PathBuf,
        /// The dataset.
        data: PathBuf,
        /// The forget list.
        forget: PathBuf,
        /// Job seed (split, when the dataset records none).
        seed: u64,
        /// `cpu`, `cuda` or `cuda:N`.
        device: String,
        /// The attack's request.
        request: ShadowRequest,
        /// Which models (0-based) this unit trains.
        models: Vec<usize>,
        /// The cache key the attack's worker computed; the unit refuses to train
        /// if its own plan has another (different data or recipe on this node).
        key: String,
        /// The shadow cache.
        cache_dir: PathBuf,
        /// The unlearning method the attack's worker resolved, for requests
        /// with an `unlearn` block (U-LiRA).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<Box<crate::shadows::ShadowMethod>>,
    },
}

impl UnitSpec {
    /// In words, for the unit's log.
    pub fn describe(&self) -> String {
        match self {
            UnitSpec::StudyRun {
                study, row, seed, ..
            } => format!("study run {row}, seed {seed} in {}", study.display()),
            UnitSpec::TrainShadows {
                models, cache_dir, ..
            } => format!("shadow model(s) {models:?} into {}", cache_dir.display()),
        }
    }

    fn format(&self) -> u32 {
        match self {
            UnitSpec::StudyRun { format, .. } | UnitSpec::TrainShadows { format, .. } => *format,
        }
    }
}

/// How a unit ended, written by the unit itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitResult {
    /// Whether it did its work.
    pub ok: bool,
    /// What happened, in words (the error when not `ok`).
    pub message: String,
    /// Wall time of the unit.
    pub seconds: f64,
    /// The machine it ran on.
    pub host: String,
    /// What the unit reports besides (a study run: its counters).
    #[serde(default)]
    pub detail: Value,
}

impl UnitResult {
    /// The result file, when it exists and parses.
    pub fn load(path: &Path) -> Option<UnitResult> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Where the unit of spec file `spec` writes its outcome.
pub fn result_path(spec: &Path) -> PathBuf {
    let mut name = spec.file_name().unwrap_or_default().to_os_string();
    name.push(".result.json");
    spec.with_file_name(name)
}

/// Reads a spec file.
pub fn load_spec(path: &Path) -> Result<UnitSpec, ExecError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let spec: UnitSpec = serde_json::from_slice(&bytes)
        .map_err(|e| io_err(path, format!("not a Lethe unit spec: {e}")))?;
    if spec.format() != UNIT_FORMAT {
        return Err(io_err(
            path,
            format!(
                "unit spec format {} (this Lethe reads format {UNIT_FORMAT}); run it with the Lethe that wrote it",
                spec.format()
            ),
        ));
    }
    Ok(spec)
}

/// `lethe-cli run-job SPEC`: runs the unit and writes its outcome beside the
/// spec (atomically, replacing an earlier attempt's). The returned result is
/// the one written; `Err` only when the spec cannot be read or the outcome
/// cannot be written.
pub fn run_unit_file(path: &Path) -> Result<UnitResult, ExecError> {
    let spec = load_spec(path)?;
    let start = Instant::now();
    eprintln!(
        "lethe run-job on {}: {} ({})",
        crate::audit::host_name(),
        spec.describe(),
        path.display()
    );
    let outcome = run_unit(&spec);
    let result = match outcome {
        Ok((message, detail)) => UnitResult {
            ok: true,
            message,
            seconds: start.elapsed().as_secs_f64(),
            host: crate::audit::host_name(),
            detail,
        },
        Err(message) => UnitResult {
            ok: false,
            message,
            seconds: start.elapsed().as_secs_f64(),
            host: crate::audit::host_name(),
            detail: Value::Null,
        },
    };
    eprintln!(
        "lethe run-job: {} after {:.1} s: {}",
        if result.ok { "done" } else { "FAILED" },
        result.seconds,
        result.message
    );
    let out = result_path(path);
    let json = serde_json::to_vec_pretty(&result).map_err(|e| io_err(&out, e))?;
    crate::jobs::atomic::write_atomic(&out, &json, true).map_err(|e| io_err(&out, e))?;
    Ok(result)
}

/// Runs `spec` in this process: its message and detail, or its error.
pub fn run_unit(spec: &UnitSpec) -> Result<(String, Value), String> {
    match spec {
        UnitSpec::StudyRun {
            study,
            row,
            seed,
            cache,
            plugin_dirs,
            verbose,
            ..
        } => {
            let worker = crate::worker::WorkerOptions::current_exe()
                .map_err(|e| format!("cannot find this program's path: {e}"))?;
            let opts = crate::study::runner::StudyOptions {
                out: study.clone(),
                cache: cache.as_ref().map(crate::study::cache::RetrainCache::new),
                worker,
                plugin_dirs: plugin_dirs.clone(),
                verbose: *verbose,
                executor: super::ExecutorConfig::default(),
                program: None,
                cancel: Default::default(),
            };
            let stats = crate::study::runner::run_unit(study, row, *seed, &opts, &mut |line| {
                eprintln!("study: {line}")
            })
            .map_err(|e| e.to_string())?;
            Ok((
                format!("{row}, seed {seed}: done"),
                serde_json::to_value(stats).unwrap_or(Value::Null),
            ))
        }
        UnitSpec::TrainShadows {
            checkpoint,
            data,
            forget,
            seed,
            device,
            request,
            models,
            key,
            cache_dir,
            method,
            ..
        } => {
            let files = crate::worker::child::JobFiles {
                checkpoint: checkpoint.clone(),
                data: data.clone(),
                forget: forget.clone(),
                train_rows: None,
                seed: *seed,
                device: device.clone(),
            };
            let trained = crate::worker::child::train_shadow_models(
                &files,
                request,
                models,
                key,
                cache_dir,
                method.as_deref().cloned(),
            )?;
            Ok((
                format!("{trained} of {} shadow model(s) trained", models.len()),
                serde_json::json!({ "trained": trained }),
            ))
        }
    }
}
