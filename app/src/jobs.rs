//! Job records: what the GUI knows about one run, built only by folding worker
//! events into it (files → engine → worker events → GUI state). A record is plain
//! data, saved as `job.json` in its run folder, so finished runs survive restarts
//! and a record can be tested without a worker.

use lethe_engine::worker::{FromWorker, JobOutcome, JobReport};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keep the log bounded: a chatty plugin must not grow the GUI's memory (or the
/// saved record) without limit. The worker's stderr tail is kept separately.
pub const MAX_LOG_LINES: usize = 5000;

/// Metric keys that are positions on the x axis, not curves.
const X_KEYS: [&str; 3] = ["epoch", "step", "iteration"];

/// What to run: everything needed to start the worker again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `method` or `attack`.
    pub kind: String,
    /// Descriptor id.
    pub plugin_id: String,
    /// Descriptor name, for display.
    pub plugin_name: String,
    /// The plugin library.
    pub library: PathBuf,
    /// Full (validated) parameters.
    pub params: Value,
    /// The model to unlearn (or attack).
    pub checkpoint: PathBuf,
    /// Its training data.
    pub data: PathBuf,
    /// The forget list file.
    pub forget: PathBuf,
    /// How the forget set was chosen, for display.
    pub forget_label: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seed for the split (when the data records none) and shuffling.
    pub seed: u64,
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its device.
    Queued,
    /// A worker is running it.
    Running,
    /// Cancel was asked; waiting for the worker to stop.
    Cancelling,
    /// Finished with a result.
    Succeeded,
    /// The job reported an error (bad parameters, plugin error or panic).
    Failed {
        /// Why.
        message: String,
    },
    /// Stopped on request.
    Cancelled {
        /// Whether the worker ignored the cancel and was killed.
        killed: bool,
    },
    /// The worker died (signal, early exit), timed out or broke the protocol.
    Crashed {
        /// What happened.
        message: String,
    },
    /// Found as running in a saved record: the app stopped while it ran.
    Interrupted,
}

impl JobStatus {
    /// Whether the job can change no more.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            JobStatus::Queued | JobStatus::Running | JobStatus::Cancelling
        )
    }

    /// Short label for lists.
    pub fn label(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Succeeded => "done",
            JobStatus::Failed { .. } => "failed",
            JobStatus::Cancelled { .. } => "cancelled",
            JobStatus::Crashed { .. } => "crashed",
            JobStatus::Interrupted => "interrupted",
        }
    }

    /// The error to show, if the job went wrong.
    pub fn problem(&self) -> Option<String> {
        match self {
            JobStatus::Failed { message } | JobStatus::Crashed { message } => Some(message.clone()),
            JobStatus::Interrupted => Some(
                "Lethe was closed while this job ran; its worker was stopped with it. \
                 Start it again to get a result."
                    .into(),
            ),
            _ => None,
        }
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Seconds since the job started.
    pub t: f64,
    /// `debug`, `info`, `warn`, `error` (or `progress` for progress messages).
    pub level: String,
    /// The text.
    pub text: String,
}

/// A file the job wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The plugin's name for it (`model` for the unlearned checkpoint).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

/// Everything known about one job; saved as `job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Folder name under the project's `runs/`, unique.
    pub id: String,
    /// What was asked.
    pub spec: JobSpec,
    /// Where it stands.
    pub status: JobStatus,
    /// Unix seconds.
    pub created: f64,
    /// Unix seconds when the worker started.
    pub started: Option<f64>,
    /// Unix seconds when it ended.
    pub finished: Option<f64>,
    /// Last reported fraction done.
    pub fraction: Option<f64>,
    /// Last progress message.
    pub message: String,
    /// First progress report with a fraction: `(unix seconds, fraction)`, for the ETA.
    pub first_progress: Option<(f64, f64)>,
    /// Last progress report with a fraction.
    pub last_progress: Option<(f64, f64)>,
    /// Number of progress reports (the x axis when a plugin reports no epoch/step).
    pub progress_events: u64,
    /// Numeric series: name → `[x, y]` points in arrival order.
    pub curves: BTreeMap<String, Vec<[f64; 2]>>,
    /// Last value of every numeric metric.
    pub latest: BTreeMap<String, f64>,
    /// Log lines (bounded by [`MAX_LOG_LINES`]).
    pub log: Vec<LogLine>,
    /// Lines dropped from the front of the log.
    pub log_dropped: u64,
    /// Files written.
    pub artifacts: Vec<ArtifactRef>,
    /// The job's JSON result.
    pub result: Option<Value>,
    /// End of the worker's stderr (the log of a crash).
    pub stderr_tail: String,
}

