//! NegGrad+ (Kurmanji et al., NeurIPS 2023): one pass over the retain set in
//! batches, each paired with the next batch of a cycling forget stream, on the
//! loss `β·ℓ(retain batch) − (1 − β)·ℓ(forget batch)` (batch means), so the
//! forget loss is ascended while the retain loss is descended, in balance.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::Tensor;
use lethe_plugin_kit::epoch::{Cycle, for_each_batch, report_epoch};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{batch_size, evaluate, finish, prepare};
use serde_json::json;

/// `β·retain − (1 − β)·forget` of two scalar batch losses.
pub fn neggrad_plus_loss(
    retain: &Tensor,
    forget: &Tensor,
    beta: f64,
) -> Result<Tensor, PluginError> {
    Ok(retain
        .f_mul_scalar(beta)?
        .f_sub(&forget.f_mul_scalar(1.0 - beta)?)?)
}

/// NegGrad+.
pub struct NegGradPlus {
    optim: Optim,
    training: Training,
    prune: Prune,
    seed: u64,
    forget_batch: u32,
    beta: f64,
}

impl Plugin for NegGradPlus {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.neggrad-plus",
            "NegGrad+",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "One pass per epoch over the retain set; each retain batch is paired with the next \
             batch of a cycling forget stream and the model steps on β·ℓ(retain) − (1 − β)·ℓ(forget) \
             (batch means): the forget loss is ascended, the retain loss descended, in balance. \
             Cross-entropy for classifiers; for encoders the InfoNCE they were trained with \
             (SimCLR NT-Xent, or MoCo's with a momentum encoder and a queue; the same balance \
             on the contrastive loss, a direct reading of the method). Reference \
             settings (the SCRUB repository's user-privacy runs on CIFAR-10): β = 0.9999, plain \
             SGD lr 0.01 without momentum or weight decay, 5 epochs, retain batch 32, forget \
             batch 16. β needs tuning per model: on a saturated model 1 − β = 1e-4 barely \
             moves the forget loss.",
        )
        .citation(
            "Kurmanji, Triantafillou, Hayes and Triantafillou, \"Towards Unbounded Machine \
             Unlearning\", NeurIPS 2023 (NegGrad+); reference code github.com/meghdadk/SCRUB.",
        );
        let d = params::optimiser(
            d,
            &OptimDefaults {
                lr: 0.01,
                epochs: 5,
                batch_size: 32,
                momentum: 0.0,
                weight_decay: 0.0,
                schedule: "constant",
            },
        )
        .param(
            ParamSpec::int("forget_batch_size", "Forget batch size", 1, 8192, 16)
                .group("Method")
                .help("Forget examples paired with each retain batch."),
        )
        .param(
            ParamSpec::float("beta", "Retain weight β", 0.0, 1.0, 0.9999)
                .group("Method")
                .help("β weighs the retain loss, 1 − β the ascended forget loss (β = 1: fine-tuning)."),
        );
        params::pruning(params::seed(params::training(d)))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(NegGradPlus {
            optim: Optim::from_params(p)?,
            training: Training::from_params(p)?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
            forget_batch: batch_size(p.i64("forget_batch_size")?),
            beta: p.f64("beta")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&self.training);
        // A MoCo encoder's queue starts as a trained one: keys of training samples.
        objective.fill_queue(ctx, Split::Retain, self.optim.batch_size)?;
        let bs = self.optim.batch_size;
        let max = self.training.max_batches;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let steps = steps_per_epoch(ctx, Split::Retain, bs, max)?;
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let mut forget = Cycle::new(Split::Forget, self.forget_batch);
        let beta = self.beta;
        let epochs = self.optim.epochs;
        for epoch in 0..epochs {
            ctx.model_set_train(true)?;
            let lr = trainer.lr();
            let (mut f_sum, mut r_sum, mut batches) = (0.0, 0.0, 0usize);
            let stats = for_each_batch(ctx, Split::Retain, bs, true, max, |ctx, x, y| {
                let (xf, yf) = forget.next_batch(ctx)?;
                let lr_ = objective.loss(ctx, x, y)?;
                let lf = objective.loss(ctx, &xf, &yf)?;
                let loss = neggrad_plus_loss(&lr_, &lf, beta)?;
                r_sum += lr_.f_double_value(&[])?;
                f_sum += lf.f_double_value(&[])?;
                batches += 1;
                let value = loss.f_double_value(&[])?;
                trainer.step(&loss)?;
                Ok(value)
            })?;
            let n = batches.max(1) as f64;
            report_epoch(
                ctx,
                epoch + 1,
                epochs,
                json!({
                    "loss": stats.mean_loss(),
                    "retain_loss": r_sum / n,
                    "forget_loss": f_sum / n,
                    "lr": lr,
                }),
            );
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({"method": "neggrad-plus", "steps": trainer.steps(), "beta": beta,
                   "retain_batch": bs, "forget_batch": self.forget_batch}),
        )
    }
}

