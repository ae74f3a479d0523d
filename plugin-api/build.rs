//! Records the target triple so plugins and hosts can compare builds at load time.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=LETHE_PLUGIN_API_TARGET={target}");
}
