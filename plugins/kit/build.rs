fn main() {
    // The kit is an rlib, but its unit-test harness links libtorch: give it the
    // project's rpath like every other linked artifact.
    lethe_build::link_libtorch();
}
