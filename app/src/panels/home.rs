//! The first screen: the demo offer and project folders; with a project open,
//! an overview with the way into a deletion request.

use super::{file_name, status_color};
use crate::app::{Command, LetheApp};
use crate::state::View;
use crate::tasks::PickTarget;
use egui::RichText;

/// No project open: offer the demo, a project folder, or a recent one.
pub fn welcome(ui: &mut egui::Ui, app: &mut LetheApp) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.add_space(24.0);
        ui.vertical_centered(|ui| {
            ui.heading(RichText::new("Welcome to Lethe").size(28.0));
            ui.label(
                "Lethe removes chosen training samples from a trained model (\"machine unlearning\") \
                 and checks whether the model still gives them away.",
            );
        });
        ui.add_space(20.0);
        let demo_dir = app.demo_dir.clone();
        let first = !app.state.welcomed;
        egui::Frame::group(ui.style())
            .inner_margin(16.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.label(
                    RichText::new(if first {
                        "First time here? Start with the demo"
                    } else {
                        "The demo"
                    })
                    .heading(),
                );
                ui.label(
                    "A ready-made project: a small handwriting classifier fitted to 2,000 MNIST digits \
                     (closely enough that membership attacks can tell which digits it saw), the digits \
                     themselves, and a deletion request for 100 of them; also a larger classifier and \
                     encoder trained on 6,000 digits. Nothing is downloaded.",
                );
                ui.add_space(6.0);
                let b = ui.add(
                    egui::Button::new(RichText::new("▶  Open the demo project").strong().size(16.0))
                        .min_size(egui::vec2(240.0, 36.0)),
                );
                if b.clicked() {
                    app.commands.push(Command::OpenDemo(demo_dir.clone()));
                }
                ui.label(
                    RichText::new(format!("The project folder will be {}", demo_dir.display()))
                        .small()
                        .weak(),
                );
            });
        ui.add_space(12.0);
        egui::Frame::group(ui.style())
            .inner_margin(16.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.label(RichText::new("Your own project").heading());
                ui.label(
                    "A project is a folder. Lethe keeps its list of models, data and deletion requests \
                     there, and one sub-folder per run. Choose an empty folder to start a new project.",
                );
                ui.add_space(6.0);
                let (commit, browse) = crate::widgets::path_field(
                    ui,
                    &mut app.inputs.project,
                    "/path/to/project folder (type or paste, then Enter)",
                );
                if browse {
                    app.commands.push(Command::Pick(PickTarget::ProjectFolder));
                }
                let typed = app.inputs.project.trim().to_string();
                if (commit
                    || ui
                        .add_enabled(!typed.is_empty(), egui::Button::new("Open or create this folder"))
                        .clicked())
                    && !typed.is_empty()
                {
                    app.commands.push(Command::OpenProject(typed.into()));
                }
                if let Some(e) = &app.project_error {
                    ui.colored_label(egui::Color32::from_rgb(220, 60, 60), e);
                }
            });
        if !app.state.recent.is_empty() {
            ui.add_space(12.0);
            ui.label(RichText::new("Recent projects").strong());
            for dir in app.state.recent.clone() {
                let exists = dir.is_dir();
                let r = ui.add_enabled(exists, egui::Link::new(dir.display().to_string()));
                if r.clicked() {
                    app.commands.push(Command::OpenProject(dir));
                }
            }
        }
    });
}

/// A project is open: what is in it and what to do next.
pub fn overview(ui: &mut egui::Ui, app: &mut LetheApp) {
    let Some(p) = &app.project else { return };
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading(&p.file.name);
        ui.label(RichText::new(p.dir.display().to_string()).weak());
        ui.add_space(12.0);
        let b = ui.add(
            egui::Button::new(
                RichText::new("➕  New deletion request")
                    .strong()
                    .size(16.0),
            )
            .min_size(egui::vec2(260.0, 36.0)),
        );
        if b.clicked() {
            app.commands.push(Command::Show(View::Deletion));
        }
        ui.label(
            "Choose the model, its training data and what to forget, pick a method, and run it.",
        );
        ui.add_space(12.0);
        crate::widgets::kv_grid(
            ui,
            "overview",
            &[
                ("Checkpoints", p.file.checkpoints.len().to_string()),
                ("Datasets", p.file.datasets.len().to_string()),
                ("Forget sets", p.file.forget_sets.len().to_string()),
                ("Runs", p.runs.len().to_string()),
            ],
        );
        if !p.runs.is_empty() {
            ui.add_space(12.0);
            ui.label(RichText::new("Latest runs").strong());
            egui::Grid::new("latest-runs").striped(true).show(ui, |ui| {
                for r in p.runs.iter().rev().take(10) {
                    ui.colored_label(status_color(&r.status), r.status.label());
                    if ui.link(&r.spec.plugin_name).clicked() {
                        app.commands.push(Command::Show(View::Run(r.id.clone())));
                    }
                    ui.label(file_name(&r.spec.checkpoint));
                    ui.label(&r.spec.forget_label);
                    ui.label(RichText::new(r.when()).weak())
                        .on_hover_text(format!("Folder: runs/{}", r.id));
                    ui.end_row();
                }
            });
        }
    });
}
