//! The retrain cache. Exact retraining is the most expensive run of a study and
//! the same for every method compared with it, so its result is kept and
//! reused by later requests with the same
//!
//! * checkpoint (SHA-256 of the file),
//! * dataset (SHA-256 of the file, or of a folder's file manifest),
//! * forget set (SHA-256 of its sorted stable indices),
//! * seed (the job seed; the plugin's own `seed` parameter is in its params),
//! * retrain plugin id and version, and its complete parameters,
//! * device kind (`cpu` or `cuda`: their results differ in the last bits).
//!
//! Layout: `<cache>/retrain/<key>/` holds the retrain job's output folder as
//! the worker wrote it (`model.safetensors`, `summary.json`, ...) plus
//! `entry.json` ([`CacheEntry`]). An entry is built in a hidden scratch folder
//! and renamed into place when complete, so a crash never leaves a half entry
//! under a key. Entries are never modified; delete a folder to drop it.
//!
//! Default location: `.lethe-cache` in the folder that holds the output folder
//! (for the default `runs/…` outputs, `runs/.lethe-cache`), so the studies and
//! deletion runs of one workspace share it; `--cache DIR` picks another.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StudyError;
use super::hash::{json_sha256, path_sha256, weights_sha256};
use super::results::read_json;
use crate::jobs::atomic::write_atomic;
use crate::worker::protocol::DescriptorInfo;
use crate::worker::{FromWorker, Job, JobOutcome, WorkerOptions, spawn_worker};

/// The entry file inside a cache folder.
pub const ENTRY_FILE: &str = "entry.json";
/// The model file a method's output folder holds.
pub const MODEL_FILE: &str = "model.safetensors";

/// Everything a retrain result depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrainKey {
    /// SHA-256 of the checkpoint file.
    pub checkpoint_sha256: String,
    /// SHA-256 of the dataset.
    pub data_sha256: String,
    /// SHA-256 of the forget set's sorted stable indices.
    pub forget_sha256: String,
    /// Job seed.
    pub seed: u64,
    /// Retrain plugin id.
    pub method_id: String,
    /// Its version.
    pub method_version: String,
    /// Its complete parameters (defaults filled in).
    pub params: Value,
    /// `cpu` or `cuda`.
    pub device: String,
}

impl RetrainKey {
    /// The key's digest: SHA-256 of its canonical JSON, the entry's folder name.
    pub fn digest(&self) -> String {
        json_sha256(&serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

/// `entry.json`: a finished retrain result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// What it was trained from.
    pub key: RetrainKey,
    /// [`RetrainKey::digest`].
    pub digest: String,
    /// SHA-256 of `model.safetensors`.
    pub model_sha256: String,
    /// SHA-256 of its tensors.
    pub weights_sha256: String,
    /// Wall time of the retrain job.
    pub seconds: f64,
    /// When it was stored.
    pub created_unix: u64,
    /// Lethe version that trained it.
    pub lethe_version: String,
}

/// A result from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The entry's folder.
    pub dir: PathBuf,
    /// Its record.
    pub entry: CacheEntry,
    /// True when the result was already there (nothing was trained).
    pub reused: bool,
}

impl Cached {
    /// The cached model file.
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }
}

