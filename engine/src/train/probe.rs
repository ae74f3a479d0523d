//! Linear probing: a linear classifier trained on the frozen features of an encoder,
//! the standard way to read the utility of a contrastive encoder.
//!
//! [`ProbeRecipe`] is the one probe Lethe reads encoders with: `lethe evaluate`'s
//! RA/TA/UA and every attack that needs class probabilities of an encoder (CMIA,
//! through the host's `lethe.probe/1`) train it with [`probe_for`], which keeps
//! the trained head in a [`ProbeCache`] under a key of the model's weights, the
//! retain samples and the recipe, so a model is probed once and every later use
//! gets the very same head. [`train_linear_probe`] is the older,
//! [`TrainConfig`]-driven probe that `lethe train` scores its encoders with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, Module, OptimizerConfig as _, VarStore};
use tch::{Device, Kind, Tensor};

use super::augment::to_unit_float;
use super::batches;
use super::events::{Flow, TrainEvent, TrainSummary};
use super::supervised::{accuracy, map_batches, run_epochs};
use super::{TrainConfig, TrainError};

/// A trained linear head over frozen features.
#[derive(Debug)]
pub struct LinearProbe {
    /// The head's variables (only these were trained).
    pub vs: VarStore,
    /// The head.
    pub linear: nn::Linear,
}

impl LinearProbe {
    /// Logits for precomputed features.
    pub fn logits(&self, features: &Tensor) -> Tensor {
        self.linear.forward(&features.to_device(self.vs.device()))
    }

    /// Accuracy on precomputed features.
    pub fn accuracy(&self, features: &Tensor, labels: &Tensor) -> f64 {
        let _guard = tch::no_grad_guard();
        accuracy(&self.logits(features), labels)
    }
}

/// Frozen features of `images` through `features` (eval mode, no gradients).
pub fn extract(features: &dyn Fn(&Tensor) -> Tensor, images: &Tensor, device: Device) -> Tensor {
    map_batches(images, 512, device, features)
}

/// Trains a linear probe on `features(images)`.
///
/// Without augmentation in `cfg`, features are computed once and the head trains on
/// them (fast, the default here). With augmentation, every step re-encodes augmented
/// images, as in the papers' 100-epoch probe.
pub fn train_linear_probe(
    features: &dyn Fn(&Tensor) -> Tensor,
    images: &Tensor,
    labels: &Tensor,
    num_classes: i64,
    device: Device,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<(LinearProbe, TrainSummary), TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    if labels.size().first().copied().unwrap_or(0) != n {
        return Err(TrainError::Invalid(
            "images and labels differ in length".into(),
        ));
    }
    if n == 0 {
        return Err(TrainError::Empty("probe training"));
    }
    tch::manual_seed(cfg.seed as i64);
    let dim = {
        let _guard = tch::no_grad_guard();
        let x = to_unit_float(&images.narrow(0, 0, 1).to_device(device));
        features(&x).size().last().copied().unwrap_or(0)
    };
    let vs = VarStore::new(device);
    let linear = nn::linear(vs.root() / "probe", dim, num_classes, Default::default());
    let mut opt = cfg.build_optimizer(&vs)?;
    let labels = labels.to_device(device).to_kind(Kind::Int64);
    let summary = match &cfg.augment {
        None => {
            let feats = extract(features, images, device);
            let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
                let f = feats.index_select(0, idx);
                Ok(linear
                    .forward(&f)
                    .cross_entropy_for_logits(&labels.index_select(0, idx)))
            };
            run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?
        }
        Some(aug) => {
            let images = images.to_device(device);
            let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
                let x = aug.apply(&to_unit_float(&images.index_select(0, idx)));
                let f = {
                    let _guard = tch::no_grad_guard();
                    features(&x).detach()
                };
                Ok(linear
                    .forward(&f)
                    .cross_entropy_for_logits(&labels.index_select(0, idx)))
            };
            run_epochs(n, cfg, &mut opt, device, on_event, &mut step)?
        }
    };
    Ok((LinearProbe { vs, linear }, summary))
}

/// Environment variable naming the probe cache folder.
pub const PROBE_CACHE_ENV: &str = "LETHE_PROBE_CACHE";

/// The names [`ProbeRecipe::named`] knows.
pub const PROBE_PRESETS: [&str; 2] = ["reference", "fast"];

