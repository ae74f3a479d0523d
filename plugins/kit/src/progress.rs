//! Progress between the epoch-end reports: a throttled in-epoch reporter
//! ([`EpochProgress`]), a throttled reporter for a phase's own loop ([`Ticker`])
//! and phase announcements ([`phase`], [`EpochProgress::phase`]).
//!
//! The host writes a log line whenever the progress message changes and derives
//! its ETA from the fraction, so on a busy machine a method that reports only at
//! epoch ends looks hung for minutes. Step reports are throttled to one per
//! [`REPORT_EVERY`] so that a fast run does not flood the log, and fractions never
//! go down within a run because the ETA assumes they do not.
//!
//! `LETHE_PROGRESS_INTERVAL_MS` overrides the interval (0: report every step), so
//! that a test can see step reports on a run that takes a second.

use lethe_plugin_api::sdk::{HostContext, PluginError};
use std::time::{Duration, Instant};

/// The longest a reporter stays silent while it is being stepped.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The environment variable that overrides [`REPORT_EVERY`], in milliseconds.
pub const INTERVAL_ENV: &str = "LETHE_PROGRESS_INTERVAL_MS";

/// A fraction the host reads as "unknown": it keeps the fraction (and ETA) it
/// had and logs the message. For loops that cannot tell where the run stands.
pub const UNKNOWN: f64 = -1.0;

/// [`REPORT_EVERY`], or the milliseconds in [`INTERVAL_ENV`] when it parses.
pub fn report_interval() -> Duration {
    interval_from(std::env::var(INTERVAL_ENV).ok().as_deref())
}

/// The interval a value of [`INTERVAL_ENV`] asks for; [`REPORT_EVERY`] when it
/// is absent or not a whole number of milliseconds.
fn interval_from(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(REPORT_EVERY, Duration::from_millis)
}

/// Reports `message` at `fraction`, then returns `Err(Cancelled)` if the host
/// asked to stop: a phase is announced where work is about to start, the right
/// place to stop instead.
pub fn phase(ctx: &HostContext, fraction: f64, message: &str) -> Result<(), PluginError> {
    ctx.progress(fraction, message);
    ctx.check_cancelled()
}

/// The plural of a unit's name ("step", "batch").
fn plural(unit: &str) -> String {
    if unit.ends_with("ch") || unit.ends_with('s') || unit.ends_with('x') {
        format!("{unit}es")
    } else {
        format!("{unit}s")
    }
}

/// Lets a report through once `every` has passed since the last one. Time is
/// passed in, so the rule can be tested without waiting.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    every: Duration,
    last: Instant,
}

impl Throttle {
    /// A throttle whose first report is due `every` after `now`.
    pub fn new(every: Duration, now: Instant) -> Self {
        Throttle { every, last: now }
    }

    /// Whether a report is due at `now`; when it is, the next one is due
    /// `every` after `now`.
    pub fn ready(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) >= self.every {
            self.last = now;
            true
        } else {
            false
        }
    }

    /// Something else was just reported: the next report is due `every` after
    /// `now`.
    pub fn reset(&mut self, now: Instant) {
        self.last = now;
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Fraction done (negative: unknown).
    pub fraction: f64,
    /// The status line.
    pub message: String,
}

impl Report {
    fn send(&self, ctx: &HostContext) {
        ctx.progress(self.fraction, &self.message);
    }
}

/// Something a batch loop reports through after each batch.
pub trait Tick {
    /// One more step done; reports when its throttle lets it.
    fn tick(&mut self, ctx: &HostContext);
}

/// Where a run of `epochs` epochs of `steps` optimiser steps each stands, and
/// its throttled reports: `epoch e/E · step s/S` at fraction
/// `(completed epochs × S + s) / (E × S)`.
#[derive(Debug, Clone)]
pub struct EpochProgress {
    epochs: usize,
    steps: usize,
    /// Epochs completed.
    epoch: usize,
    /// Steps done in the current epoch.
    step: usize,
    /// The highest fraction reported: nothing below it is sent again.
    floor: f64,
    throttle: Throttle,
}

