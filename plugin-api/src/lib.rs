//! The stable C ABI between Lethe and its native plugins.
//!
//! This crate is deliberately small and has no GUI or libtorch dependency; the
//! ABI types arrive with the plugin-host work (issue: Plugin ABI).
#![deny(missing_docs)]

/// Major version of the plugin ABI: a host loads only plugins with the same major.
pub const ABI_MAJOR: u32 = 0;
/// Minor version of the plugin ABI: grows when extensions are added compatibly.
pub const ABI_MINOR: u32 = 1;
