//! Alignment Calibration (Wang, Lu et al.): unlearning for contrastive encoders by
//! fine-tuning on an objective whose forget-set part lowers the alignment of its
//! positive pairs, raises that of its negative pairs and keeps the InfoNCE
//! denominator ([`losses`]), in the scale of the code behind the paper's numbers
//! (`formulation = reference`, the default) or of the paper's eq. (5)
//! (`paper`). SimCLR and MoCo encoders; MoCo's momentum encoder and queue live in
//! the plugin ([`momentum`]).

pub mod losses;
pub mod momentum;

use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Augment, Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::{Cycle, mixed_batch_sizes};
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::{Trainer, steps_per_epoch};
use lethe_plugin_kit::{EpochProgress, ModelKind, Ticker, evaluate, finish, prepare};
use losses::{Coefficients, Formulation, Terms, forget_mask, moco_terms, normalize, simclr_terms};
use momentum::{KeyQueue, MomentumEncoder};
use serde_json::{Value, json};

/// Id of the method.
pub const ID: &str = "org.lethe.method.alignment-calibration";

/// Which contrastive framework the encoder was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// SimCLR: NT-Xent between two views of every sample in the batch.
    SimClr,
    /// MoCo: queries against momentum-encoder keys and a queue.
    Moco,
}

/// The method and its settings.
pub struct AlignmentCalibration {
    optim: Optim,
    seed: u64,
    max_batches: usize,
    coefficients: Coefficients,
    epsilon_auto: bool,
    variant: Option<Variant>,
    temperature: f64,
    moco_momentum: f64,
    queue_size: i64,
}

