//! Per-sample proof of deletion. "Verify per sample" on a finished deletion
//! runs U-LiRA on its new model (an estimate first, then the run, through the
//! same job queue as every attack); the per-sample view reads the result:
//! how the forget p-values spread, the share of forgotten samples flagged next
//! to the never-seen line (the test's own false-positive rate), and the
//! forgotten samples the attack tells apart best, with their pictures.

use crate::app::{Command, LetheApp};
use crate::attack_report::{AttackSummary, PerSampleSummary, Share, with_interval};
use crate::form::{FormValues, form_ui};
use crate::jobs::{JobRecord, JobStatus};
use crate::state::View;
use crate::tasks::Loadable;
use crate::thumbs::Thumb;
use egui::{Color32, RichText};
use egui_plot::{Bar, BarChart, HLine, Legend, Plot};
use std::path::Path;

/// The U-LiRA attack plugin.
pub const ULIRA: &str = "org.lethe.attack.ulira";

const RED: Color32 = Color32::from_rgb(220, 60, 60);
const AMBER: Color32 = Color32::from_rgb(200, 150, 40);

/// The U-LiRA runs on this deletion's new model: the latest one of any status
/// (what is happening now) and the latest that succeeded (what is known).
fn ulira_runs<'a>(
    runs: &'a [JobRecord],
    r: &JobRecord,
    model: &Path,
) -> (Option<&'a JobRecord>, Option<&'a JobRecord>) {
    let mine = || {
        runs.iter().filter(|a| {
            a.spec.kind == "attack"
                && a.spec.plugin_id == ULIRA
                && a.spec.checkpoint == model
                && a.spec.data == r.spec.data
                && a.spec.forget == r.spec.forget
        })
    };
    (
        mine().next_back(),
        mine().rfind(|a| a.status == JobStatus::Succeeded),
    )
}

/// `12.3 % (246 of 2000) [10.9 %, 13.8 %]`.
pub fn share_text(s: &Share) -> String {
    format!(
        "{:.1} % ({} of {}) [{:.1} %, {:.1} %]",
        s.fraction * 100.0,
        s.k,
        s.n,
        s.low * 100.0,
        s.high * 100.0
    )
}

/// A p-value short enough for a caption: `0.012`, `3e-5`.
fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.0e}")
    }
}

/// What the forget line says against the never-seen line, in words.
pub fn reading(ps: &PerSampleSummary) -> String {
    let Some(never) = &ps.nonmember else {
        return "The attack tested no never-seen samples, so there is no false-positive line to \
                compare the forgotten samples with."
            .into();
    };
    let f = &ps.forget;
    if f.low > never.high {
        format!(
            "More forgotten samples are flagged than never-seen ones, and the intervals do not \
             overlap: about {:.1} % of the forgotten samples (at least {:.1} %) can still be told \
             apart from data the model never saw.",
            (f.fraction - never.fraction).max(0.0) * 100.0,
            (f.low - never.high).max(0.0) * 100.0
        )
    } else if f.high < never.low {
        "Fewer forgotten samples are flagged than never-seen ones: they look less familiar to \
         the model than unseen data (over-unlearning, which can itself give them away)."
            .into()
    } else {
        format!(
            "The forgotten samples are flagged about as often as never-seen ones (the intervals \
             overlap): on {} samples the attack cannot tell them apart from data the model never \
             saw.",
            f.n
        )
    }
}

/// The "Verify per sample" button of a finished deletion's next steps: opens
/// the panel below them and starts the estimate.
pub fn verify_button(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, model: &Path) {
    let done = app
        .project
        .as_ref()
        .is_some_and(|p| ulira_runs(&p.runs, r, model).1.is_some());
    if ui
        .button(format!(
            "3. Verify per sample{}",
            if done { " ✔" } else { "" }
        ))
        .on_hover_text(
            "U-LiRA: for each forgotten sample, can an attacker tell this model from one that \
             never saw it? Shows the cost first",
        )
        .clicked()
    {
        app.verify_open.insert(r.id.clone());
        if let Some((entry, params)) = ulira_with_params(app)
            && !app
                .estimates
                .contains_key(&super::attack::estimate_key(model, &entry, &params))
        {
            let key = super::attack::estimate_key(model, &entry, &params);
            super::attack::start_estimate(app, r, model, &entry, &key, &params);
        }
    }
}

/// The U-LiRA plugin and its form's values, when installed and valid.
fn ulira_with_params(
    app: &mut LetheApp,
) -> Option<(
    crate::catalog::PluginEntry,
    serde_json::Map<String, serde_json::Value>,
)> {
    let entry = app.catalog.ready()?.get(ULIRA)?.clone();
    let values = app
        .state
        .forms
        .entry(ULIRA.to_string())
        .or_insert_with(|| FormValues::defaults(&entry.info.schema));
    let params = values.validated(&entry.info.schema).ok()?;
    Some((entry, params))
}

