//! Which representation the contrastive loss sees.
//!
//! The reference code contrasts L2-normalised 128-d projections: its model
//! returns `(logits, feat)` with `feat` a projection head's output, and its
//! optimiser covers every parameter, the head's included. Backbone features of a
//! ResNet (or the demo CNN) come out of a ReLU, so they all lie in the
//! non-negative orthant and every cosine between them is ≥ 0: the loss cannot
//! push a forget sample to the far side of the sphere from its class, only to
//! orthogonal, and its optimum differs from the reference's.
//!
//! Lethe's classifiers have no projection head (a checkpoint has either class
//! logits or a projection, never both). When the model has one it is used. When
//! not, `representation = plugin_head` attaches one: the reference's shape
//! (Linear D→D, ReLU, Linear D→128), PyTorch's default initialisation drawn from
//! the run's seed, trained jointly with the model as the reference's optimiser
//! trains its head, and discarded afterwards (the model saved is the
//! classifier). It is not the default: on the demo classifier the fresh head
//! absorbs the loss by itself (forget accuracy still 1.0 after 10 epochs, while
//! backbone features forget the class), so the default falls back to the
//! normalised backbone features and the summary says so.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Device, Kind, Tensor};

use crate::losses::normalize;

/// Width of the projection, as the reference (`feat_dim` 128).
pub const PROJECTION_DIM: i64 = 128;

/// A projection head owned by the plugin: `Linear(D, D) → ReLU → Linear(D, 128)`.
#[derive(Debug)]
pub struct ProjectionHead {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

/// PyTorch's `nn.Linear` default: weights and biases `U(±1/√fan_in)`
/// (Kaiming-uniform with `a = √5` reduces to that bound for the weights).
fn linear(in_dim: i64, out_dim: i64, device: Device) -> (Tensor, Tensor) {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let draw = |shape: &[i64]| {
        (Tensor::rand(shape, (Kind::Float, device)) * (2.0 * bound) - bound).set_requires_grad(true)
    };
    (draw(&[out_dim, in_dim]), draw(&[out_dim]))
}

impl ProjectionHead {
    /// A fresh head from `in_dim` backbone features to `out_dim`, drawn from
    /// libtorch's generator (seeded by the run).
    pub fn new(in_dim: i64, out_dim: i64, device: Device) -> Self {
        let (w1, b1) = linear(in_dim, in_dim, device);
        let (w2, b2) = linear(in_dim, out_dim, device);
        ProjectionHead { w1, b1, w2, b2 }
    }

    /// The same shape, drawn afresh (after the run has seeded libtorch).
    pub fn redraw(&self) -> Self {
        let size = self.w1.size();
        ProjectionHead::new(size[1], self.w2.size()[0], self.w1.device())
    }

    /// The head's output (not normalised).
    pub fn forward(&self, h: &Tensor) -> Result<Tensor, PluginError> {
        Ok(h.f_linear(&self.w1, Some(&self.b1))?
            .f_relu()?
            .f_linear(&self.w2, Some(&self.b2))?)
    }

    /// Its parameters, to be trained with the model's.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        [
            ("w1", &self.w1),
            ("b1", &self.b1),
            ("w2", &self.w2),
            ("b2", &self.b2),
        ]
        .into_iter()
        .map(|(n, t)| (format!("cu_projection.{n}"), t.shallow_clone()))
        .collect()
    }
}

/// The representation the loss contrasts.
#[derive(Debug)]
pub enum Representation {
    /// The model's own projection head (`ModelHead::Projection`).
    Model,
    /// Backbone features through the plugin's [`ProjectionHead`].
    Plugin(ProjectionHead),
    /// Backbone features as they are (`representation = backbone`: the earlier
    /// reading, kept for comparison; post-ReLU, so all cosines ≥ 0).
    Backbone,
}

impl Representation {
    /// Name for the summary.
    pub fn name(&self) -> &'static str {
        match self {
            Representation::Model => "model_projection",
            Representation::Plugin(_) => "plugin_projection",
            Representation::Backbone => "backbone",
        }
    }

    /// The L2-normalised embedding the loss sees, from the model head's output
    /// (`ModelHead::Projection` for [`Representation::Model`], else
    /// `ModelHead::Encoder`).
    pub fn embed(&self, raw: &Tensor) -> Result<Tensor, PluginError> {
        match self {
            Representation::Plugin(head) => normalize(&head.forward(raw)?),
            Representation::Model | Representation::Backbone => normalize(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::contrastive_unlearning_loss;

    fn cosines(a: &Tensor, b: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(a.f_matmul(&b.f_tr().unwrap()).unwrap().flatten(0, -1)).unwrap()
    }

    /// What the plugin contrasts on a classifier without a projection head: unit
    /// 128-d rows; trained through the head (as the plugin trains it), the loss
    /// pushes forget rows past orthogonal, to negative cosines with the retain
    /// rows of their class, which post-ReLU backbone features (all cosines ≥ 0)
    /// can never reach. With `Representation::Backbone` (the old input) in place
    /// of the plugin head, the width and the final cosine assertions fail.
    #[test]
    fn loss_sees_normalised_128d_projections_whose_cosines_can_be_negative() {
        lethe_plugin_api::tch::manual_seed(3);
        let d = 32;
        // Post-ReLU backbone features: every entry ≥ 0, so every cosine ≥ 0.
        let hu = Tensor::rand([8, d], (Kind::Float, Device::Cpu));
        let hr = Tensor::rand([16, d], (Kind::Float, Device::Cpu));
        assert!(
            cosines(&normalize(&hu).unwrap(), &normalize(&hr).unwrap())
                .iter()
                .all(|&c| c >= 0.0)
        );
        // Sample unlearning: forget rows of class 1 against retain rows of
        // classes 1 and 2 alternately.
        let yu = Tensor::from_slice(&[1i64; 8]);
        let yr = Tensor::from_slice(&[1i64, 2].repeat(8));
        let rep = Representation::Plugin(ProjectionHead::new(d, PROJECTION_DIM, Device::Cpu));
        let zu = rep.embed(&hu).unwrap();
        assert_eq!(zu.size(), [8, PROJECTION_DIM]);
        let norms =
            Vec::<f32>::try_from(zu.norm_scalaropt_dim(2, [1i64].as_slice(), false)).unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
        let params = match &rep {
            Representation::Plugin(h) => h.params(),
            _ => Vec::new(),
        };
        for _ in 0..200 {
            let t = contrastive_unlearning_loss(
                &rep.embed(&hu).unwrap(),
                &yu,
                &rep.embed(&hr).unwrap(),
                &yr,
                0.7,
            )
            .unwrap();
            t.loss.backward();
            lethe_plugin_api::tch::no_grad(|| {
                for (_, p) in &params {
                    let mut p = p.shallow_clone();
                    let _ = p.f_sub_(&p.grad().f_mul_scalar(0.1).unwrap()).unwrap();
                    let _ = p.grad().zero_();
                }
            });
        }
        let class1 = Tensor::arange_start_step(0, 16, 2, (Kind::Int64, Device::Cpu));
        let zu = rep.embed(&hu).unwrap().detach();
        let zr1 = rep.embed(&hr).unwrap().detach().index_select(0, &class1);
        let max = cosines(&zu, &zr1).into_iter().fold(f32::MIN, f32::max);
        assert!(
            max < 0.0,
            "forget rows not pushed past orthogonal from their class: max cos {max}"
        );
    }
}
