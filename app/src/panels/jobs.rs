//! The job queue: what runs on which device, what waits behind it, progress
//! with ETA and cancel for each, and the jobs that finished last.

use super::status_color;
use crate::app::{Command, LetheApp};
use crate::jobs::{JobRecord, JobStatus, format_duration};
use crate::state::View;
use egui::RichText;

/// Where a queued job stands: `(place among the jobs waiting for its device,
/// whether a job is running there now)`.
pub fn queue_place(runs: &[JobRecord], r: &JobRecord) -> Option<(usize, bool)> {
    if r.status != JobStatus::Queued {
        return None;
    }
    let same = |x: &&JobRecord| x.spec.device == r.spec.device;
    let ahead = runs
        .iter()
        .filter(same)
        .filter(|x| x.status == JobStatus::Queued && x.created < r.created)
        .count();
    let busy = runs
        .iter()
        .filter(same)
        .any(|x| matches!(x.status, JobStatus::Running | JobStatus::Cancelling));
    Some((ahead + 1, busy))
}

fn device_label(app: &LetheApp, id: &str) -> String {
    app.devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.label.clone())
        .unwrap_or_else(|| id.to_string())
}

/// The queue view.
pub fn show(ui: &mut egui::Ui, app: &mut LetheApp) {
    let Some(p) = &app.project else { return };
    let runs = p.runs.clone();
    let now = crate::project::now();
    ui.heading("Jobs");
    ui.label(
        "One job runs at a time on each device; the others wait in the order they were started. \
         Each job runs in its own process, so closing this view or a crashing plugin never stops the others.",
    );
    ui.add_space(8.0);
    let active: Vec<&JobRecord> = runs.iter().filter(|r| !r.status.is_final()).collect();
    if active.is_empty() {
        ui.weak("Nothing is running or waiting.");
    }
    egui::ScrollArea::vertical().id_salt("jobs").show(ui, |ui| {
        for r in &active {
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal(|ui| {
                    ui.colored_label(status_color(&r.status), r.status.label().to_uppercase());
                    if ui
                        .link(RichText::new(&r.spec.plugin_name).strong())
                        .clicked()
                    {
                        app.commands.push(Command::Show(View::Run(r.id.clone())));
                    }
                    ui.label(RichText::new(&r.spec.forget_label).weak());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let can = matches!(r.status, JobStatus::Queued | JobStatus::Running);
                        if ui
                            .add_enabled(can, egui::Button::new("⏹ Cancel"))
                            .on_hover_text(format!("Stop the {}", r.title()))
                            .clicked()
                        {
                            app.commands.push(Command::Cancel(r.id.clone()));
                        }
                    });
                });
                let device = device_label(app, &r.spec.device);
                let mut text = match queue_place(&runs, r) {
                    Some((n, busy)) => format!(
                        "on {device}: waiting, {} in line{}",
                        ordinal(n),
                        if busy { " behind the running job" } else { "" }
                    ),
                    None => format!("on {device}"),
                };
                if let Some(f) = r.fraction {
                    text.push_str(&format!(" · {:.0} %", f * 100.0));
                }
                if let Some(eta) = r.eta(now) {
                    text.push_str(&format!(" · about {} left", format_duration(eta)));
                }
                if !r.message.is_empty() {
                    text.push_str(&format!(" · {}", r.message));
                }
                ui.add(
                    egui::ProgressBar::new(r.fraction.unwrap_or(0.0) as f32)
                        .text(text)
                        .animate(r.status == JobStatus::Running && r.fraction.is_none()),
                );
            });
        }
        let done: Vec<&JobRecord> = runs
            .iter()
            .rev()
            .filter(|r| r.status.is_final())
            .take(15)
            .collect();
        if !done.is_empty() {
            ui.add_space(10.0);
            ui.label(RichText::new("Finished last").strong());
            egui::Grid::new("jobs-done").striped(true).show(ui, |ui| {
                for r in done {
                    ui.colored_label(status_color(&r.status), r.status.label());
                    if ui.link(&r.spec.plugin_name).clicked() {
                        app.commands.push(Command::Show(View::Run(r.id.clone())));
                    }
                    ui.label(&r.spec.forget_label);
                    ui.label(
                        r.elapsed(now)
                            .map(format_duration)
                            .unwrap_or_else(|| "–".into()),
                    );
                    ui.label(RichText::new(r.when()).weak())
                        .on_hover_text(format!("Folder: runs/{}", r.id));
                    ui.end_row();
                }
            });
        }
    });
}

/// `1st`, `2nd`, `11th`, …
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSpec;

    fn job(id: &str, device: &str, created: f64, status: JobStatus) -> JobRecord {
        let mut r = JobRecord::new(
            id.into(),
            JobSpec {
                kind: "method".into(),
                plugin_id: "p".into(),
                plugin_name: "P".into(),
                library: "/l".into(),
                params: serde_json::json!({}),
                checkpoint: "/c".into(),
                data: "/d".into(),
                forget: "/f".into(),
                forget_label: String::new(),
                device: device.into(),
                seed: 0,
            },
            created,
        );
        r.status = status;
        r
    }

    #[test]
    fn queued_jobs_count_the_ones_ahead_on_their_device() {
        let runs = vec![
            job("a", "cpu", 1.0, JobStatus::Running),
            job("b", "cpu", 2.0, JobStatus::Queued),
            job("c", "cuda:0", 3.0, JobStatus::Queued),
            job("d", "cpu", 4.0, JobStatus::Queued),
            job("e", "cpu", 0.5, JobStatus::Succeeded),
        ];
        assert_eq!(queue_place(&runs, &runs[0]), None);
        assert_eq!(queue_place(&runs, &runs[1]), Some((1, true)));
        assert_eq!(queue_place(&runs, &runs[2]), Some((1, false)));
        assert_eq!(queue_place(&runs, &runs[3]), Some((2, true)));
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(22), "22nd");
    }
}
