//! The panels: top bar, status bar, the workspace sidebar, and the central
//! views. Each draws from `LetheApp` and pushes [`Command`]s for anything that
//! changes more than its own widgets.

mod attack;
mod compare;
pub mod deletion;
mod home;
mod inspect;
mod jobs;
mod per_sample;
mod plugins;
mod report;
mod results;
mod run;
pub mod study;

pub use inspect::read_indices;

/// Numbers and curves a view derives from loaded data, kept between frames.
pub enum Derived {
    /// A 1-D tensor: its summary line and histogram.
    Vector(String, Option<crate::artifacts::Histogram>),
    /// Membership scores: ROC curves and the score histogram.
    Scores(
        Vec<crate::artifacts::Roc>,
        Option<crate::artifacts::Histogram>,
    ),
}

use crate::app::{Command, LetheApp};
use crate::jobs::JobStatus;
use crate::state::View;
use crate::tasks::{Loadable, PickTarget};
use egui::{Color32, RichText};
use std::path::Path;

/// The file name of a path, for lists.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Colour of a job status.
pub fn status_color(status: &JobStatus) -> Color32 {
    match status {
        JobStatus::Succeeded => Color32::from_rgb(60, 170, 80),
        JobStatus::Running | JobStatus::Cancelling => Color32::from_rgb(70, 140, 230),
        JobStatus::Queued => Color32::GRAY,
        JobStatus::Cancelled { .. } | JobStatus::Interrupted => Color32::from_rgb(200, 150, 40),
        JobStatus::Failed { .. } | JobStatus::Crashed { .. } => Color32::from_rgb(220, 60, 60),
    }
}

/// Menu and job summary.
pub fn top_bar(ui: &mut egui::Ui, app: &mut LetheApp) {
    egui::Panel::top("top").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("Project", |ui| {
                if ui.button("Open or create a project folder…").clicked() {
                    app.commands.push(Command::Pick(PickTarget::ProjectFolder));
                    ui.close();
                }
                if ui.button("Open the demo project").clicked() {
                    app.commands.push(Command::OpenDemo(app.demo_dir.clone()));
                    ui.close();
                }
                if !app.state.recent.is_empty() {
                    ui.separator();
                    ui.label(RichText::new("Recent").weak());
                    for dir in app.state.recent.clone() {
                        if ui.button(dir.display().to_string()).clicked() {
                            app.commands.push(Command::OpenProject(dir));
                            ui.close();
                        }
                    }
                }
                if app.project.is_some() {
                    ui.separator();
                    if ui.button("Close project").clicked() {
                        app.commands.push(Command::CloseProject);
                        ui.close();
                    }
                }
            });
            ui.menu_button("View", |ui| {
                for (label, view) in [
                    ("Home", View::Home),
                    ("New deletion request", View::Deletion),
                    ("Job queue", View::Jobs),
                    ("Plugins", View::Plugins),
                    ("Compute runtime", View::Runtime),
                ] {
                    if ui.button(label).clicked() {
                        app.commands.push(Command::Show(view));
                        ui.close();
                    }
                }
            });
            ui.separator();
            ui.label(RichText::new("Lethe").strong());
            if let Some(p) = &app.project {
                ui.label(RichText::new(format!("· {}", p.file.name)).weak());
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if let Some(p) = &app.project {
                    let running = p
                        .runs
                        .iter()
                        .filter(|r| matches!(r.status, JobStatus::Running | JobStatus::Cancelling))
                        .count();
                    let queued = p
                        .runs
                        .iter()
                        .filter(|r| r.status == JobStatus::Queued)
                        .count();
                    if running + queued > 0 {
                        if ui
                            .link(format!("{running} running · {queued} queued"))
                            .on_hover_text("Show the job queue")
                            .clicked()
                        {
                            app.commands.push(Command::Show(View::Jobs));
                        }
                        ui.spinner();
                    }
                }
            });
        });
    });
}

/// The latest message.
pub fn status_bar(ui: &mut egui::Ui, app: &mut LetheApp) {
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal(|ui| match app.notices.last() {
            Some(n) => {
                let color = if n.error {
                    Color32::from_rgb(220, 60, 60)
                } else {
                    ui.visuals().weak_text_color()
                };
                ui.add(egui::Label::new(RichText::new(&n.text).color(color)).truncate());
            }
            None => {
                ui.weak("Ready");
            }
        });
    });
}

