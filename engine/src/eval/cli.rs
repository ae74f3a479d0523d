//! `lethe evaluate` and `lethe attack`: print a table, write machine-readable
//! results into a new folder (never over an existing one).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::attack::{
    AttackEstimate, AttackReport, AttackRequest, SCAN_TIMEOUT, estimate_attack, run_attack,
};
pub use super::evaluate::{EvaluateRequest, EvaluationReport, evaluate_into};
use super::utility::{SplitUtility, Utility};
use crate::cli::params::parse_params;
use crate::metrics::{MembershipMetrics, MetricOptions};
use crate::runtime::resolve_device;
use crate::worker::{FromWorker, WorkerOptions, find_plugin, plugin_dirs};

/// `lethe evaluate`
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model to evaluate (typically the unlearned one).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The model before unlearning: adds its utility beside, and for encoders
    /// the alignment audit (forgetting score, Alignment Matrix, Alignment Gap
    /// Matrix).
    #[arg(long)]
    pub original: Option<PathBuf>,
    /// The dataset (a path, or `fashion-mnist`).
    #[arg(long, value_parser = crate::data::named::parse_data_arg)]
    pub data: PathBuf,
    /// The forget list.
    #[arg(long)]
    pub forget: PathBuf,
    /// New folder for `evaluation.json` and `alignment.safetensors` (default:
    /// `runs/evaluate-TIME`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed: split draw (datasets without a recorded split), probe, augmentations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The linear probe that reads encoders: `reference` (the Alignment
    /// Calibration code's: 100 epochs, SGD lr 1.0 momentum 0.9, cosine, batch
    /// 512, crop + flip) or `fast` (30 epochs on fixed features, for tests).
    /// Trained once per model and kept in the probe cache
    /// (`$LETHE_PROBE_CACHE`), where attacks find it too.
    #[arg(long, default_value = "reference", value_parser = ["reference", "fast"])]
    pub probe: String,
    /// The probe's epochs instead of the preset's.
    #[arg(long)]
    pub probe_epochs: Option<usize>,
    /// Run the alignment audit for classifiers too (on backbone features).
    #[arg(long)]
    pub alignment: bool,
    /// Augmented view pairs per forget sample for the forgetting score.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// Forget samples in the saved AM/AGM heatmaps.
    #[arg(long, default_value_t = 8)]
    pub matrix_samples: usize,
    /// Forget samples in the full AGM behind the negative-alignment statistics.
    #[arg(long, default_value_t = 2000)]
    pub alignment_max: usize,
}

impl EvaluateArgs {
    /// The evaluation these options ask for.
    pub fn request(&self) -> EvaluateRequest {
        EvaluateRequest {
            checkpoint: self.checkpoint.clone(),
            original: self.original.clone(),
            data: self.data.clone(),
            forget: self.forget.clone(),
            seed: self.seed,
            device: self.device.clone(),
            probe: self.probe.clone(),
            probe_epochs: self.probe_epochs,
            alignment: self.alignment,
            pairs: self.pairs,
            matrix_samples: self.matrix_samples,
            alignment_max: self.alignment_max,
        }
    }
}

/// `lethe attack`
#[derive(Debug, Args)]
pub struct AttackArgs {
    /// Attack id, as `lethe plugins list` shows it (e.g. org.lethe.attack.svm-mia).
    #[arg(long)]
    pub attack: String,
    /// The model to attack (never modified).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Its dataset (a path, or `fashion-mnist`).
    #[arg(long, value_parser = crate::data::named::parse_data_arg)]
    pub data: PathBuf,
    /// The forget list: the samples the attack asks about.
    #[arg(long)]
    pub forget: PathBuf,
    /// Attack parameters as a JSON object; defaults fill in the rest.
    #[arg(long)]
    pub params: Option<String>,
    /// One parameter as KEY=VALUE (repeatable, after `--params`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// New folder for the scores and `attack.json` (default: `runs/attack-<name>-TIME`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Job seed (split draw, loader shuffles) and bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Bootstrap replicates for the confidence intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub ci: f64,
    /// Give up (and kill the worker) after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Only say what the attack will cost: the shadow models it needs, how many
    /// are cached, how long training the rest takes (from a timed mini-batch).
    /// Nothing is trained and no output folder is made.
    #[arg(long)]
    pub estimate: bool,
    /// Where the shadow models the attack asks for are trained.
    #[command(flatten)]
    pub executor: crate::exec::cli::ExecutorArgs,
}

