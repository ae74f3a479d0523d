//! Selective Synaptic Dampening (Foster, Schoepf and Brintrup, AAAI 2024):
//! retraining-free. The importance of every weight for a set of data is the
//! diagonal of the empirical Fisher, estimated as in the reference code: the
//! mean over batches of the squared gradient of the batch-mean loss. Weights
//! whose forget-set importance `F_f` exceeds `α` times their importance for the
//! whole training set `F_D` are dampened, `θ ← θ·min(λ·F_D / F_f, 1)`; all
//! others stay bit-identical.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, Split};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::flat::{flatten_params, layout, unflatten};
use lethe_plugin_kit::importance::{Importance, accumulate};
use lethe_plugin_kit::optim::assign_masked;
use lethe_plugin_kit::params::{self, Prune, Training};
use lethe_plugin_kit::{batch_size, evaluate, finish, prepare};
use serde_json::json;

/// SSD's update of flat parameters `theta`: where `forget > alpha·full`, multiply
/// by `min(lambda·full/forget, 1)`; elsewhere keep. Returns the new values and the
/// selection mask.
pub fn dampen(
    theta: &Tensor,
    full: &Tensor,
    forget: &Tensor,
    alpha: f64,
    lambda: f64,
) -> Result<(Tensor, Tensor), PluginError> {
    tch::no_grad(|| {
        let selected = forget.f_gt_tensor(&full.f_mul_scalar(alpha)?)?;
        // Where not selected the factor is unused (and may be 0/0).
        let factor = full.f_mul_scalar(lambda)?.f_div(forget)?.f_clamp_max(1.0)?;
        let damped = theta.f_mul(&factor)?;
        Ok((damped.f_where_self(&selected, theta)?, selected))
    })
}

/// Selective Synaptic Dampening.
pub struct Ssd {
    alpha: f64,
    lambda: f64,
    batch_size: u32,
    temperature: f64,
    prune: Prune,
    seed: u64,
}

impl Plugin for Ssd {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            "org.lethe.baseline.ssd",
            "SSD (Selective Synaptic Dampening)",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .description(
            "Retraining-free: estimates every weight's importance (diagonal empirical Fisher: \
             mean over batches of the squared gradient of the batch-mean loss, model in eval \
             mode) for the forget set (F_f) and for the whole training set, retain plus forget \
             (F_D), then dampens the weights with F_f > α·F_D: θ ← θ·min(λ·F_D/F_f, 1). All \
             other weights stay bit-identical. Classifiers: cross-entropy; encoders: NT-Xent \
             of two augmented views per batch (the same selection on the contrastive loss, our \
             reading; the paper has classifiers only). Saves F_f and F_D as the \
             `forget_importance` and `full_importance` results (flat, layout in \
             `parameter_layout`). Reference settings: α = 10, λ = 1, batch 128.",
        )
        .citation(
            "Foster, Schoepf and Brintrup, \"Fast Machine Unlearning Without Retraining Through \
             Selective Synaptic Dampening\", AAAI 2024; reference code \
             github.com/if-loops/selective-synaptic-dampening.",
        )
        .param(
            ParamSpec::float("alpha", "Selection weighting α", 1e-6, 1e9, 10.0)
                .log_scale()
                .group("Method")
                .help("A weight is dampened when its forget importance exceeds α times its training-set importance. The training set holds the forget set, so F_D ≥ (forget batches / all batches)·F_f: α must stay below about 1/(forget fraction) to select anything (10 suits CIFAR-100 classes, not a tenth of the data)."),
        )
        .param(
            ParamSpec::float("lambda", "Dampening constant λ", 1e-9, 1e6, 1.0)
                .log_scale()
                .group("Method")
                .help("Selected weights are multiplied by min(λ·F_D/F_f, 1)."),
        )
        .param(
            ParamSpec::int("batch_size", "Batch size", 1, 8192, 128)
                .group("Data")
                .help("Batches the importances are averaged over."),
        )
        .param(
            ParamSpec::float("temperature", "InfoNCE temperature", 0.01, 10.0, 0.5)
                .log_scale()
                .group("Encoders"),
        );
        params::pruning(params::seed(d))
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(Ssd {
            alpha: p.f64("alpha")?,
            lambda: p.f64("lambda")?,
            batch_size: batch_size(p.i64("batch_size")?),
            temperature: p.f64("temperature")?,
            prune: Prune::from_params(p)?,
            seed: params::read_seed(p)?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &self.prune)?;
        let objective = prep.objective(&Training {
            augment: false,
            temperature: self.temperature,
            max_batches: 0,
        });
        let bs = self.batch_size;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let mut forget = Importance::default();
        let mut full = Importance::default();
        accumulate(
            ctx,
            &objective,
            &prep.params,
            Split::Forget,
            bs,
            &mut [&mut forget, &mut full],
        )?;
        ctx.progress(0.1, "forget importance estimated");
        accumulate(
            ctx,
            &objective,
            &prep.params,
            Split::Retain,
            bs,
            &mut [&mut full],
        )?;
        ctx.progress(0.9, "training-set importance estimated");
        let (f_f, f_d) = (forget.mean()?, full.mean()?);
        let theta = flatten_params(&prep.params)?;
        let (new, selected) = dampen(&theta, &f_d, &f_f, self.alpha, self.lambda)?;
        assign_masked(&prep.params, &unflatten(&new, &prep.params)?, &prep.masks)?;
        let count = selected.f_sum(DType::Int64)?.f_int64_value(&[])?;
        ctx.info(&format!(
            "dampened {count} of {} weights (forget importance > {}·training-set importance)",
            theta.numel(),
            self.alpha
        ));
        ctx.put_tensor("forget_importance", &f_f)?;
        ctx.put_tensor("full_importance", &f_d)?;
        ctx.put_json("parameter_layout", &layout(&prep.params))?;
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({
                "method": "ssd", "alpha": self.alpha, "lambda": self.lambda,
                "dampened": count, "weights": theta.numel(),
                "forget_batches": forget.batches(), "full_batches": full.batches(),
            }),
        )
    }
}

