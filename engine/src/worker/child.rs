//! The worker side: `lethe worker` speaks the protocol on stdin/stdout and runs
//! one job, so plugin code (which may crash, hang or scribble on stdout) never
//! runs in the GUI or CLI process.
//!
//! First thing, the worker asks to be killed when its parent dies
//! (`PR_SET_PDEATHSIG`), then moves the frame streams off fds 0 and 1 onto
//! close-on-exec descriptors: fd 1 becomes stderr and fd 0 `/dev/null`, so neither a
//! plugin nor a process it starts can write into the frames, read the parent's
//! messages or hold the pipes open (see [`super::parent`] for the parent's side).

use super::protocol::{
    DescriptorInfo, FromWorker, Hello, Job, ProtocolError, ScanReport, ScannedFile, ToWorker,
    read_frame, write_frame,
};
use crate::checkpoint::LoadOptions;
use crate::plugin_host::services::{
    EngineServices, JobInfo, ServiceEvent, ShadowSettings, SplitPositions,
};
use crate::plugin_host::{HostServices, PluginHostError, PluginLibrary};
use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::sdk::{Kind, LogLevel};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tch::Device;

/// Why the worker could not serve its parent.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The protocol broke (bad frame, closed pipe, version mismatch).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Setting up the frame pipe failed.
    #[error("worker setup: {0}")]
    Setup(io::Error),
    /// The parent closed stdin before sending a job.
    #[error("the parent sent no job")]
    NoJob,
}

/// The frame writer, shared by the job thread and plugin callbacks (plugins may
/// report from any thread).
#[derive(Clone)]
struct Frames(Arc<Mutex<BufWriter<File>>>);

impl Frames {
    fn send(&self, msg: &FromWorker) -> Result<(), ProtocolError> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, msg)
    }
}

/// Moves the real stdout out of the way: frames go to a private duplicate of fd 1,
/// and fd 1 itself becomes stderr, so a plugin's `println!` or `printf` lands in the
/// job log instead of corrupting the frame stream. The duplicate is close-on-exec
/// (`F_DUPFD_CLOEXEC`; a plain `dup` clears the flag), so a process the plugin
/// starts does not inherit the frame pipe: it could neither write into the stream
/// nor keep it open after the worker exits.
fn take_stdout_for_frames() -> io::Result<File> {
    // SAFETY: plain fd syscalls on fds this process owns; the duplicate is owned by
    // the returned File alone.
    unsafe {
        let frames = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if frames < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            let e = io::Error::last_os_error();
            libc::close(frames);
            return Err(e);
        }
        Ok(File::from_raw_fd(frames))
    }
}

/// Moves the parent's frames (fd 0) to a private close-on-exec descriptor and
/// puts `/dev/null` on fd 0: a plugin (or a process it starts, which inherits
/// fd 0) reading stdin gets end-of-file instead of swallowing the parent's cancel.
fn take_stdin_for_frames() -> io::Result<File> {
    // SAFETY: plain fd syscalls on fds this process owns; the duplicate is owned by
    // the returned File alone, the /dev/null descriptor is closed after the dup2.
    unsafe {
        let frames = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if frames < 0 {
            return Err(io::Error::last_os_error());
        }
        let frames = File::from_raw_fd(frames);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        let moved = libc::dup2(null, 0);
        let e = io::Error::last_os_error();
        libc::close(null);
        if moved < 0 {
            return Err(e);
        }
        Ok(frames)
    }
}

/// The parent's pid, set by [`super::spawn_worker`], so the worker can tell whether
/// its parent died before the worker asked to die with it.
pub const PARENT_PID_ENV: &str = "LETHE_WORKER_PARENT_PID";

/// Asks the kernel to SIGKILL this worker when its parent (the thread of the app
/// that started it) ends, so a worker never outlives an app that was killed
/// outright. If the parent already died (between the spawn and here), the signal would never come:
/// give up at once.
fn die_with_parent() -> Result<(), WorkerError> {
    let (signal, unused): (libc::c_ulong, libc::c_ulong) = (libc::SIGKILL as _, 0);
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, unused, unused, unused) } != 0 {
        return Err(WorkerError::Setup(io::Error::last_os_error()));
    }
    let expected = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    if let Some(expected) = expected
        && u32::try_from(parent).ok() != Some(expected)
    {
        return Err(WorkerError::Setup(io::Error::other(format!(
            "the parent process {expected} is gone"
        ))));
    }
    Ok(())
}

/// A crashing plugin must not leave a multi-gigabyte core of libtorch behind for
/// every failed job; the parent reports the signal instead.
fn disable_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; failure only means cores stay enabled.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

