//! The parent side: spawn `lethe worker`, stream its events, cancel it, time it
//! out, and turn however it ended (result, error, signal, exit code, silence) into
//! a [`JobReport`]. The parent never runs plugin code, so it survives all of them.
//!
//! Containment (issue 22):
//! * each worker leads a process group of its own (its pgid is its pid), and every
//!   kill (cancel past the grace period, timeout, inactivity, a broken protocol, a
//!   worker that does not exit) goes to the whole group, so processes a plugin
//!   started die with the job; after a worker exits on its own, what is left of its
//!   group is killed too. The leader is never reaped before its group is signalled
//!   (`waitid` with `WNOWAIT`), so the group id cannot have been reused;
//! * the worker sets `PR_SET_PDEATHSIG` = `SIGKILL` first thing ([`super::child`]),
//!   so it dies with the app even when the app is killed outright (and exits at once
//!   if the app died before that). Done in the worker rather than in a `pre_exec`
//!   hook, which would force a full `fork` of a large process instead of std's
//!   `posix_spawn` (which also sets the process group). The signal follows the
//!   *thread* that forked the worker, so workers are forked by one thread that lives
//!   as long as the process (`spawn_child`); processes a plugin started are
//!   reached by the group kills above, not by this signal;
//! * the frame pipes are close-on-exec: std creates every pipe of a
//!   [`Command`] with `pipe2(O_CLOEXEC)` (so one worker never inherits another's
//!   pipe ends) and dup2s the child's ends onto 0/1/2 only; inside the worker, the
//!   frame streams are moved off fds 0 and 1 onto close-on-exec descriptors
//!   ([`super::child`]), so a plugin's subprocess inherits neither;
//! * [`WorkerOptions::inactivity`]: a worker that sends no frame for that long is
//!   killed ([`JobOutcome::Inactive`]);
//! * a worker that sent its final message (or closed its output) but has not exited
//!   [`WorkerOptions::exit_grace`] later is killed; its result stands and the job
//!   log ([`JobReport::stderr_tail`]) ends with a line saying so.

use super::protocol::{FromWorker, Hello, Job, ProtocolError, ToWorker, read_frame, write_frame};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to start and supervise a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The executable to run with the `worker` subcommand (normally this one).
    pub exe: PathBuf,
    /// Kill the worker and report [`JobOutcome::TimedOut`] after this long.
    pub timeout: Option<Duration>,
    /// Kill the worker and report [`JobOutcome::Inactive`] when it sends no frame
    /// (log, progress, metric, artifact, hello) for this long. Off by default: a
    /// plugin may legitimately compute for minutes without reporting.
    pub inactivity: Option<Duration>,
    /// How long a cancelled worker gets to stop on its own before it is killed.
    pub grace: Duration,
    /// How long a worker that sent its final message (or closed its output) gets
    /// to exit before it is killed; the job log then says so.
    pub exit_grace: Duration,
    /// How many trailing bytes of the worker's stderr to keep as the job log.
    pub stderr_tail_bytes: usize,
    /// Extra environment variables for the worker (e.g. the shadow-model
    /// cache, `LETHE_SHADOW_CACHE`).
    pub env: Vec<(String, String)>,
    /// Address-space limit of the worker (`RLIMIT_AS`, bytes), for workers that
    /// parse untrusted files: an allocation beyond it fails inside the worker
    /// instead of taking the machine's memory. The worker also volunteers to be
    /// the kernel's first choice when memory runs out (`oom_score_adj` 500).
    pub memory_limit: Option<u64>,
    /// Plugin scans keep what they found here by library hash, and quarantine
    /// libraries that killed the scanning worker (see [`super::scan_cache`]).
    /// Off by default; the desktop app turns it on.
    pub scan_cache: Option<PathBuf>,
}

impl WorkerOptions {
    /// Options for re-executing the current executable (see [`Self::with_exe`]).
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self::with_exe(std::env::current_exe()?))
    }

    /// Options for running `exe worker`, no timeout, no inactivity limit, 3 s
    /// grace, 5 s to exit after the final message.
    pub fn with_exe(exe: impl Into<PathBuf>) -> Self {
        WorkerOptions {
            exe: exe.into(),
            timeout: None,
            inactivity: None,
            grace: Duration::from_secs(3),
            exit_grace: Duration::from_secs(5),
            stderr_tail_bytes: 64 * 1024,
            env: Vec::new(),
            memory_limit: None,
            scan_cache: None,
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
    /// The worker sent nothing for [`WorkerOptions::inactivity`] (this long) and
    /// was killed.
    Inactive(Duration),
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
            JobOutcome::Inactive(t) => write!(
                f,
                "stalled: no message from the worker for {:.1}s (the inactivity limit); killed",
                t.as_secs_f64()
            ),
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
    /// the job log of a failed job. A worker killed for not exiting after its
    /// final message gets a last line saying so, starting with [`SUPERVISOR_NOTE`].
    pub stderr_tail: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The worker's exit status, when it could be collected.
    pub exit: Option<ExitStatus>,
    /// Whether the worker answered the hello: it was a Lethe worker that got as
    /// far as the job. A worker that died before is an installation problem,
    /// not the job's (or its input file's).
    pub answered_hello: bool,
}

/// How lines the supervisor adds to a job log begin.
pub const SUPERVISOR_NOTE: &str = "lethe supervisor: ";

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
                answered_hello: false,
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
    spawn(opts, job, false, on_event)
}

