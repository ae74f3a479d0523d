//! The original training recipe (as the checkpoint records it) turned into this
//! plugin's settings.

use lethe_plugin_kit::AdamConfig;
use lethe_plugin_kit::batch_size;
use lethe_plugin_kit::optim::Schedule;
use lethe_plugin_kit::params::{Optim, Training};
use serde_json::Value;

/// `form`'s settings overridden by what `recipe` records, with a note for each
/// recorded setting that could not be followed.
pub fn apply(recipe: &Value, form: &Optim, training: &Training) -> (Optim, Training, Vec<String>) {
    let mut optim = form.clone();
    let mut training = *training;
    let mut notes = Vec::new();
    let Some(r) = recipe.as_object().filter(|r| !r.is_empty()) else {
        notes.push("the checkpoint records no training recipe; using the form's settings".into());
        return (optim, training, notes);
    };
    if let Some(e) = r.get("epochs").and_then(Value::as_u64) {
        optim.epochs = usize::try_from(e.max(1)).unwrap_or(usize::MAX);
    }
    if let Some(b) = r.get("batch_size").and_then(Value::as_i64) {
        optim.batch_size = batch_size(b);
    }
    if let Some(lr) = r.get("lr").and_then(Value::as_f64) {
        optim.lr = lr;
    }
    if let Some(wd) = r.get("weight_decay").and_then(Value::as_f64) {
        optim.sgd.weight_decay = wd;
    }
    if let Some(o) = r.get("optimizer") {
        match o.get("kind").and_then(Value::as_str) {
            Some("sgd") => {
                if let Some(m) = o.get("momentum").and_then(Value::as_f64) {
                    optim.sgd.momentum = m;
                }
                if o.get("nesterov").and_then(Value::as_bool) == Some(true) {
                    notes.push("the original used Nesterov momentum; retraining uses plain momentum".into());
                }
            }
            Some("adam") => {
                let beta = |k: &str, default: f64| o.get(k).and_then(Value::as_f64).unwrap_or(default);
                let defaults = AdamConfig::default();
                optim.adam = Some(AdamConfig {
                    beta1: beta("beta1", defaults.beta1),
                    beta2: beta("beta2", defaults.beta2),
                    // What `lethe train` builds its Adam with (not recorded).
                    eps: defaults.eps,
                    weight_decay: optim.sgd.weight_decay,
                });
            }
            Some(other) => notes.push(format!(
                "the original used the {other} optimiser; retraining uses SGD with the form's momentum"
            )),
            None => {}
        }
    }
    if let Some(s) = r
        .get("schedule")
        .and_then(|s| s.get("kind"))
        .and_then(Value::as_str)
    {
        optim.schedule = match s {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            "warmup_cosine" => {
                notes.push("the original warmed the rate up; retraining uses plain cosine".into());
                Schedule::Cosine
            }
            other => {
                notes.push(format!(
                    "unknown recorded schedule `{other}`; using the form's schedule"
                ));
                optim.schedule.clone()
            }
        };
    }
    if let Some(t) = r.get("temperature").and_then(Value::as_f64) {
        training.temperature = t;
    }
    if let Some(a) = r.get("augment") {
        training.augment = !a.is_null();
    }
    (optim, training, notes)
}

/// Whether the recipe dropped the last, short batch of each epoch.
pub fn drop_last(recipe: &Value) -> bool {
    recipe.get("drop_last").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_kit::optim::SgdConfig;
    use serde_json::json;

    fn form() -> (Optim, Training) {
        (
            Optim {
                lr: 0.1,
                epochs: 182,
                batch_size: 256,
                sgd: SgdConfig {
                    momentum: 0.9,
                    weight_decay: 5e-4,
                },
                adam: None,
                schedule: Schedule::Constant,
            },
            Training {
                augment: true,
                temperature: 0.2,
                max_batches: 0,
            },
        )
    }

    #[test]
    fn the_demo_classifier_recipe_is_followed() {
        let (o, t) = form();
        let recipe = json!({"epochs": 30, "batch_size": 64, "lr": 0.05, "weight_decay": 0.0,
            "optimizer": {"kind": "sgd", "momentum": 0.8, "nesterov": false},
            "schedule": {"kind": "cosine"}, "seed": 0, "augment": null, "temperature": 0.5});
        let (o, t, notes) = apply(&recipe, &o, &t);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((o.epochs, o.batch_size, o.lr), (30, 64, 0.05));
        assert_eq!((o.sgd.momentum, o.sgd.weight_decay), (0.8, 0.0));
        assert_eq!(o.schedule, Schedule::Cosine);
        assert!(!t.augment);
        assert_eq!(t.temperature, 0.5);
        assert!(!drop_last(&recipe));
        assert!(drop_last(&json!({"drop_last": true})));
    }

    #[test]
    fn no_recipe_keeps_the_form_and_says_so() {
        let (o, t) = form();
        let (o2, t2, notes) = apply(&json!({}), &o, &t);
        assert_eq!(o2.epochs, o.epochs);
        assert!(t2.augment);
        assert_eq!(notes.len(), 1);
        let (_, _, notes) = apply(&json!({"optimizer": {"kind": "rmsprop"}}), &o, &t);
        assert!(notes[0].contains("rmsprop"), "{notes:?}");
    }

    #[test]
    fn an_adam_recipe_retrains_with_adam() {
        let (o, t) = form();
        let recipe = json!({"epochs": 100, "batch_size": 128, "lr": 0.001, "weight_decay": 1e-4,
            "optimizer": {"kind": "adam", "beta1": 0.8, "beta2": 0.99},
            "schedule": {"kind": "constant"}, "seed": 0, "augment": null});
        let (o, _, notes) = apply(&recipe, &o, &t);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((o.epochs, o.batch_size, o.lr), (100, 128, 0.001));
        assert_eq!(o.schedule, Schedule::Constant);
        let adam = o.adam.unwrap();
        assert_eq!(
            (adam.beta1, adam.beta2, adam.weight_decay),
            (0.8, 0.99, 1e-4)
        );
        // SGD recipes keep SGD.
        let (o, t) = form();
        let (o, _, _) = apply(
            &json!({"optimizer": {"kind": "sgd", "momentum": 0.9}}),
            &o,
            &t,
        );
        assert!(o.adam.is_none());
    }
}
