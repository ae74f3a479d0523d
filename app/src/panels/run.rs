//! One run: progress with ETA, live curves, the log, cancel, what it wrote, and
//! (for a finished deletion) checking the new model with an attack plugin.

use super::status_color;
use crate::app::{Command, LetheApp};
use crate::artifacts::{self, curves_csv};
use crate::jobs::{JobRecord, JobStatus, format_duration};
use crate::state::View;
use egui::{Color32, RichText};
use std::sync::Arc;

/// The run view.
pub fn show(ui: &mut egui::Ui, app: &mut LetheApp, id: &str) {
    let Some(record) = app.project.as_ref().and_then(|p| p.run(id)).cloned() else {
        ui.label(format!("Run {id} is not in this project."));
        return;
    };
    let run_dir = app
        .project
        .as_ref()
        .map(|p| p.run_dir(id))
        .unwrap_or_default();
    let now = crate::project::now();
    egui::ScrollArea::vertical().id_salt("run").show(ui, |ui| {
        header(ui, app, &record, &run_dir);
        ui.add_space(8.0);
        progress(ui, app, &record, now);
        // The next steps stay where they are while the verdict below them
        // grows and shrinks with the evidence.
        if record.status == JobStatus::Succeeded && record.spec.kind == "method" {
            ui.add_space(4.0);
            next_steps(ui, app, &record, &run_dir);
            ui.add_space(4.0);
            super::per_sample::verify_section(ui, app, &record);
            ui.add_space(6.0);
            super::report::verdict_banner(ui, app, &record, &run_dir);
        }
        if let Some(problem) = record.status.problem() {
            ui.add_space(6.0);
            egui::Frame::group(ui.style())
                .fill(Color32::from_rgba_unmultiplied(220, 60, 60, 24))
                .show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.colored_label(
                        Color32::from_rgb(220, 60, 60),
                        RichText::new("The job did not finish").strong(),
                    );
                    let plain = plain_problem(&record, &problem);
                    ui.add(egui::Label::new(&plain).wrap());
                    if plain != problem {
                        egui::CollapsingHeader::new("Details")
                            .id_salt("problem-details")
                            .show(ui, |ui| {
                                ui.add(
                                    egui::Label::new(RichText::new(&problem).monospace().small())
                                        .wrap(),
                                );
                            });
                    }
                    if !record.stderr_tail.trim().is_empty() {
                        egui::CollapsingHeader::new("Worker output (end)")
                            .id_salt("stderr")
                            .show(ui, |ui| {
                                ui.add(
                                    egui::Label::new(
                                        RichText::new(record.stderr_tail.trim())
                                            .monospace()
                                            .small(),
                                    )
                                    .wrap(),
                                );
                            });
                    }
                    ui.label(
                        RichText::new(
                            "Lethe itself is unaffected: each job runs in its own process.",
                        )
                        .weak(),
                    );
                });
        }
        ui.add_space(8.0);
        ui.label(RichText::new("Curves").strong());
        let x_label = if record.latest.contains_key("epoch") {
            "epoch"
        } else {
            "step"
        };
        crate::widgets::plots::curves_plot(ui, &format!("curves-{id}"), &record.curves, x_label);
        if !record.latest.is_empty() {
            egui::CollapsingHeader::new(format!("Latest values ({})", record.latest.len()))
                .id_salt("latest")
                .default_open(record.status == JobStatus::Succeeded)
                .show(ui, |ui| {
                    egui::Grid::new("latest-grid")
                        .striped(true)
                        .num_columns(4)
                        .show(ui, |ui| {
                            for (i, (k, v)) in record.latest.iter().enumerate() {
                                ui.label(k);
                                ui.monospace(crate::widgets::heatmap::format_value(*v as f32));
                                if i % 2 == 1 {
                                    ui.end_row();
                                }
                            }
                        });
                });
        }
        ui.add_space(8.0);
        outputs(ui, app, &record, &run_dir);
        super::attack::attack_results(ui, app, &record);
        scores_section(ui, app, &record, &run_dir);
        ui.add_space(8.0);
        log_view(ui, app, &record);
        ui.add_space(8.0);
        inputs(ui, &record);
        if record.status == JobStatus::Succeeded && record.spec.kind == "method" {
            ui.add_space(8.0);
            evaluation_section(ui, app, &record, &run_dir);
            ui.add_space(8.0);
            super::attack::model_checks(ui, app, &record);
            ui.add_space(8.0);
            super::report::section(ui, app, &record, &run_dir);
        }
    });
}

