//! SCRUB (Kurmanji et al., NeurIPS 2023): the original model is a frozen
//! teacher; the student (the model being unlearned, started from the same
//! weights) alternates max-steps, which ascend the distillation divergence from
//! the teacher on forget batches, with min-steps, which descend
//! `γ·CE + α·KL(teacher ‖ student)` on retain batches. Max-steps run only in the
//! first `max_steps` epochs; the later epochs restore utility. With `rewind`
//! (SCRUB+R) the model goes back to the epoch whose forget error is closest to
//! the error on held-out examples of the forget set's classes.

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{for_each_batch, report_epoch};
use lethe_plugin_kit::forgetting::labels_of;
use lethe_plugin_kit::losses::cross_entropy;
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::teacher::{FrozenWeights, distill_kl};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{ModelKind, Objective, batch_size, evaluate, finish, prepare};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The min-step loss on a retain batch: `γ·CE(s, y) + α·DistillKL_T(s, t)`.
pub fn min_step_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    gamma: f64,
    alpha: f64,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    Ok(cross_entropy(student, labels)?
        .f_mul_scalar(gamma)?
        .f_add(&distill_kl(student, teacher, temperature)?.f_mul_scalar(alpha)?)?)
}

/// The max-step loss on a forget batch: `−DistillKL_T(s, t)`.
pub fn max_step_loss(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    Ok(distill_kl(student, teacher, temperature)?.f_neg()?)
}

/// Teacher-student unlearning.
pub struct Scrub {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    forget_batch: u32,
    max_steps: usize,
    gamma: f64,
    alpha: f64,
    kd_temperature: f64,
    rewind: bool,
}

