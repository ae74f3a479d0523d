//! A matrix drawn as one texture: zoom and pan change only the texture
//! coordinates of a single quad, so a matrix of thousands × thousands costs the
//! same per frame as a small one. Hover shows the exact value (read from the
//! matrix, not the texture), a colour legend maps colours back to values, and
//! optional thumbnails label rows and columns once zoomed in far enough.
//!
//! Matrices wider or taller than the GPU's largest texture are averaged in
//! blocks for the picture only; the hover value is always the cell's own.

use crate::artifacts::Matrix;
use egui::{
    Align2, Color32, ColorImage, FontId, Mesh, Pos2, Rect, Sense, Stroke, TextureHandle,
    TextureOptions, Vec2, pos2, vec2,
};
use std::sync::Arc;

/// Colour scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// Perceptually uniform, dark blue → yellow (values).
    Viridis,
    /// Blue → white → red around zero (gaps, differences).
    Diverging,
}

impl Colormap {
    /// All scales, for a picker.
    pub const ALL: [Colormap; 2] = [Colormap::Viridis, Colormap::Diverging];

    /// Name for a picker.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Diverging => "blue–white–red",
        }
    }

    /// The colour of `t` in `[0, 1]` (clamped; NaN is grey).
    pub fn color(self, t: f32) -> Color32 {
        if t.is_nan() {
            return Color32::from_gray(128);
        }
        let t = t.clamp(0.0, 1.0);
        let stops: &[[u8; 3]] = match self {
            // matplotlib's viridis at 0, 1/8, ..., 1.
            Colormap::Viridis => &[
                [68, 1, 84],
                [71, 44, 122],
                [59, 81, 139],
                [44, 113, 142],
                [33, 144, 141],
                [39, 173, 129],
                [92, 200, 99],
                [170, 220, 50],
                [253, 231, 37],
            ],
            Colormap::Diverging => &[[33, 102, 172], [247, 247, 247], [178, 24, 43]],
        };
        let x = t * (stops.len() - 1) as f32;
        let i = (x.floor() as usize).min(stops.len() - 2);
        let f = x - i as f32;
        let lerp = |a: u8, b: u8| (f32::from(a) + (f32::from(b) - f32::from(a)) * f).round() as u8;
        let (a, b) = (stops[i], stops[i + 1]);
        Color32::from_rgb(lerp(a[0], b[0]), lerp(a[1], b[1]), lerp(a[2], b[2]))
    }
}

/// The value range mapped onto the colour scale.
pub fn color_range(m: &Matrix, map: Colormap) -> (f32, f32) {
    let (lo, hi) = m.finite_range();
    match map {
        // Zero must be white: symmetric around it.
        Colormap::Diverging => {
            let a = lo.abs().max(hi.abs()).max(f32::MIN_POSITIVE);
            (-a, a)
        }
        Colormap::Viridis => {
            if hi > lo {
                (lo, hi)
            } else {
                (lo - 0.5, hi + 0.5)
            }
        }
    }
}

/// The picture of `m`: one texel per cell, or per `block` cells (rows, cols)
/// averaged when a side exceeds `max_side`.
pub fn texture_image(
    m: &Matrix,
    map: Colormap,
    range: (f32, f32),
    max_side: usize,
) -> (ColorImage, [usize; 2]) {
    let max_side = max_side.max(1);
    let block = [
        m.rows.div_ceil(max_side).max(1),
        m.cols.div_ceil(max_side).max(1),
    ];
    let h = m.rows.div_ceil(block[0]).max(1);
    let w = m.cols.div_ceil(block[1]).max(1);
    let span = (range.1 - range.0).max(f32::MIN_POSITIVE);
    let mut pixels = Vec::with_capacity(w * h);
    for ty in 0..h {
        for tx in 0..w {
            let (mut sum, mut n) = (0.0f64, 0u32);
            for r in ty * block[0]..((ty + 1) * block[0]).min(m.rows) {
                let row = &m.values[r * m.cols..(r + 1) * m.cols];
                for &v in &row[tx * block[1]..((tx + 1) * block[1]).min(m.cols)] {
                    if v.is_finite() {
                        sum += f64::from(v);
                        n += 1;
                    }
                }
            }
            let v = if n == 0 {
                f32::NAN
            } else {
                (sum / f64::from(n)) as f32
            };
            pixels.push(map.color((v - range.0) / span));
        }
    }
    (ColorImage::new([w, h], pixels), block)
}

