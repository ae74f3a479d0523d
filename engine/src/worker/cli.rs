//! `lethe plugins …`: the CLI side of plugin scanning.

use super::{DirScan, WorkerOptions, default_plugin_dirs, scan_plugins};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// `lethe plugins …`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin library with its methods and attacks, or why it was refused.
    List {
        /// Scan this folder instead of the default ones (repeatable).
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `plugins` subcommand.
pub fn run(command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List { dir, json } => {
            let dirs = if dir.is_empty() {
                default_plugin_dirs()
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
    }
    Ok(())
}

fn render(scans: &[DirScan]) -> String {
    let mut out = String::new();
    if scans.is_empty() {
        out.push_str("no plugin folders found (set LETHE_PLUGIN_PATH or pass --dir)\n");
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
