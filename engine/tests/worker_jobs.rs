//! Real `lethe-cli worker` processes running the test-fixture plugin: results,
//! ordered progress, plugin errors, segfaults, aborts, early exits, hangs (timeout,
//! inactivity and cancel), junk on stdout, broken protocol peers, and `plugins list`;
//! containment: processes a plugin starts die with the job (process group) and hold
//! no frame pipe (close-on-exec), an orphaned worker dies with its parent
//! (parent-death signal), a worker that does not exit after its result is killed.
//! Every test also proves the point of the worker: this test process keeps running.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::worker::parent::SUPERVISOR_NOTE;
use lethe_engine::worker::protocol::{
    FromWorker, Hello, Level, PROTOCOL_VERSION, ToWorker, read_frame, write_frame,
};
use lethe_engine::worker::{
    Job, JobOutcome, JobReport, WorkerOptions, run_job, spawn_worker, spawn_worker_cancelled,
};
use serde_json::{Value, json};
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

fn opts() -> WorkerOptions {
    let mut o = WorkerOptions::with_exe(EXE);
    o.timeout = Some(Duration::from_secs(60));
    o.grace = Duration::from_secs(1);
    o
}

fn run_job_on(id: &str, params: Value) -> Job {
    Job::Run {
        library: fixture("lethe_test_fixtures"),
        id: id.into(),
        params,
    }
}

/// Runs a job to the end, returning its report and every event, in order.
fn run(opts: &WorkerOptions, job: Job) -> (JobReport, Vec<FromWorker>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let report = run_job(opts, job, move |e| sink.lock().unwrap().push(e)).unwrap();
    let events = events.lock().unwrap().clone();
    (report, events)
}

fn misbehave(how: &str) -> Job {
    run_job_on("org.lethe.test.misbehave", json!({"how": how}))
}

fn logs(events: &[FromWorker]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            FromWorker::Log { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn fractions(events: &[FromWorker]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            FromWorker::Progress { fraction, .. } => *fraction,
            _ => None,
        })
        .collect()
}

#[test]
fn a_normal_job_streams_ordered_progress_then_its_result() {
    let job = run_job_on("org.lethe.test.progress", json!({"steps": 5}));
    let (report, events) = run(&opts(), job);
    assert_eq!(
        report.outcome,
        JobOutcome::Succeeded(json!({"status": "ok"})),
        "{}",
        report.stderr_tail
    );
    assert!(report.exit.unwrap().success());
    assert_eq!(fractions(&events), vec![0.2, 0.4, 0.6, 0.8, 1.0]);
    // Progress carries the plugin's metrics, step by step.
    let steps: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            FromWorker::Progress {
                metrics: Some(m), ..
            } => m["step"].as_i64(),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
    let logs = logs(&events);
    assert!(logs[0].starts_with("running on lethe"), "{logs:?}");
    assert!(logs.last().unwrap().starts_with("done: loss"), "{logs:?}");
    // Logs and progress interleave in the order the plugin sent them.
    let first_progress = events
        .iter()
        .position(|e| matches!(e, FromWorker::Progress { .. }))
        .unwrap();
    assert!(
        matches!(&events[first_progress - 1], FromWorker::Log { level: Level::Info, text } if text == "step 1: loss 1.000000")
    );
}

#[test]
fn plugin_errors_panics_and_bad_params_are_failures_with_messages() {
    let (report, events) = run(
        &opts(),
        run_job_on("org.lethe.test.panic", json!({"when": "run"})),
    );
    match &report.outcome {
        JobOutcome::Failed(m) => assert!(m.contains("PANIC") || m.contains("panic"), "{m}"),
        other => panic!("{other}"),
    }
    assert_eq!(logs(&events), vec!["about to panic"]);

    let (report, _) = run(
        &opts(),
        run_job_on(
            "org.lethe.test.fail",
            json!({"target": "/x/scores.npy", "reference": "/x/ref.safetensors"}),
        ),
    );
    assert!(
        matches!(&report.outcome, JobOutcome::Failed(m) if m.contains("deliberate failure: cannot score /x/scores.npy")),
        "{}",
        report.outcome
    );

    let (report, _) = run(
        &opts(),
        run_job_on("org.lethe.test.progress", json!({"steps": 999})),
    );
    assert!(
        matches!(&report.outcome, JobOutcome::Failed(m) if m.contains("steps")),
        "{}",
        report.outcome
    );

    let (report, _) = run(
        &opts(),
        Job::Run {
            library: "/nonexistent/libnope.so".into(),
            id: "x".into(),
            params: json!({}),
        },
    );
    assert!(
        matches!(&report.outcome, JobOutcome::Failed(m) if m.contains("/nonexistent/libnope.so")),
        "{}",
        report.outcome
    );
}

