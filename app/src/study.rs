//! Studies from the GUI: several methods × seeds on one model and forget set,
//! each compared with exact retraining (the engine's `study` module).
//!
//! The GUI writes the study file (`<project>/studies/<name>.toml`) and runs
//! `lethe study FILE --out <project>/studies/<name>` as a child process of this
//! executable, off the UI thread: its step lines become the study's log, the
//! finished runs are read back from the folder as they appear (so the table
//! fills in live), and cancelling kills the process (its workers notice their
//! parent is gone and stop; finished runs stay and a later run resumes). A
//! stored study is re-opened from its folder alone.

use crate::widgets::table::{CellValue, Column, Row, TableModel};
use lethe_engine::study::results::STUDY_FILE;
use lethe_engine::study::{ComparisonTable, RowKind, StudyResults, StudySpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};

/// The folder of a project's studies.
pub const STUDIES_DIR: &str = "studies";

/// One method row of a study being defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftMethod {
    /// Row label.
    pub name: String,
    /// Plugin id (its settings are the plugin's form values).
    pub id: String,
}

/// A study being defined (persisted with the app state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudyDraft {
    /// Name (the folder's).
    pub name: String,
    /// The model.
    pub checkpoint: Option<PathBuf>,
    /// Its data.
    pub data: Option<PathBuf>,
    /// The forget set.
    pub forget: Option<PathBuf>,
    /// Compared methods.
    pub methods: Vec<DraftMethod>,
    /// Attack plugin ids.
    pub attacks: Vec<String>,
    /// Seeds, as typed (`0, 1, 2`).
    pub seeds: String,
    /// Also a row for the original model.
    pub original: bool,
    /// Metric keys chosen as columns; empty: the default set.
    pub metrics: Vec<String>,
    /// The reference method's plugin id (exact retraining).
    pub retrain_id: String,
}

impl Default for StudyDraft {
    fn default() -> Self {
        StudyDraft {
            name: "study-1".into(),
            checkpoint: None,
            data: None,
            forget: None,
            methods: Vec::new(),
            attacks: Vec::new(),
            seeds: "0, 1".into(),
            original: false,
            metrics: Vec::new(),
            retrain_id: lethe_engine::study::spec::RETRAIN_ID.into(),
        }
    }
}

/// The seeds typed, or what is wrong with them.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in text.split([',', ' ', ';']).filter(|p| !p.trim().is_empty()) {
        let s: u64 = part
            .trim()
            .parse()
            .map_err(|_| format!("seeds: {part:?} is not a whole number ≥ 0"))?;
        if out.contains(&s) {
            return Err(format!("seeds: {s} is listed twice"));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err("seeds: give at least one seed, like 0, 1".into());
    }
    Ok(out)
}

/// A name the study file accepts (letters, digits, `-`, `_`, `+`, `.`; at
/// most 40), made from any label.
pub fn clean_name(label: &str, keep_dots: bool) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric()
                || c == '-'
                || c == '_'
                || (keep_dots && matches!(c, '+' | '.'))
            {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s: String = s.chars().take(40).collect();
    if s.is_empty() { "x".into() } else { s }
}

/// A table row label for a plugin name: the abbreviation in brackets when it
/// has one (`Fine-tune (FT)` → `FT`), else the name made valid.
pub fn row_label(plugin_name: &str) -> String {
    let abbreviation = plugin_name
        .trim()
        .strip_suffix(')')
        .and_then(|s| s.rsplit_once('('))
        .map(|(_, a)| a.trim())
        .filter(|a| !a.is_empty() && a.len() <= 12);
    clean_name(abbreviation.unwrap_or(plugin_name), true)
}

/// The short name of an attack (it prefixes metric keys): the last part of its id.
pub fn attack_name(id: &str) -> String {
    clean_name(id.rsplit('.').next().unwrap_or(id), false)
}

