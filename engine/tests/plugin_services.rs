//! The real job services ([`EngineServices`]) behind a real compiled plugin
//! (plugins/test-fixture-services, built as a dev-dependency): gradient ascent on
//! the forget set updates the host model in place and raises the forget loss, the
//! saved checkpoint loads and matches, the original is untouched, loaders serve
//! exactly the split they were asked for, augmentation changes images, and a
//! missing head is a clear error.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::checkpoint::{self, CheckpointMeta, LoadOptions};
use lethe_engine::data::Dataset;
use lethe_engine::models::{ArchConfig, BackboneConfig, HeadConfig, Model};
use lethe_engine::plugin_host::PluginLibrary;
use lethe_engine::plugin_host::services::{
    ArtifactKind, DataSplit, EngineServices, Head, JobInfo, ServiceError, ServiceEvent,
    SplitPositions,
};
use lethe_plugin_api::abi::LetheStatus;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
fn fixture(name: &str) -> PathBuf {
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

fn plugin() -> Arc<PluginLibrary> {
    PluginLibrary::load(&fixture("lethe_test_fixture_services")).unwrap()
}

const N: i64 = 40;
const CLASSES: i64 = 3;

/// 40 random 1×8×8 images with 3 classes, written as a safetensors data file and
/// read back through the data loader (so stable indices are the real ones).
fn dataset(dir: &Path) -> Dataset {
    tch::manual_seed(11);
    let x = Tensor::randint(256, [N, 1, 8, 8], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
    let y = Tensor::arange(N, (Kind::Int64, Device::Cpu)).remainder(CLASSES);
    let path = dir.join("data.safetensors");
    let meta = CheckpointMeta::new(None, None);
    checkpoint::save_tensors(&path, &[("x".into(), x), ("y".into(), y)], &meta, false).unwrap();
    lethe_engine::data::load_safetensors(&path).unwrap()
}

fn mlp(head: HeadConfig) -> ArchConfig {
    ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 64,
            hidden: vec![16],
        },
        head,
    }
}

/// Saves a freshly initialised model of `arch` as the job's original checkpoint.
fn original(dir: &Path, arch: &ArchConfig) -> PathBuf {
    tch::manual_seed(5);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _model = Model::new(&vs.root(), arch).unwrap();
    let path = dir.join("original.safetensors");
    checkpoint::save(
        &path,
        &vs,
        &CheckpointMeta::new(Some(arch.clone()), None),
        false,
    )
    .unwrap();
    path
}

fn forget_rows() -> Vec<i64> {
    vec![3, 7, 8, 15, 22, 23, 27, 29]
}

fn splits() -> SplitPositions {
    let forget = forget_rows();
    let train: Vec<i64> = (0..30).collect();
    SplitPositions {
        retain: Some(
            train
                .iter()
                .copied()
                .filter(|i| !forget.contains(i))
                .collect(),
        ),
        forget: Some(forget),
        validation: None,
        test: Some((30..N).collect()),
    }
}

struct Job {
    _dir: tempfile::TempDir,
    original: PathBuf,
    out: PathBuf,
    services: Arc<EngineServices>,
    events: Arc<Mutex<Vec<ServiceEvent>>>,
}

fn job(arch: ArchConfig, plugin_id: &str, params: Value) -> Job {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let original = original(dir.path(), &arch);
    let loaded = checkpoint::load_model(&original, Device::Cpu, &LoadOptions::default()).unwrap();
    let out = dir.path().join("out");
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let services = EngineServices::new(
        loaded,
        data,
        splits(),
        &out,
        JobInfo {
            plugin_id: plugin_id.into(),
            plugin_version: "0.3.0".into(),
            params,
            original_checkpoint: Some(original.clone()),
        },
        42,
    )
    .unwrap()
    .with_events(Arc::new(move |e| sink.lock().unwrap().push(e)));
    Job {
        _dir: dir,
        original,
        out,
        services: Arc::new(services),
        events,
    }
}