/// How the linear probe that reads an encoder is trained: SGD with momentum on a
/// `Linear(features, classes)` head over the frozen backbone (eval mode, its
/// features as they are, not normalised), cross-entropy, the learning rate
/// cosine-annealed per epoch (PyTorch's `CosineAnnealingLR(T_max = epochs)`
/// stepped once an epoch), shuffled batches, the short last batch dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecipe {
    /// The preset it came from (`reference`, `fast`), for people; not part of
    /// the cache key.
    pub preset: String,
    /// Passes over the retain samples.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: i64,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum (no dampening, not Nesterov).
    pub momentum: f64,
    /// L2 weight decay on the head.
    pub weight_decay: f64,
    /// Every step re-encodes a random crop (the image zero-padded by an eighth
    /// of its side, cropped back to size) and, for colour images, a
    /// horizontal flip (p 0.5) of its batch; off = the features are computed
    /// once and the head trains on them.
    pub augment: bool,
    /// Drop each epoch's short last batch (the first batch is always kept).
    pub drop_last: bool,
    /// Seeds the head's initialisation, batch order and augmentation.
    pub seed: u64,
}

impl Default for ProbeRecipe {
    fn default() -> Self {
        ProbeRecipe::reference()
    }
}

impl ProbeRecipe {
    /// The Alignment Calibration code's probe (`Classifier` in its `algs.py`,
    /// `--fc-*` in its `main.py`): 100 epochs, batch 512, SGD lr 1.0 momentum
    /// 0.9 no weight decay, cosine per epoch, `RandomCrop(32, padding=4)` +
    /// flip, drop_last, frozen backbone in eval mode.
    pub fn reference() -> Self {
        ProbeRecipe {
            preset: "reference".into(),
            epochs: 100,
            batch_size: 512,
            lr: 1.0,
            momentum: 0.9,
            weight_decay: 0.0,
            augment: true,
            drop_last: true,
            seed: 0,
        }
    }

    /// For tests and quick looks: the reference's optimiser and schedule, 30
    /// epochs of batch 256 at lr 0.5 on features computed once (what `lethe
    /// evaluate` used before it had the reference probe).
    pub fn fast() -> Self {
        ProbeRecipe {
            preset: "fast".into(),
            epochs: 30,
            batch_size: 256,
            lr: 0.5,
            augment: false,
            ..ProbeRecipe::reference()
        }
    }