/// The metric columns offered for `attacks` (short names), and whether each
/// is on by default.
pub fn metric_choices(attacks: &[String]) -> Vec<(String, bool)> {
    let mut out = vec![("ua".to_string(), true)];
    for a in attacks {
        out.push((format!("{a}.efficacy"), true));
        out.push((format!("{a}.auc"), true));
        out.push((format!("{a}.tpr@1%"), false));
        out.push((format!("{a}.tpr@0.1%"), false));
    }
    out.extend([
        ("ra".to_string(), true),
        ("ta".to_string(), true),
        ("va".to_string(), false),
        ("fs".to_string(), false),
    ]);
    out
}

/// What a metric key means, for hover text.
pub fn metric_help(key: &str) -> String {
    match key {
        "ua" => "UA: accuracy on the forget set (retraining's value is the target)".into(),
        "ra" => "RA: accuracy on the retained training data".into(),
        "ta" => "TA: accuracy on the test split".into(),
        "va" => "VA: accuracy on the validation split".into(),
        "fs" => "FS: forgetting score of the alignment audit (encoders; for a classifier, choosing it runs the audit on its backbone and writes AM/AGM heatmaps per run)".into(),
        k if k.ends_with(".efficacy") => {
            "MIA efficacy: share of the forget set the attack calls non-members".into()
        }
        k if k.ends_with(".auc") => {
            "Attack AUC, forget set vs held-out non-members (0.5: cannot tell them apart)".into()
        }
        k if k.contains(".tpr@") => "Attack TPR at a low false-positive rate".into(),
        _ => String::new(),
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

/// A JSON value as an inline TOML value (`None` for null, which TOML lacks).
fn toml_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        // serde_json prints floats with a dot or an exponent (`0.05`, `1e-5`,
        // `50.0`), as TOML wants them.
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml_string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .filter_map(toml_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", toml_key(k), toml_value(v)?)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A JSON object as a TOML document: plain keys first, then tables, then
/// arrays of tables (deeper objects inline). Enough for a study file.
pub fn to_toml(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    let is_table_array = |v: &Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
    };
    let mut out = String::from(
        "# Written by the Lethe desktop app; `lethe study THIS-FILE --out FOLDER` runs it too.\n",
    );
    for (k, v) in obj {
        if v.is_object() || is_table_array(v) {
            continue;
        }
        if let Some(t) = toml_value(v) {
            out.push_str(&format!("{} = {t}\n", toml_key(k)));
        }
    }
    let body = |o: &serde_json::Map<String, Value>, out: &mut String| {
        for (k, v) in o {
            if let Some(t) = toml_value(v) {
                out.push_str(&format!("{} = {t}\n", toml_key(k)));
            }
        }
    };
    for (k, v) in obj {
        if let Some(o) = v.as_object() {
            out.push_str(&format!("\n[{}]\n", toml_key(k)));
            body(o, &mut out);
        }
    }
    for (k, v) in obj {
        if is_table_array(v) {
            for item in v.as_array().into_iter().flatten() {
                out.push_str(&format!("\n[[{}]]\n", toml_key(k)));
                if let Some(o) = item.as_object() {
                    body(o, &mut out);
                }
            }
        }
    }
    out
}

/// The study file text of `spec`.
pub fn spec_toml(spec: &StudySpec) -> Result<String, String> {
    let v = serde_json::to_value(spec).map_err(|e| format!("cannot encode the study: {e}"))?;
    Ok(to_toml(&v))
}

/// Where a study named `name` lives in a project: its file and its folder.
pub fn paths(project: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = project.join(STUDIES_DIR);
    (dir.join(format!("{name}.toml")), dir.join(name))
}

/// The log file of a study folder (beside it: the folder holds only what
/// `lethe study` writes).
pub fn log_path(study_dir: &Path) -> PathBuf {
    let name = study_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "study".into());
    study_dir.with_file_name(format!("{name}.log"))
}

/// The process id of a `lethe study` running in `dir` outside this window
/// (its `.lock` names a live process), if any.
pub fn running_elsewhere(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(".lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (pid > 0 && Path::new("/proc").join(pid.to_string()).exists()).then_some(pid)
}

/// The study folders of a project, by name.
pub fn list(project: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(project.join(STUDIES_DIR))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join(STUDY_FILE).is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The comparison table as the table widget's model: the metric columns,
/// then Avg. Gap and the run time.
pub fn table_model(t: &ComparisonTable) -> TableModel {
    let mut columns: Vec<Column> = t
        .columns
        .iter()
        .map(|c| Column {
            label: c.label.clone(),
            help: format!(
                "{}{}",
                metric_help(&c.key),
                if c.in_avg_gap {
                    "\nCounted in Avg. Gap."
                } else {
                    ""
                }
            ),
            decimals: c.decimals,
            has_gap: true,
            summary: false,
        })
        .collect();
    columns.push(Column {
        label: "Avg. Gap".into(),
        help: "Mean of the row's gaps to retrain over the Avg. Gap columns: smaller is better"
            .into(),
        decimals: 2,
        has_gap: true,
        summary: true,
    });
    columns.push(Column {
        label: "RTE (s)".into(),
        help: "Run time of the method's job in seconds (Retrain: of its training)".into(),
        decimals: 1,
        has_gap: false,
        summary: true,
    });
    let rows = t
        .rows
        .iter()
        .map(|r| {
            let mut cells: Vec<CellValue> = r
                .cells
                .iter()
                .map(|c| CellValue {
                    mean: c.mean,
                    std: c.std,
                    gap: c.gap,
                    delta: c.delta,
                    best: c.best,
                    values: c.values.clone(),
                })
                .collect();
            cells.push(CellValue {
                mean: r.avg_gap,
                gap: r.avg_gap,
                best: r.avg_gap_best,
                ..CellValue::default()
            });
            cells.push(CellValue {
                mean: r.rte.mean,
                std: r.rte.std,
                values: r.rte.values.clone(),
                ..CellValue::default()
            });
            let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
            Row {
                label: r.label.clone(),
                reference: r.kind != RowKind::Method,
                note: format!(
                    "{} · seeds {}",
                    match r.kind {
                        RowKind::Retrain => "exact retraining: the reference",
                        RowKind::Original => "the model before unlearning",
                        RowKind::Method => "compared method",
                    },
                    if seeds.is_empty() {
                        "none finished yet".into()
                    } else {
                        seeds.join(", ")
                    }
                ),
                cells,
            }
        })
        .collect();
    TableModel { columns, rows }
}

/// How far a study is: runs finished and runs in all.
pub fn progress(results: &StudyResults) -> (usize, usize) {
    let total = lethe_engine::study::results::rows(&results.manifest.spec).len()
        * results.manifest.spec.seeds.len();
    (total - results.missing().len(), total)
}

/// The within-run fraction of a verbose worker line (`  [..] [ 45%] ...`).
pub fn line_fraction(line: &str) -> Option<f64> {
    let start = line.find("] [")? + 3;
    let end = start + line[start..].find("%]")?;
    line[start..end]
        .trim()
        .parse::<f64>()
        .ok()
        .map(|p| p / 100.0)
}

/// What a running (or ended) study process said, for its view.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Its lines, in order (bounded).
    pub lines: Vec<String>,
    /// The current run's progress, from the last worker progress line.
    pub run_fraction: Option<f64>,
    /// How the process ended, once it has.
    pub ended: Option<Ended>,
    /// The folder changed while it was being read: read it again.
    pub reload: bool,
    /// When the folder was last read for a study running elsewhere or
    /// unfinished (unix seconds).
    pub checked: f64,
    /// How long this process's runs took, for the time left.
    pub clock: RunClock,
}

/// The wall time of each run a study process carried out, from its step lines
/// as they arrive, so that the time left adds up what runs like the missing
/// ones took here. A count-based rate swings wildly: runs reused from the
/// folder finish in no time, and a retraining row takes many times longer than
/// a fine-tuning row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunClock {
    /// The run under way: row, seed, and when its first step line came.
    current: Option<(String, u64, f64)>,
    /// Seconds each finished run took, by row.
    measured: Vec<(String, f64)>,
}

/// The row and seed a study step line is about (`study: FT, seed 1: evaluating`).
fn step_run(line: &str) -> Option<(&str, u64, &str)> {
    let rest = line.strip_prefix("study:")?.trim_start();
    let (head, step) = rest.split_once(": ")?;
    let (row, seed) = head.rsplit_once(", seed ")?;
    Some((row, seed.parse().ok()?, step))
}

impl RunClock {
    /// Notes a line that arrived at `now` (unix seconds).
    pub fn observe(&mut self, line: &str, now: f64) {
        let Some((row, seed, step)) = step_run(line) else {
            // The closing summary: the last run is over.
            if line.starts_with("study:") {
                self.close(now);
            }
            return;
        };
        if matches!(&self.current, Some((r, s, _)) if r == row && *s == seed) {
            return;
        }
        self.close(now);
        // A run found finished in the folder took no time now.
        if !step.starts_with("finished earlier") {
            self.current = Some((row.to_string(), seed, now));
        }
    }

    fn close(&mut self, now: f64) {
        if let Some((row, _, start)) = self.current.take() {
            self.measured.push((row, (now - start).max(0.0)));
        }
    }

    /// What a run of `row` is expected to take: its own earlier runs, else any
    /// run measured so far.
    fn expected(&self, row: &str) -> Option<f64> {
        let mean =
            |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        mean(
            self.measured
                .iter()
                .filter(|(r, _)| r == row)
                .map(|(_, s)| *s)
                .collect(),
        )
        .or_else(|| mean(self.measured.iter().map(|(_, s)| *s).collect()))
    }

    /// Seconds left for the runs in `missing` (the run under way among them),
    /// or `None` before any run has been timed.
    pub fn left(&self, missing: &[(String, u64)], now: f64) -> Option<f64> {
        let mut total = 0.0;
        for (row, seed) in missing {
            let expected = self.expected(row)?;
            total += match &self.current {
                Some((r, s, start)) if r == row && s == seed => (expected - (now - start)).max(0.0),
                _ => expected,
            };
        }
        Some(total)
    }
}

/// Lines kept per study in memory (the log file beside the folder has all).
pub const MAX_LINES: usize = 2000;

impl Live {
    /// Adds a line.
    pub fn push(&mut self, line: String) {
        if let Some(f) = line_fraction(&line) {
            self.run_fraction = Some(f);
        } else if line.starts_with("study:") {
            // A new step of the study: the previous run's progress is over.
            self.run_fraction = None;
        }
        self.lines.push(line);
        if self.lines.len() > MAX_LINES {
            let excess = self.lines.len() - MAX_LINES;
            self.lines.drain(..excess);
        }
    }
}

/// Something a study process said.
#[derive(Debug, Clone, PartialEq)]
pub enum StudyEvent {
    /// A line of its stderr.
    Line(String),
    /// Its stderr closed (it is exiting).
    Closed,
}

/// A running `lethe study` process.
struct Running {
    child: Child,
    started: f64,
}

/// How a study process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Exit status 0.
    Finished,
    /// Cancelled by the user.
    Cancelled,
    /// Exit status, signal, or the error starting it.
    Failed(String),
}

