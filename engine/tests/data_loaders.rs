//! Each dataset loader against real files written in the test, including corrupt and
//! truncated ones, which must fail with an error naming the file.

// Test helpers outside #[test] fns unwrap too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod data_fixtures;

use data_fixtures::*;
use lethe_engine::data::{
    self, ChannelMode, CifarKind, DataError, Format, Split, hash_hex, hash_pixels,
};
use std::path::Path;
use tch::{Kind, Tensor};

fn err_text(e: DataError) -> String {
    e.to_string()
}

fn assert_names(err: &str, path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error should name {name}: {err}");
}

#[test]
fn idx_pair_loads_pixels_labels_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = write_idx_pair(dir.path(), "train", 7);
    let ds = data::load_idx(&images, &labels).unwrap();
    assert_eq!(ds.len(), 7);
    assert_eq!((ds.channels(), ds.height(), ds.width()), (1, 4, 5));
    assert_eq!(ds.num_classes(), 3);
    assert_eq!(ds.format(), Format::Idx);
    assert_eq!(ds.images().kind(), Kind::Uint8);
    assert_eq!(ds.images().size(), vec![7, 1, 4, 5]);
    assert_eq!(ds.label_slice(), &[0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(Vec::<i64>::try_from(ds.labels()).unwrap(), ds.label_slice());
    assert_eq!(ds.sample_pixels(5).unwrap(), pixels(5, 1, 4, 5));
    assert_eq!(ds.hashes()[5], hash_pixels(&pixels(5, 1, 4, 5)));
    assert_ne!(ds.hashes()[5], ds.hashes()[6]);
}

#[test]
fn gzipped_idx_files_load_the_same_as_plain_ones() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = write_idx_pair(dir.path(), "train", 5);
    let gz = |p: &Path| {
        let out = p.with_extension("gz");
        let mut e = GzEncoder::new(std::fs::File::create(&out).unwrap(), Compression::default());
        e.write_all(&std::fs::read(p).unwrap()).unwrap();
        e.finish().unwrap();
        out
    };
    let (gi, gl) = (gz(&images), gz(&labels));
    let plain = data::load_idx(&images, &labels).unwrap();
    let zipped = data::load_idx(&gi, &gl).unwrap();
    assert_eq!(plain.hashes(), zipped.hashes());
    assert_eq!(plain.label_slice(), zipped.label_slice());

    // A gzip stream cut in half is reported as such.
    let bytes = std::fs::read(&gi).unwrap();
    std::fs::write(&gi, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_text(data::load_idx(&gi, &gl).unwrap_err());
    assert!(err.contains("gzip"), "{err}");
    assert_names(&err, &gi);
}

#[test]
fn truncated_or_corrupt_idx_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = write_idx_pair(dir.path(), "train", 4);
    let good = std::fs::read(&images).unwrap();

    std::fs::write(&images, &good[..good.len() - 3]).unwrap();
    let err = err_text(data::load_idx(&images, &labels).unwrap_err());
    assert!(err.contains("truncated"), "{err}");
    assert_names(&err, &images);

    std::fs::write(&images, &good[..10]).unwrap();
    let err = err_text(data::load_idx(&images, &labels).unwrap_err());
    assert!(err.contains("truncated IDX header"), "{err}");

    let mut bad_magic = good.clone();
    bad_magic[0] = 7;
    std::fs::write(&images, &bad_magic).unwrap();
    let err = err_text(data::load_idx(&images, &labels).unwrap_err());
    assert!(err.contains("magic"), "{err}");

    // A header whose dimensions overflow is an error, not a panic or a huge allocation.
    write_idx(&images, &[u32::MAX, u32::MAX, u32::MAX], &[]);
    let err = err_text(data::load_idx(&images, &labels).unwrap_err());
    assert!(err.contains("impossibly large"), "{err}");

    // Labels count disagreeing with images count names the labels file.
    std::fs::write(&images, &good).unwrap();
    write_idx(&labels, &[3], &[0, 1, 2]);
    let err = err_text(data::load_idx(&images, &labels).unwrap_err());
    assert!(err.contains("3 labels for 4 images"), "{err}");
    assert_names(&err, &labels);
}

