//! The window: `LetheApp` holds the persisted [`AppState`], the open project,
//! the job runner and the background tasks. Each frame it folds in what
//! arrived (task results, worker events), draws the panels, and then applies
//! the [`Command`]s the panels pushed, so no panel mutates shared state while
//! another one reads it.

use crate::artifacts::{ArtifactData, Scores};
use crate::catalog::Catalog;
use crate::devices::DeviceInfo;
use crate::jobs::JobSpec;
use crate::project::{self, ForgetSetEntry, Project};
use crate::runner::{Runner, Waker};
use crate::state::{AppState, View};
use crate::tasks::{DatasetInfo, Done, ForgetPreview, ForgetRequest, Loadable, PickTarget, Tasks};
use crate::thumbs::Thumb;
use crate::widgets::TextureCache;
use crate::widgets::heatmap::Heatmap;
use lethe_engine::checkpoint::CheckpointSummary;
use lethe_engine::preview::PreviewError;
use lethe_engine::runtime::RuntimeReport;
use lethe_engine::worker::WorkerOptions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Something a panel asked for, applied after drawing.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open (or create) the project in a folder.
    OpenProject(PathBuf),
    /// Create or reopen the demo project in a folder.
    OpenDemo(PathBuf),
    /// Close the project.
    CloseProject,
    /// Show a view.
    Show(View),
    /// Open a file dialog.
    Pick(PickTarget),
    /// Add a checkpoint to the project.
    AddCheckpoint(PathBuf),
    /// Add a dataset to the project.
    AddDataset(PathBuf),
    /// Remove a checkpoint from the project list (the file stays).
    RemoveCheckpoint(PathBuf),
    /// Remove a dataset from the project list.
    RemoveDataset(PathBuf),
    /// Remove a forget set from the project list.
    RemoveForgetSet(PathBuf),
    /// Save the current forget preview under a name.
    SaveForgetSet(String),
    /// Load a run's request into the deletion page and show it.
    EditRequest(String),
    /// Queue a job and show it.
    Queue(JobSpec),
    /// Queue a job and stay on the current view.
    QueueQuietly(JobSpec),
    /// Cancel a job.
    Cancel(String),
    /// Re-scan the plugin folders.
    RescanPlugins,
    /// Write an export into a run folder.
    Export {
        /// Run id.
        run: String,
        /// File name.
        name: String,
        /// Contents.
        bytes: Arc<Vec<u8>>,
    },
    /// Show a message in the status bar.
    Notify(String, bool),
    /// Write a study file and run it: (file, its text, the study folder,
    /// where its runs go).
    StartStudy(PathBuf, String, PathBuf, lethe_engine::exec::ExecutorConfig),
    /// Ask a running study to stop (its folder); it shows as stopping until
    /// its process has ended.
    CancelStudy(PathBuf),
    /// Read a file again that was marked for crashing or exhausting the worker
    /// reading it.
    RetryFile(PathBuf),
}

/// A message for the status bar.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it reports a problem.
    pub error: bool,
    /// When (unix seconds).
    pub at: f64,
}

/// Text typed into path fields (not persisted: paths are saved once used).
#[derive(Default)]
pub struct Inputs {
    /// Open/create project.
    pub project: String,
    /// Add checkpoint.
    pub checkpoint: String,
    /// Add dataset.
    pub dataset: String,
}

/// How the app is set up (the binary uses [`Config::standard`]; tests point it
/// at their own worker, plugins and folders).
#[derive(Clone)]
pub struct Config {
    /// How to start workers.
    pub worker: WorkerOptions,
    /// Plugin folders searched before the standard ones (like `--plugins`).
    pub extra_plugin_dirs: Vec<PathBuf>,
    /// Where "Open the demo project" puts the demo project.
    pub demo_dir: PathBuf,
    /// Called from background threads when something arrives.
    pub waker: Waker,
}

impl Config {
    /// This executable as the worker, the standard plugin folders, `~/Lethe/Demo`,
    /// plugin scans cached (and crashing libraries quarantined) in the user's
    /// cache folder.
    pub fn standard(waker: Waker) -> anyhow::Result<Self> {
        let mut worker = WorkerOptions::current_exe()?;
        worker.scan_cache = lethe_engine::worker::scan_cache::default_location();
        Ok(Config {
            worker,
            extra_plugin_dirs: Vec::new(),
            demo_dir: project::default_demo_dir(),
            waker,
        })
    }
}

