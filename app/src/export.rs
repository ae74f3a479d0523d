//! Exports and the audit trail of what the GUI does: the compliance report of a
//! deletion run (the engine's `report` module, the same code as `lethe report`,
//! in any of its formats), written into the run folder's `exports/` and
//! recorded in the project's audit log, and the audit records of the jobs the
//! GUI runs (the CLI records its own). Everything here hashes or renders files:
//! call it off the UI thread.

use crate::jobs::{JobRecord, JobStatus};
use lethe_engine::audit::{Entry, FileRef, PluginRef};
use lethe_engine::jobs::run_record::{
    ForgetRequest as RunForget, HashedPath, PluginFile, RUN_FILE, RunRecord, Software,
};
use lethe_engine::report::{DeletionSources, Format, Report};
use std::path::{Path, PathBuf};

/// The report formats offered, with their menu labels.
pub const REPORT_FORMATS: [(Format, &str); 5] = [
    (Format::Pdf, "PDF"),
    (Format::Html, "HTML"),
    (Format::Csv, "CSV"),
    (Format::Json, "JSON"),
    (Format::Tex, "LaTeX tables"),
];

/// `dir/stem.ext`, or `dir/stem-2.ext`, … if taken: exports never replace a file.
pub fn unique_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let mut path = dir.join(format!("{stem}.{ext}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.{ext}"));
        n += 1;
    }
    path
}

/// A report to write: of a deletion run, or of a study (when `sources.run`
/// is a study folder).
#[derive(Debug, Clone)]
pub struct ReportJob {
    /// Where the results are.
    pub sources: DeletionSources,
    /// Attack runs whose `attack.json` may still have to be computed before
    /// the report can include them.
    pub pending_attacks: Vec<crate::attack_report::ReportJob>,
    /// The format.
    pub format: Format,
    /// The file to write (never replaced).
    pub out: PathBuf,
    /// The project folder, whose audit log records the export.
    pub workspace: PathBuf,
    /// Generation time (Unix seconds).
    pub now: i64,
}

/// The report of `job` (attack metrics still missing are computed first),
/// without writing it.
pub fn open_report(job: &ReportJob) -> Result<Report, String> {
    let mut sources = job.sources.clone();
    for a in &job.pending_attacks {
        // An attack whose metrics cannot be computed is left out of the report,
        // not a reason to refuse it; the attack run's view says why.
        if crate::attack_report::compute(a).is_ok() {
            sources.attacks.push(a.out_dir.clone());
        }
    }
    Report::open(&sources).map_err(|e| e.to_string())
}

/// The verdict the report of `job` would give.
pub fn verdict(job: &ReportJob) -> Result<lethe_engine::report::verdict::Verdict, String> {
    match open_report(job)? {
        Report::Deletion(d) => Ok(d.verdict),
        Report::Study(_) => Err("a study has no deletion verdict".into()),
    }
}

/// Where a deletion's certificate was written, and who signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateInfo {
    /// `<report>.cert.json`.
    pub path: PathBuf,
    /// SHA-256 of the workspace's public key (what `lethe report verify` names).
    pub fingerprint: String,
    /// The audit record the certificate names as the log's head.
    pub head_seq: i64,
    /// Whether the workspace's signing key was made for this report.
    pub key_created: Option<PathBuf>,
}

/// A written report.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The report file.
    pub path: PathBuf,
    /// Its verdict line (a study's: its title).
    pub verdict: String,
    /// The detached certificate (deletions only).
    pub certificate: Option<CertificateInfo>,
}