#[test]
fn mnist_folder_loads_train_then_test_with_the_official_split() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 6);
    write_idx_pair(dir.path(), "t10k", 2);
    let ds = data::load(dir.path()).unwrap();
    assert_eq!(ds.len(), 8);
    let split = ds.recorded_split().unwrap();
    assert_eq!(split.train, vec![0, 1, 2, 3, 4, 5]);
    assert!(split.val.is_empty());
    assert_eq!(split.test, vec![6, 7]);
    // Test samples come after the train ones in the stable order.
    assert_eq!(ds.hashes()[6], hash_pixels(&pixels(0, 1, 4, 5)));
}

#[test]
fn cifar10_and_cifar100_batches_load_with_labels_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = dir.path().join("data_batch_1.bin");
    let b2 = dir.path().join("data_batch_2.bin");
    std::fs::write(&b1, cifar_bytes(&[(0, 3), (0, 9)], false, 0)).unwrap();
    std::fs::write(&b2, cifar_bytes(&[(0, 1)], false, 2)).unwrap();
    std::fs::write(
        dir.path().join("test_batch.bin"),
        cifar_bytes(&[(0, 0)], false, 3),
    )
    .unwrap();
    let ds = data::load(dir.path()).unwrap();
    assert_eq!(ds.format(), Format::Cifar10);
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.label_slice(), &[3, 9, 1, 0]);
    assert_eq!(ds.classes()[3], "cat");
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.sample_pixels(2).unwrap(), pixels(2, 3, 32, 32));
    assert_eq!(ds.recorded_split().unwrap().test, vec![3]);

    let c100 = tempfile::tempdir().unwrap();
    let train = c100.path().join("train.bin");
    std::fs::write(&train, cifar_bytes(&[(4, 72), (1, 5)], true, 0)).unwrap();
    let ds = data::load_cifar(std::slice::from_ref(&train), CifarKind::Cifar100).unwrap();
    assert_eq!(ds.format(), Format::Cifar100);
    assert_eq!(ds.label_slice(), &[72, 5]);
    assert_eq!(ds.num_classes(), 100);
    assert_eq!(ds.sample_pixels(1).unwrap(), pixels(1, 3, 32, 32));
    // A single .bin whose size only fits 3074-byte records is detected as CIFAR-100.
    assert_eq!(data::load(&train).unwrap().format(), Format::Cifar100);
}

#[test]
fn truncated_cifar_batch_and_bad_labels_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("data_batch_1.bin");
    let bytes = cifar_bytes(&[(0, 1), (0, 2)], false, 0);
    std::fs::write(&b, &bytes[..bytes.len() - 100]).unwrap();
    let err = err_text(data::load_cifar(std::slice::from_ref(&b), CifarKind::Cifar10).unwrap_err());
    assert!(err.contains("truncated"), "{err}");
    assert_names(&err, &b);

    std::fs::write(&b, cifar_bytes(&[(0, 1), (0, 12)], false, 0)).unwrap();
    let err = err_text(data::load_cifar(std::slice::from_ref(&b), CifarKind::Cifar10).unwrap_err());
    assert!(err.contains("record 1 has label 12"), "{err}");
    assert_names(&err, &b);
}

#[test]
fn image_folder_sorts_classes_and_files_and_hashes_decoded_pixels() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of order on purpose: the order must come from the names.
    for (class, files) in [("zebra", vec!["b.png", "a.png"]), ("ant", vec!["x.png"])] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for (k, f) in files.iter().enumerate() {
            let px = pixels(k + class.len(), 3, 6, 5);
            write_png(&dir.path().join(class).join(f), &px, 3, 6, 5);
        }
    }
    std::fs::write(dir.path().join("zebra/notes.txt"), "not an image").unwrap();
    let ds = data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap();
    assert_eq!(ds.classes(), &["ant".to_string(), "zebra".to_string()]);
    assert_eq!(ds.label_slice(), &[0, 1, 1]);
    assert_eq!((ds.channels(), ds.height(), ds.width()), (3, 6, 5));
    // zebra/a.png was written second (k = 1).
    assert_eq!(ds.sample_pixels(1).unwrap(), pixels(1 + 5, 3, 6, 5));
    assert_eq!(ds.hashes()[2], hash_pixels(&pixels(5, 3, 6, 5)));
}

