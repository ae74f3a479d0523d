//! The shared flow of the shadow-model attacks (LiRA, RMIA):
//!
//! 1. [`Roles`]: which samples are asked about. The target is the forget
//!    split; held-out non-members come from the validation split (or, without
//!    one, half of the test split) and as many held-out members from the
//!    retain split, as a yardstick of the attack's power on this model;
//!    population samples come from the test split (RMIA's `z`, and the
//!    calibration of both attacks' yes/no decisions). Subsets are drawn in a
//!    seeded order, as split rows are sorted by index and often by class.
//! 2. The engine's shadow models (`lethe.shadow/1`): all these samples are the
//!    request's targets, so online each is in about half the models' training
//!    sets and offline in none.
//! 3. [`gather`]: the attacked model's logits and every shadow model's logits
//!    on each sample, with the membership flags.
//! 4. [`decide`] and [`put_roles`]: a decision threshold at a chosen false
//!    positive rate on the population samples (which the attacked model never
//!    trained on), and the result files the engine reads.

use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    HostContext, ModelHead, PluginError, ShadowMode, ShadowRequest, ShadowTargets, Split,
};
use lethe_plugin_api::tch::{self, Device, Kind, Tensor};
use serde_json::{Value, json};

use crate::results::{Role, member_rate, put_scores};

/// SplitMix64, for seeded subsets.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `0..n` in a seeded order (Fisher–Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        let j = ((u128::from(splitmix(&mut s)) * (i as u128 + 1)) >> 64) as usize;
        v.swap(i, j);
    }
    v
}

/// The shadow-model settings every shadow attack exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    /// Number of shadow models.
    pub models: u32,
    /// Online or offline.
    pub mode: ShadowMode,
    /// Epochs per shadow model (0 = the recorded recipe's).
    pub epochs: u32,
    /// Pool size (0 = every sample).
    pub population: u64,
    /// Held-out non-members (and at most as many members); 0 = the whole
    /// validation split.
    pub heldout: usize,
    /// Population samples from the test split; 0 = all of them.
    pub z_samples: usize,
    /// False-positive rate of the decisions on the population samples.
    pub decision_fpr: f64,
    /// Seed of the subsets and the shadow models.
    pub seed: u64,
    /// Batch size for the attacked model's logits.
    pub batch_size: u32,
}

impl ShadowSettings {
    /// The parameters beside `models` and `mode`, which each attack declares
    /// with its paper's defaults: shadow epochs, pool, held-out and population
    /// sizes, decision FPR, seed, batch size.
    pub fn params(z_default: i64) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int("shadow_epochs", "Epochs per shadow model", 0, 100_000, 0)
                .group("Shadow models")
                .help(
                    "0 = the attacked model's recorded recipe (LiRA trains shadows exactly like \
                     the target). Fewer epochs are cheaper and weaker.",
                ),
            ParamSpec::int("shadow_population", "Shadow pool size", 0, 100_000_000, 0)
                .group("Shadow models")
                .help(
                    "Samples the shadow models' random halves are drawn from (the targets \
                     included online); 0 = every sample of the dataset. Smaller is cheaper.",
                ),
            ParamSpec::int("heldout_size", "Held-out set size", 0, 10_000_000, 0)
                .group("Data")
                .help(
                    "Held-out non-members (validation) and as many members (retain) the \
                     attack is judged on beside the forget set; 0 = the whole validation split.",
                ),
            ParamSpec::int("z_samples", "Population samples", 1, 10_000_000, z_default)
                .group("Data")
                .help(
                    "Test-split samples the attacked model never saw: RMIA's z samples, and \
                     where the yes/no decisions are calibrated.",
                ),
            ParamSpec::float(
                "decision_fpr",
                "Decision false-positive rate",
                0.0,
                1.0,
                0.05,
            )
            .group("Decisions")
            .help(
                "The member/non-member decisions call this share of the population samples \
                     members (scores, ROC and AUC do not depend on it).",
            ),
            ParamSpec::int("seed", "Seed", 0, i64::from(i32::MAX), 0)
                .help("Draws the held-out and population subsets and the shadow models."),
            ParamSpec::int("batch_size", "Batch size", 1, 8192, 512).group("Data"),
        ]
    }

    /// Reads the shared parameters (`models` and `mode` given by the attack).
    pub fn from_params(
        params: &lethe_plugin_api::sdk::Params,
        models: u32,
        mode: ShadowMode,
    ) -> Result<ShadowSettings, PluginError> {
        let count = |k: &str| -> Result<u64, PluginError> {
            Ok(u64::try_from(params.i64(k)?).unwrap_or(0))
        };
        Ok(ShadowSettings {
            models,
            mode,
            epochs: u32::try_from(count("shadow_epochs")?).unwrap_or(u32::MAX),
            population: count("shadow_population")?,
            heldout: count("heldout_size")? as usize,
            z_samples: count("z_samples")? as usize,
            decision_fpr: params.f64("decision_fpr")?,
            seed: count("seed")?,
            batch_size: u32::try_from(count("batch_size")?.max(1)).unwrap_or(512),
        })
    }
}

