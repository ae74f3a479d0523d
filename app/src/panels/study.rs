//! Studies: defining one (methods × seeds from the plugin list, attacks,
//! columns), running it in the background, and reading it: the comparison
//! table with gaps to retrain, best per column, mean ± std over seeds, sorting
//! and colours, the gap heatmap, exports and the study's log.

use super::file_name;
use crate::app::{Command, LetheApp};
use crate::catalog::is_test_plugin;
use crate::form::{FormValues, RUN_SEED, form_ui_without};
use crate::state::View;
use crate::study::{self, DraftMethod, StudyDraft};
use crate::tasks::Loadable;
use egui::{Color32, RichText};
use lethe_engine::exec::ExecutorConfig;
use lethe_engine::report::Format;
use lethe_engine::study::spec::{AttackSpec, EvaluateSpec, MethodSpec, RetrainSpec};
use lethe_engine::study::{StudyResults, StudySpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RED: Color32 = Color32::from_rgb(220, 60, 60);

fn params_of(app: &LetheApp, id: &str) -> Result<serde_json::Value, Vec<String>> {
    let Some(e) = app.catalog.ready().and_then(|c| c.get(id)) else {
        return Err(vec![format!("plugin {id} is not installed")]);
    };
    let values = app
        .state
        .forms
        .get(id)
        .cloned()
        .unwrap_or_else(|| FormValues::defaults(&e.info.schema));
    values
        .validated(&e.info.schema)
        .map(|mut p| {
            // Each row's seed fills it in (the study runner does so when absent);
            // the form's value would fix it for every seed.
            p.remove(RUN_SEED);
            serde_json::Value::Object(p)
        })
        .map_err(|p| {
            p.into_iter()
                .map(|x| format!("{}: {x}", e.info.name))
                .collect()
        })
}

/// The study the draft describes, or what is missing.
pub fn spec_of(app: &LetheApp, d: &StudyDraft) -> Result<StudySpec, Vec<String>> {
    let mut missing = Vec::new();
    let name = study::clean_name(d.name.trim(), true);
    if d.name.trim().is_empty() {
        missing.push("give the study a name".to_string());
    }
    let seeds = study::parse_seeds(&d.seeds)
        .map_err(|e| missing.push(e))
        .ok();
    if d.checkpoint.is_none() || d.data.is_none() || d.forget.is_none() {
        missing.push("choose the model, its data and the forget set".into());
    }
    if d.methods.is_empty() {
        missing.push("add at least one method to compare".into());
    }
    let mut methods = Vec::new();
    for m in &d.methods {
        if let Some(e) = app.catalog.ready().and_then(|c| c.get(&m.id))
            && let Some(why) =
                super::deletion::refusal_for(app, &e.info, d.checkpoint.as_ref(), d.forget.as_ref())
        {
            missing.push(format!("{} does not apply here: it {why}", e.info.name));
        }
        match params_of(app, &m.id) {
            Ok(params) => methods.push(MethodSpec {
                name: study::clean_name(&m.name, true),
                id: m.id.clone(),
                params,
            }),
            Err(p) => missing.extend(p),
        }
    }
    let mut attacks = Vec::new();
    for id in &d.attacks {
        match params_of(app, id) {
            Ok(params) => attacks.push(AttackSpec {
                name: study::attack_name(id),
                id: id.clone(),
                params,
                bootstrap: crate::attack_report::BOOTSTRAP,
                ci: 0.95,
            }),
            Err(p) => missing.extend(p),
        }
    }
    let retrain = match params_of(app, &d.retrain_id) {
        Ok(params) => RetrainSpec {
            id: d.retrain_id.clone(),
            params,
        },
        Err(p) => {
            missing.extend(p);
            RetrainSpec::default()
        }
    };
    let names: Vec<String> = attacks.iter().map(|a| a.name.clone()).collect();
    let metrics: Vec<String> = study::metric_choices(&names)
        .into_iter()
        .filter(|(k, on)| {
            if d.metrics.is_empty() {
                *on
            } else {
                d.metrics.contains(k)
            }
        })
        .map(|(k, _)| k)
        .collect();
    if metrics.is_empty() {
        missing.push("choose at least one column".into());
    }
    // The FS column needs the alignment audit, which classifiers only get on
    // request; it also writes the AM/AGM heatmaps of each run.
    let evaluate = EvaluateSpec {
        alignment: metrics.iter().any(|m| m == "fs"),
        ..EvaluateSpec::default()
    };
    // Slurm settings go into the study file's `[slurm]` table.
    let slurm = match d.run_on.executor() {
        Ok(ExecutorConfig::Slurm(s)) => Some(s),
        Ok(ExecutorConfig::Local { .. }) => None,
        Err(e) => {
            missing.extend(e.into_iter().map(|e| format!("Slurm {e}")));
            None
        }
    };
    match (missing.is_empty(), seeds, &d.checkpoint, &d.data, &d.forget) {
        (true, Some(seeds), Some(c), Some(data), Some(f)) => Ok(StudySpec {
            name,
            checkpoint: c.clone(),
            data: data.clone(),
            forget: f.clone(),
            seeds,
            device: app.state.draft.device.clone(),
            metrics,
            avg_gap: None,
            original: d.original,
            labels: Default::default(),
            avg_gap_label: None,
            timeout: None,
            retrain,
            evaluate,
            methods,
            attacks,
            slurm,
            scales: None,
        }),
        _ => Err(missing),
    }
}

fn path_combo(
    ui: &mut egui::Ui,
    id: &str,
    label: &str,
    value: &mut Option<PathBuf>,
    options: &[(PathBuf, String)],
) {
    ui.label(label);
    egui::ComboBox::from_id_salt(id)
        .width(360.0)
        .selected_text(
            value
                .as_ref()
                .and_then(|v| options.iter().find(|(p, _)| p == v))
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| "Choose…".into()),
        )
        .show_ui(ui, |ui| {
            for (p, n) in options {
                ui.selectable_value(value, Some(p.clone()), n)
                    .on_hover_text(p.display().to_string());
            }
        })
        .response
        .on_hover_text(label);
    ui.end_row();
}

