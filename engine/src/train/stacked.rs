//! Several small classifiers trained at once: their weights stacked along a leading
//! model axis, so one `baddbmm` runs a layer of every model (issue #25 item 3).
//!
//! Each model ends where it would have alone ([`super::supervised::train_classifier`]
//! with the same seed), within float tolerance:
//!
//! - it is initialised by the caller exactly as the single path initialises it (its own
//!   seed, then `Model::new` into its own `VarStore`); the stack copies those weights in
//!   and out, so saving and evaluation use the ordinary model;
//! - its batch order and augmentation draws are replayed up front from its own seed with
//!   the code the single path draws with ([`batches::plan`] per epoch, then
//!   [`AugmentConfig::draw_crop`] per batch), because libtorch's generator is global and
//!   tch exposes no per-stream generator;
//! - its data are its own rows, its learning-rate schedule counts its own steps (halves
//!   differ in size, so models may have different steps per epoch and finish at
//!   different times: a finished model gets rate 0), and its optimiser state is its own
//!   slice of the stacked state. The optimiser is written out here, as libtorch's SGD and
//!   Adam compute it, because their rate is one number for all parameters.
//!
//! Batches of unequal size are padded to the largest of the step; padded rows weigh 0
//! in the loss, and every model's loss is the mean over its own rows, so each model's
//! gradient is the one it would get alone.

use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use super::augment::{AugmentConfig, CropDraw, crop_flip_drawn, to_unit_float};
use super::batches;
use super::events::{Flow, TrainEvent, TrainSummary};
use super::{OptimizerConfig, TrainConfig, TrainError};
use crate::models::{ArchConfig, BackboneConfig, HeadConfig};

/// One model of a stack.
pub struct StackMember<'a> {
    /// Its variables, initialised as the single path would (its seed, then
    /// `Model::new`); trained in place.
    pub vs: &'a VarStore,
    /// Its training rows, as indices into the images given to [`train_stacked`].
    pub rows: &'a [i64],
    /// Its seed ([`TrainConfig::seed`] of its single run).
    pub seed: u64,
}

/// Names of the linear layers of a stackable architecture, in order (an MLP
/// backbone's `layers.i`, then the classifier `fc`); `None` for other architectures.
pub fn linear_layers(arch: &ArchConfig) -> Option<Vec<String>> {
    let BackboneConfig::Mlp { hidden, .. } = &arch.backbone else {
        return None;
    };
    if !matches!(arch.head, HeadConfig::Classifier { .. }) {
        return None;
    }
    let mut names: Vec<String> = (0..hidden.len()).map(|i| format!("layers.{i}")).collect();
    names.push("fc".into());
    Some(names)
}

/// Whether models of `arch` trained by `cfg` on images with `channels` channels can be
/// trained in a stack with the same result as alone.
pub fn stackable(arch: &ArchConfig, cfg: &TrainConfig, channels: i64) -> bool {
    linear_layers(arch).is_some()
        && cfg
            .augment
            .as_ref()
            .is_none_or(|a| a.draws_only_crop(channels))
}

/// One optimiser step of one model, drawn up front.
struct Step {
    /// Dataset rows of the batch.
    rows: Tensor,
    /// Its crop and flip draws, with augmentation.
    crop: Option<CropDraw>,
    /// Learning rate.
    lr: f64,
    epoch: usize,
    step: usize,
    steps: usize,
}

/// Replays model `seed`'s draws as [`super::supervised::train_classifier`] makes them
/// on `n` rows: one permutation per epoch, then each batch's augmentation.
fn replay(
    rows: &Tensor,
    seed: u64,
    cfg: &TrainConfig,
    aug: Option<&AugmentConfig>,
    device: Device,
) -> Vec<Step> {
    let n = rows.size()[0];
    tch::manual_seed(seed as i64);
    let steps_per_epoch = batches::plan(n, cfg.batch_size, false, cfg.drop_last, Device::Cpu).len();
    let total = steps_per_epoch * cfg.epochs;
    let mut out = Vec::with_capacity(total);
    for epoch in 1..=cfg.epochs {
        let plan = batches::plan(n, cfg.batch_size, true, cfg.drop_last, device);
        let steps = plan.len();
        for (i, idx) in plan.into_iter().enumerate() {
            let b = idx.size()[0];
            let crop = aug.map(|a| a.draw_crop(b, Kind::Float, device));
            out.push(Step {
                rows: rows.index_select(0, &idx),
                crop,
                lr: cfg.schedule.rate(cfg.lr, out.len(), total, steps_per_epoch),
                epoch,
                step: i + 1,
                steps,
            });
        }
    }
    out
}

