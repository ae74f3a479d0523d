//! Contrastive losses, returned per sample so that unlearning methods can weight or
//! mask rows (Alignment Calibration needs per-sample InfoNCE).

use tch::{Kind, Tensor};

/// L2-normalises rows.
pub fn normalize(z: &Tensor) -> Tensor {
    let norm = z
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    z / norm
}

/// SimCLR NT-Xent over two views `z1`, `z2` (`[N, D]`), per row of the `2N` stacked
/// rows `[view0; view1]`: row `i` is view0 of sample `i`, row `N+i` is view1 of sample
/// `i`. A per-sample mask over the 2N rows must therefore be *tiled* (`[m; m]`), not
/// repeated elementwise — the bug in the Alignment Calibration code.
pub fn nt_xent_per_row(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    let n = z1.size()[0];
    let z = normalize(&Tensor::cat(&[z1, z2], 0));
    let sim = z.matmul(&z.tr()) / temperature;
    let eye = Tensor::eye(2 * n, (Kind::Bool, z.device()));
    let sim = sim.masked_fill(&eye, f64::NEG_INFINITY);
    let idx = Tensor::arange(n, (Kind::Int64, z.device()));
    let targets = Tensor::cat(&[&idx + n, idx], 0);
    sim.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::None, -100, 0.0)
}

/// Mean NT-Xent (the SimCLR training loss).
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    nt_xent_per_row(z1, z2, temperature).mean(Kind::Float)
}

/// MoCo InfoNCE per query: positive logit `q·k`, negatives `q·queueᵀ`, all over the
/// temperature; the positive is class 0. `q`, `k` are `[N, D]`, `queue` is `[K, D]`;
/// inputs are normalised here so callers can pass raw projections.
pub fn moco_infonce_per_sample(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    let q = normalize(q);
    let k = normalize(k);
    let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, q.kind());
    let neg = q.matmul(&normalize(queue).tr());
    let logits = Tensor::cat(&[pos, neg], 1) / temperature;
    let targets = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::None, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use tch::Device;

    fn venv_python() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// Runs a PyTorch snippet that reads `z1 z2 q k queue` (JSON) on stdin and prints
    /// its per-row losses as JSON: the independent oracle for our formulas.
    fn torch_oracle(script: &str, input: &serde_json::Value) -> Vec<f32> {
        let mut child = Command::new(venv_python())
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
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn nt_xent_matches_pytorch() {
        tch::manual_seed(1);
        let z1 = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let z2 = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let ours = values(&nt_xent_per_row(&z1, &z2, 0.5));
        let input = serde_json::json!({"z1": values(&z1), "z2": values(&z2)});
        // Written from the SimCLR paper's definition, not from our code.
        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
z1 = torch.tensor(d["z1"]).view(5, 7); z2 = torch.tensor(d["z2"]).view(5, 7)
z = F.normalize(torch.cat([z1, z2]), dim=1)
n = 5
out = []
for i in range(2 * n):
    j = (i + n) % (2 * n)
    s = torch.stack([z[i] @ z[k] / 0.5 for k in range(2 * n) if k != i])
    pos = z[i] @ z[j] / 0.5
    out.append((torch.logsumexp(s, 0) - pos).item())
print(json.dumps(out))
"#,
            &input,
        );
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn moco_infonce_matches_pytorch() {
        tch::manual_seed(2);
        let q = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let queue = Tensor::randn([9, 6], (Kind::Float, Device::Cpu));
        let ours = values(&moco_infonce_per_sample(&q, &k, &queue, 0.1));
        let input = serde_json::json!({"q": values(&q), "k": values(&k), "queue": values(&queue)});
        let theirs = torch_oracle(
            r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
q = F.normalize(torch.tensor(d["q"]).view(4, 6), dim=1)
k = F.normalize(torch.tensor(d["k"]).view(4, 6), dim=1)
Q = F.normalize(torch.tensor(d["queue"]).view(9, 6), dim=1)
logits = torch.cat([(q * k).sum(1, keepdim=True), q @ Q.T], 1) / 0.1
print(json.dumps(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long), reduction="none").tolist()))
"#,
            &input,
        );
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn identical_views_give_lower_loss_than_unrelated_ones() {
        tch::manual_seed(3);
        let z = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let other = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let same = nt_xent(&z, &z, 0.5).double_value(&[]);
        let diff = nt_xent(&z, &other, 0.5).double_value(&[]);
        assert!(same < diff, "{same} !< {diff}");
    }
}
