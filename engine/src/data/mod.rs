//! Datasets, splits and forget sets.
//!
//! Every loader yields a [`Dataset`]: u8 images `[N, C, H, W]`, i64 labels, and a SHA-256
//! per sample over its decoded CHW pixels. A sample's stable index is its position in the
//! source's file order. [`Split`] assigns stable indices to train/val/test from a seed,
//! and a [`ForgetSet`] picks the training samples to unlearn. Source files are only ever
//! read.

mod cifar;
mod dataset;
mod error;
mod forget_list;
mod forget_set;
mod idx;
mod image_decode;
mod image_folder;
mod inspect;
pub mod named;
mod rng;
mod split;
mod tensor_file;
#[cfg(test)]
mod test_bombs;

pub use cifar::{CifarKind, load_cifar, load_cifar_dir};
pub use dataset::{Dataset, Format, SampleHash, hash_hex, hash_pixels};
pub use error::DataError;
pub use forget_set::{FolderMatch, ForgetSet, ForgetSetError, MatchedFile, match_image_folder};
pub use idx::{load_idx, load_idx_dir};
pub use image_decode::{DecodedImage, decode_image_file, is_image_file};
pub use image_folder::{ChannelMode, load_image_folder};
pub use inspect::{DatasetSummary, inspect, load};
pub use rng::SplitMix64;
pub use split::Split;
pub use tensor_file::{load_npz, load_safetensors};
