//! A project folder: `lethe-project.json` (the checkpoints, datasets and forget
//! sets the user added, by path; the files themselves stay where they are),
//! `forget-sets/` (lists made in the GUI) and `runs/<id>/` (one folder per job:
//! `job.json` and the worker's `output/`).

use crate::jobs::{JOB_FILE, JobRecord};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The project file's name.
pub const PROJECT_FILE: &str = "lethe-project.json";

/// A forget set known to the project: a list file of training-sample indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetSetEntry {
    /// Display name.
    pub name: String,
    /// The list file.
    pub path: PathBuf,
    /// The dataset it indexes.
    pub data: PathBuf,
    /// How it was chosen ("class 3 (3)", "random 0.05 of train (seed 1)", a folder…).
    pub origin: String,
    /// Number of samples.
    pub count: usize,
    /// Whether the set is whole classes (what class-wise methods need); unknown
    /// for sets saved before Lethe recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_classes: Option<bool>,
}

/// What `lethe-project.json` holds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectFile {
    /// Format version of this file.
    pub version: u32,
    /// Display name.
    pub name: String,
    /// Checkpoint files.
    pub checkpoints: Vec<PathBuf>,
    /// Dataset files or folders.
    pub datasets: Vec<PathBuf>,
    /// Forget sets.
    pub forget_sets: Vec<ForgetSetEntry>,
    /// Files that crashed, exhausted or stalled the worker reading them: they are
    /// not read again (at the next start either) until the user asks or the
    /// file changes.
    pub suspect_files: Vec<SuspectFile>,
}

/// A file a worker could not survive reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspectFile {
    /// The file or folder.
    pub path: PathBuf,
    /// What happened.
    pub reason: String,
    /// Its size then (a changed file is read again).
    pub size: Option<u64>,
    /// Its modification time then (unix seconds).
    pub modified: Option<f64>,
    /// When it was marked (unix seconds).
    pub marked_at: f64,
}

/// Size and modification time of a file, when they can be read.
fn fingerprint(path: &Path) -> (Option<u64>, Option<f64>) {
    match std::fs::metadata(path) {
        Ok(m) => (
            Some(m.len()),
            m.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
        ),
        Err(_) => (None, None),
    }
}

/// An open project: its folder, file and runs.
#[derive(Debug, Clone)]
pub struct Project {
    /// The folder.
    pub dir: PathBuf,
    /// Its file.
    pub file: ProjectFile,
    /// Runs found under `runs/`, oldest first.
    pub runs: Vec<JobRecord>,
    /// Run folders whose record could not be read, with why.
    pub broken_runs: Vec<(PathBuf, String)>,
}

/// Writes `bytes` to `path` through a temporary file and a rename, replacing it.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

impl Project {
    /// Opens the project in `dir`, creating the file (named after the folder) if the
    /// folder has none.
    pub fn open_or_create(dir: &Path) -> anyhow::Result<Project> {
        let file_path = dir.join(PROJECT_FILE);
        let file = if file_path.is_file() {
            let text = std::fs::read_to_string(&file_path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file_path.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is not a Lethe project file: {e}", file_path.display())
            })?
        } else {
            if dir.exists() && !dir.is_dir() {
                anyhow::bail!("{} is a file, not a folder", dir.display());
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Lethe project".into());
            let file = ProjectFile {
                version: 1,
                name,
                ..ProjectFile::default()
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            file
        };
        let mut project = Project {
            dir: dir.to_path_buf(),
            file,
            runs: Vec::new(),
            broken_runs: Vec::new(),
        };
        project.save()?;
        project.reload_runs();
        Ok(project)
    }

    /// The mark on `path`, if it has one and the file has not changed since.
    pub fn suspect(&self, path: &Path) -> Option<&SuspectFile> {
        let s = self.file.suspect_files.iter().find(|s| s.path == path)?;
        let (size, modified) = fingerprint(path);
        (s.size == size && s.modified == modified).then_some(s)
    }

    /// Marks `path` as a file not to read again unasked, and saves the project.
    pub fn mark_suspect(&mut self, path: &Path, reason: &str) -> anyhow::Result<()> {
        let (size, modified) = fingerprint(path);
        self.file.suspect_files.retain(|s| s.path != path);
        self.file.suspect_files.push(SuspectFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
            size,
            modified,
            marked_at: now(),
        });
        self.save()
    }

