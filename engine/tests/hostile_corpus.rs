//! The corpus of crafted hostile files (`tests/hostile/make_corpus.py`, one per
//! class of attack on the readers) fed to the CLI as a user would, under a 4 GiB
//! address-space limit, and to the preview worker the desktop app reads files
//! through. Each must be refused with a message naming the file and the problem:
//! no hang, no abort, no memory blow-up, and in the worker a refusal rather than
//! a dead worker.
//!
//! The CLI runs have a hang guard (20 s), not a speed target: the refusal times
//! of the release build are in the README (each well under a second).
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::preview::{
    ForgetMode, ForgetRequest, PreviewError, PreviewLimits, Request, in_worker,
};
use lethe_engine::worker::WorkerOptions;
use lethe_engine::worker::protocol::{FromWorker, Hello, write_frame};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

struct Corpus {
    _dir: tempfile::TempDir,
    path: PathBuf,
    entries: Vec<Value>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The corpus, made once per test binary.
fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus");
        let out = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/hostile/make_corpus.py"))
            .arg(&path)
            .arg(repo().join("resources"))
            .output()
            .expect("run make_corpus.py with the project's venv");
        assert!(
            out.status.success(),
            "make_corpus.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read_to_string(path.join("manifest.json")).unwrap();
        let entries: Vec<Value> = serde_json::from_str(&manifest).unwrap();
        Corpus {
            _dir: dir,
            path,
            entries,
        }
    })
}

fn field<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str()
        .unwrap_or_else(|| panic!("manifest entry without {k}: {e}"))
}

#[test]
fn the_corpus_has_one_file_per_class_of_the_issue() {
    // Nine classes; the bombs come in three containers (.pt, .npz, gzipped IDX),
    // deep pickles in two shapes (deep, and many values on the way there).
    let c = corpus();
    assert_eq!(c.entries.len(), 12, "{:?}", c.entries);
    for e in &c.entries {
        assert!(c.path.join(field(e, "file")).exists(), "{e}");
    }
}

#[test]
fn the_cli_refuses_each_crafted_file_promptly_in_bounded_memory() {
    let c = corpus();
    let resources = repo().join("resources");
    let mut table = String::new();
    for e in &c.entries {
        let file = field(e, "file");
        let args: Vec<String> = e["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("{corpus}", &c.path.to_string_lossy())
                    .replace("{resources}", &resources.to_string_lossy())
            })
            .collect();
        let mut cmd = Command::new(EXE);
        cmd.args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("LETHE_WORKSPACE", c.path.parent().unwrap());
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 4 << 30,
                    rlim_max: 4 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{file}: still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(
            status.code(),
            Some(1),
            "{file} ({}): expected a clean refusal (exit 1), got {status}; stderr:\n{stderr}",
            field(e, "class")
        );
        assert!(stderr.starts_with("error: "), "{file}: {stderr}");
        assert!(
            stderr.contains(file),
            "{file}: the message must name it: {stderr}"
        );
        // The phrase must be in the explanation, not only in the path.
        let message = stderr.replace(&c.path.to_string_lossy().into_owned(), "");
        let expect = field(e, "expect");
        assert!(
            message.to_lowercase().contains(&expect.to_lowercase()),
            "{file}: expected {expect:?} in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        table.push_str(&format!(
            "{:>6} ms  {file}: {}\n",
            elapsed.as_millis(),
            stderr.trim()
        ));
    }
    println!("{table}");
}

fn preview_opts() -> WorkerOptions {
    WorkerOptions::with_exe(EXE)
}

fn limits() -> PreviewLimits {
    PreviewLimits {
        timeout: Duration::from_secs(60),
        memory: 4 << 30,
    }
}

/// What the app would ask a worker about each corpus file.
fn request_for(c: &Corpus, e: &Value) -> Request {
    let file = c.path.join(field(e, "file"));
    let demo = repo().join("resources/demo");
    let args: Vec<&str> = e["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let forget = |mode, list_path: PathBuf, folder: PathBuf| ForgetRequest {
        data: demo.join("mnist10k-2k.npz"),
        seed: 0,
        mode,
        list_path,
        class: 0,
        fraction: 0.0,
        fraction_seed: 0,
        folder,
    };
    match args.as_slice() {
        ["checkpoint", ..] => Request::Checkpoint { path: file },
        ["evaluate", ..] if file.extension().is_some_and(|x| x == "csv") => {
            Request::Forget(forget(ForgetMode::ListFile, file, PathBuf::new()))
        }
        ["evaluate", ..] => Request::Artifact {
            path: file,
            values_out: c.path.join("values.f32"),
        },
        ["data", ..] if file.ends_with("huge-png") => Request::Forget(forget(
            ForgetMode::Folder,
            PathBuf::new(),
            file.join("person"),
        )),
        ["data", ..] => Request::Dataset {
            path: file,
            seed: 0,
        },
        other => panic!("no request for {other:?}"),
    }
}

