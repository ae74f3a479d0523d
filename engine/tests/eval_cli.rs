//! `lethe-cli evaluate` and `lethe-cli attack` as a user runs them, on the
//! bundled demo: the utility table and `evaluation.json` (RA/TA/UA against the
//! accuracies the demo README records), the alignment audit's files and
//! invariants, the attack table and `attack.json`, outputs never written
//! over, and `plugins check` conformance of the metric and SVM attacks.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Kind, Tensor};

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

fn demo(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo")
        .join(file)
        .display()
        .to_string()
}

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
fn plugin(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join(&file);
        if p.exists() {
            return p;
        }
    }
    panic!("{file} not found next to {}", exe.display());
}

fn lethe(args: &[&str], cwd: &Path) -> Output {
    Command::new(EXE)
        .args(args)
        .current_dir(cwd)
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"))
        // Probes trained here stay here (and are shared within a test).
        .env("LETHE_PROBE_CACHE", cwd.join("probe-cache"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn evaluate_reads_the_demo_classifier_as_its_readme_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let args = [
        "evaluate",
        "--checkpoint",
        &demo("classifier.safetensors"),
        "--data",
        &demo("mnist10k.npz"),
        "--forget",
        &demo("forget.txt"),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = lethe(&args, dir.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for line in [
        "retain accuracy (RA)",
        "test accuracy (TA)",
        "forget accuracy (UA)",
        "per-class",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    let r = json(&out.join("evaluation.json"));
    // Named as people type it, not tch's `Cpu`.
    assert_eq!(r["device"], "cpu");
    let u = &r["utility"];
    assert_eq!(u["reader"], "classifier");
    assert_eq!(
        (r["forget_count"].as_u64(), r["retain_count"].as_u64()),
        (Some(300), Some(5700))
    );
    // resources/demo/README.md: train 1.0000, val 0.9830, test 0.9797.
    assert_eq!(f(&u["retain"]["accuracy"]), 1.0);
    assert_eq!(f(&u["forget"]["accuracy"]), 1.0);
    assert!(
        (f(&u["test"]["accuracy"]) - 0.9797).abs() < 5e-5,
        "{}",
        u["test"]
    );
    assert!(
        (f(&u["validation"]["accuracy"]) - 0.9830).abs() < 5e-5,
        "{}",
        u["validation"]
    );
    assert!(f(&u["test"]["loss"]) > 10.0 * f(&u["forget"]["loss"]));
    // Per-class accuracies weighted by the classes' test counts give the total.
    let per_class: Vec<f64> = u["test"]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    assert_eq!(per_class.len(), 10);
    let data = lethe_engine::data::load(Path::new(&demo("mnist10k.npz"))).unwrap();
    let split = data.recorded_split().unwrap();
    let labels = data.label_slice();
    let mut count = [0usize; 10];
    for &i in &split.test {
        count[labels[i as usize] as usize] += 1;
    }
    let weighted: f64 = per_class
        .iter()
        .zip(count)
        .map(|(a, c)| a * c as f64)
        .sum::<f64>()
        / split.test.len() as f64;
    assert!((weighted - f(&u["test"]["accuracy"])).abs() < 1e-12);
    assert!(r["alignment"].is_null());

    let again = lethe(&args, dir.path());
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
}

#[test]
fn evaluate_audits_alignment_between_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let run = |checkpoint: &str, extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let (original, data, forget) = (
            demo("encoder.safetensors"),
            demo("mnist10k.npz"),
            demo("forget.txt"),
        );
        let mut args = vec![
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--original",
            &original,
        ];
        args.extend(["--data", &data, "--forget", &forget, "--device", "cpu"]);
        // The reference probe (100 epochs, crop + flip) is for real runs.
        args.extend(["--probe", "fast"]);
        args.extend(extra);
        let out_s = out.display().to_string();
        args.extend(["--out", &out_s]);
        let o = lethe(&args, dir.path());
        assert!(o.status.success(), "{}", text(&o));
        (json(&out.join("evaluation.json")), out, text(&o))
    };

    // The encoder against itself: same views, same features, nothing forgotten.
    let (r, out, t) = run(&demo("encoder.safetensors"), &[], "self");
    assert!(t.contains("forgetting score FS"), "{t}");
    let a = &r["alignment"];
    assert_eq!(a["samples"], 300);
    assert_eq!(f(&a["forgetting_score"]["mean"]), 0.0);
    assert_eq!(f(&a["negative_alignment"]["mean"]), 0.0);
    // A trained contrastive encoder aligns a sample's views more than two samples'.
    assert!(
        f(&a["positive_before"]["mean"]) > f(&a["negative_before"]["mean"]) + 0.1,
        "{a}"
    );
    // The encoder is read by a linear probe (README: test accuracy 0.9233).
    let u = &r["utility"];
    assert!(u["reader"].as_str().unwrap().contains("linear probe"));
    assert!(f(&u["test"]["accuracy"]) > 0.85, "{}", u["test"]);
    // One probe per model: trained for the evaluated encoder, read from the
    // cache for the original (the same weights) ...
    let p = &u["probe"];
    assert_eq!(p["recipe"]["preset"], "fast");
    assert_eq!(p["recipe"]["epochs"], 30);
    assert_eq!(p["cached"], false, "{p}");
    let o = &r["original_utility"]["probe"];
    assert_eq!((&o["cached"], &o["key"]), (&Value::Bool(true), &p["key"]));
    // ... and by an attack on it: the confidence attack reads the very head
    // the evaluation read (lethe.probe/1, same key, from the cache).
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let src = plugin("lethe_attack_metric");
    std::fs::copy(&src, plugins.join(src.file_name().unwrap())).unwrap();
    let attack = dir.path().join("attack");
    let (pl, enc, data, forget, at) = (
        plugins.display().to_string(),
        demo("encoder.safetensors"),
        demo("mnist10k.npz"),
        demo("forget.txt"),
        attack.display().to_string(),
    );
    let o = lethe(
        &[
            "--plugins",
            &pl,
            "attack",
            "--attack",
            "org.lethe.attack.metric-mia",
            "--checkpoint",
            &enc,
            "--data",
            &data,
            "--forget",
            &forget,
            "--device",
            "cpu",
            "--bootstrap",
            "0",
            "--set",
            "metric=confidence",
            "--set",
            "probe=fast",
            // Small role sets: what is tested here is the probe.
            "--set",
            "shadow_size=200",
            "--set",
            "heldout_size=200",
            "--out",
            &at,
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let probs = &json(&attack.join("attack.json"))["plugin_summary"]["probabilities"];
    assert_eq!(probs["probe"]["key"], p["key"], "{probs}");
    assert_eq!(probs["probe"]["cached"], true, "{probs}");
    // Its retain accuracy is the evaluation's RA: the same head.
    assert!((f(&probs["probe_retain_accuracy"]) - f(&u["retain"]["accuracy"])).abs() < 1e-6);
    let cached = std::fs::read_dir(dir.path().join("probe-cache"))
        .unwrap()
        .count();
    assert_eq!(cached, 1, "one probe file for one model");
    let m = lethe_engine::checkpoint::read(out.join("alignment.safetensors")).unwrap();
    let am = m.state_dict.get("am_before").unwrap();
    assert_eq!(am.size(), [8, 8]);
    assert_eq!(
        m.state_dict
            .get("agm")
            .unwrap()
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    let diag = am.diagonal(0, 0, 1).mean(Kind::Double).double_value(&[]);
    let off = (am.sum(Kind::Double).double_value(&[]) - 8.0 * diag) / 56.0;
    assert!(diag > off, "AM diagonal {diag} vs off-diagonal {off}");
    let idx = Vec::<i64>::try_from(m.state_dict.get("heatmap_indices").unwrap()).unwrap();
    let forget: Vec<i64> = std::fs::read_to_string(demo("forget.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(idx.len(), 8);
    assert!(idx.iter().all(|i| forget.contains(i)), "{idx:?}");

    // Another model with the same backbone (the demo classifier) as the
    // "unlearned" one: the audit runs on request and the saved per-sample
    // scores average to the reported FS.
    let (r, out, _) = run(&demo("classifier.safetensors"), &["--alignment"], "other");
    let a = &r["alignment"];
    let fs_mean = f(&a["forgetting_score"]["mean"]);
    assert!(fs_mean.abs() > 1e-3, "{a}");
    let m = lethe_engine::checkpoint::read(out.join("alignment.safetensors")).unwrap();
    let fs: &Tensor = m.state_dict.get("fs_per_sample").unwrap();
    assert_eq!(fs.size(), [300]);
    assert!((fs.mean(Kind::Double).double_value(&[]) - fs_mean).abs() < 1e-5);
    let (b, af, g) = (
        m.state_dict.get("am_before").unwrap(),
        m.state_dict.get("am_after").unwrap(),
        m.state_dict.get("agm").unwrap(),
    );
    assert!((b - af - g).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn attack_prints_the_metric_table_and_writes_attack_json() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for lib in ["lethe_attack_metric", "lethe_plugin_template"] {
        let src = plugin(lib);
        std::fs::copy(&src, plugins.join(src.file_name().unwrap())).unwrap();
    }
    let p = plugins.display().to_string();
    let out = dir.path().join("attack");
    let o_s = out.display().to_string();
    let (ckpt, data, forget) = (
        demo("classifier.safetensors"),
        demo("mnist10k.npz"),
        demo("forget.txt"),
    );
    let args = |id: &'static str| -> Vec<String> {
        [
            "--plugins",
            &p,
            "attack",
            "--attack",
            id,
            "--checkpoint",
            &ckpt,
            "--data",
            &data,
            "--forget",
            &forget,
            "--device",
            "cpu",
            "--bootstrap",
            "200",
            "--set",
            "metric=confidence",
            "--out",
            &o_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let o = lethe(&as_refs(&args("org.lethe.attack.metric-mia")), dir.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for line in [
        "AUC [95% CI]",
        "TPR @ 1% FPR",
        "TPR @ 0.1% FPR",
        "balanced accuracy",
        "efficacy",
        "held-out members vs non-members",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    let r = json(&out.join("attack.json"));
    assert_eq!(r["attack"]["id"], "org.lethe.attack.metric-mia");
    assert_eq!(r["bootstrap"]["resamples"], 200);
    assert_eq!(r["plugin_summary"]["metric"], "confidence");
    let m = &r["metrics"]["forget"];
    assert!((0.0..=1.0).contains(&f(&m["auc"])));
    assert_eq!(m["tpr_at_fpr"].as_array().unwrap().len(), 3);
    assert!(m["roc"]["fpr"].as_array().unwrap().len() > 10);
    assert_eq!(r["forget_scores"].as_array().unwrap().len(), 300);
    assert!(out.join("scores_forget.safetensors").is_file());

    // Never over an existing folder; a method is not an attack; unknown ids
    // list what is there.
    let again = lethe(&as_refs(&args("org.lethe.attack.metric-mia")), dir.path());
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    std::fs::remove_dir_all(&out).unwrap();
    let method = lethe(&as_refs(&args("org.example.gradient-ascent")), dir.path());
    assert!(!method.status.success());
    assert!(text(&method).contains("not an attack"), "{}", text(&method));
    let unknown = lethe(&as_refs(&args("org.lethe.attack.nope")), dir.path());
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("org.lethe.attack.metric-mia"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn the_confidence_attack_plugins_conform() {
    let dir = tempfile::tempdir().unwrap();
    for (lib, id) in [
        ("lethe_attack_metric", "org.lethe.attack.metric-mia"),
        ("lethe_attack_svm", "org.lethe.attack.svm-mia"),
    ] {
        let so = plugin(lib);
        let o = lethe(&["plugins", "check", so.to_str().unwrap()], dir.path());
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        for check in [
            format!("ok   {id}: descriptor"),
            format!("ok   {id}: runs on the demo"),
            format!("ok   {id}: handles cancel"),
            "conforms".to_string(),
        ] {
            assert!(t.contains(&check), "missing {check:?} in\n{t}");
        }
    }
}

/// Writes training samples `indices` of the demo data as grey PNG files, the
/// way a data subject's own copies of their pictures arrive.
fn pictures_of(dir: &Path, indices: &[i64]) {
    std::fs::create_dir_all(dir).unwrap();
    let d = lethe_engine::data::load(Path::new(&demo("mnist10k-2k.npz"))).unwrap();
    for &i in indices {
        let pos = d.indices().iter().position(|&x| x == i).unwrap();
        let pixels = d.sample_pixels(pos).unwrap();
        let file = std::fs::File::create(dir.join(format!("photo-{i}.png"))).unwrap();
        let mut enc = png::Encoder::new(file, d.width() as u32, d.height() as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .unwrap()
            .write_image_data(&pixels)
            .unwrap();
    }
}

#[test]
fn a_folder_of_the_data_subjects_pictures_is_a_forget_set_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let forget: Vec<i64> = std::fs::read_to_string(demo("forget-2k.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(4)
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let pics = tmp.path().join("pictures");
    pictures_of(&pics, &forget);
    let out = tmp.path().join("eval");
    let args = |forget: &Path, out: &Path| {
        vec![
            "evaluate".to_string(),
            "--checkpoint".into(),
            demo("leaky-mlp.safetensors"),
            "--data".into(),
            demo("mnist10k-2k.npz"),
            "--forget".into(),
            forget.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let a = args(&pics, &out);
    let o = lethe(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 forget /"), "{}", text(&o));
    let e = json(&out.join("evaluation.json"));
    assert_eq!(e["utility"]["forget"]["samples"], 4);

    // A picture the model never trained on (a test sample) is refused by name.
    let test_only = {
        let d = lethe_engine::data::load(Path::new(&demo("mnist10k-2k.npz"))).unwrap();
        let split = lethe_engine::jobs::train::split_of(&d, 0).unwrap();
        split.test[0]
    };
    pictures_of(&pics, &[test_only]);
    let a = args(&pics, &tmp.path().join("eval2"));
    let o = lethe(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains(&format!("photo-{test_only}.png")), "{msg}");
    assert!(msg.contains("take it out of the folder"), "{msg}");
}
