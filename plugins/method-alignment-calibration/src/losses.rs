//! The terms of Alignment Calibration's objective (eq. 5 of the paper),
//! `L_retain + ε·L_unlearn` with
//! `L_unlearn = −α·E_neg s(x,y) + β·E_pos s(x,y) + γ·E_x log Σ_y exp s(x,y)`,
//! where `s` is the cosine similarity of two embeddings over the temperature, as
//! pure functions of embeddings, for the two encoders the paper unlearns:
//!
//! * SimCLR ([`simclr_terms`]): one NT-Xent similarity matrix over the `2N` rows
//!   `[view0 of the N samples; view1 of the N samples]` of a batch mixing retain
//!   and forget samples. A per-sample mask over the `N` samples becomes a per-row
//!   mask by *tiling* it (`[m; m]`): the public code repeated it elementwise
//!   (`[m0, m0, m1, m1, …]`), which marks the wrong rows as forget rows.
//! * MoCo ([`moco_terms`]): queries `q` against momentum-encoder keys `k` and a
//!   queue of negatives; a forget row's "positive" key is the key of a *different*
//!   forget sample, which is how the public code forms its negative pairs.
//!
//! `log Σ` (the NT-Xent / InfoNCE denominator) stands for the paper's
//! `log E`: they differ by a constant (the log of the number of terms), so the
//! gradients are the same.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Device, Kind, Tensor};

/// Rows scaled to unit L2 norm.
pub fn normalize(z: &Tensor) -> Result<Tensor, PluginError> {
    let norm = z
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(z.f_div(&norm)?)
}

/// The coefficients of eq. (5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// α, negative alignment calibration (raises the similarity of different
    /// forget samples).
    pub alpha: f64,
    /// β, positive alignment calibration (lowers the similarity of two views of a
    /// forget sample: the forgetting score).
    pub beta: f64,
    /// γ, performance preserving (the InfoNCE denominator on forget rows).
    pub gamma: f64,
    /// ε, weight of `L_unlearn` (the paper: `|D_u| / |D_r|`).
    pub epsilon: f64,
}

/// The terms on one batch. Scalars; `neg`, `pos` and `lse` are means over the
/// forget rows (or pairs), `retain` over the retain rows.
#[derive(Debug)]
pub struct Terms {
    /// InfoNCE on the retain rows.
    pub retain: Tensor,
    /// `E_neg s`: mean similarity of views of different forget samples.
    pub neg: Tensor,
    /// `E_pos s`: mean similarity of two views of one forget sample.
    pub pos: Tensor,
    /// `E log Σ exp s` over forget rows.
    pub lse: Tensor,
}

impl Terms {
    /// `−α·neg + β·pos + γ·lse`.
    pub fn unlearn(&self, c: &Coefficients) -> Result<Tensor, PluginError> {
        Ok(self
            .neg
            .f_mul_scalar(-c.alpha)?
            .f_add(&self.pos.f_mul_scalar(c.beta)?)?
            .f_add(&self.lse.f_mul_scalar(c.gamma)?)?)
    }

    /// `retain + ε·unlearn`.
    pub fn total(&self, c: &Coefficients) -> Result<Tensor, PluginError> {
        Ok(self
            .retain
            .f_add(&self.unlearn(c)?.f_mul_scalar(c.epsilon)?)?)
    }
}

/// Mean of `values` where `mask` is true, 0 where nothing is selected.
fn masked_mean(values: &Tensor, mask: &Tensor) -> Result<Tensor, PluginError> {
    let m = mask.f_to_kind(values.kind())?;
    let count = m.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
    Ok(values.f_mul(&m)?.f_sum(Kind::Float)?.f_div(&count)?)
}

fn rows(t: &Tensor) -> i64 {
    t.size().first().copied().unwrap_or(0)
}

/// A per-sample mask `[N]` as the mask of the `2N` rows `[view0; view1]`: tiled,
/// so row `i` and row `i + N` (the two views of sample `i`) share sample `i`'s
/// entry.
pub fn rows_of_two_views(per_sample: &Tensor) -> Result<Tensor, PluginError> {
    Ok(Tensor::f_cat(&[per_sample, per_sample], 0)?)
}

