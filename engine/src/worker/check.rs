//! `lethe plugins check FILE`: what a plugin author runs before publishing. Every
//! step happens in worker processes, so a plugin that crashes fails the check
//! instead of killing it.
//!
//! 1. the library loads and passes the handshake (ABI, libtorch build);
//! 2. every descriptor has a reverse-DNS id, a name, a version, a citation, and
//!    its parameter defaults validate against its own schema;
//! 3. every method or attack runs with its defaults on the bundled demo (the
//!    model and forget list its `applies_to` asks for: the classifier or the
//!    encoder, the demo's random forget list or a whole class; for a plugin that
//!    declares nothing, the classifier, else the encoder when it refuses for want
//!    of a projection head, and a whole class when it refuses a random list),
//!    ending in success and, for methods, a saved model;
//! 4. a second run starts cancelled ([`super::spawn_worker_cancelled`]): the
//!    worker raises its cancel flag before the plugin is created, so `run` is
//!    entered with the flag up, every time: a plugin that checks it stops at its
//!    first check; one that ignores it runs to the end (or is killed after the
//!    grace period) and fails;
//! 5. a third run is cancelled at its first progress report or log line, in the
//!    middle of its work: it must stop on its own, within [`MID_RUN_BOUND`] (a
//!    plugin that neither reports progress nor logs before it ends gets a
//!    warning, as it cannot be watched).

use super::{Job, JobOutcome, JobReport, WorkerOptions, spawn_worker, spawn_worker_cancelled};
use crate::worker::protocol::{DescriptorInfo, FromWorker, Level};
use lethe_plugin_api::schema::ModelClass;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Conforms.
    Pass,
    /// Does not conform: the plugin must be fixed.
    Fail,
    /// Could not be decided or is only advice.
    Warn,
}

/// One line of the conformance report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckLine {
    /// The descriptor it is about (`None`: the library).
    pub id: Option<String>,
    /// What was checked.
    pub what: String,
    /// How it came out.
    pub verdict: Verdict,
    /// Details: the error, the time taken, what to change.
    pub detail: String,
    /// What the plugin logged during the run this line is about (its last
    /// [`LOG_LINES`] lines), so an author sees their own messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

/// How many of a run's last log lines a check line keeps.
pub const LOG_LINES: usize = 20;

/// Where the demo files are (see `resources/demo/README.md`).
#[derive(Debug, Clone)]
pub struct Demo {
    /// `classifier.safetensors`.
    pub classifier: PathBuf,
    /// `encoder.safetensors`.
    pub encoder: PathBuf,
    /// `mnist10k.npz`.
    pub data: PathBuf,
    /// `forget.txt`.
    pub forget: PathBuf,
}

impl Demo {
    /// The demo inside a `resources/` folder.
    pub fn in_resources(resources: &Path) -> Self {
        let demo = resources.join("demo");
        Demo {
            classifier: demo.join("classifier.safetensors"),
            encoder: demo.join("encoder.safetensors"),
            data: demo.join("mnist10k.npz"),
            forget: demo.join("forget.txt"),
        }
    }
}

