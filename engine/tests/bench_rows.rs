//! `lethe bench` rows work on both sides (not how fast: speed lives in the
//! benchmark itself, never in tests). Tiny specs: a few images per step.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::bench::rows::{Net, RowResult, RowSpec, Task, default_rows, run_row};
use lethe_engine::bench::{Comparison, render};
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
    let side = |ips| RowResult {
        images_per_sec: ips,
        seconds: 1.0,
        peak_rss_mib: 100.0,
    };
    let row = Comparison {
        spec,
        lethe: side(300.0),
        pytorch: side(200.0),
    };
    assert!((row.ratio() - 1.5).abs() < 1e-12);
    let table = render(&[row]);
    assert!(
        table.contains("| resnet18 supervised | 128 × 4 | 300.0 | 200.0 | 1.50× | 100 | 100 |"),
        "{table}"
    );
}
