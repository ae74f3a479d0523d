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

/// Writes the report; returns the file and its verdict line (a study's: its
/// title).
pub fn write_report(job: &ReportJob) -> Result<(PathBuf, String), String> {
    let report = open_report(job)?;
    if let Some(dir) = job.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    lethe_engine::report::write(&report, job.format, job.now, &job.out, false)
        .map_err(|e| format!("cannot write {}: {e}", job.out.display()))?;
    let (line, outcome) = match &report {
        Report::Deletion(d) => (
            format!("{} — {}", d.verdict.outcome.label(), d.verdict.headline),
            serde_json::to_value(d.verdict.outcome).unwrap_or_default(),
        ),
        Report::Study(s) => (s.table.title.clone(), serde_json::Value::Null),
    };
    let entry = Entry {
        kind: "report".into(),
        status: "succeeded".into(),
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
        outputs: vec![FileRef::of("report", &job.out)],
        details: serde_json::json!({
            "format": job.format,
            "generated_unix": job.now,
            "verdict": outcome,
            "source": "gui",
        }),
    };
    lethe_engine::audit::jobs::record(&job.workspace, &entry)
        .map_err(|e| format!("the report was written but its audit record could not be: {e}"))?;
    Ok((job.out.clone(), line))
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
}
