//! The baseline unlearning plugins (plugins/baseline-*) on the bundled demo model
//! and data, each through a real `lethe-cli worker` process as a user's job runs,
//! plus white-box checks that load a plugin in this process. Each test asserts
//! the method's defining behaviour with numbers measured here, from the saved
//! checkpoints and result tensors, not from what the plugin says about itself.
//!
//! The plugins are dev-dependencies (built into `deps/` with the test); the
//! worker is `lethe-cli`, which `cargo test --workspace` builds for the engine's
//! integration tests (`./run test`).
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Demo, JOB_SEED, Run, checkpoint_of, demo, demo_dir, load, plugin_library};

use lethe_e2e::require_binary;
use lethe_engine::checkpoint::{self, LoadedModel};
use lethe_engine::data::Dataset;
use lethe_engine::models::Model;
use lethe_engine::train::augment::{AugmentConfig, to_unit_float};
use lethe_engine::worker::{JobOutcome, WorkerOptions, run_job};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// Runs `org.lethe.baseline.<method>` over the demo `model` (`classifier` or
/// `encoder`), the demo data and forget list, in a worker process on the CPU.
fn unlearn(method: &str, model: &str, params: Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("job");
    let job = support::job(
        baseline_library(method),
        &format!("org.lethe.baseline.{method}"),
        &checkpoint_of(model),
        &demo_dir().join("forget.txt"),
        params,
        &out,
    );
    let opts = support::options(Duration::from_secs(300));
    support::run_to_success(&opts, job, &out, dir, &format!("{method} on the {model}"))
}

/// `lib<crate>.so` of a baseline plugin.
fn baseline_library(method: &str) -> PathBuf {
    plugin_library(&format!("lethe_baseline_{method}"))
}

/// Mean cross-entropy and accuracy of a classifier checkpoint on `rows`.
fn classifier_metrics(path: &Path, demo: &Demo, rows: &[i64]) -> (f64, f64) {
    let m = load(path);
    let Model::Classifier(c) = &m.model else {
        panic!("{} is not a classifier", path.display())
    };
    let (x, y) = demo.batch(rows);
    tch::no_grad(|| {
        let logits = c.forward_t(&x, false);
        let loss = logits.cross_entropy_for_logits(&y).double_value(&[]);
        let acc = logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        (loss, acc)
    })
}

