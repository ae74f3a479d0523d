//! Result files of a run: tensors as heatmaps or histograms, JSON as text,
//! and membership scores as ROC curves, histograms and the forget samples an
//! attack still finds most member-like.

use crate::app::{Command, LetheApp};
use crate::artifacts::{self, ArtifactData, Matrix, TensorData};
use crate::jobs::JobRecord;
use crate::panels::Derived;
use crate::tasks::Loadable;
use crate::thumbs::Thumb;
use crate::widgets::heatmap::{Colormap, Heatmap};
use egui::{Color32, RichText};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RED: Color32 = Color32::from_rgb(220, 60, 60);

/// A result file.
/// The prefix of the `run` of a study's file in [`crate::state::View::Artifact`].
pub const STUDY_PREFIX: &str = "study:";

/// Where a result's samples come from: the dataset (for pictures), the forget
/// list (the order of forget scores) and a key for the picture cache.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The dataset file.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// Names the pictures' textures (a run id or a study folder).
    pub key: String,
}

impl Samples {
    /// A job's samples.
    pub fn of_run(r: &JobRecord) -> Self {
        Samples {
            data: r.spec.data.clone(),
            forget: r.spec.forget.clone(),
            key: r.id.clone(),
        }
    }
}

/// The samples of a `run` tag: a job of the project, or a study folder's
/// dataset and forget list (read from its study.json, loaded on demand).
fn samples_of(app: &mut LetheApp, run: &str, record: Option<&JobRecord>) -> Option<Samples> {
    if let Some(r) = record {
        return Some(Samples::of_run(r));
    }
    let dir = PathBuf::from(run.strip_prefix(STUDY_PREFIX)?);
    match app.study_results.get(&dir) {
        Some(Loadable::Ready(r)) => Some(Samples {
            data: r.manifest.spec.data.clone(),
            forget: r.manifest.spec.forget.clone(),
            key: run.to_string(),
        }),
        Some(_) => None,
        None => {
            app.load_study(&dir);
            None
        }
    }
}

pub fn artifact(ui: &mut egui::Ui, app: &mut LetheApp, run: &str, path: &Path) {
    let record = app.project.as_ref().and_then(|p| p.run(run)).cloned();
    let samples = samples_of(app, run, record.as_ref());
    ui.horizontal(|ui| {
        // A study's files name their study as `study:<folder>`.
        let back = match run.strip_prefix(STUDY_PREFIX) {
            Some(dir) => ("Back to the study", crate::state::View::Study(dir.into())),
            None => ("Back to the run", crate::state::View::Run(run.to_string())),
        };
        if ui.button(back.0).clicked() {
            app.commands.push(Command::Show(back.1));
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
                scores_view(ui, app, dir, record.as_ref(), samples.as_ref());
            });
        return;
    }
    app.ensure_artifact(path);
    // An Arc: the file's data is shared with the view, not copied each frame.
    let data = app.artifacts.get(path).cloned();
    match data {
        Some(Loadable::Ready(d)) => match d.as_ref() {
            ArtifactData::Json(v) => json_view(ui, v),
            ArtifactData::Tensors(ts) => {
                egui::ScrollArea::vertical()
                    .id_salt("tensors")
                    .show(ui, |ui| {
                        tensors(ui, app, run, path, ts, samples.as_ref());
                    });
            }
        },
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, e);
        }
        _ => {
            ui.spinner();
        }
    }
}

fn json_view(ui: &mut egui::Ui, v: &serde_json::Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    ui.horizontal(|ui| {
        if ui.button("Copy").clicked() {
            ui.ctx().copy_text(text.clone());
        }
    });
    egui::ScrollArea::both().id_salt("json").show(ui, |ui| {
        ui.add(egui::Label::new(RichText::new(text).monospace()).extend());
    });
}

/// The pseudo-tensor name of the before / after / gap view.
const TRIPLE: &str = "AM before · AM after · AGM";

/// The evaluation's alignment file (`lethe evaluate`): `am_before`, `am_after`
/// and `agm` over the same forget samples, listed in `heatmap_indices`.
fn has_alignment_triple(ts: &[TensorData]) -> bool {
    let shape = |n: &str| ts.iter().find(|t| t.name == n).map(|t| t.shape.clone());
    let a = shape("am_before");
    a.is_some() && a == shape("am_after") && a == shape("agm")
}

/// The stable sample indices of the rows and columns, when the file says
/// (`heatmap_indices`, as the evaluation writes it) and they fit `n`.
fn file_axis_indices(ts: &[TensorData], n: usize) -> Option<Vec<i64>> {
    let t = ts.iter().find(|t| t.name == "heatmap_indices")?;
    let v: Vec<i64> = t.values.as_ref()?.iter().map(|&x| x as i64).collect();
    (v.len() == n).then_some(v)
}