/// The application.
pub struct LetheApp {
    /// Persisted state.
    pub state: AppState,
    /// The open project.
    pub project: Option<Project>,
    /// Why the last project could not be opened.
    pub project_error: Option<String>,
    pub(crate) runner: Runner,
    pub(crate) tasks: Tasks,
    pub(crate) worker_opts: WorkerOptions,
    pub(crate) extra_plugin_dirs: Vec<PathBuf>,
    /// Where the demo project goes.
    pub demo_dir: PathBuf,
    /// Plugins found.
    pub catalog: Loadable<Catalog>,
    /// Devices.
    pub devices: Vec<DeviceInfo>,
    /// The runtime report.
    pub runtime: Option<RuntimeReport>,
    /// Checkpoint inspections.
    pub checkpoints: HashMap<PathBuf, Loadable<CheckpointSummary>>,
    /// Dataset inspections, by path and split seed.
    pub datasets: HashMap<(PathBuf, u64), Loadable<DatasetInfo>>,
    /// The forget-set preview and the request it answers.
    pub forget_preview: Option<(ForgetRequest, Loadable<ForgetPreview>)>,
    /// Whether a preview task is running.
    pub(crate) forget_inflight: bool,
    /// Close the new-forget-set form on the next frame (it was just saved).
    pub(crate) close_forget_form: bool,
    /// Loaded result files.
    pub artifacts: HashMap<PathBuf, Loadable<Arc<ArtifactData>>>,
    /// Heatmaps by file and tensor name.
    pub heatmaps: HashMap<(PathBuf, String), Heatmap>,
    /// Selected tensor per file.
    pub selected_tensor: HashMap<PathBuf, String>,
    /// Membership scores per output folder.
    pub scores: HashMap<PathBuf, Loadable<Arc<Scores>>>,
    /// Metric sets of finished attack runs, by run id.
    pub attack_reports: HashMap<String, Loadable<crate::attack_report::AttackSummary>>,
    /// Shadow-model cost estimates, by model, attack and parameters.
    pub estimates: HashMap<String, Loadable<String>>,
    /// Deletion runs whose "Verify per sample" panel the user opened.
    pub verify_open: std::collections::HashSet<String>,
    /// Per-sample verifications (`lethe verify-samples`) by deletion run id
    /// (`Ready(None)`: never verified).
    pub verifications: HashMap<String, Loadable<Option<Box<crate::verify::Verification>>>>,
    /// Verifications under way, by deletion run id.
    pub verifying: HashMap<String, crate::verify::Running>,
    /// Verdicts of deletion runs as their evidence stands: the evidence's key
    /// and the verdict (recomputed when the key changes).
    pub verdicts: HashMap<String, (String, Loadable<lethe_engine::report::verdict::Verdict>)>,
    /// Runs whose verdict is being worked out again (the last one is shown
    /// meanwhile, marked as out of date).
    pub verdicts_updating: std::collections::HashSet<String>,
    /// The last report written per run: the file and the verdict line.
    pub exports: HashMap<String, Loadable<crate::export::Written>>,
    /// Running studies.
    pub(crate) studies: crate::study::StudyRunner,
    /// The project's study folders.
    pub study_list: Vec<PathBuf>,
    /// Studies read from their folders, by folder.
    pub study_results: HashMap<PathBuf, Loadable<Arc<lethe_engine::study::StudyResults>>>,
    /// Study folders being read.
    pub(crate) study_loading: std::collections::HashSet<PathBuf>,
    /// What running (or ended) studies said, by folder.
    pub study_live: HashMap<PathBuf, crate::study::Live>,
    /// Runs whose end was recorded in the audit log this session.
    pub(crate) audited: std::collections::HashSet<String>,
    /// Evaluations by run id (`Ready(None)`: never evaluated).
    pub evaluations: HashMap<String, Loadable<Option<crate::evaluation::Evaluation>>>,
    /// What the views derive from loaded data (ROC curves, histograms,
    /// summaries), computed once rather than every frame.
    pub derived: HashMap<String, Arc<crate::panels::Derived>>,
    /// Sample pictures per dataset, by index.
    pub samples: HashMap<PathBuf, HashMap<i64, Thumb>>,
    /// Sample pictures asked for and not there yet.
    pub(crate) samples_pending: std::collections::HashSet<(PathBuf, i64)>,
    /// Samples that could not be drawn (not in the dataset).
    pub(crate) samples_missing: std::collections::HashSet<(PathBuf, i64)>,
    /// Uploaded thumbnails.
    pub textures: TextureCache,
    /// Path fields.
    pub inputs: Inputs,
    /// Status bar messages.
    pub notices: Vec<Notice>,
    /// Commands pushed during this frame.
    pub commands: Vec<Command>,
    /// When the window was asked to close: jobs are stopping and the records
    /// and files being written are finished before it does.
    pub closing: Option<std::time::Instant>,
    /// Whether [`LetheApp::shutdown`] ran.
    shut_down: bool,
}

impl LetheApp {
    /// The app with `state` (as persisted), set up by `config`.
    pub fn new(state: AppState, config: Config) -> Self {
        let studies = crate::study::StudyRunner::new(
            config.worker.exe.clone(),
            config.extra_plugin_dirs.clone(),
            Arc::clone(&config.waker),
        );
        let mut app = LetheApp {
            runner: Runner::new(config.worker.clone(), Arc::clone(&config.waker)),
            tasks: Tasks::new(
                config.waker,
                config.worker.clone(),
                lethe_engine::preview::PreviewLimits::from_env(),
            ),
            worker_opts: config.worker,
            extra_plugin_dirs: config.extra_plugin_dirs,
            demo_dir: config.demo_dir,
            state,
            project: None,
            project_error: None,
            catalog: Loadable::Loading,
            devices: vec![DeviceInfo {
                id: "cpu".into(),
                label: "CPU".into(),
            }],
            runtime: None,
            checkpoints: HashMap::new(),
            datasets: HashMap::new(),
            forget_preview: None,
            forget_inflight: false,
            close_forget_form: false,
            artifacts: HashMap::new(),
            heatmaps: HashMap::new(),
            selected_tensor: HashMap::new(),
            scores: HashMap::new(),
            evaluations: HashMap::new(),
            attack_reports: HashMap::new(),
            exports: HashMap::new(),
            verdicts: HashMap::new(),
            verdicts_updating: Default::default(),
            estimates: HashMap::new(),
            verify_open: Default::default(),
            verifications: HashMap::new(),
            verifying: HashMap::new(),
            studies,
            study_list: Vec::new(),
            study_results: HashMap::new(),
            study_live: HashMap::new(),
            study_loading: std::collections::HashSet::new(),
            audited: std::collections::HashSet::new(),
            derived: HashMap::new(),
            samples: HashMap::new(),
            samples_pending: std::collections::HashSet::new(),
            samples_missing: std::collections::HashSet::new(),
            textures: TextureCache::default(),
            inputs: Inputs::default(),
            notices: Vec::new(),
            commands: Vec::new(),
            closing: None,
            shut_down: false,
        };
        app.tasks
            .scan_plugins(app.scan_opts(), app.extra_plugin_dirs.clone(), false);
        app.tasks.probe_devices();
        if let Some(dir) = app.state.project_dir.clone() {
            app.open_project(&dir);
        }
        app
    }

