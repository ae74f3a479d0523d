//! `lethe unlearn`: one deletion request from the command line. The method is
//! found by id in the plugin folders and run in a worker process over the
//! checkpoint, dataset and forget list; progress goes to stderr, results into a
//! new output folder (the original checkpoint is never touched).

use super::{FromWorker, Job, JobOutcome, WorkerOptions, find_plugin, plugin_dirs, spawn_worker};
use crate::audit::{Entry, FileRef, PluginRef};
use crate::cli::params::parse_params;
use crate::jobs::atomic::write_atomic;
use crate::jobs::run_record::{
    ForgetRequest, HashedPath, PluginFile, RUN_FILE, RunRecord, Software,
};
use crate::runtime::resolve_device;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// `lethe unlearn`
#[derive(Debug, Args)]
pub struct UnlearnArgs {
    /// Method id, as `lethe plugins list` shows it (e.g. org.example.gradient-ascent).
    #[arg(long)]
    pub method: String,
    /// The trained model (never modified).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The dataset it was trained on (a path, or `fashion-mnist`).
    #[arg(long, value_parser = crate::data::named::parse_data_arg)]
    pub data: PathBuf,
    /// The forget list (`.txt`, `.csv` or `.json` of training-sample indices), or
    /// a folder of the data subject's pictures, matched by content (every one must
    /// match a training sample).
    #[arg(long)]
    pub forget: PathBuf,
    /// Method parameters as a JSON object; defaults fill in the rest.
    #[arg(long)]
    pub params: Option<String>,
    /// One parameter as KEY=VALUE (repeatable, after `--params`); VALUE is read as
    /// JSON when it parses (`0.01`, `true`), else as a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// New folder for the results (default: `runs/<method>-TIME`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed for shuffling and augmentation; also the method's own `seed`
    /// parameter unless `--set seed=…` gives another.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `auto` (first CUDA GPU, else CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Give up (and kill the worker) after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Take the result from the retrain cache when an earlier run with the same
    /// checkpoint, data, forget set, seed, method and parameters stored one
    /// (nothing trains), else run and store it (meant for exact retraining).
    #[arg(long)]
    pub reuse_retrain: bool,
    /// The retrain cache folder (default: `.lethe-cache` beside the output folder).
    #[arg(long, requires = "reuse_retrain")]
    pub cache: Option<PathBuf>,
    /// Prune the checkpoint right before unlearning, for any method: zero this
    /// fraction of its weights by one-shot global magnitude pruning (OMP), with
    /// no retraining, and unlearn the pruned copy (written to the output folder
    /// as `pruned-original.safetensors`) with the pruned weights held at zero.
    /// The papers' sparse setting retrains after pruning: make that original
    /// with `lethe train --prune-ratio` instead.
    #[arg(long, value_name = "FRACTION", conflicts_with = "reuse_retrain")]
    pub prune_ratio: Option<f64>,
    /// Which weights `--prune-ratio` prunes: `conv` (convolution kernels, as
    /// the reference) or `weights` (every weight matrix and kernel).
    #[arg(long, value_enum, default_value = "conv", requires = "prune_ratio")]
    pub prune_scope: crate::cli::PruneScopeArg,
}

/// The pruned copy `lethe unlearn --prune-ratio` writes into its output folder
/// and unlearns.
pub const PRUNED_ORIGINAL: &str = "pruned-original.safetensors";

/// What every `lethe unlearn` checks before starting work: its parameters as
/// JSON, the resolved device, that the inputs exist, and the output folder
/// (`runs/<method>-<now>` by default), which must not exist yet.
pub fn checked_request(args: &UnlearnArgs, now: u64) -> anyhow::Result<(Value, String, PathBuf)> {
    let params = parse_params(args.params.as_deref(), &args.set)?;
    let device = resolve_device(&args.device)?;
    for (what, path) in [
        ("checkpoint", &args.checkpoint),
        ("dataset", &args.data),
        ("forget list", &args.forget),
    ] {
        if !path.exists() {
            bail!("{}: no such {what}", path.display());
        }
    }
    let short = args.method.rsplit('.').next().unwrap_or("method");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{short}-{now}")));
    if out.exists() {
        bail!(
            "output folder {} already exists; results are never written over",
            out.display()
        );
    }
    Ok((params, device, out))
}

