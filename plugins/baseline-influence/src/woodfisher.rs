//! The WoodFisher recursion for `H⁻¹` with `H = λI + (1/N)Σ gᵢgᵢᵀ`, restricted to
//! blocks of consecutive entries of the flat parameter vector.
//!
//! Sherman-Morrison for one rank-one term: with `q = H⁻¹g`,
//! `(H + ggᵀ/N)⁻¹ = H⁻¹ − qqᵀ/(N + gᵀq)`. Starting from `I/λ`, N updates give the
//! exact inverse of `H` restricted to each block (its block-diagonal
//! approximation); one block covering everything gives the exact dense inverse.
//! The reference implementation kept a single vector in place of the matrix,
//! which is not this recursion; here each block keeps its full inverse.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{self, Device, Kind, Tensor};

/// Blocks whose inverses together hold at most this many entries are kept in
/// float64 (the recursion subtracts nearly equal numbers); bigger ones in float32.
const DOUBLE_LIMIT: i64 = 1 << 24;

/// `H⁻¹` of each block, `[blocks, b, b]`.
#[derive(Debug)]
pub struct BlockInverse {
    inverse: Tensor,
    dim: i64,
    block: i64,
    blocks: i64,
    n: f64,
    kind: Kind,
}

impl BlockInverse {
    /// `I/λ` for a `dim`-vector in blocks of `block` (0 or more than `dim`: one
    /// block), to receive `n` rank-one updates.
    pub fn new(
        dim: i64,
        block: i64,
        damping: f64,
        n: f64,
        device: Device,
    ) -> Result<Self, PluginError> {
        if dim <= 0 {
            return Err(PluginError::msg("the model has no parameters"));
        }
        let block = if block <= 0 || block > dim {
            dim
        } else {
            block
        };
        let blocks = (dim + block - 1) / block;
        let entries = blocks.saturating_mul(block).saturating_mul(block);
        let kind = if entries <= DOUBLE_LIMIT {
            Kind::Double
        } else {
            Kind::Float
        };
        let eye = Tensor::f_eye(block, (kind, device))?.f_div_scalar(damping)?;
        let inverse = eye.f_unsqueeze(0)?.f_repeat([blocks, 1, 1])?;
        Ok(BlockInverse {
            inverse,
            dim,
            block,
            blocks,
            n: n.max(1.0),
            kind,
        })
    }

    /// The block size in use.
    pub fn block_size(&self) -> i64 {
        self.block
    }

    /// `v` padded to whole blocks, as `[blocks, b, 1]`.
    fn blocked(&self, v: &Tensor) -> Result<Tensor, PluginError> {
        let pad = self.blocks * self.block - self.dim;
        let v = v.f_to_kind(self.kind)?.f_reshape([-1])?;
        let v = if pad > 0 {
            Tensor::f_cat(
                &[
                    v.shallow_clone(),
                    Tensor::f_zeros([pad], (self.kind, v.device()))?,
                ],
                0,
            )?
        } else {
            v
        };
        Ok(v.f_reshape([self.blocks, self.block, 1])?)
    }

    /// Adds `ggᵀ/N` to `H`.
    pub fn update(&mut self, g: &Tensor) -> Result<(), PluginError> {
        tch::no_grad(|| -> Result<(), PluginError> {
            let g = self.blocked(g)?;
            let q = self.inverse.f_bmm(&g)?;
            let denom = g
                .f_mul(&q)?
                .f_sum_dim_intlist([1i64, 2].as_slice(), true, self.kind)?
                .f_add_scalar(self.n)?;
            let outer = q.f_bmm(&q.f_transpose(1, 2)?)?.f_div(&denom)?;
            let _ = self.inverse.f_sub_(&outer)?;
            Ok(())
        })
    }

    /// `H⁻¹v` (float32, flat).
    pub fn apply(&self, v: &Tensor) -> Result<Tensor, PluginError> {
        tch::no_grad(|| -> Result<Tensor, PluginError> {
            Ok(self
                .inverse
                .f_bmm(&self.blocked(v)?)?
                .f_reshape([-1])?
                .f_narrow(0, 0, self.dim)?
                .f_to_kind(Kind::Float)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_recursion_is_the_exact_inverse() {
        tch::manual_seed(4);
        let (d, n) = (7i64, 5i64);
        let opts = (Kind::Double, Device::Cpu);
        let g = Tensor::randn([n, d], opts);
        let v = Tensor::randn([d], opts);
        let mut inv = BlockInverse::new(d, 0, 0.3, n as f64, Device::Cpu).unwrap();
        for i in 0..n {
            inv.update(&g.get(i)).unwrap();
        }
        let h = Tensor::eye(d, opts) * 0.3 + g.tr().matmul(&g) / n as f64;
        let exact = h.inverse().matmul(&v.unsqueeze(1)).squeeze_dim(1);
        let got = inv.apply(&v).unwrap().to_kind(Kind::Double);
        let err = (&got - &exact).norm().double_value(&[]) / exact.norm().double_value(&[]);
        assert!(err < 1e-6, "relative error {err}");
    }

    #[test]
    fn blocks_invert_the_block_diagonal_with_padding() {
        tch::manual_seed(5);
        let (d, n, b) = (7i64, 4i64, 3i64);
        let opts = (Kind::Double, Device::Cpu);
        let g = Tensor::randn([n, d], opts);
        let v = Tensor::randn([d], opts);
        let mut inv = BlockInverse::new(d, b, 2.0, n as f64, Device::Cpu).unwrap();
        for i in 0..n {
            inv.update(&g.get(i)).unwrap();
        }
        let got = inv.apply(&v).unwrap().to_kind(Kind::Double);
        for start in (0..d).step_by(b as usize) {
            let len = b.min(d - start);
            let gb = g.narrow(1, start, len);
            let h = Tensor::eye(len, opts) * 2.0 + gb.tr().matmul(&gb) / n as f64;
            let exact = h
                .inverse()
                .matmul(&v.narrow(0, start, len).unsqueeze(1))
                .squeeze_dim(1);
            let err = (&got.narrow(0, start, len) - &exact)
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 1e-6, "block at {start}: {err}");
        }
    }
}
