//! Build-script helper shared by every Lethe crate that produces a linked artifact
//! (binaries, test harnesses, plugin `cdylib`s).
//!
//! Why it exists: `torch-sys` adds `-ltorch_cuda` but the default `--as-needed`
//! linking drops it (nothing references its symbols directly), so a GPU build would
//! silently run on the CPU; and it sets no rpath on downstream binaries, so they
//! would need `LD_LIBRARY_PATH`. Each `build.rs` calls [`link_libtorch`].

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Where libtorch lives and what it is, as found at build time.
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// The `lib/` folder holding `libtorch_cpu.so` and friends (canonical path).
    pub lib_dir: PathBuf,
    /// The version string from the torch package, e.g. `2.13.0+cu130`.
    pub version: String,
    /// Whether this libtorch ships CUDA kernels (`libtorch_cuda.so`).
    pub cuda: bool,
}

/// Finds libtorch through the `LIBTORCH` variable (set in `.cargo/config.toml`).
pub fn locate() -> Result<Libtorch, String> {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = env::var_os("LIBTORCH").ok_or_else(|| {
        "LIBTORCH is not set; run `installer/setup.sh` (it installs torch into .venv and \
         links .libtorch), or set LIBTORCH to a libtorch folder"
            .to_string()
    })?;
    let root = PathBuf::from(root);
    let lib_dir = root.join("lib");
    let lib_dir = fs::canonicalize(&lib_dir).map_err(|e| {
        format!(
            "libtorch lib folder {} is missing ({e}); run `installer/setup.sh`",
            lib_dir.display()
        )
    })?;
    let version = read_version(&root).unwrap_or_else(|| "unknown".to_string());
    let cuda = lib_dir.join("libtorch_cuda.so").exists();
    Ok(Libtorch {
        lib_dir,
        version,
        cuda,
    })
}

fn read_version(root: &Path) -> Option<String> {
    // pip wheels carry torch/version.py; libtorch zips carry build-version.
    let py = root.join("version.py");
    println!("cargo:rerun-if-changed={}", py.display());
    if let Ok(text) = fs::read_to_string(&py) {
        for line in text.lines() {
            if line.starts_with("__version__")
                && let Some((_, value)) = line.rsplit_once('=')
            {
                return Some(value.trim().trim_matches(['\'', '"']).to_string());
            }
        }
    }
    fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Emits the linker arguments for the calling package and exports
/// `LETHE_LIBTORCH_VERSION`, `LETHE_LIBTORCH_LIB` and `LETHE_LIBTORCH_CUDA` to its code.
///
/// Panics with a readable message when libtorch cannot be found: a build script has
/// no better way to fail.
pub fn link_libtorch() -> Libtorch {
    let lt = match locate() {
        Ok(lt) => lt,
        Err(msg) => panic!("{msg}"),
    };
    let dir = lt.lib_dir.display();
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    // LETHE_LINK_CUDA=0 builds the CPU-only package (installer/package.sh cpu): the
    // binary then needs only libtorch_cpu and friends, not the 3 GB of CUDA libraries.
    println!("cargo:rerun-if-env-changed=LETHE_LINK_CUDA");
    let link_cuda = lt.cuda && env::var("LETHE_LINK_CUDA").map_or(true, |v| v != "0");
    if link_cuda {
        // Keep libtorch_cuda.so in DT_NEEDED even though no symbol of ours refers to it:
        // its static initialisers register the CUDA backend with the dispatcher.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-env=LETHE_LIBTORCH_VERSION={}", lt.version);
    println!("cargo:rustc-env=LETHE_LIBTORCH_LIB={dir}");
    println!("cargo:rustc-env=LETHE_LIBTORCH_CUDA={}", lt.cuda);
    lt
}
