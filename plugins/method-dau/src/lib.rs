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
use lethe_plugin_api::tch::{self, Device, Kind as DType, Tensor};
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

/// How the attacker's weights are drawn before pre-training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackerInit {
    /// Yuan and Zhang's code: Xavier-normal Linear weights, zero biases, norms at
    /// 1 ([`Attacker::reference_init`]); the paper keeps their attacker's
    /// configuration.
    Reference,
    /// tch's defaults (batch-norm scales U(0, 1), Kaiming-uniform Linear
    /// weights): Lethe's attacker before issue 18 item 6, for comparing runs.
    Tch,
}

/// The model's mode (train: batch statistics in BatchNorm, dropout on) when the
/// attacker's inputs and the Barlow-Twins features are computed from the forget
/// and non-member batches. The retain cross-entropy always trains in train mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMode {
    /// Attacker and defender both see the eval-mode model: the model that is
    /// queried after unlearning, and the mode Yuan and Zhang's attack queries its
    /// target in. The defender's gradient still reaches every weight (BatchNorm's
    /// affine ones included) through the running statistics.
    Eval,
    /// Lethe before issue 18 item 6: the attacker learns on eval-mode outputs,
    /// the defender is penalised through train-mode BatchNorm, which normalises
    /// each single-source batch (forget only, non-members only) by its own
    /// statistics, so the outputs it is penalised on are not the ones the
    /// attacker was trained to read, and forget batches move the running
    /// statistics. Also the reading of Yuan and Zhang's own
    /// adversarial-regularisation defence (`train_defend_adv`: attacker against
    /// `model.eval()`, model penalised in `model.train()`).
    Mixed,
}

impl ModelMode {
    /// The model's mode (true: train) for the attacker's own updates and its
    /// final measurement.
    pub fn attacker_train(self) -> bool {
        false
    }

    /// The model's mode for the defender's attacker term and Barlow-Twins term.
    pub fn defender_train(self) -> bool {
        matches!(self, ModelMode::Mixed)
    }

    fn name(self) -> &'static str {
        match self {
            ModelMode::Eval => "eval",
            ModelMode::Mixed => "mixed",
        }
    }
}

/// The model as the game queries it: the host's model in a run, a stand-alone
/// `tch` model in unit tests.
pub trait Target {
    /// Puts the model in train (`true`) or eval mode.
    fn set_train(&mut self, train: bool) -> Result<(), PluginError>;
    /// The model's output `head` for `x`.
    fn forward(&mut self, head: ModelHead, x: &Tensor) -> Result<Tensor, PluginError>;
}

impl Target for HostContext {
    fn set_train(&mut self, train: bool) -> Result<(), PluginError> {
        self.model_set_train(train)
    }
    fn forward(&mut self, head: ModelHead, x: &Tensor) -> Result<Tensor, PluginError> {
        self.model_forward(head, x)
    }
}

/// How attacker and defender look at the model: the mode of each, and what
/// goes into the attacker's inputs.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// The model's mode for each side.
    pub mode: ModelMode,
    /// Whether the attacker's inputs carry the one-hot label.
    pub labels: bool,
    /// Sensitivity draws m.
    pub draws: usize,
    /// Sensitivity noise ε.
    pub noise: f64,
}

impl View {
    fn inputs<T: Target>(
        &self,
        model: &mut T,
        train: bool,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        model.set_train(train)?;
        let y = self.labels.then_some(y);
        transformer::inputs_from(
            |b| model.forward(ModelHead::Classifier, b),
            x,
            y,
            self.draws,
            self.noise,
        )
    }

    /// The attacker's inputs for `(x, y)` as the attacker learns from them.
    pub fn for_attacker<T: Target>(
        &self,
        model: &mut T,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        self.inputs(model, self.mode.attacker_train(), x, y)
    }

