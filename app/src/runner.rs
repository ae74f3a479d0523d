//! Runs queued jobs in worker processes. Worker events arrive on each worker's
//! supervisor thread; they are forwarded into one channel and folded into the
//! job records on the UI thread by [`Runner::poll`], so the GUI state only ever
//! changes in one place. At most one job runs per device; the rest wait in the
//! queue in the order they were asked for.

use crate::jobs::{JobRecord, JobSpec, JobStatus};
use crate::project::Project;
use lethe_engine::worker::{FromWorker, Job, WorkerHandle, WorkerOptions, spawn_worker};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

/// Something to call when an event arrives (the GUI passes `request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The job runner.
pub struct Runner {
    opts: WorkerOptions,
    tx: Sender<(String, FromWorker)>,
    rx: Receiver<(String, FromWorker)>,
    running: HashMap<String, WorkerHandle>,
    /// When each running job's record was last written (unix seconds).
    saved_at: HashMap<String, f64>,
    waker: Waker,
    /// Set when the window is closing: queued jobs no longer start.
    stopping: bool,
}

/// How often a running job's record is written, so that curves and log survive
/// even if the app itself dies mid-run.
const SAVE_EVERY_S: f64 = 5.0;

impl Runner {
    /// A runner starting `opts.exe worker` for each job.
    pub fn new(opts: WorkerOptions, waker: Waker) -> Self {
        let (tx, rx) = mpsc::channel();
        Runner {
            opts,
            tx,
            rx,
            running: HashMap::new(),
            saved_at: HashMap::new(),
            waker,
            stopping: false,
        }
    }

    /// Whether any worker is alive.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Adds a queued job to the project and saves its record; returns its id.
    pub fn queue(
        &mut self,
        project: &mut Project,
        spec: JobSpec,
        now: f64,
    ) -> anyhow::Result<String> {
        let id = project.new_run_id(&spec.plugin_id, now);
        let record = JobRecord::new(id.clone(), spec, now);
        record.save(&project.run_dir(&id))?;
        project.upsert_run(record);
        (self.waker)();
        Ok(id)
    }

    /// Asks job `id` to stop: a queued job is dropped at once, a running one is
    /// told to cancel (and killed after the grace period if it does not).
    pub fn cancel(&mut self, project: &mut Project, id: &str, now: f64) {
        let dir = project.run_dir(id);
        let Some(record) = project.runs.iter_mut().find(|r| r.id == id) else {
            return;
        };
        match record.status {
            JobStatus::Queued => {
                record.cancel_queued(now);
                let _ = record.save(&dir);
            }
            JobStatus::Running => {
                if let Some(handle) = self.running.get(id) {
                    handle.cancel();
                }
                record.status = JobStatus::Cancelling;
            }
            _ => {}
        }
    }

