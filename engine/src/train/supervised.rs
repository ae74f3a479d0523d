//! Supervised training with cross-entropy, and the evaluation helpers every metric uses.

use tch::nn::{ModuleT, Optimizer, VarStore};
use tch::{Device, Kind, Tensor};

use super::augment::to_unit_float;
use super::batches;
use super::events::{EpochMeter, Flow, TrainEvent, TrainSummary};
use super::{TrainConfig, TrainError};

/// The shared epoch/step loop: batch plan, learning-rate schedule, backward step,
/// progress events, cancellation and the non-finite-loss guard.
///
/// `step_loss` receives the indices of one batch (on `device`) and returns the loss to
/// minimise.
pub fn run_epochs(
    n: i64,
    cfg: &TrainConfig,
    opt: &mut Optimizer,
    device: Device,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
    step_loss: &mut dyn FnMut(&Tensor) -> Result<Tensor, TrainError>,
) -> Result<TrainSummary, TrainError> {
    cfg.validate()?;
    if n == 0 {
        return Err(TrainError::Empty("training"));
    }
    // Every step frees what the next one allocates again: keep it in the heap.
    super::heap::keep_freed_memory();
    let start = std::time::Instant::now();
    let steps_per_epoch = batches::plan(n, cfg.batch_size, false, cfg.drop_last, Device::Cpu).len();
    let total = steps_per_epoch * cfg.epochs;
    let mut global = 0usize;
    let mut samples = 0usize;
    let mut final_loss = 0.0;
    let mut stopped = false;
    let mut epochs_run = 0;
    for epoch in 1..=cfg.epochs {
        epochs_run = epoch;
        let mut meter = EpochMeter::new();
        let plan = batches::plan(n, cfg.batch_size, true, cfg.drop_last, device);
        for (i, idx) in plan.iter().enumerate() {
            let lr = cfg.schedule.rate(cfg.lr, global, total, steps_per_epoch);
            opt.set_lr(lr);
            let loss = step_loss(idx)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(TrainError::NonFinite { epoch, step: i + 1 });
            }
            opt.backward_step(&loss);
            meter.add(value, idx.size()[0] as usize);
            global += 1;
            let event = TrainEvent {
                epoch,
                epochs: cfg.epochs,
                step: i + 1,
                steps: plan.len(),
                loss: meter.mean_loss(),
                lr,
                samples_per_sec: meter.rate(),
                metrics: Vec::new(),
            };
            if on_event(&event) == Flow::Stop {
                stopped = true;
                break;
            }
        }
        samples += meter.samples();
        final_loss = meter.mean_loss();
        if stopped {
            break;
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

fn check_pair(images: &Tensor, labels: &Tensor) -> Result<i64, TrainError> {
    let n = images.size().first().copied().unwrap_or(0);
    let m = labels.size().first().copied().unwrap_or(0);
    if n != m {
        return Err(TrainError::Invalid(format!("{n} images but {m} labels")));
    }
    Ok(n)
}

/// Trains `model` (images → logits) with cross-entropy on `images` (`u8` or float in
/// `[0,1]`, `[N,C,H,W]`) and `labels` (`[N]`, int64).
pub fn train_classifier(
    model: &dyn ModuleT,
    vs: &VarStore,
    images: &Tensor,
    labels: &Tensor,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<TrainSummary, TrainError> {
    let n = check_pair(images, labels)?;
    tch::manual_seed(cfg.seed as i64);
    let device = vs.device();
    // Keep the compact dtype on the device; convert per batch.
    let images = images.to_device(device);
    let labels = labels.to_device(device).to_kind(Kind::Int64);
    let mut opt = cfg.build_optimizer(vs)?;
    let mut step = |idx: &Tensor| -> Result<Tensor, TrainError> {
        let x = to_unit_float(&images.index_select(0, idx));
        let x = match &cfg.augment {
            Some(a) => a.apply(&x),
            None => x,
        };
        let y = labels.index_select(0, idx);
        Ok(model.forward_t(&x, true).cross_entropy_for_logits(&y))
    };
    run_epochs(n, cfg, &mut opt, device, on_event, &mut step)
}

/// Runs `f` over `images` in eval mode without gradients, batch by batch, and
/// concatenates the outputs (on the device of `device`).
pub fn map_batches(
    images: &Tensor,
    batch: i64,
    device: Device,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = images.size().first().copied().unwrap_or(0);
    let mut outs = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = to_unit_float(&images.narrow(0, start, len).to_device(device));
        outs.push(f(&x));
        start += len;
    }
    if outs.is_empty() {
        return Tensor::zeros([0], (Kind::Float, device));
    }
    Tensor::cat(&outs, 0)
}

/// Logits of `model` in eval mode.
pub fn predict_logits(model: &dyn ModuleT, images: &Tensor, batch: i64, device: Device) -> Tensor {
    map_batches(images, batch, device, &|x| model.forward_t(x, false))
}

/// Top-1 accuracy of logits against labels, in `[0, 1]`; 0 for an empty set.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    let n = labels.size().first().copied().unwrap_or(0);
    if n == 0 {
        return 0.0;
    }
    let pred = logits.argmax(1, false);
    pred.eq_tensor(&labels.to_device(pred.device()).to_kind(Kind::Int64))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

/// Accuracy of `model` on a labelled set.
pub fn evaluate(model: &dyn ModuleT, images: &Tensor, labels: &Tensor, device: Device) -> f64 {
    accuracy(&predict_logits(model, images, 512, device), labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::OptimizerConfig;
    use tch::nn;

    /// Two separable blobs: a real learning problem small enough for a unit test.
    fn blobs(n: i64) -> (Tensor, Tensor) {
        tch::manual_seed(11);
        let y = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(2);
        let centre = (y.to_kind(Kind::Float) * 2.0 - 1.0).view([n, 1, 1, 1]);
        let x =
            (Tensor::randn([n, 1, 2, 2], (Kind::Float, Device::Cpu)) * 0.3 + centre * 0.5 + 0.5)
                .clamp(0.0, 1.0);
        (x, y)
    }

    fn mlp(vs: &VarStore) -> impl ModuleT + use<> {
        let p = vs.root();
        nn::seq_t()
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(&p / "l1", 4, 16, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&p / "l2", 16, 2, Default::default()))
    }

    #[test]
    fn training_learns_and_reports_progress() {
        let (x, y) = blobs(256);
        let vs = VarStore::new(Device::Cpu);
        let model = mlp(&vs);
        let before = evaluate(&model, &x, &y, Device::Cpu);
        let cfg = TrainConfig {
            epochs: 5,
            batch_size: 32,
            lr: 0.1,
            weight_decay: 0.0,
            optimizer: OptimizerConfig::default(),
            ..TrainConfig::default()
        };
        let mut events = Vec::new();
        let summary = train_classifier(&model, &vs, &x, &y, &cfg, &mut |e| {
            events.push(e.clone());
            Flow::Continue
        })
        .unwrap();
        let after = evaluate(&model, &x, &y, Device::Cpu);
        assert!(after > 0.95, "accuracy {before} -> {after}");
        assert_eq!(events.len(), 5 * 8);
        assert_eq!(summary.epochs_run, 5);
        assert!(events.last().unwrap().loss < events[0].loss);
    }

    #[test]
    fn same_seed_same_weights() {
        let (x, y) = blobs(64);
        let run = || {
            tch::manual_seed(5);
            let vs = VarStore::new(Device::Cpu);
            let model = mlp(&vs);
            let cfg = TrainConfig {
                epochs: 2,
                batch_size: 16,
                seed: 9,
                ..TrainConfig::default()
            };
            train_classifier(&model, &vs, &x, &y, &cfg, &mut |_| Flow::Continue).unwrap();
            predict_logits(&model, &x, 64, Device::Cpu)
        };
        assert!(run().equal(&run()));
    }

    #[test]
    fn stop_request_ends_the_run() {
        let (x, y) = blobs(64);
        let vs = VarStore::new(Device::Cpu);
        let model = mlp(&vs);
        let cfg = TrainConfig {
            epochs: 50,
            batch_size: 16,
            ..TrainConfig::default()
        };
        let mut n = 0;
        let s = train_classifier(&model, &vs, &x, &y, &cfg, &mut |_| {
            n += 1;
            if n == 3 { Flow::Stop } else { Flow::Continue }
        })
        .unwrap();
        assert!(s.stopped);
        assert_eq!(n, 3);
    }

    #[test]
    fn mismatched_labels_and_divergence_are_errors() {
        let (x, y) = blobs(16);
        let vs = VarStore::new(Device::Cpu);
        let model = mlp(&vs);
        let cfg = TrainConfig::default();
        let e = train_classifier(&model, &vs, &x, &y.narrow(0, 0, 3), &cfg, &mut |_| {
            Flow::Continue
        });
        assert!(matches!(e, Err(TrainError::Invalid(_))));
        let huge = TrainConfig {
            lr: 1e30,
            epochs: 3,
            batch_size: 4,
            ..TrainConfig::default()
        };
        let e = train_classifier(&model, &vs, &x, &y, &huge, &mut |_| Flow::Continue);
        assert!(matches!(e, Err(TrainError::NonFinite { .. })), "{e:?}");
    }
}
