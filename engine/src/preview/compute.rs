//! The answers to [`Request`]s, computed where the file is parsed (the worker).

use super::{
    ArtifactData, DatasetInfo, FolderPreview, ForgetMode, ForgetPreview, ForgetRequest,
    MAX_ELEMENTS, MAX_TOTAL_ELEMENTS, Picture, Request, Scores, THUMB_SIDE, TensorData,
};
use crate::data::{Dataset, DatasetSummary, ForgetSet};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// How many pictures a forget-set preview shows.
const PREVIEW_THUMBS: usize = 48;

/// Answers `request` in this process: the worker's side of [`super::in_worker`].
/// Refusals are messages naming the file.
pub fn answer(request: &Request) -> Result<Value, String> {
    match request {
        Request::Checkpoint { path } => {
            to_value(&crate::checkpoint::inspect(path).map_err(|e| e.to_string())?)
        }
        Request::Dataset { path, seed } => {
            let d = load(path)?;
            to_value(&dataset_info(path, &d, *seed)?)
        }
        Request::Forget(req) => {
            let d = load(&req.data)?;
            to_value(&forget_preview(req, &d)?)
        }
        Request::Samples { data, indices } => {
            let d = load(data)?;
            let pictures: Vec<(i64, Picture)> = indices
                .iter()
                .filter_map(|&i| sample_picture(&d, i, format!("#{i}")).map(|t| (i, t)))
                .collect();
            to_value(&pictures)
        }
        Request::Artifact { path, values_out } => to_value(&artifact(path, values_out)?),
        Request::Scores { dir } => to_value(&read_scores(dir)?),
    }
}

fn to_value<T: Serialize>(t: &T) -> Result<Value, String> {
    serde_json::to_value(t).map_err(|e| format!("cannot encode the answer: {e}"))
}

fn load(path: &Path) -> Result<Dataset, String> {
    crate::data::load(path).map_err(|e| e.to_string())
}

fn sample_picture(d: &Dataset, index: i64, label: String) -> Option<Picture> {
    let position = d.indices().iter().position(|&i| i == index)?;
    let pixels = d.sample_pixels(position).ok()?;
    let class = d
        .label_slice()
        .get(position)
        .and_then(|&l| d.classes().get(l as usize))
        .cloned()
        .unwrap_or_default();
    Some(Picture {
        detail: format!("training sample {index}, class {class}"),
        label,
        channels: d.channels(),
        height: d.height(),
        width: d.width(),
        pixels,
    })
}

fn dataset_info(path: &Path, d: &Dataset, seed: u64) -> Result<DatasetInfo, String> {
    let summary = DatasetSummary::of(path, d);
    let split = crate::jobs::train::split_of(d, seed).map_err(|e| e.to_string())?;
    let mut train_class_counts = vec![0; d.num_classes()];
    let labels = d.label_slice();
    for &i in &split.train {
        if let Some(c) = labels
            .get(i as usize)
            .and_then(|&l| train_class_counts.get_mut(l as usize))
        {
            *c += 1;
        }
    }
    let mut examples = Vec::new();
    for class in 0..d.num_classes().min(10) {
        if let Some(pos) = labels.iter().position(|&l| l as usize == class) {
            let name = d.classes().get(class).cloned().unwrap_or_default();
            if let Some(t) = sample_picture(d, d.indices()[pos], name) {
                examples.push(t);
            }
        }
    }
    Ok(DatasetInfo {
        summary,
        split_recorded: d.recorded_split().is_some(),
        split,
        train_class_counts,
        examples,
    })
}

