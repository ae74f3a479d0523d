//! Where the commands' records go, a job's start and end records ([`begin`],
//! [`end`]), and the records of `lethe evaluate` and `lethe attack` (`lethe
//! unlearn` and `lethe report` build theirs themselves).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{
    AUDIT_FILE, AuditError, AuditLog, Entry, FileRef, PluginRef, Record, WORKSPACE_ENV,
    path_sha256, unix_now,
};

/// The workspace of a job writing into `out`: `flag`, else `$LETHE_WORKSPACE`,
/// else the nearest folder above `out` holding a GUI project
/// (`lethe-project.json`) or an audit log, else the current folder. Above the
/// current folder (for an output inside it) only a project counts: any job run
/// from a folder makes that folder's log, and a stray one further up (say
/// `/tmp/audit.sqlite`) must not collect the records of every job below it.
pub fn workspace_for(flag: Option<&Path>, out: Option<&Path>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(env) = std::env::var_os(WORKSPACE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(env);
    }
    let cwd = std::env::current_dir().ok();
    out.and_then(|out| workspace_above(out, cwd.as_deref()))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The nearest folder above `out` that marks a workspace: a project, or an
/// audit log up to `cwd` when `out` lies inside it.
fn workspace_above(out: &Path, cwd: Option<&Path>) -> Option<PathBuf> {
    let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let mut above_cwd = false;
    for dir in abs.ancestors().skip(1) {
        if dir.join("lethe-project.json").is_file()
            || (!above_cwd && dir.join(AUDIT_FILE).is_file())
        {
            return Some(dir.to_path_buf());
        }
        above_cwd |= Some(dir) == cwd;
    }
    None
}

/// Appends `entry` to the log of `workspace` (a job recorded once, when it
/// ended; [`begin`] and [`end`] record its start too).
pub fn record(workspace: &Path, entry: &Entry) -> Result<Record, AuditError> {
    AuditLog::open(&super::audit_path(workspace))?.append(entry, unix_now())
}

/// A job whose start is in the audit log.
#[derive(Debug, Clone)]
pub struct Started {
    /// The workspace whose log holds it.
    pub workspace: PathBuf,
    /// The start record.
    pub record: Record,
}

/// Records that the job `entry` describes starts now (status
/// [`STARTED`](super::STARTED), its inputs as hashed so far, no outputs), before
/// it runs: a job killed outright still leaves this record, which `lethe audit
/// log` lists as unfinished until [`end`] records the end.
pub fn begin(workspace: &Path, entry: &Entry) -> Result<Started, AuditError> {
    let mut start = entry.clone();
    start.status = super::STARTED.into();
    start.outputs = Vec::new();
    let record = record(workspace, &start)?;
    Ok(Started {
        workspace: workspace.to_path_buf(),
        record,
    })
}

/// Records the end of a job [`begin`] recorded: `entry` with its final status
/// and outputs, linked to the start record.
pub fn end(started: &Started, entry: &Entry) -> Result<Record, AuditError> {
    AuditLog::open(&super::audit_path(&started.workspace))?.append_linked(
        entry,
        unix_now(),
        Some(started.record.seq),
    )
}

/// `succeeded`, or `failed: <first line of the error>`.
pub fn status_of<T, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "succeeded".into(),
        Err(e) => format!(
            "failed: {}",
            e.to_string().lines().next().unwrap_or("error")
        ),
    }
}

/// Sets the status and hashes the outputs once the job has ended.
pub fn finish<T, E: std::fmt::Display>(entry: &mut Entry, result: &Result<T, E>, out: &Path) {
    entry.status = status_of(result);
    entry.outputs = FileRef::folder(out);
}

