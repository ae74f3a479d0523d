//! Yuan and Zhang's transformer membership attack (USENIX Security 2022) as a
//! Lethe attack plugin, `org.lethe.attack.transformer`: the attacker network
//! that Discriminative Adversarial Unlearning plays against
//! (`lethe_attack_kit::transformer`, shared with the DAU plugin), fitted as an
//! attack.
//!
//! Per sample it reads the model's softmax `p`, the sensitivity of `p` to input
//! noise (the mean of `|softmax(x + ε·N(0,1)) − p| / ε` over `m` draws) and the
//! one-hot label; a BatchNorm, a Linear(3, 64) embedding of the `C` tokens
//! `(p_j, s_j, y_j)`, a 3-layer transformer encoder and two dense layers give
//! membership logits. As in the other attacks of this kit, it is fitted on the
//! model itself, shadow members from the retain split against shadow
//! non-members from the test split (`lethe_attack_kit::sets`), initialised
//! and trained as in the reference code: SGD, learning rate 1e-3, momentum
//! 0.9, weight decay 5e-4, batch 128, 100 epochs, the rate divided by 10 at
//! half and at three quarters of them (`lethe_attack_kit::transformer::fit`). The score is the member log-odds
//! (`logit_member − logit_non-member`, higher = member); the decision is its
//! sign.

use lethe_attack_kit::results::{put_gathered, put_summary};
use lethe_attack_kit::sets::{Gathered, Plan, Sample, Sizes, gather};
use lethe_attack_kit::transformer::{self, Attacker, FitConfig, fit, log_odds};
use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError};
use lethe_plugin_api::tch::{self, Device, Kind as DType, Tensor};
use serde_json::json;

/// Id of the attack.
pub const ID: &str = "org.lethe.attack.transformer";

/// The attack's settings.
pub struct TransformerMia {
    sizes: Sizes,
    batch_size: u32,
    draws: usize,
    noise: f64,
    fit: FitConfig,
    seed: i64,
}

fn rows(samples: &[Sample]) -> i64 {
    samples.len() as i64
}

fn features(samples: &[Sample], device: Device) -> Result<Tensor, PluginError> {
    let dim = samples.first().map_or(0, |s| s.features.len()) as i64;
    let flat: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.features.iter().map(|v| *v as f32))
        .collect();
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([rows(samples), dim])?
        .f_to_device(device)?)
}

impl TransformerMia {
    /// Trains a freshly initialised attacker on the shadow roles.
    fn train(
        &self,
        ctx: &HostContext,
        g: &Gathered,
        classes: i64,
        device: Device,
    ) -> Result<(Attacker, transformer::FitEpoch), PluginError> {
        let attacker = Attacker::with_reference_init(classes, device)?;
        let x = Tensor::f_cat(
            &[
                features(&g.shadow_members, device)?,
                features(&g.shadow_nonmembers, device)?,
            ],
            0,
        )?;
        let y = Tensor::f_cat(
            &[
                Tensor::f_ones([rows(&g.shadow_members)], (DType::Bool, device))?,
                Tensor::f_zeros([rows(&g.shadow_nonmembers)], (DType::Bool, device))?,
            ],
            0,
        )?;
        let epochs = self.fit.epochs;
        let last = fit(&attacker, &x, &y, &self.fit, &mut |e| {
            ctx.check_cancelled()?;
            ctx.progress_metrics(
                0.5 + 0.45 * e.epoch as f64 / epochs as f64,
                &format!("attacker epoch {}/{epochs}", e.epoch),
                &json!({"loss": e.loss, "accuracy": e.accuracy, "lr": e.lr}),
            );
            Ok(())
        })?;
        Ok((attacker, last))
    }
}