/// Runs the worker: hello, one job, its final message. Returns after the job;
/// the caller exits the process.
pub fn run_worker() -> Result<(), WorkerError> {
    die_with_parent()?;
    disable_core_dumps();
    // Plugins' training loops run here, not through the engine's: same heap setting.
    crate::train::heap::keep_freed_memory();
    let frames = Frames(Arc::new(Mutex::new(BufWriter::new(
        take_stdout_for_frames().map_err(WorkerError::Setup)?,
    ))));
    let mut stdin = take_stdin_for_frames().map_err(WorkerError::Setup)?;

    frames.send(&FromWorker::Hello(Hello::ours()))?;
    match read_frame::<_, ToWorker>(&mut stdin)? {
        Some(ToWorker::Hello(theirs)) => {
            if let Err(e) = theirs.check() {
                frames.send(&FromWorker::Error {
                    message: e.to_string(),
                })?;
                return Err(e.into());
            }
        }
        Some(other) => {
            let e = ProtocolError::NoHello(format!("{other:?}"));
            frames.send(&FromWorker::Error {
                message: e.to_string(),
            })?;
            return Err(e.into());
        }
        None => return Err(WorkerError::NoJob),
    }
    let (job, start_cancelled) = match read_frame::<_, ToWorker>(&mut stdin)? {
        Some(ToWorker::Start { job, cancelled }) => (job, cancelled),
        Some(ToWorker::Cancel) => {
            frames.send(&FromWorker::Cancelled)?;
            return Ok(());
        }
        Some(other) => {
            let message = format!("expected a start message, got {other:?}");
            frames.send(&FromWorker::Error {
                message: message.clone(),
            })?;
            return Err(ProtocolError::NoHello(message).into());
        }
        None => return Err(WorkerError::NoJob),
    };

    // Watch for cancel on another thread; the parent going away (stdin closed or
    // broken) counts as cancel too.
    // A job that starts cancelled has its flag up before any plugin code runs.
    let cancelled = Arc::new(AtomicBool::new(start_cancelled));
    {
        let cancelled = Arc::clone(&cancelled);
        std::thread::spawn(move || {
            loop {
                match read_frame::<_, ToWorker>(&mut stdin) {
                    Ok(Some(ToWorker::Cancel)) | Ok(None) | Err(_) => {
                        cancelled.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Some(_)) => {}
                }
            }
        });
    }

    let last = match job {
        Job::Scan { libraries } => {
            let report = scan(&libraries);
            match serde_json::to_value(&report) {
                Ok(value) => FromWorker::Result { value },
                Err(e) => FromWorker::Error {
                    message: format!("cannot encode the scan report: {e}"),
                },
            }
        }
        Job::Run {
            library,
            id,
            params,
        } => {
            let services = Arc::new(FrameServices {
                frames: frames.clone(),
                cancelled: Arc::clone(&cancelled),
            });
            run_plugin(&library, &id, &params, services, json!({"status": "ok"}))
        }
        Job::Unlearn {
            library,
            id,
            params,
            checkpoint,
            data,
            forget,
            train_rows,
            out_dir,
            seed,
            device,
        } => {
            let setup = UnlearnSetup {
                library: &library,
                id: &id,
                params: &params,
                checkpoint: &checkpoint,
                data: &data,
                forget: &forget,
                train_rows: train_rows.as_deref(),
                out_dir: &out_dir,
                seed,
                device: &device,
            };
            match engine_services(&setup, &frames, &cancelled) {
                Ok(services) => {
                    let artifacts = Arc::clone(&services);
                    match run_plugin(&library, &id, &params, services, Value::Null) {
                        FromWorker::Result { .. } => FromWorker::Result {
                            value: json!({
                                "status": "ok",
                                "artifacts": artifacts.artifacts().iter().map(|a| json!({
                                    "kind": format!("{:?}", a.kind).to_lowercase(),
                                    "name": a.name,
                                    "path": a.path,
                                })).collect::<Vec<_>>(),
                            }),
                        },
                        other => other,
                    }
                }
                Err(message) => FromWorker::Error { message },
            }
        }
        Job::Preview { request } => match crate::preview::answer(&request) {
            Ok(value) => FromWorker::Result { value },
            Err(message) => FromWorker::Error { message },
        },
    };
    frames.send(&last)?;
    Ok(())
}

fn describe(lib: &PluginLibrary) -> Vec<DescriptorInfo> {
    lib.descriptors()
        .iter()
        .map(|d| DescriptorInfo {
            id: d.id.clone(),
            name: d.name.clone(),
            version: d.version.clone(),
            kind: match d.kind {
                Kind::Method => "method",
                Kind::Attack => "attack",
            }
            .to_string(),
            description: d.description.clone(),
            citation: d.citation.clone(),
            schema: d.schema.clone(),
        })
        .collect()
}

fn scan(libraries: &[std::path::PathBuf]) -> ScanReport {
    ScanReport {
        files: libraries
            .iter()
            .map(|path| ScannedFile {
                path: path.clone(),
                outcome: PluginLibrary::load(path)
                    .map(|lib| describe(&lib))
                    .map_err(|e| e.to_string()),
            })
            .collect(),
    }
}

