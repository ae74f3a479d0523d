//! `lethe study FILE` (run or resume a study, print its table), `lethe study
//! show DIR` (print a stored study's table) and `lethe unlearn --reuse-retrain`
//! (a retrain request through the cache).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::StudyResults;
use super::cache::{RetrainCache, RetrainRequest, link_folder, retrain_cached};
use super::hash::{forget_sha256, path_sha256};
use super::results::InputHashes;
use super::runner::{StudyOptions, check_study, run_study};
use super::spec::StudySpec;
use crate::eval::job_data::JobData;
use crate::worker::unlearn::{UnlearnArgs, checked_request};
use crate::worker::{FromWorker, WorkerOptions, find_plugin, plugin_dirs};

/// `lethe study`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct StudyArgs {
    /// Look at a stored study instead of running one.
    #[command(subcommand)]
    pub command: Option<StudyCommand>,
    /// The study file (a commented example: resources/demo/study.toml).
    #[arg(value_name = "FILE", required = true)]
    pub file: Option<PathBuf>,
    /// Run the study at the size its `[scales.NAME]` table gives (e.g. `ci`:
    /// a paper's protocol scaled down to seconds) instead of as written.
    #[arg(long, value_name = "NAME")]
    pub scale: Option<String>,
    /// Check the study (its files, plugins and every parameter set) and stop;
    /// nothing runs and nothing is written.
    #[arg(long)]
    pub check: bool,
    /// The study folder: created, or resumed when it already holds this study
    /// (finished runs are reused). Default: `runs/study-<name>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The retrain cache (default: `.lethe-cache` beside the study folder).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Retrain for every seed even when the cache holds the result.
    #[arg(long)]
    pub no_cache: bool,
    /// Print the workers' progress and logs.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print the table as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the runs go.
    #[command(flatten)]
    pub executor: crate::exec::cli::ExecutorArgs,
}

/// `lethe study …`
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Print the comparison table of a study folder (finished runs only, if the
    /// study is incomplete).
    Show {
        /// The study folder.
        dir: PathBuf,
        /// Print the table as JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print the table as CSV.
        #[arg(long)]
        csv: bool,
    },
}

/// Runs `lethe study`; `extra_dirs` are the global `--plugins` folders and
/// `workspace` the global `--workspace` (whose audit log records the study).
pub fn run(
    args: StudyArgs,
    extra_dirs: &[PathBuf],
    workspace: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(StudyCommand::Show { dir, json, csv }) = &args.command {
        let results = StudyResults::load(dir)?;
        let table = results.table();
        if *json {
            println!("{}", serde_json::to_string_pretty(&table)?);
        } else if *csv {
            print!("{}", table.to_csv());
        } else {
            print!("{}", table.to_text());
        }
        return Ok(());
    }
    let Some(file) = args.file.as_deref() else {
        bail!("give a study file (lethe study FILE) or `lethe study show DIR`");
    };
    let spec = StudySpec::load_scaled(file, args.scale.as_deref())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/study-{}", spec.name)));
    let cache = if args.no_cache {
        None
    } else {
        Some(match &args.cache {
            Some(dir) => RetrainCache::new(dir),
            None => RetrainCache::default_for(&out),
        })
    };
    let executor = args.executor.config(spec.slurm.as_ref())?;
    // Runs elsewhere (local unit processes, Slurm tasks) are stopped on Ctrl-C
    // before the study exits; in one process the workers die with it.
    let cancel = if executor.is_inline() {
        Default::default()
    } else {
        crate::exec::cli::cancel_on_signal()
    };
    let opts = StudyOptions {
        out: out.clone(),
        cache,
        worker: WorkerOptions::current_exe()?,
        plugin_dirs: plugin_dirs(extra_dirs),
        verbose: args.verbose,
        executor,
        program: None,
        cancel,
    };
    if args.check {
        check_study(&spec, file, &opts)?;
        println!(
            "study {}: {} method(s) × {} seed(s); files, plugins and parameters check out",
            spec.name,
            spec.methods.len(),
            spec.seeds.len()
        );
        return Ok(());
    }
    eprintln!(
        "study {}: {} method(s) × {} seed(s) into {}",
        spec.name,
        spec.methods.len(),
        spec.seeds.len(),
        out.display()
    );
    // Recorded when it starts (a study killed outright stays listed as
    // unfinished) and when it ends, partial runs and refusals included.
    let mut entry = study_entry(&spec, file);
    let ws = crate::audit::jobs::workspace_for(workspace, Some(&out));
    let audit_start = crate::audit::jobs::begin(&ws, &entry)
        .context("the audit record could not be written, so the study was not started")?;
    let result = run_study(&spec, file, &opts, &mut |line| eprintln!("study: {line}"));
    let failures = result.as_ref().map_or(0, |r| r.failures.len());
    if out.exists() {
        crate::audit::jobs::finish(&mut entry, &result, &out);
    } else {
        entry.status = crate::audit::jobs::status_of(&result);
    }
    if failures > 0 {
        entry.status = format!("failed: {failures} run(s) failed");
    }
    crate::audit::jobs::end(&audit_start, &entry)
        .context("the audit record of the study's end could not be written")?;
    let run = result?;
    let table = run.results.table();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{}", table.to_text());
    }
    let s = &run.stats;
    eprintln!(
        "study: {} run(s) done, {} reused from the folder; retrain: {} trained, {} from the cache",
        s.runs_done, s.runs_reused, s.retrains_trained, s.retrain_cache_hits
    );
    for w in &run.written {
        println!("wrote {}", w.display());
    }
    if !run.failures.is_empty() {
        bail!(
            "{} run(s) failed (run the same command again to retry them):\n  {}",
            run.failures.len(),
            run.failures.join("\n  ")
        );
    }
    Ok(())
}

