//! The `lethe` command line, shared by the GUI binary (`lethe`) and the headless one
//! (`lethe-cli`).

use crate::runtime::RuntimeReport;
use clap::{Parser, Subcommand};

/// Lethe: machine unlearning workbench.
#[derive(Debug, Parser)]
#[command(name = "lethe", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of the CLI.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report the libtorch build, CUDA and cuDNN availability and thread count.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command; the binary maps the error to a non-zero exit.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor { json } => {
            let report = RuntimeReport::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}
