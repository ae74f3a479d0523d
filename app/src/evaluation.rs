//! Evaluation of a finished unlearning run: `lethe evaluate` runs as a
//! subprocess of this executable (off the UI thread) and writes
//! `evaluation.json` (and, for encoders, `alignment.safetensors`) into a new
//! folder `evaluation-TIME` inside the run folder, where the GUI finds it again
//! after a restart.

use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Accuracy of one split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Split {
    /// Samples.
    pub samples: usize,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Per-class accuracy (`None`: no sample of that class).
    #[serde(default)]
    pub per_class: Vec<Option<f64>>,
}

/// The utility of one model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Utility {
    /// How the model was read (`classifier head` or a probe).
    #[serde(default)]
    pub reader: String,
    /// Retained training samples.
    pub retain: Split,
    /// Test samples.
    pub test: Split,
    /// Forget samples.
    pub forget: Split,
}

/// What the GUI shows of `evaluation.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Evaluation {
    /// Class names.
    #[serde(default)]
    pub classes: Vec<String>,
    /// The unlearned model.
    pub utility: Utility,
    /// The original model.
    pub original_utility: Option<Utility>,
    /// The alignment heatmaps, when written (encoders).
    pub alignment_file: Option<PathBuf>,
    /// The folder the evaluation is in (set after reading).
    #[serde(skip)]
    pub folder: PathBuf,
}

/// One row of the utility table: `(split, before, after)`.
pub type Row = (&'static str, Option<f64>, f64);

impl Evaluation {
    /// Retain / test / forget accuracy, before (original) and after.
    pub fn rows(&self) -> [Row; 3] {
        let o = self.original_utility.as_ref();
        [
            (
                "retain",
                o.map(|u| u.retain.accuracy),
                self.utility.retain.accuracy,
            ),
            (
                "test",
                o.map(|u| u.test.accuracy),
                self.utility.test.accuracy,
            ),
            (
                "forget",
                o.map(|u| u.forget.accuracy),
                self.utility.forget.accuracy,
            ),
        ]
    }

    /// Per class of one split (`retain`, `test`, `forget`): `(class name,
    /// before, after)` for classes with samples after.
    pub fn per_class(&self, split: &str) -> Vec<(String, Option<f64>, f64)> {
        let pick = |u: &Utility| match split {
            "retain" => u.retain.per_class.clone(),
            "test" => u.test.per_class.clone(),
            _ => u.forget.per_class.clone(),
        };
        let after = pick(&self.utility);
        let before = self.original_utility.as_ref().map(pick).unwrap_or_default();
        after
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let a = (*a)?;
                let name = self
                    .classes
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| i.to_string());
                Some((name, before.get(i).copied().flatten(), a))
            })
            .collect()
    }

    /// The alignment file, resolved against the evaluation folder when relative.
    pub fn alignment_path(&self) -> Option<PathBuf> {
        let p = self.alignment_file.as_ref()?;
        Some(if p.is_absolute() {
            p.clone()
        } else {
            self.folder.join(p.file_name()?)
        })
    }
}

/// Parses `evaluation.json`.
pub fn parse(json: &str, folder: &Path) -> Result<Evaluation, String> {
    let mut e: Evaluation =
        serde_json::from_str(json).map_err(|e| format!("evaluation.json: {e}"))?;
    e.folder = folder.to_path_buf();
    Ok(e)
}

/// The newest `evaluation-*` folder of a run holding an `evaluation.json`.
pub fn latest_folder(run_dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("evaluation-"))
                && p.join("evaluation.json").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// Reads the newest saved evaluation of a run (`Ok(None)`: never evaluated).
pub fn load_saved(run_dir: &Path) -> Result<Option<Evaluation>, String> {
    let Some(folder) = latest_folder(run_dir) else {
        return Ok(None);
    };
    let json = std::fs::read_to_string(folder.join("evaluation.json"))
        .map_err(|e| format!("{}: {e}", folder.display()))?;
    parse(&json, &folder).map(Some)
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// The executable with the `evaluate` subcommand (this one).
    pub exe: PathBuf,
    /// The unlearned model.
    pub model: PathBuf,
    /// The model before unlearning.
    pub original: PathBuf,
    /// Dataset.
    pub data: PathBuf,
    /// Forget list.
    pub forget: PathBuf,
    /// Device.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// The run folder; the result goes into a new `evaluation-TIME` in it.
    pub run_dir: PathBuf,
}

