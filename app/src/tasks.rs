//! Background work: inspecting checkpoints and datasets, building forget-set
//! previews, drawing sample pictures and loading result files (all in worker
//! processes under time and memory limits, see `lethe_engine::preview`: the
//! window never parses a file it did not write), scanning plugins (in workers),
//! file dialogs and device probing. Each task runs on its own thread and sends one
//! [`Done`] through a channel; the UI thread applies it when it next draws.
//!
//! Every task thread is owned by [`Tasks`] and joined before it is dropped
//! ([`Tasks::shutdown`]): many tasks call into libtorch (inspections, the runtime
//! probe behind an audit record), and a thread still inside libtorch while the
//! process runs libtorch's global destructors crashes the process at exit. It also
//! means an audit record or an export that was started is written, not dropped.

use crate::artifacts::{ArtifactData, Scores};
use crate::catalog::Catalog;
use crate::devices::DeviceInfo;
use crate::thumbs::Thumb;
use lethe_engine::checkpoint::CheckpointSummary;
use lethe_engine::preview::{PreviewError, PreviewLimits, Request};
use lethe_engine::runtime::RuntimeReport;
use lethe_engine::worker::WorkerOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// Something that is being computed, or was.
#[derive(Debug, Clone)]
pub enum Loadable<T> {
    /// Still running.
    Loading,
    /// Done.
    Ready(T),
    /// Failed, with the message to show.
    Failed(String),
}

impl<T> Loadable<T> {
    /// The value, when ready.
    pub fn ready(&self) -> Option<&T> {
        match self {
            Loadable::Ready(t) => Some(t),
            _ => None,
        }
    }
}

impl<T> From<Result<T, String>> for Loadable<T> {
    fn from(r: Result<T, String>) -> Self {
        match r {
            Ok(t) => Loadable::Ready(t),
            Err(e) => Loadable::Failed(e),
        }
    }
}

pub use lethe_engine::preview::{DatasetInfo, FolderPreview, ForgetPreview, ForgetRequest};

impl<T> From<Result<T, PreviewError>> for Loadable<T> {
    fn from(r: Result<T, PreviewError>) -> Self {
        r.map_err(|e| e.message().to_string()).into()
    }
}

/// What a file dialog is for.
#[derive(Debug, Clone, PartialEq)]
pub enum PickTarget {
    /// Open or create a project folder.
    ProjectFolder,
    /// Add a checkpoint.
    Checkpoint,
    /// Add a dataset file.
    DatasetFile,
    /// Add a dataset folder (MNIST/CIFAR/image folder).
    DatasetFolder,
    /// A forget list file.
    ForgetList,
    /// A folder of images to forget.
    ForgetFolder,
    /// A path parameter of a plugin form.
    Param {
        /// Plugin id.
        plugin: String,
        /// Parameter key.
        key: String,
        /// A folder rather than a file.
        directory: bool,
    },
    /// Save an export somewhere else.
    SaveAs {
        /// Suggested file name.
        name: String,
        /// The contents.
        bytes: Arc<Vec<u8>>,
    },
}

/// A finished task.
pub enum Done {
    /// A checkpoint inspection.
    Checkpoint(PathBuf, Result<CheckpointSummary, PreviewError>),
    /// A dataset inspection.
    Dataset(PathBuf, u64, Result<DatasetInfo, PreviewError>),
    /// A forget-set preview.
    Forget(ForgetRequest, Result<ForgetPreview, PreviewError>),
    /// A plugin scan.
    Plugins(Catalog),
    /// A file dialog closed (`None`: cancelled or no dialog available).
    Picked(PickTarget, Option<PathBuf>),
    /// Devices and runtime.
    Devices(Vec<DeviceInfo>, Box<RuntimeReport>),
    /// A result file.
    Artifact(PathBuf, Result<ArtifactData, PreviewError>),
    /// Membership scores of a run folder.
    Scores(PathBuf, Result<Scores, PreviewError>),
    /// Pictures of training samples, for a run's most-at-risk view.
    Samples(PathBuf, Vec<i64>, Result<Vec<(i64, Thumb)>, PreviewError>),
    /// An evaluation of a run (`lethe evaluate`) ended.
    Evaluation(String, Result<crate::evaluation::Evaluation, String>),
    /// The verdict of a deletion run as its evidence stands (run id, the
    /// evidence's key).
    Verdict(
        String,
        String,
        Result<lethe_engine::report::verdict::Verdict, String>,
    ),
    /// A deletion report was written (by run id): the file and the verdict.
    Report(String, Result<crate::export::Written, String>),
    /// A study folder was read (shared: the results are large).
    Study(
        PathBuf,
        Result<Arc<lethe_engine::study::StudyResults>, String>,
    ),
    /// A file was handed to the desktop to open (or could not be).
    Opened(Result<PathBuf, String>),
    /// An export was written (or not).
    Exported(Result<PathBuf, String>),
    /// A job's end was recorded in the audit log.
    Audited(Result<(), String>),
    /// A shadow-model cost estimate (by its key: model, attack, params).
    Estimate(String, Result<String, String>),
    /// The metric set of a finished attack run (by run id).
    AttackReport(String, Result<crate::attack_report::AttackSummary, String>),
    /// A per-sample verification of a deletion ended, or a saved one was read
    /// (by the deletion's run id; `None`: never verified).
    Verification(
        String,
        Result<Option<Box<crate::verify::Verification>>, String>,
    ),
    /// A task panicked (a bug in Lethe); the message is shown.
    Panicked(String),
}

