fn main() {
    // Links libtorch with an rpath (the unit tests are executables too) and records
    // its version in the plugin's build info.
    lethe_build::link_libtorch();
}
