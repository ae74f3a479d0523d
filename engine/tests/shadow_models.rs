//! Shadow models through the real ABI (`lethe.shadow/1`, ABI 1.2): the
//! fixture attack in plugins/test-fixture-services asks the job services for
//! shadow models of a small MLP on 40 samples and stores what it gets. The
//! models are trained with the checkpoint's recorded recipe on halves of the
//! pool (each online target in exactly half of them, offline in none), really
//! learn their halves, land in the cache and come back from it on the next
//! run without training; the recipe of an unlearned model is its original's;
//! an estimate run trains nothing and says what it would cost.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::checkpoint::{self, CheckpointMeta, LoadOptions};
use lethe_engine::data::Dataset;
use lethe_engine::jobs::train::{Backbone, Task, TrainJob};
use lethe_engine::models::{ArchConfig, BackboneConfig, HeadConfig, Model};
use lethe_engine::plugin_host::PluginLibrary;
use lethe_engine::plugin_host::services::{
    EngineServices, JobInfo, ServiceEvent, ShadowSettings, SplitPositions,
};
use lethe_engine::train::prune::{PruneRecipe, PruneScope};
use lethe_engine::train::{OptimizerConfig, Schedule, TrainConfig};
use lethe_plugin_api::abi::LetheStatus;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

const ID: &str = "org.lethe.test.services.shadows";
const N: i64 = 40;
const CLASSES: i64 = 3;

fn plugin() -> Arc<PluginLibrary> {
    let file = "liblethe_test_fixture_services.so";
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let path = [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} not found next to {}", exe.display()));
    PluginLibrary::load(&path).unwrap()
}

/// 40 random 1×8×8 images, labels `i % 3`: a model learns its half only by
/// memorising it, so trained-on samples stand out clearly.
fn dataset(dir: &Path) -> Dataset {
    tch::manual_seed(11);
    let x = Tensor::randint(256, [N, 1, 8, 8], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
    let y = Tensor::arange(N, (Kind::Int64, Device::Cpu)).remainder(CLASSES);
    let path = dir.join("data.safetensors");
    if !path.exists() {
        let meta = CheckpointMeta::new(None, None);
        checkpoint::save_tensors(&path, &[("x".into(), x), ("y".into(), y)], &meta, false).unwrap();
    }
    lethe_engine::data::load_safetensors(&path).unwrap()
}

fn arch() -> ArchConfig {
    ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 64,
            hidden: vec![32],
        },
        head: HeadConfig::Classifier {
            num_classes: CLASSES,
        },
    }
}

fn recipe() -> TrainConfig {
    TrainConfig {
        epochs: 60,
        batch_size: 8,
        lr: 0.05,
        weight_decay: 0.0,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        schedule: Schedule::Cosine,
        seed: 0,
        drop_last: false,
        augment: None,
    }
}

/// Saves a fresh model as `name`, with the `lethe train` record of `recipe()`
/// (`trained`) or an `original_checkpoint` note instead.
fn checkpoint_file(dir: &Path, name: &str, trained: bool, original: Option<&Path>) -> PathBuf {
    checkpoint_file_pruned(dir, name, trained, original, None)
}

/// [`checkpoint_file`] whose `lethe train` record prunes by `prune`.
fn checkpoint_file_pruned(
    dir: &Path,
    name: &str,
    trained: bool,
    original: Option<&Path>,
    prune: Option<PruneRecipe>,
) -> PathBuf {
    tch::manual_seed(5);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _model = Model::new(&vs.root(), &arch()).unwrap();
    let mut meta = CheckpointMeta::new(Some(arch()), None);
    if trained {
        let job = TrainJob {
            data: dir.join("data.safetensors"),
            backbone: Backbone::SmallCnn,
            task: Task::Classifier,
            hidden: Vec::new(),
            train: recipe(),
            temperature: 0.5,
            prune,
            out: dir.join(name),
            overwrite: false,
        };
        meta.provenance
            .notes
            .insert("job".into(), serde_json::to_string(&job).unwrap());
    }
    if let Some(o) = original {
        meta.provenance
            .notes
            .insert("original_checkpoint".into(), o.display().to_string());
    }
    let path = dir.join(name);
    checkpoint::save(&path, &vs, &meta, false).unwrap();
    path
}

fn splits() -> SplitPositions {
    let forget: Vec<i64> = vec![3, 7, 8, 15, 22, 23, 27, 29];
    SplitPositions {
        retain: Some((0..30).filter(|i| !forget.contains(i)).collect()),
        forget: Some(forget),
        validation: None,
        test: Some((30..N).collect()),
    }
}

struct Run {
    out: PathBuf,
    result: Result<(), lethe_engine::plugin_host::PluginHostError>,
    events: Vec<ServiceEvent>,
}

