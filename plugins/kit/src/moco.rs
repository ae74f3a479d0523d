//! MoCo's objective for the methods that train an encoder: InfoNCE of queries
//! against keys from a momentum (EMA) copy of the weights, with negatives from a
//! queue of earlier keys (He et al., CVPR 2020), as `lethe train --task moco`
//! trains (the engine's `train_moco`).
//!
//! A plugin cannot call the engine, and the host's model is the query encoder
//! only (a MoCo checkpoint holds no key encoder and no queue), so [`Moco`] keeps
//! both: the key encoder is an EMA of the model's parameters, swapped into the
//! model's storage for one forward pass without gradients (keys first, so the
//! swap never touches weights a query graph depends on), and the queue is a ring
//! of L2-normalised keys.
//!
//! What the swap cannot separate: normalisation buffers (BatchNorm running
//! statistics) are not parameters, so a train-mode key pass moves the live
//! model's running statistics as a query pass would (MoCo's key encoder keeps
//! its own). The key encoder tracks the query encoder closely (momentum 0.99), so
//! this is a small, documented drift. MoCo's shuffled BatchNorm is not
//! reproduced either: keys and queries are normalised with their own batch.
//!
//! Which objective an encoder gets follows the checkpoint's recorded task
//! ([`EncoderTask::of_recipe`]); τ is the recipe's ([`resolve_temperature`]).
//! `lethe train` records neither the key momentum nor the queue size: it always
//! uses [`MOCO_MOMENTUM`] and `min(`[`MOCO_QUEUE`]`, |train|)`, so those are the
//! values a MoCo checkpoint was trained with.

use lethe_plugin_api::sdk::{Augment, HostContext, ModelHead, PluginError, Split};
use lethe_plugin_api::tch::{self, Device, Kind, Reduction, Tensor};
use serde_json::{Value, json};

/// Key-encoder momentum of `lethe train --task moco` (the engine's
/// `MocoConfig::default`, MoCo's and the Alignment Calibration code's 0.99).
pub const MOCO_MOMENTUM: f64 = 0.99;
/// Queue size of `lethe train --task moco` (at most the training set's size).
pub const MOCO_QUEUE: i64 = 4096;
/// SimCLR's temperature, for a SimCLR checkpoint that records none.
pub const SIMCLR_TEMPERATURE: f64 = 0.5;
/// MoCo's temperature (the Alignment Calibration runs), for a MoCo checkpoint
/// that records none.
pub const MOCO_TEMPERATURE: f64 = 0.1;

/// The contrastive objective an encoder was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderTask {
    /// SimCLR: NT-Xent over two views of a batch.
    SimClr,
    /// MoCo: InfoNCE against a momentum encoder's keys and a queue.
    Moco,
}

impl EncoderTask {
    /// The task `lethe train` recorded (`"task": "moco"`), SimCLR otherwise
    /// (a recipe that records none, or an imported encoder).
    pub fn of_recipe(recipe: &Value) -> Self {
        match recipe.get("task").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("moco") => EncoderTask::Moco,
            _ => EncoderTask::SimClr,
        }
    }

    /// The papers' temperature for this task.
    pub fn default_temperature(self) -> f64 {
        match self {
            EncoderTask::SimClr => SIMCLR_TEMPERATURE,
            EncoderTask::Moco => MOCO_TEMPERATURE,
        }
    }
}

/// The temperature to use and where it came from: `form` when positive (the
/// user chose it), else the one the recipe records, else the task's default.
pub fn resolve_temperature(form: f64, recipe: &Value, task: EncoderTask) -> (f64, &'static str) {
    if form > 0.0 {
        return (form, "form");
    }
    match recipe
        .get("temperature")
        .and_then(Value::as_f64)
        .filter(|t| *t > 0.0)
    {
        Some(t) => (t, "checkpoint"),
        None => (task.default_temperature(), "default"),
    }
}

fn normalize(z: &Tensor) -> Result<Tensor, PluginError> {
    let norm = z
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(z.f_div(&norm)?)
}

