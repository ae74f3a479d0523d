//! Membership attacks from the GUI: choosing an attack plugin and running it on
//! the unlearned model (and, for comparison, on the original), the metric set
//! of a finished attack run, and the before/after summary on the deletion run.

use super::file_name;
use crate::app::{Command, LetheApp};
use crate::attack_report::{AttackSummary, Separation, verdict, with_interval};
use crate::form::{FormValues, form_ui};
use crate::jobs::{JobRecord, JobSpec, JobStatus};
use crate::state::View;
use crate::tasks::Loadable;
use egui::{Color32, RichText};
use std::path::Path;

const RED: Color32 = Color32::from_rgb(220, 60, 60);
const AMBER: Color32 = Color32::from_rgb(200, 150, 40);

/// Starts (or reads back) the metric set of a finished attack run.
pub fn ensure_report(app: &mut LetheApp, r: &JobRecord) {
    if r.spec.kind != "attack" || r.status != JobStatus::Succeeded {
        return;
    }
    if app.attack_reports.contains_key(&r.id) {
        return;
    }
    let Some(p) = &app.project else { return };
    let job = crate::attack_report::ReportJob {
        spec: r.spec.clone(),
        descriptor: app
            .catalog
            .ready()
            .and_then(|c| c.get(&r.spec.plugin_id))
            .map(|e| e.info.clone()),
        out_dir: p.run_dir(&r.id).join("output"),
        seconds: r.elapsed(crate::project::now()).unwrap_or(0.0),
    };
    app.attack_reports.insert(r.id.clone(), Loadable::Loading);
    app.tasks.attack_report(r.id.clone(), job);
}

fn separation_grid(ui: &mut egui::Ui, id: &str, s: &Separation) {
    let mut rows = vec![
        ("AUC (0.5 = chance)", with_interval(s.auc, s.auc_ci)),
        (
            "Compared",
            format!("{} members vs {} non-members", s.members, s.non_members),
        ),
    ];
    for t in &s.tprs {
        let mut text = with_interval(t.tpr, t.ci);
        if !t.resolved {
            text.push_str("  (too few non-members to measure this FPR)");
        }
        rows.push((
            match t.fpr {
                f if f >= 0.01 => "TPR at 1 % FPR",
                f if f >= 0.001 => "TPR at 0.1 % FPR",
                _ => "TPR at 0.01 % FPR",
            },
            text,
        ));
    }
    if let Some(e) = s.efficacy {
        rows.push((
            "MIA efficacy",
            format!("{:.1} % called non-members", e * 100.0),
        ));
    }
    crate::widgets::kv_grid(ui, id, &rows);
}

/// The metric set of a finished attack run.
pub fn attack_results(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord) {
    if r.spec.kind != "attack" || r.status != JobStatus::Succeeded {
        return;
    }
    ensure_report(app, r);
    ui.add_space(8.0);
    ui.label(RichText::new("What the attack found").strong());
    match app.attack_reports.get(&r.id).cloned() {
        Some(Loadable::Ready(s)) => {
            summary_ui(ui, &s);
            if let Some(ps) = &s.per_sample {
                ui.add_space(8.0);
                super::per_sample::view(ui, app, &s, ps, &r.spec.data, &r.id);
            }
        }
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, "The attack's metrics could not be computed");
            ui.add(egui::Label::new(RichText::new(e).monospace().small()).wrap());
        }
        _ => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Computing AUC, TPR at low FPR and their intervals (bootstrap)…");
            });
        }
    }
}

