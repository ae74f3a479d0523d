//! The paper-protocol studies of `resources/studies/` (one per paper Lethe
//! implements) run end to end at their CI size (`lethe study FILE --scale ci`:
//! one seed, the reference rows and the paper's own method, a batch or two
//! each, on a 900-digit slice of the demo data, small probes and attack sets)
//! through the real CLI and plugins, and print the paper's table: its columns in
//! its order under its headings, a Retrain row whose Avg. Gap is 0, finite
//! numbers everywhere. The full-size files load and pass `lethe study --check`
//! (every row's plugin found, its parameters valid), and their CI scale only
//! shrinks them (same columns, plugins and checkpoint; a subset of the rows).
//!
//! Needs the plugins built (`cargo build -p lethe-baseline-finetune …`, as the
//! other e2e tests).
#![allow(clippy::unwrap_used)]

mod support;

use lethe_e2e::{require_binary, workspace_root};
use lethe_engine::study::{ComparisonTable, RowKind, StudyResults, StudySpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use support::studies::plugin_folder;

/// Every plugin the four studies use.
const PLUGINS: &[&str] = &[
    "lethe_baseline_retrain",
    "lethe_baseline_finetune",
    "lethe_baseline_gradient_ascent",
    "lethe_baseline_neggrad",
    "lethe_baseline_l1_sparse",
    "lethe_baseline_fisher",
    "lethe_baseline_influence",
    "lethe_baseline_scrub",
    "lethe_method_alignment_calibration",
    "lethe_method_encodermu",
    "lethe_method_dau",
    "lethe_method_contrastive_unlearning",
    "lethe_attack_encodermi",
    "lethe_attack_svm",
];

/// What each paper's table must look like.
struct Layout {
    file: &'static str,
    /// Column keys, in the paper's order.
    keys: &'static [&'static str],
    /// Their headings.
    labels: &'static [&'static str],
    /// Keys averaged into the last column.
    avg: &'static [&'static str],
    avg_label: &'static str,
    /// Rows of the full study, reference rows first.
    rows: &'static [&'static str],
    /// Rows of its CI scale.
    ci_rows: &'static [&'static str],
}

const LAYOUTS: &[Layout] = &[
    Layout {
        file: "alignment-calibration.toml",
        keys: &["fs", "emia.efficacy", "ra", "ta", "ua", "cmia.efficacy"],
        labels: &["FS", "EMIA", "RA", "TA", "UA", "CMIA"],
        avg: &["emia.efficacy", "ra", "ta", "ua", "cmia.efficacy"],
        avg_label: "Avg. Gap",
        rows: &[
            "Retrain",
            "Fine-Tune",
            "Grad.Ascent",
            "NegGrad",
            "l1-Sparsity",
            "AC",
        ],
        ci_rows: &["Retrain", "AC"],
    },
    Layout {
        file: "dau.toml",
        keys: &["forget_error", "mia.efficacy", "ra", "ta"],
        labels: &["UA", "MIA-Efficacy", "RA", "TA"],
        avg: &["forget_error", "mia.efficacy", "ra", "ta"],
        avg_label: "Avg. Disparity",
        rows: &["Retrain", "FT", "GA", "FF", "IU", "DAU"],
        ci_rows: &["Retrain", "DAU"],
    },
    Layout {
        file: "contrastive-unlearning.toml",
        keys: &["ua", "mia.efficacy", "ra", "ta"],
        labels: &["Forget acc.", "MIA-Efficacy", "RA", "TA"],
        avg: &["ua", "mia.efficacy", "ra", "ta"],
        avg_label: "Avg. Gap",
        rows: &["Retrain", "FT", "GA", "SCRUB", "CU"],
        ci_rows: &["Retrain", "CU"],
    },
    Layout {
        file: "encodermu.toml",
        keys: &["ta", "emia.auc", "emia.efficacy", "ra", "ua"],
        labels: &["model_acc", "MIA AUC", "EMIA", "RA", "UA"],
        avg: &["ta", "emia.auc", "emia.efficacy", "ra", "ua"],
        avg_label: "Avg. Gap",
        rows: &["Retrain", "Original", "EncoderMU", "FT"],
        ci_rows: &["Retrain", "Original", "EncoderMU"],
    },
];

fn studies_dir() -> PathBuf {
    workspace_root().join("resources/studies")
}