fn tensors(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    run: &str,
    path: &Path,
    ts: &[TensorData],
    record: Option<&Samples>,
) {
    if ts.is_empty() {
        ui.label("The file holds no tensors.");
        return;
    }
    let triple = has_alignment_triple(ts);
    let first = if triple {
        TRIPLE.to_string()
    } else {
        ts[0].name.clone()
    };
    let selected = app
        .selected_tensor
        .get(path)
        .filter(|n| ts.iter().any(|t| &t.name == *n) || (triple && n.as_str() == TRIPLE))
        .cloned()
        .unwrap_or(first);
    let mut pick = selected.clone();
    if ts.len() > 1 {
        egui::ComboBox::from_label("tensor")
            .selected_text(&pick)
            .show_ui(ui, |ui| {
                if triple {
                    ui.selectable_value(&mut pick, TRIPLE.to_string(), TRIPLE);
                }
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
    if pick == TRIPLE {
        alignment_triple(ui, app, path, ts, record);
        return;
    }
    let Some(t) = ts.iter().find(|t| t.name == pick) else {
        return;
    };
    ui.label(format!("{} · shape {:?} · {}", t.name, t.shape, t.dtype));
    if t.values.is_none() {
        ui.colored_label(
            RED,
            format!(
                "Too large to show ({} elements; the limit is {}).",
                t.shape.iter().product::<i64>(),
                artifacts::MAX_ELEMENTS
            ),
        );
        return;
    }
    let key = (path.to_path_buf(), t.name.clone());
    if t.is_matrix() {
        // The matrix is copied out of the file once, into the heatmap.
        if !app.heatmaps.contains_key(&key)
            && let Some(m) = crate::artifacts::as_matrix(t)
        {
            let map = default_colormap(&t.name, &m);
            app.heatmaps
                .insert(key.clone(), Heatmap::new(Arc::new(m), map));
        }
        let n = app.heatmaps.get(&key).map_or(0, |h| h.matrix().rows);
        let square = app
            .heatmaps
            .get(&key)
            .is_some_and(|h| h.matrix().rows == h.matrix().cols);
        let file_axes = file_axis_indices(ts, n).filter(|_| square);
        heatmap_view(ui, app, path, t, record, file_axes);
    } else {
        vector_view(ui, app, path, t);
    }
    let export_name = format!("{}.csv", t.name);
    // The CSV is made when asked for: a big matrix is megabytes of text.
    let csv = |app: &LetheApp| -> Arc<Vec<u8>> {
        let m = app
            .heatmaps
            .get(&key)
            .map(|h| Arc::clone(h.matrix()))
            .or_else(|| crate::artifacts::as_matrix(t).map(Arc::new));
        Arc::new(m.map(|m| m.to_csv()).unwrap_or_default().into_bytes())
    };
    ui.horizontal(|ui| {
        if ui
            .button("Export as CSV")
            .on_hover_text("Writes exports/<name>.csv in the run folder")
            .clicked()
        {
            let bytes = csv(app);
            app.commands.push(Command::Export {
                run: run.to_string(),
                name: export_name.clone(),
                bytes,
            });
        }
        if ui.button("Save CSV as…").clicked() {
            let bytes = csv(app);
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: export_name,
                    bytes,
                }));
        }
    });
}

/// The colour scale a matrix starts with: diverging for gaps and differences
/// (and anything with negative values), else viridis.
fn default_colormap(name: &str, m: &Matrix) -> Colormap {
    let n = name.to_lowercase();
    if n.contains("gap") || n.contains("diff") || n == "agm" || m.finite_range().0 < 0.0 {
        Colormap::Diverging
    } else {
        Colormap::Viridis
    }
}

/// Textures for the pictures of `indices`, in order, once all are loaded.
fn sample_textures(
    app: &mut LetheApp,
    ctx: &egui::Context,
    data: &Path,
    indices: &[i64],
) -> Option<Vec<egui::TextureHandle>> {
    app.ensure_samples(data, indices);
    let map = app.samples.get(data)?;
    let thumbs: Vec<(i64, Thumb)> = indices
        .iter()
        .map(|i| map.get(i).map(|t| (*i, t.clone())))
        .collect::<Option<_>>()?;
    Some(
        thumbs
            .iter()
            .map(|(i, t)| {
                app.textures
                    .get(ctx, &format!("s:{}/{i}/{}", data.display(), t.detail), t)
            })
            .collect(),
    )
}

/// Pictures for at most this many samples per axis: beyond it a cell is under
/// a pixel at any zoom that shows them all.
const MAX_AXIS_THUMBS: usize = 2000;

