//! Test plugin for the plugin-host tests (engine/tests/plugin_host.rs):
//!
//! * `org.lethe.test.progress` (method): minimises `w²` or `|w|` from `w = 1` by
//!   gradient descent with real libtorch tensors, logging and reporting progress
//!   with the loss as a metric every step, and stopping on cancellation;
//! * `org.lethe.test.panic` (method): panics in `create` or `run`, to prove the
//!   boundary turns a panic into a status;
//! * `org.lethe.test.fail` (attack): logs its required `reference` checkpoint
//!   path (which `lethe plugins check` can supply) and returns an error naming
//!   its required `target` path (which it cannot);
//! * `org.lethe.test.tensors` (method): one step of gradient ascent on the forget
//!   split through the host's model, data and result extensions, so tensors cross
//!   the boundary both ways and parameters are updated in place;
//! * `org.lethe.test.misbehave` (method): what no status code can catch, for the
//!   worker tests (engine/tests/worker_*.rs): segfaults, aborts, hangs ignoring
//!   cancellation, exits early, prints junk to stdout, works slowly while
//!   honouring cancellation, or starts a `sleep 60` process of its own (logging
//!   `grandchild PID`) and then hangs (`grandchild`) or returns (`leave_grandchild`),
//!   as its `how` parameter says;
//! * `org.lethe.test.classwise` (method): declares that it applies to classifiers
//!   and whole classes only (`applies_to`), then saves the model unchanged, for
//!   the hosts' greying-out and refusals.
#![deny(missing_docs)]

use lethe_plugin_api::schema::{ModelClass, ParamSpec, PathHolds};
use lethe_plugin_api::sdk::{
    Descriptor, HostContext, Kind, ModelHead, Params, Plugin, PluginError, Split,
};
use lethe_plugin_api::tch::{Kind as DType, Tensor};
use serde_json::json;

/// Gradient descent on a one-weight toy loss, with progress, logs and cancellation.
pub struct ProgressMethod {
    steps: i64,
    lr: f64,
    l1: bool,
    verbose: bool,
}

impl Plugin for ProgressMethod {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.progress",
            "Progress test",
            "1.0.0",
            Kind::Method,
        )
        .description("Minimises a one-weight toy loss, reporting every step.")
        .citation("Lethe test suite.")
        .param(
            ParamSpec::int("steps", "Steps", 1, 50, 4)
                .group("Schedule")
                .help("Gradient steps to take."),
        )
        .param(ParamSpec::float("lr", "Learning rate", 1e-5, 1.0, 0.1).log_scale())
        .param(ParamSpec::choice("loss", "Loss", &["mse", "l1"], "mse"))
        .param(ParamSpec::bool("verbose", "Log every step", true).group("Output"))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(ProgressMethod {
            steps: params.i64("steps")?,
            lr: params.f64("lr")?,
            l1: params.str("loss")? == "l1",
            verbose: params.bool("verbose")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        let (host, version) = ctx.host_name();
        ctx.info(&format!("running on {host} {version}"));
        let mut w = Tensor::f_from_slice(&[1.0f64])?;
        let mut loss = 0.0;
        for step in 0..self.steps {
            ctx.check_cancelled()?;
            let (value, grad) = if self.l1 {
                (w.f_abs()?, w.f_sign()?)
            } else {
                (w.f_mul(&w)?, w.f_mul_scalar(2.0)?)
            };
            loss = value.f_double_value(&[0])?;
            w = w.f_sub(&grad.f_mul_scalar(self.lr)?)?;
            let done = step + 1;
            if self.verbose {
                ctx.info(&format!("step {done}: loss {loss:.6}"));
            }
            ctx.progress_metrics(
                done as f64 / self.steps as f64,
                &format!("step {done}/{}", self.steps),
                &json!({"step": done, "loss": loss}),
            );
        }
        let w = w.f_to_kind(DType::Double)?.f_double_value(&[0])?;
        ctx.info(&format!("done: loss {loss:.6}, w {w:.6}"));
        Ok(())
    }
}

/// Panics where its `when` parameter says.
pub struct PanicMethod;

