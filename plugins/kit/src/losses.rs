//! The losses the baselines optimise: cross-entropy for classifiers; for
//! encoders the objective they were trained with, SimCLR's NT-Xent (InfoNCE over
//! two augmented views of a batch) or MoCo's InfoNCE ([`crate::moco`]).

use crate::moco::{Moco, in_batch_infonce_per_sample};
use crate::model::ModelKind;
use lethe_plugin_api::sdk::{Augment, HostContext, ModelHead, PluginError, Split};
use lethe_plugin_api::tch::{Kind, Reduction, Tensor};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::rc::Rc;

/// Mean cross-entropy of `logits` (`[B, C]`) against int64 `labels` (`[B]`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, PluginError> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)?)
}

/// Cross-entropy per row.
pub fn cross_entropy_per_sample(logits: &Tensor, labels: &Tensor) -> Result<Tensor, PluginError> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::None, -100, 0.0)?)
}

fn normalize(z: &Tensor) -> Result<Tensor, PluginError> {
    let norm = z
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(z.f_div(&norm)?)
}

/// SimCLR NT-Xent per row of the `2N` stacked rows `[view0; view1]` of `z1`, `z2`
/// (`[N, D]`): row `i`'s positive is row `i + N` (and back), its negatives the
/// other `2N - 2` rows, all cosine similarities over `temperature`.
pub fn nt_xent_per_row(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor, PluginError> {
    let n = z1.size().first().copied().unwrap_or(0);
    let z = normalize(&Tensor::f_cat(&[z1, z2], 0)?)?;
    let sim = z.f_matmul(&z.f_tr()?)?.f_div_scalar(temperature)?;
    let eye = Tensor::f_eye(2 * n, (Kind::Bool, z.device()))?;
    let sim = sim.f_masked_fill(&eye, f64::NEG_INFINITY)?;
    let idx = Tensor::f_arange(n, (Kind::Int64, z.device()))?;
    let targets = Tensor::f_cat(&[&idx.f_add_scalar(n)?, &idx], 0)?;
    Ok(sim.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0)?)
}

/// NT-Xent per sample: the mean of its two rows (each view as the anchor once),
/// so the batch mean equals SimCLR's loss.
pub fn nt_xent_per_sample(
    z1: &Tensor,
    z2: &Tensor,
    temperature: f64,
) -> Result<Tensor, PluginError> {
    let n = z1.size().first().copied().unwrap_or(0);
    let rows = nt_xent_per_row(z1, z2, temperature)?;
    Ok(rows
        .f_narrow(0, 0, n)?
        .f_add(&rows.f_narrow(0, n, n)?)?
        .f_mul_scalar(0.5)?)
}

/// The loss of a method on a batch, whatever the model: cross-entropy on the
/// (optionally augmented) inputs for a classifier; for an encoder, InfoNCE
/// between two augmented views as it was trained: SimCLR's NT-Xent, or MoCo's
/// InfoNCE against a momentum encoder's keys and a queue when [`Objective::moco`]
/// is set (clones share that state).
#[derive(Debug, Clone)]
pub struct Objective {
    /// The model's kind.
    pub kind: ModelKind,
    /// InfoNCE temperature (encoders).
    pub temperature: f64,
    /// Whether a classifier sees augmented inputs.
    pub augment: bool,
    /// The augmentation recipe (inputs of a classifier, views of an encoder).
    pub recipe: Augment,
    /// MoCo's key encoder and queue, for an encoder trained with MoCo.
    pub moco: Option<Rc<RefCell<Moco>>>,
}

