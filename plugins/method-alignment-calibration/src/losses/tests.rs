use super::*;
use lethe_plugin_api::tch::Device;
use lethe_plugin_kit::oracle::{torch_oracle, values};

const C: f64 = std::f64::consts::FRAC_1_SQRT_2;

fn v(t: &Tensor) -> f64 {
    t.double_value(&[])
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

    // The reference's negative partners: a1 with a5 (cos −1), a2 with a4 (−c).
    let partner = (-2.0 - 2.0 * C) / 2.0;
    assert!(
        close(v(&t.partner), partner),
        "{} vs {partner}",
        v(&t.partner)
    );
    assert_eq!((t.retain_samples, t.forget_samples), (1, 2));

    let mut c = Coefficients {
        formulation: Formulation::Paper,
        alpha: 1.5,
        beta: 4.0,
        gamma: 0.5,
        epsilon: 0.1,
        forget_share: 0.2,
    };
    let total = retain + 0.1 * (-1.5 * neg + 4.0 * C + 0.5 * want);
    assert!(close(v(&t.total(&c).unwrap()), total));
    // Reference: one retain sample against two forget samples at weight 1.5,
    // and β·ρ on the mean raw cosine (c + 0)/2, not on the mean s = c.
    c.formulation = Formulation::Reference;
    let total = (retain + 1.5 * 2.0 * (want - partner)) / (1.0 + 1.5 * 2.0) + 4.0 * 0.2 * C / 2.0;
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
    assert!(close(v(&t.partner), neg));
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

/// The *total* loss of both readings on a fixed batch, against PyTorch written
/// from the reference code's training step (SimCLR: lightly's NT-Xent per row
/// over `[anchor; partner view]`; MoCo: cross-entropy over `[q·k, q·queue]`; the
/// weighted mean `(Σ_retain l + α·Σ_forget l)/(N_r + α·N_u)` and
/// `β·|D_u|/(|D_r|+|D_u|)·cos`) and from eq. (5) as printed. Coefficients away
/// from 1 (α ≠ γ, the reference's `alpha != 1` branch), split sizes of CIFAR-10
/// at 10 % forgetting, MoCo's τ 0.1.
#[test]
fn total_loss_of_both_formulations_matches_pytorch() {
    lethe_plugin_api::tch::manual_seed(11);
    let o = (Kind::Float, Device::Cpu);
    let (n, d, k) = (7, 5, 9);
    let (z1, z2) = (Tensor::randn([n, d], o), Tensor::randn([n, d], o));
    let queue = Tensor::randn([k, d], o);
    let forget = [true, false, false, true, false, true, false];
    let m = mask(&forget);
    let (tau, d_r, d_u) = (0.1, 40_500.0, 4_500.0);
    let c = |formulation| Coefficients {
        formulation,
        alpha: 0.7,
        beta: 14.0,
        gamma: 1.3,
        epsilon: d_u / d_r,
        forget_share: d_u / (d_r + d_u),
    };
    let s = simclr_terms(&z1, &z2, &m, tau).unwrap();
    let mo = moco_terms(&z1, &z2, &m, &queue, tau).unwrap();
    let theirs = torch_oracle(
        r#"
import json, sys, torch, torch.nn.functional as F
d = json.load(sys.stdin)
n, dim, K = d["n"], d["d"], d["k"]
t, a, b, g = d["tau"], d["alpha"], d["beta"], d["gamma"]
eps, share = d["d_u"] / d["d_r"], d["d_u"] / (d["d_r"] + d["d_u"])
T = lambda x, *s: torch.tensor(x, dtype=torch.float64).view(*s)
z1, z2, queue = T(d["z1"], n, dim), T(d["z2"], n, dim), T(d["queue"], K, dim)
f = torch.tensor(d["forget"])
fi = f.nonzero().squeeze(1)
# The reference's batch: anchor, a view of another forget sample (retain rows:
# their own second view), and the forget sample's own second view.
anchor, positive = z1, z2
partner = z2.clone()
partner[fi] = z2[fi.roll(-1)]
def weighted(l, u):
    return (l[~u].sum() + a * l[u].sum()) / ((~u).sum() + a * u.sum())
pos_cos = F.cosine_similarity(anchor[f], positive[f], dim=1, eps=1e-6).mean()
out = {}
# SimCLR, lightly NTXentLoss(reduction='none'): rows [out0; out1], row i's label
# is its other view, every other row in the denominator.
x = F.normalize(torch.cat([anchor, partner]), dim=1)
logits = x @ x.T / t
logits.fill_diagonal_(float("-inf"))
labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
l = F.cross_entropy(logits, labels, reduction="none")
out["simclr_reference"] = (weighted(l, f.repeat(2)) + b * share * pos_cos).item()
# MoCo, lightly NTXentLoss with a memory bank: logits [q·k, q·bank] / t, label 0.
q, kp, Q = F.normalize(anchor, dim=1), F.normalize(partner, dim=1), F.normalize(queue, dim=1)
logits = torch.cat([(q * kp).sum(1, keepdim=True), q @ Q.T], 1) / t
l = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long), reduction="none")
out["moco_reference"] = (weighted(l, f) + b * share * pos_cos).item()
# Eq. (5): L_retain + eps * (-a E_neg s + b E_pos s + g E lse), s = cos / t.
x = F.normalize(torch.cat([z1, z2]), dim=1)
S = x @ x.T / t
rows = torch.arange(2 * n)
sample, fr = rows % n, f.repeat(2)
pos = S[rows, (rows + n) % (2 * n)]
lse = torch.logsumexp(S.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf")), 1)
negs = S[fr[:, None] & fr[None, :] & (sample[:, None] != sample[None, :])]
out["simclr_paper"] = ((lse - pos)[~fr].mean()
    + eps * (-a * negs.mean() + b * pos[fr].mean() + g * lse[fr].mean())).item()
kq = F.normalize(z2, dim=1)
own, other, against = (q * kq).sum(1) / t, (q * kp).sum(1) / t, q @ Q.T / t
nce = lambda first: torch.logsumexp(torch.cat([first[:, None], against], 1), 1)
out["moco_paper"] = ((nce(own) - own)[~f].mean()
    + eps * (-a * other[f].mean() + b * own[f].mean() + g * nce(other)[f].mean())).item()
print(json.dumps(out))
"#,
        &serde_json::json!({
            "n": n, "d": d, "k": k, "tau": tau, "alpha": 0.7, "beta": 14.0, "gamma": 1.3,
            "d_r": d_r, "d_u": d_u, "forget": forget,
            "z1": values(&z1), "z2": values(&z2), "queue": values(&queue),
        }),
    );
    let mut totals = Vec::new();
    for (name, terms) in [("simclr", &s), ("moco", &mo)] {
        for f in [Formulation::Reference, Formulation::Paper] {
            let key = format!("{name}_{}", f.name());
            let ours = v(&terms.total(&c(f)).unwrap());
            let want = theirs[&key].as_f64().unwrap();
            assert!(close(ours, want), "{key}: ours {ours}, PyTorch {want}");
            totals.push(ours);
        }
        // The readings are far apart on this batch, so matching one is not
        // matching the other.
        let [reference, paper] = totals[totals.len() - 2..] else {
            unreachable!()
        };
        assert!(
            (reference - paper).abs() > 0.1 * reference.abs(),
            "{name}: {reference} vs {paper}"
        );
    }
}
