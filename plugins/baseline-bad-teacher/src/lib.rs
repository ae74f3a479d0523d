//! Bad Teacher (Chundawat, Tarun, Mandal and Kankanhalli, AAAI 2023): the
//! student (the model, started from the original weights) is distilled from two
//! teachers at once: on retain examples from the competent teacher (the
//! original model), on forget examples from an incompetent one (a randomly
//! initialised model of the same architecture). One pass over the forget set
//! mixed with a random fraction of the retain set.

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{Cycle, for_each_batch, mixed_batch_sizes, report_epoch};
use lethe_plugin_kit::optim::{Schedule, SgdConfig};
use lethe_plugin_kit::params::{self, Optim, Prune, Training};
use lethe_plugin_kit::teacher::FrozenWeights;
use lethe_plugin_kit::train::Trainer;
use lethe_plugin_kit::{AdamConfig, ModelKind, batch_size, evaluate, finish, prepare};
use serde_json::json;

/// The reference's `UnlearnerLoss`: the teacher distribution is
/// `softmax(incompetent/T)` on forget rows (`is_forget` = 1) and
/// `softmax(competent/T)` on retain rows, and the loss is PyTorch's
/// `F.kl_div(log_softmax(student/T), teacher)` with its default `mean`
/// reduction (the mean over all `B × C` entries).
pub fn bad_teacher_loss(
    student: &Tensor,
    competent: &Tensor,
    incompetent: &Tensor,
    is_forget: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    let f = is_forget.f_to_kind(DType::Float)?.f_unsqueeze(1)?;
    let good = competent
        .f_div_scalar(temperature)?
        .f_softmax(-1, DType::Float)?;
    let bad = incompetent
        .f_div_scalar(temperature)?
        .f_softmax(-1, DType::Float)?;
    let teacher = f
        .f_mul(&bad)?
        .f_add(&f.f_neg()?.f_add_scalar(1.0)?.f_mul(&good)?)?;
    let log_s = student
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, DType::Float)?;
    let pointwise = teacher.f_xlogy(&teacher)?.f_sub(&teacher.f_mul(&log_s)?)?;
    Ok(pointwise.f_mean(DType::Float)?)
}

/// PyTorch's default initialisation of a module's parameters, from their names
/// and shapes: weights of 2+ dimensions `U(±1/√fan_in)` (Kaiming uniform with
/// `a = √5`), their layer's bias `U(±1/√fan_in)`, 1-D weights (normalisation
/// scales) 1 and their biases 0.
pub fn default_init(params: &[(String, Tensor)]) -> Result<Vec<Tensor>, PluginError> {
    let weight_of = |bias: &str| -> Option<&Tensor> {
        let stem = bias.strip_suffix("bias")?;
        params
            .iter()
            .find(|(n, _)| n.strip_suffix("weight") == Some(stem))
            .map(|(_, t)| t)
    };
    let fan_in = |w: &Tensor| -> f64 {
        let s = w.size();
        s.iter().skip(1).product::<i64>().max(1) as f64
    };
    tch::no_grad(|| {
        params
            .iter()
            .map(|(name, p)| {
                let opts = (DType::Float, p.device());
                let uniform = |bound: f64| -> Result<Tensor, PluginError> {
                    Ok(Tensor::f_rand(p.size(), opts)?
                        .f_mul_scalar(2.0 * bound)?
                        .f_sub_scalar(bound)?)
                };
                let t = if p.dim() >= 2 {
                    uniform(1.0 / fan_in(p).sqrt())?
                } else if name.ends_with("bias") {
                    match weight_of(name) {
                        Some(w) if w.dim() >= 2 => uniform(1.0 / fan_in(w).sqrt())?,
                        _ => Tensor::f_zeros(p.size(), opts)?,
                    }
                } else {
                    Tensor::f_ones(p.size(), opts)?
                };
                Ok(t.f_to_kind(p.kind())?)
            })
            .collect()
    })
}

/// Competent and incompetent teachers.
pub struct BadTeacher {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    retain_fraction: f64,
    kd_temperature: f64,
}