#[test]
fn a_segfault_is_reported_as_sigsegv_and_the_parent_survives() {
    let (report, events) = run(&opts(), misbehave("segfault"));
    assert_eq!(
        report.outcome,
        JobOutcome::Crashed {
            signal: Some(11),
            code: None
        },
        "{}",
        report.stderr_tail
    );
    assert!(report.outcome.to_string().contains("SIGSEGV"));
    // What it said before dying is kept.
    assert_eq!(logs(&events), vec!["misbehaving: segfault"]);
    // The parent carries on and can run the next job.
    let (next, _) = run(
        &opts(),
        run_job_on("org.lethe.test.progress", json!({"steps": 1})),
    );
    assert!(next.outcome.is_success(), "{}", next.outcome);
}

#[test]
fn an_abort_is_reported_as_sigabrt() {
    let (report, _) = run(&opts(), misbehave("abort"));
    assert_eq!(
        report.outcome,
        JobOutcome::Crashed {
            signal: Some(6),
            code: None
        }
    );
    assert!(
        report.outcome.to_string().contains("killed by SIGABRT"),
        "{}",
        report.outcome
    );
}

#[test]
fn an_early_exit_is_reported_with_its_code() {
    let (report, _) = run(&opts(), misbehave("exit"));
    assert_eq!(
        report.outcome,
        JobOutcome::Crashed {
            signal: None,
            code: Some(3)
        }
    );
    assert!(
        report
            .outcome
            .to_string()
            .contains("exited early with code 3"),
        "{}",
        report.outcome
    );
}

#[test]
fn a_hang_times_out_and_is_killed() {
    let mut o = opts();
    // Long enough for a debug worker on a loaded 2-core machine to start and
    // log before it hangs (2 s was not, in a clean-clone CI run).
    o.timeout = Some(Duration::from_secs(6));
    let t = Instant::now();
    let (report, events) = run(&o, misbehave("hang"));
    assert_eq!(report.outcome, JobOutcome::TimedOut(Duration::from_secs(6)));
    assert!(
        report.outcome.to_string().contains("timed out after 6.0s"),
        "{}",
        report.outcome
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // Killed, not exited.
    assert_eq!(report.exit.unwrap().code(), None);
    assert_eq!(logs(&events), vec!["misbehaving: hang"]);
}

#[test]
fn cancel_stops_a_cooperative_job_without_killing_it() {
    let (tx, rx) = mpsc::channel();
    let job = run_job_on(
        "org.lethe.test.misbehave",
        json!({"how": "slow", "steps": 200}),
    );
    let handle = spawn_worker(&opts(), job, move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    // Wait for real progress, so the plugin is running when the cancel lands.
    loop {
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            FromWorker::Progress { .. } => break,
            _ => continue,
        }
    }
    assert!(!handle.is_finished());
    let t = Instant::now();
    handle.cancel();
    let report = handle.wait();
    assert_eq!(report.outcome, JobOutcome::Cancelled { killed: false });
    assert!(report.exit.unwrap().success());
    // Within the 1 s grace period (the plugin checks every 100 ms).
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let seen = rx.try_iter().count();
    assert!(seen < 20, "kept running after cancel: {seen} more events");
}

/// Runs a job that starts cancelled to its end: its report and events.
fn run_cancelled(job: Job) -> (JobReport, Vec<FromWorker>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let handle =
        spawn_worker_cancelled(&opts(), job, move |e| sink.lock().unwrap().push(e)).unwrap();
    let report = handle.wait();
    let events = events.lock().unwrap().clone();
    (report, events)
}

#[test]
fn a_job_started_cancelled_enters_run_with_the_flag_up_every_time() {
    // The class-wise fixture's first line is check_cancelled(); uncancelled, it
    // logs its note and returns at once. A cancel sent after the start raced
    // the plugin (the flag went up a few ms into run, or never): with no model to
    // load, such a run mostly got past the check.
    // Four at a time: 20 runs in a few seconds.
    let runs: Vec<(JobReport, Vec<FromWorker>)> = (0..5)
        .flat_map(|_| {
            let batch: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        run_cancelled(run_job_on(
                            "org.lethe.test.classwise",
                            json!({"note": "ran"}),
                        ))
                    })
                })
                .collect();
            batch.into_iter().map(|t| t.join().unwrap())
        })
        .collect();
    assert_eq!(runs.len(), 20);
    for (i, (report, events)) in runs.into_iter().enumerate() {
        assert_eq!(
            report.outcome,
            JobOutcome::Cancelled { killed: false },
            "run {i}: {:?}",
            logs(&events)
        );
        assert!(
            logs(&events).is_empty(),
            "run {i} got past its first check: {:?}",
            logs(&events)
        );
    }
    // The flag is a request: a plugin that never checks it runs to the end.
    let (report, events) = run_cancelled(misbehave("stdout"));
    assert!(
        matches!(report.outcome, JobOutcome::Succeeded(_)),
        "{}",
        report.outcome
    );
    assert_eq!(logs(&events)[0], "misbehaving: stdout");
}

