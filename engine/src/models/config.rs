//! Serializable description of an architecture, recorded in checkpoints so a
//! model can be rebuilt exactly (including quirks such as the stem ReLU).

use serde::{Deserialize, Serialize};

/// The feature extractor of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackboneConfig {
    /// CIFAR ResNet-18: 3×3 stride-1 stem, no max-pool, BasicBlocks `[2, 2, 2, 2]`.
    #[serde(rename = "resnet18")]
    ResNet18 {
        /// Input image channels.
        in_channels: i64,
        /// Channel widths of layer1..layer4 (torchvision: 64,128,256,512).
        widths: [i64; 4],
        /// Whether a ReLU follows `bn1` in the stem. Standard ResNets have it;
        /// some contrastive-learning code (e.g. the AC reference repo) omits it.
        /// The weights are identical either way, so this cannot be detected
        /// from a state dict and must be stated.
        #[serde(default = "default_true")]
        stem_relu: bool,
    },
    /// Two conv+pool stages and one hidden linear layer, for 28×28 inputs.
    SmallCnn {
        /// Input image channels.
        in_channels: i64,
        /// Side length of the (square) input; must be divisible by 4.
        input_size: i64,
        /// Output channels of conv1 and conv2.
        channels: [i64; 2],
        /// Width of the hidden linear layer `fc1`, i.e. the feature dimension.
        feature_dim: i64,
    },
    /// Fully-connected network on flattened inputs.
    Mlp {
        /// Number of input features (C·H·W for images).
        input_dim: i64,
        /// Hidden layer widths; the last is the feature dimension. Must be non-empty.
        hidden: Vec<i64>,
    },
}

fn default_true() -> bool {
    true
}

/// What sits on top of the backbone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadConfig {
    /// A linear classifier stored under `fc` (torchvision naming).
    Classifier {
        /// Number of classes.
        num_classes: i64,
    },
    /// A linear projection head stored under `head` (MoCo-style).
    LinearProjection {
        /// Projection dimension.
        out_dim: i64,
    },
    /// SimCLR MLP head `head.0` (Linear) → ReLU → `head.2` (Linear).
    MlpProjection {
        /// Hidden width (512 for SimCLR on ResNet-18).
        hidden_dim: i64,
        /// Projection dimension (128 for SimCLR).
        out_dim: i64,
    },
    /// Bare encoder: outputs are the backbone features.
    None,
}

/// Full architecture: backbone plus head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// The feature extractor.
    pub backbone: BackboneConfig,
    /// The head on top of the features.
    pub head: HeadConfig,
}

impl BackboneConfig {
    /// CIFAR ResNet-18 with torchvision widths and the standard stem ReLU.
    pub fn resnet18(in_channels: i64) -> Self {
        BackboneConfig::ResNet18 {
            in_channels,
            widths: [64, 128, 256, 512],
            stem_relu: true,
        }
    }

    /// The default small CNN for 28×28 images (32 and 64 channels, 128 features).
    pub fn small_cnn(in_channels: i64) -> Self {
        BackboneConfig::SmallCnn {
            in_channels,
            input_size: 28,
            channels: [32, 64],
            feature_dim: 128,
        }
    }

    /// Dimension of the features the backbone emits.
    pub fn feature_dim(&self) -> i64 {
        match self {
            BackboneConfig::ResNet18 { widths, .. } => widths[3],
            BackboneConfig::SmallCnn { feature_dim, .. } => *feature_dim,
            BackboneConfig::Mlp { hidden, input_dim } => {
                hidden.last().copied().unwrap_or(*input_dim)
            }
        }
    }

    /// Short human-readable name.
    pub fn name(&self) -> &'static str {
        match self {
            BackboneConfig::ResNet18 { .. } => "resnet18-cifar",
            BackboneConfig::SmallCnn { .. } => "small-cnn",
            BackboneConfig::Mlp { .. } => "mlp",
        }
    }
}

