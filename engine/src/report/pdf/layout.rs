//! Lays the document out on A4 pages: wrapped text, field lists, tables that break
//! across pages (repeating their header), vector ROC plots and heatmaps as images.
//! Coordinates are points from the top left of the page, y down.

use super::super::ReportError;
use super::super::doc::{Align, Block, Document, Heatmap, RocPlot, Style};
use super::super::plot::{axis_pos, color, polyline, ticks};
use super::font::{FontKey, font};

/// A4 width in points.
pub const PAGE_W: f64 = 595.28;
/// A4 height in points.
pub const PAGE_H: f64 = 841.89;
const LEFT: f64 = 54.0;
const RIGHT: f64 = PAGE_W - 54.0;
const TOP: f64 = 54.0;
const BOTTOM: f64 = PAGE_H - 62.0;
const WIDTH: f64 = RIGHT - LEFT;

const INK: [u8; 3] = [0x1a, 0x1a, 0x1a];
const GREY: [u8; 3] = [0x66, 0x66, 0x66];
const RULE: [u8; 3] = [0xcc, 0xcc, 0xcc];
const HAIR: [u8; 3] = [0xe4, 0xe4, 0xe4];
const SHADE: [u8; 3] = [0xf2, 0xf2, 0xf2];

/// One drawing operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Text on a baseline.
    Text {
        /// Font.
        font: FontKey,
        /// Size in points.
        size: f64,
        /// Left end.
        x: f64,
        /// Baseline.
        y: f64,
        /// The text.
        text: String,
        /// Colour.
        color: [u8; 3],
        /// Turned 90° counter-clockwise.
        rotated: bool,
        /// The generation timestamp: written to its own uncompressed stream.
        stamp: bool,
    },
    /// A rectangle.
    Rect {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
        /// Fill.
        fill: Option<[u8; 3]>,
        /// Stroke colour and width.
        stroke: Option<([u8; 3], f64)>,
    },
    /// An open polyline.
    Line {
        /// Points.
        points: Vec<(f64, f64)>,
        /// Colour.
        color: [u8; 3],
        /// Width.
        width: f64,
        /// Dashed.
        dashed: bool,
    },
    /// An image, stretched over the box.
    Image {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
        /// Index into [`Laid::images`].
        image: usize,
    },
}

/// An RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

/// The laid-out document.
#[derive(Debug, Clone, PartialEq)]
pub struct Laid {
    /// Operations per page.
    pub pages: Vec<Vec<Op>>,
    /// Images the pages draw.
    pub images: Vec<RgbImage>,
}

/// Breaks `text` into lines no wider than `width` (words longer than a line are
/// cut between characters).
pub fn wrap(key: FontKey, size: f64, text: &str, width: f64) -> Result<Vec<String>, ReportError> {
    let f = font(key)?;
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split(' ') {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if f.width(&candidate, size) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let mut chunk = String::new();
            for c in word.chars() {
                chunk.push(c);
                if f.width(&chunk, size) > width && chunk.chars().count() > 1 {
                    chunk.pop();
                    lines.push(std::mem::take(&mut chunk));
                    chunk.push(c);
                }
            }
            line = chunk;
        }
        lines.push(line);
    }
    Ok(lines)
}

fn tint(c: [u8; 3], keep: f64) -> [u8; 3] {
    let t = |v: u8| (255.0 - (255.0 - f64::from(v)) * keep).round() as u8;
    [t(c[0]), t(c[1]), t(c[2])]
}

struct Layout {
    pages: Vec<Vec<Op>>,
    cur: Vec<Op>,
    images: Vec<RgbImage>,
    y: f64,
}

impl Layout {
    fn new_page(&mut self) {
        self.pages.push(std::mem::take(&mut self.cur));
        self.y = TOP;
    }

