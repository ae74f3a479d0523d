//! Plots on egui_plot: training curves, ROC curves (linear and log-log) and
//! score histograms.

use super::numbers;
use crate::artifacts::{Histogram, Roc};
use egui::Color32;
use egui_plot::{Bar, BarChart, Legend, Line, LineStyle, Plot, PlotPoints};
use std::collections::BTreeMap;

/// Distinct colours for series, in order.
pub const PALETTE: [Color32; 8] = [
    Color32::from_rgb(31, 119, 180),
    Color32::from_rgb(255, 127, 14),
    Color32::from_rgb(44, 160, 44),
    Color32::from_rgb(214, 39, 40),
    Color32::from_rgb(148, 103, 189),
    Color32::from_rgb(140, 86, 75),
    Color32::from_rgb(227, 119, 194),
    Color32::from_rgb(23, 190, 207),
];

/// A named series.
type Series<'a> = (&'a String, &'a Vec<[f64; 2]>);

/// The series worth a curve: two or more points.
pub fn plottable(curves: &BTreeMap<String, Vec<[f64; 2]>>) -> Vec<Series<'_>> {
    curves.iter().filter(|(_, p)| p.len() >= 2).collect()
}

/// Which plot a series goes on: losses, accuracies and everything else (a
/// learning rate of 0.01 next to a loss of 2.3 would flatten one of them).
pub fn curve_group(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if n.contains("loss") {
        "losses"
    } else if n.contains("acc") {
        "accuracy"
    } else {
        "other values"
    }
}

/// Live curves of a job (losses and metrics against epoch or step), one plot
/// per [`curve_group`].
pub fn curves_plot(
    ui: &mut egui::Ui,
    id: &str,
    curves: &BTreeMap<String, Vec<[f64; 2]>>,
    x_label: &str,
) {
    let series = plottable(curves);
    if series.is_empty() {
        ui.weak("No curves yet: they appear once the method reports a value twice.");
        return;
    }
    let mut groups: Vec<(&str, Vec<Series<'_>>)> = Vec::new();
    for s in series {
        let g = curve_group(s.0);
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, list)) => list.push(s),
            None => groups.push((g, vec![s])),
        }
    }
    groups.sort_by_key(|(g, _)| {
        ["losses", "accuracy", "other values"]
            .iter()
            .position(|x| x == g)
    });
    let n = groups.len() as f32;
    let width = (ui.available_width() - 8.0 * (n - 1.0)) / n;
    let mut color = 0;
    ui.horizontal(|ui| {
        for (name, group) in groups {
            ui.vertical(|ui| {
                ui.set_width(width);
                ui.label(egui::RichText::new(name).small().weak());
                let mut plot = Plot::new((id, name))
                    .height(200.0)
                    // The wheel scrolls the page; ctrl+wheel zooms the plot.
                    .allow_scroll(false)
                    .legend(Legend::default())
                    .x_axis_label(x_label)
                    .y_axis_formatter(|m, _| numbers::tick(m.value, m.step_size))
                    .label_formatter(|hover| {
                        let (name, p) = match hover {
                            egui_plot::HoverPosition::NearDataPoint {
                                plot_name,
                                position,
                                ..
                            } => (*plot_name, *position),
                            egui_plot::HoverPosition::Elsewhere { position } => ("", *position),
                        };
                        Some(format!(
                            "{name}\n{} · {}",
                            numbers::significant(p.x, 4),
                            numbers::significant(p.y, 4)
                        ))
                    });
                // A constant series (a fixed learning rate) would get an axis
                // of ±0.5 around it, whose only tick reads 0: frame it instead.
                if let Some((lo, hi)) = y_extent(&group) {
                    let pad = if hi > lo {
                        0.0
                    } else if lo == 0.0 {
                        1.0
                    } else {
                        lo.abs() * 0.2
                    };
                    plot = plot.include_y(lo - pad).include_y(hi + pad);
                }
                plot.show(ui, |plot| {
                    for (series, points) in &group {
                        plot.line(
                            Line::new(series.as_str(), PlotPoints::from(points.to_vec()))
                                .color(PALETTE[color % PALETTE.len()])
                                .width(1.8),
                        );
                        color += 1;
                    }
                });
            });
        }
    });
}

/// The smallest and largest finite y of some series.
fn y_extent(series: &[Series<'_>]) -> Option<(f64, f64)> {
    series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p[1]))
        .filter(|y| y.is_finite())
        .fold(None, |acc, y| match acc {
            None => Some((y, y)),
            Some((lo, hi)) => Some((f64::min(lo, y), f64::max(hi, y))),
        })
}