/// The stacked optimiser state of one parameter.
struct Slot {
    p: Tensor,
    buf: Option<Tensor>,
    sq: Option<Tensor>,
}

/// Trains every member with `cfg` (its own seed in place of `cfg.seed`) on `images`
/// (`u8` or float in `[0,1]`, `[N, …]`) and `labels` (`[N]`), all at once; `arch` must
/// be [`stackable`]. `on_event` hears every step of the stack (epoch and step of the
/// model with the most steps, loss the mean of the models' batch losses) and can stop
/// it.
pub fn train_stacked(
    arch: &ArchConfig,
    images: &Tensor,
    labels: &Tensor,
    members: &[StackMember<'_>],
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainSummary, TrainError> {
    cfg.validate()?;
    let layers = linear_layers(arch)
        .ok_or_else(|| TrainError::Invalid(format!("{arch} cannot be trained in a stack")))?;
    let Some(first) = members.first() else {
        return Err(TrainError::Empty("stack"));
    };
    let device = first.vs.device();
    let channels = images.size().get(1).copied().unwrap_or(1);
    if !stackable(arch, cfg, channels) {
        return Err(TrainError::Invalid(
            "colour jitter and grayscale draws cannot be replayed in a stack".into(),
        ));
    }
    if members.iter().any(|m| m.rows.is_empty()) {
        return Err(TrainError::Empty("training"));
    }
    super::heap::keep_freed_memory();
    let start = std::time::Instant::now();
    let k = members.len() as i64;
    let images = images.to_device(device);
    let labels = labels.to_device(device).to_kind(Kind::Int64);
    let plans: Vec<Vec<Step>> = members
        .iter()
        .map(|m| {
            let rows = Tensor::from_slice(m.rows).to_device(device);
            replay(&rows, m.seed, cfg, cfg.augment.as_ref(), device)
        })
        .collect();
    let longest = plans.iter().map(Vec::len).max().unwrap_or(0);
    // Weights `[K, in, out]` and biases `[K, 1, out]`, copied from the members.
    let mut slots: Vec<Slot> = Vec::new();
    for name in &layers {
        for (part, bias) in [("weight", false), ("bias", true)] {
            let full = format!("{name}.{part}");
            let mut parts = Vec::with_capacity(members.len());
            for m in members {
                let v = m.vs.variables().remove(&full).ok_or_else(|| {
                    TrainError::Invalid(format!("the model has no variable {full}"))
                })?;
                // Weights as `[in, out]`: libtorch's CPU `bmm` copies a transposed
                // operand to a contiguous one every call, 25 MB a step for the first
                // layer of 16 demo MLPs.
                parts.push(if bias { v.unsqueeze(0) } else { v.tr() });
            }
            let p = Tensor::stack(&parts, 0).detach().set_requires_grad(true);
            slots.push(Slot {
                p,
                buf: None,
                sq: None,
            });
        }
    }
    let mut samples = 0usize;
    let mut final_loss = 0.0;
    let mut stopped = false;
    let mut epochs_run = 0;
    let (fk, dk) = (Kind::Float, device);
    for t in 0..longest {
        let active: Vec<Option<&Step>> = plans.iter().map(|p| p.get(t)).collect();
        let b = active
            .iter()
            .flatten()
            .map(|s| s.rows.size()[0])
            .max()
            .unwrap_or(1);
        let mut rows = Vec::with_capacity(members.len());
        let mut weights = Vec::with_capacity(members.len());
        let mut crops = Vec::new();
        let mut lrs = Vec::with_capacity(members.len());
        for s in &active {
            let (n, lr) = match s {
                Some(s) => (s.rows.size()[0], s.lr),
                None => (0, 0.0),
            };
            let pad = b - n;
            let mut r = match s {
                Some(s) => s.rows.shallow_clone(),
                None => Tensor::zeros([0], (Kind::Int64, dk)),
            };
            if pad > 0 {
                r = Tensor::cat(&[r, Tensor::zeros([pad], (Kind::Int64, dk))], 0);
            }
            rows.push(r);
            let w = Tensor::cat(
                &[
                    Tensor::full([n], 1.0 / n.max(1) as f64, (fk, dk)),
                    Tensor::zeros([pad], (fk, dk)),
                ],
                0,
            );
            weights.push(w);
            if cfg.augment.is_some() {
                let mut c = Vec::new();
                if let Some(d) = s.and_then(|s| s.crop.as_ref()) {
                    c.push(CropDraw::cat(std::slice::from_ref(d)));
                }
                if pad > 0 {
                    c.push(CropDraw::identity(pad, fk, dk));
                }
                crops.push(CropDraw::cat(&c));
            }
            lrs.push(lr);
        }
        let idx = Tensor::cat(&rows, 0);
        let mut x = to_unit_float(&images.index_select(0, &idx));
        if !crops.is_empty() {
            x = crop_flip_drawn(&x, &CropDraw::cat(&crops));
        }
        let y = labels.index_select(0, &idx);
        let w = Tensor::cat(&weights, 0);
        let mut h = x.view([k, b, -1]);
        let last = layers.len() - 1;
        for (i, pair) in slots.chunks(2).enumerate() {
            h = pair[1].p.baddbmm(&h, &pair[0].p, 1.0, 1.0);
            if i < last {
                h = h.relu();
            }
        }
        let classes = h.size()[2];
        let per_sample = h.view([k * b, classes]).cross_entropy_loss::<Tensor>(
            &y,
            None,
            Reduction::None,
            -100,
            0.0,
        );
        let weighted = per_sample * &w;
        let per_model = weighted.view([k, b]).sum_dim_intlist(1, false, fk);
        let loss = per_model.sum(fk);
        for s in &slots {
            let mut g = s.p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        let values = Vec::<f64>::try_from(per_model.to_kind(Kind::Double).to_device(Device::Cpu))?;
        for (s, v) in active.iter().zip(&values) {
            if let Some(s) = s
                && !v.is_finite()
            {
                return Err(TrainError::NonFinite {
                    epoch: s.epoch,
                    step: s.step,
                });
            }
        }
        update(&mut slots, &lrs, cfg, t, dk)?;
        let live: Vec<f64> = active
            .iter()
            .zip(&values)
            .filter(|(s, _)| s.is_some())
            .map(|(_, v)| *v)
            .collect();
        final_loss = live.iter().sum::<f64>() / live.len().max(1) as f64;
        samples += active
            .iter()
            .flatten()
            .map(|s| s.rows.size()[0] as usize)
            .sum::<usize>();
        let lead = plans
            .iter()
            .filter_map(|p| p.get(t))
            .max_by_key(|s| s.steps)
            .ok_or(TrainError::Empty("stack"))?;
        epochs_run = lead.epoch;
        let event = TrainEvent {
            epoch: lead.epoch,
            epochs: cfg.epochs,
            step: lead.step,
            steps: lead.steps,
            loss: final_loss,
            lr: lead.lr,
            samples_per_sec: samples as f64 / start.elapsed().as_secs_f64().max(1e-9),
            metrics: Vec::new(),
        };
        if on_event(&event) == Flow::Stop {
            stopped = true;
            break;
        }
    }
    // Back into each member's own variables.
    let _guard = tch::no_grad_guard();
    let mut i = 0;
    for name in &layers {
        for (part, bias) in [("weight", false), ("bias", true)] {
            let full = format!("{name}.{part}");
            for (m, member) in members.iter().enumerate() {
                let mut v = member.vs.variables().remove(&full).ok_or_else(|| {
                    TrainError::Invalid(format!("the model has no variable {full}"))
                })?;
                let src = slots[i].p.get(m as i64);
                v.copy_(&if bias { src.squeeze_dim(0) } else { src.tr() });
            }
            i += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(TrainSummary {
        epochs_run,
        final_loss,
        stopped,
        seconds,
        samples_per_sec: if seconds > 0.0 {
            samples as f64 / seconds
        } else {
            0.0
        },
    })
}

/// Logits of every model in `stores` (each an MLP classifier of `arch`, as
/// [`linear_layers`] names it) on `images`, `batch` rows at a time, all models at
/// once: the first layer of all of them is one matrix product with the shared
/// input, the others one `baddbmm`. Eval mode, no gradients; equal to
/// [`super::supervised::predict_logits`] of each model within float tolerance.
pub fn predict_stacked(
    arch: &ArchConfig,
    stores: &[&VarStore],
    images: &Tensor,
    batch: i64,
) -> Result<Vec<Tensor>, TrainError> {
    let layers = linear_layers(arch)
        .ok_or_else(|| TrainError::Invalid(format!("{arch} cannot be run in a stack")))?;
    let Some(first) = stores.first() else {
        return Ok(Vec::new());
    };
    let device = first.device();
    let _guard = tch::no_grad_guard();
    let k = stores.len() as i64;
    let mut params = Vec::with_capacity(layers.len());
    for name in &layers {
        let mut pair = Vec::with_capacity(2);
        for part in ["weight", "bias"] {
            let full = format!("{name}.{part}");
            let mut parts = Vec::with_capacity(stores.len());
            for vs in stores {
                parts.push(vs.variables().remove(&full).ok_or_else(|| {
                    TrainError::Invalid(format!("the model has no variable {full}"))
                })?);
            }
            pair.push(Tensor::stack(&parts, 0));
        }
        params.push(pair);
    }
    let n = images.size().first().copied().unwrap_or(0);
    let mut outs = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let x = to_unit_float(&images.narrow(0, start, len).to_device(device)).flatten(1, -1);
        let mut h = Tensor::zeros([0], (Kind::Float, device));
        for (i, pair) in params.iter().enumerate() {
            let (w, b) = (&pair[0], &pair[1]);
            h = if i == 0 {
                let (out, d_in) = (w.size()[1], w.size()[2]);
                x.matmul(&w.view([k * out, d_in]).tr())
                    .view([len, k, out])
                    .transpose(0, 1)
                    + b.unsqueeze(1)
            } else {
                b.unsqueeze(1)
                    .baddbmm(&h, &w.transpose(1, 2).contiguous(), 1.0, 1.0)
            };
            if i + 1 < params.len() {
                h = h.relu();
            }
        }
        outs.push(h);
        start += len;
    }
    if outs.is_empty() {
        return Ok((0..k)
            .map(|_| Tensor::zeros([0], (Kind::Float, device)))
            .collect());
    }
    let all = Tensor::cat(&outs, 1);
    Ok((0..k).map(|m| all.get(m)).collect())
}

/// One step of libtorch's SGD or Adam (L2 weight decay added to the gradient) on every
/// stacked parameter, each model with its own rate (`lrs`, 0 for a finished model).
/// `t` is the 0-based step, the same for every model still training.
fn update(
    slots: &mut [Slot],
    lrs: &[f64],
    cfg: &TrainConfig,
    t: usize,
    device: Device,
) -> Result<(), TrainError> {
    let _guard = tch::no_grad_guard();
    // In place wherever libtorch allows: a stack of 16 small MLPs holds tens of
    // megabytes of parameters, and each extra pass over them costs as much as a
    // matrix product of the step.
    let neg_lr = Tensor::from_slice(lrs)
        .to_kind(Kind::Float)
        .to_device(device)
        .neg()
        .view([-1, 1, 1]);
    let wd = cfg.weight_decay;
    for s in slots.iter_mut() {
        let mut g = s.p.grad();
        if !g.defined() {
            continue;
        }
        if wd != 0.0 {
            let _ = g.g_add_(&s.p.g_mul_scalar(wd));
        }
        let mut p = s.p.shallow_clone();
        match cfg.optimizer {
            OptimizerConfig::Sgd { momentum, nesterov } => {
                if momentum == 0.0 {
                    let _ = p.f_addcmul_(&g, &neg_lr)?;
                    continue;
                }
                let buf = match s.buf.take() {
                    None => g.copy(),
                    Some(mut b) => {
                        let _ = b.g_mul_scalar_(momentum).g_add_(&g);
                        b
                    }
                };
                if nesterov {
                    let _ = p.f_addcmul_(&(&g + &buf * momentum), &neg_lr)?;
                } else {
                    let _ = p.f_addcmul_(&buf, &neg_lr)?;
                }
                s.buf = Some(buf);
            }
            OptimizerConfig::Adam { beta1, beta2 } => {
                let step = (t + 1) as i32;
                let mut m = s.buf.take().unwrap_or_else(|| g.zeros_like());
                let mut v = s.sq.take().unwrap_or_else(|| g.zeros_like());
                // m ← β1·m + (1-β1)·g and v ← β2·v + (1-β2)·g², as lerps.
                let _ = m.lerp_(&g, 1.0 - beta1);
                let _ = v.lerp_(&(&g * &g), 1.0 - beta2);
                let bc1 = 1.0 - beta1.powi(step);
                let bc2 = 1.0 - beta2.powi(step);
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt()).g_add_scalar_(1e-8);
                let _ = p.f_addcdiv_(&(&m * &neg_lr / bc1), &denom)?;
                s.buf = Some(m);
                s.sq = Some(v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;
    use crate::train::Schedule;
    use crate::train::supervised::{predict_logits, train_classifier};

    fn arch() -> ArchConfig {
        ArchConfig {
            backbone: BackboneConfig::Mlp {
                input_dim: 64,
                hidden: vec![32, 16],
            },
            head: HeadConfig::Classifier { num_classes: 3 },
        }
    }

    /// Three classes of 8×8 one-channel `u8` images, learnable by a small MLP.
    fn data(n: i64) -> (Tensor, Tensor) {
        tch::manual_seed(21);
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
        let centre = y.to_kind(Kind::Float).view([n, 1, 1, 1]) * 0.3 + 0.2;
        let x = (Tensor::rand([n, 1, 8, 8], (Kind::Float, Device::Cpu)) * 0.3 + centre)
            .clamp(0.0, 1.0)
            * 255.0;
        (x.to_kind(Kind::Uint8), y)
    }

    fn fresh(seed: u64) -> (VarStore, Model) {
        tch::manual_seed(seed as i64);
        let vs = VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), &arch()).unwrap();
        (vs, model)
    }

    /// Models of a stack end where they would alone: halves of different sizes (so
    /// different steps per epoch, short last batches, different schedules), with
    /// augmentation, for SGD with Nesterov momentum and for Adam.
    #[test]
    fn each_model_of_a_stack_ends_where_it_would_alone() {
        let (x, y) = data(120);
        let halves: Vec<Vec<i64>> = vec![
            (0..120).filter(|i| i % 2 == 0).collect(),
            (0..120).filter(|i| i % 3 != 0).collect(),
            (0..45).collect(),
        ];
        let seeds = [3u64, 17, 40];
        for optimizer in [
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
            },
        ] {
            let cfg = TrainConfig {
                epochs: 3,
                batch_size: 16,
                lr: if matches!(optimizer, OptimizerConfig::Adam { .. }) {
                    0.01
                } else {
                    0.1
                },
                weight_decay: 5e-4,
                optimizer: optimizer.clone(),
                schedule: Schedule::Cosine,
                seed: 0,
                drop_last: false,
                augment: Some(AugmentConfig::digits()),
            };
            let alone: Vec<Tensor> = halves
                .iter()
                .zip(seeds)
                .map(|(rows, seed)| {
                    let (vs, model) = fresh(seed);
                    let idx = Tensor::from_slice(rows);
                    let c = TrainConfig {
                        seed,
                        ..cfg.clone()
                    };
                    train_classifier(
                        &model,
                        &vs,
                        &x.index_select(0, &idx),
                        &y.index_select(0, &idx),
                        &c,
                        &mut |_| Flow::Continue,
                    )
                    .unwrap();
                    predict_logits(&model, &x, 512, Device::Cpu)
                })
                .collect();
            let models: Vec<(VarStore, Model)> = seeds.iter().map(|&s| fresh(s)).collect();
            let members: Vec<StackMember<'_>> = models
                .iter()
                .zip(&halves)
                .zip(seeds)
                .map(|(((vs, _), rows), seed)| StackMember { vs, rows, seed })
                .collect();
            let mut events = 0;
            train_stacked(&arch(), &x, &y, &members, &cfg, &mut |_| {
                events += 1;
                Flow::Continue
            })
            .unwrap();
            // The longest half (80 rows, 5 batches of 16) sets the steps.
            assert_eq!(events, 3 * 5);
            let stores: Vec<&VarStore> = models.iter().map(|(vs, _)| vs).collect();
            let together = predict_stacked(&arch(), &stores, &x, 50).unwrap();
            for (m, ((_, model), want)) in models.iter().zip(&alone).enumerate() {
                let got = predict_logits(model, &x, 512, Device::Cpu);
                // All models' logits at once are each model's own.
                let stacked = (&together[m] - &got).abs().max().double_value(&[]);
                assert!(
                    stacked < 1e-5,
                    "model {m}: stacked logits differ by {stacked}"
                );
                let diff = (&got - want).abs().max().double_value(&[]);
                let scale = want.abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-4 * scale.max(1.0),
                    "{optimizer:?}: model {m} differs from its single run by {diff} (scale {scale})"
                );
                // And training moved it: the check is not between two untrained models.
                let (_, init) = fresh(seeds[m]);
                let moved = (&got - predict_logits(&init, &x, 512, Device::Cpu))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(moved > 100.0 * diff.max(1e-6), "model {m} moved {moved}");
            }
        }
    }

    #[test]
    fn other_architectures_and_colour_jitter_are_not_stackable() {
        let cnn = ArchConfig {
            backbone: BackboneConfig::small_cnn(1),
            head: HeadConfig::Classifier { num_classes: 10 },
        };
        let plain = TrainConfig::default();
        assert!(!stackable(&cnn, &plain, 1));
        assert!(stackable(&arch(), &plain, 1));
        let jitter = TrainConfig {
            augment: Some(AugmentConfig::contrastive()),
            ..plain
        };
        assert!(!stackable(&arch(), &jitter, 3));
        assert!(stackable(&arch(), &jitter, 1));
    }
}
