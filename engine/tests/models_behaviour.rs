//! Built-in architectures: shapes, torchvision names, train/eval behaviour,
//! MoCo building blocks, config round-trips and safe saving.

// Helpers outside #[test] fns are test code too; clippy.toml's test exemption does not reach them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lethe_engine::checkpoint::{self, CheckpointError, CheckpointMeta, LoadOptions};
use lethe_engine::models::{
    ArchConfig, BackboneConfig, Classifier, HeadConfig, KeyQueue, Model, ModelError,
    MomentumEncoder,
};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn build(arch: &ArchConfig) -> (nn::VarStore, Model) {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Model::new(&vs.root(), arch).unwrap();
    (vs, m)
}

fn param_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[test]
fn resnet18_has_torchvision_names_and_cifar_sizes() {
    tch::manual_seed(0);
    let (vs, m) = build(&ArchConfig::resnet18_classifier(3, 10));
    let vars = vs.variables();
    for k in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer4.1.bn2.bias",
        "fc.weight",
    ] {
        assert!(vars.contains_key(k), "missing {k}");
    }
    assert!(
        !vars.contains_key("layer1.0.downsample.0.weight"),
        "layer1 keeps resolution and width"
    );
    assert_eq!(vars["conv1.weight"].size(), [64, 3, 3, 3]);
    assert_eq!(param_count(&vs), 11_173_962);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(m.forward_t(&x, false).size(), [2, 10]);
    assert_eq!(m.features(&x, false).size(), [2, 512]);
}

#[test]
fn any_channel_count_and_small_inputs_work() {
    tch::manual_seed(0);
    let arch = ArchConfig {
        backbone: BackboneConfig::ResNet18 {
            in_channels: 5,
            widths: [4, 8, 8, 16],
            stem_relu: true,
        },
        head: HeadConfig::None,
    };
    let (_, m) = build(&arch);
    let x = Tensor::randn([3, 5, 8, 8], (Kind::Float, Device::Cpu));
    assert_eq!(m.forward_t(&x, true).size(), [3, 16]);

    let (_, cnn) = build(&ArchConfig {
        backbone: BackboneConfig::small_cnn(1),
        head: HeadConfig::Classifier { num_classes: 7 },
    });
    assert_eq!(
        cnn.forward_t(
            &Tensor::zeros([4, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false
        )
        .size(),
        [4, 7]
    );

    let mlp = ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 3 * 4 * 4,
            hidden: vec![20, 10],
        },
        head: HeadConfig::MlpProjection {
            hidden_dim: 6,
            out_dim: 2,
        },
    };
    let (vs, m) = build(&mlp);
    assert!(vs.variables().contains_key("head.2.weight"));
    assert_eq!(
        m.forward_t(
            &Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
            false
        )
        .size(),
        [2, 2]
    );
    assert_eq!(
        m.features(
            &Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
            false
        )
        .size(),
        [2, 10]
    );
}

#[test]
fn invalid_configs_are_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bad_side = ArchConfig {
        backbone: BackboneConfig::SmallCnn {
            in_channels: 1,
            input_size: 30,
            channels: [4, 4],
            feature_dim: 8,
        },
        head: HeadConfig::None,
    };
    assert!(
        matches!(Model::new(&vs.root(), &bad_side), Err(ModelError::InvalidConfig(m)) if m.contains("30"))
    );
    let empty = ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 4,
            hidden: vec![],
        },
        head: HeadConfig::None,
    };
    assert!(Model::new(&vs.root(), &empty).is_err());
    let zero = ArchConfig::resnet18_classifier(3, 0);
    assert!(Model::new(&vs.root(), &zero).is_err());
}

#[test]
fn batchnorm_follows_train_and_eval_mode() {
    tch::manual_seed(1);
    let arch = ArchConfig {
        backbone: BackboneConfig::ResNet18 {
            in_channels: 3,
            widths: [4, 4, 8, 8],
            stem_relu: true,
        },
        head: HeadConfig::Classifier { num_classes: 3 },
    };
    let (vs, m) = build(&arch);
    let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu)) * 3.0 + 2.0;
    let rm = || vs.variables()["bn1.running_mean"].copy();
    let before = rm();
    let eval1 = tch::no_grad(|| m.forward_t(&x, false));
    assert!(
        rm().equal(&before),
        "eval mode must not touch running stats"
    );
    let train = tch::no_grad(|| m.forward_t(&x, true));
    assert!(!rm().equal(&before), "train mode must update running stats");
    assert!(
        !train.allclose(&eval1, 1e-4, 1e-4, false),
        "train mode uses batch statistics"
    );
    let eval2 = tch::no_grad(|| m.forward_t(&x, false));
    assert!(
        !eval2.allclose(&eval1, 1e-6, 1e-6, false),
        "eval mode uses the updated running stats"
    );
    assert!(eval2.allclose(&tch::no_grad(|| m.forward_t(&x, false)), 0.0, 0.0, false));
}

#[test]
fn classifier_over_a_frozen_encoder_trains_only_its_head() {
    tch::manual_seed(2);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let enc = Model::new(&vs.root(), &ArchConfig::resnet18_moco(1)).unwrap();
    let Model::Encoder(enc) = enc else {
        panic!("expected an encoder")
    };
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert_eq!(enc.forward_t(&x, false).size(), [2, 128]);
    vs.freeze();
    let probe_vs = nn::VarStore::new(Device::Cpu);
    let clf = Classifier::with_backbone(&probe_vs.root(), enc.backbone, 4);
    assert_eq!(clf.forward_t(&x, false).size(), [2, 4]);
    assert_eq!(probe_vs.trainable_variables().len(), 2);
    let conv = vs.variables()["conv1.weight"].copy();
    let mut opt = nn::Sgd::default().build(&probe_vs, 0.1).unwrap();
    let loss = clf
        .forward_t(&x, false)
        .cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 3]));
    opt.backward_step(&loss);
    assert!(vs.variables()["conv1.weight"].equal(&conv));
}

