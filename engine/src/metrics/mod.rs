//! Evaluation metrics shared by the jobs, the attacks and the reports.
//!
//! * [`roc`]: ROC curve and AUC;
//! * [`confusion`]: accuracy, precision, recall, balanced accuracy of decisions;
//! * [`bootstrap`]: percentile intervals for AUC and TPR at low FPR;
//! * [`membership`]: the whole metric set of a membership attack;
//! * [`sanity`]: warnings (over-unlearning, distribution shift);
//! * [`student`]: Student's t, mean and paired t-intervals over seeds.

pub mod binomial;
pub mod bootstrap;
pub mod confusion;
pub mod membership;
pub mod roc;
pub mod sanity;
pub mod student;

pub use bootstrap::Interval;
pub use confusion::{Confusion, DecisionMetrics};
pub use membership::{MembershipMetrics, MetricOptions, TprAtFpr, membership_metrics};
pub use roc::{RocCurve, roc_auc};
pub use sanity::{SanityFlag, Severity};