    /// Folds arrived events into the records, collects finished workers and starts
    /// queued jobs whose device is free. Returns the ids whose records changed.
    pub fn poll(&mut self, project: &mut Project, now: f64) -> Vec<String> {
        let mut changed = Vec::new();
        while let Ok((id, event)) = self.rx.try_recv() {
            if let Some(r) = project.runs.iter_mut().find(|r| r.id == id) {
                // The status changes only when the worker is gone (finish()), from
                // its report; final frames never reach the event callback anyway.
                let status = r.status.clone();
                r.apply(event, now);
                r.status = status;
                if !changed.contains(&id) {
                    changed.push(id);
                }
            }
        }
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let Some(handle) = self.running.remove(&id) else {
                continue;
            };
            // Finished: wait() only joins the supervisor thread.
            let report = handle.wait();
            // Events sent just before the end are already in the channel.
            while let Ok((eid, event)) = self.rx.try_recv() {
                if let Some(r) = project.runs.iter_mut().find(|r| r.id == eid) {
                    r.apply(event, now);
                }
            }
            let dir = project.run_dir(&id);
            if let Some(r) = project.runs.iter_mut().find(|r| r.id == id) {
                r.finish(&report, now);
                let _ = r.save(&dir);
            }
            changed.push(id);
        }
        changed.extend(self.start_queued(project, now));
        for id in &changed {
            if !self.running.contains_key(id) {
                self.saved_at.remove(id);
                continue;
            }
            let due = self
                .saved_at
                .get(id)
                .is_none_or(|t| now - t >= SAVE_EVERY_S);
            if due && let Some(r) = project.runs.iter().find(|r| &r.id == id) {
                let _ = r.save(&project.run_dir(id));
                self.saved_at.insert(id.clone(), now);
            }
        }
        changed
    }

    fn start_queued(&mut self, project: &mut Project, now: f64) -> Vec<String> {
        let mut started = Vec::new();
        if self.stopping {
            return started;
        }
        let mut busy: Vec<String> = project
            .runs
            .iter()
            .filter(|r| self.running.contains_key(&r.id))
            .map(|r| r.spec.device.clone())
            .collect();
        let mut queued: Vec<usize> = project
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == JobStatus::Queued)
            .map(|(i, _)| i)
            .collect();
        queued.sort_by(|a, b| {
            project.runs[*a]
                .created
                .total_cmp(&project.runs[*b].created)
        });
        for i in queued {
            let device = project.runs[i].spec.device.clone();
            if busy.contains(&device) {
                continue;
            }
            let id = project.runs[i].id.clone();
            let dir = project.run_dir(&id);
            let spec = project.runs[i].spec.clone();
            let job = Job::Unlearn {
                library: spec.library.clone(),
                id: spec.plugin_id.clone(),
                params: spec.params.clone(),
                checkpoint: spec.checkpoint.clone(),
                data: spec.data.clone(),
                forget: spec.forget.clone(),
                train_rows: None,
                out_dir: dir.join("output"),
                seed: spec.seed,
                device: spec.device.clone(),
            };
            let tx = self.tx.clone();
            let waker = Arc::clone(&self.waker);
            let event_id = id.clone();
            let record = &mut project.runs[i];
            match spawn_worker(&self.opts, job, move |event| {
                // The receiver lives as long as the app; a send error means it is
                // shutting down, and the worker is cancelled with its handle.
                let _ = tx.send((event_id.clone(), event));
                waker();
            }) {
                Ok(handle) => {
                    record.mark_started(now);
                    self.running.insert(id.clone(), handle);
                    busy.push(device);
                }
                Err(e) => {
                    record.mark_started(now);
                    record.finished = Some(now);
                    record.status = JobStatus::Crashed {
                        message: format!(
                            "cannot start the worker process {}: {e}",
                            self.opts.exe.display()
                        ),
                    };
                }
            }
            let _ = record.save(&dir);
            started.push(id);
        }
        started
    }

    /// Starts stopping without waiting: queued jobs are cancelled (and no longer
    /// start), running ones are told to cancel. [`Runner::poll`] then collects
    /// them as they end. Returns the ids whose records changed.
    pub fn begin_shutdown(&mut self, project: &mut Project) -> Vec<String> {
        self.stopping = true;
        let now = crate::project::now();
        let (queued, running): (Vec<_>, Vec<_>) = project
            .runs
            .iter()
            .filter(|r| matches!(r.status, JobStatus::Queued | JobStatus::Running))
            .partition(|r| r.status == JobStatus::Queued);
        let queued: Vec<String> = queued.into_iter().map(|r| r.id.clone()).collect();
        let running: Vec<String> = running.into_iter().map(|r| r.id.clone()).collect();
        for id in queued.iter().chain(&running) {
            self.cancel(project, id, now);
        }
        // Cancelled queued jobs have ended; running ones end when poll sees them go.
        queued
    }

    /// Cancels every running job and waits (up to the grace period and a bit)
    /// for the workers to stop, saving their records: used on exit and when
    /// another project opens, so workers never outlive the window and their
    /// runs are not left "running". Returns the ids whose records changed, so
    /// the caller can audit the jobs that ended. Afterwards jobs start again.
    pub fn shutdown(&mut self, project: &mut Project) -> Vec<String> {
        let mut changed = self.begin_shutdown(project);
        let until = std::time::Instant::now() + self.opts.grace + std::time::Duration::from_secs(2);
        while self.busy() && std::time::Instant::now() < until {
            for id in self.poll(project, crate::project::now()) {
                if !changed.contains(&id) {
                    changed.push(id);
                }
            }
            if self.busy() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.stopping = false;
        changed
    }
}
