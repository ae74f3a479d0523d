//! The deletion request, in five numbered steps a person without ML training
//! can follow: the model, its training data, what to forget, how to forget it,
//! and where to run it. Each step says what is still missing.

use super::file_name;
use crate::app::{Command, LetheApp};
use crate::catalog::is_test_plugin;
use crate::form::{FormValues, RUN_SEED, form_ui_without};
use crate::jobs::JobSpec;
use crate::state::{ForgetMode, View};
use crate::tasks::{ForgetRequest, Loadable, PickTarget};
use egui::{Color32, RichText};
use std::path::PathBuf;

const RED: Color32 = Color32::from_rgb(220, 60, 60);
const GREEN: Color32 = Color32::from_rgb(60, 170, 80);

fn step(ui: &mut egui::Ui, n: u32, title: &str, done: bool, add: impl FnOnce(&mut egui::Ui)) {
    egui::Frame::group(ui.style())
        .inner_margin(12.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                let badge = if done {
                    RichText::new(format!(" ✔ {n} ")).color(GREEN).strong()
                } else {
                    RichText::new(format!(" {n} ")).strong()
                };
                ui.label(badge.size(18.0));
                ui.label(RichText::new(title).size(18.0).strong());
            });
            ui.add_space(4.0);
            add(ui);
        });
    ui.add_space(8.0);
}

/// The deletion view.
pub fn show(ui: &mut egui::Ui, app: &mut LetheApp) {
    if app.project.is_none() {
        return;
    }
    let seed = app.state.draft.seed;
    if let Some(c) = app.state.draft.checkpoint.clone() {
        app.ensure_checkpoint(&c);
    }
    if let Some(d) = app.state.draft.data.clone() {
        app.ensure_dataset(&d, seed);
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("New deletion request");
        ui.label(
            "Lethe makes a new copy of the model that no longer carries what it learnt from the \
             samples you choose. The original file is never changed.",
        );
        ui.add_space(8.0);
        model_step(ui, app);
        data_step(ui, app);
        forget_step(ui, app);
        method_step(ui, app);
        run_step(ui, app);
    });
}

fn model_step(ui: &mut egui::Ui, app: &mut LetheApp) {
    // Ticked once the file has been read and is usable, not merely named.
    let done = app
        .state
        .draft
        .checkpoint
        .as_ref()
        .is_some_and(|c| matches!(app.checkpoints.get(c), Some(Loadable::Ready(_))));
    step(ui, 1, "The trained model", done, |ui| {
        ui.label("Which model file should forget? (safetensors, PyTorch .pt/.pth or TorchScript)");
        let Some(p) = &app.project else { return };
        let list = p.file.checkpoints.clone();
        let selected = app.state.draft.checkpoint.clone();
        egui::ComboBox::from_id_salt("ckpt")
            .width(420.0)
            .selected_text(
                selected
                    .as_deref()
                    .map(file_name)
                    .unwrap_or_else(|| "Choose a model…".into()),
            )
            .show_ui(ui, |ui| {
                for c in &list {
                    ui.selectable_value(
                        &mut app.state.draft.checkpoint,
                        Some(c.clone()),
                        file_name(c),
                    )
                    .on_hover_text(c.display().to_string());
                }
            });
        ui.horizontal(|ui| {
            ui.label("or add one:");
        });
        let (commit, browse) = crate::widgets::path_field(
            ui,
            &mut app.inputs.checkpoint,
            "path to a checkpoint file, then Enter",
        );
        if browse {
            app.commands.push(Command::Pick(PickTarget::Checkpoint));
        }
        if commit && !app.inputs.checkpoint.trim().is_empty() {
            app.commands
                .push(Command::AddCheckpoint(app.inputs.checkpoint.trim().into()));
        }
        if let Some(c) = &app.state.draft.checkpoint {
            checkpoint_summary(ui, app, c);
        }
    });
}