/// How files are read: in worker processes, under limits.
#[derive(Clone)]
struct Previewer {
    worker: WorkerOptions,
    limits: PreviewLimits,
    /// Where result values come back from the worker.
    scratch: PathBuf,
    /// Set on shutdown: workers still reading are stopped.
    stop: Arc<AtomicBool>,
}

impl Previewer {
    fn ask<T: serde::de::DeserializeOwned>(&self, request: Request) -> Result<T, PreviewError> {
        lethe_engine::preview::in_worker(&self.worker, self.limits, request, &self.stop)
    }
}

/// Whether shutting down waits for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Joined on shutdown.
    Work,
    /// A native file dialog: it waits for the user, not for us, and never calls
    /// into libtorch, so shutdown leaves it to the dialog's own process and does
    /// not wait for it.
    Dialog,
}

/// A running task's thread.
struct TaskThread {
    what: &'static str,
    kind: Kind,
    handle: JoinHandle<()>,
}

/// Starts tasks and collects their results.
pub struct Tasks {
    tx: Sender<Done>,
    rx: Receiver<Done>,
    waker: crate::runner::Waker,
    previewer: Previewer,
    /// Tasks started and not yet collected.
    pending: usize,
    /// Threads not yet joined.
    threads: Vec<TaskThread>,
    /// Set on shutdown: tasks that wait on a subprocess stop it and return.
    cancel: Arc<AtomicBool>,
}

impl Tasks {
    /// A task pool that calls `waker` when a result is ready and reads files
    /// in `worker` processes under `limits`.
    pub fn new(waker: crate::runner::Waker, worker: WorkerOptions, limits: PreviewLimits) -> Self {
        let (tx, rx) = mpsc::channel();
        let scratch = std::env::temp_dir().join(format!("lethe-preview-{}", std::process::id()));
        let cancel = Arc::new(AtomicBool::new(false));
        Tasks {
            tx,
            rx,
            waker,
            previewer: Previewer {
                worker,
                limits,
                scratch,
                stop: Arc::clone(&cancel),
            },
            pending: 0,
            threads: Vec::new(),
            cancel,
        }
    }

    /// Whether any task is still running.
    pub fn busy(&self) -> bool {
        self.pending > 0
    }

