fn main() {
    // An rlib, but its test executables link libtorch (through the SDK's tch
    // feature): give them the project's rpath like every other linked artifact.
    lethe_build::link_libtorch();
}
