//! Runs a study: for each seed, retrain (through the cache), the original
//! (if asked) and each method in a worker, then the evaluation and every
//! attack on each model, into the study folder (layout in [`super::results`]).
//!
//! Resumable: a run whose `result.json` exists is reused as it is; a run
//! folder without one (an interrupted run) is moved aside to
//! `<folder>.incomplete-<time>` and done again. A study folder only ever holds
//! one study: a different study file (or changed inputs) is refused.
//!
//! Deterministic: every source of randomness gets the run's seed (job seed for
//! loader order and splits, the plugins' `seed` parameter, the probe, the
//! alignment views, the bootstrap), so the same seeds give the same models and
//! the same table; only the run times differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use tch::Kind;

use super::StudyError;
use super::cache::{
    MODEL_FILE, RetrainCache, RetrainRequest, link_folder, retrain_cached, run_method_job,
};
use super::hash::{forget_sha256, path_sha256, weights_sha256};
use super::results::{
    AttackRun, CacheUse, FORMAT, InputHashes, PluginRun, RESULT_FILE, RESULTS_FILE, RowKind,
    RunResult, STUDY_FILE, StudyManifest, StudyResults, rows, run_folder, tpr_key,
};
use super::spec::{EvaluateSpec, StudySpec};
use crate::eval::attack::{AttackReport, AttackRequest, SCAN_TIMEOUT, run_attack};
use crate::eval::evaluate::{EvaluateRequest, EvaluationReport, evaluate_into};
use crate::eval::job_data::JobData;
use crate::jobs::atomic::write_atomic;
use crate::metrics::MetricOptions;
use crate::worker::protocol::{DescriptorInfo, Level};
use crate::worker::{FromWorker, Job, WorkerOptions, scan_plugins};

/// How to run a study.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// The study folder (created, or resumed).
    pub out: PathBuf,
    /// The retrain cache; `None` retrains every time.
    pub cache: Option<RetrainCache>,
    /// Worker executable (its timeout is the study's `timeout`).
    pub worker: WorkerOptions,
    /// Plugin folders, in search order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Echo the workers' progress and logs on stderr.
    pub verbose: bool,
    /// Where the runs go (this process one after another, local child
    /// processes, or a Slurm array).
    pub executor: crate::exec::ExecutorConfig,
    /// The program units run with (`None`: [`crate::exec::unit_program`]).
    pub program: Option<PathBuf>,
    /// Raised to cancel: no further run starts, and runs on an executor are
    /// stopped (Slurm tasks cancelled).
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a study invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunStats {
    /// Runs found finished in the folder and reused.
    pub runs_reused: usize,
    /// Runs done now.
    pub runs_done: usize,
    /// Retrain results taken from the cache.
    pub retrain_cache_hits: usize,
    /// Retrain jobs that trained.
    pub retrains_trained: usize,
    /// Worker processes started for methods and retraining (not attacks).
    pub method_workers: usize,
}

/// The outcome of [`run_study`].
#[derive(Debug, Clone)]
pub struct StudyRun {
    /// The study as stored.
    pub results: StudyResults,
    /// What happened.
    pub stats: RunStats,
    /// Runs that failed, with why (the study is incomplete when any did).
    pub failures: Vec<String>,
    /// The files the complete results were written to.
    pub written: Vec<PathBuf>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The plugins a study uses, found once.
struct Plugins {
    found: Vec<(PathBuf, DescriptorInfo)>,
    offered: Vec<String>,
}

impl Plugins {
    fn scan(worker: &WorkerOptions, dirs: &[PathBuf]) -> Plugins {
        let mut opts = worker.clone();
        opts.timeout = Some(SCAN_TIMEOUT);
        let mut found = Vec::new();
        for file in scan_plugins(&opts, dirs)
            .into_iter()
            .filter_map(|s| s.files.ok())
            .flatten()
        {
            if let Ok(descriptors) = file.outcome {
                for d in descriptors {
                    found.push((file.path.clone(), d));
                }
            }
        }
        let offered = found.iter().map(|(_, d)| d.id.clone()).collect();
        Plugins { found, offered }
    }

