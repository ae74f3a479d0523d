//! EncoderMI as a Lethe attack plugin: an encoder aligns the augmented views of
//! its training images more tightly than those of unseen ones. Each sample gets
//! `views` augmentations (the recipe the encoder was trained with) and the
//! pairwise cosine similarities of their backbone features (45 for 10 views).
//!
//! * `threshold` variant (the EMIA of the Alignment Calibration evaluation): the
//!   score is the mean similarity, the decision `score >= t` with `t` the best of
//!   a 501-point grid on [0, 1] for shadow members (retain) vs non-members (test);
//! * `classifier` variant (EncoderMI's inference classifier, on the model itself
//!   rather than on shadow encoders): logistic regression over the sorted,
//!   standardised similarities; the score is its log-odds.

use lethe_attack_kit::Features;
use lethe_attack_kit::logistic::{Logistic, Standardizer};
use lethe_attack_kit::results::{put_gathered, put_summary};
use lethe_attack_kit::sets::{Plan, Sample, Sizes, gather};
use lethe_attack_kit::thresholds::grid_threshold;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Augment, Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError,
};
use lethe_plugin_api::tch::{self, Device, Tensor};
use serde_json::json;

/// Threshold on the mean similarity, or a classifier over all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Threshold,
    Classifier,
}

/// The attack's settings.
pub struct EncoderMi {
    variant: Variant,
    views: i64,
    recipe: Augment,
    grid_points: usize,
    c: f64,
    sizes: Sizes,
    batch_size: u32,
    seed: i64,
}