/// ROC curves. In log-log mode both rates are drawn as log10, from the smallest
/// FPR the data can resolve, which is where attacks that matter show (TPR at
/// 0.1 % FPR).
pub fn roc_plot(ui: &mut egui::Ui, id: &str, rocs: &[Roc], log: bool) {
    let floor = rocs
        .iter()
        .map(|r| r.fpr_floor)
        .fold(1.0f64, f64::min)
        .clamp(1e-6, 0.1);
    let tx = |v: f64| if log { v.max(floor).log10() } else { v };
    let fmt = move |v: f64| {
        if log {
            let p = 10f64.powf(v);
            if p >= 0.01 {
                format!("{p:.2}")
            } else {
                format!("{p:.0e}")
            }
        } else {
            format!("{v:.1}")
        }
    };
    let lo = tx(floor);
    let mut plot = Plot::new(id)
        .height(320.0)
        .allow_scroll(false)
        .width(420.0)
        .legend(Legend::default().position(egui_plot::Corner::RightBottom))
        .x_axis_label("false-positive rate")
        .y_axis_label("true-positive rate")
        .x_axis_formatter(move |m, _| fmt(m.value))
        .y_axis_formatter(move |m, _| fmt(m.value))
        .label_formatter(move |hover| {
            let (name, pos) = match hover {
                egui_plot::HoverPosition::NearDataPoint {
                    plot_name,
                    position,
                    ..
                } => (*plot_name, *position),
                egui_plot::HoverPosition::Elsewhere { position } => ("", *position),
            };
            let un = |v: f64| if log { 10f64.powf(v) } else { v };
            Some(format!(
                "{name}\nFPR {}\nTPR {}",
                fmt_rate(un(pos.x)),
                fmt_rate(un(pos.y))
            ))
        });
    if log {
        plot = plot
            .include_x(lo)
            .include_y(lo)
            .include_x(0.0)
            .include_y(0.0);
        plot = plot
            .x_grid_spacer(egui_plot::log_grid_spacer(10))
            .y_grid_spacer(egui_plot::log_grid_spacer(10));
    } else {
        plot = plot
            .include_x(0.0)
            .include_y(0.0)
            .include_x(1.0)
            .include_y(1.0);
    }
    plot.show(ui, |p| {
        let diag: Vec<[f64; 2]> = if log {
            (0..=40)
                .map(|i| {
                    let v = lo + (0.0 - lo) * f64::from(i) / 40.0;
                    [v, v]
                })
                .collect()
        } else {
            vec![[0.0, 0.0], [1.0, 1.0]]
        };
        p.line(
            Line::new("chance", PlotPoints::from(diag))
                .color(Color32::GRAY)
                .style(LineStyle::dashed_loose()),
        );
        for (i, roc) in rocs.iter().enumerate() {
            let pts: Vec<[f64; 2]> = roc
                .points
                .iter()
                .filter(|[f, t]| !log || (*f > 0.0 && *t > 0.0))
                .map(|[f, t]| [tx(*f), tx(*t)])
                .collect();
            let name = match roc.auc {
                Some(a) => format!("{} (AUC {a:.3})", roc.name),
                None => roc.name.clone(),
            };
            p.line(
                Line::new(name, PlotPoints::from(pts))
                    .color(PALETTE[i % PALETTE.len()])
                    .width(2.0)
                    // A ROC curve is a staircase: vertical runs are data, not
                    // points to aggregate into a band.
                    .allow_band(false),
            );
        }
    });
}

fn fmt_rate(v: f64) -> String {
    if v >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Score histograms of several groups on shared bins, as shares of each group.
pub fn histogram_plot(ui: &mut egui::Ui, id: &str, h: &Histogram, x_label: &str) {
    let top = h
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(0.0f64, f64::max);
    Plot::new(id)
        .height(320.0)
        .allow_scroll(false)
        .default_y_bounds(0.0, (top * 1.1).max(1e-9))
        .default_x_bounds(
            h.lo,
            h.lo + h.width * h.series.first().map_or(1, |s| s.1.len()) as f64,
        )
        .legend(Legend::default())
        .x_axis_label(x_label)
        .y_axis_label("share of samples")
        // Scores can be tiny (losses near 0, likelihood ratios).
        .x_axis_formatter(|m, _| numbers::tick(m.value, m.step_size))
        .y_axis_formatter(|m, _| numbers::tick(m.value, m.step_size))
        .show(ui, |p| {
            for (i, (name, shares)) in h.series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let bars = shares
                    .iter()
                    .enumerate()
                    .map(|(b, &s)| {
                        Bar::new(h.lo + (b as f64 + 0.5) * h.width, s)
                            .width(h.width * 0.95)
                            .fill(color.gamma_multiply(0.45))
                            .stroke(egui::Stroke::new(1.0, color))
                    })
                    .collect();
                p.bar_chart(BarChart::new(name.as_str(), bars).color(color));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_grouped_by_what_they_measure() {
        assert_eq!(curve_group("retain_loss"), "losses");
        assert_eq!(curve_group("forget_acc"), "accuracy");
        assert_eq!(curve_group("test_accuracy"), "accuracy");
        assert_eq!(curve_group("lr"), "other values");
        let mut curves = BTreeMap::new();
        curves.insert("one".to_string(), vec![[0.0, 1.0]]);
        curves.insert("two".to_string(), vec![[0.0, 1.0], [1.0, 2.0]]);
        let p = plottable(&curves);
        assert_eq!(p.len(), 1, "a single point is not a curve");
        assert_eq!(p[0].0, "two");
    }
}
