//! One-shot global magnitude pruning (OMP), the "prune first, then unlearn" step
//! of Jia et al. (NeurIPS 2023): zero the `ratio` smallest-magnitude prunable
//! weights across the whole model, and return masks that keep them at zero through
//! the method that follows ([`crate::optim::Sgd::with_masks`],
//! [`crate::optim::assign_masked`]).

use crate::optim::Masks;
use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{self, Kind, Tensor};

/// Which parameters pruning may zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneScope {
    /// Every weight matrix and kernel (parameters with 2+ dimensions); biases and
    /// normalisation parameters are kept.
    Weights,
    /// Convolution kernels only (4-D), as the reference pruner does for ResNets.
    Conv,
}

impl PruneScope {
    /// From a schema choice: `weights` or `conv`.
    pub fn from_name(name: &str) -> Result<Self, PluginError> {
        match name {
            "weights" => Ok(PruneScope::Weights),
            "conv" => Ok(PruneScope::Conv),
            other => Err(PluginError::msg(format!(
                "unknown pruning scope `{other}` (weights or conv)"
            ))),
        }
    }

    /// Whether pruning may zero `p`.
    pub fn covers(self, p: &Tensor) -> bool {
        match self {
            PruneScope::Weights => p.dim() >= 2,
            PruneScope::Conv => p.dim() == 4,
        }
    }
}

/// What pruning did.
#[derive(Debug)]
pub struct Pruning {
    /// One mask per parameter: `Some` (true = kept) for prunable ones.
    pub masks: Masks,
    /// Weights set to zero.
    pub pruned: i64,
    /// Weights pruning could have zeroed.
    pub prunable: i64,
}

/// Zeros the `round(ratio · n)` smallest-magnitude of the `n` weights `scope`
/// covers, globally (one threshold for the whole model), in place.
pub fn magnitude_prune(
    params: &[(String, Tensor)],
    ratio: f64,
    scope: PruneScope,
) -> Result<Pruning, PluginError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(PluginError::msg(format!(
            "prune ratio {ratio} is outside [0, 1]"
        )));
    }
    let chosen: Vec<usize> = params
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| scope.covers(p))
        .map(|(i, _)| i)
        .collect();
    let mut masks: Masks = params.iter().map(|_| None).collect();
    if chosen.is_empty() {
        return Ok(Pruning {
            masks,
            pruned: 0,
            prunable: 0,
        });
    }
    tch::no_grad(|| -> Result<Pruning, PluginError> {
        let flat = Tensor::f_cat(
            &chosen
                .iter()
                .map(|&i| params[i].1.f_detach()?.f_abs()?.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        let n = flat.numel() as i64;
        let k = ((ratio * n as f64).round() as i64).clamp(0, n);
        let mut keep = Tensor::f_ones([n], (Kind::Bool, flat.device()))?;
        if k > 0 {
            let (_, idx) = flat.f_topk(k, 0, false, false)?;
            keep = keep.f_index_fill(0, &idx, 0)?;
        }
        let mut offset = 0i64;
        for &i in &chosen {
            let p = &params[i].1;
            let len = p.numel() as i64;
            let m = keep.f_narrow(0, offset, len)?.f_reshape(p.size())?;
            offset += len;
            let mut p = p.shallow_clone();
            let _ = p.f_masked_fill_(&m.f_logical_not()?, 0.0)?;
            masks[i] = Some(m);
        }
        Ok(Pruning {
            masks,
            pruned: k,
            prunable: n,
        })
    })
}

/// Sets the entries where `masks` are false to zero (e.g. after the weights were
/// re-initialised); parameters without a mask are left alone.
pub fn zero_pruned(params: &[(String, Tensor)], masks: &Masks) -> Result<(), PluginError> {
    tch::no_grad(|| -> Result<(), PluginError> {
        for ((_, p), m) in params.iter().zip(masks) {
            if let Some(m) = m {
                let _ = p.shallow_clone().f_masked_fill_(&m.f_logical_not()?, 0.0)?;
            }
        }
        Ok(())
    })
}

/// Where both masks allow a change (`None` = everywhere).
pub fn intersect(a: &Masks, b: &Masks) -> Result<Masks, PluginError> {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => Ok(Some(x.f_logical_and(y)?)),
            (Some(x), None) => Ok(Some(x.shallow_clone())),
            (None, Some(y)) => Ok(Some(y.shallow_clone())),
            (None, None) => Ok(None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;

    #[test]
    fn prunes_the_global_smallest_weights_and_skips_biases() {
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let params = vec![
            ("a.weight".to_string(), Tensor::randn([20, 10], opts)),
            ("a.bias".to_string(), Tensor::randn([20], opts)),
            // Large weights: a global threshold prunes few of these.
            (
                "b.weight".to_string(),
                Tensor::randn([4, 2, 3, 3], opts) * 100.0,
            ),
        ];
        let before: Vec<Tensor> = params.iter().map(|(_, p)| p.copy()).collect();
        let out = magnitude_prune(&params, 0.5, PruneScope::Weights).unwrap();
        assert_eq!(out.prunable, 200 + 72);
        assert_eq!(out.pruned, 136);
        let zeros = |t: &Tensor| t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(zeros(&params[0].1) + zeros(&params[2].1), 136);
        assert!(out.masks[1].is_none());
        assert!(params[1].1.equal(&before[1]), "a bias was pruned");
        assert!(zeros(&params[2].1) < 10, "global threshold expected");
        // Every kept weight is at least as large as every pruned one.
        let all_before = Tensor::cat(&[before[0].reshape([-1]), before[2].reshape([-1])], 0).abs();
        let keep = Tensor::cat(
            &[
                out.masks[0].as_ref().unwrap().reshape([-1]),
                out.masks[2].as_ref().unwrap().reshape([-1]),
            ],
            0,
        );
        let min_kept = all_before.masked_select(&keep).min().double_value(&[]);
        let max_pruned = all_before
            .masked_select(&keep.logical_not())
            .max()
            .double_value(&[]);
        assert!(min_kept >= max_pruned);
        let conv = magnitude_prune(&params, 0.25, PruneScope::Conv).unwrap();
        assert_eq!(conv.prunable, 72);
        assert!(conv.masks[0].is_none());
    }
}
