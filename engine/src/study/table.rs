//! The comparison table of the unlearning papers, as data: one row per method
//! (and the reference rows), one column per metric, each cell the mean ± std
//! over seeds with its gap to retrain; Avg. Gap (the mean of a row's gaps) and
//! the run time (RTE) close each row, and the smallest gap of each column
//! among the methods is marked best. The CLI prints it ([`ComparisonTable::to_text`],
//! [`ComparisonTable::to_csv`]) and the GUI renders the same struct.
//!
//! Conventions (stated in the table's `notes`):
//! * values are shown scaled (fractions in percent), gaps in the same units;
//! * gap = |mean of the row − mean of Retrain| (gap of the means over seeds);
//! * std is the sample standard deviation (n − 1), absent for one seed;
//! * Avg. Gap = mean of the row's gaps over the Avg. Gap columns, absent when
//!   one of them is;
//! * best = smallest gap among the method rows (ties all marked);
//! * ToW (Zhao et al., NeurIPS 2024, as their code computes it) =
//!   (1 − |ΔUA|)(1 − |ΔRA|)(1 − |ΔTA|) per seed against the Retrain run of the
//!   same seed (fractions), mean with its 95 % t-interval over seeds; ToW-MIA
//!   puts the first attack's efficacy in place of UA;
//! * ≈ marks a cell whose paired 95 % t-interval of (row − Retrain) over the
//!   seeds both ran holds 0: the seeds cannot tell the row from Retrain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::results::RowKind;
use crate::metrics::student::{MeanInterval, mean_t_interval};

/// Level of the t-intervals over seeds (ToW, paired comparisons).
pub const SEED_LEVEL: f64 = 0.95;

/// A metric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Metric key (`ra`, `mia.efficacy`, ...).
    pub key: String,
    /// Heading.
    pub label: String,
    /// Stored value × scale = shown value (100 for fractions).
    pub scale: f64,
    /// Decimals shown.
    pub decimals: usize,
    /// Whether its gap counts into Avg. Gap.
    pub in_avg_gap: bool,
}

/// One cell: a metric of one row over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The scaled value of each seed that has one, in seed order.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: Option<f64>,
    /// Their sample standard deviation (n − 1); `None` below two values.
    pub std: Option<f64>,
    /// |mean − Retrain's mean|.
    pub gap: Option<f64>,
    /// mean − Retrain's mean (signed).
    pub delta: Option<f64>,
    /// Smallest gap of the column among the methods.
    pub best: bool,
    /// Row − Retrain seed by seed (shown units), mean with its paired 95 %
    /// t-interval; `None` for Retrain itself and without shared seeds.
    #[serde(default)]
    pub paired: Option<MeanInterval>,
}

impl Cell {
    /// Whether the paired interval holds 0 (at least two shared seeds).
    pub fn like_retrain(&self) -> bool {
        self.paired.as_ref().is_some_and(|p| p.contains(0.0))
    }

    fn of(values: Vec<f64>) -> Cell {
        let (mean, std) = match mean_std(&values) {
            Some((m, s)) => (Some(m), s),
            None => (None, None),
        };
        Cell {
            values,
            mean,
            std,
            gap: None,
            delta: None,
            best: false,
            paired: None,
        }
    }
}

/// A row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// Method name, `Retrain` or `Original`.
    pub label: String,
    /// What the row is.
    pub kind: RowKind,
    /// Seeds behind the row, ascending.
    pub seeds: Vec<u64>,
    /// One cell per column.
    pub cells: Vec<Cell>,
    /// Mean gap over the Avg. Gap columns.
    pub avg_gap: Option<f64>,
    /// Smallest Avg. Gap among the methods.
    pub avg_gap_best: bool,
    /// Run time in seconds (RTE): the method's worker job; for Retrain the
    /// training that produced it, also when its result came from the cache.
    pub rte: Cell,
    /// ToW over the seeds shared with Retrain (fraction, 1 = Retrain's).
    #[serde(default)]
    pub tow: Option<MeanInterval>,
    /// ToW-MIA (the first attack's efficacy in place of UA).
    #[serde(default)]
    pub tow_mia: Option<MeanInterval>,
}

/// The table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonTable {
    /// Title line.
    pub title: String,
    /// Metric columns, in order.
    pub columns: Vec<Column>,
    /// Reference rows first, then the methods.
    pub rows: Vec<TableRow>,
    /// How the numbers were computed.
    pub notes: Vec<String>,
    /// Heading of the Avg. Gap column ("Avg. Disparity" in the DAU paper).
    #[serde(default = "default_avg_gap_label")]
    pub avg_gap_label: String,
}

