//! One-shot magnitude pruning (OMP), the "prune first, then unlearn" step of Jia
//! et al. (NeurIPS 2023), and the mask that keeps the pruned weights at zero
//! afterwards: while the sparse model is retrained ([`crate::jobs::train`]) and
//! through every unlearning method run on it (the plugin host re-imposes it, see
//! [`crate::plugin_host::services::EngineServices`]).
//!
//! The reference (OPTML-Group/Unlearn-Sparse, `pruner.pruning_model`) calls
//! `torch.nn.utils.prune.global_unstructured` with `L1Unstructured` over the
//! weights of every `Conv2d`: one threshold for the whole model, the
//! `round(amount · n)` smallest magnitudes zeroed. [`Mask::omp`] does the same over
//! the parameters its [`PruneScope`] covers. The mask is kept by PyTorch's
//! reparametrisation `weight = weight_orig * weight_mask`; here the pruned
//! weights themselves are zero and [`Mask::reimpose`] zeroes any that an update
//! moved, so every forward pass sees the same effective weights.
//!
//! A sparse checkpoint records its pruning under the [`SPARSITY_NOTE`]
//! provenance note ([`Sparsity`]); its mask is the zeros of the layers the note
//! names ([`Mask::from_zeros`]), since the pruned weights are stored as zeros.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use super::{Flow, TrainError, TrainEvent, TrainSummary};
use crate::checkpoint::CheckpointMeta;

/// The provenance note of a sparse checkpoint: its [`Sparsity`] as JSON.
pub const SPARSITY_NOTE: &str = "sparsity";

/// Which parameters pruning may zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    /// Convolution kernels only (4-D weights): the reference pruner's `Conv2d`
    /// weights.
    Conv,
    /// Every weight matrix and kernel (2+ dimensions: convolutions and linear
    /// layers, the layers the reference's `count_sparsity` counts); biases and
    /// normalisation parameters are kept.
    Weights,
}

impl PruneScope {
    /// Whether pruning may zero `p`.
    pub fn covers(self, p: &Tensor) -> bool {
        match self {
            PruneScope::Conv => p.dim() == 4,
            PruneScope::Weights => p.dim() >= 2,
        }
    }

    /// The name recorded and shown (`conv`, `weights`).
    pub fn name(self) -> &'static str {
        match self {
            PruneScope::Conv => "conv",
            PruneScope::Weights => "weights",
        }
    }
}

/// How `lethe train` makes a sparse model: train dense, prune by OMP, rewind
/// (or not), retrain with the mask fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneRecipe {
    /// Fraction of the covered weights to zero, in `[0, 1)` (0.95: the "95 %
    /// sparse" setting).
    pub ratio: f64,
    /// Which parameters are pruned.
    pub scope: PruneScope,
    /// Rewind the weights to those after this dense epoch before retraining
    /// (the reference's `--prune_type rewind_lt --rewind_epoch 8`); 0 retrains
    /// from the pruned dense weights.
    pub rewind_epoch: usize,
    /// Epochs of retraining the sparse model (the dense recipe otherwise).
    pub retrain_epochs: usize,
}

impl PruneRecipe {
    /// Refuses ratios outside `[0, 1)`, no retraining, or a rewind point after
    /// the last dense epoch.
    pub fn validate(&self, dense_epochs: usize) -> Result<(), TrainError> {
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(TrainError::Invalid(format!(
                "prune ratio {} is outside [0, 1)",
                self.ratio
            )));
        }
        if self.retrain_epochs == 0 {
            return Err(TrainError::Invalid(
                "a pruned model is retrained: give at least one retraining epoch".into(),
            ));
        }
        if self.rewind_epoch > dense_epochs {
            return Err(TrainError::Invalid(format!(
                "rewind epoch {} is after the last of the {dense_epochs} dense epochs",
                self.rewind_epoch
            )));
        }
        Ok(())
    }
}

/// What a sparse checkpoint records about its pruning (the [`SPARSITY_NOTE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sparsity {
    /// How the mask was chosen: `omp` (one-shot global magnitude).
    pub rule: String,
    /// Which parameters could be pruned.
    pub scope: PruneScope,
    /// The fraction asked for.
    pub ratio: f64,
    /// Weights set to zero.
    pub pruned: i64,
    /// Weights the scope covers.
    pub prunable: i64,
    /// The covered parameters, by variable name: their zeros are the mask.
    pub layers: Vec<String>,
    /// Dense epoch the weights were rewound to before retraining (0: none).
    #[serde(default)]
    pub rewind_epoch: usize,
    /// Epochs the sparse model was retrained with the mask fixed (0: pruned
    /// right before unlearning, not retrained).
    #[serde(default)]
    pub retrain_epochs: usize,
}