/// The `variance` choice of the LiRA-style attacks.
pub fn variance_param() -> ParamSpec {
    ParamSpec::choice(
        "variance",
        "Variance",
        &["auto", "per-example", "global"],
        "auto",
    )
    .group("Shadow models")
    .help(
        "Per-sample Gaussian variances, or one shared variance; auto = global below 64 \
         shadow models, as LiRA's authors advise.",
    )
}

/// The [`variance_param`] chosen: `None` for `auto`.
pub fn variance_of(
    params: &lethe_plugin_api::sdk::Params,
) -> Result<Option<crate::lira::Variance>, PluginError> {
    use crate::lira::Variance;
    Ok(match params.str("variance")? {
        "per-example" => Some(Variance::PerExample),
        "global" => Some(Variance::Global),
        _ => None,
    })
}

/// Positions (within their splits) of every role.
#[derive(Debug, Clone, PartialEq)]
pub struct Roles {
    /// Every forget sample, in split order.
    pub forget: Vec<u64>,
    /// Held-out members: retain positions.
    pub members: Vec<u64>,
    /// Held-out non-members' split (validation, or test without one).
    pub nonmember_split: Split,
    /// Held-out non-members' positions.
    pub nonmembers: Vec<u64>,
    /// Population samples: test positions.
    pub population: Vec<u64>,
}

impl Roles {
    /// Draws the roles for the job's split sizes.
    pub fn for_job(ctx: &mut HostContext, s: &ShadowSettings) -> Result<Roles, PluginError> {
        let mut len = |split: Split| -> Result<usize, PluginError> {
            Ok(ctx.data_len(split)?.map_or(0, |n| n as usize))
        };
        let (f, r, v, t) = (
            len(Split::Forget)?,
            len(Split::Retain)?,
            len(Split::Validation)?,
            len(Split::Test)?,
        );
        Roles::new(f, r, v, t, s)
    }

    /// Draws the roles for split sizes (forget, retain, validation, test).
    pub fn new(
        forget: usize,
        retain: usize,
        validation: usize,
        test: usize,
        s: &ShadowSettings,
    ) -> Result<Roles, PluginError> {
        if forget == 0 {
            return Err(PluginError::msg(
                "the forget split is empty: nothing to attack",
            ));
        }
        if test == 0 {
            return Err(PluginError::msg(
                "the attack needs population samples the model never saw: the job has no test split",
            ));
        }
        let cap = |v: Vec<u64>, n: usize| -> Vec<u64> {
            if n == 0 {
                v
            } else {
                v.into_iter().take(n).collect()
            }
        };
        let mut test_order = permutation(test, s.seed ^ 0x7E57);
        let (nonmember_split, nonmembers) = if validation > 0 {
            (
                Split::Validation,
                cap(permutation(validation, s.seed ^ 0x7A1), s.heldout),
            )
        } else {
            let half = test / 2;
            let rest = test_order.split_off(test - half);
            (Split::Test, cap(rest, s.heldout))
        };
        if nonmembers.is_empty() {
            return Err(PluginError::msg(
                "no held-out non-members: give the job a validation split or more test samples",
            ));
        }
        let members = cap(permutation(retain, s.seed ^ 0x4E7), nonmembers.len());
        let population = cap(test_order, s.z_samples);
        Ok(Roles {
            forget: (0..forget as u64).collect(),
            members,
            nonmember_split,
            nonmembers,
            population,
        })
    }

    /// The shadow request naming every role's samples as targets.
    pub fn request(&self, s: &ShadowSettings) -> ShadowRequest {
        let t = |split: Split, positions: &[u64]| ShadowTargets {
            split,
            positions: Some(positions.to_vec()),
        };
        ShadowRequest {
            models: s.models,
            mode: s.mode,
            targets: vec![
                ShadowTargets {
                    split: Split::Forget,
                    positions: None,
                },
                t(Split::Retain, &self.members),
                t(self.nonmember_split, &self.nonmembers),
                t(Split::Test, &self.population),
            ],
            population: s.population,
            epochs: s.epochs,
            seed: s.seed,
            unlearn: None,
        }
    }