fn summary_ui(ui: &mut egui::Ui, s: &AttackSummary) {
    ui.label(format!(
        "Forget set against held-out {} samples: {}.",
        if s.nonmember_split.is_empty() {
            "non-member"
        } else {
            &s.nonmember_split
        },
        verdict(&s.forget)
    ));
    separation_grid(ui, "attack-forget", &s.forget);
    if let Some(reference) = &s.reference {
        ui.add_space(4.0);
        ui.label(
            RichText::new(format!(
                "The attack's power on this model (held-out members vs non-members): AUC {}",
                with_interval(reference.auc, reference.auc_ci)
            ))
            .weak(),
        );
    }
    for f in &s.flags {
        let (icon, color) = if f.warning {
            ("⚠", AMBER)
        } else {
            ("ℹ", ui.visuals().weak_text_color())
        };
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(color, icon);
            ui.add(egui::Label::new(RichText::new(&f.message).color(color)).wrap());
        });
    }
    ui.label(
        RichText::new(format!(
            "Written to {} beside the scores.",
            crate::attack_report::ATTACK_FILE
        ))
        .small()
        .weak(),
    );
}

/// Attack runs on the model a deletion run made and on its original, for the
/// before/after summary: `(attack name, run on the original, run on the new model)`.
fn related_attacks<'a>(
    runs: &'a [JobRecord],
    r: &JobRecord,
    model: &Path,
) -> Vec<(String, Option<&'a JobRecord>, Option<&'a JobRecord>)> {
    let mut out: Vec<(String, Option<&JobRecord>, Option<&JobRecord>)> = Vec::new();
    let attacks = runs.iter().filter(|a| {
        a.spec.kind == "attack" && a.spec.forget == r.spec.forget && a.spec.data == r.spec.data
    });
    for a in attacks {
        let on_new = a.spec.checkpoint == model;
        let on_original = a.spec.checkpoint == r.spec.checkpoint;
        if !on_new && !on_original {
            continue;
        }
        let name = a.spec.plugin_name.clone();
        let slot = match out.iter().position(|(n, _, _)| *n == name) {
            Some(i) => i,
            None => {
                out.push((name, None, None));
                out.len() - 1
            }
        };
        // The latest successful run of each kind wins.
        let entry = &mut out[slot];
        let target = if on_new { &mut entry.2 } else { &mut entry.1 };
        if target
            .is_none_or(|t| t.status != JobStatus::Succeeded || a.status == JobStatus::Succeeded)
        {
            *target = Some(a);
        }
    }
    out
}

/// On a finished deletion run: the attack runs on its model and the original,
/// side by side, and the form to run one more.
pub fn model_checks(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord) {
    let Some(model) = r.model_artifact().cloned() else {
        return;
    };
    let related: Vec<(String, Option<JobRecord>, Option<JobRecord>)> = app
        .project
        .as_ref()
        .map(|p| {
            related_attacks(&p.runs, r, &model.path)
                .into_iter()
                .map(|(n, a, b)| (n, a.cloned(), b.cloned()))
                .collect()
        })
        .unwrap_or_default();
    ui.label(RichText::new("Does the new model still give the samples away?").strong());
    if related.is_empty() {
        ui.label(
            "No attack has been run on this deletion yet. A membership attack tries to tell \
             whether a sample was in the training data; after a good deletion it should not \
             recognise the forgotten samples any more than the original model recognises \
             unseen ones.",
        );
    } else {
        for (_, a, b) in &related {
            for x in [a, b].into_iter().flatten() {
                ensure_report(app, x);
            }
        }
        egui::Grid::new("checks")
            .striped(true)
            .num_columns(3)
            .show(ui, |ui| {
                ui.strong("attack");
                ui.strong("forget-set AUC, original model");
                ui.strong("forget-set AUC, new model");
                ui.end_row();
                for (name, original, new) in &related {
                    ui.label(name);
                    for run in [original, new] {
                        cell(ui, app, run.as_ref());
                    }
                    ui.end_row();
                }
            });
        ui.label(
            RichText::new(
                "0.5 means the attack cannot tell the forgotten samples from unseen data; \
                 brackets are 95 % bootstrap intervals. Click a value to open that attack run.",
            )
            .small()
            .weak(),
        );
    }
    ui.add_space(4.0);
    attack_form(ui, app, r, &model.path);
}

