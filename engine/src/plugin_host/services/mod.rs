//! The job host a plugin instance really runs against: [`EngineServices`] offers
//! the `lethe.model/1`, `lethe.data/1` and `lethe.result/1` extensions over a
//! built-in model ([`LoadedModel`]), a [`Dataset`] with the job's forget / retain /
//! validation / test positions, and an output folder.
//!
//! Everything is also callable from Rust ([`EngineServices::forward`],
//! [`EngineServices::open_loader`], [`EngineServices::save_model`], ...); the C
//! vtables in `ffi` are thin wrappers, so the worker and the tests see exactly
//! what a plugin sees.
//!
//! # Ownership
//!
//! * **Parameters** are shallow clones of the `VarStore`'s variables: the handle a
//!   plugin receives shares storage *and* autograd metadata with the host model,
//!   so `backward` fills their `.grad()` and an in-place optimizer step updates the
//!   model the host later saves. The plugin owns each returned handle and frees it
//!   with `lethe.tensor/1` (the SDK does this at once, keeping its own clone).
//! * **Forward outputs and batches** are fresh tensors owned by the plugin on the
//!   same terms.
//! * **Loaders** are host-owned: the opaque pointer is a key into the host's table,
//!   not an address, so a stale or doubly-closed loader is an error, not memory
//!   corruption.
//! * **Arguments** (`forward` input, `put_tensor` tensor) are borrowed for the call;
//!   `put_tensor` copies to a file before returning.

mod ffi;
mod probe;
mod shadow;

pub use shadow::ShadowSettings;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lethe_plugin_api::sdk::LogLevel;
use serde_json::Value;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use super::HostServices;
use crate::checkpoint::{self, CheckpointMeta, LoadedModel};
use crate::data::{Dataset, SplitMix64};
use crate::models::{ArchConfig, Model};
use crate::train::augment::{AugmentConfig, to_unit_float};
use crate::train::prune::{Mask, SPARSITY_NOTE, Sparsity};

/// Why a service call failed. The message is what the plugin reads from
/// `last_error`, so it says what to do differently.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The model has no such head (e.g. logits from an encoder).
    #[error("{0}")]
    NoSuchHead(String),
    /// The job has no such split.
    #[error("the job has no {0} split")]
    NoSuchSplit(&'static str),
    /// A bad argument (zero batch size, unknown loader, bad name, wrong device).
    #[error("{0}")]
    InvalidArgument(String),
    /// libtorch refused an operation (shape, dtype or device problem).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Writing a result failed (or would have replaced a file it must not).
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// Writing a JSON result failed.
    #[error("{0}")]
    Write(#[from] crate::jobs::JobError),
    /// The setup handed to [`EngineServices::new`] is inconsistent.
    #[error("invalid job setup: {0}")]
    Setup(String),
    /// Shadow models could not be provided (`lethe.shadow/1`).
    #[error(transparent)]
    Shadow(#[from] crate::shadows::ShadowError),
    /// The linear probe could not be provided (`lethe.probe/1`).
    #[error(transparent)]
    Probe(#[from] crate::train::probe::ProbeError),
    /// A call out of order (shadow logits before `prepare`).
    #[error("{0}")]
    BadState(String),
    /// The sparse model's mask could not be read or kept.
    #[error("pruning mask: {0}")]
    Mask(#[from] crate::train::TrainError),
}

/// One of the job's data splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataSplit {
    /// The examples to forget.
    Forget,
    /// The training examples to keep.
    Retain,
    /// Held-out validation examples.
    Validation,
    /// Test examples.
    Test,
}

impl DataSplit {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            DataSplit::Forget => "forget",
            DataSplit::Retain => "retain",
            DataSplit::Validation => "validation",
            DataSplit::Test => "test",
        }
    }
}

/// Which part of the model [`EngineServices::forward`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    /// Backbone features.
    Encoder,
    /// Class logits (classifiers only).
    Classifier,
    /// Projection-head embedding (encoders with a head only).
    Projection,
}