/// The workspace: checkpoints, datasets, forget sets, runs, studies.
pub fn sidebar(ui: &mut egui::Ui, app: &mut LetheApp) {
    egui::Panel::left("workspace")
        .default_size(270.0)
        .size_range(200.0..=420.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                // Long names are truncated (hover shows them), never widen the panel.
                ui.set_max_width(ui.available_width());
                sidebar_contents(ui, app);
            });
        });
}

fn section_header(ui: &mut egui::Ui, title: &str, count: usize) {
    ui.add_space(6.0);
    ui.label(RichText::new(format!("{title} ({count})")).strong());
}

fn sidebar_contents(ui: &mut egui::Ui, app: &mut LetheApp) {
    let Some(p) = &app.project else { return };
    ui.add_space(4.0);
    ui.heading(&p.file.name);
    ui.label(RichText::new(p.dir.display().to_string()).small().weak())
        .on_hover_text("The project folder: lethe-project.json, forget-sets/, runs/");
    ui.add_space(4.0);
    let new = ui.add_sized(
        [ui.available_width(), 30.0],
        egui::Button::new(RichText::new("➕ New deletion request").strong())
            .selected(app.state.view == View::Deletion),
    );
    if new.clicked() {
        app.commands.push(Command::Show(View::Deletion));
    }
    let view = app.state.view.clone();
    let mut cmds = Vec::new();

    section_header(ui, "Checkpoints", p.file.checkpoints.len());
    for c in &p.file.checkpoints {
        let sel = view == View::Checkpoint(c.clone());
        let r = ui
            .add(egui::Button::selectable(sel, format!("📦 {}", file_name(c))).truncate())
            .on_hover_text(c.display().to_string());
        if r.clicked() {
            cmds.push(Command::Show(View::Checkpoint(c.clone())));
        }
        r.context_menu(|ui| {
            if ui.button("Remove from project (the file stays)").clicked() {
                cmds.push(Command::RemoveCheckpoint(c.clone()));
                ui.close();
            }
        });
    }
    if ui.small_button("Add checkpoint…").clicked() {
        cmds.push(Command::Pick(PickTarget::Checkpoint));
    }

    section_header(ui, "Datasets", p.file.datasets.len());
    for d in &p.file.datasets {
        let sel = view == View::Dataset(d.clone());
        let r = ui
            .add(egui::Button::selectable(sel, format!("🖼 {}", file_name(d))).truncate())
            .on_hover_text(d.display().to_string());
        if r.clicked() {
            cmds.push(Command::Show(View::Dataset(d.clone())));
        }
        r.context_menu(|ui| {
            if ui.button("Remove from project (the data stays)").clicked() {
                cmds.push(Command::RemoveDataset(d.clone()));
                ui.close();
            }
        });
    }
    ui.horizontal(|ui| {
        if ui.small_button("Add dataset file…").clicked() {
            cmds.push(Command::Pick(PickTarget::DatasetFile));
        }
        if ui.small_button("Add folder…").clicked() {
            cmds.push(Command::Pick(PickTarget::DatasetFolder));
        }
    });
    // Real datasets installed from the distribution, one click each.
    let fashion = std::path::Path::new(lethe_engine::data::named::FASHION_MNIST_DIR);
    if !p.file.datasets.iter().any(|d| d == fashion) {
        let installed = fashion.is_dir();
        let b = ui
            .add_enabled(installed, egui::Button::new("Add Fashion-MNIST (70,000 images)").small())
            .on_hover_text(if installed {
                "Zalando's Fashion-MNIST from the Debian package dataset-fashion-mnist: 55,000 \
                 training, 5,000 validation and 10,000 test images of clothing, 10 classes"
            } else {
                "Install the Debian package dataset-fashion-mnist (installer/setup.sh does) to use it"
            });
        if b.clicked() {
            cmds.push(Command::AddDataset(fashion.to_path_buf()));
        }
    }

    section_header(ui, "Forget sets", p.file.forget_sets.len());
    for f in &p.file.forget_sets {
        let sel = view == View::ForgetSet(f.path.clone());
        let r = ui
            .add(egui::Button::selectable(sel, format!("✂ {} ({})", f.name, f.count)).truncate())
            .on_hover_text(format!("{}\n{}", f.origin, f.path.display()));
        if r.clicked() {
            cmds.push(Command::Show(View::ForgetSet(f.path.clone())));
        }
        r.context_menu(|ui| {
            if ui
                .button("Remove from project (the list file stays)")
                .clicked()
            {
                cmds.push(Command::RemoveForgetSet(f.path.clone()));
                ui.close();
            }
        });
    }

    section_header(ui, "Runs", p.runs.len());
    if p.runs.is_empty() {
        ui.weak("No runs yet.");
    }
    let active = p.runs.iter().filter(|r| !r.status.is_final()).count();
    if ui
        .selectable_label(
            view == View::Jobs,
            format!("⏳ Job queue ({active} active)"),
        )
        .clicked()
    {
        cmds.push(Command::Show(View::Jobs));
    }
    for r in p.runs.iter().rev() {
        let sel = view == View::Run(r.id.clone());
        let pct = match (&r.status, r.fraction) {
            (JobStatus::Running, Some(f)) => format!(" {:.0}%", f * 100.0),
            _ => String::new(),
        };
        let text = RichText::new(format!(
            "{} — {}{pct}",
            r.spec.plugin_name,
            r.status.label()
        ));
        ui.horizontal(|ui| {
            ui.colored_label(status_color(&r.status), "■");
            let resp = ui
                .add(egui::Button::selectable(sel, text).truncate())
                .on_hover_text(format!("{}\n{}", r.id, r.spec.forget_label));
            if resp.clicked() {
                cmds.push(Command::Show(View::Run(r.id.clone())));
            }
        });
    }
    if !p.broken_runs.is_empty() {
        ui.colored_label(
            Color32::from_rgb(200, 150, 40),
            format!("{} run folder(s) unreadable", p.broken_runs.len()),
        )
        .on_hover_text(
            p.broken_runs
                .iter()
                .map(|(d, e)| format!("{}: {e}", d.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }

    if ui
        .selectable_label(view == View::Compare, "📊 Compare the runs")
        .on_hover_text("Finished deletion runs of one request in a table, with gaps to retrain")
        .clicked()
    {
        cmds.push(Command::Show(View::Compare));
    }

    section_header(ui, "Studies", app.study_list.len());
    for dir in &app.study_list {
        let sel = view == View::Study(dir.clone());
        let state = if app.studies.is_running(dir) {
            " — running"
        } else {
            match app.study_results.get(dir).and_then(Loadable::ready) {
                Some(r) if r.missing().is_empty() => " — complete",
                Some(_) => " — incomplete",
                None => "",
            }
        };
        let r = ui
            .add(egui::Button::selectable(sel, format!("🔬 {}{state}", file_name(dir))).truncate())
            .on_hover_text(dir.display().to_string());
        if r.clicked() {
            cmds.push(Command::Show(View::Study(dir.clone())));
        }
    }
    if ui
        .add(egui::Button::selectable(
            view == View::NewStudy,
            "➕ New study…",
        ))
        .on_hover_text("Several methods × seeds, each compared with exact retraining")
        .clicked()
    {
        cmds.push(Command::Show(View::NewStudy));
    }

    ui.add_space(10.0);
    ui.separator();
    let plugins = match &app.catalog {
        Loadable::Ready(c) => format!(
            "🔌 Plugins: {} methods, {} attacks{}",
            c.of_kind("method").count(),
            c.of_kind("attack").count(),
            if c.refused.is_empty() {
                String::new()
            } else {
                format!(", {} refused", c.refused.len())
            }
        ),
        Loadable::Loading => "🔌 Plugins: scanning…".into(),
        Loadable::Failed(e) => format!("🔌 Plugins: {e}"),
    };
    if ui
        .selectable_label(view == View::Plugins, plugins)
        .clicked()
    {
        cmds.push(Command::Show(View::Plugins));
    }
    if ui
        .selectable_label(view == View::Runtime, "🖥 Compute runtime")
        .clicked()
    {
        cmds.push(Command::Show(View::Runtime));
    }
    app.commands.extend(cmds);
}

/// The central view.
pub fn central(ui: &mut egui::Ui, app: &mut LetheApp) {
    if app.project.is_none() && !matches!(app.state.view, View::Plugins | View::Runtime) {
        home::welcome(ui, app);
        return;
    }
    match app.state.view.clone() {
        View::Home => home::overview(ui, app),
        View::Deletion => deletion::show(ui, app),
        View::Run(id) => run::show(ui, app, &id),
        View::Checkpoint(path) => inspect::checkpoint(ui, app, &path),
        View::Dataset(path) => inspect::dataset(ui, app, &path),
        View::ForgetSet(path) => inspect::forget_set(ui, app, &path),
        View::Artifact { run, path } => results::artifact(ui, app, &run, &path),
        View::Plugins => plugins::plugins(ui, app),
        View::Runtime => plugins::runtime(ui, app),
        View::Jobs => jobs::show(ui, app),
        View::NewStudy => study::new_study(ui, app),
        View::Study(dir) => study::show(ui, app, &dir),
        View::Compare => compare::show(ui, app),
    }
}