impl Objective {
    /// Per-sample losses `[B]` of a training step; differentiable into the
    /// parameters when the model is in train mode. With MoCo this is a step of
    /// MoCo's own: the key encoder takes its momentum step and the batch's keys
    /// enter the queue (measurements use [`Objective::measure_per_sample`]).
    pub fn per_sample(
        &self,
        ctx: &mut HostContext,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        match self.kind {
            ModelKind::Classifier { .. } => self.per_sample_with_labels(ctx, x, y),
            ModelKind::Encoder { head } => {
                let v1 = ctx.augment(x, self.recipe)?;
                let v2 = ctx.augment(x, self.recipe)?;
                match &self.moco {
                    None => {
                        let z1 = ctx.model_forward(head, &v1)?;
                        let z2 = ctx.model_forward(head, &v2)?;
                        nt_xent_per_sample(&z1, &z2, self.temperature)
                    }
                    Some(moco) => {
                        if !moco.borrow().has_queue() {
                            self.limit_queue(ctx)?;
                        }
                        moco.borrow_mut()
                            .step(|v| ctx.model_forward(head, v), &v1, &v2)
                    }
                }
            }
        }
    }

    /// Per-sample losses `[B]` for a measurement (before/after losses,
    /// per-sample gradients): [`Objective::per_sample`] without run state. MoCo
    /// encoders: InfoNCE of the model's queries against its own (detached) keys,
    /// the batch's other keys the negatives, neither the momentum encoder nor the
    /// queue used or changed, so numbers taken before and after a run compare.
    pub fn measure_per_sample(
        &self,
        ctx: &mut HostContext,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        match (self.kind, &self.moco) {
            (ModelKind::Encoder { head }, Some(_)) => {
                let v1 = ctx.augment(x, self.recipe)?;
                let v2 = ctx.augment(x, self.recipe)?;
                let q = ctx.model_forward(head, &v1)?;
                let k = ctx.model_forward(head, &v2)?.f_detach()?;
                in_batch_infonce_per_sample(&q, &k, self.temperature)
            }
            _ => self.per_sample(ctx, x, y),
        }
    }

