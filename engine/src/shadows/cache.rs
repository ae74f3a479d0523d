//! Where shadow models' logits are kept between runs: one folder per cache key
//! (`<root>/<key>/`) holding `spec.json` (what the key hashes, for people) and
//! one `model-<k>.safetensors` per model with its logits on every dataset
//! sample (`logits`, float `[N, C]`) and its training half (`members`, u8
//! `[N]`), and, where the models are unlearned too (U-LiRA), its checkpoint
//! `weights-<k>.safetensors`; the unlearned copies live in a set of their own
//! (see [`super::unlearn`]). Files are written atomically as each model finishes, so a cancelled
//! run keeps what it trained; a file that does not match its plan is ignored
//! and trained again.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::ShadowError;
use crate::checkpoint::{self, CheckpointMeta};

/// Environment variable naming the cache folder (the worker reads it).
pub const SHADOW_CACHE_ENV: &str = "LETHE_SHADOW_CACHE";
/// Environment variable that makes the worker's `lethe.shadow/1` estimate the
/// cost and stop instead of training (`lethe attack --estimate`).
pub const SHADOW_ESTIMATE_ENV: &str = "LETHE_SHADOW_ESTIMATE_ONLY";

/// `$LETHE_SHADOW_CACHE`, else `$XDG_CACHE_HOME/lethe/shadows`, else
/// `~/.cache/lethe/shadows`, else a folder in the system's temp folder.
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(SHADOW_CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lethe/shadows");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache/lethe/shadows");
    }
    std::env::temp_dir().join("lethe-shadows")
}

/// A shadow-model cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowCache {
    root: PathBuf,
}

fn cache_err(path: &Path, message: impl std::fmt::Display) -> ShadowError {
    ShadowError::Cache {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

impl ShadowCache {
    /// The cache under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ShadowCache { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one set of models.
    pub fn dir(&self, key: &str) -> PathBuf {
        self.root.join(key.get(..32).unwrap_or(key))
    }

    /// The file of model `k`.
    pub fn model_path(&self, key: &str, k: usize) -> PathBuf {
        self.dir(key).join(format!("model-{k:04}.safetensors"))
    }

    /// The checkpoint of model `k` (kept when its copies are to be unlearned).
    pub fn weights_path(&self, key: &str, k: usize) -> PathBuf {
        self.dir(key).join(format!("weights-{k:04}.safetensors"))
    }

    /// Model `k`'s checkpoint when the cache holds one of this plan.
    pub fn weights(&self, key: &str, k: usize) -> Option<PathBuf> {
        let path = self.weights_path(key, k);
        let ck = checkpoint::read(&path).ok()?;
        let noted = ck.meta.as_ref()?.provenance.notes.get("key")?;
        (noted == key).then_some(path)
    }

    /// Model `k`'s logits (`[rows, classes]`, float, CPU) when the cache holds
    /// it with exactly this training half; `None` otherwise (absent, unreadable
    /// or from another plan).
    pub fn load(&self, key: &str, k: usize, classes: i64, members: &[bool]) -> Option<Tensor> {
        let path = self.model_path(key, k);
        if !path.exists() {
            return None;
        }
        let ck = checkpoint::read(&path).ok()?;
        let noted = ck.meta.as_ref()?.provenance.notes.get("key")?;
        if noted != key {
            return None;
        }
        let logits = ck.state_dict.get("logits")?.shallow_clone();
        let stored = ck.state_dict.get("members")?;
        let rows = members.len() as i64;
        if logits.size() != [rows, classes] || stored.size() != [rows] {
            return None;
        }
        let stored = Vec::<u8>::try_from(stored.to_kind(Kind::Uint8)).ok()?;
        if stored.iter().zip(members).any(|(s, m)| (*s != 0) != *m) {
            return None;
        }
        Some(logits.to_kind(Kind::Float).to_device(Device::Cpu))
    }

    /// Number of models `0..models` the cache holds for this plan.
    pub fn count(&self, key: &str, models: usize) -> usize {
        (0..models)
            .filter(|&k| self.model_path(key, k).exists())
            .count()
    }

    /// Writes `spec.json` of a set (once; an existing one is kept).
    pub fn write_spec(&self, key: &str, spec: &serde_json::Value) -> Result<(), ShadowError> {
        let path = self.dir(key).join("spec.json");
        if path.exists() {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(spec).map_err(|e| cache_err(&path, e))?;
        crate::jobs::atomic::write_atomic(&path, &text, true).map_err(|e| cache_err(&path, e))
    }

    /// Stores model `k`'s logits and training half (replacing a stale file).
    pub fn store(
        &self,
        key: &str,
        k: usize,
        logits: &Tensor,
        members: &[bool],
        seconds: f64,
    ) -> Result<PathBuf, ShadowError> {
        let dir = self.dir(key);
        std::fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, e))?;
        let path = self.model_path(key, k);
        let mask: Vec<u8> = members.iter().map(|&m| u8::from(m)).collect();
        let mut meta = CheckpointMeta::new(None, Some("lethe shadow model logits".into()));
        let notes = &mut meta.provenance.notes;
        notes.insert("key".into(), key.to_string());
        notes.insert("model".into(), k.to_string());
        notes.insert("seconds".into(), format!("{seconds:.3}"));
        checkpoint::save_tensors(
            &path,
            &[
                (
                    "logits".into(),
                    logits
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu)
                        .contiguous(),
                ),
                ("members".into(), Tensor::from_slice(&mask)),
            ],
            &meta,
            true,
        )
        .map_err(|e| cache_err(&path, e))?;
        Ok(path)
    }
}
