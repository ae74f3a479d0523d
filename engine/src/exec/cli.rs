//! The executor options `lethe study` and `lethe attack` share, and `lethe
//! run-job`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::{ExecutorConfig, SlurmSettings};

/// Which executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// This machine (`--jobs N` at once).
    Local,
    /// A Slurm cluster: one job array per stage (sbatch, squeue, scancel).
    Slurm,
}

/// Where the units of work run.
#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// Where runs (study) or shadow models (attack) go.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Local executor: units at once, each a `lethe-cli run-job` process
    /// (1: one after another in this process, as without executors).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Slurm: `--partition` of every task (overrides the study file's `[slurm]`).
    #[arg(long, help_heading = "Slurm")]
    pub partition: Option<String>,
    /// Slurm: `--time` per task, e.g. 01:00:00.
    #[arg(long, help_heading = "Slurm")]
    pub time: Option<String>,
    /// Slurm: `--cpus-per-task`.
    #[arg(long, help_heading = "Slurm")]
    pub cpus_per_task: Option<u32>,
    /// Slurm: `--mem` per task, e.g. 8G.
    #[arg(long, help_heading = "Slurm")]
    pub mem: Option<String>,
    /// Slurm: `--gres` per task, e.g. gpu:1.
    #[arg(long, help_heading = "Slurm")]
    pub gres: Option<String>,
    /// Slurm: `--account`.
    #[arg(long, help_heading = "Slurm")]
    pub account: Option<String>,
    /// Slurm: most tasks of an array running at once (`--array=…%N`).
    #[arg(long, help_heading = "Slurm", value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Slurm: times a task is submitted before it counts as failed (default 3).
    #[arg(long, help_heading = "Slurm", value_name = "N")]
    pub attempts: Option<usize>,
    /// Slurm: one more `sbatch` argument, as it is (repeatable), e.g.
    /// `--sbatch-arg=--qos=short`.
    #[arg(
        long = "sbatch-arg",
        help_heading = "Slurm",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub sbatch_args: Vec<String>,
}

impl ExecutorArgs {
    /// The executor, the command line's Slurm options over `file`'s (a study
    /// file's `[slurm]` table).
    pub fn config(&self, file: Option<&SlurmSettings>) -> anyhow::Result<ExecutorConfig> {
        let slurm_given = self.partition.is_some()
            || self.time.is_some()
            || self.cpus_per_task.is_some()
            || self.mem.is_some()
            || self.gres.is_some()
            || self.account.is_some()
            || self.max_parallel.is_some()
            || self.attempts.is_some()
            || !self.sbatch_args.is_empty();
        match self.executor {
            ExecutorKind::Local => {
                if slurm_given {
                    bail!("Slurm options need --executor slurm");
                }
                if self.jobs == 0 {
                    bail!("--jobs 0: give at least 1");
                }
                Ok(ExecutorConfig::Local { jobs: self.jobs })
            }
            ExecutorKind::Slurm => {
                if self.jobs != 1 {
                    bail!("--jobs is for the local executor; on Slurm use --max-parallel");
                }
                let mut s = file.cloned().unwrap_or_default();
                let set = |dst: &mut Option<String>, v: &Option<String>| {
                    if v.is_some() {
                        dst.clone_from(v);
                    }
                };
                set(&mut s.partition, &self.partition);
                set(&mut s.time, &self.time);
                set(&mut s.mem, &self.mem);
                set(&mut s.gres, &self.gres);
                set(&mut s.account, &self.account);
                if let Some(c) = self.cpus_per_task {
                    s.cpus_per_task = Some(c);
                }
                if let Some(m) = self.max_parallel {
                    s.max_parallel = m;
                }
                if let Some(a) = self.attempts {
                    if a == 0 {
                        bail!("--attempts 0: give at least 1");
                    }
                    s.attempts = a;
                }
                s.extra_args.extend(self.sbatch_args.iter().cloned());
                Ok(ExecutorConfig::Slurm(s))
            }
        }
    }
}

/// `lethe run-job`
#[derive(Debug, Args)]
pub struct RunJobArgs {
    /// The unit's spec file (written by a study or an attack for its executor).
    pub spec: PathBuf,
}

/// Runs `lethe run-job SPEC`: the unit, its outcome written beside the spec;
/// fails (exit status 1) when the unit failed.
pub fn run_job(args: &RunJobArgs) -> anyhow::Result<()> {
    let result = super::unit::run_unit_file(&args.spec)?;
    if !result.ok {
        bail!("{}", result.message);
    }
    Ok(())
}

/// A flag raised by SIGINT or SIGTERM, for commands that must clean up what
/// runs elsewhere (Slurm tasks, local unit processes) before they exit; a
/// second signal ends the process at once.
pub fn cancel_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FLAG: std::sync::OnceLock<std::sync::Arc<AtomicBool>> = std::sync::OnceLock::new();
    extern "C" fn on_signal(sig: libc::c_int) {
        if let Some(f) = FLAG.get()
            && f.swap(true, Ordering::SeqCst)
        {
            // SAFETY: restoring the default action and re-raising are
            // async-signal-safe.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
    }
    let flag = FLAG.get_or_init(|| std::sync::Arc::new(AtomicBool::new(false)));
    // SAFETY: the handler only touches an atomic and async-signal-safe calls.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::sync::Arc::clone(flag)
}
