//! Sample pictures as egui images. The pictures are drawn by workers (from
//! files the window never parses, see `lethe_engine::preview`) and turned into
//! textures when first shown.

use egui::{Color32, ColorImage};

/// One picture with a caption (channel-major pixels, as the worker sent them).
pub type Thumb = lethe_engine::preview::Picture;

/// The picture as an RGBA image.
pub fn color_image(t: &Thumb) -> ColorImage {
    chw_to_image(t.channels, t.height, t.width, &t.pixels)
}

/// CHW u8 pixels (1 or 3 channels, channel-major) as an RGBA image.
pub fn chw_to_image(channels: usize, height: usize, width: usize, chw: &[u8]) -> ColorImage {
    let plane = height * width;
    let at = |c: usize, p: usize| chw.get(c * plane + p).copied().unwrap_or(0);
    let pixels = (0..plane)
        .map(|p| match channels {
            3 => Color32::from_rgb(at(0, p), at(1, p), at(2, p)),
            _ => {
                let v = at(0, p);
                Color32::from_rgb(v, v, v)
            }
        })
        .collect();
    ColorImage::new([width, height], pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_and_rgb_planes_become_pixels() {
        let gray = chw_to_image(1, 1, 2, &[0, 200]);
        assert_eq!(gray.size, [2, 1]);
        assert_eq!(gray.pixels[1], Color32::from_rgb(200, 200, 200));
        // R plane, G plane, B plane for a 1x2 image.
        let rgb = chw_to_image(3, 1, 2, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(rgb.pixels[0], Color32::from_rgb(1, 3, 5));
        assert_eq!(rgb.pixels[1], Color32::from_rgb(2, 4, 6));
        // Short input is padded with black rather than panicking.
        let short = chw_to_image(3, 1, 2, &[9]);
        assert_eq!(short.pixels[1], Color32::from_rgb(0, 0, 0));
    }
}