/// MoCo's InfoNCE per query (the engine's `moco_infonce_per_sample`): logits
/// `[q·k, q·queueᵀ] / τ` of the L2-normalised rows, the positive (the query's own
/// key) as class 0. `q`, `k`: `[N, D]`; `queue`: `[K, D]`.
pub fn infonce_per_sample(
    q: &Tensor,
    k: &Tensor,
    queue: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    let q = normalize(q)?;
    let k = normalize(k)?;
    let pos = q
        .f_mul(&k)?
        .f_sum_dim_intlist([1i64].as_slice(), true, q.kind())?;
    let neg = q.f_matmul(&normalize(queue)?.f_tr()?)?;
    let logits = Tensor::f_cat(&[pos, neg], 1)?.f_div_scalar(temperature)?;
    let n = q.size().first().copied().unwrap_or(0);
    let targets = Tensor::f_zeros([n], (Kind::Int64, q.device()))?;
    Ok(logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0)?)
}

/// InfoNCE of a model against itself, for measurements (before/after losses,
/// per-sample gradients): queries `q`, keys `k` (`[N, D]`, detached by the
/// caller) of the same model, each query's negatives the batch's other keys.
/// It depends on no run state (no momentum encoder, no queue), so numbers taken
/// before and after a run, or by two methods, compare.
pub fn in_batch_infonce_per_sample(
    q: &Tensor,
    k: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    let q = normalize(q)?;
    let k = normalize(k)?;
    let logits = q.f_matmul(&k.f_tr()?)?.f_div_scalar(temperature)?;
    let n = q.size().first().copied().unwrap_or(0);
    let targets = Tensor::f_arange(n, (Kind::Int64, q.device()))?;
    Ok(logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0)?)
}

/// MoCo's queue of negative keys: a ring of L2-normalised rows, the oldest
/// overwritten first.
#[derive(Debug)]
pub struct KeyQueue {
    keys: Tensor,
    filled: i64,
    next: i64,
}

impl KeyQueue {
    /// A full queue of random unit vectors, as MoCo (and `lethe train`) start
    /// training, so that negatives exist from the first step.
    pub fn random(capacity: i64, dim: i64, device: Device) -> Result<Self, PluginError> {
        let keys = normalize(&Tensor::f_randn(
            [capacity.max(1), dim],
            (Kind::Float, device),
        )?)?;
        Ok(KeyQueue {
            filled: capacity.max(1),
            keys,
            next: 0,
        })
    }

    /// An empty queue of `capacity` rows (at least one).
    pub fn empty(capacity: i64, dim: i64, device: Device) -> Result<Self, PluginError> {
        Ok(KeyQueue {
            keys: Tensor::f_zeros([capacity.max(1), dim], (Kind::Float, device))?,
            filled: 0,
            next: 0,
        })
    }

    /// A full queue holding `keys` (`[K, D]`, normalised here), the next write
    /// at row 0.
    pub fn from_keys(keys: &Tensor) -> Result<Self, PluginError> {
        let keys = normalize(&keys.f_detach_copy()?.f_to_kind(Kind::Float)?)?;
        Ok(KeyQueue {
            filled: keys.size().first().copied().unwrap_or(0),
            keys,
            next: 0,
        })
    }

    /// Rows the queue holds when full.
    pub fn capacity(&self) -> i64 {
        self.keys.size().first().copied().unwrap_or(0)
    }

    /// Whether every row holds a key.
    pub fn is_full(&self) -> bool {
        self.filled >= self.capacity()
    }

    /// Index of the next row written (the oldest key once full).
    pub fn position(&self) -> i64 {
        self.next
    }

    /// The filled rows.
    pub fn keys(&self) -> Result<Tensor, PluginError> {
        Ok(self.keys.f_narrow(0, 0, self.filled)?)
    }

    /// Normalises and writes `batch` (`[B, D]`) at the ring position, wrapping
    /// around; a batch larger than the queue keeps its last rows (the engine's
    /// `KeyQueue::enqueue`).
    pub fn enqueue(&mut self, batch: &Tensor) -> Result<(), PluginError> {
        let cap = self.capacity();
        let batch = normalize(
            &batch
                .f_detach()?
                .f_to_kind(Kind::Float)?
                .f_to_device(self.keys.device())?,
        )?;
        let rows = batch.size().first().copied().unwrap_or(0);
        let batch = if rows > cap {
            batch.f_narrow(0, rows - cap, cap)?
        } else {
            batch
        };
        let b = rows.min(cap);
        tch::no_grad(|| -> Result<(), PluginError> {
            let first = b.min(cap - self.next);
            self.keys
                .f_narrow(0, self.next, first)?
                .f_copy_(&batch.f_narrow(0, 0, first)?)?;
            if first < b {
                self.keys
                    .f_narrow(0, 0, b - first)?
                    .f_copy_(&batch.f_narrow(0, first, b - first)?)?;
            }
            Ok(())
        })?;
        self.next = (self.next + b) % cap;
        self.filled = (self.filled + b).min(cap);
        Ok(())
    }
}