    /// The attacker's inputs for `(x, y)` as the defender is penalised through
    /// them (differentiable into the model unless under `no_grad`).
    pub fn for_defender<T: Target>(
        &self,
        model: &mut T,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, PluginError> {
        self.inputs(model, self.mode.defender_train(), x, y)
    }

    /// The model's `head` output for the defender's Barlow-Twins term, in the
    /// defender's mode.
    pub fn defender_features<T: Target>(
        &self,
        model: &mut T,
        head: ModelHead,
        x: &Tensor,
    ) -> Result<Tensor, PluginError> {
        model.set_train(self.mode.defender_train())?;
        model.forward(head, x)
    }
}

/// The attacker's optimiser and schedule.
#[derive(Debug, Clone, Copy)]
struct AttackerSettings {
    init: AttackerInit,
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
    model_mode: ModelMode,
}

impl Dau {
    /// A fresh attacker for a `classes`-way model, initialised as
    /// `attacker_init` says.
    pub fn new_attacker(&self, classes: i64, device: Device) -> Result<Attacker, PluginError> {
        match self.attacker.init {
            AttackerInit::Reference => Attacker::with_reference_init(classes, device),
            AttackerInit::Tch => Ok(Attacker::new(classes, device)),
        }
    }

    /// The attacker's SGD over `attacker`'s parameters and its learning rate.
    pub fn attacker_optimiser(&self, attacker: &Attacker) -> (Sgd, f64) {
        (
            Sgd::new(attacker.parameters(), self.attacker.sgd),
            self.attacker.lr,
        )
    }