#[test]
fn cancel_kills_a_job_that_ignores_it_after_the_grace_period() {
    let (tx, rx) = mpsc::channel();
    let handle = spawn_worker(&opts(), misbehave("hang"), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    // The plugin's first log line means it is inside run().
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        FromWorker::Log { .. }
    ));
    let t = Instant::now();
    handle.cancel();
    handle.cancel(); // a second cancel changes nothing
    let report = handle.wait();
    let took = t.elapsed();
    assert_eq!(report.outcome, JobOutcome::Cancelled { killed: true });
    assert!(
        report.outcome.to_string().contains("killed"),
        "{}",
        report.outcome
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn plugin_stdout_goes_to_the_log_not_the_frame_stream() {
    let job = run_job_on(
        "org.lethe.test.misbehave",
        json!({"how": "stdout", "steps": 3}),
    );
    let (report, events) = run(&opts(), job);
    assert!(report.outcome.is_success(), "{}", report.outcome);
    assert_eq!(fractions(&events).len(), 3);
    for step in 1..=3 {
        assert!(
            report
                .stderr_tail
                .contains(&format!("junk on stdout {step}")),
            "{}",
            report.stderr_tail
        );
    }
}

/// A fake worker: a shell script that writes `bytes` to stdout and waits for stdin.
fn fake_worker(dir: &Path, bytes: &[u8]) -> WorkerOptions {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("frames.bin");
    std::fs::write(&data, bytes).unwrap();
    let script = dir.join("fake-worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho 'fake worker here' >&2\ncat '{}'\ncat >/dev/null\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = WorkerOptions::with_exe(script);
    o.timeout = Some(Duration::from_secs(10));
    o
}

#[test]
fn the_parent_refuses_a_worker_of_another_protocol_or_a_corrupt_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut frame = Vec::new();
    write_frame(
        &mut frame,
        &FromWorker::Hello(Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            lethe_version: "9.9.9".into(),
        }),
    )
    .unwrap();
    let (report, _) = run(&fake_worker(dir.path(), &frame), misbehave("slow"));
    match &report.outcome {
        JobOutcome::Protocol(m) => {
            assert!(
                m.contains("protocol mismatch") && m.contains("9.9.9"),
                "{m}"
            )
        }
        other => panic!("{other}"),
    }

    let (report, _) = run(
        &fake_worker(dir.path(), b"Segmentation fault? no, just text\n"),
        misbehave("slow"),
    );
    assert!(
        matches!(&report.outcome, JobOutcome::Protocol(m) if m.contains("exceeds")),
        "{}",
        report.outcome
    );
    assert!(report.stderr_tail.contains("fake worker here"));

    // A frame before the hello.
    let mut frame = Vec::new();
    write_frame(&mut frame, &FromWorker::Cancelled).unwrap();
    let (report, _) = run(&fake_worker(dir.path(), &frame), misbehave("slow"));
    assert!(
        matches!(&report.outcome, JobOutcome::Protocol(m) if m.contains("expected a hello")),
        "{}",
        report.outcome
    );
}

