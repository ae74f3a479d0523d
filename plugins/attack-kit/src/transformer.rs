//! The membership attacker of Yuan and Zhang (USENIX Security 2022): the
//! transformer that Discriminative Adversarial Unlearning plays against and
//! that the `org.lethe.attack.transformer` plugin fits as an attack. Its `3C`
//! inputs `[softmax p, sensitivity, one-hot label]` ([`inputs`],
//! [`sensitivity`], [`attack_inputs`]) go through BatchNorm1d(3C), become
//! `C` tokens of dimension 3 (token `j` = `(p_j, s_j, y_j)`), are embedded by
//! Linear(3, 64) + GELU, pass a 3-layer transformer encoder (4 heads, feed-forward
//! 128, dropout 0.2, GELU, post-norm as PyTorch's `TransformerEncoderLayer`), and
//! are flattened into Linear(64·C, 64) + ReLU → Linear(64, 2).
//!
//! Variable names follow PyTorch's modules (`layers.0.self_attn.in_proj`, …) so
//! the test can load the same weights into `torch.nn` and compare outputs.

use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError};
use lethe_plugin_api::tch::nn::{self, ModuleT};
use lethe_plugin_api::tch::{Device, Kind, Reduction, Tensor};

/// Yuan and Zhang's number of noisy queries per sample for the sensitivity.
pub const SENSITIVITY_DRAWS: usize = 10;
/// Their input-noise scale ε.
pub const SENSITIVITY_NOISE: f64 = 1e-3;

/// `mean_k |p_k − p| / ε` over the softmax outputs `p_k` of `m` noisy copies of
/// the inputs (`noisy`, each `[B, C]`) and the clean softmax `p` (`[B, C]`):
/// Yuan and Zhang's sensitivity of a prediction to input noise of scale `ε`.
pub fn sensitivity(p: &Tensor, noisy: &[Tensor], eps: f64) -> Result<Tensor, PluginError> {
    if noisy.is_empty() {
        return Err(PluginError::msg(
            "sensitivity needs at least one noisy draw",
        ));
    }
    let mut sum = p.f_zeros_like()?;
    for q in noisy {
        sum = sum.f_add(&q.f_sub(p)?.f_abs()?)?;
    }
    Ok(sum.f_div_scalar(eps * noisy.len() as f64)?)
}

/// The attacker's inputs `[p, s, one_hot(y)]` (`[B, 3C]`). Without `labels` the
/// label block is zero: the attacker then has to read membership from the
/// model's outputs alone (DAU's class-wise forgetting, where the label is the
/// forgotten class itself and would give the answer away).
pub fn attack_inputs(
    p: &Tensor,
    s: &Tensor,
    labels: Option<&Tensor>,
) -> Result<Tensor, PluginError> {
    let classes = p.size().last().copied().unwrap_or(0);
    let one_hot = match labels {
        Some(y) => y.f_one_hot(classes)?.f_to_kind(p.kind())?,
        None => p.f_zeros_like()?,
    };
    Ok(Tensor::f_cat(&[p, s, &one_hot], 1)?)
}

/// The attacker's inputs for a batch `(x, y)` of the host's model: the clean
/// softmax, the sensitivity over `draws` noisy copies of scale `noise`, and the
/// one-hot label (zeros without `y`, see [`attack_inputs`]). Differentiable into the model when it is in train mode (DAU's
/// defender backpropagates through it); the caller picks the mode.
pub fn inputs(
    ctx: &mut HostContext,
    x: &Tensor,
    y: Option<&Tensor>,
    draws: usize,
    noise: f64,
) -> Result<Tensor, PluginError> {
    inputs_from(
        |batch| ctx.model_forward(ModelHead::Classifier, batch),
        x,
        y,
        draws,
        noise,
    )
}