impl Run {
    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.out.join(format!("{name}.json"))).unwrap())
            .unwrap()
    }

    fn tensor(&self, name: &str) -> Tensor {
        let ck = checkpoint::read(self.out.join(format!("{name}.safetensors"))).unwrap();
        ck.state_dict.get(name).unwrap().shallow_clone()
    }

    fn progress(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ServiceEvent::Progress { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

fn run(dir: &Path, ckpt: &Path, tag: &str, params: Value, settings: ShadowSettings) -> Run {
    run_stacked(dir, ckpt, tag, params, settings, None)
}

/// [`run`] with at most `stack` models trained at once (`None`: the default).
fn run_stacked(
    dir: &Path,
    ckpt: &Path,
    tag: &str,
    params: Value,
    settings: ShadowSettings,
    stack: Option<usize>,
) -> Run {
    let lib = plugin();
    let params = Value::Object(lib.validate_params(ID, &params).unwrap());
    let loaded = checkpoint::load_model(ckpt, Device::Cpu, &LoadOptions::default()).unwrap();
    let out = dir.join(tag);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let services = EngineServices::new(
        loaded,
        dataset(&dir.join("data")),
        splits(),
        &out,
        JobInfo {
            plugin_id: ID.into(),
            plugin_version: "0.1.0".into(),
            params: params.clone(),
            original_checkpoint: Some(ckpt.to_path_buf()),
        },
        1,
    )
    .unwrap()
    .with_shadows(settings);
    let services = match stack {
        Some(n) => services.with_shadow_stack(n),
        None => services,
    }
    .with_events(Arc::new(move |e| sink.lock().unwrap().push(e)));
    let mut inst = lib.create(ID, &params, Arc::new(services)).unwrap();
    let result = inst.run();
    drop(inst);
    let events = events.lock().unwrap().clone();
    Run {
        out,
        result,
        events,
    }
}

fn settings(cache: &Path) -> ShadowSettings {
    ShadowSettings {
        cache_dir: cache.to_path_buf(),
        estimate_only: false,
        ..ShadowSettings::default()
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let ckpt = checkpoint_file(dir.path(), "original.safetensors", true, None);
    let cache = dir.path().join("cache");
    (dir, ckpt, cache)
}

/// Mean softmax probability of the true class over the (model, sample) pairs
/// whose training flag is `inside`.
fn mean_true_probability(logits: &Tensor, members: &Tensor, labels: &[i64], inside: bool) -> f64 {
    let p = logits.softmax(-1, Kind::Double);
    let (k, n) = (members.size()[0], members.size()[1]);
    let (mut sum, mut count) = (0.0, 0);
    for m in 0..k {
        for i in 0..n {
            if (members.int64_value(&[m, i]) != 0) == inside {
                sum += p.double_value(&[m, i, labels[i as usize]]);
                count += 1;
            }
        }
    }
    sum / f64::from(count)
}

#[test]
fn shadow_models_train_on_their_halves_once_then_come_from_the_cache() {
    let (dir, ckpt, cache) = setup();
    let params = json!({"models": 4, "mode": "online"});
    // In stacks (the CPU's default is one after another; see stack_from_env).
    let first = run_stacked(
        dir.path(),
        &ckpt,
        "first",
        params.clone(),
        settings(&cache),
        Some(16),
    );
    first.result.as_ref().unwrap();
    let s = first.json("shadow_summary");
    assert_eq!(
        (
            s["models"].as_u64(),
            s["trained"].as_u64(),
            s["cached"].as_u64()
        ),
        (Some(4), Some(4), Some(0))
    );
    assert_eq!(s["pool"], 40);
    assert_eq!(s["targets"], 8);
    assert_eq!(s["recipe"]["train"]["epochs"], 60);
    assert_eq!(s["recipe"]["source"], json!(ckpt));
    assert_eq!(s["estimate"]["to_train"], 4);
    assert!(s["estimate"]["seconds_per_step"].as_f64().unwrap() > 0.0);
    // Online and balanced: every pool sample (all 40 here) is in the training
    // half of exactly 2 of the 4 models.
    for split in ["forget", "retain", "test"] {
        let m = first.tensor(&format!("members.{split}"));
        let per_sample = Vec::<i64>::try_from(m.to_kind(Kind::Int64).sum_dim_intlist(
            0,
            false,
            Kind::Int64,
        ))
        .unwrap();
        assert!(
            per_sample.iter().all(|&c| c == 2),
            "{split}: {per_sample:?}"
        );
    }
    let logits = first.tensor("logits.forget");
    assert_eq!(logits.size(), [4, 8, CLASSES]);
    // They were really trained on their halves: random images are learnt
    // only by heart, so the true class is far likelier where it was seen.
    let (lr, mr) = (
        first.tensor("logits.retain"),
        first.tensor("members.retain"),
    );
    let labels: Vec<i64> = splits()
        .retain
        .unwrap()
        .iter()
        .map(|i| i % CLASSES)
        .collect();
    let inside = mean_true_probability(&lr, &mr, &labels, true);
    let outside = mean_true_probability(&lr, &mr, &labels, false);
    assert!(inside > outside + 0.3, "IN {inside:.3} vs OUT {outside:.3}");
    assert!(
        first
            .progress()
            .iter()
            .any(|m| m.starts_with("shadow model 1/4"))
    );
    let key = s["key"].as_str().unwrap().to_string();
    let files = std::fs::read_dir(cache.join(&key[..32])).unwrap().count();
    assert_eq!(files, 5, "4 models and spec.json");

    // The small MLP's models trained in one stack (#25 item 3), and each ended
    // where it would have alone: one after another, in a cache of their own,
    // the same key and the same logits within float tolerance.
    assert!(
        first.progress().iter().any(|m| m.contains("a stack of 4")),
        "{:?}",
        first.progress()
    );
    let alone = run_stacked(
        dir.path(),
        &ckpt,
        "alone",
        params.clone(),
        settings(&dir.path().join("cache-alone")),
        Some(1),
    );
    alone.result.as_ref().unwrap();
    assert_eq!(alone.json("shadow_summary")["key"], s["key"]);
    assert!(!alone.progress().iter().any(|m| m.contains("a stack")));
    for split in ["forget", "retain", "test"] {
        let name = format!("logits.{split}");
        let (a, b) = (first.tensor(&name), alone.tensor(&name));
        let diff = (&a - &b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        assert!(
            diff <= 1e-3 * scale,
            "{split}: stacked vs alone differ by {diff}"
        );
    }

    // The same request again: nothing trains, the logits are the same bits.
    let second = run(dir.path(), &ckpt, "second", params, settings(&cache));
    second.result.as_ref().unwrap();
    let s2 = second.json("shadow_summary");
    assert_eq!(
        (s2["trained"].as_u64(), s2["cached"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(s2["key"], s["key"]);
    assert_eq!(s2["estimate"]["to_train"], 0);
    assert!(second.progress().is_empty(), "{:?}", second.progress());
    for split in ["forget", "retain", "test"] {
        let name = format!("logits.{split}");
        assert!(first.tensor(&name).equal(&second.tensor(&name)), "{split}");
    }

    // Another seed names other models.
    let third = run(
        dir.path(),
        &ckpt,
        "third",
        json!({"models": 4, "mode": "online", "seed": 1, "epochs": 2}),
        settings(&cache),
    );
    third.result.as_ref().unwrap();
    let s3 = third.json("shadow_summary");
    assert_eq!(s3["trained"], 4);
    assert_eq!(s3["recipe"]["train"]["epochs"], 2);
    assert_ne!(s3["key"], s["key"]);
}

/// Issue 18 item 10: the shadows of a sparse original (a `lethe train
/// --prune-ratio` record) are made as it was, dense then pruned by OMP and
/// retrained (as many retraining epochs as the attack's `epochs`), under a
/// cache key of their own; a dense recipe's key is unchanged.
#[test]
fn a_sparse_recipe_makes_pruned_and_retrained_shadows_under_their_own_key() {
    let (dir, dense, cache) = setup();
    let prune = PruneRecipe {
        ratio: 0.9,
        scope: PruneScope::Weights,
        rewind_epoch: 1,
        retrain_epochs: 60,
    };
    let sparse = checkpoint_file_pruned(dir.path(), "sparse.safetensors", true, None, Some(prune));
    let params = json!({"models": 2, "mode": "online", "epochs": 3});
    // The dense models one after another, so that their epoch lines compare
    // one for one; the sparse ones are never stacked (pruning is per model).
    let d = run_stacked(
        dir.path(),
        &dense,
        "dense",
        params.clone(),
        settings(&cache),
        Some(1),
    );
    let s = run(dir.path(), &sparse, "sparse", params, settings(&cache));
    d.result.as_ref().unwrap();
    s.result.as_ref().unwrap();
    let (ds, ss) = (d.json("shadow_summary"), s.json("shadow_summary"));
    assert_ne!(ds["key"], ss["key"]);
    assert_eq!(ss["trained"], 2);
    let spec = |key: &Value| -> Value {
        let key = key.as_str().unwrap();
        serde_json::from_slice(&std::fs::read(cache.join(&key[..32]).join("spec.json")).unwrap())
            .unwrap()
    };
    assert!(spec(&ds["key"]).get("prune").is_none());
    assert_eq!(spec(&ss["key"])["prune"]["ratio"], 0.9);
    // Each sparse shadow: 3 dense epochs, then 3 of retraining.
    let epochs = |r: &Run| {
        r.progress()
            .iter()
            .filter(|m| m.contains(": epoch "))
            .count()
    };
    assert_eq!(epochs(&d), 2 * 3);
    assert_eq!(epochs(&s), 2 * (3 + 3), "{:?}", s.progress());
}

#[test]
fn offline_shadows_never_see_a_target_and_the_recipe_of_an_unlearned_model_is_its_originals() {
    let (dir, original, cache) = setup();
    // An unlearned model records no recipe, only where it came from.
    let unlearned = checkpoint_file(dir.path(), "unlearned.safetensors", false, Some(&original));
    let r = run(
        dir.path(),
        &unlearned,
        "offline",
        json!({"models": 3, "mode": "offline", "targets": "forget+test3", "epochs": 5}),
        settings(&cache),
    );
    r.result.as_ref().unwrap();
    let s = r.json("shadow_summary");
    assert_eq!(s["recipe"]["source"], json!(original));
    assert_eq!(
        (s["pool"].as_u64(), s["targets"].as_u64()),
        (Some(29), Some(11))
    );
    let forget = r.tensor("members.forget");
    assert_eq!(forget.size(), [3, 8]);
    assert_eq!(forget.sum(Kind::Int64).int64_value(&[]), 0);
    let test = r.tensor("members.test");
    assert_eq!(test.narrow(1, 0, 3).sum(Kind::Int64).int64_value(&[]), 0);
    // The other samples are in a random half of the models each.
    let retain = r.tensor("members.retain").to_kind(Kind::Int64);
    let per_model = Vec::<i64>::try_from(retain.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    assert!(
        per_model.iter().all(|&c| (4..=18).contains(&c)),
        "{per_model:?}"
    );

    // A model that records neither a recipe nor an original is refused, saying why.
    let orphan = checkpoint_file(dir.path(), "orphan.safetensors", false, None);
    let r = run(dir.path(), &orphan, "orphan", json!({}), settings(&cache));
    let msg = r.result.unwrap_err().to_string();
    assert!(
        msg.contains("(unsupported)") && msg.contains("records no training recipe"),
        "{msg}"
    );
}

#[test]
fn an_estimate_run_trains_nothing_and_bad_requests_are_refused() {
    let (dir, ckpt, cache) = setup();
    let estimate_only = ShadowSettings {
        cache_dir: cache.clone(),
        estimate_only: true,
        ..ShadowSettings::default()
    };
    let params = json!({"models": 2, "mode": "online", "epochs": 3});
    let r = run(
        dir.path(),
        &ckpt,
        "estimate",
        params.clone(),
        estimate_only.clone(),
    );
    // The plugin stops as cancelled by the host, after the estimate is written.
    assert_eq!(
        r.result.as_ref().unwrap_err().status(),
        Some(LetheStatus::CANCELLED)
    );
    let e = r.json("shadow_estimate");
    assert_eq!(
        (
            e["models"].as_u64(),
            e["cached"].as_u64(),
            e["to_train"].as_u64()
        ),
        (Some(2), Some(0), Some(2))
    );
    assert_eq!(e["epochs"], 3);
    // 20 samples a model in batches of 8: 3 steps an epoch.
    assert_eq!(e["train_samples_per_model"], 20);
    assert_eq!(e["steps_per_model"], 9);
    assert!(e["seconds"].as_f64().unwrap() > 0.0);
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().count() == 0);
    assert!(!r.out.join("shadow_summary.json").exists());

    // After a real run the estimate finds them cached.
    run(dir.path(), &ckpt, "real", params.clone(), settings(&cache))
        .result
        .unwrap();
    let again = run(dir.path(), &ckpt, "estimate-again", params, estimate_only);
    assert!(again.result.is_err());
    let e = again.json("shadow_estimate");
    assert_eq!(
        (e["cached"].as_u64(), e["to_train"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(e["seconds"], 0.0);

    // Logits before prepare, and a position past the split, are refused.
    let r = run(
        dir.path(),
        &ckpt,
        "early",
        json!({"logits_first": true}),
        settings(&cache),
    );
    let msg = r.result.unwrap_err().to_string();
    assert!(
        msg.contains("(bad-state)") && msg.contains("call prepare first"),
        "{msg}"
    );
    let r = run(
        dir.path(),
        &ckpt,
        "bad",
        json!({"targets": "bad-position"}),
        settings(&cache),
    );
    let msg = r.result.unwrap_err().to_string();
    assert!(
        msg.contains("(invalid-argument)") && msg.contains("past the end of the test split"),
        "{msg}"
    );
}
