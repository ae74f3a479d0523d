//! Shadow models that are trained and then *unlearned* with the method under
//! test: the reference distributions of U-LiRA (Hayes et al., "Inexact
//! Unlearning Needs More Careful Evaluations to Avoid a False Sense of
//! Privacy", SaTML 2025).
//!
//! For a request with an `unlearn` block, every shadow model `k` of the plan is
//! trained as for LiRA (its weights are kept beside its logits), then the
//! method runs on it in a worker process of its own, exactly as a deletion
//! runs: the model is the shadow, its training set is the shadow's half, its
//! forget set the unlearn targets inside that half. The unlearned copy's
//! logits are cached under a key of their own ([`UnlearnSetup::key`]), so
//! verifying the same deletion again trains and unlearns nothing.
//!
//! A target the shadow never trained on stays a non-member of the unlearned
//! copy ("retrained without it", as far as that sample goes), so per target the
//! unlearned shadows split into *unlearned-from-member* (IN) and
//! *never-member* (OUT) models: the two distributions U-LiRA compares.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::{ShadowError, TargetSpec};
use crate::worker::{FromWorker, Job, JobOutcome, WorkerOptions, spawn_worker};

/// Bumped whenever the meaning of a cached unlearned model changes.
const FORMAT: u32 = 1;

/// The unlearning every shadow model undergoes (the request's `unlearn` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowUnlearn {
    /// The request's targets each shadow model forgets when it trained on
    /// them. Targets not named here stay in the shadows' training sets.
    pub forget: Vec<TargetSpec>,
    /// The method's descriptor id; default: the one that made the attacked
    /// model (its checkpoint's provenance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The method's parameters; default: those the attacked model was made
    /// with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// The method of an `unlearn` block once the attack's worker found it: what
/// its shadow units on an executor run, without searching the plugin folders
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowMethod {
    /// Descriptor id.
    pub id: String,
    /// Descriptor version.
    pub version: String,
    /// The library.
    pub library: PathBuf,
    /// Full parameters.
    pub params: Value,
}

/// An `unlearn` block resolved against the job: which plugin runs, with what,
/// on which rows, and how its worker is started.
#[derive(Debug, Clone)]
pub struct UnlearnSetup {
    /// Method descriptor id.
    pub method: String,
    /// Its version.
    pub version: String,
    /// Its library.
    pub library: PathBuf,
    /// SHA-256 of the library (a rebuilt method is another method).
    pub library_sha256: String,
    /// Full parameters.
    pub params: Value,
    /// Dataset rows to forget where a shadow trained on them, sorted.
    pub forget_rows: Vec<i64>,
    /// The job's dataset file (the method's worker loads it again).
    pub data: PathBuf,
    /// Job seed (the split of a dataset without a recorded one).
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// How the method's workers are started.
    pub worker: WorkerOptions,
    /// Wall time of the deletion that made the attacked model and the size of
    /// its training set, when its run record says: the estimate scales it.
    pub reference: Option<(f64, usize)>,
}

impl UnlearnSetup {
    /// The method, for a shadow unit.
    pub fn method(&self) -> ShadowMethod {
        ShadowMethod {
            id: self.method.clone(),
            version: self.version.clone(),
            library: self.library.clone(),
            params: self.params.clone(),
        }
    }

    /// The cache key of the unlearned copies of the models keyed `base_key`,
    /// and what it hashes.
    pub fn key(&self, base_key: &str) -> (String, Value) {
        let mut rows = Sha256::new();
        for r in &self.forget_rows {
            rows.update(r.to_le_bytes());
        }
        let spec = json!({
            "format": FORMAT,
            "shadows": base_key,
            "method": {"id": self.method, "version": self.version, "library_sha256": self.library_sha256},
            "params": self.params,
            "forget": {"samples": self.forget_rows.len(), "sha256": format!("{:x}", rows.finalize())},
            "seed": self.seed,
        });
        let key = format!("{:x}", Sha256::digest(spec.to_string().as_bytes()));
        (key, spec)
    }

    /// The rows of `training` (a shadow's half) that it forgets.
    pub fn forget_of(&self, training: &[i64]) -> Vec<i64> {
        training
            .iter()
            .copied()
            .filter(|r| self.forget_rows.binary_search(r).is_ok())
            .collect()
    }

