use super::*;
use lethe_plugin_api::tch::Device;
use std::io::Write;
use std::process::{Command, Stdio};

const C: f64 = std::f64::consts::FRAC_1_SQRT_2;

fn v(t: &Tensor) -> f64 {
    t.double_value(&[])
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn lse(xs: &[f64]) -> f64 {
    xs.iter().map(|x| x.exp()).sum::<f64>().ln()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

fn t2(rows: &[[f64; 2]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, 2])
}

fn mask(bits: &[bool]) -> Tensor {
    Tensor::from_slice(bits)
}

#[test]
fn the_row_mask_is_tiled_not_repeated() {
    let m = mask(&[false, true, true]);
    let rows: Vec<bool> = Vec::try_from(rows_of_two_views(&m).unwrap()).unwrap();
    assert_eq!(rows, [false, true, true, false, true, true]);
    // The public code's elementwise repeat marks other rows: the bug this avoids.
    let repeated: Vec<bool> = Vec::try_from(m.repeat_interleave_self_int(2, 0, None)).unwrap();
    assert_ne!(rows, repeated);
}

/// Sample 0 is retained, samples 1 and 2 are forgotten; τ = 0.5, so s = 2·cos.
/// Rows `[view0; view1]`: a0 = e1, a1 = e2, a2 = −e1, a3 = e1, a4 = (c, c), a5 = −e2.
#[test]
fn simclr_terms_by_hand() {
    let z1 = t2(&[[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]);
    let z2 = t2(&[[5.0, 0.0], [1.0, 1.0], [0.0, -1.0]]);
    let t = simclr_terms(&z1, &z2, &mask(&[false, true, true]), 0.5).unwrap();
    // Retain rows a0 and a3 (the two views of sample 0, rows 0 and 0 + N): each
    // sees cosines {1 (its partner), 0, −1, c, 0} against the other five rows.
    let retain = lse(&[2.0, 0.0, -2.0, 2.0 * C, 0.0]) - 2.0;
    assert!(close(v(&t.retain), retain), "{} vs {retain}", v(&t.retain));
    // Forget rows a1, a2, a4, a5: partners a1↔a4 (cos c) and a2↔a5 (cos 0).
    assert!(close(v(&t.pos), C), "{}", v(&t.pos));
    // Ordered pairs of different forget samples: (a1,a2) 0, (a1,a5) −1,
    // (a4,a2) −c, (a4,a5) −c, each twice: mean cos (−1 − 2c)/4, times 2.
    let neg = (-1.0 - 2.0 * C) / 2.0;
    assert!(close(v(&t.neg), neg), "{} vs {neg}", v(&t.neg));
    let lse_rows = [
        lse(&[0.0, 0.0, 0.0, 2.0 * C, -2.0]),                  // a1
        lse(&[-2.0, 0.0, -2.0, -2.0 * C, 0.0]),                // a2
        lse(&[2.0 * C, 2.0 * C, -2.0 * C, 2.0 * C, -2.0 * C]), // a4
        lse(&[0.0, -2.0, 0.0, 0.0, -2.0 * C]),                 // a5
    ];
    let want = lse_rows.iter().sum::<f64>() / 4.0;
    assert!(close(v(&t.lse), want), "{} vs {want}", v(&t.lse));

    let c = Coefficients {
        alpha: 1.5,
        beta: 4.0,
        gamma: 0.5,
        epsilon: 0.1,
    };
    let total = retain + 0.1 * (-1.5 * neg + 4.0 * C + 0.5 * want);
    assert!(close(v(&t.total(&c).unwrap()), total));

    // The retain term is NT-Xent on the retain rows of the whole batch.
    let rows = values(&lethe_plugin_kit::losses::nt_xent_per_row(&z1, &z2, 0.5).unwrap());
    assert!(close(v(&t.retain), (rows[0] + rows[3]) / 2.0));
}

/// q = [e1, e2, −e1], k = [e1, (c, c), −e2], queue = [e2, −e2]; sample 0 retained,
/// 1 and 2 forgotten; τ = 0.5. Forget row 1's negative key is k2, row 2's is k1.
#[test]
fn moco_terms_by_hand() {
    let q = t2(&[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]);
    let k = t2(&[[3.0, 0.0], [1.0, 1.0], [0.0, -4.0]]);
    let queue = t2(&[[0.0, 1.0], [0.0, -1.0]]);
    let t = moco_terms(&q, &k, &mask(&[false, true, true]), &queue, 0.5).unwrap();
    let retain = lse(&[2.0, 0.0, 0.0]) - 2.0;
    assert!(close(v(&t.retain), retain), "{}", v(&t.retain));
    assert!(close(v(&t.pos), (2.0 * C + 0.0) / 2.0), "{}", v(&t.pos));
    let neg = (-2.0 + -2.0 * C) / 2.0;
    assert!(close(v(&t.neg), neg), "{} vs {neg}", v(&t.neg));
    let want = (lse(&[-2.0, 2.0, -2.0]) + lse(&[-2.0 * C, 0.0, 0.0])) / 2.0;
    assert!(close(v(&t.lse), want), "{} vs {want}", v(&t.lse));
}

#[test]
fn one_forget_sample_has_no_negative_pair() {
    let q = t2(&[[1.0, 0.0], [0.0, 2.0]]);
    let k = t2(&[[3.0, 0.0], [1.0, 1.0]]);
    let queue = t2(&[[0.0, 1.0]]);
    let t = moco_terms(&q, &k, &mask(&[false, true]), &queue, 0.5).unwrap();
    assert_eq!(v(&t.neg), 0.0);
    let t = simclr_terms(&q, &k, &mask(&[false, true]), 0.5).unwrap();
    assert_eq!(v(&t.neg), 0.0);
}

fn torch_oracle(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
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
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Both variants against loops written from the paper's definitions in PyTorch
/// (float64), on random embeddings.
#[test]
fn terms_match_pytorch_loops() {
    lethe_plugin_api::tch::manual_seed(5);
    let o = (Kind::Float, Device::Cpu);
    let (z1, z2) = (Tensor::randn([6, 4], o), Tensor::randn([6, 4], o));
    let queue = Tensor::randn([7, 4], o);
    let forget = [false, true, false, true, true, false];
    let m = mask(&forget);
    let s = simclr_terms(&z1, &z2, &m, 0.3).unwrap();
    let mo = moco_terms(&z1, &z2, &m, &queue, 0.3).unwrap();
    let input = serde_json::json!({
        "z1": values(&z1), "z2": values(&z2), "queue": values(&queue), "forget": forget,
    });
    let theirs = torch_oracle(
        r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
t = 0.3
z1 = F.normalize(torch.tensor(d["z1"], dtype=torch.float64).view(6, 4), dim=1)
z2 = F.normalize(torch.tensor(d["z2"], dtype=torch.float64).view(6, 4), dim=1)
Q = F.normalize(torch.tensor(d["queue"], dtype=torch.float64).view(7, 4), dim=1)
f = d["forget"]; n = 6
sim = lambda a, b: (a @ b).item() / t
# SimCLR: rows are view0 of every sample, then view1; sample of row r is r % n.
rows = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
def lse_row(a):
    return torch.logsumexp(torch.tensor([sim(rows[a], rows[b]) for b in range(2 * n) if b != a]), 0).item()
ret, pos, neg, lse = [], [], [], []
for a in range(2 * n):
    p = sim(rows[a], rows[(a + n) % (2 * n)])
    if f[a % n]:
        pos.append(p); lse.append(lse_row(a))
        neg += [sim(rows[a], rows[b]) for b in range(2 * n) if f[b % n] and b % n != a % n]
    else:
        ret.append(lse_row(a) - p)
mean = lambda xs: sum(xs) / len(xs)
simclr = {"retain": mean(ret), "pos": mean(pos), "neg": mean(neg), "lse": mean(lse)}
# MoCo: q = z1, k = z2; a forget query's negative pair is the next forget sample's key.
fi = [i for i in range(n) if f[i]]
ret, pos, neg, lse = [], [], [], []
for i in range(n):
    qn = torch.tensor([sim(z1[i], Q[j]) for j in range(7)])
    if f[i]:
        o = fi[(fi.index(i) + 1) % len(fi)]
        s_neg = sim(z1[i], z2[o])
        pos.append(sim(z1[i], z2[i])); neg.append(s_neg)
        lse.append(torch.logsumexp(torch.cat([torch.tensor([s_neg]), qn]), 0).item())
    else:
        p = sim(z1[i], z2[i])
        ret.append(torch.logsumexp(torch.cat([torch.tensor([p]), qn]), 0).item() - p)
moco = {"retain": mean(ret), "pos": mean(pos), "neg": mean(neg), "lse": mean(lse)}
print(json.dumps({"simclr": simclr, "moco": moco}))
"#,
        &input,
    );
    for (name, ours) in [("simclr", &s), ("moco", &mo)] {
        for (key, t) in [
            ("retain", &ours.retain),
            ("pos", &ours.pos),
            ("neg", &ours.neg),
            ("lse", &ours.lse),
        ] {
            let want = theirs[name][key].as_f64().unwrap();
            assert!(close(v(t), want), "{name}.{key}: {} vs {want}", v(t));
        }
    }
}

#[test]
fn the_forget_mask_puts_retain_first() {
    let m: Vec<bool> = Vec::try_from(forget_mask(2, 3, Device::Cpu).unwrap()).unwrap();
    assert_eq!(m, [false, false, true, true, true]);
}
