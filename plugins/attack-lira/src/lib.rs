//! The Likelihood Ratio Attack (LiRA) of Carlini, Chien, Nasr, Song, Terzis
//! and Tramèr (IEEE S&P 2022) as a Lethe attack plugin,
//! `org.lethe.attack.lira`.
//!
//! The engine trains `K` shadow models with the attacked model's recorded
//! recipe (`lethe.shadow/1`; an unlearned model's shadows follow the recipe of
//! the model it was unlearned from) and caches their logits, so attacking an
//! original model and the models unlearned from it trains them once. For each
//! sample the attack fits Gaussians to the logit-scaled confidence
//! `φ = log(p_y / (1 − p_y))` on the shadow models that trained on it (IN) and
//! did not (OUT) and scores the attacked model's φ:
//!
//! * **online** (`variant = online`, the paper's main attack): each sample is
//!   in the training half of about half the shadow models; the score is
//!   `log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)`;
//! * **offline**: no shadow model trains on the samples asked about; the score
//!   is the one-sided `(φ − μ_out)/σ_out`.
//!
//! Variances are per sample, or one global variance (`variance = global`; the
//! default `auto` picks it below 64 shadow models, as the paper advises).
//! Samples: the forget set (the target), held-out validation non-members and
//! as many retain members (the attack's power on this model), and test-split
//! population samples, where the yes/no decisions are calibrated to
//! `decision_fpr` (see `lethe_attack_kit::shadow_attack`). Scores: higher =
//! member. The engine turns the score files into AUC, ROC, TPR at low FPR and
//! bootstrap intervals.
//!
//! Cost: `K` trainings of the recipe on half the pool. `lethe attack
//! --estimate` prints how many are cached and how long the rest will take;
//! `shadow_epochs` and `shadow_population` trade power for time.

use lethe_attack_kit::lira::{
    Fit, Observation, Variance, offline_scores, online_pvalues, online_scores,
};
use lethe_attack_kit::results::{Role, put_positions, put_pvalues, put_summary};
use lethe_attack_kit::shadow_attack::{
    Roles, ShadowSettings, decide, gather, observations, put_roles, variance_of, variance_param,
};
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, Params, Plugin, PluginError, ShadowMode,
};
use serde_json::json;

/// Id of the attack.
pub const ID: &str = "org.lethe.attack.lira";

/// The attack's settings.
pub struct Lira {
    shadow: ShadowSettings,
    variance: Option<Variance>,
}

impl Plugin for Lira {
    fn descriptor() -> Descriptor {
        let mut d = Descriptor::new(ID, "LiRA (likelihood ratio attack)", "0.1.0", Kind::Attack)
            .description(
                "Shadow models trained by the engine with the attacked model's recorded recipe \
                 (cached between runs) give, for every sample, Gaussians of the logit-scaled \
                 confidence log(p/(1-p)) with and without the sample in training; the score is \
                 the likelihood ratio of the attacked model's confidence (online) or its \
                 one-sided z-value against the models that never saw it (offline). Higher = \
                 member.",
            )
            .citation(
                "Carlini, Chien, Nasr, Song, Terzis, Tramèr, Membership Inference Attacks From \
                 First Principles, IEEE S&P 2022.",
            )
            .param(
                ParamSpec::choice("variant", "Variant", &["online", "offline"], "online").help(
                    "online: shadow models train with and without each sample (the paper's \
                     main attack); offline: no shadow model ever sees the samples asked about.",
                ),
            )
            .param(
                ParamSpec::int("shadow_models", "Shadow models", 1, 1024, 16)
                    .group("Shadow models")
                    .help(
                        "K. The paper trains 256 on CIFAR-10 and shows most of the power with \
                         16 to 64; each is one training run of the recipe on half the pool.",
                    ),
            )
            .param(variance_param());
        for p in ShadowSettings::params(1000) {
            d = d.param(p);
        }
        d
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let mode = match params.str("variant")? {
            "offline" => ShadowMode::Offline,
            _ => ShadowMode::Online,
        };
        let models = u32::try_from(params.i64("shadow_models")?)
            .map_err(|_| PluginError::msg("shadow_models out of range"))?;
        if mode == ShadowMode::Online && models < 2 {
            return Err(PluginError::msg(
                "online LiRA needs at least 2 shadow models (with and without each sample)",
            ));
        }
        let variance = variance_of(params)?;
        Ok(Lira {
            shadow: ShadowSettings::from_params(params, models, mode)?,
            variance,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let s = &self.shadow;
        let roles = Roles::for_job(ctx, s)?;
        ctx.progress(0.0, "shadow models");
        let shadows = ctx.shadow_prepare(&roles.request(s))?;
        ctx.progress(0.9, "scoring");
        let gathered = gather(ctx, &roles, s.batch_size)?;
        let variance = self
            .variance
            .unwrap_or_else(|| Variance::auto(s.models as usize));
        let roles_obs = [
            observations(&gathered.population)?,
            observations(&gathered.forget)?,
            observations(&gathered.members)?,
            observations(&gathered.nonmembers)?,
        ];
        // One spread for every sample asked about, shared by all roles.
        let fit = Fit::over(variance, &roles_obs.concat());
        let score = |obs: &[Observation]| -> Result<Vec<f64>, PluginError> {
            match s.mode {
                ShadowMode::Online => online_scores(obs, fit),
                ShadowMode::Offline => offline_scores(obs, fit),
            }
            .map_err(|e| PluginError::msg(e.to_string()))
        };
        let [population, forget, members, nonmembers] = &roles_obs;
        let population = score(population)?;
        let threshold = decide(&population, s.decision_fpr);
        let scored = vec![
            (Role::Forget, score(forget)?),
            (Role::Member, score(members)?),
            (Role::NonMember, score(nonmembers)?),
            (Role::ShadowNonMember, population),
        ];
        let rates = put_roles(ctx, &scored, threshold)?;
        if s.mode == ShadowMode::Online {
            // Per-sample p-values against "never saw it" (online only: they
            // read the IN fit too), and where the held-out samples are, so
            // that a per-sample report can set two runs side by side.
            let pv = |obs: &[Observation]| {
                online_pvalues(obs, fit).map_err(|e| PluginError::msg(e.to_string()))
            };
            let [_, forget, members, nonmembers] = &roles_obs;
            put_pvalues(ctx, Role::Forget, &pv(forget)?)?;
            put_pvalues(ctx, Role::Member, &pv(members)?)?;
            put_pvalues(ctx, Role::NonMember, &pv(nonmembers)?)?;
            put_positions(ctx, Role::Member, &roles.members)?;
            put_positions(ctx, Role::NonMember, &roles.nonmembers)?;
        }
        let summary = json!({
            "attack": ID,
            "variant": s.mode.name(),
            "statistic": "logit-scaled confidence of the true class, log(p/(1-p))",
            "score": match s.mode {
                ShadowMode::Online => "log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out)",
                ShadowMode::Offline => "(phi - mu_out) / sd_out",
            },
            "variance": variance.name(),
            "global_sd": match fit {
                Fit::Global(g) => json!({"in": g.inside, "out": g.outside}),
                Fit::PerExample => json!(null),
            },
            "shadow_models": s.models,
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

lethe_plugin_api::declare_plugin!(Lira);
