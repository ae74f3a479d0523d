//! The bundled fonts (DejaVu Sans, Sans Bold, Sans Mono from Debian's
//! `fonts-dejavu-core`; licence in `resources/fonts/LICENSE.dejavu`): glyph
//! lookup and advance widths for layout. Subsets are embedded in each PDF.

use std::sync::OnceLock;

use super::super::ReportError;

/// Which bundled font.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FontKey {
    /// DejaVu Sans.
    Sans,
    /// DejaVu Sans Bold.
    Bold,
    /// DejaVu Sans Mono.
    Mono,
}

impl FontKey {
    /// All fonts, in resource-name order.
    pub const ALL: [FontKey; 3] = [FontKey::Sans, FontKey::Bold, FontKey::Mono];

    /// The PDF resource name.
    pub fn resource(self) -> &'static [u8] {
        match self {
            FontKey::Sans => b"F1",
            FontKey::Bold => b"F2",
            FontKey::Mono => b"F3",
        }
    }

    /// PostScript name.
    pub fn ps_name(self) -> &'static str {
        match self {
            FontKey::Sans => "DejaVuSans",
            FontKey::Bold => "DejaVuSans-Bold",
            FontKey::Mono => "DejaVuSansMono",
        }
    }

    fn data(self) -> &'static [u8] {
        match self {
            FontKey::Sans => include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../resources/fonts/DejaVuSans.ttf"
            )),
            FontKey::Bold => include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../resources/fonts/DejaVuSans-Bold.ttf"
            )),
            FontKey::Mono => include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../resources/fonts/DejaVuSansMono.ttf"
            )),
        }
    }
}

/// A parsed bundled font.
pub struct Font {
    /// Which one.
    pub key: FontKey,
    /// The file.
    pub data: &'static [u8],
    face: ttf_parser::Face<'static>,
    upem: f64,
    fallback: u16,
}

impl std::fmt::Debug for Font {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Font").field("key", &self.key).finish()
    }
}

static FONTS: [OnceLock<Option<Font>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// The parsed font.
pub fn font(key: FontKey) -> Result<&'static Font, ReportError> {
    let slot = &FONTS[key as usize];
    slot.get_or_init(|| {
        let data = key.data();
        let face = ttf_parser::Face::parse(data, 0).ok()?;
        let upem = f64::from(face.units_per_em());
        let fallback = face.glyph_index('?').map_or(0, |g| g.0);
        Some(Font {
            key,
            data,
            face,
            upem,
            fallback,
        })
    })
    .as_ref()
    .ok_or_else(|| ReportError::Font(format!("the bundled font {} is unreadable", key.ps_name())))
}

impl Font {
    /// The glyph of `c` (`?` when the font has none).
    pub fn gid(&self, c: char) -> u16 {
        self.face.glyph_index(c).map_or(self.fallback, |g| g.0)
    }

    /// Advance of a glyph in em.
    pub fn advance(&self, gid: u16) -> f64 {
        f64::from(
            self.face
                .glyph_hor_advance(ttf_parser::GlyphId(gid))
                .unwrap_or(0),
        ) / self.upem
    }

    /// Width of `text` at `size` points (no kerning).
    pub fn width(&self, text: &str, size: f64) -> f64 {
        text.chars().map(|c| self.advance(self.gid(c))).sum::<f64>() * size
    }

    /// Ascender, descender (negative) and cap height in em.
    pub fn metrics(&self) -> (f64, f64, f64) {
        (
            f64::from(self.face.ascender()) / self.upem,
            f64::from(self.face.descender()) / self.upem,
            f64::from(self.face.capital_height().unwrap_or(self.face.ascender())) / self.upem,
        )
    }

    /// Bounding box in em: (x_min, y_min, x_max, y_max).
    pub fn bbox(&self) -> (f64, f64, f64, f64) {
        let b = self.face.global_bounding_box();
        (
            f64::from(b.x_min) / self.upem,
            f64::from(b.y_min) / self.upem,
            f64::from(b.x_max) / self.upem,
            f64::from(b.y_max) / self.upem,
        )
    }

    /// Italic angle and whether the font is monospaced.
    pub fn style(&self) -> (f64, bool) {
        (
            f64::from(self.face.italic_angle()),
            self.face.is_monospaced(),
        )
    }
}