    /// For the summary.
    pub fn to_json(&self) -> Value {
        json!({
            "target": {"split": "forget", "order": "split order", "samples": self.forget.len()},
            "heldout_members": {"split": "retain", "order": "seeded shuffle", "samples": self.members.len()},
            "heldout_nonmembers": {"split": self.nonmember_split.name(), "order": "seeded shuffle", "samples": self.nonmembers.len()},
            "population": {"split": "test", "order": "seeded shuffle", "samples": self.population.len()},
        })
    }
}

/// One sample: its label, the attacked model's logits, each shadow model's
/// logits and whether that model trained on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// True class.
    pub label: usize,
    /// Logits of the attacked model.
    pub target: Vec<f64>,
    /// Logits of each shadow model.
    pub shadows: Vec<Vec<f64>>,
    /// Whether each shadow model trained on the sample.
    pub inside: Vec<bool>,
}

/// Every role's samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gathered {
    /// The forget split.
    pub forget: Vec<Sample>,
    /// Held-out members.
    pub members: Vec<Sample>,
    /// Held-out non-members.
    pub nonmembers: Vec<Sample>,
    /// Population samples.
    pub population: Vec<Sample>,
}

fn floats(t: &Tensor) -> Result<Vec<f64>, PluginError> {
    Ok(Vec::<f64>::try_from(
        t.f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_flatten(0, -1)?,
    )?)
}

/// Logits of the attacked model and labels on a whole split, in split order.
fn split_logits(
    ctx: &mut HostContext,
    split: Split,
    batch: u32,
) -> Result<(Vec<f64>, Vec<i64>, usize), PluginError> {
    ctx.model_set_train(false)?;
    let (mut logits, mut labels, mut classes) = (Vec::new(), Vec::new(), 0usize);
    for b in ctx.batches(split, batch, false, false)? {
        ctx.check_cancelled()?;
        let (x, y) = b?;
        let out = match tch::no_grad(|| ctx.model_forward(ModelHead::Classifier, &x)) {
            Ok(out) => out,
            Err(PluginError::Host { status, .. }) if status == LetheStatus::UNSUPPORTED => {
                return Err(PluginError::msg(
                    "shadow-model attacks read class probabilities: the model has no classifier",
                ));
            }
            Err(e) => return Err(e),
        };
        classes = out.size().last().copied().unwrap_or(0) as usize;
        logits.extend(floats(&out)?);
        labels.extend(Vec::<i64>::try_from(
            y.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?,
        )?);
    }
    Ok((logits, labels, classes))
}

/// The samples at `positions` of `split`.
fn role(
    ctx: &mut HostContext,
    split: Split,
    positions: &[u64],
    batch: u32,
) -> Result<Vec<Sample>, PluginError> {
    let (target, labels, classes) = split_logits(ctx, split, batch)?;
    let (shadow, members) = ctx.shadow_logits(split)?;
    let size = shadow.size();
    let (k, n) = (size[0] as usize, size[1] as usize);
    let c = size.get(2).copied().unwrap_or(0) as usize;
    if n != labels.len() || c != classes {
        return Err(PluginError::msg(format!(
            "the host's shadow logits of the {} split are {size:?}, the model gives {} × {classes}",
            split.name(),
            labels.len()
        )));
    }
    let shadow = floats(&shadow)?;
    let members = Vec::<u8>::try_from(members.f_to_kind(Kind::Uint8)?.f_flatten(0, -1)?)?;
    positions
        .iter()
        .map(|&p| {
            let i = p as usize;
            let label = *labels.get(i).ok_or_else(|| {
                PluginError::msg(format!("position {p} is past the {} split", split.name()))
            })?;
            Ok(Sample {
                label: usize::try_from(label).unwrap_or(usize::MAX),
                target: target[i * c..(i + 1) * c].to_vec(),
                shadows: (0..k)
                    .map(|m| shadow[(m * n + i) * c..(m * n + i + 1) * c].to_vec())
                    .collect(),
                inside: (0..k).map(|m| members[m * n + i] != 0).collect(),
            })
        })
        .collect()
}

/// The attacked model's and the shadow models' logits on every role (after
/// `shadow_prepare`).
pub fn gather(ctx: &mut HostContext, roles: &Roles, batch: u32) -> Result<Gathered, PluginError> {
    Ok(Gathered {
        forget: role(ctx, Split::Forget, &roles.forget, batch)?,
        members: role(ctx, Split::Retain, &roles.members, batch)?,
        nonmembers: role(ctx, roles.nonmember_split, &roles.nonmembers, batch)?,
        population: role(ctx, Split::Test, &roles.population, batch)?,
    })
}