/// What [`StudyRunner::poll`] found: lines by study folder, and the studies
/// whose process has ended.
pub type Polled = (Vec<(PathBuf, String)>, Vec<(PathBuf, Ended)>);

/// The study processes, their events in one channel.
pub struct StudyRunner {
    exe: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    tx: Sender<(PathBuf, StudyEvent)>,
    rx: Receiver<(PathBuf, StudyEvent)>,
    running: std::collections::HashMap<PathBuf, Running>,
    waker: crate::runner::Waker,
}

impl StudyRunner {
    /// Studies run `exe study …`, also searching `plugin_dirs`.
    pub fn new(exe: PathBuf, plugin_dirs: Vec<PathBuf>, waker: crate::runner::Waker) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        StudyRunner {
            exe,
            plugin_dirs,
            tx,
            rx,
            running: Default::default(),
            waker,
        }
    }

    /// Whether the study in `dir` is running.
    pub fn is_running(&self, dir: &Path) -> bool {
        self.running.contains_key(dir)
    }

    /// When the study in `dir` was started (unix seconds), while it runs.
    pub fn started(&self, dir: &Path) -> Option<f64> {
        self.running.get(dir).map(|r| r.started)
    }

    /// Whether any study is running.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Writes `file` and starts `lethe study file --out dir -v`.
    pub fn start(&mut self, file: &Path, toml: &str, dir: &Path, now: f64) -> Result<(), String> {
        if self.running.contains_key(dir) {
            return Err(format!("{} is already running", dir.display()));
        }
        crate::project::write_file(file, toml.as_bytes()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.exe);
        for d in &self.plugin_dirs {
            cmd.arg("--plugins").arg(d);
        }
        cmd.arg("study")
            .arg(file)
            .arg("--out")
            .arg(dir)
            .arg("--verbose")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let stderr = child.stderr.take();
        let tx = self.tx.clone();
        let waker = std::sync::Arc::clone(&self.waker);
        let key = dir.to_path_buf();
        std::thread::spawn(move || {
            if let Some(err) = stderr {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((key.clone(), StudyEvent::Line(line))).is_err() {
                        return;
                    }
                    waker();
                }
            }
            let _ = tx.send((key, StudyEvent::Closed));
            waker();
        });
        self.running.insert(
            dir.to_path_buf(),
            Running {
                child,
                started: now,
            },
        );
        Ok(())
    }

    /// Stops the study in `dir` (its workers stop when they see it gone).
    pub fn cancel(&mut self, dir: &Path) -> bool {
        match self.running.remove(dir) {
            Some(mut r) => {
                let _ = r.child.kill();
                let _ = r.child.wait();
                true
            }
            None => false,
        }
    }

    /// Lines that arrived, and the studies whose process has ended.
    pub fn poll(&mut self) -> Polled {
        let mut lines = Vec::new();
        let mut closed = Vec::new();
        while let Ok((dir, e)) = self.rx.try_recv() {
            match e {
                StudyEvent::Line(l) => lines.push((dir, l)),
                StudyEvent::Closed => closed.push(dir),
            }
        }
        let mut ended = Vec::new();
        for dir in closed {
            let Some(mut r) = self.running.remove(&dir) else {
                continue;
            };
            let how = match r.child.wait() {
                Ok(s) if s.success() => Ended::Finished,
                Ok(s) => Ended::Failed(format!("lethe study ended with {s}")),
                Err(e) => Ended::Failed(format!("lethe study: {e}")),
            };
            ended.push((dir, how));
        }
        (lines, ended)
    }

    /// Stops every study (on exit).
    pub fn shutdown(&mut self) {
        let dirs: Vec<PathBuf> = self.running.keys().cloned().collect();
        for d in dirs {
            self.cancel(&d);
        }
    }
}

