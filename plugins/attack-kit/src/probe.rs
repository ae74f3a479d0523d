//! Class probabilities for confidence-based attacks. A classifier gives them
//! directly; an encoder has no classes, so, as in the Alignment Calibration
//! evaluation (CMIA), the attack reads the softmax of a linear probe on its
//! frozen features: the host's probe (`lethe.probe/1`), trained with the same
//! recipe and code as `lethe evaluate`'s RA/TA/UA and shared with it through
//! the host's probe cache, so the evaluation and the attack read one head.

use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{HostContext, ModelHead, Params, PluginError, Split};
use lethe_plugin_api::tch::{self, Device, Kind, Tensor};
use serde_json::{Value, json};

/// Where the probabilities come from.
#[derive(Debug)]
pub enum Probabilities {
    /// The model's own classifier.
    Classifier {
        /// Width of its logits.
        classes: usize,
    },
    /// The host's linear probe on the encoder's features.
    Probe {
        /// Number of classes.
        classes: usize,
        /// The host's summary: recipe, cache key, cached, retain accuracy.
        summary: Value,
    },
}

fn unsupported(e: &PluginError) -> bool {
    matches!(e, PluginError::Host { status, .. } if *status == LetheStatus::UNSUPPORTED)
}

/// The probe presets the host knows (`reference` is the Alignment Calibration
/// code's probe, `fast` a short one for tests).
pub const PROBE_PRESETS: [&str; 2] = ["reference", "fast"];

/// Which host probe reads an encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The preset (see [`PROBE_PRESETS`]).
    pub preset: String,
    /// Epochs instead of the preset's (0 = the preset's).
    pub epochs: i64,
    /// Seed of the probe (the same seed as the evaluation's shares its probe).
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            preset: "reference".into(),
            epochs: 0,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    /// The `probe` and `probe_epochs` parameters of an attack that reads
    /// encoders through the probe.
    pub fn params() -> [ParamSpec; 2] {
        [
            ParamSpec::choice("probe", "Probe", &PROBE_PRESETS, "reference")
                .group("Encoders")
                .help(
                    "The linear probe that reads a model without a classifier, the same as \
                     lethe evaluate's (trained once per model and shared): reference = the \
                     Alignment Calibration code's (100 epochs, SGD lr 1.0 momentum 0.9, \
                     cosine, batch 512, crop + flip); fast = 30 epochs on fixed features.",
                ),
            ParamSpec::int("probe_epochs", "Probe epochs", 0, 10_000, 0)
                .group("Encoders")
                .help("Epochs of the probe instead of the preset's (0 = the preset's)."),
        ]
    }

    /// From the parameters of [`ProbeConfig::params`] and the attack's seed.
    pub fn from_params(params: &Params, seed: i64) -> Result<Self, PluginError> {
        Ok(ProbeConfig {
            preset: params.str("probe")?.to_string(),
            epochs: params.i64("probe_epochs")?,
            seed: u64::try_from(seed).unwrap_or(0),
        })
    }

    /// The host's request.
    pub fn request(&self) -> Value {
        json!({"preset": self.preset, "epochs": self.epochs.max(0), "seed": self.seed})
    }
}

impl Probabilities {
    /// Uses the model's classifier when it has one, else the host's linear
    /// probe of `probe` on the encoder (trained on the retain split, or read
    /// from the host's probe cache). Leaves the model in eval mode.
    pub fn for_job(
        ctx: &mut HostContext,
        probe: &ProbeConfig,
    ) -> Result<Probabilities, PluginError> {
        ctx.model_set_train(false)?;
        let mut first = ctx.batches(Split::Retain, 1, false, false)?;
        let (x, _) = first
            .next()
            .ok_or_else(|| PluginError::msg("the retain split is empty"))??;
        drop(first);
        match tch::no_grad(|| ctx.model_forward(ModelHead::Classifier, &x)) {
            Ok(logits) => {
                let classes = logits.size().last().copied().unwrap_or(0).max(0) as usize;
                return Ok(Probabilities::Classifier { classes });
            }
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        ctx.info("the model has no classifier: reading it through the host's linear probe");
        let summary = ctx.probe_prepare(&probe.request())?;
        let classes = summary["classes"]
            .as_u64()
            .ok_or_else(|| PluginError::msg("the host's probe summary names no classes"))?
            as usize;
        Ok(Probabilities::Probe { classes, summary })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Probabilities::Classifier { classes } | Probabilities::Probe { classes, .. } => {
                *classes
            }
        }
    }

    /// Log-softmax rows for a batch of inputs, computed in `f64` on the CPU
    /// (see [`crate::scores`] for why logs).
    pub fn log_probabilities(
        &self,
        ctx: &mut HostContext,
        x: &Tensor,
    ) -> Result<Vec<Vec<f64>>, PluginError> {
        let logits = tch::no_grad(|| -> Result<Tensor, PluginError> {
            Ok(match self {
                Probabilities::Classifier { .. } => ctx.model_forward(ModelHead::Classifier, x)?,
                Probabilities::Probe { .. } => ctx.probe_logits(x)?,
            })
        })?;
        let p = logits
            .f_to_kind(Kind::Double)?
            .f_log_softmax(-1, Kind::Double)?
            .f_to_device(Device::Cpu)?;
        let (b, c) = (p.size()[0], p.size()[1]);
        let flat = Vec::<f64>::try_from(p.f_contiguous()?.f_view([-1])?)?;
        Ok((0..b as usize)
            .map(|i| flat[i * c as usize..(i + 1) * c as usize].to_vec())
            .collect())
    }

    /// For the attack's summary.
    pub fn to_json(&self) -> Value {
        match self {
            Probabilities::Classifier { classes } => {
                json!({"source": "classifier", "classes": classes})
            }
            Probabilities::Probe { classes, summary } => json!({
                "source": "the host's linear probe on the encoder's retain features",
                "classes": classes,
                "probe_retain_accuracy": summary["retain_accuracy"],
                "probe": summary,
            }),
        }
    }
}