/// Defining a new study.
pub fn new_study(ui: &mut egui::Ui, app: &mut LetheApp) {
    let Some(p) = &app.project else { return };
    let project_dir = p.dir.clone();
    let ckpts: Vec<(PathBuf, String)> = p
        .file
        .checkpoints
        .iter()
        .map(|c| (c.clone(), file_name(c)))
        .collect();
    let datas: Vec<(PathBuf, String)> = p
        .file
        .datasets
        .iter()
        .map(|c| (c.clone(), file_name(c)))
        .collect();
    let forgets: Vec<(PathBuf, String)> = p
        .file
        .forget_sets
        .iter()
        .map(|f| (f.path.clone(), format!("{} ({})", f.name, f.count)))
        .collect();
    // Start from what the deletion request holds.
    {
        let (draft, d) = (&app.state.draft, &mut app.state.study_draft);
        if d.checkpoint.is_none() {
            d.checkpoint = draft.checkpoint.clone();
        }
        if d.data.is_none() {
            d.data = draft.data.clone();
        }
        if d.forget.is_none() {
            d.forget = draft.forget.clone();
        }
    }
    let Some(cat) = app.catalog.ready().cloned() else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Looking for plugins…");
        });
        return;
    };
    egui::ScrollArea::vertical().id_salt("new-study").show(ui, |ui| {
        ui.heading("New study");
        ui.label(
            "A study runs several unlearning methods on the same request, once per seed, and \
             compares each with exact retraining (the model trained again without the forgotten \
             samples): the smaller the gap to retraining, the better. Retraining results are \
             cached and reused by later studies.",
        );
        ui.add_space(8.0);
        egui::Grid::new("study-inputs")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let d = &mut app.state.study_draft;
                ui.label("Name");
                ui.add(egui::TextEdit::singleline(&mut d.name).desired_width(240.0))
                    .on_hover_text("Letters, digits, - _ + . (other characters become -)");
                ui.end_row();
                path_combo(ui, "study-ckpt", "Model", &mut d.checkpoint, &ckpts);
                path_combo(ui, "study-data", "Training data", &mut d.data, &datas);
                path_combo(ui, "study-forget", "Forget set", &mut d.forget, &forgets);
                ui.label("Seeds");
                ui.add(egui::TextEdit::singleline(&mut d.seeds).desired_width(240.0))
                    .on_hover_text("One run of every method per seed; the table shows mean ± std over them");
                ui.end_row();
                ui.label("Reference rows");
                ui.checkbox(&mut d.original, "also a row for the original model");
                ui.end_row();
            });
        ui.add_space(8.0);
        methods_ui(ui, app, &cat);
        ui.add_space(8.0);
        attacks_ui(ui, app, &cat);
        ui.add_space(8.0);
        columns_ui(ui, app);
        ui.add_space(8.0);
        egui::CollapsingHeader::new("Reference: exact retraining (settings)")
            .id_salt("study-retrain")
            .show(ui, |ui| {
                let mut id = app.state.study_draft.retrain_id.clone();
                ui.horizontal(|ui| {
                    ui.label("Reference method:");
                    egui::ComboBox::from_id_salt("study-retrain-id")
                        .selected_text(
                            cat.get(&id)
                                .map(|e| e.info.name.clone())
                                .unwrap_or_else(|| id.clone()),
                        )
                        .show_ui(ui, |ui| {
                            for e in cat.of_kind("method") {
                                ui.selectable_value(&mut id, e.info.id.clone(), &e.info.name);
                            }
                        }).response.on_hover_text("Reference method");
                });
                app.state.study_draft.retrain_id = id.clone();
                match cat.get(&id) {
                    Some(e) => {
                        ui.label(RichText::new(&e.info.description).weak());
                        let checkpoint = app.state.study_draft.checkpoint.clone();
                        ui.push_id("retrain-form", |ui| {
                            super::deletion::model_form_ui(ui, app, checkpoint.as_deref(), e)
                        });
                    }
                    None => {
                        ui.colored_label(RED, format!("The reference plugin ({id}) is not installed."));
                    }
                }
            });
        ui.add_space(8.0);
        run_on_ui(ui, app);
        ui.add_space(10.0);
        let spec = spec_of(app, &app.state.study_draft);
        match spec {
            Ok(spec) => {
                let rows = spec.methods.len() + 1 + usize::from(spec.original);
                let runs = rows * spec.seeds.len();
                let executor = study::executor_for(&spec, app.state.study_draft.run_on.jobs);
                ui.label(format!(
                    "{runs} runs ({rows} rows × {} seeds), each evaluated{}; on {}. Runs go to {}.",
                    spec.seeds.len(),
                    if spec.attacks.is_empty() {
                        String::new()
                    } else {
                        format!(" and attacked {} time(s)", spec.attacks.len())
                    },
                    spec.device,
                    executor.describe(),
                ));
                let (file, dir) = study::paths(&project_dir, &spec.name);
                let exists = dir.join(lethe_engine::study::results::STUDY_FILE).is_file();
                if exists {
                    ui.colored_label(
                        Color32::from_rgb(200, 150, 40),
                        format!(
                            "A study named {} exists: running resumes it if nothing changed, \
                             else it is refused (choose another name).",
                            spec.name
                        ),
                    );
                }
                let b = ui.add(
                    egui::Button::new(RichText::new("▶  Run the study").strong().size(16.0))
                        .min_size(egui::vec2(200.0, 36.0)),
                );
                if b.clicked() {
                    match study::spec_toml(&spec) {
                        Ok(text) => app
                            .commands
                            .push(Command::StartStudy(file, text, dir, executor)),
                        Err(e) => app.commands.push(Command::Notify(e, true)),
                    }
                }
            }
            Err(missing) => {
                ui.add_enabled(
                    false,
                    egui::Button::new(RichText::new("▶  Run the study").size(16.0))
                        .min_size(egui::vec2(200.0, 36.0)),
                );
                ui.label("Before starting:");
                for m in missing {
                    ui.label(format!("  • {m}"));
                }
            }
        }
    });
}

