//! Studies and shadow models on a real Slurm cluster (Debian's slurm-wlm, one
//! node on this machine, started and stopped by `lethe_e2e::slurm::Cluster`):
//!
//! * a 2-method × 2-seed study through `--executor slurm` gives the table and
//!   the models of the local executor;
//! * an array task killed with `scancel` mid-run is submitted again and its
//!   run completes; a run that fails every attempt is reported with its log;
//! * Ctrl-C on the study cancels its array: no task is left queued or running;
//! * LiRA's shadow models trained as array tasks fill the same cache entries,
//!   with the same logits, as models trained locally;
//! * without `sbatch`, or with the controller down, the study fails at
//!   submission with the command's own message and loses nothing.
#![allow(clippy::unwrap_used)]

mod support;

use lethe_e2e::require_binary;
use lethe_e2e::slurm::Cluster;
use lethe_engine::study::StudyResults;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::studies::{cheap_study_of, plugin_folder};
use support::{demo_dir, plugin_library};

/// A plugin folder with the libraries these tests use.
fn plugins(dir: &Path) -> PathBuf {
    plugin_folder(
        dir,
        &[
            "lethe_baseline_retrain",
            "lethe_baseline_finetune",
            "lethe_baseline_neggrad",
            "lethe_attack_metric",
            "lethe_attack_lira",
        ],
    )
}