/// A worker's progress and log lines on stderr, as `lethe attack` shows them.
fn print_event(event: FromWorker) {
    match event {
        FromWorker::Progress {
            fraction, message, ..
        } => {
            let pct = fraction.map_or("    ".into(), |f| format!("{:3.0}%", f * 100.0));
            eprintln!("[{pct}] {message}");
        }
        FromWorker::Log { level, text } => eprintln!("{level:?}: {text}"),
        _ => {}
    }
}

/// Tells the worker about `--plugins` folders too: an attack that unlearns
/// shadow models (U-LiRA) looks for the deletion's method there.
pub fn pass_plugin_dirs(worker: &mut WorkerOptions, extra_dirs: &[PathBuf]) {
    if extra_dirs.is_empty() {
        return;
    }
    let mut dirs: Vec<PathBuf> = extra_dirs
        .iter()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
        .collect();
    if let Some(path) = std::env::var_os("LETHE_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        worker.env.push((
            "LETHE_PLUGIN_PATH".into(),
            joined.to_string_lossy().into_owned(),
        ));
    }
}

fn ensure_inputs(paths: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (what, path) in paths {
        if !path.exists() {
            bail!("{}: no such {what}", path.display());
        }
    }
    Ok(())
}

fn new_folder(out: Option<PathBuf>, default: String) -> anyhow::Result<PathBuf> {
    let out = out.unwrap_or_else(|| PathBuf::from(default));
    if out.exists() {
        bail!(
            "output folder {} already exists; results are never written over",
            out.display()
        );
    }
    Ok(out)
}

/// Runs `lethe evaluate`; `now` names the default output folder.
pub fn run_evaluate(args: EvaluateArgs, now: u64) -> anyhow::Result<EvaluationReport> {
    let mut inputs = vec![
        ("checkpoint", args.checkpoint.as_path()),
        ("dataset", args.data.as_path()),
        ("forget list", args.forget.as_path()),
    ];
    if let Some(o) = &args.original {
        inputs.push(("original checkpoint", o.as_path()));
    }
    ensure_inputs(&inputs)?;
    let out = new_folder(args.out.clone(), format!("runs/evaluate-{now}"))?;
    let report = evaluate_into(&args.request(), &out, true)?;
    print_evaluation(&report);
    println!("wrote {}", out.join("evaluation.json").display());
    Ok(report)
}

fn print_evaluation(r: &EvaluationReport) {
    println!(
        "{} forget / {} retain / {} test samples; model read by {}",
        r.forget_count, r.retain_count, r.test_count, r.utility.reader
    );
    let cols = if r.original_utility.is_some() {
        format!("{:>12}{:>12}", "evaluated", "original")
    } else {
        format!("{:>12}", "evaluated")
    };
    println!("{:<26}{cols}", "");
    let row = |name: &str, f: &dyn Fn(&Utility) -> Option<f64>| {
        let mut line = format!("{name:<26}");
        for u in std::iter::once(&r.utility).chain(r.original_utility.as_ref()) {
            match f(u) {
                Some(v) => line.push_str(&format!("{v:>12.4}")),
                None => line.push_str(&format!("{:>12}", "-")),
            }
        }
        println!("{line}");
    };
    row("retain accuracy (RA)", &|u| Some(u.retain.accuracy));
    row("test accuracy (TA)", &|u| Some(u.test.accuracy));
    row("forget accuracy (UA)", &|u| Some(u.forget.accuracy));
    row("validation accuracy", &|u| {
        u.validation.as_ref().map(|v| v.accuracy)
    });
    row("retain loss", &|u| Some(u.retain.loss));
    row("test loss", &|u| Some(u.test.loss));
    row("forget loss", &|u| Some(u.forget.loss));
    println!("per-class accuracy of the evaluated model:");
    println!(
        "{:<16}{:>10}{:>10}{:>10}",
        "class", "retain", "test", "forget"
    );
    let cell = |s: &SplitUtility, c: usize| {
        s.per_class
            .get(c)
            .copied()
            .flatten()
            .map_or(format!("{:>10}", "-"), |v| format!("{v:>10.4}"))
    };
    for (c, name) in r.classes.iter().enumerate() {
        println!(
            "{:<16}{}{}{}",
            name,
            cell(&r.utility.retain, c),
            cell(&r.utility.test, c),
            cell(&r.utility.forget, c)
        );
    }
    if let Some(a) = &r.alignment {
        println!(
            "alignment audit, original → evaluated ({} forget samples × {} view pairs; matrices over {}):",
            a.samples, a.pairs, a.matrix_size
        );
        println!(
            "  forgetting score FS          {:+.4} ± {:.4}",
            a.forgetting_score.mean, a.forgetting_score.std
        );
        println!(
            "  positive alignment           {:.4} → {:.4}",
            a.positive_before.mean, a.positive_after.mean
        );
        println!(
            "  negative alignment (AGM)     {:+.4} ± {:.4}",
            a.negative_alignment.mean, a.negative_alignment.std
        );
        println!(
            "  negative pairs (AM)          {:.4} → {:.4}",
            a.negative_before.mean, a.negative_after.mean
        );
    }
}

