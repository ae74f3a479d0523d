//! The terms of Alignment Calibration's objective, as pure functions of
//! embeddings, and the two readings of how they combine ([`Formulation`]):
//!
//! * the paper's eq. (5), `L_retain + ε·L_unlearn` with
//!   `L_unlearn = −α·E_neg s(x,y) + β·E_pos s(x,y) + γ·E_x log Σ_y exp s(x,y)`,
//!   where `s` is the cosine similarity over the temperature and ε = |D_u|/|D_r|;
//! * the code that produced the paper's numbers, which instead takes the
//!   α-weighted mean of the per-row InfoNCE over the batch, a forget row's key
//!   being a view of a *different* forget sample, and adds β·|D_u|/(|D_r|+|D_u|)
//!   times the mean raw cosine of a forget sample's two views.
//!
//! For the two encoders the paper unlearns:
//!
//! * SimCLR ([`simclr_terms`]): one NT-Xent similarity matrix over the `2N` rows
//!   `[view0 of the N samples; view1 of the N samples]` of a batch mixing retain
//!   and forget samples. A per-sample mask over the `N` samples becomes a per-row
//!   mask by *tiling* it (`[m; m]`): the public code repeated it elementwise
//!   (`[m0, m0, m1, m1, …]`), which marks the wrong rows as forget rows.
//! * MoCo ([`moco_terms`]): queries `q` against momentum-encoder keys `k` and a
//!   queue of negatives.
//!
//! In both, a forget sample's negative partner is the other view (SimCLR) or key
//! (MoCo) of the next forget sample in the batch. The reference drew it from the
//! whole forget set through a third augmented view; within the batch the same
//! two forward passes serve both pairs.
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

/// Which reading of the objective a run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formulation {
    /// The code behind the paper's numbers:
    /// `(Σ_retain l + α·Σ_forget l)/(N_r + α·N_u) + β·ρ·mean_forget cos(view0, view1)`
    /// with `l` the per-row InfoNCE (a forget row against its negative partner)
    /// and `ρ = |D_u|/(|D_r|+|D_u|)`. γ and ε do not enter (γ is tied to α).
    Reference,
    /// Eq. (5) as printed: `retain + ε·(−α·neg + β·pos + γ·lse)`, β on cos/τ.
    Paper,
}

impl Formulation {
    /// The name the `formulation` parameter and the summary use.
    pub fn name(self) -> &'static str {
        match self {
            Formulation::Reference => "reference",
            Formulation::Paper => "paper",
        }
    }
}

/// The coefficients of either reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Which reading.
    pub formulation: Formulation,
    /// α. Paper: weight of `−E_neg s`. Reference: weight of every forget row's
    /// InfoNCE in the batch mean (the paper's α and γ together).
    pub alpha: f64,
    /// β. Paper: weight of `E_pos s` (cosine over the temperature) inside
    /// `ε·L_unlearn`. Reference: `β·ρ` multiplies the raw cosine.
    pub beta: f64,
    /// γ, performance preserving (paper only).
    pub gamma: f64,
    /// ε, weight of `L_unlearn` (paper only; the paper: `|D_u| / |D_r|`).
    pub epsilon: f64,
    /// ρ = `|D_u| / (|D_r| + |D_u|)`, β's scale in the reference reading.
    pub forget_share: f64,
}

/// The terms on one batch. Scalars; `neg`, `partner`, `pos` and `lse` are means
/// over the forget rows (or pairs), `retain` over the retain rows.
#[derive(Debug)]
pub struct Terms {
    /// InfoNCE on the retain rows.
    pub retain: Tensor,
    /// `E_neg s`: mean similarity of views of different forget samples.
    pub neg: Tensor,
    /// Mean similarity of a forget row and its negative partner (0 with fewer
    /// than two forget samples): the positive logit of the reference's forget
    /// rows. For MoCo the same as `neg`.
    pub partner: Tensor,
    /// `E_pos s`: mean similarity of two views of one forget sample.
    pub pos: Tensor,
    /// `E log Σ exp s` over forget rows.
    pub lse: Tensor,
    /// Retain samples in the batch.
    pub retain_samples: i64,
    /// Forget samples in the batch.
    pub forget_samples: i64,
    /// The temperature `s` was divided by.
    pub temperature: f64,
}