    /// The preset called `name` (see [`PROBE_PRESETS`]).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "reference" => Some(ProbeRecipe::reference()),
            "fast" => Some(ProbeRecipe::fast()),
            _ => None,
        }
    }

    /// The preset called `name`, or an error naming the known ones.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        ProbeRecipe::named(name).ok_or_else(|| {
            TrainError::Invalid(format!(
                "unknown probe preset `{name}` (known: {})",
                PROBE_PRESETS.join(", ")
            ))
        })
    }

    /// A request as `lethe.probe/1` takes it: `{"preset": NAME, "epochs": N,
    /// "seed": S}`, every key optional (preset `reference`; `epochs` 0 = the
    /// preset's).
    pub fn from_request(json: &serde_json::Value) -> Result<Self, TrainError> {
        let obj = json
            .as_object()
            .ok_or_else(|| TrainError::Invalid("a probe request is a JSON object".into()))?;
        if let Some(bad) = obj
            .keys()
            .find(|k| !["preset", "epochs", "seed"].contains(&k.as_str()))
        {
            return Err(TrainError::Invalid(format!(
                "probe request: unknown key `{bad}` (preset, epochs, seed)"
            )));
        }
        let name = match obj.get("preset") {
            None => "reference",
            Some(v) => v
                .as_str()
                .ok_or_else(|| TrainError::Invalid("probe request: `preset` is a string".into()))?,
        };
        let uint = |key: &str| -> Result<Option<u64>, TrainError> {
            obj.get(key)
                .map(|v| {
                    v.as_u64().ok_or_else(|| {
                        TrainError::Invalid(format!(
                            "probe request: `{key}` is a non-negative integer"
                        ))
                    })
                })
                .transpose()
        };
        let mut recipe = ProbeRecipe::preset(name)?;
        if let Some(e) = uint("epochs")?.filter(|e| *e > 0) {
            recipe.epochs = usize::try_from(e).unwrap_or(usize::MAX);
        }
        if let Some(s) = uint("seed")? {
            recipe.seed = s;
        }
        Ok(recipe)
    }

    /// This recipe with `epochs` instead (0 keeps the preset's) and `seed`.
    pub fn with(mut self, epochs: Option<usize>, seed: u64) -> Self {
        if let Some(e) = epochs.filter(|e| *e > 0) {
            self.epochs = e;
        }
        self.seed = seed;
        self
    }

    /// Learning rate of 0-based `epoch`: PyTorch's `CosineAnnealingLR` with
    /// `T_max = epochs`, stepped once per epoch.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let t = epoch as f64 / self.epochs.max(1) as f64;
        0.5 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
    }

    fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 || self.batch_size <= 0 {
            return Err(TrainError::Invalid(format!(
                "probe recipe needs epochs and batch_size ≥ 1, got {} and {}",
                self.epochs, self.batch_size
            )));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::Invalid(format!(
                    "probe recipe: {name} must be ≥ 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// The reference's probe augmentation on a float batch `[B, C, H, W]`: each
/// image zero-padded by `H/8` rows and `W/8` columns on every side and cropped
/// back to `H × W` at a random offset (torchvision's `RandomCrop(size,
/// padding=size/8)`; zero is black, as the reference pads before normalising),
/// then, with `flip`, mirrored left-right with probability 0.5.
pub fn pad_crop_flip(x: &Tensor, flip: bool) -> Tensor {
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let (ph, pw) = (h / 8, w / 8);
    let device = x.device();
    let mut out = if ph > 0 || pw > 0 {
        let padded = x.constant_pad_nd([pw, pw, ph, ph]);
        let oy = Tensor::randint(2 * ph + 1, [b, 1], (Kind::Int64, device));
        let ox = Tensor::randint(2 * pw + 1, [b, 1], (Kind::Int64, device));
        let rows = (oy + Tensor::arange(h, (Kind::Int64, device)).unsqueeze(0))
            .view([b, 1, h, 1])
            .expand([b, c, h, w + 2 * pw], false);
        let cols = (ox + Tensor::arange(w, (Kind::Int64, device)).unsqueeze(0))
            .view([b, 1, 1, w])
            .expand([b, c, h, w], false);
        padded.gather(2, &rows, false).gather(3, &cols, false)
    } else {
        x.shallow_clone()
    };
    if flip {
        let mask = Tensor::rand([b, 1, 1, 1], (Kind::Float, device)).lt(0.5);
        out = out.flip([3]).where_self(&mask, &out);
    }
    out
}

/// Trains `linear` (created by the caller over `vs`) on `features(images)` with
/// `recipe`; `on_epoch(done, epochs, mean loss)` may stop it.
#[allow(clippy::too_many_arguments)]
fn train_head(
    vs: &VarStore,
    linear: &nn::Linear,
    features: &dyn Fn(&Tensor) -> Tensor,
    images: &Tensor,
    labels: &Tensor,
    recipe: &ProbeRecipe,
    device: Device,
    on_epoch: &mut dyn FnMut(usize, usize, f64) -> Flow,
) -> Result<bool, TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    // Every step frees what the next one allocates again: keep it in the heap.
    super::heap::keep_freed_memory();
    let mut opt = nn::Sgd {
        momentum: recipe.momentum,
        dampening: 0.0,
        wd: recipe.weight_decay,
        nesterov: false,
    }
    .build(vs, recipe.lr)?;
    let labels = labels.to_device(device).to_kind(Kind::Int64);
    let flip = images.size().get(1).copied() == Some(3);
    let (feats, images) = if recipe.augment {
        (None, images.to_device(device))
    } else {
        (
            Some(extract(features, images, device)),
            images.shallow_clone(),
        )
    };
    for epoch in 0..recipe.epochs {
        opt.set_lr(recipe.lr_at(epoch));
        let (mut sum, mut count) = (0.0, 0usize);
        for (step, idx) in batches::plan(n, recipe.batch_size, true, recipe.drop_last, device)
            .iter()
            .enumerate()
        {
            let f = match &feats {
                Some(f) => f.index_select(0, idx),
                None => {
                    let _guard = tch::no_grad_guard();
                    let x = to_unit_float(&images.index_select(0, idx));
                    features(&pad_crop_flip(&x, flip)).detach()
                }
            };
            let loss = linear
                .forward(&f)
                .cross_entropy_for_logits(&labels.index_select(0, idx));
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    step: step + 1,
                });
            }
            opt.backward_step(&loss);
            sum += value;
            count += 1;
        }
        if on_epoch(epoch + 1, recipe.epochs, sum / count.max(1) as f64) == Flow::Stop {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Trains a probe with `recipe` on `features(images)` (`images` uint8 or
/// float in `[0, 1]`, `[N, C, H, W]`). `Ok(None)` when `on_epoch` stopped it.
pub fn fit_probe(
    features: &dyn Fn(&Tensor) -> Tensor,
    images: &Tensor,
    labels: &Tensor,
    num_classes: i64,
    recipe: &ProbeRecipe,
    device: Device,
    on_epoch: &mut dyn FnMut(usize, usize, f64) -> Flow,
) -> Result<Option<LinearProbe>, TrainError> {
    recipe.validate()?;
    let n = images.size().first().copied().unwrap_or(0);
    if labels.size().first().copied().unwrap_or(0) != n {
        return Err(TrainError::Invalid(
            "images and labels differ in length".into(),
        ));
    }
    if n == 0 {
        return Err(TrainError::Empty("probe training"));
    }
    let dim = feature_dim(features, images, device);
    tch::manual_seed(recipe.seed as i64);
    let vs = VarStore::new(device);
    // PyTorch's `nn.Linear` initialisation, as the reference's head: weights
    // and bias uniform in ±1/√fan_in (tch's default draws the weights from a
    // √6 times wider Kaiming-uniform).
    let bound = 1.0 / (dim.max(1) as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        ..Default::default()
    };
    let linear = nn::linear(vs.root() / "probe", dim, num_classes, config);
    let done = train_head(
        &vs, &linear, features, images, labels, recipe, device, on_epoch,
    )?;
    Ok(done.then_some(LinearProbe { vs, linear }))
}

fn feature_dim(features: &dyn Fn(&Tensor) -> Tensor, images: &Tensor, device: Device) -> i64 {
    let _guard = tch::no_grad_guard();
    let x = to_unit_float(&images.narrow(0, 0, 1).to_device(device));
    features(&x).size().last().copied().unwrap_or(0)
}

/// `$LETHE_PROBE_CACHE`, else `$XDG_CACHE_HOME/lethe/probes`, else
/// `~/.cache/lethe/probes`, else a folder in the system's temp folder (beside
/// the shadow models' cache).
pub fn default_probe_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(PROBE_CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lethe/probes");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache/lethe/probes");
    }
    std::env::temp_dir().join("lethe-probes")
}

/// Trained probes on disk: `<root>/<key>.safetensors` with the head's `weight`
/// and `bias` and, in its metadata, the key and the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCache {
    root: PathBuf,
}

