//! The membership attacker of Yuan and Zhang (USENIX Security 2022), which
//! Discriminative Adversarial Unlearning plays against: the `3C` inputs
//! `[softmax p, sensitivity, one-hot label]` go through BatchNorm1d(3C), become
//! `C` tokens of dimension 3 (token `j` = `(p_j, s_j, y_j)`), are embedded by
//! Linear(3, 64) + GELU, pass a 3-layer transformer encoder (4 heads, feed-forward
//! 128, dropout 0.2, GELU, post-norm as PyTorch's `TransformerEncoderLayer`), and
//! are flattened into Linear(64·C, 64) + ReLU → Linear(64, 2).
//!
//! Variable names follow PyTorch's modules (`layers.0.self_attn.in_proj`, …) so
//! the test can load the same weights into `torch.nn` and compare outputs.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::nn::{self, ModuleT};
use lethe_plugin_api::tch::{Device, Kind, Tensor};

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

/// The attacker network, with its own variables.
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