fn cell(ui: &mut egui::Ui, app: &mut LetheApp, run: Option<&JobRecord>) {
    let Some(run) = run else {
        ui.weak("not run");
        return;
    };
    let text = match (&run.status, app.attack_reports.get(&run.id)) {
        (JobStatus::Succeeded, Some(Loadable::Ready(s))) => {
            with_interval(s.forget.auc, s.forget.auc_ci)
        }
        (JobStatus::Succeeded, Some(Loadable::Failed(_))) => "metrics failed".into(),
        (JobStatus::Succeeded, _) => "computing…".into(),
        (s, _) => s.label().to_string(),
    };
    if ui.link(text).on_hover_text(&run.id).clicked() {
        app.commands.push(Command::Show(View::Run(run.id.clone())));
    }
}

/// The attack offered first: the metric-based MIA for classifiers (cheap, no
/// shadow models), EncoderMI for encoders, else the first one.
pub fn default_attack(attacks: &[crate::catalog::PluginEntry], encoder: bool) -> String {
    let want = if encoder { "encodermi" } else { "metric-mia" };
    attacks
        .iter()
        .find(|a| a.info.id.ends_with(want))
        .or_else(|| attacks.first())
        .map(|a| a.info.id.clone())
        .unwrap_or_default()
}

/// The attack's jobs on `model` (and, with `compare`, on the original), the
/// original's left out when that same job already ran or is under way.
pub(crate) fn queue_attack(
    app: &mut LetheApp,
    r: &JobRecord,
    model: &Path,
    entry: &crate::catalog::PluginEntry,
    params: serde_json::Map<String, serde_json::Value>,
    compare: bool,
) {
    let spec = |checkpoint: &Path, what: &str| JobSpec {
        kind: "attack".into(),
        plugin_id: entry.info.id.clone(),
        plugin_name: entry.info.name.clone(),
        library: entry.library.clone(),
        params: serde_json::Value::Object(params.clone()),
        checkpoint: checkpoint.to_path_buf(),
        data: r.spec.data.clone(),
        forget: r.spec.forget.clone(),
        forget_label: format!("{} · {what}", r.spec.forget_label),
        device: r.spec.device.clone(),
        seed: r.spec.seed,
    };
    let new = spec(model, &format!("new model of the {}", r.title()));
    if compare {
        let original = spec(
            &r.spec.checkpoint,
            &format!("original {}", file_name(&r.spec.checkpoint)),
        );
        let have = app.project.as_ref().is_some_and(|p| {
            p.runs.iter().any(|x| {
                x.spec == original
                    && matches!(
                        x.status,
                        JobStatus::Succeeded | JobStatus::Queued | JobStatus::Running
                    )
            })
        });
        if !have {
            app.commands.push(Command::QueueQuietly(original));
        }
    }
    app.commands.push(Command::Queue(new));
}

/// The default attack (see [`default_attack`]) with its form's values, on the
/// new model and the original: the one-click check of a deletion.
pub fn quick_attack(app: &mut LetheApp, r: &JobRecord, model: &Path) {
    let Some(cat) = app.catalog.ready().cloned() else {
        app.commands.push(Command::Notify(
            "The plugins are still being scanned".into(),
            true,
        ));
        return;
    };
    let mut attacks: Vec<_> = cat.of_kind("attack").cloned().collect();
    attacks.sort_by_key(|e| crate::catalog::is_test_plugin(&e.info.id));
    let id = default_attack(&attacks, is_encoder(app, r));
    let Some(entry) = attacks.into_iter().find(|a| a.info.id == id) else {
        app.commands.push(Command::Notify(
            "No attack plugins are installed".into(),
            true,
        ));
        return;
    };
    let values = app
        .state
        .forms
        .entry(entry.info.id.clone())
        .or_insert_with(|| FormValues::defaults(&entry.info.schema))
        .clone();
    match values.validated(&entry.info.schema) {
        Ok(params) => queue_attack(app, r, model, &entry, params, true),
        Err(problems) => app.commands.push(Command::Notify(
            format!("{}: {}", entry.info.name, problems.join("; ")),
            true,
        )),
    }
}