/// The record of `lethe evaluate`, its inputs hashed now (before it runs);
/// [`finish`] completes it.
pub fn evaluate_entry(args: &crate::eval::evaluate::EvaluateRequest, out: &Path) -> Entry {
    let mut inputs = vec![
        FileRef::of("checkpoint", &args.checkpoint),
        FileRef::of("dataset", &args.data),
        FileRef::of("forget list", &args.forget),
    ];
    if let Some(o) = &args.original {
        inputs.push(FileRef::of("original checkpoint", o));
    }
    Entry {
        kind: "evaluate".into(),
        status: "started".into(),
        subject: format!("utility of {}", args.checkpoint.display()),
        plugin: None,
        inputs,
        outputs: Vec::new(),
        details: json!({
            "seed": args.seed,
            "device": args.device,
            "probe": args.probe,
            "probe_epochs": args.probe_epochs,
            "alignment": args.alignment,
            "pairs": args.pairs,
            "matrix_samples": args.matrix_samples,
            "alignment_max": args.alignment_max,
            "out": out,
        }),
    }
}

/// What an attack job is, for its record.
#[derive(Debug, Clone, Copy)]
pub struct AttackJob<'a> {
    /// The attack's id, as asked for.
    pub attack: &'a str,
    /// The attacked model.
    pub checkpoint: &'a Path,
    /// Its dataset.
    pub data: &'a Path,
    /// The forget list.
    pub forget: &'a Path,
    /// The settings as given (parameters, seed, device, bootstrap, level).
    pub settings: &'a serde_json::Value,
}

/// The record of `lethe attack`, its inputs hashed now; [`finish`] completes it
/// and [`attack_plugin`] names the plugin once it ran.
pub fn attack_entry(job: &AttackJob<'_>, out: &Path) -> Entry {
    let mut details = job.settings.clone();
    if let Some(m) = details.as_object_mut() {
        m.insert("attack".into(), json!(job.attack));
        m.insert("out".into(), json!(out));
    }
    Entry {
        kind: "attack".into(),
        status: "started".into(),
        subject: format!("{} on {}", job.attack, job.checkpoint.display()),
        plugin: None,
        inputs: vec![
            FileRef::of("checkpoint", job.checkpoint),
            FileRef::of("dataset", job.data),
            FileRef::of("forget list", job.forget),
        ],
        outputs: Vec::new(),
        details,
    }
}

/// The attack plugin of a finished attack, with its file's hash.
pub fn attack_plugin(r: &crate::eval::attack::AttackReport) -> PluginRef {
    PluginRef {
        id: r.attack.id.clone(),
        version: r.attack.version.clone(),
        library: r.attack.library.display().to_string(),
        sha256: path_sha256(&r.attack.library),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_flag_else_a_project_folder_above_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ws");
        assert_eq!(workspace_for(Some(&flag), None), flag);
        if std::env::var_os(WORKSPACE_ENV).is_none() {
            std::fs::write(dir.path().join("lethe-project.json"), "{}").unwrap();
            let out = dir.path().join("runs/r1/evaluation-1");
            assert_eq!(workspace_for(None, Some(&out)), dir.path());
        }
    }

    #[test]
    fn a_log_above_the_current_folder_does_not_capture_its_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT_FILE), b"").unwrap();
        let cwd = dir.path().join("work");
        let out = cwd.join("runs/r1");
        // Inside the current folder: a log above it does not count.
        assert_eq!(workspace_above(&out, Some(&cwd)), None);
        // A log in the current folder or between it and the output still counts.
        std::fs::create_dir_all(cwd.join("runs")).unwrap();
        std::fs::write(cwd.join("runs").join(AUDIT_FILE), b"").unwrap();
        assert_eq!(workspace_above(&out, Some(&cwd)), Some(cwd.join("runs")));
        // An output outside the current folder finds the log above it.
        let elsewhere = dir.path().join("other/r2");
        assert_eq!(
            workspace_above(&elsewhere, Some(&cwd)),
            Some(dir.path().to_path_buf())
        );
    }

    #[test]
    fn a_project_above_the_current_folder_still_holds_its_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lethe-project.json"), "{}").unwrap();
        // Working inside the project's runs folder.
        let cwd = dir.path().join("runs");
        let out = cwd.join("r1");
        assert_eq!(
            workspace_above(&out, Some(&cwd)),
            Some(dir.path().to_path_buf())
        );
    }
}
