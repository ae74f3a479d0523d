//! Parameter forms generated from a plugin's schema: the values a user edits,
//! their conversion to the params JSON, and the widgets. Validation is the
//! schema's own ([`Schema::validate`]), the same code the worker and the plugin
//! run, so the form never accepts what the job would refuse.

use lethe_plugin_api::schema::{ParamKind, ParamSpec, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One edited value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum FormValue {
    /// A float.
    Float(f64),
    /// An int.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A choice.
    Choice(String),
    /// A path as typed (empty: not given).
    Path(String),
    /// Free text, as typed (sent as it is, empty included).
    Text(String),
}

/// The values of one plugin's form, by key. Persisted with the draft so a
/// half-filled form survives a restart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FormValues {
    /// Values by parameter key.
    pub values: BTreeMap<String, FormValue>,
}

/// The default of one parameter.
pub fn default_value(spec: &ParamSpec) -> FormValue {
    match &spec.kind {
        ParamKind::Float { default, .. } => FormValue::Float(*default),
        ParamKind::Int { default, .. } => FormValue::Int(*default),
        ParamKind::Bool { default } => FormValue::Bool(*default),
        ParamKind::Choice { default, .. } => FormValue::Choice(default.clone()),
        ParamKind::Path { default, .. } => FormValue::Path(default.clone().unwrap_or_default()),
        ParamKind::String { default, .. } => FormValue::Text(default.clone().unwrap_or_default()),
    }
}

/// Whether a stored value still fits the parameter (a plugin update may have
/// changed its type, range or choices).
fn fits(spec: &ParamSpec, value: &FormValue) -> bool {
    match (&spec.kind, value) {
        (ParamKind::Float { min, max, .. }, FormValue::Float(x)) => {
            x.is_finite() && min <= x && x <= max
        }
        (ParamKind::Int { min, max, .. }, FormValue::Int(x)) => min <= x && x <= max,
        (ParamKind::Bool { .. }, FormValue::Bool(_)) => true,
        (ParamKind::Choice { choices, .. }, FormValue::Choice(c)) => choices.contains(c),
        (ParamKind::Path { .. }, FormValue::Path(_)) => true,
        (ParamKind::String { max_len, .. }, FormValue::Text(t)) => t.chars().count() <= *max_len,
        _ => false,
    }
}

impl FormValues {
    /// The form as a run's params fill it: each parameter of `schema` from
    /// `params` when it is there and fits, else its default.
    pub fn from_json(schema: &Schema, params: &Value) -> Self {
        let mut out = FormValues::defaults(schema);
        for spec in &schema.params {
            let Some(v) = params.get(&spec.key) else {
                continue;
            };
            let value = match &spec.kind {
                ParamKind::Float { .. } => v.as_f64().map(FormValue::Float),
                ParamKind::Int { .. } => v.as_i64().map(FormValue::Int),
                ParamKind::Bool { .. } => v.as_bool().map(FormValue::Bool),
                ParamKind::Choice { .. } => v.as_str().map(|c| FormValue::Choice(c.into())),
                ParamKind::Path { .. } => v.as_str().map(|p| FormValue::Path(p.into())),
                ParamKind::String { .. } => v.as_str().map(|t| FormValue::Text(t.into())),
            };
            if let Some(value) = value.filter(|x| fits(spec, x)) {
                out.values.insert(spec.key.clone(), value);
            }
        }
        out
    }

    /// Every parameter at its default.
    pub fn defaults(schema: &Schema) -> Self {
        FormValues {
            values: schema
                .params
                .iter()
                .map(|p| (p.key.clone(), default_value(p)))
                .collect(),
        }
    }

    /// Makes the values match `schema`: unknown keys dropped, missing or no longer
    /// fitting values reset to their defaults. Returns the keys that were reset.
    pub fn conform(&mut self, schema: &Schema) -> Vec<String> {
        let mut reset = Vec::new();
        self.values.retain(|k, _| schema.get(k).is_some());
        for p in &schema.params {
            match self.values.get(&p.key) {
                Some(v) if fits(p, v) => {}
                Some(_) => {
                    reset.push(p.key.clone());
                    self.values.insert(p.key.clone(), default_value(p));
                }
                None => {
                    self.values.insert(p.key.clone(), default_value(p));
                }
            }
        }
        reset
    }

    /// Resets one parameter.
    pub fn reset(&mut self, spec: &ParamSpec) {
        self.values.insert(spec.key.clone(), default_value(spec));
    }

    /// Whether every value equals its default.
    pub fn is_default(&self, schema: &Schema) -> bool {
        schema
            .params
            .iter()
            .all(|p| self.values.get(&p.key) == Some(&default_value(p)))
    }

