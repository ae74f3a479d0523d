//! The unlearning methods of the four papers (plugins/method-*) on the bundled
//! demo model and data, each through a real `lethe-cli worker` process as a
//! user's job runs. Each test measures the direction its paper promises with a
//! yardstick computed here from the saved checkpoint, not from what the plugin
//! reports about itself: loss and accuracy of the forget set against unseen test
//! data and a loss-threshold membership AUC for classifiers; the positive-pair
//! similarity of forget samples (the forgetting score) and a linear probe for
//! encoders. Runs are shortened through the methods' own parameters (epochs,
//! batches) to keep the suite to a few CPU minutes.
//!
//! Needs `lethe-cli` built (`cargo build --workspace`, or `./run test`); the
//! plugins are dev-dependencies, so cargo rebuilds them for this test.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Demo, Run, checkpoint_of, demo, demo_dir, load, plugin_library};

use lethe_e2e::require_binary;
use lethe_engine::metrics::roc_auc;
use lethe_engine::models::Model;
use lethe_engine::train::augment::AugmentConfig;
use lethe_engine::train::probe::{extract, train_linear_probe};
use lethe_engine::train::{Flow, Schedule, TrainConfig};
use lethe_engine::worker::{FromWorker, Job, JobOutcome, WorkerOptions, spawn_worker};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// Every tensor of a safetensors checkpoint, by name.
fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn same_weights(a: &Path, b: &Path) -> bool {
    tensors(a)
        .iter()
        .zip(tensors(b))
        .all(|((n1, t1), (n2, t2))| *n1 == n2 && t1.equal(&t2))
}

/// The `seed` parameter reaches what it seeds: Alignment Calibration measured
/// its before-audit with a fixed generator seed and then trained from there, so
/// two seeds gave the same model (#18 item 9). Same seed: the same model.
#[test]
fn alignment_calibration_seeds_reach_training() {
    let params = |seed: u64| json!({"epochs": 1, "max_batches": 2, "seed": seed});
    let a = unlearn("alignment-calibration", "encoder", params(1));
    let b = unlearn("alignment-calibration", "encoder", params(2));
    let again = unlearn("alignment-calibration", "encoder", params(1));
    assert!(
        same_weights(a.model(), again.model()),
        "same seed, same model"
    );
    assert!(
        !same_weights(a.model(), b.model()),
        "seeds 1 and 2 gave the same model"
    );
}

/// Runs `org.lethe.method.<method>` over a demo checkpoint and forget list.
fn unlearn_with(method: &str, checkpoint: &Path, forget: &Path, params: Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("job");
    let run = support::run_to_success(
        &options(),
        job(method, checkpoint, forget, params, &out),
        &out,
        dir,
        method,
    );
    assert!(
        run.artifacts.contains_key("model"),
        "{method} saved no model"
    );
    run
}

fn job(method: &str, checkpoint: &Path, forget: &Path, params: Value, out: &Path) -> Job {
    support::job(
        plugin_library(&format!("lethe_method_{method}")),
        &format!("org.lethe.method.{method}"),
        checkpoint,
        forget,
        params,
        out,
    )
}

fn options() -> WorkerOptions {
    support::options(Duration::from_secs(600))
}