/// Every node of the cluster reads and writes the project where this machine
/// does.
const SHARED_PATHS: &str = "Every node must see the project folder, the data and the plugins \
     at the same path as this machine (a shared file system).";

/// The "Run on" choice: this machine (runs at once) or a Slurm cluster (its
/// settings).
fn run_on_ui(ui: &mut egui::Ui, app: &mut LetheApp) {
    use study::RunPlace;
    let device = app.state.draft.device.clone();
    let run_on = &mut app.state.study_draft.run_on;
    ui.label(RichText::new("Run on").strong());
    ui.horizontal(|ui| {
        ui.radio_value(&mut run_on.place, RunPlace::ThisMachine, "This machine")
            .on_hover_text("The runs go on this computer, one after another or several at once.");
        ui.radio_value(&mut run_on.place, RunPlace::Slurm, "Slurm cluster")
            .on_hover_text(format!(
                "This computer submits every run to a Slurm cluster as one job array and \
                 follows it; a run that fails is submitted again (up to 3 times). Needs the \
                 Slurm commands (sbatch, squeue, scancel) here. {SHARED_PATHS}"
            ));
    });
    match run_on.place {
        RunPlace::ThisMachine => {
            let cores = study::cores();
            ui.horizontal(|ui| {
                ui.label("Runs at once");
                ui.add(egui::DragValue::new(&mut run_on.jobs).range(1..=cores))
                    .on_hover_text(format!(
                        "1: one run after another, as a single process. More: that many runs \
                         at the same time, each its own process (this machine has {cores} \
                         cores; runs at once share them and the GPU's memory)."
                    ));
                ui.label(RichText::new(format!("of {cores} cores")).weak());
            });
        }
        RunPlace::Slurm => {
            let s = &mut run_on.slurm;
            egui::Grid::new("study-slurm")
                .num_columns(2)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    // Label, value, width, the grey note beside it, hover text.
                    let field = |ui: &mut egui::Ui,
                                 label: &str,
                                 value: &mut String,
                                 width: f32,
                                 note: &str,
                                 help: &str| {
                        ui.label(label).on_hover_text(help);
                        // One cell: a grid's middle column would be as narrow
                        // as its first frame measured it.
                        ui.horizontal(|ui| {
                            ui.add(egui::TextEdit::singleline(value).desired_width(width))
                                .on_hover_text(help);
                            ui.label(RichText::new(note).weak());
                        });
                        ui.end_row();
                    };
                    field(
                        ui,
                        "Partition",
                        &mut s.partition,
                        160.0,
                        "empty: the cluster's default",
                        "The partition (queue) the runs are submitted to; empty: the cluster's \
                         default partition.",
                    );
                    field(
                        ui,
                        "Time limit per run",
                        &mut s.time,
                        160.0,
                        "e.g. 02:00:00, 1-12:00:00 or 90 (minutes)",
                        "How long one run may take before Slurm stops it: hours:minutes:seconds \
                         (02:00:00), days-hours:minutes:seconds (1-12:00:00) or minutes (90); \
                         empty: the partition's limit. A run stopped this way is submitted again.",
                    );
                    field(
                        ui,
                        "CPUs per run",
                        &mut s.cpus,
                        60.0,
                        "empty: the partition's default",
                        "CPU cores reserved for each run; empty: the partition's default.",
                    );
                    field(
                        ui,
                        "Memory per run",
                        &mut s.mem,
                        60.0,
                        "e.g. 8G or 512M",
                        "Memory reserved for each run, like 8G or 512M; empty: the partition's \
                         default.",
                    );
                    field(
                        ui,
                        "GPUs per run",
                        &mut s.gpus,
                        60.0,
                        "empty: none",
                        "GPUs reserved for each run; empty: none. The runs use the device the \
                         study uses on this machine, so when that is a GPU each run needs one.",
                    );
                    field(
                        ui,
                        "Account",
                        &mut s.account,
                        160.0,
                        "empty: your default account",
                        "The account the cluster time is charged to; empty: your default \
                         account.",
                    );
                    field(
                        ui,
                        "Most runs at once",
                        &mut s.max_parallel,
                        60.0,
                        "empty: no limit",
                        "At most this many runs of the study on the cluster at the same time; \
                         empty: as many as the cluster allows.",
                    );
                    field(
                        ui,
                        "More sbatch options",
                        &mut s.extra_args,
                        320.0,
                        "e.g. --qos=short",
                        "Further options for sbatch, as you would type them (split at spaces; \
                         no quoting), e.g. --qos=short --constraint=a100.",
                    );
                });
            ui.label(RichText::new(SHARED_PATHS).weak());
            if !study::has_sbatch() {
                ui.colored_label(
                    Color32::from_rgb(200, 150, 40),
                    "The Slurm commands (sbatch) are not on this machine: run Lethe on a \
                     machine of the cluster (a login node) to submit there.",
                );
            }
            if device != "cpu" {
                ui.label(
                    RichText::new(format!(
                        "The study's device is {device}, decided on this machine: when that is \
                         a GPU, give each run one."
                    ))
                    .weak(),
                );
            }
            if let Err(errors) = s.settings() {
                for e in errors {
                    ui.colored_label(RED, e);
                }
            }
        }
    }
}