    /// The params JSON as typed (an empty path is left out, so the schema's default
    /// or "required" applies).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.values {
            let json = match v {
                FormValue::Float(x) => Value::from(*x),
                FormValue::Int(x) => Value::from(*x),
                FormValue::Bool(b) => Value::from(*b),
                FormValue::Choice(c) => Value::from(c.clone()),
                FormValue::Path(p) if p.trim().is_empty() => continue,
                FormValue::Path(p) => Value::from(p.trim().to_string()),
                FormValue::Text(t) => Value::from(t.clone()),
            };
            m.insert(k.clone(), json);
        }
        Value::Object(m)
    }

    /// The complete, validated params, or every problem as one line each.
    pub fn validated(&self, schema: &Schema) -> Result<Map<String, Value>, Vec<String>> {
        schema
            .validate(&self.to_json())
            .map_err(|e| e.problems.iter().map(ToString::to_string).collect())
    }
}

/// Draws the form; returns whether a value changed. Parameters are grouped by
/// their `group`, each with its label, help on hover, and a reset button when it
/// differs from its default.
pub fn form_ui(ui: &mut egui::Ui, schema: &Schema, values: &mut FormValues) -> bool {
    form_ui_without(ui, schema, values, &[])
}

/// The parameter a run's own seed fills in: forms with a run-level seed (the
/// deletion request's, a study's list) hide it, so there is one Seed.
pub const RUN_SEED: &str = "seed";

/// [`form_ui`] without the parameters in `hidden` (set elsewhere on the page).
pub fn form_ui_without(
    ui: &mut egui::Ui,
    schema: &Schema,
    values: &mut FormValues,
    hidden: &[&str],
) -> bool {
    values.conform(schema);
    let mut changed = false;
    let mut groups: Vec<&str> = Vec::new();
    for p in &schema.params {
        if !hidden.contains(&p.key.as_str()) && !groups.contains(&p.group.as_str()) {
            groups.push(p.group.as_str());
        }
    }
    // One grid for every group, so the widgets of all groups line up.
    ui.spacing_mut().slider_width = 200.0;
    egui::Grid::new("form")
        .num_columns(3)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            for group in groups {
                if !group.is_empty() {
                    ui.label(egui::RichText::new(group).strong());
                    ui.end_row();
                }
                for p in schema
                    .params
                    .iter()
                    .filter(|p| p.group == group && !hidden.contains(&p.key.as_str()))
                {
                    changed |= param_row(ui, p, values);
                    ui.end_row();
                }
            }
        });
    ui.horizontal(|ui| {
        let all_default = values.is_default(schema);
        if ui
            .add_enabled(!all_default, egui::Button::new("Reset all to defaults"))
            .on_hover_text("Every parameter back to the value the plugin recommends")
            .clicked()
        {
            *values = FormValues::defaults(schema);
            changed = true;
        }
    });
    changed
}

fn param_row(ui: &mut egui::Ui, p: &ParamSpec, values: &mut FormValues) -> bool {
    let help = if p.help.is_empty() {
        range_text(p)
    } else {
        format!("{}\n\n{}", p.help, range_text(p))
    };
    ui.label(&p.label).on_hover_text(&help);
    let mut changed = false;
    let default = default_value(p);
    let Some(value) = values.values.get_mut(&p.key) else {
        return false;
    };
    let response = match (&p.kind, &mut *value) {
        (
            ParamKind::Float {
                min,
                max,
                log_scale,
                ..
            },
            FormValue::Float(x),
        ) => {
            let slider = egui::Slider::new(x, *min..=*max)
                .logarithmic(*log_scale)
                .clamping(egui::SliderClamping::Always)
                .custom_formatter(|v, _| format_float(v));
            ui.add(slider)
        }
        (ParamKind::Int { min, max, .. }, FormValue::Int(x)) => {
            // Wide ranges (batch sizes up to 4096) are easier on a log slider.
            let log = *min > 0 && (*max as f64) / (*min as f64) > 1000.0;
            ui.add(
                egui::Slider::new(x, *min..=*max)
                    .logarithmic(log)
                    .clamping(egui::SliderClamping::Always),
            )
        }
        (ParamKind::Bool { .. }, FormValue::Bool(b)) => ui.checkbox(b, ""),
        (ParamKind::Choice { choices, .. }, FormValue::Choice(c)) => {
            let mut inner = egui::ComboBox::from_id_salt(("choice", &p.key))
                .selected_text(c.as_str())
                .show_ui(ui, |ui| {
                    let mut any = false;
                    for choice in choices {
                        any |= ui.selectable_value(c, choice.clone(), choice).changed();
                    }
                    any
                });
            if inner.inner == Some(true) {
                inner.response.mark_changed();
            }
            inner.response
        }
        (ParamKind::Path { directory, .. }, FormValue::Path(s)) => {
            let hint = if *directory {
                "folder path"
            } else {
                "file path"
            };
            ui.add(
                egui::TextEdit::singleline(s)
                    .hint_text(hint)
                    .desired_width(260.0),
            )
        }
        (ParamKind::String { max_len, .. }, FormValue::Text(t)) => ui.add(
            egui::TextEdit::singleline(t)
                .char_limit(*max_len)
                .desired_width(260.0),
        ),
        // conform() made every value fit its kind.
        _ => ui.label("?"),
    };
    changed |= response.on_hover_text(&help).changed();
    let differs = *value != default;
    if ui
        .add_enabled(differs, egui::Button::new("⟲").small())
        .on_hover_text(format!("Reset to default ({})", show_value(&default)))
        .clicked()
    {
        *value = default;
        changed = true;
    }
    changed
}

