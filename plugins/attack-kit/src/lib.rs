//! Shared pieces of Lethe's membership-inference attack plugins
//! (`plugins/attack-*`).
//!
//! * [`svm`]: RBF support-vector classifier trained by libsvm-style SMO;
//! * [`logistic`]: L2-regularised logistic regression (Newton), feature scaling;
//! * [`scores`]: Song & Mittal's per-sample metrics (correctness, confidence,
//!   entropy, modified entropy) from class probabilities;
//! * [`thresholds`]: their threshold rule (global and class-dependent) and
//!   EncoderMI's grid search;
//! * [`probe`]: class probabilities from a classifier, or a linear probe for
//!   encoders;
//! * [`sets`]: which samples play shadow member, shadow non-member, target and
//!   held-out roles, gathered through the SDK;
//! * [`results`]: the result files the engine turns into the metric set;
//! * [`lira`] and [`rmia`]: the per-sample maths of LiRA (Carlini et al.) and
//!   RMIA (Zarifzadeh et al.) on shadow-model logits, plain `f64`, and
//!   [`shadow_attack`]: their shared flow (roles, the engine's shadow models,
//!   calibrated decisions, result files);
//! * [`transformer`]: Yuan and Zhang's transformer attacker and its inputs
//!   (softmax, sensitivity to input noise, one-hot label), used by the
//!   transformer attack and by Discriminative Adversarial Unlearning.
//!
//! The numeric modules are plain `f64` Rust (no tensors) so they are tested
//! against scikit-learn directly; the transformer is checked against
//! `torch.nn`.
#![deny(missing_docs)]

pub mod lira;
pub mod logistic;
pub mod probe;
pub mod results;
pub mod rmia;
pub mod scores;
pub mod sets;
pub mod shadow_attack;
pub mod svm;
pub mod thresholds;
pub mod transformer;

pub use lethe_plugin_api;
pub use lethe_plugin_api::tch;

/// Rows of equal-length feature vectors, stored row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    data: Vec<f64>,
    dim: usize,
}

/// Rows that do not fit a [`Features`] matrix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl Features {
    /// Wraps row-major `data` of `dim` columns.
    pub fn new(data: Vec<f64>, dim: usize) -> Result<Self, ShapeError> {
        if dim == 0 && !data.is_empty() {
            return Err(ShapeError(
                "features of dimension 0 cannot hold values".into(),
            ));
        }
        if dim > 0 && !data.len().is_multiple_of(dim) {
            return Err(ShapeError(format!(
                "{} values do not make rows of {dim}",
                data.len()
            )));
        }
        Ok(Features { data, dim })
    }

    /// Stacks rows, which must all have the same length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self, ShapeError> {
        let dim = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * dim);
        for (i, r) in rows.iter().enumerate() {
            if r.len() != dim {
                return Err(ShapeError(format!(
                    "row {i} has {} values, row 0 has {dim}",
                    r.len()
                )));
            }
            data.extend_from_slice(r);
        }
        Ok(Features { data, dim })
    }

    /// One column per value.
    pub fn column(values: &[f64]) -> Self {
        Features {
            data: values.to_vec(),
            dim: 1,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The rows of `self` followed by those of `other` (same dimension).
    pub fn concat(&self, other: &Features) -> Result<Features, ShapeError> {
        if self.is_empty() {
            return Ok(other.clone());
        }
        if other.is_empty() {
            return Ok(self.clone());
        }
        if self.dim != other.dim {
            return Err(ShapeError(format!(
                "cannot stack rows of {} and {} values",
                self.dim, other.dim
            )));
        }
        let mut data = self.data.clone();
        data.extend_from_slice(&other.data);
        Ok(Features {
            data,
            dim: self.dim,
        })
    }
}
