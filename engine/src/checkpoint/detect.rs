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

/// Names and shapes of the variables [`crate::models::Model::new`] creates for
/// `arch`, worked out without creating them: a few bytes of metadata can ask
/// for widths whose weights would fill any memory, so a claimed architecture
/// is compared with the tensors in the file before anything is allocated.
/// `None` when a dimension is not positive or too large to multiply out.
pub(crate) fn arch_variables(arch: &ArchConfig) -> Option<Vec<(String, Vec<i64>)>> {
    let mut vars: Vec<(String, Vec<i64>)> = Vec::new();
    let mut push = |name: String, shape: Vec<i64>| vars.push((name, shape));
    let conv = |push: &mut dyn FnMut(String, Vec<i64>), p: &str, c_in, c_out, k, bias: bool| {
        push(format!("{p}.weight"), vec![c_out, c_in, k, k]);
        if bias {
            push(format!("{p}.bias"), vec![c_out]);
        }
    };
    let bn = |push: &mut dyn FnMut(String, Vec<i64>), p: &str, c: i64| {
        for v in ["weight", "bias", "running_mean", "running_var"] {
            push(format!("{p}.{v}"), vec![c]);
        }
    };
    let linear = |push: &mut dyn FnMut(String, Vec<i64>), p: &str, d_in: i64, d_out: i64| {
        push(format!("{p}.weight"), vec![d_out, d_in]);
        push(format!("{p}.bias"), vec![d_out]);
    };
    match &arch.backbone {
        BackboneConfig::ResNet18 {
            in_channels,
            widths,
            ..
        } => {
            conv(&mut push, "conv1", *in_channels, widths[0], 3, false);
            bn(&mut push, "bn1", widths[0]);
            let mut c_in = widths[0];
            for (i, &w) in widths.iter().enumerate() {
                let stride = if i == 0 { 1 } else { 2 };
                for (b, block_in) in [(0, c_in), (1, w)] {
                    let p = format!("layer{}.{b}", i + 1);
                    conv(&mut push, &format!("{p}.conv1"), block_in, w, 3, false);
                    bn(&mut push, &format!("{p}.bn1"), w);
                    conv(&mut push, &format!("{p}.conv2"), w, w, 3, false);
                    bn(&mut push, &format!("{p}.bn2"), w);
                    if b == 0 && (stride != 1 || block_in != w) {
                        conv(
                            &mut push,
                            &format!("{p}.downsample.0"),
                            block_in,
                            w,
                            1,
                            false,
                        );
                        bn(&mut push, &format!("{p}.downsample.1"), w);
                    }
                }
                c_in = w;
            }
        }
        BackboneConfig::SmallCnn {
            in_channels,
            input_size,
            channels,
            feature_dim,
        } => {
            let side = input_size / 4;
            let flat = channels[1].checked_mul(side)?.checked_mul(side)?;
            conv(&mut push, "conv1", *in_channels, channels[0], 3, true);
            conv(&mut push, "conv2", channels[0], channels[1], 3, true);
            linear(&mut push, "fc1", flat, *feature_dim);
        }
        BackboneConfig::Mlp { input_dim, hidden } => {
            let mut d_in = *input_dim;
            for (i, &h) in hidden.iter().enumerate() {
                linear(&mut push, &format!("layers.{i}"), d_in, h);
                d_in = h;
            }
        }
    }
    let d = arch.backbone.feature_dim();
    match &arch.head {
        HeadConfig::Classifier { num_classes } => linear(&mut push, "fc", d, *num_classes),
        HeadConfig::LinearProjection { out_dim } => linear(&mut push, "head", d, *out_dim),
        HeadConfig::MlpProjection {
            hidden_dim,
            out_dim,
        } => {
            linear(&mut push, "head.0", d, *hidden_dim);
            linear(&mut push, "head.2", *hidden_dim, *out_dim);
        }
        HeadConfig::None => {}
    }
    let sane = vars.iter().all(|(_, s)| {
        s.iter().all(|&x| x > 0) && s.iter().try_fold(1i64, |a, &x| a.checked_mul(x)).is_some()
    });
    sane.then_some(vars)
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
    fn arch_variables_match_the_built_models() {
        for arch in [
            small_resnet(),
            ArchConfig::resnet18_simclr(3),
            ArchConfig::resnet18_moco(1),
            ArchConfig {
                backbone: BackboneConfig::small_cnn(3),
                head: HeadConfig::LinearProjection { out_dim: 4 },
            },
            ArchConfig {
                backbone: BackboneConfig::small_cnn(1),
                head: HeadConfig::None,
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
            let mut built: Vec<(String, Vec<i64>)> = state_of(&arch)
                .into_iter()
                .map(|(k, t)| (k, t.size()))
                .collect();
            built.sort();
            let mut listed = arch_variables(&arch).unwrap();
            listed.sort();
            assert_eq!(listed, built, "{arch}");
        }
        let mut bad = small_resnet();
        bad.head = HeadConfig::Classifier { num_classes: 0 };
        assert!(arch_variables(&bad).is_none());
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
