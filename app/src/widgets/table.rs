//! A results table: methods × metrics, each cell the mean ± std over seeds
//! with its gap to a reference row (retraining), the best cell of each column
//! marked, sortable by clicking a column header, and cells tinted by their gap
//! to the reference. Fed by a plain rows × columns [`TableModel`], so anything
//! that is a table of numbers can use it; the study panel converts the
//! engine's comparison table into one.

use egui::{Color32, RichText};
use serde::{Deserialize, Serialize};

/// One metric column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Heading.
    pub label: String,
    /// Hover text of the heading.
    pub help: String,
    /// Decimals shown.
    pub decimals: usize,
    /// Whether the cells carry a gap to the reference (run time does not).
    pub has_gap: bool,
    /// A summary of the other columns (Avg. Gap, run time): left out of the
    /// gap heatmap.
    pub summary: bool,
}

/// One cell: a metric of one row over its seeds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CellValue {
    /// Mean over the seeds.
    pub mean: Option<f64>,
    /// Sample standard deviation (none for one seed).
    pub std: Option<f64>,
    /// |mean − reference mean|.
    pub gap: Option<f64>,
    /// mean − reference mean.
    pub delta: Option<f64>,
    /// Smallest gap of its column among the compared rows.
    pub best: bool,
    /// The values behind the mean, one per seed.
    pub values: Vec<f64>,
    /// Row − reference seed by seed: mean and its 95 % interval.
    pub paired: Option<(f64, f64, f64)>,
    /// The 95 % interval of the mean over seeds (ToW).
    pub interval: Option<(f64, f64)>,
}

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Method name (or `Retrain`, `Original`).
    pub label: String,
    /// A reference row (retraining, the original model): kept on top, not
    /// ranked, not tinted.
    pub reference: bool,
    /// Hover text of the row label (seeds, plugin id).
    pub note: String,
    /// One cell per column.
    pub cells: Vec<CellValue>,
}

/// A table of numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableModel {
    /// Columns, in order.
    pub columns: Vec<Column>,
    /// Rows: references and compared rows, in their natural order.
    pub rows: Vec<Row>,
}

/// How cells are tinted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tint {
    /// By the gap to the reference, relative to the column's largest gap.
    #[default]
    Gap,
    /// Not at all.
    None,
}

/// What the user chose for the table (persisted with the app state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TableView {
    /// Sort column (`None`: the natural order; `Some(usize::MAX)`: by name) and
    /// whether descending.
    pub sort: Option<(usize, bool)>,
    /// Cell tint.
    pub tint: Tint,
    /// Show the gaps in the cells, not only the means.
    pub hide_gaps: bool,
}

/// Sorting by the row label.
pub const BY_NAME: usize = usize::MAX;

impl CellValue {
    /// Whether the paired interval against the reference holds 0: the seeds
    /// cannot tell this row from retraining in this column.
    pub fn like_reference(&self) -> bool {
        self.paired.is_some_and(|(_, l, h)| l <= 0.0 && 0.0 <= h)
    }

    /// `12.34 ± 0.56 (0.12) ★`.
    pub fn text(&self, decimals: usize, show_gap: bool) -> String {
        let Some(mean) = self.mean else {
            return "–".into();
        };
        let mut s = format!("{mean:.decimals$}");
        if let Some(std) = self.std {
            s.push_str(&format!(" ± {std:.decimals$}"));
        }
        if show_gap && let Some(g) = self.gap {
            s.push_str(&format!(" ({g:.decimals$})"));
        }
        if self.best {
            s.push_str(" ★");
        }
        if show_gap && self.like_reference() {
            s.push_str(" ≈");
        }
        s
    }