/// Runs every check on `library`, with demo jobs writing under `scratch` and
/// each run limited to `opts.timeout`.
pub fn check_plugin(
    opts: &WorkerOptions,
    library: &Path,
    demo: &Demo,
    device: &str,
    scratch: &Path,
    set: &serde_json::Map<String, Value>,
) -> Vec<CheckLine> {
    let mut lines: Vec<CheckLine> = Vec::new();
    let scans = super::scan_plugins_files(opts, std::slice::from_ref(&library.to_path_buf()));
    let descriptors = match scans.into_iter().next().map(|s| s.outcome) {
        Some(Ok(d)) if !d.is_empty() => {
            push(
                &mut lines,
                None,
                "loads",
                Verdict::Pass,
                format!("{} method(s)/attack(s)", d.len()),
            );
            d
        }
        Some(Ok(_)) => {
            push(
                &mut lines,
                None,
                "loads",
                Verdict::Fail,
                "it loads but offers no method or attack".into(),
            );
            return lines;
        }
        Some(Err(why)) => {
            push(&mut lines, None, "loads", Verdict::Fail, why);
            return lines;
        }
        None => {
            push(
                &mut lines,
                None,
                "loads",
                Verdict::Fail,
                "the scan returned nothing".into(),
            );
            return lines;
        }
    };
    let unknown: Vec<&str> = set
        .keys()
        .filter(|k| !descriptors.iter().any(|d| d.schema.get(k).is_some()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        push(
            &mut lines,
            None,
            "--set",
            Verdict::Fail,
            format!(
                "no method or attack in this library has a parameter named {}",
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for (n, d) in descriptors.iter().enumerate() {
        let id = Some(d.id.as_str());
        let problems = descriptor_problems(d);
        if problems.is_empty() {
            push(&mut lines, id, "descriptor", Verdict::Pass, String::new());
        } else {
            push(
                &mut lines,
                id,
                "descriptor",
                Verdict::Fail,
                problems.join("; "),
            );
        }
        if d.citation.trim().is_empty() {
            push(
                &mut lines,
                id,
                "citation",
                Verdict::Warn,
                "no citation: say which paper the method comes from".into(),
            );
        }
        // `--set` values for the keys this descriptor knows (demo values for its
        // required parameters, or other settings to try).
        let given: serde_json::Map<String, Value> = set
            .iter()
            .filter(|(k, _)| d.schema.get(k).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // What the method declares it applies to picks the demo model and forget
        // list; for a plugin that declares nothing, its refusal does.
        let declared = d.schema.applies_to.clone().unwrap_or_default();
        let wants_encoder = declared.projection_head
            || (!declared.models.is_empty() && !declared.models.contains(&ModelClass::Classifier));
        // A required path that says what it holds gets the demo's file of that
        // kind; other required parameters need a value from --set.
        let supplied = demo_values(d, &given, demo, wants_encoder);
        let mut values = given.clone();
        values.extend(supplied.iter().map(|(k, v, _)| (k.clone(), v.clone())));
        let supplied_words = supplied
            .iter()
            .map(|(k, _, what)| format!("{k} = {what}"))
            .collect::<Vec<_>>()
            .join(", ");
        let params = match d.schema.validate(&Value::Object(values)) {
            Ok(p) => {
                let mut with = String::new();
                if !given.is_empty() {
                    let keys: Vec<&str> = given.keys().map(String::as_str).collect();
                    with.push_str(&format!(", {} from --set", keys.join(", ")));
                }
                if !supplied.is_empty() {
                    with.push_str(&format!(", {supplied_words}"));
                }
                push(
                    &mut lines,
                    id,
                    "defaults",
                    Verdict::Pass,
                    format!("{} parameter(s){with}", p.len()),
                );
                Value::Object(p)
            }
            Err(e) => {
                let required: Vec<String> = e
                    .problems
                    .iter()
                    .filter_map(|p| match p {
                        lethe_plugin_api::schema::ParamProblem::Missing { key } => {
                            Some(key.clone())
                        }
                        _ => None,
                    })
                    .collect();
                let detail = if !required.is_empty() && required.len() == e.problems.len() {
                    // Required parameters are allowed; the check needs a value.
                    let also = if supplied.is_empty() {
                        String::new()
                    } else {
                        format!("; the check supplies {supplied_words}")
                    };
                    format!(
                        "required parameter(s) without a default: give demo values with {}{also}",
                        required
                            .iter()
                            .map(|k| format!("--set {k}=VALUE"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                } else {
                    format!("the defaults do not validate against the schema: {e}")
                };
                push(&mut lines, id, "defaults", Verdict::Fail, detail);
                continue;
            }
        };
        let dir = scratch.join(format!("{n}-{}", sanitize(&d.id)));
        let run = |checkpoint: &Path, forget: &Path, tag: &str, cancel: Cancel| {
            let job = Job::Unlearn {
                library: library.to_path_buf(),
                id: d.id.clone(),
                params: params.clone(),
                checkpoint: checkpoint.to_path_buf(),
                data: demo.data.clone(),
                forget: forget.to_path_buf(),
                train_rows: None,
                out_dir: dir.join(tag),
                seed: 0,
                device: device.to_string(),
            };
            run_job_cancelling(opts, job, cancel)
        };
        let started = Instant::now();
        let mut model = if wants_encoder {
            &demo.encoder
        } else {
            &demo.classifier
        };
        let mut forget = demo.forget.clone();
        let no_class_list = |e: String| {
            (
                "runs on the demo",
                Verdict::Warn,
                format!("it forgets whole classes only, and no class list could be made: {e}"),
            )
        };
        if declared.whole_classes_only {
            match whole_class_list(demo, &dir) {
                Ok(list) => forget = list,
                Err(e) => {
                    let (what, verdict, detail) = no_class_list(e);
                    push(&mut lines, id, what, verdict, detail);
                }
            }
        }
        let tag = |model: &Path, forget: &Path| {
            let m = if model == demo.encoder {
                "encoder"
            } else {
                "classifier"
            };
            if *forget == *demo.forget {
                m.to_string()
            } else {
                format!("{m}-class")
            }
        };
        let (mut report, mut log, _) = run(model, &forget, &tag(model, &forget), Cancel::Never);
        if needs_other_model(&report.outcome) && model != &demo.encoder {
            model = &demo.encoder;
            (report, log, _) = run(model, &forget, &tag(model, &forget), Cancel::Never);
        }
        if needs_whole_class(&report.outcome) && forget == demo.forget {
            match whole_class_list(demo, &dir) {
                Ok(list) => {
                    forget = list;
                    (report, log, _) = run(model, &forget, &tag(model, &forget), Cancel::Never);
                }
                Err(e) => {
                    let (what, verdict, detail) = no_class_list(e);
                    push(&mut lines, id, what, verdict, detail);
                }
            }
        }
        let took = started.elapsed();
        let model_name = model.file_name().map(|f| f.to_string_lossy().into_owned());
        let model_name = model_name.unwrap_or_default();
        let (verdict, detail) = match &report.outcome {
            JobOutcome::Succeeded(value) => {
                let saved = artifact_names(value).iter().any(|n| n == "model");
                if d.kind == "method" && !saved {
                    (
                        Verdict::Fail,
                        format!(
                            "finished on {model_name} in {:.1}s but saved no model (call save_model at the end)",
                            took.as_secs_f64()
                        ),
                    )
                } else {
                    (
                        Verdict::Pass,
                        format!("{model_name}, {:.1}s", took.as_secs_f64()),
                    )
                }
            }
            other => (
                Verdict::Fail,
                with_log(&format!("on {model_name}: {other}"), &report),
            ),
        };
        push(&mut lines, id, "runs on the demo", verdict, detail);
        if let Some(l) = lines.last_mut() {
            l.log = log;
        }
        if !matches!(report.outcome, JobOutcome::Succeeded(_)) {
            continue;
        }
        let (cancelled, cancel_log, _) = run(model, &forget, "cancel", Cancel::AtStart);
        match &cancelled.outcome {
            JobOutcome::Cancelled { killed: false } => push(
                &mut lines,
                id,
                "handles cancel",
                Verdict::Pass,
                "cancelled before run was entered, it stopped".into(),
            ),
            JobOutcome::Cancelled { killed: true } => push(&mut lines,
                id,
                "handles cancel",
                Verdict::Fail,
                "it ignored the cancel and had to be killed: call check_cancelled() in every loop"
                    .into(),
            ),
            JobOutcome::Succeeded(_) => push(&mut lines,
                id,
                "handles cancel",
                Verdict::Fail,
                "it was cancelled before run was entered and still ran to the end: call check_cancelled() in every loop".into(),
            ),
            other => push(&mut lines,
                id,
                "handles cancel",
                Verdict::Fail,
                with_log(&format!("after a cancel: {other}"), &cancelled),
            ),
        }
        // What it logged while it should have been stopping shows where it went on.
        if let Some(l) = lines.last_mut().filter(|l| l.verdict == Verdict::Fail) {
            l.log = cancel_log;
        }
        // A plugin that checks only before its loops passes the check above; a
        // cancel in the middle of its work tells whether it polls as it goes.
        let (midway, midway_log, after_cancel) =
            run(model, &forget, "cancel-midway", Cancel::AtFirstEvent);
        let secs = after_cancel.unwrap_or_default().as_secs_f64();
        let (verdict, detail) = match &midway.outcome {
            JobOutcome::Cancelled { killed: false }
                if after_cancel.is_some_and(|d| d > MID_RUN_BOUND) =>
            {
                (
                    Verdict::Fail,
                    format!(
                        "cancelled during its work, it stopped only {secs:.1}s later: call \
                         check_cancelled() at least every second"
                    ),
                )
            }
            JobOutcome::Cancelled { killed: false } => (
                Verdict::Pass,
                format!(
                    "cancelled at its first progress report or log line, it stopped {secs:.2}s later"
                ),
            ),
            JobOutcome::Cancelled { killed: true } => (
                Verdict::Fail,
                "cancelled during its work, it did not stop and had to be killed: call \
                 check_cancelled() in every loop"
                    .to_string(),
            ),
            // Cancelled at its first event and still ran on for more than the
            // bound: it does not poll while it works.
            JobOutcome::Succeeded(_) if after_cancel.is_some_and(|d| d > MID_RUN_BOUND) => (
                Verdict::Fail,
                format!(
                    "cancelled during its work, it ran on for {secs:.1}s to the end: call \
                     check_cancelled() in every loop"
                ),
            ),
            JobOutcome::Succeeded(_) if after_cancel.is_some() => (
                Verdict::Warn,
                "it finished right after the cancel, too soon to tell whether it polls \
                 (its work after its first progress report or log line is short)"
                    .to_string(),
            ),
            JobOutcome::Succeeded(_) => (
                Verdict::Warn,
                "it reported no progress and logged nothing before it finished, so it could \
                 not be cancelled mid-run: report progress in its loops so a check, and a \
                 user, can see it work"
                    .to_string(),
            ),
            other => (
                Verdict::Fail,
                with_log(&format!("after a cancel mid-run: {other}"), &midway),
            ),
        };
        push(&mut lines, id, "stops mid-run", verdict, detail);
        if let Some(l) = lines.last_mut().filter(|l| l.verdict == Verdict::Fail) {
            l.log = midway_log;
        }
    }
    lines
}

/// Demo values for the required path parameters of `d` that say what they hold
/// and that `given` leaves out: `(key, value, the value in words)`.
fn demo_values(
    d: &DescriptorInfo,
    given: &serde_json::Map<String, Value>,
    demo: &Demo,
    wants_encoder: bool,
) -> Vec<(String, Value, String)> {
    use lethe_plugin_api::schema::{ParamKind, PathHolds};
    d.schema
        .params
        .iter()
        .filter(|p| !given.contains_key(&p.key))
        .filter_map(|p| match &p.kind {
            ParamKind::Path {
                default: None,
                holds: Some(holds),
                ..
            } => {
                let file = match holds {
                    PathHolds::Checkpoint if wants_encoder => &demo.encoder,
                    PathHolds::Checkpoint => &demo.classifier,
                    PathHolds::Dataset => &demo.data,
                    PathHolds::ForgetList => &demo.forget,
                };
                let name = file.file_name().map(|f| f.to_string_lossy().into_owned());
                Some((
                    p.key.clone(),
                    Value::from(file.to_string_lossy().into_owned()),
                    format!(
                        "the demo's {} ({})",
                        name.unwrap_or_default(),
                        holds.describe()
                    ),
                ))
            }
            _ => None,
        })
        .collect()
}

/// How long a plugin cancelled mid-run may go on before it counts as not
/// polling: a plugin should check at least every second; the second one is the
/// worker's own ending (its final message, its exit) on a loaded machine.
pub const MID_RUN_BOUND: Duration = Duration::from_secs(2);

/// When the check cancels a demo run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// Never.
    Never,
    /// From the start: the worker raises the flag before it creates the
    /// plugin, so `run` is entered with it up.
    AtStart,
    /// At the plugin's first progress report or log line: in the middle of its
    /// work.
    AtFirstEvent,
}

fn push(
    lines: &mut Vec<CheckLine>,
    id: Option<&str>,
    what: &str,
    verdict: Verdict,
    detail: String,
) {
    lines.push(CheckLine {
        id: id.map(str::to_string),
        what: what.to_string(),
        verdict,
        detail,
        log: Vec::new(),
    });
}

/// Runs `job`, cancelling it as `cancel` says; returns its report, its last log
/// lines, and how long it ran on after a cancel sent mid-run.
fn run_job_cancelling(
    opts: &WorkerOptions,
    job: Job,
    cancel: Cancel,
) -> (JobReport, Vec<String>, Option<Duration>) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let sink = std::sync::Arc::clone(&log);
    let (progressed, first_progress) = std::sync::mpsc::channel();
    let on_event = move |event| match event {
        FromWorker::Log { level, text } => {
            if let Ok(mut l) = sink.lock() {
                if l.len() == LOG_LINES {
                    l.pop_front();
                }
                l.push_back(format!("{}: {text}", level_name(level)));
            }
            // Only the first event matters; later sends find the receiver gone.
            let _ = progressed.send(());
        }
        FromWorker::Progress { .. } => {
            let _ = progressed.send(());
        }
        _ => {}
    };
    let spawned = if cancel == Cancel::AtStart {
        spawn_worker_cancelled(opts, job, on_event)
    } else {
        spawn_worker(opts, job, on_event)
    };
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            let report = JobReport {
                outcome: JobOutcome::Failed(format!("cannot start the worker: {e}")),
                stderr_tail: String::new(),
                elapsed: Duration::ZERO,
                exit: None,
                answered_hello: false,
            };
            return (report, Vec::new(), None);
        }
    };
    let mut cancelled_at = None;
    match cancel {
        Cancel::Never | Cancel::AtStart => {}
        Cancel::AtFirstEvent => loop {
            match first_progress.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => {
                    handle.cancel();
                    cancelled_at = Some(Instant::now());
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if handle.is_finished() => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        },
    }
    drop(first_progress);
    let report = handle.wait();
    let after_cancel = cancelled_at.map(|t| t.elapsed());
    let lines = log
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    (report, lines, after_cancel)
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// Whether a run failed only because the demo model lacks a head the plugin
/// needs (a contrastive method on the classifier), so the encoder should be tried.
fn needs_other_model(outcome: &JobOutcome) -> bool {
    matches!(outcome, JobOutcome::Failed(m) if m.contains("has no projection head"))
}

/// Whether a run failed only because the method forgets whole classes and the
/// demo's forget list is a random one, so a class list should be tried.
fn needs_whole_class(outcome: &JobOutcome) -> bool {
    matches!(outcome, JobOutcome::Failed(m) if m.contains("class-wise forgetting only"))
}

/// Writes the demo's class 0 training samples as a forget list under `dir`.
fn whole_class_list(demo: &Demo, dir: &Path) -> Result<PathBuf, String> {
    let d = crate::data::load(&demo.data).map_err(|e| e.to_string())?;
    let split = crate::jobs::train::split_of(&d, 0).map_err(|e| e.to_string())?;
    let set = crate::data::ForgetSet::from_class(&d, &split.train, 0).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("forget-class-0.txt");
    let text: String = set.indices().iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn artifact_names(result: &Value) -> Vec<String> {
    result["artifacts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn with_log(message: &str, report: &JobReport) -> String {
    let tail = report.stderr_tail.trim();
    if tail.is_empty() {
        message.to_string()
    } else {
        format!(
            "{message}\n      worker log:\n      {}",
            tail.replace('\n', "\n      ")
        )
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What is wrong with a descriptor's identity fields.
fn descriptor_problems(d: &DescriptorInfo) -> Vec<String> {
    let mut out = Vec::new();
    let reverse_dns = d.id.split('.').count() >= 3
        && d.id.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !reverse_dns {
        out.push(format!(
            "id `{}` is not reverse-DNS (like org.example.my-method: three or more lower-case dot-separated parts)",
            d.id
        ));
    }
    if d.name.trim().is_empty() {
        out.push("empty name".into());
    }
    let semver = d.version.split('.').count() == 3
        && d.version.split('.').all(|p| {
            let p = p.split(['-', '+']).next().unwrap_or("");
            !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())
        });
    if !semver {
        out.push(format!("version `{}` is not MAJOR.MINOR.PATCH", d.version));
    }
    if d.description.trim().is_empty() {
        out.push("empty description".into());
    }
    out
}

/// The report as text, one line per check.
pub fn render(library: &Path, lines: &[CheckLine]) -> String {
    let mut out = format!("{}\n", library.display());
    for l in lines {
        let tag = match l.verdict {
            Verdict::Pass => "ok  ",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "warn",
        };
        let who = l.id.as_deref().unwrap_or("library");
        out.push_str(&format!("  {tag} {who}: {}", l.what));
        if !l.detail.is_empty() {
            out.push_str(&format!(" ({})", l.detail));
        }
        out.push('\n');
        for text in &l.log {
            out.push_str(&format!("         | {text}\n"));
        }
    }
    let failed = lines.iter().filter(|l| l.verdict == Verdict::Fail).count();
    out.push_str(&if failed == 0 {
        "conforms\n".to_string()
    } else {
        format!("{failed} check(s) failed\n")
    });
    out
}