/// Plugin callbacks become frames; a failed send means the parent is gone, which
/// the cancel flag already reflects, so it is ignored here.
struct FrameServices {
    frames: Frames,
    cancelled: Arc<AtomicBool>,
}

impl HostServices for FrameServices {
    fn log(&self, level: LogLevel, message: &str) {
        let _ = self.frames.send(&FromWorker::Log {
            level: level.into(),
            text: message.to_string(),
        });
    }
    fn progress(&self, fraction: Option<f64>, message: &str, metrics: Option<Value>) {
        let _ = self.frames.send(&FromWorker::Progress {
            fraction,
            message: message.to_string(),
            metrics,
        });
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

struct UnlearnSetup<'a> {
    library: &'a Path,
    id: &'a str,
    params: &'a Value,
    checkpoint: &'a Path,
    data: &'a Path,
    forget: &'a Path,
    train_rows: Option<&'a Path>,
    out_dir: &'a Path,
    seed: u64,
    device: &'a str,
}

fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device `{other}` (cpu, cuda or cuda:N)")),
    }
}

/// The files of a job: what a shadow-model unit needs to make the same plan
/// as the attack's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFiles {
    /// The model's checkpoint.
    pub checkpoint: std::path::PathBuf,
    /// The dataset.
    pub data: std::path::PathBuf,
    /// The forget list.
    pub forget: std::path::PathBuf,
    /// The training rows, when not the dataset's training split (see
    /// [`Job::Unlearn`]).
    pub train_rows: Option<std::path::PathBuf>,
    /// Job seed.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

/// A training-rows file: a JSON array of distinct dataset rows below `len`,
/// sorted on return.
fn read_rows(path: &Path, len: usize) -> Result<Vec<i64>, String> {
    let bad = |why: String| format!("{}: {why}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    // 24 bytes per row is far more than a JSON integer of a real dataset needs.
    if meta.len() > 24 * len as u64 + 64 {
        return Err(bad(format!(
            "{} bytes is too long for the rows of a {len}-sample dataset",
            meta.len()
        )));
    }
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut rows: Vec<i64> = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not a JSON array of row numbers: {e}")))?;
    rows.sort_unstable();
    if let Some(w) = rows.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("row {} appears twice", w[0])));
    }
    if let Some(r) = rows
        .iter()
        .find(|&&r| r < 0 || usize::try_from(r).is_ok_and(|r| r >= len))
    {
        return Err(bad(format!(
            "row {r} is not in the dataset ({len} samples)"
        )));
    }
    if rows.is_empty() {
        return Err(bad("names no training rows".into()));
    }
    Ok(rows)
}

/// The model, the dataset and its splits of a job, loaded as the worker loads
/// them; `applies_to` refuses a method that does not fit, in words.
fn load_job(
    files: &JobFiles,
    applies_to: Option<(&str, &lethe_plugin_api::schema::AppliesTo)>,
) -> Result<
    (
        crate::checkpoint::LoadedModel,
        crate::data::Dataset,
        SplitPositions,
    ),
    String,
> {
    let device = parse_device(&files.device)?;
    let dataset =
        crate::data::load(&files.data).map_err(|e| format!("{}: {e}", files.data.display()))?;
    let mut split =
        crate::jobs::train::split_of(&dataset, files.seed).map_err(|e| e.to_string())?;
    if let Some(path) = &files.train_rows {
        let rows = read_rows(path, dataset.len())?;
        let outside = |v: &[i64]| -> Vec<i64> {
            v.iter()
                .copied()
                .filter(|r| rows.binary_search(r).is_err())
                .collect()
        };
        split.val = outside(&split.val);
        split.test = outside(&split.test);
        split.train = rows;
    }
    let forget = crate::data::ForgetSet::from_path(&files.forget, &dataset, &split.train)
        .map_err(|e| e.to_string())?;
    let model = crate::checkpoint::load_model(&files.checkpoint, device, &LoadOptions::default())
        .map_err(|e| format!("{}: {e}", files.checkpoint.display()))?;
    // A method that declares what it applies to is refused here, in words,
    // before it loads anything (the plugin would refuse too, later and in its own
    // terms).
    if let Some((name, a)) = applies_to {
        let whole = forget.is_whole_classes(&dataset, &split.train);
        if let Some(reason) = a.refusal(Some(model.arch.head.model_facts()), Some(whole)) {
            return Err(format!("{name} does not apply here: it {reason}"));
        }
    }
    let splits = SplitPositions {
        retain: Some(forget.retain(&split.train)),
        forget: Some(forget.indices().to_vec()),
        validation: Some(split.val.clone()),
        test: Some(split.test.clone()),
    };
    Ok((model, dataset, splits))
}

