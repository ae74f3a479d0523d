//! Per-sample verification of a deletion: `lethe verify-samples RUN` runs as a
//! subprocess of this executable (off the UI thread, as `lethe evaluate` and
//! `lethe study` do), so the GUI gets exactly what the CLI computes: U-LiRA on
//! the unlearned model and online LiRA on the original with the same shadow
//! models, and the onion effect on retained samples. It writes into a new
//! folder `verify-samples-TIME` inside the deletion's run folder (`after/` and
//! `before/` hold each attack's files), where the GUI finds it after a restart.
//!
//! A subprocess rather than two queued attack jobs: the comparison (same roles,
//! same held-out rows, the onion table) is the engine's, the executor choice is
//! the CLI's `--jobs`/`--executor slurm`, and stopping it is stopping one process.

use crate::attack_report::AttackSummary;
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The result file `lethe verify-samples` writes.
pub const RESULT_FILE: &str = "per_sample.json";
/// Prefix of the result folders inside a run folder.
pub const FOLDER_PREFIX: &str = "verify-samples-";

/// One sample of a table: p-values on the original (LiRA) and the unlearned
/// model (U-LiRA).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SampleLine {
    /// Dataset row.
    pub row: i64,
    /// p-value before the deletion.
    pub p_before: f64,
    /// p-value after.
    pub p_after: f64,
}

/// The retained samples before and after.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Onion {
    /// Held-out retained samples compared.
    pub samples: usize,
    /// Significant after but not before.
    pub newly_significant: usize,
    /// Significant before but not after.
    pub no_longer_significant: usize,
    /// Median of `−log10 p` after minus before.
    pub median_change: f64,
    /// The largest increases of exposure.
    pub most_exposed: Vec<SampleLine>,
}

/// The settings both attacks shared.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Settings {
    /// Shadow models.
    pub shadow_models: u32,
    /// Significance level.
    pub alpha: f64,
}

/// The parts of `per_sample.json` the GUI shows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PerSampleFile {
    /// Shared settings.
    pub settings: Settings,
    /// Forgotten samples told apart best after the deletion.
    pub most_distinguishable: Vec<SampleLine>,
    /// The onion effect.
    pub onion: Onion,
    /// Estimated seconds (made first).
    pub estimated_seconds: Option<f64>,
    /// Seconds both attacks took.
    pub seconds: f64,
}

/// A finished verification, as read back.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Its folder.
    pub folder: PathBuf,
    /// `per_sample.json`.
    pub file: PerSampleFile,
    /// U-LiRA on the unlearned model (`after/attack.json`).
    pub after: AttackSummary,
    /// LiRA on the original (`before/attack.json`).
    pub before: AttackSummary,
}

