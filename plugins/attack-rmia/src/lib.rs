//! The Robust Membership Inference Attack (RMIA) of Zarifzadeh, Liu, Bao and
//! Shokri (ICML 2024) as a Lethe attack plugin, `org.lethe.attack.rmia`.
//!
//! The engine trains the reference models with the attacked model's recorded
//! recipe and caches their logits (`lethe.shadow/1`). For a sample `x` the
//! attack compares how much more likely the attacked model makes `x` than the
//! reference models do, `Pr(x|θ)/Pr(x)`, with the same ratio for population
//! samples `z` the attacked model never saw (the test split): the score is the
//! share of `z` with `LR(x, z) = (Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z)) ≥ γ`.
//!
//! * **offline** (the paper's low-cost setting, the default): no reference
//!   model trains on the samples asked about, and
//!   `Pr(x) = ½((1 + a)·mean_OUT Pr(x|θ') + (1 − a))`;
//! * **online**: each sample is in the training half of about half the
//!   reference models, and `Pr(x)` is the mean over all of them.
//!
//! `Pr(·|θ)` is the softmax probability of the true class (one query per
//! sample). Defaults: `γ = 2`, `a = 0.3` (the value the authors' Privacy
//! Meter uses), 2 offline reference models, 2500 population samples. Roles
//! and calibrated decisions as in `lethe_attack_kit::shadow_attack`; scores
//! are in `[0, 1]`, higher = member.

use lethe_attack_kit::results::{Role, put_summary};
use lethe_attack_kit::rmia::{Observation, Reference, probability, scores};
use lethe_attack_kit::shadow_attack::{Roles, Sample, ShadowSettings, decide, gather, put_roles};
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, Params, Plugin, PluginError, ShadowMode,
};
use serde_json::json;

/// Id of the attack.
pub const ID: &str = "org.lethe.attack.rmia";

/// The attack's settings.
pub struct Rmia {
    shadow: ShadowSettings,
    gamma: f64,
    a: f64,
}

fn observations(samples: &[Sample]) -> Result<Vec<Observation>, PluginError> {
    let p = |logits: &[f64], label: usize| {
        probability(logits, label)
            .ok_or_else(|| PluginError::msg(format!("label {label} is past the model's classes")))
    };
    samples
        .iter()
        .map(|s| {
            Ok(Observation {
                target: p(&s.target, s.label)?,
                references: s
                    .shadows
                    .iter()
                    .map(|l| p(l, s.label))
                    .collect::<Result<_, _>>()?,
                inside: s.inside.clone(),
            })
        })
        .collect()
}

impl Plugin for Rmia {
    fn descriptor() -> Descriptor {
        let mut d = Descriptor::new(
            ID,
            "RMIA (robust membership inference)",
            "0.1.0",
            Kind::Attack,
        )
        .description(
            "Compares how much more likely the attacked model makes a sample than reference \
                 models trained by the engine with its recorded recipe (cached between runs), \
                 against the same ratio for population samples it never saw: the score is the \
                 share of population samples z with pairwise likelihood ratio LR(x, z) >= gamma. \
                 Offline (no reference model sees the samples) or online. Higher = member.",
        )
        .citation(
            "Zarifzadeh, Liu, Bao, Shokri, Low-Cost High-Power Membership Inference Attacks, \
                 ICML 2024.",
        )
        .param(
            ParamSpec::choice("mode", "Mode", &["offline", "online"], "offline").help(
                "offline: reference models never train on the samples asked about (the \
                     paper's low-cost setting); online: each sample is in about half of them.",
            ),
        )
        .param(
            ParamSpec::int("reference_models", "Reference models", 1, 1024, 2)
                .group("Shadow models")
                .help(
                    "The paper's point: strong with 1 to 4 reference models; online needs \
                         at least 2.",
                ),
        )
        .param(
            ParamSpec::float("gamma", "γ", 1e-6, 1e6, 2.0)
                .log_scale()
                .help("A population sample z counts when LR(x, z) >= γ."),
        )
        .param(
            ParamSpec::float("offline_a", "Offline a", 0.0, 1.0, 0.3).help(
                "Offline Pr(x) = ((1+a)·mean over reference models + (1-a))/2: how far the \
                     models that never saw x underestimate Pr(x).",
            ),
        );
        for p in ShadowSettings::params(2500) {
            d = d.param(p);
        }
        d
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let mode = match params.str("mode")? {
            "online" => ShadowMode::Online,
            _ => ShadowMode::Offline,
        };
        let models = u32::try_from(params.i64("reference_models")?)
            .map_err(|_| PluginError::msg("reference_models out of range"))?;
        if mode == ShadowMode::Online && models < 2 {
            return Err(PluginError::msg(
                "online RMIA needs at least 2 reference models (with and without each sample)",
            ));
        }
        Ok(Rmia {
            shadow: ShadowSettings::from_params(params, models, mode)?,
            gamma: params.f64("gamma")?,
            a: params.f64("offline_a")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let s = &self.shadow;
        let roles = Roles::for_job(ctx, s)?;
        ctx.progress(0.0, "reference models");
        let shadows = ctx.shadow_prepare(&roles.request(s))?;
        ctx.progress(0.9, "scoring");
        let gathered = gather(ctx, &roles, s.batch_size)?;
        let reference = match s.mode {
            ShadowMode::Online => Reference::Online,
            ShadowMode::Offline => Reference::Offline { a: self.a },
        };
        let z = observations(&gathered.population)?;
        let score = |samples: &[Sample]| -> Result<Vec<f64>, PluginError> {
            scores(&observations(samples)?, &z, reference, self.gamma)
                .map_err(|e| PluginError::msg(e.to_string()))
        };
        let population = score(&gathered.population)?;
        let threshold = decide(&population, s.decision_fpr);
        let scored = vec![
            (Role::Forget, score(&gathered.forget)?),
            (Role::Member, score(&gathered.members)?),
            (Role::NonMember, score(&gathered.nonmembers)?),
            (Role::ShadowNonMember, population),
        ];
        let rates = put_roles(ctx, &scored, threshold)?;
        let summary = json!({
            "attack": ID,
            "mode": s.mode.name(),
            "signal": "softmax probability of the true class",
            "score": "share of population samples z with (Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z)) >= gamma",
            "gamma": self.gamma,
            "offline_a": if s.mode == ShadowMode::Offline { json!(self.a) } else { json!(null) },
            "reference_models": s.models,
            "queries_per_sample": 1,
            "decision": {
                "rule": "score > threshold",
                "threshold": threshold,
                "population_fpr": s.decision_fpr,
            },
            "shadows": shadows,
            "roles": roles.to_json(),
            "seed": s.seed,
            "results": rates,
        });
        put_summary(ctx, &summary)?;
        ctx.progress_metrics(1.0, "done", &rates);
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(Rmia);
