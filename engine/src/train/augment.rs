//! Batched on-device augmentation: random resized crop, horizontal flip, colour jitter
//! and random grayscale, all as tensor ops over the whole batch so the device is
//! never starved by a per-image CPU pipeline.
//!
//! Differences from torchvision, on purpose: the crop box is sampled once and clamped
//! to the image instead of torchvision's ten rejection tries, and the four jitter ops run
//! in a fixed order (brightness, contrast, saturation, hue) rather than a random one.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Colour jitter strengths, as in torchvision's `ColorJitter`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Jitter {
    /// Brightness factor drawn from `[1-b, 1+b]`.
    pub brightness: f64,
    /// Contrast factor drawn from `[1-c, 1+c]`.
    pub contrast: f64,
    /// Saturation factor drawn from `[1-s, 1+s]`.
    pub saturation: f64,
    /// Hue shift drawn from `[-h, h]` turns (h ≤ 0.5).
    pub hue: f64,
    /// Probability that a sample is jittered at all.
    pub p: f64,
}

/// Which augmentations to apply, with their ranges.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AugmentConfig {
    /// Range of the crop area as a fraction of the image.
    pub crop_scale: (f64, f64),
    /// Range of the crop aspect ratio (width / height).
    pub crop_ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Colour jitter, if any (colour images only).
    pub jitter: Option<Jitter>,
    /// Probability of converting to grayscale (colour images only).
    pub grayscale_p: f64,
}

impl AugmentConfig {
    /// The SimCLR/MoCo recipe of the Alignment Calibration code: crop scale 0.1–1,
    /// flip 0.5, jitter (.4,.4,.4,.1) with p 0.8, grayscale 0.2.
    pub fn contrastive() -> Self {
        AugmentConfig {
            crop_scale: (0.1, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter: Some(Jitter {
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.4,
                hue: 0.1,
                p: 0.8,
            }),
            grayscale_p: 0.2,
        }
    }

    /// Crop + flip only: what supervised training and linear probing use.
    pub fn crop_flip() -> Self {
        AugmentConfig {
            crop_scale: (0.6, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter: None,
            grayscale_p: 0.0,
        }
    }

    /// Digits must not be mirrored: crop only.
    pub fn digits() -> Self {
        AugmentConfig {
            crop_scale: (0.7, 1.0),
            crop_ratio: (0.9, 1.1),
            flip_p: 0.0,
            jitter: None,
            grayscale_p: 0.0,
        }
    }

    /// Applies the augmentation to a float batch `[B, C, H, W]` with values in `[0, 1]`,
    /// on whatever device the batch is on.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let x = self.crop_flip_batch(x);
        let channels = x.size().get(1).copied().unwrap_or(1);
        if channels != 3 {
            return x;
        }
        let x = match &self.jitter {
            Some(j) => jitter(&x, j),
            None => x,
        };
        if self.grayscale_p > 0.0 {
            let pick = coin(&x, self.grayscale_p);
            gray(&x).expand_as(&x).where_self(&pick, &x)
        } else {
            x
        }
    }

    fn crop_flip_batch(&self, x: &Tensor) -> Tensor {
        let draw = self.draw_crop(x.size()[0], x.kind(), x.device());
        crop_flip_drawn(x, &draw)
    }

    /// The random numbers of the crop and flip for a batch of `b` images, drawn from
    /// libtorch's generator in the order [`AugmentConfig::apply`] draws them: the
    /// stacked trainer replays a model's draws with this, so a model trained in a
    /// stack sees the crops it would see alone.
    pub fn draw_crop(&self, b: i64, kind: Kind, dev: tch::Device) -> CropDraw {
        let uniform = |lo: f64, hi: f64| Tensor::rand([b], (kind, dev)) * (hi - lo) + lo;
        let area = uniform(self.crop_scale.0, self.crop_scale.1);
        let log_ratio = uniform(self.crop_ratio.0.ln(), self.crop_ratio.1.ln());
        let cx = Tensor::rand([b], (kind, dev));
        let cy = Tensor::rand([b], (kind, dev));
        let flip = Tensor::rand([b], (kind, dev)).lt(self.flip_p).to_kind(kind);
        CropDraw {
            area,
            ratio: log_ratio.exp(),
            cx,
            cy,
            flip,
        }
    }

    /// Whether [`AugmentConfig::apply`] on images with `channels` channels draws
    /// nothing but the crop and flip ([`AugmentConfig::draw_crop`]).
    pub fn draws_only_crop(&self, channels: i64) -> bool {
        channels != 3 || (self.jitter.is_none() && self.grayscale_p <= 0.0)
    }
}

/// One batch's crop and flip draws (each `[B]`): crop area (fraction of the image),
/// aspect ratio, centre draws in `[0, 1)`, and 1 where the image is mirrored.
#[derive(Debug)]
pub struct CropDraw {
    /// Crop area as a fraction of the image.
    pub area: Tensor,
    /// Width / height of the crop.
    pub ratio: Tensor,
    /// Uniform draw placing the centre horizontally.
    pub cx: Tensor,
    /// Uniform draw placing the centre vertically.
    pub cy: Tensor,
    /// 1 for a mirrored image, else 0.
    pub flip: Tensor,
}

impl CropDraw {
    /// Draws that leave `b` images as they are (full crop, no flip): padding for a
    /// stacked batch.
    pub fn identity(b: i64, kind: Kind, dev: tch::Device) -> CropDraw {
        let ones = Tensor::ones([b], (kind, dev));
        CropDraw {
            area: ones.copy(),
            ratio: ones.copy(),
            cx: ones.copy() * 0.5,
            cy: ones * 0.5,
            flip: Tensor::zeros([b], (kind, dev)),
        }
    }

