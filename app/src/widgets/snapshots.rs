//! Picture tests of views that draw the same on every run: the comparison
//! table, a heatmap with sample pictures and its legend, and a method form,
//! rendered by wgpu (Mesa's lavapipe on machines without a GPU, which
//! installer/setup.sh installs) and compared with the PNGs in
//! `app/tests/snapshots/` (egui_kittest's per-pixel tolerance). After an
//! intended change of how they look: `UPDATE_SNAPSHOTS=1 cargo test -p lethe
//! --lib snapshot`, then look at the new PNGs before committing them.

use super::heatmap::{Colormap, Heatmap};
use super::table::{CellValue, Column, Row, TableModel, TableView, table_ui};
use crate::artifacts::Matrix;
use egui::{Color32, ColorImage, TextureOptions, vec2};
use egui_kittest::Harness;
use std::sync::Arc;

/// A study-like table: Retrain, and three methods over two seeds.
pub(crate) fn study_table() -> TableModel {
    let col = |label: &str, has_gap: bool, summary: bool| Column {
        label: label.into(),
        help: String::new(),
        decimals: 2,
        has_gap,
        summary,
    };
    let cell = |mean: f64, std: f64, gap: Option<f64>, best: bool| CellValue {
        mean: Some(mean),
        std: Some(std),
        gap,
        delta: gap,
        best,
        values: Vec::new(),
        ..CellValue::default()
    };
    let row = |label: &str, reference: bool, cells| Row {
        label: label.into(),
        reference,
        note: String::new(),
        cells,
    };
    TableModel {
        columns: vec![
            col("UA", true, false),
            col("metric-mia efficacy", true, false),
            col("RA", true, false),
            col("TA", true, false),
            col("Avg. Gap", false, true),
            col("RTE (s)", false, false),
        ],
        rows: vec![
            row(
                "Retrain",
                true,
                vec![
                    cell(2.1, 0.3, Some(0.0), false),
                    cell(9.8, 1.1, Some(0.0), false),
                    cell(99.9, 0.0, Some(0.0), false),
                    cell(97.6, 0.2, Some(0.0), false),
                    cell(0.0, 0.0, None, false),
                    cell(61.0, 2.0, None, false),
                ],
            ),
            row(
                "FT",
                false,
                vec![
                    cell(0.4, 0.1, Some(1.7), false),
                    cell(4.2, 0.6, Some(5.6), false),
                    cell(99.8, 0.1, Some(0.1), true),
                    cell(97.1, 0.3, Some(0.5), false),
                    cell(1.98, 0.2, None, false),
                    cell(8.1, 0.4, None, false),
                ],
            ),
            row(
                "GA",
                false,
                vec![
                    cell(3.0, 0.9, Some(0.9), true),
                    cell(11.0, 2.0, Some(1.2), true),
                    cell(96.2, 1.4, Some(3.7), false),
                    cell(94.8, 1.1, Some(2.8), false),
                    cell(2.15, 0.4, None, true),
                    cell(1.2, 0.1, None, false),
                ],
            ),
        ],
    }
}

fn harness<S>(
    size: egui::Vec2,
    state: S,
    ui: impl FnMut(&mut egui::Ui, &mut S) + 'static,
) -> Harness<'static, S> {
    Harness::builder()
        .with_size(size)
        .wgpu()
        .build_ui_state(ui, state)
}

#[test]
fn snapshot_comparison_table() {
    let model = study_table();
    // Narrower than the table on one line: the compact layout.
    let mut h = harness(vec2(720.0, 200.0), TableView::default(), move |ui, v| {
        table_ui(ui, "snap", &model, v);
    });
    h.run();
    h.snapshot("comparison_table");
}

