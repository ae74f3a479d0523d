//! Per-sample proof of deletion. "Verify per sample" on a finished deletion
//! runs U-LiRA on its new model (an estimate first, then the run, through the
//! same job queue as every attack); the per-sample view reads the result:
//! how the forget p-values spread, the share of forgotten samples flagged next
//! to the never-seen line (the test's own false-positive rate), and the
//! forgotten samples the attack tells apart best, with their pictures.

use crate::app::LetheApp;
use crate::attack_report::{AttackSummary, PerSampleSummary, Share, with_interval};
use crate::form::{FormValues, form_ui};
use crate::jobs::JobRecord;
use crate::tasks::Loadable;
use crate::thumbs::Thumb;
use crate::verify::{Verification, VerifySettings};
use egui::{Color32, RichText};
use egui_plot::{Bar, BarChart, HLine, Legend, Plot};
use std::path::Path;

/// The U-LiRA attack plugin.
pub const ULIRA: &str = "org.lethe.attack.ulira";
/// The LiRA attack plugin (the "before" side).
pub const LIRA: &str = lethe_engine::eval::per_sample::LIRA;

const RED: Color32 = Color32::from_rgb(220, 60, 60);
const AMBER: Color32 = Color32::from_rgb(200, 150, 40);

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

/// The deletion's newest verification, loaded from its run folder once.
fn verification(app: &mut LetheApp, r: &JobRecord) -> Option<Loadable<Option<Box<Verification>>>> {
    if !app.verifications.contains_key(&r.id) && !app.verifying.contains_key(&r.id) {
        let dir = app.project.as_ref()?.run_dir(&r.id);
        app.verifications.insert(r.id.clone(), Loadable::Loading);
        app.tasks.load_verification(r.id.clone(), dir);
    }
    app.verifications.get(&r.id).cloned()
}

