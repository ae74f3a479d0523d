//! The worker protocol: frames of a `u32` little-endian length followed by that
//! many bytes of JSON, one message per frame, in both directions.
//!
//! Both sides open with [`Hello`]; a side whose [`PROTOCOL_VERSION`] differs
//! refuses to go on (the worker answers with an error frame, the parent reports
//! the mismatch). After the hello the parent sends one [`ToWorker::Start`] and
//! possibly a [`ToWorker::Cancel`]; the worker streams [`FromWorker`] messages and
//! ends with exactly one of `result`, `error` or `cancelled`, then exits.
//!
//! Large outputs (scores, matrices) never travel in frames: the worker writes them
//! under the job folder and sends an `artifact` message naming the file.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Bumped whenever a message changes shape; both sides must agree exactly.
/// 3: [`ToWorker::Start`] carries `cancelled`.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame either side accepts. Frames carry control messages and small
/// JSON results only, so anything bigger is a corrupted stream, not data.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// A malformed frame or a failed read/write.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The pipe failed.
    #[error("worker pipe: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a frame.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the frame (or its length prefix) needed.
        expected: usize,
        /// Bytes that arrived before the end of the stream.
        got: usize,
    },
    /// A length prefix above [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit (corrupted stream?)")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The frame is not a message of the expected type.
    #[error("bad message: {0}")]
    Json(#[from] serde_json::Error),
    /// The other side speaks another protocol version or is another Lethe.
    #[error(
        "worker protocol mismatch: this side speaks version {ours} (lethe {our_lethe}), \
         the other side {theirs} (lethe {their_lethe}); run the worker from the same install"
    )]
    VersionMismatch {
        /// Our protocol version.
        ours: u32,
        /// Our Lethe version.
        our_lethe: String,
        /// Theirs.
        theirs: u32,
        /// Their Lethe version.
        their_lethe: String,
    },
    /// The first message was not a hello.
    #[error("expected a hello message first, got {0}")]
    NoHello(String),
}

/// The first message in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u32,
    /// The sender's Lethe version (`CARGO_PKG_VERSION`).
    pub lethe_version: String,
}

impl Hello {
    /// This build's hello.
    pub fn ours() -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            lethe_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Refuses a peer that speaks another protocol version. The Lethe version is
    /// informational: the frames, not the release, must match.
    pub fn check(&self) -> Result<(), ProtocolError> {
        let ours = Hello::ours();
        if self.protocol_version == ours.protocol_version {
            Ok(())
        } else {
            Err(ProtocolError::VersionMismatch {
                ours: ours.protocol_version,
                our_lethe: ours.lethe_version,
                theirs: self.protocol_version,
                their_lethe: self.lethe_version.clone(),
            })
        }
    }
}

/// What the worker is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Load each library and describe it (its descriptors or why it was refused).
    /// Result: a [`ScanReport`].
    Scan {
        /// Library files to load, in order.
        libraries: Vec<PathBuf>,
    },
    /// Create and run one method or attack with log, progress and cancel services
    /// only (no model, data or result extensions: for plugins that need none, and
    /// for tests). Result: `{"status": "ok"}`.
    Run {
        /// The plugin library.
        library: PathBuf,
        /// The descriptor id.
        id: String,
        /// Parameters (checked against the schema in the worker).
        params: Value,
    },
    /// Run an unlearning method (or attack) over a real model and dataset, through
    /// the host's model, data and result extensions. Results (the unlearned model,
    /// tensors, JSON) are written under `out_dir` and reported as artifacts.
    /// Result: `{"status": "ok", "artifacts": [{"kind", "name", "path"}, ...]}`.
    Unlearn {
        /// The plugin library.
        library: PathBuf,
        /// The descriptor id.
        id: String,
        /// Parameters (checked against the schema in the worker).
        params: Value,
        /// The trained model's checkpoint (never overwritten).
        checkpoint: PathBuf,
        /// The dataset (its recorded split, else a seeded 80/10/10 split).
        data: PathBuf,
        /// The forget list (`.txt`, `.csv` or `.json` of training-sample indices).
        forget: PathBuf,
        /// The rows the model was trained on (a JSON array of dataset rows),
        /// when not the dataset's training split: a shadow model's half, which
        /// U-LiRA unlearns. Its validation and test splits then leave these
        /// rows out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        train_rows: Option<PathBuf>,
        /// Output folder for the job's results.
        out_dir: PathBuf,
        /// Seed for the split (when the dataset records none) and shuffling.
        seed: u64,
        /// `cpu`, `cuda` or `cuda:N`.
        device: String,
    },
    /// Read a file the app did not write and answer a question about it (see
    /// [`crate::preview`]), so that the window never parses it. Result: the
    /// answer's JSON.
    Preview {
        /// The question.
        request: crate::preview::Request,
    },
}