fn show_value(v: &FormValue) -> String {
    match v {
        FormValue::Float(x) => format_float(*x),
        FormValue::Int(x) => x.to_string(),
        FormValue::Bool(b) => b.to_string(),
        FormValue::Choice(c) => c.clone(),
        FormValue::Path(p) if p.is_empty() => "none".into(),
        FormValue::Path(p) => p.clone(),
        FormValue::Text(t) if t.is_empty() => "empty".into(),
        FormValue::Text(t) => format!("\"{t}\""),
    }
}

fn range_text(p: &ParamSpec) -> String {
    match &p.kind {
        ParamKind::Float {
            min,
            max,
            default,
            log_scale,
        } => format!(
            "Range {} – {}{}; default {}",
            format_float(*min),
            format_float(*max),
            if *log_scale { " (logarithmic)" } else { "" },
            format_float(*default)
        ),
        ParamKind::Int { min, max, default } => format!("Range {min} – {max}; default {default}"),
        ParamKind::Bool { default } => format!("Default {default}"),
        ParamKind::Choice { choices, default } => {
            format!("One of {}; default {default}", choices.join(", "))
        }
        ParamKind::Path {
            default, directory, ..
        } => format!(
            "{}{}",
            if *directory { "A folder" } else { "A file" },
            default
                .as_ref()
                .map(|d| format!("; default {d}"))
                .unwrap_or_else(|| "; required".into())
        ),
        ParamKind::String { default, max_len } => format!(
            "Text of at most {max_len} characters{}",
            match default {
                Some(d) if d.is_empty() => "; default empty".into(),
                Some(d) => format!("; default \"{d}\""),
                None => "; required".into(),
            }
        ),
    }
}