/// Runs `lethe attack`; `extra_dirs` are the global `--plugins` folders.
pub fn run_attack_command(
    args: AttackArgs,
    extra_dirs: &[PathBuf],
    now: u64,
) -> anyhow::Result<AttackReport> {
    let params = parse_params(args.params.as_deref(), &args.set)?;
    let device = resolve_device(&args.device)?;
    ensure_inputs(&[
        ("checkpoint", args.checkpoint.as_path()),
        ("dataset", args.data.as_path()),
        ("forget list", args.forget.as_path()),
    ])?;
    if !(args.ci > 0.0 && args.ci < 1.0) {
        bail!("--ci {}: expected a level in (0, 1), like 0.95", args.ci);
    }
    let short = args.attack.rsplit('.').next().unwrap_or("attack");
    let out = new_folder(args.out.clone(), format!("runs/attack-{short}-{now}"))?;
    let mut worker = WorkerOptions::current_exe()?;
    pass_plugin_dirs(&mut worker, extra_dirs);
    worker.timeout = Some(SCAN_TIMEOUT);
    let (library, descriptor) =
        find_plugin(&worker, &plugin_dirs(extra_dirs), &args.attack).map_err(anyhow::Error::msg)?;
    eprintln!(
        "attack: {} {} ({}) on {} [{device}]",
        descriptor.name,
        descriptor.version,
        library.display(),
        args.checkpoint.display()
    );
    worker.timeout = args.timeout.map(std::time::Duration::from_secs);
    let executor = args.executor.config(None)?;
    if !executor.is_inline() {
        eprintln!("attack: shadow models on {}", executor.describe());
        worker.env.push((
            crate::exec::EXECUTOR_ENV.to_string(),
            serde_json::to_string(&executor)?,
        ));
    }
    let req = AttackRequest {
        library,
        descriptor,
        params,
        checkpoint: args.checkpoint.clone(),
        data: args.data.clone(),
        forget: args.forget.clone(),
        out_dir: out.clone(),
        seed: args.seed,
        device,
        metrics: MetricOptions {
            resamples: args.bootstrap,
            level: args.ci,
            seed: args.seed,
            ..MetricOptions::default()
        },
    };
    let report = run_attack(&worker, &req, print_event)
        .with_context(|| format!("attack {} failed", args.attack))?;
    print_attack(&report);
    println!("wrote {}", out.join("attack.json").display());
    Ok(report)
}

/// Runs `lethe attack --estimate`: the attack in a dry run that stops where it
/// would train shadow models, and the cost it found.
pub fn run_attack_estimate(
    args: AttackArgs,
    extra_dirs: &[PathBuf],
) -> anyhow::Result<AttackEstimate> {
    let params = parse_params(args.params.as_deref(), &args.set)?;
    let device = resolve_device(&args.device)?;
    ensure_inputs(&[
        ("checkpoint", args.checkpoint.as_path()),
        ("dataset", args.data.as_path()),
        ("forget list", args.forget.as_path()),
    ])?;
    let mut worker = WorkerOptions::current_exe()?;
    pass_plugin_dirs(&mut worker, extra_dirs);
    worker.timeout = Some(SCAN_TIMEOUT);
    let (library, descriptor) =
        find_plugin(&worker, &plugin_dirs(extra_dirs), &args.attack).map_err(anyhow::Error::msg)?;
    worker.timeout = args.timeout.map(std::time::Duration::from_secs);
    let req = AttackRequest {
        library,
        descriptor,
        params,
        checkpoint: args.checkpoint.clone(),
        data: args.data.clone(),
        forget: args.forget.clone(),
        out_dir: PathBuf::new(),
        seed: args.seed,
        device,
        metrics: MetricOptions::default(),
    };
    let e = estimate_attack(&worker, &req)
        .with_context(|| format!("estimating attack {} failed", args.attack))?;
    print_estimate(&e);
    Ok(e)
}

