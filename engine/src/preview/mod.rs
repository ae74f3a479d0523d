//! What the desktop app shows of files it did not write: checkpoint and dataset
//! summaries, forget-set previews (lists, classes, a data subject's photos),
//! pictures of samples, result tensors and membership scores.
//!
//! These files come from outside (model zoos, colleagues, the person asking for
//! deletion), so the app never parses them in the window's process: it sends a
//! [`Request`] to a worker ([`in_worker`]), which answers with plain data that
//! cannot hurt the window (sizes, names, small pictures). A file that crashes the
//! worker, exhausts its memory limit or its time limit costs that worker only,
//! and the app learns it as a [`PreviewError::Fatal`] so it can mark the file.

mod compute;

pub use compute::{answer, read_artifact, read_scores};

use crate::data::{DatasetSummary, Split};
use crate::worker::protocol::Job;
use crate::worker::{JobOutcome, WorkerOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A scratch file removed when the preview is done with it.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A small picture: channel-major `u8` pixels, 1 (gray) or 3 (RGB) channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    /// Caption (sample number, file name, label).
    pub label: String,
    /// Hover text with more detail.
    pub detail: String,
    /// 1 or 3.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` bytes, channel-major.
    pub pixels: Vec<u8>,
}

/// What a dataset inspection found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The engine's summary (format, size, classes, recorded split).
    pub summary: DatasetSummary,
    /// The split jobs use (recorded, else seeded 80/10/10).
    pub split: Split,
    /// Whether the split is the one recorded in the file.
    pub split_recorded: bool,
    /// Training samples per class.
    pub train_class_counts: Vec<usize>,
    /// One example image per class (first ten classes).
    pub examples: Vec<Picture>,
}

/// How a new forget set is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ForgetMode {
    /// A `.txt`/`.csv`/`.json` list of training-sample indices.
    ListFile,
    /// Every training sample of one class.
    Class,
    /// A seeded random fraction of the training samples.
    Fraction,
    /// A folder of a data subject's images, matched by content (the usual
    /// deletion request: "here are my photos").
    #[default]
    Folder,
}

impl ForgetMode {
    /// All modes, in menu order.
    pub const ALL: [ForgetMode; 4] = [
        ForgetMode::Folder,
        ForgetMode::ListFile,
        ForgetMode::Class,
        ForgetMode::Fraction,
    ];

    /// Menu label.
    pub fn label(self) -> &'static str {
        match self {
            ForgetMode::ListFile => "A list of sample numbers (file)",
            ForgetMode::Class => "Every sample of one class",
            ForgetMode::Fraction => "A random share of the training data",
            ForgetMode::Folder => "A folder of the person's images",
        }
    }
}

/// A forget set to preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// The dataset.
    pub data: PathBuf,
    /// Split seed (for datasets without a recorded split).
    pub seed: u64,
    /// How the set is chosen.
    pub mode: ForgetMode,
    /// List file.
    pub list_path: PathBuf,
    /// Class.
    pub class: i64,
    /// Fraction.
    pub fraction: f64,
    /// Fraction seed.
    pub fraction_seed: u64,
    /// Image folder.
    pub folder: PathBuf,
}

/// The result of a folder match.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderPreview {
    /// Files that matched, with the training samples they matched.
    pub matched: Vec<(PathBuf, Vec<i64>)>,
    /// Files that matched nothing.
    pub unmatched: Vec<PathBuf>,
    /// Pictures of the unmatched files (first ones, shrunk).
    pub unmatched_thumbs: Vec<Picture>,
}

/// A forget set, before it is saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetPreview {
    /// Training-sample indices, ascending.
    pub indices: Vec<i64>,
    /// How they were chosen.
    pub origin: String,
    /// Training samples in all.
    pub train_len: usize,
    /// Forgotten samples per class name.
    pub per_class: Vec<(String, usize)>,
    /// Whether the set is whole classes (no other training sample shares a class
    /// with it): what class-wise methods need.
    #[serde(default)]
    pub whole_classes: bool,
    /// Pictures of the first forgotten samples.
    pub thumbs: Vec<Picture>,
    /// For folder requests: matched and unmatched files.
    pub folder: Option<FolderPreview>,
}