/// SimCLR NT-Xent of an encoder checkpoint on `rows`, over two views drawn from
/// a fixed seed, so two checkpoints are compared on the same views.
fn encoder_loss(path: &Path, demo: &Demo, rows: &[i64]) -> f64 {
    let m = load(path);
    let Model::Encoder(e) = &m.model else {
        panic!("{} is not an encoder", path.display())
    };
    let (x, _) = demo.batch(rows);
    tch::manual_seed(99);
    let aug = AugmentConfig::digits();
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

/// The model's parameters (name → tensor), sorted by name as the host lists them.
fn parameters(path: &Path) -> Vec<(String, Tensor)> {
    let m = load(path);
    let mut v: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn flat(params: &[(String, Tensor)]) -> Tensor {
    Tensor::cat(
        &params
            .iter()
            .map(|(_, t)| t.reshape([-1]))
            .collect::<Vec<_>>(),
        0,
    )
}

#[test]
fn gradient_ascent_raises_the_forget_loss() {
    let demo = demo();
    let original = checkpoint_of("classifier");
    let run = unlearn(
        "gradient-ascent",
        "classifier",
        // The demo classifier is saturated on its training digits (loss ~2e-4), so
        // ascent starts slowly; 0.3 diverges, 0.1 for 15 steps more than doubles it.
        json!({"lr": 0.1, "epochs": 3, "batch_size": 64, "augment": false}),
    );
    run.assert_reports(&["forget_loss", "lr"]);
    let (before, acc_before) = classifier_metrics(&original, &demo, &demo.forget);
    let (after, acc_after) = classifier_metrics(run.model(), &demo, &demo.forget);
    eprintln!("GA forget loss {before} -> {after}, acc {acc_before} -> {acc_after}");
    assert!(after > 1.5 * before, "{before} -> {after}");
    // Ascent, epoch by epoch.
    let losses: Vec<f64> = run
        .epochs()
        .iter()
        .map(|m| m["forget_loss"].as_f64().unwrap())
        .collect();
    assert!(losses.windows(2).all(|w| w[1] > w[0]), "{losses:?}");
    // The plugin's own before/after agree with ours.
    assert!((run.summary["forget_before_loss"].as_f64().unwrap() - before).abs() < 1e-3);
    assert!(
        (run.summary["forget_after_loss"].as_f64().unwrap() - after).abs() < 1e-3 * after.max(1.0)
    );
}

#[test]
fn gradient_ascent_on_the_encoder_raises_the_forget_infonce() {
    let demo = demo();
    let original = checkpoint_of("encoder");
    let run = unlearn(
        "gradient-ascent",
        "encoder",
        json!({"lr": 0.01, "epochs": 2, "batch_size": 100}),
    );
    run.assert_reports(&["forget_loss"]);
    assert_eq!(run.summary["model_kind"], "encoder");
    let before = encoder_loss(&original, &demo, &demo.forget);
    let after = encoder_loss(run.model(), &demo, &demo.forget);
    eprintln!("GA encoder forget NT-Xent {before} -> {after}");
    assert!(after > before + 0.05, "{before} -> {after}");
}

/// FT and NegGrad from the same seed on the same retain batches (FT's batch size
/// is NegGrad's retain share, and both open their retain loader third, so the
/// host serves them the same order): FT keeps the model, NegGrad's forget ascent
/// lifts the forget loss far above FT's.
#[test]
fn finetune_keeps_accuracy_and_neggrad_raises_the_forget_loss_relative_to_it() {
    let demo = demo();
    let original = checkpoint_of("classifier");
    let common = json!({"lr": 0.05, "epochs": 1, "batch_size": 128, "max_batches": 20,
                        "augment": false, "seed": 3});
    let mut ng_params = common.clone();
    // With 5 % forget examples per batch, w = 1 barely ascends a saturated model.
    ng_params["forget_weight"] = json!(50.0);
    let ng = unlearn("neggrad", "classifier", ng_params);
    ng.assert_reports(&["retain_loss", "forget_loss", "lr"]);
    let objective = ng.summary["objective"].as_str().unwrap_or_default();
    assert!(objective.contains("one forward pass"), "{objective}");
    let mut ft_params = common.clone();
    ft_params["batch_size"] = ng.summary["retain_batch"].clone();
    assert_eq!(ft_params["batch_size"], 122);
    let ft = unlearn("finetune", "classifier", ft_params);
    ft.assert_reports(&["retain_loss", "lr"]);

    let test_rows = &demo.test[..1000];
    let retain_rows = &demo.retain[..1000];
    let (_, test_acc0) = classifier_metrics(&original, &demo, test_rows);
    let (retain0, _) = classifier_metrics(&original, &demo, retain_rows);
    let (_, test_acc_ft) = classifier_metrics(ft.model(), &demo, test_rows);
    let (retain_ft, _) = classifier_metrics(ft.model(), &demo, retain_rows);
    let (ft_forget, _) = classifier_metrics(ft.model(), &demo, &demo.forget);
    let (ng_forget, _) = classifier_metrics(ng.model(), &demo, &demo.forget);
    eprintln!(
        "FT test acc {test_acc0} -> {test_acc_ft}, retain loss {retain0} -> {retain_ft}; \
         forget loss FT {ft_forget} NegGrad {ng_forget}"
    );
    assert!(
        test_acc_ft >= test_acc0 - 0.005,
        "{test_acc0} -> {test_acc_ft}"
    );
    assert!(retain_ft < retain0, "{retain0} -> {retain_ft}");
    assert!(
        ng_forget > 10.0 * ft_forget,
        "FT {ft_forget} vs NegGrad {ng_forget}"
    );
}

#[test]
fn finetune_runs_on_the_encoder_and_lowers_its_retain_infonce() {
    let demo = demo();
    let run = unlearn(
        "finetune",
        "encoder",
        json!({"lr": 0.05, "epochs": 1, "batch_size": 128, "max_batches": 10, "seed": 2}),
    );
    run.assert_reports(&["retain_loss"]);
    assert_eq!(run.summary["model_kind"], "encoder");
    let rows = &demo.retain[..512];
    let before = encoder_loss(&checkpoint_of("encoder"), &demo, rows);
    let after = encoder_loss(run.model(), &demo, rows);
    eprintln!("FT encoder retain NT-Xent {before} -> {after}");
    assert!(after < before, "{before} -> {after}");
}

#[test]
fn l1_sparse_lowers_the_l1_norm_relative_to_finetuning() {
    let common = json!({"lr": 0.01, "epochs": 1, "batch_size": 128, "max_batches": 15,
                        "augment": false, "seed": 4, "weight_decay": 0.0});
    let ft = unlearn("finetune", "classifier", common.clone());
    let mut l1_params = common.clone();
    l1_params["alpha"] = json!(5e-4);
    let l1 = unlearn("l1-sparse", "classifier", l1_params);
    l1.assert_reports(&["retain_loss", "l1_norm", "alpha"]);
    let norm = |p: &Path| {
        flat(&parameters(p))
            .abs()
            .sum(Kind::Double)
            .double_value(&[])
    };
    let (n0, n_ft, n_l1) = (
        norm(&checkpoint_of("classifier")),
        norm(ft.model()),
        norm(l1.model()),
    );
    eprintln!("l1 norm: original {n0}, FT {n_ft}, l1-sparse {n_l1}");
    assert!(n_l1 < n_ft - 0.005 * n_ft, "FT {n_ft} vs l1 {n_l1}");
    assert!(n_l1 < n0);
    // The reported norm is the saved model's.
    let reported = l1.summary["l1_norm"].as_f64().unwrap();
    assert!(
        (reported - n_l1).abs() < 1e-3 * n_l1,
        "{reported} vs {n_l1}"
    );
}

#[test]
fn random_labels_lower_the_forget_accuracy() {
    let demo = demo();
    let run = unlearn(
        "random-label",
        "classifier",
        json!({"lr": 0.02, "epochs": 2, "batch_size": 64, "max_batches": 5, "augment": false}),
    );
    run.assert_reports(&["forget_random_label_loss", "retain_loss"]);
    let (_, acc0) = classifier_metrics(&checkpoint_of("classifier"), &demo, &demo.forget);
    let (_, acc1) = classifier_metrics(run.model(), &demo, &demo.forget);
    eprintln!("RL forget acc {acc0} -> {acc1}");
    assert!(acc1 < acc0 - 0.1, "{acc0} -> {acc1}");
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float))
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// `|Σ_batches ∇ mean CE|` over the forget rows in the host's (unshuffled) order,
/// in batches of `bs`, computed here with the engine's model directly.
fn forget_saliency(path: &Path, demo: &Demo, bs: usize) -> Tensor {
    let m = load(path);
    let Model::Classifier(c) = &m.model else {
        panic!("not a classifier")
    };
    let mut params = parameters_of(&m);
    let mut total: Option<Tensor> = None;
    for rows in demo.forget.chunks(bs) {
        let (x, y) = demo.batch(rows);
        let loss = c.forward_t(&x, true).cross_entropy_for_logits(&y);
        let inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
        let g = Tensor::run_backward(&[&loss], &inputs, false, false);
        let g = Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
        total = Some(match total {
            Some(t) => t + g,
            None => g,
        });
    }
    params.clear();
    total.unwrap().abs()
}

/// The live (autograd) parameters of a loaded model, sorted by name.
fn parameters_of(m: &LoadedModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn salun_leaves_non_salient_weights_bit_identical_under_momentum_and_weight_decay() {
    let demo = demo();
    let original = checkpoint_of("classifier");
    let run = unlearn(
        "salun",
        "classifier",
        json!({"lr": 0.013, "epochs": 2, "batch_size": 128, "max_batches": 4,
               "momentum": 0.9, "weight_decay": 5e-4, "mask_ratio": 0.5, "augment": false}),
    );
    run.assert_reports(&["mixed_loss", "lr"]);
    let mask = run.tensor("saliency_mask");
    let layout = run.json("parameter_layout");
    let before = parameters(&original);
    let after = parameters(run.model());
    // The layout names the host's parameters in our order.
    let names: Vec<&str> = layout["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    let keep = Vec::<u8>::try_from(&mask).unwrap();
    let d = keep.len();
    assert_eq!(d as i64, layout["total"].as_i64().unwrap());
    let salient = keep.iter().filter(|&&k| k == 1).count();
    assert_eq!(salient, (0.5 * d as f64).round() as usize);
    assert_eq!(run.summary["salient_weights"], salient);

    let (b, a) = (bits(&flat(&before)), bits(&flat(&after)));
    let mut changed_salient = 0usize;
    for i in 0..d {
        if keep[i] == 0 {
            assert_eq!(a[i], b[i], "non-salient weight {i} moved");
        } else {
            changed_salient += usize::from(a[i] != b[i]);
        }
    }
    eprintln!("SalUn: {changed_salient} of {salient} salient weights changed");
    assert!(
        changed_salient > salient * 9 / 10,
        "{changed_salient} of {salient}"
    );
    // The mask is the top half of |forget gradient| as computed here. Many
    // weights have exactly zero gradient (ReLUs that never fire on these digits),
    // so ties at zero are broken arbitrarily: every positive saliency must be in
    // the mask when they fit, else the mask must hold the largest.
    let saliency = forget_saliency(&original, &demo, 128);
    let m = mask.to_kind(Kind::Bool);
    let positive = saliency.gt(0.0);
    let n_positive = positive.sum(Kind::Int64).int64_value(&[]) as usize;
    let min_in = saliency.masked_select(&m).min().double_value(&[]);
    let max_out = saliency
        .masked_select(&m.logical_not())
        .max()
        .double_value(&[]);
    eprintln!("saliency: {n_positive} positive, min salient {min_in}, max non-salient {max_out}");
    assert!(n_positive > d / 10, "{n_positive}");
    if n_positive <= salient {
        let missed = positive
            .logical_and(&m.logical_not())
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(missed, 0, "positive saliencies left out of the mask");
    } else {
        assert!(min_in >= max_out * (1.0 - 1e-3), "{min_in} < {max_out}");
    }
    // The masked random-label update still moved the forget set.
    let (l0, _) = classifier_metrics(&original, &demo, &demo.forget);
    let (l1, _) = classifier_metrics(run.model(), &demo, &demo.forget);
    eprintln!("SalUn forget loss {l0} -> {l1}");
    assert!(l1 > 3.0 * l0, "{l0} -> {l1}");
}

#[test]
fn fisher_noise_variance_scales_with_the_inverse_fisher() {
    // The demo classifier is so confident that most of its Fisher is below the
    // default clamp (1/F > 1e3 everywhere but a few weights); a clamp above every
    // 1/(F + 1e-8) makes the noise follow the Fisher itself. Per weight, so that
    // each weight's variance is its own (the reference formulation averages rows;
    // its rule is pinned against PyTorch in the plugin's unit test).
    let (alpha, clamp) = (1e-10, 1e10);
    let run = unlearn(
        "fisher",
        "classifier",
        json!({"alpha": alpha, "max_variance": clamp, "samples": 30, "batch_size": 30, "seed": 5,
               "formulation": "per_weight"}),
    );
    let fisher = run.tensor("fisher_diagonal").to_kind(Kind::Double);
    assert_eq!(run.summary["fisher_samples"], 30);
    let theta0 = flat(&parameters(&checkpoint_of("classifier"))).to_kind(Kind::Double);
    let theta1 = flat(&parameters(run.model())).to_kind(Kind::Double);
    assert_eq!(fisher.size(), theta0.size());
    assert!(fisher.min().double_value(&[]) >= 0.0);
    assert!(fisher.max().double_value(&[]) > 0.0);
    let expected_var = (&fisher + 1e-8).reciprocal().clamp_max(clamp) * alpha;
    let noise = &theta1 - &theta0;
    let z2 = noise.square() / &expected_var;
    let overall = z2.mean(Kind::Double).double_value(&[]);
    eprintln!("Fisher: mean z² {overall} over {} weights", z2.size()[0]);
    assert!((overall - 1.0).abs() < 0.02, "{overall}");
    // Grouped by expected variance (lowest 1 %, next 9 %, next 40 %, the rest:
    // many weights have zero Fisher on 30 examples and share the top value), the
    // noise in each group has that group's variance, over a wide range.
    let order = expected_var.argsort(0, false);
    let n = order.size()[0];
    let mut raw = Vec::new();
    for (lo, hi) in [(0.0, 0.01), (0.01, 0.1), (0.1, 0.5), (0.5, 1.0)] {
        let (a, b) = ((lo * n as f64) as i64, (hi * n as f64) as i64);
        let idx = order.narrow(0, a, b - a);
        let zq = z2
            .index_select(0, &idx)
            .mean(Kind::Double)
            .double_value(&[]);
        let var_q = noise
            .index_select(0, &idx)
            .square()
            .mean(Kind::Double)
            .double_value(&[]);
        let exp_q = expected_var
            .index_select(0, &idx)
            .mean(Kind::Double)
            .double_value(&[]);
        eprintln!("group {lo}-{hi}: mean z² {zq}, noise var {var_q:e}, expected {exp_q:e}");
        assert!((zq - 1.0).abs() < 0.1, "group {lo}-{hi}: {zq}");
        assert!(
            (var_q / exp_q - 1.0).abs() < 0.1,
            "group {lo}-{hi}: {var_q} vs {exp_q}"
        );
        raw.push(var_q);
    }
    assert!(raw[3] > 100.0 * raw[0], "{raw:?}");
}

#[test]
fn influence_applies_alpha_times_its_ihvp_on_the_demo_classifier() {
    let alpha = 0.5;
    let run = unlearn(
        "influence",
        "classifier",
        json!({"alpha": alpha, "samples": 40, "block_size": 64, "batch_size": 256}),
    );
    let ihvp = run.tensor("ihvp").to_kind(Kind::Double);
    let v = run.tensor("influence_direction").to_kind(Kind::Double);
    let theta0 = flat(&parameters(&checkpoint_of("classifier"))).to_kind(Kind::Double);
    let theta1 = flat(&parameters(run.model())).to_kind(Kind::Double);
    let step = &theta1 - &theta0;
    let err = (&step - &ihvp * alpha).abs().max().double_value(&[]);
    let size = ihvp.abs().max().double_value(&[]) * alpha;
    eprintln!("influence: max step {size}, max deviation {err}");
    assert!(size > 0.0 && err < 1e-6 + 1e-3 * size, "{err} vs {size}");
    // H = λI + F with F ⪰ 0 and λ = 1 shrinks v: ‖H⁻¹v‖ ≤ ‖v‖, and vᵀH⁻¹v > 0.
    let (nv, nx) = (v.norm().double_value(&[]), ihvp.norm().double_value(&[]));
    assert!(nx <= nv * (1.0 + 1e-4) && nx > 0.0, "{nx} vs {nv}");
    assert!(v.dot(&ihvp).double_value(&[]) > 0.0);
    assert_eq!(run.summary["fisher_samples"], 40);
}

#[test]
fn pruning_at_95_percent_keeps_the_pruned_weights_at_zero_through_the_method() {
    let run = unlearn(
        "finetune",
        "classifier",
        json!({"prune_ratio": 0.95, "lr": 0.01, "epochs": 1, "batch_size": 128,
               "max_batches": 5, "augment": false}),
    );
    let pruning = run.json("pruning");
    let after = parameters(run.model());
    let prunable: Vec<&Tensor> = after
        .iter()
        .filter(|(_, t)| t.dim() >= 2)
        .map(|(_, t)| t)
        .collect();
    let total: i64 = prunable.iter().map(|t| t.numel() as i64).sum();
    let zeros: i64 = prunable
        .iter()
        .map(|t| {
            t.eq_tensor(&t.zeros_like())
                .sum(Kind::Int64)
                .int64_value(&[])
        })
        .sum();
    eprintln!("pruning: {zeros} of {total} prunable weights are zero; {pruning}");
    assert_eq!(pruning["prunable"], total);
    assert_eq!(pruning["pruned"], (0.95 * total as f64).round() as i64);
    assert!(zeros as f64 >= 0.95 * total as f64, "{zeros} of {total}");
    // Biases were not pruned, and fine-tuning still trained the survivors.
    let before = parameters(&checkpoint_of("classifier"));
    let (b, a) = (flat(&before), flat(&after));
    let moved = b
        .ne_tensor(&a)
        .logical_and(&a.ne_tensor(&a.zeros_like()))
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(moved > (total / 40), "{moved}");
}

/// A sparse original keeps its pruned weights at zero through methods that
/// know nothing of sparsity (issue 18, item 10): fine-tuning, exact retraining
/// (from a fresh initialisation, as the reference retrains the masked network), Fisher
/// forgetting's noise (added to every weight directly, no forward pass after
/// it) and the Contrastive Unlearning paper method, each on the tiny MLP with
/// 90 % of its weights pruned by OMP. The host re-imposes the mask; without it
/// every one of these moves the pruned weights.
#[test]
fn a_sparse_original_keeps_its_zeros_through_methods_that_know_nothing_of_sparsity() {
    use lethe_engine::train::prune::PruneScope;
    let cases = [
        (
            baseline_library("finetune"),
            "org.lethe.baseline.finetune",
            json!({"lr": 0.5, "epochs": 2, "batch_size": 8, "augment": false}),
        ),
        // Exact retraining re-initialises first: the sparse network is retrained.
        (
            baseline_library("retrain"),
            "org.lethe.baseline.retrain",
            json!({"recipe": "form", "lr": 0.5, "epochs": 2, "batch_size": 8}),
        ),
        (
            baseline_library("fisher"),
            "org.lethe.baseline.fisher",
            json!({"alpha": 1e-3, "samples": 8, "batch_size": 8}),
        ),
        (
            plugin_library("lethe_method_contrastive_unlearning"),
            "org.lethe.method.contrastive-unlearning",
            json!({"lr": 0.5, "epochs": 2, "batch_size": 8, "early_stop": false,
                   "augment": false}),
        ),
    ];
    for (library, id, params) in cases {
        let (job, _, _) = in_process::tiny_job_pruned(id, Some((0.9, PruneScope::Weights)));
        let before = parameters(&job.original);
        job.run_plugin(&library, id, params);
        let after = parameters(&job.artifact("model"));
        let (mut pruned, mut kept_moved, mut total) = (0i64, 0i64, 0i64);
        for ((name, b), (_, a)) in before.iter().zip(&after) {
            if b.dim() < 2 {
                continue;
            }
            total += b.numel() as i64;
            let zero = b.eq(0.0);
            pruned += zero.sum(Kind::Int64).int64_value(&[]);
            let nonzero_after = a
                .ne(0.0)
                .logical_and(&zero)
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert_eq!(
                nonzero_after, 0,
                "{id}: {nonzero_after} pruned weights of {name} moved"
            );
            kept_moved += a
                .ne_tensor(b)
                .logical_and(&zero.logical_not())
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        // 0.9 of the 64·16 + 16·3 weights, round half to even.
        assert_eq!(total, 1072);
        assert_eq!(pruned, 965, "{id}");
        assert!(kept_moved > 0, "{id} did not train the kept weights");
        let kept: Value =
            serde_json::from_slice(&std::fs::read(job.artifact("sparsity")).unwrap()).unwrap();
        eprintln!("{id}: {kept}");
        assert_eq!(kept["pruned_weights"], 965);
        assert_eq!(kept["nonzero_pruned_weights"], 0);
        assert!(kept["reset_weights"].as_i64().unwrap() > 0, "{id}: {kept}");
        assert_eq!(kept["original"]["rule"], "omp");
    }
}

/// `lethe unlearn --prune-ratio` (the host's "prune right before" variant,
/// for any method): the pruned copy lands in the run folder with its record,
/// and the method (a paper method here, which has no pruning of its own)
/// leaves every pruned weight at zero.
#[test]
fn lethe_unlearn_prune_ratio_prunes_right_before_any_method_and_keeps_the_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let demo = demo_dir();
    // `cargo test` leaves plugin libraries in target/debug/deps only: name a folder.
    let plugins =
        support::studies::plugin_folder(dir.path(), &["lethe_method_contrastive_unlearning"]);
    let output = std::process::Command::new(require_binary("lethe-cli"))
        .arg("--plugins")
        .arg(&plugins)
        .args([
            "unlearn",
            "--method",
            "org.lethe.method.contrastive-unlearning",
        ])
        .arg("--checkpoint")
        .arg(demo.join("leaky-mlp.safetensors"))
        .arg("--data")
        .arg(demo.join("mnist10k-2k.npz"))
        .arg("--forget")
        .arg(demo.join("forget-2k.txt"))
        .args([
            "--prune-ratio",
            "0.9",
            "--prune-scope",
            "weights",
            "--device",
            "cpu",
        ])
        .args([
            "--set",
            "epochs=1",
            "--set",
            "lr=0.1",
            "--set",
            "early_stop=false",
        ])
        .arg("--out")
        .arg(&out)
        .env("LETHE_WORKSPACE", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("by OMP into"), "{text}");
    // 784·512 + 512·512 + 512·10 weights, 90 % of them pruned.
    let copy = load(&out.join("pruned-original.safetensors"));
    let record: Value =
        serde_json::from_str(&copy.meta.as_ref().unwrap().provenance.notes["sparsity"]).unwrap();
    assert_eq!(record["prunable"], 668_672);
    assert_eq!(record["pruned"], 601_805);
    assert_eq!(record["retrain_epochs"], 0);
    let before = parameters(&out.join("pruned-original.safetensors"));
    let after = parameters(&out.join("model.safetensors"));
    let mut moved_kept = 0;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let zero = b.eq(0.0);
        if b.dim() >= 2 {
            let moved = a
                .ne(0.0)
                .logical_and(&zero)
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert_eq!(moved, 0, "{name}: {moved} pruned weights moved");
        }
        moved_kept += a.ne_tensor(b).sum(Kind::Int64).int64_value(&[]);
    }
    assert!(moved_kept > 0, "the method changed nothing");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(out.join("sparsity.json")).unwrap()).unwrap();
    assert_eq!(kept["pruned_weights"], 601_805);
    assert!(kept["reset_weights"].as_i64().unwrap() > 0, "{kept}");
}

mod in_process {
    //! White-box checks: a baseline plugin loaded into this process over
    //! [`EngineServices`], so the test can see what the host served.
    use super::*;
    use lethe_engine::checkpoint::CheckpointMeta;
    use lethe_engine::models::{ArchConfig, BackboneConfig, HeadConfig};
    use lethe_engine::plugin_host::PluginLibrary;
    use lethe_engine::plugin_host::services::{EngineServices, JobInfo, SplitPositions};
    use lethe_engine::train::prune::PruneScope;

    pub struct Job {
        pub _dir: tempfile::TempDir,
        pub original: PathBuf,
        pub services: Arc<EngineServices>,
    }

    impl Job {
        pub fn run(&self, method: &str, params: Value) {
            let id = format!("org.lethe.baseline.{method}");
            self.run_plugin(&baseline_library(method), &id, params);
        }

        /// Runs method `id` of the plugin `library`.
        pub fn run_plugin(&self, library: &Path, id: &str, params: Value) {
            let lib = PluginLibrary::load(library).unwrap();
            let mut inst = lib.create(id, &params, self.services.clone()).unwrap();
            inst.run().unwrap();
        }

        pub fn artifact(&self, name: &str) -> PathBuf {
            self.services
                .artifacts()
                .into_iter()
                .find(|a| a.name == name)
                .unwrap_or_else(|| panic!("no artifact {name}"))
                .path
        }

        pub fn tensor(&self, name: &str) -> Tensor {
            Tensor::read_safetensors(self.artifact(name))
                .unwrap()
                .into_iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
        }
    }

    pub fn services(
        data: Dataset,
        splits: SplitPositions,
        original: PathBuf,
        dir: tempfile::TempDir,
        method: &str,
    ) -> Job {
        let loaded = load(&original);
        let services = EngineServices::new(
            loaded,
            data,
            splits,
            dir.path().join("out"),
            JobInfo {
                plugin_id: format!("org.lethe.baseline.{method}"),
                plugin_version: "test".into(),
                params: json!({}),
                original_checkpoint: Some(original.clone()),
            },
            JOB_SEED,
        )
        .unwrap();
        Job {
            _dir: dir,
            original,
            services: Arc::new(services),
        }
    }

    /// The demo classifier or encoder over the demo data with the worker's split.
    pub fn demo_job(model: &str, method: &str) -> (Job, Demo) {
        let demo = demo();
        let splits = SplitPositions {
            forget: Some(demo.forget.clone()),
            retain: Some(demo.retain.clone()),
            validation: None,
            test: Some(demo.test.clone()),
        };
        let data = lethe_engine::data::load(&demo_dir().join("mnist10k.npz")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        (
            services(data, splits, checkpoint_of(model), dir, method),
            demo,
        )
    }

    /// A tiny problem: 40 random 1×8×8 images in 3 classes, an MLP 64→16→3
    /// (1091 weights), forget rows 0..8, retain 8..32, test 32..40.
    pub fn tiny_job(method: &str) -> (Job, Tensor, Tensor) {
        tiny_job_pruned(method, None)
    }

    /// [`tiny_job`] over the original pruned by OMP (`prune`: ratio and scope)
    /// as `lethe unlearn --prune-ratio` prunes it: a sparse original.
    pub fn tiny_job_pruned(
        method: &str,
        prune: Option<(f64, PruneScope)>,
    ) -> (Job, Tensor, Tensor) {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(11);
        let x =
            Tensor::randint(256, [40, 1, 8, 8], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
        let y = Tensor::randint(3, [40], (Kind::Int64, Device::Cpu));
        let path = dir.path().join("data.safetensors");
        let meta = CheckpointMeta::new(None, None);
        checkpoint::save_tensors(
            &path,
            &[("x".into(), x.copy()), ("y".into(), y.copy())],
            &meta,
            false,
        )
        .unwrap();
        let data = lethe_engine::data::load_safetensors(&path).unwrap();
        let arch = ArchConfig {
            backbone: BackboneConfig::Mlp {
                input_dim: 64,
                hidden: vec![16],
            },
            head: HeadConfig::Classifier { num_classes: 3 },
        };
        tch::manual_seed(5);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let _model = Model::new(&vs.root(), &arch).unwrap();
        let mut original = dir.path().join("original.safetensors");
        checkpoint::save(
            &original,
            &vs,
            &CheckpointMeta::new(Some(arch), None),
            false,
        )
        .unwrap();
        if let Some((ratio, scope)) = prune {
            let sparse = dir.path().join("sparse.safetensors");
            lethe_engine::jobs::train::prune_checkpoint(&original, &sparse, ratio, scope).unwrap();
            original = sparse;
        }
        let splits = SplitPositions {
            forget: Some((0..8).collect()),
            retain: Some((8..32).collect()),
            validation: None,
            test: Some((32..40).collect()),
        };
        (
            services(data, splits, original, dir, method),
            to_unit_float(&x),
            y,
        )
    }
}

/// Per-example gradients of the cross-entropy of the classifier at `path`, one
/// row per example, in float64, flattened in sorted-name order.
fn per_example_gradients(path: &Path, x: &Tensor, y: &Tensor) -> Tensor {
    let m = load(path);
    let Model::Classifier(c) = &m.model else {
        panic!("not a classifier")
    };
    let params = parameters_of(&m);
    let inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
    let rows: Vec<Tensor> = (0..x.size()[0])
        .map(|i| {
            let loss = c
                .forward_t(&x.narrow(0, i, 1), false)
                .cross_entropy_for_logits(&y.narrow(0, i, 1));
            let g = Tensor::run_backward(&[&loss], &inputs, false, false);
            Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
        })
        .collect();
    Tensor::stack(&rows, 0).to_kind(Kind::Double)
}

/// The WoodFisher inverse-Hessian-vector product against an exact dense solve of
/// (λI + GᵀG/N) x = v with G and v computed here, on a problem small enough to
/// build the matrix.
#[test]
fn influence_ihvp_matches_an_exact_dense_solve_on_a_tiny_problem() {
    let (job, x, y) = in_process::tiny_job("influence");
    let (damping, n) = (0.05, 16i64);
    job.run(
        "influence",
        json!({"alpha": 1.0, "damping": damping, "samples": n, "block_size": 0, "batch_size": 8}),
    );
    let ihvp = job.tensor("ihvp").to_kind(Kind::Double);
    let v = job.tensor("influence_direction").to_kind(Kind::Double);
    // v: the reference combination of mean forget and retain gradients.
    let forget = per_example_gradients(&job.original, &x.narrow(0, 0, 8), &y.narrow(0, 0, 8));
    let retain = per_example_gradients(&job.original, &x.narrow(0, 8, 24), &y.narrow(0, 8, 24));
    let (nf, nr) = (8.0, 24.0);
    let v_here = forget.sum_dim_intlist([0i64].as_slice(), false, Kind::Double) / (nf + nr)
        - retain.sum_dim_intlist([0i64].as_slice(), false, Kind::Double) * (nf / ((nf + nr) * nr));
    let rel =
        |a: &Tensor, b: &Tensor| (a - b).norm().double_value(&[]) / b.norm().double_value(&[]);
    assert!(rel(&v, &v_here) < 1e-4, "v differs: {}", rel(&v, &v_here));
    // H from the first n retain examples (the plugin reads retain unshuffled).
    let g = retain.narrow(0, 0, n);
    let d = g.size()[1];
    let h = Tensor::eye(d, (Kind::Double, Device::Cpu)) * damping + g.tr().matmul(&g) / n as f64;
    let exact = Tensor::linalg_solve(&h, &v_here.unsqueeze(1), true).squeeze_dim(1);
    let err = rel(&ihvp, &exact);
    // Far from v itself: the curvature matters at this damping.
    let naive = rel(&(&v_here / damping), &exact);
    eprintln!("IHVP relative error {err} (v/λ would be off by {naive}), d = {d}");
    assert!(err < 1e-4, "{err}");
    assert!(naive > 0.1, "{naive}");
    // The update is θ₀ + α·H⁻¹v.
    let theta0 = flat(&parameters(&job.original)).to_kind(Kind::Double);
    let theta1 = flat(&parameters(&job.artifact("model"))).to_kind(Kind::Double);
    assert!(rel(&(&theta1 - &theta0), &ihvp) < 1e-5);
}

/// Retrain re-initialises and trains on retain rows only: the host never served
/// a forget row (checked by row), every weight differs from the original, the
/// result learnt the task, and the same seed gives the same weights.
#[test]
fn retrain_never_serves_a_forget_row_and_replaces_every_weight() {
    use lethe_engine::plugin_host::services::DataSplit as S;
    let (job, demo) = in_process::demo_job("classifier", "retrain");
    job.run(
        "retrain",
        json!({"recipe": "original", "max_epochs": 1, "seed": 7}),
    );
    let services = &job.services;
    assert!(
        services.served_rows(S::Forget).is_empty(),
        "retrain read the forget set"
    );
    let mut served = services.served_rows(S::Retain);
    served.sort_unstable();
    served.dedup();
    let mut retain = demo.retain.clone();
    retain.sort_unstable();
    assert_eq!(served, retain, "one epoch serves every retain row");
    for r in services.served_rows(S::Test) {
        assert!(demo.test.contains(&r));
    }
    for f in &demo.forget {
        assert!(
            served.binary_search(f).is_err(),
            "forget row {f} was served"
        );
    }
    let model = job.artifact("model");
    let before = parameters(&job.original);
    let after = parameters(&model);
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let same = b.eq_tensor(a).sum(Kind::Int64).int64_value(&[]);
        assert!(
            (same as f64) < 0.01 * b.numel() as f64,
            "{name}: {same} of {} entries kept their original value",
            b.numel()
        );
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(job.artifact("summary")).unwrap()).unwrap();
    eprintln!("retrain summary {summary}");
    // The demo classifier's recorded recipe: batch 64, lr 0.05, no augmentation.
    assert_eq!(summary["recipe_source"], "original");
    assert_eq!(summary["batch_size"], 64);
    assert_eq!(summary["lr"], 0.05);
    assert_eq!(summary["augment"], false);
    assert_eq!(summary["drop_last"], false);
    assert_eq!(summary["epochs"], 1);
    let (_, acc) = classifier_metrics(&model, &demo, &demo.test);
    eprintln!("retrained 1 epoch: test accuracy {acc}");
    assert!(acc > 0.85, "{acc}");

    // Deterministic for a seed: two short runs from the same seed agree bit for bit.
    let short = json!({"recipe": "original", "max_epochs": 1, "max_batches": 5, "seed": 9});
    let (a, _) = in_process::demo_job("classifier", "retrain");
    a.run("retrain", short.clone());
    let (b, _) = in_process::demo_job("classifier", "retrain");
    b.run("retrain", short);
    let (pa, pb) = (
        flat(&parameters(&a.artifact("model"))),
        flat(&parameters(&b.artifact("model"))),
    );
    assert_eq!(bits(&pa), bits(&pb));
}

#[test]
fn retrain_runs_on_the_encoder_through_the_worker_with_its_recipe() {
    let run = unlearn(
        "retrain",
        "encoder",
        json!({"max_epochs": 1, "max_batches": 4, "seed": 1}),
    );
    run.assert_reports(&["retain_loss", "lr"]);
    assert_eq!(run.summary["model_kind"], "encoder");
    assert_eq!(run.summary["recipe_source"], "original");
    assert_eq!(run.summary["batch_size"], 256);
    assert_eq!(run.summary["temperature"], 0.5);
    assert_eq!(run.summary["objective"]["loss"], "simclr_nt_xent");
    assert_eq!(run.summary["drop_last"], true);
    assert_eq!(run.summary["steps"], 4);
    let before = parameters(&checkpoint_of("encoder"));
    let after = parameters(run.model());
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(!b.equal(a), "{name} kept its original value");
    }
}

/// `lethe-cli` with `args` then `paths`; its stdout and stderr, asserting success.
fn lethe_cli(args: &[&str], paths: &[&Path]) -> String {
    let out = std::process::Command::new(require_binary("lethe-cli"))
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "lethe-cli {args:?} failed:\n{text}");
    text
}

