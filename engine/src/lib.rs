//! Lethe's headless core: everything the GUI, the CLI and the plugins build on,
//! testable without a display.

pub mod audit;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod eval;
pub mod exec;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod plugin_host;
pub mod preview;
pub mod report;
pub mod resources;
pub mod runtime;
pub mod shadows;
pub mod study;
pub mod train;
pub mod user_error;
pub mod worker;