fn default_avg_gap_label() -> String {
    "Avg. Gap".into()
}

/// One row's raw results: per seed, its metrics (unscaled, by key) and run time.
#[derive(Debug, Clone, PartialEq)]
pub struct RowInput {
    /// Label.
    pub label: String,
    /// Kind.
    pub kind: RowKind,
    /// `(seed, metrics, seconds)` per run.
    pub runs: Vec<(u64, BTreeMap<String, f64>, f64)>,
}

/// Mean and sample standard deviation (n − 1; `None` for one value) of the
/// finite values; `None` when there are none.
pub fn mean_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

/// Values closer than this count as a tie for "best".
const TIE: f64 = 1e-9;

/// Builds the table; the first [`RowKind::Retrain`] row is the reference.
pub fn build_table(title: String, columns: Vec<Column>, rows: Vec<RowInput>) -> ComparisonTable {
    let retrain_runs: BTreeMap<u64, BTreeMap<String, f64>> = rows
        .iter()
        .find(|r| r.kind == RowKind::Retrain)
        .map(|r| r.runs.iter().map(|(s, m, _)| (*s, m.clone())).collect())
        .unwrap_or_default();
    let mia_key = tow_mia_key(&columns, &retrain_runs);
    let mut out: Vec<TableRow> = rows
        .into_iter()
        .map(|r| {
            let mut runs = r.runs;
            runs.sort_by_key(|(seed, _, _)| *seed);
            let paired_with = |key: &str, scale: f64| -> Option<MeanInterval> {
                if r.kind == RowKind::Retrain {
                    return None;
                }
                let d: Vec<f64> = runs
                    .iter()
                    .filter_map(|(seed, m, _)| {
                        Some((m.get(key)? - retrain_runs.get(seed)?.get(key)?) * scale)
                    })
                    .collect();
                mean_t_interval(&d, SEED_LEVEL)
            };
            let tow_of = |forget_key: &str| -> Option<MeanInterval> {
                let per_seed: Vec<f64> = runs
                    .iter()
                    .filter_map(|(seed, m, _)| {
                        let reference = retrain_runs.get(seed)?;
                        let mut tow = 1.0;
                        for key in [forget_key, "ra", "ta"] {
                            tow *= 1.0 - (m.get(key)? - reference.get(key)?).abs();
                        }
                        Some(tow)
                    })
                    .collect();
                mean_t_interval(&per_seed, SEED_LEVEL)
            };
            let tow = tow_of("ua");
            let tow_mia = mia_key.as_deref().and_then(tow_of);
            let cells: Vec<Cell> = columns
                .iter()
                .map(|c| {
                    let mut cell = Cell::of(
                        runs.iter()
                            .filter_map(|(_, m, _)| m.get(&c.key))
                            .map(|v| v * c.scale)
                            .collect(),
                    );
                    cell.paired = paired_with(&c.key, c.scale);
                    cell
                })
                .collect();
            TableRow {
                label: r.label,
                kind: r.kind,
                seeds: runs.iter().map(|(s, _, _)| *s).collect(),
                cells,
                avg_gap: None,
                avg_gap_best: false,
                rte: Cell::of(runs.iter().map(|(_, _, s)| *s).collect()),
                tow,
                tow_mia,
            }
        })
        .collect();
    let reference: Option<Vec<Option<f64>>> = out
        .iter()
        .find(|r| r.kind == RowKind::Retrain)
        .map(|r| r.cells.iter().map(|c| c.mean).collect());
    if let Some(reference) = &reference {
        for row in &mut out {
            for (cell, want) in row.cells.iter_mut().zip(reference) {
                if let (Some(m), Some(w)) = (cell.mean, want) {
                    cell.delta = Some(m - w);
                    cell.gap = Some((m - w).abs());
                }
            }
            let gaps: Option<Vec<f64>> = columns
                .iter()
                .zip(&row.cells)
                .filter(|(c, _)| c.in_avg_gap)
                .map(|(_, cell)| cell.gap)
                .collect();
            row.avg_gap = gaps
                .filter(|g| !g.is_empty())
                .map(|g| g.iter().sum::<f64>() / g.len() as f64);
        }
    }
    let smallest = |out: &[TableRow], gap: &dyn Fn(&TableRow) -> Option<f64>| {
        out.iter()
            .filter(|r| r.kind == RowKind::Method)
            .filter_map(gap)
            .fold(f64::INFINITY, f64::min)
    };
    for k in 0..columns.len() {
        let best = smallest(&out, &|r| r.cells[k].gap);
        for row in out.iter_mut().filter(|r| r.kind == RowKind::Method) {
            let cell = &mut row.cells[k];
            cell.best = cell.gap.is_some_and(|g| g <= best + TIE);
        }
    }
    let best_avg = smallest(&out, &|r| r.avg_gap);
    for row in out.iter_mut().filter(|r| r.kind == RowKind::Method) {
        row.avg_gap_best = row.avg_gap.is_some_and(|g| g <= best_avg + TIE);
    }
    let avg_cols: Vec<&str> = columns
        .iter()
        .filter(|c| c.in_avg_gap)
        .map(|c| c.label.as_str())
        .collect();
    ComparisonTable {
        title,
        notes: vec![
            "mean ± sample std (n − 1) over seeds; accuracies, efficacy, AUC and TPR in %".into(),
            "(gap) = |mean − Retrain's mean|; * = smallest gap in the column among the methods"
                .into(),
            format!("Avg. Gap = mean gap over {}", avg_cols.join(", ")),
            "RTE = wall time of the method's job in seconds (Retrain: of its training, also when cached)"
                .into(),
            format!(
                "ToW = (1−|ΔUA|)(1−|ΔRA|)(1−|ΔTA|) against Retrain of the same seed (Zhao et al. 2024){}; mean [95 % t-interval] over seeds",
                match &mia_key {
                    Some(k) => format!(", ToW-MIA with {k} for UA"),
                    None => String::new(),
                }
            ),
            "≈ = the paired 95 % t-interval of (row − Retrain) over seeds holds 0: not distinguishable from Retrain with these seeds"
                .into(),
        ],
        columns,
        rows: out,
        avg_gap_label: default_avg_gap_label(),
    }
}

