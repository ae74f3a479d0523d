//! Forget sets from lists, classes, seeded fractions and folders of photos, and every
//! error case, each of which must name the file and line (or image file) at fault.

// Test helpers outside #[test] fns unwrap too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod data_fixtures;

use data_fixtures::*;
use lethe_engine::data::{self, Dataset, ForgetSet, ForgetSetError, Split};
use std::path::{Path, PathBuf};

/// 12 samples of 1×4×5, labels i % 3; train = 0..8, val = 8..10, test = 10..12.
fn dataset(dir: &Path) -> (Dataset, Split) {
    let (images, labels) = write_idx_pair(dir, "train", 12);
    let ds = data::load_idx(&images, &labels).unwrap();
    let split = Split {
        train: (0..8).collect(),
        val: vec![8, 9],
        test: vec![10, 11],
    };
    (ds, split)
}

fn list(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn from_list(path: &Path, split: &Split) -> Result<ForgetSet, ForgetSetError> {
    ForgetSet::from_list_file(path, 12, &split.train)
}

#[test]
fn txt_csv_and_json_lists_give_sorted_indices_and_the_retain_set() {
    let dir = tempfile::tempdir().unwrap();
    let (_, split) = dataset(dir.path());
    let txt = list(
        dir.path(),
        "f.txt",
        "# people who asked\n5\n\n  2  # second\n7\n",
    );
    let csv = list(dir.path(), "f.csv", "name,index\nann,5\nbob,2\ncy,7\n");
    let bare_csv = list(dir.path(), "g.csv", "5,x\n2,y\n7,z\n");
    let json = list(dir.path(), "f.json", "[5,\n 2,\n 7]");
    let json_obj = list(dir.path(), "g.json", "{\"indices\": [7, 5, 2]}");
    for p in [&txt, &csv, &bare_csv, &json, &json_obj] {
        let f = from_list(p, &split).unwrap();
        assert_eq!(f.indices(), &[2, 5, 7], "{}", p.display());
        assert!(
            f.origin()
                .contains(p.file_name().unwrap().to_str().unwrap())
        );
        let (forget, retain) = split.forget_retain(&f);
        assert_eq!(forget, vec![2, 5, 7]);
        assert_eq!(retain, vec![0, 1, 3, 4, 6]);
    }
}

fn expect_err(path: &Path, split: &Split) -> String {
    let e = from_list(path, split).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(path.file_name().unwrap().to_str().unwrap()),
        "error should name the file: {text}"
    );
    text
}

#[test]
fn list_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, split) = dataset(dir.path());
    let d = dir.path();

    let t = expect_err(&list(d, "a.txt", "1\n2\nthree\n"), &split);
    assert!(t.contains("a.txt:3") && t.contains("\"three\""), "{t}");

    let t = expect_err(&list(d, "b.txt", "1\n\n12\n"), &split);
    assert!(
        t.contains("b.txt:3") && t.contains("index 12 is out of range"),
        "{t}"
    );
    let t = expect_err(&list(d, "b2.txt", "-1\n"), &split);
    assert!(t.contains("b2.txt:1") && t.contains("out of range"), "{t}");

    let t = expect_err(&list(d, "c.txt", "4\n1\n4\n"), &split);
    assert!(
        t.contains("c.txt:3") && t.contains("listed twice (first on line 1)"),
        "{t}"
    );

    let t = expect_err(&list(d, "d.csv", "index\n3\n9\n"), &split);
    assert!(
        t.contains("d.csv:3") && t.contains("sample 9 is not in the training split"),
        "{t}"
    );

    let t = expect_err(&list(d, "e.txt", "# nothing\n\n"), &split);
    assert!(t.contains("empty"), "{t}");

    let all: String = (0..8).map(|i| format!("{i}\n")).collect();
    let t = expect_err(&list(d, "f.txt", &all), &split);
    assert!(t.contains("whole training set (8 samples)"), "{t}");

    let t = expect_err(&list(d, "g.csv", "who,when\nann,1\n"), &split);
    assert!(
        t.contains("g.csv:1") && t.contains("no `index` column"),
        "{t}"
    );
    // A lone non-numeric first row is not silently taken for a header.
    let t = expect_err(&list(d, "g2.csv", "idx\n1\n"), &split);
    assert!(
        t.contains("g2.csv:1") && t.contains("no `index` column"),
        "{t}"
    );
    let t = expect_err(&list(d, "h.csv", "1\n2.5\n"), &split);
    assert!(t.contains("h.csv:2"), "{t}");

    let t = expect_err(&list(d, "i.json", "[1,\n 2,\n \"x\"]"), &split);
    assert!(t.contains("i.json:3"), "{t}");
    let t = expect_err(&list(d, "j.json", "[1,\n 2,\n"), &split);
    assert!(t.contains("j.json:") && t.contains("invalid JSON"), "{t}");
    let t = expect_err(&list(d, "k.json", "[1,\n [2]]"), &split);
    assert!(t.contains("k.json:2"), "{t}");
    let t = expect_err(&list(d, "l.json", "{\"rows\": [1]}"), &split);
    assert!(t.contains("expected an array"), "{t}");
    let t = expect_err(&list(d, "m.json", "[3,\n  5,\n  3]"), &split);
    assert!(
        t.contains("m.json:3") && t.contains("first on line 1"),
        "{t}"
    );

    let t = expect_err(&list(d, "n.yaml", "- 1\n"), &split);
    assert!(t.contains("unsupported forget-list format"), "{t}");
    let t = expect_err(&d.join("missing.txt"), &split);
    assert!(t.contains("missing.txt"), "{t}");
}

