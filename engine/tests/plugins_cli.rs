//! `lethe-cli plugins check` and `lethe-cli unlearn` as a user runs them: real
//! processes, real compiled plugins, the bundled demo.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

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

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo")
}

fn lethe(args: &[&str], cwd: &Path) -> Output {
    Command::new(EXE)
        .args(args)
        .current_dir(cwd)
        // Only the folders a test names: not the user's plugins, not the dev build.
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"))
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

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn the_template_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture("lethe_plugin_template");
    let o = lethe(&["plugins", "check", lib.to_str().unwrap()], dir.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for check in [
        "ok   library: loads",
        "ok   org.example.gradient-ascent: descriptor",
        "ok   org.example.gradient-ascent: defaults (3 parameter(s))",
        "ok   org.example.gradient-ascent: runs on the demo (classifier.safetensors",
        "ok   org.example.gradient-ascent: handles cancel",
        "conforms",
    ] {
        assert!(out.contains(check), "missing {check:?} in\n{out}");
    }
}

/// The `sh` block after `<!-- tutorial:rust -->` in plugin-api/README.md.
fn readme_tutorial() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let (_, after) = text
        .split_once("<!-- tutorial:rust -->\n```sh\n")
        .expect("plugin-api/README.md has no tutorial:rust block");
    let (script, _) = after.split_once("\n```").unwrap();
    script.to_string()
}

