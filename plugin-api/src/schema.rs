//! Parameter schemas: what a method or attack accepts, as JSON that both the host
//! (to draw a form and validate before `create`) and the plugin (to validate again)
//! read with the same code.
//!
//! ```json
//! {"params": [
//!   {"key": "lr", "label": "Learning rate", "group": "Optimizer", "help": "Step size.",
//!    "type": "float", "min": 1e-6, "max": 1.0, "default": 0.01, "log_scale": true},
//!   {"key": "epochs", "label": "Epochs", "type": "int", "min": 1, "max": 100, "default": 5},
//!   {"key": "reset_head", "label": "Reset head", "type": "bool", "default": false},
//!   {"key": "loss", "label": "Loss", "type": "choice", "choices": ["ce", "kl"], "default": "ce"},
//!   {"key": "teacher", "label": "Teacher checkpoint", "type": "path", "holds": "checkpoint"},
//!   {"key": "note", "label": "Run note", "type": "string", "default": "", "max_len": 200}
//! ],
//!  "applies_to": {"models": ["classifier"], "whole_classes_only": true}}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// A method's or attack's parameters, in display order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The parameters.
    pub params: Vec<ParamSpec>,
    /// Which models and forget sets the method applies to (since ABI 1.3); absent
    /// means all. Hosts use it to grey out a method that cannot run, with the
    /// reason, before the user starts it; the plugin still checks for itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<AppliesTo>,
}

/// The kind of model a method accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelClass {
    /// A classifier: the model outputs class logits.
    Classifier,
    /// An encoder (SimCLR, MoCo or a bare backbone): the model outputs features.
    Encoder,
}

impl ModelClass {
    fn with_article(self) -> &'static str {
        match self {
            ModelClass::Classifier => "a classifier",
            ModelClass::Encoder => "an encoder",
        }
    }
}

/// What a host knows about the model a method would run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFacts {
    /// Classifier or encoder.
    pub class: ModelClass,
    /// Whether it has a projection head (contrastive encoders).
    pub projection_head: bool,
}

/// What a method applies to: `{"models": ["encoder"], "projection_head": true}`,
/// `{"models": ["classifier"], "whole_classes_only": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliesTo {
    /// The kinds of model it runs on; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelClass>,
    /// Whether the model must have a projection head (which only encoders have).
    #[serde(default, skip_serializing_if = "is_false")]
    pub projection_head: bool,
    /// Whether the forget set must be whole classes: every training sample of
    /// each class it touches (class-wise forgetting).
    #[serde(default, skip_serializing_if = "is_false")]
    pub whole_classes_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AppliesTo {
    /// Why the method cannot run on this model and forget set, in words, or `None`
    /// when it can (or when the host does not know: `None` facts are not held
    /// against the method). `whole_classes` is whether the forget set is made of
    /// whole classes.
    pub fn refusal(
        &self,
        model: Option<ModelFacts>,
        whole_classes: Option<bool>,
    ) -> Option<String> {
        if let Some(m) = model {
            if !self.models.is_empty() && !self.models.contains(&m.class) {
                let wanted: Vec<&str> = self.models.iter().map(|c| c.with_article()).collect();
                return Some(format!(
                    "needs {}; this model is {}",
                    wanted.join(" or "),
                    m.class.with_article()
                ));
            }
            if self.projection_head && !m.projection_head {
                return Some(format!(
                    "needs a model with a projection head (a contrastive encoder); this model is \
                     {} without one",
                    m.class.with_article()
                ));
            }
        }
        if self.whole_classes_only && whole_classes == Some(false) {
            return Some(
                "forgets whole classes only; this forget set leaves other training samples of \
                 its classes"
                    .into(),
            );
        }
        None
    }
}

/// One parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Stable key in the params JSON (`snake_case` by convention).
    pub key: String,
    /// Label shown in the GUI.
    pub label: String,
    /// Group (form section) the parameter belongs to; empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Help text (tooltip).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    /// Type, bounds and default.
    #[serde(flatten)]
    pub kind: ParamKind,
}

