//! The `lethe` command line, shared by the GUI binary (`lethe`) and the headless one
//! (`lethe-cli`).

pub mod params;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tch::Device;

use crate::jobs::train::{Backbone, Task, TrainJob, run_train_job};
use crate::runtime::RuntimeReport;
use crate::train::augment::AugmentConfig;
use crate::train::prune::{PruneRecipe, PruneScope};
use crate::train::{Flow, OptimizerConfig, Schedule, TrainConfig, TrainEvent};

/// Lethe: machine unlearning workbench.
#[derive(Debug, Parser)]
#[command(
    name = "lethe",
    version,
    about = "Lethe: remove chosen training data from a model and check it with membership-inference attacks"
)]
pub struct Cli {
    /// Also search this plugin folder, before the others (repeatable).
    #[arg(long, global = true, value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
    /// Workspace holding the audit log `audit.sqlite` (default: `$LETHE_WORKSPACE`,
    /// else the nearest folder above the output holding a project or an audit log,
    /// above the current folder only a project, else the current folder).
    #[arg(long, global = true, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// In a development build, also list the workspace's test fixtures and plugin
    /// template (hidden otherwise; `LETHE_DEV_PLUGINS=1` does the same).
    #[arg(long, global = true)]
    pub dev_plugins: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of the CLI.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report the libtorch build, CUDA and cuDNN availability and thread count.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the demo deletion request on the bundled leaky MNIST model, attack and report it.
    Demo(DemoArgs),
    /// Train a built-in model on a dataset and save it as a Lethe checkpoint.
    Train(Box<TrainArgs>),
    /// Look at datasets.
    Data {
        /// What to do with the dataset.
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Make forget sets.
    Forget {
        /// What to do.
        #[command(subcommand)]
        command: ForgetCommand,
    },
    /// Look at checkpoints.
    Checkpoint {
        /// What to do with the checkpoint.
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Forget data from a model with an unlearning method plugin (runs in a
    /// worker process; the original checkpoint is never modified).
    Unlearn(Box<crate::worker::unlearn::UnlearnArgs>),
    /// Utility (retain/test/forget accuracy, per class) of a model, and for
    /// encoders with `--original` the alignment audit (FS, AM, AGM).
    Evaluate(Box<crate::eval::cli::EvaluateArgs>),
    /// Run a membership-inference attack plugin on a model and its forget set
    /// (in a worker process) and report AUC, TPR at low FPR, intervals, efficacy.
    Attack(Box<crate::eval::cli::AttackArgs>),
    /// Find, describe and check plugins (each runs in a worker process).
    Plugins {
        /// What to do.
        #[command(subcommand)]
        command: crate::worker::cli::PluginsCommand,
    },
    /// Check a deletion sample by sample: U-LiRA on the unlearned model (shadow
    /// models trained by the original's recipe and unlearned by the same method)
    /// and LiRA on the original, with p-values, exact intervals and the retained
    /// samples that became more exposed.
    VerifySamples(Box<crate::eval::cli::VerifySamplesArgs>),
    /// Write the compliance report of a deletion run (PDF, HTML, CSV, JSON, LaTeX).
    Report(Box<crate::report::cli::ReportArgs>),
    /// Check or list the workspace's audit trail (`audit.sqlite`).
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: crate::audit::cli::AuditCommand,
    },
    /// Compare methods over seeds against retraining: run (or resume) a study
    /// file and print the papers' table, or `show` a stored one.
    Study(Box<crate::study::cli::StudyArgs>),
    /// Compare training throughput and memory with plain PyTorch, row by row.
    Bench(Box<crate::bench::BenchArgs>),
    /// Run one unit of work from its spec file (what a study or an attack
    /// writes for its executor: a Slurm array task runs exactly this), writing
    /// `SPEC.result.json` beside it.
    RunJob(crate::exec::cli::RunJobArgs),
    /// Internal: run one job for a parent Lethe process, framed on stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// `lethe data …`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Format, sample count, shape, classes and per-class counts.
    Inspect {
        /// IDX/CIFAR folder or file, image folder, .npz or .safetensors, or
        /// `fashion-mnist` (Debian's dataset-fashion-mnist).
        #[arg(value_parser = crate::data::named::parse_data_arg)]
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe forget …`
#[derive(Debug, Subcommand)]
pub enum ForgetCommand {
    /// Write a forget list (one training-sample index per line) for a dataset.
    Make {
        /// The dataset (a path, or `fashion-mnist`).
        #[arg(long, value_parser = crate::data::named::parse_data_arg)]
        data: PathBuf,
        /// Forget this fraction of the training split, drawn with `--seed`.
        #[arg(long, conflicts_with = "class")]
        fraction: Option<f64>,
        /// Forget every training sample of this class.
        #[arg(long)]
        class: Option<i64>,
        /// Seed for `--fraction`.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output list (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `lethe checkpoint …`
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Format, detected architecture, parameter count and hashes.
    Inspect {
        /// .safetensors, .pt/.pth (torch.save) or TorchScript file.
        path: PathBuf,
    },
}

/// Where to compute.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum DeviceArg {
    /// The first CUDA GPU when there is one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (fails without one).
    Cuda,
}

impl DeviceArg {
    fn resolve(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Auto => Ok(Device::cuda_if_available()),
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceArg::Cuda => {
                anyhow::bail!("--device cuda: no usable CUDA GPU (see `lethe doctor`)")
            }
        }
    }
}

/// `lethe demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The resources folder holding `demo/` (default: next to the binary or the sources).
    #[arg(long)]
    pub resources: Option<PathBuf>,
    /// New folder for the outputs (default: `runs/demo-TIME`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceArg,
}

/// Augmentation presets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AugmentArg {
    /// None.
    None,
    /// Crop only (digits must not be mirrored).
    Digits,
    /// Crop and horizontal flip.
    CropFlip,
    /// The SimCLR/MoCo recipe: crop, flip, colour jitter, grayscale.
    Contrastive,
}

/// `lethe train`
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset (IDX/CIFAR folder, image folder, .npz, .safetensors, or `fashion-mnist`).
    #[arg(long, value_parser = crate::data::named::parse_data_arg)]
    pub data: PathBuf,
    /// Backbone.
    #[arg(long, value_enum, default_value = "small-cnn")]
    pub backbone: Backbone,
    /// Hidden layer widths of `--backbone mlp`, comma-separated [default: 512,512].
    #[arg(long, value_delimiter = ',', value_name = "WIDTHS")]
    pub hidden: Option<Vec<i64>>,
    /// Objective.
    #[arg(long, value_enum, default_value = "classifier")]
    pub task: Task,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: i64,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Use Adam instead of SGD with momentum 0.9.
    #[arg(long)]
    pub adam: bool,
    /// Keep the learning rate constant instead of cosine decay.
    #[arg(long)]
    pub constant_lr: bool,
    /// Seed of libtorch's generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Augmentation (contrastive tasks default to the contrastive recipe).
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    /// Contrastive temperature.
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f64,
    /// Make a sparse model (Jia et al.'s "prune first"): after the dense
    /// training, zero this fraction of the weights by one-shot global magnitude
    /// pruning (OMP; 0.95 is the papers' "95 % sparse"), then retrain with the
    /// pruned weights held at zero. The checkpoint records the mask rule, and
    /// unlearning keeps its zeros for every method.
    #[arg(long, value_name = "FRACTION")]
    pub prune_ratio: Option<f64>,
    /// Which weights `--prune-ratio` prunes: `conv` (convolution kernels, as the
    /// reference) or `weights` (every weight matrix and kernel; the MLP has
    /// only these).
    #[arg(long, value_enum, default_value = "conv", requires = "prune_ratio")]
    pub prune_scope: PruneScopeArg,
    /// Rewind the weights to those after this dense epoch before retraining the
    /// pruned model (the reference: 8 of 182); 0 retrains from the pruned dense
    /// weights.
    #[arg(long, default_value_t = 0, requires = "prune_ratio")]
    pub rewind_epoch: usize,
    /// Epochs of retraining the pruned model [default: --epochs].
    #[arg(long, requires = "prune_ratio")]
    pub retrain_epochs: Option<usize>,
    /// Output checkpoint (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceArg,
}

/// Which weights `lethe train --prune-ratio` prunes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PruneScopeArg {
    /// Convolution kernels only (the reference pruner).
    Conv,
    /// Every weight matrix and kernel.
    Weights,
}