/// Writes the report as `lethe report` does: the job's start is recorded in
/// the audit log first (that record is the head the certificate names), a
/// deletion report is certified with the workspace's Ed25519 key (made on
/// first use) and its certificate written beside it as `<report>.cert.json`,
/// and the end is recorded with the certificate in its details.
pub fn write_report(job: &ReportJob) -> Result<Written, String> {
    use lethe_engine::report::certificate::{self, Certificate};
    let report = open_report(job)?;
    if let Some(dir) = job.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let cert_path = match &report {
        Report::Deletion(_) => Some(certificate::detached_path(&job.out)),
        Report::Study(_) => None,
    };
    // Exports never replace a file; the certificate's name follows the report's.
    if let Some(p) = cert_path.as_ref().filter(|p| p.exists()) {
        return Err(format!(
            "cannot write the report {}: {} exists and is never overwritten",
            job.out.display(),
            p.display()
        ));
    }
    let (line, outcome) = match &report {
        Report::Deletion(d) => (
            format!("{} — {}", d.verdict.outcome.label(), d.verdict.headline),
            serde_json::to_value(d.verdict.outcome).unwrap_or_default(),
        ),
        Report::Study(s) => (s.table.title.clone(), serde_json::Value::Null),
    };
    let mut entry = Entry {
        kind: "report".into(),
        status: lethe_engine::audit::STARTED.into(),
        subject: format!(
            "{} report of {} (GUI)",
            job.format.extension(),
            job.sources.run.display()
        ),
        plugin: None,
        inputs: report
            .input_files()
            .iter()
            .map(|p| FileRef::of("result", p))
            .collect(),
        outputs: Vec::new(),
        details: serde_json::json!({
            "format": job.format,
            "generated_unix": job.now,
            "verdict": outcome,
            "source": "gui",
        }),
    };
    let started = lethe_engine::audit::jobs::begin(&job.workspace, &entry).map_err(|e| {
        format!(
            "the audit record of the report's start could not be written, so no report was \
             made: {e}"
        )
    })?;
    let result =
        (|| -> Result<Option<(certificate::SignedCertificate, Option<PathBuf>)>, String> {
            let signed = match (&report, &cert_path) {
                (Report::Deletion(d), Some(_)) => {
                    let key = lethe_engine::audit::key::load_or_create(&started.workspace)
                        .map_err(|e| format!("the workspace's signing key: {e}"))?;
                    let made = key.created().then(|| key.path().to_path_buf());
                    let signed = Certificate::of(d, job.now, &started.record, &key.public())
                        .sign(&key)
                        .map_err(|e| e.to_string())?;
                    Some((signed, made))
                }
                _ => None,
            };
            let file_name = cert_path
                .as_deref()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let certified = signed
                .as_ref()
                .map(|(s, _)| lethe_engine::report::Certified {
                    signed: s,
                    file_name: &file_name,
                });
            let bytes = lethe_engine::report::render_with(&report, job.format, job.now, certified)
                .map_err(|e| e.to_string())?;
            lethe_engine::jobs::atomic::write_atomic(&job.out, &bytes, false)
                .map_err(|e| e.to_string())?;
            if let (Some((s, _)), Some(p)) = (&signed, &cert_path) {
                let bytes = s.to_file_bytes().map_err(|e| e.to_string())?;
                lethe_engine::jobs::atomic::write_atomic(p, &bytes, false)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(signed)
        })();
    entry.status = lethe_engine::audit::jobs::status_of(&result);
    entry.outputs = std::iter::once(&job.out)
        .chain(cert_path.as_ref())
        .filter(|p| p.is_file())
        .map(|p| {
            let role = if Some(p) == cert_path.as_ref() {
                "certificate"
            } else {
                "report"
            };
            FileRef::of(role, p)
        })
        .collect();
    if let (Ok(Some((signed, _))), Some(m)) = (&result, entry.details.as_object_mut()) {
        m.insert("certificate".into(), signed.to_value());
    }
    let ended = lethe_engine::audit::jobs::end(&started, &entry);
    let signed = result.map_err(|e| format!("cannot write {}: {e}", job.out.display()))?;
    ended.map_err(|e| format!("the report was written but its audit record could not be: {e}"))?;
    let certificate = match (signed, cert_path) {
        (Some((s, made)), Some(path)) => Some(CertificateInfo {
            path,
            fingerprint: s.certificate.signer.public_key_sha256.clone(),
            head_seq: s.certificate.audit.head_seq,
            key_created: made,
        }),
        _ => None,
    };
    Ok(Written {
        path: job.out.clone(),
        verdict: line,
        certificate,
    })
}

/// The audit record of a finished GUI job (`unlearn` or `attack`), its files
/// hashed now.
pub fn job_entry(r: &JobRecord, run_dir: &Path, plugin_version: Option<String>) -> Entry {
    let s = &r.spec;
    let status = match &r.status {
        JobStatus::Succeeded => "succeeded".to_string(),
        other => format!(
            "{}: {}",
            other.label(),
            other
                .problem()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
        )
        .trim_end_matches(": ")
        .to_string(),
    };
    let kind = if s.kind == "attack" {
        "attack"
    } else {
        "unlearn"
    };
    Entry {
        kind: kind.into(),
        status,
        subject: format!("{} on {} (GUI)", s.plugin_id, s.checkpoint.display()),
        plugin: Some(PluginRef {
            id: s.plugin_id.clone(),
            version: plugin_version.unwrap_or_else(|| "unknown".into()),
            library: s.library.display().to_string(),
            sha256: lethe_engine::audit::path_sha256(&s.library),
        }),
        inputs: vec![
            FileRef::of("checkpoint", &s.checkpoint),
            FileRef::of("dataset", &s.data),
            FileRef::of("forget list", &s.forget),
        ],
        outputs: FileRef::folder(&run_dir.join("output")),
        details: serde_json::json!({
            "params": s.params,
            "seed": s.seed,
            "device": s.device,
            "run": r.id,
            "out": run_dir.join("output"),
            "seconds": r.elapsed(r.finished.unwrap_or(0.0)),
            "source": "gui",
        }),
    }
}

/// `run.json` of a finished GUI deletion run, as `lethe unlearn` writes it, so
/// its report names who ran it, where and with which software (the files are
/// hashed now, when the job has ended; the original is only ever read).
pub fn run_record(r: &JobRecord, run_dir: &Path, plugin_version: Option<String>) -> RunRecord {
    let s = &r.spec;
    let out = run_dir.join("output");
    let model = r
        .model_artifact()
        .map(|a| a.path.clone())
        .unwrap_or_else(|| out.join("model.safetensors"));
    let started = r.started.unwrap_or(r.created);
    let finished = r.finished.unwrap_or(started);
    RunRecord {
        format: 1,
        user: lethe_engine::audit::current_user(),
        host: lethe_engine::audit::host_name(),
        started_unix: started as i64,
        finished_unix: finished as i64,
        seconds: (finished - started).max(0.0),
        method: PluginFile {
            id: s.plugin_id.clone(),
            name: s.plugin_name.clone(),
            version: plugin_version.unwrap_or_else(|| "unknown".into()),
            library: HashedPath::of(&s.library),
        },
        params_given: s.params.clone(),
        params: s.params.clone(),
        seed: s.seed,
        device: s.device.clone(),
        original: HashedPath::of(&s.checkpoint),
        data: HashedPath::of(&s.data),
        forget: RunForget::read(&s.forget),
        unlearned: model.is_file().then(|| HashedPath::of(&model)),
        outputs: FileRef::folder(&out),
        software: Software::probe(),
    }
}

/// Records a finished GUI job: its audit entry, and for a successful deletion
/// its `run.json` (never replaced).
pub fn record_job(
    workspace: &Path,
    r: &JobRecord,
    run_dir: &Path,
    plugin_version: Option<String>,
) -> Result<(), String> {
    if r.spec.kind == "method" && r.status == JobStatus::Succeeded {
        let path = run_dir.join(RUN_FILE);
        if !path.exists() {
            let record = run_record(r, run_dir, plugin_version.clone());
            let bytes = serde_json::to_vec_pretty(&record)
                .map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
            lethe_engine::jobs::atomic::write_atomic(&path, &bytes, false)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let entry = job_entry(r, run_dir, plugin_version);
    lethe_engine::audit::jobs::record(workspace, &entry)
        .map(|_| ())
        .map_err(|e| format!("the audit record of {} could not be written: {e}", r.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_never_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = unique_path(dir.path(), "report", "pdf");
        assert_eq!(a, dir.path().join("report.pdf"));
        std::fs::write(&a, "x").unwrap();
        let b = unique_path(dir.path(), "report", "pdf");
        assert_eq!(b, dir.path().join("report-2.pdf"));
    }

    #[test]
    fn a_failed_job_is_recorded_with_its_reason_and_files_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("m.safetensors");
        std::fs::write(&ckpt, "weights").unwrap();
        let mut r = JobRecord::new(
            "run-1".into(),
            crate::jobs::JobSpec {
                kind: "method".into(),
                plugin_id: "org.x.ft".into(),
                plugin_name: "FT".into(),
                library: dir.path().join("missing.so"),
                params: serde_json::json!({"lr": 0.1}),
                checkpoint: ckpt.clone(),
                data: dir.path().join("d.npz"),
                forget: dir.path().join("f.txt"),
                forget_label: String::new(),
                device: "cpu".into(),
                seed: 3,
            },
            0.0,
        );
        r.mark_started(10.0);
        r.finished = Some(12.5);
        r.status = JobStatus::Failed {
            message: "bad lr\nmore".into(),
        };
        let run_dir = dir.path().join("runs/run-1");
        std::fs::create_dir_all(run_dir.join("output")).unwrap();
        std::fs::write(run_dir.join("output/partial.json"), "{}").unwrap();
        let e = job_entry(&r, &run_dir, Some("1.2".into()));
        assert_eq!(e.kind, "unlearn");
        assert_eq!(e.status, "failed: bad lr");
        assert_eq!(e.plugin.as_ref().unwrap().version, "1.2");
        assert_eq!(e.plugin.as_ref().unwrap().sha256, None, "missing library");
        // `printf weights | sha256sum`
        assert_eq!(
            e.inputs[0].sha256.as_deref(),
            Some("9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c")
        );
        assert_eq!(
            e.inputs[1].sha256, None,
            "unreadable files are recorded without a hash"
        );
        assert_eq!(e.outputs.len(), 1);
        assert_eq!(e.outputs[0].role, "partial.json");
        assert_eq!(e.details["seconds"], 2.5);
        assert_eq!(e.details["seed"], 3);
    }

    #[test]
    fn a_finished_deletion_gets_its_run_record_and_an_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("m.safetensors");
        std::fs::write(&ckpt, "weights").unwrap();
        let forget = dir.path().join("f.txt");
        std::fs::write(&forget, "# two\n3\n5\n").unwrap();
        let run_dir = dir.path().join("runs/run-1");
        let out = run_dir.join("output");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("model.safetensors"), "new weights").unwrap();
        let mut r = JobRecord::new(
            "run-1".into(),
            crate::jobs::JobSpec {
                kind: "method".into(),
                plugin_id: "org.x.ft".into(),
                plugin_name: "FT".into(),
                library: dir.path().join("lib.so"),
                params: serde_json::json!({"lr": 0.1}),
                checkpoint: ckpt.clone(),
                data: dir.path().join("d.npz"),
                forget: forget.clone(),
                forget_label: String::new(),
                device: "cpu".into(),
                seed: 3,
            },
            0.0,
        );
        r.mark_started(100.0);
        r.finished = Some(130.0);
        r.status = JobStatus::Succeeded;
        r.artifacts.push(crate::jobs::ArtifactRef {
            name: "model".into(),
            path: out.join("model.safetensors"),
        });
        record_job(dir.path(), &r, &run_dir, Some("2.0".into())).unwrap();
        let back = RunRecord::load(&run_dir).unwrap();
        assert_eq!(back.user, lethe_engine::audit::current_user());
        assert_eq!(back.method.version, "2.0");
        assert_eq!(back.seconds, 30.0);
        assert_eq!(back.forget.samples, 2);
        assert_eq!(
            back.original.sha256,
            lethe_engine::audit::path_sha256(&ckpt)
        );
        assert!(back.unlearned.is_some());
        // The report reads it instead of rebuilding one from job.json.
        let (via_report, _) = lethe_engine::report::sources::read_run(&run_dir).unwrap();
        assert_eq!(via_report, back);
        // Recording again keeps the first run.json and appends a second entry.
        record_job(dir.path(), &r, &run_dir, Some("3.0".into())).unwrap();
        assert_eq!(RunRecord::load(&run_dir).unwrap().method.version, "2.0");
        let log =
            lethe_engine::audit::AuditLog::open_existing(&dir.path().join("audit.sqlite")).unwrap();
        let records = log.records().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].entry.kind, "unlearn");
        assert_eq!(records[0].entry.status, "succeeded");
        assert!(log.verify(None).unwrap().ok());
    }

    #[test]
    fn a_report_written_by_the_app_is_certified_and_verifies() {
        use lethe_engine::report::certificate::{VerifyRequest, verify};
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("m.safetensors");
        std::fs::write(&ckpt, "weights").unwrap();
        let forget = dir.path().join("f.txt");
        std::fs::write(&forget, "3\n5\n").unwrap();
        let run_dir = dir.path().join("runs/run-1");
        let out = run_dir.join("output");
        std::fs::create_dir_all(&out).unwrap();
        let model = out.join("model.safetensors");
        std::fs::write(&model, "new weights").unwrap();
        let mut r = JobRecord::new(
            "run-1".into(),
            crate::jobs::JobSpec {
                kind: "method".into(),
                plugin_id: "org.x.ft".into(),
                plugin_name: "FT".into(),
                library: dir.path().join("lib.so"),
                params: serde_json::json!({"lr": 0.1}),
                checkpoint: ckpt.clone(),
                data: dir.path().join("d.npz"),
                forget: forget.clone(),
                forget_label: String::new(),
                device: "cpu".into(),
                seed: 3,
            },
            0.0,
        );
        r.mark_started(100.0);
        r.finished = Some(130.0);
        r.status = JobStatus::Succeeded;
        r.artifacts.push(crate::jobs::ArtifactRef {
            name: "model".into(),
            path: model.clone(),
        });
        record_job(dir.path(), &r, &run_dir, Some("2.0".into())).unwrap();
        let job = |format: Format, name: &str| ReportJob {
            sources: DeletionSources {
                run: run_dir.clone(),
                evaluations: Vec::new(),
                attacks: Vec::new(),
                retrain: None,
            },
            pending_attacks: Vec::new(),
            format,
            out: run_dir.join("exports").join(name),
            workspace: dir.path().to_path_buf(),
            now: 1_700_000_000,
        };
        let w = write_report(&job(Format::Html, "report.html")).unwrap();
        let cert = w
            .certificate
            .clone()
            .expect("a deletion report is certified");
        assert_eq!(cert.path, run_dir.join("exports/report.html.cert.json"));
        assert!(cert.path.is_file());
        assert!(
            cert.key_created.is_some(),
            "the first report makes the project's key"
        );
        let html = std::fs::read_to_string(&w.path).unwrap();
        assert!(
            html.contains(&cert.fingerprint),
            "the report shows its signer"
        );
        let check = |file: &Path| {
            verify(&VerifyRequest {
                file: file.to_path_buf(),
                model: Some(model.clone()),
                original: Some(ckpt.clone()),
                forget: Some(forget.clone()),
                data: None,
                workspace: dir.path().to_path_buf(),
            })
            .unwrap()
        };
        let v = check(&w.path);
        let fails: Vec<_> = v.failures().map(|f| f.message.clone()).collect();
        assert!(v.ok(), "{fails:?}");
        // A second report reuses the key, and both certificates still verify.
        let w2 = write_report(&job(Format::Json, "report.json")).unwrap();
        let c2 = w2.certificate.unwrap();
        assert_eq!(c2.key_created, None);
        assert_eq!(c2.fingerprint, cert.fingerprint);
        assert!(c2.head_seq > cert.head_seq);
        assert!(check(&w2.path).ok());
        // The audit log holds each report's start and end, the end naming the
        // certificate.
        let log =
            lethe_engine::audit::AuditLog::open_existing(&dir.path().join("audit.sqlite")).unwrap();
        let records = log.records().unwrap();
        let ends: Vec<_> = records
            .iter()
            .filter(|r| r.entry.kind == "report" && r.entry.status == "succeeded")
            .collect();
        assert_eq!(ends.len(), 2);
        assert!(ends[0].entry.details["certificate"]["signature"].is_object());
        assert!(
            ends[0]
                .entry
                .outputs
                .iter()
                .any(|o| o.role == "certificate")
        );
        // A swapped model no longer matches the certificate.
        std::fs::write(&model, "other weights").unwrap();
        let v = check(&w.path);
        assert!(!v.ok());
        assert!(
            v.failures().any(|f| f.message.contains("unlearned")),
            "{:?}",
            v.findings
        );
        // An existing certificate is never replaced.
        std::fs::write(run_dir.join("exports/again.html.cert.json"), "x").unwrap();
        let err = write_report(&job(Format::Html, "again.html")).unwrap_err();
        assert!(err.contains("never overwritten"), "{err}");
    }
}
