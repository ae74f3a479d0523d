//! Named tensors as read from a checkpoint, and applying them to a `VarStore`.

use std::path::Path;

use tch::{Tensor, nn};

use super::error::{CheckpointError, MismatchDetails, ShapeMismatch};

/// Named tensors in file order, on the CPU.
#[derive(Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
}

/// BatchNorm's step counter is stored by PyTorch but tch's BatchNorm has no
/// such variable and never reads it, so it is neither missing nor unexpected.
pub(crate) fn is_ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Buffers that are state rather than learned parameters.
pub(crate) fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || is_ignorable(name)
}

/// Strips wrapper prefixes (`module.` from DataParallel/DDP, repeatedly, as
/// nested wrappers stack them).
pub fn normalize_name(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("module.") {
        n = rest;
    }
    n
}

/// The widely used pytorch-cifar ResNet calls torchvision's `downsample`
/// `shortcut` and `fc` `linear`; the layers and their order are identical,
/// so such files are renamed rather than rejected. Only applied to dicts
/// that look like such a ResNet and use neither torchvision name.
fn alias_cifar_resnet(entries: &mut [(String, Tensor)]) {
    let has = |pred: &dyn Fn(&str) -> bool| entries.iter().any(|(k, _)| pred(k));
    if !has(&|k| k == "layer1.0.conv1.weight") {
        return;
    }
    let shortcut = has(&|k| k.contains(".shortcut.")) && !has(&|k| k.contains(".downsample."));
    let linear = has(&|k| k == "linear.weight") && !has(&|k| k == "fc.weight");
    for (k, _) in entries.iter_mut() {
        if shortcut && k.starts_with("layer") {
            *k = k.replacen(".shortcut.", ".downsample.", 1);
        }
        if linear && let Some(rest) = k.strip_prefix("linear.") {
            *k = format!("fc.{rest}");
        }
    }
}

impl StateDict {
    /// Builds a state dict, normalizing names with [`normalize_name`] and
    /// mapping pytorch-cifar ResNet names to torchvision ones (see
    /// [`StateDict::names`]).
    pub fn new(entries: Vec<(String, Tensor)>) -> Self {
        let mut entries: Vec<(String, Tensor)> = entries
            .into_iter()
            .map(|(k, t)| (normalize_name(&k).to_owned(), t))
            .collect();
        alias_cifar_resnet(&mut entries);
        StateDict { entries }
    }

    /// Keeps the tensors whose (normalized) name starts with `prefix`, with
    /// the prefix removed: e.g. `encoder_q.` selects MoCo's query encoder.
    pub fn select_prefix(self, prefix: &str) -> StateDict {
        let entries = self
            .entries
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|rest| (rest.to_owned(), t)))
            .collect();
        StateDict::new(entries)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, t)| t)
    }

    /// Shape of the tensor called `name`.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(Tensor::size)
    }

    /// True when a tensor called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Tensor names in file order (normalized: `module.` prefixes removed,
    /// pytorch-cifar `shortcut`/`linear` renamed to `downsample`/`fc`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Named tensors in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of learned parameters (elements), excluding BatchNorm buffers.
    pub fn parameter_count(&self) -> i64 {
        self.entries
            .iter()
            .filter(|(k, _)| !is_buffer(k))
            .map(|(_, t)| t.numel() as i64)
            .sum()
    }

    /// Compares with the variables of `vs`.
    pub fn diff(&self, vs: &nn::VarStore) -> MismatchDetails {
        let vars = vs.variables();
        let mut d = MismatchDetails::default();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            match self.get(name) {
                None => d.missing.push(name.clone()),
                Some(t) => {
                    let expected = vars[name].size();
                    if t.size() != expected {
                        d.shapes.push(ShapeMismatch {
                            name: name.clone(),
                            expected,
                            found: t.size(),
                        });
                    }
                }
            }
        }
        d.unexpected = self
            .names()
            .filter(|k| !is_ignorable(k) && !vars.contains_key(*k))
            .map(str::to_owned)
            .collect();
        d
    }

    /// Compares with variables given by name and shape (see
    /// [`super::detect::arch_variables`]), as [`StateDict::diff`] does with a store.
    pub(crate) fn diff_shapes(&self, expected: &[(String, Vec<i64>)]) -> MismatchDetails {
        let mut d = MismatchDetails::default();
        let mut sorted: Vec<&(String, Vec<i64>)> = expected.iter().collect();
        sorted.sort();
        for (name, shape) in sorted {
            match self.get(name) {
                None => d.missing.push(name.clone()),
                Some(t) => {
                    if t.size() != *shape {
                        d.shapes.push(ShapeMismatch {
                            name: name.clone(),
                            expected: shape.clone(),
                            found: t.size(),
                        });
                    }
                }
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(k, _)| k.as_str()).collect();
        d.unexpected = self
            .names()
            .filter(|k| !is_ignorable(k) && !known.contains(k))
            .map(str::to_owned)
            .collect();
        d
    }

    /// Copies every tensor into the matching variable of `vs`. Strict: any
    /// missing or unexpected key or shape difference is an error naming them
    /// (and `path`/`arch` for context), and nothing is copied in that case.
    pub fn apply_to(
        &self,
        vs: &nn::VarStore,
        path: &Path,
        arch: &str,
    ) -> Result<(), CheckpointError> {
        let details = self.diff(vs);
        if !details.is_empty() {
            return Err(CheckpointError::Mismatch {
                path: path.to_owned(),
                arch: arch.to_owned(),
                details,
            });
        }
        let mut vars = vs.variables();
        tch::no_grad(|| {
            for (name, var) in vars.iter_mut() {
                if let Some(src) = self.get(name) {
                    let src = src
                        .f_to_device(var.device())
                        .map_err(|e| CheckpointError::torch(path, e))?;
                    var.f_copy_(&src)
                        .map_err(|e| CheckpointError::torch(path, e))?;
                }
            }
            Ok(())
        })
    }
}