/// A job's problem in words: the plugin named, not its library file and id
/// (those stay in the details). The host writes plugin failures as
/// "<library>: `<id>`: <call> failed (<STATUS>): <message>".
fn plain_problem(r: &JobRecord, problem: &str) -> String {
    let library = format!("{}: ", r.spec.library.display());
    let Some(at) = problem.find(&library) else {
        return problem.to_string();
    };
    let rest = &problem[at + library.len()..];
    let rest = rest
        .strip_prefix(&format!("`{}`: ", r.spec.plugin_id))
        .unwrap_or(rest);
    let message = match rest.split_once(" failed (") {
        Some((_, after)) => after.split_once("): ").map_or(after, |(_, m)| m),
        None => rest,
    };
    format!("{} stopped: {message}", r.spec.plugin_name)
}

fn header(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &std::path::Path) {
    ui.horizontal(|ui| {
        ui.heading(&r.spec.plugin_name);
        ui.label(
            RichText::new(r.status.label().to_uppercase())
                .color(status_color(&r.status))
                .strong(),
        );
    });
    ui.label(RichText::new(format!("{} · {}", r.when(), r.spec.forget_label)).weak())
        .on_hover_text(format!("Folder: runs/{}", r.id));
    ui.horizontal(|ui| {
        let can_cancel = matches!(r.status, JobStatus::Queued | JobStatus::Running);
        if ui
            .add_enabled(can_cancel, egui::Button::new("⏹ Cancel"))
            .on_hover_text(
                "Stop the job; it is ended forcibly if it does not stop within a few seconds",
            )
            .clicked()
        {
            app.commands.push(Command::Cancel(r.id.clone()));
        }
        if matches!(
            r.status,
            JobStatus::Succeeded
                | JobStatus::Failed { .. }
                | JobStatus::Crashed { .. }
                | JobStatus::Cancelled { .. }
                | JobStatus::Interrupted
        ) && ui
            .button("↻ Run again")
            .on_hover_text("Queue the same job again (a new run)")
            .clicked()
        {
            app.commands.push(Command::Queue(r.spec.clone()));
        }
        if r.spec.kind == "method"
            && r.status != JobStatus::Running
            && ui
                .button("✏ Change the request")
                .on_hover_text(
                    "Open this run's request on the deletion page (model, data, forget set, \
                     method and its settings) to change it and start a new run",
                )
                .clicked()
        {
            app.commands.push(Command::EditRequest(r.id.clone()));
        }
        if ui
            .button("📋 Copy folder path")
            .on_hover_text(run_dir.display().to_string())
            .clicked()
        {
            ui.ctx().copy_text(run_dir.display().to_string());
            app.commands.push(Command::Notify(
                format!("Copied {}", run_dir.display()),
                false,
            ));
        }
        ui.separator();
        let curves = Arc::new(curves_csv(&r.curves).into_bytes());
        if ui
            .add_enabled(
                !r.curves.is_empty(),
                egui::Button::new("Export curves (CSV)"),
            )
            .on_hover_text("Writes exports/curves.csv in the run folder")
            .clicked()
        {
            app.commands.push(Command::Export {
                run: r.id.clone(),
                name: "curves.csv".into(),
                bytes: curves,
            });
        }
        let json = serde_json::to_vec_pretty(r).unwrap_or_default();
        if ui
            .button("Export run (JSON)")
            .on_hover_text("Writes exports/run.json: settings, status, curves, log and files")
            .clicked()
        {
            app.commands.push(Command::Export {
                run: r.id.clone(),
                name: "run.json".into(),
                bytes: Arc::new(json.clone()),
            });
        }
        if ui.button("Save run JSON as…").clicked() {
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: format!("{}.json", r.id),
                    bytes: Arc::new(json),
                }));
        }
    });
}

