//! `lethe-cli study` and the retrain cache end to end, with the bundled demo
//! classifier on a slice of the demo data:
//!
//! * a study shaped like the demo's (Retrain + 3 methods × 2 seeds, the metric
//!   attack; fewer batches) completes, stores every run
//!   and the table, and a re-run into a fresh folder with the same seeds
//!   reproduces the table exactly (run times aside) from identical models;
//!   re-running into the same folder trains nothing, and `lethe study show`
//!   re-renders it; the shipped `resources/demo/study.toml` is valid;
//! * `lethe unlearn --reuse-retrain`: the second identical request starts no
//!   worker and hands back the byte-identical model; a fresh cache retrains to
//!   the same weights.
#![allow(clippy::unwrap_used)]

mod support;

use lethe_e2e::{require_binary, workspace_root};
use lethe_engine::study::{RowKind, StudyResults};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::studies::{cheap_study, plugin_folder, small_demo};

/// A plugin folder holding just the libraries the demo study needs.
fn plugins(dir: &Path) -> PathBuf {
    plugin_folder(
        dir,
        &[
            "lethe_baseline_retrain",
            "lethe_baseline_finetune",
            "lethe_baseline_neggrad",
            "lethe_baseline_random_label",
            "lethe_attack_metric",
        ],
    )
}

fn lethe(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(require_binary("lethe-cli"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lethe {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_shipped_demo_study_file_is_valid() {
    let spec =
        lethe_engine::study::StudySpec::load(&workspace_root().join("resources/demo/study.toml"))
            .unwrap();
    assert_eq!(spec.methods.len(), 3);
    assert_eq!(spec.seeds.len(), 2);
    assert!(spec.checkpoint.is_file() && spec.data.is_file() && spec.forget.is_file());
}

#[test]
fn a_three_method_two_seed_study_completes_reproduces_its_table_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugins(dir.path());
    let p = p.to_str().unwrap();
    let study = cheap_study(dir.path());
    let study = study.to_str().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let run = |out: &str| {
        let o = lethe(
            &[
                "--plugins",
                p,
                "study",
                study,
                "--out",
                out,
                "--cache",
                cache,
            ],
            dir.path(),
        );
        eprintln!("{}", text(&o.stderr));
        o
    };

    let first = run("a");
    let a = StudyResults::load(&dir.path().join("a")).unwrap();
    // The study is a job of the workspace's audit log, its folder hashed.
    let log = text(&lethe(&["audit", "log", "--json", "--kind", "study"], dir.path()).stdout);
    assert!(
        log.contains("study demo-ci") && log.contains("results.json"),
        "{log}"
    );
    assert!(a.missing().is_empty(), "{:?}", a.missing());
    let table = a.table();
    let labels: Vec<&str> = table.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["Retrain", "FT", "NegGrad", "RL"]);
    let keys: Vec<&str> = table.columns.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["ua", "mia.efficacy", "mia.auc", "ra", "ta"]);
    for row in &table.rows {
        assert_eq!(row.seeds, [0, 1], "{}", row.label);
        for (c, cell) in table.columns.iter().zip(&row.cells) {
            assert_eq!(cell.values.len(), 2, "{} {}", row.label, c.key);
            assert!(
                cell.std.is_some() && cell.gap.is_some(),
                "{} {}",
                row.label,
                c.key
            );
        }
        assert!(row.rte.mean.is_some_and(|s| s > 0.0), "{}", row.label);
    }
    // Retrain is the reference: zero gaps; every column has a best method.
    assert!(table.rows[0].cells.iter().all(|c| c.gap == Some(0.0)));
    for k in 0..table.columns.len() {
        assert!(
            table.rows[1..].iter().any(|r| r.cells[k].best),
            "column {k}"
        );
    }
    // The seeds differ in what they train (else the std would say nothing).
    let ft: Vec<&str> = a
        .runs
        .iter()
        .filter(|r| r.row == "FT")
        .map(|r| r.weights_sha256.as_str())
        .collect();
    assert_eq!(ft.len(), 2);
    assert_ne!(ft[0], ft[1], "both FT seeds trained the same model");
    // Random labels on the forget set lower its accuracy (UA) below FT's.
    let ua = |label: &str| {
        table.rows.iter().find(|r| r.label == label).unwrap().cells[0]
            .mean
            .unwrap()
    };
    assert!(ua("RL") < ua("FT"), "{} vs {}", ua("RL"), ua("FT"));
    // Stored per run: the record, the matrices, the model, evaluation and attack.
    let run0 = dir.path().join("a/runs/ft-seed0");
    for f in [
        "result.json",
        "metrics.safetensors",
        "model/model.safetensors",
        "evaluation/evaluation.json",
        "attack-mia/attack.json",
        "attack-mia/scores_forget.safetensors",
    ] {
        assert!(run0.join(f).is_file(), "{f}");
    }
    let m = lethe_engine::checkpoint::read(run0.join("metrics.safetensors")).unwrap();
    assert_eq!(
        m.state_dict.get("per_class_accuracy").unwrap().size(),
        [4, 10]
    );
    assert_eq!(m.state_dict.get("mia.forget_scores").unwrap().size(), [70]);
    let retrain = a.runs.iter().find(|r| r.kind == RowKind::Retrain).unwrap();
    assert!(!retrain.retrain_cache.as_ref().unwrap().reused);
    for f in ["results.json", "table.txt", "table.csv"] {
        assert!(dir.path().join("a").join(f).is_file(), "{f}");
    }
    let printed = text(&first.stdout);
    assert!(printed.contains(&table.to_text()), "{printed}");

    // The same study into a new folder: the retrain results come from the cache,
    // every method, evaluation and attack runs again, and the table is the same.
    let second = run("b");
    let stderr = text(&second.stderr);
    assert!(stderr.contains("0 trained, 2 from the cache"), "{stderr}");
    let b = StudyResults::load(&dir.path().join("b")).unwrap();
    assert_eq!(
        b.table().without_run_times(),
        table.without_run_times(),
        "the table changed between two runs with the same seeds"
    );
    for r in &a.runs {
        let s = b
            .runs
            .iter()
            .find(|s| s.row == r.row && s.seed == r.seed)
            .unwrap();
        assert_eq!(
            s.weights_sha256, r.weights_sha256,
            "{} seed {}",
            r.row, r.seed
        );
        assert_eq!(s.metrics, r.metrics, "{} seed {}", r.row, r.seed);
    }

    // Two runs at a time as `lethe-cli run-job` processes (`--jobs 2`), retrain
    // included (no cache): the same models and the same table as one at a time.
    let o = lethe(
        &[
            "--plugins",
            p,
            "study",
            study,
            "--out",
            "c",
            "--no-cache",
            "--jobs",
            "2",
        ],
        dir.path(),
    );
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("8 run(s) on this machine, 2 at a time")
            && stderr.contains("8 run(s) done, 0 reused from the folder; retrain: 2 trained"),
        "{stderr}"
    );
    let c = StudyResults::load(&dir.path().join("c")).unwrap();
    assert_eq!(
        c.table().without_run_times(),
        table.without_run_times(),
        "--jobs 2 gave another table than --jobs 1"
    );
    for r in &a.runs {
        let s = c
            .runs
            .iter()
            .find(|s| s.row == r.row && s.seed == r.seed)
            .unwrap();
        assert_eq!(
            s.weights_sha256, r.weights_sha256,
            "{} seed {}",
            r.row, r.seed
        );
        assert_eq!(s.metrics, r.metrics, "{} seed {}", r.row, r.seed);
    }
    for i in 0..8 {
        let done = dir
            .path()
            .join(format!("c/executor/task-{i}.json.result.json"));
        assert!(done.is_file(), "{}", done.display());
    }

    // Into the first folder again: every run is reused, nothing is written over.
    let third = run("a");
    let stderr = text(&third.stderr);
    assert!(stderr.contains("0 run(s) done, 8 reused"), "{stderr}");
    assert!(!stderr.contains("unlearning with"), "{stderr}");
    assert_eq!(
        StudyResults::load(&dir.path().join("a")).unwrap().table(),
        table
    );
    let names: Vec<String> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("table-")), "{names:?}");

    // `study show` re-renders the stored table.
    let shown = lethe(&["study", "show", "a"], dir.path());
    assert_eq!(text(&shown.stdout), table.to_text());
    let csv = lethe(&["study", "show", "a", "--csv"], dir.path());
    assert_eq!(text(&csv.stdout), table.to_csv());
}

