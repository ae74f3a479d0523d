use super::*;
use crate::model::ModelKind;
use crate::oracle::{torch_oracle, values};
use crate::params::Training;
use crate::setup::Prepared;
use lethe_plugin_api::tch::Device;

/// Deterministic values (no RNG: the oracle gets the same numbers as JSON).
fn fixed(rows: i64, cols: i64, phase: f64) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as f64 + 1.0) * 0.7 + phase).sin() as f32)
        .collect();
    Tensor::from_slice(&v).view([rows, cols])
}

fn json_of(t: &Tensor) -> Value {
    let rows = t.size()[0];
    json!((0..rows).map(|r| values(&t.get(r))).collect::<Vec<_>>())
}

const ORACLE: &str = r#"
import json, sys, torch
import torch.nn.functional as F
d = json.load(sys.stdin)
t = lambda k: torch.tensor(d[k], dtype=torch.float64)
W = t("W").requires_grad_(); b = t("b").requires_grad_()
Wk = W.detach().clone(); bk = b.detach().clone()
queue = F.normalize(t("queue"), dim=1); ptr = 0
m, tau, lr = d["m"], d["tau"], d["lr"]
out = {"loss": [], "in_batch": []}
for s in range(2):
    xq, xk = t(f"q{s}"), t(f"k{s}")
    with torch.no_grad():  # MoCo: momentum update, then keys
        Wk.mul_(m).add_(W.detach() * (1 - m)); bk.mul_(m).add_(b.detach() * (1 - m))
        k = F.normalize(xk @ Wk + bk, dim=1)
    q = F.normalize(xq @ W + b, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / tau
    loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long), reduction="none")
    out["loss"].append(loss.tolist())
    loss.mean().backward()
    with torch.no_grad():
        W -= lr * W.grad; b -= lr * b.grad
        W.grad = None; b.grad = None
        for i in range(len(k)):  # dequeue and enqueue, wrapping around
            queue[(ptr + i) % len(queue)] = k[i]
        ptr = (ptr + len(k)) % len(queue)
with torch.no_grad():
    q = F.normalize(t("q0") @ W + b, dim=1); k = F.normalize(t("k0") @ W + b, dim=1)
    out["in_batch"] = F.cross_entropy(q @ k.t() / tau, torch.arange(len(q)), reduction="none").tolist()
out["queue"] = queue.flatten().tolist(); out["ptr"] = ptr
out["Wk"] = Wk.flatten().tolist(); out["bk"] = bk.flatten().tolist()
print(json.dumps(out))
"#;

fn close(got: &[f64], want: &Value, what: &str) {
    let want: Vec<f64> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 2e-5, "{what}: {got:?} vs {want:?}");
    }
}

/// Two MoCo steps of a linear encoder with SGD between them, against a PyTorch
/// re-implementation of MoCo's loop (momentum update before the key pass,
/// negatives the queue before the batch, keys enqueued after, wrapping around):
/// the per-sample losses of both steps, the queue and its position, and the key
/// encoder's weights after the second momentum update.
#[test]
fn two_moco_steps_match_pytorch_with_queue_and_momentum() {
    let (din, d, n, k) = (5, 3, 3, 4);
    let w = fixed(din, d, 0.0).set_requires_grad(true);
    let b = fixed(1, d, 1.0).view([d]).set_requires_grad(true);
    let queue0 = fixed(k, d, 2.0);
    let views: Vec<Tensor> = (0..4).map(|i| fixed(n, din, 3.0 + i as f64)).collect();
    let (m, tau, lr) = (0.9, 0.2, 0.5);
    let params = vec![
        ("w".to_string(), w.shallow_clone()),
        ("b".to_string(), b.shallow_clone()),
    ];
    let mut moco = Moco::new(&params, tau)
        .with_momentum(m)
        .with_queue(KeyQueue::from_keys(&queue0).unwrap());
    let mut losses = Vec::new();
    for s in 0..2 {
        let loss = moco
            .step(
                |x| Ok(x.f_matmul(&w)?.f_add(&b)?),
                &views[2 * s],
                &views[2 * s + 1],
            )
            .unwrap();
        losses.push(values(&loss));
        loss.mean(Kind::Float).backward();
        tch::no_grad(|| {
            for p in [&w, &b] {
                let g = p.grad();
                let _ = p.shallow_clone().f_sub_(&(&g * lr)).unwrap();
                let _ = g.shallow_clone().zero_();
            }
        });
    }
    let in_batch = tch::no_grad(|| {
        let q = views[0].matmul(&w) + &b;
        let k = views[1].matmul(&w) + &b;
        values(&in_batch_infonce_per_sample(&q, &k, tau).unwrap())
    });
    let input = json!({
        "W": json_of(&w.detach()), "b": values(&b.detach()), "queue": json_of(&queue0),
        "q0": json_of(&views[0]), "k0": json_of(&views[1]),
        "q1": json_of(&views[2]), "k1": json_of(&views[3]),
        "m": m, "tau": tau, "lr": lr,
    });
    // The oracle starts from the weights before training: undo nothing, pass
    // the originals instead.
    let input = {
        let mut input = input;
        input["W"] = json_of(&fixed(din, d, 0.0));
        input["b"] = json!(values(&fixed(1, d, 1.0).view([d])));
        input
    };
    let want = torch_oracle(ORACLE, &input);
    close(&losses[0], &want["loss"][0], "step 1 losses");
    close(&losses[1], &want["loss"][1], "step 2 losses");
    let queue = moco.queue().unwrap();
    close(&values(&queue.keys().unwrap()), &want["queue"], "queue");
    assert_eq!(queue.position(), want["ptr"].as_i64().unwrap());
    assert_eq!(moco.steps(), 2);
    let keys = moco.key_parameters().unwrap();
    close(&values(&keys[0]), &want["Wk"], "key encoder W");
    close(&values(&keys[1]), &want["bk"], "key encoder b");
    close(&in_batch, &want["in_batch"], "in-batch InfoNCE");
    // The live weights were restored after each key pass and trained: they
    // differ from the key encoder's.
    assert!(!w.detach().equal(&keys[0]));
}