    /// Removes the mark on `path` (the user asked to read it again).
    pub fn clear_suspect(&mut self, path: &Path) -> anyhow::Result<()> {
        let before = self.file.suspect_files.len();
        self.file.suspect_files.retain(|s| s.path != path);
        if self.file.suspect_files.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Saves `lethe-project.json`.
    pub fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.file)?;
        write_file(&self.dir.join(PROJECT_FILE), text.as_bytes())
    }

    /// The folder holding run folders.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The folder for forget lists made in the GUI.
    pub fn forget_dir(&self) -> PathBuf {
        self.dir.join("forget-sets")
    }

    /// Re-reads every `runs/*/job.json`.
    pub fn reload_runs(&mut self) {
        self.runs.clear();
        self.broken_runs.clear();
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let file = dir.join(JOB_FILE);
            if !file.is_file() {
                continue;
            }
            match JobRecord::load(&file) {
                Ok(r) => self.runs.push(r),
                Err(e) => self.broken_runs.push((dir, e.to_string())),
            }
        }
        self.runs.sort_by(|a, b| a.created.total_cmp(&b.created));
    }

    /// The folder of run `id`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runs_dir().join(id)
    }

    /// A fresh run id (`<time>-<short method>`, with a counter if taken).
    pub fn new_run_id(&self, method_id: &str, unix: f64) -> String {
        let short: String = method_id
            .rsplit('.')
            .next()
            .unwrap_or("run")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("{}-{short}", timestamp(unix));
        let mut id = base.clone();
        let mut n = 2;
        while self.run_dir(&id).exists() || self.runs.iter().any(|r| r.id == id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Adds a path to a list unless it is already there; whether it was added.
    pub fn add_unique(list: &mut Vec<PathBuf>, path: PathBuf) -> bool {
        if list.contains(&path) {
            false
        } else {
            list.push(path);
            true
        }
    }

    /// Adds or replaces (by list path) a forget set.
    pub fn add_forget_set(&mut self, entry: ForgetSetEntry) {
        match self
            .file
            .forget_sets
            .iter_mut()
            .find(|f| f.path == entry.path)
        {
            Some(old) => *old = entry,
            None => self.file.forget_sets.push(entry),
        }
    }

    /// The run record `id`, if any.
    pub fn run(&self, id: &str) -> Option<&JobRecord> {
        self.runs.iter().find(|r| r.id == id)
    }

    /// Inserts or replaces a run record by id.
    pub fn upsert_run(&mut self, record: JobRecord) {
        match self.runs.iter_mut().find(|r| r.id == record.id) {
            Some(r) => *r = record,
            None => self.runs.push(record),
        }
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for `unix` seconds, for folder names that sort by time.
pub fn timestamp(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `YYYY-MM-DD HH:MM UTC` for `unix` seconds, for people.
pub fn datetime(unix: f64) -> String {
    let t = timestamp(unix);
    format!(
        "{}-{}-{} {}:{} UTC",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13]
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The bundled `resources/` folder (the engine's rule, shared with `lethe demo`).
pub fn resources_dir() -> PathBuf {
    lethe_engine::resources::bundled_dir()
}

/// The bundled demo's files, if they are there.
pub struct DemoFiles {
    /// MNIST classifier.
    pub classifier: PathBuf,
    /// SimCLR encoder.
    pub encoder: PathBuf,
    /// The digits.
    pub data: PathBuf,
    /// 300 training indices.
    pub forget: PathBuf,
    /// The leaky demo's MLP, fitted to 2,000 digits: membership attacks see
    /// it, so a deletion's verdict can pass or fail (the deletion the demo
    /// opens with, as `lethe demo` runs it).
    pub leaky: PathBuf,
    /// The same digits with the leaky demo's 2,000-digit training split.
    pub leaky_data: PathBuf,
    /// 100 of those 2,000.
    pub leaky_forget: PathBuf,
}

impl DemoFiles {
    /// The demo in `resources/demo`, or why it is missing.
    pub fn find(resources: &Path) -> anyhow::Result<DemoFiles> {
        let demo = resources.join("demo");
        let files = DemoFiles {
            classifier: demo.join("classifier.safetensors"),
            encoder: demo.join("encoder.safetensors"),
            data: demo.join("mnist10k.npz"),
            forget: demo.join("forget.txt"),
            leaky: demo.join("leaky-mlp.safetensors"),
            leaky_data: demo.join("mnist10k-2k.npz"),
            leaky_forget: demo.join("forget-2k.txt"),
        };
        for p in [
            &files.classifier,
            &files.encoder,
            &files.data,
            &files.forget,
            &files.leaky,
            &files.leaky_data,
            &files.leaky_forget,
        ] {
            if !p.is_file() {
                anyhow::bail!("the bundled demo is incomplete: {} is missing", p.display());
            }
        }
        Ok(files)
    }
}

/// Creates (or reopens) a project in `dir` that lists the bundled demo's models,
/// data and forget set. The demo files are referenced, not copied: they are only
/// ever read.
pub fn create_demo_project(dir: &Path, demo: &DemoFiles) -> anyhow::Result<Project> {
    let mut project = Project::open_or_create(dir)?;
    if project.file.name.is_empty() || project.file.checkpoints.is_empty() {
        project.file.name = "Lethe demo (MNIST)".into();
    }
    Project::add_unique(&mut project.file.checkpoints, demo.classifier.clone());
    Project::add_unique(&mut project.file.checkpoints, demo.encoder.clone());
    Project::add_unique(&mut project.file.checkpoints, demo.leaky.clone());
    Project::add_unique(&mut project.file.datasets, demo.data.clone());
    Project::add_unique(&mut project.file.datasets, demo.leaky_data.clone());
    let count = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| {
                t.lines()
                    .filter(|l| {
                        let l = l.split('#').next().unwrap_or("").trim();
                        !l.is_empty()
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    project.add_forget_set(ForgetSetEntry {
        name: "Demo: 300 digits (forget.txt)".into(),
        path: demo.forget.clone(),
        data: demo.data.clone(),
        origin: "resources/demo/forget.txt: 5 % of the training split, seed 1".into(),
        count: count(&demo.forget),
        whole_classes: Some(false),
    });
    project.add_forget_set(ForgetSetEntry {
        name: "Leaky demo: 100 digits (forget-2k.txt)".into(),
        path: demo.leaky_forget.clone(),
        data: demo.leaky_data.clone(),
        origin:
            "resources/demo/forget-2k.txt: 5 % of the leaky demo's 2,000 training digits, seed 1"
                .into(),
        count: count(&demo.leaky_forget),
        whole_classes: Some(false),
    });
    project.save()?;
    Ok(project)
}

/// Where the demo project goes by default: `~/Lethe/Demo`.
pub fn default_demo_dir() -> PathBuf {
    default_projects_dir().join("Demo")
}

/// The default parent of new projects: `~/Lethe`.
pub fn default_projects_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("Lethe")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobRecord, JobStatus};

    fn spec() -> crate::jobs::JobSpec {
        crate::jobs::JobSpec {
            kind: "method".into(),
            plugin_id: "org.lethe.baseline.finetune".into(),
            plugin_name: "FT".into(),
            library: "/p/lib.so".into(),
            params: serde_json::json!({}),
            checkpoint: "/c".into(),
            data: "/d".into(),
            forget: "/f".into(),
            forget_label: "f".into(),
            device: "cpu".into(),
            seed: 0,
        }
    }

    #[test]
    fn project_round_trips_and_finds_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("My study");
        let mut p = Project::open_or_create(&dir).unwrap();
        assert_eq!(p.file.name, "My study");
        assert!(Project::add_unique(&mut p.file.checkpoints, "/m.pt".into()));
        assert!(!Project::add_unique(
            &mut p.file.checkpoints,
            "/m.pt".into()
        ));
        p.add_forget_set(ForgetSetEntry {
            name: "a".into(),
            path: "/f.txt".into(),
            data: "/d".into(),
            origin: "x".into(),
            count: 3,
            whole_classes: None,
        });
        p.add_forget_set(ForgetSetEntry {
            name: "b".into(),
            path: "/f.txt".into(),
            data: "/d".into(),
            origin: "y".into(),
            count: 4,
            whole_classes: Some(true),
        });
        assert_eq!(p.file.forget_sets.len(), 1, "same list path replaces");
        p.save().unwrap();

        let id = p.new_run_id("org.lethe.baseline.finetune", 0.0);
        assert_eq!(id, "19700101-000000-finetune");
        let mut done = JobRecord::new(id.clone(), spec(), 1.0);
        done.status = JobStatus::Succeeded;
        done.save(&p.run_dir(&id)).unwrap();
        let id2 = p.new_run_id("org.lethe.baseline.finetune", 0.0);
        assert_eq!(id2, "19700101-000000-finetune-2", "taken ids get a counter");
        JobRecord::new(id2.clone(), spec(), 0.5)
            .save(&p.run_dir(&id2))
            .unwrap();
        std::fs::create_dir_all(p.runs_dir().join("junk")).unwrap();
        std::fs::write(p.runs_dir().join("junk").join(JOB_FILE), "not json").unwrap();

        let again = Project::open_or_create(&dir).unwrap();
        assert_eq!(again.file, p.file);
        let ids: Vec<&str> = again.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [id2.as_str(), id.as_str()], "sorted by creation time");
        assert_eq!(again.runs[0].status, JobStatus::Interrupted);
        assert_eq!(again.runs[1].status, JobStatus::Succeeded);
        assert_eq!(again.broken_runs.len(), 1);
    }

    #[test]
    fn a_broken_project_file_is_an_error_not_a_reset() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(PROJECT_FILE), "{ nope").unwrap();
        let err = Project::open_or_create(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a Lethe project file"), "{err}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(PROJECT_FILE)).unwrap(),
            "{ nope",
            "left untouched"
        );
    }

    #[test]
    fn demo_project_lists_the_bundled_files() {
        let demo = DemoFiles::find(&resources_dir()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = create_demo_project(&tmp.path().join("demo"), &demo).unwrap();
        assert_eq!(p.file.checkpoints.len(), 3);
        assert_eq!(
            p.file.datasets,
            vec![demo.data.clone(), demo.leaky_data.clone()]
        );
        assert_eq!(p.file.forget_sets[0].count, 300);
        assert_eq!(p.file.forget_sets[1].count, 100);
        assert_eq!(p.file.forget_sets[1].data, demo.leaky_data);
        // Opening it twice does not duplicate anything.
        let p = create_demo_project(&tmp.path().join("demo"), &demo).unwrap();
        assert_eq!(p.file.checkpoints.len(), 3);
        assert_eq!(p.file.forget_sets.len(), 2);
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0.0), "19700101-000000");
        assert_eq!(timestamp(951_782_400.0 + 3661.0), "20000229-010101");
        assert_eq!(timestamp(1_767_225_599.0), "20251231-235959");
        assert_eq!(datetime(1_767_225_599.0), "2025-12-31 23:59 UTC");
    }
}
