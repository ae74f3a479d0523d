//! The metric set of an attack run started from the GUI. Once the attack's
//! worker has finished, the engine computes it from the score files the plugin
//! wrote (`eval::attack::report_from_dir`, the same code as `lethe attack`:
//! AUC and TPR at low FPR with bootstrap intervals, MIA efficacy, the attack's
//! power on held-out members, and the data checks) and `attack.json` is written
//! into the run's output folder, where the deletion report and the GUI find it
//! again after a restart.

use crate::jobs::JobSpec;
use lethe_engine::eval::attack::{AttackRequest, report_from_dir};
use lethe_engine::metrics::MetricOptions;
use lethe_engine::worker::protocol::DescriptorInfo;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The file the metric set is written to, in the attack's output folder.
pub const ATTACK_FILE: &str = "attack.json";

/// Bootstrap replicates for the intervals (as `lethe attack`'s default).
pub const BOOTSTRAP: usize = 1000;

/// TPR at one FPR target.
#[derive(Debug, Clone, PartialEq)]
pub struct Tpr {
    /// The FPR target.
    pub fpr: f64,
    /// The TPR reached.
    pub tpr: f64,
    /// Bootstrap interval.
    pub ci: Option<(f64, f64)>,
    /// Whether there are enough non-members to measure this FPR.
    pub resolved: bool,
}

/// Members vs non-members: how well the attack separates them.
#[derive(Debug, Clone, PartialEq)]
pub struct Separation {
    /// Members compared.
    pub members: usize,
    /// Non-members compared.
    pub non_members: usize,
    /// AUC (0.5: cannot tell them apart).
    pub auc: f64,
    /// Its bootstrap interval.
    pub auc_ci: Option<(f64, f64)>,
    /// Low-FPR operating points.
    pub tprs: Vec<Tpr>,
    /// Share of the members called non-members (for the forget set: MIA efficacy).
    pub efficacy: Option<f64>,
}

/// A warning about the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Whether the number may be misleading (else: worth knowing).
    pub warning: bool,
    /// What it means.
    pub message: String,
}

/// What the run view shows of `attack.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackSummary {
    /// The attack's name.
    pub attack: String,
    /// The model attacked.
    pub checkpoint: PathBuf,
    /// Forget set (as members) vs held-out non-members.
    pub forget: Separation,
    /// Held-out members vs non-members: the attack's power on this model.
    pub reference: Option<Separation>,
    /// Where the non-members came from.
    pub nonmember_split: String,
    /// Warnings.
    pub flags: Vec<Flag>,
    /// Per-sample evidence, from attacks that write p-values (U-LiRA).
    pub per_sample: Option<PerSampleSummary>,
}

/// A share of samples with its exact (Clopper-Pearson) interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Samples counted.
    pub k: usize,
    /// Samples in all.
    pub n: usize,
    /// `k / n`.
    pub fraction: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// One forgotten sample and how clearly the attack tells it from unseen data.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinguishable {
    /// Its dataset row.
    pub row: i64,
    /// The attack's membership score (higher: more member-like).
    pub score: f64,
    /// Its p-value, when the p-value file was read.
    pub pvalue: Option<f64>,
}

/// The per-sample section of `attack.json` (`metrics.per_sample`).
#[derive(Debug, Clone, PartialEq)]
pub struct PerSampleSummary {
    /// Significance level.
    pub alpha: f64,
    /// Forgotten samples with p < alpha.
    pub forget: Share,
    /// Never-seen samples with p < alpha: the test's own false-positive rate.
    pub nonmember: Option<Share>,
    /// Retained samples with p < alpha.
    pub member: Option<Share>,
    /// The forget p-values in ten bins of width 0.1.
    pub histogram: [usize; 10],
    /// The forgotten samples the attack tells apart best, best first.
    pub top: Vec<Distinguishable>,
}

/// How many of the most distinguishable forgotten samples the view keeps.
pub const TOP_SAMPLES: usize = 24;

