//! The compliance report of a finished deletion run: format choice, what the
//! report will contain (evaluation, attacks, retrained reference), and the
//! button that writes it into the run folder (off the UI thread).

use crate::app::{Command, LetheApp};
use crate::export::{REPORT_FORMATS, ReportJob, unique_path};
use crate::jobs::{JobRecord, JobStatus};
use crate::tasks::Loadable;
use egui::{Color32, RichText};
use lethe_engine::report::{DeletionSources, Format};
use std::path::Path;

/// The exact-retraining plugin: its runs are the reference of a report.
pub use lethe_engine::report::verdict::RETRAIN_ID;

/// The latest finished retrain run on the same model, data and forget set.
pub fn retrain_run<'a>(runs: &'a [JobRecord], r: &JobRecord) -> Option<&'a JobRecord> {
    runs.iter().rev().find(|x| {
        x.id != r.id
            && x.spec.plugin_id == RETRAIN_ID
            && x.status == JobStatus::Succeeded
            && x.spec.checkpoint == r.spec.checkpoint
            && x.spec.data == r.spec.data
            && x.spec.forget == r.spec.forget
    })
}

/// Finished attack runs on the models of `r` (its original and its result).
fn attacks_on<'a>(runs: &'a [JobRecord], r: &JobRecord) -> Vec<&'a JobRecord> {
    let model = r.model_artifact().map(|a| a.path.clone());
    runs.iter()
        .filter(|a| {
            a.spec.kind == "attack"
                && a.status == JobStatus::Succeeded
                && a.spec.data == r.spec.data
                && a.spec.forget == r.spec.forget
                && (a.spec.checkpoint == r.spec.checkpoint
                    || Some(&a.spec.checkpoint) == model.as_ref())
        })
        .collect()
}

/// The format of a file extension (PDF when unknown).
pub fn format_from(ext: &str) -> Format {
    REPORT_FORMATS
        .iter()
        .map(|(f, _)| *f)
        .find(|f| f.extension() == ext)
        .unwrap_or(Format::Pdf)
}

/// The report job for run `r`.
pub fn report_job(app: &LetheApp, r: &JobRecord, format: Format) -> Option<ReportJob> {
    let p = app.project.as_ref()?;
    let run_dir = p.run_dir(&r.id);
    let retrain = retrain_run(&p.runs, r);
    let mut attack_runs = attacks_on(&p.runs, r);
    if let Some(rt) = retrain {
        attack_runs.extend(attacks_on(&p.runs, rt).into_iter().filter(|a| {
            rt.model_artifact()
                .is_some_and(|m| m.path == a.spec.checkpoint)
        }));
    }
    let mut attacks = Vec::new();
    let mut pending = Vec::new();
    for a in attack_runs {
        let out = p.run_dir(&a.id).join("output");
        if out.join(crate::attack_report::ATTACK_FILE).is_file() {
            attacks.push(out);
        } else {
            pending.push(crate::attack_report::ReportJob {
                spec: a.spec.clone(),
                descriptor: app
                    .catalog
                    .ready()
                    .and_then(|c| c.get(&a.spec.plugin_id))
                    .map(|e| e.info.clone()),
                out_dir: out,
                seconds: a.elapsed(crate::project::now()).unwrap_or(0.0),
            });
        }
    }
    attacks.dedup();
    let stamp = crate::project::timestamp(crate::project::now());
    Some(ReportJob {
        sources: DeletionSources {
            run: run_dir.clone(),
            evaluations: Vec::new(),
            attacks,
            retrain: retrain.map(|x| p.run_dir(&x.id)),
        },
        pending_attacks: pending,
        format,
        out: unique_path(
            &run_dir.join("exports"),
            &format!("report-{stamp}"),
            format.extension(),
        ),
        workspace: p.dir.clone(),
        now: crate::project::now() as i64,
    })
}