impl Drop for StudyRunner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn time_left_adds_up_what_each_row_took_here() {
        let mut c = RunClock::default();
        let missing = |rows: &[(&str, u64)]| -> Vec<(String, u64)> {
            rows.iter().map(|(r, s)| (r.to_string(), *s)).collect()
        };
        // Reused runs take no time and are not measured.
        c.observe("study: demo: finding plugins", 0.0);
        c.observe(
            "study: Original, seed 0: finished earlier, reused (runs/original-s0)",
            1.0,
        );
        c.observe(
            "study: Retrain, seed 0: retraining (not in the cache yet)",
            2.0,
        );
        let all = missing(&[("Retrain", 0), ("FT", 0), ("Retrain", 1), ("FT", 1)]);
        assert_eq!(c.left(&all, 50.0), None, "nothing timed yet");
        // Lines of the same run do not start a new one.
        c.observe("  [retrain] [ 50%] epoch 15/30", 50.0);
        c.observe("study: Retrain, seed 0: evaluating", 90.0);
        c.observe(
            "study: FT, seed 0: unlearning with org.lethe.baseline.finetune",
            102.0,
        );
        // Retrain took 100 s; FT, not timed yet, is expected to take as long;
        // 2 s of the current run are gone.
        let left = c.left(&all[1..], 104.0).unwrap();
        assert!((left - (98.0 + 100.0 + 100.0)).abs() < 1e-9, "{left}");
        c.observe(
            "study: Retrain, seed 1: retraining (not in the cache yet)",
            112.0,
        );
        // FT took 10 s: its next run is expected to, and the estimate drops.
        let left = c.left(&all[2..], 112.0).unwrap();
        assert!((left - (100.0 + 10.0)).abs() < 1e-9, "{left}");
        // A run longer than expected has nothing left, not a negative time.
        let left = c.left(&all[2..], 400.0).unwrap();
        assert!((left - 10.0).abs() < 1e-9, "{left}");
        c.observe("study: 4 run(s) done, 1 reused from the folder", 420.0);
        assert_eq!(c.expected("Retrain"), Some((100.0 + 308.0) / 2.0));
        assert_eq!(
            step_run("study: A, seed 3, seed 2: x"),
            Some(("A, seed 3", 2, "x"))
        );
    }
    use super::*;

    #[test]
    fn seeds_and_names_are_checked() {
        assert_eq!(parse_seeds("0, 1;2 3").unwrap(), [0, 1, 2, 3]);
        assert!(parse_seeds("1, 1").unwrap_err().contains("twice"));
        assert!(parse_seeds("a").unwrap_err().contains("\"a\""));
        assert!(parse_seeds(" ").is_err());
        assert_eq!(clean_name("Fine-tuning (FT)", true), "Fine-tuning-FT");
        assert_eq!(clean_name("l1 sparse+", true), "l1-sparse+");
        assert_eq!(clean_name("???", true), "x");
        assert_eq!(attack_name("org.lethe.attack.metric-mia"), "metric-mia");
        assert_eq!(row_label("Fine-tune (FT)"), "FT");
        assert_eq!(row_label("Influence unlearning (WoodFisher)"), "WoodFisher");
        assert_eq!(row_label("NegGrad"), "NegGrad");
        assert_eq!(line_fraction("  [FT, seed 0] [ 45%] epoch 1/2"), Some(0.45));
        assert_eq!(line_fraction("study: FT, seed 0: unlearning"), None);
    }

    #[test]
    fn metric_choices_follow_the_attacks() {
        let m = metric_choices(&["mia".into()]);
        let on: Vec<&str> = m
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(on, ["ua", "mia.efficacy", "mia.auc", "ra", "ta"]);
        assert!(m.iter().any(|(k, _)| k == "mia.tpr@0.1%"));
    }

    #[test]
    fn a_spec_written_as_toml_reads_back_the_same_through_the_engine() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["m.safetensors", "d.npz", "f.txt"] {
            std::fs::write(tmp.path().join(f), "x").unwrap();
        }
        let abs = |f: &str| std::fs::canonicalize(tmp.path().join(f)).unwrap();
        let text = r#"
