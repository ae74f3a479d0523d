fn main() {
    lethe_build::link_libtorch();
}
