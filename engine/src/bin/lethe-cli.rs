//! Headless entry point: the same commands as `lethe`, without the GUI libraries.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    lethe_engine::cli::run(lethe_engine::cli::Cli::parse())
}
