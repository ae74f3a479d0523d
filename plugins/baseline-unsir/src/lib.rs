//! UNSIR (Tarun, Chundawat, Mandal and Kankanhalli, IEEE TNNLS 2023): for each
//! class to forget, learn an error-maximising noise batch (Adam on the noise,
//! maximising the model's cross-entropy for that class with an L2 penalty on
//! the noise); then *impair*: one pass of cross-entropy training on the noise
//! (labelled with its class) mixed with retain examples, at a high rate; then
//! *repair*: one pass on the retain examples alone. Defined for class-wise
//! forgetting only: the plugin refuses a forget set that does not consist of
//! whole classes.

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::adam::{Adam, AdamConfig};
use lethe_plugin_kit::epoch::{for_each_batch, mixed_batch_sizes, report_epoch};
use lethe_plugin_kit::forgetting::labels_of;
use lethe_plugin_kit::losses::cross_entropy;
use lethe_plugin_kit::optim::{Masks, Schedule, SgdConfig};
use lethe_plugin_kit::params::{self, Optim, Prune, Training};
use lethe_plugin_kit::train::Trainer;
use lethe_plugin_kit::{ModelKind, batch_size, evaluate, finish, prepare};
use serde_json::json;
use std::collections::BTreeSet;

/// The noise objective of one step: `−CE(logits, class) + w·mean_i Σ noise_i²`
/// (the reference's `-F.cross_entropy(outputs, labels) + 0.1 *
/// torch.mean(torch.sum(torch.square(inputs), [1, 2, 3]))`).
pub fn noise_loss(
    logits: &Tensor,
    class: i64,
    noise: &Tensor,
    l2_weight: f64,
) -> Result<Tensor, PluginError> {
    let n = logits.size().first().copied().unwrap_or(0);
    let labels = Tensor::f_full([n], class, (DType::Int64, logits.device()))?;
    let dims: Vec<i64> = (1..noise.dim() as i64).collect();
    let l2 = noise
        .f_square()?
        .f_sum_dim_intlist(dims.as_slice(), false, DType::Float)?
        .f_mean(DType::Float)?;
    Ok(cross_entropy(logits, &labels)?
        .f_neg()?
        .f_add(&l2.f_mul_scalar(l2_weight)?)?)
}

/// The classes of the forget set when it consists of whole classes (no retain
/// example has one of them), else the message refusing it.
pub fn forget_classes(forget: &BTreeSet<i64>, retain: &BTreeSet<i64>) -> Result<Vec<i64>, String> {
    if forget.is_empty() {
        return Err("the forget set is empty".into());
    }
    let shared: Vec<i64> = forget.intersection(retain).copied().collect();
    if shared.is_empty() {
        Ok(forget.iter().copied().collect())
    } else {
        Err(format!(
            "UNSIR is defined for class-wise forgetting only: the forget set must hold every \
             training example of its classes, but the retain set also has examples of class(es) \
             {shared:?}. Forget whole classes (`lethe forget make --class K`), or use a method \
             for random forgetting (e.g. SCRUB, NegGrad+, SalUn)"
        ))
    }
}

/// UNSIR.
pub struct Unsir {
    training: Training,
    prune: Prune,
    seed: u64,
    batch_size: u32,
    noise_batch: i64,
    noise_steps: usize,
    noise_lr: f64,
    noise_l2: f64,
    noise_copies: i64,
    retain_samples: u64,
    impair_lr: f64,
    repair_lr: f64,
}