/// One line about a checkpoint, with a link to its details.
fn checkpoint_summary(ui: &mut egui::Ui, app: &LetheApp, path: &PathBuf) {
    match app.checkpoints.get(path) {
        Some(Loadable::Ready(s)) => {
            let arch = s
                .architecture
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_else(|| {
                    format!("architecture not recognised ({})", s.architecture_note)
                });
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(GREEN, "✔");
                ui.label(format!(
                    "{arch} · {} parameters · {} · SHA-256 {}…",
                    group_digits(s.parameter_count),
                    s.format,
                    &s.sha256[..12.min(s.sha256.len())]
                ))
                .on_hover_text(format!("SHA-256 {}", s.sha256));
            });
        }
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, format!("This file cannot be used: {e}"));
        }
        _ => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the model…");
            });
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn group_digits(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn data_step(ui: &mut egui::Ui, app: &mut LetheApp) {
    let done = app.state.draft.data.as_ref().is_some_and(|d| {
        matches!(
            app.datasets.get(&(d.clone(), app.state.draft.seed)),
            Some(Loadable::Ready(_))
        )
    });
    step(ui, 2, "Its training data", done, |ui| {
        ui.label("The data the model was trained on (the samples to forget are chosen from it).");
        let Some(p) = &app.project else { return };
        let list = p.file.datasets.clone();
        let before = app.state.draft.data.clone();
        egui::ComboBox::from_id_salt("data")
            .width(420.0)
            .selected_text(
                before
                    .as_deref()
                    .map(file_name)
                    .unwrap_or_else(|| "Choose a dataset…".into()),
            )
            .show_ui(ui, |ui| {
                for d in &list {
                    ui.selectable_value(&mut app.state.draft.data, Some(d.clone()), file_name(d))
                        .on_hover_text(d.display().to_string());
                }
            });
        if app.state.draft.data != before {
            // A forget set indexes one dataset; it cannot carry over.
            app.state.draft.forget = None;
            app.forget_preview = None;
        }
        ui.label("or add one:");
        let (commit, browse) = crate::widgets::path_field(
            ui,
            &mut app.inputs.dataset,
            "path to a dataset file or folder, then Enter",
        );
        if browse {
            app.commands.push(Command::Pick(PickTarget::DatasetFile));
        }
        if commit && !app.inputs.dataset.trim().is_empty() {
            app.commands
                .push(Command::AddDataset(app.inputs.dataset.trim().into()));
        }
        if let Some(d) = app.state.draft.data.clone() {
            match app.datasets.get(&(d.clone(), app.state.draft.seed)) {
                Some(Loadable::Ready(info)) => {
                    let s = &info.summary;
                    let [c, h, w] = s.shape;
                    ui.horizontal_wrapped(|ui| {
                        ui.colored_label(GREEN, "✔");
                        ui.label(format!(
                            "{} · {} images of {w}×{h}{} · {} classes · {} training samples ({})",
                            s.format,
                            group_digits(s.len as i64),
                            if c == 3 { " colour" } else { " grey" },
                            s.classes.len(),
                            group_digits(info.split.train.len() as i64),
                            if info.split_recorded {
                                "split recorded in the file"
                            } else {
                                "split drawn from the seed in step 5"
                            }
                        ));
                    });
                    crate::widgets::thumb_grid(
                        ui,
                        &mut app.textures,
                        &format!("ex:{}", d.display()),
                        &info.examples,
                        40.0,
                    );
                }
                Some(Loadable::Failed(e)) => {
                    ui.colored_label(RED, format!("This dataset cannot be read: {e}"));
                }
                _ => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Reading the data…");
                    });
                }
            }
        }
    });
}

fn forget_step(ui: &mut egui::Ui, app: &mut LetheApp) {
    let done = app.state.draft.forget.is_some();
    step(ui, 3, "What to forget", done, |ui| {
        let Some(data) = app.state.draft.data.clone() else {
            ui.weak("Choose the training data first (step 2).");
            return;
        };
        let Some(p) = &app.project else { return };
        let sets: Vec<_> = p
            .file
            .forget_sets
            .iter()
            .filter(|f| same_path(&f.data, &data))
            .cloned()
            .collect();
        if !sets.is_empty() {
            let sel = app.state.draft.forget.clone();
            let label = sel
                .as_ref()
                .and_then(|s| sets.iter().find(|f| &f.path == s))
                .map(|f| format!("{} ({} samples)", f.name, f.count))
                .unwrap_or_else(|| "Choose a saved forget set…".into());
            egui::ComboBox::from_id_salt("forget")
                .width(420.0)
                .selected_text(label)
                .show_ui(ui, |ui| {
                    for f in &sets {
                        ui.selectable_value(
                            &mut app.state.draft.forget,
                            Some(f.path.clone()),
                            format!("{} ({} samples)", f.name, f.count),
                        )
                        .on_hover_text(&f.origin);
                    }
                });
            if let Some(f) = sel.and_then(|s| sets.into_iter().find(|f| f.path == s)) {
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(GREEN, "✔");
                    ui.label(format!(
                        "{} training samples will be forgotten · {}",
                        f.count, f.origin
                    ));
                    if ui.link("show them").clicked() {
                        app.commands
                            .push(Command::Show(View::ForgetSet(f.path.clone())));
                    }
                });
                too_small_warning(ui, app, &data, f.count);
            }
        } else {
            ui.label("No forget set for this dataset yet: make one below.");
            // Open once; the user may close it again.
            if !ui.ctx().data(|d| {
                d.get_temp::<bool>(egui::Id::unique("forget-form-opened"))
                    .unwrap_or(false)
            }) {
                app.state.draft.forget_form_open = true;
                ui.ctx()
                    .data_mut(|d| d.insert_temp(egui::Id::unique("forget-form-opened"), true));
            }
        }
        ui.add_space(4.0);
        let force = if app.state.draft.forget_form_open {
            Some(true)
        } else if app.close_forget_form {
            Some(false)
        } else {
            None
        };
        app.state.draft.forget_form_open = false;
        app.close_forget_form = false;
        egui::CollapsingHeader::new("Make a new forget set")
            .id_salt("new-forget-set")
            .open(force)
            .show(ui, |ui| forget_form(ui, app, &data));
    });
}