/// The visible part of the matrix in cell coordinates: `x` columns, `y` rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// First visible column (fractional).
    pub x0: f64,
    /// One past the last visible column.
    pub x1: f64,
    /// First visible row.
    pub y0: f64,
    /// One past the last visible row.
    pub y1: f64,
}

impl Window {
    /// The whole matrix.
    pub fn full(rows: usize, cols: usize) -> Self {
        Window {
            x0: 0.0,
            x1: cols as f64,
            y0: 0.0,
            y1: rows as f64,
        }
    }

    /// The cell under a point of `rect`.
    pub fn cell_at(&self, rect: Rect, p: Pos2, rows: usize, cols: usize) -> Option<(usize, usize)> {
        if !rect.contains(p) || rect.width() <= 0.0 || rect.height() <= 0.0 {
            return None;
        }
        let fx = f64::from((p.x - rect.left()) / rect.width());
        let fy = f64::from((p.y - rect.top()) / rect.height());
        let c = self.x0 + fx * (self.x1 - self.x0);
        let r = self.y0 + fy * (self.y1 - self.y0);
        (c >= 0.0 && r >= 0.0 && (c as usize) < cols && (r as usize) < rows)
            .then_some((r as usize, c as usize))
    }

    /// Zooms by `factor` (> 1 zooms in) keeping the point at fractions `(fx, fy)`
    /// of the view fixed, never beyond one cell or outside the matrix.
    pub fn zoom(&mut self, factor: f64, fx: f64, fy: f64, rows: usize, cols: usize) {
        let zoom_axis = |a0: &mut f64, a1: &mut f64, f: f64, n: usize| {
            let n = n as f64;
            let len = *a1 - *a0;
            let new_len = (len / factor).clamp(1.0_f64.min(n), n);
            let center = *a0 + f * len;
            *a0 = center - f * new_len;
            *a1 = *a0 + new_len;
            if *a0 < 0.0 {
                *a1 -= *a0;
                *a0 = 0.0;
            }
            if *a1 > n {
                *a0 -= *a1 - n;
                *a1 = n;
            }
            *a0 = a0.max(0.0);
        };
        zoom_axis(&mut self.x0, &mut self.x1, fx, cols);
        zoom_axis(&mut self.y0, &mut self.y1, fy, rows);
    }

    /// Pans by a fraction of the view (drag of `(dx, dy)` view widths/heights),
    /// staying inside the matrix.
    pub fn pan(&mut self, dx: f64, dy: f64, rows: usize, cols: usize) {
        let shift = |a0: &mut f64, a1: &mut f64, d: f64, n: usize| {
            let len = *a1 - *a0;
            let mut s = -d * len;
            s = s.clamp(-*a0, n as f64 - *a1);
            *a0 += s;
            *a1 += s;
        };
        shift(&mut self.x0, &mut self.x1, dx, cols);
        shift(&mut self.y0, &mut self.y1, dy, rows);
    }
}

/// What the pointer is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hovered {
    /// Row.
    pub row: usize,
    /// Column.
    pub col: usize,
    /// The cell's value.
    pub value: f32,
}

/// Matrices with more cells than this are coloured off the UI thread, so
/// opening one never freezes the window (16M cells take seconds in a debug build).
pub const BACKGROUND_CELLS: usize = 1 << 20;

type PendingImage = (
    Colormap,
    (f32, f32),
    std::sync::mpsc::Receiver<(ColorImage, [usize; 2])>,
);

/// A heatmap and its view state (zoom, colour scale, texture).
pub struct Heatmap {
    matrix: Arc<Matrix>,
    map: Colormap,
    range: (f32, f32),
    window: Window,
    texture: Option<(TextureHandle, [usize; 2])>,
    /// The picture being coloured on a background thread, and for which
    /// colour scale and range (a stale one is dropped).
    pending: Option<PendingImage>,
    /// Axis titles: rows, columns.
    pub axis_titles: (String, String),
    /// Row labels (sample numbers), if any.
    pub row_labels: Option<Vec<String>>,
    /// Column labels.
    pub col_labels: Option<Vec<String>>,
    /// Row thumbnails.
    pub row_thumbs: Option<Vec<TextureHandle>>,
    /// Column thumbnails.
    pub col_thumbs: Option<Vec<TextureHandle>>,
    /// Where the cells were drawn last frame.
    pub last_plot_rect: Option<Rect>,
}