/// LiRA's observations of `samples`: the logit-scaled confidence of the true
/// class on the attacked model and on each shadow model.
pub fn observations(samples: &[Sample]) -> Result<Vec<crate::lira::Observation>, PluginError> {
    use crate::lira::{Observation, logit_confidence};
    let phi = |logits: &[f64], label: usize| {
        logit_confidence(logits, label)
            .ok_or_else(|| PluginError::msg(format!("label {label} is past the model's classes")))
    };
    samples
        .iter()
        .map(|s| {
            Ok(Observation {
                target: phi(&s.target, s.label)?,
                shadows: s
                    .shadows
                    .iter()
                    .map(|l| phi(l, s.label))
                    .collect::<Result<_, _>>()?,
                inside: s.inside.clone(),
            })
        })
        .collect()
}

/// The decision threshold: scores above it are called members, and at most a
/// share `fpr` of `population` scores is.
pub fn decide(population: &[f64], fpr: f64) -> f64 {
    let mut sorted: Vec<f64> = population.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let allowed = ((fpr.clamp(0.0, 1.0) * n as f64) + 1e-9).floor() as usize;
    if allowed >= n {
        return f64::NEG_INFINITY;
    }
    sorted[n - 1 - allowed]
}

/// Writes every role's scores and decisions (`score > threshold`) and returns
/// the member rates for the summary (forget's complement is the efficacy).
pub fn put_roles(
    ctx: &mut HostContext,
    scores: &[(Role, Vec<f64>)],
    threshold: f64,
) -> Result<Value, PluginError> {
    let mut rates = serde_json::Map::new();
    for (role, s) in scores {
        let predictions: Vec<bool> = s.iter().map(|v| *v > threshold).collect();
        put_scores(ctx, *role, s, &predictions)?;
        if !s.is_empty() {
            rates.insert(
                role.name().to_string(),
                json!({"samples": s.len(), "predicted_member": member_rate(&predictions)}),
            );
        }
    }
    let forget = rates
        .get("forget")
        .and_then(|r| r["predicted_member"].as_f64());
    Ok(json!({
        "member_rates": rates,
        "efficacy": forget.map(|r| 1.0 - r),
        "threshold": threshold,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(heldout: usize, z: usize) -> ShadowSettings {
        ShadowSettings {
            models: 4,
            mode: ShadowMode::Online,
            epochs: 0,
            population: 0,
            heldout,
            z_samples: z,
            decision_fpr: 0.05,
            seed: 3,
            batch_size: 64,
        }
    }

    #[test]
    fn roles_are_seeded_disjoint_and_capped() {
        let r = Roles::new(300, 5700, 1000, 3000, &settings(200, 500)).unwrap();
        assert_eq!(r.forget.len(), 300);
        assert_eq!((r.members.len(), r.nonmembers.len()), (200, 200));
        assert_eq!(r.population.len(), 500);
        assert_eq!(r.nonmember_split, Split::Validation);
        assert_eq!(
            r,
            Roles::new(300, 5700, 1000, 3000, &settings(200, 500)).unwrap()
        );
        let all = Roles::new(300, 5700, 1000, 3000, &settings(0, 0)).unwrap();
        assert_eq!((all.nonmembers.len(), all.population.len()), (1000, 3000));
        // Without validation the test split is halved between the roles.
        let t = Roles::new(10, 100, 0, 40, &settings(0, 0)).unwrap();
        assert_eq!(t.nonmember_split, Split::Test);
        assert_eq!(t.nonmembers.len() + t.population.len(), 40);
        assert!(t.nonmembers.iter().all(|p| !t.population.contains(p)));
        assert!(Roles::new(0, 100, 10, 10, &settings(0, 0)).is_err());
        assert!(Roles::new(5, 100, 10, 0, &settings(0, 0)).is_err());
    }

    #[test]
    fn decisions_call_the_chosen_share_of_the_population_members() {
        let pop: Vec<f64> = (0..100).map(f64::from).collect();
        let t = decide(&pop, 0.05);
        assert_eq!(pop.iter().filter(|s| **s > t).count(), 5);
        assert_eq!(pop.iter().filter(|s| **s > decide(&pop, 0.0)).count(), 0);
        assert_eq!(pop.iter().filter(|s| **s > decide(&pop, 1.0)).count(), 100);
        let p = permutation(50, 9);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u64>>());
        assert_ne!(p, permutation(50, 10));
    }
}