/// Mean cross-entropy of the model on the forget rows, in eval mode.
fn forget_loss(services: &EngineServices) -> f64 {
    let id = services
        .open_loader(DataSplit::Forget, 1000, false, false)
        .unwrap();
    let batch = services.next_batch(id).unwrap().unwrap();
    assert!(services.close_loader(id));
    let logits = services.forward(Head::Classifier, &batch.inputs).unwrap();
    logits
        .cross_entropy_for_logits(&batch.labels)
        .double_value(&[])
}

fn weights(services: &EngineServices) -> Vec<(String, Tensor)> {
    services.with_var_store(|vs| {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(k, t)| (k, t.detach().copy()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    })
}

#[test]
fn gradient_ascent_plugin_updates_the_host_model_and_saves_it() {
    let id = "org.lethe.test.services.ascent";
    let lib = plugin();
    let params = Value::Object(
        lib.validate_params(id, &json!({"steps": 3, "lr": 0.5, "batch_size": 3}))
            .unwrap(),
    );
    let arch = mlp(HeadConfig::Classifier {
        num_classes: CLASSES,
    });
    let j = job(arch.clone(), id, params.clone());
    let original_bytes = std::fs::read(&j.original).unwrap();
    let before = weights(&j.services);
    let loss_before = forget_loss(&j.services);
    // A parameter handle taken now must see the plugin's in-place updates.
    let (name0, handle0) = j.services.parameter(0).unwrap();
    let handle0_before = handle0.detach().copy();

    let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
    inst.run().unwrap();
    drop(inst);

    // Weights changed in place: the VarStore's own tensors and an earlier handle.
    let after = weights(&j.services);
    assert_eq!(before.len(), after.len());
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        assert!(!a.equal(b), "{n} did not change");
    }
    assert_eq!(name0, "fc.bias");
    assert!(!handle0.detach().equal(&handle0_before));
    assert!(handle0.detach().equal(&after[0].1), "{}", after[0].0);
    assert!(!j.services.is_train(), "the plugin switched back to eval");
    assert_eq!(j.services.open_loaders(), 0, "every loader was closed");

    let loss_after = forget_loss(&j.services);
    assert!(
        loss_after > loss_before + 0.1,
        "forget loss {loss_before} -> {loss_after}"
    );

    // Artifacts: the JSON, the labels tensor and the model, in the output folder.
    let artifacts = j.services.artifacts();
    let kinds: Vec<(ArtifactKind, &str)> = artifacts
        .iter()
        .map(|a| (a.kind, a.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (ArtifactKind::Tensor, "forget_labels"),
            (ArtifactKind::Json, "summary"),
            (ArtifactKind::Model, "model"),
        ]
    );
    for a in &artifacts {
        assert!(a.path.starts_with(&j.out), "{}", a.path.display());
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(j.out.join("summary.json")).unwrap()).unwrap();
    // 8 forget rows in batches of 3: 3 batches a step, 3 steps.
    assert_eq!(summary["batches"], json!(9));
    assert_eq!(summary["forget"], json!(8));
    assert_eq!(summary["retain"], json!(22));
    assert_eq!(summary["validation"], Value::Null);
    assert_eq!(
        summary["params"],
        json!(["fc.bias", "fc.weight", "layers.0.bias", "layers.0.weight"])
    );
    // The labels the plugin saw, in loader order, are the forget rows' labels.
    let ck = checkpoint::read(j.out.join("forget_labels.safetensors")).unwrap();
    let got: Vec<i64> = Vec::try_from(ck.state_dict.get("forget_labels").unwrap()).unwrap();
    let want: Vec<i64> = forget_rows().iter().map(|i| i % CLASSES).collect();
    assert_eq!(got, want);

    // The saved checkpoint loads, matches the in-memory model and says where it
    // came from.
    let saved = checkpoint::load_model(
        j.out.join("model.safetensors"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(saved.arch, arch);
    let mut saved_vars: Vec<(String, Tensor)> = saved.vs.variables().into_iter().collect();
    saved_vars.sort_by(|a, b| a.0.cmp(&b.0));
    for ((n, a), (m, b)) in after.iter().zip(&saved_vars) {
        assert_eq!(n, m);
        assert!(a.equal(b), "{n} differs in the saved checkpoint");
    }
    let x = Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu));
    let host_out = j.services.forward(Head::Classifier, &x).unwrap();
    let saved_out = tch::no_grad(|| saved.model.forward_t(&x, false));
    assert!(host_out.allclose(&saved_out, 1e-6, 1e-6, false));
    let notes = &saved.meta.unwrap().provenance.notes;
    assert_eq!(notes["plugin_id"], id);
    assert_eq!(notes["plugin_version"], "0.3.0");
    assert_eq!(
        serde_json::from_str::<Value>(&notes["params"]).unwrap(),
        params
    );
    assert_eq!(
        notes["original_checkpoint"],
        j.original.display().to_string()
    );

    // The original file is byte for byte what it was.
    assert_eq!(std::fs::read(&j.original).unwrap(), original_bytes);

    // Progress went to the event sink, one report per step, with the artifacts.
    let events = j.events.lock().unwrap();
    let progress = events
        .iter()
        .filter(|e| matches!(e, ServiceEvent::Progress { .. }))
        .count();
    assert_eq!(progress, 3);
    let artifacts_sent = events
        .iter()
        .filter(|e| matches!(e, ServiceEvent::Artifact(_)))
        .count();
    assert_eq!(artifacts_sent, 3);
}

