//! Checkpoints: Lethe's safetensors format (weights + architecture +
//! provenance), PyTorch `torch.save` state dicts (`.pt`/`.pth`), TorchScript
//! modules, architecture detection and `inspect`.
//!
//! PyTorch archives are read by a small pickle interpreter of our own
//! ([`pickle`]) because tch only exposes libtorch's TorchScript and
//! "mobile" parameter loaders, neither of which reads `torch.save(state_dict)`.

mod detect;
mod error;
mod format;
mod inspect;
pub mod pickle;
mod safetensors_io;
mod state_dict;
mod torch_zip;

use std::path::{Path, PathBuf};

use tch::{Device, nn};

pub use detect::detect_architecture;
pub use error::{CheckpointError, MismatchDetails, ShapeMismatch};
pub use format::{CheckpointFormat, detect_format};
pub use inspect::{CheckpointSummary, TensorSummary, inspect, inspect_with};
pub use safetensors_io::{CheckpointMeta, METADATA_KEY, Provenance, save_tensors};
pub use state_dict::{StateDict, normalize_name};

use crate::models::{ArchConfig, BackboneConfig, Model, ModelError};

/// Result alias for this module.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// A checkpoint read into memory (tensors on the CPU).
#[derive(Debug)]
pub struct Checkpoint {
    /// The file read.
    pub path: PathBuf,
    /// Its format.
    pub format: CheckpointFormat,
    /// Its tensors, names normalized (no `module.` prefixes).
    pub state_dict: StateDict,
    /// Lethe metadata, for Lethe safetensors files.
    pub meta: Option<CheckpointMeta>,
}

/// Reads any supported checkpoint. For TorchScript files the module's
/// parameters and buffers are returned under their attribute paths.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let format = detect_format(path)?;
    let (tensors, meta) = match format {
        CheckpointFormat::Safetensors => safetensors_io::read(path)?,
        CheckpointFormat::TorchSave | CheckpointFormat::TorchScript => {
            (torch_zip::read(path)?.0, None)
        }
    };
    Ok(Checkpoint {
        path: path.to_owned(),
        format,
        state_dict: StateDict::new(tensors),
        meta,
    })
}

/// How to choose the architecture when loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Use this architecture instead of the file's metadata or detection.
    pub arch: Option<ArchConfig>,
    /// For ResNet-18: whether a ReLU follows the stem's `bn1`. Weights look
    /// the same either way, so checkpoints trained without it (the AC
    /// reference code) need `Some(false)` here unless their metadata says so.
    pub stem_relu: Option<bool>,
    /// Use only the tensors under this name prefix, with the prefix removed
    /// (e.g. `encoder_q.` for the query encoder of a MoCo checkpoint).
    pub prefix: Option<String>,
}

/// A built-in model with weights loaded from a file.
#[derive(Debug)]
pub struct LoadedModel {
    /// Holds the variables (train them with any tch optimizer).
    pub vs: nn::VarStore,
    /// The network.
    pub model: Model,
    /// The architecture used.
    pub arch: ArchConfig,
    /// Lethe metadata, if the file had any.
    pub meta: Option<CheckpointMeta>,
    /// The file's format.
    pub format: CheckpointFormat,
}

impl Checkpoint {
    /// The architecture: `opts.arch`, else the file's metadata, else detected
    /// from keys and shapes; then `opts.stem_relu` is applied (`opts.prefix`
    /// is not: see [`Checkpoint::with_prefix`]).
    pub fn architecture(&self, opts: &LoadOptions) -> Result<ArchConfig> {
        let mut arch = match (&opts.arch, self.meta.as_ref().and_then(|m| m.arch.clone())) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => a,
            (None, None) => detect_architecture(&self.state_dict).map_err(|reason| {
                CheckpointError::UnknownArchitecture {
                    path: self.path.clone(),
                    reason,
                }
            })?,
        };
        if let (Some(v), BackboneConfig::ResNet18 { stem_relu, .. }) =
            (opts.stem_relu, &mut arch.backbone)
        {
            *stem_relu = v;
        }
        Ok(arch)
    }

    /// Keeps only the tensors under `prefix` (see [`StateDict::select_prefix`]);
    /// an error if none are there.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        let sd = std::mem::take(&mut self.state_dict).select_prefix(prefix);
        if sd.is_empty() {
            return Err(CheckpointError::UnknownArchitecture {
                path: self.path,
                reason: format!("no tensor names start with {prefix:?}"),
            });
        }
        self.state_dict = sd;
        Ok(self)
    }

    /// Builds the architecture on `device` and loads the weights (strictly),
    /// after applying `opts.prefix`.
    pub fn into_model(self, device: Device, opts: &LoadOptions) -> Result<LoadedModel> {
        let ckpt = match &opts.prefix {
            Some(p) => self.with_prefix(p)?,
            None => self,
        };
        ckpt.build(device, opts)
    }

    /// Checks that `arch`'s variables are exactly the file's tensors, before
    /// any of them is created: metadata can name any architecture, and one
    /// with 8,000-channel widths needs tens of gigabytes to build.
    pub fn check_fits(&self, arch: &ArchConfig) -> Result<()> {
        let Some(expected) = detect::arch_variables(arch) else {
            return Err(CheckpointError::Model {
                path: self.path.clone(),
                source: ModelError::InvalidConfig(format!(
                    "{arch}: every width, size and class count must be positive, and each weight's element count must fit in 64 bits"
                )),
            });
        };
        let details = self.state_dict.diff_shapes(&expected);
        if details.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch {
                path: self.path.clone(),
                arch: arch.to_string(),
                details,
            })
        }
    }

    fn build(self, device: Device, opts: &LoadOptions) -> Result<LoadedModel> {
        let arch = self.architecture(opts)?;
        self.check_fits(&arch)?;
        let vs = nn::VarStore::new(device);
        let model = Model::new(&vs.root(), &arch).map_err(|source| CheckpointError::Model {
            path: self.path.clone(),
            source,
        })?;
        self.state_dict
            .apply_to(&vs, &self.path, &arch.to_string())?;
        Ok(LoadedModel {
            vs,
            model,
            arch,
            meta: self.meta,
            format: self.format,
        })
    }
}

