//! Records the target triple so plugins and hosts can compare builds at load time,
//! and, with the `tch` feature, links this crate's own test binaries against the
//! project's libtorch (with an rpath) like every other Lethe artifact.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=LETHE_PLUGIN_API_TARGET={target}");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some() {
        lethe_build::link_libtorch();
    }
}