fn progress(ui: &mut egui::Ui, app: &LetheApp, r: &JobRecord, now: f64) {
    let mut parts = Vec::new();
    if let Some(f) = r.fraction {
        parts.push(format!("{:.0} %", f * 100.0));
    }
    let place = app
        .project
        .as_ref()
        .and_then(|p| super::jobs::queue_place(&p.runs, r));
    match r.status {
        JobStatus::Queued => parts.push(match place {
            Some((n, true)) => format!(
                "waiting for the device: {} in line behind the running job",
                super::jobs::ordinal(n)
            ),
            Some((n, false)) => format!(
                "waiting for the device: {} in line",
                super::jobs::ordinal(n)
            ),
            None => "waiting for the device".to_string(),
        }),
        JobStatus::Running if r.fraction.is_none() && r.message.is_empty() => {
            parts.push("started; waiting for the plugin's first progress report".to_string());
        }
        JobStatus::Cancelling => parts.push("stopping…".to_string()),
        _ => {}
    }
    if !r.message.is_empty() && !r.status.is_final() {
        parts.push(r.message.clone());
    }
    if let Some(eta) = r.eta(now) {
        parts.push(format!("about {} left", format_duration(eta)));
    }
    if let Some(e) = r.elapsed(now) {
        if r.status.is_final() {
            parts.push(format!("{} after {}", r.status.label(), format_duration(e)));
        } else {
            parts.push(format!("{} so far", format_duration(e)));
        }
    }
    let running = matches!(r.status, JobStatus::Running | JobStatus::Cancelling);
    let mut bar = egui::ProgressBar::new(r.fraction.unwrap_or(0.0) as f32)
        .text(parts.join(" · "))
        .animate(running && r.fraction.is_none());
    if r.status == JobStatus::Succeeded {
        bar = bar.fill(Color32::from_rgb(60, 150, 80));
    } else if r.status.problem().is_some() {
        bar = bar.fill(Color32::from_rgb(160, 60, 60));
    }
    ui.add(bar);
}

fn outputs(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &std::path::Path) {
    // Files in the output folder that no event announced (written by a newer
    // engine, or by the evaluation) are shown too.
    let mut extra: Vec<std::path::PathBuf> = std::fs::read_dir(run_dir.join("output"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .filter(|p| !r.artifacts.iter().any(|a| &a.path == p))
                .collect()
        })
        .unwrap_or_default();
    extra.sort();
    if r.artifacts.is_empty() && extra.is_empty() {
        return;
    }
    let rows: Vec<(String, std::path::PathBuf)> = r
        .artifacts
        .iter()
        .map(|a| (a.name.clone(), a.path.clone()))
        .chain(extra.into_iter().map(|p| (super::file_name(&p), p)))
        .collect();
    ui.label(RichText::new("What the job wrote").strong());
    egui::Grid::new("artifacts")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for (name, path) in &rows {
                let is_model =
                    name == "model" || path.file_name().is_some_and(|n| n == "model.safetensors");
                let what = if is_model {
                    "the new model (unlearned copy)"
                } else if path.extension().is_some_and(|e| e == "json") {
                    "results (JSON)"
                } else if artifacts::is_score_file(path) {
                    "membership scores"
                } else {
                    "tensor"
                };
                ui.label(RichText::new(name).strong());
                ui.label(what);
                ui.horizontal(|ui| {
                    if ui
                        .button("Open")
                        .on_hover_text(path.display().to_string())
                        .clicked()
                    {
                        let view = if is_model {
                            View::Checkpoint(path.clone())
                        } else {
                            View::Artifact {
                                run: r.id.clone(),
                                path: path.clone(),
                            }
                        };
                        app.commands.push(Command::Show(view));
                    }
                    if !path.exists() {
                        ui.colored_label(Color32::from_rgb(220, 60, 60), "missing");
                    }
                });
                ui.end_row();
            }
        });
}

/// ROC curves, histograms and the most member-like forget samples, when the
/// run wrote membership scores (an attack).
fn scores_section(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &std::path::Path) {
    let dir = run_dir.join("output");
    let has_scores = r
        .artifacts
        .iter()
        .any(|a| artifacts::is_score_file(&a.path))
        || dir.join("scores_nonmember.safetensors").is_file()
        || dir.join("scores_forget.safetensors").is_file();
    // Only once the job is over: score files are written one by one, and a
    // half-written set must not be cached.
    if !has_scores || !r.status.is_final() {
        return;
    }
    app.ensure_scores(&dir);
    ui.add_space(8.0);
    let samples = crate::panels::results::Samples::of_run(r);
    crate::panels::results::scores_view(ui, app, &dir, Some(r), Some(&samples));
}

fn log_view(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord) {
    ui.horizontal(|ui| {
        ui.label(RichText::new(format!("Log ({} lines)", r.log.len())).strong());
        ui.checkbox(&mut app.state.hide_debug, "hide debug");
        if r.log_dropped > 0 {
            ui.weak(format!("({} earlier lines dropped)", r.log_dropped));
        }
    });
    egui::Frame::group(ui.style()).show(ui, |ui| {
        egui::ScrollArea::vertical()
            .id_salt("log")
            .max_height(220.0)
            .stick_to_bottom(true)
            .auto_shrink([false, true])
            .show(ui, |ui| {
                if r.log.is_empty() {
                    ui.weak("Nothing logged yet.");
                }
                for l in r
                    .log
                    .iter()
                    .filter(|l| !(app.state.hide_debug && l.level == "debug"))
                {
                    let color = match l.level.as_str() {
                        "error" => Color32::from_rgb(220, 60, 60),
                        "warn" => Color32::from_rgb(200, 150, 40),
                        "debug" => ui.visuals().weak_text_color(),
                        "progress" => Color32::from_rgb(90, 140, 210),
                        _ => ui.visuals().text_color(),
                    };
                    ui.label(
                        RichText::new(format!("{:>7.1}s {:<8} {}", l.t, l.level, l.text))
                            .monospace()
                            .color(color),
                    );
                }
            });
    });
}

