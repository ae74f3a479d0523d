//! Which samples each shadow model trains on, and the cache key that names the
//! models.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::recipe::ShadowRecipe;
use super::{ShadowError, ShadowMode, ShadowRequest};
use crate::data::{Dataset, SplitMix64};

/// Bumped whenever the meaning of a cached model changes.
const FORMAT: u32 = 1;

/// Streams of the seed, kept apart so the pool and the halves do not correlate.
const POOL_STREAM: u64 = 0x5A17_0000_0000_0001;
const KEEP_STREAM: u64 = 0x5A17_0000_0000_0002;
const MODEL_STREAM: u64 = 0x5A17_0000_0000_0003;

/// The pool and each model's training half.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPlan {
    /// Online or offline.
    pub mode: ShadowMode,
    /// Dataset rows the halves are drawn from, sorted.
    pub pool: Vec<i64>,
    /// `keep[k][j]`: whether model `k` trains on `pool[j]`.
    keep: Vec<Vec<bool>>,
    /// Distinct target rows.
    pub targets: usize,
    /// Seed of the request.
    pub seed: u64,
}

impl ShadowPlan {
    /// Plans `request` over `candidates` (every dataset row the job may use)
    /// with the attack's `targets` (dataset rows).
    ///
    /// The halves follow the LiRA code's balanced design: for every pool row a
    /// random half of the models trains on it (the half rounds alternately down
    /// and up for an odd `K`), so online each target is in the training set of
    /// `K/2` models and out of the others.
    pub fn new(
        request: &ShadowRequest,
        candidates: &[i64],
        targets: &[i64],
    ) -> Result<ShadowPlan, ShadowError> {
        let mut targets: Vec<i64> = targets.to_vec();
        targets.sort_unstable();
        targets.dedup();
        let mut others: Vec<i64> = candidates
            .iter()
            .copied()
            .filter(|r| targets.binary_search(r).is_err())
            .collect();
        others.sort_unstable();
        others.dedup();
        SplitMix64::new(request.seed ^ POOL_STREAM).shuffle(&mut others);
        let cap = |n: usize| {
            if request.population == 0 {
                n
            } else {
                n.min(request.population)
            }
        };
        let mut pool = match request.mode {
            ShadowMode::Online => {
                if request.population > 0 && request.population < targets.len() {
                    return Err(ShadowError::Request(format!(
                        "an online pool must hold the {} targets, but `population` is {}",
                        targets.len(),
                        request.population
                    )));
                }
                let extra = cap(targets.len() + others.len()) - targets.len();
                let mut pool = targets.clone();
                pool.extend_from_slice(&others[..extra]);
                pool
            }
            ShadowMode::Offline => {
                let n = cap(others.len());
                others[..n].to_vec()
            }
        };
        pool.sort_unstable();
        if pool.len() < 4 {
            return Err(ShadowError::Request(format!(
                "the pool has {} samples; shadow models need more to train on{}",
                pool.len(),
                if request.mode == ShadowMode::Offline {
                    " (offline pools leave out every target)"
                } else {
                    ""
                }
            )));
        }
        let k = request.models;
        let mut rng = SplitMix64::new(request.seed ^ KEEP_STREAM);
        let mut keep = vec![Vec::with_capacity(pool.len()); k];
        let mut order: Vec<usize> = (0..k).collect();
        let mut column = vec![false; k];
        for j in 0..pool.len() {
            let inside = if k == 1 {
                usize::from(rng.below(2) == 0)
            } else {
                (k + j % 2) / 2
            };
            rng.shuffle(&mut order);
            column.fill(false);
            for &m in &order[..inside] {
                column[m] = true;
            }
            for (model, &member) in keep.iter_mut().zip(&column) {
                model.push(member);
            }
        }
        Ok(ShadowPlan {
            mode: request.mode,
            pool,
            keep,
            targets: targets.len(),
            seed: request.seed,
        })
    }

    /// Number of models.
    pub fn models(&self) -> usize {
        self.keep.len()
    }