/// Whether the run's original model is an encoder (no classifier head).
fn is_encoder(app: &LetheApp, r: &JobRecord) -> bool {
    app.checkpoints
        .get(&r.spec.checkpoint)
        .and_then(Loadable::ready)
        .and_then(|s| s.architecture.as_ref())
        .is_some_and(|a| !matches!(a.head, lethe_engine::models::HeadConfig::Classifier { .. }))
}

/// Where the estimate of `entry` with `params` on `model` is kept in
/// `app.estimates` (a change of settings asks for a new one).
pub(crate) fn estimate_key(
    model: &Path,
    entry: &crate::catalog::PluginEntry,
    params: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let params = serde_json::Value::Object(params.clone());
    format!("{}|{}|{params}", model.display(), entry.info.id)
}

/// Starts the dry run that estimates an attack's cost (off the UI thread).
pub(crate) fn start_estimate(
    app: &mut LetheApp,
    r: &JobRecord,
    model: &Path,
    entry: &crate::catalog::PluginEntry,
    key: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) {
    let spec = JobSpec {
        kind: "attack".into(),
        plugin_id: entry.info.id.clone(),
        plugin_name: entry.info.name.clone(),
        library: entry.library.clone(),
        params: serde_json::Value::Object(params.clone()),
        checkpoint: model.to_path_buf(),
        data: r.spec.data.clone(),
        forget: r.spec.forget.clone(),
        forget_label: r.spec.forget_label.clone(),
        device: r.spec.device.clone(),
        seed: r.spec.seed,
    };
    app.estimates.insert(key.to_string(), Loadable::Loading);
    app.tasks.estimate_attack(
        key.to_string(),
        app.worker_opts.clone(),
        spec,
        entry.info.clone(),
    );
}

/// The cost of an attack's shadow models, estimated on request (they are
/// trained once and cached, but the first time can take hours).
fn estimate_ui(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    r: &JobRecord,
    model: &Path,
    entry: &crate::catalog::PluginEntry,
    params: &serde_json::Map<String, serde_json::Value>,
) {
    let key = estimate_key(model, entry, params);
    let state = app.estimates.get(&key).cloned();
    ui.horizontal_wrapped(|ui| {
        let busy = matches!(state, Some(Loadable::Loading));
        if ui
            .add_enabled(!busy, egui::Button::new("Estimate the shadow models' cost"))
            .on_hover_text(
                "A dry run: how many shadow models the attack needs, how many are cached, \
                 and how long training the rest takes (timed on a mini-batch); trains nothing",
            )
            .clicked()
        {
            start_estimate(app, r, model, entry, &key, params);
        }
        match &state {
            Some(Loadable::Loading) => {
                ui.spinner();
                ui.label("Estimating…");
            }
            Some(Loadable::Ready(line)) => {
                ui.label(line);
                if app.studies.busy() {
                    ui.colored_label(
                        AMBER,
                        "A study is running and shares the processor: while it runs, the \
                         shadow models take longer than this.",
                    );
                }
            }
            Some(Loadable::Failed(e)) => {
                ui.colored_label(RED, e);
            }
            None => {}
        }
    });
}