/// [`inputs`] with the model given as `logits`, a function from a batch to its
/// logits: lets a caller's unit test put a stand-alone `tch` model (e.g. one with
/// BatchNorm, in a chosen mode) where the host's model would be.
pub fn inputs_from(
    mut logits: impl FnMut(&Tensor) -> Result<Tensor, PluginError>,
    x: &Tensor,
    y: Option<&Tensor>,
    draws: usize,
    noise: f64,
) -> Result<Tensor, PluginError> {
    // The clean batch and its m noisy copies in one forward pass: one large
    // batch runs much faster than m + 1 small ones (the copies differ by 1e-3,
    // so batch statistics are those of the clean batch).
    let b = x.size().first().copied().unwrap_or(0);
    let m = i64::try_from(draws.max(1)).unwrap_or(1);
    let mut shape = vec![m];
    shape.extend(x.size());
    let copies = x.f_unsqueeze(0)?.f_expand(shape.as_slice(), false)?;
    let noisy_x = copies
        .f_add(&copies.f_randn_like()?.f_mul_scalar(noise)?)?
        .f_flatten(0, 1)?;
    let all = logits(&Tensor::f_cat(&[x, &noisy_x], 0)?)?.f_softmax(-1, Kind::Float)?;
    let p = all.f_narrow(0, 0, b)?;
    let noisy: Vec<Tensor> = (0..m)
        .map(|k| all.f_narrow(0, b * (k + 1), b))
        .collect::<Result<_, _>>()?;
    let s = sensitivity(&p, &noisy, noise)?;
    attack_inputs(&p, &s, y)
}

/// Cross-entropy of membership logits (`[B, 2]`) against `members` (`[B]`, bool:
/// true for members): the loss the attacker minimises.
pub fn membership_loss(logits: &Tensor, members: &Tensor) -> Result<Tensor, PluginError> {
    let target = members.f_to_kind(Kind::Int64)?;
    Ok(logits.f_cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, -100, 0.0)?)
}

/// Width of the transformer.
pub const D_MODEL: i64 = 64;
/// Attention heads.
pub const HEADS: i64 = 4;
/// Feed-forward width.
pub const FF: i64 = 128;
/// Encoder layers.
pub const LAYERS: usize = 3;
/// Dropout in attention, feed-forward and residual branches.
pub const DROPOUT: f64 = 0.2;

/// One post-norm transformer encoder layer with GELU.
#[derive(Debug)]
struct EncoderLayer {
    in_proj: nn::Linear,
    out_proj: nn::Linear,
    linear1: nn::Linear,
    linear2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
}

impl EncoderLayer {
    fn new(p: &nn::Path<'_>) -> Self {
        let sa = p / "self_attn";
        EncoderLayer {
            in_proj: nn::linear(&sa / "in_proj", D_MODEL, 3 * D_MODEL, Default::default()),
            out_proj: nn::linear(&sa / "out_proj", D_MODEL, D_MODEL, Default::default()),
            linear1: nn::linear(p / "linear1", D_MODEL, FF, Default::default()),
            linear2: nn::linear(p / "linear2", FF, D_MODEL, Default::default()),
            norm1: nn::layer_norm(p / "norm1", vec![D_MODEL], Default::default()),
            norm2: nn::layer_norm(p / "norm2", vec![D_MODEL], Default::default()),
        }
    }

    /// `x`: `[B, L, D_MODEL]`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, PluginError> {
        let (b, l) = (x.size()[0], x.size()[1]);
        let head_dim = D_MODEL / HEADS;
        let qkv = x.apply(&self.in_proj);
        let split = |i: i64| -> Result<Tensor, PluginError> {
            Ok(qkv
                .f_narrow(2, i * D_MODEL, D_MODEL)?
                .f_reshape([b, l, HEADS, head_dim])?
                .f_transpose(1, 2)?)
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = q
            .f_matmul(&k.f_transpose(2, 3)?)?
            .f_div_scalar((head_dim as f64).sqrt())?;
        let weights = scores
            .f_softmax(-1, Kind::Float)?
            .f_dropout(DROPOUT, train)?;
        let attended = weights
            .f_matmul(&v)?
            .f_transpose(1, 2)?
            .f_reshape([b, l, D_MODEL])?
            .apply(&self.out_proj)
            .f_dropout(DROPOUT, train)?;
        let x = x.f_add(&attended)?.apply(&self.norm1);
        let ff = x
            .apply(&self.linear1)
            .f_gelu("none")?
            .f_dropout(DROPOUT, train)?
            .apply(&self.linear2)
            .f_dropout(DROPOUT, train)?;
        Ok(x.f_add(&ff)?.apply(&self.norm2))
    }
}