fn inputs(ui: &mut egui::Ui, r: &JobRecord) {
    egui::CollapsingHeader::new("Settings of this run")
        .id_salt("settings")
        .show(ui, |ui| {
            let s = &r.spec;
            crate::widgets::kv_grid(
                ui,
                "spec",
                &[
                    ("Method", format!("{} ({})", s.plugin_name, s.plugin_id)),
                    ("Model", s.checkpoint.display().to_string()),
                    ("Data", s.data.display().to_string()),
                    (
                        "Forget set",
                        format!("{} — {}", s.forget_label, s.forget.display()),
                    ),
                    ("Device", s.device.clone()),
                    ("Seed", s.seed.to_string()),
                    (
                        "Parameters",
                        serde_json::to_string(&s.params).unwrap_or_default(),
                    ),
                    ("Plugin library", s.library.display().to_string()),
                ],
            );
        });
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1} %", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// Starts `lethe evaluate` on the run's model (off the UI thread).
fn start_evaluation(
    app: &mut LetheApp,
    r: &JobRecord,
    model: &std::path::Path,
    run_dir: &std::path::Path,
) {
    let req = crate::evaluation::EvalRequest {
        exe: app.worker_opts.exe.clone(),
        model: model.to_path_buf(),
        original: r.spec.checkpoint.clone(),
        data: r.spec.data.clone(),
        forget: r.spec.forget.clone(),
        device: r.spec.device.clone(),
        seed: r.spec.seed,
        run_dir: run_dir.to_path_buf(),
    };
    app.evaluations
        .insert(r.id.clone(), crate::tasks::Loadable::Loading);
    app.tasks.evaluate(r.id.clone(), req);
}

/// A finished deletion's next steps, one click each with the defaults, at the
/// top of the view: evaluate, attack (the new and the original model), verify
/// per sample (U-LiRA, its cost shown first), write the report. The sections below hold the details and the settings.
fn next_steps(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &std::path::Path) {
    use crate::tasks::Loadable;
    let Some(model) = r.model_artifact().cloned() else {
        return;
    };
    if !app.evaluations.contains_key(&r.id) {
        let saved = crate::evaluation::load_saved(run_dir);
        app.evaluations.insert(r.id.clone(), saved.into());
    }
    let evaluating = matches!(app.evaluations.get(&r.id), Some(Loadable::Loading));
    let evaluated = matches!(app.evaluations.get(&r.id), Some(Loadable::Ready(Some(_))));
    let attacked = app.project.as_ref().is_some_and(|p| {
        p.runs
            .iter()
            // U-LiRA attacks the new model alone: it is step 3's, not this one's.
            .any(|a| {
                a.spec.kind == "attack"
                    && a.spec.checkpoint == model.path
                    && a.spec.plugin_id != super::per_sample::ULIRA
            })
    });
    let writing = matches!(app.exports.get(&r.id), Some(Loadable::Loading));
    let done = |ok: bool| if ok { " ✔" } else { "" };
    ui.horizontal(|ui| {
        ui.label(RichText::new("Next:").strong());
        if ui
            .add_enabled(
                !evaluating,
                egui::Button::new(format!("1. Evaluate the new model{}", done(evaluated))),
            )
            .on_hover_text("Accuracy before and after on the retained, test and forgotten samples")
            .clicked()
        {
            start_evaluation(app, r, &model.path, run_dir);
        }
        if ui
            .button(format!("2. Attack it and the original{}", done(attacked)))
            .on_hover_text(
                "Runs the default membership attack (settings below) on the new model and on the \
                 original, to show what the deletion changed",
            )
            .clicked()
        {
            super::attack::quick_attack(app, r, &model.path);
        }
        super::per_sample::verify_button(ui, app, r, &model.path);
        let ext = app.state.report_format.clone();
        if ui
            .add_enabled(
                !writing,
                egui::Button::new(format!("4. Write the report ({})", ext.to_uppercase())),
            )
            .on_hover_text("The compliance report, into exports/ in the run folder (format below)")
            .clicked()
            && let Some(job) = super::report::report_job(app, r, super::report::format_from(&ext))
        {
            app.exports.insert(r.id.clone(), Loadable::Loading);
            app.tasks.write_report(r.id.clone(), job);
        }
        if evaluating || writing {
            ui.spinner();
        }
    });
}

