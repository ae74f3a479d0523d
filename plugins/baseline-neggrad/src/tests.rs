//! NegGrad's encoder loss against the reference's, re-implemented in PyTorch.

use super::*;
use lethe_plugin_api::tch::{self, Device};
use lethe_plugin_kit::losses::nt_xent_per_sample;
use lethe_plugin_kit::oracle::{torch_oracle, values};

/// Item 8 of issue 18: on an encoder, NegGrad's loss is ONE InfoNCE over the
/// batch mixing retain and forget samples, the forget rows' sign flipped:
/// `(loss[retain rows].sum() − loss[unlearn rows].sum()) / len(loss)` over
/// lightly's per-row NT-Xent (`reduction='none'`, 2N rows `[view0; view1]`), as
/// `algs.py` of the Alignment Calibration code computes it. The views come from a
/// fixed toy encoder `tanh(v·W)`, the second view `0.8·x + 0.1`; the total and its
/// gradient into `W` are compared, and the batch must be one forward pass.
#[test]
fn encoder_loss_is_one_infonce_over_the_mixed_batch_as_the_reference() {
    tch::manual_seed(7);
    let opts = (DType::Float, Device::Cpu);
    let (n_r, n_f, t) = (6i64, 2i64, 0.5);
    let xr = Tensor::randn([n_r, 3], opts);
    let xf = Tensor::randn([n_f, 3], opts) + 0.5;
    let (yr, yf) = (
        Tensor::zeros([n_r], (DType::Int64, Device::Cpu)),
        Tensor::zeros([n_f], (DType::Int64, Device::Cpu)),
    );
    let w = Tensor::randn([3, 4], opts).set_requires_grad(true);
    let mut passes = 0;
    let m = mixed_batch_loss((&xr, &yr), (&xf, &yf), 1.0, |x, _| {
        passes += 1;
        let z1 = x.f_matmul(&w)?.f_tanh()?;
        let z2 = (x * 0.8 + 0.1).f_matmul(&w)?.f_tanh()?;
        nt_xent_per_sample(&z1, &z2, t)
    })
    .unwrap();
    assert_eq!(passes, 1, "one forward pass over the mixed batch");
    assert_eq!(m.retain.size(), [n_r]);
    assert_eq!(m.forget.size(), [n_f]);
    m.loss.backward();

    let script = r#"
import json, sys, torch
import torch.nn.functional as F
d = json.load(sys.stdin)
nr, nf, t = d["nr"], d["nf"], d["t"]
x = torch.tensor(d["x"], dtype=torch.float64).view(nr + nf, 3)
W = torch.tensor(d["w"], dtype=torch.float64).view(3, 4).requires_grad_()
unlearn = torch.tensor([False] * nr + [True] * nf)
# Shuffle the batch as a concatenated loader would: the loss must not care.
perm = torch.tensor(d["perm"])
x, unlearn = x[perm], unlearn[perm]
z0, z1 = torch.tanh(x @ W), torch.tanh((0.8 * x + 0.1) @ W)
# lightly.loss.NTXentLoss(temperature=t, reduction='none'), no memory bank.
n = x.shape[0]
out0, out1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
diag = torch.eye(n, dtype=torch.bool)
l00 = (out0 @ out0.T / t)[~diag].view(n, -1)
l01 = out0 @ out1.T / t
l10 = out1 @ out0.T / t
l11 = (out1 @ out1.T / t)[~diag].view(n, -1)
logits = torch.cat([torch.cat([l01, l00], 1), torch.cat([l10, l11], 1)], 0)
labels = torch.arange(n).repeat(2)
loss = F.cross_entropy(logits, labels, reduction="none")
# algs.py: ubi = unlearn_batch_indices.repeat(2) on a NumPy array repeats
# elementwise, which marks the wrong rows of [view0; view1]; the rows are
# tiled, as torch's repeat does (the intended mask, as Lethe's AC).
ubi, rbi = unlearn.repeat(2), (~unlearn).repeat(2)
total = (loss[rbi].sum() - loss[ubi].sum()) / len(loss)
total.backward()
print(json.dumps({"loss": total.item(), "dw": W.grad.flatten().tolist()}))
"#;
    let theirs = torch_oracle(
        script,
        &serde_json::json!({
            "nr": n_r, "nf": n_f, "t": t,
            "x": values(&Tensor::cat(&[&xr, &xf], 0)),
            "w": values(&w.detach()),
            "perm": [3, 6, 0, 1, 7, 5, 2, 4],
        }),
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    let want = theirs["loss"].as_f64().unwrap();
    let got = m.loss.double_value(&[]);
    assert!(close(got, want), "{got} vs {want}");
    let dw: Vec<f64> = serde_json::from_value(theirs["dw"].clone()).unwrap();
    let ours = values(&w.grad());
    assert_eq!(ours.len(), dw.len());
    for (a, b) in ours.iter().zip(&dw) {
        assert!(close(*a, *b), "{ours:?} vs {dw:?}");
    }
}

/// The forget weight scales the ascended part only, and the mean is over all
/// samples of the mixed batch.
#[test]
fn forget_weight_and_normalisation() {
    let l = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 10.0]);
    let x = Tensor::zeros([3, 1], (DType::Float, Device::Cpu));
    let xf = Tensor::zeros([1, 1], (DType::Float, Device::Cpu));
    let y = Tensor::zeros([3], (DType::Int64, Device::Cpu));
    let yf = Tensor::zeros([1], (DType::Int64, Device::Cpu));
    let m = mixed_batch_loss((&x, &y), (&xf, &yf), 0.5, |xs, _| {
        assert_eq!(xs.size(), [4, 1]);
        Ok(l.shallow_clone())
    })
    .unwrap();
    assert!((m.loss.double_value(&[]) - (6.0 - 5.0) / 4.0).abs() < 1e-6);
    assert_eq!(values(&m.retain), vec![1.0, 2.0, 3.0]);
    assert_eq!(values(&m.forget), vec![10.0]);
}