lethe_plugin_api::declare_plugin!(Ssd);

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;
    use lethe_plugin_kit::losses::cross_entropy;
    use lethe_plugin_kit::oracle::{torch_oracle, values};

    /// Importances and the dampened weights of a small linear classifier on fixed
    /// batches (two retain, one forget), against the reference's
    /// `calc_importance` and `modify_weight` run in PyTorch on an `nn.Linear`.
    #[test]
    fn importances_and_dampening_match_the_reference_in_pytorch() {
        tch::manual_seed(7);
        let o = (DType::Float, Device::Cpu);
        let w = Tensor::randn([3, 4], o).set_requires_grad(true);
        let b = Tensor::randn([3], o).set_requires_grad(true);
        // Names sorted as the host lists them: bias before weight.
        let params = vec![
            ("fc.bias".to_string(), b.shallow_clone()),
            ("fc.weight".to_string(), w.shallow_clone()),
        ];
        let xs = [
            Tensor::randn([5, 4], o),
            Tensor::randn([5, 4], o),
            Tensor::randn([4, 4], o) * 3.0,
        ];
        let ys = [
            Tensor::from_slice(&[0i64, 1, 2, 1, 0]),
            Tensor::from_slice(&[2i64, 2, 1, 0, 1]),
            Tensor::from_slice(&[1i64, 1, 1, 1]),
        ];
        let loss =
            |i: usize| cross_entropy(&xs[i].matmul(&w.tr()).f_add(&b).unwrap(), &ys[i]).unwrap();
        let (mut full, mut forget) = (Importance::default(), Importance::default());
        for i in 0..3 {
            full.add(&loss(i), &params).unwrap();
        }
        forget.add(&loss(2), &params).unwrap();
        let (alpha, lambda) = (1.5, 0.7);
        let theta = flatten_params(&params).unwrap();
        let (f_d, f_f) = (full.mean().unwrap(), forget.mean().unwrap());
        let (new, selected) = dampen(&theta, &f_d, &f_f, alpha, lambda).unwrap();
        let n_sel = selected.sum(DType::Int64).int64_value(&[]);
        assert!(
            n_sel > 0 && n_sel < 15,
            "{n_sel} selected: pick another seed"
        );

        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn as nn
d = json.load(sys.stdin)
m = nn.Linear(4, 3).double()
with torch.no_grad():
    m.weight.copy_(torch.tensor(d["w"]).view(3, 4)); m.bias.copy_(torch.tensor(d["b"]))
xs = [torch.tensor(x, dtype=torch.float64).view(-1, 4) for x in d["xs"]]
ys = [torch.tensor(y).long() for y in d["ys"]]
def calc_importance(batches):
    imp = {k: torch.zeros_like(p) for k, p in m.named_parameters()}
    for x, y in batches:
        m.zero_grad()
        nn.CrossEntropyLoss()(m(x), y).backward()
        for k, p in m.named_parameters():
            imp[k] += p.grad.clone().pow(2)
    return {k: v / len(batches) for k, v in imp.items()}
full = calc_importance(list(zip(xs, ys)))
forget = calc_importance([(xs[2], ys[2])])
with torch.no_grad():
    for n, p in m.named_parameters():
        oimp, fimp = full[n], forget[n]
        loc = torch.where(fimp > oimp.mul(d["alpha"]))
        update = (oimp.mul(d["lambda"]).div(fimp)).pow(1)[loc]
        update[torch.where(update > 1)] = 1
        p[loc] = p[loc].mul(update)
flat = lambda t: t["bias"].flatten().tolist() + t["weight"].flatten().tolist()
print(json.dumps({"full": flat(full), "forget": flat(forget),
                  "theta": m.bias.flatten().tolist() + m.weight.flatten().tolist()}))
"#,
            &json!({"w": values(&w), "b": values(&b),
                    "xs": xs.iter().map(values).collect::<Vec<_>>(),
                    "ys": ys.iter().map(values).collect::<Vec<_>>(),
                    "alpha": alpha, "lambda": lambda}),
        );
        for (key, ours) in [("full", &f_d), ("forget", &f_f), ("theta", &new)] {
            let want: Vec<f64> = theirs[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let got = values(ours);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                    "{key}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
