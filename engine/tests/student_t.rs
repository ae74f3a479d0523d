//! Student's t and the seed statistics of the study table against SciPy, the
//! oracle the unlearning papers' own analysis code uses (RUM's
//! `surgical_plugins/analysis.py`: `stats.t.interval(0.95, n − 1, loc=mean,
//! scale=stats.sem(x))` over per-seed ToW values).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use lethe_engine::metrics::student::{mean_t_interval, t_cdf, t_quantile};
use lethe_engine::study::RowKind;
use lethe_engine::study::table::{Column, RowInput, build_table};

/// The venv's Python running `script` on `input` (JSON on stdin); the
/// numbers of the JSON list it prints.
fn scipy(script: &str, input: serde_json::Value) -> Vec<f64> {
    common::python(script, &input)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn quantiles_and_cdf_match_scipy() {
    let dfs = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 29.0, 120.0, 0.5, 2.5];
    let ps = [0.975, 0.995, 0.9, 0.6, 0.025];
    let want = scipy(
        r#"
import json, sys
from scipy import stats
a = json.load(sys.stdin)
out = []
for df in a["dfs"]:
    for p in a["ps"]:
        out += [float(stats.t.ppf(p, df)), float(stats.t.cdf(p * 3 - 1, df))]
print(json.dumps(out))
"#,
        serde_json::json!({"dfs": dfs, "ps": ps}),
    );
    let mut k = 0;
    for df in dfs {
        for p in ps {
            let (q, c) = (want[k], want[k + 1]);
            k += 2;
            let mine = t_quantile(p, df);
            assert!(
                (mine - q).abs() <= 1e-9 * q.abs().max(1.0),
                "t.ppf({p}, {df}): {mine} vs scipy {q}"
            );
            let cdf = t_cdf(p * 3.0 - 1.0, df);
            assert!(
                (cdf - c).abs() < 1e-12,
                "t.cdf({}, {df}): {cdf} vs {c}",
                p * 3.0 - 1.0
            );
        }
    }
}

/// Three seeds of a method and of Retrain with made-up but uneven numbers:
/// the table's ToW, ToW-MIA and paired intervals equal SciPy's computation of
/// the same recipe (RUM's analysis code), totals included.
#[test]
fn tow_and_paired_intervals_match_scipy() {
    let method = [
        [0.91, 0.981, 0.903, 0.62],
        [0.87, 0.977, 0.899, 0.58],
        [0.95, 0.981, 0.915, 0.71],
    ];
    let retrain = [
        [0.89, 0.995, 0.912, 0.55],
        [0.90, 0.993, 0.918, 0.57],
        [0.88, 0.996, 0.909, 0.52],
    ];
    let keys = ["ua", "ra", "ta", "mia.efficacy"];
    let runs = |v: &[[f64; 4]; 3]| {
        v.iter()
            .enumerate()
            .map(|(s, m)| {
                (
                    s as u64,
                    keys.iter()
                        .zip(m)
                        .map(|(k, x)| (k.to_string(), *x))
                        .collect::<BTreeMap<_, _>>(),
                    1.0,
                )
            })
            .collect::<Vec<_>>()
    };
    let columns: Vec<Column> = keys
        .iter()
        .map(|k| Column {
            key: k.to_string(),
            label: k.to_string(),
            scale: 100.0,
            decimals: 2,
            in_avg_gap: true,
        })
        .collect();
    let t = build_table(
        "t".into(),
        columns,
        vec![
            RowInput {
                label: "Retrain".into(),
                kind: RowKind::Retrain,
                runs: runs(&retrain),
            },
            RowInput {
                label: "M".into(),
                kind: RowKind::Method,
                runs: runs(&method),
            },
        ],
    );
    // RUM's recipe, written out in NumPy/SciPy: per seed 1 − |Δ| (fractions),
    // the product, then mean and t.interval with scale = sem.
    let want = scipy(
        r#"
import json, sys
import numpy as np
from scipy import stats
a = json.load(sys.stdin)
m = np.array(a["method"]); r = np.array(a["retrain"])
def iv(x):
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    return [np.mean(x), lo, hi]
tow = (1 - abs(m[:, 0] - r[:, 0])) * (1 - abs(m[:, 1] - r[:, 1])) * (1 - abs(m[:, 2] - r[:, 2]))
tow_mia = (1 - abs(m[:, 3] - r[:, 3])) * (1 - abs(m[:, 1] - r[:, 1])) * (1 - abs(m[:, 2] - r[:, 2]))
out = iv(tow) + iv(tow_mia)
for k in range(4):
    out += iv((m[:, k] - r[:, k]) * 100)
print(json.dumps([float(x) for x in out]))
"#,
        serde_json::json!({"method": method, "retrain": retrain}),
    );
    let row = &t.rows[1];
    let got = |i: &lethe_engine::metrics::student::MeanInterval| {
        [i.mean, i.low.unwrap(), i.high.unwrap()]
    };
    let mut mine = Vec::new();
    mine.extend(got(row.tow.as_ref().unwrap()));
    mine.extend(got(row.tow_mia.as_ref().unwrap()));
    for c in &row.cells {
        mine.extend(got(c.paired.as_ref().unwrap()));
    }
    assert_eq!(mine.len(), want.len());
    for (k, (a, b)) in mine.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-9, "value {k}: {a} vs scipy {b}");
    }
    // Retrain against itself: ToW 1 on every seed, no paired interval.
    let r = &t.rows[0];
    assert!(r.tow.as_ref().unwrap().values.iter().all(|&v| v == 1.0));
    assert!(r.cells.iter().all(|c| c.paired.is_none()));
    // RA is lower in every seed (−1.4, −1.6, −1.5 points): the interval
    // excludes 0, so the table does not call it Retrain-like; UA's holds 0.
    assert!(!row.cells[1].like_retrain());
    assert!(row.cells[0].like_retrain());
    assert!(t.to_text().contains("ToW-MIA"), "{}", t.to_text());

    // One seed has no interval, only the value.
    let single = mean_t_interval(&[0.5], 0.95).unwrap();
    assert_eq!((single.low, single.high), (None, None));
}

/// The exact binomial interval of the per-sample report: Clopper–Pearson as
/// `statsmodels`' `proportion_confint(method="beta")` computes it, written
/// out with `scipy.stats.beta.ppf`.
#[test]
fn clopper_pearson_matches_scipy() {
    use lethe_engine::metrics::binomial::clopper_pearson;
    let cases: Vec<(usize, usize, f64)> = vec![
        (0, 10, 0.95),
        (1, 10, 0.95),
        (5, 10, 0.95),
        (10, 10, 0.95),
        (12, 100, 0.95),
        (3, 271, 0.99),
        (49, 50, 0.9),
        (0, 1, 0.95),
        (731, 2000, 0.95),
    ];
    let want = scipy(
        r#"
import json, sys
from scipy import stats
out = []
for k, n, level in json.load(sys.stdin):
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else stats.beta.ppf(a, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - a, k + 1, n - k)
    out += [float(lo), float(hi)]
print(json.dumps(out))
"#,
        serde_json::json!(cases),
    );
    for (i, (k, n, level)) in cases.iter().enumerate() {
        let p = clopper_pearson(*k, *n, *level);
        for (ours, theirs, end) in [
            (p.low, want[2 * i], "low"),
            (p.high, want[2 * i + 1], "high"),
        ] {
            assert!(
                (ours - theirs).abs() < 1e-9,
                "{k}/{n} at {level}: {end} {ours} vs scipy {theirs}"
            );
        }
        assert!(p.low <= p.fraction && p.fraction <= p.high, "{p:?}");
    }
}
