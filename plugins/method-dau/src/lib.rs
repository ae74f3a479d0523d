//! Discriminative Adversarial Unlearning (Sharma, Zhou, Ji and Chen): the model
//! (the defender) and a membership attacker play a min-max game. The attacker
//! (Yuan and Zhang's transformer, `lethe_attack_kit::transformer`, shared with
//! the transformer attack plugin) learns to tell the defender's outputs on
//! forget samples from those on validation samples; the defender keeps its
//! retain cross-entropy low
//! while defeating the attacker, and a Barlow-Twins regulariser pulls its forget
//! features towards validation features ([`losses`]).

pub mod defender;
pub mod losses;

use defender::DefenderOptim;
use lethe_attack_kit::transformer::{self, Attacker, membership_loss};
use lethe_plugin_api::schema::ModelClass;
use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{self, Kind as DType, Tensor};
use lethe_plugin_kit::epoch::Cycle;
use lethe_plugin_kit::forgetting::{self, Forgetting};
use lethe_plugin_kit::losses::cross_entropy;
use lethe_plugin_kit::params::{self, Optim, OptimDefaults, Prune, Training};
use lethe_plugin_kit::train::steps_per_epoch;
use lethe_plugin_kit::{EpochProgress, ModelKind, Sgd, SgdConfig, evaluate, finish, prepare};
use losses::{Opposition, barlow_twins, defender_loss, lambda_at};
use serde_json::{Value, json};

/// Id of the method.
pub const ID: &str = "org.lethe.method.dau";

/// The attacker's optimiser and schedule.
#[derive(Debug, Clone, Copy)]
struct AttackerSettings {
    lr: f64,
    sgd: SgdConfig,
    pretrain_steps: usize,
    steps_per_iteration: usize,
    draws: usize,
    noise: f64,
}

/// The method and its settings.
pub struct Dau {
    optim: Optim,
    seed: u64,
    max_batches: usize,
    lambda: f64,
    opposition: Opposition,
    barlow_weight: f64,
    off_diagonal: f64,
    barlow_head: ModelHead,
    attacker: AttackerSettings,
    forgetting: Option<bool>,
    /// Whether the attacker sees the one-hot label; `None`: all but class-wise.
    attacker_label: Option<bool>,
    class_lambda_off_after: usize,
    clip_grad_norm: f64,
    non_members: Split,
}

