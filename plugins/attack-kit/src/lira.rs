//! The Likelihood Ratio Attack of Carlini et al. (IEEE S&P 2022), per sample:
//!
//! * the statistic is the logit-scaled confidence of the true class,
//!   `φ = log(p_y / (1 − p_y))`, computed from logits as
//!   `z_y − log Σ_{j≠y} exp z_j` (no rounding of `p_y` to 1);
//! * for each sample, Gaussians are fitted to φ on the shadow models trained
//!   with it (IN) and without it (OUT): mean and variance per sample, or one
//!   variance shared by all samples ([`Variance::Global`], which the paper
//!   advises for fewer than 64 shadow models);
//! * **online**, the score is the log likelihood ratio
//!   `log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)`;
//! * **offline** (OUT models only), the one-sided test of the paper: the score
//!   is `(φ − μ_out) / σ_out`, and `Λ = Φ(score)` is the probability that an
//!   OUT model is less confident than the attacked one (a monotone map, so the
//!   ROC is the same; the z-value stays finite where Φ rounds to 1).
//!
//! Higher scores mean "member". A single query per sample (no augmented
//! queries). The global variance is the pooled within-sample variance
//! (`Σ (φ − μ_sample)² / Σ n`), the textbook reading of the paper's "global
//! variance"; the authors' code takes the variance of all values together,
//! between-sample spread included. It is estimated once over every sample the
//! attack asks about ([`Spread::pooled`]) and shared by all of them: scoring
//! two groups with variances estimated on each separately shifts one group's
//! scores against the other's, far more so where the attacked model's
//! confidence lies outside the shadow models' range.

/// How the Gaussians' variances are estimated (see [`Fit`] for the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variance {
    /// One variance per sample (IN and OUT separately).
    PerExample,
    /// One variance for all samples (IN and OUT separately), pooled.
    Global,
}

impl Variance {
    /// The paper's advice: global below 64 shadow models.
    pub fn auto(models: usize) -> Variance {
        if models < 64 {
            Variance::Global
        } else {
            Variance::PerExample
        }
    }

    /// Name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Variance::PerExample => "per-example",
            Variance::Global => "global",
        }
    }
}

/// Why scores could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LiraError(pub String);

/// `φ = log(p_y / (1 − p_y))` of a row of logits: `z_y − log Σ_{j≠y} exp z_j`.
/// Infinite for a single class; `None` for a label out of range.
pub fn logit_confidence(logits: &[f64], label: usize) -> Option<f64> {
    let zy = *logits.get(label)?;
    let max = logits
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != label)
        .map(|(_, z)| *z)
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Some(f64::INFINITY);
    }
    let sum: f64 = logits
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != label)
        .map(|(_, z)| (z - max).exp())
        .sum();
    Some(zy - (max + sum.ln()))
}

/// One sample: φ on the attacked model and on each shadow model, and whether
/// each shadow model trained on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// φ on the attacked model.
    pub target: f64,
    /// φ on each shadow model.
    pub shadows: Vec<f64>,
    /// Whether each shadow model trained on the sample.
    pub inside: Vec<bool>,
}

/// A fitted Gaussian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
}

/// Keeps a degenerate fit finite (the authors' code adds the same 1e-30).
const SD_FLOOR: f64 = 1e-30;

/// The global (pooled within-sample) standard deviations of φ on IN and on
/// OUT models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Over IN values.
    pub inside: f64,
    /// Over OUT values.
    pub outside: f64,
}

impl Spread {
    /// `sqrt(Σ (φ − μ_sample)² / Σ n)` over `obs`, IN and OUT apart (0 where
    /// there are no values).
    pub fn pooled(obs: &[Observation]) -> Spread {
        let (mut ss_in, mut n_in, mut ss_out, mut n_out) = (0.0, 0usize, 0.0, 0usize);
        for o in obs {
            for (want, ss, n) in [
                (true, &mut ss_in, &mut n_in),
                (false, &mut ss_out, &mut n_out),
            ] {
                let v: Vec<f64> = o
                    .shadows
                    .iter()
                    .zip(&o.inside)
                    .filter(|(_, m)| **m == want)
                    .map(|(v, _)| *v)
                    .collect();
                if let Some((_, s)) = moments(&v) {
                    *ss += s;
                    *n += v.len();
                }
            }
        }
        Spread {
            inside: (ss_in / n_in.max(1) as f64).sqrt(),
            outside: (ss_out / n_out.max(1) as f64).sqrt(),
        }
    }
}

/// The variances a scoring call uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fit {
    /// Each sample's own.
    PerExample,
    /// One spread for all samples, from [`Spread::pooled`] over every sample
    /// the attack scores.
    Global(Spread),
}