/// Hard-links what `from` holds into `to` (folders recursively), leaving out
/// the entries `skip` names and what `to` already has.
fn link_tree(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip(&name.to_string_lossy()) || to.join(&name).exists() {
            continue;
        }
        if entry.file_type()?.is_dir() {
            link_tree(&entry.path(), &to.join(&name), &|_| false)?;
        } else if entry.file_type()?.is_file() {
            std::fs::hard_link(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[test]
fn the_readme_tutorial_builds_the_template_outside_the_workspace() {
    // The plugin is built by a cargo of its own, in a folder outside the
    // workspace, into target/outside-build: not target/debug, which the cargo
    // running this test may hold locked, and where the plugin would join the
    // development build's plugins. Its dependencies (tch, torch-sys's C++ shim)
    // are the very units target/debug holds (same hashes), so a new
    // outside-build starts as hard links to them: a few seconds instead of
    // minutes (6.5 min cold on a loaded 2-core machine). The SDK crates
    // themselves are left out and rebuilt, so an edit to them is always seen.
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let outside = profile.parent().unwrap().join("outside-build");
    // Every time, as links for what it lacks (a walk of a few thousand names):
    // after a dependency update the new units are linked too.
    let ours = |n: &str| n.starts_with("lethe") || n.starts_with("liblethe");
    for part in [".fingerprint", "build", "deps"] {
        // Best effort: without the links the build is only slower.
        let _ = link_tree(
            &profile.join(part),
            &outside.join("debug").join(part),
            &ours,
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    assert!(!tmp.path().starts_with(&root));
    std::fs::create_dir_all(tmp.path().join("my-method")).unwrap();
    std::os::unix::fs::symlink(&outside, tmp.path().join("my-method/target")).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(EXE, bin.join("lethe")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let o = Command::new("bash")
        .args(["-euc", &readme_tutorial()])
        .current_dir(tmp.path())
        .env("LETHE", &root)
        .env("PATH", path)
        // This machine has the registry's files, not the network.
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("LIBTORCH")
        .env_remove("LIBTORCH_CXX11_ABI")
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", tmp.path().join("no-user-plugins"))
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for line in [
        "Compiling my-method v0.1.0",
        "ok   library: loads (1 method(s)/attack(s))",
        "ok   org.example.my-method: runs on the demo (classifier.safetensors",
        "ok   org.example.my-method: handles cancel",
        "conforms",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // Built against the checkout's SDK, not copied from the workspace's build.
    assert!(outside.join("debug/libmy_method.so").is_file(), "{out}");
    eprintln!("tutorial: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn the_check_fails_plugins_that_ignore_cancel_panic_or_mismatch_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture("lethe_test_fixtures");
    let o = lethe(&["plugins", "check", lib.to_str().unwrap()], dir.path());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    // The tensor test method never calls check_cancelled: it runs to the end, or
    // on a slow machine past the grace period and is killed; either way it fails.
    let cancel_line = out
        .lines()
        .find(|l| l.contains("org.lethe.test.tensors: handles cancel"))
        .unwrap_or_default();
    assert!(
        cancel_line.contains("FAIL")
            && (cancel_line.contains("still ran to the end")
                || cancel_line.contains("had to be killed"))
            && cancel_line.contains("call check_cancelled() in every loop"),
        "{out}"
    );
    assert!(
        out.contains("ok   org.lethe.test.tensors: runs on the demo"),
        "{out}"
    );
    assert!(
        out.contains("warn org.lethe.test.tensors: citation"),
        "{out}"
    );
    // A method that declares classifiers and whole classes only is run on the
    // classifier with a whole class, and a cancel before it starts stops it.
    assert!(
        out.contains("ok   org.lethe.test.classwise: runs on the demo (classifier.safetensors"),
        "{out}"
    );
    assert!(
        out.contains("ok   org.lethe.test.classwise: handles cancel"),
        "{out}"
    );
    // A cancel before run is entered stops one whose first line checks, with no
    // race (the flag is up before the call).
    assert!(
        out.contains("ok   org.lethe.test.classwise: handles cancel (cancelled before run was entered, it stopped)"),
        "{out}"
    );
    // One that polls as it works stops when cancelled at its first log line;
    // one that ends right after its first log line is too short to tell.
    assert!(
        out.contains("ok   org.lethe.test.misbehave: stops mid-run (cancelled at its first progress report or log line, it stopped"),
        "{out}"
    );
    assert!(
        out.contains("warn org.lethe.test.classwise: stops mid-run (it finished right after the cancel, too soon to tell"),
        "{out}"
    );
    // What a plugin logs during the demo run is shown under its line.
    assert!(
        out.contains("org.lethe.test.progress: runs on the demo")
            && out.contains("         | info: done: loss 0.262144, w 0.409600"),
        "{out}"
    );
    // A required parameter (no default) is not a defect, but the check needs a
    // demo value: it says how to give one, and takes it from --set.
    // A required checkpoint path it fills with the demo's, and says so.
    assert!(
        out.contains(
            "FAIL org.lethe.test.fail: defaults (required parameter(s) without a default: give demo values with --set target=VALUE; the check supplies reference = the demo's classifier.safetensors (a checkpoint))"
        ),
        "{out}"
    );
    let with = lethe(
        &[
            "plugins",
            "check",
            lib.to_str().unwrap(),
            "--set",
            "target=scores.npz",
            "--set",
            "nosuch=1",
            "--set",
            "note=7",
            "--set",
            "busy_ms=2500",
        ],
        dir.path(),
    );
    let with = text(&with);
    assert!(
        with.contains("ok   org.lethe.test.fail: defaults (2 parameter(s), target from --set, reference = the demo's classifier.safetensors (a checkpoint))"),
        "{with}"
    );
    // The supplied value reached the run (its log line, under the run's line).
    let reference = demo().join("classifier.safetensors");
    assert!(
        with.lines()
            .any(|l| l.starts_with("         | info: reference: ")
                && Path::new(l.trim_start_matches("         | info: reference: "))
                    .canonicalize()
                    .is_ok_and(|p| p == reference.canonicalize().unwrap())),
        "{with}"
    );
    // Cancelled at its first progress report, it worked on for 2.5 s without
    // polling: it fails the mid-run check (it passed the check before the start).
    assert!(
        with.contains("ok   org.lethe.test.classwise: handles cancel")
            && with.contains("FAIL org.lethe.test.classwise: stops mid-run (cancelled during its work, it ran on for"),
        "{with}"
    );
    // Its log lines from that run are shown under the failed step (indented).
    let lines: Vec<&str> = with.lines().collect();
    let failed = lines
        .iter()
        .position(|l| l.contains("FAIL org.lethe.test.classwise: stops mid-run"))
        .unwrap();
    assert_eq!(lines[failed + 1], "         | info: note: 7", "{with}");
    // A string parameter crosses the ABI (a number on the command line is its text).
    assert!(
        with.contains(
            "ok   org.lethe.test.classwise: defaults (3 parameter(s), busy_ms, note from --set)"
        ) && with.contains("         | info: note: 7"),
        "{with}"
    );
    assert!(
        with.contains("deliberate failure: cannot score scores.npz"),
        "the value reached the run: {with}"
    );
    assert!(
        with.contains(
            "FAIL library: --set (no method or attack in this library has a parameter named `nosuch`)"
        ),
        "{with}"
    );
    // The panic test panics with its defaults: the run fails with the message.
    assert!(
        out.contains(
            "FAIL org.lethe.test.panic: runs on the demo (on classifier.safetensors: failed:"
        ),
        "{out}"
    );
    assert!(out.contains("check(s) failed"), "{out}");

    let bad = fixture("lethe_test_fixture_bad_abi");
    let o = lethe(&["plugins", "check", bad.to_str().unwrap()], dir.path());
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("FAIL library: loads"), "{out}");
    assert!(out.contains("ABI"), "{out}");

    let o = lethe(&["plugins", "check", "no-such.so"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("no-such.so: no such plugin library"));
}

#[test]
fn unlearn_runs_a_method_found_by_id_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        fixture("lethe_plugin_template"),
        plugins.join("libtemplate.so"),
    )
    .unwrap();
    let demo = demo();
    let ckpt = demo.join("classifier.safetensors");
    let before = sha256(&ckpt);
    let (data, forget) = (demo.join("mnist10k.npz"), demo.join("forget.txt"));
    let args = |method: &str, out: &str, forget: &Path| -> Vec<String> {
        [
            "--plugins",
            plugins.to_str().unwrap(),
            "unlearn",
            "--method",
            method,
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--forget",
            forget.to_str().unwrap(),
            "--out",
            out,
            "--device",
            "cpu",
            "--set",
            "epochs=2",
            "--set",
            "lr=0.01",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        lethe(&a, dir.path())
    };
    let o = run(args("org.example.gradient-ascent", "out1", &forget));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Two epochs reported, with the plugin's metrics.
    assert!(out.contains("[ 50%] epoch 1/2"), "{out}");
    assert!(out.contains("[100%] epoch 2/2"), "{out}");
    assert!(out.contains("forget_loss"), "{out}");
    let model = dir.path().join("out1/model.safetensors");
    assert!(model.is_file(), "{out}");
    assert_eq!(sha256(&ckpt), before, "the original checkpoint changed");
    // The result records what produced it.
    let info = lethe(
        &["checkpoint", "inspect", model.to_str().unwrap()],
        dir.path(),
    );
    let info = text(&info);
    assert!(info.contains("org.example.gradient-ascent"), "{info}");

    // The same output folder again: refused, nothing touched.
    let stamp = std::fs::metadata(&model).unwrap().modified().unwrap();
    let o = run(args("org.example.gradient-ascent", "out1", &forget));
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        stamp
    );

    // An unknown method names what is available.
    let o = run(args("org.nope.method", "out2", &forget));
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("no plugin offers `org.nope.method`"), "{out}");
    assert!(
        out.contains("available: org.example.gradient-ascent"),
        "{out}"
    );

    // A malformed forget list fails the job, naming the file and line.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "12\nseven\n").unwrap();
    let o = run(args("org.example.gradient-ascent", "out3", &bad));
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("bad.txt:2: cannot read \"seven\""), "{out}");
    assert!(!dir.path().join("out3/model.safetensors").exists());

    // A parameter outside its range is refused before anything runs.
    let mut a = args("org.example.gradient-ascent", "out4", &forget);
    a.extend(["--set".into(), "epochs=0".into()]);
    let o = run(a);
    assert!(!o.status.success());
    assert!(text(&o).contains("epochs"), "{}", text(&o));
}

#[test]
fn a_development_build_hides_its_test_fixtures_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    // A cargo profile folder (cargo marks them with .cargo-lock) holding a test
    // fixture beside a plugin of someone's own.
    let profile = tmp.path().join("target-debug");
    std::fs::create_dir(&profile).unwrap();
    std::fs::write(profile.join(".cargo-lock"), "").unwrap();
    std::fs::copy(
        fixture("lethe_test_fixtures"),
        profile.join("liblethe_test_fixtures.so"),
    )
    .unwrap();
    std::fs::copy(fixture("lethe_test_fixtures"), profile.join("libmine.so")).unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["plugins", "list", "--plugins", profile.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = Command::new(EXE)
            .args(&args)
            .current_dir(tmp.path())
            .env_remove("LETHE_PLUGIN_PATH")
            .env_remove("LETHE_DEV_PLUGINS")
            .env("XDG_DATA_HOME", tmp.path().join("none"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = list(&[]);
    assert!(plain.contains("libmine.so: ok"), "{plain}");
    assert!(!plain.contains("liblethe_test_fixtures.so"), "{plain}");
    let dev = list(&["--dev-plugins"]);
    assert!(dev.contains("liblethe_test_fixtures.so: ok"), "{dev}");
    // Any other folder lists everything it holds.
    std::fs::remove_file(profile.join(".cargo-lock")).unwrap();
    assert!(list(&[]).contains("liblethe_test_fixtures.so: ok"));
}