impl EpochProgress {
    /// A run of `epochs` epochs of `steps_per_epoch` steps, reporting at most
    /// every [`report_interval`].
    pub fn new(epochs: usize, steps_per_epoch: usize) -> Self {
        Self::starting_at(epochs, steps_per_epoch, report_interval(), Instant::now())
    }

    /// [`EpochProgress::new`] with an explicit interval and start time.
    pub fn starting_at(
        epochs: usize,
        steps_per_epoch: usize,
        every: Duration,
        now: Instant,
    ) -> Self {
        EpochProgress {
            epochs,
            steps: steps_per_epoch,
            epoch: 0,
            step: 0,
            floor: 0.0,
            throttle: Throttle::new(every, now),
        }
    }

    /// Fraction of the run done. A step count may overrun its estimate (a
    /// cycling stream, a shorter last batch): it is capped at the epoch's end so
    /// the next epoch-end report is never below it.
    pub fn fraction(&self) -> f64 {
        if self.epochs == 0 {
            return self.floor;
        }
        let f = if self.steps == 0 {
            self.epoch as f64 / self.epochs as f64
        } else {
            let done = self.epoch * self.steps + self.step.min(self.steps);
            done as f64 / (self.epochs * self.steps) as f64
        };
        f.clamp(0.0, 1.0).max(self.floor)
    }

    /// The current epoch (1-based, at most `E`) and step, as reported.
    fn message(&self) -> String {
        let e = (self.epoch + 1).min(self.epochs.max(1));
        let s = self.step.min(self.steps);
        format!("epoch {e}/{} · step {s}/{}", self.epochs, self.steps)
    }

    fn mark(&mut self, fraction: f64, now: Instant) {
        self.floor = self.floor.max(fraction);
        self.throttle.reset(now);
    }

    /// Counts one step done at `now`; the report to send when one is due.
    pub fn step_at(&mut self, now: Instant) -> Option<Report> {
        self.step += 1;
        if !self.throttle.ready(now) {
            return None;
        }
        let fraction = self.fraction();
        self.floor = fraction;
        Some(Report {
            fraction,
            message: self.message(),
        })
    }

    /// Counts one step done, reporting it when the interval has passed.
    pub fn step(&mut self, ctx: &HostContext) {
        if let Some(r) = self.step_at(Instant::now()) {
            r.send(ctx);
        }
    }

    /// Moves to the next epoch at `now` (its end was just reported).
    pub fn next_epoch_at(&mut self, now: Instant) {
        self.epoch = (self.epoch + 1).min(self.epochs);
        self.step = 0;
        let f = self.fraction();
        self.mark(f, now);
    }

    /// Reports the end of the current epoch with `metrics`
    /// ([`crate::epoch::report_epoch`]) and moves to the next.
    pub fn end_epoch(&mut self, ctx: &HostContext, metrics: serde_json::Value) {
        crate::epoch::report_epoch(ctx, self.epoch + 1, self.epochs, metrics);
        self.next_epoch_at(Instant::now());
    }

    /// Announces a phase at the current fraction ([`phase`]).
    pub fn phase(&mut self, ctx: &HostContext, message: &str) -> Result<(), PluginError> {
        let f = self.fraction();
        self.mark(f, Instant::now());
        phase(ctx, f, message)
    }

    /// Reports `message` with `metrics` at the current fraction (a phase's
    /// result), restarting the interval like any other report.
    pub fn report_metrics(
        &mut self,
        ctx: &HostContext,
        message: &str,
        metrics: &serde_json::Value,
    ) {
        let f = self.fraction();
        self.mark(f, Instant::now());
        ctx.progress_metrics(f, message, metrics);
    }