/// An attack's estimate as text.
fn print_estimate(e: &AttackEstimate) {
    match &e.shadows {
        None => println!(
            "{} trains no shadow models (its dry run finished in {:.1} s)",
            e.attack, e.seconds
        ),
        Some(s) => {
            println!(
                "{}: {} {} shadow models, {} cached, {} to train",
                e.attack,
                s.models,
                match s.mode {
                    crate::shadows::ShadowMode::Online => "online",
                    crate::shadows::ShadowMode::Offline => "offline",
                },
                s.cached,
                s.to_train
            );
            println!(
                "  each: {} samples of a {}-sample pool, {} epochs, {} steps of batch {}",
                s.train_samples_per_model, s.pool, s.epochs, s.steps_per_model, s.batch_size
            );
            if let Some(method) = &s.unlearn_method {
                println!(
                    "  then each unlearned with {method}: {} of {} copies to make, {}",
                    s.to_unlearn,
                    s.models,
                    match s.seconds_per_unlearn {
                        Some(u) => format!(
                            "about {u:.1} s each (the deletion's own time, scaled to a shadow's data)"
                        ),
                        None => "time unknown (the deletion recorded none)".into(),
                    }
                );
            }
            match s.seconds_per_step {
                Some(step) => println!(
                    "  estimated time: {:.0} s ({:.1} s a model; {:.4} s a step, timed on {})",
                    s.seconds, s.seconds_per_model, step, s.device
                ),
                None if s.to_unlearn > 0 => {
                    println!("  estimated time: {:.0} s (unlearning only)", s.seconds)
                }
                None => println!("  nothing to train"),
            }
            println!(
                "  recipe of {}; cache {}",
                s.recipe_source.display(),
                s.cache_dir.display()
            );
        }
    }
}

fn fmt_ci(v: f64, ci: Option<&crate::metrics::Interval>) -> String {
    match ci {
        Some(c) => format!("{v:.4} [{:.4}, {:.4}]", c.low, c.high),
        None => format!("{v:.4}"),
    }
}

fn print_attack(r: &AttackReport) {
    let m = &r.metrics;
    let level = r.bootstrap.level * 100.0;
    println!(
        "{:<34}{:>40}{:>40}",
        "",
        "forget vs non-members",
        if m.reference.is_some() {
            "held-out members vs non-members"
        } else {
            ""
        }
    );
    let row = |name: &str, f: &dyn Fn(&MembershipMetrics) -> String| {
        let mut line = format!("{name:<34}{:>40}", f(&m.forget));
        if let Some(reference) = &m.reference {
            line.push_str(&format!("{:>40}", f(reference)));
        }
        println!("{line}");
    };
    row("samples (members / non-members)", &|x| {
        format!("{} / {}", x.members, x.non_members)
    });
    row(&format!("AUC [{level:.0}% CI]"), &|x| {
        fmt_ci(x.auc, x.auc_ci.as_ref())
    });
    for (k, target) in m.forget.tpr_at_fpr.iter().enumerate() {
        row(&format!("TPR @ {}% FPR", target.fpr * 100.0), &|x| {
            x.tpr_at_fpr.get(k).map_or("-".into(), |t| {
                let s = fmt_ci(t.tpr, t.ci.as_ref());
                if t.resolved {
                    s
                } else {
                    format!("{s} (unresolved)")
                }
            })
        });
    }
    let dec = |f: fn(&crate::metrics::DecisionMetrics) -> f64| {
        move |x: &MembershipMetrics| {
            x.decisions
                .as_ref()
                .map_or("-".into(), |d| format!("{:.4}", f(d)))
        }
    };
    row("accuracy", &dec(|d| d.accuracy));
    row("precision", &dec(|d| d.precision));
    row("recall (TPR)", &dec(|d| d.recall));
    row("balanced accuracy", &dec(|d| d.balanced_accuracy));
    if let Some(e) = m.forget.efficacy {
        println!("{:<34}{e:>40.4}", "efficacy (forget → non-member)");
    }
    if let Some(s) = &m.shadow {
        println!(
            "{:<34}{:>40}",
            "shadow fit (in-sample)",
            format!(
                "AUC {:.4}{}",
                s.auc,
                s.balanced_accuracy
                    .map(|b| format!(", bal. acc. {b:.4}"))
                    .unwrap_or_default()
            )
        );
    }
    if let Some(p) = &m.per_sample {
        let share = |q: &crate::metrics::binomial::Proportion| {
            format!(
                "{}/{} = {:.3} [{:.3}, {:.3}]",
                q.k, q.n, q.fraction, q.low, q.high
            )
        };
        println!(
            "{:<34}{:>40}",
            format!("p < {} (exact {:.0}% CI)", p.alpha, p.forget.level * 100.0),
            "forgotten samples told apart"
        );
        println!("{:<34}{:>40}", "  forget set", share(&p.forget));
        if let Some(n) = &p.nonmember {
            println!("{:<34}{:>40}", "  never-seen samples (≈ alpha)", share(n));
        }
        if let Some(q) = &p.member {
            println!("{:<34}{:>40}", "  retained samples", share(q));
        }
    }
    for f in &r.flags {
        println!("{:?} {}: {}", f.severity, f.code, f.message);
    }
}

