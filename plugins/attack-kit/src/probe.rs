//! Class probabilities for confidence-based attacks. A classifier gives them
//! directly; an encoder has no classes, so, as in the Alignment Calibration
//! evaluation (CMIA), a linear probe is trained on its frozen features of the
//! retain split and the attack reads the probe's softmax.

use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::sdk::{HostContext, ModelHead, PluginError, Split};
use lethe_plugin_api::tch::nn::{self, Module, OptimizerConfig};
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
    /// A linear probe on the encoder's features.
    Probe {
        /// Its variables.
        vs: nn::VarStore,
        /// The head.
        linear: nn::Linear,
        /// Number of classes.
        classes: usize,
        /// Its accuracy on the retain split it was trained on.
        retain_accuracy: f64,
    },
}

fn unsupported(e: &PluginError) -> bool {
    matches!(e, PluginError::Host { status, .. } if *status == LetheStatus::UNSUPPORTED)
}

/// Settings of the probe trained for encoders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    /// Passes over the retain features.
    pub epochs: i64,
    /// Mini-batch size.
    pub batch_size: i64,
    /// Adam learning rate.
    pub lr: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            epochs: 50,
            batch_size: 256,
            lr: 1e-2,
        }
    }
}

impl Probabilities {
    /// Uses the model's classifier when it has one, else trains a probe on the
    /// encoder features of the retain split (libtorch's generator must be seeded
    /// by the caller for a reproducible probe). Leaves the model in eval mode.
    pub fn for_job(
        ctx: &mut HostContext,
        batch: u32,
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
        ctx.info("the model has no classifier: training a linear probe on its retain features");
        let (mut feats, mut labels) = (Vec::new(), Vec::new());
        tch::no_grad(|| -> Result<(), PluginError> {
            for b in ctx.batches(Split::Retain, batch, false, false)? {
                ctx.check_cancelled()?;
                let (x, y) = b?;
                feats.push(ctx.model_forward(ModelHead::Encoder, &x)?.f_detach()?);
                labels.push(y);
            }
            Ok(())
        })?;
        let feats = Tensor::f_cat(&feats, 0)?;
        let labels = Tensor::f_cat(&labels, 0)?.f_to_kind(Kind::Int64)?;
        let classes = labels.f_max()?.f_int64_value(&[])? + 1;
        let (n, dim) = (feats.size()[0], feats.size()[1]);
        let device = feats.device();
        let vs = nn::VarStore::new(device);
        let linear = nn::linear(vs.root() / "probe", dim, classes, Default::default());
        let mut opt = nn::Adam::default().build(&vs, probe.lr)?;
        for epoch in 0..probe.epochs {
            ctx.check_cancelled()?;
            let order = Tensor::f_randperm(n, (Kind::Int64, device))?;
            let mut start = 0;
            while start < n {
                let len = probe.batch_size.min(n - start);
                let idx = order.f_narrow(0, start, len)?;
                let loss = linear
                    .forward(&feats.f_index_select(0, &idx)?)
                    .f_cross_entropy_loss::<Tensor>(
                        &labels.f_index_select(0, &idx)?,
                        None,
                        tch::Reduction::Mean,
                        -100,
                        0.0,
                    )?;
                opt.backward_step(&loss);
                start += len;
            }
            ctx.progress(-1.0, &format!("probe epoch {}/{}", epoch + 1, probe.epochs));
        }
        let retain_accuracy = tch::no_grad(|| -> Result<f64, PluginError> {
            Ok(linear
                .forward(&feats)
                .f_argmax(-1, false)?
                .f_eq_tensor(&labels)?
                .f_to_kind(Kind::Float)?
                .f_mean(Kind::Float)?
                .f_double_value(&[])?)
        })?;
        Ok(Probabilities::Probe {
            vs,
            linear,
            classes: classes as usize,
            retain_accuracy,
        })
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
                Probabilities::Probe { linear, vs, .. } => {
                    let f = ctx.model_forward(ModelHead::Encoder, x)?;
                    linear.forward(&f.f_to_device(vs.device())?)
                }
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
            Probabilities::Probe {
                classes,
                retain_accuracy,
                ..
            } => json!({
                "source": "linear probe on the encoder's retain features",
                "classes": classes,
                "probe_retain_accuracy": retain_accuracy,
            }),
        }
    }
}