/// Like [`spawn_worker`], but the job starts cancelled: the worker's cancel flag
/// is up before the plugin is created, so its `run` is entered with the flag
/// already raised and its first `check_cancelled()` returns `CANCELLED`, every
/// time (a [`WorkerHandle::cancel`] right after [`spawn_worker`] reaches the
/// worker's watcher thread at some point, maybe after `run` began). As after a
/// cancel, the worker is killed if it has not ended a grace period after the
/// start. For `lethe plugins check`.
pub fn spawn_worker_cancelled(
    opts: &WorkerOptions,
    job: Job,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> io::Result<WorkerHandle> {
    spawn(opts, job, true, on_event)
}

fn spawn(
    opts: &WorkerOptions,
    job: Job,
    cancelled: bool,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> io::Result<WorkerHandle> {
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("worker")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own (pgid = its pid): kills reach its children.
        .process_group(0);
    // The worker asks to die with us (PR_SET_PDEATHSIG) once it runs, and exits if
    // it finds another parent by then (we died before it could ask).
    cmd.env(super::child::PARENT_PID_ENV, std::process::id().to_string());
    if let Some(limit) = opts.memory_limit {
        limit_memory(&mut cmd, limit);
    }
    let mut child = spawn_child(cmd)?;
    let started = Instant::now();
    let pid = child.id();
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => {
                kill_group(&mut child);
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
        inactivity: opts.inactivity,
        grace: opts.grace,
        exit_grace: opts.exit_grace,
        started,
    };
    let supervisor = std::thread::spawn(move || {
        let (outcome, exit, note, answered_hello) = sup.run(job, cancelled, on_event);
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
        let mut stderr_tail = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(note) = note {
            if !stderr_tail.is_empty() && !stderr_tail.ends_with('\n') {
                stderr_tail.push('\n');
            }
            stderr_tail.push_str(SUPERVISOR_NOTE);
            stderr_tail.push_str(&note);
            stderr_tail.push('\n');
        }
        JobReport {
            outcome,
            stderr_tail,
            elapsed: started.elapsed(),
            exit,
            answered_hello,
        }
    });
    Ok(WorkerHandle {
        ctl,
        supervisor: Some(supervisor),
        pid,
    })
}

/// Forks `cmd` on a thread that lives as long as the process. The parent-death
/// signal fires when the *thread* that forked the child ends (prctl(2)), so a
/// worker started from a short-lived thread (a GUI task, a study step) must not
/// be forked there, or it would be killed with that thread.
fn spawn_child(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("lethe-worker-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        // No thread could be started: fork here (the signal then follows this thread).
        return cmd.spawn();
    };
    let (reply, answer) = mpsc::channel();
    let gone = || io::Error::other("the worker-spawning thread is gone");
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Sets `RLIMIT_AS` and raises `oom_score_adj` in the child before it runs.
fn limit_memory(cmd: &mut Command, limit: u64) {
    let rlim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setrlimit, open, write, close) on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &rlim) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Best effort: raising one's own score needs no privilege.
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                let v = b"500";
                libc::write(fd, v.as_ptr().cast(), v.len());
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// SIGKILL to the worker's process group (its children included) and to the
/// worker itself. Call it only before the worker is reaped: until then its pid,
/// which is the group's id, cannot be reused by another process.
fn kill_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id())
        && pgid > 1
    {
        // SAFETY: kill(2) on the group this worker leads (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill();
}

/// Whether the worker has exited, without reaping it (`WNOWAIT`): it stays a
/// zombie, holding its pid and so its group id, until [`Child::wait`].
fn has_exited(child: &Child) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child, writing into `info`.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled in (or left zero) the child fields.
    Ok(unsafe { info.si_pid() } != 0)
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
    inactivity: Option<Duration>,
    grace: Duration,
    exit_grace: Duration,
    started: Instant,
}

/// Unwinding out of `run` (a panicking event callback) must not leave an orphan
/// worker running; after a normal `run` the child is already reaped.
impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_group(&mut self.child);
            let _ = self.child.wait();
        }
    }
}

/// What the supervisor is waiting for when its next deadline passes.
#[derive(Clone, Copy, PartialEq)]
enum Wake {
    /// The job's timeout.
    Deadline,
    /// The end of the grace period after a cancel.
    CancelGrace,
    /// The end of the exit grace after the final message.
    Exit,
    /// The inactivity limit since the last frame.
    Silence,
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

    /// Kills the worker's whole process group; the worker is not reaped yet.
    fn kill(&mut self) {
        kill_group(&mut self.child);
    }

