//! A real one-node Slurm cluster for tests: `tests/slurm/cluster.sh` starts
//! munged, slurmctld and slurmd from Debian's packages (installer/setup.sh
//! installs them) in a temporary folder, and stops them again when the
//! [`Cluster`] drops, also when the test fails.
//!
//! Each cluster has its own munge key and socket, state, spool and logs, and
//! TCP ports picked free on each start, so two clusters (or a system one) do not
//! collide. Tests that start clusters should still not run in parallel with each
//! other: every cluster's jobs compete for the same few cores, and a test that
//! waits for its jobs to start would wait for another test's jobs. The workspace
//! runs one test at a time (`RUST_TEST_THREADS = "1"` in .cargo/config.toml).
//!
//! The daemons run as root (slurmd starts each job as its submitting user);
//! jobs see the submitter's environment (sbatch's default `--export=ALL`).
//! There is no slurmdbd: plain `sacct` answers "Slurm accounting storage is
//! disabled"; a finished job's state and exit code stay in `scontrol show job
//! ID` for MinJobAge (300 s), and every finished job has a line in
//! [`Cluster::job_completions`] (`sacct -c` reads that file too).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cluster script, `tests/slurm/cluster.sh`.
pub fn script() -> PathBuf {
    crate::workspace_root().join("tests/slurm/cluster.sh")
}

/// A running one-node cluster (partition `debug`, the node named after
/// `hostname -s`). Clients reach it through `SLURM_CONF` (see
/// [`Cluster::command`]). Dropping it stops its daemons and cancels its jobs.
pub struct Cluster {
    conf: PathBuf,
    // Dropped after `Drop::drop` stopped the daemons that use it.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a fresh cluster in a new temporary folder and waits (bounded by
    /// the script, about a minute) until its node is idle. The error says why,
    /// with the last lines of the daemons' logs.
    pub fn start() -> Result<Cluster, String> {
        // Short path: slurmd's step sockets live under it (unix socket paths
        // have at most 107 bytes).
        let dir = tempfile::Builder::new()
            .prefix("lethe-slurm-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot make a folder for the cluster in /tmp: {e}"))?;
        let out = run_script("start", dir.path())?;
        if !out.status.success() {
            // The script stopped whatever it had started before it failed.
            return Err(format!(
                "{} start {} failed ({}):\n{}",
                script().display(),
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let conf = client_env(&out.stdout)
            .into_iter()
            .find(|(k, _)| k == "SLURM_CONF")
            .map(|(_, v)| PathBuf::from(v))
            .ok_or_else(|| {
                format!(
                    "cluster.sh start printed no SLURM_CONF line: {:?}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?;
        Ok(Cluster { conf, dir })
    }

    /// The cluster's folder (slurm.conf, logs in `log/`, PIDs in `run/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's slurm.conf, what `SLURM_CONF` points at.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A Slurm client command (`sbatch`, `squeue`, `scancel`, `sinfo`,
    /// `scontrol`, …) for this cluster: `SLURM_CONF` set, and run in the
    /// cluster's folder, so a job's default output file (`slurm-%j.out`, in its
    /// submitter's working directory) lands there and not in the checkout.
    pub fn command(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(prog);
        cmd.env("SLURM_CONF", &self.conf)
            .current_dir(self.dir.path());
        cmd
    }

    /// `cluster.sh status`: the daemons are alive and the node answers.
    pub fn is_up(&self) -> bool {
        run_script("status", self.dir.path()).is_ok_and(|o| o.status.success())
    }

    /// `cluster.sh ACTION DIR` on this cluster's folder, as it ran (for tests of
    /// the script itself, e.g. that `start` on a running cluster is a no-op).
    pub fn script(&self, action: &str) -> Result<Output, String> {
        run_script(action, self.dir.path())
    }

    /// The PIDs of the cluster's daemons as the script recorded them
    /// (`munged`, `slurmctld`, `slurmd`), while they run.
    pub fn daemon_pids(&self) -> Vec<(String, u32)> {
        ["munged", "slurmctld", "slurmd"]
            .iter()
            .filter_map(|name| {
                let text =
                    std::fs::read_to_string(self.dir().join("run").join(format!("{name}.pid")));
                let pid = text.ok()?.trim().parse().ok()?;
                Some((name.to_string(), pid))
            })
            .collect()
    }

    /// The job completion log: one line per finished job (`JobId=…
    /// JobState=COMPLETED|FAILED|CANCELLED… ExitCode=code:signal …`), empty
    /// before the first job ends.
    pub fn job_completions(&self) -> String {
        std::fs::read_to_string(self.dir().join("log/jobcomp.txt")).unwrap_or_default()
    }

    /// Stops the daemons now (cancelling the jobs), keeping the folder; the
    /// drop does nothing more then.
    pub fn stop(&self) -> Result<(), String> {
        let out = run_script("stop", self.dir.path())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cluster.sh stop failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("slurm test cluster in {}: {e}", self.dir().display());
        }
    }
}

/// Whether `pid` is gone: no such process, a zombie waiting to be reaped, or a
/// recycled PID that runs some other program than `name`.
pub fn process_gone(pid: u32, name: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "PID (comm) STATE …": comm may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return true;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() != name
}

fn run_script(action: &str, dir: &Path) -> Result<Output, String> {
    Command::new("bash")
        .arg(script())
        .arg(action)
        .arg(dir)
        // A test binary killed before its destructors run takes its cluster
        // with it: the script's watchdog stops the cluster once we are gone.
        .env("CLUSTER_OWNER_PID", std::process::id().to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))
}

/// The `KEY=VALUE` lines the script prints for clients.
fn client_env(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
