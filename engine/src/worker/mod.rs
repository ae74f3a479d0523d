//! Out-of-process jobs. Every plugin scan and plugin run happens in a separate
//! `lethe worker` process (the current executable re-run with a hidden subcommand,
//! as clap-validator does), so a plugin that segfaults, aborts, hangs or prints to
//! stdout costs one failed job, never the GUI or CLI.
//!
//! * [`protocol`]: the versioned, length-prefixed frames both sides speak;
//! * [`child`]: the worker (`lethe worker`);
//! * [`parent`]: [`spawn_worker`] / [`WorkerHandle`], used by the CLI and the GUI;
//! * [`scan_plugins`], [`plugin_dirs`] and [`find_plugin`]: `lethe plugins list`;
//! * [`check`]: `lethe plugins check`; [`unlearn`]: `lethe unlearn`.

pub mod check;
pub mod child;
pub mod cli;
pub mod parent;
pub mod protocol;
pub mod unlearn;

pub use parent::{
    JobOutcome, JobReport, WorkerHandle, WorkerOptions, run_job, signal_name, spawn_worker,
};
pub use protocol::{FromWorker, Job, ScanReport, ScannedFile, ToWorker};

use crate::plugin_host::LIBRARY_EXTENSION;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Plugin folders to search, existing ones only, without duplicates, in order:
/// `extra` (the `--plugins` folders), each entry of `$LETHE_PLUGIN_PATH`, the user folder
/// (`$XDG_DATA_HOME/lethe/plugins`, else `~/.local/share/lethe/plugins`), the
/// install's `<exe>/../lib/lethe/plugins`, and in a cargo build the profile folder
/// holding the workspace's freshly built plugin libraries.
pub fn plugin_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = extra.to_vec();
    if let Some(path) = std::env::var_os("LETHE_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(data).join("lethe/plugins"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/share/lethe/plugins"));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("../lib/lethe/plugins"));
        // cargo marks its profile folders (target/debug) with this lock file; the
        // cdylibs of the workspace's plugin crates land right there.
        if exe_dir.join(".cargo-lock").exists() {
            dirs.push(exe_dir);
        }
    }
    let mut seen = Vec::new();
    dirs.into_iter()
        .filter(|d| d.is_dir())
        .filter(|d| {
            let key = d.canonicalize().unwrap_or_else(|_| d.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .collect()
}

/// The plugin libraries (`*.so` on Linux) directly inside `dir`, by file name.
pub fn list_libraries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == LIBRARY_EXTENSION) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One plugin folder as scanned.
#[derive(Debug, Clone, Serialize)]
pub struct DirScan {
    /// The folder.
    pub dir: PathBuf,
    /// Its libraries, or why the folder could not be read.
    pub files: Result<Vec<ScannedFile>, String>,
}

/// Loads every library in `dirs` in worker processes and describes it. All
/// libraries go to one worker; if that worker dies (a library crashed or hung in
/// its initialisers), each library is retried in its own worker so the culprit
/// is named and the rest are still listed.
pub fn scan_plugins(opts: &WorkerOptions, dirs: &[PathBuf]) -> Vec<DirScan> {
    let listed: Vec<(PathBuf, Result<Vec<PathBuf>, String>)> = dirs
        .iter()
        .map(|d| (d.clone(), list_libraries(d).map_err(|e| e.to_string())))
        .collect();
    let all: Vec<PathBuf> = listed
        .iter()
        .filter_map(|(_, f)| f.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let mut scanned = scan_plugins_files(opts, &all);
    listed
        .into_iter()
        .map(|(dir, files)| DirScan {
            files: files.map(|files| {
                files
                    .iter()
                    .map(|f| match scanned.iter().position(|s| &s.path == f) {
                        Some(i) => scanned.remove(i),
                        None => ScannedFile {
                            path: f.clone(),
                            outcome: Err("not scanned".into()),
                        },
                    })
                    .collect()
            }),
            dir,
        })
        .collect()
}

/// Loads each library file in worker processes and describes it, in order.
pub fn scan_plugins_files(opts: &WorkerOptions, all: &[PathBuf]) -> Vec<ScannedFile> {
    scan_in_worker(opts, all).unwrap_or_else(|_| {
        all.iter()
            .map(
                |lib| match scan_in_worker(opts, std::slice::from_ref(lib)) {
                    Ok(mut one) if one.len() == 1 => one.remove(0),
                    Ok(_) => ScannedFile {
                        path: lib.clone(),
                        outcome: Err("the worker returned no report".into()),
                    },
                    Err(why) => ScannedFile {
                        path: lib.clone(),
                        outcome: Err(why),
                    },
                },
            )
            .collect()
    })
}

/// The first library in `dirs` (in search order) that offers `id`, with that
/// descriptor; the error lists what the folders do offer.
pub fn find_plugin(
    opts: &WorkerOptions,
    dirs: &[PathBuf],
    id: &str,
) -> Result<(PathBuf, protocol::DescriptorInfo), String> {
    let scans = scan_plugins(opts, dirs);
    let (mut offered, mut refused) = (Vec::new(), Vec::new());
    for file in scans.iter().filter_map(|s| s.files.as_ref().ok()).flatten() {
        match &file.outcome {
            Ok(descriptors) => {
                for d in descriptors {
                    if d.id == id {
                        return Ok((file.path.clone(), d.clone()));
                    }
                    offered.push(d.id.clone());
                }
            }
            // The plugin may be among these: say so rather than "not found".
            Err(why) => refused.push(format!("\n  {}: {why}", file.path.display())),
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "no plugin offers `{id}` in {}; available: {}{}",
        if searched.is_empty() {
            "any plugin folder (none found; pass --plugins DIR or set LETHE_PLUGIN_PATH)".into()
        } else {
            searched.join(", ")
        },
        if offered.is_empty() {
            "none".into()
        } else {
            offered.join(", ")
        },
        if refused.is_empty() {
            String::new()
        } else {
            format!("; these libraries could not be loaded:{}", refused.concat())
        }
    ))
}

/// One scan job; `Err` says how the worker failed, with its stderr tail.
fn scan_in_worker(opts: &WorkerOptions, libraries: &[PathBuf]) -> Result<Vec<ScannedFile>, String> {
    if libraries.is_empty() {
        return Ok(Vec::new());
    }
    let job = Job::Scan {
        libraries: libraries.to_vec(),
    };
    let report = run_job(opts, job, |_| {}).map_err(|e| format!("cannot start the worker: {e}"))?;
    match report.outcome {
        JobOutcome::Succeeded(value) => serde_json::from_value::<ScanReport>(value)
            .map(|r| r.files)
            .map_err(|e| format!("bad scan report: {e}")),
        other => {
            let tail = report.stderr_tail.trim();
            Err(if tail.is_empty() {
                format!("loading it {other}")
            } else {
                format!("loading it {other}; worker stderr:\n{tail}")
            })
        }
    }
}
