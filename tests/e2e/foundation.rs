//! The foundation's promises, checked on the built binaries: they run without
//! LD_LIBRARY_PATH, report the pinned libtorch, and really depend on libtorch_cuda.

use lethe_e2e::require_binary;
use std::process::Command;

fn doctor_json(bin: &str) -> serde_json::Value {
    let out = Command::new(require_binary(bin))
        .args(["doctor", "--json"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("spawn doctor");
    assert!(
        out.status.success(),
        "{bin} doctor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON")
}

#[test]
fn doctor_reports_pinned_torch_from_both_binaries() {
    for bin in ["lethe", "lethe-cli"] {
        let r = doctor_json(bin);
        let version = r["libtorch_version"].as_str().unwrap();
        assert!(version.starts_with("2.13.0"), "{bin}: torch {version}");
        let gpu_present = std::path::Path::new("/dev/nvidia0").exists();
        assert_eq!(r["cuda"].as_bool(), Some(gpu_present), "{bin}: {r}");
        assert!(r["threads"].as_i64().unwrap() >= 1);
    }
}

#[test]
fn binaries_have_rpath_and_need_libtorch_cuda() {
    for bin in ["lethe", "lethe-cli"] {
        let path = require_binary(bin);
        let out = Command::new("readelf")
            .arg("-d")
            .arg(&path)
            .output()
            .expect("readelf (binutils) is installed by setup.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let runpath = text
            .lines()
            .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
            .unwrap_or_else(|| panic!("{bin} has no rpath:\n{text}"));
        assert!(runpath.contains("/lib"), "{bin}: {runpath}");
        let doctor = doctor_json(bin);
        if doctor["built_with_cuda"].as_bool() == Some(true) {
            assert!(
                text.contains("[libtorch_cuda.so]"),
                "{bin} lacks NEEDED libtorch_cuda.so:\n{text}"
            );
            assert_eq!(doctor["libtorch_cuda_loaded"].as_bool(), Some(true));
        }
    }
}