/// `lethe verify-samples`: per-sample verification of a deletion.
#[derive(Debug, Clone, Args)]
pub struct VerifySamplesArgs {
    /// The deletion's run folder (what `lethe unlearn --out` made, with run.json).
    pub run: PathBuf,
    /// Shadow models K (each: one training run of the recipe on half the
    /// pool, then one run of the deletion's method).
    #[arg(long, default_value_t = 16)]
    pub shadow_models: u32,
    /// Pool the shadow models' halves are drawn from (0 = every sample).
    #[arg(long, default_value_t = 0)]
    pub shadow_population: u64,
    /// Epochs per shadow model (0 = the original's recorded recipe).
    #[arg(long, default_value_t = 0)]
    pub shadow_epochs: u32,
    /// Held-out never-seen and retained samples (0 = as many as the forget set).
    #[arg(long, default_value_t = 0)]
    pub heldout: usize,
    /// Population samples in the pool (LiRA's).
    #[arg(long, default_value_t = 1000)]
    pub z_samples: usize,
    /// Seed of the held-out samples and the shadow models.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Significance level of the per-sample counts.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// New output folder (default `RUN/verify-samples-TIME`, where the
    /// deletion's report finds it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Bootstrap replicates for the AUC and TPR intervals.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Confidence level of every interval.
    #[arg(long, default_value_t = 0.95)]
    pub ci: f64,
    /// Only say what it will cost (shadow models to train and unlearn).
    #[arg(long)]
    pub estimate: bool,
    /// Where the shadow models are trained and unlearned.
    #[command(flatten)]
    pub executor: crate::exec::cli::ExecutorArgs,
}

impl VerifySamplesArgs {
    /// The default output folder at Unix time `now`.
    pub fn out_or_default(&self, now: u64) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.run.join(format!("verify-samples-{now}")))
    }
}

/// Runs `lethe verify-samples` (or its `--estimate`).
pub fn run_verify_samples(
    args: &VerifySamplesArgs,
    extra_dirs: &[PathBuf],
    out: &Path,
) -> anyhow::Result<Option<super::per_sample::PerSampleReport>> {
    use super::per_sample::{self, LIRA, ULIRA, VerifyRequest, VerifySettings};
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        bail!(
            "--alpha {}: expected a level in (0, 1), like 0.05",
            args.alpha
        );
    }
    if !(args.ci > 0.0 && args.ci < 1.0) {
        bail!("--ci {}: expected a level in (0, 1), like 0.95", args.ci);
    }
    if args.shadow_models < 2 {
        bail!(
            "--shadow-models {}: per-sample tests need at least 2",
            args.shadow_models
        );
    }
    let device = resolve_device(&args.device)?;
    let mut worker = WorkerOptions::current_exe()?;
    pass_plugin_dirs(&mut worker, extra_dirs);
    worker.timeout = Some(SCAN_TIMEOUT);
    let dirs = plugin_dirs(extra_dirs);
    let ulira = find_plugin(&worker, &dirs, ULIRA).map_err(anyhow::Error::msg)?;
    let lira = find_plugin(&worker, &dirs, LIRA).map_err(anyhow::Error::msg)?;
    worker.timeout = None;
    let executor = args.executor.config(None)?;
    if !executor.is_inline() {
        eprintln!("verify-samples: shadow models on {}", executor.describe());
        worker.env.push((
            crate::exec::EXECUTOR_ENV.to_string(),
            serde_json::to_string(&executor)?,
        ));
    }
    let req = VerifyRequest {
        run_dir: args.run.clone(),
        settings: VerifySettings {
            shadow_models: args.shadow_models,
            shadow_population: args.shadow_population,
            shadow_epochs: args.shadow_epochs,
            heldout: args.heldout,
            z_samples: args.z_samples,
            seed: args.seed,
            alpha: args.alpha,
        },
        out_dir: out.to_path_buf(),
        device,
        metrics: MetricOptions {
            resamples: args.bootstrap,
            level: args.ci,
            seed: args.seed,
            ..MetricOptions::default()
        },
        ulira,
        lira,
    };
    if args.estimate {
        let e = per_sample::estimate(&worker, &req)
            .with_context(|| format!("estimating the verification of {}", args.run.display()))?;
        print_estimate(&e);
        println!("  LiRA on the original model then reuses these shadow models (trained once)");
        return Ok(None);
    }
    let report = per_sample::verify_samples(&worker, &req, print_event)
        .with_context(|| format!("verifying {} sample by sample", args.run.display()))?;
    print_per_sample(&report);
    println!("wrote {}", out.join("per_sample.json").display());
    Ok(Some(report))
}