impl Default for ProbeCache {
    /// The cache in [`default_probe_cache_dir`].
    fn default() -> Self {
        ProbeCache::new(default_probe_cache_dir())
    }
}

impl ProbeCache {
    /// The cache under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProbeCache { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of the probe `key` names.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(format!(
            "probe-{}.safetensors",
            key.get(..32).unwrap_or(key)
        ))
    }

    /// The probe `key` names, when the cache holds one of these dimensions.
    fn load(&self, key: &str, dim: i64, classes: i64, device: Device) -> Option<LinearProbe> {
        let path = self.path(key);
        if !path.exists() {
            return None;
        }
        let ck = crate::checkpoint::read(&path).ok()?;
        if ck.meta.as_ref()?.provenance.notes.get("key")? != key {
            return None;
        }
        let (w, b) = (ck.state_dict.get("weight")?, ck.state_dict.get("bias")?);
        if w.size() != [classes, dim] || b.size() != [classes] {
            return None;
        }
        let vs = VarStore::new(device);
        let linear = nn::linear(vs.root() / "probe", dim, classes, Default::default());
        tch::no_grad(|| {
            let mut ws = linear.ws.shallow_clone();
            ws.copy_(&w.to_kind(Kind::Float));
            if let Some(bs) = &linear.bs {
                let mut bs = bs.shallow_clone();
                bs.copy_(&b.to_kind(Kind::Float));
            }
        });
        Some(LinearProbe { vs, linear })
    }

    fn store(
        &self,
        key: &str,
        probe: &LinearProbe,
        recipe: &ProbeRecipe,
    ) -> Result<PathBuf, crate::checkpoint::CheckpointError> {
        std::fs::create_dir_all(&self.root).map_err(|source| {
            crate::checkpoint::CheckpointError::Io {
                path: self.root.clone(),
                source,
            }
        })?;
        let path = self.path(key);
        let mut meta = crate::checkpoint::CheckpointMeta::new(
            None,
            Some("lethe linear probe (frozen encoder features → classes)".into()),
        );
        let notes = &mut meta.provenance.notes;
        notes.insert("key".into(), key.to_string());
        notes.insert(
            "recipe".into(),
            serde_json::to_string(recipe).unwrap_or_default(),
        );
        let cpu = |t: &Tensor| t.detach().to_device(Device::Cpu).contiguous();
        let bias = probe.linear.bs.as_ref().map(cpu).unwrap_or_else(|| {
            Tensor::zeros([probe.linear.ws.size()[0]], (Kind::Float, Device::Cpu))
        });
        crate::checkpoint::save_tensors(
            &path,
            &[
                ("weight".into(), cpu(&probe.linear.ws)),
                ("bias".into(), bias),
            ],
            &meta,
            true,
        )?;
        Ok(path)
    }
}

