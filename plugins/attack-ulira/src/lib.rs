//! U-LiRA, the per-sample evaluation of inexact unlearning of Hayes, Shumailov,
//! Triantafillou, Khalifa and Papernot ("Inexact Unlearning Needs More Careful
//! Evaluations to Avoid a False Sense of Privacy", SaTML 2025), as a Lethe
//! attack plugin, `org.lethe.attack.ulira`.
//!
//! It attacks an *unlearned* model. The engine trains `K` shadow models with
//! the original model's recorded recipe on random halves of a pool (each
//! target in about half of them, as online LiRA) and then unlearns each of
//! them with the very method and parameters that made the attacked model
//! (`lethe.shadow/1` with an `unlearn` block, ABI 1.4): every target a shadow
//! trained on is in its forget set. So for each sample there are two kinds of
//! reference models: trained on it and then unlearned (IN), and never trained
//! on it (OUT). The statistic is LiRA's logit-scaled confidence
//! `φ = log(p_y / (1 − p_y))`; the score is `log N(φ; μ_in, σ_in²) −
//! log N(φ; μ_out, σ_out²)` of the attacked model's φ, and the p-value the
//! chance that a model that never saw the sample scores at least as high
//! (`lethe_attack_kit::lira::lr_pvalue`).
//!
//! Roles: the forget split (the deletion under test), as many held-out
//! validation samples the model never saw (non-members; unlearned in the
//! shadows that trained on them, like the forget set, so both sides are
//! judged by the same test and a shadow forgets about as many samples as the
//! deletion did) and as many retain samples (members, kept by the shadows:
//! how exposed retained data is after the deletion). The pool also holds
//! LiRA's population samples, unscored, so that LiRA on the original model
//! with the same settings finds the same trained shadows. The yes/no
//! decisions are calibrated to `decision_fpr` on the non-members themselves. The engine
//! turns the scores into AUC and TPR at low FPR with intervals, and the
//! p-values into the share of forgotten samples an attacker can still tell
//! apart, with its Clopper–Pearson interval.

use lethe_attack_kit::lira::{Fit, Observation, Variance, online_pvalues, online_scores};
use lethe_attack_kit::results::{Role, put_positions, put_pvalues, put_summary};
use lethe_attack_kit::shadow_attack::{
    Roles, ShadowSettings, decide, gather, observations, put_roles, variance_of, variance_param,
};
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, Params, Plugin, PluginError, ShadowMode, ShadowRequest,
    ShadowTargets, ShadowUnlearn, Split,
};
use serde_json::json;

/// Id of the attack.
pub const ID: &str = "org.lethe.attack.ulira";

/// The attack's settings.
pub struct ULira {
    shadow: ShadowSettings,
    variance: Option<Variance>,
    alpha: f64,
}

/// LiRA's shadow request for the same roles (so that LiRA on the original
/// model with the same settings shares the trained shadow models), with the
/// forget set and the held-out non-members forgotten by every shadow that
/// trained on them; members and population samples stay in.
fn request(roles: &Roles, s: &ShadowSettings) -> ShadowRequest {
    let mut request = roles.request(s);
    request.unlearn = Some(ShadowUnlearn {
        forget: vec![
            ShadowTargets {
                split: Split::Forget,
                positions: None,
            },
            ShadowTargets {
                split: roles.nonmember_split,
                positions: Some(roles.nonmembers.clone()),
            },
        ],
        method: None,
        params: None,
    });
    request
}

