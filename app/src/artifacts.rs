//! A run's result files, read for the views: tensors (safetensors with one or
//! more tensors: 2-D ones open in the heatmap, 1-D ones as histograms), JSON,
//! and the membership scores an attack writes (`scores_<role>`, see the attack
//! kit), from which ROC curves and histograms are drawn. Also the CSV/JSON
//! exports of what the views show. The files themselves are read in workers
//! (`lethe_engine::preview`); this module works on what they send back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use lethe_engine::preview::{ArtifactData, MAX_ELEMENTS, Scores, TensorData};

/// A row-major matrix of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub values: Vec<f32>,
}

impl Matrix {
    /// A matrix; `None` when the sizes do not match.
    pub fn new(rows: usize, cols: usize, values: Vec<f32>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(values.len())).then_some(Matrix { rows, cols, values })
    }

    /// The value at `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> Option<f32> {
        if r < self.rows && c < self.cols {
            self.values.get(r * self.cols + c).copied()
        } else {
            None
        }
    }

    /// Smallest and largest finite value (`(0, 0)` when there is none).
    pub fn finite_range(&self) -> (f32, f32) {
        finite_range(&self.values)
    }

    /// The matrix as CSV, one row per line.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(self.values.len() * 8);
        for r in 0..self.rows {
            let row = &self.values[r * self.cols..(r + 1) * self.cols];
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{v}");
            }
            out.push('\n');
        }
        out
    }
}

/// Smallest and largest finite value of `values` (`(0, 0)` when there is none).
pub fn finite_range(values: &[f32]) -> (f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in values.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi { (0.0, 0.0) } else { (lo, hi) }
}

/// A tensor as a matrix: 2-D as is, 1-D as one row, higher ranks with all
/// leading dimensions folded into rows.
pub fn as_matrix(t: &TensorData) -> Option<Matrix> {
    let values = t.values.clone()?;
    let (rows, cols) = match t.shape.as_slice() {
        [] => (1, 1),
        [n] => (1, *n as usize),
        [.., last] => (values.len() / (*last).max(1) as usize, *last as usize),
    };
    Matrix::new(rows, cols, values)
}

/// Whether `path` is one of the score files a preview of an attack folder reads
/// (`lethe_engine::preview::read_scores`).
pub fn is_score_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("scores_") && n.ends_with(".safetensors"))
}

/// A ROC curve as `[fpr, tpr]` points with its AUC, computed by the engine's
/// metrics (the same code the evaluation uses).
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    /// What is compared ("member vs non-member").
    pub name: String,
    /// Points from (0, 0) to (1, 1).
    pub points: Vec<[f64; 2]>,
    /// Area under the curve.
    pub auc: Option<f64>,
    /// Smallest non-zero FPR the data can resolve (1 / non-members).
    pub fpr_floor: f64,
}

impl Roc {
    /// The curve of `positives` against `negatives`.
    pub fn new(name: &str, positives: &[f64], negatives: &[f64]) -> Self {
        let curve = lethe_engine::metrics::RocCurve::new(positives, negatives);
        Roc {
            name: name.to_string(),
            points: curve
                .fpr
                .iter()
                .zip(&curve.tpr)
                .map(|(f, t)| [*f, *t])
                .collect(),
            auc: lethe_engine::metrics::roc_auc(positives, negatives),
            fpr_floor: 1.0 / negatives.len().max(1) as f64,
        }
    }

    /// The points as CSV with a header.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("fpr,tpr\n");
        for [f, t] in &self.points {
            let _ = writeln!(out, "{f},{t}");
        }
        out
    }
}

/// The ROC curves a score set supports: the attack against held-out members,
/// and the forget set against non-members (the unlearning question).
pub fn rocs(scores: &Scores) -> Vec<Roc> {
    let mut out = Vec::new();
    if let Some(non) = &scores.nonmember {
        if let Some(m) = &scores.member {
            out.push(Roc::new("members vs non-members", m, non));
        }
        if let Some(f) = &scores.forget {
            out.push(Roc::new("forget set vs non-members", f, non));
        }
    }
    out
}

/// A histogram with shared bins, for comparing score distributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub lo: f64,
    /// Bin width.
    pub width: f64,
    /// Per series: name and the share of its samples in each bin (sums to 1).
    pub series: Vec<(String, Vec<f64>)>,
}

