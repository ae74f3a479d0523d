//! Plot geometry and colour maps shared by the PDF and HTML renderers: both draw
//! the same points in the same colours. Coordinates are plot-local, origin at
//! the top left, y pointing down (as in SVG; the PDF renderer flips them).

use super::doc::Curve;

/// Smallest rate on log axes.
pub const LOG_MIN: f64 = 1e-3;

/// Position of rate `v` along an axis of length `len` (0 at the low end).
pub fn axis_pos(v: f64, log: bool, len: f64) -> f64 {
    let t = if log {
        (v.max(LOG_MIN).log10() - LOG_MIN.log10()) / -LOG_MIN.log10()
    } else {
        v
    };
    t.clamp(0.0, 1.0) * len
}

/// Tick values and labels.
pub fn ticks(log: bool) -> Vec<(f64, String)> {
    if log {
        vec![
            (1e-3, "0.001".into()),
            (1e-2, "0.01".into()),
            (1e-1, "0.1".into()),
            (1.0, "1".into()),
        ]
    } else {
        (0..=5)
            .map(|i| {
                let v = i as f64 / 5.0;
                (v, format!("{v:.1}"))
            })
            .collect()
    }
}

/// The curve as a polyline in a `w` × `h` box, thinned so consecutive points are
/// at least a quarter unit apart (a 10 000-point curve becomes a few hundred
/// vertices) while keeping its first and last points and every corner of the
/// step shape that moves it.
pub fn polyline(curve: &Curve, log: bool, w: f64, h: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let n = curve.points.len();
    for (i, &(fpr, tpr)) in curve.points.iter().enumerate() {
        if log && (fpr <= 0.0 || tpr <= 0.0) && i + 1 < n {
            // Zero rates lie off a log axis; the curve starts at its first
            // positive point.
            continue;
        }
        let p = (axis_pos(fpr, log, w), h - axis_pos(tpr, log, h));
        let keep = match out.last() {
            None => true,
            Some(&(x, y)) => (p.0 - x).abs() + (p.1 - y).abs() >= 0.25 || i + 1 == n,
        };
        if keep {
            out.push(p);
        }
    }
    out
}

/// Sequential colour map (viridis, nine anchors, linear in between).
const VIRIDIS: [[f64; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

fn lerp(a: [f64; 3], b: [f64; 3], t: f64) -> [u8; 3] {
    let c = |i: usize| (a[i] + (b[i] - a[i]) * t).round().clamp(0.0, 255.0) as u8;
    [c(0), c(1), c(2)]
}

/// The colour of `v` in `range`: viridis, or blue–white–red centred on zero.
pub fn color(v: f64, range: (f64, f64), diverging: bool) -> [u8; 3] {
    if !v.is_finite() {
        return [200, 200, 200];
    }
    if diverging {
        let m = range.0.abs().max(range.1.abs()).max(1e-12);
        let t = (v / m).clamp(-1.0, 1.0);
        let white = [247.0, 247.0, 247.0];
        if t < 0.0 {
            lerp(white, [33.0, 102.0, 172.0], -t)
        } else {
            lerp(white, [178.0, 24.0, 43.0], t)
        }
    } else {
        let span = (range.1 - range.0).max(1e-12);
        let t = ((v - range.0) / span).clamp(0.0, 1.0) * 8.0;
        let i = (t.floor() as usize).min(7);
        lerp(VIRIDIS[i], VIRIDIS[i + 1], t - i as f64)
    }
}

/// `#rrggbb`.
pub fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_map_rates_and_thinning_keeps_the_ends() {
        assert_eq!(axis_pos(0.5, false, 100.0), 50.0);
        assert!((axis_pos(0.01, true, 90.0) - 30.0).abs() < 1e-9);
        assert_eq!(axis_pos(0.0, true, 90.0), 0.0);
        let points: Vec<(f64, f64)> = (0..=10_000)
            .map(|i| {
                let f = i as f64 / 10_000.0;
                (f, f.sqrt())
            })
            .collect();
        let c = Curve {
            label: "x".into(),
            color: [0, 0, 0],
            dashed: false,
            points,
        };
        let p = polyline(&c, false, 100.0, 100.0);
        assert!(p.len() < 1000, "{}", p.len());
        assert_eq!(p[0], (0.0, 100.0));
        assert_eq!(*p.last().unwrap(), (100.0, 0.0));
    }

    #[test]
    fn colour_maps_hit_their_anchors() {
        assert_eq!(color(0.0, (0.0, 1.0), false), [68, 1, 84]);
        assert_eq!(color(1.0, (0.0, 1.0), false), [253, 231, 37]);
        assert_eq!(color(0.0, (-1.0, 1.0), true), [247, 247, 247]);
        assert_eq!(color(-2.0, (-1.0, 1.0), true), [33, 102, 172]);
        assert_eq!(hex([255, 0, 16]), "#ff0010");
    }
}
