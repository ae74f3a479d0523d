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
        let x = pool2(&xs.apply(&self.conv1).relu());
        pool2(&x.apply(&self.conv2).relu())
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
    }
}

/// 2×2 max pooling, stride 2.
///
/// libtorch's kernel for the default (NCHW) layout runs element by element: at batch
/// 128 on 2 threads it took 8.7 ms and 4.5 ms for this network's two pools, out of
/// 17.8 ms for the whole forward pass. Its channels-last kernel works on whole
/// channel vectors (0.6 ms and 0.3 ms). So when no gradient is being recorded
/// (evaluation, feature extraction, MoCo keys, a frozen encoder under a linear
/// probe) the activation is pooled in that layout, transposed in and out (2.5 ms and
/// 1.1 ms in all); a max is exact, so the values are the same bits, and the next layer
/// gets the usual layout. With a gradient the layout changes cost as much again in the
/// backward pass (measured), so training keeps the default kernel.
fn pool2(x: &Tensor) -> Tensor {
    if x.requires_grad() {
        return x.max_pool2d_default(2);
    }
    x.permute([0, 2, 3, 1])
        .contiguous()
        .permute([0, 3, 1, 2])
        .max_pool2d_default(2)
        .contiguous()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn::VarStore};

    #[test]
    fn pooling_without_gradient_gives_the_same_bits_as_with_one() {
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let net = SmallCnn::new(&vs.root(), 1, 28, [8, 16], 32);
        let x = Tensor::rand([5, 1, 28, 28], (Kind::Float, Device::Cpu));
        let recorded = net.forward_t(&x, true);
        assert!(recorded.requires_grad());
        let plain = tch::no_grad(|| net.forward_t(&x, false));
        assert!(!plain.requires_grad());
        assert!(plain.equal(&recorded.detach()));
        // The pooling itself, on values with ties and negatives, against libtorch's
        // default kernel.
        let h = (Tensor::randn([3, 4, 6, 8], (Kind::Float, Device::Cpu)) * 2.0).round();
        let ours = pool2(&h);
        assert!(ours.is_contiguous());
        assert!(ours.equal(&h.max_pool2d_default(2)));
    }
}