    fn scan_opts(&self) -> WorkerOptions {
        let mut o = self.worker_opts.clone();
        // Loading runs plugin initialisers; one that hangs must not hang the list.
        o.timeout = Some(std::time::Duration::from_secs(60));
        o
    }

    /// Shows a status message.
    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notices.push(Notice {
            text: text.into(),
            error,
            at: project::now(),
        });
        if self.notices.len() > 50 {
            self.notices.remove(0);
        }
    }

    fn open_project(&mut self, dir: &Path) {
        match Project::open_or_create(dir) {
            Ok(p) => {
                self.notify(format!("Opened project {}", p.dir.display()), false);
                self.project = Some(p);
                self.project_error = None;
                self.state.remember_project(dir.to_path_buf());
                self.inspect_project_files();
                self.refresh_studies();
            }
            Err(e) => {
                self.project_error = Some(e.to_string());
                self.state.project_dir = None;
                self.notify(e.to_string(), true);
            }
        }
    }

    /// Whether `path` lies in the open project's folder.
    fn in_project(&self, path: &Path) -> bool {
        self.project
            .as_ref()
            .is_some_and(|p| path.starts_with(&p.dir))
    }

    /// Whether the study in `dir` was asked to stop and is still stopping its
    /// runs.
    pub fn study_is_stopping(&self, dir: &Path) -> bool {
        self.studies.is_stopping(dir)
    }

    /// Lists the project's study folders again.
    pub fn refresh_studies(&mut self) {
        self.study_list = self
            .project
            .as_ref()
            .map(|p| crate::study::list(&p.dir))
            .unwrap_or_default();
        for dir in self.study_live.keys() {
            if !self.study_list.contains(dir) {
                self.study_list.push(dir.clone());
            }
        }
        self.study_list.sort();
    }

    /// Reads a study folder (again), unless a read is under way (then once it
    /// ends). The last table stays on screen meanwhile.
    pub fn load_study(&mut self, dir: &Path) {
        if self.study_loading.contains(dir) {
            self.study_live.entry(dir.to_path_buf()).or_default().reload = true;
            return;
        }
        if !dir.join(lethe_engine::study::results::STUDY_FILE).is_file() {
            // Not started far enough to have written study.json yet.
            return;
        }
        if let Some(l) = self.study_live.get_mut(dir) {
            l.reload = false;
        }
        self.study_loading.insert(dir.to_path_buf());
        self.study_results
            .entry(dir.to_path_buf())
            .or_insert(Loadable::Loading);
        self.tasks.load_study(dir.to_path_buf());
    }

    fn poll_studies(&mut self) {
        let (lines, ended) = self.studies.poll();
        let now = crate::project::now();
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut files: HashMap<PathBuf, String> = HashMap::new();
        for (dir, line) in lines {
            files
                .entry(crate::study::log_path(&dir))
                .or_default()
                .push_str(&format!("{line}\n"));
            let step = line.starts_with("study:");
            // A study of a project left behind still logs to its own folder,
            // but is not shown under the project open now.
            if !self.in_project(&dir) {
                continue;
            }
            let live = self.study_live.entry(dir.clone()).or_default();
            live.clock.observe(&line, now);
            live.push(line);
            if step && !changed.contains(&dir) {
                changed.push(dir);
            }
        }
        for (path, text) in files {
            use std::io::Write as _;
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()));
        }
        for (dir, how) in ended {
            let name = crate::panels::file_name(&dir);
            match &how {
                crate::study::Ended::Finished => {
                    self.notify(format!("Study {name} finished"), false)
                }
                crate::study::Ended::Cancelled => self.notify(
                    format!("Study {name} stopped; finished runs are kept"),
                    false,
                ),
                crate::study::Ended::Failed(e) => {
                    self.notify(format!("Study {name} did not finish: {e}"), true)
                }
            }
            if !self.in_project(&dir) {
                continue;
            }
            self.study_live.entry(dir.clone()).or_default().ended = Some(how);
            if !changed.contains(&dir) {
                changed.push(dir);
            }
        }
        if !changed.is_empty() {
            self.refresh_studies();
        }
        for dir in changed {
            self.load_study(&dir);
        }
    }

    /// Starts inspections of the project's files that are not known yet.
    fn inspect_project_files(&mut self) {
        let Some(p) = &self.project else { return };
        let ckpts = p.file.checkpoints.clone();
        for c in ckpts {
            self.ensure_checkpoint(&c);
        }
    }

    /// Why `path` is not read: a worker died, ran out of memory or stalled
    /// reading it before (this session or an earlier one) and it has not changed.
    pub fn skipped(&self, path: &Path) -> Option<String> {
        let s = self.project.as_ref()?.suspect(path)?;
        Some(format!(
            "not read: {} (marked when Lethe last tried; choose \"Read again\" to try once more)",
            s.reason
        ))
    }

    /// A run of the open project in words ("Retrain (exact) run of …"), its
    /// folder id when it is not there.
    fn run_title(&self, id: &str) -> String {
        self.project
            .as_ref()
            .and_then(|p| p.run(id))
            .map_or_else(|| format!("run {id}"), |r| r.title())
    }

    /// Marks the file a preview worker could not survive, so that it is not read
    /// again unasked (the next start included).
    fn mark_suspect(&mut self, path: &Path, reason: &str) {
        let saved = self.project.as_mut().map(|p| p.mark_suspect(path, reason));
        if let Some(Err(e)) = saved {
            self.notify(format!("cannot mark {}: {e}", path.display()), true);
        }
        self.notify(
            format!("{reason}. Lethe will not read this file again unless asked."),
            true,
        );
    }

    /// Marks the file behind a fatal preview failure.
    fn charge<T>(&mut self, path: &Path, r: &Result<T, PreviewError>) {
        if let Err(PreviewError::Fatal(reason)) = r {
            self.mark_suspect(path, reason);
        }
    }

    /// Inspects a checkpoint unless it already was.
    pub fn ensure_checkpoint(&mut self, path: &Path) {
        if !self.checkpoints.contains_key(path)
            && let Some(why) = self.skipped(path)
        {
            self.checkpoints
                .insert(path.to_path_buf(), Loadable::Failed(why));
        }
        if !self.checkpoints.contains_key(path) {
            self.checkpoints
                .insert(path.to_path_buf(), Loadable::Loading);
            self.tasks.inspect_checkpoint(path.to_path_buf());
        }
    }

    /// Inspects a dataset (with the split for `seed`) unless it already was.
    pub fn ensure_dataset(&mut self, path: &Path, seed: u64) {
        let skipped = self.skipped(path);
        if let std::collections::hash_map::Entry::Vacant(e) =
            self.datasets.entry((path.to_path_buf(), seed))
        {
            if let Some(why) = skipped {
                e.insert(Loadable::Failed(why));
                return;
            }
            e.insert(Loadable::Loading);
            self.tasks.inspect_dataset(path.to_path_buf(), seed);
        }
    }

    /// Loads a result file unless it already was.
    pub fn ensure_artifact(&mut self, path: &Path) {
        if !self.artifacts.contains_key(path)
            && let Some(why) = self.skipped(path)
        {
            self.artifacts
                .insert(path.to_path_buf(), Loadable::Failed(why));
        }
        if !self.artifacts.contains_key(path) {
            self.artifacts.insert(path.to_path_buf(), Loadable::Loading);
            self.tasks.load_artifact(path.to_path_buf());
        }
    }

    /// Loads the scores of an output folder unless it already was.
    pub fn ensure_scores(&mut self, dir: &Path) {
        if !self.scores.contains_key(dir)
            && let Some(why) = self.skipped(dir)
        {
            self.scores.insert(dir.to_path_buf(), Loadable::Failed(why));
        }
        if !self.scores.contains_key(dir) {
            self.scores.insert(dir.to_path_buf(), Loadable::Loading);
            self.tasks.load_scores(dir.to_path_buf());
        }
    }

    /// Asks for pictures of samples not loaded (or being loaded) yet.
    pub fn ensure_samples(&mut self, data: &Path, indices: &[i64]) {
        if self.skipped(data).is_some() {
            return;
        }
        let have = self.samples.entry(data.to_path_buf()).or_default();
        let missing: Vec<i64> = indices
            .iter()
            .copied()
            .filter(|i| !have.contains_key(i))
            .filter(|i| {
                let key = (data.to_path_buf(), *i);
                !self.samples_pending.contains(&key) && !self.samples_missing.contains(&key)
            })
            .collect();
        if !missing.is_empty() {
            for &i in &missing {
                self.samples_pending.insert((data.to_path_buf(), i));
            }
            self.tasks.sample_thumbs(data.to_path_buf(), missing);
        }
    }

    /// Asks for a forget-set preview; while one runs, the latest request waits.
    pub fn request_forget_preview(&mut self, req: ForgetRequest) {
        let current = self.forget_preview.as_ref().map(|(r, _)| r);
        if current == Some(&req) {
            return;
        }
        if self.forget_inflight {
            return;
        }
        let subject = lethe_engine::preview::Request::Forget(req.clone())
            .subject()
            .to_path_buf();
        if let Some(why) = self.skipped(&req.data).or_else(|| self.skipped(&subject)) {
            self.forget_preview = Some((req, Loadable::Failed(why)));
            return;
        }
        self.forget_inflight = true;
        self.forget_preview = Some((req.clone(), Loadable::Loading));
        self.tasks.preview_forget(req);
    }

    /// Folds in task results and worker events; saves changed job records.
    pub fn update(&mut self) {
        for done in self.tasks.drain() {
            self.apply_done(done);
        }
        self.poll_studies();
        let changed = match self.project.as_mut() {
            Some(p) => self.runner.poll(p, project::now()),
            None => Vec::new(),
        };
        self.audit_ended(&changed);
    }

    /// Records in the audit log each of `ids` whose job has ended (once per run).
    fn audit_ended(&mut self, ids: &[String]) {
        let mut ended = Vec::new();
        if let Some(p) = self.project.as_ref() {
            for id in ids {
                if let Some(r) = p.run(id)
                    && r.status.is_final()
                    && r.started.is_some()
                    && !self.audited.contains(id)
                {
                    ended.push((r.clone(), p.run_dir(id), p.dir.clone()));
                }
            }
        }
        for (record, run_dir, workspace) in ended {
            self.audited.insert(record.id.clone());
            let version = self
                .catalog
                .ready()
                .and_then(|c| c.get(&record.spec.plugin_id))
                .map(|e| e.info.version.clone());
            self.tasks.audit_job(workspace, record, run_dir, version);
        }
    }

    /// Leaves the open project before another one is opened (or none): stops its
    /// studies and jobs (auditing the ones that ended), and forgets everything
    /// shown about it, so nothing of one case is ever shown, opened or exported
    /// under another. When the next project is another folder, the deletion
    /// form's choices (its files) are cleared too.
    fn leave_project(&mut self, next: Option<&Path>) {
        // Without waiting: a study on a cluster may take a while to cancel its
        // tasks; it goes on logging to its own folder until it has.
        self.studies.stop_all();
        self.stop_project_jobs();
        let same = next.is_some() && self.project.as_ref().map(|p| p.dir.as_path()) == next;
        self.forget_preview = None;
        self.forget_inflight = false;
        self.close_forget_form = false;
        self.artifacts.clear();
        self.heatmaps.clear();
        self.selected_tensor.clear();
        self.scores.clear();
        self.attack_reports.clear();
        self.estimates.clear();
        self.verify_open.clear();
        // A verification of the project left behind stops (its folder stays
        // as it was; a stopped one is not read back).
        for v in self.verifying.values() {
            v.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.verifying.clear();
        self.verifications.clear();
        self.exports.clear();
        self.verdicts.clear();
        self.verdicts_updating.clear();
        self.study_list.clear();
        self.study_results.clear();
        self.study_loading.clear();
        self.study_live.clear();
        self.audited.clear();
        self.evaluations.clear();
        self.derived.clear();
        // Inspections are read again: the next project may have marked files.
        self.checkpoints.clear();
        self.datasets.clear();
        if !same {
            let d = &mut self.state.draft;
            d.checkpoint = None;
            d.data = None;
            d.forget = None;
        }
    }

    /// Stops the open project's jobs (waiting for their workers) and audits the
    /// ones that ended, before the project is closed or replaced.
    fn stop_project_jobs(&mut self) {
        if let Some(p) = self.project.as_mut() {
            let changed = self.runner.shutdown(p);
            self.audit_ended(&changed);
        }
    }

    fn apply_done(&mut self, done: Done) {
        match done {
            Done::Checkpoint(path, r) => {
                self.charge(&path, &r);
                self.checkpoints.insert(path, r.into());
            }
            Done::Dataset(path, seed, r) => {
                self.charge(&path, &r);
                self.datasets.insert((path, seed), r.into());
            }
            Done::Forget(req, r) => {
                let subject = lethe_engine::preview::Request::Forget(req.clone())
                    .subject()
                    .to_path_buf();
                self.charge(&subject, &r);
                self.forget_inflight = false;
                self.forget_preview = Some((req, r.into()));
            }
            Done::Plugins(cat) => {
                let n = cat.entries.len();
                let refused = cat.refused.len();
                self.catalog = Loadable::Ready(cat);
                self.notify(
                    format!("Found {n} plugin methods/attacks; {refused} libraries refused"),
                    false,
                );
            }
            Done::Picked(target, Some(path)) => self.apply_pick(target, path),
            Done::Picked(_, None) => {}
            Done::Devices(devices, runtime) => {
                self.devices = devices;
                self.runtime = Some(*runtime);
                let d = &mut self.state.draft;
                if !self.devices.iter().any(|x| x.id == d.device) {
                    d.device = "cpu".into();
                }
                // Someone who never chose gets the GPU when there is one.
                if !d.device_chosen
                    && let Some(gpu) = self.devices.iter().find(|x| x.id.starts_with("cuda"))
                {
                    d.device = gpu.id.clone();
                }
            }
            Done::Artifact(path, r) => {
                self.charge(&path, &r);
                self.artifacts.insert(path, r.map(Arc::new).into());
            }
            Done::Scores(dir, r) => {
                self.charge(&dir, &r);
                self.scores.insert(dir, r.map(Arc::new).into());
            }
            Done::Samples(data, asked, r) => {
                self.charge(&data, &r);
                // Whatever came back, those requests are over: samples that could
                // not be drawn are not asked for again every frame.
                for i in &asked {
                    self.samples_pending.remove(&(data.clone(), *i));
                }
                let have = self.samples.entry(data.clone()).or_default();
                let error = match r {
                    Ok(list) => {
                        for (i, t) in list {
                            have.insert(i, t);
                        }
                        None
                    }
                    Err(e) => Some(e),
                };
                for i in asked {
                    if !have.contains_key(&i) {
                        self.samples_missing.insert((data.clone(), i));
                    }
                }
                if let Some(e) = error {
                    self.notify(e.message(), true);
                }
            }
            Done::Evaluation(run, r) => {
                let name = self.run_title(&run);
                match &r {
                    Ok(_) => self.notify(format!("Evaluation of the {name} finished"), false),
                    Err(_) => self.notify(format!("Evaluation of the {name} failed"), true),
                }
                self.evaluations.insert(run, r.map(Some).into());
            }
            Done::Verdict(run, key, r) => {
                // Only the answer for the evidence asked about last counts.
                if self.verdicts.get(&run).is_some_and(|(k, _)| *k == key) {
                    self.verdicts_updating.remove(&run);
                    self.verdicts.insert(run, (key, r.into()));
                }
            }
            Done::Opened(Ok(_)) => {}
            Done::Opened(Err(e)) => self.notify(e, true),
            Done::Report(run, r) => {
                match &r {
                    // The banner has the reasons; the notice names the file.
                    Ok(w) => {
                        self.notify(
                            format!(
                                "Report written: {} ({}){}; \"Open the report\" opens it",
                                w.path.file_name().unwrap_or_default().to_string_lossy(),
                                w.verdict.split(" — ").next().unwrap_or(&w.verdict),
                                if w.certificate.is_some() {
                                    ", signed"
                                } else {
                                    ""
                                }
                            ),
                            false,
                        );
                        if let Some(key) =
                            w.certificate.as_ref().and_then(|c| c.key_created.as_ref())
                        {
                            self.notify(
                                format!(
                                    "Made this project's signing key {} (Ed25519); keep it \
                                     private, it signs the deletion certificates made here",
                                    key.display()
                                ),
                                false,
                            );
                        }
                    }
                    Err(e) => {
                        let name = self.run_title(&run);
                        self.notify(format!("The report of the {name} failed: {e}"), true)
                    }
                }
                self.exports.insert(run, r.into());
            }
            Done::Verification(run, r) => {
                if let Some(v) = self.verifying.remove(&run) {
                    let name = self.run_title(&run);
                    match &r {
                        Ok(_) => self.notify(
                            format!("Per-sample verification of the {name} finished"),
                            false,
                        ),
                        Err(_) if v.cancel.load(std::sync::atomic::Ordering::SeqCst) => {
                            self.notify(
                                format!("Per-sample verification of the {name} stopped"),
                                false,
                            );
                            // The last finished one stays what is known.
                            self.verifications.remove(&run);
                            return;
                        }
                        Err(_) => self.notify(
                            format!("Per-sample verification of the {name} failed"),
                            true,
                        ),
                    }
                }
                self.verifications.insert(run, r.into());
            }
            Done::Estimate(key, r) => {
                self.estimates.insert(key, r.into());
            }
            Done::Audited(Err(e)) => self.notify(e, true),
            Done::Exported(Ok(path)) => self.notify(format!("Exported {}", path.display()), false),
            Done::Exported(Err(e)) => self.notify(e, true),
            Done::Study(dir, _) if !self.in_project(&dir) => {
                // Read for a project left since: not this one's.
                self.study_loading.remove(&dir);
            }
            Done::Study(dir, r) => {
                self.study_loading.remove(&dir);
                let again = self.study_live.get(&dir).is_some_and(|l| l.reload);
                self.study_results.insert(dir.clone(), r.into());
                if again {
                    self.load_study(&dir);
                }
            }
            Done::Audited(Ok(())) => {}
            Done::AttackReport(run, r) => {
                if let Err(e) = &r {
                    let name = self.run_title(&run);
                    self.notify(format!("Attack metrics of the {name}: {e}"), true);
                }
                self.attack_reports.insert(run, r.into());
            }
            Done::Panicked(what) => {
                self.forget_inflight = false;
                for dir in std::mem::take(&mut self.study_loading) {
                    self.study_results
                        .insert(dir, Loadable::Failed(format!("internal error: {what}")));
                }
                for e in self.estimates.values_mut() {
                    if matches!(e, Loadable::Loading) {
                        *e = Loadable::Failed(format!("internal error: {what}"));
                    }
                }
                for e in self.exports.values_mut() {
                    if matches!(e, Loadable::Loading) {
                        *e = Loadable::Failed(format!("internal error: {what}"));
                    }
                }
                for e in self.attack_reports.values_mut() {
                    if matches!(e, Loadable::Loading) {
                        *e = Loadable::Failed(format!("internal error: {what}"));
                    }
                }
                for e in self.evaluations.values_mut() {
                    if matches!(e, Loadable::Loading) {
                        *e = Loadable::Failed(format!("internal error: {what}"));
                    }
                }
                for e in self.verifications.values_mut() {
                    if matches!(e, Loadable::Loading) {
                        *e = Loadable::Failed(format!("internal error: {what}"));
                    }
                }
                self.notify(format!("internal error in a background task: {what}"), true);
            }
        }
    }

    fn apply_pick(&mut self, target: PickTarget, path: PathBuf) {
        let text = path.display().to_string();
        match target {
            PickTarget::ProjectFolder => self.commands.push(Command::OpenProject(path)),
            PickTarget::Checkpoint => self.commands.push(Command::AddCheckpoint(path)),
            PickTarget::DatasetFile | PickTarget::DatasetFolder => {
                self.commands.push(Command::AddDataset(path));
            }
            PickTarget::ForgetList => self.state.forget_draft.list_path = text,
            PickTarget::ForgetFolder => self.state.forget_draft.folder = text,
            PickTarget::Param { plugin, key, .. } => {
                let form = self.state.forms.entry(plugin).or_default();
                form.values.insert(key, crate::form::FormValue::Path(text));
            }
            PickTarget::SaveAs { bytes, .. } => match project::write_file(&path, &bytes) {
                Ok(()) => self.notify(format!("Saved {}", path.display()), false),
                Err(e) => self.notify(e.to_string(), true),
            },
        }
    }

    /// Applies the commands pushed this frame.
    pub fn apply_commands(&mut self) {
        let commands = std::mem::take(&mut self.commands);
        for c in commands {
            self.apply(c);
        }
    }

    fn apply(&mut self, c: Command) {
        match c {
            Command::RetryFile(path) => {
                if let Some(p) = self.project.as_mut()
                    && let Err(e) = p.clear_suspect(&path)
                {
                    self.notify(e.to_string(), true);
                }
                // Forget what the skipped reads left behind, so the views ask again.
                self.checkpoints.remove(&path);
                self.datasets.retain(|(p, _), _| p != &path);
                self.artifacts.remove(&path);
                self.scores.remove(&path);
                self.samples_missing.retain(|(p, _)| p != &path);
                if self.forget_preview.as_ref().is_some_and(|(r, l)| {
                    matches!(l, Loadable::Failed(_))
                        && (r.data == path || r.folder == path || r.list_path == path)
                }) {
                    self.forget_preview = None;
                }
            }
            Command::OpenProject(dir) => {
                self.leave_project(Some(&dir));
                self.open_project(&dir);
                self.state.view = View::Home;
            }
            Command::OpenDemo(dir) => {
                let demo = project::DemoFiles::find(&project::resources_dir())
                    .and_then(|demo| project::create_demo_project(&dir, &demo).map(|p| (p, demo)));
                match demo {
                    Ok((p, demo)) => {
                        self.leave_project(Some(&dir));
                        self.project = Some(p);
                        self.project_error = None;
                        self.state.remember_project(dir);
                        self.refresh_studies();
                        // A deletion ready to run, the one `lethe demo` runs: the
                        // leaky MLP (attacks can see its training data, so the
                        // verdict can tell a deletion that works from one that
                        // does not), its data and forget list; the method stays
                        // the user's choice.
                        let d = &mut self.state.draft;
                        d.checkpoint = Some(demo.leaky.clone());
                        d.data = Some(demo.leaky_data.clone());
                        d.forget = Some(demo.leaky_forget.clone());
                        self.inspect_project_files();
                        self.state.view = View::Deletion;
                        self.notify("Opened the demo project", false);
                    }
                    Err(e) => {
                        self.project_error = Some(e.to_string());
                        self.notify(e.to_string(), true);
                    }
                }
            }
            Command::CloseProject => {
                self.leave_project(None);
                self.project = None;
                self.state.project_dir = None;
                self.state.view = View::Home;
            }
            Command::Show(view) => self.state.view = view,
            Command::Pick(target) => {
                let start = self.project.as_ref().map(|p| p.dir.clone());
                self.tasks.pick(target, start);
            }
            Command::AddCheckpoint(path) => self.add_file(path, true),
            Command::AddDataset(path) => self.add_file(path, false),
            Command::RemoveCheckpoint(path) => {
                if let Some(p) = self.project.as_mut() {
                    p.file.checkpoints.retain(|c| c != &path);
                    self.save_project();
                }
                if self.state.draft.checkpoint.as_ref() == Some(&path) {
                    self.state.draft.checkpoint = None;
                }
            }
            Command::RemoveDataset(path) => {
                if let Some(p) = self.project.as_mut() {
                    p.file.datasets.retain(|c| c != &path);
                    self.save_project();
                }
                if self.state.draft.data.as_ref() == Some(&path) {
                    self.state.draft.data = None;
                }
            }
            Command::RemoveForgetSet(path) => {
                if let Some(p) = self.project.as_mut() {
                    p.file.forget_sets.retain(|f| f.path != path);
                    self.save_project();
                }
                if self.state.draft.forget.as_ref() == Some(&path) {
                    self.state.draft.forget = None;
                }
            }
            Command::SaveForgetSet(name) => self.save_forget_set(&name),
            Command::EditRequest(id) => {
                let Some(spec) = self
                    .project
                    .as_ref()
                    .and_then(|p| p.run(&id))
                    .map(|r| r.spec.clone())
                else {
                    return;
                };
                // The form takes the run's settings where the installed plugin
                // still has them; the request's Seed is the run's.
                if let Some(entry) = self.catalog.ready().and_then(|c| c.get(&spec.plugin_id)) {
                    let form = crate::form::FormValues::from_json(&entry.info.schema, &spec.params);
                    self.state.forms.insert(spec.plugin_id.clone(), form);
                }
                let d = &mut self.state.draft;
                d.checkpoint = Some(spec.checkpoint);
                d.data = Some(spec.data);
                d.forget = Some(spec.forget);
                d.method = Some(spec.plugin_id);
                d.device = spec.device;
                d.device_chosen = true;
                d.seed = spec.seed;
                self.state.view = View::Deletion;
            }
            Command::Queue(spec) => self.queue(spec, true),
            Command::QueueQuietly(spec) => self.queue(spec, false),
            Command::Cancel(id) => {
                if let Some(p) = self.project.as_mut() {
                    self.runner.cancel(p, &id, project::now());
                }
            }
            Command::RescanPlugins => {
                self.catalog = Loadable::Loading;
                // Asked for by the user: quarantined libraries get another try.
                self.tasks
                    .scan_plugins(self.scan_opts(), self.extra_plugin_dirs.clone(), true);
            }
            Command::Export { run, name, bytes } => {
                let Some(p) = &self.project else { return };
                match crate::artifacts::write_export(&p.run_dir(&run), &name, &bytes) {
                    Ok(path) => self.notify(format!("Exported {}", path.display()), false),
                    Err(e) => self.notify(e.to_string(), true),
                }
            }
            Command::Notify(text, error) => self.notify(text, error),
            Command::StartStudy(file, text, dir, executor) => {
                match self
                    .studies
                    .start(&file, &text, &dir, &executor, project::now())
                {
                    Ok(()) => {
                        self.study_live.insert(dir.clone(), Default::default());
                        self.refresh_studies();
                        self.state.view = View::Study(dir.clone());
                        self.notify(format!("Study started: {}", dir.display()), false);
                    }
                    Err(e) => self.notify(e, true),
                }
            }
            Command::CancelStudy(dir) => {
                // It ends (and is reported) once its process has: a study on
                // an executor first stops its runs.
                if !self.studies.is_stopping(&dir) && self.studies.cancel(&dir) {
                    let name = crate::panels::file_name(&dir);
                    let slurm = matches!(
                        self.studies.executor(&dir),
                        Some(lethe_engine::exec::ExecutorConfig::Slurm(_))
                    );
                    self.notify(
                        if slurm {
                            format!("Stopping study {name}: cancelling its cluster tasks")
                        } else {
                            format!("Stopping study {name}")
                        },
                        false,
                    );
                }
            }
        }
    }

    fn queue(&mut self, spec: JobSpec, show: bool) {
        let Some(p) = self.project.as_mut() else {
            self.notify("Open a project first", true);
            return;
        };
        match self.runner.queue(p, spec, project::now()) {
            Ok(id) => {
                let _ = self.runner.poll(p, project::now());
                if show {
                    self.state.view = View::Run(id);
                }
            }
            Err(e) => self.notify(format!("cannot queue the job: {e}"), true),
        }
    }

    fn save_project(&mut self) {
        let result = self.project.as_ref().map(Project::save);
        if let Some(Err(e)) = result {
            self.notify(e.to_string(), true);
        }
    }

    fn add_file(&mut self, path: PathBuf, checkpoint: bool) {
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        if !path.exists() {
            self.notify(format!("{}: no such file or folder", path.display()), true);
            return;
        }
        let Some(p) = self.project.as_mut() else {
            self.notify("Open a project first", true);
            return;
        };
        let list = if checkpoint {
            &mut p.file.checkpoints
        } else {
            &mut p.file.datasets
        };
        Project::add_unique(list, path.clone());
        self.save_project();
        if checkpoint {
            self.ensure_checkpoint(&path);
            self.state.draft.checkpoint = Some(path);
            self.inputs.checkpoint.clear();
        } else {
            self.ensure_dataset(&path, self.state.draft.seed);
            if self.state.draft.data.as_ref() != Some(&path) {
                self.state.draft.forget = None;
            }
            self.state.draft.data = Some(path);
            self.inputs.dataset.clear();
        }
    }

    fn save_forget_set(&mut self, name: &str) {
        let Some((req, Loadable::Ready(preview))) = self.forget_preview.clone() else {
            self.notify("Nothing to save: the preview is not ready", true);
            return;
        };
        if preview.indices.is_empty() {
            self.notify("The forget set is empty", true);
            return;
        }
        let Some(p) = self.project.as_mut() else {
            return;
        };
        match crate::tasks::write_forget_list(&p.forget_dir(), name, &req.data, &preview) {
            Ok(path) => {
                p.add_forget_set(ForgetSetEntry {
                    name: name.to_string(),
                    path: path.clone(),
                    data: req.data.clone(),
                    origin: preview.origin.clone(),
                    count: preview.indices.len(),
                    whole_classes: Some(preview.whole_classes),
                });
                self.save_project();
                self.state.draft.forget = Some(path.clone());
                self.state.draft.forget_form_open = false;
                self.close_forget_form = true;
                self.state.forget_draft.name.clear();
                self.state.forget_draft.accept_unmatched = false;
                self.notify(format!("Saved forget set {}", path.display()), false);
            }
            Err(e) => self.notify(e.to_string(), true),
        }
    }

    /// Starts closing without blocking the window: studies and jobs are told to
    /// stop, evaluations are abandoned; audit records, reports and exports that
    /// were started go on. [`LetheApp::ready_to_close`] says when all is done.
    pub fn begin_close(&mut self) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(std::time::Instant::now());
        self.studies.stop_all();
        if let Some(p) = self.project.as_mut() {
            let changed = self.runner.begin_shutdown(p);
            self.audit_ended(&changed);
        }
        self.tasks.cancel_abortable();
    }

    /// What closing still waits for, in words (empty: nothing).
    pub fn finishing(&self) -> Vec<String> {
        let mut left: Vec<String> = Vec::new();
        if let Some(p) = &self.project {
            for r in p.runs.iter().filter(|r| !r.status.is_final()) {
                left.push(format!("stopping the job {}", r.spec.plugin_name));
            }
        }
        for dir in self.studies.running() {
            let name = crate::panels::file_name(&dir);
            left.push(
                if matches!(
                    self.studies.executor(&dir),
                    Some(lethe_engine::exec::ExecutorConfig::Slurm(_))
                ) {
                    format!("stopping the study {name} (cancelling its cluster tasks)")
                } else {
                    format!("stopping the study {name}")
                },
            );
        }
        left.extend(self.tasks.unfinished().into_iter().map(String::from));
        left
    }

    /// Whether every job and study has stopped and every started write has
    /// finished.
    pub fn ready_to_close(&self) -> bool {
        !self.runner.busy() && !self.studies.busy() && self.tasks.unfinished().is_empty()
    }

    /// Stops every worker and study, records how their jobs ended and waits for
    /// every background task (audit records, exports, inspections) to end, so
    /// nothing is lost and no thread is inside libtorch when the process exits.
    /// Blocking and idempotent: called on exit and when the app is dropped.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        self.studies.shutdown();
        self.stop_project_jobs();
        self.tasks.shutdown();
        // Results that arrived while waiting (an audit record's failure) are
        // not shown any more; they are applied so the state is complete.
        for done in self.tasks.drain() {
            self.apply_done(done);
        }
    }

    /// Draws the whole window.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        self.update();
        crate::panels::top_bar(ui, self);
        crate::panels::status_bar(ui, self);
        if self.project.is_some() {
            crate::panels::sidebar(ui, self);
        }
        egui::CentralPanel::default().show(ui, |ui| {
            crate::panels::central(ui, self);
        });
        self.apply_commands();
        self.finishing_notice(ui.ctx());
        // Progress and ETA move with time, not only with events.
        let running = self
            .project
            .as_ref()
            .is_some_and(|p| p.runs.iter().any(|r| !r.status.is_final()));
        if running || self.tasks.busy() || self.studies.busy() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    /// While closing takes more than a moment, says what it waits for.
    fn finishing_notice(&self, ctx: &egui::Context) {
        let Some(since) = self.closing else { return };
        if since.elapsed() < crate::tasks::FINISHING_NOTICE_AFTER {
            ctx.request_repaint_after(crate::tasks::FINISHING_NOTICE_AFTER);
            return;
        }
        let left = self.finishing();
        if left.is_empty() {
            return;
        }
        egui::Modal::new(egui::Id::unique("lethe-finishing")).show(ctx, |ui| {
            ui.heading("Finishing…");
            ui.label("Lethe closes as soon as these are done, so that no record is lost:");
            for what in &left {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(what);
                });
            }
        });
        ctx.request_repaint_after(std::time::Duration::from_millis(100));
    }
}

