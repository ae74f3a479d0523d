//! Optimiser and learning-rate schedule settings, recorded with every run so results
//! can be reproduced (the most common complaint about the papers' code).

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig as _, VarStore};

use super::TrainError;
use super::augment::AugmentConfig;

/// Which optimiser to use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// SGD with momentum (the papers' default).
    Sgd {
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam with decoupled weight decay off (plain L2 through `weight_decay`).
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
        }
    }
}

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from the base rate to zero over all steps, after a linear warm-up.
    #[default]
    Cosine,
    /// Cosine decay after `warmup_epochs` of linear warm-up.
    WarmupCosine {
        /// Epochs of linear warm-up from 0 to the base rate.
        warmup_epochs: usize,
    },
}

impl Schedule {
    /// Rate at global step `step` (0-based) of `total` steps.
    pub fn rate(&self, base: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        let total = total.max(1) as f64;
        let t = step as f64;
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => 0.5 * base * (1.0 + (std::f64::consts::PI * t / total).cos()),
            Schedule::WarmupCosine { warmup_epochs } => {
                let warm = (*warmup_epochs * steps_per_epoch) as f64;
                if t < warm {
                    base * (t + 1.0) / warm
                } else {
                    let span = (total - warm).max(1.0);
                    0.5 * base * (1.0 + (std::f64::consts::PI * (t - warm) / span).cos())
                }
            }
        }
    }
}

/// Everything a training loop needs to know besides the model and data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: i64,
    /// Base learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed for libtorch's generator (batch order, augmentation, initialisation done after).
    pub seed: u64,
    /// Drop the last short batch of each epoch.
    pub drop_last: bool,
    /// On-device augmentation; `None` trains on the images as they are.
    pub augment: Option<AugmentConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            lr: 0.05,
            weight_decay: 5e-4,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Cosine,
            seed: 0,
            drop_last: false,
            augment: None,
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot train (zero batch, negative rate, …).
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.batch_size <= 0 {
            return Err(TrainError::Invalid(format!(
                "batch_size must be positive, got {}",
                self.batch_size
            )));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(TrainError::Invalid(format!(
                "lr must be ≥ 0, got {}",
                self.lr
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::Invalid(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }

    /// Builds the optimiser over every trainable variable of `vs`.
    pub fn build_optimizer(&self, vs: &VarStore) -> Result<nn::Optimizer, TrainError> {
        let opt = match self.optimizer {
            OptimizerConfig::Sgd { momentum, nesterov } => nn::Sgd {
                momentum,
                dampening: 0.0,
                wd: self.weight_decay,
                nesterov,
            }
            .build(vs, self.lr)?,
            OptimizerConfig::Adam { beta1, beta2 } => nn::Adam {
                beta1,
                beta2,
                wd: self.weight_decay,
                eps: 1e-8,
                amsgrad: false,
            }
            .build(vs, self.lr)?,
        };
        Ok(opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_base_and_ends_near_zero() {
        let s = Schedule::Cosine;
        assert!((s.rate(0.1, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.rate(0.1, 50, 100, 10) - 0.05).abs() < 1e-12);
        assert!(s.rate(0.1, 99, 100, 10) < 1e-3);
    }

    #[test]
    fn warmup_rises_linearly_then_decays() {
        let s = Schedule::WarmupCosine { warmup_epochs: 1 };
        assert!((s.rate(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.rate(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!(s.rate(1.0, 60, 100, 10) < 1.0);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let c = TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