/// `lethe-cli --plugins DIR/plugins ARGS` in `dir`, talking to `cluster`.
fn lethe(cluster: Option<&Cluster>, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(require_binary("lethe-cli"));
    cmd.arg("--plugins")
        .arg(dir.join("plugins"))
        .args(args)
        .current_dir(dir)
        .env_remove("LETHE_PLUGIN_PATH")
        .env("XDG_DATA_HOME", dir.join("no-user-plugins"))
        .env("LETHE_WORKSPACE", dir);
    if let Some(c) = cluster {
        cmd.env("SLURM_CONF", c.conf());
    }
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The queue's tasks (`jobid_task STATE`), every user's.
fn queue(cluster: &Cluster) -> Vec<(String, String)> {
    let out = cluster
        .command("squeue")
        .args(["--noheader", "--array", "--format=%i %T"])
        .output()
        .unwrap();
    assert!(out.status.success(), "squeue: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Waits (bounded) until some task of the queue runs; its id.
fn first_running(cluster: &Cluster, study: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((id, _)) = queue(cluster).into_iter().find(|(_, s)| s == "RUNNING") {
            return id;
        }
        assert!(
            study.try_wait().unwrap().is_none(),
            "the study ended before any task ran"
        );
        assert!(Instant::now() < deadline, "no task ran within 2 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded) for a spawned command; its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {} s:\n{}",
                limit.as_secs(),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

/// Processes whose command line mentions `needle` (left-over units).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = text(&cmd).replace('\0', " ");
            if cmd.contains(needle) && cmd.contains("run-job") {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

#[test]
fn a_two_method_two_seed_study_on_slurm_gives_the_local_table() {
    let cluster = Cluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugins(d);
    // The study file's `[slurm]` table names the partition.
    let study = cheap_study_of(d, &["FT", "NegGrad"], "\n[slurm]\npartition = \"debug\"\n");
    let study = study.to_str().unwrap();
    let local = ok(
        lethe(None, d, &["study", study, "--out", "local", "--no-cache"])
            .output()
            .unwrap(),
        "the local study",
    );
    let started = Instant::now();
    let slurm = ok(
        lethe(
            Some(&cluster),
            d,
            &[
                "study",
                study,
                "--out",
                "slurm",
                "--no-cache",
                "--executor",
                "slurm",
                "--time",
                "00:20:00",
            ],
        )
        .output()
        .unwrap(),
        "the study on Slurm",
    );
    eprintln!(
        "study on Slurm: {:.0} s\n{}",
        started.elapsed().as_secs_f64(),
        text(&slurm.stderr)
    );
    let log = text(&slurm.stderr);
    assert!(
        log.contains("6 run(s) on Slurm (partition debug)")
            && log.contains("submitted as Slurm job")
            && log.contains("running on")
            && log.contains("6 run(s) done"),
        "{log}"
    );
    let a = StudyResults::load(&d.join("local")).unwrap();
    let b = StudyResults::load(&d.join("slurm")).unwrap();
    assert!(b.missing().is_empty(), "{:?}", b.missing());
    assert_eq!(
        b.table().without_run_times(),
        a.table().without_run_times(),
        "Slurm gave another table than the local executor"
    );
    for r in &a.runs {
        let s = b
            .runs
            .iter()
            .find(|s| s.row == r.row && s.seed == r.seed)
            .unwrap();
        assert_eq!(
            s.weights_sha256, r.weights_sha256,
            "{} seed {}",
            r.row, r.seed
        );
    }
    // Printed tables agree too (run times aside, they are the same text).
    assert!(text(&local.stdout).contains("NegGrad"));
    // Every task finished in Slurm's own books.
    let done = cluster.job_completions();
    assert_eq!(
        done.matches("JobState=COMPLETED").count(),
        6,
        "job completion log:\n{done}"
    );
}

#[test]
fn a_task_killed_by_scancel_is_submitted_again_and_a_run_failing_every_attempt_is_reported() {
    let cluster = Cluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = plugins(d);
    let fixtures = plugin_library("lethe_test_fixtures");
    std::fs::copy(&fixtures, p.join(fixtures.file_name().unwrap())).unwrap();
    // "Boom" panics in every attempt (a test fixture, shown with LETHE_DEV_PLUGINS).
    let study = cheap_study_of(
        d,
        &["FT"],
        "\n[[methods]]\nname = \"Boom\"\nid = \"org.lethe.test.panic\"\n",
    );
    let mut child = lethe(
        Some(&cluster),
        d,
        &[
            "study",
            study.to_str().unwrap(),
            "--out",
            "s",
            "--no-cache",
            "--executor",
            "slurm",
            "--max-parallel",
            "1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let victim = first_running(&cluster, &mut child);
    let out = cluster.command("scancel").arg(&victim).output().unwrap();
    assert!(out.status.success(), "scancel: {}", text(&out.stderr));
    let out = finish(child, Duration::from_secs(600));
    let log = text(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("left the queue without a result")
            && log.contains("submitting it again")
            && log.contains("(attempt 2)"),
        "{log}"
    );
    // The panicking run: three attempts, then reported with its log.
    for seed in [0, 1] {
        assert!(
            log.contains(&format!("FAILED: Boom, seed {seed} (attempt 3 of 3)")),
            "{log}"
        );
    }
    assert!(log.contains("/s/executor/task-"), "{log}");
    let boom = std::fs::read_dir(d.join("s/executor"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|t| t.contains("study run Boom, seed 0"))
        .unwrap();
    assert_eq!(boom.matches("lethe run-job on").count(), 3, "{boom}");
    assert!(boom.contains("index out of bounds"), "{boom}");
    assert!(log.contains("2 run(s) failed"), "{log}");
    let s = StudyResults::load(&d.join("s")).unwrap();
    let missing: Vec<String> = s.missing().into_iter().map(|(r, _)| r).collect();
    assert_eq!(missing, ["Boom", "Boom"], "{log}");
    assert!(
        cluster.job_completions().contains("JobState=CANCELLED"),
        "{}",
        cluster.job_completions()
    );
}

#[test]
fn cancelling_a_study_on_slurm_leaves_no_task_queued_or_running() {
    let cluster = Cluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugins(d);
    let study = cheap_study_of(d, &["FT", "NegGrad"], "");
    let mut child = lethe(
        Some(&cluster),
        d,
        &[
            "study",
            study.to_str().unwrap(),
            "--out",
            "s",
            "--no-cache",
            "--executor",
            "slurm",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    first_running(&cluster, &mut child);
    // SAFETY: SIGINT to our own child, as Ctrl-C in a terminal would send.
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = finish(child, Duration::from_secs(120));
    let log = text(&out.stderr);
    assert!(!out.status.success(), "a cancelled study succeeded:\n{log}");
    assert!(log.contains("cancelled"), "{log}");
    assert!(queue(&cluster).is_empty(), "{:?}", queue(&cluster));
    let study_dir = d.join("s");
    let left = processes_mentioning(&study_dir.to_string_lossy());
    assert!(left.is_empty(), "units still running: {left:?}");
    // What finished is kept; the rest can be resumed.
    assert!(study_dir.join("study.json").is_file());
}

#[test]
fn a_killed_coordinator_is_resumed_by_following_its_queued_tasks() {
    let cluster = Cluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugins(d);
    let study = cheap_study_of(d, &["FT"], "");
    let study = study.to_str().unwrap();
    let args = [
        "study",
        study,
        "--out",
        "s",
        "--no-cache",
        "--executor",
        "slurm",
    ];
    let mut first = lethe(Some(&cluster), d, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    first_running(&cluster, &mut first);
    // SIGKILL: no chance to cancel anything; its tasks stay queued.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!queue(&cluster).is_empty());
    let out = ok(
        lethe(Some(&cluster), d, &args).output().unwrap(),
        "the resumed study",
    );
    let log = text(&out.stderr);
    assert!(
        log.contains("following tasks an earlier run left in the queue")
            && !log.contains("submitted as Slurm job"),
        "{log}"
    );
    assert!(
        StudyResults::load(&d.join("s"))
            .unwrap()
            .missing()
            .is_empty()
    );
    // One array, each of its 4 tasks run once.
    let done = cluster.job_completions();
    assert_eq!(done.matches("JobState=COMPLETED").count(), 4, "{done}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// LiRA offline with 2 shadow models on the leaky demo, into `out`, with its
/// cache in `cache`; extra arguments after.
fn lira(cluster: Option<&Cluster>, d: &Path, cache: &Path, out: &str, extra: &[&str]) -> String {
    let params = r#"{"variant": "offline", "shadow_models": 2, "shadow_population": 1000, "heldout_size": 200, "z_samples": 200}"#;
    let demo = demo_dir();
    let mut args = vec![
        "attack".to_string(),
        "--attack".into(),
        "org.lethe.attack.lira".into(),
        "--device".into(),
        "cpu".into(),
        "--checkpoint".into(),
        demo.join("leaky-mlp.safetensors").display().to_string(),
        "--data".into(),
        demo.join("mnist10k-2k.npz").display().to_string(),
        "--forget".into(),
        demo.join("forget-2k.txt").display().to_string(),
        "--params".into(),
        params.into(),
        "--bootstrap".into(),
        "0".into(),
        "--out".into(),
        out.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(
        lethe(cluster, d, &args)
            .env("LETHE_SHADOW_CACHE", cache)
            .output()
            .unwrap(),
        "lethe attack",
    );
    text(&out.stderr)
}

/// Every model file of a shadow cache: (relative path, its logits).
fn cache_models(cache: &Path) -> Vec<(String, tch::Tensor)> {
    let mut out = Vec::new();
    for set in std::fs::read_dir(cache).unwrap().flatten() {
        for f in std::fs::read_dir(set.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("model-") {
                let ck = lethe_engine::checkpoint::read(f.path()).unwrap();
                out.push((
                    format!("{}/{name}", set.file_name().to_string_lossy()),
                    ck.state_dict.get("logits").unwrap().shallow_clone(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn lira_shadow_models_on_slurm_fill_the_same_cache_entries_as_local_ones() {
    let cluster = Cluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugins(d);
    let (slurm_cache, local_cache) = (d.join("cache-slurm"), d.join("cache-local"));
    let log = lira(
        Some(&cluster),
        d,
        &slurm_cache,
        "on-slurm",
        &["--executor", "slurm"],
    );
    assert!(
        log.contains("training 2 shadow model(s) on Slurm")
            && log.contains("2 shadow model(s) submitted as Slurm job"),
        "{log}"
    );
    lira(None, d, &local_cache, "local", &[]);
    let (a, b) = (cache_models(&slurm_cache), cache_models(&local_cache));
    assert_eq!(
        a.len(),
        2,
        "{:?}",
        a.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    assert_eq!(
        a.iter().map(|m| &m.0).collect::<Vec<_>>(),
        b.iter().map(|m| &m.0).collect::<Vec<_>>(),
        "different cache entries"
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name}: the logits differ");
    }
    let report = |out: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join(out).join("attack.json")).unwrap()).unwrap()
    };
    assert_eq!(
        report("on-slurm")["metrics"]["forget"]["auc"],
        report("local")["metrics"]["forget"]["auc"]
    );
    // Everything cached: a second attack on Slurm submits nothing.
    let log = lira(
        Some(&cluster),
        d,
        &slurm_cache,
        "again",
        &["--executor", "slurm"],
    );
    assert!(!log.contains("submitted"), "{log}");
}

#[test]
fn without_sbatch_or_with_the_controller_down_a_study_fails_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugins(d);
    let study = cheap_study_of(d, &["FT"], "");
    let study = study.to_str().unwrap();
    // No Slurm client on PATH.
    let empty = d.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = lethe(
        None,
        d,
        &[
            "study",
            study,
            "--out",
            "a",
            "--no-cache",
            "--executor",
            "slurm",
        ],
    )
    .env("PATH", &empty)
    .output()
    .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`sbatch` is not installed or not on PATH"),
        "{err}"
    );
    // A cluster whose controller is down: sbatch's own message.
    let cluster = Cluster::start().unwrap();
    cluster.stop().unwrap();
    let started = Instant::now();
    let out = lethe(
        Some(&cluster),
        d,
        &[
            "study",
            study,
            "--out",
            "b",
            "--no-cache",
            "--executor",
            "slurm",
        ],
    )
    .output()
    .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`sbatch --parsable") && err.contains("sbatch: error"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "took {:?}",
        started.elapsed()
    );
    // Nothing lost: the folders hold their study, no run was started.
    for f in ["a", "b"] {
        let s = StudyResults::load(&d.join(f)).unwrap();
        assert!(s.runs.is_empty());
    }
}