/// Parent → worker.
// One message of each per job: the size of `Start` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Protocol handshake.
    Hello(Hello),
    /// The job to run (once).
    Start {
        /// The job.
        job: Job,
        /// Whether the job starts cancelled: the worker raises its cancel flag
        /// before anything runs, so the plugin's first `check_cancelled()` sees
        /// it. `lethe plugins check` uses it to cancel a run before the plugin's
        /// `run` is entered, which a [`ToWorker::Cancel`] sent right after the
        /// start cannot promise (the worker's watcher thread may read it late).
        #[serde(default, skip_serializing_if = "is_false")]
        cancelled: bool,
    },
    /// Stop the job soon; the parent kills the worker after a grace period.
    Cancel,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Log severity on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Diagnostics.
    Debug,
    /// Information.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

impl From<lethe_plugin_api::sdk::LogLevel> for Level {
    fn from(l: lethe_plugin_api::sdk::LogLevel) -> Self {
        use lethe_plugin_api::sdk::LogLevel as L;
        match l {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        }
    }
}

/// Worker → parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// Protocol handshake.
    Hello(Hello),
    /// Progress: `fraction` in `[0, 1]` when known, and the plugin's metrics object.
    Progress {
        /// Fraction done.
        fraction: Option<f64>,
        /// Short human-readable status.
        message: String,
        /// Plugin metrics (JSON object), if any.
        metrics: Option<Value>,
    },
    /// A log line.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        text: String,
    },
    /// One scalar metric of the job itself (evaluations the host runs; a plugin's
    /// own metrics travel inside `progress`).
    Metric {
        /// Metric name.
        name: String,
        /// Value.
        value: f64,
        /// Step it belongs to, if any.
        step: Option<u64>,
    },
    /// A file the job wrote (large outputs go to files, not the pipe).
    Artifact {
        /// What it is.
        name: String,
        /// Where it is.
        path: PathBuf,
    },
    /// The job finished; its JSON result. Last message.
    Result {
        /// The result.
        value: Value,
    },
    /// The job failed. Last message.
    Error {
        /// Why.
        message: String,
    },
    /// The job stopped because it was cancelled. Last message.
    Cancelled,
}

/// One library file a scan looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScannedFile {
    /// The library file.
    pub path: PathBuf,
    /// What it offers, or why it was refused.
    pub outcome: Result<Vec<DescriptorInfo>, String>,
}

/// The result of [`Job::Scan`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// Every library, in the order asked.
    pub files: Vec<ScannedFile>,
}

/// A descriptor as listed by a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescriptorInfo {
    /// Reverse-DNS id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `method` or `attack`.
    pub kind: String,
    /// Description.
    pub description: String,
    /// Citation.
    pub citation: String,
    /// Parameter schema.
    pub schema: lethe_plugin_api::schema::Schema,
}

/// Writes one message as a frame and flushes it.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(ProtocolError::TooLarge {
            len: u32::try_from(body.len()).unwrap_or(u32::MAX),
            max: MAX_FRAME_LEN,
        })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads as much of `buf` as the stream holds; the count read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame's bytes; `None` at a clean end of stream (between frames).
pub fn read_frame_bytes<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut len = [0u8; 4];
    match read_full(r, &mut len)? {
        0 => return Ok(None),
        4 => {}
        got => return Err(ProtocolError::Truncated { expected: 4, got }),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut body = vec![0u8; len as usize];
    let got = read_full(r, &mut body)?;
    if got < body.len() {
        return Err(ProtocolError::Truncated {
            expected: body.len(),
            got,
        });
    }
    Ok(Some(body))
}