    /// Estimated seconds for one shadow's unlearning: the deletion's own wall
    /// time scaled to the shadow's training set, else `None`.
    pub fn seconds_per_model(&self, shadow_rows: usize) -> Option<f64> {
        let (seconds, rows) = self.reference?;
        (rows > 0).then(|| seconds * shadow_rows as f64 / rows as f64)
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ShadowError {
    ShadowError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs the method of `setup` on the shadow checkpoint `weights` (trained on
/// `training`, forgetting `forget`) in a worker, in the fresh folder `work`;
/// returns the unlearned checkpoint's path, or `None` when `cancelled` stopped
/// it. `progress` hears the method's progress lines.
pub fn run_method(
    setup: &UnlearnSetup,
    weights: &Path,
    training: &[i64],
    forget: &[i64],
    work: &Path,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Option<f64>, String),
) -> Result<Option<PathBuf>, ShadowError> {
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| io_err(work, e))?;
    }
    std::fs::create_dir_all(work).map_err(|e| io_err(work, e))?;
    let write = |name: &str, rows: &[i64]| -> Result<PathBuf, ShadowError> {
        let path = work.join(name);
        let text = serde_json::to_vec(rows).map_err(|e| io_err(&path, e))?;
        crate::jobs::atomic::write_atomic(&path, &text, false).map_err(|e| io_err(&path, e))?;
        Ok(path)
    };
    let forget_file = write("forget.json", forget)?;
    let train_file = write("train.json", training)?;
    let out_dir = work.join("out");
    let job = Job::Unlearn {
        library: setup.library.clone(),
        id: setup.method.clone(),
        params: setup.params.clone(),
        checkpoint: weights.to_path_buf(),
        data: setup.data.clone(),
        forget: forget_file,
        train_rows: Some(train_file),
        out_dir: out_dir.clone(),
        seed: setup.seed,
        device: setup.device.clone(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn_worker(&setup.worker, job, move |e| {
        if let FromWorker::Progress {
            fraction, message, ..
        } = e
        {
            let _ = tx.send((fraction, message));
        }
    })
    .map_err(|e| {
        ShadowError::Request(format!("cannot start a worker for {}: {e}", setup.method))
    })?;
    let mut asked_to_stop = false;
    while !handle.is_finished() {
        while let Ok((f, m)) = rx.try_recv() {
            progress(f, m);
        }
        if !asked_to_stop && cancelled() {
            handle.cancel();
            asked_to_stop = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = handle.wait();
    match report.outcome {
        JobOutcome::Succeeded(_) => {}
        JobOutcome::Cancelled { .. } => return Ok(None),
        other => {
            let tail = report.stderr_tail.trim();
            return Err(ShadowError::Request(format!(
                "unlearning a shadow model with {}: {other}{}",
                setup.method,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("\nworker log:\n{tail}")
                }
            )));
        }
    }
    let model = out_dir.join("model.safetensors");
    if !model.is_file() {
        return Err(ShadowError::Request(format!(
            "{} saved no model when unlearning a shadow model (in {})",
            setup.method,
            out_dir.display()
        )));
    }
    Ok(Some(model))
}

/// The logits of the checkpoint `path` on every row of `images`, float, CPU.
pub fn logits_of(path: &Path, images: &Tensor, device: Device) -> Result<Tensor, ShadowError> {
    let loaded = crate::checkpoint::load_model(path, device, &Default::default())
        .map_err(|e| io_err(path, e))?;
    Ok(
        crate::train::supervised::predict_logits(&loaded.model, images, 512, device)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(rows: Vec<i64>) -> UnlearnSetup {
        UnlearnSetup {
            method: "org.example.m".into(),
            version: "1.0.0".into(),
            library: PathBuf::from("/x/libm.so"),
            library_sha256: "ab".into(),
            params: json!({"epochs": 2}),
            forget_rows: rows,
            data: PathBuf::from("d.npz"),
            seed: 3,
            device: "cpu".into(),
            worker: WorkerOptions::with_exe("/bin/false"),
            reference: Some((10.0, 2000)),
        }
    }

    #[test]
    fn a_shadow_forgets_the_targets_in_its_half_only() {
        let s = setup(vec![2, 5, 9]);
        assert_eq!(s.forget_of(&[1, 2, 3, 9, 10]), vec![2, 9]);
        assert!(s.forget_of(&[1, 3]).is_empty());
        assert_eq!(s.seconds_per_model(1000), Some(5.0));
    }

    #[test]
    fn the_key_follows_method_params_rows_and_base() {
        let a = setup(vec![2, 5, 9]);
        let k = a.key("base").0;
        assert_eq!(k, setup(vec![2, 5, 9]).key("base").0);
        assert_ne!(k, a.key("other").0);
        assert_ne!(k, setup(vec![2, 5]).key("base").0);
        let mut p = setup(vec![2, 5, 9]);
        p.params = json!({"epochs": 3});
        assert_ne!(k, p.key("base").0);
        let mut v = setup(vec![2, 5, 9]);
        v.library_sha256 = "cd".into();
        assert_ne!(k, v.key("base").0);
    }
}
