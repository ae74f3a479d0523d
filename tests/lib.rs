//! Helpers for the end-to-end tests in `e2e/`.

use std::path::PathBuf;

pub mod slurm;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Path of a binary built in the same profile as the running test.
///
/// Cargo builds the workspace's default members before running tests, so the
/// binaries are next to the test harness's `deps/` folder.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    profile_dir.join(name)
}

/// Like [`built_binary`], but fails the test with a hint when the binary is missing.
pub fn require_binary(name: &str) -> PathBuf {
    let p = built_binary(name);
    assert!(
        p.exists(),
        "{} is not built; run the suite with `./run test` (or `cargo test --workspace`, which \
         builds every binary that has integration tests)",
        p.display()
    );
    p
}