#[test]
fn momentum_encoder_is_an_ema_of_the_online_weights() {
    tch::manual_seed(3);
    let arch = ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim: 6,
            hidden: vec![5],
        },
        head: HeadConfig::LinearProjection { out_dim: 3 },
    };
    let (online, m) = build(&arch);
    let mut key = MomentumEncoder::new(&online, &arch, 0.9).unwrap();
    let x = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
    let q = tch::no_grad(|| m.forward_t(&x, false));
    assert!(
        key.keys(&x, false).allclose(&q, 1e-6, 1e-6, false),
        "starts as a copy"
    );
    let frozen = key
        .var_store()
        .variables()
        .values()
        .all(|t| !t.requires_grad());
    assert!(frozen, "key encoder is frozen");

    let k0 = key.var_store().variables()["head.weight"].copy();
    tch::no_grad(|| {
        let mut w = online.variables()["head.weight"].shallow_clone();
        let _ = w.f_add_scalar_(1.0).unwrap();
    });
    let q1 = online.variables()["head.weight"].copy();
    key.update(&online).unwrap();
    let want = &k0 * 0.9 + &q1 * 0.1;
    assert!(key.var_store().variables()["head.weight"].allclose(&want, 1e-6, 1e-6, false));
    assert!(MomentumEncoder::new(&online, &arch, 1.5).is_err());
}

#[test]
fn key_queue_is_a_normalized_ring_buffer() {
    tch::manual_seed(4);
    let mut q = KeyQueue::new(5, 3, Device::Cpu).unwrap();
    let ones = Tensor::ones([5], (Kind::Float, Device::Cpu));
    let norms = |q: &KeyQueue| q.keys().norm_scalaropt_dim(2.0, [1], false);
    assert!(norms(&q).allclose(&ones, 1e-5, 1e-5, false));

    let batch = Tensor::from_slice(&[3.0f32, 0., 0., 0., 2., 0., 0., 0., 5.]).view([3, 3]);
    q.enqueue(&batch).unwrap();
    assert_eq!(q.position(), 3);
    assert!(q.keys().narrow(0, 0, 3).allclose(
        &Tensor::eye(3, (Kind::Float, Device::Cpu)),
        1e-6,
        1e-6,
        false
    ));
    // The next batch wraps: rows 3, 4, then 0 (the oldest) are replaced.
    let neg = -Tensor::eye(3, (Kind::Float, Device::Cpu));
    q.enqueue(&neg).unwrap();
    assert_eq!(q.position(), 1);
    assert!(q.keys().get(0).allclose(&neg.get(2), 1e-6, 1e-6, false));
    assert!(
        q.keys()
            .get(1)
            .allclose(&Tensor::from_slice(&[0.0f32, 1., 0.]), 1e-6, 1e-6, false)
    );
    assert!(q.keys().get(4).allclose(&neg.get(1), 1e-6, 1e-6, false));
    assert!(norms(&q).allclose(&ones, 1e-5, 1e-5, false));
    assert!(
        q.enqueue(&Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)))
            .is_err()
    );
}

#[test]
fn arch_config_round_trips_through_json() {
    for arch in [
        ArchConfig::resnet18_simclr(3),
        ArchConfig::resnet18_moco(1),
        ArchConfig {
            backbone: BackboneConfig::small_cnn(1),
            head: HeadConfig::None,
        },
    ] {
        let json = serde_json::to_string(&arch).unwrap();
        assert_eq!(serde_json::from_str::<ArchConfig>(&json).unwrap(), arch);
    }
    // Files written before the stem flag existed default to the standard stem.
    let old = r#"{"backbone":{"kind":"resnet18","in_channels":3,"widths":[64,128,256,512]},"head":{"kind":"none"}}"#;
    let arch: ArchConfig = serde_json::from_str(old).unwrap();
    assert!(matches!(
        arch.backbone,
        BackboneConfig::ResNet18 {
            stem_relu: true,
            ..
        }
    ));
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("models_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn saving_never_clobbers_and_leaves_no_temporaries() {
    tch::manual_seed(5);
    let dir = scratch("save");
    let arch = ArchConfig {
        backbone: BackboneConfig::small_cnn(1),
        head: HeadConfig::Classifier { num_classes: 10 },
    };
    let (vs, m) = build(&arch);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, b"the user's original").unwrap();
    let meta = CheckpointMeta::new(Some(arch.clone()), Some("test".into()));
    let e = checkpoint::save(&path, &vs, &meta, false).unwrap_err();
    assert!(matches!(e, CheckpointError::AlreadyExists { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"the user's original");

    checkpoint::save(&path, &vs, &meta, true).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        ["model.safetensors"],
        "temporary files left behind"
    );

    let loaded = checkpoint::load_model(&path, Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.arch, arch);
    assert_eq!(
        loaded.meta.unwrap().provenance.source.as_deref(),
        Some("test")
    );
    let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    assert!(
        loaded
            .model
            .forward_t(&x, false)
            .allclose(&m.forward_t(&x, false), 0.0, 0.0, false)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