/// The "Verify per sample" panel of a finished deletion: shown once asked for,
/// or when a U-LiRA run on its model exists.
pub fn verify_section(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord) {
    let Some(model) = r.model_artifact().map(|m| m.path.clone()) else {
        return;
    };
    let (latest, result) = app
        .project
        .as_ref()
        .map(|p| {
            let (a, b) = ulira_runs(&p.runs, r, &model);
            (a.cloned(), b.cloned())
        })
        .unwrap_or_default();
    if latest.is_none() && !app.verify_open.contains(&r.id) {
        return;
    }
    egui::Frame::group(ui.style())
        .inner_margin(10.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new("Verify per sample (U-LiRA)").strong().size(16.0));
            ui.add(
                egui::Label::new(
                    "For each forgotten sample: can an attacker tell this model from one that \
                     never saw it? U-LiRA trains shadow models on random halves of the data, \
                     deletes from them with the same method and settings as this deletion, and \
                     compares each forgotten sample's confidence under both kinds of shadow \
                     (Hayes et al., SaTML 2025).",
                )
                .wrap(),
            );
            launcher(ui, app, r, &model, latest.as_ref());
            if let Some(run) = &result {
                super::attack::ensure_report(app, run);
                match app.attack_reports.get(&run.id).cloned() {
                    Some(Loadable::Ready(s)) => match &s.per_sample {
                        Some(ps) => {
                            ui.add_space(6.0);
                            view(ui, app, &s, ps, &run.spec.data, &run.id);
                        }
                        None => {
                            ui.colored_label(
                                RED,
                                "This U-LiRA run wrote no p-values: the per-sample view needs them.",
                            );
                        }
                    },
                    Some(Loadable::Failed(e)) => {
                        ui.colored_label(RED, format!("The result could not be read: {e}"));
                    }
                    _ => {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("Reading the result…");
                        });
                    }
                }
                if ui.link("Open this U-LiRA run").clicked() {
                    app.commands.push(Command::Show(View::Run(run.id.clone())));
                }
            }
        });
}

/// Settings, the estimate, and the Run button; the status of a run under way.
fn launcher(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    r: &JobRecord,
    model: &Path,
    latest: Option<&JobRecord>,
) {
    let Some(cat) = app.catalog.ready().cloned() else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Scanning the plugins…");
        });
        return;
    };
    let Some(entry) = cat.get(ULIRA).cloned() else {
        ui.colored_label(
            RED,
            format!("The U-LiRA attack plugin ({ULIRA}) is not installed in the plugin folders."),
        );
        return;
    };
    let values = app
        .state
        .forms
        .entry(ULIRA.to_string())
        .or_insert_with(|| FormValues::defaults(&entry.info.schema));
    egui::CollapsingHeader::new("Settings (shadow models, significance level)")
        .id_salt(("ulira-settings", &r.id))
        .show(ui, |ui| {
            ui.push_id("ulira-form", |ui| form_ui(ui, &entry.info.schema, values));
        });
    let params = match values.validated(&entry.info.schema) {
        Ok(p) => p,
        Err(problems) => {
            for p in problems {
                ui.colored_label(RED, p);
            }
            return;
        }
    };
    let key = super::attack::estimate_key(model, &entry, &params);
    let estimate = app.estimates.get(&key).cloned();
    let running = latest.is_some_and(|l| !l.status.is_final());
    ui.horizontal_wrapped(|ui| match &estimate {
        Some(Loadable::Loading) => {
            ui.spinner();
            ui.label("Estimating the cost (a dry run that trains nothing)…");
        }
        Some(Loadable::Ready(line)) => {
            ui.label(RichText::new("Cost:").strong());
            ui.label(line);
        }
        Some(Loadable::Failed(e)) => {
            ui.colored_label(RED, format!("The estimate failed: {e}"));
        }
        None => {
            if ui.button("Estimate the cost").clicked() {
                super::attack::start_estimate(app, r, model, &entry, &key, &params);
            }
        }
    });
    ui.horizontal_wrapped(|ui| {
        // The cost is seen before anything is trained: it can be hours.
        let can_run = matches!(estimate, Some(Loadable::Ready(_))) && !running;
        if ui
            .add_enabled(
                can_run,
                egui::Button::new(RichText::new("▶ Run U-LiRA").strong()),
            )
            .on_disabled_hover_text(if running {
                "A U-LiRA run on this model is under way"
            } else {
                "Estimate the cost first"
            })
            .clicked()
        {
            super::attack::queue_attack(app, r, model, &entry, params.clone(), false);
            // The run fills the shadow cache, so the estimate no longer holds.
            app.estimates.remove(&key);
        }
        ui.label(
            RichText::new(
                "Runs on this machine (the executors a study can use are not offered for a single \
                 attack).",
            )
            .small()
            .weak(),
        );
    });
    if let Some(l) = latest.filter(|l| l.status != JobStatus::Succeeded) {
        ui.horizontal_wrapped(|ui| {
            if l.status.is_final() {
                ui.colored_label(RED, format!("The last U-LiRA run {}.", l.status.label()));
            } else {
                ui.spinner();
                ui.label(format!("U-LiRA is {}…", l.status.label()));
            }
            if ui.link("open it").clicked() {
                app.commands.push(Command::Show(View::Run(l.id.clone())));
            }
        });
    }
}

