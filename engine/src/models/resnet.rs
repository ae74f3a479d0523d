//! CIFAR ResNet-18 with torchvision parameter names, so torchvision-style
//! state dicts (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, …)
//! load without renaming.

use tch::Tensor;
use tch::nn::{self, ModuleT};

fn conv(
    p: nn::Path<'_>,
    c_in: i64,
    c_out: i64,
    ksize: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, ksize, cfg)
}

fn bn(p: nn::Path<'_>, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// torchvision's BasicBlock (two 3×3 convs, identity or 1×1-conv shortcut).
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: &nn::Path<'_>, c_in: i64, c_out: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (
                conv(&d / "0", c_in, c_out, 1, stride, 0),
                bn(&d / "1", c_out),
            )
        });
        BasicBlock {
            conv1: conv(p / "conv1", c_in, c_out, 3, stride, 1),
            bn1: bn(p / "bn1", c_out),
            conv2: conv(p / "conv2", c_out, c_out, 3, 1, 1),
            bn2: bn(p / "bn2", c_out),
            downsample,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let out = out.apply(&self.conv2).apply_t(&self.bn2, train);
        let shortcut = match &self.downsample {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (out + shortcut).relu()
    }
}

/// CIFAR ResNet-18 backbone: input `N×C×H×W`, output `N×widths[3]` features
/// (after global average pooling).
#[derive(Debug)]
pub struct ResNet18 {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    stem_relu: bool,
    layers: Vec<Vec<BasicBlock>>,
    feature_dim: i64,
}

impl ResNet18 {
    /// Creates the variables under `p` (e.g. `vs.root()`).
    pub fn new(p: &nn::Path<'_>, in_channels: i64, widths: [i64; 4], stem_relu: bool) -> Self {
        let mut layers = Vec::with_capacity(4);
        let mut c_in = widths[0];
        for (i, &w) in widths.iter().enumerate() {
            let lp = p / format!("layer{}", i + 1);
            let stride = if i == 0 { 1 } else { 2 };
            let blocks = vec![
                BasicBlock::new(&(&lp / "0"), c_in, w, stride),
                BasicBlock::new(&(&lp / "1"), w, w, 1),
            ];
            layers.push(blocks);
            c_in = w;
        }
        ResNet18 {
            conv1: conv(p / "conv1", in_channels, widths[0], 3, 1, 1),
            bn1: bn(p / "bn1", widths[0]),
            stem_relu,
            layers,
            feature_dim: widths[3],
        }
    }

    /// Feature dimension (512 for standard widths).
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.apply(&self.conv1).apply_t(&self.bn1, train);
        if self.stem_relu {
            out = out.relu();
        }
        for block in self.layers.iter().flatten() {
            out = block.forward_t(&out, train);
        }
        out.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}