/// A photo shrunk (nearest neighbour) so that its longer side is at most
/// [`THUMB_SIDE`].
fn shrink(img: crate::data::DecodedImage, label: String, detail: String) -> Picture {
    let (h, w, c) = (img.height.max(1), img.width.max(1), img.channels);
    let scale = (h.max(w) as f64 / THUMB_SIDE as f64).max(1.0);
    let (th, tw) = (
        ((h as f64 / scale) as usize).max(1),
        ((w as f64 / scale) as usize).max(1),
    );
    let mut pixels = Vec::with_capacity(c * th * tw);
    for ch in 0..c {
        for y in 0..th {
            let sy = ((y as f64 * scale) as usize).min(h - 1);
            for x in 0..tw {
                let sx = ((x as f64 * scale) as usize).min(w - 1);
                pixels.push(
                    img.pixels
                        .get(ch * h * w + sy * w + sx)
                        .copied()
                        .unwrap_or(0),
                );
            }
        }
    }
    Picture {
        label,
        detail,
        channels: c,
        height: th,
        width: tw,
        pixels,
    }
}

fn forget_preview(req: &ForgetRequest, d: &Dataset) -> Result<ForgetPreview, String> {
    let split = crate::jobs::train::split_of(d, req.seed).map_err(|e| e.to_string())?;
    let mut folder = None;
    let set = match req.mode {
        ForgetMode::ListFile => {
            if req.list_path.as_os_str().is_empty() {
                return Err("choose a list file".into());
            }
            ForgetSet::from_list_file(&req.list_path, d.len(), &split.train)
        }
        ForgetMode::Class => ForgetSet::from_class(d, &split.train, req.class),
        ForgetMode::Fraction => {
            ForgetSet::random_fraction(&split.train, req.fraction, req.fraction_seed)
        }
        ForgetMode::Folder => {
            if req.folder.as_os_str().is_empty() {
                return Err("choose a folder of images".into());
            }
            let m = crate::data::match_image_folder(&req.folder, d, &split.train)
                .map_err(|e| e.to_string())?;
            let unmatched_thumbs = m
                .unmatched
                .iter()
                .take(PREVIEW_THUMBS)
                .filter_map(|p| {
                    let img = crate::data::decode_image_file(p).ok()?;
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let detail = format!("{}: matches no training sample", p.display());
                    Some(shrink(img, name, detail))
                })
                .collect();
            folder = Some(FolderPreview {
                matched: m
                    .matched
                    .iter()
                    .map(|f| (f.path.clone(), f.indices.clone()))
                    .collect(),
                unmatched: m.unmatched.clone(),
                unmatched_thumbs,
            });
            // Unmatched files are shown, and saving asks to acknowledge them; the
            // set itself is the matched samples, through the engine's own checks.
            let mut matched_only = m;
            matched_only.unmatched.clear();
            matched_only.into_forget_set(&split.train)
        }
    }
    .map_err(|e| e.to_string());
    let set = match (set, &folder) {
        (Ok(s), _) => s,
        // A folder whose files all fail to match is still worth showing.
        (Err(e), Some(_)) => {
            return Ok(ForgetPreview {
                indices: Vec::new(),
                origin: e,
                train_len: split.train.len(),
                per_class: Vec::new(),
                whole_classes: false,
                thumbs: Vec::new(),
                folder,
            });
        }
        (Err(e), None) => return Err(e),
    };
    let labels = d.label_slice();
    let mut counts = vec![0usize; d.num_classes()];
    for &i in set.indices() {
        if let Some(c) = labels
            .get(i as usize)
            .and_then(|&l| counts.get_mut(l as usize))
        {
            *c += 1;
        }
    }
    let per_class = d
        .classes()
        .iter()
        .cloned()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .collect();
    let thumbs = set
        .indices()
        .iter()
        .take(PREVIEW_THUMBS)
        .filter_map(|&i| sample_picture(d, i, format!("#{i}")))
        .collect();
    // The set was made from the matched files alone; its origin must not claim
    // that nothing went unmatched when the person's folder had such files.
    let origin = match folder.as_ref().map(|f| f.unmatched.len()) {
        Some(n) if n > 0 => set.origin().replace(
            "none unmatched",
            &format!("{n} matched no training sample (listed, not forgotten)"),
        ),
        _ => set.origin().to_string(),
    };
    Ok(ForgetPreview {
        indices: set.indices().to_vec(),
        origin,
        train_len: split.train.len(),
        per_class,
        whole_classes: set.is_whole_classes(d, &split.train),
        thumbs,
        folder,
    })
}