/// One tensor of a result file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorData {
    /// Its name in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its element type.
    pub dtype: String,
    /// Values as f32, row-major; `None` when it was too large to load. In the
    /// worker's answer the values travel in a side file, not in the frame.
    #[serde(skip)]
    pub values: Option<Vec<f32>>,
    /// How many values the side file holds for this tensor (0: none loaded).
    #[serde(default)]
    pub loaded: u64,
}

impl TensorData {
    /// Whether the heatmap is the natural view (two or more dimensions, each > 1).
    pub fn is_matrix(&self) -> bool {
        self.shape.len() >= 2 && self.shape.iter().rev().take(2).all(|&d| d > 1)
    }
}

/// What a result file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ArtifactData {
    /// A safetensors (or other checkpoint) file's tensors.
    Tensors(Vec<TensorData>),
    /// A JSON document.
    Json(serde_json::Value),
}

/// Membership scores of one attack run, by role (higher = more member-like).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The forget set.
    pub forget: Option<Vec<f64>>,
    /// Held-out members (retain samples).
    pub member: Option<Vec<f64>>,
    /// Held-out non-members.
    pub nonmember: Option<Vec<f64>>,
}

impl Scores {
    /// Whether there is a pair to draw a ROC curve from.
    pub fn has_roc(&self) -> bool {
        self.nonmember.is_some() && (self.member.is_some() || self.forget.is_some())
    }
}

/// A question about a file, answered in a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Request {
    /// A checkpoint's summary (architecture, parameter count, SHA-256).
    /// Answer: [`crate::checkpoint::CheckpointSummary`].
    Checkpoint {
        /// The file.
        path: PathBuf,
    },
    /// A dataset's summary with the split jobs use for `seed`. Answer: [`DatasetInfo`].
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// Split seed.
        seed: u64,
    },
    /// A forget-set preview. Answer: [`ForgetPreview`].
    Forget(ForgetRequest),
    /// Pictures of training samples. Answer: `Vec<(i64, Picture)>`.
    Samples {
        /// The dataset.
        data: PathBuf,
        /// Sample indices.
        indices: Vec<i64>,
    },
    /// A result file's contents. Answer: [`ArtifactData`]; the tensors' values
    /// are written to `values_out` (little-endian f32, in order).
    Artifact {
        /// The file.
        path: PathBuf,
        /// Where the worker writes the values.
        values_out: PathBuf,
    },
    /// The `scores_<role>.safetensors` files of an attack's folder. Answer: [`Scores`].
    Scores {
        /// The folder.
        dir: PathBuf,
    },
}

impl Request {
    /// The file or folder the request reads first (the one a failure is charged to).
    pub fn subject(&self) -> &Path {
        match self {
            Request::Checkpoint { path } | Request::Artifact { path, .. } => path,
            Request::Dataset { path, .. } => path,
            Request::Forget(f) => match f.mode {
                ForgetMode::Folder if !f.folder.as_os_str().is_empty() => &f.folder,
                ForgetMode::ListFile if !f.list_path.as_os_str().is_empty() => &f.list_path,
                _ => &f.data,
            },
            Request::Samples { data, .. } => data,
            Request::Scores { dir } => dir,
        }
    }
}

/// Tensors larger than this are not loaded for display (a whole model's weights
/// as one flat vector stays well under it).
pub const MAX_ELEMENTS: i64 = 64 * 1024 * 1024;

/// Values loaded for display across all tensors of one file (1 GiB of f32).
pub const MAX_TOTAL_ELEMENTS: u64 = 256 * 1024 * 1024;

