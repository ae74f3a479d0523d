//! `lethe`: with no arguments, the desktop workbench; with arguments, the CLI
//! (the same commands as the headless `lethe-cli`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The message only: a backtrace is for panics, not for user errors.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => lethe_engine::user_error::report(&e),
    }
}

fn run() -> anyhow::Result<()> {
    // `lethe --dev-plugins` alone is the window, with the development-only plugins.
    if std::env::args_os().skip(1).eq(["--dev-plugins"]) {
        // SAFETY: the first thing the process does, before any thread of ours.
        unsafe { std::env::set_var(lethe_engine::worker::DEV_PLUGINS_ENV, "1") };
        return lethe_app::run();
    }
    if std::env::args_os().len() > 1 {
        let cli = lethe_engine::cli::Cli::parse();
        // Only this binary links the GUI, so only it adds the frame-time row.
        if let lethe_engine::cli::Command::Bench(args) = cli.command {
            let gui = lethe_engine::bench::ExtraSection {
                name: "gui heatmap frame time".into(),
                run: Box::new(lethe_app::bench_gui::section),
            };
            return lethe_engine::bench::run_with(*args, vec![gui]);
        }
        return lethe_engine::cli::run(cli);
    }
    lethe_app::run()
}