    /// Announces a phase of `total` `unit`s (`None`: unknown) as `label (N
    /// units)`, and returns a ticker for its loop at the current fraction.
    pub fn phase_ticker(
        &mut self,
        ctx: &HostContext,
        label: &str,
        unit: &'static str,
        total: Option<usize>,
    ) -> Result<Ticker, PluginError> {
        let message = match total {
            Some(n) => format!("{label} ({n} {})", plural(unit)),
            None => label.to_string(),
        };
        self.phase(ctx, &message)?;
        Ok(Ticker::new(label, unit, total, self.fraction()))
    }
}

impl Tick for EpochProgress {
    fn tick(&mut self, ctx: &HostContext) {
        self.step(ctx);
    }
}

/// Throttled reports from a loop that is not an epoch of training (a phase, an
/// evaluation): `label · <unit> i/N` at a fixed fraction.
#[derive(Debug, Clone)]
pub struct Ticker {
    label: String,
    unit: &'static str,
    total: Option<usize>,
    done: usize,
    fraction: f64,
    throttle: Throttle,
}

impl Ticker {
    /// A loop of `total` `unit`s (`None`: unknown) reported as `label`, at
    /// `fraction` (or [`UNKNOWN`]), at most every [`report_interval`].
    pub fn new(label: &str, unit: &'static str, total: Option<usize>, fraction: f64) -> Self {
        Self::starting_at(
            label,
            unit,
            total,
            fraction,
            report_interval(),
            Instant::now(),
        )
    }

    /// [`Ticker::new`] with an explicit interval and start time.
    pub fn starting_at(
        label: &str,
        unit: &'static str,
        total: Option<usize>,
        fraction: f64,
        every: Duration,
        now: Instant,
    ) -> Self {
        Ticker {
            label: label.to_string(),
            unit,
            total,
            done: 0,
            fraction,
            throttle: Throttle::new(every, now),
        }
    }

    /// Counts one unit done, reporting it when the interval has passed.
    pub fn tick(&mut self, ctx: &HostContext) {
        if let Some(r) = self.tick_at(Instant::now()) {
            r.send(ctx);
        }
    }

    /// Counts one unit done at `now`; the report to send when one is due.
    pub fn tick_at(&mut self, now: Instant) -> Option<Report> {
        self.done += 1;
        if !self.throttle.ready(now) {
            return None;
        }
        let message = match self.total {
            Some(n) => format!("{} · {} {}/{n}", self.label, self.unit, self.done.min(n)),
            None => format!("{} · {} {}", self.label, self.unit, self.done),
        };
        Some(Report {
            fraction: self.fraction,
            message,
        })
    }
}