/// Longest side of a picture of a file from a forget folder (photos are shrunk:
/// the preview needs a thumbnail, not 12 megapixels in a message).
pub const THUMB_SIDE: usize = 96;

/// Limits of a preview worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewLimits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Address-space limit (`RLIMIT_AS`), bytes.
    pub memory: u64,
}

/// Environment variable overriding [`PreviewLimits::memory`] (in MiB).
pub const MEMORY_ENV: &str = "LETHE_PREVIEW_MEMORY_MIB";
/// Environment variable overriding [`PreviewLimits::timeout`] (in seconds).
pub const TIMEOUT_ENV: &str = "LETHE_PREVIEW_TIMEOUT_S";

impl PreviewLimits {
    /// 8 GiB of address space (CIFAR-10 as floats is under 1 GiB; libtorch
    /// itself maps a few hundred MiB) and two minutes, unless the environment
    /// says otherwise ([`MEMORY_ENV`], [`TIMEOUT_ENV`]).
    pub fn from_env() -> Self {
        let read = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        PreviewLimits {
            timeout: Duration::from_secs(read(TIMEOUT_ENV).filter(|&s| s > 0).unwrap_or(120)),
            memory: read(MEMORY_ENV)
                .filter(|&m| m > 0)
                .map_or(8 << 30, |m| m << 20),
        }
    }
}

/// Why a preview has no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreviewError {
    /// The worker read the file and refused it (a clear reason, naming the file).
    #[error("{0}")]
    Refused(String),
    /// The worker died, ran out of its memory or time limit, or could not be
    /// started: the file is suspect and should not be opened again unasked.
    #[error("{0}")]
    Fatal(String),
}

impl PreviewError {
    /// The message to show.
    pub fn message(&self) -> &str {
        match self {
            PreviewError::Refused(m) | PreviewError::Fatal(m) => m,
        }
    }
}