    /// The same on two lines, `12.34 ± 0.56` over `(0.12) ★`, for tables
    /// too wide for one line per cell.
    pub fn text_two_lines(&self, decimals: usize, show_gap: bool) -> String {
        let Some(mean) = self.mean else {
            return "–".into();
        };
        let mut first = format!("{mean:.decimals$}");
        if let Some(std) = self.std {
            first.push_str(&format!(" ± {std:.decimals$}"));
        }
        let mut second = String::new();
        if show_gap && let Some(g) = self.gap {
            second.push_str(&format!("({g:.decimals$})"));
        }
        for (on, mark) in [(self.best, '★'), (show_gap && self.like_reference(), '≈')] {
            if on {
                if !second.is_empty() {
                    second.push(' ');
                }
                second.push(mark);
            }
        }
        if second.is_empty() {
            first
        } else {
            format!("{first}\n{second}")
        }
    }
}

/// A heading broken at spaces into lines of about `width` characters
/// (`metric-mia efficacy` → `metric-mia` / `efficacy`); a word is never cut.
pub fn wrap_heading(label: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split(' ').filter(|w| !w.is_empty()) {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.join("\n")
}

/// Characters of the longest line of `text`.
fn longest_line(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

impl TableModel {
    /// Row indices in display order: reference rows first (in their order),
    /// then the others sorted as `view` says. A column with gaps sorts by gap
    /// (ascending: closest to the reference first), one without by mean;
    /// missing values always go last.
    pub fn order(&self, view: &TableView) -> Vec<usize> {
        let mut refs: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.rows[i].reference)
            .collect();
        let mut others: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !self.rows[i].reference)
            .collect();
        if let Some((col, desc)) = view.sort {
            if col == BY_NAME {
                others.sort_by(|&a, &b| {
                    let o = self.rows[a]
                        .label
                        .to_lowercase()
                        .cmp(&self.rows[b].label.to_lowercase());
                    if desc { o.reverse() } else { o }
                });
            } else if let Some(c) = self.columns.get(col) {
                let key = |i: usize| {
                    let cell = self.rows[i].cells.get(col)?;
                    if c.has_gap { cell.gap } else { cell.mean }.filter(|v| v.is_finite())
                };
                // A stable sort keeps the natural order among ties.
                others.sort_by(|&a, &b| match (key(a), key(b)) {
                    (Some(x), Some(y)) => {
                        let o = x.total_cmp(&y);
                        if desc { o.reverse() } else { o }
                    }
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                });
            }
        }
        refs.append(&mut others);
        refs
    }

    /// The largest gap of column `col` among the compared rows.
    pub fn max_gap(&self, col: usize) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| !r.reference)
            .filter_map(|r| r.cells.get(col).and_then(|c| c.gap))
            .filter(|g| g.is_finite())
            .reduce(f64::max)
    }

    /// The table as CSV: one line per row in `order`, mean, std and gap per
    /// column.
    pub fn to_csv(&self, order: &[usize]) -> String {
        let mut out = String::from("row");
        for c in &self.columns {
            let l = crate::artifacts::csv_field(&c.label);
            out.push_str(&format!(",{l} mean,{l} std,{l} gap"));
        }
        out.push('\n');
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for &i in order {
            let r = &self.rows[i];
            out.push_str(&crate::artifacts::csv_field(&r.label));
            for c in &r.cells {
                out.push_str(&format!(",{},{},{}", num(c.mean), num(c.std), num(c.gap)));
            }
            out.push('\n');
        }
        out
    }
}

/// The tint of a gap that is `t` of its column's largest (0: none).
pub fn gap_tint(t: f64, best: bool) -> Color32 {
    if best {
        return Color32::from_rgba_unmultiplied(60, 170, 80, 70);
    }
    let t = t.clamp(0.0, 1.0);
    Color32::from_rgba_unmultiplied(230, 120, 40, (t * 100.0).round() as u8)
}

/// Width of a column holding `chars` characters (the digits of the default
/// proportional font are about 7 px wide).
fn width_for(chars: usize) -> f32 {
    (chars as f32 * 7.2 + 14.0).max(60.0)
}