#[test]
fn class_forget_set_takes_only_training_samples_of_that_class() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, split) = dataset(dir.path());
    // Labels are i % 3: class 1 is 1, 4, 7, 10 — 10 is a test sample.
    let f = ForgetSet::from_class(&ds, &split.train, 1).unwrap();
    assert_eq!(f.indices(), &[1, 4, 7]);
    assert!(matches!(
        ForgetSet::from_class(&ds, &split.train, 3),
        Err(ForgetSetError::UnknownClass {
            class: 3,
            num_classes: 3
        })
    ));
    // A class with no training samples is an empty forget set.
    let only_class0: Vec<i64> = vec![0, 3, 6];
    let e = ForgetSet::from_class(&ds, &[0, 3, 6, 1], 2).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    // A class that is the whole training set is refused.
    let e = ForgetSet::from_class(&ds, &only_class0, 0).unwrap_err();
    assert!(
        matches!(e, ForgetSetError::WholeTrainSet { len: 3, .. }),
        "{e}"
    );
}

/// What class-wise methods need: every training sample of each class the set
/// touches, and no other sample of those classes among the training samples
/// (samples of the class outside the training split do not count).
#[test]
fn whole_classes_are_told_from_partial_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, split) = dataset(dir.path());
    let class1 = ForgetSet::from_class(&ds, &split.train, 1).unwrap();
    assert!(
        class1.is_whole_classes(&ds, &split.train),
        "1, 4, 7 is class 1"
    );
    // Classes 1 and 2 together (2, 5 are class 2's training samples).
    let two = from_list(&list(dir.path(), "two.txt", "1\n2\n4\n5\n7\n"), &split).unwrap();
    assert!(two.is_whole_classes(&ds, &split.train));
    // Class 1 without 7, and class 1 plus one sample of class 0.
    let partial = from_list(&list(dir.path(), "partial.txt", "1\n4\n"), &split).unwrap();
    assert!(!partial.is_whole_classes(&ds, &split.train));
    let mixed = from_list(&list(dir.path(), "mixed.txt", "1\n4\n7\n0\n"), &split).unwrap();
    assert!(!mixed.is_whole_classes(&ds, &split.train));
}

#[test]
fn random_fraction_is_seeded_and_within_train() {
    let train: Vec<i64> = (100..300).collect();
    let a = ForgetSet::random_fraction(&train, 0.1, 42).unwrap();
    assert_eq!(a.len(), 20);
    assert_eq!(a, ForgetSet::random_fraction(&train, 0.1, 42).unwrap());
    assert_ne!(
        a.indices(),
        ForgetSet::random_fraction(&train, 0.1, 43)
            .unwrap()
            .indices()
    );
    assert!(a.indices().iter().all(|i| (100..300).contains(i)));
    assert!(a.indices().windows(2).all(|w| w[0] < w[1]));
    assert_eq!(a.retain(&train).len(), 180);
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            ForgetSet::random_fraction(&train, bad, 1),
            Err(ForgetSetError::InvalidFraction { .. })
        ));
    }
    // Rounds to zero samples: empty.
    assert!(matches!(
        ForgetSet::random_fraction(&train, 0.001, 1),
        Err(ForgetSetError::Empty { .. })
    ));
    // Rounds to every sample: whole train set.
    assert!(matches!(
        ForgetSet::random_fraction(&train, 0.999, 1),
        Err(ForgetSetError::WholeTrainSet { .. })
    ));
}