#[test]
fn loaders_serve_exactly_the_split_by_stable_index() {
    let arch = mlp(HeadConfig::Classifier {
        num_classes: CLASSES,
    });
    let j = job(arch, "t", json!({}));
    let s = &j.services;
    assert_eq!(s.len(DataSplit::Forget), Some(8));
    assert_eq!(s.len(DataSplit::Validation), None);

    let collect = |shuffle: bool| {
        let id = s.open_loader(DataSplit::Forget, 3, shuffle, false).unwrap();
        let mut indices = Vec::new();
        let mut sizes = Vec::new();
        while let Some(b) = s.next_batch(id).unwrap() {
            assert_eq!(b.inputs.kind(), Kind::Float);
            assert_eq!(b.inputs.size()[1..], [1, 8, 8]);
            assert_eq!(b.labels.kind(), Kind::Int64);
            let labels: Vec<i64> = Vec::try_from(&b.labels).unwrap();
            let want: Vec<i64> = b.indices.iter().map(|i| i % CLASSES).collect();
            assert_eq!(labels, want, "labels belong to the rows served");
            sizes.push(b.indices.len());
            indices.extend(b.indices);
        }
        assert!(s.next_batch(id).unwrap().is_none(), "stays exhausted");
        assert!(s.close_loader(id));
        (indices, sizes)
    };
    let (plain, sizes) = collect(false);
    assert_eq!(plain, forget_rows());
    assert_eq!(sizes, [3, 3, 2]);
    let (shuffled, _) = collect(true);
    assert_ne!(shuffled, plain, "shuffled order differs");
    let mut sorted = shuffled.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, forget_rows(), "shuffling keeps the same rows");

    // Same seed, same job: the same shuffled stream.
    let again = job(
        mlp(HeadConfig::Classifier {
            num_classes: CLASSES,
        }),
        "t",
        json!({}),
    );
    let id = again
        .services
        .open_loader(DataSplit::Forget, 3, false, false)
        .unwrap();
    again.services.close_loader(id);
    let id = again
        .services
        .open_loader(DataSplit::Forget, 100, true, false)
        .unwrap();
    let b = again.services.next_batch(id).unwrap().unwrap();
    assert_eq!(b.indices, shuffled);

    // Closed loaders, missing splits and zero batches are errors, not crashes.
    let err = s.next_batch(id).unwrap_err();
    assert!(matches!(err, ServiceError::InvalidArgument(_)), "{err}");
    let err = s
        .open_loader(DataSplit::Validation, 4, false, false)
        .unwrap_err();
    assert_eq!(err.to_string(), "the job has no validation split");
    assert!(s.open_loader(DataSplit::Test, 0, false, false).is_err());
}