/// The forget p-values in their ten bins, against what a model that never saw
/// the samples would give (flat: p-values of unseen data are uniform).
fn histogram(ui: &mut egui::Ui, id: &str, ps: &PerSampleSummary) {
    let total: usize = ps.histogram.iter().sum();
    let top = ps.histogram.iter().copied().max().unwrap_or(0) as f64;
    let color = crate::widgets::plots::PALETTE[3];
    let bars = ps
        .histogram
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            Bar::new(0.05 + 0.1 * b as f64, n as f64)
                .width(0.095)
                .fill(color.gamma_multiply(0.45))
                .stroke(egui::Stroke::new(1.0, color))
        })
        .collect();
    let uniform = total as f64 / 10.0;
    Plot::new(id)
        .height(200.0)
        .allow_scroll(false)
        .allow_drag(false)
        .allow_zoom(false)
        // A margin, so that the first and last bars are drawn whole.
        .default_x_bounds(-0.02, 1.02)
        .default_y_bounds(0.0, (top.max(uniform) * 1.15).max(1.0))
        .legend(Legend::default())
        .x_axis_label("p-value of a forgotten sample")
        .y_axis_label("samples")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("forgotten samples", bars).color(color));
            p.hline(
                HLine::new("if the model had never seen them", uniform)
                    .color(crate::widgets::plots::PALETTE[0]),
            );
        });
}

