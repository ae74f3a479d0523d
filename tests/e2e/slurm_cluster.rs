//! The one-node Slurm cluster the `--executor slurm` tests run on
//! (tests/slurm/cluster.sh through `lethe_e2e::slurm::Cluster`): real munged,
//! slurmctld and slurmd from Debian's packages, started and stopped here. It
//! comes up idle, runs every task of an array job as root with the submitter's
//! environment and with binaries from target/, reports a failed job's exit code
//! without slurmdbd, cancels one running array task, starts idempotently, and
//! leaves no daemon behind when it stops, when it drops, or when its owner dies.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lethe_e2e::slurm::{Cluster, process_gone, script};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn start() -> Cluster {
    Cluster::start().unwrap_or_else(|e| panic!("the test cluster did not start: {e}"))
}

/// Runs a client command, which must succeed; its stdout.
fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `done` every 200 ms; panics with `what` and `context()` after `limit`.
fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < limit,
            "{what} did not happen within {limit:?}; {}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sbatch(c: &Cluster, args: &[&str]) -> String {
    let mut cmd = c.command("sbatch");
    cmd.arg("--parsable").args(args);
    let id = run(cmd).trim().to_string();
    assert!(
        id.chars().all(|ch| ch.is_ascii_digit()),
        "sbatch printed {id:?}, not a job id"
    );
    id
}

