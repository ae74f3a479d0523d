//! Evaluation metrics shared by the jobs, the attacks and the reports.

pub mod roc;

pub use roc::{RocCurve, roc_auc};
