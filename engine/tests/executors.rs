//! The local executor's contract with its units, with a stand-in unit program
//! (a shell script that behaves as `lethe-cli run-job` does: it writes
//! `SPEC.result.json` when it succeeds): at most `jobs` units at once, a unit
//! that dies without a result is reported with its log, a unit that already
//! succeeded is not run again, and a cancel stops every running unit and its
//! children within the grace time. The real `run-job` runs in the e2e tests
//! (tests/e2e/study.rs `--jobs 2`, tests/e2e/slurm.rs).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lethe_engine::exec::unit::UNIT_FORMAT;
use lethe_engine::exec::{ExecutorConfig, Stage, StageEvent, Unit, UnitSpec, run_stage};

/// The stand-in: `PROG run-job DIR/task-<i>.json` reads what to do from
/// `DIR/mode-<i>` (`ok`, `fail`, `hang`), records start and end in
/// `DIR/trace`, and for `ok` writes the result file.
fn program(dir: &Path) -> PathBuf {
    let p = dir.join("unit.sh");
    std::fs::write(
        &p,
        r#"#!/bin/sh
spec="$2"
i=$(basename "$spec" .json | sed 's/task-//')
d=$(dirname "$spec")
mode=$(cat "$d/mode-$i")
echo "start $i $(date +%s.%N)" >> "$d/trace"
echo "unit $i: $mode"
case "$mode" in
  ok) sleep 0.4 ;;
  fail) echo "something broke in unit $i" >&2; echo "end $i $(date +%s.%N)" >> "$d/trace"; exit 3 ;;
  hang) sleep 300 & echo $! > "$d/child-$i"; wait ;;
esac
echo "end $i $(date +%s.%N)" >> "$d/trace"
printf '{"ok": true, "message": "unit %s done", "seconds": 0.4, "host": "here"}' "$i" > "$spec.result.json"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn stage(dir: &Path, modes: &[&str]) -> Stage {
    let stage_dir = dir.join("stage");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let units = modes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            std::fs::write(stage_dir.join(format!("mode-{i}")), m).unwrap();
            Unit {
                name: format!("unit {i}"),
                spec: UnitSpec::StudyRun {
                    format: UNIT_FORMAT,
                    study: dir.join("study"),
                    row: "FT".into(),
                    seed: i as u64,
                    cache: None,
                    plugin_dirs: Vec::new(),
                    verbose: false,
                },
            }
        })
        .collect();
    Stage {
        dir: stage_dir,
        name: "test".into(),
        units,
        program: program(dir),
    }
}

/// Most units that ran at the same time, from the trace.
fn most_at_once(trace: &str) -> usize {
    let mut events: Vec<(f64, i32)> = trace
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let kind = f.next()?;
            let _ = f.next()?;
            let t: f64 = f.next()?.parse().ok()?;
            Some((t, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn two_jobs_run_two_units_at_once_and_a_failed_unit_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = stage(dir.path(), &["ok", "ok", "fail", "ok", "ok"]);
    let mut events = Vec::new();
    let out = run_stage(
        &ExecutorConfig::Local { jobs: 2 },
        &s,
        &|| false,
        &mut |e| events.push(e),
    )
    .unwrap();
    assert!(!out.cancelled);
    for i in [0, 1, 3, 4] {
        let r = out.results[i].as_ref().unwrap();
        assert!(r.ok && r.message == format!("unit {i} done"), "{r:?}");
    }
    assert!(out.results[2].is_none());
    assert_eq!(out.failed.len(), 1);
    let (i, why) = &out.failed[0];
    assert_eq!(*i, 2);
    assert!(
        why.contains("something broke in unit 2") && why.contains("task-2.log"),
        "{why}"
    );
    let trace = std::fs::read_to_string(s.dir.join("trace")).unwrap();
    assert_eq!(most_at_once(&trace), 2, "{trace}");
    let finished = events
        .iter()
        .filter(|e| matches!(e, StageEvent::Finished { .. }))
        .count();
    assert_eq!(finished, 4);

    // Again: the four that succeeded are not run again, the failed one is.
    std::fs::write(s.dir.join("mode-2"), "ok").unwrap();
    std::fs::remove_file(s.dir.join("trace")).unwrap();
    let out = run_stage(
        &ExecutorConfig::Local { jobs: 2 },
        &s,
        &|| false,
        &mut |_| {},
    )
    .unwrap();
    assert!(out.failed.is_empty() && out.results.iter().all(Option::is_some));
    let trace = std::fs::read_to_string(s.dir.join("trace")).unwrap();
    assert_eq!(trace.matches("start").count(), 1, "{trace}");
    assert!(trace.contains("start 2 "), "{trace}");
}

#[test]
fn a_cancel_stops_running_units_and_their_children() {
    let dir = tempfile::tempdir().unwrap();
    let s = stage(dir.path(), &["hang", "hang", "ok"]);
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let sd = s.dir.clone();
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Both hanging units have started their child.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !(sd.join("child-0").is_file() && sd.join("child-1").is_file()) {
                assert!(Instant::now() < deadline, "the units did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            cancel.store(true, Ordering::SeqCst);
        });
        run_stage(
            &ExecutorConfig::Local { jobs: 2 },
            &s,
            &|| cancel.load(Ordering::SeqCst),
            &mut |_| {},
        )
        .unwrap()
    });
    assert!(out.cancelled);
    assert!(out.results.iter().all(Option::is_none), "{:?}", out.results);
    assert!(started.elapsed() < Duration::from_secs(20));
    for i in 0..2 {
        let pid: i32 = std::fs::read_to_string(s.dir.join(format!("child-{i}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The unit's own child (its worker, in real units) is gone too; a
        // zombie awaiting its reaper counts as gone.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        assert!(
            stat.is_empty() || state == Some('Z'),
            "child {pid} of unit {i} still runs: {stat}"
        );
    }
    // The third unit never started.
    let trace = std::fs::read_to_string(s.dir.join("trace")).unwrap();
    assert!(!trace.contains("start 2 "), "{trace}");
}
