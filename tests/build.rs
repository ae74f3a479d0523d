fn main() {
    // The baselines tests link libtorch (through lethe-engine): give the test
    // executables the project's rpath like every other linked artifact.
    lethe_build::link_libtorch();
}