/// Says so when a forget set is too small for any verdict but INCONCLUSIVE.
fn too_small_warning(ui: &mut egui::Ui, app: &LetheApp, data: &std::path::Path, count: usize) {
    // The unseen samples attacks compare with: the test split when it is known.
    let unseen = app
        .datasets
        .get(&(data.to_path_buf(), app.state.draft.seed))
        .and_then(Loadable::ready)
        .map_or(1000, |d| d.split.test.len());
    let needed = lethe_engine::report::verdict::forget_samples_needed(unseen);
    if count < needed {
        ui.colored_label(
            Color32::from_rgb(214, 150, 20),
            format!(
                "⚠ {count} samples are too few to test this deletion: membership attacks need at \
                 least {needed} forgotten samples to detect a typical leak (AUC {:.1} against {unseen} \
                 unseen samples), so the verdict will be INCONCLUSIVE. The deletion itself still \
                 runs; add the person's other samples if there are any.",
                lethe_engine::report::verdict::TYPICAL_LEAK_AUC
            ),
        );
    }
}

fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

fn forget_form(ui: &mut egui::Ui, app: &mut LetheApp, data: &std::path::Path) {
    let fd = &mut app.state.forget_draft;
    ui.horizontal_wrapped(|ui| {
        for mode in ForgetMode::ALL {
            ui.radio_value(&mut fd.mode, mode, mode.label());
        }
    });
    ui.add_space(4.0);
    let seed = app.state.draft.seed;
    let info = app
        .datasets
        .get(&(data.to_path_buf(), seed))
        .and_then(Loadable::ready)
        .cloned();
    let mut browse = None;
    match fd.mode {
        ForgetMode::Folder => {
            ui.label(
                "A folder with the person's pictures (PNG or JPEG). Each picture is matched to the \
                 training data by its exact content; pictures that are not in the training data are listed.",
            );
            let (_, b) = crate::widgets::path_field(ui, &mut fd.folder, "folder of images");
            if b {
                browse = Some(PickTarget::ForgetFolder);
            }
        }
        ForgetMode::ListFile => {
            ui.label("A .txt, .csv or .json file listing training-sample numbers, one per line.");
            let (_, b) = crate::widgets::path_field(ui, &mut fd.list_path, "list file");
            if b {
                browse = Some(PickTarget::ForgetList);
            }
        }
        ForgetMode::Class => {
            let classes: Vec<(String, usize)> = info
                .as_ref()
                .map(|i| {
                    i.summary
                        .classes
                        .iter()
                        .map(|(n, _)| n.clone())
                        .zip(i.train_class_counts.iter().copied())
                        .collect()
                })
                .unwrap_or_default();
            let name = classes
                .get(fd.class as usize)
                .map(|(n, c)| format!("{} ({c} training samples)", n))
                .unwrap_or_else(|| fd.class.to_string());
            egui::ComboBox::from_label("class")
                .selected_text(name)
                .show_ui(ui, |ui| {
                    for (i, (n, c)) in classes.iter().enumerate() {
                        ui.selectable_value(&mut fd.class, i as i64, format!("{n} ({c})"));
                    }
                });
        }
        ForgetMode::Fraction => {
            ui.horizontal(|ui| {
                ui.add(
                    egui::Slider::new(&mut fd.fraction, 0.001..=0.5)
                        .logarithmic(true)
                        .text("share of the training data")
                        .custom_formatter(|v, _| format!("{:.1} %", v * 100.0))
                        .custom_parser(|s| {
                            s.trim()
                                .trim_end_matches('%')
                                .trim()
                                .parse::<f64>()
                                .ok()
                                .map(|v| v / 100.0)
                        }),
                );
                ui.add(egui::DragValue::new(&mut fd.fraction_seed).prefix("seed "))
                    .on_hover_text("The same seed always picks the same samples");
            });
        }
    }
    if let Some(t) = browse {
        app.commands.push(Command::Pick(t));
    }
    let fd = app.state.forget_draft.clone();
    let req = ForgetRequest {
        data: data.to_path_buf(),
        seed,
        mode: fd.mode,
        list_path: PathBuf::from(fd.list_path.trim()),
        class: fd.class,
        fraction: fd.fraction,
        fraction_seed: fd.fraction_seed,
        folder: PathBuf::from(fd.folder.trim()),
    };
    let path_ready = match fd.mode {
        ForgetMode::Folder => req.folder.is_dir(),
        ForgetMode::ListFile => req.list_path.is_file(),
        _ => true,
    };
    if !path_ready {
        let what = if fd.mode == ForgetMode::Folder {
            "folder"
        } else {
            "file"
        };
        let typed = if fd.mode == ForgetMode::Folder {
            &fd.folder
        } else {
            &fd.list_path
        };
        if !typed.trim().is_empty() {
            ui.colored_label(RED, format!("No such {what}: {}", typed.trim()));
        }
        return;
    }
    app.request_forget_preview(req.clone());
    ui.add_space(6.0);
    let Some((preq, state)) = app.forget_preview.clone() else {
        return;
    };
    let stale = preq != req;
    match state {
        Loadable::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Finding the samples…");
            });
        }
        Loadable::Failed(e) => {
            ui.colored_label(RED, e);
        }
        Loadable::Ready(pv) => {
            if stale {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.weak("updating…");
                });
            }
            let mut can_save = !pv.indices.is_empty();
            if let Some(f) = &pv.folder {
                ui.horizontal(|ui| {
                    ui.colored_label(GREEN, format!("✔ {} picture(s) matched", f.matched.len()));
                    ui.label(format!("({} training samples)", pv.indices.len()));
                    let color = if f.unmatched.is_empty() {
                        ui.visuals().weak_text_color()
                    } else {
                        RED
                    };
                    ui.colored_label(
                        color,
                        format!(
                            "✖ {} picture(s) not in the training data",
                            f.unmatched.len()
                        ),
                    );
                });
                if !f.unmatched.is_empty() {
                    ui.label(
                        "These pictures match no training sample, so the model never saw them \
                         (or they were changed: resized, re-encoded, cropped):",
                    );
                    crate::widgets::thumb_grid(
                        ui,
                        &mut app.textures,
                        &format!("unmatched:{}", req.folder.display()),
                        &f.unmatched_thumbs,
                        56.0,
                    );
                    ui.checkbox(
                        &mut app.state.forget_draft.accept_unmatched,
                        format!(
                            "I understand: forget the {} matched picture(s); the list notes the {} unmatched file(s)",
                            f.matched.len(),
                            f.unmatched.len()
                        ),
                    );
                    can_save &= app.state.forget_draft.accept_unmatched;
                }
            }
            if pv.indices.is_empty() {
                ui.colored_label(RED, &pv.origin);
            } else {
                let share = pv.indices.len() as f64 / pv.train_len.max(1) as f64 * 100.0;
                ui.label(
                    RichText::new(format!(
                        "{} training samples will be forgotten ({share:.1} % of {})",
                        pv.indices.len(),
                        pv.train_len
                    ))
                    .strong(),
                );
                let classes: Vec<String> = pv
                    .per_class
                    .iter()
                    .map(|(n, c)| format!("{n}: {c}"))
                    .collect();
                ui.label(RichText::new(format!("by class — {}", classes.join(", "))).weak());
                let shown = pv.thumbs.len();
                ui.label(if shown < pv.indices.len() {
                    format!("The first {shown} of them:")
                } else {
                    "All of them:".to_string()
                });
                crate::widgets::thumb_grid(
                    ui,
                    &mut app.textures,
                    &format!("fs:{}", req.data.display()),
                    &pv.thumbs,
                    40.0,
                );
            }
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                let name = &mut app.state.forget_draft.name;
                if name.is_empty() {
                    *name = suggested_name(&fd, pv.indices.len());
                }
                ui.label("Name:");
                ui.add(egui::TextEdit::singleline(name).desired_width(260.0));
                let ok = can_save && !stale && !name.trim().is_empty();
                let r = ui.add_enabled(
                    ok,
                    egui::Button::new(RichText::new("Save this forget set").strong()),
                );
                if r.clicked() {
                    app.commands
                        .push(Command::SaveForgetSet(name.trim().to_string()));
                }
            });
        }
    }
}

