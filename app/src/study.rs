//! Studies from the GUI: several methods × seeds on one model and forget set,
//! each compared with exact retraining (the engine's `study` module).
//!
//! The GUI writes the study file (`<project>/studies/<name>.toml`) and runs
//! `lethe study FILE --out <project>/studies/<name>` as a child process of this
//! executable, off the UI thread: its step lines become the study's log, the
//! finished runs are read back from the folder as they appear (so the table
//! fills in live), and cancelling asks the process to stop (SIGTERM): a study
//! running its runs in its own workers ends at once (the workers notice their
//! parent is gone and stop), one running them on an executor (several at once
//! on this machine, or on a Slurm cluster: the form's "Run on") first stops
//! them (cancels its Slurm tasks and waits until they are gone), and is killed
//! if it has not ended 90 s later. Finished runs stay and a later run resumes.
//! A stored study is re-opened from its folder alone.

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
    /// Where the runs go (this machine or a Slurm cluster).
    #[serde(default)]
    pub run_on: RunOn,
}

/// Where a study's runs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPlace {
    /// This machine.
    #[default]
    ThisMachine,
    /// A Slurm cluster (this machine submits; the runs go to its nodes).
    Slurm,
}

/// The "Run on" choice of the study form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOn {
    /// This machine or Slurm.
    pub place: RunPlace,
    /// This machine: runs at once (1: one after another, in the study's own
    /// process).
    pub jobs: usize,
    /// Slurm: the settings, as typed.
    pub slurm: SlurmDraft,
}

impl Default for RunOn {
    fn default() -> Self {
        RunOn {
            place: RunPlace::ThisMachine,
            jobs: 1,
            slurm: SlurmDraft::default(),
        }
    }
}

/// The Slurm settings as typed in the form (empty: the cluster's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlurmDraft {
    /// `--partition`.
    pub partition: String,
    /// `--time` per run.
    pub time: String,
    /// `--cpus-per-task`.
    pub cpus: String,
    /// `--mem` per run.
    pub mem: String,
    /// GPUs per run (`--gres gpu:N`).
    pub gpus: String,
    /// `--account`.
    pub account: String,
    /// Most runs at once (`--array=…%N`).
    pub max_parallel: String,
    /// Further `sbatch` arguments, split on whitespace.
    pub extra_args: String,
}

/// Whether `sbatch` is on this machine's PATH (looked up once).
pub fn has_sbatch() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("sbatch").is_file()))
    })
}

/// The cores of this machine (the most runs at once offered).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A Slurm time limit as typed: minutes (`90`), `HH:MM:SS` or `D-HH:MM:SS`.
pub fn check_time(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "time limit: {t:?} is not a time like 02:00:00 (hours:minutes:seconds), \
             1-12:00:00 (days-hours:minutes:seconds) or 90 (minutes)"
        )
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let seconds = if let Some(minutes) = number(t) {
        minutes * 60
    } else {
        let (days, hms) = match t.split_once('-') {
            Some((d, rest)) => (number(d).ok_or_else(bad)?, rest),
            None => (0, t),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let [h, m, s] = parts[..] else {
            return Err(bad());
        };
        let (h, m, s) = (
            number(h).ok_or_else(bad)?,
            number(m).filter(|_| m.len() == 2).ok_or_else(bad)?,
            number(s).filter(|_| s.len() == 2).ok_or_else(bad)?,
        );
        if m > 59 || s > 59 || (days > 0 && h > 23) {
            return Err(bad());
        }
        ((days * 24 + h) * 60 + m) * 60 + s
    };
    if seconds == 0 {
        return Err(format!(
            "time limit: {t:?} is no time at all; leave it empty for the partition's limit"
        ));
    }
    Ok(t.to_string())
}

/// Memory per run as typed: a whole number with K, M, G or T (`8G`, `512M`;
/// Slurm reads a bare number as megabytes).
pub fn check_mem(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad = || format!("memory: {t:?} is not an amount like 8G or 512M");
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], Some(c.to_ascii_uppercase())),
        _ => (t, None),
    };
    if !matches!(unit, None | Some('K' | 'M' | 'G' | 'T'))
        || number.is_empty()
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("memory: give at least 1{}", unit.unwrap_or('M')));
    }
    Ok(format!("{n}{}", unit.map(String::from).unwrap_or_default()))
}