/// Reads and decodes one message; `None` at a clean end of stream.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, ProtocolError> {
    match read_frame_bytes(r)? {
        Some(body) => Ok(Some(serde_json::from_slice(&body)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, msg).unwrap();
        out
    }

    fn all_messages() -> Vec<FromWorker> {
        vec![
            FromWorker::Hello(Hello::ours()),
            FromWorker::Progress {
                fraction: Some(0.25),
                message: "step 1/4".into(),
                metrics: Some(json!({"loss": 0.5})),
            },
            FromWorker::Progress {
                fraction: None,
                message: String::new(),
                metrics: None,
            },
            FromWorker::Log {
                level: Level::Warn,
                text: "ünïcode\nline".into(),
            },
            FromWorker::Metric {
                name: "auc".into(),
                value: 0.75,
                step: Some(3),
            },
            FromWorker::Artifact {
                name: "scores".into(),
                path: "/tmp/job/scores.npy".into(),
            },
            FromWorker::Result {
                value: json!({"status": "ok"}),
            },
            FromWorker::Error {
                message: "boom".into(),
            },
            FromWorker::Cancelled,
        ]
    }

    #[test]
    fn every_message_round_trips_through_one_stream() {
        let msgs = all_messages();
        let mut stream = Vec::new();
        for m in &msgs {
            write_frame(&mut stream, m).unwrap();
        }
        let mut r = stream.as_slice();
        let mut back = Vec::new();
        while let Some(m) = read_frame::<_, FromWorker>(&mut r).unwrap() {
            back.push(m);
        }
        assert_eq!(back, msgs);

        let to = vec![
            ToWorker::Hello(Hello::ours()),
            ToWorker::Start {
                job: Job::Run {
                    library: "/x/libp.so".into(),
                    id: "org.x".into(),
                    params: json!({"steps": 3}),
                },
                cancelled: true,
            },
            ToWorker::Start {
                job: Job::Scan {
                    libraries: vec!["/a.so".into()],
                },
                cancelled: false,
            },
            ToWorker::Cancel,
        ];
        for m in &to {
            let bytes = encode(m);
            assert_eq!(
                read_frame::<_, ToWorker>(&mut bytes.as_slice()).unwrap(),
                Some(m.clone())
            );
        }
    }

    #[test]
    fn frame_layout_is_le_length_then_json() {
        let bytes = encode(&ToWorker::Cancel);
        let body = br#"{"type":"cancel"}"#;
        assert_eq!(&bytes[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&bytes[4..], body);
    }

    #[test]
    fn truncated_frames_are_errors_not_eof() {
        let bytes = encode(&FromWorker::Error {
            message: "x".repeat(40),
        });
        // Cutting at 0 is a clean end; anywhere else is a truncation.
        assert!(
            read_frame::<_, FromWorker>(&mut &bytes[..0])
                .unwrap()
                .is_none()
        );
        for cut in 1..bytes.len() {
            let err = read_frame::<_, FromWorker>(&mut &bytes[..cut]).unwrap_err();
            match err {
                ProtocolError::Truncated { expected, got } => {
                    if cut < 4 {
                        assert_eq!((expected, got), (4, cut));
                    } else {
                        assert_eq!((expected, got), (bytes.len() - 4, cut - 4));
                    }
                }
                other => panic!("cut {cut}: {other}"),
            }
        }
    }

    #[test]
    fn oversize_length_is_rejected_before_allocating() {
        let mut bytes = (MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = read_frame::<_, FromWorker>(&mut bytes.as_slice()).unwrap_err();
        assert!(matches!(err, ProtocolError::TooLarge { len, .. } if len == MAX_FRAME_LEN + 1));
        let err = read_frame::<_, FromWorker>(&mut u32::MAX.to_le_bytes().as_slice()).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn garbage_and_wrong_types_are_json_errors() {
        let mut junk = 5u32.to_le_bytes().to_vec();
        junk.extend_from_slice(b"hello");
        assert!(matches!(
            read_frame::<_, FromWorker>(&mut junk.as_slice()),
            Err(ProtocolError::Json(_))
        ));
        // A valid frame of the other direction's type is refused too.
        let bytes = encode(&ToWorker::Start {
            job: Job::Scan { libraries: vec![] },
            cancelled: false,
        });
        assert!(matches!(
            read_frame::<_, FromWorker>(&mut bytes.as_slice()),
            Err(ProtocolError::Json(_))
        ));
    }

    #[test]
    fn hello_refuses_other_protocol_versions() {
        assert!(Hello::ours().check().is_ok());
        let other = Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            lethe_version: "9.9.9".into(),
        };
        let msg = other.check().unwrap_err().to_string();
        assert!(msg.contains("protocol mismatch"), "{msg}");
        assert!(msg.contains("9.9.9"), "{msg}");
        // Another release with the same protocol is fine.
        let same = Hello {
            protocol_version: PROTOCOL_VERSION,
            lethe_version: "0.0.1".into(),
        };
        assert!(same.check().is_ok());
    }

    #[test]
    fn scan_report_round_trips() {
        let report = ScanReport {
            files: vec![
                ScannedFile {
                    path: "/p/liba.so".into(),
                    outcome: Ok(vec![]),
                },
                ScannedFile {
                    path: "/p/libb.so".into(),
                    outcome: Err("ABI major 9".into()),
                },
            ],
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(serde_json::from_value::<ScanReport>(v).unwrap(), report);
    }
}