#[test]
fn image_folder_channel_modes_are_explicit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    let gray = pixels(0, 1, 4, 4);
    write_png(&dir.path().join("a/1.png"), &gray, 1, 4, 4);
    let rgb_file = dir.path().join("b/2.png");
    write_png(&rgb_file, &pixels(1, 3, 4, 4), 3, 4, 4);

    let err = err_text(data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap_err());
    assert!(
        err.contains("3 channel(s)") && err.contains("has 1"),
        "{err}"
    );
    assert_names(&err, &rgb_file);

    let rgb = data::load_image_folder(dir.path(), ChannelMode::Rgb).unwrap();
    assert_eq!(rgb.channels(), 3);
    assert_eq!(rgb.sample_pixels(0).unwrap(), gray.repeat(3));

    let g = data::load_image_folder(dir.path(), ChannelMode::Gray).unwrap();
    assert_eq!(g.channels(), 1);
    assert_eq!(g.sample_pixels(0).unwrap(), gray);
    let px = pixels(1, 3, 4, 4);
    let luma = |p: usize| {
        ((299 * px[p] as u32 + 587 * px[16 + p] as u32 + 114 * px[32 + p] as u32 + 500) / 1000)
            as u8
    };
    assert_eq!(
        g.sample_pixels(1).unwrap(),
        (0..16).map(luma).collect::<Vec<_>>()
    );
}

#[test]
fn image_folder_rejects_mixed_sizes_empty_classes_and_corrupt_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    write_png(&dir.path().join("a/1.png"), &pixels(0, 1, 4, 4), 1, 4, 4);
    let big = dir.path().join("a/2.png");
    write_png(&big, &pixels(0, 1, 5, 4), 1, 5, 4);
    let err = err_text(data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap_err());
    assert!(
        err.contains("5x4") && err.contains("4x4") && err.contains("not resized"),
        "{err}"
    );
    assert_names(&err, &big);

    // Truncated PNG.
    let bytes = std::fs::read(&big).unwrap();
    std::fs::write(&big, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_text(data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap_err());
    assert!(err.contains("cannot decode image"), "{err}");
    assert_names(&err, &big);

    // Garbage with an image extension.
    std::fs::write(&big, b"hello").unwrap();
    let err = err_text(data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap_err());
    assert!(err.contains("neither a PNG nor a JPEG"), "{err}");

    std::fs::remove_file(&big).unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    let err = err_text(data::load_image_folder(dir.path(), ChannelMode::Auto).unwrap_err());
    assert!(err.contains("no PNG or JPEG"), "{err}");
}

#[test]
fn jpeg_files_decode_to_gray_or_rgb_close_to_the_original() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("c")).unwrap();
    // Smooth content, so that JPEG at quality 100 is close to exact.
    let (h, w) = (16, 16);
    let rgb: Vec<u8> = (0..3 * h * w)
        .map(|p| (40 + (p % (h * w)) / 4 + 50 * (p / (h * w))) as u8)
        .collect();
    let gray: Vec<u8> = (0..h * w).map(|p| (60 + p / 3) as u8).collect();
    write_jpeg(&dir.path().join("c/rgb.jpg"), &rgb, 3, h, w);
    write_jpeg(&dir.path().join("c/gray.JPEG"), &gray, 1, h, w);
    let g = data::decode_image_file(&dir.path().join("c/gray.JPEG")).unwrap();
    assert_eq!((g.channels, g.height, g.width), (1, h, w));
    let c = data::decode_image_file(&dir.path().join("c/rgb.jpg")).unwrap();
    assert_eq!((c.channels, c.height, c.width), (3, h, w));
    let max_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(
        max_diff(&g.pixels, &gray) <= 3,
        "gray diff {}",
        max_diff(&g.pixels, &gray)
    );
    assert!(
        max_diff(&c.pixels, &rgb) <= 8,
        "rgb diff {}",
        max_diff(&c.pixels, &rgb)
    );
    // Both in one folder: RGB mode decodes the gray one as three equal planes.
    let ds = data::load_image_folder(dir.path(), ChannelMode::Rgb).unwrap();
    let first = ds.sample_pixels(0).unwrap();
    assert_eq!(&first[..h * w], &first[h * w..2 * h * w]);
}

#[test]
fn png_alpha_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rgba.png");
    let px = pixels(3, 3, 5, 7);
    write_png_rgba(&f, &px, 5, 7);
    let img = data::decode_image_file(&f).unwrap();
    assert_eq!(img.channels, 3);
    assert_eq!(img.pixels, px);
}

const WRITE_NPZ: &str = r#"
import sys, numpy as np
n, compressed, flat, out = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4]
x = make_x(n, (1, 6, 5))
if flat:
    x = x[:, 0]
