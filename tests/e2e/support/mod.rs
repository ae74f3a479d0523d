//! What the plugin e2e tests (baselines.rs, paper_methods.rs) share: the demo
//! files and split, finding a plugin's library, and running one of its methods
//! through a real `lethe-cli worker` as a user's job runs. Each test binary uses a
//! subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod studies;

use lethe_e2e::{require_binary, workspace_root};
use lethe_engine::checkpoint::{self, LoadOptions, LoadedModel};
use lethe_engine::data::{Dataset, ForgetSet};
use lethe_engine::train::augment::to_unit_float;
use lethe_engine::worker::{FromWorker, Job, JobOutcome, WorkerOptions, run_job};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// The job seed every run here uses (split shuffles, loader orders).
pub const JOB_SEED: u64 = 1;

pub fn demo_dir() -> PathBuf {
    workspace_root().join("resources/demo")
}

pub fn checkpoint_of(model: &str) -> PathBuf {
    demo_dir().join(format!("{model}.safetensors"))
}

/// `lib<crate>.so` of a plugin crate (`lethe_baseline_…`, `lethe_method_…`): the
/// one cargo just rebuilt for this test (the plugins are dev-dependencies, built
/// into `deps/`), else the copy a workspace build leaves in the profile folder.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    let file = format!("lib{}.so", crate_name.replace('-', "_"));
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().join(&file);
    if deps.exists() {
        deps
    } else {
        require_binary(&file)
    }
}

/// One finished worker job.
pub struct Run {
    pub _dir: tempfile::TempDir,
    pub artifacts: HashMap<String, PathBuf>,
    /// Every progress metrics object, in order.
    pub metrics: Vec<Value>,
    /// Every progress report's fraction (`None`: unknown) and message, in order.
    pub progress: Vec<(Option<f64>, String)>,
    pub summary: Value,
    pub seconds: f64,
}

impl Run {
    pub fn model(&self) -> &Path {
        &self.artifacts["model"]
    }

    pub fn tensor(&self, name: &str) -> Tensor {
        let path = &self.artifacts[name];
        let tensors = Tensor::read_safetensors(path).unwrap();
        tensors
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{} has no tensor {name}", path.display()))
            .1
    }

    pub fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(&self.artifacts[name]).unwrap()).unwrap()
    }

    /// The metrics of each epoch report (those with an `epoch` key).
    pub fn epochs(&self) -> Vec<&Value> {
        self.metrics
            .iter()
            .filter(|m| m.get("epoch").is_some())
            .collect()
    }

    /// Every epoch report carries finite values for `keys`.
    pub fn assert_reports(&self, keys: &[&str]) {
        let epochs = self.epochs();
        assert!(!epochs.is_empty(), "no epoch reports: {:?}", self.metrics);
        for m in epochs {
            for k in keys {
                let v = m[k].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite(), "{k} in {m}");
            }
        }
    }
}

/// The unlearning job `id` from `library` over `checkpoint`, the demo data and
/// `forget`, on the CPU, writing into `out`.
pub fn job(
    library: PathBuf,
    id: &str,
    checkpoint: &Path,
    forget: &Path,
    params: Value,
    out: &Path,
) -> Job {
    Job::Unlearn {
        library,
        id: id.to_string(),
        params,
        checkpoint: checkpoint.to_path_buf(),
        data: demo_dir().join("mnist10k.npz"),
        forget: forget.to_path_buf(),
        train_rows: None,
        out_dir: out.to_path_buf(),
        seed: JOB_SEED,
        device: "cpu".into(),
    }
}

/// Worker options: the built `lethe-cli`, killed after `timeout`.
pub fn options(timeout: Duration) -> WorkerOptions {
    let mut opts = WorkerOptions::with_exe(require_binary("lethe-cli"));
    opts.timeout = Some(timeout);
    opts
}

/// Runs a job to success (a failure panics with the worker's log) and collects
/// its artifacts (all inside `out`), progress metrics and `summary` result.
pub fn run_to_success(
    opts: &WorkerOptions,
    job: Job,
    out: &Path,
    dir: tempfile::TempDir,
    what: &str,
) -> Run {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let start = Instant::now();
    let report = run_job(opts, job, move |e| sink.lock().unwrap().push(e)).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    if !matches!(report.outcome, JobOutcome::Succeeded(_)) {
        panic!("{what} failed: {}\n{}", report.outcome, report.stderr_tail);
    }
    let events = events.lock().unwrap().clone();
    let mut artifacts = HashMap::new();
    let mut metrics = Vec::new();
    let mut progress = Vec::new();
    for e in events {
        match e {
            FromWorker::Artifact { name, path } => {
                assert!(path.starts_with(out), "{}", path.display());
                artifacts.insert(name, path);
            }
            FromWorker::Progress {
                fraction,
                message,
                metrics: m,
            } => {
                progress.push((fraction, message));
                metrics.extend(m);
            }
            _ => {}
        }
    }
    let summary = artifacts
        .get("summary")
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .unwrap_or(Value::Null);
    eprintln!("{what}: {seconds:.1} s, summary {summary}");
    Run {
        _dir: dir,
        artifacts,
        metrics,
        progress,
        summary,
        seconds,
    }
}

/// The demo data with the job's split (the same the worker derives).
pub struct Demo {
    pub data: Dataset,
    pub train: Vec<i64>,
    pub forget: Vec<i64>,
    pub retain: Vec<i64>,
    pub test: Vec<i64>,
}

pub fn demo() -> Demo {
    let data = lethe_engine::data::load(&demo_dir().join("mnist10k.npz")).unwrap();
    let split = lethe_engine::jobs::train::split_of(&data, JOB_SEED).unwrap();
    let forget =
        ForgetSet::from_list_file(&demo_dir().join("forget.txt"), data.len(), &split.train)
            .unwrap();
    Demo {
        retain: forget.retain(&split.train),
        forget: forget.indices().to_vec(),
        train: split.train.clone(),
        test: split.test.clone(),
        data,
    }
}

impl Demo {
    /// Images in [0, 1] and int64 labels of `rows`.
    pub fn batch(&self, rows: &[i64]) -> (Tensor, Tensor) {
        let pick = Tensor::from_slice(rows);
        (
            to_unit_float(&self.data.images().index_select(0, &pick)),
            self.data
                .labels()
                .index_select(0, &pick)
                .to_kind(Kind::Int64),
        )
    }
}

pub fn load(path: &Path) -> LoadedModel {
    checkpoint::load_model(path, Device::Cpu, &LoadOptions::default()).unwrap()
}