fn methods_ui(ui: &mut egui::Ui, app: &mut LetheApp, cat: &crate::catalog::Catalog) {
    ui.label(RichText::new("Methods compared (one table row each)").strong());
    let methods: Vec<_> = cat
        .of_kind("method")
        .filter(|e| e.info.id != app.state.study_draft.retrain_id)
        .cloned()
        .collect();
    let (ckpt, forget) = (
        app.state.study_draft.checkpoint.clone(),
        app.state.study_draft.forget.clone(),
    );
    let why_not = |app: &LetheApp, e: &crate::catalog::PluginEntry| {
        super::deletion::refusal_for(app, &e.info, ckpt.as_ref(), forget.as_ref())
    };
    let mut methods: Vec<_> = methods
        .into_iter()
        .map(|e| {
            let why = why_not(app, &e);
            (e, why)
        })
        .collect();
    methods.sort_by_key(|(e, why)| (is_test_plugin(&e.info.id), why.is_some()));
    let mut remove = None;
    let list = app.state.study_draft.methods.clone();
    for (i, m) in list.iter().enumerate() {
        ui.push_id(("study-method", i), |ui| {
            ui.horizontal(|ui| {
                let mut name = m.name.clone();
                ui.add(egui::TextEdit::singleline(&mut name).desired_width(140.0))
                    .on_hover_text("The row's label in the table");
                if name != m.name
                    && let Some(x) = app.state.study_draft.methods.get_mut(i)
                {
                    x.name = name;
                }
                let pname = cat
                    .get(&m.id)
                    .map(|e| e.info.name.clone())
                    .unwrap_or_else(|| format!("{} (not installed)", m.id));
                ui.label(RichText::new(pname).weak());
                if ui.small_button("Remove").clicked() {
                    remove = Some(i);
                }
            });
            if let Some(why) = cat.get(&m.id).and_then(|e| why_not(app, e)) {
                ui.colored_label(
                    Color32::from_rgb(220, 60, 60),
                    format!("Does not apply to this model or forget set: it {why}."),
                );
            }
            if let Some(e) = cat.get(&m.id) {
                egui::CollapsingHeader::new("settings")
                    .id_salt(("study-method-settings", i))
                    .show(ui, |ui| {
                        let checkpoint = app.state.study_draft.checkpoint.clone();
                        super::deletion::model_form_ui(ui, app, checkpoint.as_deref(), e);
                        ui.label(
                            RichText::new(
                                "Shared with the deletion request's settings for this method; \
                                 its seed is each row's seed.",
                            )
                            .small()
                            .weak(),
                        );
                    });
            }
        });
    }
    if let Some(i) = remove {
        app.state.study_draft.methods.remove(i);
    }
    let mut add: Option<String> = None;
    egui::ComboBox::from_id_salt("study-add-method")
        .width(320.0)
        .selected_text("Add a method…")
        .show_ui(ui, |ui| {
            for (e, why) in &methods {
                let mut label = if is_test_plugin(&e.info.id) {
                    format!("{} (test plugin)", e.info.name)
                } else {
                    e.info.name.clone()
                };
                if let Some(why) = why {
                    label.push_str(&format!(" — {}", why.split(';').next().unwrap_or(why)));
                    ui.add_enabled(false, egui::Button::selectable(false, label))
                        .on_disabled_hover_text(format!("It {why}."));
                    continue;
                }
                if ui
                    .selectable_label(false, label)
                    .on_hover_text(&e.info.description)
                    .clicked()
                {
                    add = Some(e.info.id.clone());
                }
            }
        })
        .response
        .on_hover_text("Add a method to compare");
    if let Some(id) = add
        && let Some(e) = cat.get(&id)
    {
        let d = &mut app.state.study_draft;
        let base = study::row_label(&e.info.name);
        let mut name = base.clone();
        let mut n = 2;
        while d.methods.iter().any(|m| m.name.eq_ignore_ascii_case(&name)) {
            name = format!("{base}-{n}");
            n += 1;
        }
        d.methods.push(DraftMethod { name, id });
    }
}