/// Feeds a tensor's values (as `f32`, or raw bytes for `u8`) to `h`.
fn hash_tensor(h: &mut Sha256, t: &Tensor) {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .contiguous()
        .flatten(0, -1);
    h.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
    if t.kind() == Kind::Uint8 {
        if let Ok(v) = Vec::<u8>::try_from(&t) {
            h.update(&v);
        }
    } else if let Ok(v) = Vec::<f32>::try_from(&t.to_kind(Kind::Float)) {
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
}

/// SHA-256 of every variable of `vs` (names, shapes and values): the same
/// weights give the same hash wherever they were loaded from.
pub fn weights_sha256(vs: &VarStore) -> String {
    let mut vars = vs.variables().into_iter().collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in &vars {
        h.update(name.as_bytes());
        hash_tensor(&mut h, t);
    }
    format!("{:x}", h.finalize())
}

/// The cache key of a probe: the model's weights, the samples and labels it
/// trains on (in order), the number of classes and the recipe (its preset name
/// aside: the same numbers under another name are the same probe).
pub fn probe_key(
    weights_sha256: &str,
    images: &Tensor,
    labels: &Tensor,
    num_classes: i64,
    recipe: &ProbeRecipe,
) -> String {
    let mut h = Sha256::new();
    h.update(b"lethe-probe/1\0");
    h.update(weights_sha256.as_bytes());
    hash_tensor(&mut h, images);
    hash_tensor(&mut h, &labels.to_kind(Kind::Int64).to_kind(Kind::Float));
    h.update(num_classes.to_le_bytes());
    let unnamed = ProbeRecipe {
        preset: String::new(),
        ..recipe.clone()
    };
    h.update(
        serde_json::to_string(&unnamed)
            .unwrap_or_default()
            .as_bytes(),
    );
    format!("{:x}", h.finalize())
}

/// What [`probe_for`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeRun {
    /// The recipe.
    pub recipe: ProbeRecipe,
    /// Its cache key.
    pub key: String,
    /// Loaded from the cache (true) or trained now.
    pub cached: bool,
    /// Accuracy on the samples it trained on (un-augmented), where the caller
    /// measured it ([`probe_for`] leaves it out: `lethe evaluate` reports it
    /// as RA anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_accuracy: Option<f64>,
    /// Seconds spent training (0 when cached).
    pub seconds: f64,
}

/// Why [`probe_for`] gave no probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The cache could not be written.
    #[error("probe cache: {0}")]
    Cache(#[from] crate::checkpoint::CheckpointError),
    /// `on_epoch` stopped the training.
    #[error("probe training was cancelled")]
    Cancelled,
}