/// Reads a verification folder.
pub fn read(folder: &Path) -> Result<Verification, String> {
    let path = folder.join(RESULT_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: PerSampleFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let attack = |sub: &str| -> Result<AttackSummary, String> {
        let dir = folder.join(sub);
        crate::attack_report::load(&dir)?
            .ok_or_else(|| format!("{}: no attack.json", dir.display()))
    };
    Ok(Verification {
        folder: folder.to_path_buf(),
        file,
        after: attack("after")?,
        before: attack("before")?,
    })
}

/// The newest finished verification folder of a run: by the time its
/// `per_sample.json` was written, since the CLI names its folders by seconds
/// and the GUI by milliseconds (names alone do not sort by time).
pub fn latest_folder(run_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FOLDER_PREFIX))
        })
        .filter_map(|p| {
            let t = std::fs::metadata(p.join(RESULT_FILE))
                .and_then(|m| m.modified())
                .ok()?;
            Some((t, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// The newest saved verification of a run (`Ok(None)`: never verified).
pub fn load_saved(run_dir: &Path) -> Result<Option<Verification>, String> {
    latest_folder(run_dir).map(|f| read(&f)).transpose()
}

/// The shadow settings `lethe verify-samples` takes, read from U-LiRA's form
/// with [`VerifySettings::from_params`] (the rest of the form keeps the
/// plugin's defaults there).
pub use lethe_engine::eval::per_sample::VerifySettings;

/// One verification to run.
#[derive(Debug, Clone)]
pub struct VerifyJob {
    /// The executable with the `verify-samples` subcommand (this one).
    pub exe: PathBuf,
    /// Further plugin folders (`--plugins`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The deletion's run folder (with `run.json`).
    pub run_dir: PathBuf,
    /// The new output folder.
    pub out: PathBuf,
    /// Shadow settings.
    pub settings: VerifySettings,
    /// Device.
    pub device: String,
    /// Where the shadow models are trained.
    pub executor: lethe_engine::exec::ExecutorConfig,
}

/// The command line (after the program).
pub fn args(job: &VerifyJob) -> Vec<OsString> {
    use lethe_engine::exec::ExecutorConfig;
    let s = &job.settings;
    let mut a: Vec<OsString> = Vec::new();
    for d in &job.plugin_dirs {
        a.push("--plugins".into());
        a.push(d.into());
    }
    a.push("verify-samples".into());
    a.push(job.run_dir.clone().into());
    for (flag, value) in [
        ("--shadow-models", s.shadow_models.to_string()),
        ("--shadow-population", s.shadow_population.to_string()),
        ("--shadow-epochs", s.shadow_epochs.to_string()),
        ("--heldout", s.heldout.to_string()),
        ("--z-samples", s.z_samples.to_string()),
        ("--seed", s.seed.to_string()),
        ("--alpha", s.alpha.to_string()),
        ("--device", job.device.clone()),
    ] {
        a.push(flag.into());
        a.push(value.into());
    }
    a.push("--out".into());
    a.push(job.out.clone().into());
    match &job.executor {
        ExecutorConfig::Local { jobs } if *jobs > 1 => {
            a.push("--jobs".into());
            a.push(jobs.to_string().into());
        }
        ExecutorConfig::Local { .. } => {}
        ExecutorConfig::Slurm(sl) => {
            a.push("--executor".into());
            a.push("slurm".into());
            let mut opt = |flag: &str, v: Option<String>| {
                if let Some(v) = v {
                    a.push(flag.into());
                    a.push(v.into());
                }
            };
            opt("--partition", sl.partition.clone());
            opt("--time", sl.time.clone());
            opt("--cpus-per-task", sl.cpus_per_task.map(|c| c.to_string()));
            opt("--mem", sl.mem.clone());
            opt("--gres", sl.gres.clone());
            opt("--account", sl.account.clone());
            opt(
                "--max-parallel",
                (sl.max_parallel > 0).then(|| sl.max_parallel.to_string()),
            );
            opt("--attempts", Some(sl.attempts.to_string()));
            for x in &sl.extra_args {
                a.push(format!("--sbatch-arg={x}").into());
            }
        }
    }
    a
}

/// What a running verification says, shared with the UI thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// The last progress line.
    pub line: String,
    /// The last fraction reported (`[ 42%] …`).
    pub fraction: Option<f64>,
}

/// A verification under way: its stop flag and its progress.
#[derive(Debug, Clone)]
pub struct Running {
    /// Set by "Stop".
    pub cancel: Arc<AtomicBool>,
    /// The last line it printed.
    pub progress: Arc<Mutex<Progress>>,
    /// Unix seconds.
    pub started: f64,
    /// Its output folder.
    pub out: PathBuf,
}

/// Reads `[ 42%] message` (the CLI's progress lines) as (0.42, message).
pub fn parse_progress(line: &str) -> (Option<f64>, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some((pct, msg)) = rest.split_once("%]")
        && let Ok(p) = pct.trim().parse::<f64>()
    {
        return (Some(p / 100.0), msg.trim());
    }
    (None, line.trim())
}

/// How long a verification asked to stop gets (SIGTERM) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Runs `lethe verify-samples` and reads its result; an error carries the end
/// of its stderr. `cancel` (Stop, or the window closing) stops it: SIGTERM,
/// then SIGKILL after a grace period; its workers die with it.
pub fn run(
    job: &VerifyJob,
    cancel: &AtomicBool,
    closing: &AtomicBool,
    progress: &Mutex<Progress>,
) -> Result<Verification, String> {
    let mut child = Command::new(&job.exe)
        .args(args(job))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", job.exe.display()))?;
    let tail = Arc::new(Mutex::new(std::collections::VecDeque::<String>::new()));
    let reader = child.stderr.take().map(|err| {
        let tail = Arc::clone(&tail);
        // The last lines are kept: the newest is the progress the UI shows,
        // the rest explain a failure.
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut t) = tail.lock() {
                    t.push_back(line);
                    if t.len() > 40 {
                        t.pop_front();
                    }
                }
            }
        })
    });
    let mut stopping: Option<Instant> = None;
    let status = loop {
        if let Ok(t) = tail.lock()
            && let Some(last) = t.back()
            && let Ok(mut p) = progress.lock()
        {
            let (f, msg) = parse_progress(last);
            if f.is_some() {
                p.fraction = f;
            }
            p.line = msg.to_string();
        }
        let asked = cancel.load(Ordering::SeqCst) || closing.load(Ordering::SeqCst);
        match stopping {
            None if asked => {
                stopping = Some(Instant::now());
                if crate::study::terminate(&child).is_err() {
                    let _ = child.kill();
                }
            }
            Some(t) if t.elapsed() > STOP_GRACE || closing.load(Ordering::SeqCst) => {
                let _ = child.kill();
            }
            _ => {}
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("lethe verify-samples: {e}")),
        }
    };
    if stopping.is_some() {
        // The reader is not joined: a process the child left may hold the pipe.
        drop(reader);
        return Err("stopped".into());
    }
    if let Some(r) = reader {
        let _ = r.join();
    }
    if !status.success() {
        let text = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        return Err(format!(
            "lethe verify-samples failed ({status}):\n{}",
            text.trim()
        ));
    }
    read(&job.out)
}

