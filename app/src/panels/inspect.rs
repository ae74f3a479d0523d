//! What a checkpoint, a dataset and a forget set hold.

use super::deletion::group_digits;
use crate::app::{Command, LetheApp};
use crate::tasks::Loadable;
use egui::{Color32, RichText};
use std::path::Path;

/// A "Read again" button for a file that was marked for crashing, exhausting
/// or stalling the worker reading it.
fn read_again(ui: &mut egui::Ui, app: &mut LetheApp, path: &Path) {
    if app.skipped(path).is_some()
        && ui
            .button("Read again")
            .on_hover_text(
                "Read the file once more in a new worker. If it fails the same way, it is \
                 marked again; the window is not affected either way.",
            )
            .clicked()
    {
        app.commands.push(Command::RetryFile(path.to_path_buf()));
    }
}

/// A checkpoint: format, architecture, parameters, hash, provenance, tensors.
pub fn checkpoint(ui: &mut egui::Ui, app: &mut LetheApp, path: &Path) {
    app.ensure_checkpoint(path);
    egui::ScrollArea::vertical().id_salt("ckpt").show(ui, |ui| {
        ui.heading(super::file_name(path));
        ui.label(RichText::new(path.display().to_string()).weak());
        ui.add_space(8.0);
        match app.checkpoints.get(path) {
            Some(Loadable::Ready(s)) => {
                let mut rows = vec![
                    ("Format", s.format.to_string()),
                    (
                        "Architecture",
                        match &s.architecture {
                            Some(a) => format!("{a} ({})", s.architecture_note),
                            None => format!("not recognised: {}", s.architecture_note),
                        },
                    ),
                    ("Parameters", group_digits(s.parameter_count)),
                    ("Tensors", s.tensor_count.to_string()),
                    (
                        "File size",
                        format!("{} bytes", group_digits(s.file_size as i64)),
                    ),
                    ("SHA-256", s.sha256.clone()),
                ];
                if let Some(m) = &s.meta {
                    rows.push((
                        "Written by",
                        format!(
                            "Lethe {} on {}",
                            m.provenance.lethe_version,
                            crate::project::datetime(m.provenance.created_unix as f64)
                        ),
                    ));
                    if let Some(src) = &m.provenance.source {
                        rows.push(("Source", src.clone()));
                    }
                }
                crate::widgets::kv_grid(ui, "ckpt-grid", &rows);
                if ui.button("Copy SHA-256").clicked() {
                    ui.ctx().copy_text(s.sha256.clone());
                }
                if let Some(m) = &s.meta
                    && !m.provenance.notes.is_empty()
                {
                    ui.add_space(8.0);
                    egui::CollapsingHeader::new(format!(
                        "Provenance notes ({})",
                        m.provenance.notes.len()
                    ))
                    .default_open(true)
                    .show(ui, |ui| {
                        let rows: Vec<(&str, String)> = m
                            .provenance
                            .notes
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.clone()))
                            .collect();
                        crate::widgets::kv_grid(ui, "notes", &rows);
                    });
                }
                ui.add_space(8.0);
                egui::CollapsingHeader::new(format!("Tensors ({})", s.tensors.len())).show(
                    ui,
                    |ui| {
                        egui::Grid::new("tensors").striped(true).show(ui, |ui| {
                            for t in &s.tensors {
                                ui.monospace(&t.name);
                                ui.monospace(format!("{:?}", t.shape));
                                ui.label(&t.dtype);
                                ui.end_row();
                            }
                        });
                    },
                );
            }
            Some(Loadable::Failed(e)) => {
                ui.colored_label(Color32::from_rgb(220, 60, 60), e);
                read_again(ui, app, path);
            }
            _ => {
                ui.spinner();
            }
        }
    });
}

