//! Recognising a checkpoint's format from its first bytes (not its extension:
//! `.pt` is used for both torch.save and TorchScript files).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::CheckpointError;
use super::torch_zip::{self, ZipKind};

/// File formats Lethe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointFormat {
    /// safetensors (Lethe's own format when it carries `lethe` metadata).
    Safetensors,
    /// A `torch.save` zip archive (`.pt`/`.pth`) holding a state dict.
    TorchSave,
    /// A TorchScript module saved by `torch.jit.save`.
    TorchScript,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::Safetensors => "safetensors",
            CheckpointFormat::TorchSave => "PyTorch torch.save archive",
            CheckpointFormat::TorchScript => "TorchScript module",
        })
    }
}

/// Detects the format of the file at `path`.
pub fn detect_format(path: &Path) -> Result<CheckpointFormat, CheckpointError> {
    let mut head = [0u8; 16];
    let mut f = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        let got = f
            .read(&mut head[n..])
            .map_err(|e| CheckpointError::io(path, e))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    if n == 0 {
        return Err(CheckpointError::corrupt(path, "the file is empty"));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(match torch_zip::zip_kind(path)? {
            ZipKind::TorchSave => CheckpointFormat::TorchSave,
            ZipKind::TorchScript => CheckpointFormat::TorchScript,
        });
    }
    if head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Err(CheckpointError::unsupported(
            path,
            "legacy (pre-1.6, non-zip) torch.save format; re-save it with a current PyTorch: torch.save(torch.load(f), g)",
        ));
    }
    if n >= 9 && head[8] == b'{' {
        return Ok(CheckpointFormat::Safetensors);
    }
    if n < 9 {
        return Err(CheckpointError::corrupt(
            path,
            format!("only {n} bytes long"),
        ));
    }
    Err(CheckpointError::UnknownFormat {
        path: path.to_owned(),
        reason: "neither safetensors nor a PyTorch zip archive".into(),
    })
}