y = (np.arange(n) % 4).astype(np.int32)
extra = dict(train_idx=np.arange(0, n - 2, dtype=np.int64), val_idx=np.array([n - 2]), test_idx=np.array([n - 1]))
(np.savez_compressed if compressed else np.savez)(out, x=x, y=y, **extra)
import hashlib
print(hashlib.sha256(np.ascontiguousarray(x[3]).tobytes()).hexdigest())
"#;

#[test]
fn npz_written_by_numpy_loads_plain_compressed_and_without_channel_axis() {
    let dir = tempfile::tempdir().unwrap();
    for (compressed, flat) in [("0", "0"), ("1", "0"), ("1", "1")] {
        let out = dir.path().join(format!("d{compressed}{flat}.npz"));
        let script = format!("{NUMPY_PIXELS}{WRITE_NPZ}");
        let py_hash = run_python(&script, &["9", compressed, flat, out.to_str().unwrap()]);
        let ds = data::load(&out).unwrap();
        assert_eq!(ds.format(), Format::Npz);
        assert_eq!(ds.len(), 9);
        assert_eq!((ds.channels(), ds.height(), ds.width()), (1, 6, 5));
        assert_eq!(ds.label_slice()[..5], [0, 1, 2, 3, 0]);
        assert_eq!(ds.sample_pixels(3).unwrap(), pixels(3, 1, 6, 5));
        // Python's hashlib over numpy's bytes agrees with our content hash.
        assert_eq!(hash_hex(&ds.hashes()[3]), py_hash.trim());
        let split = ds.recorded_split().unwrap();
        assert_eq!(
            (split.train.len(), split.val.clone(), split.test.clone()),
            (7, vec![7], vec![8])
        );
    }
}

#[test]
fn bad_npz_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.npz");
    run_python(
        &format!("{NUMPY_PIXELS}{WRITE_NPZ}"),
        &["5", "1", "0", out.to_str().unwrap()],
    );
    let bytes = std::fs::read(&out).unwrap();
    let cut = dir.path().join("cut.npz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = err_text(data::load(&cut).unwrap_err());
    assert!(err.contains("not a valid npz"), "{err}");
    assert_names(&err, &cut);

    let script = r#"
import sys, numpy as np
d = sys.argv[1]
np.savez(d + "/float.npz", x=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0, 1]))
np.savez(d + "/noy.npz", x=np.zeros((2, 1, 3, 3), np.uint8))
np.savez(d + "/shape.npz", x=np.zeros((2, 3), np.uint8), y=np.array([0, 1]))
np.savez(d + "/count.npz", x=np.zeros((2, 1, 3, 3), np.uint8), y=np.array([0, 1, 1]))
np.savez(d + "/neg.npz", x=np.zeros((2, 1, 3, 3), np.uint8), y=np.array([0, -1]))
np.savez(d + "/fy.npz", x=np.zeros((2, 1, 3, 3), np.uint8), y=np.array([0.0, 1.0]))
np.savez(d + "/halfsplit.npz", x=np.zeros((2, 1, 3, 3), np.uint8), y=np.array([0, 1]), train_idx=np.array([0]))
np.savez(d + "/badsplit.npz", x=np.zeros((2, 1, 3, 3), np.uint8), y=np.array([0, 1]), train_idx=np.array([0, 1]), val_idx=np.array([1]), test_idx=np.array([], np.int64))
"#;
    run_python(script, &[dir.path().to_str().unwrap()]);
    for (file, needle) in [
        ("float.npz", "must be uint8"),
        ("noy.npz", "no array named `y`"),
        ("shape.npz", "expected [N, C, H, W] or [N, H, W]"),
        ("count.npz", "`x` holds 2 images"),
        ("neg.npz", "negative label"),
        ("fy.npz", "must hold integers"),
        ("halfsplit.npz", "needs all of"),
        ("badsplit.npz", "appears twice"),
    ] {
        let path = dir.path().join(file);
        let err = err_text(data::load(&path).unwrap_err());
        assert!(err.contains(needle), "{file}: {err}");
        assert_names(&err, &path);
    }
}