fn attacks_ui(ui: &mut egui::Ui, app: &mut LetheApp, cat: &crate::catalog::Catalog) {
    ui.label(RichText::new("Attacks run on every model").strong());
    let mut attacks: Vec<_> = cat.of_kind("attack").cloned().collect();
    attacks.sort_by_key(|e| is_test_plugin(&e.info.id));
    if attacks.is_empty() {
        ui.weak("No attack plugins are installed: the table will have accuracy columns only.");
    }
    for e in &attacks {
        let id = e.info.id.clone();
        let mut on = app.state.study_draft.attacks.contains(&id);
        ui.horizontal(|ui| {
            if ui
                .checkbox(&mut on, &e.info.name)
                .on_hover_text(&e.info.description)
                .changed()
            {
                let list = &mut app.state.study_draft.attacks;
                if on {
                    list.push(id.clone());
                } else {
                    list.retain(|a| a != &id);
                }
                // The default columns follow the attacks.
                app.state.study_draft.metrics.clear();
            }
            ui.label(RichText::new(format!("columns as {}.…", study::attack_name(&id))).weak());
        });
        if on {
            ui.push_id(("study-attack", &id), |ui| {
                egui::CollapsingHeader::new("settings").show(ui, |ui| {
                    let values = app
                        .state
                        .forms
                        .entry(id.clone())
                        .or_insert_with(|| FormValues::defaults(&e.info.schema));
                    form_ui_without(ui, &e.info.schema, values, &[RUN_SEED]);
                });
            });
        }
    }
}

fn columns_ui(ui: &mut egui::Ui, app: &mut LetheApp) {
    ui.label(RichText::new("Columns").strong());
    let names: Vec<String> = app
        .state
        .study_draft
        .attacks
        .iter()
        .map(|a| study::attack_name(a))
        .collect();
    let choices = study::metric_choices(&names);
    let d = &mut app.state.study_draft;
    if d.metrics.is_empty() {
        d.metrics = choices
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k.clone())
            .collect();
    }
    ui.horizontal_wrapped(|ui| {
        for (key, _) in &choices {
            let mut on = d.metrics.contains(key);
            if ui
                .checkbox(&mut on, key.as_str())
                .on_hover_text(study::metric_help(key))
                .changed()
            {
                if on {
                    d.metrics.push(key.clone());
                } else {
                    d.metrics.retain(|k| k != key);
                }
            }
        }
    });
}

/// A study: progress while it runs, its table, gaps, exports and log.
pub fn show(ui: &mut egui::Ui, app: &mut LetheApp, dir: &Path) {
    if !app.study_results.contains_key(dir) {
        app.load_study(dir);
    }
    if !app.study_live.contains_key(dir) {
        // A study from an earlier session: its log is in the file beside it
        // (read once, not every frame).
        let mut live = crate::study::Live::default();
        if let Ok(text) = std::fs::read_to_string(study::log_path(dir)) {
            for l in text.lines() {
                live.push(l.to_string());
            }
        }
        live.run_fraction = None;
        app.study_live.insert(dir.to_path_buf(), live);
    }
    let running = app.studies.is_running(dir);
    // An unfinished study (perhaps run by `lethe study` in a terminal) is read
    // again every few seconds while it is shown, so its table fills in.
    let now = crate::project::now();
    let unfinished = app
        .study_results
        .get(dir)
        .and_then(Loadable::ready)
        .is_some_and(|r| !r.missing().is_empty());
    let elsewhere = if running {
        None
    } else {
        study::running_elsewhere(dir)
    };
    if !running
        && unfinished
        && let Some(live) = app.study_live.get_mut(dir)
        && now - live.checked > 5.0
    {
        live.checked = now;
        app.load_study(dir);
    }
    if elsewhere.is_some() {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(5));
    }
    let results = app.study_results.get(dir).cloned();
    let live = app.study_live.get(dir).cloned();
    let name = file_name(dir);
    egui::ScrollArea::vertical().id_salt("study").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading(format!("Study {name}"));
            let (text, color) = if running {
                ("RUNNING", Color32::from_rgb(70, 140, 230))
            } else if elsewhere.is_some() {
                ("RUNNING ELSEWHERE", Color32::from_rgb(70, 140, 230))
            } else {
                match results.as_ref().and_then(Loadable::ready) {
                    Some(r) if r.missing().is_empty() => ("COMPLETE", Color32::from_rgb(60, 170, 80)),
                    Some(_) => ("INCOMPLETE", Color32::from_rgb(200, 150, 40)),
                    None => ("", Color32::GRAY),
                }
            };
            ui.label(RichText::new(text).color(color).strong());
        });
        ui.label(RichText::new(dir.display().to_string()).weak());
        ui.add_space(6.0);
        if let Some(pid) = elsewhere {
            ui.label(format!(
                "Another `lethe study` (process {pid}) is running this study; its results appear here as its runs finish."
            ));
        }
        progress_ui(ui, app, dir, results.as_ref(), live.as_ref(), running || elsewhere.is_some());
        if let Some(crate::study::Ended::Failed(e)) = live.as_ref().and_then(|l| l.ended.clone()) {
            egui::Frame::group(ui.style())
                .fill(Color32::from_rgba_unmultiplied(220, 60, 60, 24))
                .show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.colored_label(RED, RichText::new("The study did not finish").strong());
                    ui.label(e);
                    let tail: Vec<&String> = live
                        .as_ref()
                        .map(|l| l.lines.iter().rev().take(6).collect())
                        .unwrap_or_default();
                    for l in tail.into_iter().rev() {
                        ui.add(egui::Label::new(RichText::new(l).monospace().small()).wrap());
                    }
                });
        }
        match results {
            Some(Loadable::Ready(r)) => results_ui(ui, app, dir, &r),
            Some(Loadable::Failed(e)) => {
                ui.colored_label(RED, e);
            }
            _ => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(if running {
                        "Starting: finding the plugins and hashing the inputs…"
                    } else {
                        "Reading the study…"
                    });
                });
            }
        }
        ui.add_space(8.0);
        if let Some(l) = live.as_ref().filter(|l| l.tasks.active()) {
            tasks_ui(ui, &l.tasks, running);
            ui.add_space(4.0);
        }
        log_ui(ui, live.as_ref());
    });
}