impl Plugin for Unsir {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.unsir",
            "UNSIR",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .whole_classes_only()
        .description(
            "Class-wise forgetting only (refuses a forget set that is not whole classes). For \
             each forgotten class learns a batch of error-maximising noise (Adam on the noise, \
             minimising −CE(model(noise), class) + 0.1·mean‖noise‖², model in eval mode); \
             impair: one pass of cross-entropy training (Adam) on the noise, labelled with its \
             class and repeated `noise_copies` times, shuffled with `retain_samples` retain \
             examples; repair: one pass on those retain examples alone. Classifiers only. \
             Reference settings (CIFAR-10, ResNet-18): noise batch 256, 5×8 noise steps at \
             lr 0.1, 20 copies, 1000 retain examples per remaining class, impair lr 0.02, \
             repair lr 0.01, batch 256.",
        )
        .citation(
            "Tarun, Chundawat, Mandal and Kankanhalli, \"Fast Yet Effective Machine \
             Unlearning\", IEEE TNNLS 2023; reference code \
             github.com/vikram2000b/Fast-Machine-Unlearning.",
        )
        .param(ParamSpec::int("batch_size", "Batch size", 2, 8192, 256).group("Optimiser"))
        .param(
            ParamSpec::float("impair_lr", "Impair rate", 1e-7, 10.0, 0.02)
                .log_scale()
                .group("Optimiser"),
        )
        .param(
            ParamSpec::float("repair_lr", "Repair rate", 1e-7, 10.0, 0.01)
                .log_scale()
                .group("Optimiser"),
        )
        .param(
            ParamSpec::int("noise_batch", "Noise batch", 1, 8192, 256)
                .group("Noise")
                .help("Noise examples learnt per forgotten class."),
        )
        .param(
            ParamSpec::int("noise_steps", "Noise steps", 1, 100_000, 40)
                .group("Noise")
                .help("Adam steps on each class's noise (the reference's 5 epochs × 8 steps)."),
        )
        .param(
            ParamSpec::float("noise_lr", "Noise rate", 1e-6, 100.0, 0.1)
                .log_scale()
                .group("Noise"),
        )
        .param(
            ParamSpec::float("noise_l2", "Noise L2 weight", 0.0, 100.0, 0.1)
                .group("Noise")
                .help("Weight of the mean squared norm of the noise in its objective."),
        )
        .param(
            ParamSpec::int("noise_copies", "Noise copies", 1, 10_000, 20)
                .group("Noise")
                .help("Times each noise batch appears in the impair pass (the reference's num_batches)."),
        )
        .param(
            ParamSpec::int("retain_samples", "Retain examples", 0, 100_000_000, 0)
                .group("Data")
                .help("Retain examples used by impair and repair (a random subset); 0: 1000 per remaining class, as the reference."),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Unsir {
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            batch_size: batch_size(p.i64("batch_size")?),
            noise_batch: p.i64("noise_batch")?.max(1),
            noise_steps: usize::try_from(p.i64("noise_steps")?).unwrap_or(1),
            noise_lr: p.f64("noise_lr")?,
            noise_l2: p.f64("noise_l2")?,
            noise_copies: p.i64("noise_copies")?.max(1),
            retain_samples: u64::try_from(p.i64("retain_samples")?).unwrap_or(0),
            impair_lr: p.f64("impair_lr")?,
            repair_lr: p.f64("repair_lr")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let forget_labels = labels_of(ctx, Split::Forget)?;
        let retain_labels = labels_of(ctx, Split::Retain)?;
        let classes = forget_classes(&forget_labels, &retain_labels).map_err(PluginError::msg)?;
        let prep = prepare(ctx, self.seed, &self.prune)?;
        if !matches!(prep.kind, ModelKind::Classifier { .. }) {
            return Err(PluginError::msg(
                "UNSIR learns noise that maximises a class's cross-entropy, but the model is an \
                 encoder (no class logits); use a classifier",
            ));
        }
        let objective = prep.objective(&self.training);
        let bs = self.batch_size;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;

        // Noise, one batch per class, shaped like the inputs.
        let mut probe = ctx.batches(Split::Retain, 1, false, false)?;
        let (x0, _) = probe
            .next()
            .ok_or_else(|| PluginError::msg("the retain split is empty"))??;
        drop(probe);
        let mut shape = x0.size();
        shape[0] = self.noise_batch;
        let mut noises = Vec::with_capacity(classes.len());
        for (k, &class) in classes.iter().enumerate() {
            let (noise, last) = self.learn_noise(ctx, &shape, x0.device(), class)?;
            ctx.progress_metrics(
                0.3 * (k + 1) as f64 / classes.len() as f64,
                &format!("noise for class {class}"),
                &json!({"class": class, "noise_loss": last}),
            );
            noises.push((class, noise));
        }
        let noise_x = Tensor::f_cat(&noises.iter().map(|(_, n)| n).collect::<Vec<_>>(), 0)?;
        let noise_y = Tensor::f_cat(
            &noises
                .iter()
                .map(|(c, n)| Tensor::f_full([n.size()[0]], *c, (DType::Int64, n.device())))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        let pool = noise_x.size()[0];
        let noise_total = u64::try_from(pool * self.noise_copies).unwrap_or(u64::MAX);

        let n_r = ctx.data_len(Split::Retain)?.unwrap_or(0);
        let retain_used = if self.retain_samples > 0 {
            self.retain_samples.min(n_r)
        } else {
            (1000 * retain_labels.len() as u64).min(n_r)
        };
        let max = self.training.max_batches;
        let cap = |steps: u64| {
            let s = usize::try_from(steps).unwrap_or(usize::MAX);
            if max > 0 { s.min(max) } else { s }
        };

        // Impair: noise mixed with retain examples.
        let (br, bn) = mixed_batch_sizes(bs, retain_used, noise_total);
        let impair_steps = cap((retain_used + noise_total).div_ceil(u64::from(bs)));
        let mut trainer = Trainer::new(
            clone_params(&prep.params),
            clone_masks(&prep.masks),
            &adam(self.impair_lr, bs),
            impair_steps,
        )?;
        let mut order = Tensor::f_randperm(pool, (DType::Int64, noise_x.device()))?;
        let mut cursor = 0i64;
        ctx.model_set_train(true)?;
        let impair = for_each_batch(ctx, Split::Retain, br, true, impair_steps, |ctx, x, y| {
            let mut idx = Vec::with_capacity(bn as usize);
            for _ in 0..bn {
                if cursor == pool {
                    order = Tensor::f_randperm(pool, (DType::Int64, noise_x.device()))?;
                    cursor = 0;
                }
                idx.push(order.f_int64_value(&[cursor])?);
                cursor += 1;
            }
            let idx = Tensor::from_slice(&idx).f_to_device(noise_x.device())?;
            let x = if objective.augment {
                ctx.augment(x, objective.recipe)?
            } else {
                x.shallow_clone()
            };
            let inputs = Tensor::f_cat(&[&x, &noise_x.f_index_select(0, &idx)?], 0)?;
            let labels = Tensor::f_cat(&[y, &noise_y.f_index_select(0, &idx)?], 0)?;
            ctx.model_set_train(true)?;
            let loss = cross_entropy(&ctx.model_forward(ModelHead::Classifier, &inputs)?, &labels)?;
            let value = loss.f_double_value(&[])?;
            trainer.step(&loss)?;
            Ok(value)
        })?;
        let after_impair = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        report_epoch(
            ctx,
            1,
            2,
            json!({"phase": "impair", "loss": impair.mean_loss(), "lr": self.impair_lr,
                   "forget_acc": after_impair.accuracy}),
        );

        // Repair: the retain examples alone.
        let repair_steps = cap(retain_used.div_ceil(u64::from(bs)));
        let mut trainer = Trainer::new(
            clone_params(&prep.params),
            clone_masks(&prep.masks),
            &adam(self.repair_lr, bs),
            repair_steps,
        )?;
        ctx.model_set_train(true)?;
        let repair = for_each_batch(ctx, Split::Retain, bs, true, repair_steps, |ctx, x, y| {
            ctx.model_set_train(true)?;
            let loss = objective.loss(ctx, x, y)?;
            let value = loss.f_double_value(&[])?;
            trainer.step(&loss)?;
            Ok(value)
        })?;
        report_epoch(
            ctx,
            2,
            2,
            json!({"phase": "repair", "loss": repair.mean_loss(), "lr": self.repair_lr}),
        );
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({
                "method": "unsir", "classes": classes, "noise_examples": pool,
                "noise_in_impair": noise_total, "retain_used": retain_used,
                "impair_steps": impair.batches, "repair_steps": repair.batches,
                "impair_batch": {"retain": br, "noise": bn},
                "forget_after_impair_acc": after_impair.accuracy,
            }),
        )
    }
}

impl Unsir {
    /// Learns the noise batch of `class`; returns it (detached) and its last loss.
    fn learn_noise(
        &self,
        ctx: &mut HostContext,
        shape: &[i64],
        device: tch::Device,
        class: i64,
    ) -> Result<(Tensor, f64), PluginError> {
        let noise = Tensor::f_randn(shape, (DType::Float, device))?.set_requires_grad(true);
        let mut opt = Adam::new(
            vec![("noise".into(), noise.shallow_clone())],
            AdamConfig::default(),
        );
        // Eval mode, as the reference (its model was last switched to eval).
        ctx.model_set_train(false)?;
        let mut last = f64::NAN;
        for _ in 0..self.noise_steps {
            ctx.check_cancelled()?;
            let logits = ctx.model_forward(ModelHead::Classifier, &noise)?;
            let loss = noise_loss(&logits, class, &noise, self.noise_l2)?;
            last = loss.f_double_value(&[])?;
            opt.zero_grad()?;
            loss.f_backward()?;
            opt.step(self.noise_lr)?;
        }
        // The model's parameters received gradients too; the trainers zero them
        // before their first step.
        let noise = tch::no_grad(|| noise.f_detach_copy())?;
        Ok((noise, last))
    }
}

/// Adam at `lr` with PyTorch's defaults (no weight decay), constant rate.
fn adam(lr: f64, bs: u32) -> Optim {
    Optim {
        lr,
        epochs: 1,
        batch_size: bs,
        sgd: SgdConfig {
            momentum: 0.0,
            weight_decay: 0.0,
        },
        adam: Some(AdamConfig::default()),
        schedule: Schedule::Constant,
    }
}

fn clone_params(params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, p)| (n.clone(), p.shallow_clone()))
        .collect()
}