fn evaluation_section(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    r: &JobRecord,
    run_dir: &std::path::Path,
) {
    use crate::tasks::Loadable;
    let Some(model) = r.model_artifact().cloned() else {
        return;
    };
    if !app.evaluations.contains_key(&r.id) {
        let saved = crate::evaluation::load_saved(run_dir);
        app.evaluations.insert(r.id.clone(), saved.into());
    }
    let state = app.evaluations.get(&r.id).cloned();
    ui.label(RichText::new("Evaluation").strong());
    let loading = matches!(state, Some(Loadable::Loading));
    let label = if matches!(state, Some(Loadable::Ready(Some(_)))) {
        "Evaluate again"
    } else {
        "Evaluate"
    };
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!loading, egui::Button::new(label))
            .on_hover_text("Utility before and after (and the alignment audit for encoders), with lethe evaluate")
            .clicked()
        {
            start_evaluation(app, r, &model.path, run_dir);
        }
        if loading {
            ui.spinner();
            ui.label("Evaluating…");
        }
    });
    match state {
        Some(Loadable::Failed(e)) => {
            ui.colored_label(Color32::from_rgb(220, 60, 60), "The evaluation failed");
            ui.add(egui::Label::new(RichText::new(e).monospace().small()).wrap());
        }
        Some(Loadable::Ready(Some(e))) => {
            // How the accuracies were read, in words; the folder on hover.
            let reader = match e.utility.reader.as_str() {
                "classifier" => "the model's own class predictions".to_string(),
                "linear probe" => "a linear probe trained on the model's features".to_string(),
                other => other.to_string(),
            };
            ui.label(
                RichText::new(format!("Accuracies read from {reader}"))
                    .small()
                    .weak(),
            )
            .on_hover_text(format!("Evaluation folder: {}", e.folder.display()));
            egui::Grid::new("eval-grid")
                .striped(true)
                .num_columns(3)
                .show(ui, |ui| {
                    ui.strong("accuracy");
                    ui.strong("before");
                    ui.strong("after");
                    ui.end_row();
                    for (name, before, after) in e.rows() {
                        ui.label(name);
                        ui.monospace(pct(before));
                        ui.monospace(pct(Some(after)));
                        ui.end_row();
                    }
                });
            for split in ["retain", "test", "forget"] {
                let rows = e.per_class(split);
                egui::CollapsingHeader::new(format!("Per class: {split}"))
                    .id_salt(format!("eval-{split}"))
                    .show(ui, |ui| {
                        egui::Grid::new(format!("eval-grid-{split}"))
                            .striped(true)
                            .num_columns(3)
                            .show(ui, |ui| {
                                for (c, before, after) in rows {
                                    ui.label(c);
                                    ui.monospace(pct(before));
                                    ui.monospace(pct(Some(after)));
                                    ui.end_row();
                                }
                            });
                    });
            }
            if let Some(path) = e.alignment_path()
                && ui
                    .button("Open the alignment heatmaps (AM / AGM)")
                    .clicked()
            {
                app.commands.push(Command::Show(View::Artifact {
                    run: r.id.clone(),
                    path,
                }));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSpec;

    #[test]
    fn plugin_failures_read_in_words_with_the_file_in_the_details() {
        let r = JobRecord::new(
            "r1".into(),
            JobSpec {
                kind: "method".into(),
                plugin_id: "org.lethe.method.alignment-calibration".into(),
                plugin_name: "Alignment Calibration".into(),
                library: "/opt/lethe/lib/liblethe_method_ac.so".into(),
                params: serde_json::json!({}),
                checkpoint: "/m".into(),
                data: "/d".into(),
                forget: "/f".into(),
                forget_label: String::new(),
                device: "cpu".into(),
                seed: 0,
            },
            0.0,
        );
        let raw = "/opt/lethe/lib/liblethe_method_ac.so: `org.lethe.method.alignment-calibration`: \
                   run failed (ERROR): this method needs an encoder with a projection head";
        assert_eq!(
            plain_problem(&r, raw),
            "Alignment Calibration stopped: this method needs an encoder with a projection head"
        );
        // Anything else is shown as it is.
        assert_eq!(
            plain_problem(&r, "worker killed by SIGKILL"),
            "worker killed by SIGKILL"
        );
    }
}