/// The per-sample view of a U-LiRA result.
pub fn view(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    s: &AttackSummary,
    ps: &PerSampleSummary,
    data: &Path,
    key: &str,
) {
    ui.label(RichText::new("Each forgotten sample, one by one").strong());
    histogram(ui, &format!("pvalues-{key}"), ps);
    let mut rows = vec![(
        "Forgotten samples flagged",
        format!("{}  (p < {})", share_text(&ps.forget), ps.alpha),
    )];
    if let Some(n) = &ps.nonmember {
        rows.push(("Never-seen samples flagged", share_text(n)));
    }
    if let Some(m) = &ps.member {
        rows.push(("Retained samples flagged", share_text(m)));
    }
    rows.push((
        "AUC (0.5 = chance)",
        with_interval(s.forget.auc, s.forget.auc_ci),
    ));
    if let Some(t) = s.forget.tprs.iter().find(|t| (t.fpr - 0.01).abs() < 1e-9) {
        let mut text = with_interval(t.tpr, t.ci);
        if !t.resolved {
            text.push_str("  (too few never-seen samples to measure this FPR)");
        }
        rows.push(("TPR at 1 % FPR", text));
    }
    crate::widgets::kv_grid(ui, &format!("per-sample-{key}"), &rows);
    if let Some(n) = &ps.nonmember {
        ui.add(
            egui::Label::new(
                RichText::new(format!(
                    "Never-seen samples flagged: {:.1} % — the test's own false-positive rate; \
                     compare the forget line with it, not with alpha ({}).",
                    n.fraction * 100.0,
                    ps.alpha
                ))
                .weak(),
            )
            .wrap(),
        );
    }
    ui.add(egui::Label::new(RichText::new(reading(ps)).strong()).wrap());
    ui.label(
        RichText::new(
            "Brackets: 95 % intervals (exact for the shares, bootstrap for AUC and TPR).",
        )
        .small()
        .weak(),
    );
    if ps.top.is_empty() {
        return;
    }
    ui.add_space(6.0);
    ui.label(
        RichText::new("The forgotten samples the attack tells apart best (lowest p-value first)")
            .strong(),
    );
    let rows: Vec<i64> = ps.top.iter().map(|d| d.row).collect();
    app.ensure_samples(data, &rows);
    let pictures = app.samples.get(data);
    let caption = |d: &crate::attack_report::Distinguishable| match d.pvalue {
        Some(p) => format!("#{} · p {}", d.row, p_text(p)),
        None => format!("#{} · {:.3}", d.row, d.score),
    };
    let thumbs: Vec<Thumb> = ps
        .top
        .iter()
        .filter_map(|d| {
            pictures.and_then(|m| m.get(&d.row)).map(|t| Thumb {
                label: caption(d),
                detail: format!(
                    "{} · score {:.4}{}",
                    t.detail,
                    d.score,
                    d.pvalue
                        .map(|p| format!(" · p-value {p:.2e}"))
                        .unwrap_or_default()
                ),
                ..t.clone()
            })
        })
        .collect();
    crate::widgets::thumb_grid(
        ui,
        &mut app.textures,
        &format!("ulira:{key}"),
        &thumbs,
        56.0,
    );
    if thumbs.len() < rows.len() {
        let why = app
            .skipped(data)
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        let missing: Vec<String> = ps
            .top
            .iter()
            .filter(|d| pictures.and_then(|m| m.get(&d.row)).is_none())
            .map(caption)
            .collect();
        let waiting = rows
            .iter()
            .any(|i| app.samples_pending.contains(&(data.to_path_buf(), *i)));
        if waiting && why.is_empty() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Drawing the pictures…");
            });
        } else {
            ui.colored_label(
                AMBER,
                format!("No pictures{why} for: {}", missing.join(", ")),
            );
        }
    }
    ui.label(
        RichText::new(format!(
            "Dataset rows, best told apart first: {}",
            rows.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .small()
        .weak(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSpec;

    fn share(k: usize, n: usize, low: f64, high: f64) -> Share {
        Share {
            k,
            n,
            fraction: k as f64 / n as f64,
            low,
            high,
        }
    }

    fn summary(forget: Share, never: Option<Share>) -> PerSampleSummary {
        PerSampleSummary {
            alpha: 0.05,
            forget,
            nonmember: never,
            member: None,
            histogram: [0; 10],
            top: Vec::new(),
        }
    }

    #[test]
    fn the_forget_line_is_read_against_the_never_seen_line_not_alpha() {
        // 4 % flagged is below alpha, yet above a test whose own false-positive
        // rate is 1 %: the samples still stand out.
        let leak = summary(
            share(80, 2000, 0.032, 0.049),
            Some(share(20, 2000, 0.006, 0.015)),
        );
        let text = reading(&leak);
        assert!(
            text.starts_with("More forgotten samples are flagged"),
            "{text}"
        );
        assert!(text.contains("about 3.0 %"), "{text}");
        let same = summary(
            share(100, 2000, 0.041, 0.060),
            Some(share(96, 2000, 0.039, 0.058)),
        );
        assert!(reading(&same).contains("cannot tell them apart"));
        let over = summary(
            share(10, 2000, 0.002, 0.009),
            Some(share(100, 2000, 0.041, 0.060)),
        );
        assert!(reading(&over).contains("over-unlearning"));
        assert!(reading(&summary(share(1, 10, 0.0, 0.4), None)).contains("no never-seen"));
        assert_eq!(
            share_text(&share(246, 2000, 0.109, 0.138)),
            "12.3 % (246 of 2000) [10.9 %, 13.8 %]"
        );
    }

    fn run(id: &str, plugin: &str, ckpt: &str, status: JobStatus) -> JobRecord {
        let mut r = JobRecord::new(
            id.into(),
            JobSpec {
                kind: if plugin.contains("method") {
                    "method"
                } else {
                    "attack"
                }
                .into(),
                plugin_id: plugin.into(),
                plugin_name: plugin.into(),
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
    fn the_panel_shows_the_latest_ulira_run_and_the_latest_result() {
        let del = run("del", "org.x.method", "/orig.pt", JobStatus::Succeeded);
        let model = Path::new("/new.st");
        let runs = vec![
            del.clone(),
            run("u1", ULIRA, "/new.st", JobStatus::Succeeded),
            run(
                "l1",
                "org.lethe.attack.lira",
                "/new.st",
                JobStatus::Succeeded,
            ),
            run("u2", ULIRA, "/orig.pt", JobStatus::Succeeded),
            run("u3", ULIRA, "/new.st", JobStatus::Running),
        ];
        let (latest, result) = ulira_runs(&runs, &del, model);
        assert_eq!(latest.map(|r| r.id.as_str()), Some("u3"));
        assert_eq!(
            result.map(|r| r.id.as_str()),
            Some("u1"),
            "a run under way does not hide the last result; other attacks and models are left out"
        );
        assert_eq!(ulira_runs(&runs[..1], &del, model), (None, None));
    }
}
