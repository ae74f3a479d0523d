//! The engine side of a membership attack. The attack plugin runs in a worker
//! over the job's model and splits and writes per-sample scores (see the
//! `lethe-attack-kit` crate for the contract):
//!
//! * `scores_<role>.safetensors` (float, higher = more member-like) and
//!   `predictions_<role>.safetensors` (1 = member) for the roles `forget`
//!   (the target), `member` and `nonmember` (held out of the attack's fit),
//!   `shadow_member` and `shadow_nonmember` (its fit);
//! * `attack_summary.json`, its settings and fitted parameters.
//!
//! Here they become the metric set: the forget set against held-out
//! non-members (does the model still treat the forgotten samples as members?),
//! held-out members against the same non-members (can the attack detect
//! membership on this model at all?), the shadow fit, sanity checks, and
//! `attack.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tch::{Device, Kind};

use super::EvalError;
use super::job_data::JobData;
use super::shift::{ShiftCheck, input_shift};
use crate::jobs::atomic::write_atomic;
use crate::metrics::binomial::{Proportion, clopper_pearson};
use crate::metrics::sanity::{self, SanityFlag, Severity};
use crate::metrics::{MembershipMetrics, MetricOptions, membership_metrics};
use crate::worker::protocol::DescriptorInfo;
use crate::worker::{FromWorker, Job, JobOutcome, WorkerOptions, spawn_worker};

/// Scores and decisions of one role, as the plugin wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleScores {
    /// Membership scores.
    pub scores: Vec<f64>,
    /// The attack's decisions, when it wrote them.
    pub predictions: Option<Vec<bool>>,
}

fn read_tensor(path: &Path, name: &str) -> Result<tch::Tensor, EvalError> {
    let ckpt = crate::checkpoint::read(path)?;
    ckpt.state_dict
        .get(name)
        .map(|t| t.shallow_clone())
        .ok_or_else(|| EvalError::Invalid(format!("{} has no tensor `{name}`", path.display())))
}

/// The tensor `name` of `dir/<name>.safetensors`, flattened to `kind`, with
/// the file's path; `None` when the attack wrote no such file.
fn optional_tensor(
    dir: &Path,
    name: &str,
    kind: Kind,
) -> Result<Option<(PathBuf, tch::Tensor)>, EvalError> {
    let path = dir.join(format!("{name}.safetensors"));
    if !path.exists() {
        return Ok(None);
    }
    let t = read_tensor(&path, name)?
        .f_to_kind(kind)?
        .f_flatten(0, -1)?;
    Ok(Some((path, t)))
}

/// Reads `scores_<role>` (and `predictions_<role>`) from `dir`; `None` when the
/// attack wrote no scores for that role.
pub fn read_role(dir: &Path, role: &str) -> Result<Option<RoleScores>, EvalError> {
    let Some((path, t)) = optional_tensor(dir, &format!("scores_{role}"), Kind::Double)? else {
        return Ok(None);
    };
    let scores = Vec::<f64>::try_from(t)?;
    let predictions = match optional_tensor(dir, &format!("predictions_{role}"), Kind::Int64)? {
        Some((ppath, t)) => {
            let p = Vec::<i64>::try_from(t)?;
            if p.len() != scores.len() {
                return Err(EvalError::Invalid(format!(
                    "{} has {} entries but {} has {}",
                    ppath.display(),
                    p.len(),
                    path.display(),
                    scores.len()
                )));
            }
            Some(p.into_iter().map(|v| v != 0).collect())
        }
        None => None,
    };
    Ok(Some(RoleScores {
        scores,
        predictions,
    }))
}

/// How well the attack fits its own training data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowFit {
    /// AUC of shadow members vs shadow non-members (in-sample).
    pub auc: f64,
    /// Balanced accuracy of its decisions there.
    pub balanced_accuracy: Option<f64>,
}

/// The metric set of one attack run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackMetrics {
    /// Forget set (as members) vs held-out non-members.
    pub forget: MembershipMetrics,
    /// Held-out members vs held-out non-members: the attack's power on this
    /// model, the yardstick for the forget numbers.
    pub reference: Option<MembershipMetrics>,
    /// The attack's fit on its shadow data.
    pub shadow: Option<ShadowFit>,
    /// Per-sample evidence, from attacks that write p-values (U-LiRA, online
    /// LiRA).
    pub per_sample: Option<PerSample>,
}