/// Trains shadow models `models` of `request` for the job of `files` into
/// `cache_dir` (a [`crate::exec::UnitSpec::TrainShadows`] unit); the number
/// trained (the others were in the cache). Refuses when this process's plan
/// has another key than `key`, the one the attack computed.
pub fn train_shadow_models(
    files: &JobFiles,
    request: &crate::shadows::ShadowRequest,
    models: &[usize],
    key: &str,
    cache_dir: &Path,
    method: Option<crate::shadows::ShadowMethod>,
) -> Result<usize, String> {
    let (model, dataset, splits) = load_job(files, None)?;
    let job = JobInfo {
        plugin_id: "lethe.shadow-models".into(),
        plugin_version: env!("CARGO_PKG_VERSION").into(),
        params: Value::Null,
        original_checkpoint: Some(files.checkpoint.clone()),
    };
    let scratch = std::env::temp_dir().join(format!("lethe-shadow-unit-{}", std::process::id()));
    let services = EngineServices::new(model, dataset, splits, scratch, job, files.seed)
        .map_err(|e| e.to_string())?
        .with_shadows(ShadowSettings {
            cache_dir: cache_dir.to_path_buf(),
            estimate_only: false,
            executor: None,
            job_files: Some(files.clone()),
            method,
        });
    services
        .shadow_train_only(request, models, key, &mut |line| eprintln!("{line}"))
        .map_err(|e| e.to_string())
}

/// The model, data and result services for an unlearning job, their events
/// forwarded as frames and their cancel flag raised by the cancel watcher.
fn engine_services(
    s: &UnlearnSetup<'_>,
    frames: &Frames,
    cancelled: &Arc<AtomicBool>,
) -> Result<Arc<EngineServices>, String> {
    let lib = PluginLibrary::load(s.library).map_err(|e| e.to_string())?;
    let descriptor = lib.descriptor(s.id).map_err(|e| e.to_string())?;
    let version = descriptor.version.clone();
    let applies_to = descriptor.schema.applies_to.clone();
    let name = descriptor.name.clone();
    let full = lib
        .validate_params(s.id, s.params)
        .map_err(|e| e.to_string())?;
    let files = JobFiles {
        checkpoint: s.checkpoint.to_path_buf(),
        data: s.data.to_path_buf(),
        forget: s.forget.to_path_buf(),
        train_rows: s.train_rows.map(Path::to_path_buf),
        seed: s.seed,
        device: s.device.to_string(),
    };
    let (model, dataset, splits) =
        load_job(&files, applies_to.as_ref().map(|a| (name.as_str(), a)))?;
    let job = JobInfo {
        plugin_id: s.id.to_string(),
        plugin_version: version,
        params: Value::Object(full),
        original_checkpoint: Some(s.checkpoint.to_path_buf()),
    };
    // The parent passes the shadow-model cache, estimate-only mode and its
    // executor in the environment (`lethe attack --estimate`, `--executor`),
    // leaving the job protocol as is.
    let mut shadows = ShadowSettings::from_env();
    shadows.job_files = Some(files);
    let services = EngineServices::new(model, dataset, splits, s.out_dir, job, s.seed)
        .map_err(|e| e.to_string())?
        .with_shadows(shadows)
        // The watcher's own flag: a cancel that arrived while the model and data
        // were loading is seen by the plugin's first check, not 20 ms later.
        .with_cancel_flag(Arc::clone(cancelled));
    let frames = frames.clone();
    let sink = move |e: ServiceEvent| {
        let msg = match e {
            ServiceEvent::Log { level, message } => FromWorker::Log {
                level: level.into(),
                text: message,
            },
            ServiceEvent::Progress {
                fraction,
                message,
                metrics,
            } => FromWorker::Progress {
                fraction,
                message,
                metrics,
            },
            ServiceEvent::Artifact(a) => FromWorker::Artifact {
                name: a.name,
                path: a.path,
            },
        };
        let _ = frames.send(&msg);
    };
    Ok(Arc::new(services.with_events(Arc::new(sink))))
}

fn run_plugin<S: HostServices>(
    library: &Path,
    id: &str,
    params: &Value,
    services: Arc<S>,
    ok: Value,
) -> FromWorker {
    let outcome = PluginLibrary::load(library)
        .and_then(|lib| lib.create(id, params, services))
        .and_then(|mut instance| instance.run());
    // Plugins may have printed through C stdio; push it into the log now rather
    // than losing it when the process exits.
    let _ = io::stdout().flush();
    match outcome {
        Ok(()) => FromWorker::Result { value: ok },
        Err(PluginHostError::Call { status, .. }) if status == LetheStatus::CANCELLED => {
            FromWorker::Cancelled
        }
        Err(e) => FromWorker::Error {
            message: e.to_string(),
        },
    }
}