/// The runs of a study on an executor, each with where it is.
fn tasks_ui(ui: &mut egui::Ui, board: &crate::study_tasks::TaskBoard, running: bool) {
    use crate::study_tasks::TaskState;
    let (on, waiting, finished, failed) = board.counts();
    let mut title = format!(
        "Runs on {} ({finished} of {} finished",
        board.executor, board.runs
    );
    if running {
        title.push_str(&format!(", {on} running, {waiting} waiting"));
    }
    if failed > 0 {
        title.push_str(&format!(", {failed} failed"));
    }
    title.push(')');
    egui::CollapsingHeader::new(RichText::new(title).strong())
        .id_salt("study-tasks")
        .default_open(true)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("study-tasks-scroll")
                .max_height(220.0)
                .show(ui, |ui| {
                    egui::Grid::new("study-tasks-grid")
                        .num_columns(2)
                        .spacing([16.0, 3.0])
                        .striped(true)
                        .show(ui, |ui| {
                            for t in &board.tasks {
                                ui.label(&t.unit);
                                if !running && !t.is_over() {
                                    // Its study ended (stopped, or failed)
                                    // before this run did.
                                    ui.label(
                                        RichText::new("did not finish (the study stopped)").weak(),
                                    );
                                    ui.end_row();
                                    continue;
                                }
                                let text = RichText::new(t.describe());
                                let text = match &t.state {
                                    TaskState::Finished { .. } => {
                                        text.color(Color32::from_rgb(60, 170, 80))
                                    }
                                    TaskState::Failed { retry: false, .. } => text.color(RED),
                                    TaskState::Failed { .. } => {
                                        text.color(Color32::from_rgb(200, 150, 40))
                                    }
                                    _ => text,
                                };
                                ui.vertical(|ui| {
                                    let r = ui.label(text);
                                    if let TaskState::Failed { why, log, .. } = &t.state {
                                        r.on_hover_text(why);
                                        let first = why.lines().next().unwrap_or_default();
                                        ui.add(
                                            egui::Label::new(RichText::new(first).small()).wrap(),
                                        );
                                        if let Some(log) = log {
                                            ui.horizontal(|ui| {
                                                ui.label(RichText::new("log:").small().weak());
                                                ui.label(RichText::new(log).small().monospace());
                                                if ui
                                                    .small_button("📋")
                                                    .on_hover_text("Copy the log's path")
                                                    .clicked()
                                                {
                                                    ui.ctx().copy_text(log.clone());
                                                }
                                            });
                                        }
                                    }
                                });
                                ui.end_row();
                            }
                            let unseen = board.unseen();
                            if running && unseen > 0 {
                                ui.label(RichText::new(format!("{unseen} more")).weak());
                                ui.label(
                                    RichText::new(if board.executor.starts_with("this machine") {
                                        "waiting for a free place on this machine"
                                    } else {
                                        "not submitted yet"
                                    })
                                    .weak(),
                                );
                                ui.end_row();
                            }
                        });
                });
            ui.label(
                RichText::new(format!("Each run's files and log: {}", board.dir))
                    .small()
                    .weak(),
            );
        });
}