impl Plugin for Scrub {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.scrub",
            "SCRUB",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .description(
            "Teacher-student unlearning: the original model is a frozen teacher. Each epoch \
             (up to `max_steps` of them) first takes max-steps over the forget set, ascending \
             the distillation divergence KL(teacher ‖ student) at temperature T, then min-steps \
             over the retain set, descending γ·CE + α·KL. With `rewind` (SCRUB+R, for user \
             privacy) the model goes back to the epoch whose forget error is closest to the \
             error on validation examples of the forget set's classes. Classifiers only: the \
             loss distils class probabilities. Reference settings (CIFAR-10, ResNet-18): \
             SGD lr 5e-4, momentum 0.9, weight decay 5e-4, 3 epochs, 2 with max-steps, \
             retain batch 128, forget batch 32, γ 0.99, α 0.001, T 4.",
        )
        .citation(
            "Kurmanji, Triantafillou, Hayes and Triantafillou, \"Towards Unbounded Machine \
             Unlearning\", NeurIPS 2023; reference code github.com/meghdadk/SCRUB.",
        );
        let d = params::optimiser(
            d,
            &OptimDefaults {
                lr: 5e-4,
                epochs: 3,
                batch_size: 128,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: "constant",
            },
        )
        .param(
            ParamSpec::int("forget_batch_size", "Forget batch size", 1, 8192, 32)
                .group("Method")
                .help("Batch size of the max-steps over the forget set (the reference's del_batch_size)."),
        )
        .param(
            ParamSpec::int("max_steps", "Epochs with max-steps", 0, 10_000, 2)
                .group("Method")
                .help("The first this many epochs ascend the forget divergence before their min-steps (msteps)."),
        )
        .param(
            ParamSpec::float("gamma", "Cross-entropy weight γ", 0.0, 100.0, 0.99)
                .group("Method")
                .help("Weight of the retain cross-entropy in the min-steps."),
        )
        .param(
            ParamSpec::float("alpha", "Retain KL weight α", 0.0, 100.0, 0.001)
                .group("Method")
                .help("Weight of KL(teacher ‖ student) on retain batches in the min-steps (0.5 in the reference's user-privacy runs)."),
        )
        .param(
            ParamSpec::float("kd_temperature", "Distillation temperature T", 0.01, 100.0, 4.0)
                .log_scale()
                .group("Method")
                .help("Both softmaxes are taken at logits/T; the KL is scaled by T²."),
        )
        .param(
            ParamSpec::bool("rewind", "Rewind (SCRUB+R)", false)
                .group("Method")
                .help("Go back to the epoch whose forget error is closest to the validation error on the forget classes (the reference's user-privacy variant)."),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Scrub {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            forget_batch: batch_size(p.i64("forget_batch_size")?),
            max_steps: usize::try_from(p.i64("max_steps")?).unwrap_or(0),
            gamma: p.f64("gamma")?,
            alpha: p.f64("alpha")?,
            kd_temperature: p.f64("kd_temperature")?,
            rewind: p.bool("rewind")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        if !matches!(prep.kind, ModelKind::Classifier { .. }) {
            return Err(PluginError::msg(
                "SCRUB distils class probabilities from the original model, but the model is an \
                 encoder (no class logits); use a classifier",
            ));
        }
        let objective = prep.objective(&self.training);
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let epochs = self.optim.epochs;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let teacher = FrozenWeights::capture(&prep.params)?;
        let retain_steps = steps_per_epoch(ctx, Split::Retain, bs, max)?;
        let forget_steps = steps_per_epoch(ctx, Split::Forget, self.forget_batch, max)?;
        let max_epochs = self.max_steps.min(epochs);
        let total = epochs * retain_steps + max_epochs * forget_steps;
        let mut trainer = Trainer::new(
            prep.params,
            prep.masks,
            &self.optim,
            total.div_ceil(epochs.max(1)),
        )?;
        let (t, gamma, alpha) = (self.kd_temperature, self.gamma, self.alpha);
        let mut snapshots: Vec<(usize, f64, FrozenWeights)> = Vec::new();
        for epoch in 1..=epochs {
            let lr = trainer.lr();
            let mut metrics = json!({"lr": lr});
            if epoch <= self.max_steps {
                let stats = for_each_batch(
                    ctx,
                    Split::Forget,
                    self.forget_batch,
                    true,
                    max,
                    |ctx, x, _| {
                        let (s, te) = pair(ctx, &objective, &teacher, x)?;
                        let loss = max_step_loss(&s, &te, t)?;
                        let kl = -loss.f_double_value(&[])?;
                        trainer.step(&loss)?;
                        Ok(kl)
                    },
                )?;
                metrics["forget_kl"] = json!(stats.mean_loss());
            }
            let (mut kl_sum, mut ce_sum, mut n) = (0.0, 0.0, 0i64);
            let stats = for_each_batch(ctx, Split::Retain, bs, true, max, |ctx, x, y| {
                let (s, te) = pair(ctx, &objective, &teacher, x)?;
                let loss = min_step_loss(&s, &te, y, gamma, alpha, t)?;
                let b = x.size()[0];
                kl_sum += distill_kl(&s, &te, t)?.f_double_value(&[])? * b as f64;
                ce_sum += cross_entropy(&s, y)?.f_double_value(&[])? * b as f64;
                n += b;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            metrics["retain_loss"] = json!(stats.mean_loss());
            metrics["retain_kl"] = json!(kl_sum / n.max(1) as f64);
            metrics["retain_ce"] = json!(ce_sum / n.max(1) as f64);
            if self.rewind {
                let e = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
                let error = 1.0 - e.accuracy.unwrap_or(0.0);
                metrics["forget_error"] = json!(error);
                snapshots.push((epoch, error, FrozenWeights::capture(trainer.params())?));
            }
            report_epoch(ctx, epoch, epochs, metrics);
        }
        let mut extra = json!({
            "method": "scrub", "steps": trainer.steps(), "epochs": epochs,
            "max_step_epochs": max_epochs, "gamma": gamma, "alpha": alpha,
            "kd_temperature": t, "forget_batch": self.forget_batch, "retain_batch": bs,
        });
        if self.rewind {
            extra["rewind"] = rewind(ctx, &snapshots, bs)?;
        }
        finish(ctx, &objective, bs, &before, extra)
    }
}

/// Student logits (train mode, with graph) and teacher logits (eval mode,
/// without) on the same, optionally augmented, inputs.
fn pair(
    ctx: &mut HostContext,
    objective: &Objective,
    teacher: &FrozenWeights,
    x: &Tensor,
) -> Result<(Tensor, Tensor), PluginError> {
    let x = if objective.augment {
        ctx.augment(x, objective.recipe)?
    } else {
        x.shallow_clone()
    };
    let t = teacher.forward(ctx, ModelHead::Classifier, &x)?;
    ctx.model_set_train(true)?;
    let s = ctx.model_forward(ModelHead::Classifier, &x)?;
    Ok((s, t))
}

/// SCRUB+R: the reference error is the final model's error on held-out
/// examples of the forget set's classes (validation split, else test split);
/// the model goes back to the epoch whose forget error is closest to it.
fn rewind(
    ctx: &mut HostContext,
    snapshots: &[(usize, f64, FrozenWeights)],
    bs: u32,
) -> Result<Value, PluginError> {
    let classes = labels_of(ctx, Split::Forget)?;
    let mut reference = None;
    for split in [Split::Validation, Split::Test] {
        if let Some((error, n)) = error_on_classes(ctx, split, &classes, bs)? {
            reference = Some((split, error, n));
            break;
        }
    }
    let (split, target, n) = reference.ok_or_else(|| {
        PluginError::msg(
            "rewind needs held-out examples of the forget set's classes (a validation or test \
             split), and the job has none",
        )
    })?;
    let (epoch, error, weights) = snapshots
        .iter()
        .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
        .ok_or_else(|| PluginError::msg("no epoch to rewind to"))?;
    weights.load_into_model()?;
    ctx.info(&format!(
        "rewind: reference error {target:.4} ({n} {} examples of the forget classes); \
         epoch {epoch} has forget error {error:.4}",
        split.name()
    ));
    Ok(json!({
        "reference_split": split.name(),
        "reference_error": target,
        "reference_examples": n,
        "chosen_epoch": epoch,
        "chosen_forget_error": error,
        "forget_errors": snapshots.iter().map(|s| s.1).collect::<Vec<_>>(),
    }))
}

/// Top-1 error of the model on the examples of `split` whose label is in
/// `classes`, and their number; `None` when there are none.
fn error_on_classes(
    ctx: &mut HostContext,
    split: Split,
    classes: &BTreeSet<i64>,
    bs: u32,
) -> Result<Option<(f64, i64)>, PluginError> {
    if ctx.data_len(split)?.unwrap_or(0) == 0 {
        return Ok(None);
    }
    ctx.model_set_train(false)?;
    let (mut wrong, mut n) = (0i64, 0i64);
    tch::no_grad(|| -> Result<(), PluginError> {
        for batch in ctx.batches(split, bs, false, false)? {
            ctx.check_cancelled()?;
            let (x, y) = batch?;
            let labels = Vec::<i64>::try_from(&y.f_to_device(tch::Device::Cpu)?)?;
            let keep: Vec<i64> = labels
                .iter()
                .enumerate()
                .filter(|(_, l)| classes.contains(l))
                .map(|(i, _)| i as i64)
                .collect();
            if keep.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(&keep).f_to_device(x.device())?;
            let (x, y) = (x.f_index_select(0, &idx)?, y.f_index_select(0, &idx)?);
            let logits = ctx.model_forward(ModelHead::Classifier, &x)?;
            wrong += logits
                .f_argmax(-1, false)?
                .f_ne_tensor(&y)?
                .f_sum(DType::Int64)?
                .f_int64_value(&[])?;
            n += keep.len() as i64;
        }
        Ok(())
    })?;
    Ok((n > 0).then(|| (wrong as f64 / n as f64, n)))
}

lethe_plugin_api::declare_plugin!(Scrub);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// Both step losses on a fixed batch against SCRUB's reference definitions
    /// (RepDistiller's DistillKL, `gamma * loss_cls + alpha * loss_div` and
    /// `-loss_div`) written in PyTorch.
    #[test]
    fn step_losses_match_pytorch() {
        tch::manual_seed(11);
        let o = (DType::Float, Device::Cpu);
        let s = Tensor::randn([6, 5], o) * 3.0;
        let t = Tensor::randn([6, 5], o) * 3.0;
        let y = Tensor::from_slice(&[0i64, 4, 2, 2, 1, 3]);
        let (gamma, alpha, temp) = (0.99, 0.37, 4.0);
        let min = min_step_loss(&s, &t, &y, gamma, alpha, temp).unwrap();
        let max = max_step_loss(&s, &t, temp).unwrap();
        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
s = torch.tensor(d["s"], dtype=torch.float64).view(6, 5)
t = torch.tensor(d["t"], dtype=torch.float64).view(6, 5)
y = torch.tensor(d["y"]).long()
T = d["T"]
def distill_kl(ys, yt):
    p_s = F.log_softmax(ys / T, dim=1)
    p_t = F.softmax(yt / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * T ** 2 / ys.shape[0]
loss_cls = F.cross_entropy(s, y)
loss_div = distill_kl(s, t)
print(json.dumps({"min": (d["gamma"] * loss_cls + d["alpha"] * loss_div).item(),
                  "max": (-loss_div).item()}))
"#,
            &json!({"s": values(&s), "t": values(&t), "y": values(&y),
                    "T": temp, "gamma": gamma, "alpha": alpha}),
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        let (min, max) = (min.double_value(&[]), max.double_value(&[]));
        assert!(
            close(min, theirs["min"].as_f64().unwrap()),
            "{min} vs {}",
            theirs["min"]
        );
        assert!(
            close(max, theirs["max"].as_f64().unwrap()),
            "{max} vs {}",
            theirs["max"]
        );
        assert!(max < 0.0);
    }

    #[test]
    fn the_max_step_pushes_the_student_away_from_the_teacher() {
        let t = Tensor::from_slice(&[2.0f32, 0.0, -1.0]).view([1, 3]);
        let s = (t.detach().copy() + Tensor::from_slice(&[0.1f32, 0.0, 0.0]).view([1, 3]))
            .set_requires_grad(true);
        let loss = max_step_loss(&s, &t, 4.0).unwrap();
        loss.backward();
        // Descending −KL moves the student's logits further from the teacher's.
        let moved = (&s - s.grad() * 10.0).detach();
        let kl = |x: &Tensor| distill_kl(x, &t, 4.0).unwrap().double_value(&[]);
        assert!(kl(&moved) > kl(&s.detach()));
    }
}
