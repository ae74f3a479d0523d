//! Executors: where the independent units of heavy work run (the runs of a
//! study, the shadow models of an attack).
//!
//! Every unit is described by a [`UnitSpec`] written to a file; whichever
//! executor runs it, the unit itself is `lethe-cli run-job SPEC.json` (see
//! [`unit::run_unit_file`]), which writes `SPEC.result.json` when it ends. So
//! one unit runs identically in the coordinating process's own worker, as a
//! local child process, or as a Slurm array task on another node.
//!
//! * [`ExecutorConfig::Local`] with `jobs = N` runs up to `N` units at once as
//!   child processes of this machine ([`local`]).
//! * [`ExecutorConfig::Slurm`] submits the units of one stage as one job array
//!   (`sbatch --parsable --array=…%LIMIT`), follows it with `squeue`,
//!   re-submits tasks that end without a result (failed, killed, cancelled by
//!   someone else) up to [`SlurmSettings::attempts`] times, and cancels it with
//!   `scancel` when the user cancels ([`slurm`]). A coordinator that was killed
//!   re-attaches: tasks of the stage still queued are followed, not submitted
//!   again, and units with a result are not run again.
//!
//! Assumption (README, "Running on a cluster"): the stage folder, the study
//! folder, the caches, the data and the plugins are on a file system every
//! node sees at the same path.

pub mod cli;
pub mod local;
pub mod slurm;
pub mod unit;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use unit::{UnitResult, UnitSpec};

/// Environment variable through which a parent passes its executor (JSON of
/// [`ExecutorConfig`]) to a worker whose attack asks for shadow models.
pub const EXECUTOR_ENV: &str = "LETHE_EXECUTOR";

/// Where units run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "executor", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// On this machine, up to `jobs` units at once (1: one after another, in
    /// the calling process's own workers, as before executors existed).
    Local {
        /// Units at once.
        jobs: usize,
    },
    /// On a Slurm cluster, one job array per stage.
    Slurm(SlurmSettings),
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig::Local { jobs: 1 }
    }
}

impl ExecutorConfig {
    /// Whether units run in the calling process as they always did (local, one
    /// at a time), so no unit files are needed.
    pub fn is_inline(&self) -> bool {
        matches!(self, ExecutorConfig::Local { jobs } if *jobs <= 1)
    }

    /// In words, for logs: "this machine, 2 at a time", "Slurm (partition gpu)".
    pub fn describe(&self) -> String {
        match self {
            ExecutorConfig::Local { jobs } if *jobs <= 1 => "this machine, one at a time".into(),
            ExecutorConfig::Local { jobs } => format!("this machine, {jobs} at a time"),
            ExecutorConfig::Slurm(s) => match &s.partition {
                Some(p) => format!("Slurm (partition {p})"),
                None => "Slurm (default partition)".into(),
            },
        }
    }

    /// The executor a parent passed in [`EXECUTOR_ENV`], if any.
    pub fn from_env() -> Result<Option<ExecutorConfig>, ExecError> {
        match std::env::var(EXECUTOR_ENV) {
            Ok(v) if !v.trim().is_empty() => serde_json::from_str(&v)
                .map(Some)
                .map_err(|e| ExecError::Config(format!("{EXECUTOR_ENV}: {e}"))),
            _ => Ok(None),
        }
    }
}