/// Asks a worker (`opts.exe worker`) the question, under `limits`, and decodes
/// its answer. Never parses the file in this process. Setting `stop` stops the
/// worker (within half a second) and returns a [`PreviewError::Refused`]
/// saying so: the file is not to blame.
pub fn in_worker<T: DeserializeOwned>(
    opts: &WorkerOptions,
    limits: PreviewLimits,
    request: Request,
    stop: &AtomicBool,
) -> Result<T, PreviewError> {
    let subject = request.subject().to_path_buf();
    let mut opts = opts.clone();
    opts.timeout = Some(limits.timeout);
    opts.memory_limit = Some(limits.memory);
    opts.grace = Duration::from_millis(500);
    let handle =
        crate::worker::spawn_worker(&opts, Job::Preview { request }, |_| {}).map_err(|e| {
            PreviewError::Fatal(format!(
                "cannot start a worker to read {}: {e}",
                subject.display()
            ))
        })?;
    let mut stopped = false;
    while !handle.is_finished() {
        if !stopped && stop.load(Ordering::SeqCst) {
            handle.cancel();
            stopped = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = handle.wait();
    if stopped {
        return Err(PreviewError::Refused(format!(
            "reading {} was stopped",
            subject.display()
        )));
    }
    let gib = limits.memory as f64 / (1u64 << 30) as f64;
    if !report.answered_hello && !report.outcome.is_success() {
        // It died before it could read anything: the installation is broken,
        // and the file must not be marked for it.
        let tail = report.stderr_tail.trim();
        return Err(PreviewError::Refused(format!(
            "cannot read {}: the worker did not start ({}){}; check the installation with `lethe doctor`",
            subject.display(),
            report.outcome,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )));
    }
    match report.outcome {
        JobOutcome::Succeeded(value) => serde_json::from_value(value).map_err(|e| {
            PreviewError::Fatal(format!(
                "{}: the worker's answer is malformed ({e})",
                subject.display()
            ))
        }),
        JobOutcome::Failed(message) if message.contains("memory this process may use") => {
            Err(PreviewError::Refused(format!(
                "{message}; the window reads files with at most {gib:.1} GiB \
                 ({MEMORY_ENV} raises it)"
            )))
        }
        JobOutcome::Failed(message) => Err(PreviewError::Refused(message)),
        JobOutcome::TimedOut(d) => Err(PreviewError::Fatal(format!(
            "{}: reading it took longer than {} s; the worker was stopped",
            subject.display(),
            d.as_secs()
        ))),
        JobOutcome::Crashed { signal, code } => {
            let how = match (signal, code) {
                (Some(s), _) => crate::worker::signal_name(s),
                (None, Some(c)) => format!("exit code {c}"),
                (None, None) => "no exit status".into(),
            };
            let tail = report.stderr_tail.trim();
            let memory = tail.contains("memory allocation")
                || tail.contains("out of memory")
                || tail.contains("std::bad_alloc");
            let cause = if memory {
                format!("it needed more than the {gib:.1} GiB memory limit")
            } else {
                format!("the worker reading it died ({how})")
            };
            Err(PreviewError::Fatal(format!(
                "{}: {cause}",
                subject.display()
            )))
        }
        JobOutcome::Inactive(_) | JobOutcome::Cancelled { .. } => Err(PreviewError::Fatal(
            format!("{}: the worker reading it was stopped", subject.display()),
        )),
        JobOutcome::Protocol(m) => Err(PreviewError::Fatal(format!(
            "{}: the worker reading it broke the protocol ({m})",
            subject.display()
        ))),
    }
}

/// [`in_worker`] for a result file: the values come back through a side file
/// under `scratch` that this process wrote the name of and trusts only for its
/// length (checked against the worker's own count).
pub fn artifact_in_worker(
    opts: &WorkerOptions,
    limits: PreviewLimits,
    path: &Path,
    scratch: &Path,
    stop: &AtomicBool,
) -> Result<ArtifactData, PreviewError> {
    let fatal = |e: std::io::Error| {
        PreviewError::Fatal(format!("cannot prepare to read {}: {e}", path.display()))
    };
    std::fs::create_dir_all(scratch).map_err(fatal)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let values_out = RemoveOnDrop(scratch.join(format!(
        "preview-values-{}-{}.f32",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    // The worker creates it (create_new), so a stale file is removed first.
    let _ = std::fs::remove_file(&values_out.0);
    let answer = in_worker::<ArtifactData>(
        opts,
        limits,
        Request::Artifact {
            path: path.to_path_buf(),
            values_out: values_out.0.clone(),
        },
        stop,
    )?;
    let ArtifactData::Tensors(mut tensors) = answer else {
        return Ok(answer);
    };
    let expected: u64 = tensors.iter().map(|t| t.loaded).sum();
    if expected > MAX_TOTAL_ELEMENTS {
        return Err(PreviewError::Fatal(format!(
            "{}: the worker announced {expected} values, above the display limit",
            path.display()
        )));
    }
    let bytes = if expected == 0 {
        Vec::new()
    } else {
        std::fs::read(&values_out.0).map_err(fatal)?
    };
    if bytes.len() as u64 != expected * 4 {
        return Err(PreviewError::Fatal(format!(
            "{}: the worker wrote {} bytes of values, {} expected",
            path.display(),
            bytes.len(),
            expected * 4
        )));
    }
    let mut at = 0usize;
    for t in &mut tensors {
        let n = t.loaded as usize;
        if n > 0 {
            let values = bytes[at * 4..(at + n) * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.values = Some(values);
            at += n;
        }
    }
    Ok(ArtifactData::Tensors(tensors))
}

/// The answer to `request` computed in this process, through the same JSON the
/// worker sends (for the worker itself and for tests).
pub fn answer_here<T: DeserializeOwned>(request: &Request) -> Result<T, String> {
    let value = answer(request)?;
    serde_json::from_value(value).map_err(|e| format!("malformed answer: {e}"))
}