impl Plugin for AlignmentCalibration {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            ID,
            "Alignment Calibration",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Encoder], true)
        .description(
            "Unlearning for contrastive encoders (SimCLR, MoCo). Fine-tunes on batches mixing \
             retain and forget samples in proportion to the split sizes. Positive pairs are \
             two views of one forget sample, a forget sample's negative partner is a view of \
             another forget sample; lowering positive alignment raises the forgetting score, \
             raising negative alignment makes the change visible in the alignment matrices a \
             data owner can audit. formulation = reference (default) is the objective of the \
             code behind the paper's numbers: the α-weighted mean of the per-row InfoNCE, \
             (Σ_retain l + α·Σ_forget l)/(N_r + α·N_u), a forget row's positive being its \
             negative partner, plus β·|D_u|/(|D_r|+|D_u|) times the mean cosine of a forget \
             sample's two views. paper is eq. (5) as printed: L_retain + ε·L_unlearn with \
             L_unlearn = −α·E_neg s + β·E_pos s + γ·E log Σ exp s, s the cosine over the \
             temperature and ε = |D_u|/|D_r|; its β is τ times the reference's and its loss \
             (1 + αε) times larger. MoCo: the plugin keeps the momentum encoder (an average \
             of the weights, swapped in for the key pass) and a queue filled from retain \
             keys, since checkpoints hold neither. Fidelity: FIDELITY.md, row Alignment \
             Calibration.",
        )
        .citation(
            "Yihan Wang, Yiwei Lu, Guojun Zhang, Franziska Boenisch, Adam Dziedzic, Yaoliang Yu \
             and Xiao-Shan Gao, \"Alignment Calibration: Machine Unlearning for Contrastive \
             Learning under Auditing\", arXiv:2406.03603 (2024); as \"MUC: Machine Unlearning \
             for Contrastive Learning with Black-box Evaluation\", TMLR 2025.",
        )
        .param(
            ParamSpec::choice("formulation", "Formulation", &["reference", "paper"], "reference")
                .group("Method")
                .help(
                    "reference: the objective of the code behind the paper's numbers, \
                     (Σ_retain l + α·Σ_forget l)/(N_r + α·N_u) + β·|D_u|/(|D_r|+|D_u|)·mean cos \
                     (γ and ε unused); paper: eq. (5) as printed, L_retain + ε·(−α·E_neg s + \
                     β·E_pos s + γ·E lse) with s = cos/τ, whose β is τ times the reference's \
                     and whose loss is (1 + αε) times larger, which acts as a learning rate \
                     that much higher.",
                ),
        )
        .param(
            ParamSpec::float("alpha", "α (negative alignment)", 0.0, 100.0, 1.0)
                .group("Method")
                .help(
                    "reference: weight of each forget row's InfoNCE against a view of another \
                     forget sample in the batch mean (the paper's α and γ together); 1 is the \
                     plain mean, the released scripts tune it in [0.4, 2]. paper: weight of \
                     −E_neg s. The paper: 1.",
                ),
        )
        .param(
            ParamSpec::float("beta", "β (positive alignment)", 0.0, 100.0, 1.0)
                .group("Method")
                .help(
                    "Lowers the similarity of two views of a forget sample, in the reference's \
                     units: β·|D_u|/(|D_r|+|D_u|) times their mean cosine. The paper tunes it \
                     in [0, 20] (its MoCo ablation at 10 % forgetting reaches the retrained \
                     model's forgetting score at 12–16); the released scripts use 0. Under \
                     formulation = paper it multiplies E_pos s = cos/τ inside ε·L_unlearn: \
                     the reference's β corresponds to β·τ there.",
                ),
        )
        .param(
            ParamSpec::float("gamma", "γ (performance preserving)", 0.0, 100.0, 1.0)
                .group("Method")
                .help("formulation = paper only: weight of E log Σ exp s on forget rows (the reference ties it to α). The paper: 1."),
        )
        .param(
            ParamSpec::bool("epsilon_auto", "ε = |D_u|/|D_r|", true)
                .group("Method")
                .help("formulation = paper only: the paper's ε; turn off to set it with `epsilon`."),
        )
        .param(
            ParamSpec::float("epsilon", "ε (when not automatic)", 0.0, 100.0, 0.1)
                .group("Method")
                .help("formulation = paper only."),
        )
        .param(
            ParamSpec::choice("variant", "Encoder", &["auto", "simclr", "moco"], "auto")
                .group("Method")
                .help("auto: the task the checkpoint records (lethe train), else SimCLR."),
        )
        .param(
            ParamSpec::float("temperature", "Temperature", 0.0, 10.0, 0.0)
                .group("Method")
                .help(
                    "InfoNCE temperature; 0: the one the checkpoint records, else the papers' \
                     0.5 (SimCLR) or 0.1 (MoCo).",
                ),
        )
        .param(
            ParamSpec::float("moco_momentum", "MoCo key momentum", 0.0, 0.99999, 0.99)
                .group("MoCo"),
        )
        .param(ParamSpec::int("queue_size", "MoCo queue size", 1, 1_000_000, 4096).group("MoCo"))
        .param(
            ParamSpec::int("max_batches", "Batches per epoch", 0, 1_000_000, 0)
                .group("Data")
                .help("Stop each epoch after this many batches (0: the whole retain split); for quick trials."),
        );
        let d = params::optimiser(
            d,
            &OptimDefaults {
                lr: 0.006,
                epochs: 10,
                batch_size: 512,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: "constant",
            },
        );
        params::seed(d)
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        let variant = match p.str("variant")? {
            "simclr" => Some(Variant::SimClr),
            "moco" => Some(Variant::Moco),
            _ => None,
        };
        Ok(AlignmentCalibration {
            optim: Optim::from_params(p)?,
            seed: params::read_seed(p)?,
            max_batches: usize::try_from(p.i64("max_batches")?).unwrap_or(0),
            coefficients: Coefficients {
                formulation: match p.str("formulation")? {
                    "paper" => Formulation::Paper,
                    _ => Formulation::Reference,
                },
                alpha: p.f64("alpha")?,
                beta: p.f64("beta")?,
                gamma: p.f64("gamma")?,
                epsilon: p.f64("epsilon")?,
                forget_share: 0.0,
            },
            epsilon_auto: p.bool("epsilon_auto")?,
            variant,
            temperature: p.f64("temperature")?,
            moco_momentum: p.f64("moco_momentum")?,
            queue_size: p.i64("queue_size")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &Prune::NONE)?;
        let head = match prep.kind {
            ModelKind::Encoder { head } => head,
            ModelKind::Classifier { .. } => {
                return Err(PluginError::msg(
                    "Alignment Calibration unlearns contrastive encoders; the model is a \
                     classifier, which has no projection head",
                ));
            }
        };
        let task = prep
            .recipe
            .get("task")
            .and_then(Value::as_str)
            .unwrap_or("");
        let variant = self
            .variant
            .unwrap_or(if task.eq_ignore_ascii_case("moco") {
                Variant::Moco
            } else {
                Variant::SimClr
            });
        let temperature = if self.temperature > 0.0 {
            self.temperature
        } else {
            prep.recipe
                .get("temperature")
                .and_then(Value::as_f64)
                .filter(|t| *t > 0.0)
                .unwrap_or(match variant {
                    Variant::SimClr => 0.5,
                    Variant::Moco => 0.1,
                })
        };
        let recorded = prep.recipe.get("augment").is_some_and(|a| !a.is_null());
        let recipe = if recorded {
            Augment::Training
        } else {
            Augment::Contrastive
        };
        let objective = prep.objective(&Training {
            augment: true,
            temperature,
            max_batches: 0,
        });
        let (n_r, n_f) = (
            ctx.data_len(Split::Retain)?.unwrap_or(0),
            ctx.data_len(Split::Forget)?.unwrap_or(0),
        );
        if n_r == 0 || n_f == 0 {
            return Err(PluginError::msg(
                "Alignment Calibration needs retain and forget samples",
            ));
        }
        let mut c = self.coefficients;
        if self.epsilon_auto {
            c.epsilon = n_f as f64 / n_r as f64;
        }
        c.forget_share = n_f as f64 / (n_r + n_f) as f64;
        let scale = match c.formulation {
            Formulation::Reference => ("forget_share", c.forget_share),
            Formulation::Paper => ("epsilon", c.epsilon),
        };
        let bs = self.optim.batch_size;
        // At least two forget samples per batch: negative pairs need two.
        let (br, bf) = mixed_batch_sizes(bs, n_r, n_f);
        let (br, bf) = if bf < 2 && bs >= 4 {
            (bs - 2, 2)
        } else {
            (br, bf)
        };
        ctx.info(&format!(
            "{variant:?}, temperature {temperature}, formulation {}, {} = {:.5}, batches of {br} retain + {bf} forget",
            c.formulation.name(),
            scale.0,
            scale.1
        ));

        let steps = steps_per_epoch(ctx, Split::Retain, br, self.max_batches)?;
        let epochs = self.optim.epochs;
        let mut progress = EpochProgress::new(epochs, steps);
        progress.phase(ctx, "measuring the forget set before unlearning")?;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let mut ticker = progress.phase_ticker(ctx, AUDIT_BEFORE, "batch", None)?;
        let audit_before = audit(ctx, head, recipe, &mut ticker)?;
        // The audit draws its views from a fixed seed (so before and after see the
        // same images); training must go on from the run's own seed, or every seed
        // would train alike. Offset so its first views are not the evaluation's.
        tch::manual_seed(i64::try_from(self.seed.wrapping_add(1) & (i64::MAX as u64)).unwrap_or(1));
        let mut moco = match variant {
            Variant::Moco => Some(MocoState::new(
                ctx,
                &mut progress,
                &prep.params,
                head,
                recipe,
                self.moco_momentum,
                self.queue_size,
                bs,
            )?),
            Variant::SimClr => None,
        };
        let mut trainer = Trainer::new(prep.params, prep.masks, &self.optim, steps)?;
        let mut forget = Cycle::new(Split::Forget, bf);
        for _ in 0..epochs {
            let lr = trainer.lr();
            let mut sums = Sums::default();
            for batch in ctx.batches(Split::Retain, br, true, false)? {
                ctx.check_cancelled()?;
                let (xr, _) = batch?;
                let (xf, _) = forget.next_batch(ctx)?;
                let terms = step_terms(ctx, head, recipe, temperature, moco.as_mut(), &xr, &xf)?;
                let loss = terms.total(&c)?;
                sums.add(&terms, &c, &loss)?;
                trainer.step(&loss)?;
                if let Some(m) = moco.as_mut() {
                    m.encoder.update()?;
                }
                progress.step(ctx);
                if self.max_batches > 0 && sums.batches >= self.max_batches {
                    break;
                }
            }
            let mut m = sums.report();
            if let Value::Object(o) = &mut m {
                o.insert("lr".into(), json!(lr));
                o.insert(scale.0.into(), json!(scale.1));
            }
            progress.end_epoch(ctx, m);
        }
        let mut ticker = progress.phase_ticker(ctx, AUDIT_AFTER, "batch", None)?;
        let audit_after = audit(ctx, head, recipe, &mut ticker)?;
        let mut extra = json!({
            "method": "alignment-calibration",
            "formulation": c.formulation.name(),
            "variant": match variant { Variant::SimClr => "simclr", Variant::Moco => "moco" },
            "temperature": temperature,
            "alpha": c.alpha, "beta": c.beta,
            "retain_batch": br, "forget_batch": bf,
            "steps": trainer.steps(),
            "forget_alignment_before": audit_before.forget,
            "forget_alignment_after": audit_after.forget,
            "test_alignment_before": audit_before.test,
            "test_alignment_after": audit_after.test,
            // Not the forgetting score: FS is `lethe evaluate`'s (backbone
            // features, several view pairs, the paper's eq. 2), the one number
            // reports and studies show. This is the training objective's view.
            "projection_alignment_drop": audit_before.forget - audit_after.forget,
        });
        if let Value::Object(o) = &mut extra {
            match c.formulation {
                Formulation::Reference => {
                    o.insert("forget_share".into(), json!(c.forget_share));
                    // β' of the reference: the weight the raw cosine got.
                    o.insert("beta_effective".into(), json!(c.beta * c.forget_share));
                }
                Formulation::Paper => {
                    o.insert("gamma".into(), json!(c.gamma));
                    o.insert("epsilon".into(), json!(c.epsilon));
                }
            }
        }
        finish(ctx, &objective, bs, &before, extra)
    }
}