#[test]
fn the_preview_worker_refuses_each_crafted_file_and_survives() {
    let c = corpus();
    let stop = AtomicBool::new(false);
    for e in &c.entries {
        let file = field(e, "file");
        let request = request_for(c, e);
        let r = in_worker::<Value>(&preview_opts(), limits(), request.clone(), &stop);
        let _ = std::fs::remove_file(c.path.join("values.f32"));
        match (&request, r) {
            // A photo that cannot be decoded matches nothing: the preview lists
            // it as unmatched (saving then asks to acknowledge it).
            (Request::Forget(f), Ok(v)) if f.mode == ForgetMode::Folder => {
                let unmatched = &v["folder"]["unmatched"];
                assert_eq!(unmatched.as_array().map(Vec::len), Some(1), "{file}: {v}");
                assert_eq!(
                    v["indices"].as_array().map(Vec::len),
                    Some(0),
                    "{file}: {v}"
                );
            }
            // The crafted model is only weights to a result viewer: it shows the
            // tensors without building the architecture the metadata asks for.
            (Request::Artifact { .. }, Ok(v)) => {
                assert_eq!(
                    v["Tensors"].as_array().map(Vec::len),
                    Some(6),
                    "{file}: {v}"
                );
            }
            (_, Err(PreviewError::Refused(m))) => {
                assert!(m.contains(file), "{file}: the message must name it: {m}");
            }
            (_, other) => panic!("{file}: expected a refusal from a live worker, got {other:?}"),
        }
    }
}

/// A stand-in worker: a shell script that answers the hello, then runs `then`.
fn scripted_worker(dir: &Path, name: &str, then: &str) -> PathBuf {
    let mut frame = Vec::new();
    write_frame(&mut frame, &FromWorker::Hello(Hello::ours())).unwrap();
    let escaped: String = frame.iter().map(|b| format!("\\{b:03o}")).collect();
    let exe = dir.join(name);
    std::fs::write(&exe, format!("#!/bin/sh\nprintf '{escaped}'\n{then}\n")).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    exe
}

#[test]
fn a_worker_that_dies_reading_a_file_is_a_fatal_preview_error_naming_it() {
    // A stand-in worker that crashes like a reader hitting a bug would.
    let dir = tempfile::tempdir().unwrap();
    let exe = scripted_worker(dir.path(), "crashing-worker", "kill -SEGV $$");
    let stop = AtomicBool::new(false);
    let path = dir.path().join("model.pt");
    let r = in_worker::<Value>(
        &WorkerOptions::with_exe(&exe),
        limits(),
        Request::Checkpoint { path: path.clone() },
        &stop,
    );
    match r {
        Err(PreviewError::Fatal(m)) => {
            assert!(m.contains(&*path.to_string_lossy()), "{m}");
            assert!(m.contains("SIGSEGV"), "{m}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }

    // A worker that dies before it answers the hello never read the file: the
    // installation is at fault, and the file is not blamed.
    let broken = dir.path().join("broken-worker");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'libtorch_cpu.so: cannot open' >&2\nexit 127\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = in_worker::<Value>(
        &WorkerOptions::with_exe(&broken),
        limits(),
        Request::Checkpoint { path: path.clone() },
        &stop,
    );
    match r {
        Err(PreviewError::Refused(m)) => {
            assert!(
                m.contains("did not start") && m.contains("libtorch_cpu.so"),
                "{m}"
            );
        }
        other => panic!("expected a refusal that blames no file, got {other:?}"),
    }
}

#[test]
fn preview_workers_run_under_the_memory_limit_and_volunteer_for_the_oom_killer() {
    // A stand-in worker that reports its own limits, then fails.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("limits-worker");
    std::fs::write(
        &exe,
        "#!/bin/sh\necho \"as=$(ulimit -v) oom=$(cat /proc/self/oom_score_adj)\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut opts = WorkerOptions::with_exe(&exe);
    opts.memory_limit = Some(3 << 30);
    let report = lethe_engine::worker::run_job(
        &opts,
        lethe_engine::worker::protocol::Job::Scan {
            libraries: Vec::new(),
        },
        |_| {},
    )
    .unwrap();
    // `ulimit -v` is in KiB.
    assert!(
        report
            .stderr_tail
            .contains(&format!("as={} oom=500", (3u64 << 30) / 1024)),
        "{}",
        report.stderr_tail
    );
}

#[test]
fn a_preview_that_is_stopped_ends_within_a_second_and_blames_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let exe = scripted_worker(dir.path(), "slow-worker", "sleep 30");
    let stop = AtomicBool::new(true);
    let started = Instant::now();
    let r = in_worker::<Value>(
        &WorkerOptions::with_exe(&exe),
        limits(),
        Request::Checkpoint {
            path: dir.path().join("x.pt"),
        },
        &stop,
    );
    assert!(matches!(r, Err(PreviewError::Refused(_))), "{r:?}");
    // Hang guard, not a speed target: the grace period is half a second.
    assert!(started.elapsed() < Duration::from_secs(10));

    // Not stopped, it runs into the time limit: the file is to blame.
    let stop = AtomicBool::new(false);
    let r = in_worker::<Value>(
        &WorkerOptions::with_exe(&exe),
        PreviewLimits {
            timeout: Duration::from_secs(1),
            memory: 4 << 30,
        },
        Request::Checkpoint {
            path: dir.path().join("x.pt"),
        },
        &stop,
    );
    match r {
        Err(PreviewError::Fatal(m)) => assert!(m.contains("longer than 1 s"), "{m}"),
        other => panic!("expected a fatal time-out, got {other:?}"),
    }
}