    /// The draws of several batches, one after another.
    pub fn cat(parts: &[CropDraw]) -> CropDraw {
        let pick =
            |f: fn(&CropDraw) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        CropDraw {
            area: pick(|d| &d.area),
            ratio: pick(|d| &d.ratio),
            cx: pick(|d| &d.cx),
            cy: pick(|d| &d.cy),
            flip: pick(|d| &d.flip),
        }
    }
}

/// Crops and flips `x` (`[B, C, H, W]`) as `draw` says.
pub fn crop_flip_drawn(x: &Tensor, draw: &CropDraw) -> Tensor {
    let (kind, dev) = (x.kind(), x.device());
    let b = x.size()[0];
    // Width and height of the crop as fractions of the image side.
    let w = (&draw.area * &draw.ratio).sqrt().clamp_max(1.0);
    let h = (&draw.area / &draw.ratio).sqrt().clamp_max(1.0);
    // Centre in normalised [-1, 1] coordinates, kept inside the image.
    let cx = (&draw.cx * 2.0 - 1.0) * (1.0 - &w);
    let cy = (&draw.cy * 2.0 - 1.0) * (1.0 - &h);
    let flip = draw.flip.g_mul_scalar(-2.0) + 1.0;
    let zero = Tensor::zeros([b], (kind, dev));
    let theta = Tensor::stack(
        &[
            Tensor::stack(&[&w * &flip, zero.shallow_clone(), cx], 1),
            Tensor::stack(&[zero, h, cy], 1),
        ],
        1,
    );
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    // bilinear (0), zero padding (0), align_corners false: matches pixel centres.
    x.grid_sampler(&grid, 0, 0, false)
}

/// Per-sample Bernoulli(p) mask shaped `[B, 1, 1, 1]`.
fn coin(x: &Tensor, p: f64) -> Tensor {
    let b = x.size()[0];
    Tensor::rand([b, 1, 1, 1], (x.kind(), x.device())).lt(p)
}

/// Per-sample factor in `[1-s, 1+s]`, shaped `[B, 1, 1, 1]`.
fn factor(x: &Tensor, s: f64) -> Tensor {
    let b = x.size()[0];
    (Tensor::rand([b, 1, 1, 1], (x.kind(), x.device())) * 2.0 - 1.0) * s + 1.0
}

/// ITU-R 601 luma, `[B, 1, H, W]`.
fn gray(x: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114])
        .to_kind(x.kind())
        .to_device(x.device())
        .view([1, 3, 1, 1]);
    (x * w).sum_dim_intlist([1i64].as_slice(), true, x.kind())
}

