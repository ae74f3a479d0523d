//! Numbers for labels: axis ticks and values that may be tiny (learning rates,
//! weight decays, low false-positive rates) must never print as `0`.

/// `v` with `digits` significant digits, trailing zeros dropped; scientific
/// below 1e-3 and from 1e5 on (`0.01`, `2.5e-4`, `123.4`).
pub fn significant(v: f64, digits: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let a = v.abs();
    let digits = digits.max(1);
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.prec$e}", prec = digits - 1);
        return match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        };
    }
    // Decimals that keep `digits` significant digits of this magnitude.
    let magnitude = a.log10().floor() as i32;
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    trim(format!("{v:.decimals$}"))
}

/// A tick label on an axis whose ticks are `step` apart: enough decimals to
/// tell neighbouring ticks apart (`0.0095`, `0.01`, `0.0105`), scientific for
/// tiny or huge values.
pub fn tick(value: f64, step: f64) -> String {
    if value.abs() < step.abs() * 1e-6 {
        return "0".into();
    }
    let a = value.abs();
    if !(1e-3..1e5).contains(&a) {
        // Digits enough to separate the ticks at this magnitude.
        let rel = (a / step.abs().max(f64::MIN_POSITIVE))
            .log10()
            .ceil()
            .max(0.0) as usize;
        return significant(value, (rel + 1).clamp(1, 6));
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
    } else {
        3
    };
    trim(format!("{value:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_keep_their_digits() {
        assert_eq!(significant(0.01, 4), "0.01");
        assert_eq!(significant(0.012345, 3), "0.0123");
        assert_eq!(significant(5e-4, 3), "5e-4");
        assert_eq!(significant(2.5e-6, 3), "2.5e-6");
        assert_eq!(significant(182.0, 4), "182");
        assert_eq!(significant(-0.3, 2), "-0.3");
        assert_eq!(significant(123456.0, 3), "1.23e5");
        assert_eq!(significant(0.0, 3), "0");
    }

    #[test]
    fn ticks_tell_neighbours_apart() {
        // A learning rate of 0.01 on an axis with ticks 0.0005 apart.
        assert_eq!(tick(0.01, 0.0005), "0.01");
        assert_eq!(tick(0.0095, 0.0005), "0.0095");
        assert_eq!(tick(0.2, 0.1), "0.2");
        assert_eq!(tick(3.0, 1.0), "3");
        assert_eq!(tick(150.0, 50.0), "150");
        assert_eq!(tick(1e-17, 0.1), "0", "rounding noise at zero");
        assert_eq!(tick(2e-4, 1e-4), "2e-4");
        assert_eq!(tick(1.5e-4, 5e-5), "1.5e-4");
    }
}