impl Plugin for Dau {
    fn descriptor() -> Descriptor {
        let d = Descriptor::new(
            ID,
            "Discriminative Adversarial Unlearning",
            env!("CARGO_PKG_VERSION"),
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .description(
            "Min-max unlearning for classifiers. An attacker (Yuan and Zhang's transformer \
             membership attack over [softmax, sensitivity to input noise mean|p(x+εn)−p(x)|/ε \
             over m draws, one-hot label]) is pre-trained, then updated alternately with the \
             model, to tell the model's outputs on forget samples (members) from those on \
             non-member samples (the validation split by default). The model minimises \
             CE(retain) − λ·L_attacker(forget vs non-members) + w·L_BT, where L_BT is the \
             Barlow-Twins cross-correlation loss between forget and non-member features \
             (off-diagonal weight 5e-3); in class-wise forgetting λ drops to 0 after the \
             first iterations. The paper's numeric settings (λ, w, learning rates, \
             pre-training length) are not legible in our copy; the defaults were checked on \
             the bundled demo, where the saturating min-max form of eq. (1) barely moves a \
             confident classifier (its softmax gradients vanish) and the flipped form the \
             paper offers for exactly that (§3.3) can forget a class. The defender's \
             gradient is clipped (global norm 2, not in the paper): on a classifier with \
             p ≈ 1 the attacker's gradient grows by orders of magnitude once predictions \
             move, and unclipped steps collapsed the demo model. In class-wise forgetting \
             the attacker does not see the label by default (not in the paper): \
             non-members come from every class, so the label alone separates them from the \
             forgotten class's samples, the attacker leans on it and gives the model no \
             gradient: with the label, the demo kept class 7 on seed 1 even with the paper's \
             schedule (100 pre-training steps, λ for 30 iterations); without it, seeds 1, 3 \
             and 4 forgot it with retain accuracy ≥ 0.99.",
        )
        .citation(
            "Rohan Sharma, Shijie Zhou, Kaiyi Ji and Changyou Chen, \"Discriminative \
             Adversarial Unlearning\", arXiv:2402.06864 (2024). Attacker: Xiaoyong Yuan and Lan \
             Zhang, \"Membership Inference Attacks and Defenses in Neural Network Pruning\", \
             USENIX Security 2022. Regulariser: Zbontar et al., \"Barlow Twins\", ICML 2021.",
        )
        .param(
            ParamSpec::float("lambda", "λ (attacker term)", 0.0, 1000.0, 10.0)
                .group("Method")
                .help("Weight of the attacker's objective in the defender's loss."),
        )
        .param(
            ParamSpec::choice("opposition", "Defender objective", &["minmax", "flipped"], "flipped")
                .group("Method")
                .help(
                    "minmax: subtract λ·(the attacker's loss), eq. (1); flipped: add λ·CE of \
                     the attacker calling forget samples non-members (the non-saturating \
                     variant §3.3 suggests against weak gradients).",
                ),
        )
        .param(
            ParamSpec::float("barlow_weight", "Barlow-Twins weight", 0.0, 1000.0, 0.01)
                .group("Method")
                .help("Strength of the self-supervised regulariser L_BT (0: off)."),
        )
        .param(
            ParamSpec::float("barlow_off_diagonal", "Off-diagonal weight", 0.0, 1.0, 5e-3)
                .group("Method")
                .help("λ_off of Barlow Twins (5e-3, as Zbontar et al. recommend)."),
        )
        .param(
            ParamSpec::choice("barlow_features", "Regulariser features", &["features", "logits"], "features")
                .group("Method")
                .help("The model output L_BT correlates: backbone features (default) or logits."),
        )
        .param(
            ParamSpec::choice("non_members", "Non-member data", &["validation", "test"], "validation")
                .group("Method")
                .help("The samples the attacker learns to call non-members; the paper uses the validation set."),
        )
        .param(
            ParamSpec::choice("mode", "Forgetting", &["auto", "sample", "class"], "auto")
                .group("Method")
                .help("auto: class-wise when the forget set is one class the retain set lacks."),
        )
        .param(
            ParamSpec::choice("attacker_label", "Attacker sees the label", &["auto", "on", "off"], "auto")
                .group("Attacker")
                .help(
                    "on: the attacker's inputs include the one-hot label, as in Yuan and \
                     Zhang's attack; off: that block is zero; auto: off in class-wise \
                     forgetting (the label is the forgotten class itself: the attacker \
                     separates members by it and stops pushing the model's outputs), on \
                     otherwise.",
                ),
        )
        .param(
            ParamSpec::int("class_lambda_off_after", "Class-wise: λ → 0 after (iterations)", 0, 1_000_000, 30)
                .group("Method"),
        )
        .param(
            ParamSpec::float("clip_grad_norm", "Gradient clip (global L2 norm)", 0.0, 1e6, 2.0)
                .group("Method")
                .help(
                    "Clip the defender's gradient to this global L2 norm before each step \
                     (0: off). Not in the paper, which trains a ResNet-18 with weight decay; on \
                     a classifier fitted to p ≈ 1 the attacker's gradient through the softmax \
                     starts near zero and grows by orders of magnitude once the forget \
                     predictions move (on the demo, epoch means went from ~1 to 40-3,400 within \
                     ten iterations at λ 10-300, and the model collapsed to 15 % retain accuracy \
                     on one seed); 2 bounds those steps and leaves the retain-only phase \
                     (norms below 2) as it was.",
                ),
        )
        .param(
            ParamSpec::int("attacker_pretrain_steps", "Attacker pre-training steps", 0, 1_000_000, 100)
                .group("Attacker"),
        )
        .param(
            ParamSpec::int("attacker_steps", "Attacker steps per iteration", 1, 1000, 1)
                .group("Attacker"),
        )
        .param(
            ParamSpec::float("attacker_lr", "Attacker learning rate", 1e-7, 10.0, 0.01)
                .log_scale()
                .group("Attacker"),
        )
        .param(ParamSpec::float("attacker_momentum", "Attacker momentum", 0.0, 0.999, 0.9).group("Attacker"))
        .param(
            ParamSpec::float("attacker_weight_decay", "Attacker weight decay", 0.0, 0.1, 5e-4)
                .group("Attacker"),
        )
        .param(
            ParamSpec::int("sensitivity_draws", "Sensitivity draws m", 1, 1000, 10)
                .group("Attacker"),
        )
        .param(
            ParamSpec::float("sensitivity_noise", "Sensitivity noise ε", 1e-8, 1.0, 1e-3)
                .log_scale()
                .group("Attacker"),
        )
        .param(
            ParamSpec::int("max_batches", "Iterations per epoch", 0, 1_000_000, 0)
                .group("Data")
                .help("Stop each epoch after this many forget batches (0: the whole forget split)."),
        );
        let d = params::optimiser(
            d,
            &OptimDefaults {
                lr: 0.01,
                epochs: 10,
                batch_size: 64,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: "constant",
            },
        );
        params::seed(d)
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        let count = |key: &str| -> Result<usize, PluginError> {
            Ok(usize::try_from(p.i64(key)?).unwrap_or(0))
        };
        Ok(Dau {
            optim: Optim::from_params(p)?,
            seed: params::read_seed(p)?,
            max_batches: count("max_batches")?,
            lambda: p.f64("lambda")?,
            opposition: match p.str("opposition")? {
                "flipped" => Opposition::Flipped,
                _ => Opposition::MinMax,
            },
            barlow_weight: p.f64("barlow_weight")?,
            off_diagonal: p.f64("barlow_off_diagonal")?,
            barlow_head: match p.str("barlow_features")? {
                "logits" => ModelHead::Classifier,
                _ => ModelHead::Encoder,
            },
            attacker: AttackerSettings {
                lr: p.f64("attacker_lr")?,
                sgd: SgdConfig {
                    momentum: p.f64("attacker_momentum")?,
                    weight_decay: p.f64("attacker_weight_decay")?,
                },
                pretrain_steps: count("attacker_pretrain_steps")?,
                steps_per_iteration: count("attacker_steps")?.max(1),
                draws: count("sensitivity_draws")?.max(1),
                noise: p.f64("sensitivity_noise")?,
            },
            forgetting: match p.str("mode")? {
                "sample" => Some(false),
                "class" => Some(true),
                _ => None,
            },
            attacker_label: match p.str("attacker_label")? {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            },
            class_lambda_off_after: count("class_lambda_off_after")?,
            clip_grad_norm: p.f64("clip_grad_norm")?,
            non_members: match p.str("non_members")? {
                "test" => Split::Test,
                _ => Split::Validation,
            },
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let prep = prepare(ctx, self.seed, &Prune::NONE)?;
        let ModelKind::Classifier { classes } = prep.kind else {
            return Err(PluginError::msg(
                "Discriminative Adversarial Unlearning needs a classifier (its attacker reads \
                 softmax outputs); the model is an encoder",
            ));
        };
        if ctx.data_len(self.non_members)?.unwrap_or(0) == 0 {
            return Err(PluginError::msg(format!(
                "the attacker needs non-member samples, but the job's {:?} split is empty; \
                 choose the other split with `non_members`",
                self.non_members
            )));
        }
        let bs = self.optim.batch_size;
        let iterations = steps_per_epoch(ctx, Split::Forget, bs, self.max_batches)?;
        let epochs = self.optim.epochs;
        let mut progress = EpochProgress::new(epochs, iterations);
        let class_forgetting = match self.forgetting {
            Some(c) => c,
            None => {
                progress.phase(ctx, "reading the labels of the forget and retain sets")?;
                matches!(forgetting::detect(ctx)?, Forgetting::Class(_))
            }
        };
        let objective = prep.objective(&Training {
            augment: false,
            temperature: 0.5,
            max_batches: 0,
        });
        progress.phase(ctx, "measuring the forget set before unlearning")?;
        let before = evaluate(ctx, &objective, Split::Forget, bs, 0)?;
        let device = ctx.model_device()?;
        let labels = self.attacker_label.unwrap_or(!class_forgetting);
        let mut game = Game {
            attacker: Attacker::new(classes, device),
            settings: self.attacker,
            labels,
            forget: Cycle::new(Split::Forget, bs),
            non_members: Cycle::new(self.non_members, bs),
        };
        let mut attacker_sgd = Sgd::new(game.attacker.parameters(), self.attacker.sgd);

        let mut pre = Running::default();
        if self.attacker.pretrain_steps > 0 {
            let mut ticker = progress.phase_ticker(
                ctx,
                "pre-training the attacker",
                "step",
                Some(self.attacker.pretrain_steps),
            )?;
            for _ in 0..self.attacker.pretrain_steps {
                ctx.check_cancelled()?;
                pre.add(game.attacker_step(ctx, &mut attacker_sgd)?);
                ticker.tick(ctx);
            }
            progress.report_metrics(
                ctx,
                "attacker pre-trained",
                &json!({"attacker_pretrain_loss": pre.loss(), "attacker_pretrain_acc": pre.acc()}),
            );
        }

        let mut trainer = DefenderOptim::new(
            prep.params,
            prep.masks,
            &self.optim,
            self.optim.epochs.saturating_mul(iterations),
            self.clip_grad_norm,
        )?;
        let mut retain = Cycle::new(Split::Retain, bs);
        let mut iteration = 0usize;
        for _ in 0..epochs {
            let lr = trainer.lr();
            let mut att = Running::default();
            let mut def = DefenderSums::default();
            let mut lambda = self.lambda;
            for _ in 0..iterations {
                ctx.check_cancelled()?;
                for _ in 0..self.attacker.steps_per_iteration {
                    att.add(game.attacker_step(ctx, &mut attacker_sgd)?);
                }
                lambda = lambda_at(
                    self.lambda,
                    iteration,
                    class_forgetting,
                    self.class_lambda_off_after,
                );
                let (xr, yr) = retain.next_batch(ctx)?;
                let terms = game.defender_terms(ctx, &xr, &yr, self, lambda > 0.0)?;
                let loss = defender_loss(
                    &terms.retain_ce,
                    &terms.attack,
                    &terms.barlow,
                    lambda,
                    self.barlow_weight,
                    self.opposition,
                )?;
                let norm = trainer.step(&loss)?;
                def.add(&terms, &loss, norm)?;
                iteration += 1;
                progress.step(ctx);
            }
            let mut m = def.report();
            if let Value::Object(o) = &mut m {
                o.insert("attacker_loss".into(), json!(att.loss()));
                o.insert("attacker_acc".into(), json!(att.acc()));
                o.insert("lambda".into(), json!(lambda));
                o.insert("lr".into(), json!(lr));
            }
            progress.end_epoch(ctx, m);
        }
        progress.phase(ctx, "measuring the attacker after unlearning")?;
        let mut last = Running::default();
        for _ in 0..4 {
            let (x, members) = game.membership_batch(ctx, false)?;
            let logits = tch::no_grad(|| game.attacker.forward(&x, false))?;
            last.add(score(&logits, &members)?);
        }
        finish(
            ctx,
            &objective,
            bs,
            &before,
            json!({
                "method": "dau",
                "forgetting": if class_forgetting { "class" } else { "sample" },
                "attacker_label": labels,
                "iterations": iteration,
                "lambda": self.lambda,
                "barlow_weight": self.barlow_weight,
                "opposition": match self.opposition { Opposition::MinMax => "minmax", Opposition::Flipped => "flipped" },
                "non_member_split": format!("{:?}", self.non_members).to_lowercase(),
                "attacker_final_acc": last.acc(),
                "attacker_final_loss": last.loss(),
            }),
        )
    }
}

/// The attacker with its data streams.
struct Game {
    attacker: Attacker,
    settings: AttackerSettings,
    /// Whether the attacker's inputs carry the one-hot label.
    labels: bool,
    forget: Cycle,
    non_members: Cycle,
}

/// The defender's terms on one iteration, before weighting.
struct DefenderTerms {
    retain_ce: Tensor,
    attack: Tensor,
    barlow: Tensor,
    attacker_acc: f64,
}

fn rows(t: &Tensor) -> i64 {
    t.size().first().copied().unwrap_or(0)
}

/// `(loss, accuracy)` of the attacker on a membership batch.
fn score(logits: &Tensor, members: &Tensor) -> Result<(f64, f64), PluginError> {
    let loss = membership_loss(logits, members)?.f_double_value(&[])?;
    let acc = logits
        .f_argmax(-1, false)?
        .f_eq_tensor(&members.f_to_kind(DType::Int64)?)?
        .f_to_kind(DType::Float)?
        .f_mean(DType::Float)?
        .f_double_value(&[])?;
    Ok((loss, acc))
}

impl Game {
    /// The attacker's inputs for `(x, y)`: differentiable into the model when it is
    /// in train mode.
    fn inputs(&self, ctx: &mut HostContext, x: &Tensor, y: &Tensor) -> Result<Tensor, PluginError> {
        let y = self.labels.then_some(y);
        transformer::inputs(ctx, x, y, self.settings.draws, self.settings.noise)
    }

    /// Equal numbers of forget (member) and non-member samples: their attack
    /// inputs and membership labels. `train`: the model's mode for the queries.
    fn membership_batch(
        &mut self,
        ctx: &mut HostContext,
        train: bool,
    ) -> Result<(Tensor, Tensor), PluginError> {
        let ((xf, yf), (xv, yv)) = (
            self.forget.next_batch(ctx)?,
            self.non_members.next_batch(ctx)?,
        );
        let n = rows(&xf).min(rows(&xv));
        ctx.model_set_train(train)?;
        let f = self.inputs(ctx, &xf.f_narrow(0, 0, n)?, &yf.f_narrow(0, 0, n)?)?;
        let v = self.inputs(ctx, &xv.f_narrow(0, 0, n)?, &yv.f_narrow(0, 0, n)?)?;
        let members = Tensor::f_cat(
            &[
                Tensor::f_ones([n], (DType::Bool, f.device()))?,
                Tensor::f_zeros([n], (DType::Bool, f.device()))?,
            ],
            0,
        )?;
        Ok((Tensor::f_cat(&[f, v], 0)?, members))
    }

    /// One attacker update on the model's current (eval-mode, detached) outputs.
    fn attacker_step(
        &mut self,
        ctx: &mut HostContext,
        sgd: &mut Sgd,
    ) -> Result<(f64, f64), PluginError> {
        ctx.check_cancelled()?;
        // The attacker learns from the model's outputs as they are: recording no
        // graph through the model saves its memory and time.
        let (x, members) = tch::no_grad(|| self.membership_batch(ctx, false))?;
        sgd.zero_grad()?;
        let logits = self.attacker.forward(&x, true)?;
        let loss = membership_loss(&logits, &members)?;
        loss.f_backward()?;
        sgd.step(self.settings.lr)?;
        score(&logits.f_detach()?, &members)
    }

    /// The defender's terms: retain cross-entropy, the attacker term and the
    /// Barlow-Twins regulariser, all differentiable into the model.
    fn defender_terms(
        &mut self,
        ctx: &mut HostContext,
        xr: &Tensor,
        yr: &Tensor,
        dau: &Dau,
        adversarial: bool,
    ) -> Result<DefenderTerms, PluginError> {
        ctx.check_cancelled()?;
        ctx.model_set_train(true)?;
        let retain_ce = cross_entropy(&ctx.model_forward(ModelHead::Classifier, xr)?, yr)?;
        let ((xf, yf), (xv, yv)) = (
            self.forget.next_batch(ctx)?,
            self.non_members.next_batch(ctx)?,
        );
        let n = rows(&xf).min(rows(&xv));
        let (xf, yf) = (xf.f_narrow(0, 0, n)?, yf.f_narrow(0, 0, n)?);
        let (xv, yv) = (xv.f_narrow(0, 0, n)?, yv.f_narrow(0, 0, n)?);
        // With λ = 0 the attacker term only informs the report: no graph.
        let guard = (!adversarial).then(tch::no_grad_guard);
        let f = self.inputs(ctx, &xf, &yf)?;
        ctx.check_cancelled()?;
        let v = self.inputs(ctx, &xv, &yv)?;
        let device = f.device();
        let (attack, attacker_acc) = match dau.opposition {
            Opposition::MinMax => {
                let members = Tensor::f_cat(
                    &[
                        Tensor::f_ones([n], (DType::Bool, device))?,
                        Tensor::f_zeros([n], (DType::Bool, device))?,
                    ],
                    0,
                )?;
                let logits = self
                    .attacker
                    .forward(&Tensor::f_cat(&[&f, &v], 0)?, false)?;
                let acc = score(&logits.f_detach()?, &members)?.1;
                (membership_loss(&logits, &members)?, acc)
            }
            Opposition::Flipped => {
                let non = Tensor::f_zeros([n], (DType::Bool, device))?;
                let logits = self.attacker.forward(&f, false)?;
                let acc = 1.0 - score(&logits.f_detach()?, &non)?.1;
                (membership_loss(&logits, &non)?, acc)
            }
        };
        drop(guard);
        let barlow = if dau.barlow_weight > 0.0 {
            barlow_twins(
                &ctx.model_forward(dau.barlow_head, &xf)?,
                &ctx.model_forward(dau.barlow_head, &xv)?,
                dau.off_diagonal,
            )?
        } else {
            Tensor::from(0.0f32).f_to_device(device)?
        };
        Ok(DefenderTerms {
            retain_ce,
            attack,
            barlow,
            attacker_acc,
        })
    }
}

#[derive(Default)]
struct Running {
    n: usize,
    loss: f64,
    acc: f64,
}

impl Running {
    fn add(&mut self, (loss, acc): (f64, f64)) {
        self.n += 1;
        self.loss += loss;
        self.acc += acc;
    }
    fn loss(&self) -> f64 {
        self.loss / self.n.max(1) as f64
    }
    fn acc(&self) -> f64 {
        self.acc / self.n.max(1) as f64
    }
}

#[derive(Default)]
struct DefenderSums {
    n: usize,
    grad_norm: f64,
    loss: f64,
    retain_ce: f64,
    attack: f64,
    barlow: f64,
    attacker_acc: f64,
}

impl DefenderSums {
    fn add(&mut self, t: &DefenderTerms, loss: &Tensor, grad_norm: f64) -> Result<(), PluginError> {
        self.n += 1;
        self.grad_norm += grad_norm;
        self.loss += loss.f_double_value(&[])?;
        self.retain_ce += t.retain_ce.f_double_value(&[])?;
        self.attack += t.attack.f_double_value(&[])?;
        self.barlow += t.barlow.f_double_value(&[])?;
        self.attacker_acc += t.attacker_acc;
        Ok(())
    }

    fn report(&self) -> Value {
        let n = self.n.max(1) as f64;
        json!({
            "loss": self.loss / n,
            "retain_ce": self.retain_ce / n,
            "attack_term": self.attack / n,
            "barlow_twins": self.barlow / n,
            "attacker_acc_vs_defender": self.attacker_acc / n,
            "iterations": self.n,
            "grad_norm": self.grad_norm / n,
        })
    }
}

lethe_plugin_api::declare_plugin!(Dau);
