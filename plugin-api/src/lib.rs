//! The stable C ABI between Lethe and its native plugins, and a safe SDK for
//! writing plugins in Rust.
//!
//! * [`abi`]: the `#[repr(C)]` structs, ids and status codes. No libtorch: tensors
//!   are opaque handles. Read its module docs for the lifecycle, thread tags and
//!   ownership rules.
//! * [`schema`]: parameter schemas (JSON) and the validation both sides run.
//! * [`sdk`]: the [`sdk::Plugin`] trait and the [`declare_plugin!`] macro. With the
//!   `tch` feature, tensor helpers for the model/data/result extensions.
//!
//! No GUI dependency, no libtorch without the `tch` feature.
#![deny(missing_docs)]

pub mod abi;
pub mod schema;
pub mod sdk;

/// The `tch` crate the SDK's tensor helpers use; depend on it through here so your
/// plugin links exactly the version recorded in its build info.
#[cfg(feature = "tch")]
pub use tch;

/// Major version of the plugin ABI: a host loads only plugins with the same major.
pub const ABI_MAJOR: u32 = 1;
/// Minor version of the plugin ABI: grows when extensions are added compatibly.
pub const ABI_MINOR: u32 = 6;

/// Version of this crate, recorded in every plugin's build info.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Target triple this crate was compiled for (so: of the plugin or host using it).
pub const TARGET_TRIPLE: &str = env!("LETHE_PLUGIN_API_TARGET");
/// The tch version the workspace pins (`tch = "=0.26.0"`), which the `tch` feature
/// links.
pub const TCH_VERSION: &str = "0.26.0";

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Build info for a plugin or host, from what its build script exported:
/// `libtorch_version` and `libtorch_cuda` are `option_env!("LETHE_LIBTORCH_VERSION")`
/// and `option_env!("LETHE_LIBTORCH_CUDA")` (set by `lethe_build::link_libtorch()`),
/// `cxx11_abi` is `option_env!("LIBTORCH_CXX11_ABI")` (torch-sys defaults to `1`).
/// Without a libtorch version the tch version is left empty too: such a binary
/// does not touch tensors.
pub const fn build_info(
    tch_version: &str,
    libtorch_version: Option<&str>,
    libtorch_cuda: Option<&str>,
    cxx11_abi: Option<&str>,
) -> abi::LetheBuildInfo {
    let (tch, libtorch) = match libtorch_version {
        Some(v) => (tch_version, v),
        None => ("", ""),
    };
    abi::LetheBuildInfo {
        plugin_api_version: abi::build_str(PLUGIN_API_VERSION),
        tch_version: abi::build_str(tch),
        libtorch_version: abi::build_str(libtorch),
        target_triple: abi::build_str(TARGET_TRIPLE),
        cuda: match libtorch_cuda {
            Some(v) => str_eq(v, "true"),
            None => false,
        },
        cxx11_abi: match cxx11_abi {
            Some(v) => !str_eq(v, "0"),
            None => true,
        },
    }
}

/// Exports the plugin entry symbol (`lethe_plugin_entry`) for the listed
/// [`sdk::Plugin`] types. Use it once per `cdylib`:
///
/// ```ignore
/// lethe_plugin_api::declare_plugin!(MyMethod, MyAttack);
/// ```
///
/// Each type lands in the method or attack factory according to its descriptor's
/// kind. The build info is taken from the plugin crate's build environment: call
/// `lethe_build::link_libtorch()` from its `build.rs` when it links tch, and
/// enable this crate's `tch` feature.
#[macro_export]
macro_rules! declare_plugin {
    ($($plugin:ty),+ $(,)?) => {
        const _: () = {
            static REGISTRY: $crate::sdk::__export::Registry = $crate::sdk::__export::Registry::new(&[
                $($crate::sdk::__export::PluginVTable::of::<$plugin>()),+
            ]);

            unsafe extern "C" fn init(path: *const ::std::ffi::c_char) -> $crate::abi::LetheStatus {
                // SAFETY: forwarded ABI contract (path is null or NUL-terminated).
                unsafe { REGISTRY.init(path) }
            }

            unsafe extern "C" fn deinit() {
                REGISTRY.deinit()
            }

            unsafe extern "C" fn get_factory(id: *const ::std::ffi::c_char) -> *const ::std::ffi::c_void {
                // SAFETY: forwarded ABI contract (id is null or NUL-terminated).
                unsafe { REGISTRY.get_factory(id) }
            }

            #[allow(non_upper_case_globals)]
            #[unsafe(no_mangle)]
            pub static lethe_plugin_entry: $crate::abi::LethePluginEntry = $crate::abi::LethePluginEntry {
                abi: $crate::abi::LetheAbiVersion::CURRENT,
                build: $crate::build_info(
                    $crate::sdk::__export::TCH_IN_USE,
                    ::std::option_env!("LETHE_LIBTORCH_VERSION"),
                    ::std::option_env!("LETHE_LIBTORCH_CUDA"),
                    ::std::option_env!("LIBTORCH_CXX11_ABI"),
                ),
                init,
                deinit,
                get_factory,
                last_error: $crate::sdk::__export::last_error,
            };
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_reads_the_build_environment() {
        let b = build_info("0.26.0", Some("2.13.0+cpu"), Some("false"), Some("1"));
        assert_eq!(abi::read_build_str(&b.tch_version), "0.26.0");
        assert_eq!(abi::read_build_str(&b.libtorch_version), "2.13.0+cpu");
        assert_eq!(abi::read_build_str(&b.target_triple), TARGET_TRIPLE);
        assert!(!b.cuda && b.cxx11_abi);
        let none = build_info("0.26.0", None, None, Some("0"));
        assert_eq!(abi::read_build_str(&none.tch_version), "");
        assert!(!none.cxx11_abi);
    }
}