impl Plugin for ULira {
    fn descriptor() -> Descriptor {
        let mut d = Descriptor::new(
            ID,
            "U-LiRA (per-sample unlearning check)",
            "0.1.0",
            Kind::Attack,
        )
        .description(
            "Attacks an unlearned model sample by sample. Shadow models are trained by the \
                 original model's recipe and then unlearned with the same method and parameters \
                 (cached between runs); for every sample, the logit-scaled confidence of \
                 models that trained on it and then forgot it is compared with that of models \
                 that never saw it, and the unlearned model's confidence is scored by their \
                 likelihood ratio, with a p-value against 'never saw it'. Higher = still \
                 member-like.",
        )
        .citation(
            "Hayes, Shumailov, Triantafillou, Khalifa, Papernot, Inexact Unlearning Needs \
                 More Careful Evaluations to Avoid a False Sense of Privacy, SaTML 2025 \
                 (arXiv 2403.01218).",
        )
        .param(
            ParamSpec::int("shadow_models", "Shadow models", 2, 1024, 16)
                .group("Shadow models")
                .help(
                    "K: each is a training run of the recipe on half the pool plus one run \
                         of the unlearning method. Each sample is trained and then unlearned in \
                         about K/2 of them and never seen by the others.",
                ),
        )
        .param(variance_param());
        // LiRA's shadow settings, read the U-LiRA way where it differs.
        for p in ShadowSettings::params(1000) {
            let key = p.key.clone();
            d = d.param(match key.as_str() {
                "shadow_epochs" => p.help("0 = the original model's recorded recipe."),
                "shadow_population" => p.help(
                    "Samples the shadow models' halves are drawn from, the targets included; \
                     0 = every sample of the dataset.",
                ),
                "heldout_size" => p.help(
                    "Held-out non-members (validation) and as many retained members; 0 = as \
                     many as the forget set, so that a shadow model forgets about as many \
                     samples as the deletion did.",
                ),
                "z_samples" => p.help(
                    "Test-split samples in the shadow models' pool, as LiRA has them: with the \
                     same settings, LiRA on the original model reuses these shadow models \
                     (lethe verify-samples runs both). Not scored.",
                ),
                "decision_fpr" => p.help(
                    "The member/non-member decisions call this share of the held-out \
                     non-members members.",
                ),
                "seed" => p.help("Draws the held-out subsets and the shadow models."),
                _ => p,
            });
            if key == "z_samples" {
                d = d.param(
                    ParamSpec::float("alpha", "Significance level", 1e-6, 0.5, 0.05)
                        .group("Decisions")
                        .help(
                            "A forgotten sample counts as distinguishable when its p-value is \
                             below this.",
                        ),
                );
            }
        }
        d
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let models = u32::try_from(params.i64("shadow_models")?)
            .map_err(|_| PluginError::msg("shadow_models out of range"))?;
        Ok(ULira {
            shadow: ShadowSettings::from_params(params, models, ShadowMode::Online)?,
            variance: variance_of(params)?,
            alpha: params.f64("alpha")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let mut s = self.shadow.clone();
        if s.heldout == 0 {
            s.heldout = ctx
                .data_len(Split::Forget)?
                .map_or(0, |n| n as usize)
                .max(1);
        }
        let roles = Roles::for_job(ctx, &s)?;
        ctx.progress(0.0, "shadow models: training, then unlearning each");
        let shadows = ctx.shadow_prepare(&request(&roles, &s))?;
        ctx.progress(0.9, "scoring");
        let gathered = gather(ctx, &roles, s.batch_size)?;
        let variance = self
            .variance
            .unwrap_or_else(|| Variance::auto(s.models as usize));
        let obs = [
            observations(&gathered.forget)?,
            observations(&gathered.members)?,
            observations(&gathered.nonmembers)?,
        ];
        let fit = Fit::over(variance, &obs.concat());
        let err = |e: lethe_attack_kit::lira::LiraError| PluginError::msg(e.to_string());
        let score = |o: &[Observation]| online_scores(o, fit).map_err(err);
        let pvalue = |o: &[Observation]| online_pvalues(o, fit).map_err(err);
        let [forget, members, nonmembers] = &obs;
        let (forget_scores, member_scores, non_scores) =
            (score(forget)?, score(members)?, score(nonmembers)?);
        let threshold = decide(&non_scores, s.decision_fpr);
        let (forget_p, member_p, non_p) = (pvalue(forget)?, pvalue(members)?, pvalue(nonmembers)?);
        let rates = put_roles(
            ctx,
            &[
                (Role::Forget, forget_scores),
                (Role::Member, member_scores),
                (Role::NonMember, non_scores),
            ],
            threshold,
        )?;
        put_pvalues(ctx, Role::Forget, &forget_p)?;
        put_pvalues(ctx, Role::Member, &member_p)?;
        put_pvalues(ctx, Role::NonMember, &non_p)?;
        put_positions(ctx, Role::Member, &roles.members)?;
        put_positions(ctx, Role::NonMember, &roles.nonmembers)?;
        let below = |p: &[f64]| p.iter().filter(|v| **v < self.alpha).count();
        let summary = json!({
            "attack": ID,
            "variant": "online",
            "statistic": "logit-scaled confidence of the true class, log(p/(1-p))",
            "score": "log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out); IN = trained, then unlearned by the same method",
            "pvalue": "P(score >= observed | phi ~ N(mu_out, sd_out)): the chance that a model that never saw the sample looks at least as member-like",
            "variance": variance.name(),
            "global_sd": match fit {
                Fit::Global(g) => json!({"in": g.inside, "out": g.outside}),
                Fit::PerExample => json!(null),
            },
            "shadow_models": s.models,
            "alpha": self.alpha,
            "distinguishable": {
                "forget": {"samples": forget_p.len(), "below_alpha": below(&forget_p)},
                "nonmember": {"samples": non_p.len(), "below_alpha": below(&non_p)},
                "member": {"samples": member_p.len(), "below_alpha": below(&member_p)},
            },
            "decision": {
                "rule": "score > threshold",
                "threshold": threshold,
                "calibrated_on": "held-out non-members",
                "fpr": s.decision_fpr,
            },
            "shadows": shadows,
            "roles": {
                "target": {"split": "forget", "samples": roles.forget.len()},
                "heldout_members": {"split": "retain", "order": "seeded shuffle", "samples": roles.members.len(), "unlearned_in_shadows": false},
                "heldout_nonmembers": {"split": roles.nonmember_split.name(), "order": "seeded shuffle", "samples": roles.nonmembers.len(), "unlearned_in_shadows": true},
            },
            "seed": s.seed,
            "results": rates,
        });
        put_summary(ctx, &summary)?;
        ctx.progress_metrics(1.0, "done", &rates);
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(ULira);
