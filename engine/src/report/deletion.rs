//! The compliance report of one deletion: gathered from the run folder, checked
//! against the verdict rules, and turned into a [`Document`].

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::ReportError;
use super::doc::{Align, Block, Curve, Document, Heatmap, RocPlot, Style, Table, palette};
use super::format::{duration, mean_std, num, pct, pts, utc_datetime, with_ci};
use super::sources::{
    AttackView, EvaluationView, MembershipView, PerSampleView, read_attack, read_evaluation,
    read_per_sample, read_run, still_matches, subfolders_with,
};
use super::verdict::{self, Outcome, Verdict};
use crate::jobs::run_record::{HashedPath, RunRecord, shell_quote};

/// Where a deletion's results are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionSources {
    /// The run folder of `lethe unlearn` (with `run.json`) or of the GUI.
    pub run: PathBuf,
    /// More evaluation folders than the run folder's own.
    pub evaluations: Vec<PathBuf>,
    /// More attack folders than the run folder's own.
    pub attacks: Vec<PathBuf>,
    /// The run folder of a retrained model (`org.lethe.baseline.retrain`) with
    /// its own evaluation and attack subfolders, for the gaps to retrain.
    pub retrain: Option<PathBuf>,
}

/// Whether files still have the hashes recorded when the job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// The original checkpoint.
    pub original: Option<bool>,
    /// The unlearned checkpoint.
    pub unlearned: Option<bool>,
    /// The forget list.
    pub forget_list: Option<bool>,
    /// The method plugin's library.
    pub plugin: Option<bool>,
}

/// The retrained reference model's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainResults {
    /// Its run folder.
    pub run_dir: PathBuf,
    /// Its run record.
    pub run: RunRecord,
    /// Its evaluation.
    pub evaluation: Option<EvaluationView>,
    /// Attacks on it.
    pub attacks: Vec<AttackView>,
}

/// AM before / after and AGM for the heatmaps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrices {
    /// Side length.
    pub n: usize,
    /// AM of the original, row-major.
    pub am_before: Vec<f64>,
    /// AM of the unlearned model.
    pub am_after: Vec<f64>,
    /// AGM = AM before − AM after.
    pub agm: Vec<f64>,
    /// Dataset indices of the samples on the axes.
    pub indices: Vec<i64>,
}

/// Everything in a deletion report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeletionReport {
    /// The run folder.
    pub run_dir: PathBuf,
    /// What the run recorded.
    pub run: RunRecord,
    /// Files checked against their recorded hashes now.
    pub integrity: Integrity,
    /// The evaluation of the unlearned model.
    pub evaluation: Option<EvaluationView>,
    /// Attacks on the unlearned model.
    pub attacks: Vec<AttackView>,
    /// Attacks on the original model (the "before").
    pub original_attacks: Vec<AttackView>,
    /// The retrained reference.
    pub retrain: Option<RetrainResults>,
    /// Result folders found but not used, with why.
    pub ignored: Vec<String>,
    /// The alignment matrices.
    pub matrices: Option<Matrices>,
    /// The latest per-sample verification of the unlearned model
    /// (`lethe verify-samples`).
    pub per_sample: Option<PerSampleView>,
    /// The verdict.
    pub verdict: Verdict,
    /// Commands that repeat the run, its evaluation and its attacks.
    pub reproduce: Vec<String>,
}

fn sha(h: &HashedPath) -> Option<&str> {
    h.sha256.as_deref()
}

/// Reads the matrices of an evaluation's alignment file.
pub(crate) fn read_matrices(e: &EvaluationView) -> Option<Matrices> {
    let path = e.alignment_path()?;
    let ckpt = crate::checkpoint::read(&path).ok()?;
    let get = |name: &str| -> Option<(Vec<i64>, Vec<f64>)> {
        let t = ckpt.state_dict.get(name)?;
        let v = Vec::<f64>::try_from(t.f_to_kind(tch::Kind::Double).ok()?.f_flatten(0, -1).ok()?)
            .ok()?;
        Some((t.size(), v))
    };
    let (shape, am_before) = get("am_before")?;
    let (_, am_after) = get("am_after")?;
    let (_, agm) = get("agm")?;
    let indices = ckpt
        .state_dict
        .get("heatmap_indices")
        .and_then(|t| Vec::<i64>::try_from(t.f_flatten(0, -1).ok()?).ok())
        .unwrap_or_default();
    let n = *shape.first()? as usize;
    (n > 0 && am_before.len() == n * n && am_after.len() == n * n && agm.len() == n * n).then_some(
        Matrices {
            n,
            am_before,
            am_after,
            agm,
            indices,
        },
    )
}