/// Positions (rows of the [`Dataset`], not stable indices) of each split; `None`
/// where the job has no such split.
#[derive(Debug, Clone, Default)]
pub struct SplitPositions {
    /// Rows to forget.
    pub forget: Option<Vec<i64>>,
    /// Training rows to keep.
    pub retain: Option<Vec<i64>>,
    /// Validation rows.
    pub validation: Option<Vec<i64>>,
    /// Test rows.
    pub test: Option<Vec<i64>>,
}

impl SplitPositions {
    fn get(&self, split: DataSplit) -> Option<&Vec<i64>> {
        match split {
            DataSplit::Forget => self.forget.as_ref(),
            DataSplit::Retain => self.retain.as_ref(),
            DataSplit::Validation => self.validation.as_ref(),
            DataSplit::Test => self.test.as_ref(),
        }
    }
}

/// Which plugin the job runs, recorded in the saved checkpoint's provenance.
#[derive(Debug, Clone, Default)]
pub struct JobInfo {
    /// Descriptor id, e.g. `org.example.gradient-ascent`.
    pub plugin_id: String,
    /// Descriptor version.
    pub plugin_version: String,
    /// The full (validated, defaults filled) parameters.
    pub params: Value,
    /// The checkpoint the model was loaded from; never overwritten.
    pub original_checkpoint: Option<PathBuf>,
}

/// What a job produced, in the output folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// What it is.
    pub kind: ArtifactKind,
    /// The plugin's name for it (`model` for the checkpoint).
    pub name: String,
    /// Where it was written.
    pub path: PathBuf,
}

/// Kinds of [`Artifact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// The unlearned model (Lethe safetensors checkpoint).
    Model,
    /// A tensor result (safetensors file with one tensor named after it).
    Tensor,
    /// A JSON result.
    Json,
}

/// What the services report to whoever runs the job (the worker forwards these
/// over its pipe).
#[derive(Debug, Clone)]
pub enum ServiceEvent {
    /// A plugin log line.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        message: String,
    },
    /// A plugin progress report.
    Progress {
        /// In `[0, 1]`, `None` when unknown.
        fraction: Option<f64>,
        /// Status line.
        message: String,
        /// The plugin's metrics object, if valid JSON.
        metrics: Option<Value>,
    },
    /// A result file was written.
    Artifact(Artifact),
}

/// Receives [`ServiceEvent`]s; called from whatever thread the plugin reports on.
pub type EventSink = Arc<dyn Fn(ServiceEvent) + Send + Sync>;

/// One batch from a loader.
#[derive(Debug)]
pub struct Batch {
    /// Float images `[B, C, H, W]` in `[0, 1]` on the model's device (augmented on
    /// request).
    pub inputs: Tensor,
    /// int64 labels `[B]` on the model's device.
    pub labels: Tensor,
    /// The stable sample index of each row (see [`Dataset::indices`]).
    pub indices: Vec<i64>,
}

/// A loader's key; the opaque handle a plugin holds is this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoaderId(u64);

struct Loader {
    split: DataSplit,
    /// Dataset rows in the order they are served.
    order: Vec<i64>,
    cursor: usize,
    batch: usize,
    augment: bool,
}

/// State behind one lock: tch tensors are `Send` but not `Sync`, and the ABI's
/// model/data/result calls are \[main-thread\] anyway.
struct State {
    vs: tch::nn::VarStore,
    model: Model,
    train: bool,
    dataset: Dataset,
    /// Trainable parameters, sorted by name, with names kept alive for the ABI.
    params: Vec<(CString, Tensor)>,
    /// u8 images of the whole dataset on the model's device, uploaded on first use.
    images_on_device: Option<Tensor>,
    labels_on_device: Option<Tensor>,
    loaders: HashMap<u64, Loader>,
    next_loader: u64,
    /// Files this job wrote, so writing the same name again replaces its own file
    /// but never someone else's.
    written: Vec<Artifact>,
    /// Every row each split's loaders have served, so a test can prove what a
    /// method never looked at (retraining must never see a forget row).
    served: HashMap<DataSplit, BTreeSet<i64>>,
    /// A sparse original's pruned weights, held at zero by the host.
    mask: Option<Mask>,
    /// Pruned weights the method moved and the host set back to zero.
    mask_resets: i64,
}