/// A whole number ≥ 1 as typed, or `None` when left empty.
fn check_count(label: &str, text: &str, empty: &str) -> Result<Option<u32>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!(
            "{label}: {t:?} is not a whole number ≥ 1 (leave it empty for {empty})"
        )),
    }
}

/// A partition or account name: one word.
fn check_word(label: &str, text: &str) -> Result<Option<String>, String> {
    let t = text.trim();
    if t.is_empty() {
        Ok(None)
    } else if t.chars().any(char::is_whitespace) {
        Err(format!("{label}: {t:?} has spaces; give one name"))
    } else {
        Ok(Some(t.to_string()))
    }
}

impl SlurmDraft {
    /// The settings of the study file's `[slurm]` table, or what is wrong.
    pub fn settings(&self) -> Result<lethe_engine::exec::SlurmSettings, Vec<String>> {
        let mut errors = Vec::new();
        fn ok<T>(errors: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
            r.map_err(|e| errors.push(e)).ok()
        }
        let e = &mut errors;
        let partition = ok(e, check_word("partition", &self.partition)).flatten();
        let account = ok(e, check_word("account", &self.account)).flatten();
        let time = if self.time.trim().is_empty() {
            None
        } else {
            ok(e, check_time(&self.time))
        };
        let mem = if self.mem.trim().is_empty() {
            None
        } else {
            ok(e, check_mem(&self.mem))
        };
        let cpus = ok(
            e,
            check_count("CPUs per run", &self.cpus, "the partition's default"),
        )
        .flatten();
        let gpus = ok(e, check_count("GPUs per run", &self.gpus, "none")).flatten();
        let max_parallel = ok(
            e,
            check_count("most runs at once", &self.max_parallel, "no limit"),
        )
        .flatten();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(lethe_engine::exec::SlurmSettings {
            partition,
            time,
            cpus_per_task: cpus,
            mem,
            gres: gpus.map(|n| format!("gpu:{n}")),
            account,
            max_parallel: max_parallel.map_or(0, |n| n as usize),
            extra_args: self
                .extra_args
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            ..Default::default()
        })
    }
}

impl RunOn {
    /// The executor chosen, or what is wrong with the Slurm settings.
    pub fn executor(&self) -> Result<lethe_engine::exec::ExecutorConfig, Vec<String>> {
        use lethe_engine::exec::ExecutorConfig;
        match self.place {
            RunPlace::ThisMachine => Ok(ExecutorConfig::Local {
                jobs: self.jobs.max(1),
            }),
            RunPlace::Slurm => self.slurm.settings().map(ExecutorConfig::Slurm),
        }
    }
}

/// Where the runs of `spec` go: Slurm when its file carries a `[slurm]` table
/// (the form writes one only when the study runs there), else this machine,
/// `jobs` at once.
pub fn executor_for(spec: &StudySpec, jobs: usize) -> lethe_engine::exec::ExecutorConfig {
    match &spec.slurm {
        Some(s) => lethe_engine::exec::ExecutorConfig::Slurm(s.clone()),
        None => lethe_engine::exec::ExecutorConfig::Local { jobs: jobs.max(1) },
    }
}

