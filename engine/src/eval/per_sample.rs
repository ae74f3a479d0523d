//! Per-sample verification of a deletion (`lethe verify-samples RUN`): U-LiRA
//! on the unlearned model and online LiRA on the original, with the same
//! shadow models, the same roles and the same seed, set side by side.
//!
//! * **after**: U-LiRA (`org.lethe.attack.ulira`) on the unlearned model: can
//!   an attacker who knows the method tell each forgotten sample from one the
//!   model never saw? AUC and TPR at low FPR with intervals, the share of
//!   forgotten samples with p < alpha (exact interval), and the same share on
//!   never-seen samples, which is the test's own false-positive rate;
//! * **before**: LiRA online (`org.lethe.attack.lira`) on the original model,
//!   the same numbers before the deletion (its shadow models are U-LiRA's
//!   trained ones, from the cache);
//! * **the onion effect** (Carlini et al. 2022, as Hayes et al. measure it
//!   after unlearning): for the held-out retained samples, `−log10 p` before
//!   and after; the ones whose exposure grew the most, and how many became
//!   significant that were not.
//!
//! Both attacks run in workers through [`super::attack::run_attack`]; this
//! module only reads their result files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::EvalError;
use super::attack::{
    AttackMetrics, AttackRequest, estimate_attack, read_positions, read_pvalues, run_attack,
};
use super::job_data::JobData;
use crate::jobs::run_record::RunRecord;
use crate::metrics::MetricOptions;
use crate::worker::protocol::DescriptorInfo;
use crate::worker::{FromWorker, WorkerOptions};

/// U-LiRA's id.
pub const ULIRA: &str = "org.lethe.attack.ulira";
/// LiRA's id.
pub const LIRA: &str = "org.lethe.attack.lira";
/// Lines listed per table.
const TOP: usize = 10;

/// The shadow settings both attacks share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifySettings {
    /// Shadow models, K.
    pub shadow_models: u32,
    /// Pool size (0 = every sample).
    pub shadow_population: u64,
    /// Epochs per shadow model (0 = the recipe's).
    pub shadow_epochs: u32,
    /// Held-out non-members and members (0 = as many as the forget set).
    pub heldout: usize,
    /// Population samples in the pool.
    pub z_samples: usize,
    /// Seed of the roles and the shadow models.
    pub seed: u64,
    /// Significance level.
    pub alpha: f64,
}

impl Default for VerifySettings {
    /// 16 shadow models on every sample, the recipe's epochs, 1,000 population
    /// samples, seed 0, alpha 0.05.
    fn default() -> Self {
        VerifySettings {
            shadow_models: 16,
            shadow_population: 0,
            shadow_epochs: 0,
            heldout: 0,
            z_samples: 1000,
            seed: 0,
            alpha: 0.05,
        }
    }
}

impl VerifySettings {
    /// From U-LiRA's parameters (its form or `--set` values); the keys it
    /// lacks keep [`VerifySettings::default`].
    pub fn from_params(p: &serde_json::Map<String, Value>) -> Self {
        let d = VerifySettings::default();
        let int = |k: &str, default: u64| p.get(k).and_then(Value::as_u64).unwrap_or(default);
        VerifySettings {
            shadow_models: u32::try_from(int("shadow_models", u64::from(d.shadow_models)))
                .unwrap_or(u32::MAX),
            shadow_population: int("shadow_population", d.shadow_population),
            shadow_epochs: u32::try_from(int("shadow_epochs", u64::from(d.shadow_epochs)))
                .unwrap_or(u32::MAX),
            heldout: usize::try_from(int("heldout_size", d.heldout as u64)).unwrap_or(usize::MAX),
            z_samples: usize::try_from(int("z_samples", d.z_samples as u64)).unwrap_or(usize::MAX),
            seed: int("seed", d.seed),
            alpha: p.get("alpha").and_then(Value::as_f64).unwrap_or(d.alpha),
        }
    }
}

