//! The research report of a study (`lethe study`): the papers' comparison table
//! (mean ± std over seeds, gap to Retrain, Avg. Gap, run time), ROC curves and
//! AGM heatmaps of each row, run times, and the setup; exports the table as CSV
//! (the study's own numeric columns), JSON and a LaTeX table.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ReportError;
use super::deletion::{Matrices, read_matrices};
use super::doc::{Align, Block, Curve, Document, Heatmap, RocPlot, Style, Table, palette};
use super::format::{duration, num, utc_datetime};
use super::sources::{MembershipView, read_attack, read_evaluation};
use super::tabular::tex_escape;
use crate::study::results::{RowKind, StudyManifest, StudyResults, run_folder};
use crate::study::table::{Cell, ComparisonTable};

/// One finished run, as listed in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Row label.
    pub row: String,
    /// Seed.
    pub seed: u64,
    /// SHA-256 of the evaluated model.
    pub model_sha256: String,
    /// Run time (RTE) in seconds.
    pub seconds: f64,
    /// Method plugin id and version (none for the original).
    pub method: Option<String>,
}

/// The forget-set ROC of each row (first seed) under one attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackCurves {
    /// The study's name for the attack.
    pub attack: String,
    /// `(row, metrics)` in table order.
    #[serde(skip)]
    pub rows: Vec<(String, MembershipView)>,
}

/// Everything in a study report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyReport {
    /// The study folder.
    pub dir: PathBuf,
    /// `study.json`.
    pub manifest: StudyManifest,
    /// The comparison table.
    pub table: ComparisonTable,
    /// `(row, seed)` not finished yet.
    pub missing: Vec<(String, u64)>,
    /// The finished runs.
    pub runs: Vec<RunSummary>,
    /// ROC curves per attack.
    pub curves: Vec<AttackCurves>,
    /// AGM per row (first seed with an alignment audit).
    #[serde(skip)]
    pub matrices: Vec<(String, Matrices)>,
}