    /// The first library offering `id`, which must be of `kind`.
    fn get(
        &self,
        id: &str,
        kind: &str,
        dirs: &[PathBuf],
    ) -> Result<(PathBuf, DescriptorInfo), StudyError> {
        let Some((lib, d)) = self.found.iter().find(|(_, d)| d.id == id) else {
            let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(StudyError::Plugin(format!(
                "no plugin offers `{id}` in {}; available: {}",
                if searched.is_empty() {
                    "any plugin folder (none found; pass --plugins DIR)".into()
                } else {
                    searched.join(", ")
                },
                if self.offered.is_empty() {
                    "none".into()
                } else {
                    self.offered.join(", ")
                }
            )));
        };
        if d.kind != kind {
            return Err(StudyError::Plugin(format!(
                "`{id}` is a {}, not a{} {kind}",
                d.kind,
                if kind == "attack" { "n" } else { "" }
            )));
        }
        Ok((lib.clone(), d.clone()))
    }
}

/// `params` checked against the plugin's schema, defaults filled, and `seed`
/// set to the run's seed when the plugin takes one and `params` does not fix it.
fn full_params(
    d: &DescriptorInfo,
    given: &Value,
    seed: u64,
    what: &str,
    file: &Path,
) -> Result<Value, StudyError> {
    let mut p: Map<String, Value> = given.as_object().cloned().unwrap_or_default();
    if d.schema.get("seed").is_some() && !p.contains_key("seed") {
        p.insert("seed".into(), Value::from(seed));
    }
    d.schema
        .validate(&Value::Object(p))
        .map(Value::Object)
        .map_err(|e| StudyError::Spec {
            path: file.to_path_buf(),
            message: format!("{what} (`{}`), seed {seed}: {e}", d.id),
        })
}

/// An attack's parameters with the study's probe filled in where the attack
/// reads encoders through the host's probe (parameters `probe` and
/// `probe_epochs`, as the confidence attacks have) and the study file leaves
/// them out: the evaluation and the attack then ask for the same preset,
/// epochs and seed (the run's), so the attack reads the evaluation's probe from
/// the probe cache instead of training another.
fn with_study_probe(d: &DescriptorInfo, given: &Value, evaluate: &EvaluateSpec) -> Value {
    let Some(mut p) = given.as_object().cloned() else {
        return given.clone();
    };
    if d.schema.get("probe").is_some() && !p.contains_key("probe") {
        p.insert("probe".into(), Value::from(evaluate.probe.clone()));
    }
    if d.schema.get("probe_epochs").is_some() && !p.contains_key("probe_epochs") {
        p.insert(
            "probe_epochs".into(),
            Value::from(evaluate.probe_epochs.unwrap_or(0)),
        );
    }
    Value::Object(p)
}

/// Keeps others from running a study in the same folder at the same time.
struct FolderLock(PathBuf);

impl FolderLock {
    fn take(dir: &Path) -> Result<FolderLock, StudyError> {
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(FolderLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    // SAFETY: kill with signal 0 only checks that the process exists.
                    let alive = pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } == 0);
                    if alive {
                        return Err(StudyError::io(
                            dir,
                            format!(
                                "another `lethe study` (process {}) is running in this folder",
                                pid.unwrap_or(0)
                            ),
                        ));
                    }
                    // Left by a process that is gone.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(StudyError::io(&path, e)),
            }
        }
        Err(StudyError::io(&path, "cannot take the folder lock"))
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Hashes the inputs and checks the forget list against each seed's split.
fn input_hashes(spec: &StudySpec, file: &Path) -> Result<InputHashes, StudyError> {
    let mut forget = None;
    for &seed in &spec.seeds {
        let data = JobData::load(&spec.data, &spec.forget, seed)?;
        let indices = data.forget.indices().to_vec();
        match &forget {
            None => forget = Some(indices),
            Some(f) if *f != indices => {
                return Err(StudyError::Spec {
                    path: file.to_path_buf(),
                    message: format!(
                        "{} records no split, so each seed draws its own and the forget set differs between seeds; use a data file that records its split",
                        spec.data.display()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    let forget = forget.unwrap_or_default();
    Ok(InputHashes {
        checkpoint_sha256: path_sha256(&spec.checkpoint)
            .map_err(|e| StudyError::io(&spec.checkpoint, e))?,
        data_sha256: path_sha256(&spec.data).map_err(|e| StudyError::io(&spec.data, e))?,
        forget_sha256: forget_sha256(&forget),
        forget_count: forget.len(),
    })
}

/// Creates the study folder with `study.json`, or checks that an existing one
/// holds this very study.
fn open_folder(
    spec: &StudySpec,
    inputs: &InputHashes,
    device: &str,
    out: &Path,
    file: &Path,
) -> Result<StudyManifest, StudyError> {
    let path = out.join(STUDY_FILE);
    if path.is_file() {
        let stored = StudyManifest::load(out)?;
        let mut why = Vec::new();
        if stored.spec.without_executor() != spec.without_executor() {
            why.push(format!(
                "the study file {} differs from the one it was started with",
                file.display()
            ));
        }
        for (what, a, b) in [
            (
                "checkpoint",
                &stored.inputs.checkpoint_sha256,
                &inputs.checkpoint_sha256,
            ),
            ("dataset", &stored.inputs.data_sha256, &inputs.data_sha256),
            (
                "forget set",
                &stored.inputs.forget_sha256,
                &inputs.forget_sha256,
            ),
        ] {
            if a != b {
                why.push(format!("the {what}'s content changed"));
            }
        }
        if stored.device != device {
            why.push(format!(
                "it ran on {}, this run would use {device}",
                stored.device
            ));
        }
        if !why.is_empty() {
            return Err(StudyError::Stored {
                path,
                message: format!(
                    "this folder holds another study ({}); give a new --out folder",
                    why.join("; ")
                ),
            });
        }
        return Ok(stored);
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(StudyError::io(
            out,
            "exists and is not a study folder; results are never written over",
        ));
    }
    let manifest = StudyManifest {
        format: FORMAT,
        spec: spec.clone(),
        inputs: inputs.clone(),
        device: device.into(),
        lethe_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: unix_now(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StudyError::io(&path, e))?;
    write_atomic(&path, &json, false).map_err(|e| StudyError::io(&path, e))?;
    Ok(manifest)
}

/// Forwards a worker's warnings and errors to stderr, prefixed, and with
/// `verbose` its progress and other log lines too.
fn echo(prefix: String, verbose: bool) -> impl FnMut(FromWorker) + Send + 'static {
    move |e| match e {
        FromWorker::Progress {
            fraction, message, ..
        } if verbose => {
            let pct = fraction.map_or("    ".into(), |f| format!("{:3.0}%", f * 100.0));
            eprintln!("  [{prefix}] [{pct}] {message}");
        }
        FromWorker::Log { level, text }
            if verbose || matches!(level, Level::Warn | Level::Error) =>
        {
            eprintln!("  [{prefix}] {level:?}: {text}")
        }
        _ => {}
    }
}

/// The metrics of one run, by key (unscaled).
fn metrics_of(
    eval: &EvaluationReport,
    attacks: &[(String, AttackReport)],
) -> BTreeMap<String, f64> {
    let u = &eval.utility;
    let mut m = BTreeMap::new();
    m.insert("ra".to_string(), u.retain.accuracy);
    m.insert("ta".into(), u.test.accuracy);
    m.insert("ua".into(), u.forget.accuracy);
    if let Some(v) = &u.validation {
        m.insert("va".into(), v.accuracy);
    }
    if let Some(a) = &eval.alignment {
        m.insert("fs".into(), a.forgetting_score.mean);
    }
    for (name, r) in attacks {
        let f = &r.metrics.forget;
        m.insert(format!("{name}.auc"), f.auc);
        if let Some(e) = f.efficacy {
            m.insert(format!("{name}.efficacy"), e);
        }
        for t in &f.tpr_at_fpr {
            m.insert(tpr_key(name, t.fpr), t.tpr);
        }
    }
    m
}

/// `metrics.safetensors`: per-class accuracy and each attack's forget scores
/// and ROC curve, for the GUI's plots.
fn write_matrices(
    path: &Path,
    eval: &EvaluationReport,
    attacks: &[(String, AttackReport)],
) -> Result<(), StudyError> {
    let u = &eval.utility;
    let classes = u.retain.per_class.len();
    let mut per_class = Vec::with_capacity(4 * classes);
    let empty = Vec::new();
    for split in [
        &u.retain.per_class,
        &u.test.per_class,
        &u.forget.per_class,
        u.validation.as_ref().map_or(&empty, |v| &v.per_class),
    ] {
        for c in 0..classes {
            per_class.push(split.get(c).copied().flatten().unwrap_or(f64::NAN));
        }
    }
    let mut tensors = vec![(
        "per_class_accuracy".to_string(),
        tch::Tensor::from_slice(&per_class).reshape([4, classes as i64]),
    )];
    for (name, r) in attacks {
        let scores: Vec<f64> = r.forget_scores.iter().map(|s| s.score).collect();
        tensors.push((
            format!("{name}.forget_scores"),
            tch::Tensor::from_slice(&scores),
        ));
        let roc = &r.metrics.forget.roc;
        let pts: Vec<f64> = roc
            .fpr
            .iter()
            .zip(&roc.tpr)
            .flat_map(|(f, t)| [*f, *t])
            .collect();
        tensors.push((
            format!("{name}.roc"),
            tch::Tensor::from_slice(&pts).reshape([roc.fpr.len() as i64, 2]),
        ));
    }
    let tensors: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Double)))
        .collect();
    let meta = crate::checkpoint::CheckpointMeta::new(
        None,
        Some("lethe study: per-class accuracy [retain, test, forget, validation] × classes; per attack forget scores and ROC [fpr, tpr]".into()),
    );
    crate::checkpoint::save_tensors(path, &tensors, &meta, false)
        .map_err(|e| StudyError::io(path, e))
}

/// The study's plugins, found and checked once per process.
struct Resolved {
    device: String,
    worker: WorkerOptions,
    retrain: (PathBuf, DescriptorInfo),
    methods: Vec<(PathBuf, DescriptorInfo)>,
    attacks: Vec<(PathBuf, DescriptorInfo)>,
}

/// Finds the study's plugins and checks every parameter set before anything runs.
fn resolve(
    spec: &StudySpec,
    file: &Path,
    device: String,
    opts: &StudyOptions,
) -> Result<Resolved, StudyError> {
    let mut worker = opts.worker.clone();
    worker.timeout = spec.timeout.map(Duration::from_secs);
    let plugins = Plugins::scan(&opts.worker, &opts.plugin_dirs);
    let dirs = &opts.plugin_dirs;
    let retrain = plugins.get(&spec.retrain.id, "method", dirs)?;
    let methods = spec
        .methods
        .iter()
        .map(|m| plugins.get(&m.id, "method", dirs))
        .collect::<Result<Vec<_>, _>>()?;
    let attacks = spec
        .attacks
        .iter()
        .map(|a| plugins.get(&a.id, "attack", dirs))
        .collect::<Result<Vec<_>, _>>()?;
    for &seed in &spec.seeds {
        full_params(&retrain.1, &spec.retrain.params, seed, "retrain", file)?;
        for (m, (_, d)) in spec.methods.iter().zip(&methods) {
            full_params(d, &m.params, seed, &format!("method {}", m.name), file)?;
        }
        for (a, (_, d)) in spec.attacks.iter().zip(&attacks) {
            let given = with_study_probe(d, &a.params, &spec.evaluate);
            full_params(d, &given, seed, &format!("attack {}", a.name), file)?;
        }
    }
    Ok(Resolved {
        device,
        worker,
        retrain,
        methods,
        attacks,
    })
}

/// Checks a study without running it: its device, that every plugin it names
/// is found, and every parameter set (for each seed) against the plugin's
/// schema, as [`run_study`] does before it starts.
pub fn check_study(spec: &StudySpec, file: &Path, opts: &StudyOptions) -> Result<(), StudyError> {
    let device = crate::runtime::resolve_device(&spec.device).map_err(|e| StudyError::Spec {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    resolve(spec, file, device, opts).map(|_| ())
}

/// What a run folder holds: `Some(true)` finished (reusable), `Some(false)`
/// an unfinished attempt, `None` nothing yet.
fn run_state(dir: &Path, row: &str, seed: u64, kind: RowKind) -> Result<Option<bool>, StudyError> {
    match RunResult::load(dir)? {
        Some(r) if r.row == row && r.seed == seed && r.kind == kind => Ok(Some(true)),
        Some(_) => Err(StudyError::Stored {
            path: dir.join(RESULT_FILE),
            message: format!("does not hold the {row} run of seed {seed}"),
        }),
        None if dir.exists() => Ok(Some(false)),
        None => Ok(None),
    }
}

/// Moves an unfinished run folder aside (`<folder>.incomplete-<time>`).
fn move_aside(
    dir: &Path,
    row: &str,
    seed: u64,
    log: &mut dyn FnMut(&str),
) -> Result<(), StudyError> {
    let aside = dir.with_file_name(format!(
        "{}.incomplete-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        unix_now()
    ));
    std::fs::rename(dir, &aside).map_err(|e| StudyError::io(dir, e))?;
    log(&format!(
        "{row}, seed {seed}: an unfinished earlier attempt was moved to {}",
        aside.display()
    ));
    Ok(())
}

/// The folder where a study's units keep their spec, result and log files
/// when they run outside this process.
pub const EXECUTOR_DIR: &str = "executor";

/// Runs (or resumes) the study `spec`, read from `file`, into `opts.out`;
/// `log` receives one line per step. With a local executor of one job the
/// runs go one after another in this process's workers; otherwise each
/// missing run is a unit ([`crate::exec::UnitSpec::StudyRun`]) on the executor.
pub fn run_study(
    spec: &StudySpec,
    file: &Path,
    opts: &StudyOptions,
    log: &mut dyn FnMut(&str),
) -> Result<StudyRun, StudyError> {
    let device = crate::runtime::resolve_device(&spec.device).map_err(|e| StudyError::Spec {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let inputs = input_hashes(spec, file)?;
    let out = &opts.out;
    let manifest = open_folder(spec, &inputs, &device, out, file)?;
    let _lock = FolderLock::take(out)?;

    log(&format!("study {}: finding plugins", spec.name));
    let resolved = resolve(spec, file, device, opts)?;

    let mut stats = RunStats::default();
    let mut failures = Vec::new();
    let mut todo = Vec::new();
    for &seed in &spec.seeds {
        for (row, kind) in rows(spec) {
            let rel = run_folder(&row, seed);
            let dir = out.join(&rel);
            if run_state(&dir, &row, seed, kind)? == Some(true) {
                stats.runs_reused += 1;
                log(&format!(
                    "{row}, seed {seed}: finished earlier, reused ({})",
                    rel.display()
                ));
                continue;
            }
            todo.push((row, kind, seed, dir));
        }
    }
    if opts.executor.is_inline() {
        for (row, kind, seed, dir) in todo {
            if opts.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                failures.push(format!("{row}, seed {seed}: cancelled"));
                continue;
            }
            if run_state(&dir, &row, seed, kind)? == Some(false) {
                move_aside(&dir, &row, seed, log)?;
            }
            let step = RunStep {
                spec,
                file,
                manifest: &manifest,
                resolved: &resolved,
                opts,
            };
            match step.run(&row, kind, seed, &dir, &mut stats, log) {
                Ok(()) => stats.runs_done += 1,
                Err(e) => {
                    log(&format!("{row}, seed {seed}: FAILED: {e}"));
                    failures.push(format!("{row}, seed {seed}: {e}"));
                }
            }
        }
    } else if !todo.is_empty() {
        run_units(spec, opts, &todo, &mut stats, &mut failures, log)?;
    }

    let results = StudyResults::load(out)?;
    let mut written = Vec::new();
    if results.missing().is_empty() {
        let table = results.table();
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "study": &results,
            "table": &table,
        }))
        .map_err(|e| StudyError::io(out.join(RESULTS_FILE), e))?;
        for (name, bytes) in [
            (RESULTS_FILE, json),
            ("table.txt", table.to_text().into_bytes()),
            ("table.csv", table.to_csv().into_bytes()),
        ] {
            written.push(write_once(out, name, &bytes)?);
        }
    }
    Ok(StudyRun {
        results,
        stats,
        failures,
        written,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The missing runs as one stage on the study's executor.
fn run_units(
    spec: &StudySpec,
    opts: &StudyOptions,
    todo: &[(String, RowKind, u64, PathBuf)],
    stats: &mut RunStats,
    failures: &mut Vec<String>,
    log: &mut dyn FnMut(&str),
) -> Result<(), StudyError> {
    use crate::exec::{Stage, StageEvent, Unit, UnitSpec, unit::UNIT_FORMAT};
    let out = absolute(&opts.out);
    let units = todo
        .iter()
        .map(|(row, _, seed, _)| Unit {
            name: format!("{row}, seed {seed}"),
            spec: UnitSpec::StudyRun {
                format: UNIT_FORMAT,
                study: out.clone(),
                row: row.clone(),
                seed: *seed,
                cache: opts.cache.as_ref().map(|c| absolute(c.dir())),
                plugin_dirs: opts.plugin_dirs.iter().map(|d| absolute(d)).collect(),
                verbose: opts.verbose,
            },
        })
        .collect::<Vec<_>>();
    let program = match &opts.program {
        Some(p) => p.clone(),
        None => crate::exec::unit_program().map_err(|e| StudyError::Plugin(e.to_string()))?,
    };
    // Every stage gets its own folder: a re-run of the same missing runs on a
    // resumed study re-attaches to it (same folder, same Slurm job name).
    let stage = Stage {
        dir: out.join(EXECUTOR_DIR),
        name: format!("study {}", spec.name),
        units,
        program,
    };
    log(&format!(
        "{} run(s) on {} (unit files in {})",
        todo.len(),
        opts.executor.describe(),
        stage.dir.display()
    ));
    let cancel = std::sync::Arc::clone(&opts.cancel);
    let cancelled = move || cancel.load(std::sync::atomic::Ordering::SeqCst);
    let names: Vec<String> = stage.units.iter().map(|u| u.name.clone()).collect();
    let mut on_event = |e: StageEvent| match e {
        StageEvent::Submitted {
            units,
            job,
            attempt,
        } => {
            let list: Vec<&str> = units.iter().map(|&i| names[i].as_str()).collect();
            match job {
                Some(id) => log(&format!(
                    "submitted as Slurm job {id} (attempt {attempt}): {}",
                    list.join("; ")
                )),
                None => log(&format!("{}: started", list.join("; "))),
            }
        }
        StageEvent::Reattached { units } => {
            let list: Vec<&str> = units.iter().map(|&i| names[i].as_str()).collect();
            log(&format!(
                "following tasks an earlier run left in the queue: {}",
                list.join("; ")
            ))
        }
        StageEvent::Running { unit, host } => {
            if let Some(h) = host {
                log(&format!("{}: running on {h}", names[unit]))
            }
        }
        StageEvent::Finished { unit, result } => log(&format!(
            "{}: finished in {:.1} s on {}",
            names[unit], result.seconds, result.host
        )),
        StageEvent::Failed {
            unit: _,
            message,
            retry,
        } => log(&format!(
            "FAILED{}: {message}",
            if retry { ", submitting it again" } else { "" }
        )),
    };
    let outcome = crate::exec::run_stage(&opts.executor, &stage, &cancelled, &mut on_event)
        .map_err(|e| StudyError::Job {
            what: format!("study {} on {}", spec.name, opts.executor.describe()),
            message: e.to_string(),
        })?;
    for (i, r) in outcome.results.iter().enumerate() {
        let Some(r) = r else { continue };
        if let Ok(s) = serde_json::from_value::<RunStats>(r.detail.clone()) {
            stats.runs_done += s.runs_done;
            stats.runs_reused += s.runs_reused;
            stats.retrain_cache_hits += s.retrain_cache_hits;
            stats.retrains_trained += s.retrains_trained;
            stats.method_workers += s.method_workers;
        } else {
            log(&format!("{}: its result carries no counters", names[i]));
        }
    }
    for (_, message) in outcome.failed {
        failures.push(message);
    }
    if outcome.cancelled {
        for (i, r) in outcome.results.iter().enumerate() {
            if r.is_none() {
                failures.push(format!("{}: cancelled", names[i]));
            }
        }
    }
    Ok(())
}

/// One run of the study in `study_dir` (as `lethe study` stored it), in this
/// process: `lethe-cli run-job` of a [`crate::exec::UnitSpec::StudyRun`]. A
/// finished run is left as it is; an unfinished one is moved aside and done
/// again. The caller (the coordinator) holds the folder's lock.
pub fn run_unit(
    study_dir: &Path,
    row: &str,
    seed: u64,
    opts: &StudyOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RunStats, StudyError> {
    let manifest = StudyManifest::load(study_dir)?;
    let spec = &manifest.spec;
    let file = study_dir.join(STUDY_FILE);
    let Some((row, kind)) = rows(spec).into_iter().find(|(r, _)| r == row) else {
        return Err(StudyError::Stored {
            path: file,
            message: format!("the study has no row `{row}`"),
        });
    };
    if !spec.seeds.contains(&seed) {
        return Err(StudyError::Stored {
            path: file,
            message: format!("the study has no seed {seed}"),
        });
    }
    let device = crate::runtime::resolve_device(&spec.device).map_err(|e| StudyError::Spec {
        path: file.clone(),
        message: e.to_string(),
    })?;
    if device != manifest.device {
        return Err(StudyError::Stored {
            path: file,
            message: format!(
                "the study runs on {}, but this node offers {device}: give the task the device (e.g. --gres gpu:1) or run the study on {device}",
                manifest.device
            ),
        });
    }
    let dir = study_dir.join(run_folder(&row, seed));
    let mut stats = RunStats::default();
    match run_state(&dir, &row, seed, kind)? {
        Some(true) => {
            stats.runs_reused += 1;
            return Ok(stats);
        }
        Some(false) => move_aside(&dir, &row, seed, log)?,
        None => {}
    }
    let resolved = resolve(spec, &file, device, opts)?;
    let step = RunStep {
        spec,
        file: &file,
        manifest: &manifest,
        resolved: &resolved,
        opts,
    };
    step.run(&row, kind, seed, &dir, &mut stats, log)?;
    stats.runs_done += 1;
    Ok(stats)
}

/// Writes `out/name`, or, if a different file is already there (the study's
/// runs changed since), `name` with the time before its extension: results
/// are never written over.
fn write_once(out: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, StudyError> {
    let path = out.join(name);
    match std::fs::read(&path) {
        Ok(old) if old == bytes => return Ok(path),
        Ok(_) => {
            let p = Path::new(name);
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = p
                .extension()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = out.join(format!("{stem}-{}.{ext}", unix_now()));
            write_atomic(&path, bytes, false).map_err(|e| StudyError::io(&path, e))?;
            return Ok(path);
        }
        Err(_) => {}
    }
    write_atomic(&path, bytes, false).map_err(|e| StudyError::io(&path, e))?;
    Ok(path)
}

/// One (row, seed) of a study.
struct RunStep<'a> {
    spec: &'a StudySpec,
    file: &'a Path,
    manifest: &'a StudyManifest,
    resolved: &'a Resolved,
    opts: &'a StudyOptions,
}

fn plugin_run(lib: &Path, d: &DescriptorInfo, params: Value) -> PluginRun {
    PluginRun {
        id: d.id.clone(),
        name: d.name.clone(),
        version: d.version.clone(),
        library: lib.to_path_buf(),
        params,
    }
}

impl RunStep<'_> {
    /// Runs `plugin` (its library and descriptor) on the study's model, data and
    /// forget set in a worker, writing into `out_dir`; its seconds. `echo_as`
    /// prefixes the worker's lines, `doing` names the step in an error.
    fn run_in_worker(
        &self,
        (lib, d): &(PathBuf, DescriptorInfo),
        params: &Value,
        seed: u64,
        out_dir: PathBuf,
        echo_as: String,
        doing: String,
    ) -> Result<f64, StudyError> {
        let job = Job::Unlearn {
            library: lib.to_path_buf(),
            id: d.id.clone(),
            params: params.clone(),
            checkpoint: self.spec.checkpoint.clone(),
            data: self.spec.data.clone(),
            forget: self.spec.forget.clone(),
            train_rows: None,
            out_dir,
            seed,
            device: self.resolved.device.as_str().into(),
        };
        run_method_job(&self.resolved.worker, job, echo(echo_as, self.opts.verbose)).map_err(
            |message| StudyError::Job {
                what: doing,
                message,
            },
        )
    }

    fn run(
        &self,
        row: &str,
        kind: RowKind,
        seed: u64,
        dir: &Path,
        stats: &mut RunStats,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), StudyError> {
        let spec = self.spec;
        let what = |step: &str| format!("{row}, seed {seed}: {step}");
        std::fs::create_dir_all(dir).map_err(|e| StudyError::io(dir, e))?;
        let model_dir = dir.join("model");
        // 1. The model.
        let (model, method, seconds, cache_use) = match kind {
            RowKind::Original => {
                log(&what("the original model"));
                (spec.checkpoint.clone(), None, 0.0, None)
            }
            RowKind::Retrain => {
                let (lib, d) = &self.resolved.retrain;
                let params = full_params(d, &spec.retrain.params, seed, "retrain", self.file)?;
                match &self.opts.cache {
                    Some(cache) => {
                        let req = RetrainRequest {
                            library: lib.clone(),
                            descriptor: d.clone(),
                            params: params.clone(),
                            checkpoint: spec.checkpoint.clone(),
                            data: spec.data.clone(),
                            forget: spec.forget.clone(),
                            seed,
                            device: self.resolved.device.as_str().into(),
                            key: RetrainRequest::key(
                                d,
                                &params,
                                &self.manifest.inputs,
                                seed,
                                self.resolved.device.as_str(),
                            ),
                        };
                        if cache.lookup(&req.key)?.is_none() {
                            log(&what("retraining (not in the cache yet)"));
                            stats.method_workers += 1;
                        }
                        let cached = retrain_cached(
                            cache,
                            &req,
                            &self.resolved.worker,
                            echo(format!("retrain s{seed}"), self.opts.verbose),
                        )?;
                        if cached.reused {
                            stats.retrain_cache_hits += 1;
                            log(&what(&format!(
                                "retrain result reused from the cache ({}), nothing trained",
                                cached.dir.display()
                            )));
                        } else {
                            stats.retrains_trained += 1;
                            log(&what(&format!(
                                "retrained in {:.1} s, cached in {}",
                                cached.entry.seconds,
                                cached.dir.display()
                            )));
                        }
                        link_folder(&cached.dir, &model_dir)?;
                        let cache_use = CacheUse {
                            key: cached.entry.digest.clone(),
                            entry: cached.dir.clone(),
                            reused: cached.reused,
                        };
                        (
                            model_dir.join(MODEL_FILE),
                            Some(plugin_run(lib, d, params)),
                            cached.entry.seconds,
                            Some(cache_use),
                        )
                    }
                    None => {
                        log(&what("retraining (no cache)"));
                        stats.method_workers += 1;
                        stats.retrains_trained += 1;
                        let secs = self.run_in_worker(
                            &self.resolved.retrain,
                            &params,
                            seed,
                            model_dir.clone(),
                            format!("retrain s{seed}"),
                            what("retraining"),
                        )?;
                        (
                            model_dir.join(MODEL_FILE),
                            Some(plugin_run(lib, d, params)),
                            secs,
                            None,
                        )
                    }
                }
            }
            RowKind::Method => {
                let k = spec
                    .methods
                    .iter()
                    .position(|m| m.name == row)
                    .ok_or_else(|| StudyError::Plugin(format!("no method named {row}")))?;
                let (lib, d) = &self.resolved.methods[k];
                let params = full_params(
                    d,
                    &spec.methods[k].params,
                    seed,
                    &format!("method {row}"),
                    self.file,
                )?;
                log(&what(&format!("unlearning with {}", d.id)));
                stats.method_workers += 1;
                let secs = self.run_in_worker(
                    &self.resolved.methods[k],
                    &params,
                    seed,
                    model_dir.clone(),
                    format!("{row} s{seed}"),
                    what("unlearning"),
                )?;
                (
                    model_dir.join(MODEL_FILE),
                    Some(plugin_run(lib, d, params)),
                    secs,
                    None,
                )
            }
        };
        if !model.is_file() {
            return Err(StudyError::Job {
                what: what("unlearning"),
                message: format!("no model at {}", model.display()),
            });
        }

        // 2. Utility (and the alignment audit against the original).
        log(&what("evaluating"));
        let args = EvaluateRequest {
            checkpoint: model.clone(),
            original: (kind != RowKind::Original).then(|| spec.checkpoint.clone()),
            data: spec.data.clone(),
            forget: spec.forget.clone(),
            seed,
            device: self.resolved.device.as_str().into(),
            probe: spec.evaluate.probe.clone(),
            probe_epochs: spec.evaluate.probe_epochs,
            alignment: spec.evaluate.alignment,
            pairs: spec.evaluate.pairs,
            matrix_samples: spec.evaluate.matrix_samples,
            alignment_max: spec.evaluate.alignment_max,
        };
        let eval_dir = dir.join("evaluation");
        let eval = evaluate_into(&args, &eval_dir, false).map_err(|e| StudyError::Job {
            what: what("evaluation"),
            message: format!("{e:#}"),
        })?;

        // 3. Attacks.
        let mut reports = Vec::new();
        let mut attack_runs = Vec::new();
        for (a, (lib, d)) in spec.attacks.iter().zip(&self.resolved.attacks) {
            log(&what(&format!("attack {}", a.name)));
            let given = with_study_probe(d, &a.params, &spec.evaluate);
            let params = full_params(d, &given, seed, &format!("attack {}", a.name), self.file)?;
            let folder = format!("attack-{}", a.name);
            let req = AttackRequest {
                library: lib.clone(),
                descriptor: d.clone(),
                params: params.clone(),
                checkpoint: model.clone(),
                data: spec.data.clone(),
                forget: spec.forget.clone(),
                out_dir: dir.join(&folder),
                seed,
                device: self.resolved.device.as_str().into(),
                metrics: MetricOptions {
                    resamples: a.bootstrap,
                    level: a.ci,
                    seed,
                    ..MetricOptions::default()
                },
            };
            let report = run_attack(
                &self.resolved.worker,
                &req,
                echo(format!("{row} s{seed} {}", a.name), self.opts.verbose),
            )
            .map_err(|e| StudyError::Job {
                what: what(&format!("attack {}", a.name)),
                message: e.to_string(),
            })?;
            attack_runs.push(AttackRun {
                name: a.name.clone(),
                plugin: plugin_run(lib, d, params),
                report: Path::new(&folder).join("attack.json"),
                seconds: report.seconds,
            });
            reports.push((a.name.clone(), report));
        }

        // 4. The record, last.
        write_matrices(&dir.join("metrics.safetensors"), &eval, &reports)?;
        let model_rel = model
            .strip_prefix(dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| model.clone());
        let result = RunResult {
            format: FORMAT,
            row: row.into(),
            kind,
            seed,
            method,
            model_sha256: path_sha256(&model).map_err(|e| StudyError::io(&model, e))?,
            weights_sha256: weights_sha256(&model).map_err(|e| StudyError::io(&model, e))?,
            model: model_rel,
            seconds,
            retrain_cache: cache_use,
            metrics: metrics_of(&eval, &reports),
            evaluation: PathBuf::from("evaluation/evaluation.json"),
            attacks: attack_runs,
            finished_unix: unix_now(),
        };
        let path = dir.join(RESULT_FILE);
        let json = serde_json::to_vec_pretty(&result).map_err(|e| StudyError::io(&path, e))?;
        write_atomic(&path, &json, false).map_err(|e| StudyError::io(&path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::schema::{ParamSpec, Schema};

    fn attack(params: Vec<ParamSpec>) -> DescriptorInfo {
        DescriptorInfo {
            id: "org.example.attack".into(),
            name: "attack".into(),
            version: "0.1.0".into(),
            kind: "attack".into(),
            description: String::new(),
            citation: String::new(),
            schema: Schema {
                params,
                applies_to: None,
            },
        }
    }

    /// A confidence attack left to its defaults reads the evaluation's probe;
    /// what the study file sets stays; other attacks get no probe keys.
    #[test]
    fn attacks_with_a_probe_get_the_evaluations_unless_the_study_says_otherwise() {
        let reads_probe = attack(vec![
            ParamSpec::choice("probe", "Probe", &["reference", "fast"], "reference"),
            ParamSpec::int("probe_epochs", "Probe epochs", 0, 100, 0),
        ]);
        let evaluate = EvaluateSpec {
            probe: "fast".into(),
            probe_epochs: Some(5),
            ..EvaluateSpec::default()
        };
        let filled = with_study_probe(&reads_probe, &serde_json::json!({}), &evaluate);
        assert_eq!(
            filled,
            serde_json::json!({"probe": "fast", "probe_epochs": 5})
        );
        let own = serde_json::json!({"probe": "reference", "probe_epochs": 0});
        assert_eq!(with_study_probe(&reads_probe, &own, &evaluate), own);
        let other = attack(vec![ParamSpec::int("k", "K", 0, 9, 1)]);
        assert_eq!(
            with_study_probe(&other, &serde_json::json!({"k": 2}), &evaluate),
            serde_json::json!({"k": 2})
        );
    }
}