/// What a path parameter's file holds, when it is a kind of file Lethe itself
/// reads and writes (`"holds": "checkpoint"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathHolds {
    /// A model checkpoint (`.safetensors`, or a PyTorch file Lethe loads), like a
    /// teacher or a reference model.
    Checkpoint,
    /// A dataset (`.npz`, an image folder: what `--data` takes).
    Dataset,
    /// A forget list (`.txt`, `.csv` or `.json` of training-sample indices).
    ForgetList,
}

impl PathHolds {
    /// The kind in words.
    pub fn describe(self) -> &'static str {
        match self {
            PathHolds::Checkpoint => "a checkpoint",
            PathHolds::Dataset => "a dataset",
            PathHolds::ForgetList => "a forget list",
        }
    }
}

/// Type-specific part of a [`ParamSpec`], tagged by `"type"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A real number in `[min, max]`.
    Float {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
        /// Value used when the key is absent.
        default: f64,
        /// Whether a GUI slider should be logarithmic (needs `min > 0`).
        #[serde(default)]
        log_scale: bool,
    },
    /// An integer in `[min, max]`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// Value used when the key is absent.
        default: i64,
    },
    /// A flag.
    Bool {
        /// Value used when the key is absent.
        default: bool,
    },
    /// One of a fixed list of strings.
    Choice {
        /// Allowed values.
        choices: Vec<String>,
        /// Value used when the key is absent; one of `choices`.
        default: String,
    },
    /// A file or folder path. Existence is not checked here: the path is resolved
    /// where the job runs.
    Path {
        /// Value used when the key is absent; without one the key is required.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        /// Whether a folder (not a file) is expected, for the GUI's picker.
        #[serde(default)]
        directory: bool,
        /// What the file holds, when it is one of Lethe's own kinds (since ABI
        /// 1.6): `lethe plugins check` then gives a required path the demo's
        /// file of that kind. Older hosts ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holds: Option<PathHolds>,
    },
    /// Free text (since ABI 1.3): a name, a prompt, a list in the plugin's own
    /// syntax. Without a default the key is required and may not be empty.
    String {
        /// Value used when the key is absent; without one the key is required.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        /// Longest accepted value, in characters.
        #[serde(default = "default_max_len")]
        max_len: usize,
    },
}

fn default_max_len() -> usize {
    1024
}

impl ParamKind {
    fn type_name(&self) -> &'static str {
        match self {
            ParamKind::Float { .. } => "float",
            ParamKind::Int { .. } => "int",
            ParamKind::Bool { .. } => "bool",
            ParamKind::Choice { .. } => "choice",
            ParamKind::Path { .. } => "path",
            ParamKind::String { .. } => "string",
        }
    }
}