/// Runs the command; `extra_dirs` are the global `--plugins` folders and `now`
/// names the default output folder. A finished run gets `run.json` (see
/// [`crate::jobs::run_record`]); every run that starts is recorded in the audit log
/// of `workspace` (see [`crate::audit::jobs::workspace_for`]).
pub fn run(
    args: UnlearnArgs,
    extra_dirs: &[PathBuf],
    now: u64,
    workspace: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (params, device, out) = checked_request(&args, now)?;
    // Pruned before the worker starts, so the worker sees a sparse original
    // like any other and keeps its mask (see `EngineServices`).
    let pruned = match args.prune_ratio {
        Some(ratio) => {
            let copy = out.join(PRUNED_ORIGINAL);
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let record = crate::jobs::train::prune_checkpoint(
                &args.checkpoint,
                &copy,
                ratio,
                args.prune_scope.into(),
            )
            .with_context(|| format!("pruning {} failed", args.checkpoint.display()))?;
            eprintln!(
                "unlearn: pruned {} of the {} weights in scope `{}` ({:.2} %) of {} by OMP into {}",
                record.pruned,
                record.prunable,
                record.scope.name(),
                100.0 * record.pruned as f64 / record.prunable.max(1) as f64,
                args.checkpoint.display(),
                copy.display()
            );
            Some((copy, record))
        }
        None => None,
    };
    let job_checkpoint = pruned
        .as_ref()
        .map_or_else(|| args.checkpoint.clone(), |(p, _)| p.clone());
    let workspace = crate::audit::jobs::workspace_for(workspace, Some(&out));
    let started = crate::audit::unix_now();
    // Absolute paths, so a report made from another folder still finds them.
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let original = HashedPath::of(&abs(&args.checkpoint));
    let data = HashedPath::of(&abs(&args.data));
    let forget = ForgetRequest::read(&abs(&args.forget));
    let mut opts = WorkerOptions::current_exe()?;
    opts.timeout = Some(Duration::from_secs(60));
    let (library, descriptor) =
        find_plugin(&opts, &plugin_dirs(extra_dirs), &args.method).map_err(anyhow::Error::msg)?;
    eprintln!(
        "unlearn: {} {} ({}) on {} [{device}]",
        descriptor.name,
        descriptor.version,
        library.display(),
        args.checkpoint.display()
    );
    opts.timeout = args.timeout.map(Duration::from_secs);
    // One seed: `--seed` also seeds the method's generator, as a study's seeds do.
    let mut params = params;
    if descriptor.schema.get("seed").is_some()
        && let Value::Object(map) = &mut params
        && !map.contains_key("seed")
    {
        map.insert("seed".into(), Value::from(args.seed));
    }
    let plugin = PluginFile {
        id: descriptor.id.clone(),
        name: descriptor.name.clone(),
        version: descriptor.version.clone(),
        library: HashedPath::of(&abs(&library)),
    };
    // Recorded when it starts (so a killed job leaves a trace) and when it ends.
    let mut entry = Entry {
        kind: "unlearn".into(),
        status: crate::audit::STARTED.into(),
        subject: format!("{} on {}", args.method, args.checkpoint.display()),
        plugin: Some(PluginRef {
            id: plugin.id.clone(),
            version: plugin.version.clone(),
            library: plugin.library.path.display().to_string(),
            sha256: plugin.library.sha256.clone(),
        }),
        inputs: vec![
            FileRef {
                role: "checkpoint".into(),
                path: original.path.display().to_string(),
                sha256: original.sha256.clone(),
            },
            FileRef {
                role: "dataset".into(),
                path: data.path.display().to_string(),
                sha256: data.sha256.clone(),
            },
            FileRef {
                role: "forget list".into(),
                path: forget.list.path.display().to_string(),
                sha256: forget.list.sha256.clone(),
            },
        ],
        outputs: Vec::new(),
        details: serde_json::json!({
            "params": params,
            "seed": args.seed,
            "device": device,
            "out": out,
            "pruned_before_unlearning": pruned.as_ref().map(|(_, r)| r),
        }),
    };
    let audit_start = crate::audit::jobs::begin(&workspace, &entry).context(
        "the audit record of the job's start could not be written, so the job did not run",
    )?;
    let job = Job::Unlearn {
        library,
        id: args.method.clone(),
        params: params.clone(),
        checkpoint: job_checkpoint,
        data: args.data.clone(),
        forget: args.forget.clone(),
        train_rows: None,
        out_dir: out.clone(),
        seed: args.seed,
        device: device.clone(),
    };
    let spawned = spawn_worker(&opts, job, |event| match event {
        FromWorker::Progress {
            fraction,
            message,
            metrics,
        } => {
            let pct = fraction.map_or("    ".into(), |f| format!("{:3.0}%", f * 100.0));
            let metrics = metrics.map(|m| format!(" {m}")).unwrap_or_default();
            eprintln!("[{pct}] {message}{metrics}");
        }
        FromWorker::Log { level, text } => eprintln!("{level:?}: {text}"),
        FromWorker::Metric { name, value, .. } => eprintln!("{name} = {value}"),
        FromWorker::Artifact { name, path } => eprintln!("wrote {name}: {}", path.display()),
        _ => {}
    })
    .context("cannot start the worker process");
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            // The start is recorded: so is this end.
            let failed: anyhow::Result<()> = Err(e);
            entry.status = crate::audit::jobs::status_of(&failed);
            crate::audit::jobs::end(&audit_start, &entry)
                .context("the job failed and its audit record could not be written")?;
            return failed;
        }
    };
    let report = handle.wait();
    let result = match report.outcome {
        JobOutcome::Succeeded(_) => (|| -> anyhow::Result<()> {
            let model = out.join("model.safetensors");
            let record = RunRecord {
                format: 1,
                user: crate::audit::current_user(),
                host: crate::audit::host_name(),
                started_unix: started,
                finished_unix: crate::audit::unix_now(),
                seconds: report.elapsed.as_secs_f64(),
                method: plugin.clone(),
                params_given: params.clone(),
                params: model_params(&model).unwrap_or_else(|| params.clone()),
                seed: args.seed,
                device: device.clone(),
                original: original.clone(),
                data: data.clone(),
                forget: forget.clone(),
                unlearned: model.is_file().then(|| HashedPath::of(&abs(&model))),
                outputs: FileRef::folder(&out),
                software: Software::probe(),
            };
            let json = serde_json::to_vec_pretty(&record)?;
            write_atomic(&out.join(RUN_FILE), &json, false)?;
            println!(
                "done in {:.1}s; results in {}",
                report.elapsed.as_secs_f64(),
                out.display()
            );
            Ok(())
        })(),
        other => {
            let tail = report.stderr_tail.trim();
            if tail.is_empty() {
                Err(anyhow::anyhow!("{} {other}", args.method))
            } else {
                Err(anyhow::anyhow!(
                    "{} {other}\nworker log:\n{tail}",
                    args.method
                ))
            }
        }
    };
    entry.status = crate::audit::jobs::status_of(&result);
    entry.outputs = FileRef::folder(&out);
    if let Value::Object(details) = &mut entry.details {
        details.insert("seconds".into(), Value::from(report.elapsed.as_secs_f64()));
    }
    crate::audit::jobs::end(&audit_start, &entry)
        .context("the job ran but its audit record could not be written")?;
    result
}

/// The full parameters recorded in the unlearned model's provenance.
fn model_params(model: &std::path::Path) -> Option<Value> {
    let ckpt = crate::checkpoint::read(model).ok()?;
    let text = ckpt.meta?.provenance.notes.get("params")?.clone();
    serde_json::from_str(&text).ok()
}
