//! The Lethe desktop workbench (egui/eframe). The binary `lethe` opens it when
//! started without arguments; this library holds everything so that the state
//! logic and the widgets can be tested headless.
//!
//! Data flows one way: files → engine → worker events → GUI state → views.
//! The GUI never loads a plugin itself: plugin scans and jobs run in worker
//! processes, so a crashing plugin costs one job, never the window.

pub mod app;
pub mod artifacts;
pub mod attack_report;
pub mod bench_gui;
pub mod catalog;
pub mod devices;
pub mod evaluation;
pub mod export;
pub mod form;
pub mod jobs;
pub mod panels;
pub mod project;
pub mod runner;
pub mod state;
pub mod study;
pub mod study_tasks;
pub mod tasks;
pub mod thumbs;
pub mod verify;
pub mod widgets;

pub use app::run;
