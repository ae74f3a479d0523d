//! The shipped demo data: 10,000 real MNIST digits with a recorded seeded split.

use lethe_engine::data::{self, ForgetSet, Format, Split};
use std::path::PathBuf;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../resources/demo/mnist10k.npz")
}

#[test]
fn demo_file_has_ten_thousand_digits_in_ten_classes() {
    let ds = data::load(&demo()).unwrap();
    assert_eq!(ds.format(), Format::Npz);
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.num_classes(), 10);
    assert_eq!((ds.channels(), ds.height(), ds.width()), (1, 28, 28));
    assert_eq!(
        ds.class_counts(),
        vec![1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    );
    // Real digits: mostly background with some bright ink, not noise or blanks.
    let img = ds.to_float();
    let mean = img.mean(tch::Kind::Float).double_value(&[]);
    assert!((0.08..0.2).contains(&mean), "mean intensity {mean}");
    assert!(img.max().double_value(&[]) > 0.99);
    let unique: std::collections::HashSet<_> = ds.hashes().iter().collect();
    assert!(unique.len() > 9_990, "{} distinct images", unique.len());
}

#[test]
fn demo_split_is_the_one_the_engine_derives_from_the_seed() {
    let ds = data::load(&demo()).unwrap();
    let recorded = ds.recorded_split().unwrap();
    assert_eq!(
        (
            recorded.train.len(),
            recorded.val.len(),
            recorded.test.len()
        ),
        (6000, 1000, 3000)
    );
    assert_eq!(
        recorded,
        &Split::from_counts(10_000, 6000, 1000, 3000, 2024).unwrap()
    );
    let summary = data::inspect(&demo()).unwrap().to_string();
    assert!(
        summary.contains("recorded split: train 6000, val 1000, test 3000"),
        "{summary}"
    );
}

#[test]
fn demo_forget_list_is_a_valid_forget_set_of_the_recorded_split() {
    let ds = data::load(&demo()).unwrap();
    let split = ds.recorded_split().unwrap();
    let list = demo().with_file_name("forget.txt");
    let forget = ForgetSet::from_list_file(&list, ds.len(), &split.train).unwrap();
    assert_eq!(forget.len(), 300);
    let (_, retain) = split.forget_retain(&forget);
    assert_eq!(retain.len(), 5700);
}

/// The leaky demo's data: the same digits in the same order, with the
/// 2,000/1,000/3,000 split the engine derives from seed 2024, and its forget list.
#[test]
fn leaky_demo_file_resplits_the_same_digits() {
    let full = data::load(&demo()).unwrap();
    let small = data::load(&demo().with_file_name("mnist10k-2k.npz")).unwrap();
    assert_eq!(small.len(), 10_000);
    assert_eq!(small.hashes(), full.hashes());
    assert_eq!(small.label_slice(), full.label_slice());
    assert_eq!(
        small.recorded_split().unwrap(),
        &Split::from_counts(10_000, 2000, 1000, 3000, 2024).unwrap()
    );
    let split = small.recorded_split().unwrap();
    let list = demo().with_file_name("forget-2k.txt");
    let forget = ForgetSet::from_list_file(&list, small.len(), &split.train).unwrap();
    assert_eq!(forget.len(), 100);
    assert_eq!(
        forget.indices(),
        ForgetSet::random_fraction(&split.train, 0.05, 1)
            .unwrap()
            .indices()
    );
}
