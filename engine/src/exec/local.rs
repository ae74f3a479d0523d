//! The local executor: up to `jobs` units at once, each `PROGRAM run-job SPEC`
//! as a child process in a process group of its own (so a cancel reaches the
//! unit's own workers too), its output appended to the unit's log.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ExecError, Stage, StageEvent, StageOutcome, io_err, log_tail};

/// How long a cancelled unit gets to stop before its group is killed.
const GRACE: Duration = Duration::from_secs(5);

struct Running {
    unit: usize,
    child: Child,
}

fn signal_group(child: &Child, signal: i32) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id())
        && pgid > 1
    {
        // SAFETY: kill(2) on the process group this child leads (process_group(0)).
        unsafe { libc::kill(-pgid, signal) };
    }
}

fn spawn(stage: &Stage, i: usize) -> Result<Child, ExecError> {
    let log_path = stage.log_path(i);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_err(&log_path, e))?;
    let err = log.try_clone().map_err(|e| io_err(&log_path, e))?;
    let mut cmd = Command::new(&stage.program);
    // A unit dies with its coordinator (SIGTERM when the spawning thread
    // ends): a killed `lethe study` must not leave units writing into a study
    // folder that a resumed one then runs again.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.arg("run-job")
        .arg(stage.spec_path(i))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| ExecError::Command {
            command: format!(
                "{} run-job {}",
                stage.program.display(),
                stage.spec_path(i).display()
            ),
            message: e.to_string(),
        })
}

/// Stops every running unit: TERM to its group, KILL after [`GRACE`].
fn stop_all(running: &mut Vec<Running>) {
    for r in running.iter() {
        signal_group(&r.child, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in running.iter_mut() {
        signal_group(&r.child, libc::SIGKILL);
        let _ = r.child.wait();
    }
    running.clear();
}

pub(super) fn run(
    stage: &Stage,
    jobs: usize,
    cancelled: &dyn Fn() -> bool,
    on_event: &mut dyn FnMut(StageEvent),
) -> Result<StageOutcome, ExecError> {
    let (mut out, open) = stage.outcome_so_far();
    let mut queue: std::collections::VecDeque<usize> = open.into();
    let mut running: Vec<Running> = Vec::new();
    loop {
        if cancelled() {
            stop_all(&mut running);
            out.cancelled = true;
            return Ok(out);
        }
        while running.len() < jobs
            && let Some(i) = queue.pop_front()
        {
            stage.clear_result(i);
            let child = match spawn(stage, i) {
                Ok(c) => c,
                Err(e) => {
                    stop_all(&mut running);
                    return Err(e);
                }
            };
            on_event(StageEvent::Submitted {
                units: vec![i],
                job: None,
                attempt: 1,
            });
            on_event(StageEvent::Running {
                unit: i,
                host: None,
            });
            running.push(Running { unit: i, child });
        }
        if running.is_empty() {
            return Ok(out);
        }
        let mut k = 0;
        while k < running.len() {
            let status = match running[k].child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) => {
                    k += 1;
                    continue;
                }
                Err(e) => {
                    let r = running.remove(k);
                    out.failed
                        .push((r.unit, format!("cannot wait for the unit: {e}")));
                    continue;
                }
            };
            let r = running.remove(k);
            let i = r.unit;
            match stage.result(i) {
                Some(res) if res.ok => {
                    on_event(StageEvent::Finished {
                        unit: i,
                        result: res.clone(),
                    });
                    out.results[i] = Some(res);
                }
                other => {
                    let why = match other {
                        Some(res) => res.message,
                        None => format!(
                            "it ended ({status}) without a result; last lines of its log:\n{}",
                            log_tail(&stage.log_path(i), 8)
                        ),
                    };
                    let message = format!(
                        "{}: {why} (log: {})",
                        stage.units[i].name,
                        stage.log_path(i).display()
                    );
                    on_event(StageEvent::Failed {
                        unit: i,
                        message: message.clone(),
                        retry: false,
                    });
                    out.failed.push((i, message));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
