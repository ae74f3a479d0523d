//! Architecture detection from tensor names and shapes.

use super::state_dict::StateDict;
use crate::models::{ArchConfig, BackboneConfig, HeadConfig};

fn shape(sd: &StateDict, name: &str) -> Result<Vec<i64>, String> {
    sd.shape(name).ok_or_else(|| format!("missing {name}"))
}

fn dims<const N: usize>(sd: &StateDict, name: &str) -> Result<[i64; N], String> {
    let s = shape(sd, name)?;
    <[i64; N]>::try_from(s.as_slice())
        .map_err(|_| format!("{name} has shape {s:?}, expected {N} dimensions"))
}

/// Guesses the architecture of a state dict (names already normalized).
///
/// Recognises the CIFAR ResNet-18 (torchvision names), the small CNN and the
/// MLP, each with a `fc` classifier, a `head`/`head.0`+`head.2` projection or
/// no head. The stem ReLU cannot be seen in weights; it is reported as
/// present (standard) and can be overridden when loading.
pub fn detect_architecture(sd: &StateDict) -> Result<ArchConfig, String> {
    let backbone = if sd.contains("layer1.0.conv1.weight") {
        detect_resnet(sd)?
    } else if sd.contains("conv1.weight")
        && sd.contains("conv2.weight")
        && sd.contains("fc1.weight")
    {
        detect_small_cnn(sd)?
    } else if sd.contains("layers.0.weight") {
        detect_mlp(sd)?
    } else {
        let sample: Vec<&str> = sd.names().take(6).collect();
        return Err(format!(
            "keys match none of ResNet-18 (layer1.0.conv1.weight), small CNN (conv1/conv2/fc1) or MLP (layers.0.weight); first keys: {}",
            sample.join(", ")
        ));
    };
    let head = detect_head(sd, backbone.feature_dim())?;
    Ok(ArchConfig { backbone, head })
}

fn detect_resnet(sd: &StateDict) -> Result<BackboneConfig, String> {
    let [w0, in_channels, kh, kw] = dims::<4>(sd, "conv1.weight")?;
    if (kh, kw) != (3, 3) {
        return Err(format!(
            "conv1 is {kh}×{kw}: an ImageNet-stem ResNet, not the CIFAR ResNet-18 (3×3 stride-1 stem)"
        ));
    }
    if sd.contains("layer1.0.conv3.weight") {
        return Err("Bottleneck blocks (ResNet-50 or deeper) are not supported".into());
    }
    let mut widths = [0i64; 4];
    for (i, w) in widths.iter_mut().enumerate() {
        let l = i + 1;
        if !sd.contains(&format!("layer{l}.1.conv1.weight")) {
            return Err(format!("layer{l} has fewer than 2 blocks; not a ResNet-18"));
        }
        if sd.contains(&format!("layer{l}.2.conv1.weight")) {
            return Err(format!(
                "layer{l} has more than 2 blocks (ResNet-34?); only ResNet-18 is supported"
            ));
        }
        *w = dims::<4>(sd, &format!("layer{l}.0.conv1.weight"))?[0];
    }
    if widths[0] != w0 {
        return Err(format!(
            "conv1 has {w0} channels but layer1 has {}",
            widths[0]
        ));
    }
    Ok(BackboneConfig::ResNet18 {
        in_channels,
        widths,
        stem_relu: true,
    })
}

fn detect_small_cnn(sd: &StateDict) -> Result<BackboneConfig, String> {
    let [c0, in_channels, _, _] = dims::<4>(sd, "conv1.weight")?;
    let [c1, _, _, _] = dims::<4>(sd, "conv2.weight")?;
    let [feature_dim, flat] = dims::<2>(sd, "fc1.weight")?;
    let area = if c1 > 0 && flat % c1 == 0 {
        flat / c1
    } else {
        0
    };
    let side = (area as f64).sqrt().round() as i64;
    if area == 0 || side * side != area {
        return Err(format!(
            "fc1 input {flat} is not {c1}·s² for a square feature map"
        ));
    }
    Ok(BackboneConfig::SmallCnn {
        in_channels,
        input_size: side * 4,
        channels: [c0, c1],
        feature_dim,
    })
}