fn clone_masks(masks: &Masks) -> Masks {
    masks
        .iter()
        .map(|m| m.as_ref().map(Tensor::shallow_clone))
        .collect()
}

lethe_plugin_api::declare_plugin!(Unsir);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// The noise objective on a fixed noise batch through a fixed linear model,
    /// and the noise after three Adam steps on it, against the reference's loop
    /// in PyTorch (`torch.optim.Adam(noise, lr)`).
    #[test]
    fn the_noise_objective_and_its_steps_match_pytorch() {
        tch::manual_seed(9);
        let o = (DType::Float, Device::Cpu);
        let w = Tensor::randn([3, 2 * 2 * 2], o);
        let b = Tensor::randn([3], o);
        let noise0 = Tensor::randn([4, 2, 2, 2], o);
        let noise = noise0.copy().set_requires_grad(true);
        let mut opt = Adam::new(
            vec![("n".into(), noise.shallow_clone())],
            AdamConfig::default(),
        );
        let mut losses = Vec::new();
        for _ in 0..3 {
            let logits = noise.flatten(1, -1).matmul(&w.tr()) + &b;
            let loss = noise_loss(&logits, 2, &noise, 0.1).unwrap();
            losses.push(loss.double_value(&[]));
            opt.zero_grad().unwrap();
            loss.backward();
            opt.step(0.1).unwrap();
        }
        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
W = torch.tensor(d["w"]).view(3, 8); b = torch.tensor(d["b"])
noise = torch.nn.Parameter(torch.tensor(d["noise"]).view(4, 2, 2, 2))
opt = torch.optim.Adam([noise], lr=0.1)
losses = []
for _ in range(3):
    inputs = noise
    outputs = inputs.flatten(1) @ W.T + b
    labels = torch.zeros(4) + 2
    loss = -F.cross_entropy(outputs, labels.long()) + 0.1 * torch.mean(torch.sum(torch.square(inputs), [1, 2, 3]))
    losses.append(loss.item())
    opt.zero_grad(); loss.backward(); opt.step()
print(json.dumps({"losses": losses, "noise": noise.detach().flatten().tolist()}))
"#,
            &json!({"w": values(&w), "b": values(&b), "noise": values(&noise0)}),
        );
        let want: Vec<f64> = theirs["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (g, w) in losses.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{losses:?} vs {want:?}"
            );
        }
        let want: Vec<f64> = theirs["noise"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (g, w) in values(&noise).iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5, "noise after three steps differs");
        }
    }

    #[test]
    fn only_whole_classes_are_accepted() {
        let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
        assert_eq!(
            forget_classes(&set(&[3, 5]), &set(&[0, 1, 2, 4])).unwrap(),
            vec![3, 5]
        );
        let err = forget_classes(&set(&[3, 5]), &set(&[0, 3])).unwrap_err();
        assert!(
            err.contains("class-wise forgetting only") && err.contains("[3]"),
            "{err}"
        );
        assert!(forget_classes(&set(&[]), &set(&[1])).is_err());
    }
}