impl Fit {
    /// The fit of `variance` over every sample an attack scores (`obs`): one
    /// pooled spread shared by all of them, or each sample's own.
    pub fn over(variance: Variance, obs: &[Observation]) -> Fit {
        match variance {
            Variance::Global => Fit::Global(Spread::pooled(obs)),
            Variance::PerExample => Fit::PerExample,
        }
    }
}

fn moments(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
    Some((mean, ss))
}

/// Per-sample IN and OUT fits (IN is `None` where no model trained on it).
fn fits(obs: &[Observation], fit: Fit) -> Result<Vec<(Option<Gaussian>, Gaussian)>, LiraError> {
    obs.iter()
        .enumerate()
        .map(|(i, o)| {
            if o.shadows.len() != o.inside.len() {
                return Err(LiraError(format!(
                    "sample {i}: {} shadow values but {} membership flags",
                    o.shadows.len(),
                    o.inside.len()
                )));
            }
            let pick = |want: bool| -> Vec<f64> {
                o.shadows
                    .iter()
                    .zip(&o.inside)
                    .filter(|(_, m)| **m == want)
                    .map(|(v, _)| *v)
                    .collect()
            };
            let (vin, vout) = (pick(true), pick(false));
            let gaussian = |v: &[f64], global: f64| {
                moments(v).map(|(mean, ss)| Gaussian {
                    mean,
                    sd: match fit {
                        Fit::PerExample => (ss / v.len() as f64).sqrt(),
                        Fit::Global(_) => global,
                    } + SD_FLOOR,
                })
            };
            let (gin, gout) = match fit {
                Fit::Global(s) => (s.inside, s.outside),
                Fit::PerExample => (0.0, 0.0),
            };
            let out = gaussian(&vout, gout).ok_or_else(|| {
                LiraError(format!(
                    "sample {i} has no shadow model trained without it (OUT)"
                ))
            })?;
            Ok((gaussian(&vin, gin), out))
        })
        .collect()
}