/// The "Verify per sample" button of a finished deletion's next steps: opens
/// the panel below them and starts the estimate.
pub fn verify_button(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, _model: &Path) {
    let done = matches!(verification(app, r), Some(Loadable::Ready(Some(_))));
    if ui
        .button(format!(
            "3. Verify per sample{}",
            if done { " ✔" } else { "" }
        ))
        .on_hover_text(
            "U-LiRA on the new model and LiRA on the original with the same shadow models: for \
             each forgotten sample, can an attacker tell this model from one that never saw it, \
             and which retained samples became more exposed? Shows the cost first",
        )
        .clicked()
    {
        app.verify_open.insert(r.id.clone());
        if let Some((req, key)) = estimate_request(app, r)
            && !app.estimates.contains_key(&key)
        {
            start_estimate(app, req, key);
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

/// What estimating the verification of `r` with the form's settings needs,
/// and where its answer is kept (a change of settings asks for a new one).
fn estimate_request(
    app: &mut LetheApp,
    r: &JobRecord,
) -> Option<(lethe_engine::eval::per_sample::VerifyRequest, String)> {
    let (ulira, params) = ulira_with_params(app)?;
    let lira = app.catalog.ready()?.get(LIRA)?.clone();
    let run_dir = app.project.as_ref()?.run_dir(&r.id);
    let settings = VerifySettings::from_params(&params);
    let key = format!(
        "verify|{}|{settings:?}|{}",
        run_dir.display(),
        r.spec.device
    );
    let req = lethe_engine::eval::per_sample::VerifyRequest {
        run_dir,
        settings,
        // The estimate writes nothing there.
        out_dir: std::env::temp_dir(),
        device: r.spec.device.clone(),
        metrics: Default::default(),
        ulira: (ulira.library.clone(), ulira.info.clone()),
        lira: (lira.library.clone(), lira.info.clone()),
    };
    Some((req, key))
}

fn start_estimate(
    app: &mut LetheApp,
    req: lethe_engine::eval::per_sample::VerifyRequest,
    key: String,
) {
    app.estimates.insert(key.clone(), Loadable::Loading);
    app.tasks
        .estimate_verification(key, app.worker_opts.clone(), req);
}

/// Where the shadow models go: this machine (some at once) or Slurm with the
/// Study page's settings. Kept per deletion for the session.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placement {
    slurm: bool,
    jobs: usize,
}

fn placement_ui(
    ui: &mut egui::Ui,
    app: &LetheApp,
    r: &JobRecord,
) -> Result<lethe_engine::exec::ExecutorConfig, String> {
    let id = egui::Id::unique(("verify-placement", &r.id));
    let mut p = ui
        .ctx()
        .data(|d| d.get_temp::<Placement>(id))
        .unwrap_or(Placement {
            slurm: false,
            jobs: 1,
        });
    let cores = crate::study::cores();
    ui.horizontal_wrapped(|ui| {
        ui.label("Shadow models run on");
        ui.radio_value(&mut p.slurm, false, "this machine")
            .on_hover_text("One after another, or several at once");
        ui.radio_value(&mut p.slurm, true, "Slurm cluster")
            .on_hover_text(
                "Each shadow model and its unlearned copy becomes a task of one Slurm job array, \
             with the settings of the Study page's \"Run on\" (partition, time, memory, GPUs)",
            );
        if !p.slurm {
            ui.label("at once");
            ui.add(egui::DragValue::new(&mut p.jobs).range(1..=cores))
                .on_hover_text(format!(
                    "1: one after another in the verification's own process; more: each its \
                     own process (this machine has {cores} cores)"
                ));
        }
    });
    ui.ctx().data_mut(|d| d.insert_temp(id, p));
    if p.slurm {
        app.state
            .study_draft
            .run_on
            .slurm
            .settings()
            .map(lethe_engine::exec::ExecutorConfig::Slurm)
            .map_err(|e| format!("Slurm settings (Study page): {}", e.join("; ")))
    } else {
        Ok(lethe_engine::exec::ExecutorConfig::Local { jobs: p.jobs })
    }
}

/// The "Verify per sample" panel of a finished deletion: shown once asked for,
/// while one runs, or when one was made.
pub fn verify_section(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord) {
    let Some(model) = r.model_artifact().map(|m| m.path.clone()) else {
        return;
    };
    let state = verification(app, r);
    let running = app.verifying.get(&r.id).cloned();
    let have = matches!(state, Some(Loadable::Ready(Some(_))));
    if !have && running.is_none() && !app.verify_open.contains(&r.id) {
        return;
    }
    egui::Frame::group(ui.style())
        .inner_margin(10.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(
                RichText::new("Verify per sample (U-LiRA after, LiRA before)")
                    .strong()
                    .size(16.0),
            );
            ui.add(
                egui::Label::new(
                    "For each forgotten sample: can an attacker tell this model from one that \
                     never saw it? U-LiRA trains shadow models on random halves of the data, \
                     deletes from them with the same method and settings as this deletion, and \
                     compares each forgotten sample's confidence under both kinds of shadow \
                     (Hayes et al., SaTML 2025). LiRA on the original model, with the same \
                     shadow models, gives the same numbers before the deletion, and shows which \
                     retained samples the deletion made more exposed (the onion effect).",
                )
                .wrap(),
            );
            launcher(ui, app, r, &model, running.as_ref());
            match &state {
                Some(Loadable::Ready(Some(v))) => {
                    ui.add_space(6.0);
                    result_view(ui, app, r, v);
                }
                Some(Loadable::Failed(e)) => {
                    ui.colored_label(RED, "The verification failed:");
                    ui.add(egui::Label::new(RichText::new(e).monospace().small()).wrap());
                }
                _ => {}
            }
        });
}

/// Settings, executor, the estimate, Run and Stop; the progress of a run.
fn launcher(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    r: &JobRecord,
    _model: &Path,
    running: Option<&crate::verify::Running>,
) {
    let Some(cat) = app.catalog.ready().cloned() else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Scanning the plugins…");
        });
        return;
    };
    let (Some(entry), true) = (cat.get(ULIRA).cloned(), cat.get(LIRA).is_some()) else {
        ui.colored_label(
            RED,
            format!(
                "The U-LiRA ({ULIRA}) and LiRA ({LIRA}) attack plugins must both be installed \
                 in the plugin folders."
            ),
        );
        return;
    };
    if let Some(run) = running {
        let (line, fraction) = run
            .progress
            .lock()
            .map(|p| (p.line.clone(), p.fraction))
            .unwrap_or_default();
        ui.horizontal_wrapped(|ui| {
            ui.spinner();
            let elapsed = crate::project::now() - run.started;
            ui.label(format!("Verifying… {elapsed:.0} s"));
            if ui
                .button("⏹ Stop")
                .on_hover_text("Stops both attacks; trained shadow models stay in the cache")
                .clicked()
            {
                run.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        if let Some(f) = fraction {
            ui.add(egui::ProgressBar::new(f as f32).show_percentage());
        }
        if !line.is_empty() {
            ui.label(RichText::new(line).small().weak());
        }
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(500));
        return;
    }
    let values = app
        .state
        .forms
        .entry(ULIRA.to_string())
        .or_insert_with(|| FormValues::defaults(&entry.info.schema));
    egui::CollapsingHeader::new("Settings (shadow models, significance level)")
        .id_salt(("ulira-settings", &r.id))
        .show(ui, |ui| {
            ui.push_id("ulira-form", |ui| form_ui(ui, &entry.info.schema, values));
            ui.label(
                RichText::new(
                    "Both attacks take the shadow models, pool, held-out size, population \
                     samples, seed and level from here; variance, decision rate and batch size \
                     keep the plugins' defaults.",
                )
                .small()
                .weak(),
            );
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
    let executor = placement_ui(ui, app, r);
    let Some((req, key)) = estimate_request(app, r) else {
        return;
    };
    let estimate = app.estimates.get(&key).cloned();
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
                start_estimate(app, req.clone(), key.clone());
            }
        }
    });
    if let Err(e) = &executor {
        ui.colored_label(RED, e);
    }
    // The cost is seen before anything is trained: it can be hours.
    let can_run = matches!(estimate, Some(Loadable::Ready(_))) && executor.is_ok();
    if ui
        .add_enabled(
            can_run,
            egui::Button::new(RichText::new("▶ Verify per sample").strong()),
        )
        .on_disabled_hover_text("Estimate the cost first")
        .clicked()
        && let Ok(executor) = executor
        && let Some(project) = app.project.as_ref()
    {
        let now = crate::project::now();
        let run_dir = project.run_dir(&r.id);
        let job = crate::verify::VerifyJob {
            exe: app.worker_opts.exe.clone(),
            plugin_dirs: app.extra_plugin_dirs.clone(),
            out: crate::verify::new_folder(&run_dir, now),
            run_dir,
            settings: VerifySettings::from_params(&params),
            device: r.spec.device.clone(),
            executor,
        };
        let running = crate::verify::Running {
            cancel: Default::default(),
            progress: Default::default(),
            started: now,
            out: job.out.clone(),
        };
        app.verifying.insert(r.id.clone(), running.clone());
        app.tasks.verify_samples(r.id.clone(), job, running);
        // The run fills the shadow cache, so the estimate no longer holds.
        app.estimates.remove(&key);
    }
}