fn progress_ui(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    dir: &Path,
    results: Option<&Loadable<Arc<StudyResults>>>,
    live: Option<&crate::study::Live>,
    running: bool,
) {
    let counts = results
        .and_then(Loadable::ready)
        .map(|r| study::progress(r));
    ui.horizontal(|ui| {
        if app.studies.is_stopping(dir) {
            ui.spinner();
            let slurm = matches!(app.studies.executor(dir), Some(ExecutorConfig::Slurm(_)));
            ui.label(if slurm {
                "Stopping… (cancelling the cluster tasks)"
            } else {
                "Stopping…"
            })
            .on_hover_text(
                "The study stops its runs before it ends; if it has not ended 90 s after \
                 Stop, it is killed.",
            );
        } else if running && app.studies.is_running(dir) {
            if ui
                .button("⏹ Stop the study")
                .on_hover_text(
                    if matches!(app.studies.executor(dir), Some(ExecutorConfig::Slurm(_))) {
                        "Cancels the study's tasks on the cluster. Finished runs are kept; \
                         running the study again resumes it"
                    } else {
                        "Finished runs are kept; running the study again resumes it"
                    },
                )
                .clicked()
            {
                app.commands.push(Command::CancelStudy(dir.to_path_buf()));
            }
        } else if !running
            && let Some(Loadable::Ready(r)) = results
            && !r.missing().is_empty()
            && ui
                .button("▶ Resume")
                .on_hover_text("Run the missing runs; finished ones are reused")
                .clicked()
        {
            let (file, _) = study::paths(
                dir.parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new(".")),
                &file_name(dir),
            );
            // As it was started: on Slurm when its file has Slurm settings,
            // else on this machine as the new-study form says.
            let executor = study::executor_for(&r.manifest.spec, app.state.study_draft.run_on.jobs);
            match study::spec_toml(&r.manifest.spec) {
                Ok(text) => {
                    app.commands
                        .push(Command::StartStudy(file, text, dir.to_path_buf(), executor))
                }
                Err(e) => app.commands.push(Command::Notify(e, true)),
            }
        }
    });
    let Some((done, total)) = counts else {
        if running {
            ui.add(egui::ProgressBar::new(0.0).animate(true).text("starting…"));
        }
        return;
    };
    if !running && done == total {
        return;
    }
    let within = if running {
        live.and_then(|l| l.run_fraction).unwrap_or(0.0)
    } else {
        0.0
    };
    let fraction = ((done as f64 + within) / total.max(1) as f64).clamp(0.0, 1.0);
    let mut text = format!("{done} of {total} runs finished");
    if let Some(started) = app.studies.started(dir) {
        let elapsed = crate::project::now() - started;
        text.push_str(&format!(
            " · {} so far",
            crate::jobs::format_duration(elapsed)
        ));
        let missing = results.and_then(Loadable::ready).map(|r| r.missing());
        let board = live.map(|l| &l.tasks).filter(|b| b.active());
        if let Some(b) = board {
            // Runs overlap: what is where says more than a time left.
            let (on, waiting, _, failed) = b.counts();
            text.push_str(&format!(" · {on} running, {waiting} waiting"));
            if failed > 0 {
                text.push_str(&format!(", {failed} failed"));
            }
        } else if let (Some(l), Some(m)) = (live, missing) {
            match l.clock.left(&m, crate::project::now()) {
                Some(left) => text.push_str(&format!(
                    " · about {} left",
                    crate::jobs::format_duration(left)
                )),
                None => text.push_str(" · time left known after the first run"),
            }
        }
    }
    if let Some(step) = live
        .filter(|l| !l.tasks.active())
        .and_then(|l| l.lines.iter().rev().find(|x| x.starts_with("study:")))
    {
        text.push_str(&format!(" · {}", step.trim_start_matches("study:").trim()));
    }
    ui.add(
        egui::ProgressBar::new(fraction as f32)
            .text(text)
            .animate(running),
    );
}

fn results_ui(ui: &mut egui::Ui, app: &mut LetheApp, dir: &Path, r: &StudyResults) {
    let table = r.table();
    let model = study::table_model(&table);
    ui.add_space(6.0);
    ui.label(RichText::new(&table.title).strong());
    let order =
        crate::widgets::table::table_ui(ui, "study-table", &model, &mut app.state.study_table);
    for n in &table.notes {
        ui.label(RichText::new(n).small().weak());
    }
    ui.add_space(6.0);
    exports_ui(ui, app, dir, r, &model, &order);
    ui.add_space(8.0);
    egui::CollapsingHeader::new(RichText::new("Gaps to retrain as a heatmap").strong())
        .id_salt("study-gaps")
        .default_open(true)
        .show(ui, |ui| {
            ui.label(
                RichText::new(
                    "Each cell: the method's mean minus retraining's, coloured per column \
                     (columns have different units); the number is the gap. Green outline: \
                     the best method in the column.",
                )
                .weak(),
            );
            crate::widgets::gap_heatmap::gap_heatmap(ui, &model, &order);
        });
    ui.add_space(8.0);
    egui::CollapsingHeader::new(format!("Runs ({})", r.runs.len()))
        .id_salt("study-runs")
        .show(ui, |ui| {
            let tag = format!("{}{}", super::results::STUDY_PREFIX, dir.display());
            let open = |path: PathBuf| View::Artifact {
                run: tag.clone(),
                path,
            };
            egui::Grid::new("study-runs-grid")
                .striped(true)
                .show(ui, |ui| {
                    ui.strong("row");
                    ui.strong("seed");
                    ui.strong("time");
                    ui.strong("model");
                    ui.strong("results");
                    ui.end_row();
                    for run in &r.runs {
                        ui.label(&run.row);
                        ui.label(run.seed.to_string());
                        ui.label(crate::jobs::format_duration(run.seconds));
                        let folder =
                            dir.join(lethe_engine::study::results::run_folder(&run.row, run.seed));
                        let model = if run.model.is_absolute() {
                            run.model.clone()
                        } else {
                            folder.join(&run.model)
                        };
                        if ui
                            .link(file_name(&model))
                            .on_hover_text(model.display().to_string())
                            .clicked()
                        {
                            app.commands.push(Command::Show(View::Checkpoint(model)));
                        }
                        ui.horizontal(|ui| {
                            let eval = folder.join(&run.evaluation);
                            if ui.link("evaluation").clicked() {
                                app.commands.push(Command::Show(open(eval.clone())));
                            }
                            let alignment = eval.with_file_name("alignment.safetensors");
                            if alignment.is_file()
                                && ui
                                    .link("AM / AGM heatmaps")
                                    .on_hover_text("Alignment Matrix before and after, and the gap")
                                    .clicked()
                            {
                                app.commands.push(Command::Show(open(alignment)));
                            }
                            for a in &run.attacks {
                                let scores = folder
                                    .join(&a.report)
                                    .with_file_name("scores_forget.safetensors");
                                if ui
                                    .link(format!("{}: ROC, scores", a.name))
                                    .on_hover_text(
                                        "ROC curves (linear and log-log), score histograms, \
                                         the samples most at risk",
                                    )
                                    .clicked()
                                {
                                    app.commands.push(Command::Show(open(scores)));
                                }
                            }
                        });
                        ui.end_row();
                    }
                });
        });
}

