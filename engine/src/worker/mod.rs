//! Out-of-process jobs. Every plugin scan and plugin run happens in a separate
//! `lethe worker` process (the current executable re-run with a hidden subcommand,
//! as clap-validator does), so a plugin that segfaults, aborts, hangs or prints to
//! stdout costs one failed job, never the GUI or CLI.
//!
//! * [`protocol`]: the versioned, length-prefixed frames both sides speak;
//! * [`child`]: the worker (`lethe worker`);
//! * [`parent`]: [`spawn_worker`] / [`WorkerHandle`], used by the CLI and the GUI;
//! * [`scan_plugins`], [`plugin_dirs`] and [`find_plugin`]: `lethe plugins list`;
//! * [`check`]: `lethe plugins check`; [`unlearn`]: `lethe unlearn`;
//! * [`scan_cache`]: scans kept by library hash, and the quarantine.

pub mod check;
pub mod child;
pub mod cli;
pub mod parent;
pub mod protocol;
pub mod scan_cache;
pub mod unlearn;

pub use parent::{
    JobOutcome, JobReport, WorkerHandle, WorkerOptions, run_job, signal_name, spawn_worker,
    spawn_worker_cancelled,
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

/// Set (non-empty, not `0`) to list the workspace's test fixtures and plugin
/// template found in a cargo build's profile folder (`--dev-plugins` sets it).
pub const DEV_PLUGINS_ENV: &str = "LETHE_DEV_PLUGINS";

/// Whether the development-only plugins are listed ([`DEV_PLUGINS_ENV`]).
pub fn dev_plugins_shown() -> bool {
    std::env::var_os(DEV_PLUGINS_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `path` is one of the workspace's test fixtures or its plugin
/// template: libraries that misbehave on purpose or only show how to write a
/// plugin, which a development build puts beside the real ones.
fn is_dev_only(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.starts_with("liblethe_test_fixture") || n.starts_with("liblethe_plugin_template.")
    })
}

/// The plugin libraries (`*.so` on Linux) directly inside `dir`, by file name.
/// In a cargo profile folder, the test fixtures and the template are left out
/// unless [`dev_plugins_shown`].
pub fn list_libraries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let hide_dev = dir.join(".cargo-lock").exists() && !dev_plugins_shown();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file()
            && path.extension().is_some_and(|e| e == LIBRARY_EXTENSION)
            && !(hide_dev && is_dev_only(&path))
        {
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
/// With [`WorkerOptions::scan_cache`], libraries described before (same bytes)
/// are not loaded again and libraries that killed a scanning worker are
/// quarantined (see [`scan_cache`]).
pub fn scan_plugins_files(opts: &WorkerOptions, all: &[PathBuf]) -> Vec<ScannedFile> {
    match &opts.scan_cache {
        None => scan_fresh(opts, all).into_iter().map(|(f, _)| f).collect(),
        Some(file) => scan_cached(opts, all, file),
    }
}

/// Each library's description, and whether it killed the worker scanning it.
/// All go to one worker; if it dies, each is retried in its own, so the culprit
/// is named and the rest are still listed.
fn scan_fresh(opts: &WorkerOptions, all: &[PathBuf]) -> Vec<(ScannedFile, bool)> {
    if let Ok(files) = scan_in_worker(opts, all) {
        return files.into_iter().map(|f| (f, false)).collect();
    }
    all.iter()
        .map(
            |lib| match scan_in_worker(opts, std::slice::from_ref(lib)) {
                Ok(mut one) if one.len() == 1 => (one.remove(0), false),
                Ok(_) => (
                    ScannedFile {
                        path: lib.clone(),
                        outcome: Err("the worker returned no report".into()),
                    },
                    false,
                ),
                Err(failure) => (
                    ScannedFile {
                        path: lib.clone(),
                        outcome: Err(failure.why),
                    },
                    // A worker that died before its hello never loaded it.
                    failure.after_hello,
                ),
            },
        )
        .collect()
}

fn scan_cached(opts: &WorkerOptions, all: &[PathBuf], file: &Path) -> Vec<ScannedFile> {
    let mut cache = scan_cache::ScanCache::read(file);
    let hashes = scan_cache::hashes(all);
    let mut out: Vec<Option<ScannedFile>> = vec![None; all.len()];
    let mut todo = Vec::new();
    for (i, (lib, hash)) in all.iter().zip(&hashes).enumerate() {
        match hash.as_deref().and_then(|h| cache.get(h)) {
            Some(e) if e.quarantined => out[i] = Some(scan_cache::quarantined(e, lib, file)),
            Some(e) => {
                out[i] = Some(ScannedFile {
                    path: lib.clone(),
                    outcome: e.scanned.outcome.clone(),
                })
            }
            None => todo.push(i),
        }
    }
    let libraries: Vec<PathBuf> = todo.iter().map(|&i| all[i].clone()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut changed = false;
    for (&i, (scanned, killed)) in todo.iter().zip(scan_fresh(opts, &libraries)) {
        // Only descriptions and quarantines are kept: a refusal (ABI, missing
        // dependency, allow-list) depends on this machine's state and is cheap
        // to find again.
        if let Some(hash) = &hashes[i]
            && (killed || scanned.outcome.is_ok())
        {
            cache.put(scan_cache::CacheEntry {
                sha256: hash.clone(),
                path: all[i].clone(),
                scanned: scanned.clone(),
                quarantined: killed,
                at: now,
            });
            changed = true;
        }
        out[i] = Some(scanned);
    }
    if changed {
        // A cache that cannot be written costs the next start a rescan, nothing more.
        let _ = cache.write(file);
    }
    out.into_iter()
        .zip(all)
        .map(|(f, lib)| {
            f.unwrap_or_else(|| ScannedFile {
                path: lib.clone(),
                outcome: Err("not scanned".into()),
            })
        })
        .collect()
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

/// How a scanning worker failed.
struct ScanFailure {
    /// What happened, with the worker's stderr tail.
    why: String,
    /// Whether it had answered the hello (so it was loading libraries).
    after_hello: bool,
}

/// One scan job.
fn scan_in_worker(
    opts: &WorkerOptions,
    libraries: &[PathBuf],
) -> Result<Vec<ScannedFile>, ScanFailure> {
    if libraries.is_empty() {
        return Ok(Vec::new());
    }
    let job = Job::Scan {
        libraries: libraries.to_vec(),
    };
    let report = run_job(opts, job, |_| {}).map_err(|e| ScanFailure {
        why: format!("cannot start the worker: {e}"),
        after_hello: false,
    })?;
    match report.outcome {
        JobOutcome::Succeeded(value) => serde_json::from_value::<ScanReport>(value)
            .map(|r| r.files)
            .map_err(|e| ScanFailure {
                why: format!("bad scan report: {e}"),
                after_hello: false,
            }),
        other => {
            let tail = report.stderr_tail.trim();
            Err(ScanFailure {
                why: if tail.is_empty() {
                    format!("loading it {other}")
                } else {
                    format!("loading it {other}; worker stderr:\n{tail}")
                },
                after_hello: report.answered_hello,
            })
        }
    }
}