impl Plugin for PanicMethod {
    fn descriptor() -> Descriptor {
        Descriptor::new("org.lethe.test.panic", "Panic test", "1.0.0", Kind::Method)
            .description("Panics on purpose.")
            .param(ParamSpec::choice(
                "when",
                "When to panic",
                &["create", "run"],
                "run",
            ))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        if params.str("when")? == "create" {
            panic!("deliberate panic in create");
        }
        Ok(PanicMethod)
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.warn("about to panic");
        let steps: Vec<u32> = Vec::new();
        // Index out of bounds: a real bug-shaped panic, not just panic!().
        let _ = steps[3];
        Ok(())
    }
}

/// An attack that always fails with an error naming its input.
pub struct FailingAttack {
    target: String,
    reference: String,
}

impl Plugin for FailingAttack {
    fn descriptor() -> Descriptor {
        Descriptor::new("org.lethe.test.fail", "Failure test", "0.2.0", Kind::Attack)
            .description("Returns an error on purpose.")
            .param(ParamSpec::path("target", "Target scores", None).help("Required."))
            .param(
                ParamSpec::path("reference", "Reference model", None)
                    .holds(PathHolds::Checkpoint)
                    .help("Required; a checkpoint, so plugins check supplies the demo's."),
            )
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(FailingAttack {
            target: params.path("target")?.display().to_string(),
            reference: params.path("reference")?.display().to_string(),
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.error("giving up");
        ctx.info(&format!("reference: {}", self.reference));
        Err(PluginError::msg(format!(
            "deliberate failure: cannot score {}",
            self.target
        )))
    }
}

/// Sums the classifier output over the forget split, backpropagates, takes one
/// gradient-descent step of size `lr` on every parameter, stores the last batch's
/// output and a JSON summary, and saves the model.
pub struct TensorMethod {
    lr: f64,
}

impl Plugin for TensorMethod {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.tensors",
            "Tensor test",
            "1.0.0",
            Kind::Method,
        )
        .description("One gradient step through the host's model and data.")
        .param(ParamSpec::float("lr", "Learning rate", 0.0, 1.0, 0.5))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(TensorMethod {
            lr: params.f64("lr")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.model_set_train(true)?;
        let device = ctx.model_device()?;
        let mut params = ctx.model_parameters()?;
        let forget = ctx.data_len(Split::Forget)?.unwrap_or(0);
        let (mut seen, mut batches, mut loss_sum) = (0i64, 0, 0.0);
        let mut last = None;
        for batch in ctx.batches(Split::Forget, 2, false, false)? {
            let (x, _labels) = batch?;
            let out = ctx.model_forward(ModelHead::Classifier, &x)?;
            let loss = out.f_sum(DType::Double)?;
            loss.f_backward()?;
            loss_sum += loss.f_double_value(&[])?;
            seen += x.size().first().copied().unwrap_or(0);
            batches += 1;
            last = Some(out.f_detach()?);
        }
        lethe_plugin_api::tch::no_grad(|| -> Result<(), PluginError> {
            for (_, p) in params.iter_mut() {
                let step = p.grad().f_mul_scalar(self.lr)?;
                let _updated_in_place = p.f_sub_(&step)?;
            }
            Ok(())
        })?;
        if let Some(out) = &last {
            ctx.put_tensor("last_output", out)?;
        }
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        ctx.put_json(
            "summary",
            &json!({"forget": forget, "seen": seen, "batches": batches,
                    "loss_sum": loss_sum, "params": names, "device": format!("{device:?}")}),
        )?;
        ctx.save_model()
    }
}

/// Misbehaves in the ways only a separate process survives.
pub struct MisbehaveMethod {
    how: String,
    steps: i64,
}

impl Plugin for MisbehaveMethod {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.misbehave",
            "Misbehaviour test",
            "1.0.0",
            Kind::Method,
        )
        .description("Crashes, hangs or scribbles on stdout on purpose.")
        .param(ParamSpec::choice(
            "how",
            "How to misbehave",
            &[
                "segfault",
                "abort",
                "hang",
                "exit",
                "stdout",
                "slow",
                "grandchild",
                "leave_grandchild",
            ],
            "slow",
        ))
        .param(ParamSpec::int("steps", "Steps (slow, stdout)", 1, 1000, 5))
    }

