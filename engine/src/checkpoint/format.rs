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
    // Safetensors first: its 8-byte little-endian header length can itself start
    // with 0x80 0x02..0x05 (a 640-1408-byte header), which looks like a pickle.
    // A legacy torch.save file never has `{` at byte 8 (its magic number is there).
    if n >= 9 && head[8] == b'{' {
        return Ok(CheckpointFormat::Safetensors);
    }
    if head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Err(CheckpointError::unsupported(
            path,
            "legacy (pre-1.6, non-zip) torch.save format; re-save it with a current PyTorch: torch.save(torch.load(f), g)",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safetensors_header_of_640_bytes_is_not_a_legacy_pickle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let mut bytes = 0x0280u64.to_le_bytes().to_vec();
        bytes.push(b'{');
        bytes.extend(std::iter::repeat_n(b' ', 0x0280 - 2));
        bytes.push(b'}');
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            detect_format(&path),
            Ok(CheckpointFormat::Safetensors)
        ));
        // The legacy magic (protocol 2, then the pickled magic number) is refused.
        let legacy = dir.path().join("old.pt");
        std::fs::write(&legacy, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
        assert!(matches!(
            detect_format(&legacy),
            Err(CheckpointError::Unsupported { .. })
        ));
    }
}