/// Short float text: `0.001`, `1e-05`, `0.3`.
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        // 1.00e-5 → 1e-5
        match s.split_once('e') {
            Some((m, e)) => {
                let m = m.trim_end_matches('0').trim_end_matches('.');
                format!("{m}e{e}")
            }
            None => s,
        }
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn schema() -> Schema {
        Schema::from_json(
            r#"{"params": [
            {"key": "lr", "label": "Learning rate", "group": "Optimizer", "help": "Step size.",
             "type": "float", "min": 1e-6, "max": 1.0, "default": 0.01, "log_scale": true},
            {"key": "epochs", "label": "Epochs", "type": "int", "min": 1, "max": 100, "default": 5},
            {"key": "reset_head", "label": "Reset head", "type": "bool", "default": false},
            {"key": "loss", "label": "Loss", "type": "choice", "choices": ["ce", "kl"], "default": "ce"},
            {"key": "teacher", "label": "Teacher", "type": "path"}
        ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_runs_params_fill_the_form_back() {
        let schema = schema();
        let mut typed = FormValues::defaults(&schema);
        typed.values.insert("lr".into(), FormValue::Float(0.25));
        typed.values.insert("epochs".into(), FormValue::Int(3));
        typed
            .values
            .insert("reset_head".into(), FormValue::Bool(true));
        typed
            .values
            .insert("loss".into(), FormValue::Choice("kl".into()));
        typed
            .values
            .insert("teacher".into(), FormValue::Path("/m.safetensors".into()));
        assert_eq!(FormValues::from_json(&schema, &typed.to_json()), typed);
        // What no longer fits (a plugin update) or is missing takes the default.
        let back =
            FormValues::from_json(&schema, &json!({"epochs": 1000, "loss": "gone", "seed": 4}));
        assert_eq!(back, FormValues::defaults(&schema));
    }

    #[test]
    fn defaults_become_the_schema_defaults_and_a_missing_path_is_reported() {
        let s = schema();
        let v = FormValues::defaults(&s);
        assert!(v.is_default(&s));
        assert_eq!(
            v.to_json(),
            json!({"lr": 0.01, "epochs": 5, "reset_head": false, "loss": "ce"}),
            "the empty path is left out"
        );
        let problems = v.validated(&s).unwrap_err();
        assert_eq!(problems, ["parameter `teacher` is required"]);
    }

    #[test]
    fn string_parameters_are_edited_as_text_and_validated_by_the_schema() {
        let s = Schema::from_json(
            r#"{"params": [
            {"key": "note", "label": "Note", "type": "string", "default": "hi", "max_len": 4},
            {"key": "prompt", "label": "Prompt", "type": "string"}
        ]}"#,
        )
        .unwrap();
        let mut v = FormValues::defaults(&s);
        assert_eq!(v.to_json(), json!({"note": "hi", "prompt": ""}));
        assert_eq!(
            v.validated(&s).unwrap_err(),
            ["parameter `prompt` is required"]
        );
        v.values
            .insert("prompt".into(), FormValue::Text("a cat".into()));
        v.values
            .insert("note".into(), FormValue::Text(String::new()));
        assert_eq!(
            Value::Object(v.validated(&s).unwrap()),
            json!({"note": "", "prompt": "a cat"}),
            "an emptied optional text is sent empty, not replaced by its default"
        );
        // A stored value longer than a new max_len is reset on conform.
        v.values
            .insert("note".into(), FormValue::Text("toolong".into()));
        assert_eq!(v.conform(&s), ["note"]);
        assert_eq!(v.values["note"], FormValue::Text("hi".into()));
    }

    #[test]
    fn edited_values_validate_to_complete_params() {
        let s = schema();
        let mut v = FormValues::defaults(&s);
        v.values.insert("lr".into(), FormValue::Float(1e-4));
        v.values
            .insert("loss".into(), FormValue::Choice("kl".into()));
        v.values
            .insert("teacher".into(), FormValue::Path("  /m/t.pt ".into()));
        assert!(!v.is_default(&s));
        let params = v.validated(&s).unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"lr": 1e-4, "epochs": 5, "reset_head": false, "loss": "kl", "teacher": "/m/t.pt"})
        );
        // Out of range (e.g. restored from an older schema) is refused by validation.
        v.values.insert("epochs".into(), FormValue::Int(1000));
        let problems = v.validated(&s).unwrap_err();
        assert!(problems[0].contains("outside [1, 100]"), "{problems:?}");
    }

    #[test]
    fn conform_drops_stale_keys_and_resets_what_no_longer_fits() {
        let s = schema();
        let mut v = FormValues::defaults(&s);
        v.values.insert("momentum".into(), FormValue::Float(0.9));
        v.values.insert("lr".into(), FormValue::Float(5.0));
        v.values.insert("epochs".into(), FormValue::Bool(true));
        v.values
            .insert("loss".into(), FormValue::Choice("mse".into()));
        v.values.remove("reset_head");
        let mut reset = v.conform(&s);
        reset.sort();
        assert_eq!(reset, ["epochs", "loss", "lr"]);
        assert!(!v.values.contains_key("momentum"));
        assert_eq!(v.values["reset_head"], FormValue::Bool(false));
        assert!(v.is_default(&s));
    }

    #[test]
    fn values_round_trip_through_serde() {
        let s = schema();
        let mut v = FormValues::defaults(&s);
        v.values.insert("lr".into(), FormValue::Float(0.5));
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<FormValues>(&text).unwrap(), v);
    }

    #[test]
    fn floats_print_short() {
        assert_eq!(format_float(0.01), "0.01");
        assert_eq!(format_float(1e-5), "1e-5");
        assert_eq!(format_float(2.5e-6), "2.5e-6");
        assert_eq!(format_float(0.3), "0.3");
        assert_eq!(format_float(182.0), "182");
        assert_eq!(format_float(0.0), "0");
    }

    #[test]
    fn the_form_draws_and_resets_through_the_ui() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable;
        let s = schema();
        let mut start = FormValues::defaults(&s);
        start.values.insert("epochs".into(), FormValue::Int(50));
        let mut harness = Harness::new_ui_state(
            |ui, values: &mut FormValues| {
                form_ui(ui, &schema(), values);
            },
            start,
        );
        harness.run();
        assert!(harness.query_by_label("Learning rate").is_some());
        assert!(
            harness.query_by_label("Optimizer").is_some(),
            "group header"
        );
        harness.get_by_label("Reset all to defaults").click();
        harness.run();
        assert_eq!(harness.state().values["epochs"], FormValue::Int(5));
    }
}