fn detect_mlp(sd: &StateDict) -> Result<BackboneConfig, String> {
    let [_, input_dim] = dims::<2>(sd, "layers.0.weight")?;
    let mut hidden = Vec::new();
    while let Some(s) = sd.shape(&format!("layers.{}.weight", hidden.len())) {
        hidden.push(*s.first().ok_or("empty MLP weight")?);
    }
    Ok(BackboneConfig::Mlp { input_dim, hidden })
}

fn detect_head(sd: &StateDict, feature_dim: i64) -> Result<HeadConfig, String> {
    let check_in = |name: &str, in_dim: i64| {
        if in_dim == feature_dim {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {in_dim} inputs but the backbone emits {feature_dim} features"
            ))
        }
    };
    if sd.contains("fc.weight") {
        let [num_classes, d] = dims::<2>(sd, "fc.weight")?;
        check_in("fc", d)?;
        Ok(HeadConfig::Classifier { num_classes })
    } else if sd.contains("head.0.weight") {
        let [hidden_dim, d] = dims::<2>(sd, "head.0.weight")?;
        check_in("head.0", d)?;
        let [out_dim, _] = dims::<2>(sd, "head.2.weight")?;
        Ok(HeadConfig::MlpProjection {
            hidden_dim,
            out_dim,
        })
    } else if sd.contains("head.weight") {
        let [out_dim, d] = dims::<2>(sd, "head.weight")?;
        check_in("head", d)?;
        Ok(HeadConfig::LinearProjection { out_dim })
    } else {
        Ok(HeadConfig::None)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor, nn};

    use super::*;
    use crate::models::Model;

    fn state_of(arch: &ArchConfig) -> Vec<(String, Tensor)> {
        let vs = nn::VarStore::new(Device::Cpu);
        Model::new(&vs.root(), arch).unwrap();
        vs.variables().into_iter().collect()
    }

    fn small_resnet() -> ArchConfig {
        ArchConfig {
            backbone: BackboneConfig::ResNet18 {
                in_channels: 2,
                widths: [4, 4, 8, 8],
                stem_relu: true,
            },
            head: HeadConfig::Classifier { num_classes: 3 },
        }
    }

    #[test]
    fn detects_what_it_built() {
        for arch in [
            small_resnet(),
            ArchConfig {
                backbone: BackboneConfig::small_cnn(3),
                head: HeadConfig::LinearProjection { out_dim: 4 },
            },
            ArchConfig {
                backbone: BackboneConfig::Mlp {
                    input_dim: 12,
                    hidden: vec![7, 5, 3],
                },
                head: HeadConfig::MlpProjection {
                    hidden_dim: 6,
                    out_dim: 2,
                },
            },
        ] {
            assert_eq!(
                detect_architecture(&StateDict::new(state_of(&arch))).unwrap(),
                arch
            );
        }
    }

    #[test]
    fn explains_unsupported_resnets() {
        let zeros = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        let mut imagenet = state_of(&small_resnet());
        for (k, t) in imagenet.iter_mut() {
            if k == "conv1.weight" {
                *t = zeros(&[4, 2, 7, 7]);
            }
        }
        let e = detect_architecture(&StateDict::new(imagenet)).unwrap_err();
        assert!(e.contains("7×7") && e.contains("ImageNet"), "{e}");

        let mut deeper = state_of(&small_resnet());
        deeper.push(("layer3.2.conv1.weight".into(), zeros(&[8, 8, 3, 3])));
        let e = detect_architecture(&StateDict::new(deeper)).unwrap_err();
        assert!(
            e.contains("layer3") && e.contains("more than 2 blocks"),
            "{e}"
        );

        let e = detect_architecture(&StateDict::new(vec![("encoder.w".into(), zeros(&[2]))]))
            .unwrap_err();
        assert!(e.contains("encoder.w"), "{e}");
    }
}