/// How many samples an attacker can tell from ones the model never saw, one by
/// one: the share with a p-value below `alpha`, with exact intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerSample {
    /// Significance level (the attack's `alpha`, else 0.05).
    pub alpha: f64,
    /// Forgotten samples with p < alpha.
    pub forget: Proportion,
    /// Held-out non-members with p < alpha: the test's own false-positive
    /// rate, which should be about `alpha`.
    pub nonmember: Option<Proportion>,
    /// Held-out members with p < alpha.
    pub member: Option<Proportion>,
    /// The forget p-values counted in ten bins of width 0.1.
    pub histogram: [usize; 10],
}

/// Default significance level of [`PerSample`].
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Reads `pvalues_<role>` from `dir`, when the attack wrote it.
pub fn read_pvalues(dir: &Path, role: &str) -> Result<Option<Vec<f64>>, EvalError> {
    let Some((path, t)) = optional_tensor(dir, &format!("pvalues_{role}"), Kind::Double)? else {
        return Ok(None);
    };
    let p = Vec::<f64>::try_from(t)?;
    if let Some(bad) = p.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(EvalError::Invalid(format!(
            "{} holds {bad}, not a p-value",
            path.display()
        )));
    }
    Ok(Some(p))
}

/// Reads `positions_<role>` (split positions) from `dir`, when written.
pub fn read_positions(dir: &Path, role: &str) -> Result<Option<Vec<i64>>, EvalError> {
    optional_tensor(dir, &format!("positions_{role}"), Kind::Int64)?
        .map(|(_, t)| Vec::<i64>::try_from(t).map_err(EvalError::from))
        .transpose()
}

/// The per-sample section from the p-value files in `dir` (`None` when the
/// attack wrote none for the forget set).
pub fn per_sample(dir: &Path, level: f64) -> Result<Option<PerSample>, EvalError> {
    let Some(forget) = read_pvalues(dir, "forget")? else {
        return Ok(None);
    };
    let alpha = std::fs::read(dir.join("attack_summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["alpha"].as_f64())
        .filter(|a| *a > 0.0 && *a < 1.0)
        .unwrap_or(DEFAULT_ALPHA);
    let share =
        |p: &[f64]| clopper_pearson(p.iter().filter(|v| **v < alpha).count(), p.len(), level);
    let mut histogram = [0usize; 10];
    for p in &forget {
        histogram[((p * 10.0) as usize).min(9)] += 1;
    }
    Ok(Some(PerSample {
        alpha,
        forget: share(&forget),
        nonmember: read_pvalues(dir, "nonmember")?.map(|p| share(&p)),
        member: read_pvalues(dir, "member")?.map(|p| share(&p)),
        histogram,
    }))
}

fn decisions(r: &RoleScores) -> Option<&[bool]> {
    r.predictions.as_deref()
}

fn pair<'a>(m: &'a RoleScores, n: &'a RoleScores) -> Option<(&'a [bool], &'a [bool])> {
    decisions(m).zip(decisions(n))
}

/// Computes the metric set from the score files in `dir`.
pub fn attack_metrics(dir: &Path, opts: &MetricOptions) -> Result<AttackMetrics, EvalError> {
    let need = |role: &str| -> Result<RoleScores, EvalError> {
        read_role(dir, role)?.ok_or_else(|| {
            EvalError::Invalid(format!(
                "the attack wrote no scores_{role}.safetensors in {}",
                dir.display()
            ))
        })
    };
    let forget = need("forget")?;
    let non = need("nonmember")?;
    let metrics = |m: &RoleScores, n: &RoleScores, opts: &MetricOptions| {
        membership_metrics(&m.scores, &n.scores, pair(m, n), opts)
            .ok_or_else(|| EvalError::Invalid("a score set is empty or holds NaN".into()))
    };
    let forget_metrics = metrics(&forget, &non, opts)?;
    let reference = match read_role(dir, "member")? {
        Some(m) if !m.scores.is_empty() => Some(metrics(&m, &non, opts)?),
        _ => None,
    };
    let shadow = match (
        read_role(dir, "shadow_member")?,
        read_role(dir, "shadow_nonmember")?,
    ) {
        (Some(m), Some(n)) => {
            let quick = MetricOptions {
                resamples: 0,
                ..opts.clone()
            };
            membership_metrics(&m.scores, &n.scores, pair(&m, &n), &quick).map(|r| ShadowFit {
                auc: r.auc,
                balanced_accuracy: r.decisions.map(|d| d.balanced_accuracy),
            })
        }
        _ => None,
    };
    Ok(AttackMetrics {
        forget: forget_metrics,
        reference,
        shadow,
        per_sample: per_sample(dir, opts.level)?,
    })
}

/// One forget sample's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgetScore {
    /// Stable sample index.
    pub index: i64,
    /// Membership score.
    pub score: f64,
    /// The attack's decision (true = member).
    pub member: Option<bool>,
}