fn share(v: &Value) -> Option<Share> {
    Some(Share {
        k: v.get("k")?.as_u64()? as usize,
        n: v.get("n")?.as_u64()? as usize,
        fraction: v.get("fraction")?.as_f64()?,
        low: v.get("low")?.as_f64()?,
        high: v.get("high")?.as_f64()?,
    })
}

/// The forgotten samples by how clearly the attack tells them apart: lowest
/// p-value first when the p-values (in the forget scores' order) are known,
/// else highest score. Samples without a dataset row are left out.
pub fn most_distinguishable(
    scores: &[(i64, f64)],
    pvalues: Option<&[f64]>,
    keep: usize,
) -> Vec<Distinguishable> {
    // P-values that do not line up with the scores belong to another run.
    let pvalues = pvalues.filter(|p| p.len() == scores.len());
    let mut all: Vec<Distinguishable> = scores
        .iter()
        .enumerate()
        .filter(|(_, (row, score))| *row >= 0 && score.is_finite())
        .map(|(i, &(row, score))| Distinguishable {
            row,
            score,
            pvalue: pvalues.map(|p| p[i]),
        })
        .collect();
    all.sort_by(|a, b| {
        let p = |d: &Distinguishable| d.pvalue.unwrap_or(0.0);
        p(a).total_cmp(&p(b)).then(b.score.total_cmp(&a.score))
    });
    all.truncate(keep);
    all
}