impl From<PruneScopeArg> for PruneScope {
    fn from(a: PruneScopeArg) -> Self {
        match a {
            PruneScopeArg::Conv => PruneScope::Conv,
            PruneScopeArg::Weights => PruneScope::Weights,
        }
    }
}

impl TrainArgs {
    fn job(&self) -> anyhow::Result<TrainJob> {
        let hidden = match (&self.hidden, self.backbone) {
            (None, Backbone::Mlp) => crate::jobs::train::DEFAULT_MLP_HIDDEN.to_vec(),
            (None, _) => Vec::new(),
            (Some(h), Backbone::Mlp) => h.clone(),
            (Some(_), other) => anyhow::bail!(
                "--hidden sets the layer widths of --backbone mlp; {} has fixed widths",
                other.cli_name()
            ),
        };
        let augment = match self.augment {
            Some(AugmentArg::None) => None,
            Some(AugmentArg::Digits) => Some(AugmentConfig::digits()),
            Some(AugmentArg::CropFlip) => Some(AugmentConfig::crop_flip()),
            Some(AugmentArg::Contrastive) => Some(AugmentConfig::contrastive()),
            None if self.task == Task::Classifier => None,
            None => Some(AugmentConfig::contrastive()),
        };
        Ok(TrainJob {
            data: self.data.clone(),
            backbone: self.backbone,
            task: self.task,
            hidden,
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                weight_decay: self.weight_decay,
                optimizer: if self.adam {
                    OptimizerConfig::Adam {
                        beta1: 0.9,
                        beta2: 0.999,
                    }
                } else {
                    OptimizerConfig::default()
                },
                schedule: if self.constant_lr {
                    Schedule::Constant
                } else {
                    Schedule::Cosine
                },
                seed: self.seed,
                drop_last: self.task != Task::Classifier,
                augment,
            },
            temperature: self.temperature,
            prune: self.prune_ratio.map(|ratio| PruneRecipe {
                ratio,
                scope: self.prune_scope.into(),
                rewind_epoch: self.rewind_epoch,
                retrain_epochs: self.retrain_epochs.unwrap_or(self.epochs),
            }),
            out: self.out.clone(),
            overwrite: self.overwrite,
        })
    }
}