    /// Caps a MoCo queue that does not exist yet at the retain set's size, as
    /// `lethe train` caps it at its training set's (the first training step
    /// does it otherwise); nothing for other objectives.
    pub fn limit_queue(&self, ctx: &mut HostContext) -> Result<(), PluginError> {
        if let Some(moco) = &self.moco {
            let n = ctx.data_len(Split::Retain)?.unwrap_or(0);
            moco.borrow_mut()
                .limit_capacity(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Fills a MoCo queue with keys of shuffled, augmented `split` samples at
    /// the current weights (see [`Moco::fill`]); nothing for other objectives.
    /// Unlearning methods start from a trained model, whose queue held keys of
    /// training samples; a retrain starts from a random queue, as MoCo does.
    pub fn fill_queue(
        &self,
        ctx: &mut HostContext,
        split: Split,
        batch_size: u32,
    ) -> Result<(), PluginError> {
        match (self.kind, &self.moco) {
            (ModelKind::Encoder { head }, Some(moco)) => {
                moco.borrow_mut()
                    .fill(ctx, head, self.recipe, split, batch_size)
            }
            _ => Ok(()),
        }
    }

    /// The objective for the summary: `{"loss": "cross_entropy" |
    /// "simclr_nt_xent" | "moco_infonce", "temperature", …}` (MoCo adds its
    /// momentum, queue size and queue start).
    pub fn describe(&self) -> Value {
        match (self.kind, &self.moco) {
            (ModelKind::Classifier { .. }, _) => json!({"loss": "cross_entropy"}),
            (ModelKind::Encoder { .. }, None) => {
                json!({"loss": "simclr_nt_xent", "temperature": self.temperature})
            }
            (ModelKind::Encoder { .. }, Some(m)) => m.borrow().describe(),
        }
    }

    /// The loss in words, for summaries and logs.
    pub fn loss_name(&self) -> String {
        match (self.kind, &self.moco) {
            (ModelKind::Classifier { .. }, _) => "cross-entropy".into(),
            (ModelKind::Encoder { .. }, None) => {
                format!("SimCLR NT-Xent (τ {})", self.temperature)
            }
            (ModelKind::Encoder { .. }, Some(m)) => {
                let d = m.borrow().describe();
                format!(
                    "MoCo InfoNCE (τ {}, key momentum {}, queue {})",
                    self.temperature, d["momentum"], d["queue_size"]
                )
            }
        }
    }

    /// Mean loss of the batch.
    pub fn loss(
        &self,
        ctx: &mut HostContext,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        Ok(self.per_sample(ctx, x, y)?.f_mean(Kind::Float)?)
    }

    /// Cross-entropy against the given labels, per sample (classifiers only).
    pub fn per_sample_with_labels(
        &self,
        ctx: &mut HostContext,
        x: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor, PluginError> {
        if !self.kind.is_classifier() {
            return Err(PluginError::msg(
                "this step needs class logits, but the model is an encoder",
            ));
        }
        let logits = self.logits(ctx, x)?;
        cross_entropy_per_sample(&logits, labels)
    }

    /// Class logits of the (optionally augmented) inputs.
    pub fn logits(&self, ctx: &mut HostContext, x: &Tensor) -> Result<Tensor, PluginError> {
        let x = if self.augment {
            ctx.augment(x, self.recipe)?
        } else {
            x.shallow_clone()
        };
        ctx.model_forward(ModelHead::Classifier, &x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::Device;

    #[test]
    fn nt_xent_matches_a_hand_computation() {
        // Two samples, 2-d embeddings chosen so every cosine is easy to write down:
        // view0 = (e1, e2), view1 = (e1, -e2) after normalisation.
        let z1 = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0]).view([2, 2]);
        let z2 = Tensor::from_slice(&[1.0f32, 0.0, 0.0, -0.5]).view([2, 2]);
        let t = 0.5;
        let rows =
            Vec::<f64>::try_from(nt_xent_per_row(&z1, &z2, t).unwrap().to_kind(Kind::Double))
                .unwrap();
        // Rows r0 = e1, r1 = e2, r2 = e1, r3 = -e2. Anchor r0: positive r2 (cos 1),
        // negatives r1 (0) and r3 (0): -log(e^2 / (e^0 + e^2 + e^0)).
        let e = |c: f64| (c / t).exp();
        let expect = [
            -(e(1.0) / (e(0.0) + e(1.0) + e(0.0))).ln(), // r0: r1 0, r2 +1, r3 0
            -(e(-1.0) / (e(0.0) + e(0.0) + e(-1.0))).ln(), // r1: r0 0, r2 0, r3 -1 (pos)
            -(e(1.0) / (e(1.0) + e(0.0) + e(0.0))).ln(), // r2: r0 +1 (pos), r1 0, r3 0
            -(e(-1.0) / (e(0.0) + e(-1.0) + e(0.0))).ln(), // r3: r0 0, r1 -1 (pos), r2 0
        ];
        for (got, want) in rows.iter().zip(expect) {
            assert!((got - want).abs() < 1e-5, "{rows:?} vs {expect:?}");
        }
        let per_sample = Vec::<f64>::try_from(
            nt_xent_per_sample(&z1, &z2, t)
                .unwrap()
                .to_kind(Kind::Double),
        )
        .unwrap();
        assert!((per_sample[0] - (expect[0] + expect[2]) / 2.0).abs() < 1e-5);
        assert!((per_sample[1] - (expect[1] + expect[3]) / 2.0).abs() < 1e-5);
    }

    #[test]
    fn nt_xent_is_lower_for_aligned_views() {
        lethe_plugin_api::tch::manual_seed(3);
        let z = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let other = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let mean = |a: &Tensor, b: &Tensor| {
            nt_xent_per_sample(a, b, 0.5)
                .unwrap()
                .mean(Kind::Float)
                .double_value(&[])
        };
        assert!(mean(&z, &z) < mean(&z, &other));
    }

    #[test]
    fn cross_entropy_matches_log_softmax() {
        let logits = Tensor::from_slice(&[1.0f32, 2.0, 0.5, 0.0, 0.0, 3.0]).view([2, 3]);
        let y = Tensor::from_slice(&[1i64, 2]);
        let got = Vec::<f64>::try_from(
            cross_entropy_per_sample(&logits, &y)
                .unwrap()
                .to_kind(Kind::Double),
        )
        .unwrap();
        let lse0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        let lse1 = (1.0 + 1.0 + 3f64.exp()).ln();
        assert!((got[0] - (lse0 - 2.0)).abs() < 1e-5);
        assert!((got[1] - (lse1 - 3.0)).abs() < 1e-5);
    }
}