name = "gui-1"
checkpoint = "m.safetensors"
data = "d.npz"
forget = "f.txt"
seeds = [0, 3]
device = "cpu"
metrics = ["ua", "mia.auc", "ra"]
original = true

[retrain]
params = { max_epochs = 1, lr = 1e-5, note = "a \"quoted\" \\ value" }

[[methods]]
name = "FT"
id = "org.lethe.baseline.finetune"
params = { lr = 0.05, augment = false, max_batches = 10 }

[[methods]]
name = "NegGrad+"
id = "org.lethe.baseline.neggrad"

[[attacks]]
name = "mia"
id = "org.lethe.attack.metric-mia"
params = { shadow_size = 500 }
bootstrap = 200
"#;
        let first = tmp.path().join("first.toml");
        std::fs::write(&first, text).unwrap();
        let spec = StudySpec::load(&first).unwrap();
        assert_eq!(spec.checkpoint, abs("m.safetensors"));
        let written = spec_toml(&spec).unwrap();
        let again = tmp.path().join("sub").join("again.toml");
        std::fs::create_dir_all(again.parent().unwrap()).unwrap();
        std::fs::write(&again, &written).unwrap();
        let back = StudySpec::load(&again).unwrap();
        assert_eq!(back, spec, "{written}");
    }
}
