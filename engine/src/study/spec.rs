//! The study file (`study.toml`): what to compare, on what, how often.
//!
//! ```toml
//! name = "demo"
//! checkpoint = "classifier.safetensors"  # paths are relative to this file
//! data = "mnist10k.npz"
//! forget = "forget.txt"
//! seeds = [0, 1]
//! device = "cpu"                         # auto | cpu | cuda | cuda:N
//! metrics = ["ua", "mia.efficacy", "ra", "ta"]   # the table's columns
//!
//! [retrain]                              # the reference every gap is measured to
//! params = { max_epochs = 1 }
//!
//! [[methods]]
//! name = "FT"
//! id = "org.lethe.baseline.finetune"
//! params = { epochs = 1, lr = 0.01 }
//!
//! [[attacks]]
//! name = "mia"
//! id = "org.lethe.attack.metric-mia"
//! ```
//!
//! The complete, commented example is `resources/demo/study.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StudyError;

/// The retrain plugin used when the study names none.
pub const RETRAIN_ID: &str = "org.lethe.baseline.retrain";

/// A study, as read from `study.toml` (paths made absolute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// Short name; names the default output folder `runs/study-<name>`.
    pub name: String,
    /// The trained model every method starts from (never modified).
    pub checkpoint: PathBuf,
    /// Its dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// One run of everything per seed. The seed is the job seed (loader
    /// shuffles), each plugin's `seed` parameter unless its params set one, the
    /// evaluation's probe seed and the attacks' bootstrap seed.
    pub seeds: Vec<u64>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Table columns, in order (see [`MetricKey`]); default: `ua`, each
    /// attack's `efficacy`, `ra`, `ta` (the order of the SalUn tables).
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Columns averaged into Avg. Gap; default: every column.
    #[serde(default)]
    pub avg_gap: Option<Vec<String>>,
    /// Column headings by metric key, replacing the default ones (a paper's
    /// names: `{ "emia.efficacy" = "EMIA" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Heading of the Avg. Gap column (the DAU paper's "Avg. Disparity").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_gap_label: Option<String>,
    /// Also evaluate and attack the original model (a row without a method).
    #[serde(default)]
    pub original: bool,
    /// Give up on a job (and kill its worker) after this many seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Retraining, the reference.
    #[serde(default)]
    pub retrain: RetrainSpec,
    /// Evaluation settings.
    #[serde(default)]
    pub evaluate: EvaluateSpec,
    /// The methods compared, one table row each.
    #[serde(default)]
    pub methods: Vec<MethodSpec>,
    /// Attacks run on every model.
    #[serde(default)]
    pub attacks: Vec<AttackSpec>,
    /// How the runs are submitted when the study runs on Slurm (`--executor
    /// slurm`; the command line's options override these). Not part of what
    /// the study is: a study started on one executor resumes on another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<crate::exec::SlurmSettings>,
    /// Named variants of the study (`[scales.ci]`), chosen with `lethe study
    /// FILE --scale NAME`; see [`StudySpec::load_scaled`]. Only read while
    /// loading: a loaded spec has none.
    #[serde(default, skip_serializing)]
    pub scales: Option<toml::Table>,
}

impl StudySpec {
    /// The study without its executor settings, for "is this the same study".
    pub fn without_executor(&self) -> StudySpec {
        StudySpec {
            slurm: None,
            ..self.clone()
        }
    }
}

fn default_device() -> String {
    "auto".into()
}

/// How retraining is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSpec {
    /// Plugin id of the retrain method.
    #[serde(default = "default_retrain_id")]
    pub id: String,
    /// Its parameters (defaults fill the rest).
    #[serde(default = "empty_object")]
    pub params: Value,
}

impl Default for RetrainSpec {
    fn default() -> Self {
        RetrainSpec {
            id: default_retrain_id(),
            params: empty_object(),
        }
    }
}

