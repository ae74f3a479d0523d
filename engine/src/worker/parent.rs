//! The parent side: spawn `lethe worker`, stream its events, cancel it, time it
//! out, and turn however it ended (result, error, signal, exit code, silence) into
//! a [`JobReport`]. The parent never runs plugin code, so it survives all of them.

use super::protocol::{FromWorker, Hello, Job, ProtocolError, ToWorker, read_frame, write_frame};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to start and supervise a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The executable to run with the `worker` subcommand (normally this one).
    pub exe: PathBuf,
    /// Kill the worker and report [`JobOutcome::TimedOut`] after this long.
    pub timeout: Option<Duration>,
    /// How long a cancelled worker gets to stop on its own before it is killed.
    pub grace: Duration,
    /// How many trailing bytes of the worker's stderr to keep as the job log.
    pub stderr_tail_bytes: usize,
    /// Extra environment variables for the worker (e.g. the shadow-model
    /// cache, `LETHE_SHADOW_CACHE`).
    pub env: Vec<(String, String)>,
}

impl WorkerOptions {
    /// Options for re-executing the current executable, no timeout, 3 s grace.
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self::with_exe(std::env::current_exe()?))
    }

    /// Options for running `exe worker`, no timeout, 3 s grace.
    pub fn with_exe(exe: impl Into<PathBuf>) -> Self {
        WorkerOptions {
            exe: exe.into(),
            timeout: None,
            grace: Duration::from_secs(3),
            stderr_tail_bytes: 64 * 1024,
            env: Vec::new(),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The job reported its result.
    Succeeded(serde_json::Value),
    /// The job reported an error (bad parameters, plugin failure or panic, ...).
    Failed(String),
    /// The job stopped after a cancel; `killed` when it ignored the cancel and was
    /// killed after the grace period.
    Cancelled {
        /// Whether it had to be killed.
        killed: bool,
    },
    /// The job ran past its timeout and was killed.
    TimedOut(Duration),
    /// The worker died without a final message: a signal (segfault, abort) or an
    /// early exit.
    Crashed {
        /// The signal that killed it.
        signal: Option<i32>,
        /// Its exit code, when it exited.
        code: Option<i32>,
    },
    /// The worker broke the protocol (version mismatch, corrupted frames).
    Protocol(String),
}

impl JobOutcome {
    /// Whether the job succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, JobOutcome::Succeeded(_))
    }
}

/// The conventional name of a Linux signal number (`SIGSEGV`), or `signal N`.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

impl fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobOutcome::Succeeded(v) => write!(f, "succeeded: {v}"),
            JobOutcome::Failed(m) => write!(f, "failed: {m}"),
            JobOutcome::Cancelled { killed: false } => write!(f, "cancelled"),
            JobOutcome::Cancelled { killed: true } => {
                write!(
                    f,
                    "cancelled (did not stop within the grace period; killed)"
                )
            }
            JobOutcome::TimedOut(t) => write!(f, "timed out after {:.1}s; killed", t.as_secs_f64()),
            JobOutcome::Crashed {
                signal: Some(s), ..
            } => write!(f, "crashed: killed by {} (signal {s})", signal_name(*s)),
            JobOutcome::Crashed { code: Some(c), .. } => {
                write!(f, "crashed: exited early with code {c} without a result")
            }
            JobOutcome::Crashed { .. } => write!(f, "crashed: exited without a result"),
            JobOutcome::Protocol(m) => write!(f, "worker protocol error: {m}"),
        }
    }
}

/// What a finished job leaves behind.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// How it ended.
    pub outcome: JobOutcome,
    /// The end of the worker's stderr (plugin prints, panics, libtorch warnings):
    /// the job log of a failed job.
    pub stderr_tail: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The worker's exit status, when it could be collected.
    pub exit: Option<ExitStatus>,
}

enum Msg {
    Frame(FromWorker),
    Eof,
    Bad(ProtocolError),
    Cancel,
}