fn unlearn(method: &str, model: &str, params: Value) -> Run {
    unlearn_with(
        method,
        &checkpoint_of(model),
        &demo_dir().join("forget.txt"),
        params,
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Per-sample cross-entropy and accuracy of a classifier checkpoint on `rows`.
struct ClassifierEval {
    losses: Vec<f64>,
    accuracy: f64,
}

fn classifier_eval(path: &Path, demo: &Demo, rows: &[i64]) -> ClassifierEval {
    let m = load(path);
    let Model::Classifier(c) = &m.model else {
        panic!("{} is not a classifier", path.display())
    };
    let (x, y) = demo.batch(rows);
    tch::no_grad(|| {
        let logits = c.forward_t(&x, false);
        let losses = logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0);
        let accuracy = logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        ClassifierEval {
            losses: Vec::<f64>::try_from(losses.to_kind(Kind::Double)).unwrap(),
            accuracy,
        }
    })
}

/// The loss-threshold attack's AUC, forget (members) against test (non-members):
/// lower loss reads as "member", so the score is the negated loss.
fn loss_auc(forget: &ClassifierEval, test: &ClassifierEval) -> f64 {
    let neg = |v: &[f64]| v.iter().map(|l| -l).collect::<Vec<_>>();
    roc_auc(&neg(&forget.losses), &neg(&test.losses)).unwrap()
}

/// What the tests compare for a classifier, before or after.
#[derive(Debug)]
struct Utility {
    retain_acc: f64,
    forget_acc: f64,
    test_acc: f64,
    forget_loss: f64,
    test_loss: f64,
    auc: f64,
}

fn utility(path: &Path, demo: &Demo) -> Utility {
    let retain = classifier_eval(path, demo, &demo.retain[..2000]);
    let forget = classifier_eval(path, demo, &demo.forget);
    let test = classifier_eval(path, demo, &demo.test);
    Utility {
        retain_acc: retain.accuracy,
        forget_acc: forget.accuracy,
        test_acc: test.accuracy,
        forget_loss: mean(&forget.losses),
        test_loss: mean(&test.losses),
        auc: loss_auc(&forget, &test),
    }
}

/// Mean cosine similarity of the projections of two augmented views of each of
/// `rows`, with views drawn from a fixed seed so that two checkpoints see the same
/// images: the "positive alignment" whose drop is the forgetting score (eq. 2 of
/// the Alignment Calibration paper).
fn alignment(path: &Path, demo: &Demo, rows: &[i64]) -> f64 {
    let m = load(path);
    let Model::Encoder(e) = &m.model else {
        panic!("{} is not an encoder", path.display())
    };
    let (x, _) = demo.batch(rows);
    tch::manual_seed(77);
    let aug = AugmentConfig::contrastive();
    let (v1, v2) = (aug.apply(&x), aug.apply(&x));
    tch::no_grad(|| {
        let z1 = e.forward_t(&v1, false);
        let z2 = e.forward_t(&v2, false);
        Tensor::cosine_similarity(&z1, &z2, 1, 1e-8)
            .mean(Kind::Double)
            .double_value(&[])
    })
}

/// Test accuracy of a linear probe on the encoder's frozen backbone features,
/// trained on the retain samples (30 epochs, as the demo README's probe).
fn probe_accuracy(path: &Path, demo: &Demo) -> f64 {
    let m = load(path);
    let feat = |x: &Tensor| m.model.features(x, false);
    let (xr, yr) = (
        demo.data
            .images()
            .index_select(0, &Tensor::from_slice(&demo.retain)),
        demo.data
            .labels()
            .index_select(0, &Tensor::from_slice(&demo.retain)),
    );
    let cfg = TrainConfig {
        epochs: 30,
        batch_size: 256,
        lr: 0.5,
        weight_decay: 0.0,
        schedule: Schedule::Cosine,
        seed: 0,
        augment: None,
        ..TrainConfig::default()
    };
    let (probe, _) = train_linear_probe(&feat, &xr, &yr, 10, Device::Cpu, &cfg, &mut |_| {
        Flow::Continue
    })
    .unwrap();
    let pick = Tensor::from_slice(&demo.test);
    let xt = demo.data.images().index_select(0, &pick);
    let yt = demo.data.labels().index_select(0, &pick);
    probe.accuracy(&extract(&feat, &xt, Device::Cpu), &yt)
}

/// A forget list with every training sample of `class`, written into `dir`.
fn class_forget_list(demo: &Demo, class: i64, dir: &Path) -> PathBuf {
    let labels = demo.data.label_slice();
    let rows: Vec<String> = demo
        .train
        .iter()
        .filter(|&&i| labels[i as usize] == class)
        .map(|&i| demo.data.indices()[i as usize].to_string())
        .collect();
    let path = dir.join(format!("class-{class}.txt"));
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

/// SimCLR NT-Xent (τ 0.5) of an encoder checkpoint on `rows`, over two views
/// drawn from a fixed seed, so two checkpoints and two sets of rows of the same
/// size are compared on equal terms.
fn nt_xent(path: &Path, demo: &Demo, rows: &[i64]) -> f64 {
    let m = load(path);
    let Model::Encoder(e) = &m.model else {
        panic!("{} is not an encoder", path.display())
    };
    let (x, _) = demo.batch(rows);
    tch::manual_seed(99);
    let aug = AugmentConfig::contrastive();
    let (v1, v2) = (aug.apply(&x), aug.apply(&x));
    tch::no_grad(|| {
        lethe_engine::train::losses::nt_xent(
            &e.forward_t(&v1, false),
            &e.forward_t(&v2, false),
            0.5,
        )
        .double_value(&[])
    })
}

/// EncoderMU (defaults: α 1, β 0.1, γ 0.1, member loss on the forget set as the
/// paper has it) on the overfitted demo classifier: the forget samples' loss rises
/// from ~600× below that of unseen data to its level (the norm term lowers the
/// confidence on all data, as the paper intends), no membership signal appears
/// (the demo's loss-threshold AUC is near chance to begin with, ~0.53), and test
/// accuracy stays within the paper's "about 10 %".
#[test]
fn encodermu_brings_the_forget_loss_to_the_level_of_unseen_data() {
    let demo = demo();
    let before = utility(&checkpoint_of("classifier"), &demo);
    let run = unlearn(
        "encodermu",
        "classifier",
        json!({"epochs": 5, "augment": false, "seed": 1}),
    );
    run.assert_reports(&[
        "loss",
        "member_loss",
        "gradient_penalty",
        "output_norm",
        "lr",
    ]);
    let after = utility(run.model(), &demo);
    eprintln!("EncoderMU classifier\n  before {before:?}\n  after  {after:?}");
    assert!(before.test_loss > 100.0 * before.forget_loss, "{before:?}");
    assert!(after.forget_loss > 0.3 * after.test_loss, "{after:?}");
    assert!((after.auc - 0.5).abs() < 0.1, "{after:?}");
    assert!(
        after.test_acc > before.test_acc - 0.10,
        "{before:?} {after:?}"
    );
    assert!(after.retain_acc > 0.9, "{after:?}");
    assert_eq!(run.summary["model_kind"], "classifier");
    assert_eq!(run.summary["critic_output"], "classifier");
    assert_eq!(run.summary["critic_mode"], "eval");
}

/// EncoderMU on the SimCLR encoder: the contrastive loss gap between forget
/// samples (lower: they were trained on) and as many unseen test samples
/// shrinks, and a linear probe keeps its accuracy within the paper's 10 points.
/// The encoder's features start with input-gradient norms near 11, far from the
/// penalty's target of 1, so β is 0.01 here (at 0.1 the probe loses ~20 points).
#[test]
fn encodermu_closes_the_member_gap_of_the_encoder() {
    let demo = demo();
    let original = checkpoint_of("encoder");
    let run = unlearn(
        "encodermu",
        "encoder",
        json!({"epochs": 2, "beta": 0.01, "lr": 0.003, "seed": 1}),
    );
    run.assert_reports(&["loss", "member_loss", "gradient_penalty", "output_norm"]);
    assert_eq!(run.summary["model_kind"], "encoder");
    assert_eq!(run.summary["critic_output"], "encoder");
    let test_rows = &demo.test[..demo.forget.len()];
    let gap = |p: &Path| nt_xent(p, &demo, test_rows) - nt_xent(p, &demo, &demo.forget);
    let (gap_before, gap_after) = (gap(&original), gap(run.model()));
    let (probe_before, probe_after) = (
        probe_accuracy(&original, &demo),
        probe_accuracy(run.model(), &demo),
    );
    eprintln!(
        "EncoderMU encoder: NT-Xent gap test−forget {gap_before:.4} -> {gap_after:.4}, probe {probe_before:.4} -> {probe_after:.4}"
    );
    assert!(gap_before > 0.05, "{gap_before}");
    assert!(
        gap_after.abs() < 0.8 * gap_before,
        "{gap_before} -> {gap_after}"
    );
    assert!(
        probe_after > probe_before - 0.10,
        "{probe_before} -> {probe_after}"
    );
}

/// Alignment Calibration on the SimCLR encoder, the default (reference)
/// formulation with β 20 in the reference's units (the top of the paper's
/// tuning range, for a short run): the positive-pair similarity of forget
/// samples drops (a positive forgetting score) clearly more than that of unseen
/// samples, and the linear probe keeps its accuracy.
#[test]
fn alignment_calibration_raises_the_forgetting_score_of_the_forget_set() {
    let demo = demo();
    let original = checkpoint_of("encoder");
    let run = unlearn(
        "alignment-calibration",
        "encoder",
        json!({"epochs": 4, "max_batches": 4, "beta": 20.0, "seed": 1}),
    );
    run.assert_reports(&[
        "loss",
        "retain_loss",
        "unlearn_loss",
        "negative_alignment",
        "positive_alignment",
        "log_sum_exp",
        "forget_share",
    ]);
    assert_eq!(run.summary["variant"], "simclr");
    assert_eq!(run.summary["formulation"], "reference");
    let (n_f, n_r) = (demo.forget.len() as f64, demo.retain.len() as f64);
    let share = run.summary["forget_share"].as_f64().unwrap();
    assert!((share - n_f / (n_r + n_f)).abs() < 1e-9);
    let beta_effective = run.summary["beta_effective"].as_f64().unwrap();
    assert!((beta_effective - 20.0 * share).abs() < 1e-9);
    let test_rows = &demo.test[..demo.forget.len()];
    let fs = |rows: &[i64]| alignment(&original, &demo, rows) - alignment(run.model(), &demo, rows);
    let (fs_forget, fs_test) = (fs(&demo.forget), fs(test_rows));
    let (probe_before, probe_after) = (
        probe_accuracy(&original, &demo),
        probe_accuracy(run.model(), &demo),
    );
    eprintln!(
        "AC SimCLR: forgetting score forget {fs_forget:.4}, test {fs_test:.4}; probe {probe_before:.4} -> {probe_after:.4}"
    );
    assert!(fs_forget > 0.004, "{fs_forget}");
    assert!(
        fs_forget > fs_test + 0.004,
        "forget {fs_forget} vs test {fs_test}"
    );
    assert!(
        probe_after > probe_before - 0.03,
        "{probe_before} -> {probe_after}"
    );
}

/// The MoCo path on a MoCo encoder trained here for one epoch: the variant and
/// temperature come from the checkpoint, the plugin's momentum encoder and queue
/// run, every term is finite, the model is saved.
#[test]
fn alignment_calibration_unlearns_a_moco_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("moco.safetensors");
    let out = std::process::Command::new(require_binary("lethe-cli"))
        .args([
            "train",
            "--task",
            "moco",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--temperature",
            "0.2",
        ])
        .args(["--device", "cpu", "--data"])
        .arg(demo_dir().join("mnist10k.npz"))
        .arg("--out")
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = unlearn_with(
        "alignment-calibration",
        &ckpt,
        &demo_dir().join("forget.txt"),
        json!({"epochs": 2, "max_batches": 2, "batch_size": 256, "queue_size": 1024, "seed": 1}),
    );
    run.assert_reports(&[
        "loss",
        "retain_loss",
        "negative_alignment",
        "positive_alignment",
        "log_sum_exp",
    ]);
    assert_eq!(run.summary["variant"], "moco");
    assert_eq!(run.summary["formulation"], "reference");
    // The temperature the checkpoint records, not the SimCLR default.
    assert_eq!(run.summary["temperature"], json!(0.2));
    assert!(
        run.summary["projection_alignment_drop"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
    // One forgetting score: `lethe evaluate`'s; the plugin names its own number
    // for what it is.
    assert!(run.summary.get("forgetting_score").is_none());
    assert!(matches!(load(run.model()).model, Model::Encoder(_)));
}

/// Contrastive Unlearning, sample unlearning (lr 0.01: the demo's forget set is
/// only three batches per epoch): it stops early once forget accuracy is down to
/// test accuracy, the forget loss rises to the level of unseen data, and test
/// accuracy stays within a few points.
#[test]
fn contrastive_unlearning_stops_when_the_forget_set_is_no_better_than_unseen_data() {
    let demo = demo();
    let before = utility(&checkpoint_of("classifier"), &demo);
    let run = unlearn(
        "contrastive-unlearning",
        "classifier",
        json!({"lr": 0.01, "seed": 1}),
    );
    run.assert_reports(&["loss", "contrastive_loss", "pull", "push", "retain_ce"]);
    let after = utility(run.model(), &demo);
    eprintln!("CU sample\n  before {before:?}\n  after  {after:?}");
    assert_eq!(run.summary["mode"], "sample");
    assert_eq!(run.summary["stopped_early"], true);
    // The demo classifier has no projection head: its normalised backbone
    // features ran (a fresh plugin head absorbs the loss here; FIDELITY.md).
    assert_eq!(run.summary["representation"], "backbone");
    assert!(after.forget_acc <= after.test_acc + 0.02, "{after:?}");
    assert!(after.forget_acc < before.forget_acc, "{before:?} {after:?}");
    assert!(after.forget_loss > 0.2 * after.test_loss, "{after:?}");
    assert!((after.auc - 0.5).abs() < 0.1, "{after:?}");
    assert!(
        after.test_acc > before.test_acc - 0.04,
        "{before:?} {after:?}"
    );
    assert!(after.retain_acc > 0.97, "{after:?}");
}

/// Contrastive Unlearning, class unlearning of digit 7: detected from the splits,
/// it stops once no forget sample is recognised (forget accuracy 0, what
/// retraining without the class gives; it used to stop at chance, 1/C), and the
/// other classes keep their accuracy.
#[test]
fn contrastive_unlearning_forgets_a_whole_class() {
    let demo = demo();
    let dir = tempfile::tempdir().unwrap();
    let list = class_forget_list(&demo, 7, dir.path());
    let run = unlearn_with(
        "contrastive-unlearning",
        &checkpoint_of("classifier"),
        &list,
        json!({"lr": 0.01, "seed": 1}),
    );
    run.assert_reports(&["loss", "contrastive_loss", "pull", "retain_ce"]);
    assert_eq!(run.summary["mode"], "class");
    assert_eq!(run.summary["stopped_early"], true);
    assert_eq!(run.summary["stop_target"], 0.0);
    assert_eq!(run.summary["representation"], "backbone");
    let labels = demo.data.label_slice();
    let (class, others): (Vec<i64>, Vec<i64>) =
        demo.test.iter().partition(|&&i| labels[i as usize] == 7);
    let original = checkpoint_of("classifier");
    let forget_rows: Vec<i64> = demo
        .train
        .iter()
        .copied()
        .filter(|&i| labels[i as usize] == 7)
        .collect();
    let forget_acc = classifier_eval(run.model(), &demo, &forget_rows).accuracy;
    let class_test = classifier_eval(run.model(), &demo, &class).accuracy;
    let (others_before, others_after) = (
        classifier_eval(&original, &demo, &others).accuracy,
        classifier_eval(run.model(), &demo, &others).accuracy,
    );
    eprintln!(
        "CU class 7: forget acc {forget_acc:.4}, class-7 test acc {class_test:.4}, other classes {others_before:.4} -> {others_after:.4}"
    );
    assert_eq!(forget_acc, 0.0, "{forget_acc}");
    assert!(class_test < 0.3, "{class_test}");
    assert!(
        others_after > others_before - 0.03,
        "{others_before} -> {others_after}"
    );
}

/// Discriminative Adversarial Unlearning, class-wise (digit 7; the paper's
/// strong case) with its defaults (flipped objective, λ 10, gradient clip 2),
/// shortened: 3 sensitivity draws instead of 10, 10 attacker pre-training steps,
/// 25 iterations with λ → 0 after 10 instead of 30. The class is forgotten (its
/// training samples and its unseen test digits are no longer recognised, as
/// after retraining without it), while the attacker still finds the class and
/// the other classes and the retain set keep their accuracy.
///
/// Seed 2: before the gradient clip this seed collapsed the model (retain
/// accuracy 0.15); clipped, forget accuracy 1.0 → 0.0, other classes 0.979 →
/// 0.975, retain 0.998. Not every seed forgets within this budget: seed 1 keeps
/// the class (the attacker's gradient through the saturated softmax stays near
/// zero, and a longer-trained attacker leans on the one-hot label, which gives
/// the model none), which the plugin's description states.
///
/// With the reference attacker (Xavier init, SGD lr 1e-3) and attacker and
/// defender both on the eval-mode model (issue 18 item 6), seed 1: attacker
/// accuracy per epoch 0.94, 0.84, 0.73, 0.80; forget 1.0 → 0.0, class-7 test
/// 0.0, other classes 0.979 → 0.964, retain 1.000 → 0.9965 (the old settings,
/// tch init, lr 1e-2, train-mode defender, on the same seed: 0.94, 0.82, 0.72,
/// 0.81; 1.0 → 0.0; 0.979 → 0.966; 0.9945). The thresholds are unchanged.
#[test]
fn dau_forgets_a_class_and_keeps_the_others() {
    let demo = demo();
    let dir = tempfile::tempdir().unwrap();
    let list = class_forget_list(&demo, 7, dir.path());
    let original = checkpoint_of("classifier");
    let run = unlearn_with(
        "dau",
        &original,
        &list,
        // The paper's schedule (100 attacker pre-training steps, λ for the first 30
        // iterations) with 10 recovery iterations; 3 noise draws instead of 10 to save
        // time. Seed 1 kept the class with 10 pre-training steps and 10 λ iterations;
        // with these settings seeds 1, 3 and 4 all forgot it (retain ≥ 0.99).
        json!({"epochs": 4, "sensitivity_draws": 3, "seed": 1}),
    );
    run.assert_reports(&[
        "loss",
        "retain_ce",
        "attack_term",
        "barlow_twins",
        "attacker_loss",
        "attacker_acc",
        "lambda",
        "grad_norm",
    ]);
    assert_eq!(run.summary["forgetting"], "class");
    let labels = demo.data.label_slice();
    let (class, others): (Vec<i64>, Vec<i64>) =
        demo.test.iter().partition(|&&i| labels[i as usize] == 7);
    let (forget_rows, retain_rows): (Vec<i64>, Vec<i64>) =
        demo.train.iter().partition(|&&i| labels[i as usize] == 7);
    let retain_rows = &retain_rows[..2000];
    let acc = |p: &Path, rows: &[i64]| classifier_eval(p, &demo, rows).accuracy;
    let (forget_before, forget_after) =
        (acc(&original, &forget_rows), acc(run.model(), &forget_rows));
    let (others_before, others_after) = (acc(&original, &others), acc(run.model(), &others));
    let (retain_before, retain_after) =
        (acc(&original, retain_rows), acc(run.model(), retain_rows));
    let class_after = acc(run.model(), &class);
    let attacker: Vec<f64> = run
        .epochs()
        .iter()
        .map(|m| m["attacker_acc"].as_f64().unwrap())
        .collect();
    eprintln!(
        "DAU class 7: attacker accuracy per epoch {attacker:?}; forget acc {forget_before:.4} -> \
         {forget_after:.4}, class-7 test {class_after:.4}, other classes {others_before:.4} -> \
         {others_after:.4}, retain {retain_before:.4} -> {retain_after:.4}"
    );
    // The pre-trained attacker tells the class's training samples from
    // non-members at the start; the defender then wins the game.
    assert!(attacker[0] > 0.85, "{attacker:?}");
    assert_eq!(run.summary["attacker_label"], false);
    // Yuan and Zhang's attacker settings and one model mode for both sides
    // (issue 18 item 6).
    assert_eq!(run.summary["attacker_init"], "reference");
    assert_eq!(run.summary["attacker_lr"], 1e-3);
    assert_eq!(run.summary["model_mode"], "eval");
    // Toward chance (0.1) and below: a model retrained without the class gets 0.
    assert!(
        forget_before > 0.99 && forget_after <= 0.1,
        "{forget_before} -> {forget_after}"
    );
    assert!(class_after <= 0.2, "{class_after}");
    assert!(
        others_after > others_before - 0.03,
        "{others_before} -> {others_after}"
    );
    assert!(retain_after > 0.95, "{retain_before} -> {retain_after}");
    let lambdas: Vec<f64> = run
        .epochs()
        .iter()
        .map(|m| m["lambda"].as_f64().unwrap())
        .collect();
    assert_eq!(lambdas.first(), Some(&10.0));
    assert_eq!(lambdas.last(), Some(&0.0));
}

/// On random demo samples the paper's attacker finds no membership signal (MNIST
/// members and non-members look alike to it), so the min-max game leaves the
/// model essentially as it was: no accuracy lost, no membership signal created.
#[test]
fn dau_leaves_the_model_alone_when_its_attacker_is_at_chance() {
    let demo = demo();
    let before = utility(&checkpoint_of("classifier"), &demo);
    let run = unlearn(
        "dau",
        "classifier",
        json!({"epochs": 1, "attacker_pretrain_steps": 10, "sensitivity_draws": 3, "seed": 1}),
    );
    run.assert_reports(&["loss", "retain_ce", "attack_term", "attacker_acc"]);
    assert_eq!(run.summary["forgetting"], "sample");
    let after = utility(run.model(), &demo);
    eprintln!(
        "DAU sample\n  before {before:?}\n  after  {after:?}\n  attacker final {}",
        run.summary["attacker_final_acc"]
    );
    assert!(run.summary["attacker_final_acc"].as_f64().unwrap() < 0.65);
    assert!(
        after.test_acc > before.test_acc - 0.01,
        "{before:?} {after:?}"
    );
    assert!((after.auc - 0.5).abs() < 0.05, "{after:?}");
}

/// Every phase of a paper method says what it is doing (#24): a user saw 85 s
/// without a log line while DAU pre-trained its attacker and measured the forget
/// set, and methods said nothing within an epoch. With the kit's report interval
/// at 0 every throttled report goes out, so the messages show each phase: a
/// phase before training, steps within epochs, the measurements after, in that
/// order. Fractions never go down (the window's ETA assumes so) and end at 1.
#[test]
fn paper_methods_report_progress_in_every_phase() {
    let demo_forget = demo_dir().join("forget.txt");
    let before = "measuring the forget set before unlearning";
    let after = "measuring the forget set after unlearning";
    for (method, model, params, phases) in [
        (
            "dau",
            "classifier",
            json!({"epochs": 2, "max_batches": 2, "attacker_pretrain_steps": 3,
                   "sensitivity_draws": 2, "seed": 1}),
            &[
                "reading the labels of the forget and retain sets",
                "pre-training the attacker (3 steps)",
                "pre-training the attacker · step 1/3",
                "measuring the attacker after unlearning",
            ][..],
        ),
        (
            "contrastive-unlearning",
            "classifier",
            json!({"epochs": 2, "early_stop": false, "retain_batches": 1, "batch_size": 128}),
            &["measuring the test set after unlearning"][..],
        ),
        (
            "encodermu",
            "classifier",
            json!({"epochs": 2, "max_batches": 2}),
            &[
                "measuring the validation set before unlearning",
                "measuring the validation set after unlearning",
            ][..],
        ),
        (
            "alignment-calibration",
            "encoder",
            json!({"epochs": 2, "max_batches": 2}),
            &[
                "measuring the alignment of forget and test samples before unlearning",
                "measuring the alignment of forget and test samples after unlearning",
            ][..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("job");
        let mut opts = options();
        opts.env
            .push(("LETHE_PROGRESS_INTERVAL_MS".into(), "0".into()));
        let run = support::run_to_success(
            &opts,
            job(method, &checkpoint_of(model), &demo_forget, params, &out),
            &out,
            dir,
            method,
        );
        let messages: Vec<&str> = run.progress.iter().map(|(_, m)| m.as_str()).collect();
        eprintln!("{method}: {} progress reports", messages.len());
        let at = |m: &str| {
            messages
                .iter()
                .position(|x| *x == m)
                .unwrap_or_else(|| panic!("{method}: no report {m:?} in {messages:#?}"))
        };
        let first_step = messages
            .iter()
            .position(|m| m.starts_with("epoch 1/2 · step 1/"))
            .unwrap_or_else(|| panic!("{method}: no step report in {messages:#?}"));
        assert!(
            messages.iter().any(|m| m.starts_with("epoch 2/2 · step ")),
            "{method}: no step report in the second epoch: {messages:#?}"
        );
        let last_epoch = at("epoch 2/2");
        assert!(at(before) < first_step, "{method}: {messages:#?}");
        assert!(
            last_epoch < at(after) && at(after) < at("done"),
            "{method}: {messages:#?}"
        );
        for phase in phases {
            at(phase);
        }
        let fractions: Vec<f64> = run.progress.iter().filter_map(|(f, _)| *f).collect();
        assert!(
            fractions.windows(2).all(|w| w[0] <= w[1]),
            "{method}: fractions went down: {:#?}",
            run.progress
        );
        assert_eq!(fractions.last(), Some(&1.0), "{method}");
    }
}

#[test]
fn cancelling_a_method_mid_run_stops_it_without_a_model() {
    let demo_forget = demo_dir().join("forget.txt");
    for (method, model, params) in [
        ("encodermu", "classifier", json!({"epochs": 50})),
        (
            "alignment-calibration",
            "encoder",
            json!({"epochs": 50, "max_batches": 1}),
        ),
        (
            "contrastive-unlearning",
            "classifier",
            json!({"epochs": 50, "early_stop": false}),
        ),
        (
            "dau",
            "classifier",
            json!({"epochs": 50, "attacker_pretrain_steps": 2, "sensitivity_draws": 2}),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("job");
        let (tx, rx) = mpsc::channel();
        // Generous grace: on a loaded machine one iteration can take seconds, and
        // this test is about stopping at the next check, not about speed.
        let mut opts = options();
        opts.grace = Duration::from_secs(60);
        let handle = spawn_worker(
            &opts,
            job(method, &checkpoint_of(model), &demo_forget, params, &out),
            move |e| {
                let _ = tx.send(e);
            },
        )
        .unwrap();
        // Cancel as soon as the method reports progress: it is inside its loops.
        let mut events = Vec::new();
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(300)) {
            let progress = matches!(e, FromWorker::Progress { .. });
            events.push(e);
            if progress {
                handle.cancel();
                break;
            }
        }
        let report = handle.wait();
        events.extend(rx.try_iter());
        assert!(
            matches!(report.outcome, JobOutcome::Cancelled { killed: false }),
            "{method}: {}\n{}",
            report.outcome,
            report.stderr_tail
        );
        let saved_model = events
            .iter()
            .any(|e| matches!(e, FromWorker::Artifact { name, .. } if name == "model"));
        assert!(!saved_model, "{method} saved a model after being cancelled");
    }
}
