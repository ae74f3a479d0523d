//! `lethe`: with no arguments, the desktop workbench; with arguments, the CLI
//! (the same commands as the headless `lethe-cli`).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if std::env::args_os().len() > 1 {
        return lethe_engine::cli::run(lethe_engine::cli::Cli::parse());
    }
    lethe_app::run()
}