/// How array tasks are submitted to Slurm. Every field but `attempts` and
/// `poll_seconds` becomes an `sbatch` option when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmSettings {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` per task, e.g. `01:00:00`.
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem` per task, e.g. `8G`.
    pub mem: Option<String>,
    /// `--gres` per task, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// Most tasks of the array running at once (`%LIMIT`); 0 = no limit.
    pub max_parallel: usize,
    /// Further `sbatch` arguments, passed as they are.
    pub extra_args: Vec<String>,
    /// Times a task is submitted before it counts as failed.
    pub attempts: usize,
    /// Seconds between two looks at the queue.
    pub poll_seconds: f64,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        SlurmSettings {
            partition: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            gres: None,
            account: None,
            max_parallel: 0,
            extra_args: Vec::new(),
            attempts: 3,
            poll_seconds: 2.0,
        }
    }
}

/// An executor could not run a stage. The message names the command or file.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executor's settings are unusable.
    #[error("executor: {0}")]
    Config(String),
    /// A file of the stage folder could not be written or read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A Slurm command (or a local process) could not be started or refused.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line, shortened.
        command: String,
        /// Its own message (stderr), or why it could not start.
        message: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ExecError {
    ExecError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One unit of a stage.
#[derive(Debug, Clone)]
pub struct Unit {
    /// In words, for logs: `FT, seed 1`, `shadow model 3`.
    pub name: String,
    /// What to run.
    pub spec: UnitSpec,
}

/// Units that run together (one job array on Slurm), with their files in
/// `dir`: `task-<i>.json` (the spec), `task-<i>.json.result.json` (its
/// outcome) and `task-<i>.log` (its output, every attempt appended).
#[derive(Debug, Clone)]
pub struct Stage {
    /// The stage folder (shared with the nodes on Slurm).
    pub dir: PathBuf,
    /// In words, for logs and the Slurm job name.
    pub name: String,
    /// The units.
    pub units: Vec<Unit>,
    /// The program that runs `run-job` (normally `lethe-cli` beside this one).
    pub program: PathBuf,
}

impl Stage {
    /// The spec file of unit `i`.
    pub fn spec_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("task-{i}.json"))
    }

    /// The log file of unit `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("task-{i}.log"))
    }

    /// Writes every unit's spec file (the same content on a resumed stage).
    fn write_specs(&self) -> Result<(), ExecError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        for (i, u) in self.units.iter().enumerate() {
            let path = self.spec_path(i);
            let json = serde_json::to_vec_pretty(&u.spec).map_err(|e| io_err(&path, e))?;
            if std::fs::read(&path).ok().as_deref() == Some(&json[..]) {
                continue;
            }
            crate::jobs::atomic::write_atomic(&path, &json, true).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }

    /// Unit `i`'s outcome, when it wrote one.
    pub fn result(&self, i: usize) -> Option<UnitResult> {
        UnitResult::load(&unit::result_path(&self.spec_path(i)))
    }

    /// The outcome so far (the results of units that already succeeded, on
    /// a resumed stage) and the units still to run, in order.
    fn outcome_so_far(&self) -> (StageOutcome, Vec<usize>) {
        let mut out = StageOutcome {
            results: vec![None; self.units.len()],
            ..StageOutcome::default()
        };
        let mut open = Vec::new();
        for i in 0..self.units.len() {
            match self.result(i) {
                Some(r) if r.ok => out.results[i] = Some(r),
                _ => open.push(i),
            }
        }
        (out, open)
    }

    fn clear_result(&self, i: usize) {
        let _ = std::fs::remove_file(unit::result_path(&self.spec_path(i)));
    }
}

/// What happened to the units of a stage, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum StageEvent {
    /// Units went out (`job` is the Slurm job id, `None` locally).
    Submitted {
        /// Unit numbers.
        units: Vec<usize>,
        /// Slurm job id.
        job: Option<String>,
        /// Attempt number (1 = first).
        attempt: usize,
    },
    /// Tasks of an earlier coordinator were found still queued and are followed.
    Reattached {
        /// Unit numbers.
        units: Vec<usize>,
    },
    /// A unit started running (on `host` when known).
    Running {
        /// Unit number.
        unit: usize,
        /// Where.
        host: Option<String>,
    },
    /// A unit finished and wrote its result.
    Finished {
        /// Unit number.
        unit: usize,
        /// Its result.
        result: UnitResult,
    },
    /// A unit ended without a usable result; it goes out again if `retry`.
    Failed {
        /// Unit number.
        unit: usize,
        /// Why, with the log path.
        message: String,
        /// Whether it is submitted again.
        retry: bool,
    },
}

/// The end of a stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOutcome {
    /// Each unit's result, by unit number (`None`: failed or cancelled).
    pub results: Vec<Option<UnitResult>>,
    /// Units that failed for good, with why and their log.
    pub failed: Vec<(usize, String)>,
    /// The user cancelled; nothing of the stage runs any more.
    pub cancelled: bool,
}

/// Runs `stage` on `config`; `cancelled` is polled while it waits, `on_event`
/// hears every change. Units whose result file already says they succeeded
/// are not run again.
pub fn run_stage(
    config: &ExecutorConfig,
    stage: &Stage,
    cancelled: &dyn Fn() -> bool,
    on_event: &mut dyn FnMut(StageEvent),
) -> Result<StageOutcome, ExecError> {
    stage.write_specs()?;
    match config {
        ExecutorConfig::Local { jobs } => local::run(stage, (*jobs).max(1), cancelled, on_event),
        ExecutorConfig::Slurm(s) => slurm::run(stage, s, cancelled, on_event),
    }
}

/// The program units run with: `lethe-cli` beside the running executable
/// when there is one (it needs no display libraries on a compute node), else
/// the running executable itself (both have `run-job`).
pub fn unit_program() -> Result<PathBuf, ExecError> {
    let me = std::env::current_exe()
        .map_err(|e| ExecError::Config(format!("cannot find this program's path: {e}")))?;
    let cli = me.with_file_name("lethe-cli");
    Ok(if cli.is_file() { cli } else { me })
}

/// A unit's message when it ended without a result: its log's last lines.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
