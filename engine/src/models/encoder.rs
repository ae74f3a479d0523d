//! Encoders (backbone → features → optional projection) and classifiers
//! (backbone → linear head), built from an [`ArchConfig`].

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::ModelError;
use super::config::{ArchConfig, BackboneConfig, HeadConfig};
use super::resnet::ResNet18;
use super::small::{Mlp, SmallCnn};

/// Any of the built-in feature extractors.
#[derive(Debug)]
pub enum Backbone {
    /// CIFAR ResNet-18.
    ResNet18(ResNet18),
    /// Small CNN for 28×28 inputs.
    SmallCnn(SmallCnn),
    /// Multi-layer perceptron.
    Mlp(Mlp),
}

impl Backbone {
    /// Creates the backbone's variables under `p`, validating the config.
    pub fn new(p: &nn::Path<'_>, cfg: &BackboneConfig) -> Result<Self, ModelError> {
        Ok(match cfg {
            BackboneConfig::ResNet18 {
                in_channels,
                widths,
                stem_relu,
            } => {
                positive("in_channels", *in_channels)?;
                for w in widths {
                    positive("widths", *w)?;
                }
                Backbone::ResNet18(ResNet18::new(p, *in_channels, *widths, *stem_relu))
            }
            BackboneConfig::SmallCnn {
                in_channels,
                input_size,
                channels,
                feature_dim,
            } => {
                positive("in_channels", *in_channels)?;
                positive("feature_dim", *feature_dim)?;
                positive("channels", channels[0])?;
                positive("channels", channels[1])?;
                if *input_size < 4 || input_size % 4 != 0 {
                    return Err(ModelError::InvalidConfig(format!(
                        "small CNN input_size must be a positive multiple of 4 (two 2×2 pools), got {input_size}"
                    )));
                }
                Backbone::SmallCnn(SmallCnn::new(
                    p,
                    *in_channels,
                    *input_size,
                    *channels,
                    *feature_dim,
                ))
            }
            BackboneConfig::Mlp { input_dim, hidden } => {
                positive("input_dim", *input_dim)?;
                if hidden.is_empty() {
                    return Err(ModelError::InvalidConfig(
                        "MLP needs at least one hidden layer".into(),
                    ));
                }
                for h in hidden {
                    positive("hidden", *h)?;
                }
                Backbone::Mlp(Mlp::new(p, *input_dim, hidden))
            }
        })
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> i64 {
        match self {
            Backbone::ResNet18(m) => m.feature_dim(),
            Backbone::SmallCnn(m) => m.feature_dim(),
            Backbone::Mlp(m) => m.feature_dim(),
        }
    }
}

fn positive(what: &str, v: i64) -> Result<(), ModelError> {
    if v > 0 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig(format!(
            "{what} must be positive, got {v}"
        )))
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Backbone::ResNet18(m) => m.forward_t(xs, train),
            Backbone::SmallCnn(m) => m.forward_t(xs, train),
            Backbone::Mlp(m) => m.forward_t(xs, train),
        }
    }
}

/// Projection head of a contrastive encoder, stored under `head`.
#[derive(Debug)]
pub enum ProjectionHead {
    /// `head`: a single linear layer (MoCo).
    Linear(nn::Linear),
    /// `head.0` → ReLU → `head.2` (SimCLR); indices match `nn.Sequential`.
    Mlp(nn::Linear, nn::Linear),
}

impl ProjectionHead {
    /// Linear head `in_dim → out_dim` under `p`.
    pub fn linear(p: &nn::Path<'_>, in_dim: i64, out_dim: i64) -> Self {
        ProjectionHead::Linear(nn::linear(p, in_dim, out_dim, Default::default()))
    }

    /// SimCLR MLP head `in_dim → hidden → out_dim` under `p`.
    pub fn mlp(p: &nn::Path<'_>, in_dim: i64, hidden: i64, out_dim: i64) -> Self {
        ProjectionHead::Mlp(
            nn::linear(p / "0", in_dim, hidden, Default::default()),
            nn::linear(p / "2", hidden, out_dim, Default::default()),
        )
    }
}