#[test]
fn the_worker_refuses_a_parent_of_another_protocol() {
    let mut child = Command::new(EXE)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let hello: FromWorker = read_frame(&mut stdout).unwrap().unwrap();
    assert_eq!(hello, FromWorker::Hello(Hello::ours()));
    let mut stdin = child.stdin.take().unwrap();
    write_frame(
        &mut stdin,
        &ToWorker::Hello(Hello {
            protocol_version: PROTOCOL_VERSION + 7,
            lethe_version: "0.0.0-old".into(),
        }),
    )
    .unwrap();
    let reply: FromWorker = read_frame(&mut stdout).unwrap().unwrap();
    match reply {
        FromWorker::Error { message } => {
            assert!(message.contains("protocol mismatch"), "{message}");
            assert!(message.contains("0.0.0-old"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(read_frame::<_, FromWorker>(&mut stdout).unwrap().is_none());
    assert!(!child.wait().unwrap().success());
}

#[test]
fn plugins_list_describes_good_libraries_and_says_why_others_were_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["lethe_test_fixtures", "lethe_test_fixture_bad_abi"] {
        std::fs::copy(fixture(name), dir.path().join(format!("lib{name}.so"))).unwrap();
    }
    std::fs::write(dir.path().join("libnot_a_library.so"), "just text").unwrap();
    std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();

    let out = Command::new(EXE)
        .args(["plugins", "list", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("liblethe_test_fixtures.so: ok"), "{text}");
    assert!(text.contains("org.lethe.test.progress"), "{text}");
    assert!(text.contains("attack   org.lethe.test.fail"), "{text}");
    assert!(
        text.contains("liblethe_test_fixture_bad_abi.so: refused:"),
        "{text}"
    );
    assert!(text.contains("libnot_a_library.so: refused:"), "{text}");
    assert!(!text.contains("README"), "{text}");

    let out = Command::new(EXE)
        .args(["plugins", "list", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = v[0]["files"]["Ok"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    let ids: Vec<&str> = files[1]["outcome"]["Ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"org.lethe.test.misbehave"), "{ids:?}");
    assert!(files[0]["outcome"]["Err"].as_str().unwrap().contains("ABI"));
}

#[test]
fn an_unlearning_job_runs_over_the_demo_model_and_data_and_reports_artifacts() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo");
    let out = tempfile::tempdir().unwrap();
    let job = Job::Unlearn {
        library: fixture("lethe_test_fixtures"),
        id: "org.lethe.test.tensors".into(),
        params: json!({"lr": 0.01}),
        checkpoint: demo.join("classifier.safetensors"),
        data: demo.join("mnist10k.npz"),
        forget: demo.join("forget.txt"),
        train_rows: None,
        out_dir: out.path().join("job"),
        seed: 1,
        device: "cpu".into(),
    };
    let (report, events) = run(&opts(), job);
    let value = match &report.outcome {
        JobOutcome::Succeeded(v) => v.clone(),
        other => panic!("{other}\n{}", report.stderr_tail),
    };
    let artifacts: Vec<(String, PathBuf)> = events
        .iter()
        .filter_map(|e| match e {
            FromWorker::Artifact { name, path } => Some((name.clone(), path.clone())),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = artifacts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["last_output", "summary", "model"]);
    for (_, path) in &artifacts {
        assert!(
            path.starts_with(out.path().join("job")),
            "{}",
            path.display()
        );
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!(value["artifacts"].as_array().unwrap().len(), 3);
    // The summary the plugin wrote says it saw the whole forget list.
    let forget_lines = std::fs::read_to_string(demo.join("forget.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count() as i64;
    let summary: Value = serde_json::from_slice(&std::fs::read(&artifacts[1].1).unwrap()).unwrap();
    assert_eq!(summary["forget"], forget_lines);
    assert_eq!(summary["seen"], forget_lines);

    // Setup errors are job failures naming the culprit.
    let bad = Job::Unlearn {
        library: fixture("lethe_test_fixtures"),
        id: "org.lethe.test.tensors".into(),
        params: json!({}),
        checkpoint: demo.join("missing.safetensors"),
        data: demo.join("mnist10k.npz"),
        forget: demo.join("forget.txt"),
        train_rows: None,
        out_dir: out.path().join("bad"),
        seed: 1,
        device: "cpu".into(),
    };
    let (report, _) = run(&opts(), bad);
    assert!(
        matches!(&report.outcome, JobOutcome::Failed(m) if m.contains("missing.safetensors")),
        "{}",
        report.outcome
    );
}

#[test]
fn a_scan_whose_worker_crashes_names_each_library_with_the_crash() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["liba.so", "libb.so"] {
        std::fs::write(plugins.join(name), "x").unwrap();
    }
    // Stands in for a library whose initialiser segfaults: every worker dies.
    let script = dir.path().join("crashing-worker");
    std::fs::write(&script, "#!/bin/sh\necho 'loading...' >&2\nkill -SEGV $$\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = WorkerOptions::with_exe(&script);
    o.timeout = Some(Duration::from_secs(10));
    let scans = lethe_engine::worker::scan_plugins(&o, &[plugins.clone(), dir.path().join("nope")]);
    assert_eq!(scans.len(), 2);
    let files = scans[0].files.as_ref().unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["liba.so", "libb.so"]);
    for f in files {
        let why = f.outcome.as_ref().unwrap_err();
        assert!(why.contains("killed by SIGSEGV"), "{why}");
        assert!(why.contains("loading..."), "{why}");
    }
    assert!(scans[1].files.is_err());
}

#[test]
fn plugins_list_searches_lethe_plugin_path_and_the_dev_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("lethe_test_fixtures"),
        dir.path().join("libmine.so"),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["plugins", "list"])
        .env("LETHE_PLUGIN_PATH", dir.path())
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with(&format!("{}\n  libmine.so: ok\n", dir.path().display())),
        "{text}"
    );
    // lethe-cli runs from cargo's profile folder, whose built plugins are listed too.
    let profile = Path::new(EXE).parent().unwrap();
    assert!(text.contains(&format!("{}\n", profile.display())), "{text}");
}

#[test]
fn a_panicking_event_callback_still_kills_the_worker() {
    let handle = spawn_worker(&opts(), misbehave("hang"), |_| {
        panic!("deliberate panic in the event callback")
    })
    .unwrap();
    let pid = handle.pid();
    let report = handle.wait();
    assert!(
        matches!(&report.outcome, JobOutcome::Protocol(m) if m.contains("supervisor panicked")),
        "{}",
        report.outcome
    );
    // Killed and reaped: no process (not even a zombie) left behind.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// Whether process `pid` is running (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) STATE ...`: the state follows the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Polls until `pid` is gone; false if it still runs after `within`.
fn gone_within(pid: u32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// What fd `fd` of `pid` is (`pipe:[1234]`, `/dev/null`, ...).
fn fd_target(pid: u32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The pipes `pid` holds, as (fd, `pipe:[inode]`).
fn pipes_of(pid: u32) -> Vec<(u32, String)> {
    let mut pipes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let target = fd_target(pid, fd);
        if target.starts_with("pipe:") {
            pipes.push((fd, target));
        }
    }
    pipes
}

/// Whether fd `fd` of `pid` is close-on-exec.
fn cloexec(pid: u32, fd: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            u32::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|flags| flags & libc::O_CLOEXEC as u32 != 0)
}

/// The pipes this test process holds without close-on-exec (cargo's jobserver, a
/// terminal's): every child inherits them, they belong to no worker.
fn inherited_pipes() -> Vec<String> {
    let me = std::process::id();
    pipes_of(me)
        .into_iter()
        .filter(|(fd, _)| !cloexec(me, *fd))
        .map(|(_, p)| p)
        .collect()
}

/// The pid the fixture logged as `grandchild PID`.
fn grandchild_in(events: &[FromWorker]) -> Option<u32> {
    logs(events)
        .iter()
        .find_map(|l| l.strip_prefix("grandchild ").map(|p| p.parse().unwrap()))
}

#[test]
fn cancel_kills_the_processes_a_plugin_started_and_they_hold_no_frame_pipe() {
    let (tx, rx) = mpsc::channel();
    let handle = spawn_worker(&opts(), misbehave("grandchild"), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let worker = handle.pid();
    let mut seen = Vec::new();
    let grandchild = loop {
        seen.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
        if let Some(pid) = grandchild_in(&seen) {
            break pid;
        }
    };
    assert!(alive(grandchild));
    // The worker's frame pipes: every pipe it holds but its stderr (fds 1 and 2)
    // and those every process started here inherits.
    let stderr = fd_target(worker, 2);
    let inherited = inherited_pipes();
    let frames: Vec<String> = pipes_of(worker)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| *p != stderr && !inherited.contains(p))
        .collect();
    // Close-on-exec: the plugin's process inherited none of them, and reads
    // /dev/null, not the parent's cancel, on its stdin.
    let held: Vec<String> = pipes_of(grandchild)
        .into_iter()
        .filter(|(_, pipe)| frames.contains(pipe))
        .map(|(fd, pipe)| format!("{pipe} as fd {fd}"))
        .collect();
    let stdin = fd_target(grandchild, 0);

    // The fixture ignores the cancel: killed after the grace period, with its
    // process group, so the `sleep 60` it started goes too.
    handle.cancel();
    let report = handle.wait();
    let gone = gone_within(grandchild, Duration::from_secs(3));
    if !gone {
        // SAFETY: a test cleaning up the process it just failed to see killed.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
    }
    assert!(frames.len() >= 2, "frames in and out: {frames:?}");
    assert!(
        held.is_empty(),
        "the plugin's process holds frame pipes: {held:?}"
    );
    assert_eq!(stdin, "/dev/null");
    assert_eq!(report.outcome, JobOutcome::Cancelled { killed: true });
    assert!(
        gone,
        "the plugin's process {grandchild} outlived its cancelled job"
    );
}

#[test]
fn processes_a_plugin_leaves_behind_end_with_its_job() {
    let (report, events) = run(&opts(), misbehave("leave_grandchild"));
    assert!(report.outcome.is_success(), "{}", report.outcome);
    // The worker itself exited normally; only what it left behind was killed.
    assert!(report.exit.unwrap().success());
    assert!(
        !report.stderr_tail.contains(SUPERVISOR_NOTE),
        "{}",
        report.stderr_tail
    );
    let grandchild = grandchild_in(&events).unwrap();
    let gone = gone_within(grandchild, Duration::from_secs(3));
    if !gone {
        // SAFETY: a test cleaning up the process it just failed to see killed.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
    }
    assert!(gone, "the plugin's process {grandchild} outlived its job");
}

#[test]
fn a_silent_worker_is_killed_after_the_inactivity_limit_but_a_chatty_one_is_not() {
    let mut o = opts();
    o.inactivity = Some(Duration::from_secs(4));
    // 6 s of work, a progress frame every 100 ms: longer than the limit, never
    // silent for that long.
    let (report, _) = run(
        &o,
        run_job_on(
            "org.lethe.test.misbehave",
            json!({"how": "slow", "steps": 60}),
        ),
    );
    assert!(report.outcome.is_success(), "{}", report.outcome);

    // One log line, then nothing.
    let t = Instant::now();
    let (report, events) = run(&o, misbehave("hang"));
    let took = t.elapsed();
    assert_eq!(report.outcome, JobOutcome::Inactive(Duration::from_secs(4)));
    assert!(
        report
            .outcome
            .to_string()
            .contains("no message from the worker for 4.0s"),
        "{}",
        report.outcome
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(report.exit.unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(logs(&events), vec!["misbehaving: hang"]);
}

/// A fake worker that sends `frames`, then runs `then` (shell) with a
/// `sleep 60` of its own in the background, logging `sleeper PID` on stderr.
fn lingering_worker(dir: &Path, frames: &[u8], then: &str) -> WorkerOptions {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("frames.bin");
    std::fs::write(&data, frames).unwrap();
    let script = dir.join("lingering-worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat '{}'\n{then}\nsleep 60 &\necho \"sleeper $!\" >&2\nwait\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = WorkerOptions::with_exe(script);
    o.timeout = Some(Duration::from_secs(30));
    o.exit_grace = Duration::from_secs(1);
    o
}

fn sleeper_in(stderr: &str) -> u32 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("sleeper "))
        .unwrap_or_else(|| panic!("no sleeper in {stderr}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_worker_that_does_not_exit_after_its_result_is_killed_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut frames = Vec::new();
    write_frame(&mut frames, &FromWorker::Hello(Hello::ours())).unwrap();
    write_frame(
        &mut frames,
        &FromWorker::Result {
            value: json!({"status": "ok"}),
        },
    )
    .unwrap();
    for (then, says) in [
        // Its output still open (the sleep inherits it).
        (":", "sent its final message but had not exited"),
        // Its output closed, the process still there.
        ("exec >&-", "closed its output but had not exited"),
    ] {
        let o = lingering_worker(dir.path(), &frames, then);
        let t = Instant::now();
        let (report, _) = run(&o, misbehave("slow"));
        let took = t.elapsed();
        // The result stands...
        assert_eq!(
            report.outcome,
            JobOutcome::Succeeded(json!({"status": "ok"})),
            "{}",
            report.stderr_tail
        );
        // ...but the worker was killed after the 1 s exit grace, not the 30 s timeout,
        assert!(took < Duration::from_secs(6), "{then}: {took:?}");
        assert_eq!(report.exit.unwrap().signal(), Some(libc::SIGKILL));
        // and the job log says so.
        let note = report
            .stderr_tail
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            note.starts_with(SUPERVISOR_NOTE) && note.contains(says),
            "{then}: {}",
            report.stderr_tail
        );
        // Its process group went with it.
        let sleeper = sleeper_in(&report.stderr_tail);
        let gone = gone_within(sleeper, Duration::from_secs(3));
        if !gone {
            // SAFETY: a test cleaning up the process it just failed to see killed.
            unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
        }
        assert!(gone, "{then}: the worker's sleep {sleeper} outlived it");
    }
}

/// Set in the middle process of the orphan test.
const ORPHAN_PARENT: &str = "LETHE_TEST_ORPHAN_PARENT";

#[test]
fn an_orphaned_worker_dies_with_the_process_that_started_it() {
    const NAME: &str = "an_orphaned_worker_dies_with_the_process_that_started_it";
    if std::env::var_os(ORPHAN_PARENT).is_some() {
        // The middle process: a worker that ignores everything, started from a
        // thread that ends at once (the parent-death signal follows the forking
        // thread, so the worker must not go with this one), then wait to be killed.
        let handle = std::thread::spawn(|| spawn_worker(&opts(), misbehave("hang"), |_| {}))
            .join()
            .unwrap()
            .unwrap();
        // On a line of its own: the test harness has printed `test NAME ... `.
        println!("\nworker pid {}", handle.pid());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let mut middle = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env(ORPHAN_PARENT, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(middle.stdout.take().unwrap()).lines();
    let worker: u32 = loop {
        let line = lines.next().expect("the middle process ended").unwrap();
        if let Some(pid) = line.split("worker pid ").nth(1) {
            break pid.trim().parse().unwrap();
        }
    };
    // It outlived the thread that started it.
    std::thread::sleep(Duration::from_millis(500));
    let survived_thread = alive(worker);
    // The app dies without a chance to cancel anything.
    middle.kill().unwrap();
    middle.wait().unwrap();
    let gone = gone_within(worker, Duration::from_secs(5));
    if !gone {
        // SAFETY: a test cleaning up the worker group it just failed to see killed.
        unsafe { libc::kill(-(worker as i32), libc::SIGKILL) };
    }
    assert!(
        survived_thread,
        "the worker died with the thread that started it"
    );
    assert!(
        gone,
        "the worker {worker} outlived the process that started it"
    );
}

#[test]
fn concurrent_workers_hold_none_of_each_others_pipes() {
    // std creates a Command's pipes close-on-exec (pipe2(O_CLOEXEC)): a second
    // worker must not inherit the first one's pipe ends, or the first would never
    // see end-of-file on its input when its parent closes it.
    let started = |tx: mpsc::Sender<()>| {
        spawn_worker(&opts(), misbehave("hang"), move |_| {
            let _ = tx.send(());
        })
        .unwrap()
    };
    let (tx, rx) = mpsc::channel();
    let a = started(tx.clone());
    let b = started(tx);
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    let inherited = inherited_pipes();
    let own = |pid: u32| -> Vec<(u32, String)> {
        pipes_of(pid)
            .into_iter()
            .filter(|(_, p)| !inherited.contains(p))
            .collect()
    };
    let (pa, pb) = (own(a.pid()), own(b.pid()));
    assert!(pa.len() >= 3 && pb.len() >= 3, "{pa:?} {pb:?}");
    for (fd, pipe) in &pb {
        assert!(
            !pa.iter().any(|(_, p)| p == pipe),
            "worker b holds worker a's pipe {pipe} as fd {fd}"
        );
    }
    a.cancel();
    b.cancel();
    assert_eq!(a.wait().outcome, JobOutcome::Cancelled { killed: true });
    assert_eq!(b.wait().outcome, JobOutcome::Cancelled { killed: true });
}