    /// What the tasks that shutdown would wait for are doing, one entry each
    /// (file dialogs are not among them).
    pub fn unfinished(&self) -> Vec<&'static str> {
        self.threads
            .iter()
            .filter(|t| t.kind == Kind::Work && !t.handle.is_finished())
            .map(|t| t.what)
            .collect()
    }

    /// Runs `f` on a new thread; `what` says what it does (shown while the
    /// window waits for it to finish).
    pub fn spawn(&mut self, what: &'static str, f: impl FnOnce() -> Done + Send + 'static) {
        self.spawn_kind(what, Kind::Work, f);
    }

    fn spawn_kind(
        &mut self,
        what: &'static str,
        kind: Kind,
        f: impl FnOnce() -> Done + Send + 'static,
    ) {
        self.reap();
        let tx = self.tx.clone();
        let waker = std::sync::Arc::clone(&self.waker);
        let body = move || {
            // A panic in a task (a bug) must not leave the UI waiting forever.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let done = done.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Done::Panicked(what)
            });
            let _ = tx.send(done);
            waker();
        };
        match std::thread::Builder::new()
            .name(format!("task: {what}"))
            .spawn(body)
        {
            Ok(handle) => {
                self.pending += 1;
                self.threads.push(TaskThread { what, kind, handle });
            }
            Err(e) => {
                // Out of threads: say so where the result would have appeared.
                let _ = self.tx.send(Done::Panicked(format!(
                    "cannot start a thread to {what}: {e}"
                )));
                self.pending += 1;
                (self.waker)();
            }
        }
    }

    /// Joins the threads that have ended (their results are in the channel).
    fn reap(&mut self) {
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(|t| t.handle.is_finished());
        self.threads = running;
        for t in ended {
            // The body catches panics, so join only fails on a panic in the
            // waker; the task's result (or its Panicked) was already sent.
            let _ = t.handle.join();
        }
    }

    /// Results ready now.
    pub fn drain(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        while let Ok(d) = self.rx.try_recv() {
            self.pending = self.pending.saturating_sub(1);
            out.push(d);
        }
        self.reap();
        out
    }

    /// Asks tasks that wait on a subprocess (an evaluation) to stop it, so that
    /// [`Tasks::shutdown`] does not wait minutes for a result nobody will see.
    /// Writes that were started (audit records, reports, exports) still finish.
    pub fn cancel_abortable(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Waits for every task but file dialogs to end. Idempotent; called before the
    /// process exits (window closed, app dropped), so that no task thread is left
    /// inside libtorch while libtorch's global destructors run.
    pub fn shutdown(&mut self) {
        self.cancel_abortable();
        for t in std::mem::take(&mut self.threads) {
            match t.kind {
                Kind::Work => {
                    let _ = t.handle.join();
                }
                // Dropping the handle detaches the dialog thread (see Kind::Dialog).
                Kind::Dialog => {}
            }
        }
        let _ = std::fs::remove_dir_all(&self.previewer.scratch);
    }

    /// Inspects a checkpoint (architecture, parameter count, SHA-256), in a worker.
    pub fn inspect_checkpoint(&mut self, path: PathBuf) {
        let p = self.previewer.clone();
        self.spawn("inspect a checkpoint", move || {
            let r = p.ask(Request::Checkpoint { path: path.clone() });
            Done::Checkpoint(path, r)
        });
    }

    /// Inspects a dataset with the split jobs will use for `seed`, in a worker.
    pub fn inspect_dataset(&mut self, path: PathBuf, seed: u64) {
        let p = self.previewer.clone();
        self.spawn("inspect a dataset", move || {
            let r = p.ask(Request::Dataset {
                path: path.clone(),
                seed,
            });
            Done::Dataset(path, seed, r)
        });
    }

    /// Builds a forget-set preview, in a worker.
    pub fn preview_forget(&mut self, req: ForgetRequest) {
        let p = self.previewer.clone();
        self.spawn("preview a forget set", move || {
            let r = p.ask(Request::Forget(req.clone()));
            Done::Forget(req, r)
        });
    }

    /// Pictures of the given samples of a dataset, drawn in a worker.
    pub fn sample_thumbs(&mut self, data: PathBuf, indices: Vec<i64>) {
        let p = self.previewer.clone();
        self.spawn("draw sample pictures", move || {
            let r = p.ask(Request::Samples {
                data: data.clone(),
                indices: indices.clone(),
            });
            Done::Samples(data, indices, r)
        });
    }

    /// Scans the plugin folders in worker processes; `retry_quarantined` (the
    /// user asked for a rescan) gives libraries quarantined for killing a scan
    /// another try.
    pub fn scan_plugins(
        &mut self,
        opts: lethe_engine::worker::WorkerOptions,
        extra: Vec<PathBuf>,
        retry_quarantined: bool,
    ) {
        self.spawn("scan the plugin folders", move || {
            if retry_quarantined && let Some(file) = &opts.scan_cache {
                let _ = lethe_engine::worker::scan_cache::clear_quarantine(file);
            }
            let dirs = lethe_engine::worker::plugin_dirs(&extra);
            let scans = lethe_engine::worker::scan_plugins(&opts, &dirs);
            Done::Plugins(Catalog::from_scan(dirs, scans))
        });
    }

    /// Probes the devices and the runtime.
    pub fn probe_devices(&mut self) {
        self.spawn("probe the devices", || {
            Done::Devices(crate::devices::probe(), Box::new(RuntimeReport::probe()))
        });
    }

    /// Loads a result file, in a worker.
    pub fn load_artifact(&mut self, path: PathBuf) {
        let p = self.previewer.clone();
        self.spawn("load a result file", move || {
            let r = lethe_engine::preview::artifact_in_worker(
                &p.worker, p.limits, &path, &p.scratch, &p.stop,
            );
            Done::Artifact(path, r)
        });
    }

    /// Runs `lethe evaluate` on a run's model (a subprocess, off the UI thread).
    pub fn evaluate(&mut self, run: String, req: crate::evaluation::EvalRequest) {
        let cancel = Arc::clone(&self.cancel);
        self.spawn("evaluate a run", move || {
            Done::Evaluation(run, crate::evaluation::run(&req, &cancel))
        });
    }

    /// Runs `lethe verify-samples` on a deletion (a subprocess, off the UI
    /// thread); `cancel` stops it, as does the window closing.
    pub fn verify_samples(
        &mut self,
        run: String,
        job: crate::verify::VerifyJob,
        running: crate::verify::Running,
    ) {
        let closing = Arc::clone(&self.cancel);
        self.spawn("verify a deletion per sample", move || {
            let r = crate::verify::run(&job, &running.cancel, &closing, &running.progress);
            Done::Verification(run, r.map(|v| Some(Box::new(v))))
        });
    }

    /// Reads the newest saved verification of a run folder.
    pub fn load_verification(&mut self, run: String, run_dir: PathBuf) {
        self.spawn("read a verification", move || {
            Done::Verification(
                run,
                crate::verify::load_saved(&run_dir).map(|v| v.map(Box::new)),
            )
        });
    }

    /// Estimates what verifying a deletion per sample will cost (U-LiRA's
    /// shadow models and their unlearned copies; LiRA reuses them).
    pub fn estimate_verification(
        &mut self,
        key: String,
        worker: WorkerOptions,
        req: lethe_engine::eval::per_sample::VerifyRequest,
    ) {
        self.spawn("estimate a verification's cost", move || {
            let r = lethe_engine::eval::per_sample::estimate(&worker, &req)
                .map(|e| {
                    format!(
                        "{}; LiRA on the original then reuses these shadow models",
                        crate::attack_report::estimate_line(&e)
                    )
                })
                .map_err(|e| e.to_string());
            Done::Estimate(key, r)
        });
    }

    /// Reads a study folder.
    pub fn load_study(&mut self, dir: PathBuf) {
        self.spawn("read a study", move || {
            let r = lethe_engine::study::StudyResults::load(&dir)
                .map(Arc::new)
                .map_err(|e| e.to_string());
            Done::Study(dir, r)
        });
    }

    /// Runs an export that writes a file.
    pub fn export(&mut self, f: impl FnOnce() -> Result<PathBuf, String> + Send + 'static) {
        self.spawn("write an export", move || Done::Exported(f()));
    }

    /// Writes a deletion report.
    pub fn write_report(&mut self, run: String, job: crate::export::ReportJob) {
        self.spawn("write a report", move || {
            Done::Report(run, crate::export::write_report(&job))
        });
    }

    /// Works out the verdict of a deletion run from its evidence (`key` names
    /// the evidence, so a stale answer can be told from a current one).
    pub fn check_verdict(&mut self, run: String, key: String, job: crate::export::ReportJob) {
        self.spawn("work out a verdict", move || {
            Done::Verdict(run, key, crate::export::verdict(&job))
        });
    }

    /// Opens a file or folder with the desktop's default application
    /// (`xdg-open`); like a file dialog, it is the desktop's, so shutdown does
    /// not wait for it.
    pub fn open_externally(&mut self, path: PathBuf) {
        self.spawn_kind(
            "open a file",
            Kind::Dialog,
            move || match std::process::Command::new("xdg-open").arg(&path).status() {
                Ok(s) if s.success() => Done::Opened(Ok(path)),
                Ok(s) => Done::Opened(Err(format!(
                    "the desktop could not open {} (xdg-open {s})",
                    path.display()
                ))),
                Err(e) => Done::Opened(Err(format!(
                    "cannot open {}: xdg-open is missing ({e})",
                    path.display()
                ))),
            },
        );
    }

    /// Records a finished job in the project's audit log (hashing its files),
    /// and writes a finished deletion's `run.json`.
    pub fn audit_job(
        &mut self,
        workspace: PathBuf,
        record: crate::jobs::JobRecord,
        run_dir: PathBuf,
        plugin_version: Option<String>,
    ) {
        self.spawn("write an audit record", move || {
            Done::Audited(crate::export::record_job(
                &workspace,
                &record,
                &run_dir,
                plugin_version,
            ))
        });
    }

    /// Estimates what an attack's shadow models will cost.
    pub fn estimate_attack(
        &mut self,
        key: String,
        worker: lethe_engine::worker::WorkerOptions,
        spec: crate::jobs::JobSpec,
        descriptor: lethe_engine::worker::protocol::DescriptorInfo,
    ) {
        self.spawn("estimate an attack's cost", move || {
            Done::Estimate(
                key,
                crate::attack_report::estimate(&worker, &spec, &descriptor),
            )
        });
    }

    /// Computes (or reads back) the metric set of a finished attack run.
    pub fn attack_report(&mut self, run: String, job: crate::attack_report::ReportJob) {
        self.spawn("compute an attack's metrics", move || {
            Done::AttackReport(run, crate::attack_report::compute(&job))
        });
    }

    /// Loads the membership scores in a folder, in a worker.
    pub fn load_scores(&mut self, dir: PathBuf) {
        let p = self.previewer.clone();
        self.spawn("load membership scores", move || {
            let r = p.ask(Request::Scores { dir: dir.clone() });
            Done::Scores(dir, r)
        });
    }

    /// Opens a native file dialog. Blocking dialogs run on their own thread;
    /// without a portal or zenity the dialog returns nothing and the typed path
    /// fields remain.
    pub fn pick(&mut self, target: PickTarget, start: Option<PathBuf>) {
        self.spawn_kind("show a file dialog", Kind::Dialog, move || {
            let mut d = rfd::FileDialog::new();
            if let Some(dir) = start.filter(|d| d.is_dir()) {
                d = d.set_directory(dir);
            }
            let picked = match &target {
                PickTarget::ProjectFolder => d.set_title("Project folder").pick_folder(),
                PickTarget::Checkpoint => d
                    .set_title("Model checkpoint")
                    .add_filter(
                        "Checkpoints",
                        &["safetensors", "pt", "pth", "ckpt", "bin", "ts", "jit"],
                    )
                    .add_filter("All files", &["*"])
                    .pick_file(),
                PickTarget::DatasetFile => d
                    .set_title("Dataset file")
                    .add_filter("Datasets", &["npz", "safetensors", "bin", "gz", "ubyte"])
                    .add_filter("All files", &["*"])
                    .pick_file(),
                PickTarget::DatasetFolder => d.set_title("Dataset folder").pick_folder(),
                PickTarget::ForgetList => d
                    .set_title("Forget list")
                    .add_filter("Index lists", &["txt", "csv", "json"])
                    .pick_file(),
                PickTarget::ForgetFolder => d.set_title("Folder of images to forget").pick_folder(),
                PickTarget::Param { directory, .. } => {
                    if *directory {
                        d.pick_folder()
                    } else {
                        d.pick_file()
                    }
                }
                PickTarget::SaveAs { name, .. } => d.set_file_name(name).save_file(),
            };
            Done::Picked(target, picked)
        });
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long [`Tasks::shutdown`] may take before the window says what it waits for.
pub const FINISHING_NOTICE_AFTER: Duration = Duration::from_millis(300);

/// Writes a forget list (one index per line, with a comment header saying what
/// it is) and returns its path under `dir`, never replacing an existing file.
pub fn write_forget_list(
    dir: &Path,
    name: &str,
    data: &Path,
    preview: &ForgetPreview,
) -> anyhow::Result<PathBuf> {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "forget-set" } else { slug };
    let mut path = dir.join(format!("{slug}.txt"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{slug}-{n}.txt"));
        n += 1;
    }
    let mut text = format!(
        "# forget set \"{name}\" for {}: {} ({} of {} training samples)\n",
        data.display(),
        preview.origin.replace('\n', " "),
        preview.indices.len(),
        preview.train_len
    );
    if let Some(f) = &preview.folder
        && !f.unmatched.is_empty()
    {
        text.push_str(&format!(
            "# {} image file(s) matched no training sample and are not in this list:\n",
            f.unmatched.len()
        ));
        for p in &f.unmatched {
            text.push_str(&format!("#   {}\n", p.display()));
        }
    }
    for i in &preview.indices {
        text.push_str(&format!("{i}\n"));
    }
    crate::project::write_file(&path, text.as_bytes())?;
    Ok(path)
}