const AUDIT_BEFORE: &str = "measuring the alignment of forget and test samples before unlearning";
const AUDIT_AFTER: &str = "measuring the alignment of forget and test samples after unlearning";

/// MoCo's key encoder and queue.
struct MocoState {
    encoder: MomentumEncoder,
    queue: KeyQueue,
}

impl MocoState {
    /// A key encoder at the original weights and a queue filled with its keys of
    /// shuffled, augmented retain samples.
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &mut HostContext,
        progress: &mut EpochProgress,
        params: &[(String, Tensor)],
        head: ModelHead,
        recipe: Augment,
        momentum: f64,
        queue_size: i64,
        bs: u32,
    ) -> Result<Self, PluginError> {
        let mut encoder = MomentumEncoder::new(params, momentum)?;
        let n_r = i64::try_from(ctx.data_len(Split::Retain)?.unwrap_or(0)).unwrap_or(i64::MAX);
        let capacity = queue_size.min(n_r).max(1);
        let batches = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .div_ceil(usize::try_from(bs.max(1)).unwrap_or(1));
        let mut ticker =
            progress.phase_ticker(ctx, "filling the MoCo key queue", "batch", Some(batches))?;
        let mut queue: Option<KeyQueue> = None;
        ctx.model_set_train(true)?;
        for batch in ctx.batches(Split::Retain, bs, true, false)? {
            ctx.check_cancelled()?;
            let (x, _) = batch?;
            let v = ctx.augment(&x, recipe)?;
            let k = encoder.forward(ctx, head, &v)?;
            let q = match queue.as_mut() {
                Some(q) => q,
                None => queue.insert(KeyQueue::new(
                    capacity,
                    k.size().last().copied().unwrap_or(1),
                    k.device(),
                )?),
            };
            q.enqueue(&k)?;
            if q.is_full() {
                break;
            }
            ticker.tick(ctx);
        }
        let queue = queue.ok_or_else(|| PluginError::msg("the retain split is empty"))?;
        Ok(MocoState { encoder, queue })
    }
}