/// How the queue starts when a run has not filled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStart {
    /// Random unit vectors (MoCo's start of training; what a retrain uses).
    Random,
    /// Keys of augmented retain samples through the original weights
    /// ([`Moco::fill`]): a trained queue holds keys of training samples.
    RetainKeys,
}

impl QueueStart {
    fn name(self) -> &'static str {
        match self {
            QueueStart::Random => "random unit vectors",
            QueueStart::RetainKeys => "keys of retain samples at the original weights",
        }
    }
}

/// MoCo's key side in a plugin: the momentum copy of the model's parameters and
/// the queue, created on first use from the parameters as they are then.
#[derive(Debug)]
pub struct Moco {
    momentum: f64,
    capacity: i64,
    temperature: f64,
    live: Vec<Tensor>,
    keys: Option<Vec<Tensor>>,
    queue: Option<KeyQueue>,
    start: QueueStart,
    steps: u64,
}

impl Moco {
    /// MoCo over `params` (which share storage with the model) at `temperature`,
    /// with `lethe train`'s momentum and queue size.
    pub fn new(params: &[(String, Tensor)], temperature: f64) -> Self {
        Moco {
            momentum: MOCO_MOMENTUM,
            capacity: MOCO_QUEUE,
            temperature,
            live: params.iter().map(|(_, p)| p.shallow_clone()).collect(),
            keys: None,
            queue: None,
            start: QueueStart::Random,
            steps: 0,
        }
    }

    /// Sets the key momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Starts from `queue` instead of a random one.
    pub fn with_queue(mut self, queue: KeyQueue) -> Self {
        self.capacity = queue.capacity();
        self.queue = Some(queue);
        self
    }

    /// Caps the queue at `n` rows (`lethe train` uses `min(4096, |train|)`); no
    /// effect once the queue exists.
    pub fn limit_capacity(&mut self, n: i64) {
        if self.queue.is_none() {
            self.capacity = self.capacity.min(n.max(1));
        }
    }

    /// Whether the queue exists yet.
    pub fn has_queue(&self) -> bool {
        self.queue.is_some()
    }

    /// The queue, once it exists.
    pub fn queue(&self) -> Option<&KeyQueue> {
        self.queue.as_ref()
    }

    /// The key encoder's parameters, once they exist.
    pub fn key_parameters(&self) -> Option<&[Tensor]> {
        self.keys.as_deref()
    }

    /// Training steps taken ([`Moco::step`] calls).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// What the summary says: loss, τ, momentum, queue size and start.
    pub fn describe(&self) -> Value {
        json!({
            "loss": "moco_infonce",
            "temperature": self.temperature,
            "momentum": self.momentum,
            "queue_size": self.queue.as_ref().map_or(self.capacity, KeyQueue::capacity),
            "queue_start": self.start.name(),
            "key_encoder": "EMA of the model's parameters, swapped in for the key pass",
        })
    }

    fn key_copies(&mut self) -> Result<&mut Vec<Tensor>, PluginError> {
        if self.keys.is_none() {
            let copies = tch::no_grad(|| -> Result<Vec<Tensor>, PluginError> {
                self.live.iter().map(|p| Ok(p.f_detach_copy()?)).collect()
            })?;
            self.keys = Some(copies);
        }
        self.keys
            .as_mut()
            .ok_or_else(|| PluginError::msg("MoCo key encoder missing"))
    }

    /// `key ← m·key + (1 − m)·live` for every parameter.
    fn momentum_update(&mut self) -> Result<(), PluginError> {
        let m = self.momentum;
        let live: Vec<Tensor> = self.live.iter().map(Tensor::shallow_clone).collect();
        let keys = self.key_copies()?;
        tch::no_grad(|| -> Result<(), PluginError> {
            for (k, p) in keys.iter_mut().zip(&live) {
                let next = k.f_mul_scalar(m)?.f_add(&p.f_mul_scalar(1.0 - m)?)?;
                k.f_copy_(&next)?;
            }
            Ok(())
        })
    }