/// Label-mix distances behind the label-shift flags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelDistances {
    /// Forget set vs held-out non-members.
    pub forget_vs_nonmembers: f64,
    /// Retain vs test.
    pub train_vs_test: f64,
}

/// Sanity checks on the data behind the numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataChecks {
    /// Which split the held-out non-members came from.
    pub nonmember_split: String,
    /// Class-mix distances.
    pub label_distance: LabelDistances,
    /// Model-free separability of the inputs.
    pub input_shift: Vec<ShiftCheck>,
}

/// What ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackInfo {
    /// Descriptor id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Library file.
    pub library: PathBuf,
    /// The parameters as given (defaults fill in the rest; the plugin's summary
    /// records what it used).
    pub params: Value,
}

/// Settings of the bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapInfo {
    /// Replicates.
    pub resamples: usize,
    /// Coverage.
    pub level: f64,
    /// Seed.
    pub seed: u64,
}

/// `attack.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackReport {
    /// The attack.
    pub attack: AttackInfo,
    /// The attacked model.
    pub checkpoint: PathBuf,
    /// Its SHA-256.
    pub checkpoint_sha256: Option<String>,
    /// The dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget_list: PathBuf,
    /// Job seed (split draw, loader shuffles).
    pub seed: u64,
    /// Device the worker used.
    pub device: String,
    /// Bootstrap settings.
    pub bootstrap: BootstrapInfo,
    /// The metric set.
    pub metrics: AttackMetrics,
    /// Data checks.
    pub checks: DataChecks,
    /// Warnings.
    pub flags: Vec<SanityFlag>,
    /// Per forget sample.
    pub forget_scores: Vec<ForgetScore>,
    /// The plugin's own summary.
    pub plugin_summary: Value,
    /// Wall time of the worker job.
    pub seconds: f64,
}

/// One attack to run.
#[derive(Debug, Clone)]
pub struct AttackRequest {
    /// The plugin library and its descriptor.
    pub library: PathBuf,
    /// The attack's descriptor.
    pub descriptor: DescriptorInfo,
    /// Parameters (defaults fill in the rest).
    pub params: Value,
    /// The model to attack.
    pub checkpoint: PathBuf,
    /// Its dataset.
    pub data: PathBuf,
    /// The forget list.
    pub forget: PathBuf,
    /// New output folder.
    pub out_dir: PathBuf,
    /// Job seed.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Metric settings (FPR targets, bootstrap).
    pub metrics: MetricOptions,
}