/// Prints one line per finished epoch to stderr.
fn epoch_printer() -> impl FnMut(&TrainEvent) -> Flow {
    |e: &TrainEvent| {
        if e.step == e.steps {
            eprintln!(
                "epoch {:>3}/{} loss {:.4} lr {:.4} {:.0} samples/s",
                e.epoch, e.epochs, e.loss, e.lr, e.samples_per_sec
            );
        }
        Flow::Continue
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The method and attack the demo runs: exact retraining (the reference every
/// method is judged against) and the cheapest attack.
const DEMO_METHOD: &str = "org.lethe.baseline.retrain";
const DEMO_ATTACK: &str = "org.lethe.attack.metric-mia";
/// The demo's request, on the leaky demo (`resources/demo/README.md`): an MLP
/// fitted to 2,000 digits, whose membership an attack can see (the bundled
/// CNN classifier barely leaks, so an attack on it shows nothing either way).
const DEMO_MODEL: &str = "demo/leaky-mlp.safetensors";
const DEMO_DATA: &str = "demo/mnist10k-2k.npz";
const DEMO_FORGET: &str = "demo/forget-2k.txt";

/// `lethe demo`: a deletion request carried out as a user would with the
/// commands below, each printed before it runs: unlearn, evaluate, attack the
/// original and the unlearned model, and write the compliance report (HTML and
/// PDF) into the run folder. The audit log goes beside the run folder unless a
/// workspace is given.
fn run_demo_tour(
    args: &DemoArgs,
    out: &std::path::Path,
    plugins: &[PathBuf],
    workspace: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!(
            "output folder {} already exists; outputs are never overwritten",
            out.display()
        );
    }
    let resources = args
        .resources
        .clone()
        .unwrap_or_else(crate::resources::bundled_dir);
    let ckpt = resources.join(DEMO_MODEL);
    let data = resources.join(DEMO_DATA);
    let forget = resources.join(DEMO_FORGET);
    for f in [&ckpt, &data, &forget] {
        if !f.is_file() {
            anyhow::bail!(
                "{}: the bundled demo file is missing (give the resources folder with --resources)",
                f.display()
            );
        }
    }
    let device = match args.device {
        DeviceArg::Auto => "auto",
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
    };
    // The unlearn step refuses an existing folder, so the audit log cannot go
    // inside it; beside it keeps the demo's records out of the current folder.
    let workspace = workspace
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("LETHE_WORKSPACE").map(PathBuf::from))
        .unwrap_or_else(|| {
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
        });
    let model = out.join("model.safetensors");
    let s = |p: &std::path::Path| p.display().to_string();
    let common = |step: &[String]| -> Vec<String> {
        let mut v = vec!["lethe".to_string()];
        for d in plugins {
            v.push("--plugins".into());
            v.push(s(d));
        }
        v.push("--workspace".into());
        v.push(s(&workspace));
        v.extend(step.iter().cloned());
        v
    };
    // A job's arguments: the command, its own flags, then the request every
    // step shares (data, forget list, device) and its output folder.
    let job = |command: &str, flags: &[(&str, String)], out_dir: &std::path::Path| {
        let mut v = vec![command.to_string()];
        for (flag, value) in flags {
            v.push((*flag).to_string());
            v.push(value.clone());
        }
        for (flag, value) in [
            ("--data", s(&data)),
            ("--forget", s(&forget)),
            ("--device", device.to_string()),
            ("--out", s(out_dir)),
        ] {
            v.push(flag.to_string());
            v.push(value);
        }
        v
    };
    let attack = |target: &std::path::Path, dir: &str| {
        job(
            "attack",
            &[
                ("--attack", DEMO_ATTACK.into()),
                ("--checkpoint", s(target)),
            ],
            &out.join(dir),
        )
    };
    let report = |format: &str| -> Vec<String> {
        ["report", &s(out), "--format", format]
            .map(String::from)
            .to_vec()
    };
    let steps: Vec<(&str, Vec<String>)> = vec![
        (
            "forget 100 of the 2,000 digits the leaky demo MLP was fitted to, by exact retraining (a worker runs the plugin)",
            job(
                "unlearn",
                &[("--method", DEMO_METHOD.into()), ("--checkpoint", s(&ckpt))],
                out,
            ),
        ),
        (
            "measure the utility of both models",
            job(
                "evaluate",
                &[("--checkpoint", s(&model)), ("--original", s(&ckpt))],
                &out.join("evaluation"),
            ),
        ),
        (
            "attack the original model: it was fitted to the forget set",
            attack(&ckpt, "attack-metric-original"),
        ),
        (
            "attack the unlearned model",
            attack(&model, "attack-metric"),
        ),
        ("write the compliance report (HTML)", report("html")),
        ("write the compliance report (PDF)", report("pdf")),
    ];
    let total = steps.len();
    for (n, (what, step)) in steps.into_iter().enumerate() {
        let argv = common(&step);
        eprintln!(
            "\ndemo {}/{total}: {what}\n  $ {}",
            n + 1,
            shell_words(&argv)
        );
        let cli = Cli::try_parse_from(&argv)
            .map_err(|e| anyhow::anyhow!("the demo built a command the CLI refuses: {e}"))?;
        run(cli)?;
    }
    print_demo_summary(out);
    Ok(())
}

/// A command line as a user would type it (arguments with spaces quoted).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The demo's before/after in a few lines, read back from the files it wrote.
fn print_demo_summary(out: &std::path::Path) {
    let read = |p: PathBuf| -> serde_json::Value {
        std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let eval = read(out.join("evaluation").join("evaluation.json"));
    let before = read(out.join("attack-metric-original").join("attack.json"));
    let after = read(out.join("attack-metric").join("attack.json"));
    let num = |v: &serde_json::Value, ptr: &str| v.pointer(ptr).and_then(serde_json::Value::as_f64);
    let cell = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
    println!();
    println!("{:<34}{:>10}{:>12}", "", "original", "unlearned");
    for (name, key) in [
        ("retain accuracy", "retain"),
        ("forget accuracy", "forget"),
        ("test accuracy", "test"),
    ] {
        println!(
            "{name:<34}{:>10}{:>12}",
            cell(num(&eval, &format!("/original_utility/{key}/accuracy"))),
            cell(num(&eval, &format!("/utility/{key}/accuracy")))
        );
    }
    println!(
        "{:<34}{:>10}{:>12}",
        "attack AUC on the forget set",
        cell(num(&before, "/metrics/forget/auc")),
        cell(num(&after, "/metrics/forget/auc"))
    );
    let interval = |v: &serde_json::Value| match (
        num(v, "/metrics/forget/auc_ci/low"),
        num(v, "/metrics/forget/auc_ci/high"),
    ) {
        (Some(lo), Some(hi)) => format!("[{lo:.2}, {hi:.2}]"),
        _ => "-".into(),
    };
    println!(
        "{:<34}{:>10}{:>12}",
        "  95 % interval",
        interval(&before),
        interval(&after)
    );
    println!(
        "(AUC 0.5: the attack cannot tell the forget set from digits the model never saw;\n \
         an interval above 0.5 means it can)"
    );
    println!();
    println!("run folder:  {}", out.display());
    for f in ["report.pdf", "report.html"] {
        println!("report:      {}", out.join(f).display());
    }
}

/// Why a job did not run: its start could not be recorded.
const START_RECORD_FAILED: &str =
    "the audit record of the job's start could not be written, so the job did not run";

/// Runs a parsed command; the binary maps the error to a non-zero exit.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.dev_plugins {
        // SAFETY: set before this command starts any thread, so nothing reads the
        // environment concurrently; workers and studies it starts inherit it.
        unsafe { std::env::set_var(crate::worker::DEV_PLUGINS_ENV, "1") };
    }
    match cli.command {
        Command::Worker => crate::worker::child::run_worker()?,
        Command::RunJob(args) => crate::exec::cli::run_job(&args)?,
        Command::Bench(args) => crate::bench::run(*args)?,
        Command::Study(args) => {
            crate::study::cli::run(*args, &cli.plugins, cli.workspace.as_deref())?
        }
        Command::Unlearn(args) if args.reuse_retrain => crate::study::cli::unlearn_reusing_retrain(
            *args,
            &cli.plugins,
            unix_now(),
            cli.workspace.as_deref(),
        )?,
        Command::Plugins { command } => {
            crate::worker::cli::run(command, &cli.plugins, &crate::resources::bundled_dir())?
        }
        Command::Unlearn(args) => {
            crate::worker::unlearn::run(*args, &cli.plugins, unix_now(), cli.workspace.as_deref())?
        }
        Command::Evaluate(mut args) => {
            use crate::audit::jobs as audit;
            let now = unix_now();
            let out = args
                .out
                .get_or_insert_with(|| PathBuf::from(format!("runs/evaluate-{now}")))
                .clone();
            // A job refused for a missing input or an existing output folder did
            // nothing worth recording.
            let ran = args.checkpoint.exists()
                && args.data.exists()
                && args.forget.exists()
                && !out.exists();
            let mut entry = audit::evaluate_entry(&args.request(), &out);
            // Recorded when it starts (so a killed job leaves a trace) and ends.
            let started = if ran {
                let ws = audit::workspace_for(cli.workspace.as_deref(), Some(&out));
                Some(audit::begin(&ws, &entry).context(START_RECORD_FAILED)?)
            } else {
                None
            };
            let result = crate::eval::cli::run_evaluate(*args, now);
            if let Some(started) = &started {
                audit::finish(&mut entry, &result, &out);
                audit::end(started, &entry).context("the audit record could not be written")?;
            }
            result?;
        }
        Command::Attack(args) if args.estimate => {
            crate::eval::cli::run_attack_estimate(*args, &cli.plugins)?;
        }
        Command::Attack(mut args) => {
            use crate::audit::jobs as audit;
            let now = unix_now();
            let short = args.attack.rsplit('.').next().unwrap_or("attack");
            let default = PathBuf::from(format!("runs/attack-{short}-{now}"));
            let out = args.out.get_or_insert(default).clone();
            // A job refused for a missing input or an existing output folder did
            // nothing worth recording.
            let ran = args.checkpoint.exists()
                && args.data.exists()
                && args.forget.exists()
                && !out.exists();
            let settings = serde_json::json!({
                "params": args.params,
                "set": args.set,
                "seed": args.seed,
                "device": args.device,
                "bootstrap": args.bootstrap,
                "ci": args.ci,
            });
            let mut entry = audit::attack_entry(
                &audit::AttackJob {
                    attack: &args.attack,
                    checkpoint: &args.checkpoint,
                    data: &args.data,
                    forget: &args.forget,
                    settings: &settings,
                },
                &out,
            );
            let started = if ran {
                let ws = audit::workspace_for(cli.workspace.as_deref(), Some(&out));
                Some(audit::begin(&ws, &entry).context(START_RECORD_FAILED)?)
            } else {
                None
            };
            let result = crate::eval::cli::run_attack_command(*args, &cli.plugins, now);
            if let Some(started) = &started {
                audit::finish(&mut entry, &result, &out);
                entry.plugin = result.as_ref().ok().map(audit::attack_plugin);
                audit::end(started, &entry).context("the audit record could not be written")?;
            }
            result?;
        }
        Command::VerifySamples(args) if args.estimate => {
            crate::eval::cli::run_verify_samples(&args, &cli.plugins, std::path::Path::new(""))?;
        }
        Command::VerifySamples(args) => {
            use crate::audit::jobs as audit;
            let out = args.out_or_default(unix_now());
            let ran = args.run.join("run.json").is_file() && !out.exists();
            let settings = serde_json::json!({
                "run": args.run,
                "shadow_models": args.shadow_models,
                "shadow_population": args.shadow_population,
                "shadow_epochs": args.shadow_epochs,
                "heldout": args.heldout,
                "z_samples": args.z_samples,
                "seed": args.seed,
                "alpha": args.alpha,
                "device": args.device,
            });
            let model = args.run.join("model.safetensors");
            let record = crate::jobs::run_record::RunRecord::load(&args.run).ok();
            let (data, forget) = record
                .as_ref()
                .map(|r| (r.data.path.clone(), r.forget.list.path.clone()))
                .unwrap_or_default();
            let mut entry = audit::attack_entry(
                &audit::AttackJob {
                    attack: "per-sample verification (U-LiRA after, LiRA before)",
                    checkpoint: &model,
                    data: &data,
                    forget: &forget,
                    settings: &settings,
                },
                &out,
            );
            let started = if ran {
                let ws = audit::workspace_for(cli.workspace.as_deref(), Some(&out));
                Some(audit::begin(&ws, &entry).context(START_RECORD_FAILED)?)
            } else {
                None
            };
            let result = crate::eval::cli::run_verify_samples(&args, &cli.plugins, &out);
            if let Some(started) = &started {
                audit::finish(&mut entry, &result, &out);
                audit::end(started, &entry).context("the audit record could not be written")?;
            }
            result?;
        }
        Command::Report(args) => crate::report::cli::run(*args, cli.workspace.as_deref())?,
        Command::Audit { command } => {
            let ws = crate::audit::workspace_dir(cli.workspace.as_deref());
            crate::audit::cli::run(command, &ws)?
        }
        Command::Doctor { json } => {
            let report = RuntimeReport::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
        Command::Demo(args) => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/demo-{}", unix_now())));
            run_demo_tour(&args, &out, &cli.plugins, cli.workspace.as_deref())
                .context("demo failed")?;
        }
        Command::Train(args) => {
            let device = args.device.resolve()?;
            let job = args.job()?;
            let out = run_train_job(&job, device, &mut epoch_printer())
                .with_context(|| format!("training on {} failed", job.data.display()))?;
            println!(
                "wrote {} ({}); accuracy train {:.4} val {:.4} test {:.4}; {:.0} samples/s, {:.1}s",
                out.checkpoint.display(),
                out.arch,
                out.accuracy.train,
                out.accuracy.val,
                out.accuracy.test,
                out.samples_per_sec,
                out.seconds
            );
            if let (Some(s), Some(dense)) = (&out.sparsity, &out.dense_accuracy) {
                println!(
                    "sparse: {} of the {} weights in scope `{}` pruned ({:.2} %) by OMP, retrained {} epochs{}; \
                     dense test accuracy was {:.4}",
                    s.pruned,
                    s.prunable,
                    s.scope.name(),
                    100.0 * s.pruned as f64 / s.prunable.max(1) as f64,
                    s.retrain_epochs,
                    if s.rewind_epoch > 0 {
                        format!(" from the epoch-{} weights", s.rewind_epoch)
                    } else {
                        String::new()
                    },
                    dense.test
                );
            }
        }
        Command::Data {
            command: DataCommand::Inspect { path, json },
        } => {
            let s = crate::data::inspect(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{s}");
            }
        }
        Command::Forget {
            command:
                ForgetCommand::Make {
                    data,
                    fraction,
                    class,
                    seed,
                    out,
                },
        } => {
            let dataset = crate::data::load(&data)?;
            let split = crate::jobs::train::split_of(&dataset, 0)?;
            let set = match (fraction, class) {
                (Some(f), None) => crate::data::ForgetSet::random_fraction(&split.train, f, seed)?,
                (None, Some(k)) => crate::data::ForgetSet::from_class(&dataset, &split.train, k)?,
                _ => anyhow::bail!("give exactly one of --fraction or --class"),
            };
            let mut text = format!(
                "# forget set for {}: {} ({} of {} training samples)\n",
                data.display(),
                set.origin(),
                set.len(),
                split.train.len()
            );
            for i in set.indices() {
                text.push_str(&format!("{i}\n"));
            }
            crate::jobs::atomic::write_atomic(&out, text.as_bytes(), false)?;
            println!("wrote {} ({} indices)", out.display(), set.len());
        }
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { path },
        } => {
            println!("{}", crate::checkpoint::inspect(&path)?);
        }
    }
    Ok(())
}
