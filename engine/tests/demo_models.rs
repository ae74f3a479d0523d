//! The bundled demo models are real, useful and leave a membership signal.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::checkpoint::{LoadOptions, load_model};
use lethe_engine::data;
use lethe_engine::jobs::train::split_of;
use lethe_engine::train::probe::{extract, train_linear_probe};
use lethe_engine::train::supervised::{evaluate, predict_logits};
use lethe_engine::train::{Flow, TrainConfig};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn demo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/demo")
        .join(name)
}

#[test]
fn demo_classifier_is_accurate_and_fitted() {
    let ds = data::load(&demo("mnist10k.npz")).unwrap();
    let split = split_of(&ds, 0).unwrap();
    let m = load_model(
        demo("classifier.safetensors"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let train = ds.subset(&split.train).unwrap();
    let test = ds.subset(&split.test).unwrap();
    let acc_train = evaluate(&m.model, train.images(), train.labels(), Device::Cpu);
    let acc_test = evaluate(&m.model, test.images(), test.labels(), Device::Cpu);
    assert!(acc_test > 0.95, "test accuracy {acc_test}");
    assert!(acc_train > acc_test, "train {acc_train} vs test {acc_test}");
    // The generalisation gap in loss is what membership inference feeds on.
    let loss = |s: &data::Dataset| {
        predict_logits(&m.model, s.images(), 512, Device::Cpu)
            .cross_entropy_for_logits(s.labels())
            .double_value(&[])
    };
    let (lt, ls) = (loss(&train), loss(&test));
    assert!(ls > 10.0 * lt, "train loss {lt}, test loss {ls}");
}

/// Test accuracy of a linear probe trained on the frozen features of `model`.
fn probe_accuracy(
    model: &lethe_engine::models::Model,
    train: &data::Dataset,
    test: &data::Dataset,
) -> f64 {
    let feat = |x: &Tensor| model.features(x, false);
    let cfg = TrainConfig {
        epochs: 30,
        batch_size: 256,
        lr: 0.5,
        weight_decay: 0.0,
        ..TrainConfig::default()
    };
    let (probe, _) = train_linear_probe(
        &feat,
        train.images(),
        train.labels(),
        10,
        Device::Cpu,
        &cfg,
        &mut |_| Flow::Continue,
    )
    .unwrap();
    probe.accuracy(&extract(&feat, test.images(), Device::Cpu), test.labels())
}

#[test]
fn demo_encoder_features_support_a_linear_probe() {
    let ds = data::load(&demo("mnist10k.npz")).unwrap();
    let split = split_of(&ds, 0).unwrap();
    let train = ds.subset(&split.train).unwrap();
    let test = ds.subset(&split.test).unwrap();
    let m = load_model(
        demo("encoder.safetensors"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let acc = probe_accuracy(&m.model, &train, &test);
    assert!(acc > 0.85, "probe test accuracy {acc}");
    // Sanity: the same architecture with random weights probes clearly worse.
    let random = load_model(
        demo("encoder.safetensors"),
        Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    tch::no_grad(|| {
        for (_, mut v) in random.vs.variables() {
            let r = Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.05;
            v.copy_(&r);
        }
    });
    let racc = probe_accuracy(&random.model, &train, &test);
    assert!(acc > racc + 0.02, "trained {acc} vs random {racc}");
}