impl HeadConfig {
    /// What a method's `applies_to` is matched against.
    pub fn model_facts(&self) -> lethe_plugin_api::schema::ModelFacts {
        use lethe_plugin_api::schema::{ModelClass, ModelFacts};
        match self {
            HeadConfig::Classifier { .. } => ModelFacts {
                class: ModelClass::Classifier,
                projection_head: false,
            },
            HeadConfig::LinearProjection { .. } | HeadConfig::MlpProjection { .. } => ModelFacts {
                class: ModelClass::Encoder,
                projection_head: true,
            },
            HeadConfig::None => ModelFacts {
                class: ModelClass::Encoder,
                projection_head: false,
            },
        }
    }

    /// Dimension of the head output given the backbone feature dimension.
    pub fn out_dim(&self, feature_dim: i64) -> i64 {
        match self {
            HeadConfig::Classifier { num_classes } => *num_classes,
            HeadConfig::LinearProjection { out_dim }
            | HeadConfig::MlpProjection { out_dim, .. } => *out_dim,
            HeadConfig::None => feature_dim,
        }
    }
}

impl ArchConfig {
    /// CIFAR ResNet-18 classifier.
    pub fn resnet18_classifier(in_channels: i64, num_classes: i64) -> Self {
        ArchConfig {
            backbone: BackboneConfig::resnet18(in_channels),
            head: HeadConfig::Classifier { num_classes },
        }
    }

    /// ResNet-18 encoder with the SimCLR head 512→512→128.
    pub fn resnet18_simclr(in_channels: i64) -> Self {
        ArchConfig {
            backbone: BackboneConfig::resnet18(in_channels),
            head: HeadConfig::MlpProjection {
                hidden_dim: 512,
                out_dim: 128,
            },
        }
    }

    /// ResNet-18 encoder with a linear MoCo head 512→128.
    pub fn resnet18_moco(in_channels: i64) -> Self {
        ArchConfig {
            backbone: BackboneConfig::resnet18(in_channels),
            head: HeadConfig::LinearProjection { out_dim: 128 },
        }
    }

    /// Output dimension of the whole model.
    pub fn out_dim(&self) -> i64 {
        self.head.out_dim(self.backbone.feature_dim())
    }
}

impl std::fmt::Display for ArchConfig {
    // Read by people (the window, reports): words and plain lists, not the
    // config's ids and debug lists.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |xs: &[i64]| xs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let channels = |n: &i64| {
            if *n == 1 {
                "1 channel".to_string()
            } else {
                format!("{n} channels")
            }
        };
        match &self.backbone {
            BackboneConfig::ResNet18 {
                in_channels,
                widths,
                stem_relu,
            } => {
                write!(
                    f,
                    "ResNet-18 ({}, widths {}",
                    channels(in_channels),
                    list(widths)
                )?;
                if !stem_relu {
                    write!(f, ", no stem ReLU")?;
                }
                write!(f, ")")?;
            }
            BackboneConfig::SmallCnn {
                in_channels,
                input_size,
                channels: conv,
                feature_dim,
            } => write!(
                f,
                "small CNN ({}, {input_size}×{input_size} input, convolutions of {} channels, {feature_dim} features)",
                channels(in_channels),
                list(conv)
            )?,
            BackboneConfig::Mlp { input_dim, hidden } => write!(
                f,
                "MLP ({input_dim} inputs, hidden layers of {})",
                list(hidden)
            )?,
        }
        match &self.head {
            HeadConfig::Classifier { num_classes } => {
                write!(f, " + classifier ({num_classes} classes)")
            }
            HeadConfig::LinearProjection { out_dim } => {
                write!(f, " + linear projection ({out_dim})")
            }
            HeadConfig::MlpProjection {
                hidden_dim,
                out_dim,
            } => {
                // Words, not an arrow: the window's default fonts have no "→".
                write!(f, " + MLP projection (hidden {hidden_dim}, out {out_dim})")
            }
            HeadConfig::None => write!(f, " (no head)"),
        }
    }
}