fn rows(t: &Tensor) -> i64 {
    t.size().first().copied().unwrap_or(0)
}

/// The terms on one mixed batch: retain inputs `xr` then forget inputs `xf`.
fn step_terms(
    ctx: &mut HostContext,
    head: ModelHead,
    recipe: Augment,
    temperature: f64,
    moco: Option<&mut MocoState>,
    xr: &Tensor,
    xf: &Tensor,
) -> Result<Terms, PluginError> {
    ctx.model_set_train(true)?;
    let x = Tensor::f_cat(&[xr, xf], 0)?;
    let mask = forget_mask(rows(xr), rows(xf), x.device())?;
    let v1 = ctx.augment(&x, recipe)?;
    let v2 = ctx.augment(&x, recipe)?;
    match moco {
        None => {
            let z1 = ctx.model_forward(head, &v1)?;
            let z2 = ctx.model_forward(head, &v2)?;
            simclr_terms(&z1, &z2, &mask, temperature)
        }
        Some(m) => {
            // Keys first: the swap must not touch weights a query graph depends on.
            let k = m.encoder.forward(ctx, head, &v2)?;
            let q = ctx.model_forward(head, &v1)?;
            // A copy: the queue is overwritten in place below, and the query graph
            // keeps the negatives it was computed against for the backward pass.
            let negatives = m.queue.keys()?.f_detach_copy()?;
            let terms = moco_terms(&q, &k, &mask, &negatives, temperature)?;
            m.queue.enqueue(&k)?;
            Ok(terms)
        }
    }
}