/// Reads `path` and builds the matching built-in model on `device`.
pub fn load_model(
    path: impl AsRef<Path>,
    device: Device,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    read(path)?.into_model(device, opts)
}

/// Loads the weights in `path` into an existing store (strict: names and
/// shapes must match exactly; `module.` prefixes are ignored).
pub fn load_into(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<()> {
    let ckpt = read(path)?;
    ckpt.state_dict
        .apply_to(vs, &ckpt.path, "the model being loaded")
}

/// Saves the variables of `vs` with `meta` in Lethe's safetensors format,
/// atomically; refuses to replace an existing file unless `overwrite`.
pub fn save(
    path: impl AsRef<Path>,
    vs: &nn::VarStore,
    meta: &CheckpointMeta,
    overwrite: bool,
) -> Result<()> {
    let mut tensors: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(path.as_ref(), &tensors, meta, overwrite)
}

/// Loads a TorchScript module for inference (eval mode) on `device`.
pub fn load_torchscript(path: impl AsRef<Path>, device: Device) -> Result<tch::CModule> {
    let path = path.as_ref();
    expect_torchscript(path)?;
    let mut m =
        tch::CModule::load_on_device(path, device).map_err(|e| CheckpointError::torch(path, e))?;
    m.f_set_eval()
        .map_err(|e| CheckpointError::torch(path, e))?;
    Ok(m)
}

/// Loads a TorchScript module whose parameters are registered in the store
/// behind `vs`, so any user architecture can be trained with tch optimizers.
pub fn load_trainable_torchscript(
    path: impl AsRef<Path>,
    vs: nn::Path<'_>,
) -> Result<tch::TrainableCModule> {
    let path = path.as_ref();
    expect_torchscript(path)?;
    tch::TrainableCModule::load(path, vs).map_err(|e| CheckpointError::torch(path, e))
}

fn expect_torchscript(path: &Path) -> Result<()> {
    match detect_format(path)? {
        CheckpointFormat::TorchScript => Ok(()),
        other => Err(CheckpointError::unsupported(
            path,
            format!("expected a TorchScript module (torch.jit.save), found a {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::HeadConfig;
    use std::time::{Duration, Instant};
    use tch::{Kind, Tensor};

    #[test]
    fn a_huge_architecture_claimed_by_metadata_is_refused_before_it_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge-claim.safetensors");
        // A ResNet-18 of 8,000-channel widths would need about 40 GB to build.
        let arch = ArchConfig {
            backbone: BackboneConfig::ResNet18 {
                in_channels: 3,
                widths: [8000; 4],
                stem_relu: true,
            },
            head: HeadConfig::Classifier { num_classes: 10 },
        };
        let tensors = vec![(
            "fc.bias".to_owned(),
            Tensor::zeros([10], (Kind::Float, Device::Cpu)),
        )];
        save_tensors(
            &path,
            &tensors,
            &CheckpointMeta::new(Some(arch), None),
            false,
        )
        .unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 4096);

        let start = Instant::now();
        let e = load_model(&path, Device::Cpu, &LoadOptions::default()).unwrap_err();
        assert!(matches!(e, CheckpointError::Mismatch { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("huge-claim.safetensors") && text.contains("missing keys"),
            "{text}"
        );

        let summary = inspect(&path).unwrap();
        assert!(summary.architecture.is_none());
        assert!(
            summary.architecture_note.contains("does not fit"),
            "{}",
            summary.architecture_note
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );

        // Non-positive or overflowing sizes are refused as invalid, also unbuilt.
        let bad = ArchConfig {
            backbone: BackboneConfig::Mlp {
                input_dim: i64::MAX,
                hidden: vec![i64::MAX],
            },
            head: HeadConfig::None,
        };
        let ckpt = read(&path).unwrap();
        let e = ckpt.check_fits(&bad).unwrap_err();
        assert!(matches!(e, CheckpointError::Model { .. }), "{e}");
    }
}
