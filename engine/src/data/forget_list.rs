//! Parsers for forget-list files. Each returns `(index, 1-based line)` pairs so that later
//! checks (range, duplicates, split) can point at the line to fix.

use super::forget_set::ForgetSetError;
use std::path::Path;

fn unparseable(path: &Path, line: usize, text: &str, reason: &str) -> ForgetSetError {
    ForgetSetError::Unparseable {
        path: path.to_path_buf(),
        line,
        text: text.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_index(path: &Path, line: usize, text: &str) -> Result<i64, ForgetSetError> {
    text.parse::<i64>()
        .map_err(|_| unparseable(path, line, text, "expected a whole number"))
}

/// One index per line; blank lines and `#` comments are skipped.
pub(crate) fn parse_txt(path: &Path, text: &str) -> Result<Vec<(i64, usize)>, ForgetSetError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if !content.is_empty() {
            out.push((parse_index(path, n + 1, content)?, n + 1));
        }
    }
    Ok(out)
}

/// Comma-separated; the index is the column headed `index` when the first non-blank line
/// is a header, else the first column. A header without an `index` column is an error
/// rather than a guess, so a mistyped first row is never silently skipped, and so are
/// several numeric columns without a header. Quoting is not needed for integers, so it
/// is not supported.
pub(crate) fn parse_csv(path: &Path, text: &str) -> Result<Vec<(i64, usize)>, ForgetSetError> {
    let mut out = Vec::new();
    let mut column = 0;
    let mut header_checked = false;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let raw = raw.trim_start_matches('\u{feff}').trim();
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(|f| f.trim().trim_matches('"')).collect();
        if !header_checked {
            header_checked = true;
            if fields.iter().all(|f| f.parse::<i64>().is_err()) {
                column = fields
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case("index"))
                    .ok_or_else(|| unparseable(path, line, raw, "header has no `index` column"))?;
                continue;
            }
            // Without a header nothing says which column holds the sample indices, and
            // the common case is pandas' `to_csv(header=False)`, which writes its own
            // row index first: taking column 0 would forget the wrong samples.
            let numeric = fields.iter().filter(|f| f.parse::<i64>().is_ok()).count();
            if numeric > 1 {
                return Err(unparseable(
                    path,
                    line,
                    raw,
                    &format!(
                        "{numeric} columns of numbers and no header, so the index column is unknown (pandas' to_csv(header=False) writes its row index first); add a header line naming the `index` column, or write one index per line"
                    ),
                ));
            }
        }
        let field = fields
            .get(column)
            .ok_or_else(|| unparseable(path, line, raw, "missing the index column"))?;
        out.push((parse_index(path, line, field)?, line));
    }
    Ok(out)
}

/// `[1, 2, 3]` or `{"indices": [1, 2, 3]}`. serde_json validates the syntax (its errors
/// carry line and column); the array is then scanned by hand because serde_json keeps
/// no positions for values, and we want the line of each entry.
pub(crate) fn parse_json(path: &Path, text: &str) -> Result<Vec<(i64, usize)>, ForgetSetError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let line = e.line();
        let shown = text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim();
        unparseable(path, line, shown, &format!("invalid JSON: {e}"))
    })?;
    let array_start = match &value {
        serde_json::Value::Array(_) => text.find('['),
        serde_json::Value::Object(map)
            if map.len() == 1 && map.get("indices").is_some_and(|v| v.is_array()) =>
        {
            text.find("\"indices\"")
                .and_then(|k| text[k..].find('[').map(|b| k + b))
        }
        _ => None,
    };
    let Some(start) = array_start else {
        return Err(unparseable(
            path,
            1,
            text.lines().next().unwrap_or("").trim(),
            "expected an array of indices or {\"indices\": [...]}",
        ));
    };
    // The syntax is valid and the array is flat when its entries are integers, so the
    // entries are the comma-separated tokens up to the first ']' (a nested array or object
    // shows up as a token that is not an integer and is reported as such).
    let mut out = Vec::new();
    let mut line = 1 + text[..start].matches('\n').count();
    let body_start = start + 1;
    let body_end = text[body_start..]
        .find(']')
        .map_or(text.len(), |e| body_start + e);
    let mut token = String::new();
    let mut token_line = line;
    let mut flush = |token: &mut String, token_line: usize| -> Result<(), ForgetSetError> {
        let t = token.trim();
        if !t.is_empty() {
            out.push((parse_index(path, token_line, t)?, token_line));
        }
        token.clear();
        Ok(())
    };
    for ch in text[body_start..body_end].chars() {
        match ch {
            ',' => flush(&mut token, token_line)?,
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            c => {
                if token.is_empty() {
                    token_line = line;
                }
                token.push(c);
            }
        }
    }
    flush(&mut token, token_line)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_headerless_csv_with_two_numeric_columns_is_refused() {
        // pandas: pd.Series([5, 2, 7]).to_csv("f.csv", header=False)
        let path = Path::new("f.csv");
        let e = parse_csv(path, "0,5\n1,2\n2,7\n").unwrap_err().to_string();
        assert!(
            e.contains("f.csv") && e.contains("no header") && e.contains("to_csv"),
            "{e}"
        );
        // One numeric column, with or without other text, is unambiguous.
        assert_eq!(parse_csv(path, "5,x\n2,y\n").unwrap(), [(5, 1), (2, 2)]);
        assert_eq!(parse_csv(path, "5\n2\n").unwrap(), [(5, 1), (2, 2)]);
        assert_eq!(parse_csv(path, "row,index\n0,5\n").unwrap(), [(5, 2)]);
    }
}
