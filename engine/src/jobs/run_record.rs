//! `run.json`: what `lethe unlearn` did, written into its output folder beside the
//! unlearned model, so a report or an auditor can say who forgot what, how, and
//! on what, without the process that did it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{FileRef, path_sha256};

/// The file name inside a run folder.
pub const RUN_FILE: &str = "run.json";

/// A file and its SHA-256 at the time of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedPath {
    /// The path as given.
    pub path: PathBuf,
    /// SHA-256 (hex); folders hash as their `sha256sum` manifest.
    pub sha256: Option<String>,
}

impl HashedPath {
    /// Hashes `path` now.
    pub fn of(path: &Path) -> HashedPath {
        HashedPath {
            path: path.to_path_buf(),
            sha256: path_sha256(path),
        }
    }
}

/// The deletion request: the forget list and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// The list file and its hash.
    pub list: HashedPath,
    /// Training samples it names (all of them matched: a list naming a sample
    /// outside the training split is refused before the job starts).
    pub samples: usize,
    /// Image files of the request that matched no training sample, as noted in
    /// the list's header by the GUI (`# N image file(s) matched no training sample`).
    pub unmatched_files: usize,
}

impl ForgetRequest {
    /// Reads the list: entries (non-comment lines, JSON array entries) and the
    /// unmatched-files note. A folder of the data subject's pictures counts its
    /// pictures: the job refuses a folder where any picture matches no training
    /// sample, so each one names at least one.
    pub fn read(path: &Path) -> ForgetRequest {
        if path.is_dir() {
            let samples = std::fs::read_dir(path)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| crate::data::is_image_file(&e.path()))
                        .count()
                })
                .unwrap_or(0);
            return ForgetRequest {
                list: HashedPath::of(path),
                samples,
                unmatched_files: 0,
            };
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let samples = if is_json {
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(a)) => a.len(),
                Ok(v) => v["indices"].as_array().map_or(0, Vec::len),
                Err(_) => 0,
            }
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter(|l| {
                    l.split(',')
                        .next()
                        .is_some_and(|c| c.trim().parse::<i64>().is_ok())
                })
                .count()
        };
        let unmatched_files = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .find_map(|l| {
                let l = l.trim();
                l.contains("matched no training sample")
                    .then(|| l.split_whitespace().next()?.parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        ForgetRequest {
            list: HashedPath::of(path),
            samples,
            unmatched_files,
        }
    }
}

/// The plugin that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginFile {
    /// Descriptor id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Descriptor version.
    pub version: String,
    /// The library and its hash.
    pub library: HashedPath,
}

/// Software and machine the job ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// Lethe version.
    pub lethe: String,
    /// libtorch version the binary was built against.
    pub libtorch: String,
    /// `tch` crate version.
    pub tch: String,
    /// Whether CUDA was usable, and how many devices.
    pub cuda_devices: i64,
    /// cuDNN version when CUDA was usable.
    pub cudnn: Option<i64>,
    /// CPU threads libtorch used.
    pub threads: i32,
    /// Operating system and architecture.
    pub os: String,
}

impl Software {
    /// This process's software.
    pub fn probe() -> Software {
        let r = crate::runtime::RuntimeReport::probe();
        let pretty = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Software {
            lethe: env!("CARGO_PKG_VERSION").to_string(),
            libtorch: r.libtorch_version,
            tch: r.tch_version.to_string(),
            cuda_devices: if r.cuda { r.cuda_devices } else { 0 },
            cudnn: r.cudnn_version,
            threads: r.threads,
            os: format!("{pretty} ({})", std::env::consts::ARCH),
        }
    }
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Layout version of this file.
    pub format: u32,
    /// Who ran it.
    pub user: String,
    /// On which machine.
    pub host: String,
    /// Start and end, Unix seconds.
    pub started_unix: i64,
    /// End, Unix seconds.
    pub finished_unix: i64,
    /// Wall time of the worker job.
    pub seconds: f64,
    /// The method plugin.
    pub method: PluginFile,
    /// The parameters as given on the command line.
    pub params_given: Value,
    /// The parameters the plugin ran with (defaults filled in), from the unlearned
    /// model's provenance.
    pub params: Value,
    /// Seed.
    pub seed: u64,
    /// Device (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    /// The original model.
    pub original: HashedPath,
    /// The dataset.
    pub data: HashedPath,
    /// The deletion request.
    pub forget: ForgetRequest,
    /// The unlearned model (`None` when the method saved none).
    pub unlearned: Option<HashedPath>,
    /// Every file the job wrote, with its hash.
    pub outputs: Vec<FileRef>,
    /// Software and machine.
    pub software: Software,
}

impl RunRecord {
    /// Reads `run.json` from a run folder.
    pub fn load(run_dir: &Path) -> Result<RunRecord, super::JobError> {
        let path = run_dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| super::JobError::Invalid(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            super::JobError::Invalid(format!("{}: not a Lethe run record: {e}", path.display()))
        })
    }

    /// The command that repeats this run into `out`.
    pub fn reproduce_command(&self, out: &str) -> String {
        let params = serde_json::to_string(&self.params).unwrap_or_else(|_| "{}".into());
        let plugins = self
            .method
            .library
            .path
            .parent()
            .map(|d| format!("--plugins {} ", shell_quote(&d.display().to_string())))
            .unwrap_or_default();
        format!(
            "lethe {plugins}unlearn --method {} --checkpoint {} --data {} --forget {} --params {} --seed {} --device {} --out {}",
            shell_quote(&self.method.id),
            shell_quote(&self.original.path.display().to_string()),
            shell_quote(&self.data.path.display().to_string()),
            shell_quote(&self.forget.list.path.display().to_string()),
            shell_quote(&params),
            self.seed,
            shell_quote(&self.device),
            shell_quote(out),
        )
    }
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_requests_count_entries_and_the_unmatched_note() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("f.txt");
        std::fs::write(
            &txt,
            "# forget set \"x\" for d: folder (2 of 10 training samples)\n\
             # 3 image file(s) matched no training sample and are not in this list:\n\
             #   /a.png\n4\n\n7\n",
        )
        .unwrap();
        let r = ForgetRequest::read(&txt);
        assert_eq!((r.samples, r.unmatched_files), (2, 3));
        assert_eq!(r.list.sha256.as_deref().map(str::len), Some(64));
        let csv = dir.path().join("f.csv");
        std::fs::write(&csv, "index,name\n1,a\n2,b\n3,c\n").unwrap();
        assert_eq!(ForgetRequest::read(&csv).samples, 3);
        let json = dir.path().join("f.json");
        std::fs::write(&json, r#"{"indices": [1, 2]}"#).unwrap();
        assert_eq!(ForgetRequest::read(&json).samples, 2);
    }

    #[test]
    fn shell_quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("runs/a-1.txt"), "runs/a-1.txt");
        assert_eq!(shell_quote(r#"{"lr":0.1}"#), r#"'{"lr":0.1}'"#);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
