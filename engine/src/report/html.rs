//! The document as one self-contained HTML file: inline CSS, plots and heatmaps as
//! inline SVG, nothing loaded from anywhere.

use std::fmt::Write;

use super::doc::{Align, Block, Document, Heatmap, RocPlot, Style};
use super::plot::{axis_pos, color, hex, polyline, ticks};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body{font-family:'DejaVu Sans',Verdana,sans-serif;font-size:14px;color:#1a1a1a;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}
h1{font-size:1.7em;margin:0 0 .2em}
.sub{color:#555;margin:0 0 1.2em}
h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{text-align:left;background:#f3f3f3}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.fields th{background:none;width:13em;font-weight:bold}
.mono{font-family:'DejaVu Sans Mono',monospace;font-size:.9em;word-break:break-all}
.note{color:#666;font-size:.85em}
.verdict{border:2px solid;border-radius:4px;padding:.6em .9em;margin:.8em 0}
.verdict b{font-size:1.1em}
pre{font-family:'DejaVu Sans Mono',monospace;font-size:.85em;background:#f6f6f6;padding:.6em;white-space:pre-wrap;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;break-inside:avoid}
figcaption{font-size:.9em;font-weight:bold;text-align:center}
footer{color:#777;font-size:.8em;margin-top:2em;border-top:1px solid #ccc;padding-top:.4em}
@media print{body{margin:0;max-width:none}}
";

fn roc_svg(p: &RocPlot) -> String {
    let (w, h, ml, mb, mt, mr) = (230.0, 190.0, 42.0, 34.0, 8.0, 8.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-size=\"9\" font-family=\"DejaVu Sans,sans-serif\">",
        esc(&p.title)
    );
    let _ = write!(
        s,
        "<rect x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#444\"/>"
    );
    for (v, label) in ticks(p.log) {
        let x = ml + axis_pos(v, p.log, pw);
        let y = mt + ph - axis_pos(v, p.log, ph);
        let _ = write!(
            s,
            "<line x1=\"{x:.2}\" y1=\"{mt}\" x2=\"{x:.2}\" y2=\"{:.2}\" stroke=\"#e6e6e6\"/>\
             <line x1=\"{ml}\" y1=\"{y:.2}\" x2=\"{:.2}\" y2=\"{y:.2}\" stroke=\"#e6e6e6\"/>\
             <text x=\"{x:.2}\" y=\"{:.2}\" text-anchor=\"middle\">{label}</text>\
             <text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\">{label}</text>",
            mt + ph,
            ml + pw,
            mt + ph + 11.0,
            ml - 3.0,
            y + 3.0
        );
    }
    // Chance line.
    let chance: Vec<(f64, f64)> = (0..=20)
        .map(|i| {
            let v = if p.log {
                10f64.powf(-3.0 + 3.0 * i as f64 / 20.0)
            } else {
                i as f64 / 20.0
            };
            (
                ml + axis_pos(v, p.log, pw),
                mt + ph - axis_pos(v, p.log, ph),
            )
        })
        .collect();
    let pts = |v: &[(f64, f64)]| {
        v.iter()
            .map(|(x, y)| format!("{x:.2},{y:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#999\" stroke-dasharray=\"2,2\"/>",
        pts(&chance)
    );
    for c in &p.curves {
        let line: Vec<(f64, f64)> = polyline(c, p.log, pw, ph)
            .into_iter()
            .map(|(x, y)| (x + ml, y + mt))
            .collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.4\"{}/>",
            pts(&line),
            hex(c.color),
            if c.dashed {
                " stroke-dasharray=\"4,2\""
            } else {
                ""
            }
        );
    }
    // Legend bottom right, below the diagonal (about 5 px per character at 9 px).
    let widest = p
        .curves
        .iter()
        .map(|c| c.label.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 5.0;
    for (i, c) in p.curves.iter().enumerate() {
        let y = mt + ph - 8.0 - 11.0 * (p.curves.len() - 1 - i) as f64;
        let x = (ml + pw - widest - 18.0).max(ml + 2.0);
        let _ = write!(
            s,
            "<line x1=\"{x:.2}\" y1=\"{:.2}\" x2=\"{:.2}\" y2=\"{:.2}\" stroke=\"{}\" stroke-width=\"1.4\"/><text x=\"{:.2}\" y=\"{y:.2}\">{}</text>",
            y - 3.0,
            x + 12.0,
            y - 3.0,
            hex(c.color),
            x + 15.0,
            esc(&c.label)
        );
    }
    let axis = if p.log { " (log)" } else { "" };
    let _ = write!(
        s,
        "<text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\">false-positive rate{axis}</text>\
         <text transform=\"translate(10,{:.2}) rotate(-90)\" text-anchor=\"middle\">true-positive rate{axis}</text></svg></figure>",
        ml + pw / 2.0,
        h - 4.0,
        mt + ph / 2.0
    );
    s
}

fn heatmap_svg(m: &Heatmap) -> String {
    let size = 170.0;
    let cell = size / m.rows.max(m.cols).max(1) as f64;
    let (w, h) = (size + 50.0, size + 8.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-size=\"9\" font-family=\"DejaVu Sans,sans-serif\" shape-rendering=\"crispEdges\">",
        esc(&m.title)
    );
    for r in 0..m.rows {
        for c in 0..m.cols {
            let v = m.values.get(r * m.cols + c).copied().unwrap_or(f64::NAN);
            let _ = write!(
                s,
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{}\"><title>{:.4}</title></rect>",
                c as f64 * cell,
                r as f64 * cell,
                cell,
                cell,
                hex(color(v, m.range, m.diverging)),
                v
            );
        }
    }
    // Colour bar.
    let steps = 32;
    for i in 0..steps {
        let t = i as f64 / (steps - 1) as f64;
        let v = m.range.1 - t * (m.range.1 - m.range.0);
        let _ = write!(
            s,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\" fill=\"{}\"/>",
            size + 6.0,
            t * (size - size / steps as f64),
            size / steps as f64 + 0.5,
            hex(color(v, m.range, m.diverging))
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.2}\" y=\"8\">{}</text><text x=\"{:.2}\" y=\"{:.2}\">{}</text></svg></figure>",
        size + 17.0,
        super::format::label(m.range.1),
        size + 17.0,
        size,
        super::format::label(m.range.0)
    );
    s
}

/// Renders the document.
pub fn render(doc: &Document) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"generator\" content=\"Lethe {}\"><title>{}</title><style>{CSS}</style></head><body>\n",
        env!("CARGO_PKG_VERSION"),
        esc(&doc.title)
    );
    let _ = writeln!(
        s,
        "<h1>{}</h1><p class=\"sub\">{}<br>Generated {}</p>",
        esc(&doc.title),
        esc(&doc.subtitle),
        esc(&doc.generated)
    );
    for b in &doc.blocks {
        match b {
            Block::Heading(h) => {
                let _ = writeln!(s, "<h2>{}</h2>", esc(h));
            }
            Block::Paragraph(p) => {
                let _ = writeln!(s, "<p>{}</p>", esc(p));
            }
            Block::Note(p) => {
                let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(p));
            }
            Block::Verdict { label, color, text } => {
                let _ = writeln!(
                    s,
                    "<div class=\"verdict\" style=\"border-color:{0};background:{0}14\"><b style=\"color:{0}\">{1}</b> {2}</div>",
                    hex(*color),
                    esc(label),
                    esc(text)
                );
            }
            Block::Fields { fields, .. } => {
                s.push_str("<table class=\"fields\">");
                for (k, v, style) in fields {
                    let class = if *style == Style::Mono {
                        " class=\"mono\""
                    } else {
                        ""
                    };
                    let _ = write!(s, "<tr><th>{}</th><td{class}>{}</td></tr>", esc(k), esc(v));
                }
                s.push_str("</table>\n");
            }
            Block::Table(t) => {
                s.push_str("<table><tr>");
                for (i, h) in t.header.iter().enumerate() {
                    let r = t.align.get(i) == Some(&Align::Right);
                    let _ = write!(
                        s,
                        "<th{}>{}</th>",
                        if r { " class=\"r\"" } else { "" },
                        esc(h)
                    );
                }
                s.push_str("</tr>");
                for row in &t.rows {
                    s.push_str("<tr>");
                    for (i, c) in row.iter().enumerate() {
                        let r = t.align.get(i) == Some(&Align::Right);
                        let _ = write!(
                            s,
                            "<td{}>{}</td>",
                            if r { " class=\"r\"" } else { "" },
                            esc(c)
                        );
                    }
                    s.push_str("</tr>");
                }
                s.push_str("</table>\n");
                if let Some(n) = &t.note {
                    let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(n));
                }
            }
            Block::Plots(plots) => {
                s.push_str("<div class=\"figs\">");
                for p in plots {
                    s.push_str(&roc_svg(p));
                }
                s.push_str("</div>\n");
            }
            Block::Heatmaps(maps) => {
                s.push_str("<div class=\"figs\">");
                for m in maps {
                    s.push_str(&heatmap_svg(m));
                }
                s.push_str("</div>\n");
            }
            Block::Code(lines) => {
                let _ = writeln!(s, "<pre>{}</pre>", esc(&lines.join("\n")));
            }
        }
    }
    let _ = writeln!(
        s,
        "<footer>{} · generated {} by Lethe {}</footer>\n</body></html>",
        esc(&doc.title),
        esc(&doc.generated),
        env!("CARGO_PKG_VERSION")
    );
    s
}
