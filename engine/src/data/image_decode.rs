//! Decoding PNG/JPEG files to CHW u8 pixels, the one place this happens so that an
//! ImageFolder dataset and a forget-set photo of the same picture hash identically.

use super::error::DataError;
use std::path::Path;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// A decoded image: CHW u8, with alpha dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` bytes, channel-major.
    pub pixels: Vec<u8>,
}

/// Whether the file name has an image extension Lethe decodes (`png`, `jpg`, `jpeg`,
/// any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

/// Decodes a PNG or JPEG (chosen by content, not extension). Palette and 16-bit PNGs
/// become 8-bit; an alpha channel is dropped, because models take 1 or 3 channels and
/// compositing onto a background would invent pixel values.
pub fn decode_image_file(path: &Path) -> Result<DecodedImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(b"\x89PNG") {
        decode_png(path, &bytes)
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        decode_jpeg(path, &bytes)
    } else {
        Err(DataError::Image {
            path: path.to_path_buf(),
            reason: "neither a PNG nor a JPEG file".into(),
        })
    }
}

fn image_error(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Image {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Most bytes a decoded image may take (a 12,000 x 12,000 RGB photo is 432 MB).
const MAX_DECODED_BYTES: usize = 512 << 20;

/// Largest ratio of decoded to encoded size. Neither format can do better than
/// about 1,032:1 (deflate's limit; a baseline JPEG needs a few bits per 8 x 8
/// block), so a header promising more describes pixels the file cannot hold.
const MAX_DECODE_RATIO: usize = 1100;

/// Refuses an image whose header asks for an output buffer that is huge or out of
/// proportion to the file, before the buffer is allocated.
fn check_decoded_size(path: &Path, decoded: usize, encoded: usize) -> Result<(), DataError> {
    let cap = encoded
        .saturating_mul(MAX_DECODE_RATIO)
        .saturating_add(1 << 20)
        .min(MAX_DECODED_BYTES);
    if decoded > cap {
        return Err(image_error(
            path,
            format!(
                "the header's dimensions need {decoded} bytes decoded, more than the {cap} a {encoded}-byte file can hold (limit {} MiB)",
                MAX_DECODED_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<DecodedImage, DataError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| image_error(path, e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| image_error(path, "image too large"))?;
    check_decoded_size(path, size, bytes.len())?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| image_error(path, e))?;
    let (in_channels, keep) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        // normalize_to_color8 expands palettes, so this is only reachable on a decoder bug.
        png::ColorType::Indexed => return Err(image_error(path, "unexpanded palette")),
    };
    let (h, w) = (info.height as usize, info.width as usize);
    let mut hwc = Vec::with_capacity(h * w * in_channels);
    for row in buf[..info.buffer_size()].chunks_exact(info.line_size) {
        hwc.extend_from_slice(&row[..w * in_channels]);
    }
    Ok(to_chw(&hwc, h, w, in_channels, keep))
}

fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<DecodedImage, DataError> {
    let mut probe = zune_jpeg::JpegDecoder::new(ZCursor::new(bytes));
    probe.decode_headers().map_err(|e| image_error(path, e))?;
    let (w, h) = probe
        .dimensions()
        .ok_or_else(|| image_error(path, "no image dimensions"))?;
    // Three bytes per pixel is the most the decoder produces (RGB), checked before it
    // allocates its output from the header's dimensions.
    check_decoded_size(path, w.saturating_mul(h).saturating_mul(3), bytes.len())?;
    let gray = matches!(probe.input_colorspace(), Some(ColorSpace::Luma));
    let out = if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let options = DecoderOptions::default().jpeg_set_out_colorspace(out);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let hwc = decoder.decode().map_err(|e| image_error(path, e))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| image_error(path, "no image dimensions"))?;
    let channels = if gray { 1 } else { 3 };
    if hwc.len() != w * h * channels {
        return Err(image_error(path, "decoder returned a short image"));
    }
    Ok(to_chw(&hwc, h, w, channels, channels))
}

/// Interleaved HWC with `in_channels` → planar CHW keeping the first `keep` channels.
fn to_chw(hwc: &[u8], h: usize, w: usize, in_channels: usize, keep: usize) -> DecodedImage {
    let mut pixels = vec![0; keep * h * w];
    for c in 0..keep {
        let plane = &mut pixels[c * h * w..(c + 1) * h * w];
        for (p, dst) in plane.iter_mut().enumerate() {
            *dst = hwc[p * in_channels + c];
        }
    }
    DecodedImage {
        channels: keep,
        height: h,
        width: w,
        pixels,
    }
}

impl DecodedImage {
    /// Converts to `channels` (1 or 3): gray → RGB repeats the plane; RGB → gray uses
    /// integer ITU-R BT.601 luma, which maps a gray pixel (v, v, v) back to exactly v, so a
    /// grayscale sample saved as RGB still matches its hash.
    pub fn into_channels(self, channels: usize) -> DecodedImage {
        let plane = self.height * self.width;
        let pixels = match (self.channels, channels) {
            (1, 3) => self.pixels.repeat(3),
            (3, 1) => (0..plane)
                .map(|p| {
                    let r = u32::from(self.pixels[p]);
                    let g = u32::from(self.pixels[plane + p]);
                    let b = u32::from(self.pixels[2 * plane + p]);
                    ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8
                })
                .collect(),
            _ => return self,
        };
        DecodedImage {
            channels,
            pixels,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    }

    #[test]
    fn a_png_header_claiming_huge_dimensions_is_refused_before_allocating() {
        // 100,000 x 100,000 RGBA (40 GB decoded) in a file of under 100 bytes.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", b"\x78\x9c\x63\x00\x00\x00\x01\x00\x01");
        chunk(&mut png, b"IEND", b"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("photo.png");
        std::fs::write(&path, &png).unwrap();
        let start = std::time::Instant::now();
        let e = decode_image_file(&path).unwrap_err().to_string();
        assert!(start.elapsed().as_secs() < 2);
        assert!(e.contains("photo.png") && e.contains("dimensions"), "{e}");
    }
}
