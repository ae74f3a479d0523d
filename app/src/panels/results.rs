//! Result files of a run: tensors as heatmaps or histograms, JSON as text,
//! and membership scores as ROC curves, histograms and the forget samples an
//! attack still finds most member-like.

use crate::app::{Command, LetheApp};
use crate::artifacts::{self, ArtifactData, Matrix, TensorData};
use crate::jobs::JobRecord;
use crate::tasks::Loadable;
use crate::thumbs::Thumb;
use crate::widgets::heatmap::{Colormap, Heatmap};
use egui::{Color32, RichText};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RED: Color32 = Color32::from_rgb(220, 60, 60);

/// A result file.
pub fn artifact(ui: &mut egui::Ui, app: &mut LetheApp, run: &str, path: &Path) {
    let record = app.project.as_ref().and_then(|p| p.run(run)).cloned();
    ui.horizontal(|ui| {
        if ui.button("Back to the run").clicked() {
            app.commands
                .push(Command::Show(crate::state::View::Run(run.to_string())));
        }
        ui.heading(super::file_name(path));
    });
    ui.label(RichText::new(path.display().to_string()).weak());
    if artifacts::is_score_file(path)
        && let Some(dir) = path.parent()
    {
        app.ensure_scores(dir);
        egui::ScrollArea::vertical()
            .id_salt("scores-art")
            .show(ui, |ui| {
                scores_view(ui, app, dir, record.as_ref());
            });
        return;
    }
    app.ensure_artifact(path);
    let data = app.artifacts.get(path).cloned();
    match data {
        Some(Loadable::Ready(ArtifactData::Json(v))) => {
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            ui.horizontal(|ui| {
                if ui.button("Copy").clicked() {
                    ui.ctx().copy_text(text.clone());
                }
            });
            egui::ScrollArea::both().id_salt("json").show(ui, |ui| {
                ui.add(egui::Label::new(RichText::new(text).monospace()).extend());
            });
        }
        Some(Loadable::Ready(ArtifactData::Tensors(ts))) => {
            egui::ScrollArea::vertical()
                .id_salt("tensors")
                .show(ui, |ui| {
                    tensors(ui, app, run, path, &ts, record.as_ref());
                });
        }
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, e);
        }
        _ => {
            ui.spinner();
        }
    }
}

fn tensors(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    run: &str,
    path: &Path,
    ts: &[TensorData],
    record: Option<&JobRecord>,
) {
    if ts.is_empty() {
        ui.label("The file holds no tensors.");
        return;
    }
    let selected = app
        .selected_tensor
        .get(path)
        .filter(|n| ts.iter().any(|t| &t.name == *n))
        .cloned()
        .unwrap_or_else(|| ts[0].name.clone());
    let mut pick = selected.clone();
    if ts.len() > 1 {
        egui::ComboBox::from_label("tensor")
            .selected_text(&pick)
            .show_ui(ui, |ui| {
                for t in ts {
                    ui.selectable_value(
                        &mut pick,
                        t.name.clone(),
                        format!("{} {:?}", t.name, t.shape),
                    );
                }
            });
    }
    app.selected_tensor.insert(path.to_path_buf(), pick.clone());
    let Some(t) = ts.iter().find(|t| t.name == pick) else {
        return;
    };
    ui.label(format!("{} · shape {:?} · {}", t.name, t.shape, t.dtype));
    let Some(m) = t.as_matrix() else {
        ui.colored_label(
            RED,
            format!(
                "Too large to show ({} elements; the limit is {}).",
                t.shape.iter().product::<i64>(),
                artifacts::MAX_ELEMENTS
            ),
        );
        return;
    };
    let csv = Arc::new(m.to_csv().into_bytes());
    let export_name = format!("{}.csv", t.name);
    if t.is_matrix() {
        heatmap_view(ui, app, path, t, m, record);
    } else {
        vector_view(ui, &t.name, &m);
    }
    ui.horizontal(|ui| {
        if ui
            .button("Export as CSV")
            .on_hover_text("Writes exports/<name>.csv in the run folder")
            .clicked()
        {
            app.commands.push(Command::Export {
                run: run.to_string(),
                name: export_name.clone(),
                bytes: Arc::clone(&csv),
            });
        }
        if ui.button("Save CSV as…").clicked() {
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: export_name,
                    bytes: csv,
                }));
        }
    });
}