lethe_plugin_api::declare_plugin!(NegGradPlus);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::{self, Device, Kind};
    use lethe_plugin_kit::losses::{cross_entropy, nt_xent_per_sample};
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// The total loss on a fixed pair of batches, for a classifier (logits) and
    /// an encoder (two views' embeddings), against PyTorch: the reference's
    /// `alpha*loss_fn(out_r, y_r) - (1-alpha)*loss_fn(out_f, y_f)` and SimCLR's
    /// NT-Xent written out.
    #[test]
    fn the_total_loss_matches_pytorch() {
        tch::manual_seed(21);
        let o = (Kind::Float, Device::Cpu);
        let (sr, sf) = (
            Tensor::randn([7, 4], o) * 2.0,
            Tensor::randn([3, 4], o) * 2.0,
        );
        let yr = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1]);
        let yf = Tensor::from_slice(&[1i64, 0, 3]);
        let beta = 0.8;
        let cls = neggrad_plus_loss(
            &cross_entropy(&sr, &yr).unwrap(),
            &cross_entropy(&sf, &yf).unwrap(),
            beta,
        )
        .unwrap()
        .double_value(&[]);
        let (r1, r2) = (Tensor::randn([5, 3], o), Tensor::randn([5, 3], o));
        let (f1, f2) = (Tensor::randn([4, 3], o), Tensor::randn([4, 3], o));
        let nt = |a: &Tensor, b: &Tensor| nt_xent_per_sample(a, b, 0.5).unwrap().mean(Kind::Float);
        let enc = neggrad_plus_loss(&nt(&r1, &r2), &nt(&f1, &f2), beta)
            .unwrap()
            .double_value(&[]);
        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
t = lambda k, *s: torch.tensor(d[k], dtype=torch.float64).view(*s)
b = d["beta"]
cls = b * F.cross_entropy(t("sr", 7, 4), t("yr", 7).long()) - (1 - b) * F.cross_entropy(t("sf", 3, 4), t("yf", 3).long())
def nt_xent(z1, z2, tau=0.5):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        sims = [(z[i] @ z[j]) / tau for j in range(2 * n) if j != i]
        pos = (z[i] @ z[(i + n) % (2 * n)]) / tau
        total += torch.logsumexp(torch.stack(sims), 0) - pos
    return total / (2 * n)
enc = b * nt_xent(t("r1", 5, 3), t("r2", 5, 3)) - (1 - b) * nt_xent(t("f1", 4, 3), t("f2", 4, 3))
print(json.dumps({"cls": cls.item(), "enc": enc.item()}))
"#,
            &json!({"sr": values(&sr), "sf": values(&sf), "yr": values(&yr), "yf": values(&yf),
                    "r1": values(&r1), "r2": values(&r2), "f1": values(&f1), "f2": values(&f2),
                    "beta": beta}),
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        let (want_cls, want_enc) = (
            theirs["cls"].as_f64().unwrap(),
            theirs["enc"].as_f64().unwrap(),
        );
        assert!(close(cls, want_cls), "{cls} vs {want_cls}");
        assert!(close(enc, want_enc), "{enc} vs {want_enc}");
    }
}