    /// `forward(x)` with the key weights swapped into the model, without
    /// gradients; the live weights are back in place afterwards, whatever
    /// `forward` returned.
    fn key_forward<F>(&mut self, forward: &mut F, x: &Tensor) -> Result<Tensor, PluginError>
    where
        F: FnMut(&Tensor) -> Result<Tensor, PluginError>,
    {
        let live: Vec<Tensor> = self.live.iter().map(Tensor::shallow_clone).collect();
        let keys: Vec<Tensor> = self
            .key_copies()?
            .iter()
            .map(Tensor::shallow_clone)
            .collect();
        tch::no_grad(|| -> Result<Tensor, PluginError> {
            let saved: Vec<Tensor> = live
                .iter()
                .map(|p| Ok(p.f_detach_copy()?))
                .collect::<Result<_, PluginError>>()?;
            load(&live, &keys)?;
            let out = forward(x);
            load(&live, &saved)?;
            Ok(out?.f_detach()?)
        })
    }

    /// One training step's per-sample InfoNCE (`[N]`), in MoCo's order: the key
    /// encoder takes its EMA step towards the weights as they are now (after the
    /// previous optimiser step), keys of `v_key` come from it, queries of
    /// `v_query` from the model (differentiable), the negatives are the queue as
    /// it was before this batch, and this batch's keys then enter the queue.
    /// `forward` is the model's head on an input.
    pub fn step<F>(
        &mut self,
        mut forward: F,
        v_query: &Tensor,
        v_key: &Tensor,
    ) -> Result<Tensor, PluginError>
    where
        F: FnMut(&Tensor) -> Result<Tensor, PluginError>,
    {
        self.momentum_update()?;
        // Keys first: the swap must not touch weights a query graph depends on.
        let k = self.key_forward(&mut forward, v_key)?;
        let q = forward(v_query)?;
        if self.queue.is_none() {
            let dim = k.size().last().copied().unwrap_or(1);
            self.queue = Some(KeyQueue::random(self.capacity, dim, k.device())?);
        }
        let queue = self
            .queue
            .as_mut()
            .ok_or_else(|| PluginError::msg("MoCo queue missing"))?;
        // A copy: the queue is overwritten in place below, and the query graph
        // keeps the negatives it was computed against for the backward pass.
        let negatives = queue.keys()?.f_detach_copy()?;
        let loss = infonce_per_sample(&q, &k, &negatives, self.temperature)?;
        queue.enqueue(&k)?;
        self.steps += 1;
        Ok(loss)
    }

    /// Fills the queue with keys of shuffled, augmented samples of `split`
    /// through the current (original) weights, in eval mode and without
    /// gradients, so the model's running statistics stay as they are (leaves the
    /// model in eval mode). Replaces a queue that exists. The capacity is
    /// `min(queue size, |split|)`; an empty split leaves a random start.
    pub fn fill(
        &mut self,
        ctx: &mut HostContext,
        head: ModelHead,
        recipe: Augment,
        split: Split,
        batch_size: u32,
    ) -> Result<(), PluginError> {
        let n = i64::try_from(ctx.data_len(split)?.unwrap_or(0)).unwrap_or(i64::MAX);
        self.queue = None;
        self.limit_capacity(n);
        ctx.model_set_train(false)?;
        let mut queue: Option<KeyQueue> = None;
        for batch in ctx.batches(split, batch_size, true, false)? {
            ctx.check_cancelled()?;
            let (x, _) = batch?;
            let v = ctx.augment(&x, recipe)?;
            let k = tch::no_grad(|| ctx.model_forward(head, &v))?;
            let q = match queue.as_mut() {
                Some(q) => q,
                None => queue.insert(KeyQueue::empty(
                    self.capacity,
                    k.size().last().copied().unwrap_or(1),
                    k.device(),
                )?),
            };
            q.enqueue(&k)?;
            if q.is_full() {
                break;
            }
        }
        // No samples to take keys from: the queue starts random, as in training.
        let Some(queue) = queue else {
            return Ok(());
        };
        // Keys of the weights the key encoder starts from.
        self.key_copies()?;
        self.queue = Some(queue);
        self.start = QueueStart::RetainKeys;
        Ok(())
    }
}

fn load(live: &[Tensor], values: &[Tensor]) -> Result<(), PluginError> {
    for (p, v) in live.iter().zip(values) {
        p.shallow_clone().f_copy_(v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