/// The audit record of a study, its inputs hashed now (before it runs).
fn study_entry(spec: &StudySpec, file: &Path) -> crate::audit::Entry {
    use crate::audit::{Entry, FileRef};
    Entry {
        kind: "study".into(),
        status: "started".into(),
        subject: format!(
            "study {}: {} method(s) × {} seed(s) on {}",
            spec.name,
            spec.methods.len(),
            spec.seeds.len(),
            spec.checkpoint.display()
        ),
        plugin: None,
        inputs: vec![
            FileRef::of("study file", file),
            FileRef::of("checkpoint", &spec.checkpoint),
            FileRef::of("dataset", &spec.data),
            FileRef::of("forget list", &spec.forget),
        ],
        outputs: Vec::new(),
        details: serde_json::json!({
            "seeds": spec.seeds,
            "device": spec.device,
            "methods": spec.methods.iter().map(|m| &m.id).collect::<Vec<_>>(),
        }),
    }
}

/// `lethe unlearn --reuse-retrain`: the method's result from the retrain cache
/// when it holds one (no worker starts), else trained and stored; either way
/// the output folder gets the result's files (hard links into the cache where
/// possible).
pub fn unlearn_reusing_retrain(
    args: UnlearnArgs,
    extra_dirs: &[PathBuf],
    now: u64,
    workspace: Option<&Path>,
) -> anyhow::Result<()> {
    let (params, device, out) = checked_request(&args, now)?;
    let cache = match &args.cache {
        Some(dir) => RetrainCache::new(dir),
        None => RetrainCache::default_for(&out),
    };
    let mut worker = WorkerOptions::current_exe()?;
    worker.timeout = Some(std::time::Duration::from_secs(60));
    let (library, descriptor) =
        find_plugin(&worker, &plugin_dirs(extra_dirs), &args.method).map_err(anyhow::Error::msg)?;
    if descriptor.kind != "method" {
        bail!("`{}` is a {}, not a method", args.method, descriptor.kind);
    }
    let full = descriptor
        .schema
        .validate(&params)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.method))?;
    let data = JobData::load(&args.data, &args.forget, args.seed)?;
    let hashes = InputHashes {
        checkpoint_sha256: hash(&args.checkpoint)?,
        data_sha256: hash(&args.data)?,
        forget_sha256: forget_sha256(data.forget.indices()),
        forget_count: data.forget.len(),
    };
    let params = serde_json::Value::Object(full);
    let req = RetrainRequest {
        key: RetrainRequest::key(&descriptor, &params, &hashes, args.seed, &device),
        library,
        descriptor,
        params,
        checkpoint: args.checkpoint.clone(),
        data: args.data.clone(),
        forget: args.forget.clone(),
        seed: args.seed,
        device: device.clone(),
    };
    worker.timeout = args.timeout.map(std::time::Duration::from_secs);
    // The deletion is recorded like any `lethe unlearn`, when it starts and
    // when it ends, saying where the model came from: a cached result is a job
    // too, and an auditor must see it.
    let mut entry = crate::audit::Entry {
        kind: "unlearn".into(),
        status: crate::audit::STARTED.into(),
        subject: format!("{} on {}", args.method, args.checkpoint.display()),
        plugin: Some(crate::audit::PluginRef {
            id: req.descriptor.id.clone(),
            version: req.descriptor.version.clone(),
            library: req.library.display().to_string(),
            sha256: path_sha256(&req.library).ok(),
        }),
        inputs: vec![
            crate::audit::FileRef::of("checkpoint", &args.checkpoint),
            crate::audit::FileRef::of("dataset", &args.data),
            crate::audit::FileRef::of("forget list", &args.forget),
        ],
        outputs: Vec::new(),
        details: serde_json::json!({
            "params": req.params,
            "seed": args.seed,
            "device": device,
        }),
    };
    let ws = crate::audit::jobs::workspace_for(workspace, Some(&out));
    let audit_start = crate::audit::jobs::begin(&ws, &entry)
        .context("the audit record could not be written, so nothing was started")?;
    eprintln!(
        "unlearn: {} {} on {} [{device}], cache {}",
        req.descriptor.name,
        req.descriptor.version,
        args.checkpoint.display(),
        cache.dir().display()
    );
    let cached = retrain_cached(&cache, &req, &worker, |event| match event {
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
        _ => {}
    })
    .map_err(anyhow::Error::from)
    .and_then(|cached| {
        link_folder(&cached.dir, &out)?;
        Ok(cached)
    });
    entry.status = crate::audit::jobs::status_of(&cached);
    if let Ok(c) = &cached {
        entry.outputs = crate::audit::FileRef::folder(&out);
        entry.details["retrain_cache"] = serde_json::json!({
            "dir": cache.dir().display().to_string(),
            "entry": c.entry.digest,
            "reused": c.reused,
        });
    }
    crate::audit::jobs::end(&audit_start, &entry)
        .context("the audit record of the job's end could not be written")?;
    let cached = cached?;
    if cached.reused {
        println!(
            "reused the cached result {} (trained in {:.1}s on {}): nothing trained; results in {}",
            cached.entry.digest,
            cached.entry.seconds,
            cached.entry.key.device,
            out.display()
        );
    } else {
        println!(
            "done in {:.1}s, cached as {}; results in {}",
            cached.entry.seconds,
            cached.dir.display(),
            out.display()
        );
    }
    println!("model sha256 {}", cached.entry.model_sha256);
    Ok(())
}

fn hash(path: &Path) -> anyhow::Result<String> {
    path_sha256(path).with_context(|| format!("cannot read {}", path.display()))
}