impl Heatmap {
    /// A heatmap of `matrix` with the colour scale `map`.
    pub fn new(matrix: Arc<Matrix>, map: Colormap) -> Self {
        let range = color_range(&matrix, map);
        let window = Window::full(matrix.rows, matrix.cols);
        Heatmap {
            matrix,
            map,
            range,
            window,
            texture: None,
            pending: None,
            axis_titles: ("row".into(), "column".into()),
            row_labels: None,
            col_labels: None,
            row_thumbs: None,
            col_thumbs: None,
            last_plot_rect: None,
        }
    }

    /// Whether the matrix's picture is ready (large matrices are coloured in
    /// the background over the first frames).
    pub fn has_texture(&self) -> bool {
        self.texture.is_some()
    }

    /// The matrix shown.
    pub fn matrix(&self) -> &Arc<Matrix> {
        &self.matrix
    }

    /// The colour scale.
    pub fn colormap(&self) -> Colormap {
        self.map
    }

    /// Changes the colour scale (the texture is rebuilt).
    pub fn set_colormap(&mut self, map: Colormap) {
        if map != self.map {
            self.map = map;
            self.range = color_range(&self.matrix, map);
            self.texture = None;
        }
    }

    /// The value range of the colour scale.
    pub fn range(&self) -> (f32, f32) {
        self.range
    }

    /// Maps `range` onto the colour scale instead of the matrix's own range, so
    /// that several heatmaps compare by colour (the texture is rebuilt).
    pub fn set_range(&mut self, range: (f32, f32)) {
        if range != self.range && range.1 > range.0 {
            self.range = range;
            self.texture = None;
        }
    }

    /// The current view.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Shows the whole matrix again.
    pub fn reset_view(&mut self) {
        self.window = Window::full(self.matrix.rows, self.matrix.cols);
    }