/// A MoCo encoder (trained here: a small MLP, one epoch on the 2,000 training
/// digits of the leaky demo's data, τ 0.2) is retrained and unlearned with MoCo's
/// InfoNCE at its recorded τ, with a momentum encoder and a queue, and the
/// summaries say so (#18 item 1: every encoder used to get SimCLR NT-Xent at the
/// form's τ 0.5). `lethe unlearn --method org.lethe.baseline.retrain` starts the
/// queue from random keys, as MoCo training does; NegGrad (one mixed InfoNCE pass)
/// from keys of retain samples; the queue holds at most the 1,900 retain
/// samples, as `lethe train` caps it at its training set.
#[test]
fn a_moco_encoder_is_retrained_and_unlearned_with_moco_infonce() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_dir().join("mnist10k-2k.npz");
    let forget = demo_dir().join("forget-2k.txt");
    let ckpt = dir.path().join("moco.safetensors");
    lethe_cli(
        &[
            "train",
            "--task",
            "moco",
            "--backbone",
            "mlp",
            "--hidden",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "250",
            "--temperature",
            "0.2",
            "--device",
            "cpu",
            "--data",
        ],
        &[&data, Path::new("--out"), &ckpt],
    );
    let moco = |o: &Value, start: &str| {
        assert_eq!(o["loss"], "moco_infonce", "{o}");
        assert_eq!(o["temperature"], 0.2, "{o}");
        assert_eq!(o["momentum"], 0.99, "{o}");
        assert_eq!(o["queue_size"], 1900, "{o}");
        assert_eq!(o["queue_start"], start, "{o}");
    };

    let out = dir.path().join("retrain");
    let log = lethe_cli(
        &[
            "--workspace",
            dir.path().to_str().unwrap(),
            "unlearn",
            "--method",
            "org.lethe.baseline.retrain",
            "--device",
            "cpu",
            "--params",
            r#"{"max_epochs": 1, "max_batches": 2}"#,
            "--plugins",
        ],
        &[
            baseline_library("retrain").parent().unwrap(),
            Path::new("--checkpoint"),
            &ckpt,
            Path::new("--data"),
            &data,
            Path::new("--forget"),
            &forget,
            Path::new("--out"),
            &out,
        ],
    );
    let retrain: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    moco(&retrain["objective"], "random unit vectors");
    assert_eq!(retrain["temperature"], 0.2);
    assert_eq!(retrain["steps"], 2);
    assert!(
        log.contains("retraining with MoCo InfoNCE (τ 0.2, key momentum 0.99, queue 1900)"),
        "{log}"
    );
    assert!(out.join("model.safetensors").exists());

    let out = dir.path().join("neggrad");
    let mut job = support::job(
        baseline_library("neggrad"),
        "org.lethe.baseline.neggrad",
        &ckpt,
        &forget,
        json!({"epochs": 1, "max_batches": 2, "batch_size": 128}),
        &out,
    );
    if let lethe_engine::worker::Job::Unlearn { data: d, .. } = &mut job {
        *d = data.clone();
    }
    let opts = support::options(Duration::from_secs(300));
    let ng = support::run_to_success(&opts, job, &out, tempfile::tempdir().unwrap(), "neggrad");
    moco(
        &ng.summary["objective_settings"],
        "keys of retain samples at the original weights",
    );
    let text = ng.summary["objective"].as_str().unwrap_or_default();
    assert!(text.contains("MoCo InfoNCE (τ 0.2"), "{text}");
    for key in ["forget_before_loss", "forget_after_loss"] {
        assert!(ng.summary[key].as_f64().unwrap().is_finite(), "{key}");
    }
}