/// Writes dataset samples out as PNGs, the way a data subject would hand in photos.
fn photos_of(ds: &Dataset, dir: &Path, picks: &[(usize, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for &(i, name) in picks {
        let px = ds.sample_pixels(i).unwrap();
        write_png(&dir.join(name), &px, ds.channels(), ds.height(), ds.width());
    }
}

#[test]
fn folder_of_photos_matches_training_samples_by_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, split) = dataset(dir.path());
    let photos = dir.path().join("photos");
    photos_of(&ds, &photos, &[(6, "me.png"), (2, "me_too.png")]);
    // The same sample saved as RGB still matches: gray → RGB → gray is lossless.
    let px = ds.sample_pixels(4).unwrap();
    write_png(&photos.join("rgb.png"), &px.repeat(3), 3, 4, 5);
    // A picture that is not in the data, and one that is only in the test split.
    write_png(&photos.join("stranger.png"), &[200; 20], 1, 4, 5);
    photos_of(&ds, &photos, &[(10, "test_sample.png")]);
    std::fs::write(photos.join(".DS_Store"), "junk").unwrap();

    let m = data::match_image_folder(&photos, &ds, &split.train).unwrap();
    assert_eq!(m.matched_count(), 3);
    assert_eq!(m.unmatched_count(), 2);
    let unmatched: Vec<_> = m
        .unmatched
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(unmatched, ["stranger.png", "test_sample.png"]);
    let me = m
        .matched
        .iter()
        .find(|f| f.path.ends_with("me.png"))
        .unwrap();
    assert_eq!(me.indices, vec![6]);

    // Unmatched files make the forget set fail, naming them.
    let e = m.into_forget_set(&split.train).unwrap_err().to_string();
    assert!(
        e.contains("2 of 5 file(s)") && e.contains("stranger.png"),
        "{e}"
    );

    std::fs::remove_file(photos.join("stranger.png")).unwrap();
    std::fs::remove_file(photos.join("test_sample.png")).unwrap();
    let f = ForgetSet::from_image_folder(&photos, &ds, &split.train).unwrap();
    assert_eq!(f.indices(), &[2, 4, 6]);
}

#[test]
fn folder_errors_name_the_offending_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, split) = dataset(dir.path());
    let photos = dir.path().join("photos");
    photos_of(&ds, &photos, &[(1, "a.png")]);
    let err = |expect: &str, names: &str| {
        let e = ForgetSet::from_image_folder(&photos, &ds, &split.train)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect) && e.contains(names), "{e}");
    };

    // Wrong size: never resized.
    write_png(&photos.join("big.png"), &[0; 30], 1, 5, 6);
    err("not resized", "big.png");
    std::fs::remove_file(photos.join("big.png")).unwrap();

    std::fs::write(photos.join("notes.txt"), "hi").unwrap();
    err("not an image file", "notes.txt");
    std::fs::remove_file(photos.join("notes.txt")).unwrap();

    std::fs::write(photos.join("broken.png"), b"\x89PNG\r\n\x1a\n\0\0").unwrap();
    err("cannot decode image", "broken.png");
    std::fs::remove_file(photos.join("broken.png")).unwrap();

    photos_of(&ds, &photos, &[(1, "b.png")]);
    err("same picture as", "b.png");
    std::fs::remove_file(photos.join("b.png")).unwrap();

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = ForgetSet::from_image_folder(&empty, &ds, &split.train).unwrap_err();
    assert!(matches!(e, ForgetSetError::Empty { .. }), "{e}");

    // Photos of every training sample: nothing would be retained.
    let all = dir.path().join("all");
    let picks: Vec<(usize, String)> = (0..8).map(|i| (i, format!("{i}.png"))).collect();
    let picks: Vec<(usize, &str)> = picks.iter().map(|(i, n)| (*i, n.as_str())).collect();
    photos_of(&ds, &all, &picks);
    let e = ForgetSet::from_image_folder(&all, &ds, &split.train).unwrap_err();
    assert!(
        matches!(e, ForgetSetError::WholeTrainSet { len: 8, .. }),
        "{e}"
    );

    // The remaining good photo still works.
    assert_eq!(
        ForgetSet::from_image_folder(&photos, &ds, &split.train)
            .unwrap()
            .indices(),
        &[1]
    );
}

