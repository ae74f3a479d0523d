//! Headless entry point: the same commands as `lethe`, without the GUI libraries.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match lethe_engine::cli::run(lethe_engine::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The message only: a backtrace is for panics, not for user errors.
        Err(e) => lethe_engine::user_error::report(&e),
    }
}
