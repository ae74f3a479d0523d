//! Train/validation/test splits, drawn deterministically from a seed.

use super::error::DataError;
use super::rng::SplitMix64;

/// Stable sample indices of each part, each list sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// Training samples.
    pub train: Vec<i64>,
    /// Validation samples.
    pub val: Vec<i64>,
    /// Test samples.
    pub test: Vec<i64>,
}

impl Split {
    /// Shuffles `0..n` with SplitMix64(`seed`) and takes the first `train` indices for
    /// training, the next `val` for validation and the next `test` for testing (samples
    /// beyond the three counts are left out). The same arguments give the same split on
    /// every machine and version.
    pub fn from_counts(
        n: usize,
        train: usize,
        val: usize,
        test: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        let wanted = train + val + test;
        if wanted > n {
            return Err(DataError::Split(format!(
                "{train} + {val} + {test} = {wanted} samples requested from {n}"
            )));
        }
        if train == 0 {
            return Err(DataError::Split("the training part is empty".into()));
        }
        let mut perm: Vec<i64> = (0..n as i64).collect();
        SplitMix64::new(seed).shuffle(&mut perm);
        let sorted = |part: &[i64]| {
            let mut v = part.to_vec();
            v.sort_unstable();
            v
        };
        Ok(Split {
            train: sorted(&perm[..train]),
            val: sorted(&perm[train..train + val]),
            test: sorted(&perm[train + val..wanted]),
        })
    }

    /// Like [`Split::from_counts`] with validation and test sizes given as fractions of
    /// `n` (rounded down); the rest is training data.
    pub fn from_fractions(
        n: usize,
        val_fraction: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Self, DataError> {
        let ok = |f: f64| (0.0..1.0).contains(&f);
        if !ok(val_fraction) || !ok(test_fraction) || val_fraction + test_fraction >= 1.0 {
            return Err(DataError::Split(format!(
                "fractions val {val_fraction} and test {test_fraction} must be in [0, 1) and sum to less than 1"
            )));
        }
        let val = (n as f64 * val_fraction).floor() as usize;
        let test = (n as f64 * test_fraction).floor() as usize;
        Self::from_counts(n, n - val - test, val, test, seed)
    }

    /// Checks that every index is in `0..n` and no sample is in two parts (or twice in one).
    pub fn validate(&self, n: usize) -> Result<(), DataError> {
        let mut seen = vec![false; n];
        for (name, part) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            for &i in part {
                if i < 0 || i as usize >= n {
                    return Err(DataError::Split(format!(
                        "{name} index {i} is outside 0..{n}"
                    )));
                }
                if std::mem::replace(&mut seen[i as usize], true) {
                    return Err(DataError::Split(format!(
                        "sample {i} appears twice (second time in {name})"
                    )));
                }
            }
        }
        if self.train.is_empty() {
            return Err(DataError::Split("the training part is empty".into()));
        }
        Ok(())
    }
}