    /// Starts a new page unless `h` more points fit on this one.
    fn need(&mut self, h: f64) {
        if self.y + h > BOTTOM && self.y > TOP + 1.0 {
            self.new_page();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, key: FontKey, size: f64, x: f64, y: f64, s: &str, color: [u8; 3]) {
        if s.is_empty() {
            return;
        }
        self.cur.push(Op::Text {
            font: key,
            size,
            x,
            y,
            text: s.to_string(),
            color,
            rotated: false,
            stamp: false,
        });
    }

    fn rule(&mut self, y: f64, color: [u8; 3], width: f64) {
        self.cur.push(Op::Line {
            points: vec![(LEFT, y), (RIGHT, y)],
            color,
            width,
            dashed: false,
        });
    }

    fn lines(
        &mut self,
        key: FontKey,
        size: f64,
        leading: f64,
        text: &str,
        color: [u8; 3],
    ) -> Result<(), ReportError> {
        for line in wrap(key, size, text, WIDTH)? {
            self.need(leading);
            self.text(key, size, LEFT, self.y + size, &line, color);
            self.y += leading;
        }
        Ok(())
    }

    fn title(&mut self, doc: &Document) -> Result<(), ReportError> {
        for line in wrap(FontKey::Bold, 18.0, &doc.title, WIDTH)? {
            self.text(FontKey::Bold, 18.0, LEFT, self.y + 18.0, &line, INK);
            self.y += 23.0;
        }
        self.lines(FontKey::Sans, 9.5, 13.0, &doc.subtitle, GREY)?;
        let label = "Generated ";
        self.text(FontKey::Sans, 9.5, LEFT, self.y + 9.5, label, GREY);
        let x = LEFT + font(FontKey::Sans)?.width(label, 9.5);
        self.cur.push(Op::Text {
            font: FontKey::Mono,
            size: 9.0,
            x,
            y: self.y + 9.5,
            text: doc.generated.clone(),
            color: GREY,
            rotated: false,
            stamp: true,
        });
        self.y += 18.0;
        self.rule(self.y, INK, 1.0);
        self.y += 8.0;
        Ok(())
    }

    fn heading(&mut self, h: &str) -> Result<(), ReportError> {
        // Keep a heading with the start of what follows it.
        self.need(80.0);
        self.y += 10.0;
        for line in wrap(FontKey::Bold, 12.5, h, WIDTH)? {
            self.text(FontKey::Bold, 12.5, LEFT, self.y + 12.5, &line, INK);
            self.y += 16.0;
        }
        self.y += 2.0;
        self.rule(self.y, RULE, 0.6);
        self.y += 7.0;
        Ok(())
    }

    fn verdict(&mut self, label: &str, color: [u8; 3], text: &str) -> Result<(), ReportError> {
        let pad = 8.0;
        let lines = wrap(FontKey::Sans, 9.5, text, WIDTH - 2.0 * pad)?;
        let h = 2.0 * pad + 16.0 + 13.0 * lines.len() as f64;
        self.need(h + 6.0);
        self.cur.push(Op::Rect {
            x: LEFT,
            y: self.y,
            w: WIDTH,
            h,
            fill: Some(tint(color, 0.08)),
            stroke: Some((color, 1.4)),
        });
        self.text(
            FontKey::Bold,
            12.0,
            LEFT + pad,
            self.y + pad + 11.5,
            label,
            color,
        );
        let mut y = self.y + pad + 16.0;
        for l in &lines {
            self.text(FontKey::Sans, 9.5, LEFT + pad, y + 9.5, l, INK);
            y += 13.0;
        }
        self.y += h + 8.0;
        Ok(())
    }

    fn fields(&mut self, fields: &[(String, String, Style)]) -> Result<(), ReportError> {
        let key_w = 150.0;
        for (k, v, style) in fields {
            let (fk, size, leading): (FontKey, f64, f64) = match style {
                Style::Text => (FontKey::Sans, 9.0, 12.0),
                Style::Mono => (FontKey::Mono, 8.0, 11.0),
            };
            let keys = wrap(FontKey::Bold, 9.0, k, key_w - 8.0)?;
            let vals = wrap(fk, size, v, WIDTH - key_w)?;
            let n = keys.len().max(vals.len());
            let h = n as f64 * leading.max(12.0) + 4.0;
            self.need(h);
            for (i, l) in keys.iter().enumerate() {
                let y = self.y + 2.0 + 9.0 + i as f64 * 12.0;
                self.text(FontKey::Bold, 9.0, LEFT, y, l, INK);
            }
            for (i, l) in vals.iter().enumerate() {
                let y = self.y + 2.0 + 9.0 + i as f64 * leading.max(12.0);
                self.text(fk, size, LEFT + key_w, y, l, INK);
            }
            self.y += h;
            self.rule(self.y, HAIR, 0.5);
        }
        self.y += 6.0;
        Ok(())
    }

    fn table(&mut self, t: &super::super::doc::Table) -> Result<(), ReportError> {
        let (size, pad, leading) = (8.0, 4.0, 10.5);
        let sans = font(FontKey::Sans)?;
        let bold = font(FontKey::Bold)?;
        let cols = t
            .header
            .len()
            .max(t.rows.iter().map(Vec::len).max().unwrap_or(0));
        if cols == 0 {
            return Ok(());
        }
        let mut natural = vec![0.0f64; cols];
        for (i, h) in t.header.iter().enumerate() {
            natural[i] = natural[i].max(bold.width(h, size) + 2.0 * pad);
        }
        for row in &t.rows {
            for (i, c) in row.iter().enumerate() {
                natural[i] = natural[i].max(sans.width(c, size) + 2.0 * pad);
            }
        }
        let total: f64 = natural.iter().sum();
        let widths: Vec<f64> = if total <= WIDTH {
            natural.clone()
        } else {
            // Shrink the wide columns first: columns narrower than a fair share
            // keep their width, the others share what is left in proportion.
            let mut fixed = vec![false; cols];
            loop {
                let free: f64 = WIDTH
                    - natural
                        .iter()
                        .zip(&fixed)
                        .filter(|(_, f)| **f)
                        .map(|(w, _)| w)
                        .sum::<f64>();
                let open: Vec<usize> = (0..cols).filter(|&i| !fixed[i]).collect();
                let share = free / open.len().max(1) as f64;
                let newly: Vec<usize> = open
                    .iter()
                    .copied()
                    .filter(|&i| natural[i] <= share)
                    .collect();
                if newly.is_empty() {
                    let open_total: f64 = open.iter().map(|&i| natural[i]).sum();
                    break (0..cols)
                        .map(|i| {
                            if fixed[i] {
                                natural[i]
                            } else {
                                natural[i] * free / open_total.max(1e-9)
                            }
                        })
                        .collect();
                }
                for i in newly {
                    fixed[i] = true;
                }
            }
        };
        let table_w: f64 = widths.iter().sum();
        let row_cells = |row: &[String], key: FontKey| -> Result<Vec<Vec<String>>, ReportError> {
            (0..cols)
                .map(|i| {
                    wrap(
                        key,
                        size,
                        row.get(i).map_or("", String::as_str),
                        widths[i] - 2.0 * pad,
                    )
                })
                .collect()
        };
        let header = row_cells(&t.header, FontKey::Bold)?;
        let height = |cells: &[Vec<String>]| {
            cells.iter().map(Vec::len).max().unwrap_or(1) as f64 * leading + 2.0 * pad - 2.0
        };
        let draw = |l: &mut Layout, cells: &[Vec<String>], key: FontKey, shade: bool| {
            let h = height(cells);
            if shade {
                l.cur.push(Op::Rect {
                    x: LEFT,
                    y: l.y,
                    w: table_w,
                    h,
                    fill: Some(SHADE),
                    stroke: None,
                });
            }
            let mut x = LEFT;
            for (i, lines) in cells.iter().enumerate() {
                for (j, line) in lines.iter().enumerate() {
                    let y = l.y + pad + size - 1.0 + j as f64 * leading;
                    let right = t.align.get(i) == Some(&Align::Right);
                    let tx = if right {
                        let w = font(key).map(|f| f.width(line, size)).unwrap_or(0.0);
                        x + widths[i] - pad - w
                    } else {
                        x + pad
                    };
                    l.text(key, size, tx, y, line, INK);
                }
                x += widths[i];
            }
            l.y += h;
            l.cur.push(Op::Line {
                points: vec![(LEFT, l.y), (LEFT + table_w, l.y)],
                color: if shade { RULE } else { HAIR },
                width: 0.5,
                dashed: false,
            });
        };
        // A short table stays on one page; a long one starts with at least its
        // header and first row.
        let mut total = height(&header);
        for row in &t.rows {
            total += height(&row_cells(row, FontKey::Sans)?);
        }
        if total < 260.0 {
            self.need(total);
        }
        let first = t
            .rows
            .first()
            .map(|r| row_cells(r, FontKey::Sans))
            .transpose()?;
        self.need(height(&header) + first.as_deref().map_or(0.0, height));
        draw(self, &header, FontKey::Bold, true);
        for row in &t.rows {
            let cells = row_cells(row, FontKey::Sans)?;
            let h = height(&cells);
            if self.y + h > BOTTOM {
                self.new_page();
                draw(self, &header, FontKey::Bold, true);
            }
            draw(self, &cells, FontKey::Sans, false);
        }
        self.y += 4.0;
        if let Some(n) = &t.note {
            self.lines(FontKey::Sans, 7.5, 10.0, n, GREY)?;
        }
        self.y += 6.0;
        Ok(())
    }

    fn roc(&mut self, p: &RocPlot, x0: f64, y0: f64, w: f64, h: f64) -> Result<(), ReportError> {
        let sans = font(FontKey::Sans)?;
        let (ml, mb, mt, mr) = (34.0, 24.0, 14.0, 4.0);
        let (pw, ph) = (w - ml - mr, h - mt - mb);
        let (px, py) = (x0 + ml, y0 + mt);
        let tw = font(FontKey::Bold)?.width(&p.title, 8.5);
        self.text(
            FontKey::Bold,
            8.5,
            x0 + ml + (pw - tw) / 2.0,
            y0 + 9.0,
            &p.title,
            INK,
        );
        self.cur.push(Op::Rect {
            x: px,
            y: py,
            w: pw,
            h: ph,
            fill: Some([255, 255, 255]),
            stroke: None,
        });
        for (v, label) in ticks(p.log) {
            let x = px + axis_pos(v, p.log, pw);
            let y = py + ph - axis_pos(v, p.log, ph);
            self.cur.push(Op::Line {
                points: vec![(x, py), (x, py + ph)],
                color: HAIR,
                width: 0.4,
                dashed: false,
            });
            self.cur.push(Op::Line {
                points: vec![(px, y), (px + pw, y)],
                color: HAIR,
                width: 0.4,
                dashed: false,
            });
            let lw = sans.width(&label, 6.5);
            self.text(
                FontKey::Sans,
                6.5,
                x - lw / 2.0,
                py + ph + 8.5,
                &label,
                GREY,
            );
            self.text(FontKey::Sans, 6.5, px - 3.0 - lw, y + 2.3, &label, GREY);
        }
        let chance: Vec<(f64, f64)> = (0..=20)
            .map(|i| {
                let v = if p.log {
                    10f64.powf(-3.0 + 3.0 * f64::from(i) / 20.0)
                } else {
                    f64::from(i) / 20.0
                };
                (
                    px + axis_pos(v, p.log, pw),
                    py + ph - axis_pos(v, p.log, ph),
                )
            })
            .collect();
        self.cur.push(Op::Line {
            points: chance,
            color: [0x99, 0x99, 0x99],
            width: 0.6,
            dashed: true,
        });
        for c in &p.curves {
            let pts = polyline(c, p.log, pw, ph)
                .into_iter()
                .map(|(x, y)| (x + px, y + py))
                .collect();
            self.cur.push(Op::Line {
                points: pts,
                color: c.color,
                width: 1.1,
                dashed: c.dashed,
            });
        }
        self.cur.push(Op::Rect {
            x: px,
            y: py,
            w: pw,
            h: ph,
            fill: None,
            stroke: Some(([0x44, 0x44, 0x44], 0.6)),
        });
        // Legend in the bottom-right corner, below the diagonal, where a ROC
        // curve of an attack at or above chance never goes.
        let n = p.curves.len();
        let widest = p
            .curves
            .iter()
            .map(|c| sans.width(&c.label, 6.5))
            .fold(0.0f64, f64::max);
        let x = (px + pw - widest - 17.0).max(px + 2.0);
        for (i, c) in p.curves.iter().enumerate() {
            let y = py + ph - 5.0 - 9.0 * (n - 1 - i) as f64;
            self.cur.push(Op::Line {
                points: vec![(x, y - 2.2), (x + 10.0, y - 2.2)],
                color: c.color,
                width: 1.1,
                dashed: c.dashed,
            });
            self.text(FontKey::Sans, 6.5, x + 13.0, y, &c.label, INK);
        }
        let axis = if p.log { " (log)" } else { "" };
        let xl = format!("false-positive rate{axis}");
        let xw = sans.width(&xl, 7.0);
        self.text(
            FontKey::Sans,
            7.0,
            px + (pw - xw) / 2.0,
            py + ph + 18.0,
            &xl,
            INK,
        );
        let yl = format!("true-positive rate{axis}");
        let yw = sans.width(&yl, 7.0);
        self.cur.push(Op::Text {
            font: FontKey::Sans,
            size: 7.0,
            x: x0 + 9.0,
            y: py + (ph + yw) / 2.0,
            text: yl,
            color: INK,
            rotated: true,
            stamp: false,
        });
        Ok(())
    }

    fn plots(&mut self, plots: &[RocPlot]) -> Result<(), ReportError> {
        for row in plots.chunks(2) {
            let gap = 16.0;
            let w = ((WIDTH - gap) / 2.0).min(250.0);
            let h = w * 0.86;
            self.need(h + 8.0);
            let total = w * row.len() as f64 + gap * (row.len() as f64 - 1.0);
            let mut x = LEFT + (WIDTH - total) / 2.0;
            for p in row {
                self.roc(p, x, self.y, w, h)?;
                x += w + gap;
            }
            self.y += h + 10.0;
        }
        Ok(())
    }

    fn heatmap(&mut self, m: &Heatmap, x0: f64, y0: f64, size: f64) -> Result<(), ReportError> {
        let tw = font(FontKey::Bold)?.width(&m.title, 8.0);
        self.text(
            FontKey::Bold,
            8.0,
            x0 + (size - tw) / 2.0,
            y0 + 8.0,
            &m.title,
            INK,
        );
        let top = y0 + 13.0;
        // Blow cells up to whole pixels so every viewer shows sharp squares.
        let scale = (256 / m.rows.max(m.cols).max(1)).max(1);
        let (wpx, hpx) = (m.cols * scale, m.rows * scale);
        let mut rgb = Vec::with_capacity(wpx * hpx * 3);
        for py in 0..hpx {
            for px in 0..wpx {
                let v = m
                    .values
                    .get((py / scale) * m.cols + px / scale)
                    .copied()
                    .unwrap_or(f64::NAN);
                rgb.extend_from_slice(&color(v, m.range, m.diverging));
            }
        }
        self.images.push(RgbImage {
            width: wpx as u32,
            height: hpx as u32,
            rgb,
        });
        self.cur.push(Op::Image {
            x: x0,
            y: top,
            w: size,
            h: size,
            image: self.images.len() - 1,
        });
        let steps = 64;
        let mut bar = Vec::with_capacity(steps * 3);
        for i in 0..steps {
            let t = i as f64 / (steps - 1) as f64;
            let v = m.range.1 - t * (m.range.1 - m.range.0);
            bar.extend_from_slice(&color(v, m.range, m.diverging));
        }
        self.images.push(RgbImage {
            width: 1,
            height: steps as u32,
            rgb: bar,
        });
        self.cur.push(Op::Image {
            x: x0 + size + 5.0,
            y: top,
            w: 7.0,
            h: size,
            image: self.images.len() - 1,
        });
        let hi = super::super::format::label(m.range.1);
        let lo = super::super::format::label(m.range.0);
        self.text(FontKey::Sans, 6.5, x0 + size + 14.0, top + 6.0, &hi, GREY);
        self.text(FontKey::Sans, 6.5, x0 + size + 14.0, top + size, &lo, GREY);
        Ok(())
    }

    fn heatmaps(&mut self, maps: &[Heatmap]) -> Result<(), ReportError> {
        for row in maps.chunks(3) {
            let slot = WIDTH / 3.0;
            let size = slot - 44.0;
            self.need(size + 22.0);
            let mut x = LEFT;
            for m in row {
                self.heatmap(m, x, self.y, size)?;
                x += slot;
            }
            self.y += size + 22.0;
        }
        Ok(())
    }

    fn code(&mut self, lines: &[String]) -> Result<(), ReportError> {
        let (size, leading, pad) = (7.5, 9.5, 5.0);
        for source in lines {
            let wrapped = wrap(FontKey::Mono, size, source, WIDTH - 2.0 * pad)?;
            let h = wrapped.len() as f64 * leading + 2.0 * pad;
            self.need(h.min(BOTTOM - TOP));
            self.cur.push(Op::Rect {
                x: LEFT,
                y: self.y,
                w: WIDTH,
                h,
                fill: Some(SHADE),
                stroke: None,
            });
            let mut y = self.y + pad + size;
            for l in &wrapped {
                self.text(FontKey::Mono, size, LEFT + pad, y, l, INK);
                y += leading;
            }
            self.y += h + 4.0;
        }
        self.y += 4.0;
        Ok(())
    }

    fn footers(&mut self, doc: &Document) -> Result<(), ReportError> {
        let n = self.pages.len();
        let sans = font(FontKey::Sans)?;
        let mono = font(FontKey::Mono)?;
        for (i, page) in self.pages.iter_mut().enumerate() {
            let y = PAGE_H - 40.0;
            page.push(Op::Line {
                points: vec![(LEFT, y - 9.0), (RIGHT, y - 9.0)],
                color: RULE,
                width: 0.5,
                dashed: false,
            });
            page.push(Op::Text {
                font: FontKey::Sans,
                size: 7.5,
                x: LEFT,
                y,
                text: doc.title.clone(),
                color: GREY,
                rotated: false,
                stamp: false,
            });
            let right = format!("page {} of {n}", i + 1);
            let rw = sans.width(&right, 7.5);
            page.push(Op::Text {
                font: FontKey::Sans,
                size: 7.5,
                x: RIGHT - rw,
                y,
                text: right,
                color: GREY,
                rotated: false,
                stamp: false,
            });
            let sw = mono.width(&doc.generated, 7.0);
            let label = "generated ";
            let lw = sans.width(label, 7.5);
            let sx = RIGHT - rw - 12.0 - sw;
            page.push(Op::Text {
                font: FontKey::Sans,
                size: 7.5,
                x: sx - lw,
                y,
                text: label.into(),
                color: GREY,
                rotated: false,
                stamp: false,
            });
            page.push(Op::Text {
                font: FontKey::Mono,
                size: 7.0,
                x: sx,
                y,
                text: doc.generated.clone(),
                color: GREY,
                rotated: false,
                stamp: true,
            });
        }
        Ok(())
    }
}

/// Lays out `doc`.
pub fn layout(doc: &Document) -> Result<Laid, ReportError> {
    let mut l = Layout {
        pages: Vec::new(),
        cur: Vec::new(),
        images: Vec::new(),
        y: TOP,
    };
    l.title(doc)?;
    for b in &doc.blocks {
        match b {
            Block::Heading(h) => l.heading(h)?,
            Block::Paragraph(p) => {
                l.lines(FontKey::Sans, 9.5, 13.0, p, INK)?;
                l.y += 5.0;
            }
            Block::Note(p) => {
                l.lines(FontKey::Sans, 7.5, 10.0, p, GREY)?;
                l.y += 5.0;
            }
            Block::Verdict { label, color, text } => l.verdict(label, *color, text)?,
            Block::Fields { fields, .. } => l.fields(fields)?,
            Block::Table(t) => l.table(t)?,
            Block::Plots(p) => l.plots(p)?,
            Block::Heatmaps(m) => l.heatmaps(m)?,
            Block::Code(c) => l.code(c)?,
        }
    }
    l.new_page();
    l.footers(doc)?;
    Ok(Laid {
        pages: l.pages,
        images: l.images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_respects_the_width_and_cuts_long_words() {
        let lines = wrap(FontKey::Sans, 10.0, "aaa bbb ccc ddd eee", 40.0).unwrap();
        assert!(lines.len() > 1, "{lines:?}");
        let f = font(FontKey::Sans).unwrap();
        assert!(lines.iter().all(|l| f.width(l, 10.0) <= 40.0));
        assert_eq!(lines.join(" "), "aaa bbb ccc ddd eee");
        let hash = "0123456789abcdef".repeat(8);
        let cut = wrap(FontKey::Mono, 8.0, &hash, 100.0).unwrap();
        assert!(cut.len() > 1);
        assert_eq!(cut.concat(), hash);
    }
}