/// `log N(x; g.mean, g.sd²)`.
pub fn log_pdf(x: f64, g: Gaussian) -> f64 {
    let z = (x - g.mean) / g.sd;
    -0.5 * z * z - g.sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// Online LiRA scores: `log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)` per
/// sample. Every sample needs IN and OUT models.
pub fn online_scores(obs: &[Observation], fit: Fit) -> Result<Vec<f64>, LiraError> {
    online_map(obs, fit, "online LiRA needs both", |o, gin, gout| {
        log_pdf(o.target, gin) - log_pdf(o.target, gout)
    })
}

/// `f(sample, IN, OUT)` for every sample; an error naming `need` for a sample
/// no shadow model trained on.
fn online_map(
    obs: &[Observation],
    fit: Fit,
    need: &str,
    f: impl Fn(&Observation, Gaussian, Gaussian) -> f64,
) -> Result<Vec<f64>, LiraError> {
    fits(obs, fit)?
        .into_iter()
        .zip(obs)
        .enumerate()
        .map(|(i, ((gin, gout), o))| {
            let gin = gin.ok_or_else(|| {
                LiraError(format!(
                    "sample {i} has no shadow model trained with it (IN); {need}"
                ))
            })?;
            Ok(f(o, gin, gout))
        })
        .collect()
}

/// Upper tail of the standard normal, `P(Z > z)`, accurate far into the tail.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The p-value of the likelihood-ratio statistic at `x` under OUT: the
/// probability that a model which never saw the sample (φ ~ N(μ_out, σ_out²))
/// gives a ratio `log N(φ; in) − log N(φ; out)` at least as large as `x`'s.
///
/// The ratio is quadratic in φ, so `{ratio ≥ ratio(x)}` is bounded by `x` and
/// the other root of that quadratic (their sum is `−b/a`): a tail on each side
/// when σ_in > σ_out, the interval between them when σ_in < σ_out, one tail
/// when the variances are equal (the ratio is then monotone in φ; no tail, p
/// = 1, when the means are equal too).
pub fn lr_pvalue(x: f64, gin: Gaussian, gout: Gaussian) -> f64 {
    let (vi, vo) = (gin.sd * gin.sd, gout.sd * gout.sd);
    // ratio(φ) = a φ² + b φ + c
    let a = 0.5 * (1.0 / vo - 1.0 / vi);
    let b = gin.mean / vi - gout.mean / vo;
    let z = |v: f64| (v - gout.mean) / gout.sd;
    let cdf = |v: f64| normal_sf(-z(v));
    let sf = |v: f64| normal_sf(z(v));
    let scale = 1.0 / vo.min(vi);
    if a.abs() <= 1e-12 * scale {
        return if b > 0.0 {
            sf(x)
        } else if b < 0.0 {
            cdf(x)
        } else {
            1.0
        };
    }
    let other = -b / a - x;
    let (lo, hi) = if other < x { (other, x) } else { (x, other) };
    let p = if a > 0.0 {
        cdf(lo) + sf(hi)
    } else {
        cdf(hi) - cdf(lo)
    };
    p.clamp(0.0, 1.0)
}

/// Online LiRA's per-sample p-values: [`lr_pvalue`] of the attacked model's φ,
/// with the fits of [`online_scores`] widened to predictive distributions.
///
/// A sample's IN and OUT Gaussians come from the few shadow models that did
/// (`n_in`) or did not (`n_out`) train on it, with LiRA's variances, which
/// divide by `n` (LiRA's authors take NumPy's default, too). A fresh model's φ
/// varies about the *estimated* mean by `σ² (1 + 1/n)` with the unbiased
/// `σ² = σ̂² n / (n − 1)`: the variance is scaled by `(n + 1)/(n − 1)` (by
/// `1 + 1/n` where `n` is 1). Without it, with 4 OUT models, never-seen
/// samples come out "significant" far more often than the level says. The
/// scores keep LiRA's own fits.
pub fn online_pvalues(obs: &[Observation], fit: Fit) -> Result<Vec<f64>, LiraError> {
    online_map(obs, fit, "a p-value needs both", |o, gin, gout| {
        let n_in = o.inside.iter().filter(|m| **m).count() as f64;
        let n_out = o.inside.len() as f64 - n_in;
        lr_pvalue(o.target, predictive(gin, n_in), predictive(gout, n_out))
    })
}

/// `g` widened for a fresh draw when its mean and variance come from `n`
/// values (see [`online_pvalues`]).
pub fn predictive(g: Gaussian, n: f64) -> Gaussian {
    let scale = if n >= 2.0 {
        (n + 1.0) / (n - 1.0)
    } else {
        1.0 + 1.0 / n.max(1.0)
    };
    Gaussian {
        mean: g.mean,
        sd: g.sd * scale.sqrt(),
    }
}

/// Offline LiRA scores: `(φ − μ_out) / σ_out` from the OUT models only (IN
/// values, if any, are ignored; so is the IN part of a global [`Fit`]).
pub fn offline_scores(obs: &[Observation], fit: Fit) -> Result<Vec<f64>, LiraError> {
    // IN models play no part: fit on OUT values alone.
    let outs: Vec<Observation> = obs
        .iter()
        .map(|o| Observation {
            target: o.target,
            shadows: o
                .shadows
                .iter()
                .zip(&o.inside)
                .filter(|(_, m)| !**m)
                .map(|(v, _)| *v)
                .collect(),
            inside: o.inside.iter().filter(|m| !**m).copied().collect(),
        })
        .collect();
    Ok(fits(&outs, fit)?
        .into_iter()
        .zip(&outs)
        .map(|((_, gout), o)| (o.target - gout.mean) / gout.sd)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_confidence_is_the_log_odds_of_the_true_class() {
        let z = [2.0, 0.5, -1.0];
        let p: Vec<f64> = {
            let s: f64 = z.iter().map(|v: &f64| v.exp()).sum();
            z.iter().map(|v| v.exp() / s).collect()
        };
        let want = (p[0] / (1.0 - p[0])).ln();
        assert!((logit_confidence(&z, 0).unwrap() - want).abs() < 1e-12);
        // Confident beyond f64's resolution of p: still finite and exact.
        let far = logit_confidence(&[80.0, 0.0, 0.0], 0).unwrap();
        assert!((far - (80.0 - 2f64.ln())).abs() < 1e-9);
        assert_eq!(logit_confidence(&z, 3), None);
    }

    #[test]
    fn scores_rank_a_sample_near_its_in_distribution_as_member() {
        let obs = |target: f64| Observation {
            target,
            shadows: vec![5.0, 5.5, 1.0, 1.5, 5.2, 1.2],
            inside: vec![true, true, false, false, true, false],
        };
        let all = [obs(5.3), obs(1.1)];
        for fit in [Fit::PerExample, Fit::Global(Spread::pooled(&all))] {
            let on = online_scores(&all, fit).unwrap();
            assert!(on[0] > 0.0 && on[1] < 0.0, "{on:?}");
            let off = offline_scores(&all, fit).unwrap();
            assert!(off[0] > off[1], "{off:?}");
        }
        let no_out = Observation {
            target: 1.0,
            shadows: vec![1.0],
            inside: vec![true],
        };
        let fit = Fit::Global(Spread::pooled(std::slice::from_ref(&no_out)));
        assert!(online_scores(std::slice::from_ref(&no_out), fit).is_err());
        assert!(offline_scores(&[no_out], fit).is_err());
    }
}