/// The attacker network, with its own variables. The member column of its
/// logits minus the non-member column is the membership log-odds the attack
/// plugin reports as its score.
#[derive(Debug)]
pub struct Attacker {
    vs: nn::VarStore,
    bn: nn::BatchNorm,
    embed: nn::Linear,
    layers: Vec<EncoderLayer>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    classes: i64,
}

impl Attacker {
    /// A freshly initialised attacker for a `classes`-way target model.
    pub fn new(classes: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let bn = nn::batch_norm1d(&root / "bn", 3 * classes, Default::default());
        let embed = nn::linear(&root / "embed", 3, D_MODEL, Default::default());
        let layers = (0..LAYERS)
            .map(|i| EncoderLayer::new(&(&root / "layers" / i.to_string())))
            .collect();
        let fc1 = nn::linear(&root / "fc1", D_MODEL * classes, 64, Default::default());
        let fc2 = nn::linear(&root / "fc2", 64, 2, Default::default());
        Attacker {
            vs,
            bn,
            embed,
            layers,
            fc1,
            fc2,
            classes,
        }
    }

    /// Membership logits `[B, 2]` (column 1: member) of attack inputs `[B, 3C]`.
    pub fn forward(&self, inputs: &Tensor, train: bool) -> Result<Tensor, PluginError> {
        let b = inputs.size().first().copied().unwrap_or(0);
        let c = self.classes;
        if inputs.size() != [b, 3 * c] {
            return Err(PluginError::msg(format!(
                "attack inputs must be [B, {}], got {:?}",
                3 * c,
                inputs.size()
            )));
        }
        let h = self.bn.forward_t(inputs, train);
        let mut t = h
            .f_reshape([b, 3, c])?
            .f_transpose(1, 2)?
            .apply(&self.embed)
            .f_gelu("none")?;
        for layer in &self.layers {
            t = layer.forward(&t, train)?;
        }
        Ok(t.f_reshape([b, c * D_MODEL])?
            .apply(&self.fc1)
            .f_relu()?
            .apply(&self.fc2))
    }

    /// A fresh attacker initialised as Yuan and Zhang's PyTorch code does
    /// ([`Attacker::reference_init`]); `new` keeps tch's defaults (DAU's
    /// `attacker_init = tch` option).
    pub fn with_reference_init(classes: i64, device: Device) -> Result<Self, PluginError> {
        let a = Attacker::new(classes, device);
        a.reference_init()?;
        Ok(a)
    }

    /// Re-draws the weights as Yuan and Zhang's PyTorch code initialises the
    /// net (their `weight_init`: Xavier-normal weights and zero biases for the
    /// Linear layers; PyTorch's own for the rest: batch and layer norms at
    /// weight 1, bias 0, attention input projection Xavier-uniform, output
    /// projection U(±1/√64), attention biases 0). tch's defaults differ (batch
    /// norm weights U(0, 1), larger Kaiming-uniform Linear weights) and train
    /// this transformer far more slowly.
    pub fn reference_init(&self) -> Result<(), PluginError> {
        lethe_plugin_api::tch::no_grad(|| -> Result<(), PluginError> {
            // In name order: `VarStore::variables` is a hash map, whose order
            // differs between instances, so drawing in its order gave a seed a
            // different attacker on every construction.
            for (name, mut t) in self.variables() {
                let size = t.size();
                let (fan_out, fan_in) = (
                    size.first().copied().unwrap_or(1) as f64,
                    size.get(1).copied().unwrap_or(1) as f64,
                );
                let weight = name.ends_with(".weight");
                if name.contains("running_") || name.ends_with("num_batches_tracked") {
                    continue;
                }
                if !weight {
                    let _ = t.f_zero_()?;
                } else if name.starts_with("bn.") || name.contains(".norm") {
                    let _ = t.f_fill_(1.0)?;
                } else if name.ends_with("self_attn.in_proj.weight") {
                    let bound = (6.0 / (fan_in + fan_out)).sqrt();
                    let _ = t.f_uniform_(-bound, bound)?;
                } else if name.ends_with("self_attn.out_proj.weight") {
                    let bound = 1.0 / fan_in.sqrt();
                    let _ = t.f_uniform_(-bound, bound)?;
                } else {
                    let std = (2.0 / (fan_in + fan_out)).sqrt();
                    let _ = t.f_normal_(0.0, std)?;
                }
            }
            Ok(())
        })
    }

