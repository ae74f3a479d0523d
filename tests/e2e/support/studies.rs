//! Small studies for the e2e tests (study.rs, slurm.rs): a slice of the demo
//! data and a study file over it that CI can afford to run several times.

use super::plugin_library;
use lethe_e2e::workspace_root;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A small slice of the demo data (700 training digits of its split, 100
/// validation, 300 test, all classes; every tenth training digit forgotten) as
/// a data file with its split recorded, and its forget list: the demo
/// classifier runs on it as on the whole set, at a tenth of the cost.
pub fn small_demo(dir: &Path) -> (PathBuf, PathBuf) {
    let demo =
        lethe_engine::data::load(&workspace_root().join("resources/demo/mnist10k.npz")).unwrap();
    let split = demo.recorded_split().unwrap().clone();
    // Every 8th/10th row: the demo is sorted by class, so this keeps all ten.
    let every = |rows: &[i64], step: usize, n: usize| -> Vec<i64> {
        rows.iter().step_by(step).take(n).copied().collect()
    };
    let rows: Vec<i64> = [
        every(&split.train, 8, 700),
        every(&split.val, 10, 100),
        every(&split.test, 10, 300),
    ]
    .concat();
    let sub = demo.subset(&rows).unwrap();
    let range = |a: i64, b: i64| Tensor::arange_start(a, b, (Kind::Int64, Device::Cpu));
    let data = dir.join("small-demo.safetensors");
    lethe_engine::checkpoint::save_tensors(
        &data,
        &[
            ("x".into(), sub.images().shallow_clone()),
            ("y".into(), sub.labels().shallow_clone()),
            ("train_idx".into(), range(0, 700)),
            ("val_idx".into(), range(700, 800)),
            ("test_idx".into(), range(800, 1100)),
        ],
        &lethe_engine::checkpoint::CheckpointMeta::new(None, None),
        false,
    )
    .unwrap();
    let forget = dir.join("forget.txt");
    let list: String = (0..700).step_by(10).map(|i| format!("{i}\n")).collect();
    std::fs::write(&forget, list).unwrap();
    (data, forget)
}

/// The demo study's shape (the demo classifier; Retrain + FT, NegGrad and RL ×
/// seeds 0 and 1; the metric attack) on [`small_demo`], with a few batches per
/// method and no bootstrap, so CI can afford several passes.
pub fn cheap_study(dir: &Path) -> PathBuf {
    cheap_study_of(dir, &["FT", "NegGrad", "RL"], "")
}

/// [`cheap_study`] with only the named methods (of FT, NegGrad and RL) and
/// `extra` appended to the file (e.g. a `[slurm]` table).
pub fn cheap_study_of(dir: &Path, methods: &[&str], extra: &str) -> PathBuf {
    let (data, forget) = small_demo(dir);
    let mut text = format!(
        r#"name = "demo-ci"
checkpoint = "{}"
data = "{}"
forget = "{}"
seeds = [0, 1]
device = "cpu"
metrics = ["ua", "mia.efficacy", "mia.auc", "ra", "ta"]

[retrain]
params = {{ max_epochs = 1, max_batches = 5 }}

[[attacks]]
name = "mia"
id = "org.lethe.attack.metric-mia"
params = {{ shadow_size = 100, heldout_size = 100 }}
bootstrap = 0
"#,
        workspace_root()
            .join("resources/demo/classifier.safetensors")
            .display(),
        data.display(),
        forget.display(),
    );
    for m in methods {
        text.push_str(match *m {
            "FT" => r#"
[[methods]]
name = "FT"
id = "org.lethe.baseline.finetune"
params = { lr = 0.05, epochs = 1, batch_size = 64, max_batches = 3, augment = false }
"#,
            "NegGrad" => r#"
[[methods]]
name = "NegGrad"
id = "org.lethe.baseline.neggrad"
params = { lr = 0.05, epochs = 1, batch_size = 64, max_batches = 3, augment = false, forget_weight = 50.0 }
"#,
            "RL" => r#"
[[methods]]
name = "RL"
id = "org.lethe.baseline.random-label"
params = { lr = 0.02, epochs = 2, batch_size = 64, max_batches = 3, augment = false }
"#,
            other => panic!("no cheap method {other}"),
        });
    }
    text.push_str(extra);
    let path = dir.join("study.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `dir/plugins` holding just the named plugin crates' libraries (so a study
/// sees only them), made if needed.
pub fn plugin_folder(dir: &Path, crates: &[&str]) -> PathBuf {
    let p = dir.join("plugins");
    std::fs::create_dir_all(&p).unwrap();
    for name in crates {
        let src = plugin_library(name);
        std::fs::copy(&src, p.join(src.file_name().unwrap())).unwrap();
    }
    p
}