impl StudyReport {
    /// Reads a study folder.
    pub fn load(dir: &Path) -> Result<StudyReport, ReportError> {
        let results = StudyResults::load(dir).map_err(|e| ReportError::Input {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let table = results.table();
        let mut runs: Vec<RunSummary> = results
            .runs
            .iter()
            .map(|r| RunSummary {
                row: r.row.clone(),
                seed: r.seed,
                model_sha256: r.model_sha256.clone(),
                seconds: r.seconds,
                method: r.method.as_ref().map(|m| format!("{} {}", m.id, m.version)),
            })
            .collect();
        runs.sort_by(|a, b| {
            (table_pos(&table, &a.row), a.seed).cmp(&(table_pos(&table, &b.row), b.seed))
        });
        let first_seed = |row: &str| {
            results
                .runs
                .iter()
                .filter(|r| r.row == row)
                .min_by_key(|r| r.seed)
        };
        let mut curves: Vec<AttackCurves> = results
            .manifest
            .spec
            .attacks
            .iter()
            .map(|a| AttackCurves {
                attack: a.name.clone(),
                rows: Vec::new(),
            })
            .collect();
        let mut matrices = Vec::new();
        for row in &table.rows {
            let Some(r) = first_seed(&row.label) else {
                continue;
            };
            let run_dir = dir.join(run_folder(&r.row, r.seed));
            for a in &r.attacks {
                let path = run_dir.join(&a.report);
                let view = read_attack(&path)?;
                if let Some(c) = curves.iter_mut().find(|c| c.attack == a.name) {
                    c.rows.push((row.label.clone(), view.metrics.forget));
                }
            }
            let eval_path = run_dir.join(&r.evaluation);
            if eval_path.is_file()
                && let Ok(e) = read_evaluation(&eval_path)
                && let Some(m) = read_matrices(&e)
            {
                matrices.push((row.label.clone(), m));
            }
        }
        Ok(StudyReport {
            dir: dir.to_path_buf(),
            missing: results.missing(),
            manifest: results.manifest,
            table,
            runs,
            curves,
            matrices,
        })
    }

    /// The files the report was built from.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.dir.join(crate::study::results::STUDY_FILE)];
        for r in &self.runs {
            v.push(
                self.dir
                    .join(run_folder(&r.row, r.seed))
                    .join(crate::study::results::RESULT_FILE),
            );
        }
        v
    }
}

fn table_pos(t: &ComparisonTable, row: &str) -> usize {
    t.rows
        .iter()
        .position(|r| r.label == row)
        .unwrap_or(usize::MAX)
}

/// `mean ± std (gap)` with a trailing `*` for the best gap of the column.
fn cell_text(c: &Cell, decimals: usize, gap: bool) -> String {
    let Some(m) = c.mean else {
        return "-".into();
    };
    let mut s = num(m, decimals);
    if let Some(sd) = c.std {
        s.push_str(&format!(" ± {}", num(sd, decimals)));
    }
    if gap && let Some(g) = c.gap {
        s.push_str(&format!(" ({})", num(g, decimals)));
    }
    if c.best {
        s.push('*');
    }
    s
}

fn row_color(i: usize, kind: RowKind) -> [u8; 3] {
    match kind {
        RowKind::Retrain => palette::RETRAIN,
        RowKind::Original => palette::ORIGINAL,
        RowKind::Method => palette::CYCLE[(i + 1) % palette::CYCLE.len()],
    }
}

impl StudyReport {
    /// The report as a document.
    pub fn document(&self, generated: &str) -> Document {
        let spec = &self.manifest.spec;
        let inputs = &self.manifest.inputs;
        let t = &self.table;
        let mut b = Vec::new();
        b.push(Block::Heading("Setup".into()));
        let mut fields = vec![
            ("Study".to_string(), spec.name.clone(), Style::Text),
            ("Folder".into(), self.dir.display().to_string(), Style::Mono),
            (
                "Checkpoint".into(),
                spec.checkpoint.display().to_string(),
                Style::Mono,
            ),
            (
                "Checkpoint SHA-256".into(),
                inputs.checkpoint_sha256.clone(),
                Style::Mono,
            ),
            (
                "Dataset".into(),
                spec.data.display().to_string(),
                Style::Mono,
            ),
            (
                "Dataset SHA-256".into(),
                inputs.data_sha256.clone(),
                Style::Mono,
            ),
            (
                "Forget set".into(),
                spec.forget.display().to_string(),
                Style::Mono,
            ),
            (
                "Forget samples".into(),
                format!(
                    "{} (SHA-256 of their indices {})",
                    inputs.forget_count, inputs.forget_sha256
                ),
                Style::Text,
            ),
            (
                "Seeds".into(),
                spec.seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                Style::Text,
            ),
            ("Device".into(), self.manifest.device.clone(), Style::Text),
            (
                "Methods".into(),
                spec.methods
                    .iter()
                    .map(|m| format!("{} ({})", m.name, m.id))
                    .collect::<Vec<_>>()
                    .join(", "),
                Style::Text,
            ),
            (
                "Attacks".into(),
                spec.attacks
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.id))
                    .collect::<Vec<_>>()
                    .join(", "),
                Style::Text,
            ),
            (
                "Started".into(),
                format!(
                    "{} with Lethe {}",
                    utc_datetime(self.manifest.created_unix as i64),
                    self.manifest.lethe_version
                ),
                Style::Text,
            ),
        ];
        if !self.missing.is_empty() {
            fields.push((
                "Unfinished runs".into(),
                self.missing
                    .iter()
                    .map(|(r, s)| format!("{r} seed {s}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Style::Text,
            ));
        }
        b.push(Block::Fields {
            name: "setup".into(),
            fields,
        });

        b.push(Block::Heading("Comparison with retraining".into()));
        let mut header = vec!["method".to_string()];
        header.extend(t.columns.iter().map(|c| c.label.clone()));
        header.push(t.avg_gap_label.clone());
        header.push("RTE".into());
        let rows = t
            .rows
            .iter()
            .map(|r| {
                let mut line = vec![r.label.clone()];
                for (c, cell) in t.columns.iter().zip(&r.cells) {
                    line.push(cell_text(cell, c.decimals, r.kind != RowKind::Retrain));
                }
                line.push(match r.avg_gap {
                    Some(g) => format!("{}{}", num(g, 2), if r.avg_gap_best { "*" } else { "" }),
                    None => "-".into(),
                });
                line.push(r.rte.mean.map_or("-".into(), duration));
                line
            })
            .collect();
        let mut align = vec![Align::Left];
        align.extend(std::iter::repeat_n(Align::Right, header.len() - 1));
        b.push(Block::Table(Table {
            name: "comparison".into(),
            header,
            rows,
            align,
            note: Some(format!(
                "{}. Cells: mean ± std over seeds (gap to Retrain); * marks the smallest gap of a column among the methods.",
                t.title
            )),
        }));
        for n in &t.notes {
            b.push(Block::Note(n.clone()));
        }

        b.push(Block::Heading("Run times".into()));
        b.push(Block::Table(Table {
            name: "run times".into(),
            header: vec![
                "method".into(),
                "seed".into(),
                "run time".into(),
                "plugin".into(),
                "model SHA-256".into(),
            ],
            rows: self
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.row.clone(),
                        r.seed.to_string(),
                        duration(r.seconds),
                        r.method.clone().unwrap_or_else(|| "-".into()),
                        r.model_sha256.clone(),
                    ]
                })
                .collect(),
            align: vec![
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Left,
                Align::Left,
            ],
            note: Some(
                "Run time (RTE): the method's worker job; for Retrain the training behind the result, also when it came from the retrain cache."
                    .into(),
            ),
        }));

        b.push(Block::Heading("ROC curves".into()));
        let mut plots = Vec::new();
        for c in &self.curves {
            if c.rows.is_empty() {
                continue;
            }
            let curves: Vec<Curve> = c
                .rows
                .iter()
                .map(|(row, m)| {
                    let i = table_pos(t, row);
                    let kind = t.rows.get(i).map_or(RowKind::Method, |r| r.kind);
                    Curve {
                        label: format!("{row} (AUC {})", num(m.auc, 3)),
                        color: row_color(i, kind),
                        dashed: kind != RowKind::Method,
                        points: m
                            .roc
                            .fpr
                            .iter()
                            .copied()
                            .zip(m.roc.tpr.iter().copied())
                            .collect(),
                    }
                })
                .collect();
            for log in [false, true] {
                plots.push(RocPlot {
                    title: format!("{} ({})", c.attack, if log { "log-log" } else { "linear" }),
                    log,
                    curves: curves.clone(),
                });
            }
        }
        if plots.is_empty() {
            b.push(Block::Paragraph("The study ran no attack.".into()));
        } else {
            b.push(Block::Plots(plots));
            b.push(Block::Note(
                "Forget set (as members) against held-out non-members, first seed of each row."
                    .into(),
            ));
        }

        b.push(Block::Heading("Alignment Gap Matrices".into()));
        if self.matrices.is_empty() {
            b.push(Block::Paragraph(
                "Not available: no run of this study holds alignment matrices (encoders, or `alignment = true` in the study's evaluation)."
                    .into(),
            ));
        } else {
            b.push(Block::Heatmaps(
                self.matrices
                    .iter()
                    .map(|(row, m)| {
                        let amax = m.agm.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-9);
                        Heatmap {
                            title: format!("AGM: {row}"),
                            rows: m.n,
                            cols: m.n,
                            values: m.agm.clone(),
                            range: (-amax, amax),
                            diverging: true,
                        }
                    })
                    .collect(),
            ));
            b.push(Block::Note(
                "AM before − AM after on the same forget samples, first seed of each row; each map has its own symmetric colour scale (see its bar), so compare the scales as well as the colours."
                    .into(),
            ));
        }

        Document {
            title: "Lethe study report".into(),
            subtitle: t.title.clone(),
            generated: generated.to_string(),
            blocks: b,
        }
    }

    /// The comparison table as a paper-style LaTeX table (booktabs): mean ± std
    /// with the gap to Retrain in parentheses, the best gap of each column bold.
    pub fn latex_table(&self, generated: &str) -> String {
        let t = &self.table;
        let mut out = format!(
            "% {}\n% generated {generated} by Lethe {}\n% needs \\usepackage{{booktabs}}\n",
            t.title,
            env!("CARGO_PKG_VERSION")
        );
        out.push_str("\\begin{table}[ht]\n\\centering\n\\small\n");
        out.push_str(&format!("\\caption{{{}}}\n", tex_escape(&t.title)));
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}rr}}\n\\toprule\n",
            "r".repeat(t.columns.len())
        ));
        let mut head = vec!["Method".to_string()];
        head.extend(t.columns.iter().map(|c| tex_escape(&c.label)));
        head.push(tex_escape(&t.avg_gap_label));
        head.push("RTE (s)".into());
        out.push_str(&format!("{} \\\\\n\\midrule\n", head.join(" & ")));
        for (i, r) in t.rows.iter().enumerate() {
            let mut line = vec![tex_escape(&r.label)];
            for (c, cell) in t.columns.iter().zip(&r.cells) {
                let d = c.decimals;
                let text = match cell.mean {
                    None => "--".to_string(),
                    Some(m) => {
                        let mut s = num(m, d);
                        if let Some(sd) = cell.std {
                            s.push_str(&format!("$\\pm${}", num(sd, d)));
                        }
                        if r.kind != RowKind::Retrain
                            && let Some(g) = cell.gap
                        {
                            s.push_str(&format!(" ({})", num(g, d)));
                        }
                        if cell.best {
                            format!("\\textbf{{{s}}}")
                        } else {
                            s
                        }
                    }
                };
                line.push(text);
            }
            line.push(match r.avg_gap {
                Some(g) if r.avg_gap_best => format!("\\textbf{{{}}}", num(g, 2)),
                Some(g) => num(g, 2),
                None => "--".into(),
            });
            line.push(r.rte.mean.map_or("--".into(), |s| num(s, 1)));
            out.push_str(&format!("{} \\\\\n", line.join(" & ")));
            let next_is_method = t.rows.get(i + 1).is_some_and(|n| n.kind == RowKind::Method);
            if r.kind != RowKind::Method && next_is_method {
                out.push_str("\\midrule\n");
            }
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::sources::{IntervalView, RocView, TprView};
    use super::super::{Format, Report, render};
    use super::*;
    use crate::study::results::InputHashes;
    use crate::study::spec::StudySpec;
    use crate::study::table::{Column, RowInput, build_table};
    use std::collections::BTreeMap;

    fn report() -> (tempfile::TempDir, Report) {
        let dir = tempfile::tempdir().unwrap();
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo");
        let toml = format!(
            "name = \"t\"\ncheckpoint = \"{0}/classifier.safetensors\"\ndata = \"{0}/mnist10k.npz\"\n\
             forget = \"{0}/forget.txt\"\nseeds = [0, 1]\n\
             [[methods]]\nname = \"FT\"\nid = \"org.lethe.baseline.finetune\"\n\
             [[methods]]\nname = \"GA\"\nid = \"org.lethe.baseline.gradient-ascent\"\n\
             [[attacks]]\nname = \"mia\"\nid = \"org.lethe.attack.metric-mia\"\n",
            demo.display()
        );
        std::fs::write(dir.path().join("study.toml"), toml).unwrap();
        let spec = StudySpec::load(&dir.path().join("study.toml")).unwrap();
        let run = |seed: u64, ua: f64, ta: f64, secs: f64| {
            let m: BTreeMap<String, f64> = [("ua".to_string(), ua), ("ta".to_string(), ta)]
                .into_iter()
                .collect();
            (seed, m, secs)
        };
        let col = |key: &str, label: &str| Column {
            key: key.into(),
            label: label.into(),
            scale: 100.0,
            decimals: 2,
            in_avg_gap: true,
        };
        let table = build_table(
            "Study t".into(),
            vec![col("ua", "UA"), col("ta", "TA")],
            vec![
                RowInput {
                    label: "Retrain".into(),
                    kind: RowKind::Retrain,
                    runs: vec![run(0, 0.90, 0.95, 60.0), run(1, 0.92, 0.95, 62.0)],
                },
                RowInput {
                    label: "FT".into(),
                    kind: RowKind::Method,
                    runs: vec![run(0, 0.97, 0.96, 6.0), run(1, 0.99, 0.96, 6.5)],
                },
                RowInput {
                    label: "GA".into(),
                    kind: RowKind::Method,
                    runs: vec![run(0, 0.80, 0.90, 3.0), run(1, 0.84, 0.88, 3.5)],
                },
            ],
        );
        let roc = |auc: f64| MembershipView {
            members: 300,
            non_members: 500,
            auc,
            auc_ci: Some(IntervalView {
                low: auc - 0.03,
                high: auc + 0.03,
                level: 0.95,
            }),
            tpr_at_fpr: vec![TprView {
                fpr: 0.01,
                tpr: 0.02,
                ci: None,
                resolved: true,
            }],
            efficacy: None,
            roc: RocView {
                fpr: vec![0.0, 0.01, 0.5, 1.0],
                tpr: vec![0.0, 0.02, 0.5 + (auc - 0.5), 1.0],
            },
        };
        let n = 3;
        let agm: Vec<f64> = (0..n * n)
            .map(|i| if i % (n + 1) == 0 { 0.3 } else { -0.05 })
            .collect();
        let report = StudyReport {
            dir: dir.path().join("out"),
            manifest: StudyManifest {
                format: 1,
                spec,
                inputs: InputHashes {
                    checkpoint_sha256: "c".repeat(64),
                    data_sha256: "d".repeat(64),
                    forget_sha256: "f".repeat(64),
                    forget_count: 300,
                },
                device: "cpu".into(),
                lethe_version: "0.1.0".into(),
                created_unix: 1_700_000_000,
            },
            table,
            missing: vec![],
            runs: vec![RunSummary {
                row: "FT".into(),
                seed: 0,
                model_sha256: "e".repeat(64),
                seconds: 6.0,
                method: Some("org.lethe.baseline.finetune 0.1.0".into()),
            }],
            curves: vec![AttackCurves {
                attack: "mia".into(),
                rows: vec![("Retrain".into(), roc(0.5)), ("FT".into(), roc(0.6))],
            }],
            matrices: vec![(
                "FT".into(),
                Matrices {
                    n,
                    am_before: vec![0.5; n * n],
                    am_after: vec![0.5; n * n],
                    agm,
                    indices: vec![1, 2, 3],
                },
            )],
        };
        (dir, Report::Study(Box::new(report)))
    }

    #[test]
    fn the_study_report_holds_the_papers_table_in_every_format() {
        let (_dir, r) = report();
        let html = String::from_utf8(render(&r, Format::Html, 0).unwrap()).unwrap();
        // FT: UA 98.00 ± 1.41, gap |98 − 91| = 7; GA: 82.00 ± 2.83, gap 9: FT is best.
        assert!(html.contains("98.00 ± 1.41 (7.00)*"), "{html}");
        assert!(html.contains("82.00 ± 2.83 (9.00)<"), "{html}");
        assert!(html.contains("91.00 ± 1.41<"), "Retrain has no gap: {html}");
        assert!(html.contains("FT (AUC 0.600)"));
        assert!(html.contains("AGM: FT"));
        assert_eq!(html.matches("<svg").count(), 3, "two ROC plots and one AGM");
        let tex = String::from_utf8(render(&r, Format::Tex, 0).unwrap()).unwrap();
        assert!(tex.contains("\\textbf{98.00$\\pm$1.41 (7.00)}"), "{tex}");
        assert!(
            tex.contains("Method & UA & TA & Avg. Gap & RTE (s)"),
            "{tex}"
        );
        let csv = String::from_utf8(render(&r, Format::Csv, 0).unwrap()).unwrap();
        assert!(
            csv.starts_with("row,kind,seeds,ua_mean,ua_std,ua_gap"),
            "{csv}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&render(&r, Format::Json, 0).unwrap()).unwrap();
        assert_eq!(json["kind"], "study");
        assert_eq!(json["table"]["rows"][1]["label"], "FT");
        let pdf = render(&r, Format::Pdf, 0).unwrap();
        assert_eq!(pdf, render(&r, Format::Pdf, 0).unwrap());
        assert!(pdf.starts_with(b"%PDF-"));
    }
}