/// A running worker. Dropping it without [`WorkerHandle::wait`] cancels the job
/// (the supervisor still kills the worker after the grace period).
pub struct WorkerHandle {
    ctl: mpsc::Sender<Msg>,
    supervisor: Option<JoinHandle<JobReport>>,
    pid: u32,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("pid", &self.pid)
            .finish()
    }
}

impl WorkerHandle {
    /// Asks the job to stop; it is killed if still running after the grace period.
    /// Never blocks.
    pub fn cancel(&self) {
        let _ = self.ctl.send(Msg::Cancel);
    }

    /// Whether the job is over (the report is ready). Never blocks.
    pub fn is_finished(&self) -> bool {
        self.supervisor.as_ref().is_none_or(|h| h.is_finished())
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Blocks until the job is over and returns its report.
    pub fn wait(mut self) -> JobReport {
        let started = Instant::now();
        match self.supervisor.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            // The supervisor only panics if our own event callback did.
            _ => JobReport {
                outcome: JobOutcome::Protocol("the worker supervisor panicked".into()),
                stderr_tail: String::new(),
                elapsed: started.elapsed(),
                exit: None,
            },
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.supervisor.is_some() {
            self.cancel();
        }
    }
}

/// Starts `opts.exe worker` on `job`. Events (progress, log, metric, artifact)
/// reach `on_event` in order on a supervisor thread, never the caller's, so a GUI
/// can forward them to its own channel; the final message is in the report.
pub fn spawn_worker(
    opts: &WorkerOptions,
    job: Job,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> io::Result<WorkerHandle> {
    let mut child = Command::new(&opts.exe)
        .arg("worker")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let pid = child.id();
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("worker pipes missing"));
            }
        };

    let tail = Arc::new(Mutex::new(VecDeque::<u8>::new()));
    let stderr_thread = {
        let tail = Arc::clone(&tail);
        let limit = opts.stderr_tail_bytes;
        std::thread::spawn(move || keep_tail(stderr, &tail, limit))
    };

    let (ctl, rx) = mpsc::channel();
    {
        let tx = ctl.clone();
        let mut stdout = stdout;
        std::thread::spawn(move || {
            loop {
                let msg = match read_frame::<_, FromWorker>(&mut stdout) {
                    Ok(Some(m)) => Msg::Frame(m),
                    Ok(None) => Msg::Eof,
                    Err(e) => Msg::Bad(e),
                };
                let last = !matches!(msg, Msg::Frame(_));
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        });
    }

    let sup = Supervisor {
        child,
        stdin: Some(stdin),
        rx,
        timeout: opts.timeout,
        grace: opts.grace,
        started,
    };
    let supervisor = std::thread::spawn(move || {
        let (outcome, exit) = sup.run(job, on_event);
        // The stderr reader ends when the worker's stderr closes; a grandchild
        // holding it open must not hang us, so wait only briefly.
        let until = Instant::now() + Duration::from_millis(500);
        while !stderr_thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let bytes: Vec<u8> = tail
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        JobReport {
            outcome,
            stderr_tail: String::from_utf8_lossy(&bytes).into_owned(),
            elapsed: started.elapsed(),
            exit,
        }
    });
    Ok(WorkerHandle {
        ctl,
        supervisor: Some(supervisor),
        pid,
    })
}

/// [`spawn_worker`] and wait: for the CLI.
pub fn run_job(
    opts: &WorkerOptions,
    job: Job,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> io::Result<JobReport> {
    Ok(spawn_worker(opts, job, on_event)?.wait())
}

fn keep_tail(mut r: impl Read, tail: &Mutex<VecDeque<u8>>, limit: usize) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend(&buf[..n]);
                let excess = t.len().saturating_sub(limit);
                t.drain(..excess);
            }
        }
    }
}

struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Msg>,
    timeout: Option<Duration>,
    grace: Duration,
    started: Instant,
}