/// A schema that is itself inconsistent (a plugin bug, reported when it is loaded).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The schema text is not valid schema JSON.
    #[error("schema is not valid JSON for a parameter schema: {0}")]
    Json(String),
    /// The schema does not parse here and the plugin was built for a newer ABI
    /// minor: it uses a parameter type or field this host does not know.
    #[error(
        "the schema uses a parameter type or schema field this Lethe (plugin ABI {}.{host_minor}) \
         does not know (the plugin was built for ABI {}.{plugin_minor}): {detail}; update Lethe, \
         or build the plugin against this Lethe's lethe-plugin-api",
        crate::ABI_MAJOR,
        crate::ABI_MAJOR
    )]
    Newer {
        /// The ABI minor the plugin was built for.
        plugin_minor: u32,
        /// This host's ABI minor ([`crate::ABI_MINOR`]).
        host_minor: u32,
        /// What did not parse.
        detail: String,
    },
    /// `applies_to` contradicts itself.
    #[error("applies_to: {0}")]
    AppliesTo(String),
    /// A key is empty.
    #[error("parameter #{index} has an empty key")]
    EmptyKey {
        /// Position in `params`.
        index: usize,
    },
    /// Two parameters share a key.
    #[error("parameter key `{key}` appears more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// Bounds, default or choices do not make sense.
    #[error("parameter `{key}`: {reason}")]
    Inconsistent {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// One problem with a params JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamProblem {
    /// The params are not a JSON object.
    NotAnObject {
        /// JSON type found instead.
        found: &'static str,
    },
    /// A key the schema does not know.
    UnknownKey {
        /// The key.
        key: String,
        /// The keys the schema does know.
        known: Vec<String>,
    },
    /// A required key (path without default) is missing.
    Missing {
        /// The key.
        key: String,
    },
    /// A value of the wrong JSON type.
    WrongType {
        /// The key.
        key: String,
        /// What the schema wants (`"float"`, `"int"`, ...).
        expected: &'static str,
        /// The value found, as JSON.
        found: String,
    },
    /// A number outside `[min, max]` (or not finite).
    OutOfRange {
        /// The key.
        key: String,
        /// The value found, as JSON.
        value: String,
        /// Smallest allowed value.
        min: String,
        /// Largest allowed value.
        max: String,
    },
    /// Text that is too long or holds a NUL (since ABI 1.3).
    BadText {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A choice not in the list.
    NotAChoice {
        /// The key.
        key: String,
        /// The value found.
        value: String,
        /// The allowed values.
        choices: Vec<String>,
    },
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamProblem::NotAnObject { found } => {
                write!(f, "parameters must be a JSON object, found {found}")
            }
            ParamProblem::UnknownKey { key, known } => {
                write!(f, "unknown parameter `{key}` (known: {})", known.join(", "))
            }
            ParamProblem::Missing { key } => write!(f, "parameter `{key}` is required"),
            ParamProblem::WrongType {
                key,
                expected,
                found,
            } => write!(f, "parameter `{key}` must be {expected}, found {found}"),
            ParamProblem::OutOfRange {
                key,
                value,
                min,
                max,
            } => write!(f, "parameter `{key}` = {value} is outside [{min}, {max}]"),
            ParamProblem::BadText { key, reason } => {
                write!(f, "parameter `{key}`: {reason}")
            }
            ParamProblem::NotAChoice {
                key,
                value,
                choices,
            } => write!(
                f,
                "parameter `{key}` = \"{value}\" is not one of: {}",
                choices.join(", ")
            ),
        }
    }
}