/// Pairwise cosine similarities (`i < j`) of the views' features, per sample.
fn view_similarities(
    ctx: &mut HostContext,
    x: &Tensor,
    views: i64,
    recipe: Augment,
) -> Result<Vec<Vec<f64>>, PluginError> {
    tch::no_grad(|| {
        let mut feats = Vec::with_capacity(views as usize);
        for _ in 0..views {
            let v = ctx.augment(x, recipe)?;
            let f = ctx.model_forward(ModelHead::Encoder, &v)?;
            feats.push(f.f_flatten(1, -1)?);
        }
        // [B, V, D], rows normalised: the Gram matrix holds the cosines.
        let f = Tensor::f_stack(&feats, 1)?;
        let norm = f
            .f_norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)?
            .f_clamp_min(1e-12)?;
        let f = f.f_div(&norm)?;
        let gram = f
            .f_bmm(&f.f_transpose(1, 2)?)?
            .f_to_kind(tch::Kind::Double)?
            .f_to_device(Device::Cpu)?;
        let b = gram.size()[0];
        let flat = Vec::<f64>::try_from(gram.f_contiguous()?.f_view([-1])?)?;
        let v = views as usize;
        Ok((0..b as usize)
            .map(|s| {
                let g = &flat[s * v * v..(s + 1) * v * v];
                (0..v)
                    .flat_map(|i| (i + 1..v).map(move |j| g[i * v + j]))
                    .collect()
            })
            .collect())
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

impl Plugin for EncoderMi {
    fn descriptor() -> Descriptor {
        let [shadow, heldout] = Sizes::params();
        Descriptor::new(
            "org.lethe.attack.encodermi",
            "EncoderMI (augmented-view alignment)",
            "0.1.0",
            Kind::Attack,
        )
        .description(
            "Membership inference against (contrastive) encoders: members' augmented views \
             align more tightly. Scores each sample by the pairwise cosine similarities of \
             the backbone features of its augmented views: their mean against a threshold \
             fitted on shadow members (retain) vs non-members (test), or a logistic \
             classifier over the sorted similarities.",
        )
        .citation(
            "Liu, Jia, Qu & Gong, EncoderMI: Membership Inference against Pre-trained Encoders \
             in Contrastive Learning, ACM CCS 2021; threshold variant as in Wang et al., \
             Machine Unlearning in Contrastive Learning (Alignment Calibration), 2024.",
        )
        .param(
            ParamSpec::choice("variant", "Variant", &["threshold", "classifier"], "threshold")
                .help("threshold: mean similarity vs a grid-searched threshold (EMIA); classifier: logistic regression over the sorted similarities."),
        )
        .param(
            ParamSpec::int("views", "Augmented views", 2, 64, 10)
                .help("Views per sample; 10 views give 45 pairwise similarities."),
        )
        .param(
            ParamSpec::choice(
                "augment",
                "Augmentation",
                &["training", "contrastive", "light"],
                "training",
            )
            .help("training: the recipe recorded in the checkpoint (the encoder's own)."),
        )
        .param(
            ParamSpec::int("grid_points", "Threshold grid points", 2, 100_000, 501)
                .group("Threshold variant")
                .help("Evenly spaced thresholds on [0, 1]."),
        )
        .param(
            ParamSpec::float("c", "Inverse regularisation C", 1e-6, 1e6, 1.0)
                .log_scale()
                .group("Classifier variant"),
        )
        .param(shadow)
        .param(heldout)
        .param(ParamSpec::int("batch_size", "Batch size", 1, 4096, 128).group("Data"))
        .param(
            ParamSpec::int("seed", "Seed", 0, i64::from(i32::MAX), 0)
                .help("Seeds the augmentations."),
        )
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(EncoderMi {
            variant: match params.str("variant")? {
                "classifier" => Variant::Classifier,
                _ => Variant::Threshold,
            },
            views: params.i64("views")?,
            recipe: match params.str("augment")? {
                "contrastive" => Augment::Contrastive,
                "light" => Augment::Light,
                _ => Augment::Training,
            },
            grid_points: usize::try_from(params.i64("grid_points")?).unwrap_or(501),
            c: params.f64("c")?,
            sizes: Sizes::from_params(params)?,
            batch_size: u32::try_from(params.i64("batch_size")?).unwrap_or(128),
            seed: params.i64("seed")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        tch::manual_seed(self.seed);
        ctx.model_set_train(false)?;
        let plan = Plan::for_job(ctx, self.sizes)?;
        let (views, recipe) = (self.views, self.recipe);
        let gathered = gather(ctx, &plan, self.batch_size, &mut |ctx, x, _| {
            view_similarities(ctx, x, views, recipe)
        })?;
        let means = |v: &[Sample]| v.iter().map(|s| mean(&s.features)).collect::<Vec<_>>();
        let shadow_m = means(&gathered.shadow_members);
        let shadow_n = means(&gathered.shadow_nonmembers);
        let mut summary = json!({
            "attack": "org.lethe.attack.encodermi",
            "views": views,
            "pairs_per_sample": views * (views - 1) / 2,
            "augment": format!("{recipe:?}").to_lowercase(),
            "roles": plan.to_json(),
            "shadow_mean_similarity": {"members": mean(&shadow_m), "nonmembers": mean(&shadow_n)},
        });
        let rates = match self.variant {
            Variant::Threshold => {
                let (t, acc) = grid_threshold(&shadow_m, &shadow_n, 0.0, 1.0, self.grid_points)
                    .ok_or_else(|| PluginError::msg("no shadow data to fit a threshold on"))?;
                summary["variant"] = json!("threshold");
                summary["score"] =
                    json!("mean pairwise cosine similarity; >= threshold predicts member");
                summary["threshold"] = json!(t);
                summary["shadow_grid_balanced_accuracy"] = json!(acc);
                put_gathered(ctx, &gathered, &|s: &Sample| {
                    let m = mean(&s.features);
                    (m, m >= t)
                })?
            }
            Variant::Classifier => {
                let rows = |v: &[Sample]| {
                    Features::from_rows(&v.iter().map(|s| sorted(&s.features)).collect::<Vec<_>>())
                        .map_err(|e| PluginError::msg(e.to_string()))
                };
                let x = rows(&gathered.shadow_members)?
                    .concat(&rows(&gathered.shadow_nonmembers)?)
                    .map_err(|e| PluginError::msg(e.to_string()))?;
                let member: Vec<bool> = (0..x.len())
                    .map(|i| i < gathered.shadow_members.len())
                    .collect();
                let scaler = Standardizer::fit(&x);
                let model = Logistic::fit(&scaler.apply(&x), &member, self.c)
                    .ok_or_else(|| PluginError::msg("the logistic regression could not be fitted (one class only, or singular data)"))?;
                summary["variant"] = json!("classifier");
                summary["score"] = json!(
                    "log-odds of a logistic regression over the sorted similarities; > 0 predicts member"
                );
                summary["classifier"] = json!({
                    "c": self.c,
                    "weights": model.weights,
                    "intercept": model.intercept,
                    "newton_steps": model.iterations,
                });
                put_gathered(ctx, &gathered, &|s: &Sample| {
                    let f = Features::new(sorted(&s.features), s.features.len())
                        .map(|f| model.decision_function(&scaler.apply(&f))[0])
                        .unwrap_or(f64::NAN);
                    (f, f > 0.0)
                })?
            }
        };
        summary["results"] = rates.clone();
        put_summary(ctx, &summary)?;
        ctx.progress_metrics(1.0, "done", &rates);
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(EncoderMi);
