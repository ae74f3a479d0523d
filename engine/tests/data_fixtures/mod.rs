//! Writers for small dataset fixtures shared by the `data_*` tests. PNG/JPEG are written
//! with Rust encoders; npz and safetensors with the project venv's Python (numpy,
//! safetensors) so the loaders are checked against an independent writer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic, distinct pixels for sample `i` of a `c×h×w` dataset.
pub fn pixels(i: usize, c: usize, h: usize, w: usize) -> Vec<u8> {
    (0..c * h * w)
        .map(|p| ((i * 37 + p * 11 + (p * p) % 7) % 256) as u8)
        .collect()
}

/// Writes an IDX file of unsigned bytes.
pub fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// Writes an MNIST-style pair of `n` 4×5 images with labels `i % 3`; returns the paths.
pub fn write_idx_pair(dir: &Path, prefix: &str, n: usize) -> (PathBuf, PathBuf) {
    let images = dir.join(format!("{prefix}-images-idx3-ubyte"));
    let labels = dir.join(format!("{prefix}-labels-idx1-ubyte"));
    let data: Vec<u8> = (0..n).flat_map(|i| pixels(i, 1, 4, 5)).collect();
    write_idx(&images, &[n as u32, 4, 5], &data);
    let l: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    write_idx(&labels, &[n as u32], &l);
    (images, labels)
}

/// CIFAR records: `label_bytes` per record (1 for CIFAR-10, 2 for CIFAR-100).
pub fn cifar_bytes(labels: &[(u8, u8)], cifar100: bool, offset: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(coarse, fine)) in labels.iter().enumerate() {
        if cifar100 {
            out.push(coarse);
        }
        out.push(fine);
        out.extend(pixels(offset + i, 3, 32, 32));
    }
    out
}

/// Writes a PNG of CHW pixels with 1 or 3 channels.
pub fn write_png(path: &Path, chw: &[u8], c: usize, h: usize, w: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(if c == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&chw_to_hwc(chw, c, h, w)).unwrap();
}

/// Writes an RGBA PNG whose RGB part is `chw` and whose alpha varies.
pub fn write_png_rgba(path: &Path, chw: &[u8], h: usize, w: usize) {
    let hwc = chw_to_hwc(chw, 3, h, w);
    let rgba: Vec<u8> = hwc
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(p, px)| [px[0], px[1], px[2], (p * 17 % 256) as u8])
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&rgba).unwrap();
}

/// Writes a JPEG (quality 100) of CHW pixels with 1 or 3 channels.
pub fn write_jpeg(path: &Path, chw: &[u8], c: usize, h: usize, w: usize) {
    let enc = jpeg_encoder::Encoder::new_file(path, 100).unwrap();
    let color = if c == 1 {
        jpeg_encoder::ColorType::Luma
    } else {
        jpeg_encoder::ColorType::Rgb
    };
    enc.encode(&chw_to_hwc(chw, c, h, w), w as u16, h as u16, color)
        .unwrap();
}

pub fn chw_to_hwc(chw: &[u8], c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = vec![0; c * h * w];
    for ch in 0..c {
        for p in 0..h * w {
            out[p * c + ch] = chw[ch * h * w + p];
        }
    }
    out
}

/// The project venv's Python.
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// Runs a Python snippet with `args` as `sys.argv[1:]` and returns its stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run the venv python (installer/setup.sh creates .venv)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The same deterministic pixels as [`pixels`], built in numpy: `x[i]` is sample `i`.
pub const NUMPY_PIXELS: &str = r#"
import numpy as np
def make_x(n, shape):
    size = int(np.prod(shape))
    p = np.arange(size)
    return np.stack([((i * 37 + p * 11 + (p * p) % 7) % 256).astype(np.uint8).reshape(shape) for i in range(n)])
"#;