/// Params that do not satisfy a schema; lists every problem, not just the first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid parameters: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ParamsError {
    /// What is wrong, in schema order (unknown keys first).
    pub problems: Vec<ParamProblem>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Schema {
    /// Parses schema JSON and checks it for consistency ([`Schema::check`]).
    pub fn from_json(text: &str) -> Result<Schema, SchemaError> {
        let schema: Schema =
            serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        schema.check()?;
        Ok(schema)
    }

    /// Parses the schema of a plugin built for ABI minor `plugin_minor`: as
    /// [`Schema::from_json`], but schema text that does not parse from a plugin
    /// of a newer minor is [`SchemaError::Newer`], which tells the user to update
    /// Lethe rather than blaming the plugin.
    pub fn from_plugin_json(text: &str, plugin_minor: u32) -> Result<Schema, SchemaError> {
        match Schema::from_json(text) {
            Err(SchemaError::Json(detail)) if plugin_minor > crate::ABI_MINOR => {
                Err(SchemaError::Newer {
                    plugin_minor,
                    host_minor: crate::ABI_MINOR,
                    detail,
                })
            }
            other => other,
        }
    }

    /// The schema as compact JSON.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with non-string keys,
        // no custom serialisers), so the fallback is unreachable in practice.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"params\":[]}"))
    }

    /// The spec for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.key == key)
    }

    /// Checks the schema itself: unique non-empty keys, `min <= default <= max`,
    /// finite float bounds, `min > 0` for log scale, default among the choices.
    pub fn check(&self) -> Result<(), SchemaError> {
        if let Some(a) = &self.applies_to
            && a.projection_head
            && a.models == [ModelClass::Classifier]
        {
            return Err(SchemaError::AppliesTo(
                "a classifier has no projection head: `projection_head` needs `encoder` among \
                 the models"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        for (index, p) in self.params.iter().enumerate() {
            if p.key.is_empty() {
                return Err(SchemaError::EmptyKey { index });
            }
            if !seen.insert(p.key.as_str()) {
                return Err(SchemaError::DuplicateKey { key: p.key.clone() });
            }
            let bad = |reason: String| SchemaError::Inconsistent {
                key: p.key.clone(),
                reason,
            };
            match &p.kind {
                ParamKind::Float {
                    min,
                    max,
                    default,
                    log_scale,
                } => {
                    if !(min.is_finite() && max.is_finite() && default.is_finite()) {
                        return Err(bad("min, max and default must be finite".into()));
                    }
                    if !(min <= default && default <= max) {
                        return Err(bad(format!(
                            "needs min <= default <= max, got {min} / {default} / {max}"
                        )));
                    }
                    if *log_scale && *min <= 0.0 {
                        return Err(bad(format!("log scale needs min > 0, got {min}")));
                    }
                }
                ParamKind::Int { min, max, default } => {
                    if !(min <= default && default <= max) {
                        return Err(bad(format!(
                            "needs min <= default <= max, got {min} / {default} / {max}"
                        )));
                    }
                }
                ParamKind::Choice { choices, default } => {
                    if choices.is_empty() {
                        return Err(bad("has no choices".into()));
                    }
                    if !choices.contains(default) {
                        return Err(bad(format!("default \"{default}\" is not a choice")));
                    }
                }
                ParamKind::String { default, max_len } => {
                    if *max_len == 0 {
                        return Err(bad("max_len must be at least 1".into()));
                    }
                    if let Some(d) = default
                        && d.chars().count() > *max_len
                    {
                        return Err(bad(format!("default is longer than max_len {max_len}")));
                    }
                }
                ParamKind::Path {
                    default: Some(d), ..
                } if d.is_empty() => {
                    // It would pass as a default but no job could use it (the
                    // demo run of `lethe plugins check` failed on it).
                    return Err(bad(
                        "an empty default is no path: give a real default, or none to make the \
                         parameter required"
                            .into(),
                    ));
                }
                ParamKind::Bool { .. } | ParamKind::Path { .. } => {}
            }
        }
        Ok(())
    }

    /// Validates `params` (a JSON object, or `null` for "all defaults") and returns
    /// the complete object: every key of the schema present, defaults filled in,
    /// ints as JSON integers. Unknown keys, wrong types, out-of-range numbers and
    /// unknown choices are all reported together.
    pub fn validate(&self, params: &Value) -> Result<Map<String, Value>, ParamsError> {
        let empty = Map::new();
        let given = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(ParamsError {
                    problems: vec![ParamProblem::NotAnObject {
                        found: json_type(other),
                    }],
                });
            }
        };
        let mut problems = Vec::new();
        for key in given.keys() {
            if self.get(key).is_none() {
                problems.push(ParamProblem::UnknownKey {
                    key: key.clone(),
                    known: self.params.iter().map(|p| p.key.clone()).collect(),
                });
            }
        }
        let mut out = Map::new();
        for p in &self.params {
            match validate_one(p, given.get(&p.key)) {
                Ok(v) => {
                    out.insert(p.key.clone(), v);
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ParamsError { problems })
        }
    }

    /// The params object with every default, as [`Schema::validate`] of `{}` would
    /// return it for a schema without required paths.
    pub fn defaults(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for p in &self.params {
            if let Ok(v) = validate_one(p, None) {
                out.insert(p.key.clone(), v);
            }
        }
        out
    }
}

fn validate_one(p: &ParamSpec, value: Option<&Value>) -> Result<Value, ParamProblem> {
    let key = || p.key.clone();
    let wrong = |v: &Value| ParamProblem::WrongType {
        key: p.key.clone(),
        expected: p.kind.type_name(),
        found: v.to_string(),
    };
    match &p.kind {
        ParamKind::Float {
            min, max, default, ..
        } => {
            let Some(v) = value else {
                return Ok(Value::from(*default));
            };
            let x = v.as_f64().ok_or_else(|| wrong(v))?;
            if !(x.is_finite() && *min <= x && x <= *max) {
                return Err(ParamProblem::OutOfRange {
                    key: key(),
                    value: v.to_string(),
                    min: min.to_string(),
                    max: max.to_string(),
                });
            }
            Ok(Value::from(x))
        }
        ParamKind::Int { min, max, default } => {
            let Some(v) = value else {
                return Ok(Value::from(*default));
            };
            // Accept `3.0` (some JSON writers emit integral floats) but not `3.5`.
            let x = match v.as_i64() {
                Some(x) => x,
                None => match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                    Some(_) => return Err(wrong(v)),
                    None => return Err(wrong(v)),
                },
            };
            if !(*min <= x && x <= *max) {
                return Err(ParamProblem::OutOfRange {
                    key: key(),
                    value: v.to_string(),
                    min: min.to_string(),
                    max: max.to_string(),
                });
            }
            Ok(Value::from(x))
        }
        ParamKind::Bool { default } => match value {
            None => Ok(Value::from(*default)),
            Some(Value::Bool(b)) => Ok(Value::from(*b)),
            Some(v) => Err(wrong(v)),
        },
        ParamKind::Choice { choices, default } => match value {
            None => Ok(Value::from(default.clone())),
            Some(Value::String(s)) if choices.contains(s) => Ok(Value::from(s.clone())),
            Some(Value::String(s)) => Err(ParamProblem::NotAChoice {
                key: key(),
                value: s.clone(),
                choices: choices.clone(),
            }),
            Some(v) => Err(wrong(v)),
        },
        ParamKind::Path { default, .. } => match value {
            None => default
                .clone()
                .map(Value::from)
                .ok_or(ParamProblem::Missing { key: key() }),
            Some(Value::String(s)) if !s.is_empty() => Ok(Value::from(s.clone())),
            Some(v) => Err(wrong(v)),
        },
        ParamKind::String { default, max_len } => {
            let text = match value {
                None => {
                    return default
                        .clone()
                        .map(Value::from)
                        .ok_or(ParamProblem::Missing { key: key() });
                }
                Some(Value::String(s)) => s.clone(),
                // `--set name=7` parses as a number: its text is what was meant.
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(v) => return Err(wrong(v)),
            };
            if text.is_empty() && default.is_none() {
                return Err(ParamProblem::Missing { key: key() });
            }
            let len = text.chars().count();
            if len > *max_len || text.contains('\0') {
                return Err(ParamProblem::BadText {
                    key: key(),
                    reason: if len > *max_len {
                        format!("{len} characters, at most {max_len} allowed")
                    } else {
                        "contains a NUL character".into()
                    },
                });
            }
            Ok(Value::from(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Schema {
        Schema::from_json(
            r#"{"params": [
            {"key": "lr", "label": "Learning rate", "group": "Optimizer", "help": "Step size.",
             "type": "float", "min": 1e-6, "max": 1.0, "default": 0.01, "log_scale": true},
            {"key": "epochs", "label": "Epochs", "type": "int", "min": 1, "max": 100, "default": 5},
            {"key": "reset_head", "label": "Reset head", "type": "bool", "default": false},
            {"key": "loss", "label": "Loss", "type": "choice", "choices": ["ce", "kl"], "default": "ce"},
            {"key": "teacher", "label": "Teacher", "type": "path", "default": "teacher.ot"}
        ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_schema_from_a_newer_plugin_is_refused_in_words() {
        // What an ABI 1.2 host met in a plugin with a string parameter, as this
        // host meets a type of a later minor.
        let text = r#"{"params": [{"key": "c", "label": "C", "type": "colour"}]}"#;
        let newer = Schema::from_plugin_json(text, crate::ABI_MINOR + 1).unwrap_err();
        let words = newer.to_string();
        for part in [
            format!("this Lethe (plugin ABI 1.{})", crate::ABI_MINOR),
            format!("built for ABI 1.{}", crate::ABI_MINOR + 1),
            "unknown variant `colour`".to_string(),
            "update Lethe".to_string(),
        ] {
            assert!(words.contains(&part), "{part:?} missing in {words}");
        }
        // From a plugin of this minor or an older one, it is the plugin's error.
        assert!(matches!(
            Schema::from_plugin_json(text, crate::ABI_MINOR),
            Err(SchemaError::Json(_))
        ));
        // A string parameter needs ABI 1.3; this host reads it from any plugin.
        let string = r#"{"params": [{"key": "n", "label": "N", "type": "string"}]}"#;
        assert!(Schema::from_plugin_json(string, 3).is_ok());
    }

    #[test]
    fn a_path_says_what_it_holds() {
        let text =
            r#"{"params": [{"key": "t", "label": "T", "type": "path", "holds": "checkpoint"}]}"#;
        let s = Schema::from_json(text).unwrap();
        assert!(matches!(
            s.params[0].kind,
            ParamKind::Path {
                holds: Some(PathHolds::Checkpoint),
                ..
            }
        ));
        assert_eq!(Schema::from_json(&s.to_json()).unwrap(), s);
        assert!(s.to_json().contains(r#""holds":"checkpoint""#));
        // Without it, the JSON is what ABI 1.5 hosts wrote.
        let plain = r#"{"params": [{"key": "t", "label": "T", "type": "path"}]}"#;
        assert!(
            !Schema::from_json(plain)
                .unwrap()
                .to_json()
                .contains("holds")
        );
    }

    #[test]
    fn an_empty_path_default_is_refused() {
        let e = Schema::from_json(
            r#"{"params": [{"key": "t", "label": "T", "type": "path", "default": ""}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("an empty default is no path"), "{e}");
    }

    #[test]
    fn string_parameters_take_text_and_refuse_what_does_not_fit() {
        let s = Schema::from_json(
            r#"{"params": [
            {"key": "note", "label": "Note", "type": "string", "default": "", "max_len": 5},
            {"key": "prompt", "label": "Prompt", "type": "string"}
        ]}"#,
        )
        .unwrap();
        assert_eq!(Schema::from_json(&s.to_json()).unwrap(), s);
        let ok = s.validate(&json!({"prompt": "a cat"})).unwrap();
        assert_eq!(ok["note"], "");
        assert_eq!(ok["prompt"], "a cat");
        // A number given on the command line is taken as its text.
        assert_eq!(s.validate(&json!({"prompt": 7})).unwrap()["prompt"], "7");
        let problems = |v: Value| s.validate(&v).unwrap_err().problems;
        assert_eq!(
            problems(json!({})),
            vec![ParamProblem::Missing {
                key: "prompt".into()
            }]
        );
        assert_eq!(
            problems(json!({"prompt": ""})),
            vec![ParamProblem::Missing {
                key: "prompt".into()
            }],
            "a required string may not be empty"
        );
        let long = problems(json!({"prompt": "x", "note": "ééééééé"}));
        assert_eq!(
            long[0].to_string(),
            "parameter `note`: 7 characters, at most 5 allowed"
        );
        assert!(matches!(
            problems(json!({"prompt": "a\0b"}))[0],
            ParamProblem::BadText { .. }
        ));
        assert!(matches!(
            problems(json!({"prompt": ["x"]}))[0],
            ParamProblem::WrongType { .. }
        ));
        let e = Schema::from_json(
            r#"{"params": [{"key": "n", "label": "N", "type": "string", "default": "abc", "max_len": 2}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_len"), "{e}");
    }

    #[test]
    fn applies_to_round_trips_and_explains_each_refusal() {
        let s = Schema::from_json(
            r#"{"params": [], "applies_to": {"models": ["encoder"], "projection_head": true}}"#,
        )
        .unwrap();
        assert_eq!(Schema::from_json(&s.to_json()).unwrap(), s);
        let a = s.applies_to.unwrap();
        let classifier = ModelFacts {
            class: ModelClass::Classifier,
            projection_head: false,
        };
        let bare = ModelFacts {
            class: ModelClass::Encoder,
            projection_head: false,
        };
        let simclr = ModelFacts {
            class: ModelClass::Encoder,
            projection_head: true,
        };
        assert_eq!(
            a.refusal(Some(classifier), None).unwrap(),
            "needs an encoder; this model is a classifier"
        );
        assert!(
            a.refusal(Some(bare), None)
                .unwrap()
                .contains("projection head")
        );
        assert_eq!(a.refusal(Some(simclr), Some(false)), None);
        // What the host does not know is not held against the method.
        assert_eq!(a.refusal(None, None), None);

        let classwise = AppliesTo {
            models: vec![ModelClass::Classifier],
            projection_head: false,
            whole_classes_only: true,
        };
        assert!(
            classwise
                .refusal(Some(classifier), Some(false))
                .unwrap()
                .starts_with("forgets whole classes only")
        );
        assert_eq!(classwise.refusal(Some(classifier), Some(true)), None);
        assert_eq!(classwise.refusal(Some(classifier), None), None);
        // No declaration: everything fits, and nothing is written.
        assert_eq!(AppliesTo::default().refusal(Some(bare), Some(false)), None);
        assert_eq!(Schema::default().to_json(), r#"{"params":[]}"#);
    }

    #[test]
    fn applies_to_that_contradicts_itself_or_is_unknown_is_refused() {
        let e = Schema::from_json(
            r#"{"params": [], "applies_to": {"models": ["classifier"], "projection_head": true}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, SchemaError::AppliesTo(_)), "{e}");
        let e =
            Schema::from_json(r#"{"params": [], "applies_to": {"models": ["gan"]}}"#).unwrap_err();
        assert!(e.to_string().contains("gan"), "{e}");
        let e = Schema::from_json(r#"{"params": [], "applies_to": {"model": ["encoder"]}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("model"), "{e}");
    }

    #[test]
    fn parses_groups_help_and_kinds() {
        let s = sample();
        let lr = s.get("lr").unwrap();
        assert_eq!(lr.group, "Optimizer");
        assert_eq!(lr.help, "Step size.");
        assert!(matches!(
            lr.kind,
            ParamKind::Float {
                log_scale: true,
                ..
            }
        ));
        // Round trip through our own serialiser.
        assert_eq!(Schema::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn fills_defaults_and_keeps_given_values() {
        let out = sample()
            .validate(&json!({"epochs": 7.0, "loss": "kl"}))
            .unwrap();
        assert_eq!(out["lr"], json!(0.01));
        assert_eq!(out["epochs"], json!(7));
        assert_eq!(out["reset_head"], json!(false));
        assert_eq!(out["loss"], json!("kl"));
        assert_eq!(out["teacher"], json!("teacher.ot"));
        assert_eq!(
            sample().validate(&Value::Null).unwrap(),
            sample().defaults()
        );
    }

    #[test]
    fn reports_every_problem() {
        let err = sample()
            .validate(
                &json!({"lr": 2.0, "epochs": 1.5, "loss": "mse", "momentum": 0.9, "reset_head": 1}),
            )
            .unwrap_err();
        assert_eq!(err.problems.len(), 5, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("unknown parameter `momentum`"), "{msg}");
        assert!(msg.contains("`lr` = 2.0 is outside [0.000001, 1]"), "{msg}");
        assert!(msg.contains("`epochs` must be int, found 1.5"), "{msg}");
        assert!(msg.contains("\"mse\" is not one of: ce, kl"), "{msg}");
        assert!(msg.contains("`reset_head` must be bool"), "{msg}");
        let err = sample().validate(&json!([1])).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"));
    }

    #[test]
    fn required_path_and_bad_schemas() {
        let s = Schema::from_json(r#"{"params":[{"key":"p","label":"P","type":"path"}]}"#).unwrap();
        assert!(
            s.validate(&json!({}))
                .unwrap_err()
                .to_string()
                .contains("`p` is required")
        );
        for (text, needle) in [
            (
                r#"{"params":[{"key":"a","label":"A","type":"int","min":5,"max":1,"default":3}]}"#,
                "min <= default",
            ),
            (
                r#"{"params":[{"key":"a","label":"A","type":"float","min":0,"max":1,"default":0.5,"log_scale":true}]}"#,
                "log scale",
            ),
            (
                r#"{"params":[{"key":"a","label":"A","type":"choice","choices":["x"],"default":"y"}]}"#,
                "not a choice",
            ),
            (
                r#"{"params":[{"key":"a","label":"A","type":"bool","default":true},{"key":"a","label":"B","type":"bool","default":true}]}"#,
                "more than once",
            ),
            (
                r#"{"params":[{"key":"a","label":"A","type":"complex"}]}"#,
                "not valid JSON",
            ),
        ] {
            let err = Schema::from_json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