impl Tick for Ticker {
    fn tick(&mut self, ctx: &HostContext) {
        Ticker::tick(self, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn throttle_lets_a_report_through_once_the_interval_has_passed() {
        let t0 = Instant::now();
        let mut t = Throttle::new(EVERY, t0);
        assert!(!t.ready(t0));
        assert!(!t.ready(at(t0, 4_999)));
        assert!(t.ready(at(t0, 5_000)));
        // The next one counts from the report just let through.
        assert!(!t.ready(at(t0, 9_999)));
        assert!(t.ready(at(t0, 10_000)));
        t.reset(at(t0, 12_000));
        assert!(!t.ready(at(t0, 16_000)));
        assert!(t.ready(at(t0, 17_000)));
    }

    #[test]
    fn steps_report_after_the_interval_not_before() {
        let t0 = Instant::now();
        let mut p = EpochProgress::starting_at(2, 10, EVERY, t0);
        for ms in [1_000, 2_000, 3_000, 4_999] {
            assert_eq!(p.step_at(at(t0, ms)), None, "at {ms} ms");
        }
        let r = p.step_at(at(t0, 5_000)).expect("due after 5 s");
        assert_eq!(r.message, "epoch 1/2 · step 5/10");
        assert_eq!(r.fraction, 5.0 / 20.0);
        assert_eq!(p.step_at(at(t0, 6_000)), None);
        assert_eq!(p.step_at(at(t0, 9_999)), None);
        let r = p.step_at(at(t0, 10_000)).expect("due 5 s after the last");
        assert_eq!(r.message, "epoch 1/2 · step 8/10");
    }

    #[test]
    fn fraction_is_steps_over_the_run_and_never_goes_down() {
        let t0 = Instant::now();
        let (epochs, steps) = (3usize, 4usize);
        // Interval 0: every step reports.
        let mut p = EpochProgress::starting_at(epochs, steps, Duration::ZERO, t0);
        let mut last = 0.0;
        for e in 0..epochs {
            // One step more than estimated: the overrun must not pass the epoch end.
            for s in 1..=steps + 1 {
                let r = p.step_at(t0).expect("interval 0 reports every step");
                let want = (e * steps + s.min(steps)) as f64 / (epochs * steps) as f64;
                assert_eq!(r.fraction, want, "epoch {e} step {s}");
                assert!(r.fraction >= last);
                last = r.fraction;
            }
            p.next_epoch_at(t0);
            assert_eq!(p.fraction(), (e + 1) as f64 / epochs as f64);
        }
        assert_eq!(p.fraction(), 1.0);
        assert_eq!(p.message(), "epoch 3/3 · step 0/4");
    }

    #[test]
    fn an_epoch_end_restarts_the_interval() {
        let t0 = Instant::now();
        let mut p = EpochProgress::starting_at(2, 100, EVERY, t0);
        assert_eq!(p.step_at(at(t0, 4_000)), None);
        p.next_epoch_at(at(t0, 4_500));
        assert_eq!(p.step_at(at(t0, 9_000)), None, "4.5 s after the epoch end");
        let r = p.step_at(at(t0, 9_500)).expect("5 s after the epoch end");
        assert_eq!(r.message, "epoch 2/2 · step 2/100");
        assert_eq!(r.fraction, 102.0 / 200.0);
    }

    #[test]
    fn degenerate_runs_stay_within_zero_and_one() {
        let t0 = Instant::now();
        let mut none = EpochProgress::starting_at(0, 5, Duration::ZERO, t0);
        assert_eq!(none.step_at(t0).map(|r| r.fraction), Some(0.0));
        let mut empty = EpochProgress::starting_at(2, 0, Duration::ZERO, t0);
        assert_eq!(empty.step_at(t0).map(|r| r.fraction), Some(0.0));
        empty.next_epoch_at(t0);
        assert_eq!(empty.fraction(), 0.5);
        empty.next_epoch_at(t0);
        empty.next_epoch_at(t0);
        assert_eq!(empty.fraction(), 1.0);
    }

    #[test]
    fn ticker_counts_units_at_a_fixed_fraction() {
        let t0 = Instant::now();
        let mut t =
            Ticker::starting_at("pre-training the attacker", "step", Some(3), 0.0, EVERY, t0);
        assert_eq!(t.tick_at(at(t0, 100)), None);
        let r = t.tick_at(at(t0, 5_100)).expect("due");
        assert_eq!(r.message, "pre-training the attacker · step 2/3");
        assert_eq!(r.fraction, 0.0);
        let mut u = Ticker::starting_at("measuring", "batch", None, UNKNOWN, Duration::ZERO, t0);
        assert_eq!(
            u.tick_at(t0).map(|r| r.message),
            Some("measuring · batch 1".into())
        );
    }

    #[test]
    fn units_are_counted_in_words() {
        assert_eq!(plural("step"), "steps");
        assert_eq!(plural("batch"), "batches");
    }

    #[test]
    fn the_interval_override_is_read_in_milliseconds() {
        assert_eq!(interval_from(Some("250")), Duration::from_millis(250));
        assert_eq!(interval_from(Some(" 0 ")), Duration::ZERO);
        assert_eq!(interval_from(Some("soon")), REPORT_EVERY);
        assert_eq!(interval_from(Some("-1")), REPORT_EVERY);
        assert_eq!(interval_from(None), REPORT_EVERY);
    }
}
