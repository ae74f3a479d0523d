//! The table's gaps as a heatmap: compared rows × metric columns, each cell
//! coloured by its signed difference to the reference row (blue: below
//! retraining, white: equal, red: above), scaled per column because columns
//! have different units; the gap is printed in the cell and hover gives the
//! numbers. Tables are small (methods × metrics), so cells are painted
//! directly.

use super::heatmap::Colormap;
use super::table::TableModel;
use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, pos2, vec2};

/// Which cells the heatmap shows: compared rows in `order`, columns with gaps.
pub fn layout(model: &TableModel, order: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let rows = order
        .iter()
        .copied()
        .filter(|&i| model.rows.get(i).is_some_and(|r| !r.reference))
        .collect();
    let cols = (0..model.columns.len())
        .filter(|&c| model.columns[c].has_gap && !model.columns[c].summary)
        .collect();
    (rows, cols)
}

/// Position on the diverging scale (0.5 = no difference) of `delta` in a
/// column whose largest |delta| is `max`.
pub fn scale_position(delta: f64, max: f64) -> f32 {
    if max <= 0.0 || !delta.is_finite() {
        return 0.5;
    }
    (0.5 + 0.5 * (delta / max).clamp(-1.0, 1.0)) as f32
}

/// Draws the heatmap; returns the hovered (row, column) model indices.
pub fn gap_heatmap(
    ui: &mut egui::Ui,
    model: &TableModel,
    order: &[usize],
) -> Option<(usize, usize)> {
    let (rows, cols) = layout(model, order);
    if rows.is_empty() || cols.is_empty() {
        ui.weak("No gaps to show: the table needs a retrain row and at least one method.");
        return None;
    }
    let any = rows.iter().any(|&r| {
        cols.iter().any(|&c| {
            model.rows[r]
                .cells
                .get(c)
                .is_some_and(|x| x.delta.is_some())
        })
    });
    if !any {
        ui.weak("No gaps yet: they appear once retraining and a method have results.");
        return None;
    }
    let max: Vec<f64> = cols
        .iter()
        .map(|&c| {
            rows.iter()
                .filter_map(|&r| model.rows[r].cells.get(c).and_then(|x| x.delta))
                .filter(|d| d.is_finite())
                .fold(0.0, |m: f64, d| m.max(d.abs()))
        })
        .collect();
    let font = FontId::proportional(12.0);
    let label_w = rows
        .iter()
        .map(|&r| model.rows[r].label.chars().count())
        .max()
        .unwrap_or(4) as f32
        * 7.5
        + 12.0;
    let cell_w = ((ui.available_width() - label_w - 90.0) / cols.len() as f32).clamp(56.0, 140.0);
    let cell_h = 30.0;
    let head_h = 22.0;
    // Room for the legend even with a single row.
    let size = vec2(
        label_w + cell_w * cols.len() as f32 + 90.0,
        (head_h + cell_h * rows.len() as f32 + 4.0).max(head_h + 84.0),
    );
    let (outer, response) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(outer);
    let text = ui.visuals().text_color();
    let grid = Rect::from_min_size(
        outer.min + vec2(label_w, head_h),
        vec2(cell_w * cols.len() as f32, cell_h * rows.len() as f32),
    );
    let map = Colormap::Diverging;
    let mut hovered = None;
    for (j, &c) in cols.iter().enumerate() {
        let x = grid.left() + j as f32 * cell_w;
        painter.text(
            pos2(x + cell_w / 2.0, outer.top() + 2.0),
            Align2::CENTER_TOP,
            &model.columns[c].label,
            font.clone(),
            text,
        );
    }
    for (i, &r) in rows.iter().enumerate() {
        let y = grid.top() + i as f32 * cell_h;
        painter.text(
            pos2(grid.left() - 8.0, y + cell_h / 2.0),
            Align2::RIGHT_CENTER,
            &model.rows[r].label,
            font.clone(),
            text,
        );
        for (j, &c) in cols.iter().enumerate() {
            let rect = Rect::from_min_size(
                pos2(grid.left() + j as f32 * cell_w, y),
                vec2(cell_w, cell_h),
            )
            .shrink(1.0);
            let cell = model.rows[r].cells.get(c);
            let delta = cell.and_then(|x| x.delta);
            let fill = match delta {
                Some(d) => map.color(scale_position(d, max[j])),
                None => Color32::from_gray(128),
            };
            painter.rect_filled(rect, 2.0, fill);
            if cell.is_some_and(|x| x.best) {
                painter.rect_stroke(
                    rect.shrink(1.0),
                    2.0,
                    Stroke::new(2.0, Color32::from_rgb(40, 150, 60)),
                    egui::StrokeKind::Inside,
                );
            }
            // Dark text on the light middle of the scale, light on the ends.
            let t = delta.map_or(0.5, |d| scale_position(d, max[j]));
            let ink = if (t - 0.5).abs() > 0.3 {
                Color32::WHITE
            } else {
                Color32::from_gray(20)
            };
            let label = match cell.and_then(|x| x.gap) {
                Some(g) => format!("{g:.prec$}", prec = model.columns[c].decimals),
                None => "–".into(),
            };
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                label,
                font.clone(),
                ink,
            );
            if response.hover_pos().is_some_and(|p| rect.contains(p)) {
                hovered = Some((r, c));
            }
        }
    }
    // Legend: the diverging scale, labelled in words (columns differ in units).
    let legend = Rect::from_min_size(
        pos2(grid.right() + 24.0, grid.top()),
        vec2(14.0, grid.height().max(80.0)),
    );
    let steps = 32;
    for s in 0..steps {
        let t0 = s as f32 / steps as f32;
        let t1 = (s + 1) as f32 / steps as f32;
        painter.rect_filled(
            Rect::from_min_max(
                pos2(legend.left(), legend.bottom() - t1 * legend.height()),
                pos2(legend.right(), legend.bottom() - t0 * legend.height()),
            ),
            0.0,
            map.color((t0 + t1) / 2.0),
        );
    }
    let small = FontId::proportional(10.0);
    for (t, what) in [(1.0, "above"), (0.5, "= retrain"), (0.0, "below")] {
        painter.text(
            pos2(legend.right() + 3.0, legend.bottom() - t * legend.height()),
            Align2::LEFT_CENTER,
            what,
            small.clone(),
            text,
        );
    }
    if let Some((r, c)) = hovered {
        let row = &model.rows[r];
        let col = &model.columns[c];
        let cell = row.cells.get(c).cloned().unwrap_or_default();
        let reference = model
            .rows
            .iter()
            .find(|x| x.reference)
            .and_then(|x| x.cells.get(c))
            .and_then(|x| x.mean);
        let d = col.decimals;
        let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
        response.on_hover_ui_at_pointer(|ui| {
            ui.label(format!(
                "{} · {}\nvalue {} (retrain {})\ndifference {}{}",
                row.label,
                col.label,
                cell.text(d, false),
                fmt(reference),
                cell.delta.map_or("–".to_string(), |v| format!("{v:+.d$}")),
                if cell.best {
                    "\n★ closest to retrain in this column"
                } else {
                    ""
                }
            ));
        });
    }
    hovered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widgets::table::{CellValue, Column, Row};

    #[test]
    fn zero_difference_is_the_middle_and_the_ends_are_the_column_maximum() {
        assert_eq!(scale_position(0.0, 3.0), 0.5);
        assert_eq!(scale_position(3.0, 3.0), 1.0);
        assert_eq!(scale_position(-3.0, 3.0), 0.0);
        assert_eq!(scale_position(1.5, 3.0), 0.75);
        assert_eq!(scale_position(1.0, 0.0), 0.5, "no spread: all white");
        assert_eq!(scale_position(f64::NAN, 1.0), 0.5);
    }

    #[test]
    fn only_compared_rows_and_gap_columns_are_shown() {
        let col = |l: &str, has_gap| Column {
            label: l.into(),
            help: String::new(),
            decimals: 2,
            has_gap,
            summary: false,
        };
        let row = |l: &str, reference| Row {
            label: l.into(),
            reference,
            note: String::new(),
            cells: vec![CellValue::default(); 3],
        };
        let m = TableModel {
            columns: vec![col("UA", true), col("RTE", false), col("RA", true)],
            rows: vec![row("Retrain", true), row("FT", false), row("GA", false)],
        };
        let (rows, cols) = layout(&m, &[0, 2, 1]);
        assert_eq!(rows, [2, 1], "in the table's order, without the reference");
        assert_eq!(cols, [0, 2]);
    }
}