impl JobRecord {
    /// A queued job.
    pub fn new(id: String, spec: JobSpec, now: f64) -> Self {
        JobRecord {
            id,
            spec,
            status: JobStatus::Queued,
            created: now,
            started: None,
            finished: None,
            fraction: None,
            message: String::new(),
            first_progress: None,
            last_progress: None,
            progress_events: 0,
            curves: BTreeMap::new(),
            latest: BTreeMap::new(),
            log: Vec::new(),
            log_dropped: 0,
            artifacts: Vec::new(),
            result: None,
            stderr_tail: String::new(),
        }
    }

    /// The worker was started.
    pub fn mark_started(&mut self, now: f64) {
        self.status = JobStatus::Running;
        self.started = Some(now);
    }

    fn since_start(&self, now: f64) -> f64 {
        (now - self.started.unwrap_or(self.created)).max(0.0)
    }

    fn push_log(&mut self, now: f64, level: &str, text: String) {
        self.log.push(LogLine {
            t: self.since_start(now),
            level: level.to_string(),
            text,
        });
        if self.log.len() > MAX_LOG_LINES {
            let excess = self.log.len() - MAX_LOG_LINES;
            self.log.drain(..excess);
            self.log_dropped += excess as u64;
        }
    }

    fn push_point(&mut self, name: &str, x: f64, y: f64) {
        if !y.is_finite() {
            return;
        }
        self.curves
            .entry(name.to_string())
            .or_default()
            .push([x, y]);
        self.latest.insert(name.to_string(), y);
    }

    /// Folds one worker event in. `now` is unix seconds.
    pub fn apply(&mut self, event: FromWorker, now: f64) {
        match event {
            FromWorker::Progress {
                fraction,
                message,
                metrics,
            } => {
                self.progress_events += 1;
                if let Some(f) = fraction.filter(|f| f.is_finite()) {
                    let f = f.clamp(0.0, 1.0);
                    self.fraction = Some(f);
                    if self.first_progress.is_none() {
                        self.first_progress = Some((now, f));
                    }
                    self.last_progress = Some((now, f));
                }
                if !message.is_empty() && message != self.message {
                    self.push_log(now, "progress", message.clone());
                }
                self.message = message;
                if let Some(Value::Object(m)) = metrics {
                    let x = X_KEYS
                        .iter()
                        .find_map(|k| m.get(*k).and_then(Value::as_f64))
                        .unwrap_or(self.progress_events as f64);
                    for (k, v) in &m {
                        if X_KEYS.contains(&k.as_str()) {
                            if let Some(v) = v.as_f64() {
                                self.latest.insert(k.clone(), v);
                            }
                            continue;
                        }
                        // Booleans and strings are settings, not curves.
                        if let Some(y) = v.as_f64().filter(|_| v.is_number()) {
                            self.push_point(k, x, y);
                        }
                    }
                }
            }
            FromWorker::Log { level, text } => {
                let level = format!("{level:?}").to_lowercase();
                self.push_log(now, &level, text);
            }
            FromWorker::Metric { name, value, step } => {
                let x = step.map_or_else(
                    || self.curves.get(&name).map_or(0, Vec::len) as f64,
                    |s| s as f64,
                );
                self.push_point(&name, x, value);
            }
            FromWorker::Artifact { name, path } => {
                if !self.artifacts.iter().any(|a| a.path == path) {
                    self.artifacts.push(ArtifactRef { name, path });
                }
            }
            FromWorker::Result { value } => self.result = Some(value),
            FromWorker::Error { message } => {
                self.status = JobStatus::Failed { message };
            }
            FromWorker::Cancelled => {
                self.status = JobStatus::Cancelled { killed: false };
            }
            FromWorker::Hello(_) => {}
        }
    }