impl DeletionReport {
    /// Gathers a deletion's results.
    pub fn load(src: &DeletionSources) -> Result<DeletionReport, ReportError> {
        let (run, run_dir) = read_run(&src.run)?;
        let unlearned_sha = run.unlearned.as_ref().and_then(|u| u.sha256.clone());
        let original_sha = run.original.sha256.clone();
        let retrain_run = src.retrain.as_deref().map(read_run).transpose()?;
        let retrain_sha = retrain_run
            .as_ref()
            .and_then(|(r, _)| r.unlearned.as_ref().and_then(|u| u.sha256.clone()));

        let mut eval_dirs = subfolders_with(&run_dir, "evaluation.json");
        eval_dirs.extend(src.evaluations.iter().cloned());
        let mut attack_dirs = subfolders_with(&run_dir, "attack.json");
        let mut per_sample_dirs = subfolders_with(&run_dir, "per_sample.json");
        // `--attack` may name a verification folder too.
        for d in &src.attacks {
            if d.join("per_sample.json").is_file() {
                per_sample_dirs.push(d.clone());
            } else {
                attack_dirs.push(d.clone());
            }
        }
        if let Some((_, dir)) = &retrain_run {
            eval_dirs.extend(subfolders_with(dir, "evaluation.json"));
            attack_dirs.extend(subfolders_with(dir, "attack.json"));
        }

        let mut ignored = Vec::new();
        let mut evaluation = None;
        let mut retrain_eval = None;
        for d in &eval_dirs {
            let e = read_evaluation(d)?;
            let h = e.checkpoint_sha256.clone();
            if h.is_some() && h == unlearned_sha {
                evaluation = Some(e);
            } else if h.is_some() && h == retrain_sha {
                retrain_eval = Some(e);
            } else {
                ignored.push(format!(
                    "{}: evaluates {}, which is neither the unlearned nor the retrained model",
                    d.display(),
                    e.checkpoint.display()
                ));
            }
        }
        let mut attacks = Vec::new();
        let mut original_attacks = Vec::new();
        let mut retrain_attacks = Vec::new();
        for d in &attack_dirs {
            let a = read_attack(d)?;
            let h = a.checkpoint_sha256.clone();
            let slot = if h.is_none() {
                None
            } else if h == unlearned_sha {
                Some(&mut attacks)
            } else if h == original_sha {
                Some(&mut original_attacks)
            } else if h == retrain_sha {
                Some(&mut retrain_attacks)
            } else {
                None
            };
            match slot {
                Some(v) => {
                    // A later run of the same attack on the same model replaces
                    // the earlier one (folders are read in name order).
                    v.retain(|x: &AttackView| x.attack.id != a.attack.id);
                    v.push(a);
                }
                None => ignored.push(format!(
                    "{}: attacks {}, which is not a model of this deletion",
                    d.display(),
                    a.checkpoint.display()
                )),
            }
        }

        let mut per_sample = None;
        for d in &per_sample_dirs {
            let v = read_per_sample(d)?;
            if v.unlearned_sha256.is_some() && v.unlearned_sha256 == unlearned_sha {
                // Name order: the latest verification wins.
                per_sample = Some(v);
            } else {
                ignored.push(format!(
                    "{}: verifies another model than this deletion's unlearned one",
                    d.display()
                ));
            }
        }

        let verdict = verdict::decide(&verdict::Evidence {
            evaluation: evaluation.as_ref(),
            retrain_eval: retrain_eval.as_ref(),
            attacks: &attacks.iter().collect::<Vec<_>>(),
            retrain_attacks: &retrain_attacks.iter().collect::<Vec<_>>(),
            original_attacks: &original_attacks.iter().collect::<Vec<_>>(),
            is_reference: verdict::is_exact_retraining(&run.method.id, &run.params),
        });
        let matrices = evaluation.as_ref().and_then(read_matrices);
        let integrity = Integrity {
            original: still_matches(&run.original),
            unlearned: run.unlearned.as_ref().and_then(|u| {
                // A moved run folder still holds its model.
                let local = run_dir.join(u.path.file_name()?);
                if !u.path.exists() && local.is_file() {
                    still_matches(&HashedPath {
                        path: local,
                        sha256: u.sha256.clone(),
                    })
                } else {
                    still_matches(u)
                }
            }),
            forget_list: still_matches(&run.forget.list),
            plugin: still_matches(&run.method.library),
        };
        let matrix_samples = matrices.as_ref().map(|m| m.n);
        let reproduce = reproduce(
            &run,
            &run_dir,
            evaluation.as_ref(),
            matrix_samples,
            &attacks,
        );
        let retrain = retrain_run.map(|(r, dir)| RetrainResults {
            run_dir: dir,
            run: r,
            evaluation: retrain_eval,
            attacks: retrain_attacks,
        });
        Ok(DeletionReport {
            run_dir,
            run,
            integrity,
            evaluation,
            attacks,
            original_attacks,
            retrain,
            ignored,
            matrices,
            per_sample,
            verdict,
            reproduce,
        })
    }