#[test]
fn augmentation_on_request_changes_images_through_the_plugin() {
    let lib = plugin();
    let id = "org.lethe.test.services.probe";
    let arch = mlp(HeadConfig::Classifier {
        num_classes: CLASSES,
    });
    let read = |out: &Path, name: &str| {
        let ck = checkpoint::read(out.join(format!("{name}.safetensors"))).unwrap();
        ck.state_dict.get(name).unwrap().shallow_clone()
    };
    let mut inputs = Vec::new();
    for augment in [false, true] {
        let params = json!({"head": "classifier", "augment": augment});
        let j = job(arch.clone(), id, params.clone());
        let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
        inst.run().unwrap();
        drop(inst);
        let x = read(&j.out, "inputs");
        assert_eq!(x.size(), [8, 1, 8, 8]);
        assert_eq!(read(&j.out, "output").size(), [8, CLASSES]);
        inputs.push(x);
    }
    // Unaugmented inputs are the raw pixels scaled to [0, 1].
    let j = job(arch, id, json!({}));
    let id = j
        .services
        .open_loader(DataSplit::Forget, 100, false, false)
        .unwrap();
    let plain = j.services.next_batch(id).unwrap().unwrap().inputs;
    assert!(inputs[0].allclose(&plain, 1e-6, 1e-6, false));
    let max = inputs[0].max().double_value(&[]);
    assert!(max <= 1.0 && max > 0.9, "{max}");
    // Augmented ones are different images (random crops of the same rows).
    let diff = (&inputs[1] - &inputs[0])
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    assert!(diff > 0.01, "augmentation changed nothing ({diff})");
}

#[test]
fn logits_from_an_encoder_are_refused_with_a_clear_message() {
    let lib = plugin();
    let id = "org.lethe.test.services.probe";
    let arch = mlp(HeadConfig::LinearProjection { out_dim: 5 });
    let params = json!({"head": "classifier"});
    let j = job(arch.clone(), id, params.clone());
    let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
    let err = inst.run().unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.status(), Some(LetheStatus::ERROR), "{msg}");
    // The host's status and message reach the plugin, which passes them on.
    assert!(
        msg.contains("host call `model.forward` failed (unsupported): model.forward: the model (MLP (64 inputs, hidden layers of 16) + linear projection (5)) is an encoder without a classifier, so it has no logits"),
        "{msg}"
    );
    drop(inst);

    // The heads it does have work, through the plugin and from Rust.
    for (head, dim) in [("encoder", 16), ("projection", 5)] {
        let params = json!({"head": head});
        let j = job(arch.clone(), id, params.clone());
        let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
        inst.run().unwrap();
        drop(inst);
        let ck = checkpoint::read(j.out.join("output.safetensors")).unwrap();
        assert_eq!(ck.state_dict.get("output").unwrap().size(), [8, dim]);
    }
    // A classifier has no projection head.
    let c = job(
        mlp(HeadConfig::Classifier {
            num_classes: CLASSES,
        }),
        id,
        json!({}),
    );
    let x = Tensor::rand([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    let err = c.services.forward(Head::Projection, &x).unwrap_err();
    assert!(
        err.to_string().contains(
            "has no projection head; ask for the encoder features or the classifier logits"
        ),
        "{err}"
    );
    // A bare encoder has neither logits nor a projection: the message offers
    // only what it has; one with a projection head offers that too.
    let bare = job(mlp(HeadConfig::None), id, json!({}));
    let err = bare.services.forward(Head::Classifier, &x).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no logits; ask for the encoder features instead"),
        "{err}"
    );
    let err = logits_error_with_a_projection_head(&x);
    assert!(
        err.ends_with("no logits; ask for the encoder features or the projection instead"),
        "{err}"
    );
    // u8 pixels are refused with a hint rather than a libtorch dtype error.
    let err = c
        .services
        .forward(Head::Classifier, &x.to_kind(Kind::Uint8))
        .unwrap_err();
    assert!(err.to_string().contains("floating-point"), "{err}");
}

/// The error of asking an encoder with a projection head for logits.
fn logits_error_with_a_projection_head(x: &Tensor) -> String {
    let j = job(
        mlp(HeadConfig::LinearProjection { out_dim: 5 }),
        "t",
        json!({}),
    );
    j.services
        .forward(Head::Classifier, x)
        .unwrap_err()
        .to_string()
}