    /// The dataset rows model `k` trains on, sorted.
    pub fn training_rows(&self, k: usize) -> Vec<i64> {
        self.keep
            .get(k)
            .map(|keep| {
                self.pool
                    .iter()
                    .zip(keep)
                    .filter(|(_, in_half)| **in_half)
                    .map(|(r, _)| *r)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether each of `rows` dataset rows is in model `k`'s training half.
    pub fn member_mask(&self, k: usize, rows: usize) -> Vec<bool> {
        let mut mask = vec![false; rows];
        for r in self.training_rows(k) {
            if let Some(m) = usize::try_from(r).ok().and_then(|r| mask.get_mut(r)) {
                *m = true;
            }
        }
        mask
    }

    /// The seed model `k` is initialised and shuffled with.
    pub fn model_seed(&self, k: usize) -> u64 {
        let mut rng = SplitMix64::new(
            self.seed ^ MODEL_STREAM ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        rng.next_u64() >> 1
    }

    /// The cache key and the description it hashes: architecture, recipe (with
    /// the epochs actually used; the original run's own seed plays no part),
    /// the data's content (per-sample pixel hashes and labels), the pool, the
    /// number of models and the seed. The attacked model's weights are not part
    /// of it: shadows depend on how a model is trained, not on which one.
    pub fn key(
        &self,
        recipe: &ShadowRecipe,
        epochs: usize,
        dataset: &Dataset,
    ) -> (String, serde_json::Value) {
        let mut train = recipe.with_epochs(epochs);
        train.seed = 0;
        let mut data = Sha256::new();
        for (h, l) in dataset.hashes().iter().zip(dataset.label_slice()) {
            data.update(h);
            data.update(l.to_le_bytes());
        }
        let mut pool = Sha256::new();
        for r in &self.pool {
            pool.update(r.to_le_bytes());
        }
        let mut spec = json!({
            "format": FORMAT,
            "arch": recipe.arch,
            "train": train,
            "data": {"samples": dataset.len(), "sha256": format!("{:x}", data.finalize())},
            "pool": {"samples": self.pool.len(), "sha256": format!("{:x}", pool.finalize())},
            "mode": self.mode,
            "models": self.models(),
            "seed": self.seed,
        });
        // Sparse shadows are other models than dense ones; dense keys stay as
        // they were.
        if let Some(p) = recipe.job.as_ref().and_then(|j| j.prune.as_ref()) {
            spec["prune"] = json!(p);
        }
        let key = format!("{:x}", Sha256::digest(spec.to_string().as_bytes()));
        (key, spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(models: usize, mode: ShadowMode, population: usize) -> ShadowRequest {
        ShadowRequest {
            models,
            mode,
            targets: Vec::new(),
            population,
            epochs: 0,
            seed: 7,
            unlearn: None,
        }
    }

    #[test]
    fn online_targets_are_in_exactly_half_the_models() {
        let candidates: Vec<i64> = (0..200).collect();
        let targets: Vec<i64> = (10..40).collect();
        for k in [2usize, 7, 16] {
            let plan = ShadowPlan::new(&request(k, ShadowMode::Online, 80), &candidates, &targets)
                .unwrap();
            assert_eq!(plan.pool.len(), 80);
            for t in &targets {
                let ins = (0..k)
                    .filter(|&m| plan.training_rows(m).contains(t))
                    .count();
                assert!(ins == k / 2 || ins == k.div_ceil(2), "{t}: {ins} of {k}");
            }
            // Every model trains on about half the pool.
            for m in 0..k {
                let n = plan.training_rows(m).len();
                assert!((20..=60).contains(&n), "model {m}: {n}");
            }
        }
    }

    #[test]
    fn offline_pools_never_hold_a_target_and_the_plan_is_seeded() {
        let candidates: Vec<i64> = (0..100).collect();
        let targets = vec![5, 6, 7, 50];
        let plan =
            ShadowPlan::new(&request(4, ShadowMode::Offline, 0), &candidates, &targets).unwrap();
        assert_eq!(plan.pool.len(), 96);
        for m in 0..4 {
            assert!(plan.training_rows(m).iter().all(|r| !targets.contains(r)));
        }
        let again =
            ShadowPlan::new(&request(4, ShadowMode::Offline, 0), &candidates, &targets).unwrap();
        assert_eq!(plan, again);
        let mut other = request(4, ShadowMode::Offline, 0);
        other.seed = 8;
        let other = ShadowPlan::new(&other, &candidates, &targets).unwrap();
        assert_ne!(plan.training_rows(0), other.training_rows(0));
        assert_ne!(plan.model_seed(0), plan.model_seed(1));
        // Masks agree with the training rows.
        let mask = plan.member_mask(2, 100);
        assert_eq!(
            mask.iter().filter(|m| **m).count(),
            plan.training_rows(2).len()
        );
    }

    #[test]
    fn impossible_pools_are_refused() {
        let candidates: Vec<i64> = (0..10).collect();
        let targets: Vec<i64> = (0..8).collect();
        assert!(
            ShadowPlan::new(&request(2, ShadowMode::Online, 5), &candidates, &targets).is_err()
        );
        assert!(
            ShadowPlan::new(&request(2, ShadowMode::Offline, 0), &candidates, &targets).is_err()
        );
    }
}
