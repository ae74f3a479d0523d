//! PyTorch interoperability: checkpoints written by Python torch (by
//! `fixtures/make_torch_checkpoints.py`, run here with the project's venv)
//! must load and reproduce PyTorch's eval-mode outputs to 1e-4 relative error.

// Helpers outside #[test] fns are test code too; clippy.toml's test exemption does not reach them.
#![allow(clippy::unwrap_used)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lethe_engine::checkpoint::{
    self, CheckpointError, CheckpointFormat, CheckpointMeta, LoadOptions,
};
use lethe_engine::models::{ArchConfig, BackboneConfig, HeadConfig};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// Generates the fixtures once per script version. They go to a temporary
/// directory first and are renamed into place, so concurrent test runs never
/// see a half-written directory.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = manifest.join("tests/fixtures/make_torch_checkpoints.py");
        let mut h = DefaultHasher::new();
        std::fs::read(&script).unwrap().hash(&mut h);
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("torch_ckpt_{:016x}", h.finish()));
        if dir.join("expected.safetensors").exists() {
            return dir;
        }
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        let python = manifest.join("../.venv/bin/python");
        let out = Command::new(&python)
            .arg(&script)
            .arg(&tmp)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run installer/setup.sh",
                    python.display()
                )
            });
        assert!(
            out.status.success(),
            "fixture script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Fixtures of older script versions are dead weight (tens of MB each).
        for old in std::fs::read_dir(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .flatten()
        {
            let name = old.file_name().to_string_lossy().into_owned();
            if name.starts_with("torch_ckpt_") && !name.contains(".tmp") && old.path() != dir {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another run won the race; its directory is complete.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn expected(case: &str) -> (Tensor, Tensor) {
    let all = Tensor::read_safetensors(fixture("expected.safetensors")).unwrap();
    let get = |k: String| {
        all.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, t)| t.shallow_clone())
            .unwrap()
    };
    (get(format!("{case}.input")), get(format!("{case}.output")))
}

fn assert_close(got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size());
    let err = (got - want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]).max(1e-6);
    assert!(
        err / scale <= 1e-4,
        "relative error {} (abs {err}, scale {scale})",
        err / scale
    );
}

fn run(case: &str, file: &str, opts: &LoadOptions) -> checkpoint::LoadedModel {
    let loaded = checkpoint::load_model(fixture(file), Device::Cpu, opts).unwrap();
    let (x, y) = expected(case);
    let out = tch::no_grad(|| loaded.model.forward_t(&x, false));
    assert_close(&out, &y);
    loaded
}

#[test]
fn resnet18_state_dict_matches_pytorch() {
    let m = run(
        "resnet18_plain",
        "resnet18_plain.pt",
        &LoadOptions::default(),
    );
    assert_eq!(m.arch, ArchConfig::resnet18_classifier(3, 10));
    assert_eq!(m.format, CheckpointFormat::TorchSave);
}

#[test]
fn nested_state_dict_with_module_prefix_matches_pytorch() {
    let m = run(
        "simclr_nested",
        "simclr_nested.pth",
        &LoadOptions::default(),
    );
    assert_eq!(
        m.arch,
        ArchConfig {
            backbone: BackboneConfig::ResNet18 {
                in_channels: 1,
                widths: [16, 32, 64, 128],
                stem_relu: true
            },
            head: HeadConfig::MlpProjection {
                hidden_dim: 64,
                out_dim: 32
            },
        }
    );
}