#[test]
fn results_never_overwrite_the_original_or_foreign_files() {
    let arch = mlp(HeadConfig::Classifier {
        num_classes: CLASSES,
    });
    let j = job(arch, "t", json!({}));
    let s = &j.services;
    // A file already in the output folder that this job did not write stays.
    std::fs::create_dir_all(&j.out).unwrap();
    std::fs::write(j.out.join("scores.json"), "old").unwrap();
    let err = s.put_json("scores", "{\"auc\": 0.5}").unwrap_err();
    assert!(err.to_string().contains("scores.json"), "{err}");
    assert_eq!(std::fs::read(j.out.join("scores.json")).unwrap(), b"old");
    // Writing the same result twice replaces the job's own file.
    s.put_json("auc", "{\"auc\": 0.5}").unwrap();
    s.put_json("auc", "{\"auc\": 0.75}").unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(j.out.join("auc.json")).unwrap()).unwrap();
    assert_eq!(v, json!({"auc": 0.75}));
    assert!(s.put_json("bad", "{not json").is_err());
    assert!(s.put_json("../escape", "{}").is_err());
    assert!(
        s.put_tensor(".hidden", &Tensor::zeros([1], (Kind::Float, Device::Cpu)))
            .is_err()
    );
    s.save_model().unwrap();
    s.save_model().unwrap();
    assert_eq!(s.artifacts().len(), 2);

    // An output folder holding the original checkpoint as model.safetensors is refused.
    let k = job(
        mlp(HeadConfig::Classifier {
            num_classes: CLASSES,
        }),
        "t",
        json!({}),
    );
    let dir = k.original.parent().unwrap().to_path_buf();
    let orig = dir.join("model.safetensors");
    std::fs::copy(&k.original, &orig).unwrap();
    let loaded = checkpoint::load_model(&orig, Device::Cpu, &LoadOptions::default()).unwrap();
    let services = EngineServices::new(
        loaded,
        lethe_engine::data::load_safetensors(&dir.join("data.safetensors")).unwrap(),
        splits(),
        &dir,
        JobInfo {
            original_checkpoint: Some(orig.clone()),
            ..JobInfo::default()
        },
        1,
    )
    .unwrap();
    let bytes = std::fs::read(&orig).unwrap();
    let err = services.save_model().unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to save over the original checkpoint"),
        "{err}"
    );
    assert_eq!(std::fs::read(&orig).unwrap(), bytes);
}

#[test]
fn the_cancel_flag_stops_the_plugin_before_it_saves() {
    let id = "org.lethe.test.services.ascent";
    let lib = plugin();
    let params = Value::Object(lib.validate_params(id, &json!({"steps": 5})).unwrap());
    let arch = mlp(HeadConfig::Classifier {
        num_classes: CLASSES,
    });
    let j = job(arch, id, params.clone());
    let before = weights(&j.services);
    j.services
        .cancel_flag()
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
    let err = inst.run().unwrap_err();
    assert_eq!(err.status(), Some(LetheStatus::CANCELLED), "{err}");
    drop(inst);
    // It stopped before the first step: nothing changed, nothing written.
    for ((n, a), (_, b)) in before.iter().zip(&weights(&j.services)) {
        assert!(a.equal(b), "{n} changed");
    }
    assert!(j.services.artifacts().is_empty());
    assert!(!j.out.join("model.safetensors").exists());
}