    /// The files this report was built from (for the audit record).
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.run_dir.join(crate::jobs::run_record::RUN_FILE)];
        if !v[0].is_file() {
            v[0] = self.run_dir.join("job.json");
        }
        let mut push_eval = |e: &EvaluationView| v.push(e.folder.join("evaluation.json"));
        if let Some(e) = &self.evaluation {
            push_eval(e);
        }
        if let Some(e) = self.retrain.as_ref().and_then(|r| r.evaluation.as_ref()) {
            push_eval(e);
        }
        let retrain_attacks = self.retrain.iter().flat_map(|r| &r.attacks);
        for a in self
            .attacks
            .iter()
            .chain(&self.original_attacks)
            .chain(retrain_attacks)
        {
            v.push(a.folder.join("attack.json"));
        }
        if let Some(p) = &self.per_sample {
            v.push(p.folder.join("per_sample.json"));
        }
        v
    }
}

fn reproduce(
    run: &RunRecord,
    run_dir: &Path,
    evaluation: Option<&EvaluationView>,
    matrix_samples: Option<usize>,
    attacks: &[AttackView],
) -> Vec<String> {
    let repeat = format!("{}-repeat", run_dir.display());
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let model = format!("{repeat}/model.safetensors");
    let mut out = vec![run.reproduce_command(&repeat)];
    if let Some(e) = evaluation {
        let mut cmd = format!(
            "lethe evaluate --checkpoint {} --original {} --data {} --forget {} --seed {} --device {} --out {}",
            shell_quote(&model),
            q(&run.original.path),
            q(&run.data.path),
            q(&run.forget.list.path),
            e.seed,
            shell_quote(&device_arg(&e.device)),
            shell_quote(&format!("{repeat}/evaluation")),
        );
        match e.utility.probe.as_ref().map(|p| (&p.recipe, p.epochs)) {
            // The preset's name and its epochs: reproduces a changed preset too.
            Some((Some(r), _)) => cmd.push_str(&format!(
                " --probe {} --probe-epochs {}",
                shell_quote(&r.preset),
                r.epochs
            )),
            Some((None, Some(epochs))) => cmd.push_str(&format!(" --probe-epochs {epochs}")),
            _ => {}
        }
        if let Some(a) = &e.alignment {
            cmd.push_str(&format!(
                " --alignment --pairs {} --alignment-max {}",
                a.pairs, a.samples
            ));
            if let Some(n) = matrix_samples {
                cmd.push_str(&format!(" --matrix-samples {n}"));
            }
        }
        out.push(cmd);
    }
    for a in attacks {
        let short = a.attack.id.rsplit('.').next().unwrap_or("attack");
        let params = match &a.attack.params {
            Value::Object(m) if !m.is_empty() => format!(
                " --params {}",
                shell_quote(&serde_json::to_string(&a.attack.params).unwrap_or_default())
            ),
            _ => String::new(),
        };
        let plugins = a
            .attack
            .library
            .parent()
            .map(|d| format!("--plugins {} ", q(d)))
            .unwrap_or_default();
        out.push(format!(
            "lethe {plugins}attack --attack {} --checkpoint {} --data {} --forget {}{params} --seed {} --bootstrap {} --ci {} --device {} --out {}",
            shell_quote(&a.attack.id),
            shell_quote(&model),
            q(&run.data.path),
            q(&run.forget.list.path),
            a.seed,
            a.bootstrap.resamples,
            a.bootstrap.level,
            shell_quote(&a.device),
            shell_quote(&format!("{repeat}/attack-{short}")),
        ));
    }
    out
}

/// `Cpu` / `Cuda(1)` (as evaluation.json records devices) as a `--device` value.
fn device_arg(d: &str) -> String {
    match d.strip_prefix("Cuda(").and_then(|r| r.strip_suffix(')')) {
        Some(i) => format!("cuda:{i}"),
        None => d.to_lowercase(),
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes: the file on disk has the recorded SHA-256",
        Some(false) => "NO: the file on disk differs from the recorded SHA-256",
        None => "cannot be checked (no hash recorded or the file is gone)",
    }
}