fn default_retrain_id() -> String {
    RETRAIN_ID.into()
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Evaluation settings, as `lethe evaluate` takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    /// The linear probe that reads encoders, by preset: `reference` (the
    /// Alignment Calibration code's, the default) or `fast` (for tests).
    #[serde(default = "crate::eval::evaluate::default_probe")]
    pub probe: String,
    /// That probe's epochs instead of the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_epochs: Option<usize>,
    /// The alignment audit (forgetting score FS) also for classifiers; encoders
    /// always get it.
    #[serde(default)]
    pub alignment: bool,
    /// Augmented view pairs per forget sample for FS.
    #[serde(default = "default_pairs")]
    pub pairs: usize,
    /// Forget samples in the saved AM/AGM heatmaps.
    #[serde(default = "default_matrix_samples")]
    pub matrix_samples: usize,
    /// Forget samples in the full AGM.
    #[serde(default = "default_alignment_max")]
    pub alignment_max: usize,
}

impl Default for EvaluateSpec {
    fn default() -> Self {
        EvaluateSpec {
            probe: crate::eval::evaluate::default_probe(),
            probe_epochs: None,
            alignment: false,
            pairs: default_pairs(),
            matrix_samples: default_matrix_samples(),
            alignment_max: default_alignment_max(),
        }
    }
}

fn default_pairs() -> usize {
    5
}
fn default_matrix_samples() -> usize {
    8
}
fn default_alignment_max() -> usize {
    2000
}

/// One compared method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// Row label, e.g. `FT` (unique; not `Retrain` or `Original`).
    pub name: String,
    /// Plugin id, as `lethe plugins list` shows it.
    pub id: String,
    /// Its parameters (defaults fill the rest).
    #[serde(default = "empty_object")]
    pub params: Value,
}

/// One attack run on every model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    /// Short name used in metric keys, e.g. `mia` for `mia.efficacy`.
    pub name: String,
    /// Plugin id.
    pub id: String,
    /// Its parameters (defaults fill the rest).
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Bootstrap replicates for the intervals in `attack.json` (0: none).
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Confidence level of those intervals.
    #[serde(default = "default_ci")]
    pub ci: f64,
}

fn default_bootstrap() -> usize {
    1000
}
fn default_ci() -> f64 {
    0.95
}

/// A table column: what is measured.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKey {
    /// `ra`: retain accuracy.
    Ra,
    /// `ta`: test accuracy.
    Ta,
    /// `ua`: accuracy on the forget set (as `lethe evaluate` reports it; the
    /// SalUn papers' UA is 100 minus this, with the same gap to retrain).
    Ua,
    /// `va`: validation accuracy.
    Va,
    /// `forget_error`: 1 − UA, the error on the forget set: what the OPTML
    /// (Unlearn-Sparse), SalUn and DAU tables print as "UA". Same gap to
    /// Retrain as `ua`.
    ForgetError,
    /// `fs`: the forgetting score of the alignment audit (encoders).
    Fs,
    /// `<attack>.efficacy`: share of the forget set the attack calls
    /// non-members (MIA efficacy).
    Efficacy(String),
    /// `<attack>.auc`: AUC of forget set vs held-out non-members.
    Auc(String),
    /// `<attack>.tpr@<p>%`: TPR at `p` % FPR (one of the attack's FPR targets:
    /// 1, 0.1, 0.01).
    Tpr(String, f64),
}

impl MetricKey {
    /// Parses a key such as `ra` or `mia.tpr@1%`.
    pub fn parse(key: &str) -> Option<MetricKey> {
        Some(match key {
            "ra" => MetricKey::Ra,
            "ta" => MetricKey::Ta,
            "ua" => MetricKey::Ua,
            "va" => MetricKey::Va,
            "forget_error" => MetricKey::ForgetError,
            "fs" => MetricKey::Fs,
            other => {
                let (attack, stat) = other.split_once('.')?;
                if attack.is_empty() {
                    return None;
                }
                match stat {
                    "efficacy" => MetricKey::Efficacy(attack.into()),
                    "auc" => MetricKey::Auc(attack.into()),
                    s => {
                        let pct: f64 = s.strip_prefix("tpr@")?.strip_suffix('%')?.parse().ok()?;
                        MetricKey::Tpr(attack.into(), pct)
                    }
                }
            }
        })
    }

