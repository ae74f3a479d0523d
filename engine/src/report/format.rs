//! Fixed number and date formatting, so the same results always print the same.

/// Year, month, day, hour, minute, second (UTC) of a Unix time (days from civil,
/// after Howard Hinnant's algorithm, so no time-zone database is needed).
pub fn civil(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_datetime(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// The PDF date string `D:YYYYMMDDHHMMSSZ` of [`utc_datetime`].
pub fn pdf_date(unix: i64) -> String {
    let s = utc_datetime(unix);
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    format!("D:{digits}Z")
}

/// A number with `digits` decimals; `-` for non-finite values.
pub fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        // Avoid "-0.0000".
        let s = format!("{v:.digits$}");
        if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
            s[1..].to_string()
        } else {
            s
        }
    } else {
        "-".into()
    }
}

/// A share as a percentage with two decimals (`0.9812` → `98.12 %`).
pub fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{} %", num(v * 100.0, 2))
    } else {
        "-".into()
    }
}

/// A signed difference in percentage points (`+1.20 pt`).
pub fn pts(v: f64) -> String {
    if v.is_finite() {
        let s = num(v * 100.0, 2);
        if s.starts_with('-') {
            format!("{s} pt")
        } else {
            format!("+{s} pt")
        }
    } else {
        "-".into()
    }
}

/// A rate as a short percentage (`0.01` → `1%`, `0.001` → `0.1%`).
pub fn rate(v: f64) -> String {
    let s = format!("{:.6}", v * 100.0);
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// A colour-bar or axis label: two decimals, or two significant digits in
/// scientific notation for tiny values.
pub fn label(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        num(v, 2)
    }
}

/// `v [low, high]` with four decimals, or `v` without an interval.
pub fn with_ci(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{} [{}, {}]", num(v, 4), num(lo, 4), num(hi, 4)),
        None => num(v, 4),
    }
}

/// `mean ± std`.
pub fn mean_std(mean: f64, std: f64, digits: usize) -> String {
    format!("{} ± {}", num(mean, digits), num(std, digits))
}

/// Seconds as `1 h 02 min`, `3 min 05 s` or `12.3 s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 60.0 {
        return format!("{} s", num(secs, 1));
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_instants() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_datetime(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_datetime(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(pdf_date(1_700_000_000), "D:20231114221320Z");
    }

    #[test]
    fn numbers_are_fixed_and_never_negative_zero() {
        assert_eq!(num(-0.00001, 4), "0.0000");
        assert_eq!(num(f64::NAN, 2), "-");
        assert_eq!(pct(0.98126), "98.13 %");
        assert_eq!(pts(-0.012), "-1.20 pt");
        assert_eq!(pts(0.0), "+0.00 pt");
        assert_eq!(with_ci(0.5, Some((0.45, 0.55))), "0.5000 [0.4500, 0.5500]");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(
            (rate(0.01), rate(0.001), rate(0.0001)),
            ("1%".into(), "0.1%".into(), "0.01%".into())
        );
        assert_eq!(
            (label(4.3e-5), label(-0.5)),
            ("4.3e-5".into(), "-0.50".into())
        );
    }
}
