//! The encoder-level audit of Alignment Calibration (Wang et al., 2024, eq. 2
//! and §4.2), comparing the model before (`g`) and after (`𝐠`) unlearning on
//! the forget set, with `s` the cosine similarity of backbone features:
//!
//! * **forgetting score** `FS = E s(x^g, y^g) − E s(x^𝐠, y^𝐠)` over positive
//!   pairs `(x, y)`, two augmented views of one forget sample; per sample and
//!   averaged. Both models see the *same* views, so the difference measures the
//!   models, not the augmentation draw;
//! * **Alignment Matrix** `AM[i][j] = s(x_i, y_j)` between view `x` of sample `i`
//!   and view `y` of sample `j`, before and after, and the **Alignment Gap
//!   Matrix** `AGM = AM_before − AM_after`. Its diagonal is the per-sample
//!   forgetting score of that view pair; its off-diagonal entries (negative
//!   pairs) give the *negative alignment* mean and standard deviation.
//!
//! The heatmaps are the first `matrix_samples` of a seeded shuffle of the forget
//! set (the paper shows 8); the statistics use up to `max_samples` of them.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::EvalError;
use crate::models::Model;
use crate::train::augment::{AugmentConfig, to_unit_float};

/// Settings of [`alignment_audit`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlignmentConfig {
    /// Augmented view pairs per sample for the forgetting score.
    pub pairs: usize,
    /// Samples in the saved heatmap matrices.
    pub matrix_samples: usize,
    /// Samples in the full AM/AGM behind the negative-alignment statistics.
    pub max_samples: usize,
    /// Seeds the sample choice and the augmentations.
    pub seed: u64,
    /// The positive-pair augmentation (the encoder's training recipe).
    pub augment: AugmentConfig,
    /// Images per forward pass.
    pub batch_size: i64,
}

impl Default for AlignmentConfig {
    fn default() -> Self {
        AlignmentConfig {
            pairs: 5,
            matrix_samples: 8,
            max_samples: 2000,
            seed: 0,
            augment: AugmentConfig::contrastive(),
            batch_size: 256,
        }
    }
}

/// Mean and (population) standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
}

impl Stat {
    fn of(values: &[f64]) -> Stat {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Stat {
            mean,
            std: var.sqrt(),
        }
    }
}

/// The audit's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlignmentReport {
    /// Forget samples scored for FS.
    pub samples: usize,
    /// View pairs per sample.
    pub pairs: usize,
    /// Forgetting score over samples (mean, std of per-sample FS).
    pub forgetting_score: Stat,
    /// Positive-pair similarity before unlearning.
    pub positive_before: Stat,
    /// Positive-pair similarity after.
    pub positive_after: Stat,
    /// Samples in the full alignment matrices.
    pub matrix_size: usize,
    /// Off-diagonal AGM entries: how much negative pairs' similarity dropped.
    pub negative_alignment: Stat,
    /// Off-diagonal AM entries before.
    pub negative_before: Stat,
    /// Off-diagonal AM entries after.
    pub negative_after: Stat,
    /// Stable sample indices of the heatmap rows/columns, in order.
    pub heatmap_indices: Vec<i64>,
}

/// The tensors saved for plots.
#[derive(Debug)]
pub struct AlignmentTensors {
    /// Per-sample FS, in forget-set order.
    pub fs_per_sample: Tensor,
    /// AM before, heatmap samples.
    pub am_before: Tensor,
    /// AM after.
    pub am_after: Tensor,
    /// AM before − AM after.
    pub agm: Tensor,
    /// Stable indices of the heatmap samples.
    pub heatmap_indices: Tensor,
}

/// Normalised backbone features of float images, batch by batch.
fn features(model: &Model, x: &Tensor, batch: i64) -> Result<Tensor, EvalError> {
    let n = x.size().first().copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let f = model
            .features(&x.f_narrow(0, start, len)?, false)
            .f_flatten(1, -1)?
            .f_to_kind(Kind::Double)?;
        let norm = f
            .f_norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)?
            .f_clamp_min(1e-12)?;
        out.push(f.f_div(&norm)?);
        start += len;
    }
    Ok(Tensor::f_cat(&out, 0)?)
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>, EvalError> {
    Ok(Vec::<f64>::try_from(
        t.f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?
            .f_flatten(0, -1)?,
    )?)
}

/// Off-diagonal entries of a square matrix.
fn off_diagonal(m: &Tensor) -> Result<Vec<f64>, EvalError> {
    let n = m.size().first().copied().unwrap_or(0) as usize;
    let all = to_vec(m)?;
    Ok((0..n * n)
        .filter(|k| k / n != k % n)
        .map(|k| all[k])
        .collect())
}

