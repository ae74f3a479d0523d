//! Loops over the job's splits: one epoch over a split with cancellation checks,
//! a forget stream that cycles (to mix forget examples into retain batches, as
//! the reference code's concatenated datasets do), and per-epoch reporting
//! (in-epoch reporting is [`crate::progress`]).

#[cfg(doc)]
use crate::progress::EpochProgress;
use crate::progress::{Tick, Ticker, UNKNOWN};
use crate::train::steps_per_epoch;
use lethe_plugin_api::sdk::{Batches, HostContext, PluginError, Split};
use lethe_plugin_api::tch::Tensor;
use serde_json::{Map, Value, json};

/// What one pass over a split saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochStats {
    /// Batches processed.
    pub batches: usize,
    /// Examples processed.
    pub samples: i64,
    /// Sum over batches of (mean batch loss × batch size).
    pub loss_sum: f64,
}

impl EpochStats {
    /// Mean loss per example (NaN when nothing was processed).
    pub fn mean_loss(&self) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.samples as f64
        }
    }
}

/// Runs `step(ctx, inputs, labels)` on each batch of `split` (at most
/// `max_batches` when non-zero), checking for cancellation before each. `step`
/// returns the batch's mean loss, which is accumulated.
pub fn for_each_batch<F>(
    ctx: &mut HostContext,
    split: Split,
    batch_size: u32,
    shuffle: bool,
    max_batches: usize,
    step: F,
) -> Result<EpochStats, PluginError>
where
    F: FnMut(&mut HostContext, &Tensor, &Tensor) -> Result<f64, PluginError>,
{
    for_each_batch_with(ctx, split, batch_size, shuffle, max_batches, false, step)
}

/// [`for_each_batch`], skipping a last batch shorter than `batch_size` when
/// `drop_last` (as a training recipe with `drop_last` did).
///
/// A pass that takes longer than the report interval says so (`<split> split ·
/// batch i/N`, fraction unknown so the host keeps the run's own): this loop does
/// not know where the run stands, and an epoch on a busy machine can take
/// minutes. Loops that do know pass an [`EpochProgress`] to
/// [`for_each_batch_ticking`].
pub fn for_each_batch_with<F>(
    ctx: &mut HostContext,
    split: Split,
    batch_size: u32,
    shuffle: bool,
    max_batches: usize,
    drop_last: bool,
    step: F,
) -> Result<EpochStats, PluginError>
where
    F: FnMut(&mut HostContext, &Tensor, &Tensor) -> Result<f64, PluginError>,
{
    let label = format!("{} split", split.name());
    let mut ticker = batch_ticker(ctx, &label, split, batch_size, max_batches);
    for_each_batch_ticking(
        ctx,
        split,
        batch_size,
        shuffle,
        max_batches,
        drop_last,
        &mut ticker,
        step,
    )
}

/// A [`Ticker`] over the batches of `split` as [`for_each_batch`] takes them,
/// labelled `label`, at an unknown fraction.
pub fn batch_ticker(
    ctx: &mut HostContext,
    label: &str,
    split: Split,
    batch_size: u32,
    max_batches: usize,
) -> Ticker {
    // Only for the message: a host that cannot tell the size gets "batch i".
    let total = steps_per_epoch(ctx, split, batch_size, max_batches)
        .ok()
        .filter(|&n| n > 0);
    Ticker::new(label, "batch", total, UNKNOWN)
}

/// [`for_each_batch_with`], ticking `progress` after each batch.
#[allow(clippy::too_many_arguments)]
pub fn for_each_batch_ticking<F>(
    ctx: &mut HostContext,
    split: Split,
    batch_size: u32,
    shuffle: bool,
    max_batches: usize,
    drop_last: bool,
    progress: &mut dyn Tick,
    mut step: F,
) -> Result<EpochStats, PluginError>
where
    F: FnMut(&mut HostContext, &Tensor, &Tensor) -> Result<f64, PluginError>,
{
    let mut stats = EpochStats::default();
    for batch in ctx.batches(split, batch_size, shuffle, false)? {
        ctx.check_cancelled()?;
        let (x, y) = batch?;
        let n = x.size().first().copied().unwrap_or(0);
        if drop_last && n < i64::from(batch_size) {
            break;
        }
        let loss = step(ctx, &x, &y)?;
        stats.batches += 1;
        stats.samples += n;
        stats.loss_sum += loss * n as f64;
        progress.tick(ctx);
        if max_batches > 0 && stats.batches >= max_batches {
            break;
        }
    }
    Ok(stats)
}

/// Batches of one split without end: when the split is exhausted it is reopened
/// (reshuffled). For taking a few forget examples alongside every retain batch.
#[derive(Debug)]
pub struct Cycle {
    split: Split,
    batch_size: u32,
    current: Option<Batches>,
}

impl Cycle {
    /// A cycling stream of `split` in shuffled batches of `batch_size`.
    pub fn new(split: Split, batch_size: u32) -> Self {
        Cycle {
            split,
            batch_size,
            current: None,
        }
    }

    /// The next batch, reopening the split at its end.
    pub fn next_batch(&mut self, ctx: &mut HostContext) -> Result<(Tensor, Tensor), PluginError> {
        for _ in 0..2 {
            let batches = match self.current.as_mut() {
                Some(b) => b,
                None => {
                    self.current
                        .insert(ctx.batches(self.split, self.batch_size, true, false)?)
                }
            };
            match batches.next() {
                Some(batch) => return batch,
                None => self.current = None,
            }
        }
        Err(PluginError::msg(format!(
            "the {:?} split is empty",
            self.split
        )))
    }
}

/// Splits a batch of `batch_size` between retain and forget examples in
/// proportion to the split sizes (at least one of each), so a pass over the
/// retain split sees about the whole forget split once: the mix a shuffled
/// concatenation of the two sets gives.
pub fn mixed_batch_sizes(batch_size: u32, retain: u64, forget: u64) -> (u32, u32) {
    let total = (retain + forget).max(1) as f64;
    let bs = batch_size.max(2);
    let f = ((f64::from(bs) * forget as f64 / total).round() as u32).clamp(1, bs - 1);
    (bs - f, f)
}

/// Reports the end of epoch `epoch` (1-based) of `epochs` with `metrics` (plus
/// `epoch`) as progress.
pub fn report_epoch(ctx: &HostContext, epoch: usize, epochs: usize, metrics: Value) {
    let mut m = match metrics {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("epoch".into(), json!(epoch));
    let text = format!("epoch {epoch}/{epochs}");
    ctx.progress_metrics(
        epoch as f64 / epochs.max(1) as f64,
        &text,
        &Value::Object(m),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_sizes_follow_the_split_proportions() {
        assert_eq!(mixed_batch_sizes(256, 5700, 300), (243, 13));
        assert_eq!(mixed_batch_sizes(10, 1000, 1), (9, 1));
        assert_eq!(mixed_batch_sizes(10, 1, 1000), (1, 9));
        assert_eq!(mixed_batch_sizes(1, 5, 5), (1, 1));
    }
}