/// `0.91 [0.89, 0.93]` or `–`.
fn tpr_at(s: &AttackSummary, fpr: f64) -> String {
    s.forget
        .tprs
        .iter()
        .find(|t| (t.fpr - fpr).abs() < 1e-9)
        .map(|t| with_interval(t.tpr, t.ci))
        .unwrap_or_else(|| "–".into())
}

/// The before/after table: the same numbers on the original (LiRA) and the
/// unlearned model (U-LiRA).
pub fn before_after_rows(v: &Verification) -> Vec<(String, String, String)> {
    let (b, a) = (&v.before, &v.after);
    let mut rows = vec![
        (
            "AUC, forgotten vs never-seen (0.5 = chance)".to_string(),
            with_interval(b.forget.auc, b.forget.auc_ci),
            with_interval(a.forget.auc, a.forget.auc_ci),
        ),
        ("TPR at 1 % FPR".into(), tpr_at(b, 0.01), tpr_at(a, 0.01)),
        (
            "TPR at 0.1 % FPR".into(),
            tpr_at(b, 0.001),
            tpr_at(a, 0.001),
        ),
    ];
    let alpha = v.file.settings.alpha;
    let share = |s: &AttackSummary, pick: fn(&PerSampleSummary) -> Option<&Share>| {
        s.per_sample
            .as_ref()
            .and_then(pick)
            .map(share_text)
            .unwrap_or_else(|| "–".into())
    };
    rows.push((
        format!("Forgotten samples with p < {alpha}"),
        share(b, |p| Some(&p.forget)),
        share(a, |p| Some(&p.forget)),
    ));
    rows.push((
        "Never-seen samples flagged (false-positive line)".into(),
        share(b, |p| p.nonmember.as_ref()),
        share(a, |p| p.nonmember.as_ref()),
    ));
    rows.push((
        "Retained samples flagged".into(),
        share(b, |p| p.member.as_ref()),
        share(a, |p| p.member.as_ref()),
    ));
    rows
}