/// SimCLR terms of a batch: `z1`, `z2` (`[N, D]`) are the projections of the two
/// views of its `N` samples, `forget` (`[N]`, bool) marks the forget samples.
pub fn simclr_terms(
    z1: &Tensor,
    z2: &Tensor,
    forget: &Tensor,
    temperature: f64,
) -> Result<Terms, PluginError> {
    let n = rows(z1);
    let device = z1.device();
    let z = normalize(&Tensor::f_cat(&[z1, z2], 0)?)?;
    let s = z.f_matmul(&z.f_tr()?)?.f_div_scalar(temperature)?;
    let eye = Tensor::f_eye(2 * n, (Kind::Bool, device))?;
    let idx = Tensor::f_arange(n, (Kind::Int64, device))?;
    // Row a's positive is a + N (mod 2N): the other view of the same sample.
    let partner = Tensor::f_cat(&[&idx.f_add_scalar(n)?, &idx], 0)?;
    let pos_sim = s
        .f_gather(1, &partner.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    let lse = s
        .f_masked_fill(&eye, f64::NEG_INFINITY)?
        .f_logsumexp([1i64].as_slice(), false)?;
    let per_row_nce = lse.f_sub(&pos_sim)?;
    let forget_rows = rows_of_two_views(&forget.f_to_kind(Kind::Bool)?)?;
    let retain_rows = forget_rows.f_logical_not()?;
    let sample = rows_of_two_views(&idx)?;
    let different = sample
        .f_unsqueeze(1)?
        .f_ne_tensor(&sample.f_unsqueeze(0)?)?;
    let neg_pairs = forget_rows
        .f_unsqueeze(1)?
        .f_logical_and(&forget_rows.f_unsqueeze(0)?)?
        .f_logical_and(&different)?;
    Ok(Terms {
        retain: masked_mean(&per_row_nce, &retain_rows)?,
        neg: masked_mean(&s, &neg_pairs)?,
        pos: masked_mean(&pos_sim, &forget_rows)?,
        lse: masked_mean(&lse, &forget_rows)?,
    })
}

/// MoCo terms of a batch: queries `q` and keys `k` (`[N, D]`, keys from the
/// momentum encoder on the other view), `forget` (`[N]`, bool) marking forget
/// samples, `queue` (`[K, D]`) the negatives. A forget query's negative pair is the
/// key of the next forget sample in the batch (a derangement of the forget rows;
/// with a single forget sample there is no pair and `neg` is 0).
pub fn moco_terms(
    q: &Tensor,
    k: &Tensor,
    forget: &Tensor,
    queue: &Tensor,
    temperature: f64,
) -> Result<Terms, PluginError> {
    let q = normalize(q)?;
    let k = normalize(k)?;
    let queue = normalize(queue)?;
    let forget = forget.f_to_kind(Kind::Bool)?;
    let dot = |a: &Tensor, b: &Tensor| -> Result<Tensor, PluginError> {
        Ok(a.f_mul(b)?
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
            .f_div_scalar(temperature)?)
    };
    let against_queue = q.f_matmul(&queue.f_tr()?)?.f_div_scalar(temperature)?;
    let nce_lse = |first: &Tensor| -> Result<Tensor, PluginError> {
        Ok(Tensor::f_cat(&[&first.f_unsqueeze(1)?, &against_queue], 1)?
            .f_logsumexp([1i64].as_slice(), false)?)
    };
    let pos = dot(&q, &k)?;
    let retain_nce = nce_lse(&pos)?.f_sub(&pos)?;
    let retain_rows = forget.f_logical_not()?;

    let forget_idx = forget.f_nonzero()?.f_squeeze_dim(1)?;
    let n_f = rows(&forget_idx);
    // Forget row i's negative key: the key of forget row i+1 (mod n_f), placed
    // back at row i.
    let shifted = forget_idx.f_roll([-1i64].as_slice(), [0i64].as_slice())?;
    let other = k.f_index_copy(0, &forget_idx, &k.f_index_select(0, &shifted)?)?;
    let neg = dot(&q, &other)?;
    let forget_lse = nce_lse(&neg)?;
    let pairs = if n_f >= 2 {
        forget.shallow_clone()
    } else {
        Tensor::f_zeros_like(&forget)?
    };
    Ok(Terms {
        retain: masked_mean(&retain_nce, &retain_rows)?,
        neg: masked_mean(&neg, &pairs)?,
        pos: masked_mean(&pos, &forget)?,
        lse: masked_mean(&forget_lse, &forget)?,
    })
}

/// A per-sample forget mask for a batch of `retain` retain samples followed by
/// `forget` forget samples.
pub fn forget_mask(retain: i64, forget: i64, device: Device) -> Result<Tensor, PluginError> {
    Ok(Tensor::f_cat(
        &[
            Tensor::f_zeros([retain], (Kind::Bool, device))?,
            Tensor::f_ones([forget], (Kind::Bool, device))?,
        ],
        0,
    )?)
}

#[cfg(test)]
mod tests;