#[test]
fn the_queue_wraps_and_keeps_the_newest_keys() {
    let mut q = KeyQueue::empty(3, 2, Device::Cpu).unwrap();
    let rows = |v: &[f32]| Tensor::from_slice(v).view([-1, 2]);
    q.enqueue(&rows(&[1.0, 0.0, 0.0, 2.0])).unwrap();
    assert!(!q.is_full());
    assert_eq!(q.keys().unwrap().size(), [2, 2]);
    q.enqueue(&rows(&[-3.0, 0.0, 0.0, -1.0])).unwrap();
    assert!(q.is_full());
    assert_eq!(values(&q.keys().unwrap()), [0.0, -1.0, 0.0, 1.0, -1.0, 0.0]);
    // A batch larger than the queue keeps its last rows.
    q.enqueue(&rows(&[1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, -4.0]))
        .unwrap();
    assert_eq!(values(&q.keys().unwrap()), [0.0, -1.0, 1.0, 0.0, 0.0, 1.0]);
    let r = KeyQueue::random(5, 4, Device::Cpu).unwrap();
    assert!(r.is_full());
    let norms = values(
        &r.keys()
            .unwrap()
            .norm_scalaropt_dim(2, [1i64].as_slice(), false),
    );
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
}

fn prepared(recipe: Value) -> Prepared {
    let w = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    Prepared {
        kind: ModelKind::Encoder {
            head: lethe_plugin_api::sdk::ModelHead::Projection,
        },
        params: vec![("w".into(), w)],
        masks: vec![None],
        recipe,
    }
}

fn training(temperature: f64) -> Training {
    Training {
        augment: true,
        temperature,
        max_batches: 0,
    }
}

/// The objective follows the checkpoint's task: a MoCo checkpoint gets MoCo's
/// InfoNCE at its recorded τ with `lethe train`'s momentum and queue (before,
/// every encoder got SimCLR NT-Xent at the form's τ 0.5).
#[test]
fn a_moco_checkpoint_gets_the_moco_objective_at_its_temperature() {
    let moco = prepared(json!({"task": "moco", "temperature": 0.2}));
    assert_eq!(moco.encoder_task(), EncoderTask::Moco);
    let o = moco.objective(&training(0.0));
    assert!(o.moco.is_some());
    assert_eq!(o.temperature, 0.2);
    let d = o.describe();
    assert_eq!(d["loss"], "moco_infonce");
    assert_eq!(d["temperature"], 0.2);
    assert_eq!(d["momentum"], MOCO_MOMENTUM);
    assert_eq!(d["queue_size"], MOCO_QUEUE);
    assert!(
        o.loss_name().starts_with("MoCo InfoNCE (τ 0.2"),
        "{}",
        o.loss_name()
    );
    // The form's τ wins when set; MoCo's 0.1 when nothing is recorded.
    assert_eq!(moco.objective(&training(0.3)).temperature, 0.3);
    let bare = prepared(json!({"task": "moco"}));
    assert_eq!(bare.objective(&training(0.0)).temperature, MOCO_TEMPERATURE);
    // SimCLR (recorded or not): NT-Xent, its τ or 0.5.
    let simclr = prepared(json!({"task": "simclr", "temperature": 0.4})).objective(&training(0.0));
    assert!(simclr.moco.is_none());
    assert_eq!(simclr.temperature, 0.4);
    assert_eq!(simclr.describe()["loss"], "simclr_nt_xent");
    let none = prepared(json!({})).objective(&training(0.0));
    assert!(none.moco.is_none());
    assert_eq!(none.temperature, SIMCLR_TEMPERATURE);
}

#[test]
fn the_queue_cap_follows_the_training_set_until_the_queue_exists() {
    let p = prepared(json!({"task": "moco"}));
    let mut m = Moco::new(&p.params, 0.1);
    m.limit_capacity(100);
    assert_eq!(m.describe()["queue_size"], 100);
    m.limit_capacity(10_000);
    assert_eq!(m.describe()["queue_size"], 100);
}
