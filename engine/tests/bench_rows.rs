//! `lethe bench` rows work on both sides (not how fast: speed lives in the
//! benchmark itself, never in tests). Tiny specs: a few images per step.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::bench::rows::{Net, RowResult, RowSpec, Task, default_rows, run_row};
use lethe_engine::bench::unlearn::default_unlearn_rows;
use lethe_engine::bench::{Comparison, Spec, render};
use std::path::Path;
use std::process::Command;

fn tiny(net: Net, task: Task) -> RowSpec {
    RowSpec {
        name: format!("{net:?} {task:?}"),
        net,
        task,
        batch: 4,
        steps: 2,
        warmup: 1,
        threads: 1,
        seed: 3,
    }
}

fn check(r: &RowResult, what: &str) {
    assert!(
        r.images_per_sec > 0.0 && r.images_per_sec.is_finite(),
        "{what}: {r:?}"
    );
    assert!(r.seconds > 0.0, "{what}: {r:?}");
    assert!(r.peak_rss_mib > 10.0, "{what}: {r:?}");
    let faults = r.page_faults_per_step.unwrap_or(-1.0);
    assert!(faults >= 0.0 && faults.is_finite(), "{what}: {r:?}");
}

#[test]
fn every_task_runs_in_lethe_and_in_the_pytorch_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let script = root.join("bench/pytorch_reference.py");
    for task in [Task::Supervised, Task::Simclr, Task::Moco, Task::Probe] {
        let spec = tiny(Net::SmallCnn, task);
        check(&run_row(&spec).unwrap(), &format!("lethe {task:?}"));
        let out = Command::new(&python)
            .arg(&script)
            .arg(serde_json::to_string(&spec).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{task:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: RowResult = serde_json::from_slice(&out.stdout).unwrap();
        check(&r, &format!("pytorch {task:?}"));
    }
    // The ResNet-18 path too, once (it is the heavy one in the real benchmark).
    check(
        &run_row(&tiny(Net::Resnet18, Task::Supervised)).unwrap(),
        "lethe resnet18",
    );
}

#[test]
fn the_table_gives_the_ratio_lethe_over_pytorch() {
    let spec = default_rows(2).remove(0);
    let side = |ips, faults| RowResult {
        images_per_sec: ips,
        seconds: 1.0,
        peak_rss_mib: 100.0,
        forget_loss_before: None,
        forget_loss_after: None,
        page_faults_per_step: Some(faults),
    };
    let row = Comparison::from_runs(
        Spec::Throughput(spec),
        vec![side(300.0, 12.4)],
        vec![side(200.0, 3.6)],
    );
    assert!((row.ratio() - 1.5).abs() < 1e-12);
    let table = render(&[row]);
    assert!(
        table.contains(
            "| resnet18 supervised | 128 × 2 | 300.0 | 200.0 | 1.50× | 100 | 100 | 12 | 4 |"
        ),
        "{table}"
    );
}

#[test]
fn repeated_runs_give_each_sides_median_run_and_the_paired_ratio_range() {
    let spec = default_rows(2).remove(0);
    let side = |ips: f64, mib: f64| RowResult {
        images_per_sec: ips,
        seconds: 1.0,
        peak_rss_mib: mib,
        forget_loss_before: None,
        forget_loss_after: None,
        page_faults_per_step: Some(12.4),
    };
    // Lethe's runs 90, 120, 100 (median 100, its memory 2); PyTorch's 100, 80, 50
    // (median 80, its memory 5). Paired ratios 0.9, 1.5, 2.0.
    let row = Comparison::from_runs(
        Spec::Throughput(spec),
        vec![side(90.0, 1.0), side(120.0, 3.0), side(100.0, 2.0)],
        vec![side(100.0, 4.0), side(80.0, 5.0), side(50.0, 6.0)],
    );
    assert_eq!(row.runs, 3);
    assert!((row.ratio() - 1.25).abs() < 1e-12);
    assert!((row.ratio_range.0 - 0.9).abs() < 1e-12);
    assert!((row.ratio_range.1 - 2.0).abs() < 1e-12);
    let table = render(&[row]);
    assert!(
        table.contains(
            "| resnet18 supervised | 128 × 2 | 100.0 | 80.0 | 1.25× (0.90–2.00) | 2 | 5 | 12 | 12 |"
        ),
        "{table}"
    );
}

#[test]
fn an_unlearning_row_is_faster_when_it_takes_less_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo");
    let spec = default_unlearn_rows(&root, 2).remove(0);
    let side = |seconds| RowResult {
        images_per_sec: 0.0,
        seconds,
        peak_rss_mib: 500.0,
        forget_loss_before: Some(0.5),
        forget_loss_after: Some(1.25),
        page_faults_per_step: None,
    };
    let row = Comparison::from_runs(Spec::Unlearn(spec), vec![side(10.0)], vec![side(25.0)]);
    assert!((row.ratio() - 2.5).abs() < 1e-12);
    let table = render(&[row]);
    assert!(
        table.contains("| demo unlearn: fine-tune classifier | 2 | 10.0 | 25.0 | 2.50× | 0.5000 → 1.2500; 0.5000 → 1.2500 | 500 | 500 |"),
        "{table}"
    );
}

