//! `lethe plugins …`: the CLI side of plugin scanning and conformance checks.

use super::check::{Demo, Verdict, check_plugin};
use super::{DirScan, WorkerOptions, plugin_dirs, scan_plugins};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `lethe plugins …`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin library with its methods and attacks, or why it was refused.
    List {
        /// Scan only this folder (repeatable) instead of the search path.
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Conformance check of one plugin library: it loads, its descriptors and
    /// parameter defaults are valid, each method or attack runs with its defaults
    /// on the bundled demo, and it stops when cancelled.
    Check {
        /// The plugin library (`.so`).
        file: PathBuf,
        /// Limit for each demo run, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Compute device for the demo runs: `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The resources folder holding `demo/` (default: the installed or source one).
        #[arg(long)]
        resources: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// A parameter for the demo runs, KEY=VALUE (repeatable): a demo value
        /// for a required parameter, or another setting to try. Each method or
        /// attack takes the keys it knows.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// Runs a `plugins` subcommand; `extra_dirs` are the global `--plugins` folders,
/// searched before the others.
pub fn run(
    command: PluginsCommand,
    extra_dirs: &[PathBuf],
    resources: &Path,
) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List { dir, json } => {
            let dirs = if dir.is_empty() {
                plugin_dirs(extra_dirs)
            } else {
                dir
            };
            let mut opts = WorkerOptions::current_exe()?;
            // Loading runs plugin initialisers; one that hangs must not hang the list.
            opts.timeout = Some(Duration::from_secs(60));
            let scans = scan_plugins(&opts, &dirs);
            if json {
                println!("{}", serde_json::to_string_pretty(&scans)?);
            } else {
                print!("{}", render(&scans));
            }
        }
        PluginsCommand::Check {
            file,
            timeout,
            device,
            resources: res,
            json,
            set,
        } => {
            if !file.is_file() {
                anyhow::bail!("{}: no such plugin library", file.display());
            }
            let set = match crate::cli::params::parse_params(None, &set)? {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            let mut opts = WorkerOptions::current_exe()?;
            opts.timeout = Some(Duration::from_secs(timeout));
            let demo = Demo::in_resources(res.as_deref().unwrap_or(resources));
            let scratch = tempfile_dir()?;
            let lines = check_plugin(&opts, &file, &demo, &device, scratch.path(), &set);
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", super::check::render(&file, &lines));
            }
            let failed = lines.iter().filter(|l| l.verdict == Verdict::Fail).count();
            if failed > 0 {
                anyhow::bail!("{}: {failed} conformance check(s) failed", file.display());
            }
        }
    }
    Ok(())
}

/// A scratch folder for the check's demo outputs, removed when dropped.
fn tempfile_dir() -> anyhow::Result<ScratchDir> {
    let base = std::env::temp_dir().join(format!(
        "lethe-check-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&base)
        .map_err(|e| anyhow::anyhow!("cannot create scratch folder {}: {e}", base.display()))?;
    Ok(ScratchDir(base))
}

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn render(scans: &[DirScan]) -> String {
    let mut out = String::new();
    if scans.is_empty() {
        out.push_str("no plugin folders found (pass --plugins DIR or set LETHE_PLUGIN_PATH)\n");
    }
    for scan in scans {
        out.push_str(&format!("{}\n", scan.dir.display()));
        let files = match &scan.files {
            Ok(files) => files,
            Err(e) => {
                out.push_str(&format!("  cannot read: {e}\n"));
                continue;
            }
        };
        if files.is_empty() {
            out.push_str("  (no plugin libraries)\n");
        }
        for f in files {
            let name = f.path.file_name().unwrap_or(f.path.as_os_str());
            match &f.outcome {
                Ok(descs) => {
                    out.push_str(&format!("  {}: ok\n", name.to_string_lossy()));
                    for d in descs {
                        out.push_str(&format!(
                            "    {:<8} {}  {} {}  ({})\n",
                            d.kind, d.id, d.name, d.version, d.description
                        ));
                    }
                }
                Err(why) => {
                    out.push_str(&format!("  {}: refused: {}\n", name.to_string_lossy(), why));
                }
            }
        }
    }
    out
}