    /// The worker is gone; `report` says how it ended.
    pub fn finish(&mut self, report: &JobReport, now: f64) {
        self.finished = Some(now);
        self.stderr_tail = report.stderr_tail.clone();
        self.status = match &report.outcome {
            JobOutcome::Succeeded(value) => {
                self.result = Some(value.clone());
                self.fraction = Some(1.0);
                // The result lists every file; events may have been missed if the
                // worker's last frames raced its exit.
                if let Some(list) = value.get("artifacts").and_then(Value::as_array) {
                    for a in list {
                        if let (Some(name), Some(path)) = (
                            a.get("name").and_then(Value::as_str),
                            a.get("path").and_then(Value::as_str),
                        ) && !self.artifacts.iter().any(|x| x.path == Path::new(path))
                        {
                            self.artifacts.push(ArtifactRef {
                                name: name.to_string(),
                                path: PathBuf::from(path),
                            });
                        }
                    }
                }
                JobStatus::Succeeded
            }
            JobOutcome::Failed(message) => JobStatus::Failed {
                message: message.clone(),
            },
            JobOutcome::Cancelled { killed } => JobStatus::Cancelled { killed: *killed },
            other => JobStatus::Crashed {
                message: other.to_string(),
            },
        };
        let line = match self.status.problem() {
            Some(p) if p.starts_with(self.status.label()) => p,
            Some(p) => format!("{}: {p}", self.status.label()),
            None => format!(
                "{} after {:.1} s",
                self.status.label(),
                report.elapsed.as_secs_f64()
            ),
        };
        let level = match self.status {
            JobStatus::Succeeded => "info",
            JobStatus::Cancelled { .. } => "warn",
            _ => "error",
        };
        self.push_log(now, level, line);
    }

    /// A cancelled job that never started.
    pub fn cancel_queued(&mut self, now: f64) {
        self.status = JobStatus::Cancelled { killed: false };
        self.finished = Some(now);
    }

    /// Seconds left, estimated from the rate of progress since the first report
    /// (model loading before it is not progress), else from the whole elapsed time.
    pub fn eta(&self, now: f64) -> Option<f64> {
        if self.status != JobStatus::Running {
            return None;
        }
        let (_, f) = self.last_progress?;
        if f >= 1.0 {
            return Some(0.0);
        }
        let rate = match self.first_progress {
            Some((t0, f0)) if f > f0 && now > t0 => (f - f0) / (now - t0),
            _ => {
                let elapsed = self.since_start(now);
                if f <= 0.0 || elapsed <= 0.0 {
                    return None;
                }
                f / elapsed
            }
        };
        (rate > 0.0).then(|| (1.0 - f) / rate)
    }

    /// Seconds from start to end (or to `now` while running).
    pub fn elapsed(&self, now: f64) -> Option<f64> {
        let start = self.started?;
        Some((self.finished.unwrap_or(now) - start).max(0.0))
    }

    /// When it was asked for, in words (`2026-12-07 15:12 UTC`): what names a
    /// run to a person; the folder id is for files.
    pub fn when(&self) -> String {
        let t = lethe_engine::report::format::utc_datetime(self.created as i64);
        // Seconds are noise in a list of runs.
        format!("{} UTC", &t[..16])
    }

    /// The run in words: its method and when (`Fine-tune run of 2026-12-07 15:12 UTC`).
    pub fn title(&self) -> String {
        format!("{} run of {}", self.spec.plugin_name, self.when())
    }

    /// The unlearned model, if the job wrote one.
    pub fn model_artifact(&self) -> Option<&ArtifactRef> {
        self.artifacts.iter().find(|a| a.name == "model")
    }

    /// Reads a saved record; a record saved while running is marked interrupted,
    /// since no worker survives the app.
    pub fn load(path: &Path) -> anyhow::Result<JobRecord> {
        let text = std::fs::read_to_string(path)?;
        let mut record: JobRecord = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a Lethe job record: {e}", path.display()))?;
        if !record.status.is_final() {
            record.status = JobStatus::Interrupted;
        }
        Ok(record)
    }

    /// Writes the record as `job.json` into `dir` (atomically: a crash never leaves
    /// half a record).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::project::write_file(&dir.join(JOB_FILE), text.as_bytes())
    }
}

/// The record's file name inside a run folder.
pub const JOB_FILE: &str = "job.json";