/// The last `max` bytes of a text, on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `lethe evaluate` and reads its result; an error carries its stderr.
/// When `cancel` is set (the window is closing) the subprocess is killed.
pub fn run(req: &EvalRequest, cancel: &AtomicBool) -> Result<Evaluation, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let out = req.run_dir.join(format!("evaluation-{stamp}"));
    let mut child = Command::new(&req.exe)
        .arg("evaluate")
        .arg("--checkpoint")
        .arg(&req.model)
        .arg("--original")
        .arg(&req.original)
        .arg("--data")
        .arg(&req.data)
        .arg("--forget")
        .arg(&req.forget)
        .arg("--out")
        .arg(&out)
        .arg("--device")
        .arg(&req.device)
        .arg("--seed")
        .arg(req.seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", req.exe.display()))?;
    // Read stderr on the side, so a chatty child never blocks on a full pipe
    // while we poll for its end (or for the window closing).
    let reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    let status = loop {
        if cancel.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            // The reader is not joined: a process the child started may still
            // hold the pipe open. It only reads a pipe (never libtorch) and ends
            // when the pipe closes.
            drop(reader);
            return Err("the evaluation was stopped: Lethe is closing".into());
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("lethe evaluate: {e}")),
        }
    };
    let err = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "lethe evaluate failed ({status}):\n{}",
            tail(err.trim(), 4000)
        ));
    }
    let json = std::fs::read_to_string(out.join("evaluation.json"))
        .map_err(|e| format!("{}: {e}", out.join("evaluation.json").display()))?;
    parse(&json, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{
      "checkpoint": "m.safetensors", "checkpoint_sha256": null,
      "original": "o.safetensors", "original_sha256": null,
      "data": "d", "forget_list": "f", "classes": ["cat", "dog", "emu"],
      "forget_count": 10, "retain_count": 90, "test_count": 50,
      "validation_count": 0, "seed": 0, "device": "cpu",
      "utility": {"reader": "classifier head", "probe": null,
        "retain": {"samples": 90, "accuracy": 0.9, "loss": 0.3, "per_class": [0.8, 1.0, null]},
        "test": {"samples": 50, "accuracy": 0.7, "loss": 0.9, "per_class": [0.6, 0.8, null]},
        "forget": {"samples": 10, "accuracy": 0.1, "loss": 3.0, "per_class": [null, null, 0.1]},
        "validation": null},
      "original_utility": {"reader": "classifier head", "probe": null,
        "retain": {"samples": 90, "accuracy": 0.95, "loss": 0.2, "per_class": [0.9, 1.0, null]},
        "test": {"samples": 50, "accuracy": 0.75, "loss": 0.8, "per_class": [0.7, 0.8, null]},
        "forget": {"samples": 10, "accuracy": 1.0, "loss": 0.1, "per_class": [null, null, 1.0]},
        "validation": null},
      "alignment": null, "alignment_file": "/tmp/r/evaluation-1/alignment.safetensors"
    }"#;

    #[test]
    fn parses_the_utility_table() {
        let e = parse(JSON, Path::new("/tmp/r/evaluation-1")).unwrap();
        let rows = e.rows();
        assert_eq!(rows[0], ("retain", Some(0.95), 0.9));
        assert_eq!(rows[1], ("test", Some(0.75), 0.7));
        assert_eq!(rows[2], ("forget", Some(1.0), 0.1));
        let f = e.per_class("forget");
        assert_eq!(f, vec![("emu".to_string(), Some(1.0), 0.1)]);
        let r = e.per_class("retain");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ("cat".to_string(), Some(0.9), 0.8));
        assert_eq!(
            e.alignment_path().unwrap(),
            PathBuf::from("/tmp/r/evaluation-1/alignment.safetensors")
        );
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse("{\"classes\": []}", Path::new("x")).is_err());
    }

    #[test]
    fn saved_evaluations_survive_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_saved(dir.path()).unwrap(), None);
        for (name, acc) in [("evaluation-100", "0.5"), ("evaluation-200", "0.25")] {
            let f = dir.path().join(name);
            std::fs::create_dir(&f).unwrap();
            std::fs::write(
                f.join("evaluation.json"),
                JSON.replace("0.1, \"loss\": 3.0", &format!("{acc}, \"loss\": 3.0")),
            )
            .unwrap();
        }
        // A folder without a result (a crashed evaluation) is ignored.
        std::fs::create_dir(dir.path().join("evaluation-300")).unwrap();
        let e = load_saved(dir.path()).unwrap().unwrap();
        assert_eq!(e.folder, dir.path().join("evaluation-200"));
        assert_eq!(e.utility.forget.accuracy, 0.25);
    }

    fn request(exe: PathBuf, run_dir: &Path) -> EvalRequest {
        EvalRequest {
            exe,
            model: "m".into(),
            original: "o".into(),
            data: "d".into(),
            forget: "f".into(),
            device: "cpu".into(),
            seed: 0,
            run_dir: run_dir.into(),
        }
    }

    #[test]
    fn a_failing_evaluation_reports_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(PathBuf::from("sh"), dir.path());
        // `sh evaluate …` fails: no script called `evaluate`.
        let go = AtomicBool::new(false);
        let err = run(&req, &go).unwrap_err();
        assert!(err.contains("lethe evaluate failed"), "{err}");
        assert!(err.contains("evaluate"), "{err}");
        let missing = EvalRequest {
            exe: dir.path().join("no-such-exe"),
            ..req
        };
        assert!(run(&missing, &go).unwrap_err().starts_with("cannot start"));
    }

    #[test]
    fn closing_stops_an_evaluation_in_flight() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("slow-lethe");
        std::fs::write(&exe, "#!/bin/sh\nsleep 60\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let req = request(exe, dir.path());
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cancel);
        let started = std::time::Instant::now();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        let err = run(&req, &cancel).unwrap_err();
        closer.join().unwrap();
        assert!(err.contains("Lethe is closing"), "{err}");
        // Stopped, not waited out (the script sleeps a minute).
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
}