/// The per-sample report as text.
pub fn print_per_sample(r: &super::per_sample::PerSampleReport) {
    use crate::metrics::binomial::Proportion;
    println!(
        "per-sample verification of {} ({} from {})",
        r.unlearned.display(),
        r.method,
        r.original.display()
    );
    println!(
        "  {} shadow models trained by the original's recipe, each unlearned by {}; {}took {:.0} s",
        r.settings.shadow_models,
        r.method,
        r.estimated_seconds
            .map(|e| format!("estimated {e:.0} s, "))
            .unwrap_or_default(),
        r.seconds
    );
    let (b, a) = (&r.before, &r.after);
    println!(
        "{:<40}{:>32}{:>32}",
        "", "before (original, LiRA)", "after (unlearned, U-LiRA)"
    );
    let auc = |m: &super::attack::AttackMetrics| fmt_ci(m.forget.auc, m.forget.auc_ci.as_ref());
    println!(
        "{:<40}{:>32}{:>32}",
        "forget vs never-seen: AUC",
        auc(b),
        auc(a)
    );
    for fpr in [0.01, 0.001] {
        let at = |m: &super::attack::AttackMetrics| {
            m.forget
                .tpr_at_fpr
                .iter()
                .find(|t| (t.fpr - fpr).abs() < 1e-12)
                .map(|t| fmt_ci(t.tpr, t.ci.as_ref()))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<40}{:>32}{:>32}",
            format!("  TPR @ {}% FPR", fpr * 100.0),
            at(b),
            at(a)
        );
    }
    let share = |q: Option<&Proportion>| {
        q.map(|q| {
            format!(
                "{}/{} = {:.3} [{:.3}, {:.3}]",
                q.k, q.n, q.fraction, q.low, q.high
            )
        })
        .unwrap_or_else(|| "-".into())
    };
    let alpha = r.settings.alpha;
    for (label, pick) in [
        (
            format!("forgotten samples with p < {alpha}"),
            (|p: &super::attack::PerSample| Some(p.forget)) as fn(&_) -> Option<Proportion>,
        ),
        (
            format!("never-seen samples with p < {alpha}"),
            |p: &super::attack::PerSample| p.nonmember,
        ),
        (
            format!("retained samples with p < {alpha}"),
            |p: &super::attack::PerSample| p.member,
        ),
    ] {
        let cell =
            |m: &super::attack::AttackMetrics| share(m.per_sample.as_ref().and_then(pick).as_ref());
        println!("{:<40}{:>32}{:>32}", label, cell(b), cell(a));
    }
    println!(
        "  (the never-seen line is the test's own false-positive rate on this model: read the \
         forgotten line against it, not against {alpha})"
    );
    println!("forgotten samples an attacker tells apart best after the deletion:");
    for l in &r.most_distinguishable {
        println!(
            "  row {:>7}   p after {:.2e}   (before {:.2e})",
            l.row, l.p_after, l.p_before
        );
    }
    let o = &r.onion;
    println!(
        "retained samples (onion effect): {} compared, {} significant only after, {} only before, median change of -log10 p {:+.3}",
        o.samples, o.newly_significant, o.no_longer_significant, o.median_change
    );
    for l in &o.most_exposed {
        println!(
            "  row {:>7}   p {:.2e} -> {:.2e}   (-log10 p {:+.2})",
            l.row,
            l.p_before,
            l.p_after,
            l.exposure_change()
        );
    }
}