impl Sparsity {
    /// The record in `meta`'s provenance, if it has one. A note that does not
    /// parse is an error: a sparse model unlearned as a dense one would lose its
    /// mask without a word.
    pub fn from_meta(meta: Option<&CheckpointMeta>) -> Result<Option<Sparsity>, TrainError> {
        let Some(text) = meta.and_then(|m| m.provenance.notes.get(SPARSITY_NOTE)) else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            TrainError::Invalid(format!(
                "the checkpoint's `{SPARSITY_NOTE}` note is not a pruning record: {e}"
            ))
        })
    }
}

/// The pruned weights of some parameters: `(name, parameter, pruned)` with
/// `pruned` true where the weight must stay zero. The parameters are shallow
/// clones, so [`Mask::reimpose`] acts on the model's own variables.
#[derive(Debug)]
pub struct Mask {
    entries: Vec<(String, Tensor, Tensor)>,
}

impl Mask {
    /// Zeros, in place, the `round(ratio · n)` smallest-magnitude of the `n`
    /// weights of `params` that `scope` covers, with one threshold for all of
    /// them, and returns the mask with its record. `round` halves to even, as
    /// Python's `round` in `torch.nn.utils.prune`.
    pub fn omp(
        params: &[(String, Tensor)],
        ratio: f64,
        scope: PruneScope,
    ) -> Result<(Mask, Sparsity), TrainError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TrainError::Invalid(format!(
                "prune ratio {ratio} is outside [0, 1]"
            )));
        }
        let chosen: Vec<&(String, Tensor)> =
            params.iter().filter(|(_, p)| scope.covers(p)).collect();
        if chosen.is_empty() {
            return Err(TrainError::Invalid(format!(
                "the model has no parameters in pruning scope `{}`{}",
                scope.name(),
                if scope == PruneScope::Conv {
                    " (no convolution kernels; use scope `weights` for linear layers)"
                } else {
                    ""
                }
            )));
        }
        tch::no_grad(|| {
            let flat = Tensor::f_cat(
                &chosen
                    .iter()
                    .map(|(_, p)| p.f_detach()?.f_abs()?.f_reshape([-1]))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?;
            let n = flat.numel() as i64;
            let k = ((ratio * n as f64).round_ties_even() as i64).clamp(0, n);
            let mut pruned = Tensor::f_zeros([n], (Kind::Bool, flat.device()))?;
            if k > 0 {
                let (_, idx) = flat.f_topk(k, 0, false, false)?;
                pruned = pruned.f_index_fill(0, &idx, 1)?;
            }
            let mut entries = Vec::with_capacity(chosen.len());
            let mut offset = 0i64;
            for (name, p) in chosen {
                let len = p.numel() as i64;
                let m = pruned.f_narrow(0, offset, len)?.f_reshape(p.size())?;
                offset += len;
                let _ = p.shallow_clone().f_masked_fill_(&m, 0.0)?;
                entries.push((name.clone(), p.shallow_clone(), m));
            }
            let record = Sparsity {
                rule: "omp".into(),
                scope,
                ratio,
                pruned: k,
                prunable: n,
                layers: entries.iter().map(|(n, _, _)| n.clone()).collect(),
                rewind_epoch: 0,
                retrain_epochs: 0,
            };
            Ok((Mask { entries }, record))
        })
    }

    /// The mask of a sparse checkpoint: the zeros of the parameters `record`
    /// names (every one must be among `params`).
    pub fn from_zeros(params: &[(String, Tensor)], record: &Sparsity) -> Result<Mask, TrainError> {
        let entries = record
            .layers
            .iter()
            .map(|layer| {
                let (name, p) = params.iter().find(|(n, _)| n == layer).ok_or_else(|| {
                    TrainError::Invalid(format!(
                        "the pruning record names `{layer}`, which the model does not have"
                    ))
                })?;
                let m = tch::no_grad(|| p.f_eq(0.0))?;
                Ok((name.clone(), p.shallow_clone(), m))
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Mask { entries })
    }

    /// Weights the mask holds at zero.
    pub fn pruned(&self) -> Result<i64, TrainError> {
        let mut total = 0;
        for (_, _, m) in &self.entries {
            total += m.f_sum(Kind::Int64)?.int64_value(&[]);
        }
        Ok(total)
    }

    /// How many pruned weights are not zero now (one device sync).
    pub fn moved(&self) -> Result<i64, TrainError> {
        if self.entries.is_empty() {
            return Ok(0);
        }
        tch::no_grad(|| {
            let counts = self
                .entries
                .iter()
                .map(|(_, p, m)| p.f_ne(0.0)?.f_logical_and(m)?.f_sum(Kind::Int64))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::f_stack(&counts, 0)?
                .f_sum(Kind::Int64)?
                .int64_value(&[]))
        })
    }

    /// Sets every pruned weight that an update moved back to zero, in place, and
    /// returns how many there were. Writes nothing when none moved: an in-place
    /// write would bump the parameters' version counters and break a backward
    /// pass through a graph recorded before it (two forward passes, one
    /// backward).
    pub fn reimpose(&self) -> Result<i64, TrainError> {
        let moved = self.moved()?;
        if moved > 0 {
            tch::no_grad(|| -> Result<(), TrainError> {
                for (_, p, m) in &self.entries {
                    let _ = p.shallow_clone().f_masked_fill_(m, 0.0)?;
                }
                Ok(())
            })?;
        }
        Ok(moved)
    }
}