/// Runs the attack in a worker (events go to `on_event`), then computes the
/// metric set and checks and writes `attack.json` into the output folder.
pub fn run_attack(
    worker: &WorkerOptions,
    req: &AttackRequest,
    on_event: impl FnMut(FromWorker) + Send + 'static,
) -> Result<AttackReport, EvalError> {
    if req.descriptor.kind != "attack" {
        return Err(EvalError::Invalid(format!(
            "`{}` is a {}, not an attack",
            req.descriptor.id, req.descriptor.kind
        )));
    }
    if req.out_dir.exists() {
        return Err(EvalError::Invalid(format!(
            "output folder {} already exists; results are never written over",
            req.out_dir.display()
        )));
    }
    let job = Job::Unlearn {
        library: req.library.clone(),
        id: req.descriptor.id.clone(),
        params: req.params.clone(),
        checkpoint: req.checkpoint.clone(),
        data: req.data.clone(),
        forget: req.forget.clone(),
        train_rows: None,
        out_dir: req.out_dir.clone(),
        seed: req.seed,
        device: req.device.clone(),
    };
    let handle = spawn_worker(worker, job, on_event)
        .map_err(|e| EvalError::Invalid(format!("cannot start the worker process: {e}")))?;
    let report = handle.wait();
    if !matches!(report.outcome, JobOutcome::Succeeded(_)) {
        let tail = report.stderr_tail.trim();
        return Err(EvalError::Invalid(if tail.is_empty() {
            format!("{} {}", req.descriptor.id, report.outcome)
        } else {
            format!(
                "{} {}\nworker log:\n{tail}",
                req.descriptor.id, report.outcome
            )
        }));
    }
    let seconds = report.elapsed.as_secs_f64();
    let out = report_from_dir(req, seconds)?;
    let json = serde_json::to_vec_pretty(&out)
        .map_err(|e| EvalError::Invalid(format!("cannot encode attack.json: {e}")))?;
    write_atomic(&req.out_dir.join("attack.json"), &json, false)?;
    Ok(out)
}

/// Builds the report from the files an attack run left in `req.out_dir`.
pub fn report_from_dir(req: &AttackRequest, seconds: f64) -> Result<AttackReport, EvalError> {
    let dir = &req.out_dir;
    let metrics = attack_metrics(dir, &req.metrics)?;
    let summary_path = dir.join("attack_summary.json");
    let plugin_summary: Value = match std::fs::read(&summary_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| EvalError::Invalid(format!("{}: {e}", summary_path.display())))?,
        Err(_) => Value::Null,
    };
    let data = JobData::load(&req.data, &req.forget, req.seed)?;
    let nonmember_split = plugin_summary["roles"]["heldout_nonmembers"]["split"]
        .as_str()
        .unwrap_or(if data.split.val.is_empty() {
            "test"
        } else {
            "validation"
        })
        .to_string();
    let nonmember_rows = if nonmember_split == "validation" {
        &data.split.val
    } else {
        &data.split.test
    };
    let forget_rows = data.forget.indices();
    let label_distance = LabelDistances {
        forget_vs_nonmembers: sanity::label_distance(
            &data.labels(forget_rows),
            &data.labels(nonmember_rows),
        ),
        train_vs_test: sanity::label_distance(
            &data.labels(&data.retain),
            &data.labels(&data.split.test),
        ),
    };
    let device = Device::Cpu;
    let mut input_checks = Vec::new();
    for (what, a, b) in [
        (
            format!("forget set vs {nonmember_split} (the non-members)"),
            forget_rows,
            nonmember_rows.as_slice(),
        ),
        (
            "retain (train) vs test".to_string(),
            data.retain.as_slice(),
            data.split.test.as_slice(),
        ),
    ] {
        if let Some(c) = input_shift(&what, &data.dataset, a, b, device, &req.metrics)? {
            input_checks.push(c);
        }
    }

    let mut flags = Vec::new();
    flags.extend(sanity::over_unlearning(
        metrics.forget.auc,
        metrics.forget.auc_ci.as_ref(),
    ));
    flags.extend(sanity::label_shift(
        &format!("forget set vs {nonmember_split}"),
        label_distance.forget_vs_nonmembers,
    ));
    flags.extend(sanity::label_shift(
        "retain (train) vs test",
        label_distance.train_vs_test,
    ));
    for c in &input_checks {
        flags.extend(sanity::input_shift(&c.what, c.auc, c.auc_ci.as_ref()));
    }
    if let Some(r) = &metrics.reference
        && r.auc_ci.is_some_and(|c| c.contains(0.5))
    {
        flags.push(SanityFlag {
            code: "weak_attack",
            severity: Severity::Info,
            message: format!(
                "the attack does not separate held-out members from non-members on this model \
                 (AUC {:.3}, interval includes 0.5): a forget-set AUC near 0.5 then says little \
                 about forgetting",
                r.auc
            ),
        });
    }

    let forget_scores = match read_role(dir, "forget")? {
        Some(r) => {
            let stable = data.dataset.indices();
            r.scores
                .iter()
                .enumerate()
                .map(|(i, &score)| ForgetScore {
                    index: forget_rows
                        .get(i)
                        .and_then(|&p| usize::try_from(p).ok())
                        .and_then(|p| stable.get(p).copied())
                        .unwrap_or(-1),
                    score,
                    member: r.predictions.as_ref().and_then(|p| p.get(i).copied()),
                })
                .collect()
        }
        None => Vec::new(),
    };
    Ok(AttackReport {
        attack: AttackInfo {
            id: req.descriptor.id.clone(),
            name: req.descriptor.name.clone(),
            version: req.descriptor.version.clone(),
            library: req.library.clone(),
            params: req.params.clone(),
        },
        checkpoint: req.checkpoint.clone(),
        checkpoint_sha256: crate::jobs::train::file_sha256(&req.checkpoint),
        data: req.data.clone(),
        forget_list: req.forget.clone(),
        seed: req.seed,
        device: req.device.clone(),
        bootstrap: BootstrapInfo {
            resamples: req.metrics.resamples,
            level: req.metrics.level,
            seed: req.metrics.seed,
        },
        metrics,
        checks: DataChecks {
            nonmember_split,
            label_distance,
            input_shift: input_checks,
        },
        flags,
        forget_scores,
        plugin_summary,
        seconds,
    })
}