fn heatmap_view(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    path: &Path,
    t: &TensorData,
    m: Matrix,
    record: Option<&JobRecord>,
) {
    let key = (path.to_path_buf(), t.name.clone());
    let name_lc = t.name.to_lowercase();
    let default_map =
        if name_lc.contains("gap") || name_lc.contains("diff") || m.finite_range().0 < 0.0 {
            Colormap::Diverging
        } else {
            Colormap::Viridis
        };
    let heatmap = app
        .heatmaps
        .entry(key.clone())
        .or_insert_with(|| Heatmap::new(Arc::new(m), default_map));
    let (rows, cols) = (heatmap.matrix().rows, heatmap.matrix().cols);
    // Rows or columns may be the run's forget samples (as for alignment
    // matrices); the user says so, since the file does not.
    let forget: Vec<i64> = record
        .and_then(|r| crate::panels::inspect::read_indices(&r.spec.forget).ok())
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .unwrap_or_default();
    let mem = egui::Id::unique(("heatmap-axes", &key));
    let (mut rows_are, mut cols_are) = ui
        .ctx()
        .data(|d| d.get_temp::<(bool, bool)>(mem))
        .unwrap_or_default();
    ui.horizontal(|ui| {
        let mut map = heatmap.colormap();
        egui::ComboBox::from_label("colours")
            .selected_text(map.name())
            .show_ui(ui, |ui| {
                for c in Colormap::ALL {
                    ui.selectable_value(&mut map, c, c.name());
                }
            });
        heatmap.set_colormap(map);
        if ui.button("Reset zoom").clicked() {
            heatmap.reset_view();
        }
        if !forget.is_empty() && forget.len() == rows {
            ui.checkbox(
                &mut rows_are,
                format!("rows are the {} forget samples", rows),
            );
        }
        if !forget.is_empty() && forget.len() == cols {
            ui.checkbox(
                &mut cols_are,
                format!("columns are the {} forget samples", cols),
            );
        }
    });
    ui.ctx()
        .data_mut(|d| d.insert_temp(mem, (rows_are, cols_are)));
    let data = record.map(|r| r.spec.data.clone());
    let want_thumbs = (rows_are || cols_are) && data.is_some();
    if let (true, Some(data)) = (want_thumbs, &data) {
        // Pictures for at most 2,000 samples: beyond that a cell is under a pixel
        // at any zoom that shows them all.
        let idx: Vec<i64> = forget.iter().copied().take(2000).collect();
        app.ensure_samples(data, &idx);
    }
    let thumbs = |app: &mut LetheApp, ui: &egui::Ui, data: &PathBuf| -> Vec<egui::TextureHandle> {
        let Some(map) = app.samples.get(data) else {
            return Vec::new();
        };
        let list: Vec<(i64, Thumb)> = forget
            .iter()
            .take(2000)
            .filter_map(|i| map.get(i).map(|t| (*i, t.clone())))
            .collect();
        list.iter()
            .map(|(i, t)| {
                app.textures.get(
                    ui.ctx(),
                    &format!("s:{}/{i}/{}", data.display(), t.detail),
                    t,
                )
            })
            .collect()
    };
    let (row_t, col_t) = match (&data, want_thumbs) {
        (Some(d), true) => {
            let t = thumbs(app, ui, d);
            (rows_are.then(|| t.clone()), cols_are.then_some(t))
        }
        _ => (None, None),
    };
    let labels: Vec<String> = forget.iter().map(|i| format!("#{i}")).collect();
    let Some(heatmap) = app.heatmaps.get_mut(&key) else {
        return;
    };
    heatmap.row_thumbs = row_t;
    heatmap.col_thumbs = col_t;
    heatmap.row_labels = rows_are.then(|| labels.clone());
    heatmap.col_labels = cols_are.then_some(labels);
    heatmap.axis_titles = (
        if rows_are {
            "forget sample".into()
        } else {
            "row".into()
        },
        if cols_are {
            "forget sample".into()
        } else {
            "column".into()
        },
    );
    // Fit the visible part of the window (the view scrolls, so its own
    // available height is unbounded).
    let visible = ui.clip_rect().bottom() - ui.cursor().top() - 12.0;
    let height = (ui.available_width() * 0.8).min(visible).max(320.0);
    heatmap.show(ui, height);
}

fn vector_view(ui: &mut egui::Ui, name: &str, m: &Matrix) {
    let values: Vec<f64> = m.values.iter().map(|&v| f64::from(v)).collect();
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    let (lo, hi) = m.finite_range();
    let nonzero = finite.iter().filter(|v| **v != 0.0).count();
    ui.label(format!(
        "{} values · min {lo} · max {hi} · mean {mean:.4} · {} non-zero",
        values.len(),
        nonzero
    ));
    if let Some(h) = artifacts::histogram(&[(name, &values)], 60) {
        crate::widgets::plots::histogram_plot(ui, &format!("vec-{name}"), &h, "value");
    }
}