/// The curvature methods run on the encoder (per-example NT-Xent within a batch);
/// the label methods refuse it with a reason instead of training on nonsense.
#[test]
fn curvature_methods_run_on_the_encoder_and_label_methods_refuse_it() {
    let fisher = unlearn(
        "fisher",
        "encoder",
        json!({"samples": 16, "batch_size": 16, "alpha": 1e-6}),
    );
    assert_eq!(fisher.summary["model_kind"], "encoder");
    assert_eq!(fisher.summary["fisher_samples"], 16);
    let f = fisher.tensor("fisher_diagonal");
    assert!(f.min().double_value(&[]) >= 0.0 && f.max().double_value(&[]) > 0.0);
    let influence = unlearn(
        "influence",
        "encoder",
        json!({"samples": 16, "batch_size": 256, "block_size": 32}),
    );
    assert_eq!(influence.summary["model_kind"], "encoder");
    let ihvp = influence.tensor("ihvp");
    assert!(
        ihvp.isfinite().all().int64_value(&[]) == 1 && ihvp.abs().max().double_value(&[]) > 0.0
    );

    for method in ["random-label", "salun"] {
        let dir = tempfile::tempdir().unwrap();
        let job = support::job(
            baseline_library(method),
            &format!("org.lethe.baseline.{method}"),
            &checkpoint_of("encoder"),
            &demo_dir().join("forget.txt"),
            json!({"epochs": 1}),
            &dir.path().join("job"),
        );
        let report = run_job(
            &WorkerOptions::with_exe(require_binary("lethe-cli")),
            job,
            |_| {},
        )
        .unwrap();
        match report.outcome {
            JobOutcome::Failed(m) => assert!(m.contains("encoder"), "{method}: {m}"),
            other => panic!("{method} on the encoder: {other}"),
        }
    }
}