/// A cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrainCache {
    dir: PathBuf,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RetrainCache {
    /// The cache in `dir` (created when first stored to).
    pub fn new(dir: impl Into<PathBuf>) -> RetrainCache {
        RetrainCache { dir: dir.into() }
    }

    /// The default cache for outputs written to `out`: `.lethe-cache` beside it.
    pub fn default_for(out: &Path) -> RetrainCache {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        RetrainCache::new(parent.join(".lethe-cache"))
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_dir(&self, digest: &str) -> PathBuf {
        self.dir.join("retrain").join(digest)
    }

    /// The entry stored under `key`, checked against it and against its model's
    /// hash; `None` when there is none.
    pub fn lookup(&self, key: &RetrainKey) -> Result<Option<Cached>, StudyError> {
        let dir = self.entry_dir(&key.digest());
        let path = dir.join(ENTRY_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let entry: CacheEntry = read_json(&path)?;
        let damaged = |why: String| StudyError::Stored {
            path: dir.clone(),
            message: format!("damaged retrain cache entry ({why}); delete this folder to retrain"),
        };
        if &entry.key != key {
            return Err(damaged("its settings differ from its key".into()));
        }
        let model = dir.join(MODEL_FILE);
        let sha = path_sha256(&model).map_err(|e| damaged(format!("{MODEL_FILE}: {e}")))?;
        if sha != entry.model_sha256 {
            return Err(damaged(format!("{MODEL_FILE} changed since it was stored")));
        }
        Ok(Some(Cached {
            dir,
            entry,
            reused: true,
        }))
    }

    /// A fresh scratch folder inside the cache for a job's output (not yet
    /// created: the worker creates it).
    fn scratch(&self, digest: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.dir.join("retrain").join(format!(
            ".tmp-{}-{}-{nanos}",
            &digest[..16.min(digest.len())],
            std::process::id()
        ))
    }

    /// Stores the finished output folder `produced` (a scratch folder of this
    /// cache) under `key`: writes `entry.json` into it and renames it into
    /// place. If another process stored the same key meanwhile, its entry wins
    /// and `produced` is removed.
    fn store(&self, key: &RetrainKey, produced: &Path, seconds: f64) -> Result<Cached, StudyError> {
        let model = produced.join(MODEL_FILE);
        let entry = CacheEntry {
            key: key.clone(),
            digest: key.digest(),
            model_sha256: path_sha256(&model).map_err(|e| StudyError::io(&model, e))?,
            weights_sha256: weights_sha256(&model).map_err(|e| StudyError::io(&model, e))?,
            seconds,
            created_unix: unix_now(),
            lethe_version: env!("CARGO_PKG_VERSION").into(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| StudyError::io(produced, e))?;
        let entry_file = produced.join(ENTRY_FILE);
        write_atomic(&entry_file, &json, false).map_err(|e| StudyError::io(&entry_file, e))?;
        let dir = self.entry_dir(&entry.digest);
        if std::fs::rename(produced, &dir).is_err() {
            if let Some(theirs) = self.lookup(key)? {
                let _ = std::fs::remove_dir_all(produced);
                return Ok(Cached {
                    reused: false,
                    ..theirs
                });
            }
            return Err(StudyError::io(
                &dir,
                format!(
                    "cannot move the new entry {} into place",
                    produced.display()
                ),
            ));
        }
        Ok(Cached {
            dir,
            entry,
            reused: false,
        })
    }
}

/// A retrain request.
#[derive(Debug, Clone)]
pub struct RetrainRequest {
    /// The plugin library.
    pub library: PathBuf,
    /// Its descriptor.
    pub descriptor: DescriptorInfo,
    /// Complete parameters (validated, defaults filled).
    pub params: Value,
    /// The original model.
    pub checkpoint: PathBuf,
    /// The dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// Job seed.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// The cache key (see [`RetrainRequest::key`]).
    pub key: RetrainKey,
}

impl RetrainRequest {
    /// The key of a request from the inputs' hashes.
    pub fn key(
        descriptor: &DescriptorInfo,
        params: &Value,
        hashes: &super::results::InputHashes,
        seed: u64,
        device: &str,
    ) -> RetrainKey {
        RetrainKey {
            checkpoint_sha256: hashes.checkpoint_sha256.clone(),
            data_sha256: hashes.data_sha256.clone(),
            forget_sha256: hashes.forget_sha256.clone(),
            seed,
            method_id: descriptor.id.clone(),
            method_version: descriptor.version.clone(),
            params: params.clone(),
            device: if device.starts_with("cuda") {
                "cuda".into()
            } else {
                device.into()
            },
        }
    }
}

/// Runs a method job (`Job::Unlearn`) in a worker to its end: the wall time on
/// success, else what went wrong with the worker's log.
pub fn run_method_job(
    worker: &WorkerOptions,
    job: Job,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> Result<f64, String> {
    let id = match &job {
        Job::Unlearn { id, .. } => id.clone(),
        _ => "job".into(),
    };
    let handle =
        spawn_worker(worker, job, on_event).map_err(|e| format!("cannot start the worker: {e}"))?;
    let report = handle.wait();
    match report.outcome {
        JobOutcome::Succeeded(_) => Ok(report.elapsed.as_secs_f64()),
        other => {
            let tail = report.stderr_tail.trim();
            Err(if tail.is_empty() {
                format!("{id} {other}")
            } else {
                format!("{id} {other}\nworker log:\n{tail}")
            })
        }
    }
}

/// The retrain result for `req`: from the cache when it holds one (nothing
/// runs), else trained in a worker and stored.
pub fn retrain_cached(
    cache: &RetrainCache,
    req: &RetrainRequest,
    worker: &WorkerOptions,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> Result<Cached, StudyError> {
    if let Some(hit) = cache.lookup(&req.key)? {
        return Ok(hit);
    }
    let digest = req.key.digest();
    let scratch = cache.scratch(&digest);
    std::fs::create_dir_all(scratch.parent().unwrap_or(cache.dir()))
        .map_err(|e| StudyError::io(cache.dir(), e))?;
    let job = Job::Unlearn {
        library: req.library.clone(),
        id: req.descriptor.id.clone(),
        params: req.params.clone(),
        checkpoint: req.checkpoint.clone(),
        data: req.data.clone(),
        forget: req.forget.clone(),
        train_rows: None,
        out_dir: scratch.clone(),
        seed: req.seed,
        device: req.device.clone(),
    };
    let seconds = match run_method_job(worker, job, on_event) {
        Ok(s) => s,
        Err(message) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(StudyError::Job {
                what: format!("retraining (seed {})", req.seed),
                message,
            });
        }
    };
    if !scratch.join(MODEL_FILE).is_file() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(StudyError::Job {
            what: format!("retraining (seed {})", req.seed),
            message: format!("{} saved no model", req.descriptor.id),
        });
    }
    cache.store(&req.key, &scratch, seconds)
}

/// Makes `to` (a new folder) hold the files of `from`, as hard links where the
/// file system allows (the cache and the outputs share a disk), else copies.
pub fn link_folder(from: &Path, to: &Path) -> Result<(), StudyError> {
    if to.exists() {
        return Err(StudyError::io(
            to,
            "already exists; results are never written over",
        ));
    }
    std::fs::create_dir_all(to).map_err(|e| StudyError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| StudyError::io(from, e))? {
        let src = entry.map_err(|e| StudyError::io(from, e))?.path();
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = to.join(name);
        if src.is_dir() {
            link_folder(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| StudyError::io(&dst, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(seed: u64) -> RetrainKey {
        RetrainKey {
            checkpoint_sha256: "c".into(),
            data_sha256: "d".into(),
            forget_sha256: "f".into(),
            seed,
            method_id: "org.lethe.baseline.retrain".into(),
            method_version: "0.1.0".into(),
            params: json!({"epochs": 2, "lr": 0.1}),
            device: "cpu".into(),
        }
    }

    #[test]
    fn every_setting_changes_the_key() {
        let base = key(0);
        let mut variants = vec![key(1)];
        let mut k = base.clone();
        k.params = json!({"epochs": 3, "lr": 0.1});
        variants.push(k);
        let mut k = base.clone();
        k.forget_sha256 = "g".into();
        variants.push(k);
        let mut k = base.clone();
        k.device = "cuda".into();
        variants.push(k);
        for v in variants {
            assert_ne!(v.digest(), base.digest(), "{v:?}");
        }
        let mut same = base.clone();
        same.params = json!({"lr": 0.1, "epochs": 2});
        assert_eq!(same.digest(), base.digest(), "key order does not matter");
    }

    #[test]
    fn a_stored_entry_is_found_checked_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RetrainCache::new(dir.path().join("cache"));
        let k = key(0);
        assert_eq!(cache.lookup(&k).unwrap(), None);
        let scratch = cache.scratch(&k.digest());
        std::fs::create_dir_all(&scratch).unwrap();
        // Any safetensors file will do as the "model".
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
        crate::checkpoint::save_tensors(
            &scratch.join(MODEL_FILE),
            &[("w".into(), t)],
            &crate::checkpoint::CheckpointMeta::new(None, None),
            false,
        )
        .unwrap();
        let stored = cache.store(&k, &scratch, 12.5).unwrap();
        assert!(!stored.reused && !scratch.exists());
        let hit = cache.lookup(&k).unwrap().unwrap();
        assert!(hit.reused);
        assert_eq!(hit.entry, stored.entry);
        assert_eq!(hit.entry.seconds, 12.5);
        assert_eq!(cache.lookup(&key(1)).unwrap(), None);
        // A tampered model is refused, not silently reused.
        std::fs::write(hit.model(), b"x").unwrap();
        let e = cache.lookup(&k).unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains(&k.digest()), "{e}");
        // Linking refuses an existing target.
        let out = dir.path().join("out");
        link_folder(&hit.dir, &out).unwrap();
        assert!(out.join(ENTRY_FILE).is_file());
        assert!(link_folder(&hit.dir, &out).is_err());
    }

    #[test]
    fn the_default_cache_sits_beside_the_output_folder() {
        assert_eq!(
            RetrainCache::default_for(Path::new("runs/study-demo")).dir(),
            Path::new("runs/.lethe-cache")
        );
        assert_eq!(
            RetrainCache::default_for(Path::new("out")).dir(),
            Path::new("./.lethe-cache")
        );
    }
}