    /// The attack this metric comes from, if any.
    pub fn attack(&self) -> Option<&str> {
        match self {
            MetricKey::Efficacy(a) | MetricKey::Auc(a) | MetricKey::Tpr(a, _) => Some(a),
            _ => None,
        }
    }

    /// Column heading.
    pub fn label(&self) -> String {
        match self {
            MetricKey::Ra => "RA".into(),
            MetricKey::Ta => "TA".into(),
            MetricKey::Ua => "UA".into(),
            MetricKey::Va => "VA".into(),
            MetricKey::ForgetError => "UA err".into(),
            MetricKey::Fs => "FS".into(),
            MetricKey::Efficacy(a) => format!("{a} efficacy"),
            MetricKey::Auc(a) => format!("{a} AUC"),
            MetricKey::Tpr(a, p) => format!("{a} TPR@{p}%"),
        }
    }

    /// Factor from the stored value to the shown one: fractions are shown in
    /// percent, the forgetting score as it is.
    pub fn scale(&self) -> f64 {
        match self {
            MetricKey::Fs => 1.0,
            _ => 100.0,
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> StudyError {
    StudyError::Spec {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The study of `text` with `scales[scale]` merged in (see
/// [`StudySpec::load_scaled`]).
fn scaled(
    path: &Path,
    text: &str,
    mut scales: toml::Table,
    scale: &str,
) -> Result<StudySpec, StudyError> {
    let Some(over) = scales.remove(scale) else {
        let known: Vec<&String> = scales.keys().collect();
        return Err(bad(
            path,
            if known.is_empty() {
                format!("--scale {scale}: the file has no [scales.<name>] tables")
            } else {
                format!(
                    "--scale {scale}: no [scales.{scale}] table; the file has {}",
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ));
    };
    let toml::Value::Table(over) = over else {
        return Err(bad(path, format!("scales.{scale} must be a table")));
    };
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| bad(path, format!("not a valid study file: {e}")))?;
    doc.remove("scales");
    let at = |what: String| bad(path, format!("scales.{scale}: {what}"));
    let mut only: Option<Vec<String>> = None;
    for (key, value) in over {
        match key.as_str() {
            "only_methods" => {
                let names: Option<Vec<String>> = value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect());
                only = Some(
                    names
                        .ok_or_else(|| at("only_methods must be a list of method names".into()))?,
                );
            }
            "methods" | "attacks" => {
                let toml::Value::Table(by_name) = value else {
                    return Err(at(format!(
                        "{key} must be a table of entries by name, like {key}.<name>.params = {{ … }}"
                    )));
                };
                let entries = doc
                    .get_mut(&key)
                    .and_then(|v| v.as_array_mut())
                    .ok_or_else(|| at(format!("the study has no [[{key}]] entries")))?;
                for (name, change) in by_name {
                    let entry = entries
                        .iter_mut()
                        .filter_map(|e| e.as_table_mut())
                        .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
                        .ok_or_else(|| {
                            at(format!(
                                "{key}.{name}: no [[{key}]] entry is named {name:?}"
                            ))
                        })?;
                    let toml::Value::Table(change) = change else {
                        return Err(at(format!("{key}.{name} must be a table")));
                    };
                    merge(entry, change);
                }
            }
            "name" | "scales" => {
                return Err(at(format!("{key} cannot be changed by a scale")));
            }
            _ => match (doc.get_mut(&key), value) {
                (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => merge(mine, theirs),
                (_, value) => {
                    doc.insert(key, value);
                }
            },
        }
    }
    if let Some(only) = only {
        let entries = doc
            .get_mut("methods")
            .and_then(|v| v.as_array_mut())
            .ok_or_else(|| at("the study has no [[methods]] entries".into()))?;
        let name_of = |e: &toml::Value| {
            e.get("name")
                .and_then(|n| n.as_str())
                .map(String::from)
                .unwrap_or_default()
        };
        if let Some(missing) = only
            .iter()
            .find(|n| !entries.iter().any(|e| &name_of(e) == *n))
        {
            return Err(at(format!(
                "only_methods: no [[methods]] entry is named {missing:?}"
            )));
        }
        entries.retain(|e| only.contains(&name_of(e)));
    }
    let mut spec = StudySpec::deserialize(toml::Value::Table(doc))
        .map_err(|e| at(format!("the scaled study is not valid: {e}")))?;
    spec.name = format!("{}-{scale}", spec.name);
    Ok(spec)
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => merge(mine, theirs),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'))
}

impl StudySpec {
    /// Reads and checks `path`; relative paths inside are taken from its folder.
    pub fn load(path: &Path) -> Result<StudySpec, StudyError> {
        StudySpec::load_scaled(path, None)
    }

    /// [`StudySpec::load`], with the file's `[scales.<scale>]` table merged in
    /// first when `scale` is given: the same study at another size (a CI-sized
    /// run of a paper's protocol), kept in the file beside the full one.
    ///
    /// The scale's keys replace the study's (`seeds = [0]`), its tables merge
    /// into the study's key by key (`evaluate = { probe_epochs = 2 }`), and its
    /// `methods` / `attacks` tables are keyed by entry name, each merged into
    /// that entry (`methods.FT.params = { epochs = 1 }` changes FT's epochs and
    /// keeps its other parameters); `only_methods = ["AC"]` keeps just those
    /// method rows (the reference rows always run). The scaled study is named
    /// `<name>-<scale>`, so its default folder and its table say which it is.
    pub fn load_scaled(path: &Path, scale: Option<&str>) -> Result<StudySpec, StudyError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        // Parsed as the typed spec first, so that a mistake in the file itself is
        // reported with its line.
        let mut spec: StudySpec =
            toml::from_str(&text).map_err(|e| bad(path, format!("not a valid study file: {e}")))?;
        if let Some(scale) = scale {
            spec = scaled(path, &text, spec.scales.take().unwrap_or_default(), scale)?;
        }
        spec.scales = None;
        let base = path.parent().unwrap_or(Path::new("."));
        // `data = "fashion-mnist"` names the installed dataset, unless the study's
        // folder holds something of that name.
        if !base.join(&spec.data).exists()
            && let Some(dir) = crate::data::named::resolve(&spec.data)
        {
            spec.data = dir;
        }
        for p in [&mut spec.checkpoint, &mut spec.data, &mut spec.forget] {
            let joined = base.join(&*p);
            *p = std::fs::canonicalize(&joined).unwrap_or(joined);
        }
        spec.check(path)?;
        Ok(spec)
    }

    /// The metric columns: as given, else the default set.
    pub fn metric_keys(&self) -> Vec<String> {
        if !self.metrics.is_empty() {
            return self.metrics.clone();
        }
        let mut keys = vec!["ua".to_string()];
        keys.extend(self.attacks.iter().map(|a| format!("{}.efficacy", a.name)));
        keys.extend(["ra".to_string(), "ta".to_string()]);
        keys
    }

    /// The columns averaged into Avg. Gap.
    pub fn avg_gap_keys(&self) -> Vec<String> {
        self.avg_gap.clone().unwrap_or_else(|| self.metric_keys())
    }

    /// Every consistency check, naming `path` and the field at fault.
    pub fn check(&self, path: &Path) -> Result<(), StudyError> {
        if !valid_name(&self.name) {
            return Err(bad(
                path,
                format!(
                    "name {:?}: use 1-40 letters, digits, '-', '_', '+' or '.'",
                    self.name
                ),
            ));
        }
        for (what, p) in [
            ("checkpoint", &self.checkpoint),
            ("data", &self.data),
            ("forget", &self.forget),
        ] {
            if !p.exists() {
                return Err(bad(path, format!("{what}: {} does not exist", p.display())));
            }
        }
        if self.seeds.is_empty() {
            return Err(bad(
                path,
                "seeds: give at least one seed, like seeds = [0, 1]",
            ));
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() {
            return Err(bad(path, "seeds: a seed is listed twice"));
        }
        if self.methods.is_empty() {
            return Err(bad(
                path,
                "no [[methods]]: a study compares at least one method",
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for m in &self.methods {
            if !valid_name(&m.name) {
                return Err(bad(
                    path,
                    format!(
                        "method name {:?}: use 1-40 letters, digits, '-', '_', '+' or '.'",
                        m.name
                    ),
                ));
            }
            let lower = m.name.to_ascii_lowercase();
            if lower == "retrain" || lower == "original" {
                return Err(bad(
                    path,
                    format!(
                        "method name {:?} is reserved for the reference rows",
                        m.name
                    ),
                ));
            }
            if names.contains(&lower) {
                return Err(bad(path, format!("method name {:?} is used twice", m.name)));
            }
            names.push(lower);
            if !m.params.is_object() {
                return Err(bad(
                    path,
                    format!("method {}: params must be a table", m.name),
                ));
            }
        }
        if !self.retrain.params.is_object() {
            return Err(bad(path, "retrain: params must be a table"));
        }
        let mut attacks: Vec<&str> = Vec::new();
        for a in &self.attacks {
            let ok = !a.name.is_empty()
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !ok {
                return Err(bad(
                    path,
                    format!(
                        "attack name {:?}: use letters, digits, '-' or '_' (it prefixes metric keys such as mia.auc)",
                        a.name
                    ),
                ));
            }
            if attacks.contains(&a.name.as_str()) {
                return Err(bad(path, format!("attack name {:?} is used twice", a.name)));
            }
            attacks.push(&a.name);
            if !(a.ci > 0.0 && a.ci < 1.0) {
                return Err(bad(
                    path,
                    format!("attack {}: ci must lie in (0, 1)", a.name),
                ));
            }
            if !a.params.is_object() {
                return Err(bad(
                    path,
                    format!("attack {}: params must be a table", a.name),
                ));
            }
        }
        let metrics = self.metric_keys();
        for key in metrics.iter().chain(self.avg_gap.iter().flatten()) {
            let Some(k) = MetricKey::parse(key) else {
                return Err(bad(
                    path,
                    format!(
                        "metric {key:?}: expected ra, ta, ua, forget_error, va, fs or <attack>.efficacy / .auc / .tpr@1%"
                    ),
                ));
            };
            if let Some(a) = k.attack()
                && !attacks.contains(&a)
            {
                return Err(bad(
                    path,
                    format!("metric {key:?}: no [[attacks]] entry is named {a:?}"),
                ));
            }
        }
        if let Some(avg) = &self.avg_gap
            && let Some(k) = avg.iter().find(|k| !metrics.contains(k))
        {
            return Err(bad(
                path,
                format!("avg_gap {k:?} is not one of the metrics columns"),
            ));
        }
        if let Some(k) = self.labels.keys().find(|k| !metrics.contains(k)) {
            return Err(bad(
                path,
                format!("labels {k:?} is not one of the metrics columns"),
            ));
        }
        match self.device.as_str() {
            "auto" | "cpu" | "cuda" => {}
            d if d
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<u32>().is_ok()) => {}
            d => {
                return Err(bad(
                    path,
                    format!("device {d:?}: expected auto, cpu, cuda or cuda:N"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        for f in ["m.safetensors", "d.npz", "f.txt"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let p = dir.join("study.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const HEAD: &str = "name = \"t\"\ncheckpoint = \"m.safetensors\"\ndata = \"d.npz\"\nforget = \"f.txt\"\nseeds = [0, 1]\n";

    #[test]
    fn a_minimal_study_gets_defaults_and_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &format!(
                "{HEAD}[[methods]]\nname = \"FT\"\nid = \"x.ft\"\nparams = {{ lr = 0.01, epochs = 2 }}\n\
                 [[attacks]]\nname = \"mia\"\nid = \"x.mia\"\n"
            ),
        );
        let s = StudySpec::load(&p).unwrap();
        assert!(s.checkpoint.is_absolute());
        assert_eq!(s.retrain.id, RETRAIN_ID);
        assert_eq!(s.device, "auto");
        assert_eq!(s.methods[0].params["epochs"], 2);
        assert_eq!(s.methods[0].params["lr"], 0.01);
        assert_eq!(s.metric_keys(), ["ua", "mia.efficacy", "ra", "ta"]);
        assert_eq!(s.attacks[0].bootstrap, 1000);
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (HEAD.to_string(), "no [[methods]]"),
            (
                format!("{HEAD}metrics = [\"mia.auc\"]\n[[methods]]\nname = \"A\"\nid = \"x\"\n"),
                "no [[attacks]] entry is named \"mia\"",
            ),
            (
                format!("{HEAD}metrics = [\"acc\"]\n[[methods]]\nname = \"A\"\nid = \"x\"\n"),
                "metric \"acc\"",
            ),
            (
                format!("{HEAD}[[methods]]\nname = \"Retrain\"\nid = \"x\"\n"),
                "reserved",
            ),
            (
                format!(
                    "{HEAD}[[methods]]\nname = \"A\"\nid = \"x\"\n[[methods]]\nname = \"a\"\nid = \"y\"\n"
                ),
                "used twice",
            ),
            (
                format!("{HEAD}colour = 1\n[[methods]]\nname = \"A\"\nid = \"x\"\n"),
                "unknown field",
            ),
            (
                HEAD.replace("[0, 1]", "[]") + "[[methods]]\nname = \"A\"\nid = \"x\"\n",
                "at least one seed",
            ),
        ];
        for (text, want) in cases {
            let p = write(dir.path(), &text);
            let e = StudySpec::load(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("study.toml"), "{want}: {e}");
        }
    }

    /// A study with a `[scales.ci]` table, as the paper-protocol studies have.
    const SCALED: &str = "name = \"p\"\ncheckpoint = \"m.safetensors\"\ndata = \"d.npz\"\nforget = \"f.txt\"\n\
        seeds = [0, 1, 2, 3, 4]\nmetrics = [\"forget_error\", \"mia.efficacy\", \"ra\", \"ta\"]\n\
        labels = { forget_error = \"UA\", \"mia.efficacy\" = \"MIA-Efficacy\" }\n\
        avg_gap_label = \"Avg. Disparity\"\n\
        [evaluate]\nprobe_epochs = 100\npairs = 10\n\
        [retrain]\nparams = { max_epochs = 182, lr = 0.1 }\n\
        [[methods]]\nname = \"FT\"\nid = \"x.ft\"\nparams = { lr = 0.01, epochs = 10 }\n\
        [[methods]]\nname = \"GA\"\nid = \"x.ga\"\nparams = { lr = 1e-4, epochs = 5 }\n\
        [[attacks]]\nname = \"mia\"\nid = \"x.mia\"\n\
        [scales.ci]\nseeds = [0]\nevaluate = { probe_epochs = 2 }\nretrain = { params = { max_epochs = 1 } }\n\
        [scales.ci.methods.FT]\nparams = { epochs = 1, max_batches = 3 }\n\
        [scales.ci.attacks.mia]\nbootstrap = 0\n\
        [scales.one]\nonly_methods = [\"GA\"]\n";

    #[test]
    fn a_scale_changes_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), SCALED);
        let full = StudySpec::load(&p).unwrap();
        assert_eq!(full.name, "p");
        assert_eq!(full.seeds, [0, 1, 2, 3, 4]);
        assert_eq!(full.scales, None, "a loaded spec keeps no scales");
        assert_eq!(full.labels["forget_error"], "UA");
        let ci = StudySpec::load_scaled(&p, Some("ci")).unwrap();
        assert_eq!(ci.name, "p-ci");
        assert_eq!(ci.seeds, [0]);
        // Tables merge key by key: the scale's keys change, the others stay.
        assert_eq!((ci.evaluate.probe_epochs, ci.evaluate.pairs), (Some(2), 10));
        assert_eq!(
            ci.retrain.params,
            serde_json::json!({ "max_epochs": 1, "lr": 0.1 })
        );
        assert_eq!(
            ci.methods[0].params,
            serde_json::json!({ "lr": 0.01, "epochs": 1, "max_batches": 3 })
        );
        assert_eq!(ci.methods[1], full.methods[1], "GA is not in the scale");
        assert_eq!(
            (ci.attacks[0].bootstrap, full.attacks[0].bootstrap),
            (0, 1000)
        );
        assert_eq!((&ci.metrics, &ci.labels), (&full.metrics, &full.labels));
        assert_eq!(ci.avg_gap_label.as_deref(), Some("Avg. Disparity"));
        assert_eq!(ci.checkpoint, full.checkpoint, "paths resolved as unscaled");
        let one = StudySpec::load_scaled(&p, Some("one")).unwrap();
        assert_eq!(one.methods, [full.methods[1].clone()], "only GA's row");
        assert_eq!((one.seeds.len(), one.name.as_str()), (5, "p-one"));
    }

    #[test]
    fn scale_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                SCALED.to_string(),
                "big",
                "no [scales.big] table; the file has ci",
            ),
            (
                SCALED.replace("scales.ci.methods.FT]", "scales.ci.methods.SCRUB]"),
                "ci",
                "scales.ci: methods.SCRUB: no [[methods]] entry is named \"SCRUB\"",
            ),
            (
                SCALED.replace("seeds = [0]\n", "seeds = [0]\ncolour = 1\n"),
                "ci",
                "scales.ci: the scaled study is not valid: unknown field `colour`",
            ),
            (
                SCALED.replace("seeds = [0]\n", "seeds = []\n"),
                "ci",
                "at least one seed",
            ),
            (
                format!("{HEAD}[[methods]]\nname = \"A\"\nid = \"x\"\n"),
                "ci",
                "no [scales.<name>] tables",
            ),
            (
                SCALED.replace("[\"GA\"]", "[\"SCRUB\"]"),
                "one",
                "only_methods: no [[methods]] entry is named \"SCRUB\"",
            ),
            (
                SCALED.replace("forget_error = \"UA\"", "ta_x = \"UA\""),
                "ci",
                "labels \"ta_x\" is not one of the metrics columns",
            ),
        ];
        for (text, scale, want) in cases {
            let p = write(dir.path(), &text);
            let e = StudySpec::load_scaled(&p, Some(scale))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("study.toml"), "{want}: {e}");
        }
    }

    #[test]
    fn metric_keys_parse() {
        assert_eq!(MetricKey::parse("ra"), Some(MetricKey::Ra));
        assert_eq!(
            MetricKey::parse("svm.tpr@0.1%"),
            Some(MetricKey::Tpr("svm".into(), 0.1))
        );
        assert_eq!(
            MetricKey::parse("mia.efficacy").unwrap().label(),
            "mia efficacy"
        );
        assert_eq!(
            MetricKey::parse("forget_error"),
            Some(MetricKey::ForgetError)
        );
        assert_eq!(MetricKey::parse("mia.bogus"), None);
        assert_eq!(MetricKey::parse(".auc"), None);
    }
}