/// Bins every series over their common finite range into `bins` bins.
pub fn histogram(series: &[(&str, &[f64])], bins: usize) -> Option<Histogram> {
    let bins = bins.max(1);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for (_, xs) in series {
        for &x in xs.iter().filter(|x| x.is_finite()) {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    if lo > hi {
        return None;
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let out = series
        .iter()
        .map(|(name, xs)| {
            let mut counts = vec![0.0; bins];
            let mut n = 0.0;
            for &x in xs.iter().filter(|x| x.is_finite()) {
                let b = (((x - lo) / width) as usize).min(bins - 1);
                counts[b] += 1.0;
                n += 1.0;
            }
            if n > 0.0 {
                for c in &mut counts {
                    *c /= n;
                }
            }
            (name.to_string(), counts)
        })
        .collect();
    Some(Histogram {
        lo,
        width,
        series: out,
    })
}

/// Every score as long-format CSV: `role,position,score`.
pub fn scores_csv(s: &Scores) -> String {
    let mut out = String::from("role,position,score\n");
    for (role, v) in [
        ("forget", &s.forget),
        ("member", &s.member),
        ("nonmember", &s.nonmember),
    ] {
        for (i, x) in v.iter().flatten().enumerate() {
            let _ = writeln!(out, "{role},{i},{x}");
        }
    }
    out
}

/// Curves (`name → [x, y]` points) as long-format CSV: `series,x,y`.
pub fn curves_csv(curves: &std::collections::BTreeMap<String, Vec<[f64; 2]>>) -> String {
    let mut out = String::from("series,x,y\n");
    for (name, points) in curves {
        let name = csv_field(name);
        for [x, y] in points {
            let _ = writeln!(out, "{name},{x},{y}");
        }
    }
    out
}

/// Quotes a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes an export next to the run (`<run>/exports/<name>`), never replacing
/// an earlier one: a counter is added instead. Returns the path written.
pub fn write_export(run_dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("exports");
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (name.to_string(), String::new()),
    };
    let mut path = dir.join(name);
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}{ext}"));
        n += 1;
    }
    crate::project::write_file(&path, bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_engine::checkpoint::{CheckpointMeta, save_tensors};
    use lethe_engine::preview::{read_artifact, read_scores};
    use tch::Tensor;

    fn write(path: &Path, name: &str, t: Tensor) {
        save_tensors(
            path,
            &[(name.to_string(), t)],
            &CheckpointMeta::new(None, None),
            false,
        )
        .unwrap();
    }

    #[test]
    fn tensors_load_as_matrices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
        write(&p, "alignment", t);
        let ArtifactData::Tensors(ts) = read_artifact(&p).unwrap() else {
            panic!("not tensors");
        };
        assert_eq!(ts[0].name, "alignment");
        assert!(ts[0].is_matrix());
        let m = as_matrix(&ts[0]).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.get(1, 0), Some(4.0));
        assert_eq!(m.get(2, 0), None);
        assert_eq!(m.finite_range(), (1.0, 6.0));
        assert_eq!(m.to_csv(), "1,2,3\n4,5,6\n");

        // Integer and 3-D tensors load too (leading dims fold into rows).
        let p = dir.path().join("i.safetensors");
        write(
            &p,
            "mask",
            Tensor::from_slice(&[1u8, 0, 1, 1, 0, 0, 1, 0]).reshape([2, 2, 2]),
        );
        let ArtifactData::Tensors(ts) = read_artifact(&p).unwrap() else {
            panic!("not tensors");
        };
        let m = as_matrix(&ts[0]).unwrap();
        assert_eq!((m.rows, m.cols), (4, 2));
        assert_eq!(m.values, [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);

        let p = dir.path().join("summary.json");
        std::fs::write(&p, r#"{"auc": 0.5}"#).unwrap();
        assert!(matches!(read_artifact(&p).unwrap(), ArtifactData::Json(v) if v["auc"] == 0.5));
        assert!(read_artifact(&dir.path().join("missing.safetensors")).is_err());
    }

    #[test]
    fn scores_give_roc_curves_from_the_engine_metrics() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("scores_member.safetensors"),
            "scores_member",
            Tensor::from_slice(&[0.9f64, 0.8, 0.7, 0.2]),
        );
        write(
            &dir.path().join("scores_nonmember.safetensors"),
            "scores_nonmember",
            Tensor::from_slice(&[0.1f64, 0.3, 0.75, 0.05]),
        );
        let scores = read_scores(dir.path()).unwrap();
        assert!(scores.forget.is_none());
        assert!(scores.has_roc());
        let rocs = rocs(&scores);
        assert_eq!(rocs.len(), 1);
        let roc = &rocs[0];
        // 16 pairs; members win 13 (0.2 loses to 0.3 and 0.75; 0.7 loses to 0.75).
        assert!(
            (roc.auc.unwrap() - 13.0 / 16.0).abs() < 1e-12,
            "{:?}",
            roc.auc
        );
        assert_eq!(roc.points.first(), Some(&[0.0, 0.0]));
        assert_eq!(roc.points.last(), Some(&[1.0, 1.0]));
        assert_eq!(roc.fpr_floor, 0.25);
        assert!(roc.to_csv().starts_with("fpr,tpr\n0,0\n"));
        assert!(is_score_file(&dir.path().join("scores_member.safetensors")));
        let csv = scores_csv(&scores);
        assert!(
            csv.starts_with("role,position,score\nmember,0,0.9\n"),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 1 + 8);
        assert!(!is_score_file(&dir.path().join("model.safetensors")));
    }

    #[test]
    fn histograms_share_bins_and_normalise() {
        let a = [0.0, 0.1, 0.2, 1.0];
        let b = [0.5, 0.5];
        let h = histogram(&[("a", &a), ("b", &b)], 4).unwrap();
        assert_eq!(h.lo, 0.0);
        assert_eq!(h.width, 0.25);
        assert_eq!(
            h.series[0].1,
            [0.75, 0.0, 0.0, 0.25],
            "the maximum falls in the last bin"
        );
        assert_eq!(h.series[1].1, [0.0, 0.0, 1.0, 0.0]);
        assert!(histogram(&[("e", &[])], 4).is_none());
        let same = histogram(&[("c", &[2.0, 2.0])], 3).unwrap();
        assert_eq!(same.series[0].1, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn exports_never_replace_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_export(dir.path(), "curves.csv", b"1").unwrap();
        let b = write_export(dir.path(), "curves.csv", b"2").unwrap();
        assert_eq!(a.file_name().unwrap(), "curves.csv");
        assert_eq!(b.file_name().unwrap(), "curves-2.csv");
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        let mut curves = std::collections::BTreeMap::new();
        curves.insert("loss, train".to_string(), vec![[1.0, 0.5]]);
        assert_eq!(curves_csv(&curves), "series,x,y\n\"loss, train\",1,0.5\n");
    }
}