    /// Draws the heatmap into the available space (at most `height` tall).
    pub fn show(&mut self, ui: &mut egui::Ui, height: f32) -> Option<Hovered> {
        let m = Arc::clone(&self.matrix);
        if m.rows == 0 || m.cols == 0 {
            ui.label("(empty matrix)");
            return None;
        }
        if self.texture.is_none() {
            let max_side = ui.ctx().input(|i| i.max_texture_side).min(4096);
            let ready = if m.values.len() <= BACKGROUND_CELLS {
                Some(texture_image(&m, self.map, self.range, max_side))
            } else {
                self.poll_background(ui.ctx(), max_side)
            };
            if let Some((image, block)) = ready {
                let tex = ui
                    .ctx()
                    .load_texture("heatmap", image, TextureOptions::NEAREST);
                self.texture = Some((tex, block));
            }
        }
        let Some((tex, block)) = self.texture.as_ref() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Colouring {} × {} cells…", m.rows, m.cols));
            });
            return None;
        };
        let tex_id = tex.id();
        let block = *block;

        let thumbs = self.row_thumbs.is_some() || self.col_thumbs.is_some();
        let axis = if thumbs { 56.0 } else { 44.0 };
        let legend_w = 78.0;
        let width = ui.available_width().max(200.0);
        let (outer, _) = ui.allocate_exact_size(vec2(width, height.max(160.0)), Sense::hover());
        // Top margin: the column title above the column axis.
        let title_h = 16.0;
        let side =
            (outer.width() - axis - legend_w - 8.0).min(outer.height() - axis - title_h - 18.0);
        let plot = Rect::from_min_size(
            outer.min + vec2(axis, axis + title_h),
            vec2(side.max(40.0), side.max(40.0)),
        );
        self.last_plot_rect = Some(plot);
        let response = ui.interact(
            plot,
            ui.scope_id().with("heatmap-plot"),
            Sense::click_and_drag(),
        );
        let painter = ui.painter_at(outer);

        // Interaction: scroll or pinch zooms about the pointer, drag pans,
        // double-click shows everything.
        if let Some(p) = response.hover_pos() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = f64::from(pinch) * (f64::from(scroll) / 400.0).exp();
            if (factor - 1.0).abs() > 1e-6 {
                let fx = f64::from((p.x - plot.left()) / plot.width());
                let fy = f64::from((p.y - plot.top()) / plot.height());
                self.window.zoom(factor, fx, fy, m.rows, m.cols);
                // The scroll zoomed; it must not also scroll the page.
                ui.input_mut(|i| i.smooth_scroll_delta = Vec2::ZERO);
            }
        }
        if response.dragged() {
            let d = response.drag_delta();
            self.window.pan(
                f64::from(d.x / plot.width()),
                f64::from(d.y / plot.height()),
                m.rows,
                m.cols,
            );
        }
        if response.double_clicked() {
            self.reset_view();
        }

        // The picture: the texture covers block-multiples of cells.
        let tw = (m.cols.div_ceil(block[1]) * block[1]) as f64;
        let th = (m.rows.div_ceil(block[0]) * block[0]) as f64;
        let w = self.window;
        let uv = Rect::from_min_max(
            pos2((w.x0 / tw) as f32, (w.y0 / th) as f32),
            pos2((w.x1 / tw) as f32, (w.y1 / th) as f32),
        );
        painter.image(tex_id, plot, uv, Color32::WHITE);
        let stroke_color = ui.visuals().weak_text_color();
        painter.rect_stroke(
            plot,
            0.0,
            Stroke::new(1.0, stroke_color),
            egui::StrokeKind::Outside,
        );

        let cell_w = plot.width() as f64 / (w.x1 - w.x0);
        let cell_h = plot.height() as f64 / (w.y1 - w.y0);
        let to_x = |c: f64| plot.left() + ((c - w.x0) * cell_w) as f32;
        let to_y = |r: f64| plot.top() + ((r - w.y0) * cell_h) as f32;
        let text_color = ui.visuals().text_color();
        let font = FontId::proportional(11.0);

        // Axes: thumbnails when each visible cell is big enough, else numbers.
        self.draw_axis(&painter, plot, axis, true, cell_h, &to_y, &font, text_color);
        self.draw_axis(
            &painter, plot, axis, false, cell_w, &to_x, &font, text_color,
        );
        painter.text(
            pos2(plot.center().x, outer.top()),
            Align2::CENTER_TOP,
            &self.axis_titles.1,
            font.clone(),
            ui.visuals().weak_text_color(),
        );
        // The status line needs room; narrow heatmaps (side by side) skip it.
        if plot.width() > 360.0 {
            painter.text(
                pos2(plot.left(), plot.bottom() + 4.0),
                Align2::LEFT_TOP,
                format!(
                    "{} × {}  ·  showing rows {:.0}–{:.0}, columns {:.0}–{:.0}  ·  scroll to zoom, drag to pan, double-click to reset",
                    m.rows, m.cols, w.y0, w.y1, w.x0, w.x1
                ),
                font.clone(),
                ui.visuals().weak_text_color(),
            );
        }

        // Legend.
        let legend = Rect::from_min_size(
            pos2(plot.right() + 16.0, plot.top()),
            vec2(16.0, plot.height()),
        );
        let mut mesh = Mesh::default();
        let steps = 64;
        for s in 0..steps {
            let t0 = s as f32 / steps as f32;
            let t1 = (s + 1) as f32 / steps as f32;
            let r = Rect::from_min_max(
                pos2(legend.left(), legend.bottom() - t1 * legend.height()),
                pos2(legend.right(), legend.bottom() - t0 * legend.height()),
            );
            mesh.add_colored_rect(r, self.map.color((t0 + t1) / 2.0));
        }
        painter.add(mesh);
        painter.rect_stroke(
            legend,
            0.0,
            Stroke::new(1.0, stroke_color),
            egui::StrokeKind::Outside,
        );
        let (lo, hi) = self.range;
        for (t, v) in [(0.0, lo), (0.5, (lo + hi) / 2.0), (1.0, hi)] {
            painter.text(
                pos2(legend.right() + 4.0, legend.bottom() - t * legend.height()),
                Align2::LEFT_CENTER,
                format_value(v),
                font.clone(),
                text_color,
            );
        }

        // Hover.
        let hovered = response
            .hover_pos()
            .and_then(|p| w.cell_at(plot, p, m.rows, m.cols))
            .and_then(|(r, c)| {
                m.get(r, c).map(|v| Hovered {
                    row: r,
                    col: c,
                    value: v,
                })
            });
        if let Some(h) = hovered {
            if cell_w >= 3.0 && cell_h >= 3.0 {
                let cell = Rect::from_min_max(
                    pos2(to_x(h.col as f64), to_y(h.row as f64)),
                    pos2(to_x(h.col as f64 + 1.0), to_y(h.row as f64 + 1.0)),
                );
                painter.rect_stroke(
                    cell,
                    0.0,
                    Stroke::new(1.5, Color32::WHITE),
                    egui::StrokeKind::Outside,
                );
            }
            // Marker on the legend at the value.
            let t = ((h.value - lo) / (hi - lo).max(f32::MIN_POSITIVE)).clamp(0.0, 1.0);
            let y = legend.bottom() - t * legend.height();
            painter.line_segment(
                [pos2(legend.left() - 4.0, y), pos2(legend.right() + 2.0, y)],
                Stroke::new(2.0, text_color),
            );
            let row_name = self.name(true, h.row);
            let col_name = self.name(false, h.col);
            let row_thumb = self
                .row_thumbs
                .as_ref()
                .and_then(|t| t.get(h.row))
                .map(|t| t.id());
            let col_thumb = self
                .col_thumbs
                .as_ref()
                .and_then(|t| t.get(h.col))
                .map(|t| t.id());
            response.on_hover_ui_at_pointer(|ui| {
                ui.label(format!(
                    "{} {row_name}, {} {col_name}\nvalue {}",
                    self.axis_titles.0,
                    self.axis_titles.1,
                    format_value(h.value)
                ));
                if row_thumb.is_some() || col_thumb.is_some() {
                    ui.horizontal(|ui| {
                        for id in [row_thumb, col_thumb].into_iter().flatten() {
                            ui.image((id, vec2(56.0, 56.0)));
                        }
                    });
                }
            });
        }
        hovered
    }

    /// Starts (or collects) the background colouring of the texture.
    fn poll_background(
        &mut self,
        ctx: &egui::Context,
        max_side: usize,
    ) -> Option<(ColorImage, [usize; 2])> {
        if let Some((map, range, rx)) = &self.pending
            && *map == self.map
            && *range == self.range
        {
            return match rx.try_recv() {
                Ok(done) => {
                    self.pending = None;
                    Some(done)
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.pending = None;
                    None
                }
            };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (m, map, range, ctx) = (Arc::clone(&self.matrix), self.map, self.range, ctx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(texture_image(&m, map, range, max_side));
            ctx.request_repaint();
        });
        self.pending = Some((self.map, self.range, rx));
        None
    }

    fn name(&self, rows: bool, i: usize) -> String {
        let labels = if rows {
            &self.row_labels
        } else {
            &self.col_labels
        };
        labels
            .as_ref()
            .and_then(|l| l.get(i).cloned())
            .unwrap_or_else(|| i.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    fn draw_axis(
        &self,
        painter: &egui::Painter,
        plot: Rect,
        axis: f32,
        rows: bool,
        cell: f64,
        to_screen: &dyn Fn(f64) -> f32,
        font: &FontId,
        color: Color32,
    ) {
        let w = self.window;
        let (a0, a1) = if rows { (w.y0, w.y1) } else { (w.x0, w.x1) };
        let thumbs = if rows {
            &self.row_thumbs
        } else {
            &self.col_thumbs
        };
        if let Some(thumbs) = thumbs
            && cell >= 10.0
        {
            let size = (cell as f32 - 1.0).min(axis - 6.0);
            let first = a0.floor() as usize;
            let last = (a1.ceil() as usize).min(thumbs.len());
            for (i, thumb) in thumbs.iter().enumerate().take(last).skip(first) {
                let mid = to_screen(i as f64 + 0.5);
                let r = if rows {
                    Rect::from_center_size(
                        pos2(plot.left() - 3.0 - size / 2.0, mid),
                        Vec2::splat(size),
                    )
                } else {
                    Rect::from_center_size(
                        pos2(mid, plot.top() - 3.0 - size / 2.0),
                        Vec2::splat(size),
                    )
                };
                if (rows && r.center().y >= plot.top() && r.center().y <= plot.bottom())
                    || (!rows && r.center().x >= plot.left() && r.center().x <= plot.right())
                {
                    painter.image(
                        thumb.id(),
                        r,
                        Rect::from_min_max(Pos2::ZERO, pos2(1.0, 1.0)),
                        Color32::WHITE,
                    );
                }
            }
            return;
        }
        // Numbers at a spacing of at least ~40 px, on a 1-2-5 ladder.
        let px_len = if rows { plot.height() } else { plot.width() } as f64;
        let per_px = (a1 - a0) / px_len.max(1.0);
        let step = nice_step(per_px * 40.0);
        let mut v = (a0 / step).ceil() * step;
        while v < a1 {
            let i = v as usize;
            let s = to_screen(v + 0.5);
            let text = self.name(rows, i);
            if rows {
                painter.text(
                    pos2(plot.left() - 4.0, s),
                    Align2::RIGHT_CENTER,
                    text,
                    font.clone(),
                    color,
                );
            } else {
                painter.text(
                    pos2(s, plot.top() - 4.0),
                    Align2::CENTER_BOTTOM,
                    text,
                    font.clone(),
                    color,
                );
            }
            v += step;
        }
    }
}

/// The smallest of 1, 2, 5, 10, 20, 50, … that is at least `x` (at least 1).
pub fn nice_step(x: f64) -> f64 {
    let x = x.max(1.0);
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A value for a label: 4 significant digits.
pub fn format_value(v: f32) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize) -> Matrix {
        Matrix::new(rows, cols, (0..rows * cols).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn colormaps_span_their_stops() {
        assert_eq!(Colormap::Viridis.color(0.0), Color32::from_rgb(68, 1, 84));
        assert_eq!(
            Colormap::Viridis.color(1.0),
            Color32::from_rgb(253, 231, 37)
        );
        assert_eq!(
            Colormap::Viridis.color(7.0),
            Colormap::Viridis.color(1.0),
            "clamped"
        );
        assert_eq!(
            Colormap::Diverging.color(0.5),
            Color32::from_rgb(247, 247, 247)
        );
        assert_eq!(Colormap::Viridis.color(f32::NAN), Color32::from_gray(128));
    }

    #[test]
    fn diverging_range_is_symmetric_around_zero() {
        let gap = Matrix::new(1, 3, vec![-0.2, 0.1, 0.5]).unwrap();
        assert_eq!(color_range(&gap, Colormap::Diverging), (-0.5, 0.5));
        assert_eq!(color_range(&gap, Colormap::Viridis), (-0.2, 0.5));
        let flat = Matrix::new(1, 2, vec![3.0, 3.0]).unwrap();
        assert_eq!(color_range(&flat, Colormap::Viridis), (2.5, 3.5));
    }

    #[test]
    fn texture_is_one_texel_per_cell_or_block_averaged() {
        let small = m(3, 4);
        let (img, block) = texture_image(&small, Colormap::Viridis, (0.0, 11.0), 4096);
        assert_eq!(img.size, [4, 3]);
        assert_eq!(block, [1, 1]);
        assert_eq!(img.pixels[0], Colormap::Viridis.color(0.0));
        assert_eq!(img.pixels[11], Colormap::Viridis.color(1.0));

        // 5000 × 3000 with a 2048 limit: blocks of 3 × 2 cells.
        let big = Matrix::new(5000, 3000, vec![1.0; 5000 * 3000]).unwrap();
        let (img, block) = texture_image(&big, Colormap::Viridis, (0.0, 1.0), 2048);
        assert_eq!(block, [3, 2]);
        assert_eq!(img.size, [1500, 1667]);
        assert!(img.size[0] <= 2048 && img.size[1] <= 2048);
        assert!(
            img.pixels
                .iter()
                .all(|&p| p == Colormap::Viridis.color(1.0))
        );

        // A block averages its cells: [0, 10] → 5 is mid-scale.
        let two = Matrix::new(1, 2, vec![0.0, 10.0]).unwrap();
        let (img, _) = texture_image(&two, Colormap::Viridis, (0.0, 10.0), 1);
        assert_eq!(img.pixels, vec![Colormap::Viridis.color(0.5)]);
    }

    #[test]
    fn window_maps_points_to_cells_zooms_and_pans_inside_the_matrix() {
        let rect = Rect::from_min_size(Pos2::ZERO, vec2(100.0, 100.0));
        let mut w = Window::full(10, 20);
        assert_eq!(w.cell_at(rect, pos2(0.5, 0.5), 10, 20), Some((0, 0)));
        assert_eq!(w.cell_at(rect, pos2(99.9, 99.9), 10, 20), Some((9, 19)));
        assert_eq!(w.cell_at(rect, pos2(150.0, 5.0), 10, 20), None);
        // Zoom 2× about the centre: the middle half stays.
        w.zoom(2.0, 0.5, 0.5, 10, 20);
        assert_eq!((w.x0, w.x1, w.y0, w.y1), (5.0, 15.0, 2.5, 7.5));
        assert_eq!(w.cell_at(rect, pos2(0.5, 0.5), 10, 20), Some((2, 5)));
        // Pan right by a whole view: clamped at the edge.
        w.pan(-1.0, 0.0, 10, 20);
        assert_eq!((w.x0, w.x1), (10.0, 20.0));
        // Zooming in never shows less than one cell, out never more than all.
        w.zoom(1e9, 0.0, 0.0, 10, 20);
        assert!((w.x1 - w.x0 - 1.0).abs() < 1e-9 && (w.y1 - w.y0 - 1.0).abs() < 1e-9);
        w.zoom(1e-9, 0.3, 0.3, 10, 20);
        assert_eq!(w, Window::full(10, 20));
    }

    #[test]
    fn steps_and_labels() {
        assert_eq!(nice_step(0.3), 1.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(37.0), 50.0);
        assert_eq!(nice_step(101.0), 200.0);
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(12345.0), "1.234e4");
        assert_eq!(format_value(0.0), "0");
    }

    #[test]
    fn a_big_heatmap_draws_and_reports_the_hovered_value() {
        use egui_kittest::Harness;
        let matrix = Arc::new(m(2000, 2000));
        let mut heatmap = Heatmap::new(Arc::clone(&matrix), Colormap::Viridis);
        let mut harness = Harness::builder()
            .with_size(vec2(800.0, 700.0))
            .build_ui_state(
                |ui, (h, out): &mut (Heatmap, Option<Hovered>)| {
                    egui::ScrollArea::vertical().show(ui, |ui| {
                        *out = h.show(ui, 650.0);
                    });
                },
                (Heatmap::new(Arc::clone(&matrix), Colormap::Viridis), None),
            );
        // 4M cells are coloured in the background: the window keeps drawing.
        harness.step();
        assert!(harness.state().0.texture.is_none(), "not on the UI thread");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while harness.state().0.texture.is_none() {
            assert!(std::time::Instant::now() < until, "the texture never came");
            harness.step();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        harness.run();
        let (_, tex_block) = harness
            .state()
            .0
            .texture
            .as_ref()
            .map(|(t, b)| (t.size(), *b))
            .unwrap();
        assert_eq!(tex_block, [1, 1], "2000 fits in one texture");
        // Hover just inside the top-left corner of the cells.
        let plot = harness.state().0.last_plot_rect.unwrap();
        harness.hover_at(plot.min + vec2(1.0, 1.0));
        harness.run();
        let hovered = harness.state().1.expect("hovering a cell");
        assert_eq!(hovered.value, matrix.get(hovered.row, hovered.col).unwrap());
        assert!(hovered.row < 5 && hovered.col < 5, "{hovered:?}");
        // The wheel over the cells zooms in about the pointer; double-click resets.
        let at = plot.min + vec2(plot.width() * 0.25, plot.height() * 0.25);
        harness.hover_at(at);
        harness.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Line,
            delta: vec2(0.0, 3.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
            modifiers: egui::Modifiers::NONE,
        });
        for _ in 0..20 {
            harness.step();
        }
        let w = harness.state().0.window();
        assert!(w.x1 - w.x0 < 1500.0, "zoomed in: {w:?}");
        assert!(
            w.x0 > 0.0 && w.x0 < 500.0 && w.y0 > 0.0 && w.y0 < 500.0,
            "about the pointer: {w:?}"
        );
        heatmap.reset_view();
        assert_eq!(heatmap.window(), Window::full(2000, 2000));
    }
}