fn lethe(args: &[&std::ffi::OsStr], cwd: &Path) -> String {
    let o = Command::new(require_binary("lethe-cli"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"))
        .env("LETHE_PROBE_CACHE", cwd.join("probe-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "lethe {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// The rows a study's table has.
fn rows_of(spec: &StudySpec) -> Vec<String> {
    lethe_engine::study::results::rows(spec)
        .into_iter()
        .map(|(label, _)| label)
        .collect()
}

#[test]
fn every_paper_study_is_listed_here_checks_out_and_its_ci_scale_only_shrinks_it() {
    let mut files: Vec<String> = std::fs::read_dir(studies_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = LAYOUTS.iter().map(|l| l.file).collect();
    listed.sort();
    assert_eq!(files, listed, "a study file without its layout here");
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(dir.path(), PLUGINS);
    for l in LAYOUTS {
        let path = studies_dir().join(l.file);
        let full = StudySpec::load(&path).unwrap();
        let ci = StudySpec::load_scaled(&path, Some("ci")).unwrap();
        assert!(full.seeds.len() >= 2, "{}: mean ± std needs seeds", l.file);
        assert_eq!(rows_of(&full), l.rows, "{}", l.file);
        assert_eq!(rows_of(&ci), l.ci_rows, "{}", l.file);
        assert_eq!(ci.seeds.len(), 1, "{}", l.file);
        assert_eq!(ci.name, format!("{}-ci", full.name));
        assert_eq!(full.metric_keys(), l.keys, "{}", l.file);
        // The same table, plugins and checkpoint; CI runs on a slice of the
        // data (ci/) with the same kind of forget set.
        for spec in [&full, &ci] {
            assert_eq!(spec.metric_keys(), full.metric_keys());
            assert_eq!(spec.avg_gap_keys(), l.avg, "{}", l.file);
            assert_eq!(
                (&spec.labels, &spec.avg_gap_label),
                (&full.labels, &full.avg_gap_label)
            );
            assert_eq!(
                (&spec.checkpoint, spec.original, &spec.retrain.id),
                (&full.checkpoint, full.original, &full.retrain.id)
            );
            assert!(spec.data.is_file() && spec.forget.is_file());
            let attacks = |s: &StudySpec| -> Vec<(String, String)> {
                s.attacks
                    .iter()
                    .map(|a| (a.name.clone(), a.id.clone()))
                    .collect()
            };
            assert_eq!(attacks(spec), attacks(&full), "{}", l.file);
        }
        for m in &ci.methods {
            assert!(
                full.methods
                    .iter()
                    .any(|f| f.name == m.name && f.id == m.id),
                "{}: {}",
                l.file,
                m.name
            );
        }
    }
    // Every row of the full studies, including those CI leaves out: its plugin
    // is found and its parameters fit the plugin's schema (the four at once:
    // each is mostly process start-up).
    std::thread::scope(|s| {
        let checks: Vec<_> = LAYOUTS
            .iter()
            .map(|l| {
                let path = studies_dir().join(l.file);
                let (plugins, cwd) = (&plugins, dir.path());
                s.spawn(move || {
                    lethe(
                        &[
                            "--plugins".as_ref(),
                            plugins.as_os_str(),
                            "study".as_ref(),
                            path.as_os_str(),
                            "--check".as_ref(),
                        ],
                        cwd,
                    )
                })
            })
            .collect();
        for c in checks {
            let out = c.join().unwrap();
            assert!(out.contains("check out"), "{out}");
        }
    });
}

fn run_study(file: &Path, plugins: &Path, out: &Path) -> ComparisonTable {
    let stdout = lethe(
        &[
            "--plugins".as_ref(),
            plugins.as_os_str(),
            "study".as_ref(),
            file.as_os_str(),
            "--scale".as_ref(),
            "ci".as_ref(),
            // One retrain cache for all four: the two classifier studies forget
            // the same class with the same retrain, as do the two encoder ones,
            // so each pair trains its reference once.
            "--cache".as_ref(),
            out.parent().unwrap().join("retrain-cache").as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        out.parent().unwrap(),
    );
    let table = StudyResults::load(out).unwrap().table();
    assert!(stdout.contains(&table.to_text()), "{stdout}");
    eprintln!("{}", table.to_text());
    table
}

#[test]
fn the_paper_studies_run_at_ci_size_and_print_the_papers_tables() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(dir.path(), PLUGINS);
    let all = Instant::now();
    for l in LAYOUTS {
        let started = Instant::now();
        let out = dir.path().join(l.file.trim_end_matches(".toml"));
        let t = run_study(&studies_dir().join(l.file), &plugins, &out);
        eprintln!("{}: {:.1} s", l.file, started.elapsed().as_secs_f64());
        let keys: Vec<&str> = t.columns.iter().map(|c| c.key.as_str()).collect();
        let labels: Vec<&str> = t.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!((keys.as_slice(), labels.as_slice()), (l.keys, l.labels));
        let avg: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| c.in_avg_gap)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(avg, l.avg, "{}", l.file);
        assert_eq!(t.avg_gap_label, l.avg_label);
        let header = t.to_text().lines().nth(1).unwrap().to_string();
        let mut at = 0;
        for h in l.labels.iter().chain([&l.avg_label]) {
            let pos = header[at..]
                .find(h)
                .unwrap_or_else(|| panic!("{}: {h:?} not in order in {header:?}", l.file));
            at += pos + h.len();
        }
        let rows: Vec<&str> = t.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(rows, l.ci_rows, "{}", l.file);
        for row in &t.rows {
            assert_eq!(row.seeds, [0], "{} {}", l.file, row.label);
            for (c, cell) in t.columns.iter().zip(&row.cells) {
                let ok =
                    cell.mean.is_some_and(f64::is_finite) && cell.gap.is_some_and(f64::is_finite);
                assert!(ok, "{} {} {}: {cell:?}", l.file, row.label, c.key);
            }
            assert!(
                row.avg_gap.is_some_and(f64::is_finite),
                "{} {}",
                l.file,
                row.label
            );
        }
        let retrain = t.rows.iter().find(|r| r.kind == RowKind::Retrain).unwrap();
        assert_eq!(retrain.avg_gap, Some(0.0), "{}", l.file);
        // UA of the OPTML layout is 100 − forget accuracy, as the paper prints it.
        if let Some(k) = l.keys.iter().position(|k| *k == "forget_error") {
            let results = StudyResults::load(&out).unwrap();
            let stored = results
                .runs
                .iter()
                .find(|r| r.kind == RowKind::Retrain)
                .unwrap()
                .metrics["ua"];
            let shown = retrain.cells[k].mean.unwrap();
            assert!(
                (shown - 100.0 * (1.0 - stored)).abs() < 1e-9,
                "{shown} {stored}"
            );
        }
    }
    eprintln!(
        "all paper studies at CI size: {:.1} s",
        all.elapsed().as_secs_f64()
    );
}