impl Drop for LetheApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The eframe wrapper: persistence and the frame loop.
pub struct EframeApp {
    /// The app.
    pub app: LetheApp,
    /// The app has finished closing; the next close request goes through.
    close_now: bool,
}

impl EframeApp {
    /// Restores the state and starts the app.
    pub fn new(cc: &eframe::CreationContext<'_>) -> anyhow::Result<Self> {
        let state: AppState = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        let ctx = cc.egui_ctx.clone();
        let waker: Waker = Arc::new(move || ctx.request_repaint());
        Ok(EframeApp {
            app: LetheApp::new(state, Config::standard(waker)?),
            close_now: false,
        })
    }
}

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        // Closing waits for stopping jobs and started writes (audit records,
        // reports, exports): the window stays, saying what it waits for.
        if ctx.input(|i| i.viewport().close_requested()) && !self.close_now {
            self.app.begin_close();
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
        }
        self.app.draw(ui);
        if self.app.closing.is_some() && !self.close_now && self.app.ready_to_close() {
            self.close_now = true;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.app.state);
    }

    fn on_exit(&mut self) {
        // Also reached without a close request (the event loop ending); this
        // waits for whatever is left.
        self.app.shutdown();
    }
}

/// Opens the main window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Lethe")
            .with_inner_size([1280.0, 820.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Lethe",
        options,
        Box::new(|cc| {
            let app =
                EframeApp::new(cc).map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    e.to_string().into()
                })?;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the Lethe window: {e}"))
}