impl Plugin for BadTeacher {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.bad-teacher",
            "Bad Teacher",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .description(
            "Distils the model from two teachers at once: on retain examples from the competent \
             teacher (the original model), on forget examples from an incompetent teacher (a \
             randomly initialised model of the same architecture, PyTorch's default \
             initialisation drawn from the seed). Batches mix the forget set with a random \
             `retain_fraction` of the retain set (one pass over both per epoch); the loss is \
             KL(teacher ‖ student) at temperature T, averaged over all batch × class entries \
             as the reference's F.kl_div does. Adam. Classifiers only: the method distils class \
             probabilities. Reference settings: Adam lr 1e-4, 1 epoch, batch 256, 30 % of the \
             retain set, T = 1.",
        )
        .citation(
            "Chundawat, Tarun, Mandal and Kankanhalli, \"Can Bad Teaching Induce Forgetting? \
             Unlearning in Deep Networks Using an Incompetent Teacher\", AAAI 2023; reference \
             code github.com/vikram2000b/bad-teaching-unlearning.",
        )
        .param(
            ParamSpec::float("lr", "Learning rate", 1e-7, 10.0, 1e-4)
                .log_scale()
                .group("Optimiser")
                .help("Adam's rate."),
        )
        .param(ParamSpec::int("epochs", "Epochs", 1, 10_000, 1).group("Optimiser"))
        .param(ParamSpec::int("batch_size", "Batch size", 2, 8192, 256).group("Optimiser"))
        .param(
            ParamSpec::float("retain_fraction", "Retain fraction", 0.0, 1.0, 0.3)
                .group("Method")
                .help("Share of the retain set mixed with the forget set each epoch (a fresh random subset per epoch)."),
        )
        .param(
            ParamSpec::float("kd_temperature", "Distillation temperature T", 0.01, 100.0, 1.0)
                .log_scale()
                .group("Method"),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(BadTeacher {
            optim: Optim {
                lr: p.f64("lr")?,
                epochs: usize::try_from(p.i64("epochs")?.max(1)).unwrap_or(1),
                batch_size: batch_size(p.i64("batch_size")?),
                sgd: SgdConfig {
                    momentum: 0.0,
                    weight_decay: 0.0,
                },
                adam: Some(AdamConfig::default()),
                schedule: Schedule::Constant,
            },
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            retain_fraction: p.f64("retain_fraction")?,
            kd_temperature: p.f64("kd_temperature")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        if !matches!(prep.kind, ModelKind::Classifier { .. }) {
            return Err(PluginError::msg(
                "Bad Teacher distils class probabilities from its two teachers, but the model is \
                 an encoder (no class logits); use a classifier",
            ));
        }
        let objective = prep.objective(&self.training);
        let bs = self.optim.batch_size;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let competent = FrozenWeights::capture(&prep.params)?;
        let incompetent = FrozenWeights::from_values(&prep.params, default_init(&prep.params)?)?;
        let n_r = ctx.data_len(Split::Retain)?.unwrap_or(0);
        let n_f = ctx.data_len(Split::Forget)?.unwrap_or(0);
        let retain_used = (self.retain_fraction * n_r as f64).round() as u64;
        let (br, bf) = mixed_batch_sizes(bs, retain_used, n_f);
        let mut steps = usize::try_from((retain_used + n_f).div_ceil(u64::from(bs))).unwrap_or(1);
        if self.training.max_batches > 0 {
            steps = steps.min(self.training.max_batches);
        }
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let mut forget = Cycle::new(Split::Forget, bf);
        let t = self.kd_temperature;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            let stats = for_each_batch(ctx, Split::Retain, br, true, steps, |ctx, x, _| {
                let (xf, _) = forget.next_batch(ctx)?;
                let x = Tensor::f_cat(&[x, &xf], 0)?;
                let x = if objective.augment {
                    ctx.augment(&x, objective.recipe)?
                } else {
                    x
                };
                let good = competent.forward(ctx, ModelHead::Classifier, &x)?;
                let bad = incompetent.forward(ctx, ModelHead::Classifier, &x)?;
                ctx.model_set_train(true)?;
                let s = ctx.model_forward(ModelHead::Classifier, &x)?;
                let is_forget = Tensor::f_cat(
                    &[
                        Tensor::f_zeros([x.size()[0] - xf.size()[0]], (DType::Float, x.device()))?,
                        Tensor::f_ones([xf.size()[0]], (DType::Float, x.device()))?,
                    ],
                    0,
                )?;
                let loss = bad_teacher_loss(&s, &good, &bad, &is_forget, t)?;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({"loss": stats.mean_loss(), "lr": self.optim.lr}),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "bad-teacher", "steps": trainer.steps(), "retain_batch": br,
                   "forget_batch": bf, "retain_used": retain_used, "kd_temperature": t}),
        )
    }
}

lethe_plugin_api::declare_plugin!(BadTeacher);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// The loss on a fixed batch (three retain rows, two forget rows) against the
    /// reference's `UnlearnerLoss` run in PyTorch, at T = 1 and T = 2.5; one
    /// teacher row saturated so that its softmax underflows to exact zeros.
    #[test]
    fn the_loss_matches_the_reference_unlearner_loss() {
        tch::manual_seed(3);
        let o = (DType::Float, Device::Cpu);
        let s = Tensor::randn([5, 4], o) * 2.0;
        let c = Tensor::randn([5, 4], o) * 2.0;
        let _ = c.get(0).get(0).fill_(200.0);
        let u = Tensor::randn([5, 4], o) * 0.1;
        let f = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0, 0.0]);
        for temp in [1.0, 2.5] {
            let ours = bad_teacher_loss(&s, &c, &u, &f, temp)
                .unwrap()
                .double_value(&[]);
            let theirs = torch_oracle(
                r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
t = lambda k: torch.tensor(d[k], dtype=torch.float32).view(5, 4)
output, full, unlearn = t("s"), t("c"), t("u")
labels = torch.unsqueeze(torch.tensor(d["f"]), dim=1)
T = d["T"]
f_teacher_out = F.softmax(full / T, dim=1)
u_teacher_out = F.softmax(unlearn / T, dim=1)
overall = labels * u_teacher_out + (1 - labels) * f_teacher_out
student_out = F.log_softmax(output / T, dim=1)
print(json.dumps({"loss": F.kl_div(student_out, overall).item()}))
"#,
                &json!({"s": values(&s), "c": values(&c), "u": values(&u), "f": values(&f), "T": temp}),
            );
            let want = theirs["loss"].as_f64().unwrap();
            assert!(ours.is_finite());
            assert!(
                (ours - want).abs() <= 1e-5 * want.abs().max(1.0),
                "T {temp}: {ours} vs {want}"
            );
        }
    }

    #[test]
    fn default_init_follows_pytorch_bounds() {
        tch::manual_seed(1);
        let o = (DType::Float, Device::Cpu);
        let params = vec![
            ("bn.bias".to_string(), Tensor::zeros([6], o)),
            ("bn.weight".to_string(), Tensor::zeros([6], o)),
            ("conv.bias".to_string(), Tensor::zeros([6], o)),
            ("conv.weight".to_string(), Tensor::zeros([6, 2, 3, 3], o)),
            ("fc.weight".to_string(), Tensor::zeros([3, 50], o)),
        ];
        let init = default_init(&params).unwrap();
        let max = |t: &Tensor| t.abs().max().double_value(&[]);
        assert_eq!(max(&init[0]), 0.0);
        assert!(init[1].eq(1.0).all().int64_value(&[]) == 1);
        let conv_bound = 1.0 / 18f64.sqrt();
        assert!(max(&init[2]) <= conv_bound && max(&init[2]) > 0.0);
        assert!(max(&init[3]) <= conv_bound && max(&init[3]) > 0.5 * conv_bound);
        assert!(max(&init[4]) <= 1.0 / 50f64.sqrt());
    }
}
