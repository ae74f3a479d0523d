//! Where the bundled `resources/` folder (demo data and models, report templates)
//! is: one rule for the CLI and the desktop app.

use std::path::PathBuf;

/// The bundled `resources/` folder: `../share/lethe/resources` beside an
/// installed binary when it holds the demo, else the source tree's (a binary
/// run from `target/`).
pub fn bundled_dir() -> PathBuf {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("../share/lethe/resources")));
    let dir = match beside_exe {
        Some(p) if p.join("demo").is_dir() => p,
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../resources"),
    };
    std::fs::canonicalize(&dir).unwrap_or(dir)
}
