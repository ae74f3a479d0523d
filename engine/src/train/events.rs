//! Progress reporting from the loops to whoever drives them (CLI, worker, tests).

use serde::Serialize;

/// One progress report.
#[derive(Debug, Clone, Serialize)]
pub struct TrainEvent {
    /// 1-based epoch.
    pub epoch: usize,
    /// Total epochs of the run.
    pub epochs: usize,
    /// 1-based step within the epoch.
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Mean loss over the steps of this epoch so far.
    pub loss: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Training samples per second over this epoch so far.
    pub samples_per_sec: f64,
    /// Extra named values (e.g. accuracy at the end of an epoch).
    pub metrics: Vec<(String, f64)>,
}

/// What the callback wants next: the cancellation path of every loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep training.
    Continue,
    /// Stop after this step; the summary says the run was stopped.
    Stop,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Epochs fully or partly run.
    pub epochs_run: usize,
    /// Mean loss of the last epoch.
    pub final_loss: f64,
    /// Whether the callback asked to stop early.
    pub stopped: bool,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Samples per second over the whole run.
    pub samples_per_sec: f64,
}

/// Accumulates one epoch's loss and throughput.
pub(crate) struct EpochMeter {
    start: std::time::Instant,
    loss_sum: f64,
    steps: usize,
    samples: usize,
}

impl EpochMeter {
    pub(crate) fn new() -> Self {
        EpochMeter {
            start: std::time::Instant::now(),
            loss_sum: 0.0,
            steps: 0,
            samples: 0,
        }
    }

    pub(crate) fn add(&mut self, loss: f64, samples: usize) {
        self.loss_sum += loss;
        self.steps += 1;
        self.samples += samples;
    }

    pub(crate) fn mean_loss(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.loss_sum / self.steps as f64
        }
    }

    pub(crate) fn samples(&self) -> usize {
        self.samples
    }

    pub(crate) fn rate(&self) -> f64 {
        let s = self.start.elapsed().as_secs_f64();
        if s > 0.0 {
            self.samples as f64 / s
        } else {
            0.0
        }
    }
}