/// A dataset: format, size, classes, split, examples.
pub fn dataset(ui: &mut egui::Ui, app: &mut LetheApp, path: &Path) {
    let seed = app.state.draft.seed;
    app.ensure_dataset(path, seed);
    egui::ScrollArea::vertical().id_salt("data").show(ui, |ui| {
        ui.heading(super::file_name(path));
        ui.label(RichText::new(path.display().to_string()).weak());
        ui.add_space(8.0);
        let info = app.datasets.get(&(path.to_path_buf(), seed)).cloned();
        match info {
            Some(Loadable::Ready(info)) => {
                let s = &info.summary;
                let [c, h, w] = s.shape;
                crate::widgets::kv_grid(
                    ui,
                    "data-grid",
                    &[
                        ("Format", s.format.to_string()),
                        ("Samples", group_digits(s.len as i64)),
                        ("Images", format!("{c} channel(s), {h} × {w} pixels")),
                        ("Classes", s.classes.len().to_string()),
                        (
                            "Split",
                            format!(
                                "train {} / validation {} / test {} ({})",
                                info.split.train.len(),
                                info.split.val.len(),
                                info.split.test.len(),
                                if info.split_recorded {
                                    "recorded in the file".to_string()
                                } else {
                                    format!("drawn with seed {seed}")
                                }
                            ),
                        ),
                        ("First sample SHA-256", s.first_hash.clone()),
                    ],
                );
                ui.add_space(8.0);
                ui.label(RichText::new("One example per class").strong());
                crate::widgets::thumb_grid(
                    ui,
                    &mut app.textures,
                    &format!("ex:{}", path.display()),
                    &info.examples,
                    56.0,
                );
                ui.add_space(8.0);
                egui::Grid::new("classes").striped(true).show(ui, |ui| {
                    ui.label(RichText::new("class").strong());
                    ui.label(RichText::new("samples").strong());
                    ui.label(RichText::new("in training").strong());
                    ui.end_row();
                    for (i, (name, n)) in s.classes.iter().enumerate() {
                        ui.label(name);
                        ui.label(n.to_string());
                        ui.label(
                            info.train_class_counts
                                .get(i)
                                .copied()
                                .unwrap_or(0)
                                .to_string(),
                        );
                        ui.end_row();
                    }
                });
            }
            Some(Loadable::Failed(e)) => {
                ui.colored_label(Color32::from_rgb(220, 60, 60), e);
                read_again(ui, app, path);
            }
            _ => {
                ui.spinner();
            }
        }
    });
}

/// A saved forget set: where it came from and the samples in it.
pub fn forget_set(ui: &mut egui::Ui, app: &mut LetheApp, path: &Path) {
    let Some(entry) = app
        .project
        .as_ref()
        .and_then(|p| p.file.forget_sets.iter().find(|f| f.path == path).cloned())
    else {
        ui.label("This forget set is not in the project.");
        return;
    };
    let indices = read_indices(path);
    egui::ScrollArea::vertical().id_salt("fs").show(ui, |ui| {
        ui.heading(&entry.name);
        ui.label(RichText::new(path.display().to_string()).weak());
        ui.add_space(8.0);
        crate::widgets::kv_grid(
            ui,
            "fs-grid",
            &[
                ("Samples", entry.count.to_string()),
                ("Chosen as", entry.origin.clone()),
                ("Dataset", entry.data.display().to_string()),
            ],
        );
        ui.add_space(8.0);
        match indices {
            Ok(indices) => {
                let shown: Vec<i64> = indices.iter().copied().take(120).collect();
                app.ensure_samples(&entry.data, &shown);
                ui.label(format!("{} of {} samples:", shown.len(), indices.len()));
                let thumbs: Vec<_> = app
                    .samples
                    .get(&entry.data)
                    .map(|m| shown.iter().filter_map(|i| m.get(i).cloned()).collect())
                    .unwrap_or_default();
                crate::widgets::thumb_grid(
                    ui,
                    &mut app.textures,
                    &format!("s:{}", entry.data.display()),
                    &thumbs,
                    40.0,
                );
            }
            Err(e) => {
                ui.colored_label(Color32::from_rgb(220, 60, 60), e);
            }
        }
        ui.add_space(8.0);
        if ui.button("Use it in a new deletion request").clicked() {
            app.state.draft.data = Some(entry.data.clone());
            app.state.draft.forget = Some(entry.path.clone());
            app.commands
                .push(Command::Show(crate::state::View::Deletion));
        }
    });
}

/// The indices in a forget list (comments and blank lines skipped), for display;
/// the worker validates the file itself against the dataset when a job runs.
pub fn read_indices(path: &Path) -> Result<Vec<i64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let arr = v
            .as_array()
            .or_else(|| v.get("indices").and_then(|x| x.as_array()))
            .ok_or_else(|| format!("{}: expected an array of indices", path.display()))?;
        return Ok(arr.iter().filter_map(serde_json::Value::as_i64).collect());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            l.split(',')
                .next()
                .and_then(|f| f.trim().trim_matches('"').parse().ok())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_read_from_txt_csv_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, "# header\n3\n\n5 # five\n").unwrap();
        assert_eq!(read_indices(&txt).unwrap(), [3, 5]);
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "index,name\n7,x\n9,y\n").unwrap();
        assert_eq!(read_indices(&csv).unwrap(), [7, 9]);
        let json = dir.path().join("a.json");
        std::fs::write(&json, r#"{"indices": [1, 2]}"#).unwrap();
        assert_eq!(read_indices(&json).unwrap(), [1, 2]);
        assert!(read_indices(&dir.path().join("none.txt")).is_err());
    }
}
