//! Reusable widgets: the heatmap, plots, path fields and thumbnail grids.

pub mod gap_heatmap;
pub mod heatmap;
pub mod numbers;
pub mod plots;
#[cfg(test)]
mod snapshots;
pub mod table;
pub mod verdict;

use crate::thumbs::Thumb;
use egui::{TextureHandle, TextureOptions};
use std::collections::HashMap;

/// Textures made from thumbnails, by key, so each picture is uploaded once.
#[derive(Default)]
pub struct TextureCache {
    map: HashMap<String, TextureHandle>,
}

impl TextureCache {
    /// The texture for `key`, uploading `thumb` the first time.
    pub fn get(&mut self, ctx: &egui::Context, key: &str, thumb: &Thumb) -> TextureHandle {
        // Bounded: a long session browsing many datasets must not keep every
        // picture on the GPU.
        if self.map.len() > 4000 {
            self.map.clear();
        }
        self.map
            .entry(key.to_string())
            .or_insert_with(|| {
                ctx.load_texture(
                    key,
                    crate::thumbs::color_image(thumb),
                    TextureOptions::NEAREST,
                )
            })
            .clone()
    }
}

/// A grid of thumbnails with captions and hover details.
pub fn thumb_grid(
    ui: &mut egui::Ui,
    cache: &mut TextureCache,
    key: &str,
    thumbs: &[Thumb],
    size: f32,
) {
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(6.0, 6.0);
        for (i, t) in thumbs.iter().enumerate() {
            let tex = cache.get(ui.ctx(), &format!("{key}/{i}/{}", t.label), t);
            // A known size, so the wrapping layout can start a new line before
            // it (a plain `vertical` is placed first and measured after).
            ui.allocate_ui(egui::vec2(size, size + 30.0), |ui| {
                ui.vertical(|ui| {
                    ui.set_width(size);
                    ui.image((tex.id(), egui::vec2(size, size)))
                        .on_hover_text(&t.detail);
                    ui.add(egui::Label::new(egui::RichText::new(&t.label).small()).wrap());
                });
            });
        }
    });
}

/// A one-line path field with a "Browse…" button; returns (text changed or
/// Enter pressed, browse clicked). Typing or pasting a path always works, so a
/// machine without a file-dialog service never blocks anyone.
pub fn path_field(ui: &mut egui::Ui, text: &mut String, hint: &str) -> (bool, bool) {
    let mut commit = false;
    let mut browse = false;
    ui.horizontal(|ui| {
        let r = ui.add(
            egui::TextEdit::singleline(text)
                .hint_text(hint)
                .desired_width((ui.available_width() - 90.0).max(120.0)),
        );
        if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            commit = true;
        }
        if ui
            .button("Browse…")
            .on_hover_text("Open a file dialog (you can also type or paste a path)")
            .clicked()
        {
            browse = true;
        }
    });
    (commit, browse)
}

/// A short "key: value" grid.
pub fn kv_grid(ui: &mut egui::Ui, id: &str, rows: &[(&str, String)]) {
    egui::Grid::new(id)
        .num_columns(2)
        .spacing([16.0, 4.0])
        .striped(true)
        .show(ui, |ui| {
            for (k, v) in rows {
                ui.label(egui::RichText::new(*k).strong());
                ui.add(egui::Label::new(v).wrap());
                ui.end_row();
            }
        });
}

/// A button that is disabled and says why on hover (for features not there yet).
pub fn not_yet_button(ui: &mut egui::Ui, label: &str, why: &str) {
    ui.add_enabled(false, egui::Button::new(label))
        .on_disabled_hover_text(why);
}

#[cfg(test)]
mod tests {
    /// Every non-ASCII character in the app's code (outside comments) has a
    /// glyph in the bundled fonts: a missing one is a panic in the tests'
    /// renderer and a box in the window, and hover texts are rarely drawn by
    /// the view tests.
    #[test]
    fn every_character_in_the_ui_text_has_a_glyph() {
        let ctx = egui::Context::default();
        let mut out = ctx.run_ui(Default::default(), |_ui| {});
        out.textures_delta.clear();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut used = std::collections::BTreeMap::new();
        for dir in [root.clone(), root.join("panels"), root.join("widgets")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    for c in code.chars().filter(|c| !c.is_ascii()) {
                        used.entry(c).or_insert_with(|| path.clone());
                    }
                }
            }
        }
        assert!(used.contains_key(&'▶'), "the scan sees the sources");
        let font = egui::FontId::proportional(14.0);
        let missing: Vec<String> = ctx.fonts_mut(|f| {
            used.iter()
                .filter(|(c, _)| !f.has_glyph(&font, **c))
                .map(|(c, p)| format!("{c:?} (U+{:04X}) in {}", *c as u32, p.display()))
                .collect()
        });
        assert!(missing.is_empty(), "no glyph for {missing:?}");
    }
}