#[test]
fn the_abi_1_1_extensions_give_views_and_a_fresh_model_in_place() {
    let lib = plugin();
    let id = "org.lethe.test.services.fresh";
    // ResNet-18 has BatchNorm buffers, which a reset must restore too.
    let arch = ArchConfig::resnet18_classifier(1, CLASSES);
    let params = Value::Object(lib.validate_params(id, &json!({"seed": 3})).unwrap());
    let j = job(arch.clone(), id, params.clone());
    j.services.with_var_store(|vs| {
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with("running_mean") {
                    let _ = t.fill_(5.0);
                }
            }
        })
    });
    let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
    inst.run().unwrap();
    drop(inst);

    let read = |name: &str| {
        let ck = checkpoint::read(j.out.join(format!("{name}.safetensors"))).unwrap();
        ck.state_dict.get(name).unwrap().shallow_clone()
    };
    let (v0, v1) = (read("view0"), read("view1"));
    assert_eq!(v0.size(), [8, 1, 8, 8]);
    assert_eq!(v1.size(), [8, 1, 8, 8]);
    let diff = (&v0 - &v1).abs().mean(Kind::Float).double_value(&[]);
    assert!(diff > 0.01, "two views of one batch are the same ({diff})");
    // This checkpoint records no training job, so the recipe is empty.
    let recipe: Value =
        serde_json::from_slice(&std::fs::read(j.out.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(recipe, json!({}));

    // The model is now exactly a fresh ResNet-18 drawn from seed 3, buffers too.
    tch::manual_seed(3);
    let fresh = tch::nn::VarStore::new(Device::Cpu);
    let _m = Model::new(&fresh.root(), &arch).unwrap();
    let want = fresh.variables();
    let got = weights(&j.services);
    assert_eq!(got.len(), want.len());
    for (name, t) in &got {
        assert!(t.equal(&want[name]), "{name} is not the fresh value");
    }
    assert!(got.iter().any(|(n, _)| n.ends_with("running_mean")));
    // The parameter handle the plugin took before the reset saw the new values.
    let (first, _) = j.services.parameter(0).unwrap();
    let after = read(&format!("after.{first}"));
    assert!(after.equal(&want[&first]), "{first}");
}

#[test]
fn the_training_recipe_and_augmentation_follow_the_demo_checkpoints() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo");
    let services = |file: &str, dir: &Path| {
        let dir = &dir.join(file);
        std::fs::create_dir(dir).unwrap();
        let loaded =
            checkpoint::load_model(demo.join(file), Device::Cpu, &LoadOptions::default()).unwrap();
        EngineServices::new(
            loaded,
            dataset(dir),
            splits(),
            dir.join("out"),
            JobInfo::default(),
            1,
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    // The demo classifier was trained with `--epochs 30 --batch-size 64 --lr 0.05
    // --weight-decay 0` (resources/demo/README.md); the recipe says so.
    let classifier = services("classifier.safetensors", dir.path());
    let recipe = classifier.training_recipe();
    assert_eq!(recipe["task"], "classifier");
    assert_eq!(recipe["epochs"], 30);
    assert_eq!(recipe["batch_size"], 64);
    assert_eq!(recipe["lr"], 0.05);
    assert_eq!(recipe["weight_decay"], 0.0);
    assert!(recipe.get("out").is_none() && recipe.get("data").is_none());
    let encoder = services("encoder.safetensors", dir.path());
    let recipe = encoder.training_recipe();
    assert_eq!(recipe["task"], "simclr");
    assert_eq!(recipe["temperature"], 0.5);

    // Served rows are recorded per split.
    let id = encoder
        .open_loader(DataSplit::Forget, 3, false, false)
        .unwrap();
    let _ = encoder.next_batch(id).unwrap().unwrap();
    assert_eq!(encoder.served_rows(DataSplit::Forget), forget_rows()[..3]);
    assert!(encoder.served_rows(DataSplit::Retain).is_empty());

    // The encoder's recorded recipe is the contrastive one (crop down to 10 %),
    // much stronger than the light digits crop (70–100 %). A smooth ramp shows
    // it (on noise every resample looks equally different).
    let ramp = Tensor::arange(8, (Kind::Float, Device::Cpu)) / 14.0;
    let x = (ramp.view([1, 1, 8, 1]) + ramp.view([1, 1, 1, 8])).repeat([4, 1, 1, 1]);
    use lethe_engine::plugin_host::services::AugmentRecipe;
    let change = |recipe: AugmentRecipe| {
        let mut total = 0.0;
        for _ in 0..20 {
            let y = encoder.augment(&x, recipe).unwrap();
            assert_eq!(y.size(), x.size());
            total += (&y - &x).abs().mean(Kind::Float).double_value(&[]);
        }
        total / 20.0
    };
    let (training, light) = (
        change(AugmentRecipe::Training),
        change(AugmentRecipe::Light),
    );
    assert!(
        training > 1.5 * light,
        "training {training} vs light {light}"
    );
    assert!(
        encoder
            .augment(&x.to_kind(Kind::Uint8), AugmentRecipe::Light)
            .is_err()
    );
}

/// Gradients of an eval-mode forward taken through the ABI on a BatchNorm
/// model (as Fisher, influence and SalUn take them) equal PyTorch's through
/// `model.eval()`, differ from its train-mode ones, leave the running
/// statistics alone, and a forward under the plugin's `no_grad` records none.
#[test]
fn an_eval_mode_forward_through_the_abi_has_pytorchs_eval_mode_gradient() {
    let lib = plugin();
    let id = "org.lethe.test.services.eval-grad";
    let arch = ArchConfig::resnet18_classifier(1, CLASSES);
    let params = Value::Object(lib.validate_params(id, &json!({})).unwrap());
    let j = job(arch, id, params.clone());
    // Non-trivial running statistics, so eval and train mode really differ.
    tch::manual_seed(17);
    j.services.with_var_store(|vs| {
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with("running_mean") {
                    t.copy_(&(t.randn_like() * 0.3));
                } else if name.ends_with("running_var") {
                    t.copy_(&(t.rand_like() * 1.5 + 0.5));
                }
            }
        })
    });
    let before = weights(&j.services);
    let dir = j.out.parent().unwrap().to_path_buf();
    let model_file = dir.join("bn_model.safetensors");
    j.services.with_var_store(|vs| {
        checkpoint::save(&model_file, vs, &CheckpointMeta::new(None, None), false).unwrap()
    });
    let loader = j
        .services
        .open_loader(DataSplit::Forget, 4096, false, false)
        .unwrap();
    let batch = j.services.next_batch(loader).unwrap().unwrap();
    assert!(j.services.close_loader(loader));
    let batch_file = dir.join("batch.safetensors");
    checkpoint::save_tensors(
        &batch_file,
        &[
            ("x".into(), batch.inputs.shallow_clone()),
            ("y".into(), batch.labels.shallow_clone()),
        ],
        &CheckpointMeta::new(None, None),
        false,
    )
    .unwrap();

    let mut inst = lib.create(id, &params, j.services.clone()).unwrap();
    inst.run().unwrap();
    drop(inst);

    let summary: Value =
        serde_json::from_slice(&std::fs::read(j.out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["graph"],
        json!(true),
        "eval-mode forward gave no graph"
    );
    assert_eq!(
        summary["no_grad_graph"],
        json!(false),
        "no_grad was ignored"
    );
    // Eval mode: the running statistics did not move.
    for ((n, a), (_, b)) in before.iter().zip(&weights(&j.services)) {
        if n.contains("running") {
            assert!(a.equal(b), "{n} moved in eval mode");
        }
    }

    let reference = dir.join("reference.safetensors");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval_mode_grad.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&model_file)
        .arg(&batch_file)
        .arg(&reference)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run installer/setup.sh",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = checkpoint::read(&reference).unwrap().state_dict;
    let read = |name: &str| {
        checkpoint::read(j.out.join(format!("{name}.safetensors")))
            .unwrap()
            .state_dict
            .get(name)
            .unwrap()
            .shallow_clone()
    };
    let rel = |a: &Tensor, b: &Tensor| {
        let scale = b.abs().max().double_value(&[]).max(1e-12);
        (a - b).abs().max().double_value(&[]) / scale
    };
    let loss = read("loss").reshape([1]);
    assert!(rel(&loss, reference.get("eval.loss").unwrap()) < 1e-5);
    let (mut compared, mut worst, mut train_gap) = (0, 0.0f64, 0.0f64);
    for (name, _) in before.iter().filter(|(n, _)| !n.contains("running")) {
        let got = read(&format!("grad.{name}"));
        let want = reference.get(&format!("eval.{name}")).unwrap();
        worst = worst.max(rel(&got, want));
        train_gap = train_gap.max(rel(&got, reference.get(&format!("train.{name}")).unwrap()));
        compared += 1;
    }
    eprintln!(
        "{compared} gradients: worst relative error {worst:.2e}, vs train mode {train_gap:.2}"
    );
    assert!(compared > 60, "{compared}");
    assert!(
        worst < 1e-4,
        "eval-mode gradient differs from PyTorch: {worst}"
    );
    assert!(
        train_gap > 0.1,
        "train-mode gradients are no different: {train_gap}"
    );
}
