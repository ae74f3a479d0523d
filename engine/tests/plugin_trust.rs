//! The plugin trust controls: scans kept by library hash (a library described
//! before is not loaded again), the quarantine of a library that killed the
//! scanning worker (and not of one whose worker never started), and the
//! allow-list by SHA-256 that every load, scan or job, obeys.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::plugin_host::trust::{ALLOWLIST_ENV, file_sha256};
use lethe_engine::worker::protocol::{FromWorker, Hello, write_frame};
use lethe_engine::worker::scan_cache::{ScanCache, clear_quarantine};
use lethe_engine::worker::{Job, JobOutcome, WorkerOptions, run_job, scan_plugins_files};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
fn fixture(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join(&file);
        if p.exists() {
            return p;
        }
    }
    panic!("{file} not found next to {}", exe.display());
}

fn opts(exe: &Path, cache: &Path) -> WorkerOptions {
    let mut o = WorkerOptions::with_exe(exe);
    o.timeout = Some(Duration::from_secs(60));
    o.scan_cache = Some(cache.to_path_buf());
    o
}

/// A stand-in worker that answers the hello (it got the job), then dies as a
/// library's initialiser crashing would make it.
fn dying_worker(dir: &Path) -> PathBuf {
    let mut frame = Vec::new();
    write_frame(&mut frame, &FromWorker::Hello(Hello::ours())).unwrap();
    let escaped: String = frame.iter().map(|b| format!("\\{b:03o}")).collect();
    let exe = dir.join("dying-worker");
    std::fs::write(
        &exe,
        format!("#!/bin/sh\nprintf '{escaped}'\necho 'loading libmine.so' >&2\nkill -SEGV $$\n"),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn ids(
    outcome: &Result<Vec<lethe_engine::worker::protocol::DescriptorInfo>, String>,
) -> Vec<String> {
    outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("expected descriptors, got: {e}"))
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

#[test]
fn a_described_library_is_not_loaded_again_and_one_that_kills_the_scan_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/plugin-scan.json");
    let lib = dir.path().join("libmine.so");
    std::fs::copy(fixture("lethe_test_fixtures"), &lib).unwrap();
    let real = opts(Path::new(EXE), &cache);
    let dying = opts(&dying_worker(dir.path()), &cache);

    // Scanned for real once...
    let first = scan_plugins_files(&real, std::slice::from_ref(&lib));
    let offered = ids(&first[0].outcome);
    assert!(
        offered.iter().any(|id| id == "org.lethe.test.progress"),
        "{offered:?}"
    );
    let stored = ScanCache::read(&cache);
    assert_eq!(stored.entries.len(), 1);
    assert_eq!(stored.entries[0].sha256, file_sha256(&lib).unwrap());
    assert!(!stored.entries[0].quarantined);
    // ...then described from the cache: a worker that would die is never asked.
    let again = scan_plugins_files(&dying, std::slice::from_ref(&lib));
    assert_eq!(ids(&again[0].outcome), offered);

    // Other bytes are another library: this one kills the worker loading it.
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"changed");
    std::fs::write(&lib, &bytes).unwrap();
    let crashed = scan_plugins_files(&dying, std::slice::from_ref(&lib));
    let why = crashed[0].outcome.as_ref().unwrap_err();
    assert!(
        why.contains("SIGSEGV") && why.contains("loading libmine.so"),
        "{why}"
    );
    // Quarantined: even a sound worker does not load it again.
    let skipped = scan_plugins_files(&real, std::slice::from_ref(&lib));
    let why = skipped[0].outcome.as_ref().unwrap_err();
    assert!(why.starts_with("quarantined, not loaded"), "{why}");
    assert!(why.contains("SIGSEGV"), "{why}");
    assert!(
        why.contains(&*cache.to_string_lossy()),
        "says how to undo it: {why}"
    );

    // A rescan the user asks for gives it another try (and it loads fine).
    clear_quarantine(&cache).unwrap();
    let retried = scan_plugins_files(&real, std::slice::from_ref(&lib));
    assert_eq!(ids(&retried[0].outcome), offered);
    assert!(
        ScanCache::read(&cache)
            .entries
            .iter()
            .all(|e| !e.quarantined)
    );
}

#[test]
fn a_worker_that_never_started_quarantines_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-scan.json");
    let lib = dir.path().join("libmine.so");
    std::fs::copy(fixture("lethe_test_fixtures"), &lib).unwrap();
    // A broken install: the worker dies before its hello, before any library.
    let broken = dir.path().join("broken-worker");
    std::fs::write(&broken, "#!/bin/sh\nkill -SEGV $$\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = scan_plugins_files(&opts(&broken, &cache), std::slice::from_ref(&lib));
    assert!(r[0].outcome.as_ref().unwrap_err().contains("SIGSEGV"));
    assert!(ScanCache::read(&cache).entries.is_empty());
    let r = scan_plugins_files(&opts(Path::new(EXE), &cache), std::slice::from_ref(&lib));
    assert!(r[0].outcome.is_ok(), "{:?}", r[0].outcome);
}

#[test]
fn the_allow_list_decides_every_load_scans_and_jobs_alike() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture("lethe_test_fixtures");
    let hash = file_sha256(&lib).unwrap();
    let list = dir.path().join("allow.txt");
    let with_list = |text: &str| {
        std::fs::write(&list, text).unwrap();
        let mut o = WorkerOptions::with_exe(EXE);
        o.timeout = Some(Duration::from_secs(60));
        o.env
            .push((ALLOWLIST_ENV.into(), list.to_string_lossy().into_owned()));
        o
    };

    let other = "0".repeat(64);
    let refused = with_list(&format!("# vetted\n{other} libother.so\n"));
    let scan = scan_plugins_files(&refused, std::slice::from_ref(&lib));
    let why = scan[0].outcome.as_ref().unwrap_err();
    assert!(why.contains("not on the plugin allow-list"), "{why}");
    assert!(
        why.contains(&hash) && why.contains(&*list.to_string_lossy()),
        "{why}"
    );
    let job = Job::Run {
        library: lib.clone(),
        id: "org.lethe.test.progress".into(),
        params: json!({"steps": 1}),
    };
    let report = run_job(&refused, job.clone(), |_| {}).unwrap();
    assert!(
        matches!(&report.outcome, JobOutcome::Failed(m) if m.contains("allow-list")),
        "{:?}",
        report.outcome
    );

    let allowed = with_list(&format!("{hash} lethe_test_fixtures\n"));
    assert!(
        scan_plugins_files(&allowed, std::slice::from_ref(&lib))[0]
            .outcome
            .is_ok()
    );
    let report = run_job(&allowed, job, |_| {}).unwrap();
    assert!(report.outcome.is_success(), "{:?}", report.outcome);

    // A list that cannot be read refuses everything rather than allowing all.
    let mut missing = WorkerOptions::with_exe(EXE);
    missing.env.push((
        ALLOWLIST_ENV.into(),
        dir.path().join("nope.txt").to_string_lossy().into_owned(),
    ));
    let why = scan_plugins_files(&missing, std::slice::from_ref(&lib))[0]
        .outcome
        .clone()
        .unwrap_err();
    assert!(why.contains("cannot be read"), "{why}");
}