/// The onion effect in one sentence.
pub fn onion_text(o: &crate::verify::Onion, alpha: f64) -> String {
    format!(
        "Of {} held-out retained samples, {} became distinguishable (p < {alpha}) that were not \
         before and {} stopped being so; the median change of −log10 p is {:+.2}.",
        o.samples, o.newly_significant, o.no_longer_significant, o.median_change
    )
}

/// A finished verification: before and after side by side, the per-sample
/// view of U-LiRA, and the retained samples that became more exposed.
fn result_view(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, v: &Verification) {
    ui.label(RichText::new("Before and after the deletion").strong());
    egui::Grid::new(("verify-before-after", &r.id))
        .num_columns(3)
        .spacing([16.0, 4.0])
        .striped(true)
        .show(ui, |ui| {
            ui.label("");
            ui.label(RichText::new("before (original, LiRA)").strong());
            ui.label(RichText::new("after (unlearned, U-LiRA)").strong());
            ui.end_row();
            for (name, b, a) in before_after_rows(v) {
                ui.label(name);
                ui.label(b);
                ui.label(a);
                ui.end_row();
            }
        });
    ui.label(
        RichText::new(format!(
            "{} shadow models, shared by both attacks; {}took {:.0} s.",
            v.file.settings.shadow_models,
            v.file
                .estimated_seconds
                .map(|e| format!("estimated {e:.0} s, "))
                .unwrap_or_default(),
            v.file.seconds
        ))
        .small()
        .weak(),
    );
    ui.add_space(6.0);
    let data = r.spec.data.clone();
    if let Some(ps) = v.after.per_sample.clone() {
        view(ui, app, &v.after, &ps, &data, &format!("verify-{}", r.id));
    }
    ui.add_space(6.0);
    ui.label(RichText::new("Retained samples that became more exposed").strong());
    ui.add(egui::Label::new(onion_text(&v.file.onion, v.file.settings.alpha)).wrap());
    if v.file.onion.most_exposed.is_empty() {
        ui.label(RichText::new("No retained sample became more exposed.").weak());
    } else {
        let items: Vec<(i64, String, String)> = v
            .file
            .onion
            .most_exposed
            .iter()
            .map(|l| {
                (
                    l.row,
                    format!(
                        "#{} · p {} -> {}",
                        l.row,
                        p_text(l.p_before),
                        p_text(l.p_after)
                    ),
                    format!("p-value before {:.2e}, after {:.2e}", l.p_before, l.p_after),
                )
            })
            .collect();
        sample_pictures(ui, app, &data, &format!("onion:{}", r.id), &items);
    }
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new("Files:").small().weak());
        ui.label(
            RichText::new(v.folder.display().to_string())
                .monospace()
                .small(),
        );
        if ui.small_button("Open the folder").clicked() {
            app.tasks.open_externally(v.folder.clone());
        }
    });
}