impl Module for ProjectionHead {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self {
            ProjectionHead::Linear(l) => xs.apply(l),
            ProjectionHead::Mlp(a, b) => xs.apply(a).relu().apply(b),
        }
    }
}

/// Backbone with an optional projection head. `forward_t` returns the
/// (unnormalized) projection, or the features when there is no head.
#[derive(Debug)]
pub struct Encoder {
    /// The feature extractor.
    pub backbone: Backbone,
    /// The projection head, if any.
    pub head: Option<ProjectionHead>,
}

impl Encoder {
    /// Backbone features (`N×feature_dim`), e.g. for linear probes and EMIA.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(xs, train)
    }
}

impl ModuleT for Encoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let f = self.backbone.forward_t(xs, train);
        match &self.head {
            Some(h) => h.forward(&f),
            None => f,
        }
    }
}

/// Backbone plus linear head `fc`; `forward_t` returns logits.
#[derive(Debug)]
pub struct Classifier {
    /// The feature extractor.
    pub backbone: Backbone,
    /// The linear classification layer.
    pub fc: nn::Linear,
}

impl Classifier {
    /// Wraps an existing backbone with a fresh `fc` layer created under `p / "fc"`;
    /// used for linear probing of a (frozen) encoder.
    pub fn with_backbone(p: &nn::Path<'_>, backbone: Backbone, num_classes: i64) -> Self {
        let fc = nn::linear(
            p / "fc",
            backbone.feature_dim(),
            num_classes,
            Default::default(),
        );
        Classifier { backbone, fc }
    }

    /// Backbone features (`N×feature_dim`).
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(xs, train)
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(xs, train).apply(&self.fc)
    }
}

/// A model built from an [`ArchConfig`].
#[derive(Debug)]
pub enum Model {
    /// Backbone + `fc` classifier.
    Classifier(Classifier),
    /// Backbone + optional projection head.
    Encoder(Encoder),
}

impl Model {
    /// Builds the model's variables under `p` (normally `vs.root()`, so that
    /// names match torchvision: `conv1.weight`, `fc.bias`, …).
    pub fn new(p: &nn::Path<'_>, cfg: &ArchConfig) -> Result<Self, ModelError> {
        let backbone = Backbone::new(p, &cfg.backbone)?;
        let d = backbone.feature_dim();
        Ok(match &cfg.head {
            HeadConfig::Classifier { num_classes } => {
                positive("num_classes", *num_classes)?;
                Model::Classifier(Classifier::with_backbone(p, backbone, *num_classes))
            }
            HeadConfig::LinearProjection { out_dim } => {
                positive("out_dim", *out_dim)?;
                let head = ProjectionHead::linear(&(p / "head"), d, *out_dim);
                Model::Encoder(Encoder {
                    backbone,
                    head: Some(head),
                })
            }
            HeadConfig::MlpProjection {
                hidden_dim,
                out_dim,
            } => {
                positive("hidden_dim", *hidden_dim)?;
                positive("out_dim", *out_dim)?;
                let head = ProjectionHead::mlp(&(p / "head"), d, *hidden_dim, *out_dim);
                Model::Encoder(Encoder {
                    backbone,
                    head: Some(head),
                })
            }
            HeadConfig::None => Model::Encoder(Encoder {
                backbone,
                head: None,
            }),
        })
    }

    /// Backbone features.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.backbone().forward_t(xs, train)
    }

    /// The feature extractor.
    pub fn backbone(&self) -> &Backbone {
        match self {
            Model::Classifier(c) => &c.backbone,
            Model::Encoder(e) => &e.backbone,
        }
    }
}

impl ModuleT for Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Model::Classifier(c) => c.forward_t(xs, train),
            Model::Encoder(e) => e.forward_t(xs, train),
        }
    }
}