/// The trainable parameters of `vs` by name, sorted (the order the plugin host
/// lists them in).
pub fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Copies of every variable of `vs` (weights and batch-norm statistics): the
/// rewind point of [`prune_and_retrain`], taken at the end of dense epoch
/// [`PruneRecipe::rewind_epoch`] (see [`PruneRecipe::is_rewind_point`]).
pub fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

impl PruneRecipe {
    /// Whether the dense training's event `e` ends the rewind epoch.
    pub fn is_rewind_point(&self, e: &TrainEvent) -> bool {
        self.rewind_epoch > 0 && e.epoch == self.rewind_epoch && e.step == e.steps
    }
}

/// The second half of OMP, after the dense training of `vs`: prunes by
/// `recipe` (the mask chosen on the trained weights), rewinds to `rewind` when
/// the recipe asks for it (the mask then laid on those weights, as `main_imp.py`
/// prunes, reloads the rewind weights and re-applies the mask), and retrains
/// with `retrain` (which trains `vs` for `recipe.retrain_epochs`), setting the
/// pruned weights back to zero after every update so that every forward pass
/// sees them at zero (the reference keeps them there by `weight_orig *
/// weight_mask`). Returns the pruning record and the retraining's summary.
pub fn prune_and_retrain<E: From<TrainError>>(
    vs: &VarStore,
    recipe: &PruneRecipe,
    rewind: Option<Vec<(String, Tensor)>>,
    retrain: impl FnOnce(&mut dyn FnMut(&TrainEvent) -> Flow) -> Result<TrainSummary, E>,
    on_event: &mut dyn FnMut(&TrainEvent) -> Flow,
) -> Result<(Sparsity, TrainSummary), E> {
    let (mask, mut record) = Mask::omp(&trainable(vs), recipe.ratio, recipe.scope)?;
    if recipe.rewind_epoch > 0 {
        let Some(saved) = rewind else {
            return Err(TrainError::Invalid(format!(
                "dense training ended before rewind epoch {}",
                recipe.rewind_epoch
            ))
            .into());
        };
        let mut ours = vs.variables();
        tch::no_grad(|| -> Result<(), TrainError> {
            for (name, t) in &saved {
                if let Some(v) = ours.get_mut(name) {
                    v.f_copy_(t)?;
                }
            }
            Ok(())
        })?;
        mask.reimpose()?;
    }
    record.rewind_epoch = recipe.rewind_epoch;
    record.retrain_epochs = recipe.retrain_epochs;
    let mut failed = None;
    let summary = retrain(&mut |e: &TrainEvent| match mask.reimpose() {
        Ok(_) => on_event(e),
        Err(err) => {
            failed = Some(err);
            Flow::Stop
        }
    })?;
    if let Some(err) = failed {
        return Err(err.into());
    }
    Ok((record, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn params() -> Vec<(String, Tensor)> {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        vec![
            ("a.weight".into(), Tensor::randn([6, 5], opts)),
            ("a.bias".into(), Tensor::randn([6], opts)),
            ("c.weight".into(), Tensor::randn([2, 3, 3, 3], opts) * 4.0),
        ]
    }

    /// Pinned against `torch.nn.utils.prune.global_unstructured` with
    /// `L1Unstructured`, the reference's pruner, on the same weights.
    #[test]
    fn omp_zeros_what_torch_global_unstructured_zeros() {
        for (scope, names) in [
            (PruneScope::Weights, vec!["a.weight", "c.weight"]),
            (PruneScope::Conv, vec!["c.weight"]),
        ] {
            let p = params();
            let values: Vec<Vec<f32>> = names
                .iter()
                .map(|n| {
                    let t = &p.iter().find(|(m, _)| m == n).unwrap().1;
                    Vec::<f32>::try_from(t.reshape([-1])).unwrap()
                })
                .collect();
            let shapes: Vec<Vec<i64>> = names
                .iter()
                .map(|n| p.iter().find(|(m, _)| m == n).unwrap().1.size())
                .collect();
            // 0.9 of 84 weights is 75.6; of 54 it is 48.6.
            let (mask, record) = Mask::omp(&p, 0.9, scope).unwrap();
            let script = r#"
import json, sys, torch
import torch.nn.utils.prune as prune
inp = json.load(sys.stdin)
mods = []
for v, s in zip(inp["values"], inp["shapes"]):
    m = torch.nn.Module()
    m.weight = torch.nn.Parameter(torch.tensor(v).reshape(s))
    mods.append(m)
prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=inp["amount"])
print(json.dumps([(m.weight_mask == 0).reshape(-1).tolist() for m in mods]))
"#;
            let input = serde_json::json!({"values": values, "shapes": shapes, "amount": 0.9});
            let torch_pruned: Vec<Vec<bool>> =
                serde_json::from_str(&oracle(script, &input)).unwrap();
            assert_eq!(record.layers, names);
            assert_eq!(
                record.pruned,
                torch_pruned.iter().flatten().filter(|b| **b).count() as i64
            );
            assert_eq!(mask.entries.len(), names.len());
            for ((name, t, m), expected) in mask.entries.iter().zip(&torch_pruned) {
                let ours = Vec::<bool>::try_from(m.reshape([-1])).unwrap();
                assert_eq!(&ours, expected, "{name} ({scope:?})");
                let zeros = Vec::<bool>::try_from(t.eq(0.0).reshape([-1])).unwrap();
                assert_eq!(&zeros, expected, "{name} was not zeroed where pruned");
            }
            // Biases are never pruned.
            assert!(p[1].1.ne(0.0).all().int64_value(&[]) == 1);
        }
        // 0.5 of 25 weights is 12.5: Python's `round` (torch's count) gives 12.
        let odd = vec![(
            "w.weight".to_string(),
            Tensor::randn([5, 5], (Kind::Float, Device::Cpu)),
        )];
        assert_eq!(
            Mask::omp(&odd, 0.5, PruneScope::Weights).unwrap().1.pruned,
            12
        );
    }

    #[test]
    fn the_mask_is_read_back_from_zeros_and_reimposed_only_when_moved() {
        let p = params();
        let (_, record) = Mask::omp(&p, 0.5, PruneScope::Weights).unwrap();
        let mask = Mask::from_zeros(&p, &record).unwrap();
        assert_eq!(mask.pruned().unwrap(), record.pruned);
        assert_eq!(mask.reimpose().unwrap(), 0);
        let v0 = p[0].1.internal_version();
        assert_eq!(mask.reimpose().unwrap(), 0);
        assert_eq!(
            p[0].1.internal_version(),
            v0,
            "wrote although nothing moved"
        );
        // An update that moves everything: only the pruned weights go back.
        let _ = tch::no_grad(|| p[0].1.shallow_clone().f_add_scalar_(1.0).unwrap());
        let kept = p[0]
            .1
            .masked_select(&mask.entries[0].2.logical_not())
            .copy();
        let moved = mask.reimpose().unwrap();
        assert_eq!(moved, mask.entries[0].2.sum(Kind::Int64).int64_value(&[]));
        assert_eq!(mask.moved().unwrap(), 0);
        assert!(
            p[0].1
                .masked_select(&mask.entries[0].2.logical_not())
                .equal(&kept)
        );
        // A record naming a layer the model lacks is refused.
        let mut bad = record.clone();
        bad.layers.push("z.weight".into());
        let err = Mask::from_zeros(&p, &bad).unwrap_err().to_string();
        assert!(err.contains("z.weight"), "{err}");
        let err = Mask::omp(&p[..2], 0.5, PruneScope::Conv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no convolution kernels"), "{err}");
    }

    fn oracle(script: &str, input: &serde_json::Value) -> String {
        use std::io::Write;
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let mut child = std::process::Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the project venv (installer/setup.sh) has torch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
