//! The Robust Membership Inference Attack of Zarifzadeh, Liu, Bao and Shokri
//! (ICML 2024), per sample:
//!
//! * `Pr(x|θ)` is the softmax probability of the true class;
//! * `Pr(x)`, the probability under the population of models, is the mean of
//!   `Pr(x|θ')` over the reference (shadow) models: all of them **online**;
//!   **offline**, only models that never trained on `x` exist, and the paper
//!   approximates `Pr(x) = ½((1 + a)·mean_OUT Pr(x|θ') + (1 − a))` with the
//!   interpolation `a` (the same formula for the population samples `z`);
//! * the pairwise likelihood ratio of `x` against a population sample `z` is
//!   `LR(x, z) = (Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z))`, and the score is the share
//!   of population samples with `LR(x, z) ≥ γ`.
//!
//! Higher scores mean "member".

/// Why scores could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RmiaError(pub String);

/// Softmax probability of `label` in a row of logits (`None` out of range).
pub fn probability(logits: &[f64], label: usize) -> Option<f64> {
    let zy = *logits.get(label)?;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|z| (z - max).exp()).sum();
    Some((zy - max).exp() / sum)
}

/// How `Pr(x)` is estimated from the reference models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reference {
    /// Mean over every reference model.
    Online,
    /// `½((1 + a)·mean over OUT models + (1 − a))`.
    Offline {
        /// The paper's interpolation `a` in `[0, 1]`.
        a: f64,
    },
}

/// One sample: `Pr(x|θ)` on the attacked model, on each reference model, and
/// whether each reference model trained on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// On the attacked model.
    pub target: f64,
    /// On each reference model.
    pub references: Vec<f64>,
    /// Whether each reference model trained on the sample.
    pub inside: Vec<bool>,
}

/// `Pr(x)` from the reference models.
pub fn marginal(o: &Observation, reference: Reference) -> Result<f64, RmiaError> {
    if o.references.len() != o.inside.len() {
        return Err(RmiaError(format!(
            "{} reference values but {} membership flags",
            o.references.len(),
            o.inside.len()
        )));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    match reference {
        Reference::Online => {
            if o.references.is_empty() {
                return Err(RmiaError("no reference models".into()));
            }
            Ok(mean(&o.references))
        }
        Reference::Offline { a } => {
            let out: Vec<f64> = o
                .references
                .iter()
                .zip(&o.inside)
                .filter(|(_, m)| !**m)
                .map(|(v, _)| *v)
                .collect();
            if out.is_empty() {
                return Err(RmiaError(
                    "a sample has no reference model trained without it".into(),
                ));
            }
            Ok(0.5 * ((1.0 + a) * mean(&out) + (1.0 - a)))
        }
    }
}

/// `Pr(x|θ) / Pr(x)`.
pub fn ratio(o: &Observation, reference: Reference) -> Result<f64, RmiaError> {
    Ok(o.target / marginal(o, reference)?.max(f64::MIN_POSITIVE))
}

/// RMIA scores of `targets` against the population samples `population`:
/// for each target the share of `z` with `LR(x, z) ≥ gamma`.
pub fn scores(
    targets: &[Observation],
    population: &[Observation],
    reference: Reference,
    gamma: f64,
) -> Result<Vec<f64>, RmiaError> {
    if population.is_empty() {
        return Err(RmiaError("RMIA needs population samples z".into()));
    }
    let mut rz = population
        .iter()
        .map(|z| ratio(z, reference))
        .collect::<Result<Vec<_>, _>>()?;
    rz.sort_by(f64::total_cmp);
    let n = rz.len() as f64;
    targets
        .iter()
        .map(|x| {
            let rx = ratio(x, reference)?;
            // LR(x, z) = rx / rz falls as rz grows: count the prefix where it
            // still reaches gamma (the same comparison as a pairwise loop).
            let count = rz.partition_point(|&r| rx / r >= gamma);
            Ok(count as f64 / n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(target: f64, refs: &[f64], inside: &[bool]) -> Observation {
        Observation {
            target,
            references: refs.to_vec(),
            inside: inside.to_vec(),
        }
    }

    #[test]
    fn probability_and_marginals_by_hand() {
        let p = probability(&[1.0, 2.0, 3.0], 2).unwrap();
        let want = 3f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp());
        assert!((p - want).abs() < 1e-15);
        let o = obs(0.9, &[0.8, 0.4, 0.6], &[true, false, false]);
        assert!((marginal(&o, Reference::Online).unwrap() - 0.6).abs() < 1e-15);
        // Offline, a = 0.3: ½(1.3·0.5 + 0.7) = 0.675.
        let m = marginal(&o, Reference::Offline { a: 0.3 }).unwrap();
        assert!((m - 0.675).abs() < 1e-15);
        assert!(marginal(&obs(0.5, &[0.5], &[true]), Reference::Offline { a: 0.3 }).is_err());
    }

    #[test]
    fn scores_count_population_samples_beaten_by_gamma() {
        let z: Vec<Observation> = [0.5, 1.0, 2.0, 4.0]
            .iter()
            .map(|&r| obs(r * 0.2, &[0.2], &[false]))
            .collect();
        // Ratios of z: 0.5, 1, 2, 4. A target with ratio 4 beats z with
        // ratio <= 2 at gamma 2: three of four.
        let x = obs(0.8, &[0.2], &[false]);
        let s = scores(std::slice::from_ref(&x), &z, Reference::Online, 2.0).unwrap();
        assert_eq!(s, vec![0.75]);
        let s = scores(&[x], &z, Reference::Online, 1.0).unwrap();
        assert_eq!(s, vec![1.0]);
        assert!(scores(&[], &[], Reference::Online, 1.0).is_err());
    }
}