/// What the verdict of `job` depends on, as a key: the attack folders, the
/// retrained reference, and the evaluations' and per-sample verifications'
/// modification times.
fn evidence_key(job: &ReportJob, run_dir: &Path) -> String {
    let mut evaluations: Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> =
        std::fs::read_dir(run_dir)
            .map(|rd| {
                // Per-sample verifications are evidence too: the report reads
                // every subfolder holding a per_sample.json.
                rd.filter_map(Result::ok)
                    .flat_map(|e| {
                        [
                            e.path().join("evaluation.json"),
                            e.path().join(crate::verify::RESULT_FILE),
                        ]
                    })
                    .filter(|p| p.is_file())
                    .map(|p| {
                        let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                        (p, t)
                    })
                    .collect()
            })
            .unwrap_or_default();
    evaluations.sort();
    let pending: Vec<_> = job.pending_attacks.iter().map(|a| &a.out_dir).collect();
    format!(
        "{:?}|{:?}|{:?}|{:?}",
        job.sources.attacks, pending, job.sources.retrain, evaluations
    )
}

/// The verdict banner of a finished deletion run, at the top of its view: the
/// verdict as the evidence stands (worked out again when it changes), what to
/// do next, and buttons to act on it.
pub fn verdict_banner(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &Path) {
    let Some(job) = report_job(app, r, Format::Pdf) else {
        return;
    };
    let key = evidence_key(&job, run_dir);
    if app.verdicts.get(&r.id).is_none_or(|(k, _)| *k != key) {
        // Keep showing the last verdict while the new one is worked out.
        let last = app
            .verdicts
            .get(&r.id)
            .map(|(_, v)| v.clone())
            .unwrap_or(Loadable::Loading);
        app.verdicts.insert(r.id.clone(), (key.clone(), last));
        app.verdicts_updating.insert(r.id.clone());
        app.tasks.check_verdict(r.id.clone(), key, job);
    }
    let Some((_, state)) = app.verdicts.get(&r.id).cloned() else {
        return;
    };
    match state {
        Loadable::Ready(v) => {
            if app.verdicts_updating.contains(&r.id) {
                // The verdict below predates evidence that just arrived.
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.weak(
                        "New evidence: working out the verdict again; the one below is the last.",
                    );
                });
            }
            let report = match app.exports.get(&r.id) {
                Some(Loadable::Ready(w)) => Some(w.path.clone()),
                _ => None,
            };
            let offer_reference = r.spec.plugin_id != RETRAIN_ID
                && app
                    .project
                    .as_ref()
                    .is_some_and(|p| retrain_run(&p.runs, r).is_none())
                && reference_spec(app, r).is_some();
            match crate::widgets::verdict::banner(ui, &v, report.as_deref(), offer_reference) {
                Some(crate::widgets::verdict::BannerAction::OpenReport) => {
                    if let Some(p) = report {
                        app.tasks.open_externally(p);
                    }
                }
                Some(crate::widgets::verdict::BannerAction::OpenFolder) => {
                    app.tasks.open_externally(run_dir.to_path_buf());
                }
                Some(crate::widgets::verdict::BannerAction::MakeReference) => {
                    if let Some(spec) = reference_spec(app, r) {
                        app.commands.push(Command::QueueQuietly(spec));
                        app.commands.push(Command::Notify(
                            "Queued Retrain (exact) as the reference; evaluate and attack it when it finishes".into(),
                            false,
                        ));
                    }
                }
                None => {}
            }
        }
        Loadable::Failed(e) => {
            ui.colored_label(
                Color32::from_rgb(220, 60, 60),
                format!("The verdict cannot be worked out: {e}"),
            );
        }
        Loadable::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Working out the verdict…");
            });
        }
    }
}