/// Audits `before` → `after` on `images` (u8 `[N, C, H, W]`, the forget set in
/// order, with their stable `indices`).
pub fn alignment_audit(
    before: &Model,
    after: &Model,
    images: &Tensor,
    indices: &[i64],
    cfg: &AlignmentConfig,
    device: Device,
) -> Result<(AlignmentReport, AlignmentTensors), EvalError> {
    let n = images.size().first().copied().unwrap_or(0);
    if n == 0 || indices.len() as i64 != n {
        return Err(EvalError::Invalid(format!(
            "alignment needs the forget images and their indices ({n} images, {} indices)",
            indices.len()
        )));
    }
    let _guard = tch::no_grad_guard();
    tch::manual_seed(i64::from_ne_bytes(cfg.seed.to_ne_bytes()));
    let x = to_unit_float(&images.f_to_device(device)?);

    // Forgetting score: the same view pairs through both models.
    let pairs = cfg.pairs.max(1);
    let mut sim_b = Tensor::f_zeros([n], (Kind::Double, device))?;
    let mut sim_a = Tensor::f_zeros([n], (Kind::Double, device))?;
    for _ in 0..pairs {
        let (v1, v2) = (cfg.augment.apply(&x), cfg.augment.apply(&x));
        let cos = |m: &Model| -> Result<Tensor, EvalError> {
            Ok(features(m, &v1, cfg.batch_size)?
                .f_mul(&features(m, &v2, cfg.batch_size)?)?
                .f_sum_dim_intlist([-1i64].as_slice(), false, Kind::Double)?)
        };
        sim_b = sim_b.f_add(&cos(before)?)?;
        sim_a = sim_a.f_add(&cos(after)?)?;
    }
    let sim_b = sim_b.f_div_scalar(pairs as f64)?;
    let sim_a = sim_a.f_div_scalar(pairs as f64)?;
    let fs = sim_b.f_sub(&sim_a)?;

    // Alignment matrices over a seeded shuffle of the forget set.
    let size = (cfg.max_samples.max(cfg.matrix_samples).max(1) as i64).min(n);
    let mut order: Vec<i64> = (0..n).collect();
    crate::data::SplitMix64::new(cfg.seed).shuffle(&mut order);
    order.truncate(size as usize);
    let pick = Tensor::f_from_slice(&order)?.f_to_device(device)?;
    let xs = x.f_index_select(0, &pick)?;
    let (v1, v2) = (cfg.augment.apply(&xs), cfg.augment.apply(&xs));
    let am = |m: &Model| -> Result<Tensor, EvalError> {
        Ok(features(m, &v1, cfg.batch_size)?
            .f_matmul(&features(m, &v2, cfg.batch_size)?.f_transpose(0, 1)?)?)
    };
    let (am_b, am_a) = (am(before)?, am(after)?);
    let agm = am_b.f_sub(&am_a)?;
    let k = (cfg.matrix_samples as i64).min(size);
    let corner = |m: &Tensor| -> Result<Tensor, EvalError> {
        Ok(m.f_narrow(0, 0, k)?
            .f_narrow(1, 0, k)?
            .f_to_kind(Kind::Float)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?)
    };
    let heatmap_indices: Vec<i64> = order[..k as usize]
        .iter()
        .map(|&p| indices[p as usize])
        .collect();

    let report = AlignmentReport {
        samples: n as usize,
        pairs,
        forgetting_score: Stat::of(&to_vec(&fs)?),
        positive_before: Stat::of(&to_vec(&sim_b)?),
        positive_after: Stat::of(&to_vec(&sim_a)?),
        matrix_size: size as usize,
        negative_alignment: Stat::of(&off_diagonal(&agm)?),
        negative_before: Stat::of(&off_diagonal(&am_b)?),
        negative_after: Stat::of(&off_diagonal(&am_a)?),
        heatmap_indices: heatmap_indices.clone(),
    };
    let tensors = AlignmentTensors {
        fs_per_sample: fs.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?,
        am_before: corner(&am_b)?,
        am_after: corner(&am_a)?,
        agm: corner(&agm)?,
        heatmap_indices: Tensor::f_from_slice(&heatmap_indices)?,
    };
    Ok((report, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ArchConfig, BackboneConfig, HeadConfig};

    fn mlp(seed: i64) -> (tch::nn::VarStore, Model) {
        tch::manual_seed(seed);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let arch = ArchConfig {
            backbone: BackboneConfig::Mlp {
                input_dim: 16,
                hidden: vec![12],
            },
            head: HeadConfig::None,
        };
        let m = Model::new(&vs.root(), &arch).unwrap();
        (vs, m)
    }

    #[test]
    fn a_model_against_itself_has_zero_gap_and_am_is_a_cosine_matrix() {
        let (_vs, m) = mlp(1);
        let (_vs2, other) = mlp(2);
        tch::manual_seed(3);
        let images =
            Tensor::randint(256, [10, 1, 4, 4], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
        let indices: Vec<i64> = (100..110).collect();
        let cfg = AlignmentConfig {
            pairs: 2,
            matrix_samples: 4,
            max_samples: 10,
            augment: AugmentConfig::digits(),
            ..AlignmentConfig::default()
        };
        let (same, t) = alignment_audit(&m, &m, &images, &indices, &cfg, Device::Cpu).unwrap();
        assert_eq!(same.forgetting_score.mean, 0.0);
        assert_eq!(same.negative_alignment.mean, 0.0);
        assert_eq!(t.agm.abs().max().double_value(&[]), 0.0);
        assert_eq!(t.am_before.size(), [4, 4]);
        assert!(t.am_before.abs().max().double_value(&[]) <= 1.0 + 1e-6);
        assert!(same.heatmap_indices.iter().all(|i| (100..110).contains(i)));
        let (diff, t) = alignment_audit(&m, &other, &images, &indices, &cfg, Device::Cpu).unwrap();
        assert!(diff.forgetting_score.mean != 0.0);
        // AGM is AM_before − AM_after, entry by entry.
        let gap = (&t.am_before - &t.am_after - &t.agm)
            .abs()
            .max()
            .double_value(&[]);
        assert!(gap < 1e-6, "{gap}");
        // Same seed, same numbers.
        let (again, _) = alignment_audit(&m, &other, &images, &indices, &cfg, Device::Cpu).unwrap();
        assert_eq!(again, diff);
    }
}