/// One verification to run.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The deletion's run folder (`lethe unlearn --out`, with `run.json`).
    pub run_dir: PathBuf,
    /// Shared settings.
    pub settings: VerifySettings,
    /// New output folder.
    pub out_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Metric settings (bootstrap, level).
    pub metrics: MetricOptions,
    /// U-LiRA's library and descriptor.
    pub ulira: (PathBuf, DescriptorInfo),
    /// LiRA's library and descriptor.
    pub lira: (PathBuf, DescriptorInfo),
}

/// One sample in a table of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleLine {
    /// Dataset row.
    pub row: i64,
    /// p-value against "never saw it" on the original model (LiRA).
    pub p_before: f64,
    /// The same on the unlearned model (U-LiRA).
    pub p_after: f64,
}

impl SampleLine {
    /// `−log10 p` after minus before: how much more exposed it became.
    pub fn exposure_change(&self) -> f64 {
        neg_log10(self.p_after) - neg_log10(self.p_before)
    }
}

fn neg_log10(p: f64) -> f64 {
    -(p.max(1e-300)).log10()
}

/// The retained samples before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Onion {
    /// Held-out retained samples compared.
    pub samples: usize,
    /// Significant after (p < alpha) but not before.
    pub newly_significant: usize,
    /// Significant before but not after.
    pub no_longer_significant: usize,
    /// Median of `−log10 p` after minus before.
    pub median_change: f64,
    /// The largest increases of exposure (positive changes only).
    pub most_exposed: Vec<SampleLine>,
}

/// `per_sample.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerSampleReport {
    /// The original model.
    pub original: PathBuf,
    /// The unlearned model.
    pub unlearned: PathBuf,
    /// Its SHA-256 when verified: a report of the deletion uses this
    /// verification only while the deletion's model still has it.
    pub unlearned_sha256: Option<String>,
    /// The method that unlearned it.
    pub method: String,
    /// Its parameters.
    pub params: Value,
    /// The dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// Shared settings (`heldout` resolved).
    pub settings: VerifySettings,
    /// U-LiRA on the unlearned model.
    pub after: AttackMetrics,
    /// LiRA on the original model.
    pub before: AttackMetrics,
    /// Forgotten samples an attacker tells apart best after the deletion.
    pub most_distinguishable: Vec<SampleLine>,
    /// The onion effect on retained samples.
    pub onion: Onion,
    /// The estimate made first (seconds; `None` when it could not be made).
    pub estimated_seconds: Option<f64>,
    /// Wall time of both attacks.
    pub seconds: f64,
}

/// The deletion of `run_dir` (a `lethe unlearn` folder or the app's): its
/// record, the unlearned model, and the job's data.
fn deletion(run_dir: &Path) -> Result<(RunRecord, PathBuf, JobData), EvalError> {
    let (record, _) =
        crate::report::sources::read_run(run_dir).map_err(|e| EvalError::Invalid(e.to_string()))?;
    // A `lethe unlearn` folder that moved keeps its model beside run.json.
    let unlearned = record
        .unlearned
        .as_ref()
        .map(|u| u.path.clone())
        .filter(|p| p.is_file())
        .or_else(|| Some(run_dir.join("model.safetensors")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            EvalError::Invalid(format!(
                "{}: the deletion saved no unlearned model to verify",
                run_dir.display()
            ))
        })?;
    for (what, path) in [
        ("original model", &record.original.path),
        ("dataset", &record.data.path),
        ("forget list", &record.forget.list.path),
    ] {
        if !path.exists() {
            return Err(EvalError::Invalid(format!(
                "{}: the deletion's {what} {} is not there any more",
                run_dir.display(),
                path.display()
            )));
        }
    }
    let job = JobData::load(&record.data.path, &record.forget.list.path, record.seed)?;
    Ok((record, unlearned, job))
}

fn attack_params(s: &VerifySettings, lira: bool) -> Value {
    let mut p = json!({
        "shadow_models": s.shadow_models,
        "shadow_population": s.shadow_population,
        "shadow_epochs": s.shadow_epochs,
        "heldout_size": s.heldout,
        "z_samples": s.z_samples,
        "seed": s.seed,
    });
    if lira {
        p["variant"] = json!("online");
    } else {
        p["alpha"] = json!(s.alpha);
    }
    p
}