#[test]
fn duplicate_training_images_are_all_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    // Sorted order is a/x (k 0), a/y (k 1), b/w (k 0), b/z (k 2): samples 0 and 2 are
    // the same picture.
    for (class, files) in [
        ("a", [("x.png", 0), ("y.png", 1)]),
        ("b", [("z.png", 2), ("w.png", 0)]),
    ] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for (f, k) in files {
            write_png(
                &dir.path().join(class).join(f),
                &pixels(k, 1, 3, 3),
                1,
                3,
                3,
            );
        }
    }
    let ds = data::load_image_folder(dir.path(), data::ChannelMode::Auto).unwrap();
    assert_eq!(ds.hashes()[0], ds.hashes()[2]);
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    write_png(&photos.join("p.png"), &pixels(0, 1, 3, 3), 1, 3, 3);
    let f = ForgetSet::from_image_folder(&photos, &ds, &[0, 1, 2, 3]).unwrap();
    assert_eq!(f.indices(), &[0, 2]);
}

#[test]
fn jpeg_photos_match_a_jpeg_image_folder_because_both_decode_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let train_dir = dir.path().join("train");
    for class in ["a", "b"] {
        std::fs::create_dir_all(train_dir.join(class)).unwrap();
        for k in 0..3 {
            let seed = k + if class == "b" { 10 } else { 0 };
            write_jpeg(
                &train_dir.join(class).join(format!("{k}.jpg")),
                &pixels(seed, 3, 8, 8),
                3,
                8,
                8,
            );
        }
    }
    let ds = data::load_image_folder(&train_dir, data::ChannelMode::Auto).unwrap();
    assert_eq!((ds.len(), ds.channels()), (6, 3));
    // The subject hands in the very files; JPEG is lossy, so only an identical decoder
    // path makes these hashes agree.
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(train_dir.join("b/1.jpg"), photos.join("me.jpg")).unwrap();
    std::fs::copy(train_dir.join("a/2.jpg"), photos.join("me2.JPG")).unwrap();
    let train: Vec<i64> = (0..6).collect();
    let m = data::match_image_folder(&photos, &ds, &train).unwrap();
    assert_eq!((m.matched_count(), m.unmatched_count()), (2, 0));
    assert_eq!(m.into_forget_set(&train).unwrap().indices(), &[2, 4]);
}

/// The window's preview of a person's folder forgets the matched pictures only;
/// its description (the first line of the saved list) says how many matched
/// nothing instead of claiming none did.
#[test]
fn a_folder_preview_with_an_unmatched_picture_says_so_in_its_origin() {
    use lethe_engine::preview::{ForgetMode, ForgetRequest, Request, answer};
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo/mnist10k-2k.npz");
    let ds = data::load(&data).unwrap();
    let split = lethe_engine::jobs::train::split_of(&ds, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("person");
    let (trained, unseen) = (split.train[0] as usize, split.test[0] as usize);
    photos_of(&ds, &photos, &[(trained, "me.png"), (unseen, "not-me.png")]);
    let request = Request::Forget(ForgetRequest {
        data,
        seed: 0,
        mode: ForgetMode::Folder,
        list_path: PathBuf::new(),
        class: 0,
        fraction: 0.0,
        fraction_seed: 0,
        folder: photos,
    });
    let v = answer(&request).unwrap();
    assert_eq!(v["indices"], serde_json::json!([trained]), "{v}");
    let origin = v["origin"].as_str().unwrap();
    assert!(
        origin.contains("1 picture(s) matched 1 training sample(s), 1 matched no training sample"),
        "{origin}"
    );
    assert!(!origin.contains("none unmatched"), "{origin}");
}
