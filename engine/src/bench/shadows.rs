//! The batched-shadow rows of `lethe bench` (issue #25 item 3): LiRA's shadow
//! models of the leaky demo MLP, each trained on its own random half of the demo's
//! 2,000 training digits with the demo model's recipe (Adam 1e-3, batch 128, no
//! augmentation), then run on every row of the dataset for its logits, as the
//! shadow service does. Lethe trains them in stacks ([`crate::train::stacked`],
//! what the service does for small MLPs) or one after another
//! ([`crate::train::supervised::train_classifier`], what it does otherwise);
//! `bench/pytorch_reference.py` trains them in a plain PyTorch loop, one after
//! another (what Privacy Meter and Deep Unlearn do), or as one `torch.func`
//! stacked ensemble (`vmap` over `functional_call`). Both sides time the same
//! work in-process, from the loaded data to the last model's logits; the cache
//! writes of the service (a few MB) are not part of it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::rows::{RowResult, peak_rss_mib};
use crate::models::{ArchConfig, BackboneConfig, HeadConfig, Model};
use crate::train::stacked::{StackMember, predict_stacked, train_stacked};
use crate::train::supervised::{predict_logits, train_classifier};
use crate::train::{Flow, OptimizerConfig, Schedule, TrainConfig};

/// One set of shadow models to time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowSpec {
    /// Always `"shadows"`: tells the row kinds apart in `--run-row`.
    pub kind: String,
    /// Row name in the table.
    pub name: String,
    /// Dataset with a recorded split (the shadows train on halves of its
    /// training part).
    pub data: PathBuf,
    /// Models.
    pub models: usize,
    /// Epochs per model.
    pub epochs: usize,
    /// Batch size.
    pub batch: i64,
    /// Hidden widths of the MLP.
    pub hidden: Vec<i64>,
    /// Adam's learning rate.
    pub lr: f64,
    /// Lethe's way: `stacked` or `sequential`.
    pub lethe: String,
    /// PyTorch's way: `loop` (one after another) or `func` (a `torch.func`
    /// stacked ensemble).
    pub pytorch: String,
    /// Largest stack on Lethe's side.
    pub stack: usize,
    /// Intra-op threads.
    pub threads: i32,
    /// Seed.
    pub seed: i64,
}

/// The shadow rows: 16 models of the leaky demo MLP, Lethe stacked against the
/// PyTorch loop (the target: ≥ 3×) and against `torch.func`, and Lethe one
/// after another against the same loop.
pub fn default_shadow_rows(demo: &Path, threads: i32) -> Vec<ShadowSpec> {
    let row = |name: &str, lethe: &str, pytorch: &str| ShadowSpec {
        kind: "shadows".into(),
        name: name.into(),
        data: demo.join("mnist10k-2k.npz"),
        models: 16,
        epochs: 10,
        batch: 128,
        hidden: vec![512, 512],
        lr: 1e-3,
        lethe: lethe.into(),
        pytorch: pytorch.into(),
        stack: crate::shadows::train::DEFAULT_STACK,
        threads,
        seed: 0,
    };
    let base = "LiRA, 16 shadow models of the leaky demo MLP";
    vec![
        row(
            &format!("{base}: Lethe stacked vs PyTorch loop"),
            "stacked",
            "loop",
        ),
        row(
            &format!("{base}: Lethe one by one vs PyTorch loop"),
            "sequential",
            "loop",
        ),
        row(
            &format!("{base}: Lethe stacked vs torch.func ensemble"),
            "stacked",
            "func",
        ),
    ]
}

/// Trains and runs the models of `spec` in this process; the timed part is
/// everything after loading the data.
pub fn run_shadow_row(spec: &ShadowSpec) -> anyhow::Result<RowResult> {
    tch::set_num_threads(spec.threads);
    let data = crate::data::load_npz(&spec.data)?;
    let train = data
        .recorded_split()
        .map(|s| s.train.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: no recorded split", spec.data.display()))?;
    let n = train.len() as i64;
    let pool = Tensor::from_slice(&train);
    tch::manual_seed(spec.seed);
    let halves: Vec<Vec<i64>> = (0..spec.models)
        .map(|_| {
            Vec::<i64>::try_from(pool.index_select(
                0,
                &Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(0, 0, n / 2),
            ))
        })
        .collect::<Result<_, _>>()?;
    let input_dim = (data.channels() * data.height() * data.width()) as i64;
    let arch = ArchConfig {
        backbone: BackboneConfig::Mlp {
            input_dim,
            hidden: spec.hidden.clone(),
        },
        head: HeadConfig::Classifier {
            num_classes: data.num_classes() as i64,
        },
    };
    let cfg = TrainConfig {
        epochs: spec.epochs,
        batch_size: spec.batch,
        lr: spec.lr,
        weight_decay: 0.0,
        optimizer: OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
        },
        schedule: Schedule::Constant,
        seed: 0,
        drop_last: false,
        augment: None,
    };
    let fresh = |k: usize| -> anyhow::Result<(u64, VarStore, Model)> {
        let seed = spec.seed as u64 + k as u64;
        tch::manual_seed(seed as i64);
        let vs = VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), &arch)?;
        Ok((seed, vs, model))
    };
    let start = Instant::now();
    let mut checksum = 0.0;
    match spec.lethe.as_str() {
        "sequential" => {
            for (k, rows) in halves.iter().enumerate() {
                let (seed, vs, model) = fresh(k)?;
                let idx = Tensor::from_slice(rows);
                let c = TrainConfig {
                    seed,
                    ..cfg.clone()
                };
                train_classifier(
                    &model,
                    &vs,
                    &data.images().index_select(0, &idx),
                    &data.labels().index_select(0, &idx),
                    &c,
                    &mut |_| Flow::Continue,
                )?;
                checksum += predict_logits(&model, data.images(), 512, Device::Cpu)
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
        }
        "stacked" => {
            let ks: Vec<usize> = (0..spec.models).collect();
            for chunk in ks.chunks(spec.stack.max(1)) {
                let models = chunk
                    .iter()
                    .map(|&k| fresh(k))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let members: Vec<StackMember<'_>> = models
                    .iter()
                    .zip(chunk)
                    .map(|((seed, vs, _), &k)| StackMember {
                        vs,
                        rows: &halves[k],
                        seed: *seed,
                    })
                    .collect();
                train_stacked(
                    &arch,
                    data.images(),
                    data.labels(),
                    &members,
                    &cfg,
                    &mut |_| Flow::Continue,
                )?;
                let stores: Vec<&VarStore> = models.iter().map(|(_, vs, _)| vs).collect();
                for logits in predict_stacked(&arch, &stores, data.images(), 512)? {
                    checksum += logits.sum(Kind::Double).double_value(&[]);
                }
            }
        }
        other => anyhow::bail!("unknown Lethe way `{other}` (stacked or sequential)"),
    }
    let seconds = start.elapsed().as_secs_f64();
    if !checksum.is_finite() {
        anyhow::bail!("the shadow models' logits are not finite");
    }
    let images = (spec.models * spec.epochs) as f64 * (n / 2) as f64;
    Ok(RowResult {
        images_per_sec: images / seconds.max(1e-9),
        seconds,
        peak_rss_mib: peak_rss_mib(),
        forget_loss_before: None,
        forget_loss_after: None,
        page_faults_per_step: None,
    })
}