/// The command line of `lethe study` (after the program) for `file`, into
/// `dir`, on `executor`: Slurm settings travel in the file's `[slurm]` table.
pub fn study_args(
    plugin_dirs: &[PathBuf],
    file: &Path,
    dir: &Path,
    executor: &lethe_engine::exec::ExecutorConfig,
) -> Vec<std::ffi::OsString> {
    use lethe_engine::exec::ExecutorConfig;
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for d in plugin_dirs {
        args.push("--plugins".into());
        args.push(d.into());
    }
    args.extend([
        "study".into(),
        file.into(),
        "--out".into(),
        dir.into(),
        "--verbose".into(),
    ]);
    match executor {
        ExecutorConfig::Local { jobs } if *jobs > 1 => {
            args.push("--jobs".into());
            args.push(jobs.to_string().into());
        }
        ExecutorConfig::Local { .. } => {}
        ExecutorConfig::Slurm(_) => {
            args.push("--executor".into());
            args.push("slurm".into());
        }
    }
    args
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
            run_on: RunOn::default(),
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
        label: t.avg_gap_label.clone(),
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
    let has_tow = t.rows.iter().any(|r| r.tow.is_some());
    let has_tow_mia = t.rows.iter().any(|r| r.tow_mia.is_some());
    let tow_help = "Tug of war (Zhao et al. 2024): (1 − |ΔUA|)(1 − |ΔRA|)(1 − |ΔTA|) against the retrained model of the same seed, averaged over seeds; 1 = as retraining, higher is better. Hover a cell for its 95 % interval.";
    if has_tow {
        columns.push(Column {
            label: "ToW".into(),
            help: tow_help.into(),
            decimals: 3,
            has_gap: false,
            summary: true,
        });
    }
    if has_tow_mia {
        columns.push(Column {
            label: "ToW-MIA".into(),
            help: format!("{tow_help}\nToW-MIA puts the first attack's efficacy in place of UA."),
            decimals: 3,
            has_gap: false,
            summary: true,
        });
    }
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
                    paired: c
                        .paired
                        .as_ref()
                        .and_then(|p| Some((p.mean, p.low?, p.high?))),
                    interval: None,
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
            for (on, tow) in [(has_tow, &r.tow), (has_tow_mia, &r.tow_mia)] {
                if on {
                    cells.push(CellValue {
                        mean: tow.as_ref().map(|t| t.mean),
                        values: tow.as_ref().map(|t| t.values.clone()).unwrap_or_default(),
                        interval: tow.as_ref().and_then(|t| Some((t.low?, t.high?))),
                        ..CellValue::default()
                    });
                }
            }
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
    /// The runs of an executor (several at once, or Slurm tasks), from its
    /// lines.
    pub tasks: crate::study_tasks::TaskBoard,
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
        // Runs on an executor overlap: their lines say nothing about one run
        // after another.
        if crate::study_tasks::parse_line(line).is_some() {
            return;
        }
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
        self.tasks.observe(&line);
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
    /// Which process of this folder it is (events of an earlier one that are
    /// still in the channel are not taken for this one's).
    generation: u64,
    executor: lethe_engine::exec::ExecutorConfig,
    /// When it was asked to stop (SIGTERM), and whether it was killed since.
    stopping: Option<(std::time::Instant, bool)>,
}

/// How long a study asked to stop gets to stop its runs (cancel its Slurm
/// tasks and wait until they are gone) before it is killed.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(90);

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

/// Sends SIGTERM to a child not waited for yet (so its id is still its own).
pub(crate) fn terminate(child: &Child) -> Result<(), String> {
    // std offers SIGKILL only; the shell's `kill` is everywhere.
    let status = Command::new("sh")
        .arg("-c")
        .arg("kill -TERM \"$1\"")
        .arg("sh")
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -TERM {} ended with {status}", child.id()))
    }
}