fn per_sample(v: &Value, pvalues: Option<&[f64]>) -> Option<PerSampleSummary> {
    let ps = v.get("metrics")?.get("per_sample")?;
    let bins = ps.get("histogram")?.as_array()?;
    let mut histogram = [0usize; 10];
    if bins.len() != histogram.len() {
        return None;
    }
    for (slot, b) in histogram.iter_mut().zip(bins) {
        *slot = b.as_u64()? as usize;
    }
    let scores: Vec<(i64, f64)> = v
        .get("forget_scores")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|s| {
                    (
                        s.get("index").and_then(Value::as_i64).unwrap_or(-1),
                        s.get("score").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PerSampleSummary {
        alpha: ps.get("alpha")?.as_f64()?,
        forget: share(ps.get("forget")?)?,
        nonmember: ps.get("nonmember").and_then(share),
        member: ps.get("member").and_then(share),
        histogram,
        top: most_distinguishable(&scores, pvalues, TOP_SAMPLES),
    })
}

fn interval(v: &Value) -> Option<(f64, f64)> {
    Some((v.get("low")?.as_f64()?, v.get("high")?.as_f64()?))
}

fn separation(v: &Value) -> Option<Separation> {
    Some(Separation {
        members: v.get("members")?.as_u64()? as usize,
        non_members: v.get("non_members")?.as_u64()? as usize,
        auc: v.get("auc")?.as_f64()?,
        auc_ci: v.get("auc_ci").and_then(interval),
        tprs: v
            .get("tpr_at_fpr")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| {
                        Some(Tpr {
                            fpr: t.get("fpr")?.as_f64()?,
                            tpr: t.get("tpr")?.as_f64()?,
                            ci: t.get("ci").and_then(interval),
                            resolved: t.get("resolved").and_then(Value::as_bool).unwrap_or(true),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        efficacy: v.get("efficacy").and_then(Value::as_f64),
    })
}

/// Reads the parts the GUI shows from `attack.json`'s contents.
pub fn parse(v: &Value) -> Result<AttackSummary, String> {
    parse_with(v, None)
}

/// As [`parse`], with the forget p-values (in the forget scores' order) that
/// rank the most distinguishable samples.
pub fn parse_with(v: &Value, pvalues: Option<&[f64]>) -> Result<AttackSummary, String> {
    let metrics = v.get("metrics").ok_or("attack.json: no `metrics`")?;
    let forget = metrics
        .get("forget")
        .and_then(separation)
        .ok_or("attack.json: `metrics.forget` is incomplete")?;
    Ok(AttackSummary {
        attack: v["attack"]["name"].as_str().unwrap_or("attack").to_string(),
        checkpoint: PathBuf::from(v["checkpoint"].as_str().unwrap_or_default()),
        forget,
        reference: metrics.get("reference").and_then(separation),
        nonmember_split: v["checks"]["nonmember_split"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        flags: v
            .get("flags")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|f| Flag {
                        warning: f["severity"].as_str() == Some("warning"),
                        message: f["message"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        per_sample: per_sample(v, pvalues),
    })
}

/// The metric set already computed for an attack output folder, if any.
pub fn load(out_dir: &Path) -> Result<Option<AttackSummary>, String> {
    let path = out_dir.join(ATTACK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    // Without the p-value file the samples are ranked by score, which orders
    // them the same way for a likelihood-ratio attack.
    let pvalues = lethe_engine::eval::attack::read_pvalues(out_dir, "forget")
        .ok()
        .flatten();
    parse_with(&v, pvalues.as_deref())
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What computing the metric set of a finished attack run needs.
#[derive(Debug, Clone)]
pub struct ReportJob {
    /// The run's spec (attack plugin, model, data, forget set, seed, device).
    pub spec: JobSpec,
    /// The attack's descriptor (its version goes into `attack.json`), when the
    /// plugin is still installed.
    pub descriptor: Option<DescriptorInfo>,
    /// The run's output folder (the score files; `attack.json` goes here).
    pub out_dir: PathBuf,
    /// Wall time of the attack's worker.
    pub seconds: f64,
}

/// Computes the metric set from the score files and writes `attack.json`
/// (once: an existing file is read, never replaced). Slow (bootstrap, data
/// checks): call it off the UI thread.
pub fn compute(job: &ReportJob) -> Result<AttackSummary, String> {
    if let Some(done) = load(&job.out_dir)? {
        return Ok(done);
    }
    let spec = &job.spec;
    let descriptor = job.descriptor.clone().unwrap_or_else(|| DescriptorInfo {
        id: spec.plugin_id.clone(),
        name: spec.plugin_name.clone(),
        version: "unknown (plugin no longer installed)".into(),
        kind: "attack".into(),
        description: String::new(),
        citation: String::new(),
        schema: Default::default(),
    });
    let req = AttackRequest {
        library: spec.library.clone(),
        descriptor,
        params: spec.params.clone(),
        checkpoint: spec.checkpoint.clone(),
        data: spec.data.clone(),
        forget: spec.forget.clone(),
        out_dir: job.out_dir.clone(),
        seed: spec.seed,
        device: spec.device.clone(),
        metrics: MetricOptions {
            resamples: BOOTSTRAP,
            seed: spec.seed,
            ..MetricOptions::default()
        },
    };
    let report = report_from_dir(&req, job.seconds).map_err(|e| e.to_string())?;
    let v = serde_json::to_value(&report).map_err(|e| format!("cannot encode attack.json: {e}"))?;
    let pvalues = lethe_engine::eval::attack::read_pvalues(&job.out_dir, "forget")
        .ok()
        .flatten();
    let bytes =
        serde_json::to_vec_pretty(&v).map_err(|e| format!("cannot encode attack.json: {e}"))?;
    let path = job.out_dir.join(ATTACK_FILE);
    if let Err(e) = lethe_engine::jobs::atomic::write_atomic(&path, &bytes, false) {
        // Another view worked out the same metrics first: the file it wrote
        // holds the same results, and is never replaced.
        return match load(&job.out_dir)? {
            Some(done) => Ok(done),
            None => Err(format!("{}: {e}", path.display())),
        };
    }
    parse_with(&v, pvalues.as_deref())
}

/// What an attack with shadow models will cost, in one line for a person.
pub fn estimate_line(e: &lethe_engine::eval::attack::AttackEstimate) -> String {
    let Some(s) = &e.shadows else {
        return format!("{} needs no shadow models", e.attack);
    };
    let mut line = format!(
        "{} shadow model(s): {} already cached, {} to train",
        s.models, s.cached, s.to_train
    );
    if s.to_train > 0 {
        line.push_str(&format!(
            " — about {} on {} ({} each: {} epoch(s) of {} samples, timed just now on a \
             mini-batch; a machine busier during the run makes it longer)",
            crate::jobs::format_duration(s.seconds),
            s.device,
            crate::jobs::format_duration(s.seconds_per_model),
            s.epochs,
            s.train_samples_per_model
        ));
    }
    if s.to_unlearn > 0 {
        line.push_str(&format!(
            "; {} unlearned cop{} to make with {}",
            s.to_unlearn,
            if s.to_unlearn == 1 { "y" } else { "ies" },
            s.unlearn_method
                .as_deref()
                .unwrap_or("the deletion's method")
        ));
        if let Some(each) = s.seconds_per_unlearn {
            line.push_str(&format!(
                " ({} each: the deletion's own time scaled to a shadow's training set{})",
                crate::jobs::format_duration(each),
                if s.to_train > 0 {
                    ", included above"
                } else {
                    ""
                }
            ));
        }
        if s.to_train == 0 {
            line.push_str(&format!(
                " — about {} on {}",
                crate::jobs::format_duration(s.seconds),
                s.device
            ));
        }
    }
    line
}

/// Estimates the cost of an attack on `checkpoint` without training anything
/// (a dry run in a worker; slow only by the timed mini-batch).
pub fn estimate(
    worker: &lethe_engine::worker::WorkerOptions,
    spec: &JobSpec,
    descriptor: &DescriptorInfo,
) -> Result<String, String> {
    let req = AttackRequest {
        library: spec.library.clone(),
        descriptor: descriptor.clone(),
        params: spec.params.clone(),
        checkpoint: spec.checkpoint.clone(),
        data: spec.data.clone(),
        forget: spec.forget.clone(),
        out_dir: std::env::temp_dir(),
        seed: spec.seed,
        device: spec.device.clone(),
        metrics: MetricOptions::default(),
    };
    lethe_engine::eval::attack::estimate_attack(worker, &req)
        .map(|mut e| {
            // The engine names the attack by id; a person reads its name.
            e.attack = descriptor.name.clone();
            estimate_line(&e)
        })
        .map_err(|e| e.to_string())
}

/// Whether an attack trains shadow models (its cost is worth estimating first).
pub fn uses_shadows(descriptor: &DescriptorInfo) -> bool {
    descriptor.schema.get("shadow_models").is_some()
}

/// `0.537 [0.502, 0.575]`.
pub fn with_interval(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        None => format!("{v:.3}"),
    }
}

/// What an AUC on the forget set says, in words for a non-specialist.
pub fn verdict(forget: &Separation) -> std::borrow::Cow<'static, str> {
    use lethe_engine::report::verdict::{TYPICAL_LEAK_AUC, detectable, forget_samples_needed};
    let (members, non_members) = (forget.members as f64, forget.non_members as f64);
    match forget.auc_ci {
        // Silence from a test that could not have spoken is not evidence.
        Some((lo, hi))
            if lo <= 0.5 && 0.5 <= hi && !detectable(TYPICAL_LEAK_AUC, members, non_members) =>
        {
            format!(
                "with {} forgotten sample(s) the attack could not show a difference even if the \
                 model still carried them (a typical leak needs at least {} to be seen): this \
                 result says nothing either way",
                forget.members,
                forget_samples_needed(forget.non_members)
            )
            .into()
        }
        Some((lo, hi)) if lo <= 0.5 && 0.5 <= hi => {
            "the attack cannot tell the forgotten samples from data the model never saw".into()
        }
        Some((lo, _)) if lo > 0.5 => {
            "the attack still recognises the forgotten samples as training data more often than chance".into()
        }
        Some(_) => "the forgotten samples look less familiar to the model than unseen data \
             (possible over-unlearning, which can itself give them away)"
            .into(),
        None if (forget.auc - 0.5).abs() < 0.02 => "close to chance (no interval computed)".into(),
        None => "away from chance (no interval computed)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "attack": {"id": "org.x.mia", "name": "Metric MIA", "version": "1"},
            "checkpoint": "/runs/r/output/model.safetensors",
            "metrics": {
                "forget": {
                    "members": 300, "non_members": 600, "auc": 0.5376,
                    "auc_ci": {"low": 0.5024, "high": 0.5747, "level": 0.95},
                    "tpr_at_fpr": [
                        {"fpr": 0.01, "tpr": 0.02, "ci": {"low": 0.0, "high": 0.04, "level": 0.95}, "resolved": true},
                        {"fpr": 0.001, "tpr": 0.0, "ci": null, "resolved": false}
                    ],
                    "efficacy": 0.61, "roc": {"fpr": [], "tpr": []}
                },
                "reference": null,
                "shadow": null
            },
            "checks": {"nonmember_split": "validation"},
            "flags": [{"code": "weak_attack", "severity": "info", "message": "weak"},
                      {"code": "label_shift", "severity": "warning", "message": "shift"}]
        })
    }

    /// The five photos: an interval around 0.5 on a handful of samples
    /// is not reassurance; on 300 it is the attack's answer.
    #[test]
    fn silence_on_a_few_samples_says_nothing() {
        let sep = |members: usize, ci: (f64, f64)| Separation {
            members,
            non_members: 1000,
            auc: 0.54,
            auc_ci: Some(ci),
            tprs: Vec::new(),
            efficacy: None,
        };
        let few = verdict(&sep(4, (0.295, 0.759)));
        assert!(
            few.starts_with("with 4 forgotten sample(s)") && few.contains("says nothing"),
            "{few}"
        );
        let needed = lethe_engine::report::verdict::forget_samples_needed(1000);
        assert!(
            few.contains(&format!("at least {needed}")) && needed > 4,
            "{few}"
        );
        assert_eq!(
            verdict(&sep(300, (0.49, 0.58))),
            "the attack cannot tell the forgotten samples from data the model never saw"
        );
    }

    #[test]
    fn attack_json_is_read_for_the_view() {
        let s = parse(&report()).unwrap();
        assert_eq!(s.attack, "Metric MIA");
        assert_eq!(s.forget.members, 300);
        assert_eq!(s.forget.auc_ci, Some((0.5024, 0.5747)));
        assert_eq!(s.forget.tprs.len(), 2);
        assert!(!s.forget.tprs[1].resolved);
        assert_eq!(s.forget.efficacy, Some(0.61));
        assert!(s.reference.is_none());
        assert_eq!(s.nonmember_split, "validation");
        assert_eq!(
            s.flags.iter().map(|f| f.warning).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(verdict(&s.forget).contains("more often than chance"));
        assert_eq!(
            with_interval(0.5376, s.forget.auc_ci),
            "0.538 [0.502, 0.575]"
        );
        let mut broken = report();
        broken["metrics"]["forget"]
            .as_object_mut()
            .unwrap()
            .remove("auc");
        assert!(parse(&broken).unwrap_err().contains("incomplete"));
    }

    #[test]
    fn the_per_sample_section_is_read_with_the_best_told_apart_samples_first() {
        let mut v = report();
        assert!(
            parse(&v).unwrap().per_sample.is_none(),
            "an attack without p-values"
        );
        let line = |k: u64, n: u64| {
            json!({"k": k, "n": n, "fraction": k as f64 / n as f64,
            "low": 0.01, "high": 0.2, "level": 0.95})
        };
        v["metrics"]["per_sample"] = json!({
            "alpha": 0.05, "forget": line(3, 4), "nonmember": line(1, 40), "member": null,
            "histogram": [3, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        });
        v["forget_scores"] = json!([
            {"index": 10, "score": 0.5, "member": null},
            {"index": 11, "score": 4.0, "member": null},
            {"index": -1, "score": 9.0, "member": null},
            {"index": 13, "score": 2.0, "member": null}
        ]);
        let ps = parse(&v).unwrap().per_sample.unwrap();
        assert_eq!(ps.forget.k, 3);
        assert_eq!(ps.nonmember.as_ref().map(|n| n.n), Some(40));
        assert!(ps.member.is_none());
        assert_eq!(ps.histogram[9], 1);
        let rows = |ps: &PerSampleSummary| ps.top.iter().map(|d| d.row).collect::<Vec<_>>();
        assert_eq!(
            rows(&ps),
            [11, 13, 10],
            "by score without p-values; no row, no place"
        );
        // The p-values rank when they are there (here against the scores).
        let p = [0.001, 0.2, 0.0, 0.03];
        let ps = parse_with(&v, Some(&p)).unwrap().per_sample.unwrap();
        assert_eq!(rows(&ps), [10, 13, 11]);
        assert_eq!(ps.top[0].pvalue, Some(0.001));
        // P-values of another length are another run's.
        let ps = parse_with(&v, Some(&p[..3])).unwrap().per_sample.unwrap();
        assert_eq!(rows(&ps), [11, 13, 10]);
        assert!(ps.top.iter().all(|d| d.pvalue.is_none()));
        v["metrics"]["per_sample"]["histogram"] = json!([1, 2]);
        assert!(parse(&v).unwrap().per_sample.is_none(), "not ten bins");
    }

    #[test]
    fn most_distinguishable_keeps_the_asked_number() {
        let scores: Vec<(i64, f64)> = (0..100).map(|i| (i, i as f64)).collect();
        let top = most_distinguishable(&scores, None, TOP_SAMPLES);
        assert_eq!(top.len(), TOP_SAMPLES);
        assert_eq!(top[0].row, 99);
        assert_eq!(top[TOP_SAMPLES - 1].row, 100 - TOP_SAMPLES as i64);
    }

    #[test]
    fn load_reads_a_saved_file_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(ATTACK_FILE), report().to_string()).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().forget.auc, 0.5376);
        std::fs::write(dir.path().join(ATTACK_FILE), "{").unwrap();
        assert!(load(dir.path()).unwrap_err().contains(ATTACK_FILE));
    }

    #[test]
    fn an_estimate_reads_as_models_cached_and_time() {
        let shadows: lethe_engine::shadows::ShadowEstimate = serde_json::from_value(json!({
            "key": "k", "cache_dir": "/c", "mode": "online", "models": 8, "cached": 2,
            "to_train": 6, "pool": 1200, "targets": 300, "train_samples_per_model": 600,
            "epochs": 10, "batch_size": 128, "steps_per_model": 50,
            "seconds_per_step": 0.2, "seconds_per_model": 12.0, "seconds": 72.0,
            "device": "cpu", "recipe_source": "/m.safetensors"
        }))
        .unwrap();
        let mut e = lethe_engine::eval::attack::AttackEstimate {
            attack: "LiRA".into(),
            shadows: Some(shadows),
            seconds: 3.0,
        };
        assert_eq!(
            estimate_line(&e),
            "8 shadow model(s): 2 already cached, 6 to train — about 1 min 12 s on cpu (12 s each: \
             10 epoch(s) of 600 samples, timed just now on a mini-batch; a machine busier during \
             the run makes it longer)"
        );
        let mut s = e.shadows.clone().unwrap();
        s.to_train = 0;
        s.cached = 8;
        s.to_unlearn = 4;
        s.unlearn_method = Some("org.lethe.baseline.finetune".into());
        s.seconds_per_unlearn = Some(5.0);
        s.seconds = 20.0;
        e.shadows = Some(s);
        assert_eq!(
            estimate_line(&e),
            "8 shadow model(s): 8 already cached, 0 to train; 4 unlearned copies to make with \
             org.lethe.baseline.finetune (5 s each: the deletion's own time scaled to a shadow's \
             training set) — about 20 s on cpu"
        );
        e.shadows = None;
        assert_eq!(estimate_line(&e), "LiRA needs no shadow models");
    }
}
