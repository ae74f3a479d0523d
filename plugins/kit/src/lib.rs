//! Shared pieces of Lethe's baseline unlearning plugins (`plugins/baseline-*`).
//!
//! * [`model`]: is the job's model a classifier or an encoder ([`model_kind`]);
//! * [`losses`]: cross-entropy and SimCLR NT-Xent, and [`Objective`], the loss a
//!   method optimises on a batch whatever the model kind;
//! * [`moco`]: MoCo's InfoNCE with a momentum encoder and a queue, for encoders
//!   trained with MoCo;
//! * [`optim`]: SGD with momentum, weight decay, learning-rate schedules and
//!   per-parameter masks that keep masked weights bit-identical;
//! * [`adam`]: Adam (PyTorch's rule) with the same masks, for models trained
//!   with `lethe train --adam`;
//! * [`l1`]: the l1 penalty and its linearly decaying coefficient;
//! * [`prune`]: one-shot global magnitude pruning;
//! * [`epoch`]: loops over a split with cancellation checks, and a retain stream
//!   mixed with a cycling forget stream;
//! * [`progress`]: throttled reports within an epoch or a phase, and phase
//!   announcements, so that no phase of a run is silent for long;
//! * [`flat`]: flat parameter vectors, their layout, flat gradients;
//! * [`per_sample`]: gradients of single examples' losses;
//! * [`params`]: the schema entries every method shares, and their parsing;
//! * [`setup`]: the common start of a method (seed, model kind, pruning);
//! * [`train`]: SGD or Adam plus schedule over a run, stepping on a loss;
//! * [`eval`]: loss and accuracy on a split, and [`finish`], the common end;
//! * [`forgetting`]: sample or class unlearning, from the splits' labels;
//! * [`importance`]: diagonal empirical-Fisher importances over a split;
//! * [`teacher`]: frozen weights swapped in for a teacher's forward pass, and
//!   the distillation loss;
//! * [`oracle`]: for unit tests, a PyTorch re-implementation run through the
//!   project's Python.
#![deny(missing_docs)]

pub mod adam;
pub mod epoch;
pub mod eval;
pub mod flat;
pub mod forgetting;
pub mod importance;
pub mod l1;
pub mod losses;
pub mod moco;
pub mod model;
pub mod optim;
pub mod oracle;
pub mod params;
pub mod per_sample;
pub mod progress;
pub mod prune;
pub mod setup;
pub mod teacher;
pub mod train;

pub use adam::{Adam, AdamConfig};
pub use eval::{Evaluation, evaluate, finish};
pub use lethe_plugin_api;
pub use lethe_plugin_api::tch;
pub use losses::Objective;
pub use model::{ModelKind, model_kind};
pub use optim::{Masks, Schedule, Sgd, SgdConfig};
pub use progress::{EpochProgress, Ticker, phase};
pub use setup::{Prepared, prepare};

/// Converts an `i64` schema value that the schema already bounds to `>= 1` into a
/// batch size for [`lethe_plugin_api::sdk::HostContext::batches`].
pub fn batch_size(value: i64) -> u32 {
    u32::try_from(value.max(1)).unwrap_or(u32::MAX)
}
