fn main() {
    // Links tch, so it records the libtorch it was built against in its build info.
    lethe_build::link_libtorch();
}