/// Formats seconds as `1 h 02 min`, `3 min 05 s` or `12 s`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_engine::worker::protocol::Level;
    use serde_json::json;
    use std::time::Duration;

    pub(crate) fn spec() -> JobSpec {
        JobSpec {
            kind: "method".into(),
            plugin_id: "org.example.ga".into(),
            plugin_name: "GA".into(),
            library: "/p/libga.so".into(),
            params: json!({"lr": 0.01}),
            checkpoint: "/d/model.safetensors".into(),
            data: "/d/data.npz".into(),
            forget: "/d/forget.txt".into(),
            forget_label: "forget.txt (300)".into(),
            device: "cpu".into(),
            seed: 0,
        }
    }

    fn progress(f: f64, msg: &str, metrics: Value) -> FromWorker {
        FromWorker::Progress {
            fraction: Some(f),
            message: msg.into(),
            metrics: Some(metrics),
        }
    }

    fn report(outcome: JobOutcome) -> JobReport {
        JobReport {
            outcome,
            stderr_tail: "tail".into(),
            elapsed: Duration::from_secs(3),
            exit: None,
            answered_hello: false,
        }
    }

    #[test]
    fn progress_folds_into_fraction_curves_and_log() {
        let mut r = JobRecord::new("a".into(), spec(), 100.0);
        r.mark_started(100.0);
        r.apply(
            progress(
                0.25,
                "epoch 1/4",
                json!({"epoch": 1, "loss": 2.0, "acc": 0.5, "note": "x", "flag": true}),
            ),
            110.0,
        );
        r.apply(
            progress(0.5, "epoch 2/4", json!({"epoch": 2, "loss": 1.0})),
            120.0,
        );
        r.apply(
            FromWorker::Metric {
                name: "auc".into(),
                value: 0.7,
                step: None,
            },
            121.0,
        );
        r.apply(
            FromWorker::Metric {
                name: "auc".into(),
                value: 0.6,
                step: None,
            },
            122.0,
        );
        assert_eq!(r.fraction, Some(0.5));
        assert_eq!(r.message, "epoch 2/4");
        assert_eq!(r.curves["loss"], vec![[1.0, 2.0], [2.0, 1.0]]);
        assert_eq!(r.curves["acc"], vec![[1.0, 0.5]]);
        // Metric events without a step count up per series.
        assert_eq!(r.curves["auc"], vec![[0.0, 0.7], [1.0, 0.6]]);
        assert!(!r.curves.contains_key("note") && !r.curves.contains_key("flag"));
        assert!(!r.curves.contains_key("epoch"), "epoch is the x axis");
        assert_eq!(r.latest["epoch"], 2.0);
        assert_eq!(r.latest["loss"], 1.0);
        let texts: Vec<&str> = r.log.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["epoch 1/4", "epoch 2/4"]);
        assert_eq!(r.log[1].t, 20.0);
    }

    #[test]
    fn progress_without_epoch_uses_the_event_count() {
        let mut r = JobRecord::new("a".into(), spec(), 0.0);
        r.mark_started(0.0);
        for (i, loss) in [3.0, 2.0, f64::NAN, 1.0].iter().enumerate() {
            r.apply(
                FromWorker::Progress {
                    fraction: None,
                    message: String::new(),
                    metrics: Some(json!({ "loss": loss })),
                },
                i as f64,
            );
        }
        // NaN serialises to null and is skipped; x keeps counting events.
        assert_eq!(r.curves["loss"], vec![[1.0, 3.0], [2.0, 2.0], [4.0, 1.0]]);
        assert_eq!(r.fraction, None);
        assert_eq!(r.eta(10.0), None, "no fraction, no estimate");
    }

    #[test]
    fn eta_follows_the_rate_since_the_first_report() {
        let mut r = JobRecord::new("a".into(), spec(), 0.0);
        r.mark_started(0.0);
        assert_eq!(r.eta(5.0), None);
        // 20 s of loading, then 10 % every 10 s.
        r.apply(progress(0.1, "", json!({})), 20.0);
        // One report: fall back to the whole elapsed time (0.1 in 20 s).
        let eta = r.eta(20.0).unwrap();
        assert!((eta - 180.0).abs() < 1e-9, "{eta}");
        r.apply(progress(0.2, "", json!({})), 30.0);
        r.apply(progress(0.3, "", json!({})), 40.0);
        let eta = r.eta(40.0).unwrap();
        assert!((eta - 70.0).abs() < 1e-9, "0.7 left at 0.01/s: {eta}");
        r.apply(progress(1.0, "", json!({})), 50.0);
        assert_eq!(r.eta(50.0), Some(0.0));
        r.finish(
            &report(JobOutcome::Succeeded(json!({"status": "ok"}))),
            51.0,
        );
        assert_eq!(r.eta(52.0), None, "finished jobs have no ETA");
    }

    #[test]
    fn outcomes_map_to_statuses() {
        let cases = [
            (JobOutcome::Succeeded(json!({})), "done"),
            (JobOutcome::Failed("bad lr".into()), "failed"),
            (JobOutcome::Cancelled { killed: true }, "cancelled"),
            (
                JobOutcome::Crashed {
                    signal: Some(11),
                    code: None,
                },
                "crashed",
            ),
            (JobOutcome::TimedOut(Duration::from_secs(1)), "crashed"),
        ];
        for (outcome, label) in cases {
            let mut r = JobRecord::new("a".into(), spec(), 0.0);
            r.mark_started(0.0);
            r.finish(&report(outcome.clone()), 3.0);
            assert_eq!(r.status.label(), label, "{outcome}");
            assert!(r.status.is_final());
            assert_eq!(r.stderr_tail, "tail");
            assert_eq!(r.elapsed(100.0), Some(3.0));
        }
        let mut r = JobRecord::new("a".into(), spec(), 0.0);
        r.finish(
            &report(JobOutcome::Crashed {
                signal: Some(11),
                code: None,
            }),
            1.0,
        );
        let problem = r.status.problem().unwrap();
        assert!(problem.contains("SIGSEGV"), "{problem}");
        assert!(r.log.last().unwrap().text.contains("SIGSEGV"));
    }

    #[test]
    fn artifacts_from_events_and_result_are_merged_once() {
        let mut r = JobRecord::new("a".into(), spec(), 0.0);
        r.mark_started(0.0);
        r.apply(
            FromWorker::Artifact {
                name: "summary".into(),
                path: "/o/summary.json".into(),
            },
            1.0,
        );
        r.finish(
            &report(JobOutcome::Succeeded(json!({"status": "ok", "artifacts": [
                {"kind": "json", "name": "summary", "path": "/o/summary.json"},
                {"kind": "model", "name": "model", "path": "/o/model.safetensors"},
            ]}))),
            2.0,
        );
        assert_eq!(r.artifacts.len(), 2);
        assert_eq!(
            r.model_artifact().unwrap().path,
            PathBuf::from("/o/model.safetensors")
        );
        assert_eq!(r.fraction, Some(1.0));
    }

    #[test]
    fn log_is_bounded_and_levels_are_named() {
        let mut r = JobRecord::new("a".into(), spec(), 0.0);
        for i in 0..MAX_LOG_LINES + 10 {
            r.apply(
                FromWorker::Log {
                    level: Level::Warn,
                    text: format!("line {i}"),
                },
                0.0,
            );
        }
        assert_eq!(r.log.len(), MAX_LOG_LINES);
        assert_eq!(r.log_dropped, 10);
        assert_eq!(r.log[0].text, "line 10");
        assert_eq!(r.log[0].level, "warn");
    }

    #[test]
    fn saved_records_round_trip_and_running_ones_come_back_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = JobRecord::new("run-1".into(), spec(), 5.0);
        r.mark_started(6.0);
        r.apply(progress(0.5, "half", json!({"loss": 1.5})), 7.0);
        r.save(dir.path()).unwrap();
        let back = JobRecord::load(&dir.path().join(JOB_FILE)).unwrap();
        assert_eq!(back.status, JobStatus::Interrupted);
        assert_eq!(back.curves, r.curves);
        assert_eq!(back.spec, r.spec);
        r.finish(&report(JobOutcome::Succeeded(json!({}))), 8.0);
        r.save(dir.path()).unwrap();
        assert_eq!(JobRecord::load(&dir.path().join(JOB_FILE)).unwrap(), r);
        std::fs::write(dir.path().join(JOB_FILE), "{").unwrap();
        assert!(JobRecord::load(&dir.path().join(JOB_FILE)).is_err());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(12.4), "12 s");
        assert_eq!(format_duration(185.0), "3 min 05 s");
        assert_eq!(format_duration(3720.0), "1 h 02 min");
    }
}