/// Headings of a compact table wrap at about this many characters.
const HEADING_CHARS: usize = 11;

/// Each column's width: its widest cell or its heading (with room for the
/// sort arrow), on one line or as in a compact table.
fn column_widths(model: &TableModel, show_gap: bool, compact: bool) -> Vec<f32> {
    model
        .columns
        .iter()
        .enumerate()
        .map(|(c, col)| {
            let gap = show_gap && col.has_gap && !col.summary;
            // As drawn: a reference row's own gaps (zero) are not shown.
            let longest = model
                .rows
                .iter()
                .filter_map(|r| r.cells.get(c).map(|cell| (cell, gap && !r.reference)))
                .map(|(cell, gap)| {
                    if compact {
                        longest_line(&cell.text_two_lines(col.decimals, gap))
                    } else {
                        cell.text(col.decimals, gap).chars().count()
                    }
                })
                .max()
                .unwrap_or(1);
            let heading = if compact {
                longest_line(&wrap_heading(&col.label, HEADING_CHARS))
            } else {
                col.label.chars().count()
            };
            width_for(longest.max(heading + 2))
        })
        .collect()
}

/// Draws the options line (sorting, tint, gaps) and the table. Returns the row
/// order shown.
pub fn table_ui(
    ui: &mut egui::Ui,
    id: &str,
    model: &TableModel,
    view: &mut TableView,
) -> Vec<usize> {
    ui.horizontal(|ui| {
        ui.label("Cell colour:");
        ui.radio_value(&mut view.tint, Tint::Gap, "gap to retrain")
            .on_hover_text(
                "Orange: far from retraining (relative to the column's largest gap); \
                 green: the best method in the column",
            );
        ui.radio_value(&mut view.tint, Tint::None, "none");
        ui.separator();
        let mut show = !view.hide_gaps;
        ui.checkbox(&mut show, "show gaps (in brackets)");
        view.hide_gaps = !show;
        ui.separator();
        if ui
            .add_enabled(view.sort.is_some(), egui::Button::new("Original order"))
            .on_hover_text("Methods in the order they were defined")
            .clicked()
        {
            view.sort = None;
        }
    });
    let order = model.order(view);
    let show_gap = !view.hide_gaps;
    // One line per cell when the table fits the view; else each cell on two
    // lines (mean ± std over the gap) and headings wrapped, which about halves
    // the width, and the table scrolls sideways for whatever still does not fit.
    let one_line = column_widths(model, show_gap, false);
    let method_w = model
        .rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .map_or(80.0, width_for);
    let spacing = 4.0 * (model.columns.len() + 1) as f32;
    let compact = method_w + spacing + one_line.iter().sum::<f32>() > ui.available_width().max(1.0);
    let widths = if compact {
        column_widths(model, show_gap, true)
    } else {
        one_line
    };
    let heading = |col: &Column| {
        if compact {
            wrap_heading(&col.label, HEADING_CHARS)
        } else {
            col.label.clone()
        }
    };
    let line_h = 18.0;
    let header_h = model
        .columns
        .iter()
        .map(|c| heading(c).lines().count().max(1))
        .max()
        .unwrap_or(1) as f32
        * line_h
        + 2.0;
    let cell_h = if compact { 2.0 * line_h } else { 20.0 };
    let arrow = |col: usize| match view.sort {
        Some((c, false)) if c == col => " ⏶",
        Some((c, true)) if c == col => " ⏷",
        _ => "",
    };
    let mut clicked = None;
    egui::ScrollArea::horizontal()
        .id_salt((id, "scroll"))
        .show(ui, |ui| {
            egui::Grid::new((id, "grid"))
                .striped(true)
                .spacing([4.0, 4.0])
                .show(ui, |ui| {
                    let name = format!("Method{}", arrow(BY_NAME));
                    if ui
                        .selectable_label(view.sort.is_some_and(|s| s.0 == BY_NAME), name)
                        .on_hover_text("Sort by name")
                        .clicked()
                    {
                        clicked = Some(BY_NAME);
                    }
                    for (c, col) in model.columns.iter().enumerate() {
                        let text = format!("{}{}", heading(col), arrow(c));
                        let how = if col.has_gap {
                            "sort by gap to retrain (click again: reverse)"
                        } else {
                            "sort by value (click again: reverse)"
                        };
                        let help = if col.help.is_empty() {
                            how.to_string()
                        } else {
                            format!("{}\n\n{how}", col.help)
                        };
                        ui.allocate_ui_with_layout(
                            egui::vec2(widths[c], header_h),
                            egui::Layout::right_to_left(egui::Align::Max),
                            |ui| {
                                // The whole width, not just the text's: the grid
                                // sizes its column from what is allocated.
                                ui.set_min_width(widths[c]);
                                if ui
                                    .selectable_label(view.sort.is_some_and(|s| s.0 == c), text)
                                    .on_hover_text(help)
                                    .clicked()
                                {
                                    clicked = Some(c);
                                }
                            },
                        );
                    }
                    ui.end_row();
                    for &i in &order {
                        let row = &model.rows[i];
                        let mut label = RichText::new(&row.label).strong();
                        if row.reference {
                            label = label.italics();
                        }
                        let r = ui.label(label);
                        if !row.note.is_empty() {
                            r.on_hover_text(&row.note);
                        }
                        for (c, col) in model.columns.iter().enumerate() {
                            let cell = row.cells.get(c).cloned().unwrap_or_default();
                            let size = egui::vec2(widths[c], cell_h);
                            cell_ui(ui, model, view, &row.label, col, c, &cell, size, compact);
                        }
                        ui.end_row();
                    }
                });
        });
    if let Some(c) = clicked {
        view.sort = match view.sort {
            Some((s, desc)) if s == c => Some((c, !desc)),
            _ => Some((c, false)),
        };
    }
    order
}