/// The job's (or array task's) entries squeue still lists: pending, running or completing.
fn active(c: &Cluster, job: &str) -> Vec<String> {
    let mut cmd = c.command("squeue");
    cmd.args(["-h", "-o", "%i %t", "-j", job]);
    // A job squeue no longer knows at all is not active either.
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn queue_and_logs(c: &Cluster) -> String {
    let mut sq = c.command("squeue");
    sq.args(["-t", "all"]);
    let queue = sq
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let log = std::fs::read_to_string(c.dir().join("log/slurmctld.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    format!(
        "squeue -t all:\n{}\nslurmctld.log (last lines, newest first):\n{}",
        queue.unwrap_or_default(),
        tail.join("\n")
    )
}

/// Processes of the given array task of the cluster with slurm.conf `conf`, found
/// by the environment Slurm gives them (job ids restart at 1 in every cluster).
fn task_processes(conf: &Path, job: &str, task: &str) -> Vec<u32> {
    let want_conf = format!("SLURM_CONF={}", conf.display());
    let want_job = format!("SLURM_ARRAY_JOB_ID={job}");
    let want_task = format!("SLURM_ARRAY_TASK_ID={task}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if [&want_conf, &want_job, &want_task]
            .iter()
            .all(|want| vars.contains(want))
            && !process_gone(pid, &comm(pid))
        {
            found.push(pid);
        }
    }
    found
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn an_array_job_runs_every_task_as_root_with_the_callers_environment() {
    let c = start();
    assert!(c.is_up(), "cluster.sh status fails right after start");
    let mut sinfo = c.command("sinfo");
    sinfo.args(["-h", "-o", "%t"]);
    assert_eq!(run(sinfo).trim(), "idle");

    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    // A binary from target/ (this test binary, listing its tests) runs inside the job.
    let exe = std::env::current_exe().unwrap();
    let wrap = format!(
        "echo $SLURM_ARRAY_TASK_ID > {o}/task_$SLURM_ARRAY_TASK_ID; \
         echo \"$LETHE_SLURM_PROBE $(id -u)\" > {o}/env_$SLURM_ARRAY_TASK_ID; \
         {} --list > {o}/list_$SLURM_ARRAY_TASK_ID",
        exe.display()
    );
    let mut cmd = c.command("sbatch");
    cmd.env("LETHE_SLURM_PROBE", "from-the-submitter").args([
        "--parsable",
        "--array=0-3",
        &format!("--output={o}/slurm-%A_%a.out"),
        "--wrap",
        &wrap,
    ]);
    let job = run(cmd).trim().to_string();
    wait_until(
        Duration::from_secs(40),
        "the 4 array tasks ending",
        || active(&c, &job).is_empty(),
        || queue_and_logs(&c),
    );

    let outputs = || {
        (0..4)
            .map(|i| {
                std::fs::read_to_string(out.path().join(format!("slurm-{job}_{i}.out")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for i in 0..4 {
        let read = |name: &str| {
            std::fs::read_to_string(out.path().join(format!("{name}_{i}"))).unwrap_or_else(|e| {
                panic!(
                    "task {i} wrote no {name}_{i}: {e}; job output: {}",
                    outputs()
                )
            })
        };
        assert_eq!(read("task"), format!("{i}\n"));
        assert_eq!(
            read("env"),
            "from-the-submitter 0\n",
            "task {i}: submitter's variable, uid"
        );
        assert!(
            read("list").contains(
                "an_array_job_runs_every_task_as_root_with_the_callers_environment: test"
            ),
            "task {i} could not run {} --list: {}",
            exe.display(),
            outputs()
        );
    }
    // Every task left a COMPLETED record with exit code 0.
    let done = c.job_completions();
    let tasks: Vec<&str> = done
        .lines()
        .filter(|l| l.contains(&format!(" ArrayJobId={job} ")))
        .collect();
    assert_eq!(tasks.len(), 4, "job completion log: {done}");
    for line in tasks {
        assert!(
            line.contains("JobState=COMPLETED") && line.contains("ExitCode=0:0"),
            "{line}"
        );
    }
}

#[test]
fn a_failed_jobs_exit_code_is_seen_without_sacct() {
    let c = start();
    let job = sbatch(&c, &["--output=/dev/null", "--wrap", "exit 3"]);
    wait_until(
        Duration::from_secs(30),
        "the job ending",
        || active(&c, &job).is_empty(),
        || queue_and_logs(&c),
    );

    // The controller remembers the finished job for MinJobAge (300 s).
    let mut show = c.command("scontrol");
    show.args(["show", "job", &job]);
    let shown = run(show);
    assert!(shown.contains("JobState=FAILED"), "{shown}");
    assert!(shown.contains(" ExitCode=3:0"), "{shown}");
    // The completion log keeps it after that.
    let line = c
        .job_completions()
        .lines()
        .find(|l| l.starts_with(&format!("JobId={job} ")))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "no completion record for job {job}: {}",
                c.job_completions()
            )
        });
    assert!(
        line.contains("JobState=FAILED") && line.contains(" ExitCode=3:0"),
        "{line}"
    );

    // Plain sacct needs slurmdbd, which this cluster does not have.
    let out = c.command("sacct").arg("-j").arg(&job).output().unwrap();
    assert!(
        !out.status.success(),
        "sacct worked without accounting storage"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Slurm accounting storage is disabled"),
        "sacct said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // sacct -c reads the completion log instead.
    let mut completion = c.command("sacct");
    completion.args(["-c", "-n", "-o", "jobid,state,exitcode"]);
    let rows = run(completion);
    assert!(
        rows.lines()
            .any(|r| r.split_whitespace().collect::<Vec<_>>() == [job.as_str(), "FAILED", "3:0"]),
        "sacct -c: {rows}"
    );
}

#[test]
fn scancel_removes_a_running_array_task() {
    let c = start();
    let conf = c.conf().to_path_buf();
    let job = sbatch(
        &c,
        &["--array=0-1", "--output=/dev/null", "--wrap", "sleep 300"],
    );
    let running = |task: &str| {
        active(&c, &job)
            .iter()
            .any(|l| l == &format!("{job}_{task} R"))
    };
    // Both run at once (one core each; the node has two or more).
    wait_until(
        Duration::from_secs(30),
        "both tasks running",
        || running("0") && running("1"),
        || queue_and_logs(&c),
    );
    wait_until(
        Duration::from_secs(10),
        "task 0's sleep starting",
        || !task_processes(&conf, &job, "0").is_empty(),
        || queue_and_logs(&c),
    );

    let mut cancel = c.command("scancel");
    cancel.arg(format!("{job}_0"));
    run(cancel);
    let gone = |task: &str| {
        !active(&c, &job)
            .iter()
            .any(|l| l.starts_with(&format!("{job}_{task} ")))
    };
    wait_until(
        Duration::from_secs(15),
        "task 0 leaving the queue",
        || gone("0"),
        || queue_and_logs(&c),
    );
    wait_until(
        Duration::from_secs(10),
        "task 0's processes ending",
        || task_processes(&conf, &job, "0").is_empty(),
        || format!("still running: {:?}", task_processes(&conf, &job, "0")),
    );
    assert!(
        !gone("1"),
        "cancelling task 0 also removed task 1: {}",
        queue_and_logs(&c)
    );
    let done = c.job_completions();
    assert!(
        done.lines()
            .any(|l| l.contains(&format!(" ArrayJobId={job} ArrayTaskId=0 "))
                && l.contains("JobState=CANCELLED")),
        "no CANCELLED record for task 0: {done}"
    );

    // Stopping the cluster cancels what is left (task 1): no job process survives.
    assert!(
        running("1") && !task_processes(&conf, &job, "1").is_empty(),
        "task 1 stopped running: {}",
        queue_and_logs(&c)
    );
    drop(c);
    assert_eq!(
        task_processes(&conf, &job, "1"),
        Vec::<u32>::new(),
        "task 1 survived the cluster's stop"
    );
}

#[test]
fn start_on_a_running_cluster_changes_nothing() {
    let c = start();
    let pids = c.daemon_pids();
    assert_eq!(pids.len(), 3, "recorded daemons: {pids:?}");

    let again = c.script("start").unwrap();
    assert!(
        again.status.success(),
        "second start: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        format!("SLURM_CONF={}\n", c.conf().display())
    );
    assert_eq!(c.daemon_pids(), pids, "the second start replaced daemons");
    for (name, pid) in &pids {
        assert!(
            !process_gone(*pid, name),
            "{name} ({pid}) died on the second start"
        );
    }
    // No second set of daemons for this folder.
    let conf = c.conf().display().to_string();
    let mut ours = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if (cmdline.starts_with("slurmctld ") || cmdline.starts_with("slurmd "))
            && cmdline.contains(&conf)
            && !process_gone(pid, &comm(pid))
        {
            ours.push(cmdline);
        }
    }
    assert_eq!(ours.len(), 2, "daemons using {conf}: {ours:?}");
    assert!(c.is_up());
}

fn assert_all_gone(pids: &[(String, u32)], when: &str) {
    for (name, pid) in pids {
        assert!(process_gone(*pid, name), "{name} ({pid}) still runs {when}");
    }
}

#[test]
fn stop_and_drop_leave_no_daemon() {
    let c = start();
    let pids = c.daemon_pids();
    assert_eq!(pids.len(), 3, "recorded daemons: {pids:?}");
    c.stop().unwrap();
    assert_all_gone(&pids, "after stop");
    assert!(!c.is_up(), "cluster.sh status succeeds after stop");
    // Stop is idempotent.
    c.stop().unwrap();
    drop(c);

    let c = start();
    let pids = c.daemon_pids();
    let dir = c.dir().to_path_buf();
    assert!(c.is_up());
    drop(c);
    assert_all_gone(&pids, "after the Cluster dropped");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn the_cluster_stops_when_its_owner_dies() {
    let dir = tempfile::Builder::new()
        .prefix("lethe-slurm-")
        .tempdir_in("/tmp")
        .unwrap();
    // The owner: a process that ends on its own, as a killed test binary would.
    let mut owner = Command::new("sleep").arg("3").spawn().unwrap();
    let start = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir.path())
        .env("CLUSTER_OWNER_PID", owner.id().to_string())
        .output()
        .unwrap();
    let stop = |d: &Path| {
        Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(d)
            .output()
    };
    if !start.status.success() {
        let _ = stop(dir.path());
        panic!("start: {}", String::from_utf8_lossy(&start.stderr));
    }
    let pids: Vec<(String, u32)> = ["munged", "slurmctld", "slurmd"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.path().join(format!("run/{n}.pid"))).unwrap();
            (n.to_string(), text.trim().parse().unwrap())
        })
        .collect();
    owner.wait().unwrap();
    let all_gone = || pids.iter().all(|(n, p)| process_gone(*p, n));
    let t0 = Instant::now();
    while !all_gone() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = all_gone();
    // Whatever the outcome, nothing stays running.
    let _ = stop(dir.path());
    assert!(
        ok,
        "the daemons {pids:?} still run 20 s after their owner ended"
    );
}