/// ROC curves (linear and log-log), score histograms and the forget samples
/// most at risk, from the `scores_<role>` files in `dir`.
pub fn scores_view(ui: &mut egui::Ui, app: &mut LetheApp, dir: &Path, record: Option<&JobRecord>) {
    let scores = match app.scores.get(dir) {
        Some(Loadable::Ready(s)) => s.clone(),
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, e);
            return;
        }
        _ => {
            ui.spinner();
            return;
        }
    };
    ui.label(RichText::new("Membership attack").strong());
    let rocs = artifacts::rocs(&scores);
    if rocs.is_empty() {
        ui.label("These scores have no non-member group, so no ROC curve can be drawn.");
    } else {
        for r in &rocs {
            if let Some(auc) = r.auc {
                ui.label(format!(
                    "{}: AUC {auc:.3} (0.5 = cannot tell them apart)",
                    r.name
                ));
            }
        }
        ui.horizontal(|ui| {
            ui.radio_value(&mut app.state.roc_log, false, "linear");
            ui.radio_value(
                &mut app.state.roc_log,
                true,
                "log-log (low false-positive rates)",
            );
        });
    }
    let mut groups: Vec<(&str, &[f64])> = Vec::new();
    if let Some(m) = &scores.member {
        groups.push(("members", m));
    }
    if let Some(n) = &scores.nonmember {
        groups.push(("non-members", n));
    }
    if let Some(f) = &scores.forget {
        groups.push(("forget set", f));
    }
    let hist = artifacts::histogram(&groups, 40);
    // ROC and score distributions side by side: they are two views of the
    // same question (can the attack tell the groups apart?).
    ui.horizontal_top(|ui| {
        if !rocs.is_empty() {
            ui.vertical(|ui| {
                ui.label(RichText::new("ROC").strong());
                crate::widgets::plots::roc_plot(
                    ui,
                    &format!("roc-{}", dir.display()),
                    &rocs,
                    app.state.roc_log,
                );
            });
        }
        if let Some(h) = &hist {
            ui.vertical(|ui| {
                ui.label(RichText::new("Scores: members vs non-members").strong());
                crate::widgets::plots::histogram_plot(
                    ui,
                    &format!("hist-{}", dir.display()),
                    h,
                    "membership score",
                );
            });
        }
    });
    if let Some(run) = record {
        ui.horizontal(|ui| {
            for r in &rocs {
                if ui.button(format!("Export ROC {} (CSV)", r.name)).clicked() {
                    app.commands.push(Command::Export {
                        run: run.id.clone(),
                        name: format!("roc-{}.csv", r.name.replace(' ', "-")),
                        bytes: Arc::new(r.to_csv().into_bytes()),
                    });
                }
            }
        });
    }
    if let (Some(f), Some(run)) = (&scores.forget, record) {
        at_risk(ui, app, f, run);
    }
}

/// The forget samples the attack still scores as most member-like.
fn at_risk(ui: &mut egui::Ui, app: &mut LetheApp, scores: &[f64], run: &JobRecord) {
    let Ok(mut indices) = crate::panels::inspect::read_indices(&run.spec.forget) else {
        return;
    };
    indices.sort_unstable();
    if indices.len() != scores.len() {
        ui.weak(format!(
            "{} forget scores for {} forget samples: the per-sample view needs one score per sample.",
            scores.len(),
            indices.len()
        ));
        return;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let top: Vec<(i64, f64)> = order
        .iter()
        .take(24)
        .map(|&i| (indices[i], scores[i]))
        .collect();
    let wanted: Vec<i64> = top.iter().map(|(i, _)| *i).collect();
    app.ensure_samples(&run.spec.data, &wanted);
    ui.label(RichText::new("Forget samples most at risk (highest membership score)").strong());
    let thumbs: Vec<Thumb> = top
        .iter()
        .filter_map(|(i, s)| {
            app.samples
                .get(&run.spec.data)
                .and_then(|m| m.get(i))
                .map(|t| Thumb {
                    label: format!("#{i} · {s:.3}"),
                    detail: format!("{} · score {s:.4}", t.detail),
                    image: t.image.clone(),
                })
        })
        .collect();
    crate::widgets::thumb_grid(
        ui,
        &mut app.textures,
        &format!("risk:{}", run.id),
        &thumbs,
        56.0,
    );
}