fn model_sha(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("model sha256 "))
        .unwrap()
        .to_string()
}

#[test]
fn a_repeated_retrain_request_trains_nothing_and_returns_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugins(dir.path());
    let ckpt = workspace_root().join("resources/demo/classifier.safetensors");
    let (data, forget) = small_demo(dir.path());
    let request = |out: &str, cache: &str| {
        lethe(
            &[
                "--plugins",
                p.to_str().unwrap(),
                "unlearn",
                "--method",
                "org.lethe.baseline.retrain",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--forget",
                forget.to_str().unwrap(),
                "--set",
                "max_epochs=1",
                "--set",
                "max_batches=3",
                "--seed",
                "5",
                "--device",
                "cpu",
                "--out",
                out,
                "--reuse-retrain",
                "--cache",
                cache,
            ],
            dir.path(),
        )
    };
    let first = request("one", "cache");
    let (out1, err1) = (text(&first.stdout), text(&first.stderr));
    assert!(out1.contains("done in"), "{out1}");
    assert!(
        err1.contains("epoch 1/1"),
        "the first request trains: {err1}"
    );

    let second = request("two", "cache");
    let (out2, err2) = (text(&second.stdout), text(&second.stderr));
    assert!(out2.contains("nothing trained"), "{out2}");
    assert!(
        !err2.contains("epoch") && !err2.contains('%'),
        "the second request ran the plugin: {err2}"
    );
    assert_eq!(model_sha(&out1), model_sha(&out2));
    let bytes = |d: &str| std::fs::read(dir.path().join(d).join("model.safetensors")).unwrap();
    assert_eq!(bytes("one"), bytes("two"));
    let entries = std::fs::read_dir(dir.path().join("cache/retrain"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);

    // Another cache retrains, and retraining is deterministic: the same weights
    // (the file differs only in the time it records).
    let third = request("three", "other-cache");
    assert!(text(&third.stdout).contains("done in"));
    let weights = |d: &str| {
        lethe_engine::study::hash::weights_sha256(&dir.path().join(d).join("model.safetensors"))
            .unwrap()
    };
    assert_eq!(weights("one"), weights("three"));

    // Every request is in the workspace's audit log, the cached one marked so.
    let log = text(&lethe(&["audit", "log", "--json", "--kind", "unlearn"], dir.path()).stdout);
    let records: serde_json::Value = serde_json::from_str(&log).unwrap();
    let records = records.as_array().unwrap();
    // Each request is recorded when it starts and when it ends.
    let started = records
        .iter()
        .filter(|r| r["entry"]["status"] == "started")
        .count();
    assert_eq!(started, 3, "{log}");
    let reused: Vec<bool> = records
        .iter()
        .filter(|r| r["entry"]["status"] != "started")
        .map(|r| {
            r["entry"]["details"]["retrain_cache"]["reused"]
                .as_bool()
                .unwrap()
        })
        .collect();
    assert_eq!(reused, [false, true, false], "{log}");
}