#[allow(clippy::too_many_arguments)]
fn cell_ui(
    ui: &mut egui::Ui,
    model: &TableModel,
    view: &TableView,
    row: &str,
    col: &Column,
    c: usize,
    cell: &CellValue,
    size: egui::Vec2,
    two_lines: bool,
) {
    let is_ref = model.rows.iter().any(|r| r.label == row && r.reference);
    // A summary column's value is itself a gap (Avg. Gap): no brackets.
    // The reference's own gaps are zero by definition: not shown.
    let show_gap = !view.hide_gaps && col.has_gap && !col.summary && !is_ref;
    let text = if two_lines {
        cell.text_two_lines(col.decimals, show_gap)
    } else {
        cell.text(col.decimals, show_gap)
    };
    let bg = match (view.tint, cell.gap, model.max_gap(c)) {
        (Tint::Gap, Some(g), Some(max)) if !is_ref && col.has_gap => {
            Some(gap_tint(if max > 0.0 { g / max } else { 0.0 }, cell.best))
        }
        (Tint::Gap, _, _) if cell.best && !is_ref => Some(gap_tint(0.0, true)),
        _ => None,
    };
    let inner = ui.allocate_ui_with_layout(
        size,
        egui::Layout::right_to_left(egui::Align::Center),
        |ui| {
            ui.set_min_width(size.x);
            let slot = ui.painter().add(egui::Shape::Noop);
            let mut rt = RichText::new(&text).monospace();
            if cell.best {
                rt = rt.strong();
            } else if bg.is_some() {
                // Grey text on an orange tint is hard to read.
                rt = rt.color(ui.visuals().strong_text_color());
            }
            // Right-aligned lines: the decimal points of both lines line up.
            let r = ui.add(egui::Label::new(rt).halign(egui::Align::Max));
            if let Some(bg) = bg {
                let rect = egui::Rect::from_min_max(
                    egui::pos2(ui.max_rect().left(), r.rect.top() - 1.0),
                    egui::pos2(ui.max_rect().right(), r.rect.bottom() + 1.0),
                );
                ui.painter()
                    .set(slot, egui::Shape::rect_filled(rect, 2.0, bg));
            }
            r
        },
    );
    let mut hover = format!("{row} · {}", col.label);
    if !cell.values.is_empty() {
        let vals: Vec<String> = cell
            .values
            .iter()
            .map(|v| format!("{v:.prec$}", prec = col.decimals))
            .collect();
        hover.push_str(&format!("\nper seed: {}", vals.join(", ")));
    }
    if let Some(d) = cell.delta {
        hover.push_str(&format!(
            "\n{} retrain by {:.prec$}",
            if d >= 0.0 { "above" } else { "below" },
            d.abs(),
            prec = col.decimals
        ));
    }
    if let Some((l, h)) = cell.interval {
        hover.push_str(&format!(
            "\n95 % interval over seeds: [{l:.prec$}, {h:.prec$}]",
            prec = col.decimals
        ));
    }
    if let Some((m, l, h)) = cell.paired.filter(|_| !is_ref) {
        hover.push_str(&format!(
            "\nminus retrain, seed by seed: {m:.prec$} [{l:.prec$}, {h:.prec$}] (paired 95 % t-interval){}",
            if cell.like_reference() {
                "\n≈ not distinguishable from retrain with these seeds"
            } else {
                "\ndiffers from retrain on these seeds"
            },
            prec = col.decimals
        ));
    }
    if cell.best {
        hover.push_str("\n★ closest to retrain in this column");
    }
    inner.inner.on_hover_text(hover);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(mean: f64, gap: Option<f64>) -> CellValue {
        CellValue {
            mean: Some(mean),
            gap,
            delta: gap,
            ..CellValue::default()
        }
    }

    fn model() -> TableModel {
        let col = |l: &str, has_gap| Column {
            label: l.into(),
            help: String::new(),
            decimals: 2,
            has_gap,
            summary: false,
        };
        let row = |l: &str, reference, cells| Row {
            label: l.into(),
            reference,
            note: String::new(),
            cells,
        };
        TableModel {
            columns: vec![col("UA", true), col("RTE", false)],
            rows: vec![
                row(
                    "Retrain",
                    true,
                    vec![cell(90.0, Some(0.0)), cell(60.0, None)],
                ),
                row("b-FT", false, vec![cell(95.0, Some(5.0)), cell(3.0, None)]),
                row("a-GA", false, vec![cell(91.0, Some(1.0)), cell(9.0, None)]),
                row("c-none", false, vec![CellValue::default(), cell(1.0, None)]),
            ],
        }
    }

    #[test]
    fn references_stay_on_top_and_gaps_sort_with_missing_last() {
        let m = model();
        let mut v = TableView::default();
        assert_eq!(m.order(&v), [0, 1, 2, 3], "natural order");
        v.sort = Some((0, false));
        assert_eq!(m.order(&v), [0, 2, 1, 3], "closest to retrain first");
        v.sort = Some((0, true));
        assert_eq!(m.order(&v), [0, 1, 2, 3], "reversed, missing still last");
        v.sort = Some((1, false));
        assert_eq!(m.order(&v), [0, 3, 1, 2], "no gap: by value");
        v.sort = Some((BY_NAME, false));
        assert_eq!(m.order(&v), [0, 2, 1, 3]);
        assert_eq!(
            m.max_gap(0),
            Some(5.0),
            "the reference's own gap is not counted"
        );
    }

    #[test]
    fn cells_read_as_mean_std_gap_and_star() {
        let c = CellValue {
            mean: Some(12.345),
            std: Some(0.5),
            gap: Some(1.25),
            delta: Some(-1.25),
            best: true,
            values: vec![12.0, 12.69],
            ..CellValue::default()
        };
        assert_eq!(c.text(2, true), "12.35 ± 0.50 (1.25) ★");
        let like = CellValue {
            paired: Some((-1.25, -3.0, 0.5)),
            ..c.clone()
        };
        assert_eq!(like.text(2, true), "12.35 ± 0.50 (1.25) ★ ≈");
        assert_eq!(like.text_two_lines(2, true), "12.35 ± 0.50\n(1.25) ★ ≈");
        assert_eq!(like.text(2, false), "12.35 ± 0.50 ★", "no gaps, no ≈");
        let differs = CellValue {
            paired: Some((-1.25, -2.0, -0.5)),
            ..c.clone()
        };
        assert!(!differs.like_reference());
        assert_eq!(c.text(1, false), "12.3 ± 0.5 ★");
        assert_eq!(CellValue::default().text(2, true), "–");
    }

    #[test]
    fn compact_cells_and_headings_break_into_lines() {
        let c = CellValue {
            mean: Some(95.0),
            std: Some(1.414),
            gap: Some(5.0),
            best: true,
            ..CellValue::default()
        };
        assert_eq!(c.text_two_lines(2, true), "95.00 ± 1.41\n(5.00) ★");
        assert_eq!(c.text_two_lines(2, false), "95.00 ± 1.41\n★");
        let plain = CellValue {
            mean: Some(3.0),
            ..CellValue::default()
        };
        assert_eq!(
            plain.text_two_lines(1, true),
            "3.0",
            "nothing for a second line"
        );
        assert_eq!(
            wrap_heading("metric-mia efficacy", 11),
            "metric-mia\nefficacy"
        );
        assert_eq!(wrap_heading("RTE (s)", 11), "RTE (s)");
        assert_eq!(
            wrap_heading("lira TPR@0.1%FPR", 11),
            "lira\nTPR@0.1%FPR",
            "a long word stays whole"
        );
    }

    #[test]
    fn a_table_wider_than_the_view_goes_compact() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable;
        let at = |width: f32| {
            let mut h = Harness::builder()
                .with_size(egui::vec2(width, 300.0))
                .build_ui_state(
                    |ui, v: &mut TableView| {
                        let model = crate::widgets::snapshots::study_table();
                        table_ui(ui, "t", &model, v);
                    },
                    TableView::default(),
                );
            h.run();
            h
        };
        let h = at(1100.0);
        assert!(
            h.query_by_label("0.40 ± 0.10 (1.70)").is_some(),
            "one line fits"
        );
        assert!(h.query_by_label("metric-mia efficacy").is_some());
        let h = at(640.0);
        assert!(
            h.query_by_label("0.40 ± 0.10\n(1.70)").is_some(),
            "too narrow: mean ± std over the gap"
        );
        assert!(
            h.query_by_label("metric-mia\nefficacy").is_some(),
            "the heading wraps"
        );
    }

    #[test]
    fn csv_follows_the_display_order() {
        let m = model();
        let csv = m.to_csv(&[0, 2]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "row,UA mean,UA std,UA gap,RTE mean,RTE std,RTE gap"
        );
        assert_eq!(lines[1], "Retrain,90,,0,60,,");
        assert_eq!(lines[2], "a-GA,91,,1,9,,");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn header_clicks_sort_and_reverse() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable;
        let mut h = Harness::new_ui_state(
            |ui, v: &mut TableView| {
                table_ui(ui, "t", &model(), v);
            },
            TableView::default(),
        );
        h.run();
        assert!(h.query_by_label("91.00 (1.00)").is_some());
        h.get_by_label("UA").click();
        h.run();
        assert_eq!(h.state().sort, Some((0, false)));
        h.get_by_label("UA ⏶").click();
        h.run();
        assert_eq!(h.state().sort, Some((0, true)));
        h.get_by_label("show gaps (in brackets)").click();
        h.run();
        assert!(h.state().hide_gaps);
        assert!(h.query_by_label("91.00").is_some());
    }
}