fn heatmap_view(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    path: &Path,
    t: &TensorData,
    record: Option<&Samples>,
    file_axes: Option<Vec<i64>>,
) {
    let key = (path.to_path_buf(), t.name.clone());
    let Some(heatmap) = app.heatmaps.get_mut(&key) else {
        return;
    };
    let (rows, cols) = (heatmap.matrix().rows, heatmap.matrix().cols);
    // Which samples the rows and columns are: the file says so (the
    // evaluation's heatmap_indices), or the user does when the size matches the
    // run's forget set (sorted, the order jobs see it in).
    let from_file = file_axes.is_some();
    let samples: Vec<i64> = file_axes.unwrap_or_else(|| {
        record
            .and_then(|r| crate::panels::inspect::read_indices(&r.forget).ok())
            .map(|mut v| {
                v.sort_unstable();
                v
            })
            .unwrap_or_default()
    });
    let mem = egui::Id::unique(("heatmap-axes", &key));
    let (mut rows_are, mut cols_are) = ui
        .ctx()
        .data(|d| d.get_temp::<(bool, bool)>(mem))
        .unwrap_or((from_file, from_file));
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
        let what = if from_file {
            "the file's heatmap samples"
        } else {
            "forget samples"
        };
        if !samples.is_empty() && samples.len() == rows {
            ui.checkbox(&mut rows_are, format!("rows are the {rows} {what}"));
        }
        if !samples.is_empty() && samples.len() == cols {
            ui.checkbox(&mut cols_are, format!("columns are the {cols} {what}"));
        }
    });
    ui.ctx()
        .data_mut(|d| d.insert_temp(mem, (rows_are, cols_are)));
    let data = record.map(|r| r.data.clone());
    let shown: Vec<i64> = samples.iter().copied().take(MAX_AXIS_THUMBS).collect();
    let textures = match &data {
        Some(d) if rows_are || cols_are => sample_textures(app, ui.ctx(), d, &shown),
        _ => None,
    };
    let labels: Vec<String> = samples.iter().map(|i| format!("#{i}")).collect();
    let Some(heatmap) = app.heatmaps.get_mut(&key) else {
        return;
    };
    heatmap.row_thumbs = textures.clone().filter(|_| rows_are);
    heatmap.col_thumbs = textures.filter(|_| cols_are);
    heatmap.row_labels = rows_are.then(|| labels.clone());
    heatmap.col_labels = cols_are.then_some(labels);
    heatmap.axis_titles = (
        if rows_are {
            "sample".into()
        } else {
            "row".into()
        },
        if cols_are {
            "sample".into()
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

/// AM before, AM after and the gap side by side, on one colour range for the
/// two AMs, with the samples' pictures on the axes.
fn alignment_triple(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    path: &Path,
    ts: &[TensorData],
    record: Option<&Samples>,
) {
    let names = ["am_before", "am_after", "agm"];
    let key = |name: &str| (path.to_path_buf(), format!("triple/{name}"));
    // The matrices are copied out of the file once, into their heatmaps.
    if names.iter().any(|n| !app.heatmaps.contains_key(&key(n))) {
        let get = |n: &str| {
            ts.iter()
                .find(|t| t.name == n)
                .and_then(crate::artifacts::as_matrix)
        };
        let (Some(before), Some(after), Some(gap)) =
            (get("am_before"), get("am_after"), get("agm"))
        else {
            return;
        };
        // Before and after share one colour range: the point is to compare them.
        let (b_lo, b_hi) = before.finite_range();
        let (a_lo, a_hi) = after.finite_range();
        let shared = (b_lo.min(a_lo), b_hi.max(a_hi));
        for (name, m) in names.into_iter().zip([before, after, gap]) {
            let map = default_colormap(name, &m);
            let mut hm = Heatmap::new(Arc::new(m), map);
            if name != "agm" {
                hm.set_range(shared);
            }
            app.heatmaps.insert(key(name), hm);
        }
    }
    ui.label(
        "Alignment Matrix: cosine similarity between augmented views of forget samples, \
         before and after unlearning; the Alignment Gap Matrix is before − after \
         (positive: the pair became less alike).",
    );
    let n = app
        .heatmaps
        .get(&key("am_before"))
        .map_or(0, |h| h.matrix().rows);
    let indices = file_axis_indices(ts, n);
    let textures = match (record, &indices) {
        (Some(r), Some(idx)) => {
            let shown: Vec<i64> = idx.iter().copied().take(MAX_AXIS_THUMBS).collect();
            sample_textures(app, ui.ctx(), &r.data, &shown)
        }
        _ => None,
    };
    let labels: Option<Vec<String>> = indices.map(|v| v.iter().map(|i| format!("#{i}")).collect());
    let width = (ui.available_width() - 16.0) / 3.0;
    ui.horizontal_top(|ui| {
        for (name, title) in
            names
                .into_iter()
                .zip(["AM before", "AM after", "AGM = before − after"])
        {
            let Some(hm) = app.heatmaps.get_mut(&key(name)) else {
                continue;
            };
            hm.row_thumbs = textures.clone();
            hm.col_thumbs = textures.clone();
            hm.row_labels = labels.clone();
            hm.col_labels = labels.clone();
            hm.axis_titles = ("sample".into(), "sample".into());
            // Three heatmaps in one parent: each needs its own id scope.
            ui.push_id(name, |ui| {
                ui.vertical(|ui| {
                    ui.set_width(width);
                    ui.label(RichText::new(title).strong());
                    hm.show(ui, width.max(220.0));
                });
            });
        }
    });
}

fn vector_view(ui: &mut egui::Ui, app: &mut LetheApp, path: &Path, t: &TensorData) {
    let key = format!("vector:{}:{}", path.display(), t.name);
    let derived = app
        .derived
        .entry(key)
        .or_insert_with(|| {
            let values: Vec<f64> = t.values.iter().flatten().map(|&v| f64::from(v)).collect();
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
            let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let nonzero = finite.iter().filter(|v| **v != 0.0).count();
            let summary = format!(
                "{} values · min {lo} · max {hi} · mean {mean:.4} · {nonzero} non-zero",
                values.len()
            );
            Arc::new(Derived::Vector(
                summary,
                artifacts::histogram(&[(t.name.as_str(), &values)], 60),
            ))
        })
        .clone();
    if let Derived::Vector(summary, hist) = derived.as_ref() {
        ui.label(summary);
        if let Some(h) = hist {
            crate::widgets::plots::histogram_plot(ui, &format!("vec-{}", t.name), h, "value");
        }
    }
}

/// ROC curves (linear and log-log), score histograms and the forget samples
/// most at risk, from the `scores_<role>` files in `dir`.
pub fn scores_view(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    dir: &Path,
    record: Option<&JobRecord>,
    samples: Option<&Samples>,
) {
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
    let derived = app
        .derived
        .entry(format!("scores:{}", dir.display()))
        .or_insert_with(|| {
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
            Arc::new(Derived::Scores(
                artifacts::rocs(&scores),
                artifacts::histogram(&groups, 40),
            ))
        })
        .clone();
    let Derived::Scores(rocs, hist) = derived.as_ref() else {
        return;
    };
    if rocs.is_empty() {
        ui.label("These scores have no non-member group, so no ROC curve can be drawn.");
    } else {
        for r in rocs {
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
    // ROC and score distributions side by side: they are two views of the
    // same question (can the attack tell the groups apart?).
    ui.horizontal_top(|ui| {
        if !rocs.is_empty() {
            ui.vertical(|ui| {
                ui.label(RichText::new("ROC").strong());
                crate::widgets::plots::roc_plot(
                    ui,
                    &format!("roc-{}", dir.display()),
                    rocs,
                    app.state.roc_log,
                );
            });
        }
        if let Some(h) = hist {
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
            if ui
                .button("Export scores (CSV)")
                .on_hover_text("role, position in the role, score: the histogram's data")
                .clicked()
            {
                app.commands.push(Command::Export {
                    run: run.id.clone(),
                    name: "scores.csv".into(),
                    bytes: Arc::new(artifacts::scores_csv(&scores).into_bytes()),
                });
            }
            for r in rocs {
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
    if let (Some(f), Some(s)) = (&scores.forget, samples) {
        at_risk(ui, app, f, s);
    }
}

/// The forget samples the attack still scores as most member-like.
fn at_risk(ui: &mut egui::Ui, app: &mut LetheApp, scores: &[f64], run: &Samples) {
    let Ok(mut indices) = crate::panels::inspect::read_indices(&run.forget) else {
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
    app.ensure_samples(&run.data, &wanted);
    ui.label(RichText::new("Forget samples most at risk (highest membership score)").strong());
    let thumbs: Vec<Thumb> = top
        .iter()
        .filter_map(|(i, s)| {
            app.samples
                .get(&run.data)
                .and_then(|m| m.get(i))
                .map(|t| Thumb {
                    label: format!("#{i} · {s:.3}"),
                    detail: format!("{} · score {s:.4}", t.detail),
                    ..t.clone()
                })
        })
        .collect();
    crate::widgets::thumb_grid(
        ui,
        &mut app.textures,
        &format!("risk:{}", run.key),
        &thumbs,
        56.0,
    );
}