fn suggested_name(fd: &crate::state::ForgetDraft, n: usize) -> String {
    match fd.mode {
        ForgetMode::Folder => format!(
            "Pictures in {}",
            PathBuf::from(fd.folder.trim())
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        ForgetMode::ListFile => format!(
            "List {}",
            PathBuf::from(fd.list_path.trim())
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        ForgetMode::Class => format!("Class {} ({n})", fd.class),
        ForgetMode::Fraction => format!(
            "Random {:.1} % (seed {})",
            fd.fraction * 100.0,
            fd.fraction_seed
        ),
    }
}

/// The method combo and its form; returns the chosen plugin id.
pub fn method_step(ui: &mut egui::Ui, app: &mut LetheApp) {
    let done = app.state.draft.method.is_some();
    step(ui, 4, "How to forget (method)", done, |ui| {
        let cat = match &app.catalog {
            Loadable::Ready(c) => c.clone(),
            Loadable::Loading => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Looking for method plugins…");
                });
                return;
            }
            Loadable::Failed(e) => {
                ui.colored_label(RED, e);
                return;
            }
        };
        if app
            .state
            .draft
            .method
            .as_ref()
            .is_none_or(|m| cat.get(m).is_none())
            && let Some(d) = cat.default_method()
        {
            app.state.draft.method = Some(d.info.id.clone());
        }
        let mut methods: Vec<_> = cat
            .of_kind("method")
            .map(|e| (e.clone(), method_refusal(app, &e.info)))
            .collect();
        // Methods that fit come first, test plugins last.
        methods.sort_by_key(|(e, why)| (is_test_plugin(&e.info.id), why.is_some()));
        if methods.is_empty() {
            ui.colored_label(RED, "No method plugins were found.");
            ui.label(format!(
                "Searched: {}",
                cat.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let current = app.state.draft.method.clone().unwrap_or_default();
        let current_name = cat
            .get(&current)
            .map(|e| e.info.name.clone())
            .unwrap_or_default();
        egui::ComboBox::from_id_salt("method")
            .width(420.0)
            .selected_text(current_name)
            .show_ui(ui, |ui| {
                for (e, why) in &methods {
                    let mut label = if is_test_plugin(&e.info.id) {
                        format!("{} (test plugin)", e.info.name)
                    } else {
                        e.info.name.clone()
                    };
                    match why {
                        None => {
                            ui.selectable_value(
                                &mut app.state.draft.method,
                                Some(e.info.id.clone()),
                                label,
                            )
                            .on_hover_text(&e.info.description);
                        }
                        Some(why) => {
                            // Greyed out with the first clause of the reason; the
                            // whole reason on hover.
                            let short = why.split(';').next().unwrap_or(why);
                            label.push_str(&format!(" — {short}"));
                            ui.add_enabled(
                                false,
                                egui::Button::selectable(
                                    app.state.draft.method.as_deref() == Some(&e.info.id),
                                    label,
                                ),
                            )
                            .on_disabled_hover_text(format!("It {why}."));
                        }
                    }
                }
            });
        if let Some((e, Some(why))) = methods.iter().find(|(e, _)| e.info.id == current) {
            ui.colored_label(
                RED,
                format!(
                    "{} does not apply here: it {why}. Choose another method, or another model \
                     or forget set.",
                    e.info.name
                ),
            );
        }
        if !cat.refused.is_empty() {
            let r = ui.link(
                RichText::new(format!(
                    "{} plugin librar{} could not be loaded",
                    cat.refused.len(),
                    if cat.refused.len() == 1 { "y" } else { "ies" }
                ))
                .color(Color32::from_rgb(200, 150, 40)),
            );
            let r = r.on_hover_text(
                cat.refused
                    .iter()
                    .map(|f| format!("{}: {}", file_name(&f.path), f.reason))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            );
            if r.clicked() {
                app.commands.push(Command::Show(View::Plugins));
            }
        }
        let Some(entry) = cat.get(&current).cloned() else {
            return;
        };
        ui.add_space(4.0);
        egui::CollapsingHeader::new("What this method does")
            .default_open(false)
            .show(ui, |ui| {
                ui.label(&entry.info.description);
                if !entry.info.citation.is_empty() {
                    ui.label(RichText::new(&entry.info.citation).italics().weak());
                }
                ui.label(
                    RichText::new(format!(
                        "{} {} · {}",
                        entry.info.id,
                        entry.info.version,
                        entry.library.display()
                    ))
                    .small()
                    .weak(),
                );
            });
        ui.add_space(4.0);
        if entry.info.schema.params.is_empty() {
            ui.weak("This method has no settings.");
            return;
        }
        ui.label("Settings (the defaults are the method's recommendation; hover a name for help):");
        let checkpoint = app.state.draft.checkpoint.clone();
        model_form_ui(ui, app, checkpoint.as_deref(), &entry);
        if entry.info.schema.get(RUN_SEED).is_some() {
            ui.label(
                RichText::new("Its seed is the request's Seed (step 5).")
                    .small()
                    .weak(),
            );
        }
        // Path parameters get a file dialog too.
        for p in &entry.info.schema.params {
            if let lethe_plugin_api::schema::ParamKind::Path { directory, .. } = p.kind
                && ui
                    .small_button(format!("Browse for {}…", p.label))
                    .clicked()
            {
                app.commands.push(Command::Pick(PickTarget::Param {
                    plugin: entry.info.id.clone(),
                    key: p.key.clone(),
                    directory,
                }));
            }
        }
        if let Some(Err(problems)) = app
            .state
            .forms
            .get(&entry.info.id)
            .map(|v| v.validated(&entry.info.schema))
        {
            for p in problems {
                ui.colored_label(RED, p);
            }
        }
    });
}

/// Why a method cannot run on the chosen model and forget set (from what it
/// declares it applies to), or `None` when it can or when that is not known yet.
pub fn method_refusal(
    app: &LetheApp,
    info: &lethe_engine::worker::protocol::DescriptorInfo,
) -> Option<String> {
    let d = &app.state.draft;
    refusal_for(app, info, d.checkpoint.as_ref(), d.forget.as_ref())
}

/// [`method_refusal`] for a given model and forget set (a study's).
pub fn refusal_for(
    app: &LetheApp,
    info: &lethe_engine::worker::protocol::DescriptorInfo,
    checkpoint: Option<&PathBuf>,
    forget: Option<&PathBuf>,
) -> Option<String> {
    let applies_to = info.schema.applies_to.as_ref()?;
    let model = checkpoint.and_then(|c| match app.checkpoints.get(c) {
        Some(Loadable::Ready(s)) => s.architecture.as_ref().map(|a| a.head.model_facts()),
        _ => None,
    });
    let whole = forget.and_then(|f| {
        app.project
            .as_ref()?
            .file
            .forget_sets
            .iter()
            .find(|e| &e.path == f)?
            .whole_classes
    });
    applies_to.refusal(model, whole)
}

/// A recorded training recipe in words: `30 epochs · batch 64 · lr 0.05 · SGD
/// (momentum 0.9) · cosine schedule · weight decay 0`; `None` when it records
/// none of these.
pub fn recipe_text(recipe: &serde_json::Value) -> Option<String> {
    let num = |k: &str| recipe.get(k).and_then(serde_json::Value::as_f64);
    let mut parts = Vec::new();
    if let Some(e) = num("epochs") {
        parts.push(format!("{e} epochs"));
    }
    if let Some(b) = num("batch_size") {
        parts.push(format!("batch {b}"));
    }
    if let Some(lr) = num("lr") {
        parts.push(format!("lr {}", crate::form::format_float(lr)));
    }
    if let Some(o) = recipe.get("optimizer") {
        let kind = o.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let momentum = o.get("momentum").and_then(serde_json::Value::as_f64);
        parts.push(match (kind, momentum) {
            ("sgd", Some(m)) => format!("SGD (momentum {})", crate::form::format_float(m)),
            ("sgd", None) => "SGD".into(),
            ("adam", _) => "Adam".into(),
            (other, _) => other.to_string(),
        });
    }
    if let Some(kind) = recipe
        .get("schedule")
        .and_then(|s| s.get("kind"))
        .and_then(|k| k.as_str())
    {
        parts.push(format!("{kind} schedule"));
    }
    if let Some(wd) = num("weight_decay") {
        parts.push(format!("weight decay {}", crate::form::format_float(wd)));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// A method's form as it applies to the model at `checkpoint`: the run seed
/// (the request's) is not shown; with recipe "original", neither are the fields
/// the model's recorded training replaces, whose values are stated in words
/// under the form instead; for a classifier, neither are encoder-only settings.
pub fn model_form_ui(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    checkpoint: Option<&std::path::Path>,
    entry: &crate::catalog::PluginEntry,
) {
    // Borrowed beside the forms (another field), not cloned every frame.
    let summary = checkpoint.and_then(|c| match app.checkpoints.get(c) {
        Some(Loadable::Ready(s)) => Some(s),
        _ => None,
    });
    let values = app
        .state
        .forms
        .entry(entry.info.id.clone())
        .or_insert_with(|| FormValues::defaults(&entry.info.schema));
    let follows = matches!(
        values.values.get("recipe"),
        Some(crate::form::FormValue::Choice(c)) if c == "original"
    );
    let recorded = summary
        .filter(|_| follows)
        .and_then(|s| s.meta.as_ref().map(|m| m.training_recipe()));
    let mut hidden = vec![RUN_SEED];
    hidden.extend(recorded.as_ref().map(recorded_keys).unwrap_or_default());
    let classifier = summary
        .and_then(|s| s.architecture.as_ref())
        .is_some_and(|a| matches!(a.head, lethe_engine::models::HeadConfig::Classifier { .. }));
    if classifier {
        hidden.extend(
            entry
                .info
                .schema
                .params
                .iter()
                .filter(|p| p.group == ENCODER_GROUP)
                .map(|p| p.key.as_str()),
        );
    }
    form_ui_without(ui, &entry.info.schema, values, &hidden);
    if follows {
        match recorded.as_ref().and_then(recipe_text) {
            Some(text) => ui.label(
                RichText::new(format!(
                    "Recipe “original”: trains as the model was trained — {text}. The \
                     settings above fill only what the model does not record; the ones \
                     it records are not shown."
                ))
                .color(Color32::from_rgb(120, 170, 230)),
            ),
            None => ui.label(
                RichText::new(
                    "Recipe “original”: the model records no training settings, so the \
                     settings above are used.",
                )
                .weak(),
            ),
        };
    }
}

/// The form group of settings that act on encoders only (the kit's).
const ENCODER_GROUP: &str = "Encoders";

/// The form fields a recorded training recipe replaces (what a method with
/// recipe "original" takes from the model instead of its form).
pub fn recorded_keys(recipe: &serde_json::Value) -> Vec<&'static str> {
    let mut keys = Vec::new();
    for (recorded, field) in [
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("weight_decay", "weight_decay"),
    ] {
        if recipe.get(recorded).is_some() {
            keys.push(field);
        }
    }
    let optimizer = recipe
        .get("optimizer")
        .and_then(|o| o.get("kind"))
        .and_then(serde_json::Value::as_str);
    // SGD's recorded momentum replaces the form's; Adam uses none.
    let momentum = recipe
        .get("optimizer")
        .is_some_and(|o| o.get("momentum").is_some());
    if optimizer == Some("adam") || (optimizer == Some("sgd") && momentum) {
        keys.push("momentum");
    }
    if matches!(
        recipe
            .get("schedule")
            .and_then(|s| s.get("kind"))
            .and_then(serde_json::Value::as_str),
        Some("constant" | "cosine" | "warmup_cosine")
    ) {
        keys.push("schedule");
    }
    keys
}

/// What is missing before the job can start, or the job.
pub fn job_spec(app: &LetheApp) -> Result<JobSpec, Vec<String>> {
    let d = &app.state.draft;
    let mut missing = Vec::new();
    let checkpoint = d.checkpoint.clone();
    if checkpoint.is_none() {
        missing.push("choose the model (step 1)".to_string());
    } else if let Some(Loadable::Failed(_)) =
        checkpoint.as_ref().and_then(|c| app.checkpoints.get(c))
    {
        missing.push("the model file cannot be read (step 1)".into());
    }
    if d.data.is_none() {
        missing.push("choose the training data (step 2)".into());
    }
    let forget = d.forget.clone();
    let forget_entry = forget.as_ref().and_then(|f| {
        app.project
            .as_ref()
            .and_then(|p| p.file.forget_sets.iter().find(|e| &e.path == f).cloned())
    });
    if forget_entry.is_none() {
        missing.push("choose or save a forget set (step 3)".into());
    }
    let cat = app.catalog.ready();
    let entry = d.method.as_ref().and_then(|m| cat.and_then(|c| c.get(m)));
    let params = match entry {
        None => {
            missing.push("choose a method (step 4)".into());
            None
        }
        Some(e) => {
            if let Some(why) = method_refusal(app, &e.info) {
                missing.push(format!(
                    "{} does not apply here: it {why} (step 4)",
                    e.info.name
                ));
            }
            let values = app
                .state
                .forms
                .get(&e.info.id)
                .cloned()
                .unwrap_or_else(|| FormValues::defaults(&e.info.schema));
            match values.validated(&e.info.schema) {
                Ok(mut p) => {
                    // One Seed: the request's, also for the method's own generator.
                    if e.info.schema.get(RUN_SEED).is_some() {
                        p.insert(RUN_SEED.into(), serde_json::Value::from(d.seed));
                    }
                    Some(serde_json::Value::Object(p))
                }
                Err(problems) => {
                    missing.extend(problems.into_iter().map(|p| format!("{p} (step 4)")));
                    None
                }
            }
        }
    };
    match (checkpoint, d.data.clone(), forget_entry, entry, params) {
        (Some(checkpoint), Some(data), Some(f), Some(e), Some(params)) if missing.is_empty() => {
            Ok(JobSpec {
                kind: e.info.kind.clone(),
                plugin_id: e.info.id.clone(),
                plugin_name: e.info.name.clone(),
                library: e.library.clone(),
                params,
                checkpoint,
                data,
                forget: f.path.clone(),
                forget_label: format!("{} ({} samples)", f.name, f.count),
                device: d.device.clone(),
                seed: d.seed,
            })
        }
        _ => Err(missing),
    }
}

fn run_step(ui: &mut egui::Ui, app: &mut LetheApp) {
    let ready = job_spec(app).is_ok();
    step(ui, 5, "Run", ready, |ui| {
        ui.horizontal(|ui| {
            ui.label("Run on:");
            let devices = app.devices.clone();
            let current = devices
                .iter()
                .find(|d| d.id == app.state.draft.device)
                .map(|d| d.label.clone())
                .unwrap_or_else(|| app.state.draft.device.clone());
            egui::ComboBox::from_id_salt("device")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for d in &devices {
                        if ui
                            .selectable_value(&mut app.state.draft.device, d.id.clone(), &d.label)
                            .clicked()
                        {
                            app.state.draft.device_chosen = true;
                        }
                    }
                });
            ui.add_space(16.0);
            ui.label("Seed:");
            ui.add(egui::DragValue::new(&mut app.state.draft.seed))
                .on_hover_text(
                    "Fixes the shuffling (and the train/validation/test split of data that records none), \
                     so the same request gives the same result",
                );
        });
        ui.add_space(6.0);
        match job_spec(app) {
            Ok(spec) => {
                let device = app
                    .devices
                    .iter()
                    .find(|d| d.id == spec.device)
                    .map(|d| d.label.clone())
                    .unwrap_or_else(|| spec.device.clone());
                ui.label(format!(
                    "Forget {} from {} with {} on {}.",
                    spec.forget_label,
                    file_name(&spec.checkpoint),
                    spec.plugin_name,
                    device
                ));
                let b = ui.add(
                    egui::Button::new(RichText::new("▶  Start deletion").strong().size(16.0))
                        .min_size(egui::vec2(200.0, 36.0)),
                );
                if b.clicked() {
                    app.commands.push(Command::Queue(spec));
                }
            }
            Err(missing) => {
                ui.add_enabled(
                    false,
                    egui::Button::new(RichText::new("▶  Start deletion").size(16.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo classifier's recorded training (resources/demo/README.md: 30
    /// epochs of SGD) in words, as a recipe-following method shows it.
    #[test]
    fn the_recorded_recipe_reads_in_words() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../resources/demo/classifier.safetensors");
        let meta = lethe_engine::checkpoint::inspect(&demo)
            .unwrap()
            .meta
            .unwrap();
        assert_eq!(
            recipe_text(&meta.training_recipe()).unwrap(),
            "30 epochs · batch 64 · lr 0.05 · SGD (momentum 0.9) · cosine schedule · weight decay 0"
        );
        assert_eq!(recipe_text(&serde_json::json!({})), None);
        // Every one of those numbers replaces a field of the retrain form.
        assert_eq!(
            recorded_keys(&meta.training_recipe()),
            [
                "epochs",
                "batch_size",
                "lr",
                "weight_decay",
                "momentum",
                "schedule"
            ]
        );
        assert!(recorded_keys(&serde_json::json!({})).is_empty());
        // SGD without a recorded momentum keeps the form's.
        assert_eq!(
            recorded_keys(&serde_json::json!({"optimizer": {"kind": "sgd"}, "lr": 0.1})),
            ["lr"]
        );
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(-1234567), "-1,234,567");
    }
}