impl Plugin for TransformerMia {
    fn descriptor() -> Descriptor {
        let [shadow, heldout] = Sizes::params();
        Descriptor::new(ID, "Transformer MIA (Yuan & Zhang)", "0.1.0", Kind::Attack)
            .description(
                "A transformer over per-class tokens (softmax probability, sensitivity to input \
                 noise, one-hot label), fitted on the model's outputs for shadow members \
                 (retain) and non-members (test): the attacker of Discriminative Adversarial \
                 Unlearning as an attack. Scores are its member log-odds.",
            )
            .citation(
                "Yuan & Zhang, Membership Inference Attacks and Defenses in Neural Network \
                 Pruning, USENIX Security 2022.",
            )
            .param(shadow)
            .param(heldout)
            .param(ParamSpec::int("batch_size", "Batch size", 1, 8192, 256).group("Data"))
            .param(
                ParamSpec::int("sensitivity_draws", "Sensitivity draws m", 1, 1000, 10)
                    .group("Inputs")
                    .help("Noisy copies per sample for the sensitivity."),
            )
            .param(
                ParamSpec::float("sensitivity_noise", "Sensitivity noise ε", 1e-8, 1.0, 1e-3)
                    .log_scale()
                    .group("Inputs"),
            )
            .param(ParamSpec::int("epochs", "Epochs", 1, 100_000, 100).group("Attacker"))
            .param(
                ParamSpec::float("lr", "Learning rate", 1e-7, 10.0, 1e-3)
                    .log_scale()
                    .group("Attacker")
                    .help("Divided by 10 at half and at three quarters of the epochs."),
            )
            .param(ParamSpec::float("momentum", "Momentum", 0.0, 0.999, 0.9).group("Attacker"))
            .param(
                ParamSpec::float("weight_decay", "Weight decay", 0.0, 1.0, 5e-4).group("Attacker"),
            )
            .param(
                ParamSpec::int("train_batch", "Training batch", 1, 65_536, 128).group("Attacker"),
            )
            .param(
                ParamSpec::int("seed", "Seed", 0, i64::from(i32::MAX), 0)
                    .help("Seeds the noise, the attacker's initialisation and its batches."),
            )
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        let count = |k: &str| -> Result<i64, PluginError> { Ok(params.i64(k)?.max(1)) };
        Ok(TransformerMia {
            sizes: Sizes::from_params(params)?,
            batch_size: u32::try_from(count("batch_size")?).unwrap_or(256),
            draws: usize::try_from(count("sensitivity_draws")?).unwrap_or(10),
            noise: params.f64("sensitivity_noise")?,
            fit: FitConfig {
                epochs: count("epochs")?,
                lr: params.f64("lr")?,
                momentum: params.f64("momentum")?,
                weight_decay: params.f64("weight_decay")?,
                batch: count("train_batch")?,
            },
            seed: params.i64("seed")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        tch::manual_seed(self.seed);
        let plan = Plan::for_job(ctx, self.sizes)?;
        ctx.model_set_train(false)?;
        let device = ctx.model_device()?;
        let (draws, noise) = (self.draws, self.noise);
        let mut classes = 0i64;
        let gathered = gather(ctx, &plan, self.batch_size, &mut |ctx, x, y| {
            let inputs = match tch::no_grad(|| transformer::inputs(ctx, x, Some(y), draws, noise)) {
                Ok(i) => i,
                Err(PluginError::Host { status, .. }) if status == LetheStatus::UNSUPPORTED => {
                    return Err(PluginError::msg(
                        "the transformer attack reads class probabilities: the model has no classifier",
                    ));
                }
                Err(e) => return Err(e),
            };
            classes = inputs.size().last().copied().unwrap_or(0) / 3;
            let (b, d) = (inputs.size()[0] as usize, inputs.size()[1] as usize);
            let flat = Vec::<f64>::try_from(
                inputs
                    .f_to_kind(DType::Double)?
                    .f_to_device(Device::Cpu)?
                    .f_contiguous()?
                    .f_view([-1])?,
            )?;
            Ok((0..b).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect())
        })?;
        let (attacker, last) = self.train(ctx, &gathered, classes, device)?;
        let scored = |v: &[Sample]| -> Result<Vec<Sample>, PluginError> {
            if v.is_empty() {
                return Ok(Vec::new());
            }
            Ok(log_odds(&attacker, &features(v, device)?)?
                .into_iter()
                .zip(v)
                .map(|(score, s)| Sample {
                    features: vec![score],
                    label: s.label,
                })
                .collect())
        };
        let scores = Gathered {
            shadow_members: scored(&gathered.shadow_members)?,
            shadow_nonmembers: scored(&gathered.shadow_nonmembers)?,
            forget: scored(&gathered.forget)?,
            members: scored(&gathered.members)?,
            nonmembers: scored(&gathered.nonmembers)?,
        };
        let rates = put_gathered(ctx, &scores, &|s: &Sample| {
            let v = s.features.first().copied().unwrap_or(f64::NAN);
            (v, v >= 0.0)
        })?;
        let summary = json!({
            "attack": ID,
            "inputs": "[softmax p, sensitivity mean_k |softmax(x + eps N(0,1)) - p| / eps, one-hot label]",
            "sensitivity": {"draws": self.draws, "noise": self.noise},
            "attacker": {
                "architecture": "BatchNorm1d(3C) -> C tokens of 3 -> Linear(3,64)+GELU -> TransformerEncoder(3 layers, 4 heads, ff 128, dropout 0.2, GELU) -> Linear(64C,64)+ReLU -> Linear(64,2)",
                "classes": classes,
                "epochs": self.fit.epochs,
                "lr": self.fit.lr,
                "momentum": self.fit.momentum,
                "weight_decay": self.fit.weight_decay,
                "batch": self.fit.batch,
                "init": "Yuan & Zhang's code (Xavier-normal Linear weights, zero biases, unit norms)",
                "final_loss": last.loss,
                "final_accuracy": last.accuracy,
            },
            "score": "member log-odds of the attacker (logit member - logit non-member); >= 0 predicts member",
            "roles": plan.to_json(),
            "seed": self.seed,
            "results": rates,
        });
        put_summary(ctx, &summary)?;
        ctx.progress_metrics(1.0, "done", &rates);
        Ok(())
    }
}

lethe_plugin_api::declare_plugin!(TransformerMia);
