//! A plugin entry from a future, incompatible ABI major. The host must refuse it
//! after reading only the version field, and never call its functions (which
//! therefore all fail loudly).
#![deny(missing_docs)]

use lethe_plugin_api::abi::{LetheAbiVersion, LethePluginEntry, LetheStatus};
use std::ffi::{c_char, c_void};

unsafe extern "C" fn init(_path: *const c_char) -> LetheStatus {
    LetheStatus::BAD_STATE
}

unsafe extern "C" fn deinit() {}

unsafe extern "C" fn get_factory(_id: *const c_char) -> *const c_void {
    std::ptr::null()
}

unsafe extern "C" fn last_error() -> *const c_char {
    c"the host should have refused this plugin before calling it".as_ptr()
}

/// The entry, claiming ABI major + 1.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static lethe_plugin_entry: LethePluginEntry = LethePluginEntry {
    abi: LetheAbiVersion {
        major: lethe_plugin_api::ABI_MAJOR + 1,
        minor: 0,
    },
    build: lethe_plugin_api::build_info("", None, None, None),
    init,
    deinit,
    get_factory,
    last_error,
};