fn jitter(x: &Tensor, j: &Jitter) -> Tensor {
    let mut y = (x * factor(x, j.brightness)).clamp(0.0, 1.0);
    let mean = gray(&y).mean_dim([1i64, 2, 3].as_slice(), true, y.kind());
    y = ((&y - &mean) * factor(x, j.contrast) + &mean).clamp(0.0, 1.0);
    let g = gray(&y);
    y = ((&y - &g) * factor(x, j.saturation) + &g).clamp(0.0, 1.0);
    if j.hue > 0.0 {
        y = hue_rotate(&y, j.hue).clamp(0.0, 1.0);
    }
    let pick = coin(x, j.p);
    y.where_self(&pick, x)
}

/// Rotates chroma in YIQ space by an angle drawn from `[-h, h]` turns per sample: a
/// linear stand-in for an HSV hue shift that stays a couple of batched matmuls.
fn hue_rotate(x: &Tensor, h: f64) -> Tensor {
    let (b, dev, kind) = (x.size()[0], x.device(), x.kind());
    let to_yiq = Tensor::from_slice(&[
        0.299f32, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312,
    ])
    .view([3, 3])
    .to_kind(kind)
    .to_device(dev);
    let to_rgb = to_yiq.inverse();
    let angle = (Tensor::rand([b], (kind, dev)) * 2.0 - 1.0) * (h * 2.0 * std::f64::consts::PI);
    let (c, s) = (angle.cos(), angle.sin());
    let one = Tensor::ones([b], (kind, dev));
    let zero = Tensor::zeros([b], (kind, dev));
    let rot =
        Tensor::stack(&[&one, &zero, &zero, &zero, &c, &(-&s), &zero, &s, &c], 1).view([b, 3, 3]);
    // m = to_rgb · rot · to_yiq, per sample.
    let m = to_rgb.matmul(&rot).matmul(&to_yiq);
    let size = x.size();
    let flat = x.view([b, 3, -1]);
    m.bmm(&flat).view(size.as_slice())
}

/// Converts a `u8` image batch to floats in `[0, 1]`.
pub fn to_unit_float(x: &Tensor) -> Tensor {
    if x.kind() == Kind::Uint8 {
        x.to_kind(Kind::Float) / 255.0
    } else {
        x.shallow_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        tch::manual_seed(0);
        Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu))
    }

    fn exact(flip_p: f64) -> AugmentConfig {
        AugmentConfig {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip_p,
            jitter: None,
            grayscale_p: 0.0,
        }
    }

    #[test]
    fn full_crop_without_flip_is_identity() {
        let x = batch();
        let y = exact(0.0).apply(&x);
        assert!(y.allclose(&x, 1e-5, 1e-5, false));
    }

    #[test]
    fn certain_flip_mirrors_the_width() {
        let x = batch();
        let y = exact(1.0).apply(&x);
        assert!(y.allclose(&x.flip([3]), 1e-5, 1e-5, false));
    }

    #[test]
    fn contrastive_recipe_keeps_shape_range_and_is_seeded() {
        let x = batch();
        let cfg = AugmentConfig::contrastive();
        tch::manual_seed(7);
        let a = cfg.apply(&x);
        tch::manual_seed(7);
        let b = cfg.apply(&x);
        assert_eq!(a.size(), x.size());
        assert!(a.equal(&b), "same seed, same augmentation");
        assert!(a.min().double_value(&[]) >= 0.0);
        assert!(a.max().double_value(&[]) <= 1.0);
        assert!(!a.allclose(&x, 1e-3, 1e-3, false), "it changed the images");
    }

    #[test]
    fn certain_grayscale_makes_channels_equal() {
        let x = batch();
        let cfg = AugmentConfig {
            grayscale_p: 1.0,
            ..exact(0.0)
        };
        let y = cfg.apply(&x);
        assert!(y.select(1, 0).allclose(&y.select(1, 2), 1e-6, 1e-6, false));
    }

    #[test]
    fn zero_hue_rotation_is_identity() {
        let x = batch();
        let y = hue_rotate(&x, 0.0);
        assert!(y.allclose(&x, 1e-4, 1e-4, false));
    }
}