fn request(
    req: &VerifyRequest,
    record: &RunRecord,
    (library, descriptor): &(PathBuf, DescriptorInfo),
    checkpoint: &Path,
    settings: &VerifySettings,
    out: PathBuf,
) -> AttackRequest {
    AttackRequest {
        library: library.clone(),
        descriptor: descriptor.clone(),
        params: attack_params(settings, descriptor.id == LIRA),
        checkpoint: checkpoint.to_path_buf(),
        data: record.data.path.clone(),
        forget: record.forget.list.path.clone(),
        out_dir: out,
        seed: record.seed,
        device: req.device.clone(),
        metrics: req.metrics.clone(),
    }
}

/// `settings` with `heldout` resolved against the forget set's size.
fn resolved(settings: &VerifySettings, job: &JobData) -> VerifySettings {
    let mut s = settings.clone();
    if s.heldout == 0 {
        s.heldout = job.forget.indices().len().max(1);
    }
    s
}

/// What verifying `req` will cost: U-LiRA's estimate (LiRA then finds its
/// trained shadow models in the cache).
pub fn estimate(
    worker: &WorkerOptions,
    req: &VerifyRequest,
) -> Result<super::attack::AttackEstimate, EvalError> {
    let (record, unlearned, job) = deletion(&req.run_dir)?;
    let s = resolved(&req.settings, &job);
    let r = request(
        req,
        &record,
        &req.ulira,
        &unlearned,
        &s,
        req.out_dir.join("after"),
    );
    estimate_attack(worker, &r)
}