    /// Its variables, e.g. to build a `tch` optimiser over them.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Trainable variables with their names, sorted by name.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every variable (running statistics included), for saving or comparing.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// How [`fit`] trains an attacker: the reference code's SGD with momentum and
/// weight decay, the rate divided by 10 at half and at three quarters of the
/// epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    /// Passes over the data.
    pub epochs: i64,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Mini-batch size.
    pub batch: i64,
}

impl Default for FitConfig {
    /// Yuan and Zhang's code: 100 epochs, rate 1e-3, momentum 0.9, weight
    /// decay 5e-4, batch 128.
    fn default() -> Self {
        FitConfig {
            epochs: 100,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 128,
        }
    }
}

/// One epoch of [`fit`]: 1-based epoch, learning rate, mean loss, accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitEpoch {
    /// 1-based epoch.
    pub epoch: i64,
    /// Rate used.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (train mode: dropout on).
    pub accuracy: f64,
}

/// Trains `attacker` to tell `members` (bool `[N]`) apart in `inputs`
/// (`[N, 3C]`, on the attacker's device), in shuffled mini-batches (libtorch's
/// generator, seeded by the caller). `on_epoch` sees every epoch and may stop
/// the fit with an error (cancellation). Returns the last epoch.
pub fn fit(
    attacker: &Attacker,
    inputs: &Tensor,
    members: &Tensor,
    cfg: &FitConfig,
    on_epoch: &mut dyn FnMut(&FitEpoch) -> Result<(), PluginError>,
) -> Result<FitEpoch, PluginError> {
    use lethe_plugin_api::tch::nn::OptimizerConfig;
    let n = inputs.size().first().copied().unwrap_or(0);
    if n == 0 || members.size() != [n] {
        return Err(PluginError::msg(format!(
            "the attacker needs inputs [N, 3C] and N membership labels; got {:?} and {:?}",
            inputs.size(),
            members.size()
        )));
    }
    let mut opt = nn::Sgd {
        momentum: cfg.momentum,
        dampening: 0.0,
        wd: cfg.weight_decay,
        nesterov: false,
    }
    .build(attacker.var_store(), cfg.lr)?;
    let mut last = FitEpoch {
        epoch: 0,
        lr: cfg.lr,
        loss: f64::NAN,
        accuracy: f64::NAN,
    };
    let batch = cfg.batch.max(1);
    for epoch in 0..cfg.epochs {
        // The reference code's MultiStepLR: /10 at epochs/2 and 3·epochs/4.
        let mut lr = cfg.lr;
        if epoch >= cfg.epochs / 2 {
            lr *= 0.1;
        }
        if epoch >= cfg.epochs * 3 / 4 {
            lr *= 0.1;
        }
        opt.set_lr(lr);
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        let order = Tensor::f_randperm(n, (Kind::Int64, inputs.device()))?;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let idx = order.f_narrow(0, start, len)?;
            let (x, y) = (
                inputs.f_index_select(0, &idx)?,
                members.f_index_select(0, &idx)?,
            );
            let logits = attacker.forward(&x, true)?;
            let loss = membership_loss(&logits, &y)?;
            opt.backward_step(&loss);
            loss_sum += loss.f_double_value(&[])? * len as f64;
            correct += logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y.f_to_kind(Kind::Int64)?)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            start += len;
        }
        last = FitEpoch {
            epoch: epoch + 1,
            lr,
            loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
        };
        on_epoch(&last)?;
    }
    Ok(last)
}