fn param_rows(params: &Value) -> Vec<Vec<String>> {
    match params {
        Value::Object(m) => {
            let mut rows: Vec<Vec<String>> = m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    vec![k.clone(), v]
                })
                .collect();
            rows.sort();
            rows
        }
        Value::Null => Vec::new(),
        other => vec![vec!["(value)".into(), other.to_string()]],
    }
}

fn tpr_cell(m: &MembershipView, fpr: f64) -> String {
    match m.tpr_at(fpr) {
        Some(t) => {
            let s = with_ci(t.tpr, t.ci.map(|c| (c.low, c.high)));
            if t.resolved { s } else { format!("{s} *") }
        }
        None => "-".into(),
    }
}

fn curve(label: &str, color: [u8; 3], dashed: bool, m: &MembershipView) -> Curve {
    Curve {
        label: label.to_string(),
        color,
        dashed,
        points: m
            .roc
            .fpr
            .iter()
            .copied()
            .zip(m.roc.tpr.iter().copied())
            .collect(),
    }
}

fn outcome_color(o: Outcome) -> [u8; 3] {
    match o {
        Outcome::Pass => palette::PASS,
        Outcome::Fail => palette::FAIL,
        Outcome::Inconclusive => palette::INCONCLUSIVE,
    }
}

impl DeletionReport {
    /// The report as a document; `generated` is the formatted generation time.
    pub fn document(&self, generated: &str) -> Document {
        let run = &self.run;
        let mut b = Vec::new();
        let file_name = |p: &Path| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        b.push(Block::Verdict {
            label: self.verdict.outcome.label().into(),
            color: outcome_color(self.verdict.outcome),
            text: self.verdict.headline.clone(),
        });
        if let Some(next) = &self.verdict.next_step {
            b.push(Block::Paragraph(format!("Next step: {next}.")));
        }

        // Request.
        b.push(Block::Heading("Deletion request".into()));
        let mut f = vec![
            (
                "Run by".to_string(),
                format!("{} on {}", run.user, run.host),
                Style::Text,
            ),
            (
                "Started".into(),
                utc_datetime(run.started_unix),
                Style::Text,
            ),
            (
                "Finished".into(),
                format!(
                    "{} (worker job {})",
                    utc_datetime(run.finished_unix),
                    duration(run.seconds)
                ),
                Style::Text,
            ),
            (
                "Forget-set source file".into(),
                run.forget.list.path.display().to_string(),
                Style::Mono,
            ),
            (
                "Forget-set SHA-256".into(),
                sha(&run.forget.list).unwrap_or("-").into(),
                Style::Mono,
            ),
            (
                "Samples requested".into(),
                run.forget.samples.to_string(),
                Style::Text,
            ),
            (
                "Matched".into(),
                format!(
                    "{} training samples (every listed index is a training sample; the run refuses others)",
                    run.forget.samples
                ),
                Style::Text,
            ),
            (
                "Unmatched".into(),
                if run.forget.unmatched_files == 0 {
                    "0".to_string()
                } else {
                    format!(
                        "{} image file(s) of the request matched no training sample (listed in the forget-set file)",
                        run.forget.unmatched_files
                    )
                },
                Style::Text,
            ),
            (
                "Dataset".into(),
                run.data.path.display().to_string(),
                Style::Mono,
            ),
            (
                "Dataset SHA-256".into(),
                sha(&run.data).unwrap_or("-").into(),
                Style::Mono,
            ),
            (
                "Forget list unchanged".into(),
                yes_no(self.integrity.forget_list).into(),
                Style::Text,
            ),
        ];
        b.push(Block::Fields {
            name: "request".into(),
            fields: std::mem::take(&mut f),
        });

        // Models.
        b.push(Block::Heading("Models".into()));
        let mut f = vec![
            (
                "Original checkpoint".to_string(),
                run.original.path.display().to_string(),
                Style::Mono,
            ),
            (
                "Original SHA-256".into(),
                sha(&run.original).unwrap_or("-").into(),
                Style::Mono,
            ),
            (
                "Original unchanged".into(),
                yes_no(self.integrity.original).into(),
                Style::Text,
            ),
        ];
        match &run.unlearned {
            Some(u) => {
                f.push((
                    "Unlearned checkpoint".into(),
                    u.path.display().to_string(),
                    Style::Mono,
                ));
                f.push((
                    "Unlearned SHA-256".into(),
                    sha(u).unwrap_or("-").into(),
                    Style::Mono,
                ));
                f.push((
                    "Unlearned unchanged".into(),
                    yes_no(self.integrity.unlearned).into(),
                    Style::Text,
                ));
            }
            None => f.push((
                "Unlearned checkpoint".into(),
                "none: the method saved no model".into(),
                Style::Text,
            )),
        }
        if let Some(r) = &self.retrain {
            f.push((
                "Retrained reference".into(),
                r.run
                    .unlearned
                    .as_ref()
                    .map_or("-".into(), |u| u.path.display().to_string()),
                Style::Mono,
            ));
            f.push((
                "Retrained SHA-256".into(),
                r.run.unlearned.as_ref().and_then(sha).unwrap_or("-").into(),
                Style::Mono,
            ));
        }
        b.push(Block::Fields {
            name: "models".into(),
            fields: f,
        });

        // Method.
        b.push(Block::Heading("Method".into()));
        b.push(Block::Fields {
            name: "method".into(),
            fields: vec![
                ("Method".into(), run.method.name.clone(), Style::Text),
                ("Plugin id".into(), run.method.id.clone(), Style::Mono),
                (
                    "Plugin version".into(),
                    run.method.version.clone(),
                    Style::Text,
                ),
                (
                    "Plugin file".into(),
                    run.method.library.path.display().to_string(),
                    Style::Mono,
                ),
                (
                    "Plugin SHA-256".into(),
                    sha(&run.method.library).unwrap_or("-").into(),
                    Style::Mono,
                ),
                (
                    "Plugin unchanged".into(),
                    yes_no(self.integrity.plugin).into(),
                    Style::Text,
                ),
                ("Seed".into(), run.seed.to_string(), Style::Text),
            ],
        });
        b.push(Block::Table(Table {
            name: "parameters".into(),
            header: vec!["parameter".into(), "value".into()],
            rows: param_rows(&run.params),
            align: vec![Align::Left, Align::Left],
            note: Some(
                "Every parameter the plugin ran with, defaults filled in (from the unlearned model's provenance)."
                    .into(),
            ),
        }));

        // Environment.
        b.push(Block::Heading("Device and software".into()));
        let s = &run.software;
        b.push(Block::Fields {
            name: "environment".into(),
            fields: vec![
                ("Device".into(), run.device.clone(), Style::Text),
                ("Lethe".into(), s.lethe.clone(), Style::Text),
                (
                    "libtorch / tch".into(),
                    format!("{} / {}", s.libtorch, s.tch),
                    Style::Text,
                ),
                (
                    "CUDA devices / cuDNN".into(),
                    format!(
                        "{} / {}",
                        s.cuda_devices,
                        s.cudnn.map_or("-".into(), |v| v.to_string())
                    ),
                    Style::Text,
                ),
                ("CPU threads".into(), s.threads.to_string(), Style::Text),
                ("Operating system".into(), s.os.clone(), Style::Text),
            ],
        });

        // Utility.
        b.push(Block::Heading("Utility".into()));
        match &self.evaluation {
            Some(e) => {
                let retrain = self
                    .retrain
                    .as_ref()
                    .and_then(|r| r.evaluation.as_ref())
                    .map(|r| &r.utility);
                let o = e.original_utility.as_ref();
                let mut header = vec!["metric".into(), "original".into(), "unlearned".into()];
                header.push("change".into());
                if retrain.is_some() {
                    header.push("retrain".into());
                    header.push("gap to retrain".into());
                }
                type Get = fn(&super::sources::UtilityView) -> f64;
                let metrics: [(&str, Get, bool); 6] = [
                    ("retain accuracy (RA)", |u| u.retain.accuracy, true),
                    ("test accuracy (TA)", |u| u.test.accuracy, true),
                    ("forget accuracy (UA)", |u| u.forget.accuracy, true),
                    ("retain loss", |u| u.retain.loss, false),
                    ("test loss", |u| u.test.loss, false),
                    ("forget loss", |u| u.forget.loss, false),
                ];
                let rows = metrics
                    .iter()
                    .map(|(name, get, share)| {
                        let show = |v: f64| if *share { pct(v) } else { num(v, 4) };
                        let diff = |v: f64| if *share { pts(v) } else { num(v, 4) };
                        let after = get(&e.utility);
                        let mut row = vec![
                            name.to_string(),
                            o.map_or("-".into(), |o| show(get(o))),
                            show(after),
                            o.map_or("-".into(), |o| diff(after - get(o))),
                        ];
                        if let Some(r) = retrain {
                            row.push(show(get(r)));
                            row.push(diff(after - get(r)));
                        }
                        row
                    })
                    .collect();
                let n = if retrain.is_some() { 6 } else { 4 };
                let mut align = vec![Align::Left];
                align.extend(std::iter::repeat_n(Align::Right, n - 1));
                b.push(Block::Table(Table {
                    name: "utility".into(),
                    header,
                    rows,
                    align,
                    note: Some(format!(
                        "Read by {} on {} retain / {} test / {} forget samples; evaluation seed {} on {} ({}).",
                        e.utility.reader,
                        e.utility.retain.samples,
                        e.utility.test.samples,
                        e.utility.forget.samples,
                        e.seed,
                        e.device,
                        e.folder.display()
                    )),
                }));
                if let Some(a) = &e.alignment {
                    b.push(Block::Fields {
                        name: "alignment".into(),
                        fields: vec![
                            (
                                "Forgetting score FS".into(),
                                mean_std(a.forgetting_score.mean, a.forgetting_score.std, 4),
                                Style::Text,
                            ),
                            (
                                "Negative alignment (AGM)".into(),
                                mean_std(
                                    a.negative_alignment.mean,
                                    a.negative_alignment.std,
                                    4,
                                ),
                                Style::Text,
                            ),
                            (
                                "Samples".into(),
                                format!(
                                    "{} forget samples × {} view pairs; matrices over {}",
                                    a.samples, a.pairs, a.matrix_size
                                ),
                                Style::Text,
                            ),
                        ],
                    });
                }
            }
            None => b.push(Block::Paragraph(
                "No evaluation of the unlearned model was found. Run `lethe evaluate --checkpoint RUN/model.safetensors --original ORIGINAL … --out RUN/evaluation`."
                    .into(),
            )),
        }

        // Attacks.
        b.push(Block::Heading("Membership-inference attacks".into()));
        if self.attacks.is_empty() && self.original_attacks.is_empty() {
            b.push(Block::Paragraph(
                "No attack results were found. Run `lethe attack --attack ID --checkpoint RUN/model.safetensors … --out RUN/attack-NAME`."
                    .into(),
            ));
        } else {
            let retrain_attacks: Vec<&AttackView> =
                self.retrain.iter().flat_map(|r| r.attacks.iter()).collect();
            let mut listed: Vec<(&str, &AttackView)> = Vec::new();
            for a in &self.attacks {
                listed.push(("unlearned", a));
                if let Some(o) = self
                    .original_attacks
                    .iter()
                    .find(|o| o.attack.id == a.attack.id)
                {
                    listed.push(("original", o));
                }
                if let Some(r) = retrain_attacks.iter().find(|r| r.attack.id == a.attack.id) {
                    listed.push(("retrain", r));
                }
            }
            for o in &self.original_attacks {
                if !self.attacks.iter().any(|a| a.attack.id == o.attack.id) {
                    listed.push(("original", o));
                }
            }
            let level = listed
                .first()
                .map_or(95.0, |(_, a)| a.bootstrap.level * 100.0);
            b.push(Block::Table(Table {
                name: "attack AUC".into(),
                header: vec![
                    "attack".into(),
                    "model".into(),
                    "forget / non-members".into(),
                    format!("forget-set AUC [{level:.0}% CI]"),
                    "held-out members AUC".into(),
                    "efficacy".into(),
                ],
                rows: listed
                    .iter()
                    .map(|(role, a)| {
                        let m = &a.metrics.forget;
                        vec![
                            a.attack.name.clone(),
                            role.to_string(),
                            format!("{} / {}", m.members, m.non_members),
                            with_ci(m.auc, m.auc_pair()),
                            a.metrics
                                .reference
                                .as_ref()
                                .map_or("-".into(), |r| with_ci(r.auc, r.auc_pair())),
                            m.efficacy.map_or("-".into(), pct),
                        ]
                    })
                    .collect(),
                align: vec![
                    Align::Left,
                    Align::Left,
                    Align::Right,
                    Align::Right,
                    Align::Right,
                    Align::Right,
                ],
                note: Some(
                    "AUC of the forget set (as members) against held-out non-members: 0.5 means the attack cannot tell them apart. Held-out members against the same non-members show what the attack can see on this model. Efficacy: share of the forget set the attack calls non-members."
                        .into(),
                ),
            }));
            b.push(Block::Table(Table {
                name: "TPR at low FPR".into(),
                header: vec![
                    "attack".into(),
                    "model".into(),
                    "TPR @ 1% FPR".into(),
                    "TPR @ 0.1% FPR".into(),
                    "TPR @ 0.01% FPR".into(),
                ],
                rows: listed
                    .iter()
                    .map(|(role, a)| {
                        let m = &a.metrics.forget;
                        vec![
                            a.attack.name.clone(),
                            role.to_string(),
                            tpr_cell(m, 0.01),
                            tpr_cell(m, 0.001),
                            tpr_cell(m, 0.0001),
                        ]
                    })
                    .collect(),
                align: vec![
                    Align::Left,
                    Align::Left,
                    Align::Right,
                    Align::Right,
                    Align::Right,
                ],
                note: Some(format!(
                    "True-positive rate on the forget set at a fixed false-positive rate on non-members (Carlini et al.), with {level:.0}% bootstrap intervals ({} resamples, seed {}). * : too few non-members to resolve that rate.",
                    listed.first().map_or(0, |(_, a)| a.bootstrap.resamples),
                    listed.first().map_or(0, |(_, a)| a.bootstrap.seed),
                )),
            }));
            let mut plots = Vec::new();
            for a in &self.attacks {
                let mut curves = vec![curve(
                    "unlearned: forget",
                    palette::UNLEARNED,
                    false,
                    &a.metrics.forget,
                )];
                if let Some(o) = self
                    .original_attacks
                    .iter()
                    .find(|o| o.attack.id == a.attack.id)
                {
                    curves.push(curve(
                        "original: forget",
                        palette::ORIGINAL,
                        false,
                        &o.metrics.forget,
                    ));
                }
                if let Some(r) = retrain_attacks.iter().find(|r| r.attack.id == a.attack.id) {
                    curves.push(curve(
                        "retrain: forget",
                        palette::RETRAIN,
                        false,
                        &r.metrics.forget,
                    ));
                }
                if let Some(r) = &a.metrics.reference {
                    curves.push(curve("unlearned: held-out", palette::REFERENCE, true, r));
                }
                for log in [false, true] {
                    plots.push(RocPlot {
                        title: format!(
                            "{} ({})",
                            a.attack.name,
                            if log { "log-log" } else { "linear" }
                        ),
                        log,
                        curves: curves.clone(),
                    });
                }
            }
            if !plots.is_empty() {
                b.push(Block::Plots(plots));
            }
            let flags: Vec<String> = self
                .attacks
                .iter()
                .flat_map(|a| {
                    a.flags.iter().map(move |f| {
                        format!(
                            "{} — {} ({}): {}",
                            a.attack.name, f.code, f.severity, f.message
                        )
                    })
                })
                .collect();
            for f in flags {
                b.push(Block::Note(f));
            }
        }

        // Per-sample verification.
        b.push(Block::Heading("Per-sample verification (U-LiRA)".into()));
        match &self.per_sample {
            None => b.push(Block::Paragraph(
                "No per-sample verification was found. Run `lethe verify-samples RUN` (it writes into the run folder)."
                    .into(),
            )),
            Some(v) => {
                b.push(Block::Paragraph(format!(
                    "{} shadow models were trained by the original model's recipe and each unlearned by {} with this deletion's parameters; for every sample, models that trained on it and then forgot it are compared with models that never saw it (U-LiRA, Hayes et al., SaTML 2025). Before: online LiRA on the original model with the same shadow models. A sample counts as told apart when its p-value is below {}.",
                    v.settings.shadow_models, v.method, v.settings.alpha
                )));
                let auc = |m: &MembershipView| with_ci(m.auc, m.auc_pair());
                let share = |side: &super::sources::PerSampleSideView,
                             pick: fn(&super::sources::PerSampleSharesView)
                                 -> Option<super::sources::ShareView>| {
                    side.per_sample
                        .as_ref()
                        .and_then(pick)
                        .map_or_else(|| "-".to_string(), |q| q.text())
                };
                let rows = vec![
                    vec![
                        "forget vs never-seen: AUC".into(),
                        auc(&v.before.forget),
                        auc(&v.after.forget),
                    ],
                    vec![
                        "forgotten samples told apart".into(),
                        share(&v.before, |p| Some(p.forget)),
                        share(&v.after, |p| Some(p.forget)),
                    ],
                    vec![
                        "never-seen samples told apart (the test's own false-positive rate)".into(),
                        share(&v.before, |p| p.nonmember),
                        share(&v.after, |p| p.nonmember),
                    ],
                    vec![
                        "retained samples told apart".into(),
                        share(&v.before, |p| p.member),
                        share(&v.after, |p| p.member),
                    ],
                ];
                b.push(Block::Table(Table {
                    name: "per-sample".into(),
                    header: vec![
                        "".into(),
                        "before (original, LiRA)".into(),
                        "after (unlearned, U-LiRA)".into(),
                    ],
                    rows,
                    align: vec![Align::Left, Align::Right, Align::Right],
                    note: Some(format!(
                        "Brackets: 95 % intervals (exact for the shares, bootstrap for the AUC). Read the forgotten line against the never-seen one, not against {}. From {}.",
                        v.settings.alpha,
                        v.folder.display()
                    )),
                }));
                let lines = |l: &[super::sources::SampleLineView]| -> Vec<Vec<String>> {
                    l.iter()
                        .map(|x| {
                            vec![
                                x.row.to_string(),
                                format!("{:.2e}", x.p_before),
                                format!("{:.2e}", x.p_after),
                            ]
                        })
                        .collect()
                };
                let header = vec![
                    "dataset row".into(),
                    "p before".into(),
                    "p after".into(),
                ];
                b.push(Block::Table(Table {
                    name: "most distinguishable forgotten samples".into(),
                    header: header.clone(),
                    rows: lines(&v.most_distinguishable),
                    align: vec![Align::Right, Align::Right, Align::Right],
                    note: Some("The forgotten samples an attacker tells apart best after the deletion (lowest p-value first).".into()),
                }));
                b.push(Block::Table(Table {
                    name: "retained samples more exposed".into(),
                    header,
                    rows: lines(&v.onion.most_exposed),
                    align: vec![Align::Right, Align::Right, Align::Right],
                    note: Some(format!(
                        "The onion effect: of {} held-out retained samples, {} became significant after the deletion and {} stopped being; the largest increases of -log10 p.",
                        v.onion.samples, v.onion.newly_significant, v.onion.no_longer_significant
                    )),
                }));
            }
        }

        // Heatmaps.
        b.push(Block::Heading("Alignment heatmaps".into()));
        match &self.matrices {
            Some(m) => {
                let (lo, hi) = m
                    .am_before
                    .iter()
                    .chain(&m.am_after)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                let amax = m.agm.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-9);
                let map = |title: &str, values: &Vec<f64>, range, diverging| Heatmap {
                    title: title.into(),
                    rows: m.n,
                    cols: m.n,
                    values: values.clone(),
                    range,
                    diverging,
                };
                b.push(Block::Heatmaps(vec![
                    map("AM before", &m.am_before, (lo, hi), false),
                    map("AM after", &m.am_after, (lo, hi), false),
                    map("AGM = before − after", &m.agm, (-amax, amax), true),
                ]));
                b.push(Block::Note(format!(
                    "Cosine similarity of two augmented views of {} forget samples (dataset indices {}), before and after unlearning, and their difference (Alignment Calibration, Wang et al.). A forgotten sample's diagonal cell cools in AM after, so the AGM diagonal turns red.",
                    m.n,
                    m.indices
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => b.push(Block::Paragraph(
                "Not available: the evaluation holds no alignment matrices (they are computed for encoders, or with `lethe evaluate --alignment`)."
                    .into(),
            )),
        }

        // Verdict rules.
        b.push(Block::Heading("Verdict and the rules behind it".into()));
        b.push(Block::Verdict {
            label: self.verdict.outcome.label().into(),
            color: outcome_color(self.verdict.outcome),
            text: self.verdict.headline.clone(),
        });
        b.push(Block::Table(Table {
            name: "checks".into(),
            header: vec![
                "check".into(),
                "rule".into(),
                "measured".into(),
                "result".into(),
            ],
            rows: self
                .verdict
                .checks
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.rule.clone(),
                        c.measured.clone(),
                        format!("{}: {}", c.outcome.label(), c.reason),
                    ]
                })
                .collect(),
            align: vec![Align::Left; 4],
            note: None,
        }));
        b.push(Block::Note(verdict::rules_text()));

        // Reproduce.
        b.push(Block::Heading("Reproduce".into()));
        b.push(Block::Paragraph(
            "These commands repeat the deletion with the same plugin, parameters, seed and device, then its evaluation and attacks, into a new folder:"
                .into(),
        ));
        b.push(Block::Code(self.reproduce.clone()));

        // Files.
        b.push(Block::Heading("Files".into()));
        let mut rows: Vec<Vec<String>> = run
            .outputs
            .iter()
            .map(|f| {
                vec![
                    f.role.clone(),
                    f.sha256.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        rows.sort();
        b.push(Block::Table(Table {
            name: "run outputs".into(),
            header: vec![
                format!("file in {}", file_name(&self.run_dir)),
                "SHA-256".into(),
            ],
            rows,
            align: vec![Align::Left, Align::Left],
            note: Some(
                "Each job is also recorded, with its inputs' and outputs' hashes, in the workspace's audit log (`lethe audit log`)."
                    .into(),
            ),
        }));
        for i in &self.ignored {
            b.push(Block::Note(format!("Not used: {i}")));
        }

        Document {
            title: "Lethe deletion report".into(),
            subtitle: format!(
                "{} ({}) on {} — run {}",
                run.method.name,
                run.method.id,
                file_name(&run.original.path),
                self.run_dir.display()
            ),
            generated: generated.to_string(),
            blocks: b,
        }
    }
}
