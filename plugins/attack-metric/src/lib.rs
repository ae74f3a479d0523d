//! Song & Mittal's metric-based membership inference as a Lethe attack plugin.
//!
//! Each sample's member value is one of correctness, confidence, entropy or
//! modified entropy of the model's prediction, on a log scale where higher =
//! member (the logit `log(p_y/(1−p_y))`, `−log H`, `−log M`: same decisions as
//! the raw metrics, see `lethe_attack_kit::scores`); thresholds that maximise
//! balanced accuracy are fitted per class on shadow members (retain) and
//! shadow non-members (test). A sample's score is its value minus its class's
//! threshold, so the score's sign is the decision and scores rank across
//! classes. Encoders are read through a linear probe trained on retain features.

use lethe_attack_kit::probe::{Probabilities, ProbeConfig};
use lethe_attack_kit::results::{put_gathered, put_summary};
use lethe_attack_kit::scores::Metric;
use lethe_attack_kit::sets::{Plan, Sample, Sizes, gather};
use lethe_attack_kit::thresholds::ClassThresholds;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError};
use lethe_plugin_api::tch;
use serde_json::json;

/// The attack's settings.
pub struct MetricMia {
    metric: Metric,
    class_thresholds: bool,
    sizes: Sizes,
    batch_size: u32,
    probe: ProbeConfig,
    seed: i64,
}

impl Plugin for MetricMia {
    fn descriptor() -> Descriptor {
        let [shadow, heldout] = Sizes::params();
        let [probe, probe_epochs] = ProbeConfig::params();
        Descriptor::new(
            "org.lethe.attack.metric-mia",
            "Metric-based MIA (Song & Mittal)",
            "0.1.0",
            Kind::Attack,
        )
        .description(
            "Thresholds a per-sample metric of the model's prediction (correctness, \
             confidence, entropy or modified entropy), with class-dependent thresholds \
             fitted on shadow members (retain) and non-members (test). Scores are the \
             metric minus its class threshold (higher = member).",
        )
        .citation(
            "Song & Mittal, Systematic Evaluation of Privacy Risks of Machine Learning \
             Models, USENIX Security 2021.",
        )
        .param(
            ParamSpec::choice(
                "metric",
                "Metric",
                &["modified-entropy", "entropy", "confidence", "correctness"],
                "modified-entropy",
            )
            .help("Modified entropy M(p,y) = -(1-p_y) log p_y - sum_{i!=y} p_i log(1-p_i)."),
        )
        .param(
            ParamSpec::bool("class_thresholds", "Class-dependent thresholds", true)
                .help("One threshold per class (else one for all), as in the paper."),
        )
        .param(shadow)
        .param(heldout)
        .param(ParamSpec::int("batch_size", "Batch size", 1, 8192, 256).group("Data"))
        .param(probe)
        .param(probe_epochs)
        .param(
            ParamSpec::int("seed", "Seed", 0, i64::from(i32::MAX), 0)
                .help("Seeds the probe; the seed of lethe evaluate shares its probe."),
        )
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let name = params.str("metric")?;
        Ok(MetricMia {
            metric: Metric::parse(name)
                .ok_or_else(|| PluginError::msg(format!("unknown metric `{name}`")))?,
            class_thresholds: params.bool("class_thresholds")?,
            sizes: Sizes::from_params(params)?,
            batch_size: u32::try_from(params.i64("batch_size")?).unwrap_or(256),
            probe: ProbeConfig::from_params(params, params.i64("seed")?)?,
            seed: params.i64("seed")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        tch::manual_seed(self.seed);
        let plan = Plan::for_job(ctx, self.sizes)?;
        let probs = Probabilities::for_job(ctx, &self.probe)?;
        let metric = self.metric;
        let gathered = gather(ctx, &plan, self.batch_size, &mut |ctx, x, y| {
            let labels = Vec::<i64>::try_from(y.f_to_kind(tch::Kind::Int64)?)?;
            Ok(probs
                .log_probabilities(ctx, x)?
                .iter()
                .zip(labels)
                .map(|(lp, l)| {
                    vec![metric.member_value(lp, usize::try_from(l).unwrap_or(usize::MAX))]
                })
                .collect())
        })?;
        let value = |s: &Sample| s.features.first().copied().unwrap_or(f64::NAN);
        let values = |v: &[Sample]| v.iter().map(value).collect::<Vec<_>>();
        let labels = |v: &[Sample]| v.iter().map(|s| s.label).collect::<Vec<_>>();
        // Correctness is already a decision: right = member.
        let thresholds = if metric == Metric::Correctness {
            ClassThresholds {
                per_class: Vec::new(),
                global: 0.5,
            }
        } else if self.class_thresholds {
            ClassThresholds::fit(
                &values(&gathered.shadow_members),
                &labels(&gathered.shadow_members),
                &values(&gathered.shadow_nonmembers),
                &labels(&gathered.shadow_nonmembers),
                probs.classes(),
            )
            .ok_or_else(|| PluginError::msg("no shadow data to fit thresholds on"))?
        } else {
            ClassThresholds::global_only(
                &values(&gathered.shadow_members),
                &values(&gathered.shadow_nonmembers),
            )
            .ok_or_else(|| PluginError::msg("no shadow data to fit a threshold on"))?
        };
        let rates = put_gathered(ctx, &gathered, &|s: &Sample| {
            let margin = thresholds.margin(value(s), s.label);
            (margin, margin >= 0.0)
        })?;
        let summary = json!({
            "attack": "org.lethe.attack.metric-mia",
            "metric": metric.name(),
            "score": "member value (correctness, logit of p_y, -log entropy or -log modified entropy) minus its class threshold; >= 0 predicts member",
            "thresholds": {
                "global": thresholds.global,
                "per_class": thresholds.per_class,
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

lethe_plugin_api::declare_plugin!(MetricMia);
