//! The GUI section of `lethe bench` (the desktop binary only): frame time with a
//! 4,500 × 4,500 Alignment Matrix on screen, the size of a CIFAR-10 class's
//! worth of forget samples.
//!
//! The frames run headless through egui's own pipeline — input, layout of the
//! heatmap widget, tessellation into meshes — which is the work the UI thread
//! does every frame. Drawing the meshes on the GPU (one textured quad for the
//! matrix) and the one-off texture upload are not measured: there is no GPU
//! here, and with a software rasteriser that cost would say more about the
//! rasteriser than about Lethe.

use crate::artifacts::Matrix;
use crate::widgets::heatmap::{Colormap, Heatmap};
use egui::{
    Event, Modifiers, MouseWheelSource, MouseWheelUnit, PointerButton, Pos2, RawInput, Rect,
    TouchPhase, pos2, vec2,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Side of the benchmark matrix.
pub const SIDE: usize = 4500;
/// Frames timed after the picture is ready.
pub const FRAMES: usize = 240;

/// A deterministic stand-in for an Alignment Matrix: high on the diagonal
/// (two views of one sample), lower and noisy elsewhere.
pub fn synthetic_alignment(side: usize) -> Matrix {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut values = Vec::with_capacity(side * side);
    for r in 0..side {
        for c in 0..side {
            // SplitMix64: cheap, seeded, no dependency.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
            values.push(if r == c { 0.8 + 0.2 * u } else { 0.6 * u - 0.2 });
        }
    }
    Matrix {
        rows: side,
        cols: side,
        values,
    }
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct FrameTimes {
    /// From the first frame until the matrix is on screen (colouring in the
    /// background while frames keep coming).
    pub until_ready: Duration,
    /// Per-frame times after that, sorted.
    pub frames: Vec<Duration>,
}

impl FrameTimes {
    /// The `q` quantile (0..=1) of the frame times.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.frames.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.frames.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        self.frames[i]
    }
}

fn input(time: f64, events: Vec<Event>) -> RawInput {
    RawInput {
        screen_rect: Some(Rect::from_min_size(Pos2::ZERO, vec2(1280.0, 800.0))),
        // What wgpu and most GL drivers allow; the widget caps it at 4096 anyway.
        max_texture_side: Some(8192),
        time: Some(time),
        predicted_dt: 1.0 / 60.0,
        events,
        ..Default::default()
    }
}

/// Runs `frames` frames with `matrix` shown: the pointer sweeps across the plot
/// (hover readout every frame), with a zoom step every 8th frame and a drag
/// (pan) every 16th, as a user exploring the matrix would.
pub fn measure(matrix: Matrix, frames: usize) -> anyhow::Result<FrameTimes> {
    let ctx = egui::Context::default();
    let mut heatmap = Heatmap::new(Arc::new(matrix), Colormap::Viridis);
    let mut time = 0.0;
    let frame = |heatmap: &mut Heatmap, events: Vec<Event>, time: f64| {
        let start = Instant::now();
        let mut out = ctx.run_ui(input(time, events), |ui| {
            heatmap.show(ui, 760.0);
        });
        // A renderer would upload these; nothing here draws.
        out.textures_delta.clear();
        let meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
        std::hint::black_box(meshes);
        start.elapsed()
    };
    let start = Instant::now();
    while !heatmap.has_texture() {
        if start.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the heatmap was not ready after two minutes");
        }
        time += 1.0 / 60.0;
        frame(&mut heatmap, Vec::new(), time);
        std::thread::sleep(Duration::from_millis(2));
    }
    let until_ready = start.elapsed();
    let plot = heatmap
        .last_plot_rect
        .ok_or_else(|| anyhow::anyhow!("the heatmap drew no plot"))?;
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames {
        let t = i as f32 / frames.max(1) as f32;
        let p = pos2(
            plot.left() + plot.width() * (0.1 + 0.8 * t),
            plot.top() + plot.height() * (0.5 + 0.3 * (t * 12.0).sin()),
        );
        let mut events = vec![Event::PointerMoved(p)];
        if i % 8 == 4 {
            events.push(Event::MouseWheel {
                unit: MouseWheelUnit::Point,
                delta: vec2(0.0, if i < frames / 2 { 40.0 } else { -40.0 }),
                phase: TouchPhase::Move,
                source: MouseWheelSource::Unknown,
                modifiers: Modifiers::NONE,
            });
        }
        if i % 16 == 0 {
            let button = |pressed| Event::PointerButton {
                pos: p,
                button: PointerButton::Primary,
                pressed,
                modifiers: Modifiers::NONE,
            };
            events.insert(0, button(true));
            events.push(Event::PointerMoved(p + vec2(12.0, 6.0)));
            events.push(button(false));
        }
        time += 1.0 / 60.0;
        times.push(frame(&mut heatmap, events, time));
    }
    times.sort();
    Ok(FrameTimes {
        until_ready,
        frames: times,
    })
}

/// The Markdown section `lethe bench` prints.
pub fn section(_threads: i32) -> anyhow::Result<String> {
    let t = measure(synthetic_alignment(SIDE), FRAMES)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(format!(
        "GUI, {SIDE} × {SIDE} Alignment Matrix heatmap, {FRAMES} frames of hover, zoom and pan \
         (UI-thread work: input, layout, tessellation; GPU drawing not included):\n\n\
         | until the matrix is shown | median frame | 95th percentile | slowest frame | budget at 60 Hz |\n\
         | ---: | ---: | ---: | ---: | ---: |\n\
         | {:.0} ms | {:.2} ms | {:.2} ms | {:.2} ms | 16.7 ms |\n",
        ms(t.until_ready),
        ms(t.quantile(0.5)),
        ms(t.quantile(0.95)),
        ms(t.quantile(1.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_matrix_gets_shown_and_frames_are_timed() {
        // Above the background-colouring threshold, so the ready wait is exercised.
        let side = 1100;
        let m = synthetic_alignment(side);
        assert_eq!(m.values.len(), side * side);
        assert!(m.values[0] >= 0.8 && m.values[1] < 0.4);
        let t = measure(m, 20).unwrap();
        assert_eq!(t.frames.len(), 20);
        assert!(t.frames.windows(2).all(|w| w[0] <= w[1]));
        assert!(t.quantile(1.0) >= t.quantile(0.5));
    }
}