/// Unwinding out of `run` (a panicking event callback) must not leave an orphan
/// worker running; after a normal `run` the child is already reaped.
impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Supervisor {
    fn send(&mut self, msg: &ToWorker) {
        // A worker that already died cannot be told anything; its exit status says
        // what happened, so write errors are not outcomes.
        if let Some(stdin) = self.stdin.as_mut()
            && write_frame(stdin, msg).is_err()
        {
            self.stdin = None;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
    }

    fn run(
        mut self,
        job: Job,
        mut on_event: impl FnMut(FromWorker),
    ) -> (JobOutcome, Option<ExitStatus>) {
        self.send(&ToWorker::Hello(Hello::ours()));
        self.send(&ToWorker::Start { job });
        let deadline = self.timeout.map(|t| self.started + t);
        let mut kill_at: Option<Instant> = None;
        let mut got_hello = false;
        let mut last: Option<JobOutcome> = None;
        let mut killed = false;
        loop {
            let wake = [deadline, kill_at].into_iter().flatten().min();
            let msg = match wake {
                Some(w) => match self
                    .rx
                    .recv_timeout(w.saturating_duration_since(Instant::now()))
                {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.kill();
                        killed = true;
                        if last.is_some() {
                            // It finished and then lingered: the result stands.
                        } else if kill_at.is_some_and(|k| Instant::now() >= k) {
                            last = Some(JobOutcome::Cancelled { killed: true });
                        } else if let Some(t) = self.timeout {
                            last = Some(JobOutcome::TimedOut(t));
                        }
                        break;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            match msg {
                Msg::Cancel => {
                    if kill_at.is_none() && last.is_none() {
                        self.send(&ToWorker::Cancel);
                        kill_at = Some(Instant::now() + self.grace);
                    }
                }
                Msg::Eof => break,
                Msg::Bad(e) => {
                    last.get_or_insert(JobOutcome::Protocol(e.to_string()));
                    self.kill();
                    killed = true;
                    break;
                }
                Msg::Frame(FromWorker::Hello(h)) => {
                    if let Err(e) = h.check() {
                        last = Some(JobOutcome::Protocol(e.to_string()));
                        self.kill();
                        killed = true;
                        break;
                    }
                    got_hello = true;
                }
                Msg::Frame(other) if !got_hello => {
                    last = Some(JobOutcome::Protocol(
                        ProtocolError::NoHello(format!("{other:?}")).to_string(),
                    ));
                    self.kill();
                    killed = true;
                    break;
                }
                Msg::Frame(FromWorker::Result { value }) => {
                    last.get_or_insert(JobOutcome::Succeeded(value));
                }
                Msg::Frame(FromWorker::Error { message }) => {
                    // Shown to users as is (GUI, CLI): no libtorch C++ trace.
                    let message = crate::user_error::clean_torch_text(&message);
                    last.get_or_insert(JobOutcome::Failed(message));
                }
                Msg::Frame(FromWorker::Cancelled) => {
                    last.get_or_insert(JobOutcome::Cancelled { killed: false });
                }
                Msg::Frame(event) => on_event(event),
            }
        }
        // Closing stdin tells a worker whose job is over (or that ignores frames)
        // that nobody listens any more.
        self.stdin = None;
        let exit = self.reap(killed);
        let outcome = match (last, exit) {
            (Some(o), _) => o,
            (None, Some(status)) => JobOutcome::Crashed {
                signal: status.signal(),
                code: status.code(),
            },
            (None, None) => JobOutcome::Crashed {
                signal: None,
                code: None,
            },
        };
        (outcome, exit)
    }

    /// Collects the exit status; a worker that closed stdout but lingers past the
    /// grace period is killed.
    fn reap(&mut self, killed: bool) -> Option<ExitStatus> {
        let until = Instant::now()
            + if killed {
                Duration::from_secs(5)
            } else {
                self.grace
            };
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    self.kill();
                    return self.child.wait().ok();
                }
                Err(_) => return None,
            }
        }
    }
}