/// Reads a result file with its tensors' values (at most [`MAX_ELEMENTS`] per
/// tensor, [`MAX_TOTAL_ELEMENTS`] in all). In this process: for the worker, and
/// for files Lethe wrote itself.
pub fn read_artifact(path: &Path) -> Result<ArtifactData, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(ArtifactData::Json(value));
    }
    let ckpt = crate::checkpoint::read(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for (name, t) in ckpt.state_dict.iter() {
        let numel = t.numel() as u64;
        let values = if numel as i64 <= MAX_ELEMENTS && total + numel <= MAX_TOTAL_ELEMENTS {
            let flat = t
                .f_to_kind(tch::Kind::Float)
                .and_then(|f| f.f_flatten(0, -1))
                .and_then(|f| f.f_contiguous())
                .map_err(|e| format!("{}: tensor {name}: {e}", path.display()))?;
            total += numel;
            Some(
                Vec::<f32>::try_from(&flat)
                    .map_err(|e| format!("{}: tensor {name}: {e}", path.display()))?,
            )
        } else {
            None
        };
        out.push(TensorData {
            name: name.to_string(),
            shape: t.size(),
            dtype: format!("{:?}", t.kind()),
            loaded: values.as_ref().map_or(0, |v| v.len() as u64),
            values,
        });
    }
    Ok(ArtifactData::Tensors(out))
}

/// [`read_artifact`], with the values moved to `values_out` (a new file,
/// little-endian f32 in tensor order) for the frame to stay small.
fn artifact(path: &Path, values_out: &Path) -> Result<ArtifactData, String> {
    let mut tensors = match read_artifact(path)? {
        ArtifactData::Tensors(t) => t,
        json => return Ok(json),
    };
    let mut bytes = Vec::new();
    for t in &mut tensors {
        if let Some(v) = t.values.take() {
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
    }
    if !bytes.is_empty() {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(values_out)?;
            f.write_all(&bytes)
        };
        write().map_err(|e| format!("cannot write {}: {e}", values_out.display()))?;
    }
    Ok(ArtifactData::Tensors(tensors))
}

fn read_vector(path: &Path) -> Result<Vec<f64>, String> {
    let ckpt = crate::checkpoint::read(path).map_err(|e| e.to_string())?;
    let (_, t) = ckpt
        .state_dict
        .iter()
        .next()
        .ok_or_else(|| format!("{}: no tensor", path.display()))?;
    let flat = t
        .f_to_kind(tch::Kind::Double)
        .and_then(|f| f.f_flatten(0, -1))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Vec::<f64>::try_from(&flat).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `scores_<role>.safetensors` files in `dir` (an attack's output folder).
/// In this process: for the worker, and for folders Lethe wrote itself.
pub fn read_scores(dir: &Path) -> Result<Scores, String> {
    let read = |role: &str| -> Result<Option<Vec<f64>>, String> {
        let p = dir.join(format!("scores_{role}.safetensors"));
        if p.is_file() {
            read_vector(&p).map(Some)
        } else {
            Ok(None)
        }
    };
    let scores = Scores {
        forget: read("forget")?,
        member: read("member")?,
        nonmember: read("nonmember")?,
    };
    let total: usize = [&scores.forget, &scores.member, &scores.nonmember]
        .iter()
        .map(|s| s.as_ref().map_or(0, Vec::len))
        .sum();
    if total > MAX_SCORES {
        return Err(format!(
            "{}: {total} membership scores, more than the viewer shows ({MAX_SCORES})",
            dir.display()
        ));
    }
    Ok(scores)
}

/// Scores the viewer draws, all roles together (they travel in one message).
const MAX_SCORES: usize = 500_000;