fn exports_ui(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    dir: &Path,
    r: &StudyResults,
    model: &crate::widgets::table::TableModel,
    order: &[usize],
) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Export:");
        let out = dir.join("exports");
        let workspace = dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let key = dir.display().to_string();
        let busy = matches!(app.exports.get(&key), Some(Loadable::Loading));
        for (format, label, help) in [
            (
                Format::Pdf,
                "Report (PDF)",
                "The research report: setup, table, run times, ROC curves",
            ),
            (
                Format::Html,
                "Report (HTML)",
                "The research report as one self-contained HTML file",
            ),
            (
                Format::Tex,
                "LaTeX table",
                "The table as the papers print it (booktabs, best gaps bold)",
            ),
            (Format::Csv, "CSV", "Every number of the table"),
            (Format::Json, "JSON", "The study and its table, structured"),
        ] {
            if ui
                .add_enabled(!busy, egui::Button::new(label))
                .on_hover_text(format!("{help}; written to exports/ in the study folder"))
                .clicked()
            {
                let stamp = crate::project::timestamp(crate::project::now());
                let job = crate::export::ReportJob {
                    sources: lethe_engine::report::DeletionSources {
                        run: dir.to_path_buf(),
                        ..Default::default()
                    },
                    pending_attacks: Vec::new(),
                    format,
                    out: crate::export::unique_path(
                        &out,
                        &format!("study-{stamp}"),
                        format.extension(),
                    ),
                    workspace: workspace.clone(),
                    now: crate::project::now() as i64,
                };
                app.exports.insert(key.clone(), Loadable::Loading);
                app.tasks.write_report(key.clone(), job);
            }
        }
        if ui
            .button("Text")
            .on_hover_text("The table as aligned text (as `lethe study show` prints it)")
            .clicked()
        {
            let text = r.table().to_text();
            let path = crate::export::unique_path(
                &out,
                &format!("table-{}", crate::project::timestamp(crate::project::now())),
                "txt",
            );
            let out = out.clone();
            app.tasks.export(move || {
                std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
                lethe_engine::jobs::atomic::write_atomic(&path, text.as_bytes(), false)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(path)
            });
        }
        if busy {
            ui.spinner();
        }
    });
    if let Some(state) = app.exports.get(&dir.display().to_string()).cloned() {
        match state {
            Loadable::Ready(w) => {
                let path = w.path;
                ui.horizontal(|ui| {
                    ui.label("Written:");
                    ui.monospace(path.display().to_string());
                    if ui.small_button("📋 Copy path").clicked() {
                        ui.ctx().copy_text(path.display().to_string());
                    }
                });
            }
            Loadable::Failed(e) => {
                ui.colored_label(RED, format!("The export failed: {e}"));
            }
            Loadable::Loading => {}
        }
    }
    ui.horizontal(|ui| {
        if ui
            .button("Save the table as shown (CSV)…")
            .on_hover_text("In the current sort order, with mean, std and gap per column")
            .clicked()
        {
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: format!("{}-table.csv", file_name(dir)),
                    bytes: Arc::new(model.to_csv(order).into_bytes()),
                }));
        }
    });
}

fn log_ui(ui: &mut egui::Ui, live: Option<&crate::study::Live>) {
    let lines: &[String] = live.map_or(&[], |l| &l.lines);
    egui::CollapsingHeader::new(format!("Log ({} lines)", lines.len()))
        .id_salt("study-log")
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("study-log-scroll")
                .max_height(260.0)
                .stick_to_bottom(true)
                .show(ui, |ui| {
                    // Readable at the body size: the study's steps stand out
                    // by weight, the workers' lines are not greyed away.
                    for l in lines {
                        let text = RichText::new(l).monospace();
                        let text = if l.contains("FAILED") || l.contains("Error") {
                            text.color(RED)
                        } else if l.starts_with("study:") {
                            text.strong()
                        } else {
                            text.color(ui.visuals().text_color())
                        };
                        ui.label(text);
                    }
                });
        });
}
