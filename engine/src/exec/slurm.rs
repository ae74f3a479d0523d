//! The Slurm executor: the units of a stage as one job array, followed with
//! `squeue`, re-submitted when a task ends without a result, cancelled with
//! `scancel`.
//!
//! Array index = unit number, so a re-submission (`--array=3,5`) and a
//! re-attached coordinator both find each task's files by its index. The job
//! name is derived from the stage folder: a coordinator restarted on the same
//! folder finds the tasks its predecessor left queued (`squeue --name`).
//!
//! `sacct` is not used: it needs a Slurm accounting database, which many
//! clusters (and the test cluster) do not run. A task's outcome is the result
//! file the unit writes itself; a task that left the queue without one failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ExecError, SlurmSettings, Stage, StageEvent, StageOutcome, io_err, log_tail};

/// A task that left the queue gets this long for its result file to appear
/// (a shared file system may show it late) before it counts as failed.
const RESULT_GRACE: Duration = Duration::from_secs(10);
/// Consecutive failed `squeue` calls before the coordinator gives up.
const SQUEUE_FAILURES: usize = 10;
/// How long a cancel waits for the tasks to leave the queue.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// The Slurm job name of a stage (≤ 24 characters, from its folder).
pub fn job_name(stage: &Stage) -> String {
    let digest = Sha256::digest(stage.dir.to_string_lossy().as_bytes());
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("lethe-{hex}")
}

fn run_cmd(program: &str, args: &[String]) -> Result<String, ExecError> {
    let line = || {
        let mut s = program.to_string();
        for a in args.iter().take(12) {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ExecError::Command {
            command: line(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("`{program}` is not installed or not on PATH (is this a Slurm login node? installer/setup.sh installs the Slurm client)")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(ExecError::Command {
            command: line(),
            message: if err.is_empty() {
                format!("{} {stdout}", out.status)
            } else {
                err
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The batch script every task of the stage runs.
fn write_script(stage: &Stage) -> Result<std::path::PathBuf, ExecError> {
    let path = stage.dir.join("array.sh");
    let text = format!(
        "#!/bin/sh\n# Written by Lethe: one unit of \"{}\" per array task; the task's index is the unit's number.\nexec {} run-job {}\"/task-${{SLURM_ARRAY_TASK_ID}}.json\"\n",
        stage.name.replace('\n', " "),
        shell_quote(&stage.program.to_string_lossy()),
        shell_quote(&stage.dir.to_string_lossy()),
    );
    crate::jobs::atomic::write_atomic(&path, text.as_bytes(), true)
        .map_err(|e| io_err(&path, e))?;
    Ok(path)
}

fn sbatch_args(stage: &Stage, s: &SlurmSettings, units: &[usize], script: &Path) -> Vec<String> {
    let list: Vec<String> = units.iter().map(|u| u.to_string()).collect();
    let mut array = list.join(",");
    if s.max_parallel > 0 {
        array.push_str(&format!("%{}", s.max_parallel));
    }
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name={}", job_name(stage)),
        format!("--array={array}"),
        format!("--output={}", stage.dir.join("task-%a.log").display()),
        "--open-mode=append".into(),
    ];
    // No --chdir: tasks start in the submitting folder (Slurm's default), as
    // local units do, so a plugin's relative path parameters mean the same
    // on a node (the folder must be on the shared file system too).
    let mut opt = |flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            a.push(format!("--{flag}={v}"));
        }
    };
    opt("partition", &s.partition);
    opt("time", &s.time);
    opt("mem", &s.mem);
    opt("gres", &s.gres);
    opt("account", &s.account);
    if let Some(c) = s.cpus_per_task {
        a.push(format!("--cpus-per-task={c}"));
    }
    a.extend(s.extra_args.iter().cloned());
    a.push(script.display().to_string());
    a
}

/// Submits `units` as one array; its job id.
fn submit(stage: &Stage, s: &SlurmSettings, units: &[usize]) -> Result<String, ExecError> {
    let script = write_script(stage)?;
    let out = run_cmd("sbatch", &sbatch_args(stage, s, units, &script))?;
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(ExecError::Command {
            command: "sbatch --parsable".into(),
            message: format!("unexpected answer `{}`", out.trim()),
        });
    }
    Ok(id)
}

/// One queued task: its state and node list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    state: String,
    nodes: String,
}

/// The stage's tasks in the queue, by unit number. A pending array element
/// not yet split off is listed by `-r` one line per element.
fn queued(name: &str) -> Result<BTreeMap<usize, Queued>, ExecError> {
    let out = run_cmd(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            format!("--name={name}"),
            "--format=%i|%T|%N".into(),
        ],
    )?;
    let mut tasks = BTreeMap::new();
    for line in out.lines() {
        let mut f = line.trim().split('|');
        let (Some(id), Some(state)) = (f.next(), f.next()) else {
            continue;
        };
        let nodes = f.next().unwrap_or("").to_string();
        // `123_4`; a pending range (`123_[5-7%2]`) shows when -r could not
        // expand it: count those indices as queued too.
        let Some((_, task)) = id.split_once('_') else {
            continue;
        };
        for i in parse_indices(task) {
            tasks.insert(
                i,
                Queued {
                    state: state.to_string(),
                    nodes: nodes.clone(),
                },
            );
        }
    }
    Ok(tasks)
}

/// `4`, `[5-7%2]`, `[1,3,8-9]` → indices.
fn parse_indices(task: &str) -> Vec<usize> {
    let t = task.trim_start_matches('[').trim_end_matches(']');
    let t = t.split('%').next().unwrap_or("");
    let mut v = Vec::new();
    for part in t.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b.min(a + 100_000));
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    v.push(i);
                }
            }
        }
    }
    v
}

