//! Plots on egui_plot: training curves, ROC curves (linear and log-log) and
//! score histograms.

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

/// The series worth a curve: two or more points.
pub fn plottable(curves: &BTreeMap<String, Vec<[f64; 2]>>) -> Vec<(&String, &Vec<[f64; 2]>)> {
    curves.iter().filter(|(_, p)| p.len() >= 2).collect()
}

/// Live curves of a job (losses and metrics against epoch or step). Series
/// whose names contain "acc" go on their own plot so a loss of 2.3 does not
/// flatten an accuracy of 0.98.
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
    let (acc, other): (Vec<_>, Vec<_>) = series.into_iter().partition(|(n, _)| n.contains("acc"));
    let groups: Vec<(&str, Vec<(&String, &Vec<[f64; 2]>)>)> =
        [("values", other), ("accuracy", acc)]
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .collect();
    let n = groups.len() as f32;
    let width = (ui.available_width() - 8.0 * (n - 1.0)) / n;
    ui.horizontal(|ui| {
        for (gi, (name, group)) in groups.into_iter().enumerate() {
            ui.vertical(|ui| {
                ui.set_width(width);
                Plot::new((id, name))
                    .height(220.0)
                    .legend(Legend::default())
                    .x_axis_label(x_label)
                    .show(ui, |plot| {
                        for (i, (series, points)) in group.iter().enumerate() {
                            plot.line(
                                Line::new(series.as_str(), PlotPoints::from(points.to_vec()))
                                    .color(PALETTE[(i + gi * 3) % PALETTE.len()])
                                    .width(1.8),
                            );
                        }
                    });
            });
        }
    });
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
        .height(300.0)
        .data_aspect(1.0)
        .legend(Legend::default())
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
                    .width(2.0),
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
    Plot::new(id)
        .height(240.0)
        .legend(Legend::default())
        .x_axis_label(x_label)
        .y_axis_label("share of samples")
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