/// Runs both attacks (events go to `on_event`) and writes `per_sample.json`
/// into the new folder `req.out_dir` (`after/` and `before/` hold each
/// attack's files).
pub fn verify_samples(
    worker: &WorkerOptions,
    req: &VerifyRequest,
    on_event: impl FnMut(FromWorker) + Send + Clone + 'static,
) -> Result<PerSampleReport, EvalError> {
    if req.out_dir.exists() {
        return Err(EvalError::Invalid(format!(
            "output folder {} already exists; results are never written over",
            req.out_dir.display()
        )));
    }
    let (record, unlearned, job) = deletion(&req.run_dir)?;
    let s = resolved(&req.settings, &job);
    let after_dir = req.out_dir.join("after");
    let before_dir = req.out_dir.join("before");
    let after_req = request(req, &record, &req.ulira, &unlearned, &s, after_dir.clone());
    // The estimate writes nothing into the request's folder.
    let estimated = estimate_attack(worker, &after_req)
        .ok()
        .and_then(|e| e.shadows.map(|sh| sh.seconds));
    std::fs::create_dir_all(&req.out_dir)
        .map_err(|e| EvalError::Invalid(format!("{}: {e}", req.out_dir.display())))?;
    let started = Instant::now();
    let after = run_attack(worker, &after_req, on_event.clone())?;
    let before = run_attack(
        worker,
        &request(
            req,
            &record,
            &req.lira,
            &record.original.path,
            &s,
            before_dir.clone(),
        ),
        on_event,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let need = |dir: &Path, role: &str| -> Result<Vec<f64>, EvalError> {
        read_pvalues(dir, role)?
            .ok_or_else(|| EvalError::Invalid(format!("{} holds no pvalues_{role}", dir.display())))
    };
    // Forget samples are in split order in both runs.
    let forget_rows = job.forget.indices();
    let (fa, fb) = (need(&after_dir, "forget")?, need(&before_dir, "forget")?);
    if fa.len() != forget_rows.len() || fb.len() != forget_rows.len() {
        return Err(EvalError::Invalid(format!(
            "the attacks scored {} and {} forgotten samples, the forget set has {}",
            fa.len(),
            fb.len(),
            forget_rows.len()
        )));
    }
    let mut most: Vec<SampleLine> = forget_rows
        .iter()
        .zip(fa.iter().zip(&fb))
        .map(|(&row, (&p_after, &p_before))| SampleLine {
            row,
            p_before,
            p_after,
        })
        .collect();
    most.sort_by(|a, b| a.p_after.total_cmp(&b.p_after).then(a.row.cmp(&b.row)));
    most.truncate(TOP);
    let onion = onion(&after_dir, &before_dir, &job, s.alpha)?;
    let params = record.params.clone();
    let report = PerSampleReport {
        original: record.original.path.clone(),
        unlearned_sha256: crate::audit::path_sha256(&unlearned),
        unlearned,
        method: record.method.id.clone(),
        params,
        data: record.data.path.clone(),
        forget: record.forget.list.path.clone(),
        settings: s,
        after: after.metrics,
        before: before.metrics,
        most_distinguishable: most,
        onion,
        estimated_seconds: estimated,
        seconds,
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| EvalError::Invalid(format!("cannot encode per_sample.json: {e}")))?;
    crate::jobs::atomic::write_atomic(&req.out_dir.join("per_sample.json"), &json, false)?;
    Ok(report)
}

/// `pvalues_<role>` of an attack that must have written it.
fn need(dir: &Path, role: &str) -> Result<Vec<f64>, EvalError> {
    read_pvalues(dir, role)?
        .ok_or_else(|| EvalError::Invalid(format!("{} holds no pvalues_{role}", dir.display())))
}

/// The held-out retained samples' exposure before and after (both runs drew
/// the same ones: same seed, same split sizes; checked).
fn onion(after: &Path, before: &Path, job: &JobData, alpha: f64) -> Result<Onion, EvalError> {
    let positions = |dir: &Path| -> Result<Vec<i64>, EvalError> {
        read_positions(dir, "member")?.ok_or_else(|| {
            EvalError::Invalid(format!("{} holds no positions_member", dir.display()))
        })
    };
    let (pos, pos_before) = (positions(after)?, positions(before)?);
    if pos != pos_before {
        return Err(EvalError::Invalid(
            "the two attacks held out different retained samples; run them with the same seed \
             and held-out size"
                .into(),
        ));
    }
    let (pa, pb) = (need(after, "member")?, need(before, "member")?);
    if pa.len() != pos.len() || pb.len() != pos.len() {
        return Err(EvalError::Invalid(
            "retained p-values and positions differ in length".into(),
        ));
    }
    let mut lines = Vec::with_capacity(pos.len());
    for ((&p, &p_after), &p_before) in pos.iter().zip(&pa).zip(&pb) {
        let row = usize::try_from(p)
            .ok()
            .and_then(|p| job.retain.get(p))
            .copied()
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "retained position {p} is past the retain set ({} samples)",
                    job.retain.len()
                ))
            })?;
        lines.push(SampleLine {
            row,
            p_before,
            p_after,
        });
    }
    let newly = lines
        .iter()
        .filter(|l| l.p_after < alpha && l.p_before >= alpha)
        .count();
    let gone = lines
        .iter()
        .filter(|l| l.p_before < alpha && l.p_after >= alpha)
        .count();
    let mut changes: Vec<f64> = lines.iter().map(SampleLine::exposure_change).collect();
    changes.sort_by(f64::total_cmp);
    let median = match changes.len() {
        0 => 0.0,
        n if n % 2 == 1 => changes[n / 2],
        n => 0.5 * (changes[n / 2 - 1] + changes[n / 2]),
    };
    let samples = lines.len();
    lines.retain(|l| l.exposure_change() > 0.0);
    lines.sort_by(|a, b| {
        b.exposure_change()
            .total_cmp(&a.exposure_change())
            .then(a.row.cmp(&b.row))
    });
    lines.truncate(TOP);
    Ok(Onion {
        samples,
        newly_significant: newly,
        no_longer_significant: gone,
        median_change: median,
        most_exposed: lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_minus_log10_p_and_survives_zero() {
        let l = SampleLine {
            row: 1,
            p_before: 0.1,
            p_after: 0.001,
        };
        assert!((l.exposure_change() - 2.0).abs() < 1e-12);
        let zero = SampleLine {
            row: 2,
            p_before: 0.5,
            p_after: 0.0,
        };
        assert!(zero.exposure_change().is_finite());
    }
}