fn cancel_stage(name: &str) -> Result<(), ExecError> {
    run_cmd("scancel", &[format!("--name={name}")])?;
    let deadline = Instant::now() + CANCEL_WAIT;
    while Instant::now() < deadline {
        if queued(name)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(ExecError::Command {
        command: format!("scancel --name={name}"),
        message: format!(
            "tasks of {name} were still in the queue {} s after the cancel",
            CANCEL_WAIT.as_secs()
        ),
    })
}

pub(super) fn run(
    stage: &Stage,
    s: &SlurmSettings,
    cancelled: &dyn Fn() -> bool,
    on_event: &mut dyn FnMut(StageEvent),
) -> Result<StageOutcome, ExecError> {
    let attempts_allowed = s.attempts.max(1);
    let poll = Duration::from_secs_f64(s.poll_seconds.clamp(0.1, 600.0));
    let name = job_name(stage);
    // Units still to finish, and how often each went out.
    let (mut out, open) = stage.outcome_so_far();
    let mut open: BTreeSet<usize> = open.into_iter().collect();
    let mut attempts = vec![0usize; stage.units.len()];
    if open.is_empty() {
        return Ok(out);
    }
    // Tasks an earlier coordinator left in the queue are followed, not doubled.
    // If the queue cannot be read, `sbatch` below says why in its own words
    // (not installed, controller down) when it fails too.
    let already = queued(&name).unwrap_or_default();
    let reattached: Vec<usize> = open
        .iter()
        .copied()
        .filter(|i| already.contains_key(i))
        .collect();
    if !reattached.is_empty() {
        for &i in &reattached {
            attempts[i] = 1;
        }
        on_event(StageEvent::Reattached {
            units: reattached.clone(),
        });
    }
    let mut to_submit: Vec<usize> = open
        .iter()
        .copied()
        .filter(|i| !already.contains_key(i))
        .collect();
    let mut running_seen: BTreeSet<usize> = BTreeSet::new();
    let mut gone_since: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut squeue_failures = 0usize;
    loop {
        if cancelled() {
            cancel_stage(&name)?;
            out.cancelled = true;
            return Ok(out);
        }
        if !to_submit.is_empty() {
            for &i in &to_submit {
                stage.clear_result(i);
                attempts[i] += 1;
            }
            let attempt = attempts[to_submit[0]];
            let id = submit(stage, s, &to_submit)?;
            on_event(StageEvent::Submitted {
                units: to_submit.clone(),
                job: Some(id),
                attempt,
            });
            for i in &to_submit {
                running_seen.remove(i);
                gone_since.remove(i);
            }
            to_submit.clear();
        }
        if open.is_empty() {
            return Ok(out);
        }
        std::thread::sleep(poll);
        let q = match queued(&name) {
            Ok(q) => {
                squeue_failures = 0;
                q
            }
            Err(e) => {
                squeue_failures += 1;
                if squeue_failures >= SQUEUE_FAILURES {
                    return Err(e);
                }
                continue;
            }
        };
        for i in open.clone() {
            if let Some(task) = q.get(&i) {
                gone_since.remove(&i);
                if task.state == "RUNNING" && running_seen.insert(i) {
                    on_event(StageEvent::Running {
                        unit: i,
                        host: (!task.nodes.is_empty()).then(|| task.nodes.clone()),
                    });
                }
                continue;
            }
            // Out of the queue: finished, failed or killed.
            match stage.result(i) {
                Some(r) if r.ok => {
                    open.remove(&i);
                    gone_since.remove(&i);
                    on_event(StageEvent::Finished {
                        unit: i,
                        result: r.clone(),
                    });
                    out.results[i] = Some(r);
                }
                result => {
                    let first = *gone_since.entry(i).or_insert_with(Instant::now);
                    if result.is_none() && first.elapsed() < RESULT_GRACE {
                        continue;
                    }
                    gone_since.remove(&i);
                    let why = match result {
                        Some(r) => r.message,
                        None => {
                            let tail = log_tail(&stage.log_path(i), 6);
                            if tail.is_empty() {
                                "the task left the queue without a result (killed, cancelled or its node failed)".to_string()
                            } else {
                                format!(
                                    "the task left the queue without a result; last lines of its log:\n{tail}"
                                )
                            }
                        }
                    };
                    let retry = attempts[i] < attempts_allowed;
                    let message = format!(
                        "{} (attempt {} of {attempts_allowed}): {why} (log: {})",
                        stage.units[i].name,
                        attempts[i],
                        stage.log_path(i).display()
                    );
                    on_event(StageEvent::Failed {
                        unit: i,
                        message: message.clone(),
                        retry,
                    });
                    if retry {
                        to_submit.push(i);
                    } else {
                        open.remove(&i);
                        out.failed.push((i, message));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_indices_as_squeue_prints_them() {
        assert_eq!(parse_indices("4"), vec![4]);
        assert_eq!(parse_indices("[5-7%2]"), vec![5, 6, 7]);
        assert_eq!(parse_indices("[1,3,8-9]"), vec![1, 3, 8, 9]);
        assert!(parse_indices("[x]").is_empty());
    }

    #[test]
    fn sbatch_gets_every_setting_and_the_array() {
        let stage = Stage {
            dir: "/shared/study/executor".into(),
            name: "study demo".into(),
            units: Vec::new(),
            program: "/opt/lethe/lethe-cli".into(),
        };
        let s = SlurmSettings {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: Some(4),
            mem: Some("8G".into()),
            gres: Some("gpu:1".into()),
            account: Some("lab".into()),
            max_parallel: 2,
            extra_args: vec!["--qos=short".into()],
            ..SlurmSettings::default()
        };
        let a = sbatch_args(
            &stage,
            &s,
            &[0, 3],
            Path::new("/shared/study/executor/array.sh"),
        );
        for want in [
            "--parsable",
            "--array=0,3%2",
            "--output=/shared/study/executor/task-%a.log",
            "--partition=gpu",
            "--time=01:00:00",
            "--cpus-per-task=4",
            "--mem=8G",
            "--gres=gpu:1",
            "--account=lab",
            "--qos=short",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert_eq!(
            a.last().map(String::as_str),
            Some("/shared/study/executor/array.sh")
        );
        assert!(
            a.iter()
                .any(|x| x == &format!("--job-name={}", job_name(&stage)))
        );
    }

    #[test]
    fn the_script_quotes_paths() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