/// Choosing an attack plugin and running it on the new model (and the original).
fn attack_form(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, model: &Path) {
    egui::CollapsingHeader::new(RichText::new("Run a membership attack").strong())
        .id_salt("attack")
        .show(ui, |ui| {
            let Some(cat) = app.catalog.ready().cloned() else {
                ui.spinner();
                return;
            };
            let mut attacks: Vec<_> = cat.of_kind("attack").cloned().collect();
            attacks.sort_by_key(|e| crate::catalog::is_test_plugin(&e.info.id));
            if attacks.is_empty() {
                ui.label("No attack plugins are installed.");
                return;
            }
            let key = egui::Id::unique(("attack-choice", &r.id));
            let default = default_attack(&attacks, is_encoder(app, r));
            let (chosen, mut compare) = ui
                .ctx()
                .data(|d| d.get_temp::<(String, bool)>(key))
                .filter(|(id, _)| attacks.iter().any(|a| &a.info.id == id))
                .unwrap_or((default, true));
            let mut pick = chosen;
            egui::ComboBox::from_id_salt("attack-combo")
                .width(320.0)
                .selected_text(
                    attacks
                        .iter()
                        .find(|a| a.info.id == pick)
                        .map(|a| a.info.name.clone())
                        .unwrap_or_default(),
                )
                .show_ui(ui, |ui| {
                    for a in &attacks {
                        ui.selectable_value(&mut pick, a.info.id.clone(), &a.info.name)
                            .on_hover_text(&a.info.description);
                    }
                }).response.on_hover_text("Attack plugin");
            let Some(entry) = attacks.iter().find(|a| a.info.id == pick).cloned() else {
                return;
            };
            ui.label(RichText::new(&entry.info.description).weak());
            let values = app
                .state
                .forms
                .entry(entry.info.id.clone())
                .or_insert_with(|| FormValues::defaults(&entry.info.schema));
            ui.push_id("attack-form", |ui| form_ui(ui, &entry.info.schema, values));
            let validated = values.validated(&entry.info.schema);
            ui.checkbox(
                &mut compare,
                "Also attack the original model (the comparison that shows what the deletion changed)",
            );
            ui.ctx()
                .data_mut(|d| d.insert_temp(key, (pick.clone(), compare)));
            if crate::attack_report::uses_shadows(&entry.info)
                && let Ok(params) = &validated
            {
                estimate_ui(ui, app, r, model, &entry, params);
            }
            match validated {
                Ok(params) => {
                    if ui
                        .button(RichText::new("▶ Run the attack").strong())
                        .clicked()
                    {
                        queue_attack(app, r, model, &entry, params, compare);
                    }
                }
                Err(problems) => {
                    for p in problems {
                        ui.colored_label(RED, p);
                    }
                }
            }
            ui.label(
                RichText::new(format!(
                    "The attack reads {} and the same data and forget set; its runs appear \
                     under Runs and in the table above when they finish.",
                    file_name(model)
                ))
                .small()
                .weak(),
            );
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, kind: &str, name: &str, ckpt: &str, status: JobStatus) -> JobRecord {
        let mut r = JobRecord::new(
            id.into(),
            JobSpec {
                kind: kind.into(),
                plugin_id: format!("org.x.{name}"),
                plugin_name: name.into(),
                library: "/l.so".into(),
                params: serde_json::json!({}),
                checkpoint: ckpt.into(),
                data: "/d".into(),
                forget: "/f".into(),
                forget_label: String::new(),
                device: "cpu".into(),
                seed: 0,
            },
            0.0,
        );
        r.status = status;
        r
    }

    #[test]
    fn attacks_pair_up_by_name_on_the_original_and_the_new_model() {
        let del = run("del", "method", "FT", "/orig.pt", JobStatus::Succeeded);
        let runs = vec![
            del.clone(),
            run(
                "a1",
                "attack",
                "MIA",
                "/new.st",
                JobStatus::Failed {
                    message: "x".into(),
                },
            ),
            run("a2", "attack", "MIA", "/new.st", JobStatus::Succeeded),
            run(
                "a3",
                "attack",
                "MIA",
                "/new.st",
                JobStatus::Failed {
                    message: "y".into(),
                },
            ),
            run("a4", "attack", "MIA", "/orig.pt", JobStatus::Succeeded),
            run("a5", "attack", "SVM", "/other.st", JobStatus::Succeeded),
            run("a6", "attack", "SVM", "/new.st", JobStatus::Queued),
        ];
        let rel = related_attacks(&runs, &del, Path::new("/new.st"));
        assert_eq!(rel.len(), 2, "another model's attack is left out");
        assert_eq!(rel[0].0, "MIA");
        assert_eq!(rel[0].1.unwrap().id, "a4");
        assert_eq!(
            rel[0].2.unwrap().id,
            "a2",
            "a later failure does not hide a success"
        );
        assert_eq!(rel[1].0, "SVM");
        assert!(rel[1].1.is_none());
        assert_eq!(rel[1].2.unwrap().id, "a6");
    }
}