    /// How attacker and defender see the model; `labels`: whether the
    /// attacker's inputs carry the one-hot label.
    pub fn view(&self, labels: bool) -> View {
        View {
            mode: self.model_mode,
            labels,
            draws: self.attacker.draws,
            noise: self.attacker.noise,
        }
    }
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
             and 4 forgot it with retain accuracy ≥ 0.99. The attacker is initialised and \
             trained as Yuan and Zhang's code (Xavier init, SGD lr 1e-3, momentum 0.9, \
             weight decay 5e-4), and attacker and defender see the model in the same mode \
             (eval; `model_mode = mixed` gives Lethe's earlier train-mode defender). \
             Fidelity: FIDELITY.md, row DAU.",
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
            ParamSpec::float("attacker_lr", "Attacker learning rate", 1e-7, 10.0, 1e-3)
                .log_scale()
                .group("Attacker")
                .help("SGD rate of the attacker; 1e-3 as Yuan and Zhang's code (Lethe used 1e-2 before)."),
        )
        .param(
            ParamSpec::choice("attacker_init", "Attacker initialisation", &["reference", "tch"], "reference")
                .group("Attacker")
                .help(
                    "reference: Yuan and Zhang's weight_init (Xavier-normal Linear weights, zero \
                     biases, norm scales 1), whose configuration the paper keeps; tch: tch's \
                     defaults (batch-norm scales U(0, 1), larger Kaiming-uniform weights), \
                     Lethe's attacker before, which trains more slowly.",
                ),
        )
        .param(
            ParamSpec::choice("model_mode", "Model mode of the game", &["eval", "mixed"], "eval")
                .group("Attacker")
                .help(
                    "The model's mode when the attacker's inputs and the Barlow-Twins features \
                     are computed on forget and non-member batches (the retain loss always \
                     trains in train mode). eval: attacker and defender both see the eval-mode \
                     model, the one queried after unlearning and the mode Yuan and Zhang's \
                     attack queries its target in; the gradient still reaches every weight. \
                     mixed: Lethe before: the attacker learns on eval-mode outputs while the \
                     defender is penalised through train-mode BatchNorm, which normalises each \
                     forget-only or non-member-only batch by its own statistics (so the \
                     penalised outputs are not those the attacker reads) and lets forget \
                     batches move the running statistics (as Yuan and Zhang's own \
                     adversarial-regularisation defence does). Same for models without BatchNorm \
                     or dropout.",
                ),
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
                init: match p.str("attacker_init")? {
                    "tch" => AttackerInit::Tch,
                    _ => AttackerInit::Reference,
                },
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
            model_mode: match p.str("model_mode")? {
                "mixed" => ModelMode::Mixed,
                _ => ModelMode::Eval,
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
            attacker: self.new_attacker(classes, device)?,
            view: self.view(labels),
            forget: Cycle::new(Split::Forget, bs),
            non_members: Cycle::new(self.non_members, bs),
        };
        let (mut attacker_sgd, attacker_lr) = self.attacker_optimiser(&game.attacker);

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
                pre.add(game.attacker_step(ctx, &mut attacker_sgd, attacker_lr)?);
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
                    att.add(game.attacker_step(ctx, &mut attacker_sgd, attacker_lr)?);
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
            let (x, members) = game.membership_batch(ctx)?;
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
                "attacker_init": match self.attacker.init {
                    AttackerInit::Reference => "reference",
                    AttackerInit::Tch => "tch",
                },
                "attacker_lr": attacker_lr,
                "model_mode": self.model_mode.name(),
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
    view: View,
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
    /// Equal numbers of forget (member) and non-member samples: their attack
    /// inputs as the attacker sees them, and membership labels.
    fn membership_batch(&mut self, ctx: &mut HostContext) -> Result<(Tensor, Tensor), PluginError> {
        let ((xf, yf), (xv, yv)) = (
            self.forget.next_batch(ctx)?,
            self.non_members.next_batch(ctx)?,
        );
        let n = rows(&xf).min(rows(&xv));
        let f = self
            .view
            .for_attacker(ctx, &xf.f_narrow(0, 0, n)?, &yf.f_narrow(0, 0, n)?)?;
        let v = self
            .view
            .for_attacker(ctx, &xv.f_narrow(0, 0, n)?, &yv.f_narrow(0, 0, n)?)?;
        let members = Tensor::f_cat(
            &[
                Tensor::f_ones([n], (DType::Bool, f.device()))?,
                Tensor::f_zeros([n], (DType::Bool, f.device()))?,
            ],
            0,
        )?;
        Ok((Tensor::f_cat(&[f, v], 0)?, members))
    }

    /// One attacker update on the model's current (detached) outputs.
    fn attacker_step(
        &mut self,
        ctx: &mut HostContext,
        sgd: &mut Sgd,
        lr: f64,
    ) -> Result<(f64, f64), PluginError> {
        ctx.check_cancelled()?;
        // The attacker learns from the model's outputs as they are: recording no
        // graph through the model saves its memory and time.
        let (x, members) = tch::no_grad(|| self.membership_batch(ctx))?;
        attacker_update(&self.attacker, sgd, lr, &x, &members)
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
        // Retain cross-entropy trains as any fine-tuning step does (train mode);
        // the forget and non-member passes below use the defender's mode of the
        // view, the same as the attacker's by default.
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
        let f = self.view.for_defender(ctx, &xf, &yf)?;
        ctx.check_cancelled()?;
        let v = self.view.for_defender(ctx, &xv, &yv)?;
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
                &self.view.defender_features(ctx, dau.barlow_head, &xf)?,
                &self.view.defender_features(ctx, dau.barlow_head, &xv)?,
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

/// One SGD step of `attacker` at rate `lr` on membership inputs `x` with labels
/// `members` (attacker in train mode: its dropout and BatchNorm on). Returns
/// `(loss, accuracy)` on the batch before the step.
pub fn attacker_update(
    attacker: &Attacker,
    sgd: &mut Sgd,
    lr: f64,
    x: &Tensor,
    members: &Tensor,
) -> Result<(f64, f64), PluginError> {
    sgd.zero_grad()?;
    let logits = attacker.forward(x, true)?;
    let loss = membership_loss(&logits, members)?;
    loss.f_backward()?;
    sgd.step(lr)?;
    score(&logits.f_detach()?, members)
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

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_plugin_api::tch::nn::{self, Module, ModuleT};

    fn with(overrides: Value) -> Dau {
        let mut values = Dau::descriptor().schema.defaults();
        if let Value::Object(o) = overrides {
            values.extend(o);
        }
        Dau::create(&Params::from_map(values)).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(DType::Double).flatten(0, -1)).unwrap()
    }

    /// Yuan and Zhang's `weight_init`, by default: the same draws as the kit's
    /// reference initialisation for the same seed, and its formula (zero biases,
    /// norm scales 1, Xavier-normal std √(2/(fan_in + fan_out)) on the large
    /// Linear weights). tch's defaults (the old attacker) fail all three.
    #[test]
    fn the_attacker_starts_from_the_reference_initialisation() {
        let dau = with(json!({}));
        tch::manual_seed(1);
        let a = dau.new_attacker(10, Device::Cpu).unwrap();
        tch::manual_seed(1);
        let r = Attacker::with_reference_init(10, Device::Cpu).unwrap();
        let (ours, theirs) = (a.variables(), r.variables());
        assert_eq!(ours.len(), theirs.len());
        for ((n, t), (m, u)) in ours.iter().zip(&theirs) {
            assert_eq!(n, m);
            assert!(t.equal(u), "{n} differs from the reference initialisation");
        }
        let mut xavier = 0;
        for (name, t) in &ours {
            if name.contains("running_") || name.ends_with("num_batches_tracked") {
                continue;
            }
            let v = values(t);
            if name.ends_with(".bias") {
                assert!(v.iter().all(|x| *x == 0.0), "{name}: {v:?}");
            } else if name == "bn.weight" || name.contains(".norm") {
                assert!(v.iter().all(|x| *x == 1.0), "{name}: {v:?}");
            } else if ["fc1.weight", "linear1.weight", "linear2.weight"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                let size = t.size();
                let want = (2.0 / (size[0] + size[1]) as f64).sqrt();
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                // ≥ 8192 draws: the sample std is within 5 % of the truth with
                // overwhelming probability; Kaiming-uniform's is √(1/(3·fan_in)).
                assert!(
                    (std / want - 1.0).abs() < 0.05,
                    "{name}: std {std} vs {want}"
                );
                xavier += 1;
            }
        }
        assert_eq!(xavier, 7, "fc1 and linear1/2 of three layers");
        // The documented alternative still gives tch's defaults.
        tch::manual_seed(1);
        let old = with(json!({"attacker_init": "tch"}))
            .new_attacker(10, Device::Cpu)
            .unwrap();
        let bias = old
            .variables()
            .into_iter()
            .find(|(n, _)| n == "fc1.bias")
            .unwrap()
            .1;
        assert!(values(&bias).iter().any(|x| *x != 0.0));
    }

    /// The attacker's SGD runs at Yuan and Zhang's rate 1e-3 (momentum 0.9,
    /// weight decay 5e-4): one update moves every parameter by exactly
    /// `−1e-3·(g + 5e-4·w)` (the first momentum buffer is the step itself).
    #[test]
    fn the_attacker_learns_at_the_reference_rate() {
        let dau = with(json!({}));
        tch::manual_seed(2);
        let a = dau.new_attacker(3, Device::Cpu).unwrap();
        let (mut sgd, lr) = dau.attacker_optimiser(&a);
        let x = Tensor::randn([6, 9], (DType::Float, Device::Cpu));
        let members = Tensor::from_slice(&[true, true, true, false, false, false]);
        // The gradient at the current weights, with the dropout draw the update
        // will make.
        tch::manual_seed(5);
        membership_loss(&a.forward(&x, true).unwrap(), &members)
            .unwrap()
            .backward();
        let before: Vec<(String, Vec<f64>, Vec<f64>)> = a
            .parameters()
            .into_iter()
            .map(|(n, t)| (n, values(&t), values(&t.grad())))
            .collect();
        for (_, t) in a.parameters() {
            let _ = t.grad().zero_();
        }
        tch::manual_seed(5);
        attacker_update(&a, &mut sgd, lr, &x, &members).unwrap();
        let mut moved = 0;
        for ((name, w, g), (_, t)) in before.iter().zip(a.parameters()) {
            for ((w, g), now) in w.iter().zip(g).zip(values(&t)) {
                let want = w - 1e-3 * (g + 5e-4 * w);
                assert!(
                    (now - want).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{name}: {w} -> {now}, want {want} (rate {lr})"
                );
                moved += usize::from(now != *w);
            }
        }
        assert!(moved > 100, "{moved}");
        assert_eq!(lr, 1e-3);
    }

    /// A classifier with BatchNorm, standing in for the host's model.
    struct BnModel {
        _vs: nn::VarStore,
        first: nn::Linear,
        bn: nn::BatchNorm,
        head: nn::Linear,
        train: bool,
    }

    impl BnModel {
        fn new() -> Self {
            let vs = nn::VarStore::new(Device::Cpu);
            let root = vs.root();
            BnModel {
                first: nn::linear(&root / "first", 4, 6, Default::default()),
                bn: nn::batch_norm1d(&root / "bn", 6, Default::default()),
                head: nn::linear(&root / "head", 6, 3, Default::default()),
                _vs: vs,
                train: true,
            }
        }
    }

    impl Target for BnModel {
        fn set_train(&mut self, train: bool) -> Result<(), PluginError> {
            self.train = train;
            Ok(())
        }
        fn forward(&mut self, head: ModelHead, x: &Tensor) -> Result<Tensor, PluginError> {
            let z = self.bn.forward_t(&self.first.forward(x), self.train).relu();
            Ok(match head {
                ModelHead::Classifier => self.head.forward(&z),
                _ => z,
            })
        }
    }

    /// By default the defender is penalised on exactly the outputs the attacker
    /// learns from: with a BatchNorm model and a single-source batch (forget
    /// samples only, as the game feeds them), the defender's attacker inputs and
    /// Barlow features equal the attacker's eval-mode view of the same batch,
    /// still carry a gradient into the model, and leave the running statistics
    /// alone. The old behaviour (`mixed`: defender through train-mode BatchNorm)
    /// gives different outputs and moves the statistics.
    #[test]
    fn attacker_and_defender_see_the_model_in_the_same_mode() {
        tch::manual_seed(4);
        let mut model = BnModel::new();
        // Running statistics far from any one batch's, so the modes differ.
        for _ in 0..20 {
            let x = Tensor::randn([32, 4], (DType::Float, Device::Cpu)) * 3.0 - 1.0;
            let _ = tch::no_grad(|| model.forward(ModelHead::Classifier, &x));
        }
        let x = Tensor::randn([8, 4], (DType::Float, Device::Cpu)) + 2.0;
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        let stats = |m: &BnModel| m.bn.running_mean.copy();

        let sides = |dau: &Dau, model: &mut BnModel| {
            let view = dau.view(true);
            tch::manual_seed(9);
            let attacker = tch::no_grad(|| view.for_attacker(model, &x, &y)).unwrap();
            let stats_before = stats(model);
            tch::manual_seed(9);
            let defender = view.for_defender(model, &x, &y).unwrap();
            let features = view
                .defender_features(model, ModelHead::Encoder, &x)
                .unwrap();
            let moved = !stats(model).equal(&stats_before);
            (view, attacker, defender, features, moved)
        };

        let (view, attacker, defender, features, moved) = sides(&with(json!({})), &mut model);
        let gap = (&defender - &attacker).abs().max().double_value(&[]);
        assert!(
            gap < 1e-6,
            "defender's view differs from the attacker's by {gap}"
        );
        assert!(!moved, "the defender's passes moved the running statistics");
        model.set_train(false).unwrap();
        let eval_features = tch::no_grad(|| model.forward(ModelHead::Encoder, &x)).unwrap();
        assert!(features.allclose(&eval_features, 1e-6, 1e-6, false));
        assert_eq!(view.mode, ModelMode::Eval);
        // The penalty still reaches the weights, BatchNorm's affine ones included.
        defender.sum(DType::Float).backward();
        for w in [&model.first.ws, model.bn.ws.as_ref().unwrap()] {
            assert!(w.grad().abs().sum(DType::Float).double_value(&[]) > 0.0);
        }

        let (_, attacker, defender, _, moved) =
            sides(&with(json!({"model_mode": "mixed"})), &mut model);
        let gap = (&defender - &attacker).abs().max().double_value(&[]);
        assert!(gap > 1e-3, "mixed mode should differ, gap {gap}");
        assert!(moved);
    }
}