    fn create(params: &Params) -> Result<Self, PluginError> {
        Ok(MisbehaveMethod {
            how: params.str("how")?.to_string(),
            steps: params.i64("steps")?,
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.info(&format!("misbehaving: {}", self.how));
        match self.how.as_str() {
            "segfault" => {
                // A real invalid access, not raise(SIGSEGV): the runtime's SIGSEGV
                // handler would swallow a raised signal, but a faulting store re-faults
                // under the default action.
                let bad = std::ptr::with_exposed_provenance_mut::<u8>(8);
                // SAFETY: deliberately unsound; the test wants the process to die here.
                unsafe { std::ptr::write_volatile(bad, 1) };
                Ok(())
            }
            "abort" => std::process::abort(),
            "exit" => std::process::exit(3),
            "hang" => loop {
                // Ignores cancellation on purpose.
                std::thread::sleep(std::time::Duration::from_millis(50));
            },
            "grandchild" | "leave_grandchild" => {
                // A process of the plugin's own, left running: it must end with the
                // job (the worker's process group), and must not hold the frame pipes.
                ctx.info(&format!("grandchild {}", start_sleeper()?));
                if self.how == "leave_grandchild" {
                    return Ok(());
                }
                loop {
                    // Ignores cancellation on purpose.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            "stdout" => {
                use std::io::Write;
                let mut out = std::io::stdout();
                // Bytes that look like a frame header, then text: a host that shared
                // stdout with its frames would misread everything after this.
                let _ = out.write_all(&[5, 0, 0, 0]);
                for step in 1..=self.steps {
                    println!("junk on stdout {step}");
                    ctx.progress(step as f64 / self.steps as f64, &format!("step {step}"));
                }
                let _ = out.flush();
                Ok(())
            }
            _ => {
                for step in 1..=self.steps {
                    ctx.check_cancelled()?;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    ctx.progress(step as f64 / self.steps as f64, &format!("step {step}"));
                }
                Ok(())
            }
        }
    }
}

/// Starts `sleep 60` and leaves it running, never waited for: the worker's process
/// group must end it. Returns its pid.
#[allow(clippy::zombie_processes)]
fn start_sleeper() -> Result<u32, PluginError> {
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .map_err(|e| PluginError::msg(format!("cannot start sleep: {e}")))?;
    Ok(child.id())
}

/// Declares classifiers and whole classes only; logs its `note` (a string
/// parameter), optionally works `busy_ms` after a progress report without
/// polling the cancel flag, and saves the model as it is.
pub struct ClasswiseMethod {
    note: String,
    busy_ms: u64,
}

impl Plugin for ClasswiseMethod {
    fn descriptor() -> Descriptor {
        Descriptor::new(
            "org.lethe.test.classwise",
            "Class-wise test",
            "1.0.0",
            Kind::Method,
        )
        .models(&[ModelClass::Classifier], false)
        .whole_classes_only()
        .description("Applies to classifiers and whole classes only; changes nothing.")
        .citation("Lethe test suite.")
        .param(ParamSpec::int("seed", "Seed", 0, 1_000_000, 0))
        .param(ParamSpec::string("note", "Note", Some("")).max_len(40))
        .param(
            ParamSpec::int("busy_ms", "Busy after progress (ms)", 0, 60_000, 0).help(
                "Works this long after its first progress report without polling the cancel flag.",
            ),
        )
    }

    fn create(p: &Params) -> Result<Self, PluginError> {
        Ok(ClasswiseMethod {
            note: p.str("note")?.to_string(),
            busy_ms: u64::try_from(p.i64("busy_ms")?).unwrap_or(0),
        })
    }

    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
        ctx.check_cancelled()?;
        ctx.info(&format!("note: {}", self.note));
        if self.busy_ms > 0 {
            ctx.progress(0.1, "busy");
            std::thread::sleep(std::time::Duration::from_millis(self.busy_ms));
        }
        ctx.save_model()
    }
}

lethe_plugin_api::declare_plugin!(
    ProgressMethod,
    PanicMethod,
    FailingAttack,
    TensorMethod,
    MisbehaveMethod,
    ClasswiseMethod
);