/// The model, data and result services of one job; pass it (in an `Arc`) to
/// [`PluginLibrary::create`](super::PluginLibrary::create).
pub struct EngineServices {
    state: Mutex<State>,
    arch: ArchConfig,
    device: Device,
    splits: SplitPositions,
    augment: AugmentConfig,
    /// The augmentation the checkpoint records it was trained with.
    training_augment: Option<AugmentConfig>,
    /// The original training recipe as JSON (`{}` when unknown), NUL-terminated
    /// for the ABI, which lends it out for the life of the services.
    recipe: CString,
    seed: u64,
    output_dir: PathBuf,
    job: JobInfo,
    cancel: Arc<AtomicBool>,
    sink: Option<EventSink>,
    /// The attacked checkpoint's metadata: where shadow models find the recipe.
    meta: Option<CheckpointMeta>,
    /// The original's pruning record, when it is sparse.
    sparsity: Option<Sparsity>,
    shadow: ShadowSettings,
    shadow_state: Mutex<shadow::ShadowState>,
    /// Where `lethe.probe/1` keeps and finds probes.
    probe_cache: crate::train::probe::ProbeCache,
    probe_state: Mutex<probe::ProbeState>,
}

impl std::fmt::Debug for EngineServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineServices")
            .field("arch", &self.arch)
            .field("device", &self.device)
            .field("output_dir", &self.output_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a service call is caught at the ABI boundary; the state it
    // guards is still consistent (tensors and counters), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EngineServices {
    /// Services over `model` (on its `VarStore`'s device) and `dataset`, writing
    /// results into `output_dir` (created on first write).
    ///
    /// Augmentation defaults to crop + flip for colour images and crop only for
    /// grey ones (digits must not be mirrored); shuffles draw from `seed`.
    pub fn new(
        model: LoadedModel,
        dataset: Dataset,
        splits: SplitPositions,
        output_dir: impl Into<PathBuf>,
        job: JobInfo,
        seed: u64,
    ) -> Result<Self, ServiceError> {
        let n = dataset.len() as i64;
        for split in [
            DataSplit::Forget,
            DataSplit::Retain,
            DataSplit::Validation,
            DataSplit::Test,
        ] {
            if let Some(bad) = splits
                .get(split)
                .and_then(|p| p.iter().find(|&&i| i < 0 || i >= n))
            {
                return Err(ServiceError::Setup(format!(
                    "{} split has row {bad}, but the dataset has {n} rows",
                    split.name()
                )));
            }
        }
        let mut params: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        // A sparse original (its provenance records the pruning) keeps its zeros
        // whatever the method does: the host re-imposes them before every forward
        // pass, after a re-initialisation and before saving, as the reference's
        // `weight_orig * weight_mask` does for every method it runs.
        let sparsity = Sparsity::from_meta(model.meta.as_ref())?;
        let mask = match &sparsity {
            Some(record) => Some(Mask::from_zeros(&params, record)?),
            None => None,
        };
        let params = params
            .into_iter()
            .map(|(name, t)| (CString::new(name.replace('\0', "")).unwrap_or_default(), t))
            .collect();
        let augment = if dataset.channels() == 3 {
            AugmentConfig::crop_flip()
        } else {
            AugmentConfig::digits()
        };
        let meta = model.meta.clone();
        let recipe = training_recipe(model.meta.as_ref());
        let training_augment = recipe
            .get("augment")
            .and_then(|a| serde_json::from_value::<Option<AugmentConfig>>(a.clone()).ok())
            .flatten();
        let recipe = CString::new(recipe.to_string()).unwrap_or_default();
        let device = model.vs.device();
        Ok(EngineServices {
            state: Mutex::new(State {
                vs: model.vs,
                model: model.model,
                train: false,
                dataset,
                params,
                images_on_device: None,
                labels_on_device: None,
                loaders: HashMap::new(),
                next_loader: 1,
                written: Vec::new(),
                served: HashMap::new(),
                mask,
                mask_resets: 0,
            }),
            arch: model.arch,
            device,
            splits,
            augment,
            training_augment,
            recipe,
            seed,
            output_dir: output_dir.into(),
            job,
            cancel: Arc::new(AtomicBool::new(false)),
            sink: None,
            meta,
            sparsity,
            shadow: ShadowSettings::default(),
            shadow_state: Mutex::new(shadow::ShadowState::default()),
            probe_cache: crate::train::probe::ProbeCache::default(),
            probe_state: Mutex::new(probe::ProbeState::default()),
        })
    }

    /// Sends logs, progress and artifacts to `sink` (by default they are dropped).
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Uses `augment` for loaders opened with augmentation.
    pub fn with_augment(mut self, augment: AugmentConfig) -> Self {
        self.augment = augment;
        self
    }

    /// Uses `flag` behind `lethe.cancel/1` (the caller's own, so a cancel that
    /// came before the services existed is seen by the plugin's first check).
    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    /// The flag behind `lethe.cancel/1`; set it to ask the plugin to stop.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// The model's architecture.
    pub fn arch(&self) -> &ArchConfig {
        &self.arch
    }

    /// The compute device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The folder results go to.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// Every file written so far, in order (a name written twice appears once).
    pub fn artifacts(&self) -> Vec<Artifact> {
        lock(&self.state).written.clone()
    }

    /// Number of loaders opened and not yet closed.
    pub fn open_loaders(&self) -> usize {
        lock(&self.state).loaders.len()
    }

    /// Runs `f` on the model's `VarStore` (e.g. to compare weights after a run).
    pub fn with_var_store<R>(&self, f: impl FnOnce(&tch::nn::VarStore) -> R) -> R {
        f(&lock(&self.state).vs)
    }

    /// The original's pruning record, when it is a sparse model whose zeros the
    /// host keeps.
    pub fn sparsity(&self) -> Option<&Sparsity> {
        self.sparsity.as_ref()
    }

    /// Pruned weights the method has moved so far, each set back to zero.
    pub fn mask_resets(&self) -> i64 {
        lock(&self.state).mask_resets
    }

    /// Whether the model is in train mode.
    pub fn is_train(&self) -> bool {
        lock(&self.state).train
    }

    /// Switches train / eval mode.
    pub fn set_train(&self, train: bool) {
        lock(&self.state).train = train;
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        lock(&self.state).params.len()
    }

    /// Trainable parameter `index` (sorted by name): its name and a shallow clone
    /// sharing storage and gradient with the model's variable.
    pub fn parameter(&self, index: usize) -> Result<(String, Tensor), ServiceError> {
        let state = lock(&self.state);
        let (name, t) = state.params.get(index).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "parameter index {index} is out of range (the model has {})",
                state.params.len()
            ))
        })?;
        Ok((name.to_string_lossy().into_owned(), t.shallow_clone()))
    }

    /// Pointer to parameter `index`'s name, valid as long as `self` (the ABI
    /// promises that), with a shallow clone of the tensor.
    fn parameter_raw(
        &self,
        index: usize,
    ) -> Result<(*const std::ffi::c_char, Tensor), ServiceError> {
        let state = lock(&self.state);
        match state.params.get(index) {
            // The CString's heap buffer never moves: `params` is built once and
            // never modified, so the pointer outlives the lock guard.
            Some((name, t)) => Ok((name.as_ptr(), t.shallow_clone())),
            None => Err(ServiceError::InvalidArgument(format!(
                "parameter index {index} is out of range (the model has {})",
                state.params.len()
            ))),
        }
    }

    /// Runs `head` on `input` (float, on the model's device). Train/eval mode
    /// only picks dropout and batch-norm behaviour; whether autograd records a
    /// graph is the caller's grad mode (libtorch's thread-local switch, which a
    /// plugin sets with `tch::no_grad` for inference), so gradients of an
    /// eval-mode forward are available, as the reference code of Fisher,
    /// influence and SalUn takes them.
    pub fn forward(&self, head: Head, input: &Tensor) -> Result<Tensor, ServiceError> {
        if input.device() != self.device {
            return Err(ServiceError::InvalidArgument(format!(
                "forward input is on {:?} but the model is on {:?}; move it with `to_device` first",
                input.device(),
                self.device
            )));
        }
        if !input.is_floating_point() {
            return Err(ServiceError::InvalidArgument(format!(
                "forward input has dtype {:?}; the model takes floating-point images (batches from the data extension already are)",
                input.kind()
            )));
        }
        let mut state = lock(&self.state);
        keep_mask(&mut state)?;
        let train = state.train;
        let run = |m: &Model| -> Result<Tensor, ServiceError> {
            Ok(match (head, m) {
                (Head::Encoder, m) => m.features(input, train),
                (Head::Classifier, Model::Classifier(c)) => c.forward_t(input, train),
                (Head::Classifier, Model::Encoder(e)) => {
                    return Err(ServiceError::NoSuchHead(format!(
                        "the model ({}) is an encoder without a classifier, so it has no logits; ask for the encoder features{} instead",
                        self.arch,
                        // Only a model with a projection head has one to offer.
                        if e.head.is_some() {
                            " or the projection"
                        } else {
                            ""
                        }
                    )));
                }
                (Head::Projection, Model::Encoder(e)) if e.head.is_some() => {
                    e.forward_t(input, train)
                }
                (Head::Projection, _) => {
                    return Err(ServiceError::NoSuchHead(format!(
                        "the model ({}) has no projection head; ask for the encoder features{}",
                        self.arch,
                        if matches!(m, Model::Classifier(_)) {
                            " or the classifier logits"
                        } else {
                            ""
                        }
                    )));
                }
            })
        };
        run(&state.model)
    }

    /// Number of examples in `split`, `None` when the job has no such split.
    pub fn len(&self, split: DataSplit) -> Option<usize> {
        self.splits.get(split).map(Vec::len)
    }

    /// Opens a loader over `split` in batches of `batch_size` (the last may be
    /// shorter). Shuffled orders come from the job seed and the loader's number, so
    /// a run is reproducible; augmentation ([`AugmentConfig::apply`], on the device)
    /// draws from libtorch's generator, which the job seeds.
    pub fn open_loader(
        &self,
        split: DataSplit,
        batch_size: usize,
        shuffle: bool,
        augment: bool,
    ) -> Result<LoaderId, ServiceError> {
        if batch_size == 0 {
            return Err(ServiceError::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        let mut order = self
            .splits
            .get(split)
            .ok_or(ServiceError::NoSuchSplit(split.name()))?
            .clone();
        let mut state = lock(&self.state);
        let id = state.next_loader;
        state.next_loader += 1;
        if shuffle {
            // Golden-ratio stride decorrelates the streams of successive loaders.
            SplitMix64::new(self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        }
        state.loaders.insert(
            id,
            Loader {
                split,
                order,
                cursor: 0,
                batch: batch_size,
                augment,
            },
        );
        Ok(LoaderId(id))
    }

    /// The next batch of `loader`, `None` at the end of the epoch.
    pub fn next_batch(&self, loader: LoaderId) -> Result<Option<Batch>, ServiceError> {
        let mut state = lock(&self.state);
        let (rows, augment, split) = {
            let l = state.loaders.get_mut(&loader.0).ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "loader {} is not open (closed already, or never opened)",
                    loader.0
                ))
            })?;
            if l.cursor >= l.order.len() {
                return Ok(None);
            }
            let end = (l.cursor + l.batch).min(l.order.len());
            let rows = l.order[l.cursor..end].to_vec();
            l.cursor = end;
            (rows, l.augment, l.split)
        };
        state.served.entry(split).or_default().extend(&rows);
        if state.images_on_device.is_none() {
            state.images_on_device = Some(state.dataset.images().f_to_device(self.device)?);
            state.labels_on_device = Some(state.dataset.labels().f_to_device(self.device)?);
        }
        let (Some(images), Some(labels)) = (&state.images_on_device, &state.labels_on_device)
        else {
            return Err(ServiceError::Setup("dataset upload failed".into()));
        };
        let pick = Tensor::f_from_slice(&rows)?.f_to_device(self.device)?;
        let mut inputs = to_unit_float(&images.f_index_select(0, &pick)?);
        if augment {
            inputs = tch::no_grad(|| self.augment.apply(&inputs));
        }
        let labels = labels.f_index_select(0, &pick)?.f_to_kind(Kind::Int64)?;
        let stable = state.dataset.indices();
        let indices = rows
            .iter()
            .map(|&r| stable.get(r as usize).copied().unwrap_or(r))
            .collect();
        Ok(Some(Batch {
            inputs,
            labels,
            indices,
        }))
    }

    /// Closes `loader`; `false` when it was not open.
    pub fn close_loader(&self, loader: LoaderId) -> bool {
        lock(&self.state).loaders.remove(&loader.0).is_some()
    }

    /// Every dataset row (position, as in [`SplitPositions`]) that loaders of
    /// `split` have served so far, sorted.
    pub fn served_rows(&self, split: DataSplit) -> Vec<i64> {
        lock(&self.state)
            .served
            .get(&split)
            .map(|rows| rows.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A freshly augmented copy of `input` (float images in `[0, 1]` on the
    /// model's device).
    pub fn augment(&self, input: &Tensor, recipe: AugmentRecipe) -> Result<Tensor, ServiceError> {
        if input.device() != self.device {
            return Err(ServiceError::InvalidArgument(format!(
                "augment input is on {:?} but the model is on {:?}",
                input.device(),
                self.device
            )));
        }
        if !input.is_floating_point() || input.dim() != 4 {
            return Err(ServiceError::InvalidArgument(format!(
                "augment takes float images [B, C, H, W]; got {:?} of shape {:?}",
                input.kind(),
                input.size()
            )));
        }
        let config = match recipe {
            AugmentRecipe::Training => self.training_augment.as_ref().unwrap_or(&self.augment),
            AugmentRecipe::Contrastive => &AugmentConfig::contrastive(),
            AugmentRecipe::Light => &self.augment,
        };
        // The lock serialises libtorch generator use with the loaders' draws.
        let _state = lock(&self.state);
        Ok(tch::no_grad(|| config.apply(&input.detach())))
    }

    /// The original training recipe (JSON object; `{}` when the checkpoint
    /// records none).
    pub fn training_recipe(&self) -> Value {
        serde_json::from_slice(self.recipe.as_bytes()).unwrap_or_default()
    }

    /// Resets every parameter and buffer, in place, to a fresh initialisation of
    /// the architecture drawn from `seed`. Handles to parameters stay valid.
    pub fn reinitialize(&self, seed: u64) -> Result<(), ServiceError> {
        let state = lock(&self.state);
        let mut fresh = tch::nn::VarStore::new(self.device);
        tch::manual_seed(i64::from_ne_bytes(seed.to_ne_bytes()));
        Model::new(&fresh.root(), &self.arch)
            .map_err(|e| ServiceError::Setup(format!("cannot build a fresh {}: {e}", self.arch)))?;
        fresh.set_kind(state.vs.kind());
        let fresh_vars = fresh.variables();
        let mut ours = state.vs.variables();
        if fresh_vars.len() != ours.len() {
            return Err(ServiceError::Setup(format!(
                "a fresh {} has {} tensors, the loaded model {}",
                self.arch,
                fresh_vars.len(),
                ours.len()
            )));
        }
        tch::no_grad(|| -> Result<(), ServiceError> {
            for (name, t) in ours.iter_mut() {
                let new = fresh_vars.get(name).ok_or_else(|| {
                    ServiceError::Setup(format!("a fresh {} has no tensor `{name}`", self.arch))
                })?;
                t.f_copy_(new)?;
                let mut grad = t.grad();
                if grad.defined() {
                    let _ = grad.f_zero_()?;
                }
            }
            Ok(())
        })?;
        // Exact retraining of a sparse original retrains the sparse network, as
        // the reference's `retrain` with `--mask` does; a fresh draw is not drift.
        if let Some(m) = &state.mask {
            m.reimpose()?;
        }
        Ok(())
    }

    /// Saves the model in its current state to `<output>/model.safetensors` with
    /// provenance (plugin id, version, params, original checkpoint). Never replaces
    /// the original checkpoint or a file this job did not write itself.
    pub fn save_model(&self) -> Result<Artifact, ServiceError> {
        let path = self.output_dir.join("model.safetensors");
        if let Some(orig) = &self.job.original_checkpoint
            && same_file(orig, &path)
        {
            return Err(ServiceError::InvalidArgument(format!(
                "refusing to save over the original checkpoint {}; choose another output folder",
                orig.display()
            )));
        }
        let mut meta = CheckpointMeta::new(
            Some(self.arch.clone()),
            Some(format!("plugin {}", self.job.plugin_id)),
        );
        let notes = &mut meta.provenance.notes;
        notes.insert("plugin_id".into(), self.job.plugin_id.clone());
        notes.insert("plugin_version".into(), self.job.plugin_version.clone());
        notes.insert("params".into(), self.job.params.to_string());
        if let Some(orig) = &self.job.original_checkpoint {
            notes.insert("original_checkpoint".into(), orig.display().to_string());
        }
        self.ensure_output_dir()?;
        let mut state = lock(&self.state);
        keep_mask(&mut state)?;
        let kept = match (&self.sparsity, &state.mask) {
            (Some(record), Some(mask)) => {
                let summary = serde_json::json!({
                    "kept_by": "host",
                    "pruned_weights": mask.pruned()?,
                    "reset_weights": state.mask_resets,
                    "nonzero_pruned_weights": mask.moved()?,
                    "original": record,
                });
                meta.provenance.notes.insert(
                    SPARSITY_NOTE.into(),
                    serde_json::to_string(record).unwrap_or_default(),
                );
                meta.provenance
                    .notes
                    .insert("mask_kept".into(), summary.to_string());
                Some(summary)
            }
            _ => None,
        };
        let overwrite = state.written.iter().any(|a| a.path == path);
        checkpoint::save(&path, &state.vs, &meta, overwrite)?;
        let model = self.record(&mut state, ArtifactKind::Model, "model", path);
        if let Some(summary) = kept {
            self.emit(ServiceEvent::Log {
                level: LogLevel::Info,
                message: format!(
                    "sparse original: the host kept its {} pruned weights at zero ({} that the method moved were set back)",
                    summary["pruned_weights"], summary["reset_weights"]
                ),
            });
            let path = self.output_dir.join("sparsity.json");
            let mut text = serde_json::to_string_pretty(&summary).unwrap_or_default();
            text.push('\n');
            let overwrite = state.written.iter().any(|a| a.path == path);
            crate::jobs::atomic::write_atomic(&path, text.as_bytes(), overwrite)?;
            self.record(&mut state, ArtifactKind::Json, "sparsity", path);
        }
        Ok(model)
    }

    /// Writes `tensor` (copied to the CPU) to `<output>/<name>.safetensors` under
    /// the tensor name `name`.
    pub fn put_tensor(&self, name: &str, tensor: &Tensor) -> Result<Artifact, ServiceError> {
        check_name(name)?;
        let path = self.output_dir.join(format!("{name}.safetensors"));
        let copy = tensor
            .f_detach()?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?;
        let mut meta = CheckpointMeta::new(None, Some(format!("plugin {}", self.job.plugin_id)));
        meta.provenance
            .notes
            .insert("plugin_version".into(), self.job.plugin_version.clone());
        self.ensure_output_dir()?;
        let mut state = lock(&self.state);
        let overwrite = state.written.iter().any(|a| a.path == path);
        checkpoint::save_tensors(&path, &[(name.to_string(), copy)], &meta, overwrite)?;
        Ok(self.record(&mut state, ArtifactKind::Tensor, name, path))
    }

    /// Writes `json` (which must parse) pretty-printed to `<output>/<name>.json`.
    pub fn put_json(&self, name: &str, json: &str) -> Result<Artifact, ServiceError> {
        check_name(name)?;
        let value: Value = serde_json::from_str(json).map_err(|e| {
            ServiceError::InvalidArgument(format!("result `{name}` is not valid JSON: {e}"))
        })?;
        let path = self.output_dir.join(format!("{name}.json"));
        let mut text = serde_json::to_string_pretty(&value).map_err(|e| {
            ServiceError::InvalidArgument(format!("result `{name}` cannot be written: {e}"))
        })?;
        text.push('\n');
        let mut state = lock(&self.state);
        let overwrite = state.written.iter().any(|a| a.path == path);
        crate::jobs::atomic::write_atomic(&path, text.as_bytes(), overwrite)?;
        Ok(self.record(&mut state, ArtifactKind::Json, name, path))
    }

    fn ensure_output_dir(&self) -> Result<(), ServiceError> {
        std::fs::create_dir_all(&self.output_dir).map_err(|e| {
            ServiceError::Write(crate::jobs::JobError::Write {
                path: self.output_dir.clone(),
                source: e,
            })
        })
    }

    fn record(&self, state: &mut State, kind: ArtifactKind, name: &str, path: PathBuf) -> Artifact {
        let artifact = Artifact {
            kind,
            name: name.to_string(),
            path,
        };
        if !state.written.contains(&artifact) {
            state.written.push(artifact.clone());
        }
        self.emit(ServiceEvent::Artifact(artifact.clone()));
        artifact
    }

    fn emit(&self, event: ServiceEvent) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }
}

/// Sets back to zero every pruned weight of a sparse original that the method
/// moved, counting them.
fn keep_mask(state: &mut State) -> Result<(), ServiceError> {
    if let Some(m) = &state.mask {
        state.mask_resets += m.reimpose()?;
    }
    Ok(())
}

/// Which augmentation [`EngineServices::augment`] applies (the ABI's
/// `LetheAugmentRecipe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AugmentRecipe {
    /// What the checkpoint records it was trained with, else [`AugmentRecipe::Light`].
    Training,
    /// The SimCLR/MoCo recipe.
    Contrastive,
    /// The services' own augmentation (what augmented loaders use).
    Light,
}

/// The training settings a Lethe checkpoint records (`lethe train` stores its
/// whole job under the `job` note): the optimiser fields flattened beside the
/// task, backbone and temperature; paths dropped, they say nothing about the
/// recipe and may not exist here.
fn training_recipe(meta: Option<&CheckpointMeta>) -> Value {
    meta.map(CheckpointMeta::training_recipe)
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()))
}

/// Result names become file names: keep them to one plain path component.
fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "result name {name:?} must be 1-128 characters of letters, digits, `_`, `-` or `.`, not starting with `.`"
        )))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl HostServices for EngineServices {
    fn log(&self, level: LogLevel, message: &str) {
        self.emit(ServiceEvent::Log {
            level,
            message: message.to_string(),
        });
    }

    fn progress(&self, fraction: Option<f64>, message: &str, metrics: Option<Value>) {
        self.emit(ServiceEvent::Progress {
            fraction,
            message: message.to_string(),
            metrics,
        });
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn extension(&self, id: &str) -> *const c_void {
        ffi::extension(id)
    }
}
