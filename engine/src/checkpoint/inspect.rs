//! `lethe checkpoint inspect`: what a checkpoint file holds.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::nn;

use super::error::CheckpointError;
use super::format::CheckpointFormat;
use super::safetensors_io::{CheckpointMeta, tensor_bytes};
use super::{LoadOptions, read};
use crate::models::{ArchConfig, BackboneConfig, Model};

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorSummary {
    /// Normalized name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Element type, e.g. `Float`.
    pub dtype: String,
    /// SHA-256 of the raw little-endian row-major data, when requested. It
    /// depends only on the values, so the same weights hash the same in
    /// every file format.
    pub sha256: Option<String>,
}

/// What [`inspect`] reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointSummary {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: CheckpointFormat,
    /// Size in bytes.
    pub file_size: u64,
    /// SHA-256 of the whole file (hex).
    pub sha256: String,
    /// Architecture from metadata or detection, verified against the weights.
    pub architecture: Option<ArchConfig>,
    /// Where the architecture came from, or why none was found.
    pub architecture_note: String,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Learned parameters (elements), excluding BatchNorm buffers.
    pub parameter_count: i64,
    /// Lethe metadata, if any.
    pub meta: Option<CheckpointMeta>,
    /// Per-tensor details in file order.
    pub tensors: Vec<TensorSummary>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> Result<(String, u64), CheckpointError> {
    let mut f = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| CheckpointError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&h.finalize()), total))
}

/// Summarizes a checkpoint without per-tensor hashes.
pub fn inspect(path: impl AsRef<Path>) -> Result<CheckpointSummary, CheckpointError> {
    inspect_with(path, false)
}

/// Summarizes a checkpoint; `tensor_hashes` adds a SHA-256 per tensor.
pub fn inspect_with(
    path: impl AsRef<Path>,
    tensor_hashes: bool,
) -> Result<CheckpointSummary, CheckpointError> {
    let path = path.as_ref();
    let (sha256, file_size) = file_sha256(path)?;
    let ckpt = read(path)?;
    let (architecture, architecture_note) = match ckpt.architecture(&LoadOptions::default()) {
        Ok(arch) => {
            // Build it to make sure the claim holds for every key and shape.
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let source = if ckpt.meta.as_ref().is_some_and(|m| m.arch.is_some()) {
                "from metadata"
            } else if matches!(arch.backbone, BackboneConfig::ResNet18 { .. }) {
                "detected; a ReLU after the stem's bn1 is assumed, weights cannot show it"
            } else {
                "detected"
            };
            // Checked before building: metadata may claim a model of any size.
            match ckpt.check_fits(&arch) {
                Ok(()) => match Model::new(&vs.root(), &arch) {
                    Ok(_) => {
                        let diff = ckpt.state_dict.diff(&vs);
                        if diff.is_empty() {
                            (Some(arch), source.to_owned())
                        } else {
                            (
                                None,
                                format!("closest match {arch} ({source}) does not fit: {diff}"),
                            )
                        }
                    }
                    Err(e) => (None, e.to_string()),
                },
                Err(CheckpointError::Mismatch { details, .. }) => (
                    None,
                    format!("closest match {arch} ({source}) does not fit: {details}"),
                ),
                Err(CheckpointError::Model { source, .. }) => (None, source.to_string()),
                Err(e) => return Err(e),
            }
        }
        Err(CheckpointError::UnknownArchitecture { reason, .. }) => (None, reason),
        Err(e) => return Err(e),
    };
    let mut tensors = Vec::with_capacity(ckpt.state_dict.len());
    for (name, t) in ckpt.state_dict.iter() {
        let sha256 = if tensor_hashes {
            let bytes = tensor_bytes(t).map_err(|e| CheckpointError::torch(path, e))?;
            Some(hex(&Sha256::digest(&bytes)))
        } else {
            None
        };
        tensors.push(TensorSummary {
            name: name.to_owned(),
            shape: t.size(),
            dtype: format!("{:?}", t.kind()),
            sha256,
        });
    }
    Ok(CheckpointSummary {
        path: path.to_owned(),
        format: ckpt.format,
        file_size,
        sha256,
        architecture,
        architecture_note,
        tensor_count: ckpt.state_dict.len(),
        parameter_count: ckpt.state_dict.parameter_count(),
        meta: ckpt.meta,
        tensors,
    })
}

impl fmt::Display for CheckpointSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file:         {}", self.path.display())?;
        writeln!(f, "format:       {}", self.format)?;
        writeln!(f, "size:         {} bytes", self.file_size)?;
        writeln!(f, "sha256:       {}", self.sha256)?;
        match &self.architecture {
            Some(a) => writeln!(f, "architecture: {a} [{}]", self.architecture_note)?,
            None => writeln!(f, "architecture: unknown ({})", self.architecture_note)?,
        }
        writeln!(f, "tensors:      {}", self.tensor_count)?;
        writeln!(f, "parameters:   {}", self.parameter_count)?;
        if let Some(m) = &self.meta {
            let p = &m.provenance;
            writeln!(
                f,
                "written by:   lethe {} at unix time {}",
                p.lethe_version, p.created_unix
            )?;
            if let Some(s) = &p.source {
                writeln!(f, "source:       {s}")?;
            }
            for (k, v) in &p.notes {
                writeln!(f, "note:         {k} = {v}")?;
            }
        }
        if self.tensors.iter().any(|t| t.sha256.is_some()) {
            writeln!(f, "tensor hashes (sha256 of raw data):")?;
            for t in &self.tensors {
                writeln!(
                    f,
                    "  {} {} {:?} {}",
                    t.name,
                    t.dtype,
                    t.shape,
                    t.sha256.as_deref().unwrap_or("-")
                )?;
            }
        }
        Ok(())
    }
}