/// Default timeout for the plugin scan that finds an attack by id.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What an attack will cost, found before it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackEstimate {
    /// The attack.
    pub attack: String,
    /// Its shadow models: how many are cached, how many must be trained and
    /// how long that takes (timed on a mini-batch); `None` when the attack
    /// asked for none (it then ran to the end in the dry run).
    pub shadows: Option<crate::shadows::ShadowEstimate>,
    /// Wall time of the dry run.
    pub seconds: f64,
}

/// A scratch folder for a dry run, unique within this process.
fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("lethe-estimate-{}-{n}", std::process::id()))
}

/// Estimates `req` without training anything: runs the attack in a worker
/// whose `lethe.shadow/1` records the cost of the shadow models the attack
/// asks for and stops it there. Nothing is written to `req.out_dir`. The
/// estimate's cache is the worker's (`worker.env`'s `LETHE_SHADOW_CACHE`, else
/// the inherited environment, else the default folder).
pub fn estimate_attack(
    worker: &WorkerOptions,
    req: &AttackRequest,
) -> Result<AttackEstimate, EvalError> {
    let dir = scratch_dir();
    let mut opts = worker.clone();
    opts.env.push((
        crate::shadows::SHADOW_ESTIMATE_ENV.to_string(),
        "1".to_string(),
    ));
    let job = Job::Unlearn {
        library: req.library.clone(),
        id: req.descriptor.id.clone(),
        params: req.params.clone(),
        checkpoint: req.checkpoint.clone(),
        data: req.data.clone(),
        forget: req.forget.clone(),
        train_rows: None,
        out_dir: dir.clone(),
        seed: req.seed,
        device: req.device.clone(),
    };
    let result = (|| {
        let handle = spawn_worker(&opts, job, |_| {})
            .map_err(|e| EvalError::Invalid(format!("cannot start the worker process: {e}")))?;
        let report = handle.wait();
        let file = dir.join("shadow_estimate.json");
        let shadows = match (&report.outcome, file.exists()) {
            (JobOutcome::Cancelled { killed: false }, true) => {
                let bytes = std::fs::read(&file)
                    .map_err(|e| EvalError::Invalid(format!("{}: {e}", file.display())))?;
                Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| EvalError::Invalid(format!("{}: {e}", file.display())))?,
                )
            }
            (JobOutcome::Succeeded(_), _) => None,
            (other, _) => {
                let tail = report.stderr_tail.trim();
                return Err(EvalError::Invalid(format!(
                    "estimating {}: {other}{}",
                    req.descriptor.id,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\nworker log:\n{tail}")
                    }
                )));
            }
        };
        Ok(AttackEstimate {
            attack: req.descriptor.id.clone(),
            shadows,
            seconds: report.elapsed.as_secs_f64(),
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