/// Pictures of dataset rows with their captions (through the sample-thumbnail
/// workers), and what could not be drawn.
fn sample_pictures(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    data: &Path,
    salt: &str,
    items: &[(i64, String, String)],
) {
    let rows: Vec<i64> = items.iter().map(|i| i.0).collect();
    app.ensure_samples(data, &rows);
    let pictures = app.samples.get(data);
    let thumbs: Vec<Thumb> = items
        .iter()
        .filter_map(|(row, label, detail)| {
            pictures.and_then(|m| m.get(row)).map(|t| Thumb {
                label: label.clone(),
                detail: format!("{} · {detail}", t.detail),
                ..t.clone()
            })
        })
        .collect();
    crate::widgets::thumb_grid(ui, &mut app.textures, salt, &thumbs, 56.0);
    if thumbs.len() < rows.len() {
        let why = app
            .skipped(data)
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        let missing: Vec<String> = items
            .iter()
            .filter(|(row, ..)| pictures.and_then(|m| m.get(row)).is_none())
            .map(|i| i.1.clone())
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
    let caption = |d: &crate::attack_report::Distinguishable| match d.pvalue {
        Some(p) => format!("#{} · p {}", d.row, p_text(p)),
        None => format!("#{} · {:.3}", d.row, d.score),
    };
    let items: Vec<(i64, String, String)> = ps
        .top
        .iter()
        .map(|d| {
            (
                d.row,
                caption(d),
                format!(
                    "score {:.4}{}",
                    d.score,
                    d.pvalue
                        .map(|p| format!(" · p-value {p:.2e}"))
                        .unwrap_or_default()
                ),
            )
        })
        .collect();
    sample_pictures(ui, app, data, &format!("ulira:{key}"), &items);
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

    fn attack(auc: f64, flagged: usize) -> AttackSummary {
        crate::attack_report::parse(&serde_json::json!({
            "attack": {"name": "x"},
            "checkpoint": "/m",
            "metrics": {
                "forget": {
                    "members": 100, "non_members": 100, "auc": auc,
                    "auc_ci": {"low": auc - 0.05, "high": auc + 0.05},
                    "tpr_at_fpr": [
                        {"fpr": 0.01, "tpr": 0.2, "ci": {"low": 0.1, "high": 0.3}, "resolved": true}
                    ]
                },
                "per_sample": {
                    "alpha": 0.05, "histogram": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    "forget": {"k": flagged, "n": 100, "fraction": flagged as f64 / 100.0,
                               "low": 0.0, "high": 0.5},
                    "nonmember": {"k": 5, "n": 100, "fraction": 0.05, "low": 0.02, "high": 0.11}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn before_and_after_stand_side_by_side_and_the_onion_is_counted() {
        let file: crate::verify::PerSampleFile = serde_json::from_value(serde_json::json!({
            "settings": {"shadow_models": 8, "alpha": 0.05},
            "most_distinguishable": [],
            "onion": {"samples": 100, "newly_significant": 3, "no_longer_significant": 1,
                      "median_change": 0.12,
                      "most_exposed": [{"row": 9, "p_before": 0.5, "p_after": 0.0004}]},
            "estimated_seconds": null, "seconds": 20.0
        }))
        .unwrap();
        let v = Verification {
            folder: "/r/verify-samples-1".into(),
            file,
            after: attack(0.52, 6),
            before: attack(0.81, 40),
        };
        let rows = before_after_rows(&v);
        assert_eq!(rows[0].1, with_interval(0.81, Some((0.76, 0.86))));
        assert_eq!(rows[0].2, with_interval(0.52, Some((0.47, 0.57))));
        assert!(rows[3].0.contains("p < 0.05"), "{:?}", rows[3]);
        assert!(rows[3].1.starts_with("40.0 % (40 of 100)"), "{}", rows[3].1);
        assert!(rows[3].2.starts_with("6.0 % (6 of 100)"), "{}", rows[3].2);
        assert_eq!(rows[2].1, "–", "no TPR at 0.1 % was measured");
        assert_eq!(rows[5].1, "–", "no retained line");
        let text = onion_text(&v.file.onion, 0.05);
        assert!(
            text.contains("3 became distinguishable") && text.contains("1 stopped"),
            "{text}"
        );
        assert!(text.contains("+0.12"), "{text}");
        assert_eq!(p_text(0.0004), "4e-4");
    }
}