/// The attack efficacy ToW-MIA uses: the first efficacy column, else the
/// first efficacy Retrain has.
fn tow_mia_key(
    columns: &[Column],
    retrain: &BTreeMap<u64, BTreeMap<String, f64>>,
) -> Option<String> {
    columns
        .iter()
        .map(|c| c.key.clone())
        .find(|k| k.ends_with(".efficacy"))
        .or_else(|| {
            retrain
                .values()
                .flat_map(|m| m.keys())
                .find(|k| k.ends_with(".efficacy"))
                .cloned()
        })
}

fn fmt_interval(i: Option<&MeanInterval>) -> String {
    match i {
        None => "-".into(),
        Some(i) => match (i.low, i.high) {
            (Some(l), Some(h)) => format!("{:.3} [{l:.3}, {h:.3}]", i.mean),
            _ => format!("{:.3}", i.mean),
        },
    }
}

fn fmt_cell(c: &Cell, decimals: usize, show_gap: bool) -> String {
    let Some(mean) = c.mean else {
        return "-".into();
    };
    let mut s = format!("{mean:.decimals$}");
    if let Some(std) = c.std {
        s.push_str(&format!("±{std:.decimals$}"));
    }
    if show_gap && let Some(g) = c.gap {
        s.push_str(&format!(" ({g:.decimals$})"));
    }
    if c.best {
        s.push('*');
    }
    if show_gap && c.like_retrain() {
        s.push('≈');
    }
    s
}