/// A diagonal-heavy 6 × 6 "alignment matrix" with a digit-like picture per
/// sample on both axes.
#[test]
fn snapshot_heatmap_with_thumbnails_and_legend() {
    let n = 6;
    let values: Vec<f32> = (0..n * n)
        .map(|k| {
            let (r, c) = (k / n, k % n);
            if r == c {
                1.0
            } else {
                0.1 * ((r + 2 * c) % 7) as f32 - 0.2
            }
        })
        .collect();
    let matrix = Arc::new(Matrix::new(n, n, values).expect("6 × 6"));
    let mut hm = Heatmap::new(matrix, Colormap::Viridis);
    hm.axis_titles = ("sample".into(), "sample".into());
    hm.row_labels = Some((0..n).map(|i| format!("#{}", 10 * i)).collect());
    hm.col_labels = hm.row_labels.clone();
    let mut h = harness(vec2(520.0, 470.0), hm, |ui, hm: &mut Heatmap| {
        if hm.row_thumbs.is_none() {
            // A 12 × 12 picture per sample: a bar whose position is the sample.
            let thumbs: Vec<_> = (0..6usize)
                .map(|i| {
                    let pixels = (0..144)
                        .map(|p| {
                            let (y, x) = (p / 12, p % 12usize);
                            if x.abs_diff(2 + i) <= 1 && (2..10).contains(&y) {
                                Color32::WHITE
                            } else {
                                Color32::BLACK
                            }
                        })
                        .collect();
                    ui.ctx().load_texture(
                        format!("t{i}"),
                        ColorImage::new([12, 12], pixels),
                        TextureOptions::NEAREST,
                    )
                })
                .collect();
            hm.col_thumbs = Some(thumbs.clone());
            hm.row_thumbs = Some(thumbs);
        }
        hm.show(ui, 440.0);
    });
    h.run();
    h.snapshot("heatmap_thumbnails_legend");
}

#[test]
fn snapshot_method_form() {
    let schema = crate::form::tests::schema();
    let values = crate::form::FormValues::defaults(&schema);
    let mut h = harness(vec2(560.0, 260.0), values, move |ui, v| {
        crate::form::form_ui(ui, &schema, v);
    });
    h.run();
    h.snapshot("method_form");
}

/// The verdict banner in its three states, as a finished deletion shows it.
fn snapshot_banner(name: &str, v: lethe_engine::report::verdict::Verdict, report: bool) {
    let mut h = harness(vec2(760.0, 130.0), v, move |ui, v| {
        let path = std::path::Path::new("/home/officer/Lethe/Case-17/runs/r1/exports/report.pdf");
        crate::widgets::verdict::banner(ui, v, report.then_some(path), !report);
    });
    h.run();
    h.snapshot(name);
}

fn verdict(
    outcome: lethe_engine::report::verdict::Outcome,
    headline: &str,
    next: Option<&str>,
) -> lethe_engine::report::verdict::Verdict {
    lethe_engine::report::verdict::Verdict {
        outcome,
        headline: headline.into(),
        next_step: next.map(Into::into),
        checks: Vec::new(),
    }
}

#[test]
fn snapshot_verdict_banner_pass() {
    use lethe_engine::report::verdict::Outcome;
    snapshot_banner(
        "verdict_banner_pass",
        verdict(
            Outcome::Pass,
            "Forgotten: the attacks, shown able to see a leak, cannot tell the forgotten samples \
             from data the model never saw, and the model keeps its accuracy.",
            None,
        ),
        true,
    );
}

#[test]
fn snapshot_verdict_banner_fail() {
    use lethe_engine::report::verdict::Outcome;
    snapshot_banner(
        "verdict_banner_fail",
        verdict(
            Outcome::Fail,
            "Not forgotten: forgets too little: the forgotten samples are classified 7.0 points \
             better than by the retrained model.",
            Some(
                "try another method or stronger settings (more epochs, a higher forget weight), then evaluate and attack again",
            ),
        ),
        true,
    );
}

#[test]
fn snapshot_verdict_banner_inconclusive() {
    use lethe_engine::report::verdict::Outcome;
    snapshot_banner(
        "verdict_banner_inconclusive",
        verdict(
            Outcome::Inconclusive,
            "Inconclusive: the attack cannot tell that the original model, which trained on these \
             samples, used them either (AUC 0.6360 [0.4930, 0.7660]), so its silence here proves nothing.",
            Some(
                "this forget set is too small to test: at least 41 samples are needed for this attack to detect a leak of AUC 0.636 (it has 5)",
            ),
        ),
        false,
    );
}
