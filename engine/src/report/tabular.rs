//! The document's fields and tables as CSV (one tidy table) and as LaTeX tables.

use super::doc::{Align, Block, Document};

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per value: `section,table,row,column,value` (fields are rows of a
/// two-column table whose column is `value`), plus the generation time first.
pub fn csv(doc: &Document) -> String {
    let mut out = String::from("section,table,row,column,value\n");
    let mut line = |cells: [&str; 5]| {
        let cells: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    };
    line(["report", "report", "title", "value", &doc.title]);
    line(["report", "report", "subject", "value", &doc.subtitle]);
    line(["report", "report", "generated", "value", &doc.generated]);
    for (section, b) in doc.sections() {
        match b {
            Block::Verdict { label, text, .. } => {
                line([&section, "verdict", "outcome", "value", label]);
                line([&section, "verdict", "headline", "value", text]);
            }
            Block::Fields { name, fields } => {
                for (k, v, _) in fields {
                    line([&section, name, k, "value", v]);
                }
            }
            Block::Table(t) => {
                for row in &t.rows {
                    let label = row.first().map_or("", String::as_str);
                    for (i, cell) in row.iter().enumerate().skip(1) {
                        let col = t.header.get(i).map_or("", String::as_str);
                        // Rows named by more than one column (attack, model) keep
                        // the second in the row label.
                        let key = if t.header.get(1).is_some_and(|h| h == "model") && i > 1 {
                            format!("{label} / {}", row.get(1).map_or("", String::as_str))
                        } else {
                            label.to_string()
                        };
                        if t.header.get(1).is_some_and(|h| h == "model") && i == 1 {
                            continue;
                        }
                        line([&section, &t.name, &key, col, cell]);
                    }
                }
            }
            Block::Code(lines) => {
                for (i, l) in lines.iter().enumerate() {
                    line([&section, "commands", &(i + 1).to_string(), "command", l]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Escapes text for LaTeX.
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '±' => out.push_str("$\\pm$"),
            '≤' => out.push_str("$\\le$"),
            '≥' => out.push_str("$\\ge$"),
            '−' => out.push_str("$-$"),
            '×' => out.push_str("$\\times$"),
            '→' => out.push_str("$\\to$"),
            '—' => out.push_str("---"),
            c => out.push(c),
        }
    }
    out
}

/// Every field list and table as a `booktabs` table, ready to `\input`.
pub fn tex(doc: &Document) -> String {
    let mut out = format!(
        "% {}\n% {}\n% generated {}\n% needs \\usepackage{{booktabs}}\n",
        doc.title, doc.subtitle, doc.generated
    );
    for (section, b) in doc.sections() {
        let (caption, header, rows, align): (String, Vec<String>, Vec<Vec<String>>, Vec<Align>) =
            match b {
                Block::Fields { name, fields } => (
                    format!("{section}: {name}"),
                    vec!["".into(), "".into()],
                    fields
                        .iter()
                        .map(|(k, v, _)| vec![k.clone(), v.clone()])
                        .collect(),
                    vec![Align::Left, Align::Left],
                ),
                Block::Table(t) => (
                    format!("{section}: {}", t.name),
                    t.header.clone(),
                    t.rows.clone(),
                    t.align.clone(),
                ),
                _ => continue,
            };
        let spec: String = (0..header.len())
            .map(|i| match align.get(i) {
                Some(Align::Right) => 'r',
                _ => 'l',
            })
            .collect();
        out.push_str("\n\\begin{table}[ht]\n\\centering\n\\small\n");
        out.push_str(&format!("\\caption{{{}}}\n", tex_escape(&caption)));
        out.push_str(&format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n"));
        if header.iter().any(|h| !h.is_empty()) {
            let h: Vec<String> = header.iter().map(|c| tex_escape(c)).collect();
            out.push_str(&format!("{} \\\\\n\\midrule\n", h.join(" & ")));
        }
        for r in &rows {
            let cells: Vec<String> = r.iter().map(|c| tex_escape(c)).collect();
            out.push_str(&format!("{} \\\\\n", cells.join(" & ")));
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::doc::{Style, Table};
    use super::*;

    fn doc() -> Document {
        Document {
            title: "T".into(),
            subtitle: "S".into(),
            generated: "2024-01-01 00:00:00 UTC".into(),
            blocks: vec![
                Block::Heading("Utility".into()),
                Block::Fields {
                    name: "f".into(),
                    fields: vec![("a, b".into(), "say \"hi\"".into(), Style::Text)],
                },
                Block::Table(Table {
                    name: "attacks".into(),
                    header: vec!["attack".into(), "model".into(), "AUC".into()],
                    rows: vec![vec!["SVM".into(), "unlearned".into(), "0.5 ± 0.1".into()]],
                    align: vec![Align::Left, Align::Left, Align::Right],
                    note: None,
                }),
            ],
        }
    }

    #[test]
    fn csv_quotes_and_keys_rows_by_attack_and_model() {
        let c = csv(&doc());
        assert!(
            c.contains("Utility,f,\"a, b\",value,\"say \"\"hi\"\"\"\n"),
            "{c}"
        );
        assert!(
            c.contains("Utility,attacks,SVM / unlearned,AUC,0.5 ± 0.1\n"),
            "{c}"
        );
        assert!(!c.contains(",model,"), "{c}");
    }

    #[test]
    fn latex_escapes_and_uses_booktabs() {
        let t = tex(&doc());
        assert!(t.contains("\\begin{tabular}{llr}"), "{t}");
        assert!(t.contains("0.5 $\\pm$ 0.1"), "{t}");
        assert!(t.contains("\\caption{Utility: attacks}"), "{t}");
        assert_eq!(tex_escape("a_b 50%"), "a\\_b 50\\%");
    }
}