/// The new output folder of a verification started at `now` (unix seconds).
pub fn new_folder(run_dir: &Path, now: f64) -> PathBuf {
    // Milliseconds: two verifications started within a second get two folders.
    run_dir.join(format!(
        "{FOLDER_PREFIX}{:013}",
        (now * 1000.0).max(0.0) as u64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(executor: lethe_engine::exec::ExecutorConfig) -> VerifyJob {
        VerifyJob {
            exe: "/bin/lethe".into(),
            plugin_dirs: vec!["/p".into()],
            run_dir: "/runs/del".into(),
            out: "/runs/del/verify-samples-1".into(),
            settings: VerifySettings::from_params(
                serde_json::json!({"shadow_models": 8, "shadow_population": 4000, "alpha": 0.01,
                                   "heldout_size": 0, "z_samples": 500, "seed": 7,
                                   "shadow_epochs": 0, "variance": "auto"})
                .as_object()
                .unwrap(),
            ),
            device: "cpu".into(),
            executor,
        }
    }

    fn strings(a: Vec<OsString>) -> Vec<String> {
        a.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_carries_the_forms_settings_and_the_executor() {
        use lethe_engine::exec::{ExecutorConfig, SlurmSettings};
        let a = strings(args(&job(ExecutorConfig::Local { jobs: 1 })));
        assert_eq!(&a[..4], ["--plugins", "/p", "verify-samples", "/runs/del"]);
        let joined = a.join(" ");
        for part in [
            "--shadow-models 8",
            "--shadow-population 4000",
            "--alpha 0.01",
            "--z-samples 500",
            "--seed 7",
            "--device cpu",
            "--out /runs/del/verify-samples-1",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        assert!(!joined.contains("--jobs"), "one at a time is the default");
        let a = strings(args(&job(ExecutorConfig::Local { jobs: 4 }))).join(" ");
        assert!(a.ends_with("--jobs 4"), "{a}");
        let slurm = SlurmSettings {
            partition: Some("gpu".into()),
            max_parallel: 0,
            extra_args: vec!["--qos=short".into()],
            ..SlurmSettings::default()
        };
        let a = strings(args(&job(ExecutorConfig::Slurm(slurm)))).join(" ");
        assert!(a.contains("--executor slurm --partition gpu"), "{a}");
        assert!(a.contains("--sbatch-arg=--qos=short"), "{a}");
        assert!(!a.contains("--max-parallel"), "0 means no limit: {a}");
    }

    #[test]
    fn progress_lines_are_read_and_other_lines_kept_as_they_are() {
        assert_eq!(
            parse_progress("[ 42%] shadow model 3 of 8"),
            (Some(0.42), "shadow model 3 of 8")
        );
        assert_eq!(parse_progress("[    ] loading"), (None, "[    ] loading"));
        assert_eq!(parse_progress("Info: hello"), (None, "Info: hello"));
    }

    #[test]
    fn the_newest_finished_folder_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_saved(dir.path()).unwrap().is_none());
        // A CLI folder (seconds) of the same second as a GUI one
        // (milliseconds), written later: its name sorts first, yet the later
        // file wins.
        let gui = new_folder(dir.path(), 1_796_681_833.5);
        let cli = dir.path().join(format!("{FOLDER_PREFIX}1796681833"));
        let unfinished = new_folder(dir.path(), 1_796_690_000.0);
        for d in [&gui, &cli, &unfinished] {
            std::fs::create_dir_all(d).unwrap();
        }
        assert!(
            gui.file_name() > cli.file_name(),
            "the names disagree with time"
        );
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        for (d, t) in [(&gui, old), (&cli, std::time::SystemTime::now())] {
            let f = std::fs::File::create(d.join(RESULT_FILE)).unwrap();
            std::io::Write::write_all(&mut &f, b"{}").unwrap();
            f.set_modified(t).unwrap();
        }
        assert_eq!(latest_folder(dir.path()), Some(cli.clone()));
        let err = load_saved(dir.path()).unwrap_err();
        assert!(err.contains("per_sample.json"), "{err}");
    }

    #[test]
    fn per_sample_json_is_read_with_its_onion_table() {
        let v = serde_json::json!({
            "original": "/o", "unlearned": "/u", "method": "m", "params": {},
            "data": "/d", "forget": "/f",
            "settings": {"shadow_models": 8, "shadow_population": 4000, "shadow_epochs": 0,
                          "heldout": 200, "z_samples": 1000, "seed": 0, "alpha": 0.05},
            "after": {}, "before": {},
            "most_distinguishable": [{"row": 5, "p_before": 0.001, "p_after": 0.02}],
            "onion": {"samples": 200, "newly_significant": 3, "no_longer_significant": 1,
                      "median_change": 0.1,
                      "most_exposed": [{"row": 9, "p_before": 0.5, "p_after": 0.004}]},
            "estimated_seconds": 20.0, "seconds": 25.5
        });
        let f: PerSampleFile = serde_json::from_value(v).unwrap();
        assert_eq!(f.onion.most_exposed[0].row, 9);
        assert_eq!(f.onion.newly_significant, 3);
        assert_eq!(f.settings.shadow_models, 8);
        assert_eq!(f.estimated_seconds, Some(20.0));
    }

    /// A stand-in for `lethe`: a shell script that ignores its arguments.
    fn fake_exe(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join("fake-lethe");
        std::fs::write(&exe, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    #[test]
    fn stop_ends_the_process_and_a_failure_carries_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job(lethe_engine::exec::ExecutorConfig::Local { jobs: 1 });
        j.out = dir.path().join("out");
        j.exe = fake_exe(
            dir.path(),
            "echo '[ 25%] shadow model 1 of 4' >&2\nexec sleep 60",
        );
        let cancel = Arc::new(AtomicBool::new(false));
        let closing = AtomicBool::new(false);
        let progress = Mutex::new(Progress::default());
        let started = Instant::now();
        std::thread::scope(|s| {
            let c = Arc::clone(&cancel);
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                c.store(true, Ordering::SeqCst);
            });
            let err = run(&j, &cancel, &closing, &progress).unwrap_err();
            assert_eq!(err, "stopped");
        });
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "SIGTERM ends it, no waiting for the sleep"
        );
        let p = progress.lock().unwrap();
        assert_eq!(p.fraction, Some(0.25));
        assert_eq!(p.line, "shadow model 1 of 4");
        drop(p);
        j.exe = fake_exe(
            dir.path(),
            "echo 'Error: no run.json in /runs/del' >&2\nexit 3",
        );
        let err = run(&j, &AtomicBool::new(false), &closing, &progress).unwrap_err();
        assert!(
            err.contains("failed") && err.contains("no run.json"),
            "{err}"
        );
    }
}
