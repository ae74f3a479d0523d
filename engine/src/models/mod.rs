//! Model architectures over `tch::nn`: CIFAR ResNet-18 (torchvision names),
//! a small CNN, an MLP, encoders with projection heads, classifiers and MoCo
//! building blocks. Every constructor takes an `nn::Path`, so models live in
//! an ordinary `VarStore` and can be trained with any tch optimizer.

mod config;
mod encoder;
mod moco;
mod resnet;
mod small;

pub use config::{ArchConfig, BackboneConfig, HeadConfig};
pub use encoder::{Backbone, Classifier, Encoder, Model, ProjectionHead};
pub use moco::{KeyQueue, MomentumEncoder};
pub use resnet::ResNet18;
pub use small::{Mlp, SmallCnn};

/// Errors building models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture description is not usable.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
}
