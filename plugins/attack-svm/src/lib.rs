//! The confidence-based membership attack of the Unlearn-Sparse / SalUn
//! evaluation (and the CMIA of Alignment Calibration) as a Lethe attack plugin:
//! an RBF SVM, `C = 3`, `gamma = 1/n_features`, fitted on one feature of the
//! model's prediction for shadow members (retain) and non-members (test), then
//! asked about the forget set. Its share of forget samples predicted
//! non-member is the papers' "MIA efficacy". Scores are the SVM's decision
//! values (higher = member).

use lethe_attack_kit::Features;
use lethe_attack_kit::probe::{Probabilities, ProbeConfig};
use lethe_attack_kit::results::{Role, put_gathered, put_summary};
use lethe_attack_kit::scores::Metric;
use lethe_attack_kit::sets::{Plan, Sample, Sizes, gather};
use lethe_attack_kit::svm::{Svc, SvcConfig};
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError};
use lethe_plugin_api::tch::{self, Tensor};
use serde_json::json;

/// What the SVM looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    /// One Song & Mittal metric.
    Metric(Metric),
    /// The whole probability vector.
    Probabilities,
}

/// The attack's settings.
pub struct SvmMia {
    feature: Feature,
    svc: SvcConfig,
    sizes: Sizes,
    batch_size: u32,
    probe: ProbeConfig,
    write_features: bool,
    seed: i64,
}