#[derive(Default)]
struct Sums {
    batches: usize,
    loss: f64,
    retain: f64,
    neg: f64,
    pos: f64,
    lse: f64,
    unlearn: f64,
}

impl Sums {
    fn add(&mut self, t: &Terms, c: &Coefficients, loss: &Tensor) -> Result<(), PluginError> {
        let f = |t: &Tensor| t.f_double_value(&[]);
        self.batches += 1;
        self.loss += f(loss)?;
        self.retain += f(&t.retain)?;
        self.neg += f(&t.neg)?;
        self.pos += f(&t.pos)?;
        self.lse += f(&t.lse)?;
        self.unlearn += f(&t.unlearn(c)?)?;
        Ok(())
    }

    fn report(&self) -> Value {
        let n = self.batches.max(1) as f64;
        json!({
            "loss": self.loss / n,
            "retain_loss": self.retain / n,
            "unlearn_loss": self.unlearn / n,
            "negative_alignment": self.neg / n,
            "positive_alignment": self.pos / n,
            "log_sum_exp": self.lse / n,
            "batches": self.batches,
        })
    }
}

/// Mean positive-pair cosine similarity (two augmented views, the projection
/// head, eval mode) of the forget set and of as many test samples: the
/// forgetting score's ingredient (eq. 2 of the paper), before and after. The
/// views come from a fixed seed so that both measurements see the same images.
struct Audit {
    forget: f64,
    test: f64,
}

fn audit(
    ctx: &mut HostContext,
    head: ModelHead,
    recipe: Augment,
    ticker: &mut Ticker,
) -> Result<Audit, PluginError> {
    let n_f = ctx.data_len(Split::Forget)?.unwrap_or(0);
    let forget = alignment(ctx, head, recipe, Split::Forget, u64::MAX, ticker)?;
    let test = match ctx.data_len(Split::Test)? {
        Some(n) if n > 0 => alignment(ctx, head, recipe, Split::Test, n_f, ticker)?,
        _ => f64::NAN,
    };
    Ok(Audit { forget, test })
}

fn alignment(
    ctx: &mut HostContext,
    head: ModelHead,
    recipe: Augment,
    split: Split,
    limit: u64,
    ticker: &mut Ticker,
) -> Result<f64, PluginError> {
    ctx.model_set_train(false)?;
    tch::manual_seed(0x5eed);
    let (mut sum, mut n) = (0.0, 0u64);
    for batch in ctx.batches(split, 256, false, false)? {
        ctx.check_cancelled()?;
        let (x, _) = batch?;
        let v1 = ctx.augment(&x, recipe)?;
        let v2 = ctx.augment(&x, recipe)?;
        let z1 = normalize(&ctx.model_forward(head, &v1)?)?;
        let z2 = normalize(&ctx.model_forward(head, &v2)?)?;
        let cos = z1
            .f_mul(&z2)?
            .f_sum_dim_intlist([1i64].as_slice(), false, DType::Float)?;
        let take = i64::try_from((limit - n).min(rows(&cos) as u64)).unwrap_or(0);
        sum += cos
            .f_narrow(0, 0, take)?
            .f_sum(DType::Float)?
            .f_double_value(&[])?;
        n += take as u64;
        if n >= limit {
            break;
        }
        ticker.tick(ctx);
    }
    Ok(sum / n.max(1) as f64)
}

lethe_plugin_api::declare_plugin!(AlignmentCalibration);