/// Where cargo put the fine-tune plugin this test depends on.
fn plugin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        if dir.join("liblethe_baseline_finetune.so").exists() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "liblethe_baseline_finetune.so not built next to {}",
        exe.display()
    );
}

/// The fine-tune row on both sides, one epoch: both load the same model, data and
/// forget set, so the forget loss before unlearning (eval mode, no augmentation)
/// must agree, and both must train (the loss moves).
#[test]
fn the_finetune_run_does_the_same_work_on_both_sides() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut spec = default_unlearn_rows(&root.join("resources/demo"), 2).remove(0);
    spec.epochs = 1;
    let json = serde_json::to_string(&Spec::Unlearn(spec)).unwrap();
    let run = |cmd: &mut Command| -> RowResult {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let lethe = run(Command::new(env!("CARGO_BIN_EXE_lethe-cli"))
        .env("LETHE_PLUGIN_PATH", plugin_dir())
        .args(["bench", "--run-row", &json]));
    let pytorch = run(Command::new(root.join(".venv/bin/python"))
        .arg(root.join("bench/pytorch_reference.py"))
        .arg(&json));
    for r in [&lethe, &pytorch] {
        assert!(r.seconds > 0.0 && r.peak_rss_mib > 10.0, "{r:?}");
    }
    let (a, b) = (
        lethe.forget_loss_before.unwrap(),
        pytorch.forget_loss_before.unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1e-6) + 1e-7,
        "forget loss before: Lethe {a}, PyTorch {b}"
    );
    for r in [&lethe, &pytorch] {
        let after = r.forget_loss_after.unwrap();
        assert!(
            after.is_finite() && after != r.forget_loss_before.unwrap(),
            "{r:?}"
        );
    }
}

/// The batched-shadow rows (#25 item 3) run every way on a tiny MLP: Lethe
/// stacked and one by one in this process, PyTorch's `torch.func` ensemble
/// through the reference script (its plain loop is the fine-tune row's loop
/// over the same batches; one Python start keeps the test short); and the
/// table puts them in a section of their own with PyTorch's time over Lethe's.
#[test]
fn the_shadow_rows_run_every_way_on_both_sides() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rows = lethe_engine::bench::shadows::default_shadow_rows(&root.join("resources/demo"), 1);
    assert_eq!(rows.len(), 3);
    assert!(
        rows[0]
            .name
            .starts_with("LiRA, 16 shadow models of the leaky demo MLP")
    );
    let mut spec = rows[2].clone();
    (spec.models, spec.epochs, spec.hidden, spec.stack) = (3, 1, vec![16], 2);
    assert_eq!(spec.pytorch, "func");
    let json = serde_json::to_string(&Spec::Shadows(spec.clone())).unwrap();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("bench/pytorch_reference.py"))
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs: RowResult = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let mut results = Vec::new();
    for lethe in ["stacked", "sequential"] {
        spec.lethe = lethe.into();
        let ours = lethe_engine::bench::shadows::run_shadow_row(&spec).unwrap();
        for r in [&ours, &theirs] {
            assert!(r.seconds > 0.0 && r.peak_rss_mib > 10.0, "{lethe}: {r:?}");
        }
        results.push(Comparison::from_runs(
            Spec::Shadows(spec.clone()),
            vec![ours],
            vec![theirs.clone()],
        ));
    }
    let table = render(&results);
    assert!(
        table.contains("Shadow models trained and run on every sample"),
        "{table}"
    );
    assert!(table.contains("| 3 × 1 |"), "{table}");
}