/// Exact retraining on the same request as `r`, with the plugin's defaults.
fn reference_spec(app: &LetheApp, r: &JobRecord) -> Option<crate::jobs::JobSpec> {
    let entry = app.catalog.ready()?.get(RETRAIN_ID)?;
    let params = crate::form::FormValues::defaults(&entry.info.schema)
        .validated(&entry.info.schema)
        .ok()?;
    Some(crate::jobs::JobSpec {
        kind: "method".into(),
        plugin_id: entry.info.id.clone(),
        plugin_name: entry.info.name.clone(),
        library: entry.library.clone(),
        params: serde_json::Value::Object(params),
        ..r.spec.clone()
    })
}

fn has_evaluation(run_dir: &Path) -> bool {
    std::fs::read_dir(run_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.path().join("evaluation.json").is_file())
        })
        .unwrap_or(false)
}

/// The report section of a finished deletion run.
pub fn section(ui: &mut egui::Ui, app: &mut LetheApp, r: &JobRecord, run_dir: &Path) {
    ui.label(RichText::new("Compliance report").strong());
    ui.label(
        "A document for the file: what was asked to be forgotten, how, on which model, the \
         evidence (accuracy before and after, membership attacks, comparison with a retrained \
         model when there is one), a verdict with its thresholds, and the file hashes.",
    );
    let Some(p) = &app.project else { return };
    let evaluated = has_evaluation(run_dir);
    let attacks = attacks_on(&p.runs, r).len();
    let retrain = retrain_run(&p.runs, r).map(|x| x.id.clone());
    let tick = |ok: bool| {
        if ok {
            RichText::new("✔").color(Color32::from_rgb(60, 170, 80))
        } else {
            RichText::new("–").weak()
        }
    };
    egui::Grid::new("report-inputs").num_columns(2).show(ui, |ui| {
        ui.label(tick(evaluated));
        ui.label(if evaluated {
            "evaluation (accuracy before and after)".to_string()
        } else {
            "no evaluation yet: press Evaluate above".to_string()
        });
        ui.end_row();
        ui.label(tick(attacks > 0));
        ui.label(if attacks > 0 {
            format!("{attacks} finished attack run(s) on the original or the new model")
        } else {
            "no attack yet: run one above".to_string()
        });
        ui.end_row();
        // The report reads every subfolder holding a per_sample.json.
        let verified = crate::verify::latest_folder(run_dir);
        ui.label(tick(verified.is_some()));
        ui.label(match &verified {
            Some(_) => "per-sample verification (U-LiRA after, LiRA before), signed into the \
                        certificate"
                .to_string(),
            None => "no per-sample verification yet: 3. Verify per sample above".to_string(),
        });
        ui.end_row();
        ui.label(tick(retrain.is_some()));
        ui.label(match &retrain {
            Some(id) => format!("retrained reference: {id}"),
            None => "no retrained reference (run the Retrain method on the same request to add gaps to retrain)".into(),
        });
        ui.end_row();
    });
    let state = app.exports.get(&r.id).cloned();
    let busy = matches!(state, Some(Loadable::Loading));
    ui.horizontal(|ui| {
        let mut ext = app.state.report_format.clone();
        egui::ComboBox::from_id_salt("report-format")
            .selected_text(
                REPORT_FORMATS
                    .iter()
                    .find(|(f, _)| f.extension() == ext)
                    .map_or("PDF", |(_, l)| *l),
            )
            .show_ui(ui, |ui| {
                for (f, label) in REPORT_FORMATS {
                    ui.selectable_value(&mut ext, f.extension().to_string(), label);
                }
            }).response.on_hover_text("Report format");
        app.state.report_format = ext.clone();
        let b = ui
            .add_enabled(
                !busy,
                egui::Button::new(RichText::new("📄 Write the deletion report").strong()),
            )
            .on_hover_text("Written into exports/ in the run folder, never over an earlier one, signed with the project's key (its certificate beside it as .cert.json) and recorded in the project's audit log");
        if b.clicked()
            && let Some(job) = report_job(app, r, format_from(&ext))
        {
            app.exports.insert(r.id.clone(), Loadable::Loading);
            app.tasks.write_report(r.id.clone(), job);
        }
        if busy {
            ui.spinner();
            ui.label("Writing…");
        }
    });
    match state {
        Some(Loadable::Ready(w)) => {
            let path = w.path.clone();
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(&w.verdict).strong());
            });
            ui.horizontal(|ui| {
                ui.monospace(path.display().to_string());
                if ui.small_button("📋 Copy path").clicked() {
                    ui.ctx().copy_text(path.display().to_string());
                    app.commands
                        .push(Command::Notify(format!("Copied {}", path.display()), false));
                }
                if ui
                    .small_button("Save a copy as…")
                    .on_hover_text("Choose another place for the report")
                    .clicked()
                    && let Ok(bytes) = std::fs::read(&path)
                {
                    app.commands
                        .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                            name: file_name_of(&path),
                            bytes: std::sync::Arc::new(bytes),
                        }));
                }
            });
            certificate_ui(ui, app, w.certificate.as_ref());
        }
        Some(Loadable::Failed(e)) => {
            ui.colored_label(
                Color32::from_rgb(220, 60, 60),
                "The report could not be written",
            );
            ui.add(egui::Label::new(RichText::new(e).monospace().small()).wrap());
        }
        _ => {}
    }
}