#[test]
fn stem_without_relu_is_accepted_when_stated() {
    let opts = LoadOptions {
        stem_relu: Some(false),
        ..Default::default()
    };
    let m = run("moco_norelu", "moco_norelu.pt", &opts);
    assert_eq!(m.arch.head, HeadConfig::LinearProjection { out_dim: 32 });
    // The same weights with the standard stem give different outputs, so the
    // flag really changes the network.
    let std = checkpoint::load_model(
        fixture("moco_norelu.pt"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let (x, y) = expected("moco_norelu");
    let out = tch::no_grad(|| std.model.forward_t(&x, false));
    let err = (out - &y).abs().max().double_value(&[]);
    assert!(err > 1e-3, "stem ReLU made no difference ({err})");
}

#[test]
fn small_cnn_with_module_prefix_matches_pytorch() {
    let m = run("cnn_module", "cnn_module.pth", &LoadOptions::default());
    assert_eq!(
        m.arch,
        ArchConfig {
            backbone: BackboneConfig::small_cnn(1),
            head: HeadConfig::Classifier { num_classes: 10 }
        }
    );
}

#[test]
fn float64_mlp_loads_into_float32_model() {
    let m = run("mlp_double", "mlp_double.pt", &LoadOptions::default());
    assert_eq!(
        m.arch.backbone,
        BackboneConfig::Mlp {
            input_dim: 50,
            hidden: vec![32, 16]
        }
    );
    assert_eq!(m.vs.variables()["fc.weight"].kind(), Kind::Float);
}

#[test]
fn torchscript_module_matches_pytorch() {
    let path = fixture("cnn_script.pt");
    let (x, y) = expected("cnn_script");
    let module = checkpoint::load_torchscript(&path, Device::Cpu).unwrap();
    let out = tch::no_grad(|| module.forward_ts(&[&x])).unwrap();
    assert_close(&out, &y);
    // Its pickled weights are readable too, so it can become a built-in model.
    let m = run("cnn_script", "cnn_script.pt", &LoadOptions::default());
    assert_eq!(m.format, CheckpointFormat::TorchScript);
    assert_eq!(m.arch.head, HeadConfig::Classifier { num_classes: 5 });
}

#[test]
fn torchscript_module_trains_through_a_var_store() {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut module =
        checkpoint::load_trainable_torchscript(fixture("cnn_script.pt"), vs.root()).unwrap();
    module.set_train();
    assert_eq!(vs.trainable_variables().len(), 8);
    let (x, _) = expected("cnn_script");
    let target = Tensor::from_slice(&[1i64, 3]);
    let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Sgd::default(), &vs, 0.01).unwrap();
    let loss = |m: &tch::TrainableCModule| {
        m.forward_ts(&[&x])
            .unwrap()
            .cross_entropy_for_logits(&target)
    };
    let before = loss(&module).double_value(&[]);
    for _ in 0..5 {
        let l = loss(&module);
        opt.backward_step(&l);
    }
    let after = loss(&module).double_value(&[]);
    assert!(after < before, "loss did not decrease: {before} -> {after}");
    // A torch.save file is not a TorchScript module and is rejected clearly.
    let e = checkpoint::load_torchscript(fixture("resnet18_plain.pt"), Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("resnet18_plain.pt") && e.to_string().contains("TorchScript"),
        "{e}"
    );
}

#[test]
fn wrong_num_classes_names_the_keys_and_shapes() {
    let opts = LoadOptions {
        arch: Some(ArchConfig::resnet18_classifier(3, 100)),
        ..Default::default()
    };
    let e = checkpoint::load_model(fixture("resnet18_plain.pt"), Device::Cpu, &opts).unwrap_err();
    let msg = e.to_string();
    let CheckpointError::Mismatch { details, path, .. } = e else {
        panic!("not a mismatch: {msg}")
    };
    assert!(path.ends_with("resnet18_plain.pt"));
    assert!(
        details.missing.is_empty() && details.unexpected.is_empty(),
        "{msg}"
    );
    let names: Vec<&str> = details.shapes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fc.bias", "fc.weight"]);
    assert!(msg.contains("resnet18_plain.pt"), "{msg}");
    assert!(
        msg.contains("fc.weight expected [100, 512] found [10, 512]"),
        "{msg}"
    );
}

#[test]
fn wrong_architecture_lists_missing_and_unexpected_keys() {
    let mlp = ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 784,
            hidden: vec![128],
        },
        head: HeadConfig::Classifier { num_classes: 10 },
    };
    let opts = LoadOptions {
        arch: Some(mlp),
        ..Default::default()
    };
    let e = checkpoint::load_model(fixture("cnn_module.pth"), Device::Cpu, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("missing keys (2): layers.0.bias, layers.0.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("unexpected keys (6): conv1.weight, conv1.bias"),
        "{msg}"
    );
    assert!(msg.contains("cnn_module.pth"), "{msg}");
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ckpt_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn truncated_and_damaged_files_fail_naming_the_file() {
    let dir = scratch("damaged");
    let original = std::fs::read(fixture("cnn_module.pth")).unwrap();
    let check = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = checkpoint::read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{name}: {e}");
        assert!(e.to_string().contains(name), "{e}");
        e
    };
    check("half.pth", &original[..original.len() / 2]);
    check("empty.pth", &[]);
    // Flip a byte inside the first (largest) storage: the zip CRC catches it.
    let mut flipped = original.clone();
    let at = original.len() / 3;
    flipped[at] ^= 0xff;
    let e = check("flipped.pth", &flipped);
    assert!(
        e.to_string().to_lowercase().contains("checksum") || e.to_string().contains("data/"),
        "{e}"
    );

    // Our own format, cut short.
    let m = checkpoint::load_model(
        fixture("mlp_double.pt"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let st = dir.join("mlp.safetensors");
    checkpoint::save(
        &st,
        &m.vs,
        &CheckpointMeta::new(Some(m.arch.clone()), None),
        false,
    )
    .unwrap();
    let bytes = std::fs::read(&st).unwrap();
    check("short.safetensors", &bytes[..bytes.len() - 10]);

    let p = dir.join("notes.txt");
    std::fs::write(&p, b"these are not weights at all").unwrap();
    let e = checkpoint::read(&p).unwrap_err();
    assert!(
        matches!(e, CheckpointError::UnknownFormat { .. }) && e.to_string().contains("notes.txt"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn converted_checkpoint_keeps_outputs_architecture_and_hashes() {
    let dir = scratch("convert");
    let opts = LoadOptions {
        stem_relu: Some(false),
        ..Default::default()
    };
    let m = checkpoint::load_model(fixture("moco_norelu.pt"), Device::Cpu, &opts).unwrap();
    let out = dir.join("moco.safetensors");
    let meta = CheckpointMeta::new(Some(m.arch.clone()), Some("moco_norelu.pt".into()));
    checkpoint::save(&out, &m.vs, &meta, false).unwrap();

    // The stem flag travels in the metadata: no option needed now.
    let again = checkpoint::load_model(&out, Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(again.arch, m.arch);
    assert_eq!(
        again
            .meta
            .as_ref()
            .and_then(|m| m.provenance.source.as_deref()),
        Some("moco_norelu.pt")
    );
    let (x, y) = expected("moco_norelu");
    assert_close(&tch::no_grad(|| again.model.forward_t(&x, false)), &y);

    // Same values, same per-tensor hash, whatever the container.
    let a = checkpoint::inspect_with(fixture("moco_norelu.pt"), true).unwrap();
    let b = checkpoint::inspect_with(&out, true).unwrap();
    let hash = |s: &checkpoint::CheckpointSummary, n: &str| {
        s.tensors
            .iter()
            .find(|t| t.name == n)
            .and_then(|t| t.sha256.clone())
            .unwrap()
    };
    assert_eq!(
        hash(&a, "layer3.0.downsample.0.weight"),
        hash(&b, "layer3.0.downsample.0.weight")
    );
    assert_ne!(
        hash(&a, "layer3.0.conv1.weight"),
        hash(&a, "layer3.0.conv2.weight")
    );
    assert_eq!(b.architecture_note, "from metadata");
    assert_eq!(a.parameter_count, b.parameter_count);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_reports_format_architecture_counts_and_file_hash() {
    let hashes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("sha256.json")).unwrap()).unwrap();
    let s = checkpoint::inspect(fixture("resnet18_plain.pt")).unwrap();
    assert_eq!(s.format, CheckpointFormat::TorchSave);
    assert_eq!(s.sha256, hashes["resnet18_plain.pt"].as_str().unwrap());
    assert_eq!(s.architecture, Some(ArchConfig::resnet18_classifier(3, 10)));
    // 20 conv/linear weights + fc bias + 20 BatchNorms × 5 tensors (incl. num_batches_tracked)
    assert_eq!(s.tensor_count, 122);
    // The well-known size of CIFAR ResNet-18 with 10 classes.
    assert_eq!(s.parameter_count, 11_173_962);
    let text = s.to_string();
    assert!(
        text.contains("ResNet-18 (3 channels, widths 64, 128, 256, 512)")
            && text.contains("11173962")
            && text.contains(&s.sha256),
        "{text}"
    );

    let t = checkpoint::inspect(fixture("cnn_script.pt")).unwrap();
    assert_eq!(t.format, CheckpointFormat::TorchScript);
    assert_eq!(t.sha256, hashes["cnn_script.pt"].as_str().unwrap());
    assert_eq!(t.tensor_count, 8);
}

#[test]
fn views_dtypes_and_protocol_4_read_exactly() {
    let ckpt = checkpoint::read(fixture("tensors_protocol4.pt")).unwrap();
    let all = Tensor::read_safetensors(fixture("expected.safetensors")).unwrap();
    let mut seen = 0;
    for (name, want) in all.iter().filter(|(n, _)| n.starts_with("odd.")) {
        let key = &name["odd.".len()..];
        let got = ckpt
            .state_dict
            .get(key)
            .unwrap_or_else(|| panic!("missing {key}"));
        assert_eq!(
            (got.kind(), got.size()),
            (want.kind(), want.size()),
            "{key}"
        );
        assert!(got.equal(want), "{key}: {got} vs {want}");
        seen += 1;
    }
    assert_eq!(seen, 10);
    assert_eq!(
        ckpt.state_dict.get("long").unwrap().int64_value(&[2]),
        3_000_000_000
    );
}

#[test]
fn pickled_modules_and_legacy_files_are_refused_clearly() {
    let e = checkpoint::read(fixture("whole_module.pt")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("whole_module.pt")
            && msg.contains("__main__.SmallCnn")
            && msg.contains("state_dict()"),
        "{msg}"
    );
    let e = checkpoint::read(fixture("legacy.pt")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("legacy.pt") && msg.contains("legacy"), "{msg}");
}

#[test]
fn prefix_selects_one_encoder_of_a_moco_checkpoint() {
    let opts = LoadOptions {
        stem_relu: Some(false),
        prefix: Some("encoder_q.".into()),
        ..Default::default()
    };
    let m = run("moco_norelu", "moco_wrapped.pth.tar", &opts);
    assert_eq!(m.arch.head, HeadConfig::LinearProjection { out_dim: 32 });
    // Without the prefix the two encoders and the queue fit no architecture.
    let e = checkpoint::load_model(
        fixture("moco_wrapped.pth.tar"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, CheckpointError::UnknownArchitecture { .. }),
        "{e}"
    );
    let bad = LoadOptions {
        prefix: Some("encoder_z.".into()),
        ..Default::default()
    };
    let e = checkpoint::load_model(fixture("moco_wrapped.pth.tar"), Device::Cpu, &bad).unwrap_err();
    assert!(e.to_string().contains("encoder_z."), "{e}");
}

#[test]
fn pytorch_cifar_names_are_mapped_to_torchvision() {
    let m = run("kuangliu", "kuangliu.pth", &LoadOptions::default());
    assert_eq!(m.arch.head, HeadConfig::Classifier { num_classes: 10 });
    assert!(
        m.vs.variables()
            .contains_key("layer2.0.downsample.0.weight")
    );
}
