fn main() {
    // Links the project's libtorch with an rpath and records its version in the
    // plugin's build info; the host refuses a plugin built against another one.
    lethe_build::link_libtorch();
}
