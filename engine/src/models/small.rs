//! Small backbones for low-resolution inputs: a two-stage CNN and an MLP.

use tch::Tensor;
use tch::nn::{self, ModuleT};

/// `conv1`→ReLU→pool→`conv2`→ReLU→pool→`fc1`→ReLU; output `N×feature_dim`.
#[derive(Debug)]
pub struct SmallCnn {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    feature_dim: i64,
}

impl SmallCnn {
    /// Creates the variables under `p`. `input_size` must be divisible by 4
    /// (checked by [`super::Backbone::new`]).
    pub fn new(
        p: &nn::Path<'_>,
        in_channels: i64,
        input_size: i64,
        channels: [i64; 2],
        feature_dim: i64,
    ) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let side = input_size / 4;
        SmallCnn {
            conv1: nn::conv2d(p / "conv1", in_channels, channels[0], 3, cfg),
            conv2: nn::conv2d(p / "conv2", channels[0], channels[1], 3, cfg),
            fc1: nn::linear(
                p / "fc1",
                channels[1] * side * side,
                feature_dim,
                Default::default(),
            ),
            feature_dim,
        }
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.apply(&self.conv1)
            .relu()
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
    }
}

/// Linear layers `layers.0`, `layers.1`, … each followed by ReLU, on
/// flattened inputs; output is the last hidden activation.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    feature_dim: i64,
}

impl Mlp {
    /// Creates the variables under `p`.
    pub fn new(p: &nn::Path<'_>, input_dim: i64, hidden: &[i64]) -> Self {
        let lp = p / "layers";
        let mut layers = Vec::with_capacity(hidden.len());
        let mut d_in = input_dim;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(nn::linear(&lp / i.to_string(), d_in, h, Default::default()));
            d_in = h;
        }
        Mlp {
            layers,
            feature_dim: d_in,
        }
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut out = xs.flatten(1, -1);
        for l in &self.layers {
            out = out.apply(l).relu();
        }
        out
    }
}
