//! A plugin entry with the right ABI but built "against" another libtorch and tch
//! (the build info is forged to what an older toolchain would record). The host
//! must refuse it before `init`, naming both differences.
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

/// The entry, claiming libtorch 2.0.0 / tch 0.13.0.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static lethe_plugin_entry: LethePluginEntry = LethePluginEntry {
    abi: LetheAbiVersion::CURRENT,
    build: lethe_plugin_api::build_info("0.13.0", Some("2.0.0+cpu"), Some("false"), Some("1")),
    init,
    deinit,
    get_factory,
    last_error,
};