impl Plugin for SvmMia {
    fn descriptor() -> Descriptor {
        let [shadow, heldout] = Sizes::params();
        let [probe, probe_epochs] = ProbeConfig::params();
        Descriptor::new(
            "org.lethe.attack.svm-mia",
            "Confidence-based MIA (RBF SVM)",
            "0.1.0",
            Kind::Attack,
        )
        .description(
            "Fits an RBF support-vector classifier (C=3, gamma=1/n_features, as scikit-learn's \
             SVC in the Unlearn-Sparse/SalUn code) on a feature of the model's prediction for \
             shadow members (retain) and non-members (test) and scores the forget set; \
             efficacy is the share of the forget set predicted non-member.",
        )
        .citation(
            "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023; \
             Fan et al., SalUn, ICLR 2024; Song & Mittal, USENIX Security 2021.",
        )
        .param(
            ParamSpec::choice(
                "feature",
                "Feature",
                &[
                    "confidence",
                    "correctness",
                    "entropy",
                    "modified-entropy",
                    "probabilities",
                ],
                "confidence",
            )
            .help("The true-class confidence is what the papers report (CMIA / MIA-efficacy)."),
        )
        .param(ParamSpec::float("c", "C", 1e-6, 1e6, 3.0).log_scale().group("SVM"))
        .param(
            ParamSpec::float("gamma", "Gamma", 0.0, 1e6, 0.0)
                .group("SVM")
                .help("RBF width; 0 = 1/n_features (scikit-learn's gamma='auto')."),
        )
        .param(
            ParamSpec::float("tol", "Tolerance", 1e-8, 1.0, 1e-3)
                .log_scale()
                .group("SVM"),
        )
        .param(
            ParamSpec::int("max_iter", "Max SMO iterations", 1, 100_000_000, 10_000_000)
                .group("SVM"),
        )
        .param(shadow)
        .param(heldout)
        .param(ParamSpec::int("batch_size", "Batch size", 1, 8192, 256).group("Data"))
        .param(probe)
        .param(probe_epochs)
        .param(
            ParamSpec::bool("write_features", "Write features", false)
                .group("Data")
                .help("Also write the SVM's input rows per role (features_<role>), to audit or refit it elsewhere."),
        )
        .param(ParamSpec::int("seed", "Seed", 0, i64::from(i32::MAX), 0).help("Seeds the probe; the seed of lethe evaluate shares its probe."))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let name = params.str("feature")?;
        let feature = if name == "probabilities" {
            Feature::Probabilities
        } else {
            Feature::Metric(
                Metric::parse(name)
                    .ok_or_else(|| PluginError::msg(format!("unknown feature `{name}`")))?,
            )
        };
        let gamma = params.f64("gamma")?;
        Ok(SvmMia {
            feature,
            svc: SvcConfig {
                c: params.f64("c")?,
                gamma: (gamma > 0.0).then_some(gamma),
                tol: params.f64("tol")?,
                max_iter: usize::try_from(params.i64("max_iter")?).unwrap_or(usize::MAX),
                ..SvcConfig::default()
            },
            sizes: Sizes::from_params(params)?,
            batch_size: u32::try_from(params.i64("batch_size")?).unwrap_or(256),
            probe: ProbeConfig::from_params(params, params.i64("seed")?)?,
            write_features: params.bool("write_features")?,
            seed: params.i64("seed")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        tch::manual_seed(self.seed);
        let plan = Plan::for_job(ctx, self.sizes)?;
        let probs = Probabilities::for_job(ctx, &self.probe)?;
        let feature = self.feature;
        let gathered = gather(ctx, &plan, self.batch_size, &mut |ctx, x, y| {
            let labels = Vec::<i64>::try_from(y.f_to_kind(tch::Kind::Int64)?)?;
            Ok(probs
                .log_probabilities(ctx, x)?
                .into_iter()
                .zip(labels)
                .map(|(lp, l)| match feature {
                    Feature::Probabilities => lp.iter().map(|v| v.exp()).collect(),
                    // The paper's quantity (p_y, H, M): the SVM is fitted on it.
                    Feature::Metric(m) => {
                        vec![m.value(&lp, usize::try_from(l).unwrap_or(usize::MAX))]
                    }
                })
                .collect())
        })?;
        let rows = |v: &[Sample]| {
            Features::from_rows(&v.iter().map(|s| s.features.clone()).collect::<Vec<_>>())
                .map_err(|e| PluginError::msg(e.to_string()))
        };
        let x = rows(&gathered.shadow_members)?
            .concat(&rows(&gathered.shadow_nonmembers)?)
            .map_err(|e| PluginError::msg(e.to_string()))?;
        let member: Vec<bool> = (0..x.len())
            .map(|i| i < gathered.shadow_members.len())
            .collect();
        ctx.progress(
            0.9,
            &format!("fitting the SVM on {} shadow samples", x.len()),
        );
        ctx.check_cancelled()?;
        let svm = Svc::fit(&x, &member, &self.svc).map_err(|e| PluginError::msg(e.to_string()))?;
        if svm.hit_max_iter {
            ctx.warn(&format!(
                "the SVM stopped at max_iter = {} before reaching the tolerance",
                self.svc.max_iter
            ));
        }
        if self.write_features {
            for (role, samples) in [
                (Role::Forget, &gathered.forget),
                (Role::Member, &gathered.members),
                (Role::NonMember, &gathered.nonmembers),
                (Role::ShadowMember, &gathered.shadow_members),
                (Role::ShadowNonMember, &gathered.shadow_nonmembers),
            ] {
                let r = rows(samples)?;
                if r.is_empty() {
                    continue;
                }
                let t = Tensor::from_slice(r.data()).f_view([r.len() as i64, r.dim() as i64])?;
                ctx.put_tensor(&format!("features_{}", role.name()), &t)?;
            }
        }
        let rates = put_gathered(ctx, &gathered, &|s: &Sample| {
            let d = Features::new(s.features.clone(), s.features.len())
                .map(|f| svm.decision_function(&f)[0])
                .unwrap_or(f64::NAN);
            (d, d > 0.0)
        })?;
        let summary = json!({
            "attack": "org.lethe.attack.svm-mia",
            "feature": match feature {
                Feature::Probabilities => "probabilities",
                Feature::Metric(m) => m.name(),
            },
            "score": "SVM decision value; > 0 predicts member",
            "svm": {
                "c": self.svc.c,
                "gamma": svm.gamma(),
                "tol": self.svc.tol,
                "support_vectors": svm.support_count(),
                "iterations": svm.iterations,
                "hit_max_iter": svm.hit_max_iter,
                "rho": svm.rho(),
            },
            "probabilities": probs.to_json(),
            "roles": plan.to_json(),
            "results": rates,
        });
        put_summary(ctx, &summary)?;
        ctx.progress_metrics(1.0, "done", &rates);
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(SvmMia);