/// The study processes, their events in one channel.
pub struct StudyRunner {
    exe: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    tx: Sender<(PathBuf, u64, StudyEvent)>,
    rx: Receiver<(PathBuf, u64, StudyEvent)>,
    running: std::collections::HashMap<PathBuf, Running>,
    generation: u64,
    waker: crate::runner::Waker,
    /// [`STOP_GRACE`], shorter in tests.
    grace: std::time::Duration,
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
            generation: 0,
            waker,
            grace: STOP_GRACE,
        }
    }

    /// How long a study asked to stop gets before it is killed (default
    /// [`STOP_GRACE`]).
    pub fn set_stop_grace(&mut self, grace: std::time::Duration) {
        self.grace = grace;
    }

    /// Whether the study in `dir` is running (stopping included).
    pub fn is_running(&self, dir: &Path) -> bool {
        self.running.contains_key(dir)
    }

    /// Whether the study in `dir` was asked to stop and has not ended yet.
    pub fn is_stopping(&self, dir: &Path) -> bool {
        self.running.get(dir).is_some_and(|r| r.stopping.is_some())
    }

    /// Where the runs of the study in `dir` go, while it runs.
    pub fn executor(&self, dir: &Path) -> Option<&lethe_engine::exec::ExecutorConfig> {
        self.running.get(dir).map(|r| &r.executor)
    }

    /// The studies running (stopping included), by folder.
    pub fn running(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.running.keys().cloned().collect();
        out.sort();
        out
    }

    /// When the study in `dir` was started (unix seconds), while it runs.
    pub fn started(&self, dir: &Path) -> Option<f64> {
        self.running.get(dir).map(|r| r.started)
    }

    /// Whether any study is running.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Writes `file` and starts `lethe study file --out dir -v` on `executor`
    /// (its Slurm settings are in the file).
    pub fn start(
        &mut self,
        file: &Path,
        toml: &str,
        dir: &Path,
        executor: &lethe_engine::exec::ExecutorConfig,
        now: f64,
    ) -> Result<(), String> {
        if self.running.contains_key(dir) {
            return Err(format!("{} is already running", dir.display()));
        }
        crate::project::write_file(file, toml.as_bytes()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(study_args(&self.plugin_dirs, file, dir, executor))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        self.generation += 1;
        let generation = self.generation;
        let stderr = child.stderr.take();
        let tx = self.tx.clone();
        let waker = std::sync::Arc::clone(&self.waker);
        let key = dir.to_path_buf();
        std::thread::spawn(move || {
            if let Some(err) = stderr {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if tx
                        .send((key.clone(), generation, StudyEvent::Line(line)))
                        .is_err()
                    {
                        return;
                    }
                    waker();
                }
            }
            let _ = tx.send((key, generation, StudyEvent::Closed));
            waker();
        });
        self.running.insert(
            dir.to_path_buf(),
            Running {
                child,
                started: now,
                generation,
                executor: executor.clone(),
                stopping: None,
            },
        );
        Ok(())
    }

    /// Asks the study in `dir` to stop (SIGTERM) without waiting: one that
    /// runs its runs elsewhere stops them first (kills its local run
    /// processes, cancels its Slurm tasks and waits until they are gone), one
    /// that runs them itself ends at once and its workers stop when they see
    /// it gone. It stays running (stopping) until its process has exited;
    /// [`StudyRunner::poll`] kills it when it has not after [`STOP_GRACE`].
    /// Finished runs stay; a later run resumes. False when it does not run.
    pub fn cancel(&mut self, dir: &Path) -> bool {
        let Some(r) = self.running.get_mut(dir) else {
            return false;
        };
        if r.stopping.is_none() {
            r.stopping = Some((std::time::Instant::now(), false));
            if terminate(&r.child).is_err() {
                // Not stoppable gently (already gone, or no shell): end it.
                let _ = r.child.kill();
                r.stopping = Some((std::time::Instant::now(), true));
            }
        }
        true
    }

    /// Lines that arrived, and the studies whose process has ended. Kills a
    /// study that was asked to stop [`STOP_GRACE`] ago and is still there.
    /// Never blocks for long: a process is waited for only once its stderr
    /// has closed or it has exited.
    pub fn poll(&mut self) -> Polled {
        let mut lines = Vec::new();
        let mut closed = Vec::new();
        while let Ok((dir, generation, e)) = self.rx.try_recv() {
            match e {
                StudyEvent::Line(l) => lines.push((dir, l)),
                StudyEvent::Closed => {
                    if self
                        .running
                        .get(&dir)
                        .is_some_and(|r| r.generation == generation)
                    {
                        closed.push(dir);
                    }
                }
            }
        }
        // A study asked to stop: ended (its stderr may stay open in a
        // process it left behind), or killed after the grace.
        for (dir, r) in self.running.iter_mut() {
            let Some((since, killed)) = r.stopping else {
                continue;
            };
            if matches!(r.child.try_wait(), Ok(Some(_))) {
                if !closed.contains(dir) {
                    closed.push(dir.clone());
                }
            } else if !killed && since.elapsed() >= self.grace {
                let _ = r.child.kill();
                r.stopping = Some((since, true));
            }
        }
        let mut ended = Vec::new();
        for dir in closed {
            let Some(mut r) = self.running.remove(&dir) else {
                continue;
            };
            let how = match r.child.wait() {
                _ if r.stopping.is_some() => Ended::Cancelled,
                Ok(s) if s.success() => Ended::Finished,
                Ok(s) => Ended::Failed(format!("lethe study ended with {s}")),
                Err(e) => Ended::Failed(format!("lethe study: {e}")),
            };
            ended.push((dir, how));
        }
        (lines, ended)
    }

    /// Asks every study to stop, without waiting (leaving a project, closing
    /// the window: [`StudyRunner::poll`] sees them end).
    pub fn stop_all(&mut self) {
        for d in self.running() {
            self.cancel(&d);
        }
    }

    /// Stops every study and waits until they have ended: each gets up to
    /// [`STOP_GRACE`] to stop its runs, then it is killed. Their lines keep
    /// being read meanwhile (a study that cannot write its log would fail
    /// while cancelling its Slurm tasks), and are dropped.
    pub fn shutdown(&mut self) {
        self.stop_all();
        while self.busy() {
            let _ = self.poll();
            if self.busy() {
                // Closed events arrive on the channel; the stopping studies
                // are looked at again shortly.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
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

    #[test]
    fn slurm_settings_are_checked_as_typed() {
        for ok in ["90", "02:00:00", "48:00:00", "1-12:00:00", " 0:30:00 "] {
            assert_eq!(check_time(ok).as_deref(), Ok(ok.trim()), "{ok}");
        }
        for bad in [
            "2h",
            "1:00",
            "01:60:00",
            "1-24:00:00",
            "1-",
            "-1:00:00",
            "0",
            "00:00:00",
            "1 2",
        ] {
            let e = check_time(bad).unwrap_err();
            assert!(e.starts_with("time limit: "), "{bad}: {e}");
        }
        assert_eq!(check_mem("8G").as_deref(), Ok("8G"));
        assert_eq!(check_mem("512m").as_deref(), Ok("512M"));
        assert_eq!(check_mem("4000").as_deref(), Ok("4000"));
        for bad in ["8GB", "G", "8 G", "1.5G", "-1G", "0G", "eight"] {
            assert!(check_mem(bad).unwrap_err().starts_with("memory: "), "{bad}");
        }
        let draft = SlurmDraft {
            partition: " debug ".into(),
            time: "01:30:00".into(),
            cpus: "4".into(),
            mem: "8g".into(),
            gpus: "1".into(),
            account: "proj42".into(),
            max_parallel: "3".into(),
            extra_args: "  --qos=short\t--constraint=a100 ".into(),
        };
        let s = draft.settings().unwrap();
        assert_eq!(
            s,
            lethe_engine::exec::SlurmSettings {
                partition: Some("debug".into()),
                time: Some("01:30:00".into()),
                cpus_per_task: Some(4),
                mem: Some("8G".into()),
                gres: Some("gpu:1".into()),
                account: Some("proj42".into()),
                max_parallel: 3,
                extra_args: vec!["--qos=short".into(), "--constraint=a100".into()],
                ..Default::default()
            }
        );
        // Empty fields are the cluster's defaults.
        assert_eq!(
            SlurmDraft::default().settings().unwrap(),
            lethe_engine::exec::SlurmSettings::default()
        );
        let errors = SlurmDraft {
            partition: "a b".into(),
            time: "soon".into(),
            cpus: "0".into(),
            mem: "lots".into(),
            gpus: "-1".into(),
            max_parallel: "x".into(),
            ..Default::default()
        }
        .settings()
        .unwrap_err();
        let heads: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            heads,
            [
                "partition",
                "time limit",
                "memory",
                "CPUs per run",
                "GPUs per run",
                "most runs at once"
            ],
            "{errors:?}"
        );
        assert!(errors[3].contains("≥ 1"), "{errors:?}");
    }

    #[test]
    fn a_draft_saved_before_run_on_existed_still_loads() {
        let d: StudyDraft = serde_json::from_str(r#"{"name": "old", "seeds": "0"}"#).unwrap();
        assert_eq!(d.name, "old");
        assert_eq!(d.run_on, RunOn::default());
        assert_eq!(d.run_on.jobs, 1);
        let d: StudyDraft = serde_json::from_str(
            r#"{"run_on": {"place": "slurm", "slurm": {"partition": "gpu"}}}"#,
        )
        .unwrap();
        assert_eq!(d.run_on.place, RunPlace::Slurm);
        assert_eq!(d.run_on.slurm.partition, "gpu");
        assert_eq!(d.run_on.jobs, 1);
    }

    #[test]
    fn the_command_line_names_the_executor() {
        use lethe_engine::exec::{ExecutorConfig, SlurmSettings};
        let args = |e: &ExecutorConfig| -> Vec<String> {
            study_args(
                &[PathBuf::from("/plugins")],
                Path::new("/p/studies/s.toml"),
                Path::new("/p/studies/s"),
                e,
            )
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
        };
        let base = [
            "--plugins",
            "/plugins",
            "study",
            "/p/studies/s.toml",
            "--out",
            "/p/studies/s",
            "--verbose",
        ];
        assert_eq!(args(&ExecutorConfig::Local { jobs: 1 }), base);
        let mut two = base.to_vec();
        two.extend(["--jobs", "2"]);
        assert_eq!(args(&ExecutorConfig::Local { jobs: 2 }), two);
        let mut slurm = base.to_vec();
        slurm.extend(["--executor", "slurm"]);
        assert_eq!(
            args(&ExecutorConfig::Slurm(SlurmSettings {
                partition: Some("debug".into()),
                ..Default::default()
            })),
            slurm,
            "the settings travel in the study file"
        );
        // The form's choice as an executor; a stored study resumes on Slurm
        // when its file has a [slurm] table.
        let mut run_on = RunOn {
            jobs: 3,
            ..RunOn::default()
        };
        assert_eq!(run_on.executor(), Ok(ExecutorConfig::Local { jobs: 3 }));
        run_on.place = RunPlace::Slurm;
        run_on.slurm.partition = "gpu".into();
        let Ok(ExecutorConfig::Slurm(s)) = run_on.executor() else {
            panic!()
        };
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        run_on.slurm.time = "later".into();
        assert!(run_on.executor().is_err());
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = toml_spec(tmp.path());
        assert_eq!(executor_for(&spec, 0), ExecutorConfig::Local { jobs: 1 });
        spec.slurm = Some(s.clone());
        assert_eq!(executor_for(&spec, 4), ExecutorConfig::Slurm(s));
    }

    /// A minimal study in `dir` (with its files), as the engine reads it.
    fn toml_spec(dir: &Path) -> StudySpec {
        for f in ["m.safetensors", "d.npz", "f.txt"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        toml_from(
            dir,
            r#"
name = "s"
checkpoint = "m.safetensors"
data = "d.npz"
forget = "f.txt"
seeds = [0, 1]

[[methods]]
name = "FT"
id = "org.lethe.baseline.finetune"
"#,
        )
    }

    fn toml_from(dir: &Path, text: &str) -> StudySpec {
        let file = dir.join("s.toml");
        std::fs::write(&file, text).unwrap();
        StudySpec::load(&file).unwrap()
    }

    #[test]
    fn slurm_settings_go_into_the_study_file_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = toml_spec(tmp.path());
        spec.slurm = Some(
            SlurmDraft {
                partition: "debug".into(),
                time: "1-00:00:00".into(),
                mem: "16G".into(),
                gpus: "2".into(),
                extra_args: "--qos=\"short\" --exclusive".into(),
                ..Default::default()
            }
            .settings()
            .unwrap(),
        );
        let text = spec_toml(&spec).unwrap();
        let table = &text[text.find("\n[slurm]\n").expect(&text)..];
        assert!(table.contains("\npartition = \"debug\"\n"), "{text}");
        assert!(table.contains("\ntime = \"1-00:00:00\"\n"), "{text}");
        assert!(table.contains("\ngres = \"gpu:2\"\n"), "{text}");
        assert!(!text.contains("account"), "unset settings stay out: {text}");
        let back = toml_from(tmp.path(), &text);
        assert_eq!(back, spec, "{text}");
        // No table when the study runs on this machine.
        spec.slurm = None;
        assert!(!spec_toml(&spec).unwrap().contains("slurm"));
    }

    /// A stand-in for `lethe study`: `on_term` is what it does on SIGTERM.
    fn fake_study(dir: &Path, on_term: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = dir.join("fake-lethe");
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\ntrap '{on_term}' TERM\necho 'study s: started' >&2\n\
                 while true; do sleep 0.05; done\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Polls until the study in `dir` has ended: how, and what it said.
    fn wait_end(r: &mut StudyRunner, dir: &Path, secs: f64) -> (Ended, Vec<String>) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let mut lines = Vec::new();
        loop {
            let (l, ended) = r.poll();
            lines.extend(l.into_iter().map(|(_, l)| l));
            if let Some((_, how)) = ended.into_iter().find(|(d, _)| d == dir) {
                return (how, lines);
            }
            assert!(
                std::time::Instant::now() < until,
                "still running: {lines:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn stop_asks_the_study_to_stop_and_waits_for_it_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        // It cleans up for a while (as one cancelling its Slurm tasks does),
        // then exits non-zero.
        let exe = fake_study(
            tmp.path(),
            "echo \"study: stopping\" >&2; sleep 1; echo \"study: stopped\" >&2; exit 3",
        );
        let mut r = StudyRunner::new(exe, Vec::new(), std::sync::Arc::new(|| {}));
        let dir = tmp.path().join("s");
        let executor = lethe_engine::exec::ExecutorConfig::Local { jobs: 2 };
        r.start(&tmp.path().join("s.toml"), "", &dir, &executor, 0.0)
            .unwrap();
        assert_eq!(r.executor(&dir), Some(&executor));
        // Started: its first line is there.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !r.poll().0.iter().any(|(_, l)| l == "study s: started") {
            assert!(std::time::Instant::now() < until);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let asked = std::time::Instant::now();
        assert!(r.cancel(&dir));
        assert!(
            asked.elapsed() < std::time::Duration::from_millis(500),
            "cancel does not wait"
        );
        assert!(r.is_running(&dir) && r.is_stopping(&dir));
        assert!(r.cancel(&dir), "asking again changes nothing");
        let (how, lines) = wait_end(&mut r, &dir, 20.0);
        assert_eq!(how, Ended::Cancelled, "a cancelled study ended non-zero");
        assert!(asked.elapsed() >= std::time::Duration::from_millis(900));
        assert!(lines.contains(&"study: stopped".to_string()), "{lines:?}");
        assert!(!r.is_running(&dir) && !r.busy());
        assert!(!r.cancel(&dir));
    }

    #[test]
    fn a_study_that_does_not_stop_is_killed_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = fake_study(tmp.path(), "echo \"study: ignoring it\" >&2");
        let mut r = StudyRunner::new(exe, Vec::new(), std::sync::Arc::new(|| {}));
        r.set_stop_grace(std::time::Duration::from_millis(600));
        let dir = tmp.path().join("s");
        r.start(
            &tmp.path().join("s.toml"),
            "",
            &dir,
            &lethe_engine::exec::ExecutorConfig::Local { jobs: 1 },
            0.0,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let asked = std::time::Instant::now();
        r.cancel(&dir);
        let (how, lines) = wait_end(&mut r, &dir, 20.0);
        assert_eq!(how, Ended::Cancelled);
        assert!(asked.elapsed() >= std::time::Duration::from_millis(600));
        assert!(
            lines.contains(&"study: ignoring it".to_string()),
            "{lines:?}"
        );
        // A study that ends by itself is not "cancelled".
        let exe = tmp.path().join("quick");
        std::fs::write(&exe, "#!/bin/sh\necho 'study: done' >&2\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut r = StudyRunner::new(exe, Vec::new(), std::sync::Arc::new(|| {}));
        r.start(
            &tmp.path().join("q.toml"),
            "",
            &dir,
            &lethe_engine::exec::ExecutorConfig::Local { jobs: 1 },
            0.0,
        )
        .unwrap();
        assert_eq!(wait_end(&mut r, &dir, 20.0).0, Ended::Finished);
    }
}
