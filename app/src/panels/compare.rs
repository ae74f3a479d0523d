//! The project's deletion runs compared in one table, without a study: every
//! finished run on the same model, data and forget set is a row (runs of one
//! method with different seeds are averaged), its accuracies from its
//! evaluation and its attack numbers from the attack runs on its model, and
//! the gaps are measured to the Retrain runs of the same request, built by the
//! engine's comparison-table code (the one studies use).

use super::file_name;
use crate::app::{Command, LetheApp};
use crate::jobs::{JobRecord, JobStatus};
use crate::state::View;
use crate::tasks::Loadable;
use egui::RichText;
use lethe_engine::study::RowKind;
use lethe_engine::study::table::{Column, RowInput, build_table};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A request: model, data, forget set.
pub type Request = (PathBuf, PathBuf, PathBuf);

/// The requests with finished deletion runs, newest first.
pub fn requests(runs: &[JobRecord]) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    for r in runs.iter().rev() {
        if r.spec.kind == "method" && r.status == JobStatus::Succeeded {
            let key = (
                r.spec.checkpoint.clone(),
                r.spec.data.clone(),
                r.spec.forget.clone(),
            );
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// What a run measured, unscaled, by metric key (`ua`, `<attack>.auc`, …).
pub type Measured = BTreeMap<String, f64>;

/// The table's rows and columns from the runs of one request, given what each
/// run (by id) measured: deletion runs become method rows (Retrain the
/// reference), and what was measured on the original model becomes an
/// Original row.
pub fn table_inputs(
    runs: &[JobRecord],
    request: &Request,
    measured: &BTreeMap<String, Measured>,
    original: &Measured,
) -> (Vec<Column>, Vec<RowInput>) {
    let mut rows: Vec<RowInput> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut note = |m: &Measured| {
        for k in m.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    };
    note(original);
    for r in runs.iter().filter(|r| {
        r.spec.kind == "method"
            && r.status == JobStatus::Succeeded
            && (&r.spec.checkpoint, &r.spec.data, &r.spec.forget)
                == (&request.0, &request.1, &request.2)
    }) {
        let m = measured.get(&r.id).cloned().unwrap_or_default();
        note(&m);
        let kind = if r.spec.plugin_id == super::report::RETRAIN_ID {
            RowKind::Retrain
        } else {
            RowKind::Method
        };
        let label = if kind == RowKind::Retrain {
            "Retrain".to_string()
        } else {
            r.spec.plugin_name.clone()
        };
        let seconds = r.elapsed(r.finished.unwrap_or(0.0)).unwrap_or(0.0);
        match rows.iter_mut().find(|x| x.label == label) {
            Some(row) => row.runs.push((r.spec.seed, m, seconds)),
            None => rows.push(RowInput {
                label,
                kind,
                runs: vec![(r.spec.seed, m, seconds)],
            }),
        }
    }
    if !original.is_empty() {
        rows.push(RowInput {
            label: "Original".into(),
            kind: RowKind::Original,
            // No job made it: no run time (NaN is left out of the mean).
            runs: vec![(0, original.clone(), f64::NAN)],
        });
    }
    // Reference rows first, as in studies.
    rows.sort_by_key(|r| match r.kind {
        RowKind::Retrain => 0,
        RowKind::Original => 1,
        RowKind::Method => 2,
    });
    let rank = |k: &str| match k {
        "ua" => (0, String::new()),
        "ra" => (2, String::new()),
        "ta" => (3, String::new()),
        other => (1, other.to_string()),
    };
    keys.sort_by_key(|k| rank(k));
    let columns = keys
        .into_iter()
        .map(|key| {
            let label = match key.as_str() {
                "ua" => "UA".to_string(),
                "ra" => "RA".into(),
                "ta" => "TA".into(),
                k => k.replacen('.', " ", 1).replace("auc", "AUC"),
            };
            Column {
                key,
                label,
                scale: 100.0,
                decimals: 2,
                in_avg_gap: true,
            }
        })
        .collect();
    (columns, rows)
}

/// What the evaluation and the attacks of each run measured; starts loading
/// what is missing.
fn gather(app: &mut LetheApp, request: &Request) -> (BTreeMap<String, Measured>, Measured) {
    let Some(p) = &app.project else {
        return Default::default();
    };
    let runs = p.runs.clone();
    let dirs: Vec<(String, PathBuf)> = runs
        .iter()
        .map(|r| (r.id.clone(), p.run_dir(&r.id)))
        .collect();
    let mut measured: BTreeMap<String, Measured> = BTreeMap::new();
    let mut original = Measured::new();
    for r in runs.iter().filter(|r| {
        r.spec.kind == "method"
            && r.status == JobStatus::Succeeded
            && (&r.spec.checkpoint, &r.spec.data, &r.spec.forget)
                == (&request.0, &request.1, &request.2)
    }) {
        let Some(dir) = dirs.iter().find(|(id, _)| id == &r.id).map(|(_, d)| d) else {
            continue;
        };
        if !app.evaluations.contains_key(&r.id) {
            let saved = crate::evaluation::load_saved(dir);
            app.evaluations.insert(r.id.clone(), saved.into());
        }
        let mut m = Measured::new();
        if let Some(Loadable::Ready(Some(e))) = app.evaluations.get(&r.id) {
            m.insert("ua".into(), e.utility.forget.accuracy);
            m.insert("ra".into(), e.utility.retain.accuracy);
            m.insert("ta".into(), e.utility.test.accuracy);
            if let Some(o) = &e.original_utility {
                original.entry("ua".into()).or_insert(o.forget.accuracy);
                original.entry("ra".into()).or_insert(o.retain.accuracy);
                original.entry("ta".into()).or_insert(o.test.accuracy);
            }
        }
        let model = r.model_artifact().map(|a| a.path.clone());
        for a in runs.iter().filter(|a| {
            a.spec.kind == "attack"
                && a.status == JobStatus::Succeeded
                && a.spec.data == r.spec.data
                && a.spec.forget == r.spec.forget
        }) {
            let on_new = Some(&a.spec.checkpoint) == model.as_ref();
            let on_original = a.spec.checkpoint == r.spec.checkpoint;
            if !on_new && !on_original {
                continue;
            }
            super::attack::ensure_report(app, a);
            if let Some(Loadable::Ready(s)) = app.attack_reports.get(&a.id) {
                let name = crate::study::attack_name(&a.spec.plugin_id);
                let target = if on_new { &mut m } else { &mut original };
                target.insert(format!("{name}.auc"), s.forget.auc);
                if let Some(e) = s.forget.efficacy {
                    target.insert(format!("{name}.efficacy"), e);
                }
            }
        }
        measured.insert(r.id.clone(), m);
    }
    (measured, original)
}

/// The view.
pub fn show(ui: &mut egui::Ui, app: &mut LetheApp) {
    let Some(p) = &app.project else { return };
    let runs = p.runs.clone();
    let forget_sets = p.file.forget_sets.clone();
    let reqs = requests(&runs);
    ui.heading("Compare deletion runs");
    ui.label(
        "Every finished deletion of the same request side by side, with the gap of each number \
         to exact retraining (run the Retrain method on the same request to get the reference). \
         Accuracies come from each run's evaluation, attack numbers from the attacks run on its \
         model. For several methods × seeds in one go, define a study.",
    );
    if reqs.is_empty() {
        ui.add_space(8.0);
        ui.weak("No finished deletion runs yet.");
        return;
    }
    let key = egui::Id::unique("compare-request");
    let mut chosen: usize = ui
        .ctx()
        .data(|d| d.get_temp(key))
        .unwrap_or(0)
        .min(reqs.len() - 1);
    let label = |r: &Request| {
        let forget = forget_sets
            .iter()
            .find(|f| f.path == r.2)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| file_name(&r.2));
        format!("{} · {}", file_name(&r.0), forget)
    };
    ui.horizontal(|ui| {
        ui.label("Request:");
        egui::ComboBox::from_id_salt("compare-combo")
            .width(420.0)
            .selected_text(label(&reqs[chosen]))
            .show_ui(ui, |ui| {
                for (i, r) in reqs.iter().enumerate() {
                    ui.selectable_value(&mut chosen, i, label(r));
                }
            })
            .response
            .on_hover_text("Request to compare");
    });
    ui.ctx().data_mut(|d| d.insert_temp(key, chosen));
    let request = reqs[chosen].clone();
    let (measured, original) = gather(app, &request);
    let (columns, rows) = table_inputs(&runs, &request, &measured, &original);
    let has_retrain = rows.iter().any(|r| r.kind == RowKind::Retrain);
    let table = build_table(label(&request), columns, rows);
    let model = crate::study::table_model(&table);
    ui.add_space(6.0);
    let order =
        crate::widgets::table::table_ui(ui, "compare-table", &model, &mut app.state.compare_table);
    if !has_retrain {
        ui.label(
            RichText::new("No Retrain run for this request yet: gaps appear once there is one.")
                .weak(),
        );
    }
    if table.columns.is_empty() {
        ui.label(
            RichText::new("No numbers yet: evaluate the runs (Evaluate in each run's view) or attack their models.")
                .weak(),
        );
    }
    ui.horizontal(|ui| {
        if ui.button("Export table (CSV)").clicked() {
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: "comparison.csv".into(),
                    bytes: std::sync::Arc::new(table.to_csv().into_bytes()),
                }));
        }
        if ui.button("Export table (JSON)").clicked() {
            let bytes = serde_json::to_vec_pretty(&table).unwrap_or_default();
            app.commands
                .push(Command::Pick(crate::tasks::PickTarget::SaveAs {
                    name: "comparison.json".into(),
                    bytes: std::sync::Arc::new(bytes),
                }));
        }
    });
    if has_retrain && !table.columns.is_empty() {
        ui.add_space(8.0);
        ui.label(RichText::new("Gaps to retrain").strong());
        crate::widgets::gap_heatmap::gap_heatmap(ui, &model, &order);
    }
    ui.add_space(8.0);
    ui.label(RichText::new("Runs in the table").strong());
    for r in runs.iter().filter(|r| {
        r.spec.kind == "method"
            && r.status == JobStatus::Succeeded
            && (&r.spec.checkpoint, &r.spec.data, &r.spec.forget)
                == (&request.0, &request.1, &request.2)
    }) {
        if ui
            .link(format!(
                "{} · seed {} · {}",
                r.spec.plugin_name,
                r.spec.seed,
                r.when()
            ))
            .clicked()
        {
            app.commands.push(Command::Show(View::Run(r.id.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSpec;

    fn run(id: &str, plugin: &str, seed: u64, status: JobStatus) -> JobRecord {
        let mut r = JobRecord::new(
            id.into(),
            JobSpec {
                kind: "method".into(),
                plugin_id: plugin.into(),
                plugin_name: plugin.rsplit('.').next().unwrap_or(plugin).into(),
                library: "/l".into(),
                params: serde_json::json!({}),
                checkpoint: "/c".into(),
                data: "/d".into(),
                forget: "/f".into(),
                forget_label: String::new(),
                device: "cpu".into(),
                seed,
            },
            0.0,
        );
        r.mark_started(10.0);
        r.finished = Some(14.0);
        r.status = status;
        r
    }

    #[test]
    fn runs_become_rows_with_seeds_averaged_and_gaps_to_retrain() {
        let runs = vec![
            run(
                "rt",
                super::super::report::RETRAIN_ID,
                0,
                JobStatus::Succeeded,
            ),
            run("ft0", "org.x.ft", 0, JobStatus::Succeeded),
            run("ft1", "org.x.ft", 1, JobStatus::Succeeded),
            run(
                "ga",
                "org.x.ga",
                0,
                JobStatus::Failed {
                    message: String::new(),
                },
            ),
        ];
        let m = |ua: f64, auc: Option<f64>| {
            let mut m = Measured::new();
            m.insert("ua".into(), ua);
            if let Some(a) = auc {
                m.insert("mia.auc".into(), a);
            }
            m
        };
        let measured: BTreeMap<String, Measured> = [
            ("rt".to_string(), m(0.90, Some(0.50))),
            ("ft0".to_string(), m(0.96, Some(0.56))),
            ("ft1".to_string(), m(0.94, None)),
        ]
        .into();
        let mut original = Measured::new();
        original.insert("ua".into(), 1.0);
        let req: Request = ("/c".into(), "/d".into(), "/f".into());
        assert_eq!(requests(&runs), vec![req.clone()]);
        let (columns, rows) = table_inputs(&runs, &req, &measured, &original);
        let keys: Vec<&str> = columns.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["ua", "mia.auc"]);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            ["Retrain", "Original", "ft"],
            "the failed run is left out"
        );
        let t = build_table("t".into(), columns, rows);
        let ft = &t.rows[2];
        assert_eq!(ft.seeds, [0, 1]);
        let ua = &ft.cells[0];
        assert!(
            (ua.mean.unwrap() - 95.0).abs() < 1e-9,
            "mean of 96 and 94 (in %)"
        );
        assert!((ua.gap.unwrap() - 5.0).abs() < 1e-9, "to retrain's 90");
        assert_eq!(ft.cells[1].values.len(), 1, "one seed has the attack");
        assert!((ft.rte.mean.unwrap() - 4.0).abs() < 1e-9);
        assert!(ua.best);
    }
}
