//! The suite's own harness scripts, run on a real cargo project made here: a test
//! binary that dies at exit after its tests passed must fail `./run test`'s
//! summary (tests/summarize.sh) and be named there, and tests/repeat.sh must
//! report every run that did not exit cleanly.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_e2e::workspace_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project with two test binaries: `dies_at_exit` (its test passes; with
/// CRASH_AT_EXIT set the process dies of SIGSEGV in an atexit handler, as a
/// thread inside libtorch during exit would: a faulting store) and `plain` (with FAIL_ONE set, one
/// test fails the ordinary way).
fn make_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"harness-probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.join("tests/dies_at_exit.rs"),
        r#"
extern "C" {
    fn atexit(cb: extern "C" fn()) -> i32;
}
extern "C" fn crash() {
    // A real invalid access: Rust's runtime handles a raised SIGSEGV itself,
    // a faulting store re-faults under the default action.
    unsafe { std::ptr::write_volatile(8usize as *mut u8, 1) };
}
#[test]
fn passes_then_the_process_dies() {
    if std::env::var_os("CRASH_AT_EXIT").is_some() {
        unsafe { atexit(crash) };
    }
    assert_eq!(2 + 2, 4);
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/plain.rs"),
        r#"
#[test]
fn fine() {}
#[test]
fn fails_when_asked() {
    assert!(std::env::var_os("FAIL_ONE").is_none(), "asked to fail");
}
"#,
    )
    .unwrap();
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into())
}

/// `cargo test --no-fail-fast` in `dir` with `envs`: its combined output and status.
fn cargo_test(dir: &Path, envs: &[(&str, &str)]) -> (String, i32) {
    // One stream, interleaved as `./run test` sees it (`2>&1`): cargo's
    // "Running" lines go to stderr, the tests' results to stdout.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" test --offline --no-fail-fast 2>&1")
        .arg(cargo())
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("CRASH_AT_EXIT")
        .env_remove("FAIL_ONE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text, out.status.code().unwrap_or(-1))
}

/// tests/summarize.sh on `log`: its output and exit code.
fn summarize(dir: &Path, log: &str, status: i32) -> (String, i32) {
    let file = dir.join(format!("log-{status}-{}.txt", log.len()));
    std::fs::write(&file, log).unwrap();
    let out = Command::new(workspace_root().join("tests/summarize.sh"))
        .arg(&file)
        .arg(status.to_string())
        .arg("0")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn summary_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("== test summary:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"))
}

#[test]
fn a_binary_that_dies_after_its_tests_pass_fails_the_summary_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("probe");
    make_project(&dir);

    // All clean: green, and the counts add up over both binaries.
    let (log, status) = cargo_test(&dir, &[]);
    assert_eq!(status, 0, "{log}");
    let (out, code) = summarize(tmp.path(), &log, status);
    assert_eq!(code, 0, "{out}");
    assert!(summary_line(&out).contains("3 passed, 0 failed"), "{out}");

    // Every test passes, then one binary dies with SIGSEGV at exit.
    let (log, status) = cargo_test(&dir, &[("CRASH_AT_EXIT", "1")]);
    assert!(log.contains("test result: ok. 1 passed"), "{log}");
    assert_ne!(status, 0, "cargo itself must see the crash:\n{log}");
    let (out, code) = summarize(tmp.path(), &log, status);
    assert_eq!(code, 1, "{out}");
    assert!(summary_line(&out).contains("3 passed, 1 failed"), "{out}");
    let crash = out
        .lines()
        .skip_while(|l| !l.starts_with("crashed or killed"))
        .nth(1)
        .unwrap_or_else(|| panic!("the crashed binary is not named:\n{out}"));
    assert!(
        crash.contains("dies_at_exit (tests/dies_at_exit.rs)"),
        "{out}"
    );
    assert!(crash.contains("SIGSEGV"), "{out}");
    assert!(crash.contains("after all its tests passed"), "{out}");

    // An ordinary failing test is counted once, not again as a crash.
    let (log, status) = cargo_test(&dir, &[("FAIL_ONE", "1"), ("CRASH_AT_EXIT", "1")]);
    let (out, code) = summarize(tmp.path(), &log, status);
    assert_eq!(code, 1, "{out}");
    assert!(summary_line(&out).contains("2 passed, 2 failed"), "{out}");
    assert!(out.contains("fails_when_asked"), "{out}");
    assert!(!out.contains("plain (tests/plain.rs):"), "{out}");
}

#[test]
fn repeat_reports_every_run_that_did_not_exit_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("probe");
    make_project(&dir);
    let (log, status) = cargo_test(&dir, &[]);
    assert_eq!(status, 0, "{log}");
    // The binary cargo ran, from its "Running tests/dies_at_exit.rs (PATH)" line.
    let exe = log
        .lines()
        .find(|l| l.contains("Running tests/dies_at_exit.rs"))
        .and_then(|l| {
            l.rsplit_once('(')
                .map(|(_, p)| p.trim_end_matches(')').to_string())
        })
        .unwrap_or_else(|| panic!("no Running line:\n{log}"));
    let exe = if Path::new(&exe).is_absolute() {
        PathBuf::from(exe)
    } else {
        dir.join(exe)
    };
    let repeat = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(workspace_root().join("tests/repeat.sh"));
        cmd.arg(&exe).arg("3").env("TMPDIR", tmp.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    };
    let (out, code) = repeat(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 of 3 runs exited cleanly, 0 did not"),
        "{out}"
    );
    let (out, code) = repeat(&[("CRASH_AT_EXIT", "1")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("0 of 3 runs exited cleanly, 3 did not"),
        "{out}"
    );
    assert_eq!(
        out.matches("killed by signal 11 (SEGV)").count(),
        3,
        "{out}"
    );
}