/// Where the deletion certificate was written and who signed it, and the
/// command that checks it.
fn certificate_ui(
    ui: &mut egui::Ui,
    app: &mut LetheApp,
    cert: Option<&crate::export::CertificateInfo>,
) {
    let Some(c) = cert else {
        return;
    };
    ui.horizontal(|ui| {
        ui.label(RichText::new("Certificate").strong());
        if ui.small_button("📋 Copy path").clicked() {
            ui.ctx().copy_text(c.path.display().to_string());
            app.commands.push(Command::Notify(
                format!("Copied {}", c.path.display()),
                false,
            ));
        }
    });
    // Paths are long: wrapped on their own line rather than cut at the edge.
    ui.add(egui::Label::new(RichText::new(c.path.display().to_string()).monospace()).wrap());
    ui.label(
        RichText::new(format!(
            "Signed with this project's Ed25519 key (fingerprint {}…), audit log head #{}. \
             Anyone can check it, and the model and forget list against it, with: lethe report \
             verify {} --model MODEL --forget LIST",
            c.fingerprint.get(..16).unwrap_or(&c.fingerprint),
            c.head_seq,
            c.path.display()
        ))
        .small()
        .weak(),
    );
}

fn file_name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSpec;

    fn run(id: &str, plugin: &str, kind: &str, ckpt: &str, status: JobStatus) -> JobRecord {
        let mut r = JobRecord::new(
            id.into(),
            JobSpec {
                kind: kind.into(),
                plugin_id: plugin.into(),
                plugin_name: plugin.into(),
                library: "/l".into(),
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
    fn the_reference_is_the_latest_finished_retrain_of_the_same_request() {
        let del = run("del", "org.x.ft", "method", "/orig", JobStatus::Succeeded);
        let mut other_forget = run("r0", RETRAIN_ID, "method", "/orig", JobStatus::Succeeded);
        other_forget.spec.forget = "/g".into();
        let runs = vec![
            run("r1", RETRAIN_ID, "method", "/orig", JobStatus::Succeeded),
            run(
                "r2",
                RETRAIN_ID,
                "method",
                "/orig",
                JobStatus::Failed {
                    message: String::new(),
                },
            ),
            other_forget,
            del.clone(),
        ];
        assert_eq!(retrain_run(&runs, &del).unwrap().id, "r1");
        assert!(
            retrain_run(&runs[..1], &runs[0]).is_none(),
            "not its own reference"
        );
        assert_eq!(format_from("html"), Format::Html);
        assert_eq!(format_from("nope"), Format::Pdf);
    }
}