/// Member log-odds (`logit_member − logit_non-member`) of `inputs` in eval
/// mode, in chunks, as `f64` on the CPU.
pub fn log_odds(attacker: &Attacker, inputs: &Tensor) -> Result<Vec<f64>, PluginError> {
    let n = inputs.size().first().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(n.max(0) as usize);
    lethe_plugin_api::tch::no_grad(|| -> Result<(), PluginError> {
        let mut start = 0;
        while start < n {
            let len = 1024.min(n - start);
            let l = attacker.forward(&inputs.f_narrow(0, start, len)?, false)?;
            let d = l.f_select(1, 1)?.f_sub(&l.f_select(1, 0)?)?;
            out.extend(Vec::<f64>::try_from(
                d.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?,
            )?);
            start += len;
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// The same weights in `torch.nn` (BatchNorm1d, Linear, TransformerEncoder with
    /// `activation="gelu"`, `batch_first=True`) give the same logits in eval mode.
    #[test]
    fn the_attacker_matches_a_pytorch_transformer_encoder() {
        lethe_plugin_api::tch::manual_seed(21);
        let classes = 4;
        let a = Attacker::new(classes, Device::Cpu);
        // Non-trivial running statistics, so eval-mode BatchNorm is exercised.
        for _ in 0..3 {
            let x = Tensor::randn([16, 3 * classes], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
            let _ = a.forward(&x, true).unwrap();
        }
        let x = Tensor::randn([5, 3 * classes], (Kind::Float, Device::Cpu));
        let ours = lethe_plugin_api::tch::no_grad(|| a.forward(&x, false).unwrap());
        let mut weights = serde_json::Map::new();
        for (name, t) in a.variables() {
            let v = Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap();
            weights.insert(name, serde_json::json!(v));
        }
        let input = serde_json::json!({
            "w": weights,
            "x": Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(),
        });
        let script = r#"
import json, sys, torch, torch.nn as nn
d = json.load(sys.stdin); w = d["w"]; C = 4
def t(name, shape): return torch.tensor(w[name]).view(*shape)
bn = nn.BatchNorm1d(3 * C)
embed = nn.Linear(3, 64)
layer = nn.TransformerEncoderLayer(64, 4, 128, 0.2, activation="gelu", batch_first=True)
enc = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
fc1 = nn.Linear(64 * C, 64); fc2 = nn.Linear(64, 2)
with torch.no_grad():
    bn.weight.copy_(t("bn.weight", [-1])); bn.bias.copy_(t("bn.bias", [-1]))
    bn.running_mean.copy_(t("bn.running_mean", [-1])); bn.running_var.copy_(t("bn.running_var", [-1]))
    for m, n in [(embed, "embed"), (fc1, "fc1"), (fc2, "fc2")]:
        m.weight.copy_(t(n + ".weight", m.weight.shape)); m.bias.copy_(t(n + ".bias", [-1]))
    for i, L in enumerate(enc.layers):
        p = "layers.%d." % i
        L.self_attn.in_proj_weight.copy_(t(p + "self_attn.in_proj.weight", [192, 64]))
        L.self_attn.in_proj_bias.copy_(t(p + "self_attn.in_proj.bias", [-1]))
        L.self_attn.out_proj.weight.copy_(t(p + "self_attn.out_proj.weight", [64, 64]))
        L.self_attn.out_proj.bias.copy_(t(p + "self_attn.out_proj.bias", [-1]))
        for m, n in [(L.linear1, "linear1"), (L.linear2, "linear2"), (L.norm1, "norm1"), (L.norm2, "norm2")]:
            m.weight.copy_(t(p + n + ".weight", m.weight.shape)); m.bias.copy_(t(p + n + ".bias", [-1]))
for m in [bn, enc]: m.eval()
x = torch.tensor(d["x"]).view(5, 3 * C)
with torch.no_grad():
    h = bn(x).view(5, 3, C).transpose(1, 2)
    out = fc2(torch.relu(fc1(enc(torch.nn.functional.gelu(embed(h))).flatten(1))))
print(json.dumps(out.flatten().tolist()))
"#;
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
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
        let theirs: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
        let ours = Vec::<f64>::try_from(ours.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "{ours:?} vs {theirs:?}"
            );
        }
    }

    fn v(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn sensitivity_by_hand() {
        let p = Tensor::from_slice(&[0.5f32, 0.5, 0.9, 0.1]).view([2, 2]);
        let q1 = Tensor::from_slice(&[0.501f32, 0.499, 0.9, 0.1]).view([2, 2]);
        let q2 = Tensor::from_slice(&[0.497f32, 0.503, 0.902, 0.098]).view([2, 2]);
        let s = values(&sensitivity(&p, &[q1, q2], 1e-3).unwrap());
        // Row 0: (0.001 + 0.003)/2/1e-3 = 2 on both classes; row 1: (0 + 0.002)/2/1e-3 = 1.
        for (got, want) in s.iter().zip([2.0, 2.0, 1.0, 1.0]) {
            assert!((got - want).abs() < 1e-3, "{s:?}");
        }
        assert!(sensitivity(&p, &[], 1e-3).is_err());
    }

    #[test]
    fn attack_inputs_are_softmax_sensitivity_and_one_hot() {
        let p = Tensor::from_slice(&[0.2f32, 0.3, 0.5]).view([1, 3]);
        let s = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
        let y = Tensor::from_slice(&[2i64]);
        let x = values(&attack_inputs(&p, &s, Some(&y)).unwrap());
        let want = [0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 0.0, 0.0, 1.0];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        let x = values(&attack_inputs(&p, &s, None).unwrap());
        let want = [0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
        assert_eq!(x.len(), want.len());
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn membership_loss_by_hand() {
        // Logits (0, ln 3): P(member) = 3/4. A member costs ln(4/3), a non-member ln 4.
        let l = Tensor::from_slice(&[0.0f32, 3f32.ln(), 0.0, 3f32.ln()]).view([2, 2]);
        let m = Tensor::from_slice(&[true, false]);
        let want = ((4.0f64 / 3.0).ln() + 4f64.ln()) / 2.0;
        assert!((v(&membership_loss(&l, &m).unwrap()) - want).abs() < 1e-6);
    }

    #[test]
    fn reference_init_follows_the_pytorch_code() {
        lethe_plugin_api::tch::manual_seed(1);
        let a = Attacker::with_reference_init(10, Device::Cpu).unwrap();
        // A seed gives one attacker (the draws once followed a hash map's order).
        lethe_plugin_api::tch::manual_seed(1);
        let again = Attacker::with_reference_init(10, Device::Cpu).unwrap();
        for ((n, t), (_, u)) in a.variables().iter().zip(again.variables()) {
            assert!(t.equal(&u), "{n}");
        }
        for (name, t) in a.variables() {
            let mean = t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
            if name.ends_with(".bias") {
                assert_eq!(t.abs().max().double_value(&[]), 0.0, "{name}");
            } else if name == "bn.weight" || name.contains(".norm") && name.ends_with(".weight") {
                assert_eq!(mean, 1.0, "{name}");
            } else if name == "fc1.weight" {
                // Xavier normal: std sqrt(2 / (640 + 64)).
                let std = t.to_kind(Kind::Double).std(true).double_value(&[]);
                let want = (2.0f64 / 704.0).sqrt();
                assert!((std / want - 1.0).abs() < 0.05, "{std} vs {want}");
            } else if name.ends_with("in_proj.weight") {
                let bound = (6.0f64 / 256.0).sqrt();
                assert!(t.abs().max().double_value(&[]) <= bound, "{name}");
            }
        }
    }

    /// Members whose softmax is more confident and less sensitive than the
    /// non-members': the fit learns to tell them apart, and the log-odds rank
    /// members first.
    #[test]
    fn fitting_separates_members_from_non_members() {
        lethe_plugin_api::tch::manual_seed(5);
        let (n, c) = (200i64, 3i64);
        let labels = Tensor::arange(2 * n, (Kind::Int64, Device::Cpu)).remainder(c);
        let strength = Tensor::cat(
            &[
                Tensor::full([n], 4.0, (Kind::Float, Device::Cpu)),
                Tensor::full([n], 2.5, (Kind::Float, Device::Cpu)),
            ],
            0,
        ) + Tensor::randn([2 * n], (Kind::Float, Device::Cpu)) * 0.5;
        let logits = labels.one_hot(c).to_kind(Kind::Float) * strength.unsqueeze(1)
            + Tensor::randn([2 * n, c], (Kind::Float, Device::Cpu)) * 0.3;
        let p = logits.softmax(-1, Kind::Float);
        let s = (p.ones_like() - &p) * 0.5;
        let x = attack_inputs(&p, &s, Some(&labels)).unwrap();
        let members = Tensor::cat(
            &[
                Tensor::ones([n], (Kind::Bool, Device::Cpu)),
                Tensor::zeros([n], (Kind::Bool, Device::Cpu)),
            ],
            0,
        );
        let a = Attacker::with_reference_init(c, Device::Cpu).unwrap();
        let before = log_odds(&a, &x).unwrap();
        let mut epochs = Vec::new();
        let cfg = FitConfig {
            epochs: 60,
            lr: 0.01,
            ..FitConfig::default()
        };
        let last = fit(&a, &x, &members, &cfg, &mut |e| {
            epochs.push(*e);
            Ok(())
        })
        .unwrap();
        assert_eq!(epochs.len(), 60);
        assert_eq!(last, epochs[59]);
        // The schedule: /10 at 30, /100 from 45 on.
        assert!((epochs[29].lr - 0.01).abs() < 1e-12 && (epochs[30].lr - 0.001).abs() < 1e-12);
        assert!((epochs[44].lr - 0.001).abs() < 1e-12 && (epochs[59].lr - 0.0001).abs() < 1e-12);
        assert!(last.loss < epochs[0].loss, "{epochs:?}");
        let scores = log_odds(&a, &x).unwrap();
        assert_ne!(scores, before);
        let (m, nm) = scores.split_at(n as usize);
        // AUC by counting pairs.
        let wins: f64 = m
            .iter()
            .map(|a| {
                nm.iter()
                    .map(|b| {
                        if a > b {
                            1.0
                        } else if a == b {
                            0.5
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
            })
            .sum();
        let auc = wins / (n * n) as f64;
        // Near the 0.95 a threshold on the true-class probability reaches; an
        // untrained attacker sits around 0.5.
        assert!(auc > 0.8, "{auc}");
        // A stop request from the callback ends the fit with its error.
        let err = fit(&a, &x, &members, &cfg, &mut |e| {
            if e.epoch == 2 {
                Err(PluginError::Cancelled)
            } else {
                Ok(())
            }
        });
        assert!(matches!(err, Err(PluginError::Cancelled)));
    }

    #[test]
    fn dropout_makes_train_mode_stochastic_and_eval_deterministic() {
        lethe_plugin_api::tch::manual_seed(3);
        let a = Attacker::new(3, Device::Cpu);
        let x = Tensor::randn([8, 9], (Kind::Float, Device::Cpu));
        let _ = a.forward(&x, true).unwrap();
        let e1 = a.forward(&x, false).unwrap();
        let e2 = a.forward(&x, false).unwrap();
        assert_eq!(e1.size(), [8, 2]);
        assert!(e1.allclose(&e2, 0.0, 0.0, false));
        let t1 = a.forward(&x, true).unwrap();
        let t2 = a.forward(&x, true).unwrap();
        assert!(!t1.allclose(&t2, 1e-6, 1e-6, false));
        assert!(
            a.forward(&Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)), false)
                .is_err()
        );
    }
}