impl ComparisonTable {
    /// The table as aligned text, with the notes below it.
    pub fn to_text(&self) -> String {
        let mut header = vec!["method".to_string()];
        header.extend(self.columns.iter().map(|c| c.label.clone()));
        header.extend([self.avg_gap_label.clone(), "RTE (s)".to_string()]);
        let has_tow = self.rows.iter().any(|r| r.tow.is_some());
        let has_tow_mia = self.rows.iter().any(|r| r.tow_mia.is_some());
        if has_tow {
            header.push("ToW".into());
        }
        if has_tow_mia {
            header.push("ToW-MIA".into());
        }
        let mut lines = vec![header];
        for row in &self.rows {
            let mut line = vec![row.label.clone()];
            for (c, cell) in self.columns.iter().zip(&row.cells) {
                line.push(fmt_cell(cell, c.decimals, true));
            }
            line.push(match row.avg_gap {
                Some(g) => format!("{g:.2}{}", if row.avg_gap_best { "*" } else { "" }),
                None => "-".into(),
            });
            line.push(fmt_cell(&row.rte, 1, false));
            if has_tow {
                line.push(fmt_interval(row.tow.as_ref()));
            }
            if has_tow_mia {
                line.push(fmt_interval(row.tow_mia.as_ref()));
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|k| {
                lines
                    .iter()
                    .map(|l| l[k].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = format!("{}\n", self.title);
        for (i, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(k, (s, w))| {
                    if k == 0 {
                        format!("{s:<w$}")
                    } else {
                        format!("{s:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        for n in &self.notes {
            out.push_str(&format!("  {n}\n"));
        }
        out
    }

    /// The table as CSV: per column its mean, std, gap, signed delta and best
    /// flag (in shown units, full precision), then Avg. Gap and RTE.
    pub fn to_csv(&self) -> String {
        let mut head = vec!["row".to_string(), "kind".into(), "seeds".into()];
        for c in &self.columns {
            for part in ["mean", "std", "gap", "delta", "best"] {
                head.push(format!("{}_{part}", c.key));
            }
        }
        head.extend(
            [
                "avg_gap",
                "avg_gap_best",
                "rte_mean_s",
                "rte_std_s",
                "tow",
                "tow_low",
                "tow_high",
                "tow_mia",
                "tow_mia_low",
                "tow_mia_high",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        for c in &self.columns {
            for part in ["paired_mean", "paired_low", "paired_high"] {
                head.push(format!("{}_{part}", c.key));
            }
        }
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut out = head.join(",") + "\n";
        for row in &self.rows {
            let seeds: Vec<String> = row.seeds.iter().map(|s| s.to_string()).collect();
            let mut line = vec![row.label.clone(), row.kind.name().into(), seeds.join(" ")];
            for cell in &row.cells {
                line.extend([
                    num(cell.mean),
                    num(cell.std),
                    num(cell.gap),
                    num(cell.delta),
                    cell.best.to_string(),
                ]);
            }
            line.extend([
                num(row.avg_gap),
                row.avg_gap_best.to_string(),
                num(row.rte.mean),
                num(row.rte.std),
            ]);
            for i in [&row.tow, &row.tow_mia] {
                line.extend([
                    num(i.as_ref().map(|i| i.mean)),
                    num(i.as_ref().and_then(|i| i.low)),
                    num(i.as_ref().and_then(|i| i.high)),
                ]);
            }
            for cell in &row.cells {
                let p = cell.paired.as_ref();
                line.extend([
                    num(p.map(|p| p.mean)),
                    num(p.and_then(|p| p.low)),
                    num(p.and_then(|p| p.high)),
                ]);
            }
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }

    /// The table with its Avg. Gap column headed `label` (a paper's name for
    /// it, e.g. "Avg. Disparity"), in the heading and the notes.
    pub fn with_avg_gap_label(mut self, label: &str) -> ComparisonTable {
        for n in &mut self.notes {
            if let Some(rest) = n.strip_prefix(&format!("{} =", self.avg_gap_label)) {
                *n = format!("{label} ={rest}");
            }
        }
        self.avg_gap_label = label.to_string();
        self
    }

    /// The table without run times: what must be identical when a study is
    /// re-run with the same seeds (wall time is not reproducible).
    pub fn without_run_times(&self) -> ComparisonTable {
        let mut t = self.clone();
        for row in &mut t.rows {
            row.rte = Cell::of(Vec::new());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(key: &str, in_avg: bool) -> Column {
        Column {
            key: key.into(),
            label: key.to_uppercase(),
            scale: 100.0,
            decimals: 2,
            in_avg_gap: in_avg,
        }
    }

    fn run(seed: u64, pairs: &[(&str, f64)], secs: f64) -> (u64, BTreeMap<String, f64>, f64) {
        (
            seed,
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            secs,
        )
    }

    fn row(label: &str, kind: RowKind, runs: Vec<(u64, BTreeMap<String, f64>, f64)>) -> RowInput {
        RowInput {
            label: label.into(),
            kind,
            runs,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        // 1, 2, 3, 4: mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5, /3.
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m, 2.5);
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[7.0]), Some((7.0, None)));
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[f64::NAN, 3.0]), Some((3.0, None)));
    }

    /// Retrain, two methods, two seeds; every number below is worked out by hand.
    fn example() -> ComparisonTable {
        build_table(
            "t".into(),
            vec![col("ua", true), col("ra", true), col("ta", false)],
            vec![
                row(
                    "A",
                    RowKind::Method,
                    vec![
                        run(1, &[("ua", 0.90), ("ra", 0.99), ("ta", 0.95)], 3.0),
                        run(0, &[("ua", 0.92), ("ra", 0.97), ("ta", 0.93)], 1.0),
                    ],
                ),
                row(
                    "Retrain",
                    RowKind::Retrain,
                    vec![
                        run(0, &[("ua", 0.94), ("ra", 1.00), ("ta", 0.96)], 10.0),
                        run(1, &[("ua", 0.96), ("ra", 1.00), ("ta", 0.98)], 14.0),
                    ],
                ),
                row(
                    "B",
                    RowKind::Method,
                    vec![
                        run(0, &[("ua", 1.00), ("ra", 0.99), ("ta", 0.97)], 2.0),
                        run(1, &[("ua", 1.00), ("ra", 0.99), ("ta", 0.97)], 2.0),
                    ],
                ),
                row(
                    "Original",
                    RowKind::Original,
                    vec![run(0, &[("ua", 1.00), ("ra", 1.00), ("ta", 0.98)], 0.0)],
                ),
            ],
        )
    }

    #[test]
    fn gaps_avg_gap_std_and_best_by_hand() {
        let t = example();
        let a = &t.rows[0];
        assert_eq!(a.seeds, [0, 1]);
        // A: UA 92, 90 -> mean 91, std sqrt(2); Retrain UA mean 95 -> gap 4, delta -4.
        assert_eq!(a.cells[0].values, [92.0, 90.0]);
        assert!(close(a.cells[0].mean, 91.0));
        assert!(close(a.cells[0].std, 2f64.sqrt()));
        assert!(close(a.cells[0].gap, 4.0));
        assert!(close(a.cells[0].delta, -4.0));
        // RA: 98 vs 100 -> gap 2; TA: 94 vs 97 -> gap 3 (not in Avg. Gap).
        assert!(close(a.cells[1].gap, 2.0));
        assert!(close(a.cells[2].gap, 3.0));
        assert!(close(a.avg_gap, 3.0)); // (4 + 2) / 2
        // B: UA 100 -> gap 5; RA 99 -> gap 1; TA 97 -> gap 0; std 0 (equal seeds).
        let b = &t.rows[2];
        assert!(close(b.cells[0].gap, 5.0));
        assert!(close(b.cells[1].gap, 1.0));
        assert!(close(b.cells[2].gap, 0.0));
        assert!(close(b.cells[0].std, 0.0));
        assert!(close(b.avg_gap, 3.0)); // (5 + 1) / 2: ties with A
        // Best per column among methods: UA -> A (4 < 5), RA -> B, TA -> B.
        assert_eq!(
            (a.cells[0].best, a.cells[1].best, a.cells[2].best),
            (true, false, false)
        );
        assert_eq!(
            (b.cells[0].best, b.cells[1].best, b.cells[2].best),
            (false, true, true)
        );
        assert!(a.avg_gap_best && b.avg_gap_best, "a tie marks both");
        // Retrain: zero gaps, never marked; RTE mean 12 ± sqrt(8).
        let r = &t.rows[1];
        assert!(r.cells.iter().all(|c| close(c.gap, 0.0) && !c.best));
        assert!(!r.avg_gap_best);
        assert!(close(r.rte.mean, 12.0));
        assert!(close(r.rte.std, 8f64.sqrt()));
        // ToW of A: seed 0 (1−.02)(1−.03)(1−.03) = 0.922082, seed 1
        // (1−.06)(1−.01)(1−.03) = 0.902682; mean 0.912382 ± t(.975, 1)·s/√2.
        let tow = a.tow.as_ref().unwrap();
        assert!((tow.values[0] - 0.922082).abs() < 1e-12);
        assert!((tow.values[1] - 0.902682).abs() < 1e-12);
        assert!((tow.mean - 0.912382).abs() < 1e-12);
        let half = 12.706_204_736_174_7 * (0.0194 / 2f64.sqrt()) / 2f64.sqrt();
        assert!((tow.high.unwrap() - (0.912382 + half)).abs() < 1e-9);
        assert!(r.tow.as_ref().unwrap().values.iter().all(|&v| v == 1.0));
        // One seed: no std; the original is compared but never best.
        let o = &t.rows[3];
        assert_eq!(o.cells[0].std, None);
        assert!(close(o.cells[0].gap, 5.0));
        assert!(close(o.avg_gap, 2.5)); // (5 + 0) / 2
        assert!(!o.avg_gap_best && !o.cells.iter().any(|c| c.best));
    }

    /// The Alignment Calibration layout (FS, EMIA, RA, TA, UA, CMIA; Avg. Gap
    /// over the five after FS, as its Table 1) on the first rows of that
    /// table (MoCo, 10 %): Fine-Tune's printed Avg. Gap is 1.74.
    #[test]
    fn avg_gap_over_a_chosen_column_set_matches_the_paper_by_hand() {
        let fs = Column {
            scale: 1.0,
            decimals: 4,
            ..col("fs", false)
        };
        let mut cols = vec![fs];
        cols.extend(["emia.efficacy", "ra", "ta", "ua", "cmia.efficacy"].map(|k| col(k, true)));
        let pct = |fs: f64, v: [f64; 5]| -> Vec<(&'static str, f64)> {
            let mut out = vec![("fs", fs)];
            for (k, x) in ["emia.efficacy", "ra", "ta", "ua", "cmia.efficacy"]
                .into_iter()
                .zip(v)
            {
                out.push((k, x / 100.0));
            }
            out
        };
        let t = build_table(
            "AC".into(),
            cols,
            vec![
                row(
                    "Retrain",
                    RowKind::Retrain,
                    vec![run(
                        0,
                        &pct(0.0266, [49.72, 89.54, 87.76, 88.42, 34.38]),
                        1.0,
                    )],
                ),
                row(
                    "FT",
                    RowKind::Method,
                    vec![run(
                        0,
                        &pct(0.0393, [50.15, 88.34, 86.46, 87.59, 29.42]),
                        1.0,
                    )],
                ),
            ],
        )
        .with_avg_gap_label("Avg. Gap (%)");
        // Gaps 0.43, 1.20, 1.30, 0.83, 4.96: sum 8.72, mean 1.744 (printed 1.74);
        // FS's gap 0.0127 is shown but not averaged.
        let ft = &t.rows[1];
        assert!(close(ft.avg_gap.map(|g| (g * 1e6).round() / 1e6), 1.744));
        assert!((ft.cells[0].gap.unwrap() - 0.0127).abs() < 1e-12);
        assert!(close(t.rows[0].avg_gap, 0.0), "Retrain's own Avg. Gap is 0");
        let text = t.to_text();
        assert!(
            text.lines().nth(1).unwrap().contains("Avg. Gap (%)"),
            "{text}"
        );
        assert!(
            text.contains("Avg. Gap (%) = mean gap over EMIA.EFFICACY, RA, TA, UA, CMIA.EFFICACY"),
            "{text}"
        );
        assert!(text.contains("1.74*"), "{text}");
    }

    #[test]
    fn a_missing_metric_leaves_its_cell_and_avg_gap_empty() {
        let t = build_table(
            "t".into(),
            vec![col("ua", true), col("fs", true)],
            vec![
                row(
                    "Retrain",
                    RowKind::Retrain,
                    vec![run(0, &[("ua", 0.5)], 1.0)],
                ),
                row(
                    "A",
                    RowKind::Method,
                    vec![run(0, &[("ua", 0.25), ("fs", 0.1)], 1.0)],
                ),
            ],
        );
        let a = &t.rows[1];
        assert!(close(a.cells[0].gap, 25.0));
        assert_eq!(a.cells[1].gap, None, "no reference value");
        assert_eq!(a.avg_gap, None);
        assert!(a.cells[0].best && !a.cells[1].best);
    }

    #[test]
    fn text_and_csv_show_the_numbers() {
        let t = example();
        let text = t.to_text();
        assert!(text.contains("91.00±1.41 (4.00)*"), "{text}");
        assert!(text.contains("100.00±0.00 (5.00)"), "{text}");
        assert!(text.contains("Avg. Gap"), "{text}");
        let csv = t.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("row,kind,seeds,ua_mean,ua_std,ua_gap,ua_delta,ua_best"));
        assert!(
            lines[1].starts_with("A,method,0 1,91,1.4142135623730951,4,-4,true"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains(",3,true,2,1.4142135623730951,0.912382"),
            "{}",
            lines[1]
        );
        // TA differs by exactly −3 points in both seeds: a zero-width paired
        // interval that excludes 0 (no ≈), where UA's (−2, −6) holds it.
        assert!(lines[1].ends_with(",-2.9999999999999267"), "{}", lines[1]);
        assert!(text.contains("91.00±1.41 (4.00)*≈"), "{text}");
        assert!(text.contains("ToW"), "{text}");
        assert_eq!(t.without_run_times().rows[1].rte.mean, None);
    }
}