#[test]
fn safetensors_written_by_python_loads_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.safetensors");
    let script = format!(
        "{NUMPY_PIXELS}{}",
        r#"
import sys, json, numpy as np
from safetensors.numpy import save_file
x = make_x(6, (3, 4, 2))
save_file({"x": x, "y": np.array([1, 0, 1, 2, 2, 0], np.int64)}, sys.argv[1],
          metadata={"classes": json.dumps(["cat", "dog", "eel"])})
"#
    );
    run_python(&script, &[out.to_str().unwrap()]);
    let ds = data::load(&out).unwrap();
    assert_eq!(ds.format(), Format::Safetensors);
    assert_eq!(
        (ds.len(), ds.channels(), ds.height(), ds.width()),
        (6, 3, 4, 2)
    );
    assert_eq!(ds.classes(), &["cat", "dog", "eel"]);
    assert_eq!(ds.class_counts(), vec![2, 2, 2]);
    let summary = data::DatasetSummary::of(&out, &ds).to_string();
    assert!(summary.contains("    0 cat: 2\n"), "{summary}");
    assert_eq!(ds.sample_pixels(4).unwrap(), pixels(4, 3, 4, 2));

    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(&out, &bytes[..bytes.len() - 10]).unwrap();
    let err = err_text(data::load(&out).unwrap_err());
    assert!(err.contains("not a valid safetensors"), "{err}");
    assert_names(&err, &out);
}

#[test]
fn subset_keeps_stable_indices_and_to_float_scales_to_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = write_idx_pair(dir.path(), "train", 6);
    let ds = data::load_idx(&images, &labels).unwrap();
    let sub = ds.subset(&[4, 1]).unwrap();
    assert_eq!(sub.indices(), &[4, 1]);
    assert_eq!(sub.label_slice(), &[1, 1]);
    assert_eq!(sub.hashes()[0], ds.hashes()[4]);
    assert_eq!(sub.sample_pixels(0).unwrap(), ds.sample_pixels(4).unwrap());
    let nested = sub.subset(&[1]).unwrap();
    assert_eq!(nested.indices(), &[1]);
    assert!(matches!(
        ds.subset(&[6]),
        Err(DataError::Position {
            position: 6,
            len: 6
        })
    ));

    let f = ds.to_float();
    assert_eq!(f.kind(), Kind::Float);
    let expected = Tensor::from_slice(&pixels(0, 1, 4, 5)).to_kind(Kind::Float) / 255.0;
    let diff = (f.get(0).flatten(0, -1) - expected)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-7, "{diff}");
    assert!(f.max().double_value(&[]) <= 1.0 && f.min().double_value(&[]) >= 0.0);
}

#[test]
fn splits_are_deterministic_disjoint_and_validated() {
    let a = Split::from_counts(100, 70, 10, 20, 7).unwrap();
    assert_eq!(a, Split::from_counts(100, 70, 10, 20, 7).unwrap());
    assert_ne!(a, Split::from_counts(100, 70, 10, 20, 8).unwrap());
    a.validate(100).unwrap();
    let mut all: Vec<i64> = a
        .train
        .iter()
        .chain(&a.val)
        .chain(&a.test)
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert!(a.train.windows(2).all(|w| w[0] < w[1]));

    let f = Split::from_fractions(1000, 0.1, 0.25, 3).unwrap();
    assert_eq!((f.train.len(), f.val.len(), f.test.len()), (650, 100, 250));
    assert!(Split::from_counts(10, 8, 2, 1, 0).is_err());
    assert!(Split::from_fractions(10, 0.6, 0.5, 0).is_err());
}

#[test]
fn inspect_summarises_format_shape_classes_and_first_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = write_idx_pair(dir.path(), "train", 5);
    let summary = data::inspect(&images).unwrap();
    assert_eq!(summary.len, 5);
    assert_eq!(summary.shape, [1, 4, 5]);
    assert_eq!(
        summary.classes,
        vec![("0".into(), 2), ("1".into(), 2), ("2".into(), 1)]
    );
    let text = summary.to_string();
    assert!(text.contains("format: IDX"), "{text}");
    assert!(text.contains("samples: 5"), "{text}");
    assert!(
        text.contains(&hash_hex(&hash_pixels(&pixels(0, 1, 4, 5)))),
        "{text}"
    );

    let err = err_text(data::inspect(&dir.path().join("missing.npz")).unwrap_err());
    assert!(err.contains("missing.npz"), "{err}");
    let odd = dir.path().join("data.xyz");
    std::fs::write(&odd, "x").unwrap();
    let err = err_text(data::inspect(&odd).unwrap_err());
    assert!(err.contains("unrecognised dataset"), "{err}");
}