impl Terms {
    /// What the forget rows contribute, before the reading's weighting. Paper:
    /// `−α·neg + β·pos + γ·lse`. Reference: the forget rows' InfoNCE against
    /// their negative partners, `lse − partner`.
    pub fn unlearn(&self, c: &Coefficients) -> Result<Tensor, PluginError> {
        Ok(match c.formulation {
            Formulation::Paper => self
                .neg
                .f_mul_scalar(-c.alpha)?
                .f_add(&self.pos.f_mul_scalar(c.beta)?)?
                .f_add(&self.lse.f_mul_scalar(c.gamma)?)?,
            Formulation::Reference => self.lse.f_sub(&self.partner)?,
        })
    }

    /// The loss to minimise.
    pub fn total(&self, c: &Coefficients) -> Result<Tensor, PluginError> {
        let unlearn = self.unlearn(c)?;
        match c.formulation {
            Formulation::Paper => Ok(self.retain.f_add(&unlearn.f_mul_scalar(c.epsilon)?)?),
            Formulation::Reference => {
                let (n_r, n_u) = (self.retain_samples as f64, self.forget_samples as f64);
                // Rows are per sample (MoCo) or two per sample (SimCLR): the
                // ratio, all the weighted mean needs, is the same.
                let weight = n_r + c.alpha * n_u;
                let nce = if weight > 0.0 {
                    self.retain
                        .f_mul_scalar(n_r / weight)?
                        .f_add(&unlearn.f_mul_scalar(c.alpha * n_u / weight)?)?
                } else {
                    self.retain.f_mul_scalar(0.0)?
                };
                // `pos` is cos/τ; the reference's term is on the cosine itself.
                let cosine = self.pos.f_mul_scalar(self.temperature)?;
                Ok(nce.f_add(&cosine.f_mul_scalar(c.beta * c.forget_share)?)?)
            }
        }
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
    let other_view = Tensor::f_cat(&[&idx.f_add_scalar(n)?, &idx], 0)?;
    let pos_sim = s
        .f_gather(1, &other_view.f_unsqueeze(1)?, false)?
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
    // The reference's batch pairs view0 of forget sample i with view1 of the next
    // forget sample σ(i). That permutes view1's forget rows, so every row's
    // denominator (all other rows) is the one computed above, and view1 row σ(i)
    // has the same partner similarity as view0 row i: the mean over view0 rows
    // is the mean over all forget rows.
    let forget_idx = forget
        .f_to_kind(Kind::Bool)?
        .f_nonzero()?
        .f_squeeze_dim(1)?;
    let n_f = rows(&forget_idx);
    let partner = if n_f >= 2 {
        let next = forget_idx
            .f_roll([-1i64].as_slice(), [0i64].as_slice())?
            .f_add_scalar(n)?;
        s.f_index_select(0, &forget_idx)?
            .f_gather(1, &next.f_unsqueeze(1)?, false)?
            .f_mean(Kind::Float)?
    } else {
        Tensor::f_zeros([], (Kind::Float, device))?
    };
    Ok(Terms {
        retain: masked_mean(&per_row_nce, &retain_rows)?,
        neg: masked_mean(&s, &neg_pairs)?,
        partner,
        pos: masked_mean(&pos_sim, &forget_rows)?,
        lse: masked_mean(&lse, &forget_rows)?,
        retain_samples: n - n_f,
        forget_samples: n_f,
        temperature,
    })
}

/// MoCo terms of a batch: queries `q` and keys `k` (`[N, D]`, keys from the
/// momentum encoder on the other view), `forget` (`[N]`, bool) marking forget
/// samples, `queue` (`[K, D]`) the negatives. A forget query's negative pair is the
/// key of the next forget sample in the batch (a derangement of the forget rows;
/// with a single forget sample there is no pair and `neg` is 0). `neg` is
/// already the similarity to this partner, so `partner` is `neg`.
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
    let neg = masked_mean(&neg, &pairs)?;
    Ok(Terms {
        retain: masked_mean(&retain_nce, &retain_rows)?,
        partner: neg.shallow_clone(),
        neg,
        pos: masked_mean(&pos, &forget)?,
        lse: masked_mean(&forget_lse, &forget)?,
        retain_samples: rows(&q) - n_f,
        forget_samples: n_f,
        temperature,
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
