//! The data of a deletion job, loaded the way the worker loads it for a
//! plugin (same split, same forget positions), so an evaluation and an attack
//! talk about the same samples.

use std::path::Path;

use super::EvalError;
use crate::data::{Dataset, ForgetSet, Split};

/// Dataset, split, forget set and retain rows of a job.
#[derive(Debug)]
pub struct JobData {
    /// The whole dataset.
    pub dataset: Dataset,
    /// Its train / validation / test split (recorded in the file, else drawn
    /// from the job seed).
    pub split: Split,
    /// The samples to forget.
    pub forget: ForgetSet,
    /// Training rows not forgotten.
    pub retain: Vec<i64>,
}

impl JobData {
    /// Loads `data` and the forget list `forget`; `seed` draws the split when
    /// the dataset records none (as `lethe unlearn --seed` does).
    pub fn load(data: &Path, forget: &Path, seed: u64) -> Result<JobData, EvalError> {
        let dataset = crate::data::load(data)?;
        let split = crate::jobs::train::split_of(&dataset, seed)?;
        let forget = ForgetSet::from_path(forget, &dataset, &split.train)?;
        let retain = forget.retain(&split.train);
        Ok(JobData {
            dataset,
            split,
            forget,
            retain,
        })
    }

    /// Labels of the rows `positions`.
    pub fn labels(&self, positions: &[i64]) -> Vec<i64> {
        let all = self.dataset.label_slice();
        positions
            .iter()
            .filter_map(|&p| usize::try_from(p).ok().and_then(|p| all.get(p)).copied())
            .collect()
    }
}