    /// Runs the job to its end: the outcome, the exit status, and a note for
    /// the job log when the worker had to be killed for not exiting.
    fn run(
        mut self,
        job: Job,
        cancelled: bool,
        mut on_event: impl FnMut(FromWorker),
    ) -> (JobOutcome, Option<ExitStatus>, Option<String>, bool) {
        self.send(&ToWorker::Hello(Hello::ours()));
        self.send(&ToWorker::Start { job, cancelled });
        let deadline = self.timeout.map(|t| self.started + t);
        // A job started cancelled gets the grace period a cancel gives, from the
        // worker's hello on (process start and libtorch's loading are not the
        // plugin's time).
        let mut kill_at: Option<Instant> = None;
        // When the final message came.
        let mut final_at: Option<Instant> = None;
        let mut last_frame = self.started;
        let mut got_hello = false;
        let mut last: Option<JobOutcome> = None;
        let mut killed = false;
        let mut note = None;
        loop {
            let silent_at = match (self.inactivity, &last, kill_at) {
                (Some(limit), None, None) => Some(last_frame + limit),
                _ => None,
            };
            let exit_by = final_at.map(|f| f + self.exit_grace);
            // Earliest first; on a tie the first listed wins.
            let wake = [
                (exit_by, Wake::Exit),
                (kill_at, Wake::CancelGrace),
                (deadline, Wake::Deadline),
                (silent_at, Wake::Silence),
            ]
            .into_iter()
            .filter_map(|(at, why)| at.map(|at| (at, why)))
            .min_by_key(|(at, _)| *at);
            let msg = match wake {
                Some((at, why)) => match self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(f) = final_at {
                            // It finished; the result stands. A worker that exited
                            // while a child of its own holds the frame pipe open is
                            // not lingering: the reap below kills that child.
                            if !has_exited(&self.child).unwrap_or(false) {
                                note = Some(format!(
                                    "the worker sent its final message but had not exited {:.1}s later; killed it",
                                    f.elapsed().as_secs_f64()
                                ));
                                self.kill();
                                killed = true;
                            }
                            break;
                        }
                        self.kill();
                        killed = true;
                        last = match why {
                            Wake::CancelGrace => Some(JobOutcome::Cancelled { killed: true }),
                            Wake::Deadline => self.timeout.map(JobOutcome::TimedOut),
                            Wake::Silence => self.inactivity.map(JobOutcome::Inactive),
                            Wake::Exit => None,
                        };
                        break;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            if matches!(msg, Msg::Frame(_)) {
                last_frame = Instant::now();
            }
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
                    if cancelled && kill_at.is_none() {
                        kill_at = Some(Instant::now() + self.grace);
                    }
                }
                Msg::Frame(other) if !got_hello => {
                    last = Some(JobOutcome::Protocol(
                        ProtocolError::NoHello(format!("{other:?}")).to_string(),
                    ));
                    self.kill();
                    killed = true;
                    break;
                }
                Msg::Frame(
                    end @ (FromWorker::Result { .. }
                    | FromWorker::Error { .. }
                    | FromWorker::Cancelled),
                ) => {
                    if last.is_none() {
                        last = Some(match end {
                            FromWorker::Result { value } => JobOutcome::Succeeded(value),
                            // Shown to users as is (GUI, CLI): no libtorch C++ trace.
                            FromWorker::Error { message } => {
                                JobOutcome::Failed(crate::user_error::clean_torch_text(&message))
                            }
                            _ => JobOutcome::Cancelled { killed: false },
                        });
                        final_at = Some(Instant::now());
                        // Nothing more to tell it: a worker waiting for its input
                        // to close may exit now.
                        self.stdin = None;
                    }
                }
                Msg::Frame(event) => on_event(event),
            }
        }
        // Closing stdin tells a worker whose job is over (or that ignores frames)
        // that nobody listens any more.
        self.stdin = None;
        let (exit, reap_note) = self.reap(killed);
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
        (outcome, exit, note.or(reap_note), got_hello)
    }

    /// Collects the exit status. What is left of the worker's process group once
    /// it exited is killed first (the worker is still unreaped, so the group id
    /// is still its own); a worker that closed its output but has not exited
    /// within the exit grace is killed, with a note for the job log.
    fn reap(&mut self, killed: bool) -> (Option<ExitStatus>, Option<String>) {
        let mut note = None;
        if !killed {
            let since = Instant::now();
            loop {
                match has_exited(&self.child) {
                    Ok(true) => break,
                    Ok(false) if since.elapsed() < self.exit_grace => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(false) => {
                        note = Some(format!(
                            "the worker closed its output but had not exited {:.1}s later; killed it",
                            since.elapsed().as_secs_f64()
                        ));
                        break;
                    }
                    // Not our child any more (reaped elsewhere): nothing to signal.
                    Err(_) => return (self.child.try_wait().ok().flatten(), None),
                }
            }
        }
        self.kill();
        (self.child.wait().ok(), note)
    }
}