/// The probe of the model whose variables are `vs` (features through
/// `features`) on `images`/`labels` with `recipe`: from `cache` when it holds
/// one under the same key, else trained with [`fit_probe`] and stored there.
#[allow(clippy::too_many_arguments)]
pub fn probe_for(
    vs: &VarStore,
    features: &dyn Fn(&Tensor) -> Tensor,
    images: &Tensor,
    labels: &Tensor,
    num_classes: i64,
    recipe: &ProbeRecipe,
    device: Device,
    cache: Option<&ProbeCache>,
    on_epoch: &mut dyn FnMut(usize, usize, f64) -> Flow,
) -> Result<(LinearProbe, ProbeRun), ProbeError> {
    let key = probe_key(&weights_sha256(vs), images, labels, num_classes, recipe);
    if images.size().first().copied().unwrap_or(0) > 0 {
        let dim = feature_dim(features, images, device);
        if let Some(p) = cache.and_then(|c| c.load(&key, dim, num_classes, device)) {
            let run = ProbeRun {
                recipe: recipe.clone(),
                key,
                cached: true,
                retain_accuracy: None,
                seconds: 0.0,
            };
            return Ok((p, run));
        }
    }
    let start = std::time::Instant::now();
    let probe = fit_probe(
        features,
        images,
        labels,
        num_classes,
        recipe,
        device,
        on_epoch,
    )?
    .ok_or(ProbeError::Cancelled)?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(c) = cache {
        c.store(&key, &probe, recipe)?;
    }
    let run = ProbeRun {
        recipe: recipe.clone(),
        key,
        cached: false,
        retain_accuracy: None,
        seconds,
    };
    Ok((probe, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_a_linearly_separable_feature_and_leaves_the_encoder_alone() {
        tch::manual_seed(8);
        let n = 200;
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
        let x = (Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu)) * 0.05
            + y.to_kind(Kind::Float).view([n, 1, 1, 1]) * 0.3)
            .clamp(0.0, 1.0);
        // A fixed "encoder": its weights must not change during probing.
        let enc_vs = VarStore::new(Device::Cpu);
        let enc = nn::linear(enc_vs.root() / "enc", 4, 6, Default::default());
        let before = enc.ws.copy();
        let feat = |t: &Tensor| enc.forward(&t.flatten(1, -1));
        let cfg = TrainConfig {
            epochs: 30,
            batch_size: 50,
            lr: 0.5,
            weight_decay: 0.0,
            ..TrainConfig::default()
        };
        let (probe, _) =
            train_linear_probe(&feat, &x, &y, 3, Device::Cpu, &cfg, &mut |_| Flow::Continue)
                .unwrap();
        let acc = probe.accuracy(&extract(&feat, &x, Device::Cpu), &y);
        assert!(acc > 0.9, "probe accuracy {acc}");
        assert!(enc.ws.equal(&before));
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
    }

    /// PyTorch (the project's venv) reading JSON on stdin, printing JSON.
    fn torch_oracle(script: &str, input: &serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let mut child = Command::new(python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the project venv (installer/setup.sh) has torch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The recipe's optimisation against the reference's, written in PyTorch
    /// from its `Classifier` (SGD on the head, momentum 0.9, no weight decay,
    /// `CosineAnnealingLR(T_max = epochs)` stepped once per epoch, mean
    /// cross-entropy, drop_last): the same start, the same batches, the same
    /// head after 3 epochs of 2 steps (10 samples, batch 4: the short batch of
    /// 2 is dropped). A per-step cosine, no momentum or the old probes' Adam
    /// end elsewhere.
    #[test]
    fn the_recipe_trains_the_head_as_the_reference_probe_does() {
        let (n, d, c) = (10i64, 4i64, 3i64);
        tch::manual_seed(5);
        let x = Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 1]);
        let w0 = Tensor::randn([c, d], (Kind::Float, Device::Cpu)) * 0.3;
        let b0 = Tensor::randn([c], (Kind::Float, Device::Cpu)) * 0.1;
        let recipe = ProbeRecipe {
            epochs: 3,
            batch_size: 4,
            augment: false,
            ..ProbeRecipe::reference()
        };
        let feat = |t: &Tensor| t.flatten(1, -1);
        let vs = VarStore::new(Device::Cpu);
        let linear = nn::linear(vs.root() / "probe", d, c, Default::default());
        tch::no_grad(|| {
            linear.ws.shallow_clone().copy_(&w0);
            linear.bs.as_ref().unwrap().shallow_clone().copy_(&b0);
        });
        // The batch orders the training will draw: one permutation per epoch.
        tch::manual_seed(11);
        let perms: Vec<Vec<i64>> = (0..recipe.epochs)
            .map(|_| Vec::<i64>::try_from(Tensor::randperm(n, (Kind::Int64, Device::Cpu))).unwrap())
            .collect();
        tch::manual_seed(11);
        let mut lrs = Vec::new();
        let done = train_head(
            &vs,
            &linear,
            &feat,
            &x,
            &y,
            &recipe,
            Device::Cpu,
            &mut |_, _, _| Flow::Continue,
        )
        .unwrap();
        assert!(done);
        for e in 0..recipe.epochs {
            lrs.push(recipe.lr_at(e));
        }
        let input = serde_json::json!({
            "x": values(&x), "y": Vec::<i64>::try_from(&y).unwrap(),
            "w": values(&w0), "b": values(&b0), "perms": perms,
        });
        let theirs = torch_oracle(
            r#"
import json, sys, torch
d = json.load(sys.stdin)
x = torch.tensor(d["x"]).view(10, 4); y = torch.tensor(d["y"])
fc = torch.nn.Linear(4, 3)
with torch.no_grad():
    fc.weight.copy_(torch.tensor(d["w"]).view(3, 4)); fc.bias.copy_(torch.tensor(d["b"]))
opt = torch.optim.SGD(fc.parameters(), lr=1.0, momentum=0.9)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3)
lrs = []
for perm in d["perms"]:
    lrs.append(opt.param_groups[0]["lr"])
    for s in range(0, 8, 4):  # DataLoader(drop_last=True): 2 full batches of 4
        idx = torch.tensor(perm[s:s + 4])
        loss = torch.nn.functional.cross_entropy(fc(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    sched.step()
print(json.dumps({"w": fc.weight.flatten().tolist(), "b": fc.bias.tolist(), "lrs": lrs}))
"#,
            &input,
        );
        let close = |ours: &[f32], theirs: &serde_json::Value| {
            let theirs: Vec<f32> = serde_json::from_value(theirs.clone()).unwrap();
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "{ours:?} vs {theirs:?}"
                );
            }
        };
        let their_lrs: Vec<f64> = serde_json::from_value(theirs["lrs"].clone()).unwrap();
        for (a, b) in lrs.iter().zip(&their_lrs) {
            assert!((a - b).abs() < 1e-12, "lr {lrs:?} vs {their_lrs:?}");
        }
        close(&values(&linear.ws), &theirs["w"]);
        close(&values(linear.bs.as_ref().unwrap()), &theirs["b"]);
    }

    /// The head starts as PyTorch's `nn.Linear` (the reference's): weights and
    /// bias uniform in ±1/√fan_in; at lr 0 it stays there.
    #[test]
    fn the_head_starts_as_pytorchs_linear() {
        let (n, d) = (20i64, 64i64);
        let x = Tensor::rand([n, 1, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10);
        let recipe = ProbeRecipe {
            epochs: 1,
            lr: 0.0,
            ..ProbeRecipe::fast()
        };
        let feat = |t: &Tensor| t.flatten(1, -1);
        let probe = fit_probe(&feat, &x, &y, 10, &recipe, Device::Cpu, &mut |_, _, _| {
            Flow::Continue
        })
        .unwrap()
        .unwrap();
        let bound = 1.0 / (d as f64).sqrt();
        for t in [&probe.linear.ws, probe.linear.bs.as_ref().unwrap()] {
            let max = t.abs().max().double_value(&[]);
            assert!(
                max <= bound && max > 0.8 * bound,
                "max |w| {max}, bound {bound}"
            );
        }
    }

    #[test]
    fn presets_are_the_reference_and_a_fast_one() {
        let r = ProbeRecipe::reference();
        assert_eq!(
            (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay),
            (100, 512, 1.0, 0.9, 0.0)
        );
        assert!(r.augment && r.drop_last);
        assert_eq!(ProbeRecipe::default(), r);
        let f = ProbeRecipe::named("fast").unwrap();
        assert!(!f.augment && f.epochs < r.epochs);
        assert!(
            ProbeRecipe::preset("slow")
                .unwrap_err()
                .to_string()
                .contains("reference, fast")
        );
        let q = ProbeRecipe::from_request(
            &serde_json::json!({"preset": "fast", "epochs": 3, "seed": 9}),
        )
        .unwrap();
        assert_eq!((q.preset.as_str(), q.epochs, q.seed), ("fast", 3, 9));
        assert!(ProbeRecipe::from_request(&serde_json::json!({"lr": 2})).is_err());
        // Cosine per epoch, from the base rate, never reaching 0 in the last epoch.
        assert_eq!(r.lr_at(0), 1.0);
        assert!((r.lr_at(50) - 0.5).abs() < 1e-12);
        assert!(r.lr_at(99) > 0.0);
    }

    /// Every output is a window of the zero-padded image (pad 8/8 = 1 here),
    /// flipped only for colour images, and the windows vary.
    #[test]
    fn pad_crop_flip_takes_windows_of_the_zero_padded_image() {
        tch::manual_seed(3);
        for channels in [1i64, 3] {
            let (b, h, w) = (40i64, 8i64, 8i64);
            let x = Tensor::rand([b, channels, h, w], (Kind::Float, Device::Cpu)) + 0.5;
            let out = pad_crop_flip(&x, channels == 3);
            assert_eq!(out.size(), [b, channels, h, w]);
            let padded = x.constant_pad_nd([1, 1, 1, 1]);
            let (mut shifted, mut flipped) = (0, 0);
            for i in 0..b {
                let o = out.get(i);
                let p = padded.get(i);
                let found = (0..3)
                    .flat_map(|oy| (0..3).map(move |ox| (oy, ox)))
                    .find_map(|(oy, ox)| {
                        let win = p.narrow(1, oy, h).narrow(2, ox, w);
                        if o.equal(&win) {
                            Some((oy, ox, false))
                        } else if o.equal(&win.flip([2])) {
                            Some((oy, ox, true))
                        } else {
                            None
                        }
                    });
                let (oy, ox, flip) = found.expect("a window of the padded image");
                shifted += usize::from((oy, ox) != (1, 1));
                flipped += usize::from(flip);
            }
            assert!(shifted > 10, "{shifted} of {b} moved");
            if channels == 3 {
                assert!(flipped > 5 && flipped < 35, "{flipped} of {b} flipped");
            } else {
                assert_eq!(flipped, 0, "grey images are not mirrored");
            }
        }
    }

    /// The second use of a probe (same weights, samples and recipe) is the
    /// cached head, identical; another seed or other weights train another.
    #[test]
    fn probe_for_trains_once_and_then_reads_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ProbeCache::new(dir.path());
        tch::manual_seed(8);
        let n = 60;
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
        let x = (Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu)) * 0.05
            + y.to_kind(Kind::Float).view([n, 1, 1, 1]) * 0.3)
            .clamp(0.0, 1.0);
        let enc_vs = VarStore::new(Device::Cpu);
        let enc = nn::linear(enc_vs.root() / "enc", 4, 6, Default::default());
        let feat = |t: &Tensor| enc.forward(&t.flatten(1, -1));
        let recipe = ProbeRecipe {
            epochs: 5,
            ..ProbeRecipe::fast()
        };
        let go = |r: &ProbeRecipe| {
            probe_for(
                &enc_vs,
                &feat,
                &x,
                &y,
                3,
                r,
                Device::Cpu,
                Some(&cache),
                &mut |_, _, _| Flow::Continue,
            )
            .unwrap()
        };
        let (p1, r1) = go(&recipe);
        assert!(!r1.cached);
        assert!(cache.path(&r1.key).exists());
        let (p2, r2) = go(&recipe);
        assert!(r2.cached, "the second use reads the cache");
        assert_eq!(r1.key, r2.key);
        assert!(p1.linear.ws.equal(&p2.linear.ws));
        assert!(
            p1.linear
                .bs
                .as_ref()
                .unwrap()
                .equal(p2.linear.bs.as_ref().unwrap())
        );
        // The preset's name is a label, not part of the key.
        let renamed = ProbeRecipe {
            preset: "custom".into(),
            ..recipe.clone()
        };
        assert!(go(&renamed).1.cached);
        let (_, r3) = go(&recipe.clone().with(None, 1));
        assert!(!r3.cached && r3.key != r1.key);
        tch::no_grad(|| {
            let _ = enc.ws.shallow_clone().g_add_scalar_(0.01);
        });
        let (_, r4) = go(&recipe);
        assert!(
            !r4.cached && r4.key != r1.key,
            "other weights, another probe"
        );
    }
}
