//! Safe SDK for plugin authors: implement [`Plugin`], list your types in
//! [`declare_plugin!`](crate::declare_plugin), build a `cdylib`. No raw pointers.
//!
//! ```
//! use lethe_plugin_api::sdk::{Descriptor, HostContext, Kind, Params, Plugin, PluginError};
//! use lethe_plugin_api::schema::ParamSpec;
//!
//! struct Shrink { factor: f64, steps: i64 }
//!
//! impl Plugin for Shrink {
//!     fn descriptor() -> Descriptor {
//!         Descriptor::new("org.example.shrink", "Shrink", "0.1.0", Kind::Method)
//!             .description("Scales the classifier down a little every step.")
//!             .citation("Doe et al., Forgetting by shrinking, 2025.")
//!             .param(ParamSpec::float("factor", "Factor", 0.0, 1.0, 0.9).group("Schedule"))
//!             .param(ParamSpec::int("steps", "Steps", 1, 1000, 10).help("How many steps."))
//!     }
//!
//!     fn create(params: &Params) -> Result<Self, PluginError> {
//!         Ok(Shrink { factor: params.f64("factor")?, steps: params.i64("steps")? })
//!     }
//!
//!     fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
//!         for step in 0..self.steps {
//!             ctx.check_cancelled()?;
//!             let fraction = (step + 1) as f64 / self.steps as f64;
//!             ctx.progress_metrics(fraction, "shrinking", &serde_json::json!({"factor": self.factor}));
//!         }
//!         ctx.info("done");
//!         Ok(())
//!     }
//! }
//!
//! lethe_plugin_api::declare_plugin!(Shrink);
//! # fn main() {}
//! ```
//!
//! Every exported function generated for you runs the plugin code inside
//! `catch_unwind`: a panic becomes [`LetheStatus::PANIC`] with the panic message
//! instead of aborting the host (Rust aborts when a panic unwinds out of an
//! `extern "C"` function). Parameters are validated against your schema before
//! [`Plugin::create`] sees them, with defaults filled in.

#[doc(hidden)]
pub mod __export;
#[cfg(feature = "tch")]
mod tensors;

use crate::abi::{self, LetheHost, LetheKind, LetheLogLevel, LetheStatus};
use crate::schema::{AppliesTo, ModelClass, ParamKind, ParamSpec, ParamsError, Schema};
use serde_json::{Map, Value};
use std::ffi::{CStr, CString, c_void};
use std::path::PathBuf;

#[cfg(feature = "tch")]
pub use tensors::Batches;

/// What a plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An unlearning method (listed by the `lethe.factory.method/1` factory).
    Method,
    /// A membership-inference attack (listed by the `lethe.factory.attack/1` factory).
    Attack,
}

impl Kind {
    /// The ABI code.
    pub const fn to_abi(self) -> LetheKind {
        match self {
            Kind::Method => LetheKind::METHOD,
            Kind::Attack => LetheKind::ATTACK,
        }
    }

    /// From the ABI code; `None` for codes this build does not know.
    pub const fn from_abi(kind: LetheKind) -> Option<Kind> {
        match kind.0 {
            1 => Some(Kind::Method),
            2 => Some(Kind::Attack),
            _ => None,
        }
    }
}

/// Static description of a method or attack (the safe form of
/// [`LetheDescriptor`](crate::abi::LetheDescriptor)).
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// Reverse-DNS unique id, e.g. `org.example.gradient-ascent`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Version of the implementation.
    pub version: String,
    /// Method or attack.
    pub kind: Kind,
    /// One-paragraph description.
    pub description: String,
    /// How to cite it.
    pub citation: String,
    /// Its parameters.
    pub schema: Schema,
}

impl Descriptor {
    /// A descriptor with no description, citation or parameters yet.
    pub fn new(id: &str, name: &str, version: &str, kind: Kind) -> Self {
        Descriptor {
            id: id.to_string(),
            name: name.to_string(),
            version: version.to_string(),
            kind,
            description: String::new(),
            citation: String::new(),
            schema: Schema::default(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }

    /// Sets the citation.
    pub fn citation(mut self, text: &str) -> Self {
        self.citation = text.to_string();
        self
    }

    /// Appends a parameter.
    pub fn param(mut self, spec: ParamSpec) -> Self {
        self.schema.params.push(spec);
        self
    }

    /// Declares which models the method runs on (`projection_head`: only models
    /// with one). Hosts grey the method out, with the reason, for other models.
    pub fn models(mut self, models: &[ModelClass], projection_head: bool) -> Self {
        let a = self
            .schema
            .applies_to
            .get_or_insert_with(AppliesTo::default);
        a.models = models.to_vec();
        a.projection_head = projection_head;
        self
    }

    /// Declares that the method forgets whole classes only (class-wise
    /// forgetting): hosts grey it out for a forget set that is not whole classes.
    pub fn whole_classes_only(mut self) -> Self {
        self.schema
            .applies_to
            .get_or_insert_with(AppliesTo::default)
            .whole_classes_only = true;
        self
    }
}

impl ParamSpec {
    fn with_kind(key: &str, label: &str, kind: ParamKind) -> Self {
        ParamSpec {
            key: key.to_string(),
            label: label.to_string(),
            group: String::new(),
            help: String::new(),
            kind,
        }
    }

    /// A float in `[min, max]` with a default, linear scale.
    pub fn float(key: &str, label: &str, min: f64, max: f64, default: f64) -> Self {
        Self::with_kind(
            key,
            label,
            ParamKind::Float {
                min,
                max,
                default,
                log_scale: false,
            },
        )
    }

    /// An integer in `[min, max]` with a default.
    pub fn int(key: &str, label: &str, min: i64, max: i64, default: i64) -> Self {
        Self::with_kind(key, label, ParamKind::Int { min, max, default })
    }

    /// A flag with a default.
    pub fn bool(key: &str, label: &str, default: bool) -> Self {
        Self::with_kind(key, label, ParamKind::Bool { default })
    }

    /// One of `choices`, with a default among them.
    pub fn choice(key: &str, label: &str, choices: &[&str], default: &str) -> Self {
        Self::with_kind(
            key,
            label,
            ParamKind::Choice {
                choices: choices.iter().map(|c| c.to_string()).collect(),
                default: default.to_string(),
            },
        )
    }

    /// A file path, required unless `default` is given.
    pub fn path(key: &str, label: &str, default: Option<&str>) -> Self {
        Self::with_kind(
            key,
            label,
            ParamKind::Path {
                default: default.map(str::to_string),
                directory: false,
                holds: None,
            },
        )
    }

    /// Free text of at most 1024 characters; `default: None` makes it required
    /// (and non-empty). Read it with [`Params::str`].
    pub fn string(key: &str, label: &str, default: Option<&str>) -> Self {
        Self::with_kind(
            key,
            label,
            ParamKind::String {
                default: default.map(str::to_string),
                max_len: 1024,
            },
        )
    }

    /// Sets the longest accepted text of a string parameter (no effect on others).
    pub fn max_len(mut self, max: usize) -> Self {
        if let ParamKind::String { max_len, .. } = &mut self.kind {
            *max_len = max;
        }
        self
    }

    /// Sets the group (form section).
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.to_string();
        self
    }

    /// Sets the help text.
    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_string();
        self
    }

    /// Makes a float parameter log-scaled (no effect on other kinds).
    pub fn log_scale(mut self) -> Self {
        if let ParamKind::Float { log_scale, .. } = &mut self.kind {
            *log_scale = true;
        }
        self
    }

    /// Says what a path parameter's file holds when it is one of Lethe's kinds
    /// (no effect on other kinds; since ABI 1.6): `lethe plugins check` gives a
    /// required one the demo's file of that kind instead of asking for it.
    pub fn holds(mut self, what: crate::schema::PathHolds) -> Self {
        if let ParamKind::Path { holds, .. } = &mut self.kind {
            *holds = Some(what);
        }
        self
    }

    /// Makes a path parameter ask for a folder (no effect on other kinds).
    pub fn directory(mut self) -> Self {
        if let ParamKind::Path { directory, .. } = &mut self.kind {
            *directory = true;
        }
        self
    }
}

/// Parameters after validation against the descriptor's schema: every key of the
/// schema is present with a value of the right type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    values: Map<String, Value>,
}

impl Params {
    /// Wraps an already-validated map.
    pub fn from_map(values: Map<String, Value>) -> Self {
        Params { values }
    }

    /// All values.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.values
    }

    fn get(&self, key: &str, expected: &str) -> Result<&Value, PluginError> {
        self.values.get(key).ok_or_else(|| {
            PluginError::Message(format!(
                "parameter `{key}` ({expected}) is not in this descriptor's schema"
            ))
        })
    }

    fn wrong(key: &str, expected: &str, v: &Value) -> PluginError {
        PluginError::Message(format!("parameter `{key}` is not {expected}: {v}"))
    }

    /// A float (or int) parameter.
    pub fn f64(&self, key: &str) -> Result<f64, PluginError> {
        let v = self.get(key, "a float")?;
        v.as_f64().ok_or_else(|| Self::wrong(key, "a float", v))
    }

    /// An int parameter.
    pub fn i64(&self, key: &str) -> Result<i64, PluginError> {
        let v = self.get(key, "an int")?;
        v.as_i64().ok_or_else(|| Self::wrong(key, "an int", v))
    }

    /// A bool parameter.
    pub fn bool(&self, key: &str) -> Result<bool, PluginError> {
        let v = self.get(key, "a bool")?;
        v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v))
    }

    /// A choice parameter.
    pub fn str(&self, key: &str) -> Result<&str, PluginError> {
        let v = self.get(key, "a string")?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// A path parameter, exactly as the user gave it. A relative path is not
    /// made absolute by the host: it opens relative to the worker process's
    /// current directory (inherited from the `lethe` command or GUI that started
    /// the job), not the project's or the plugin's folder.
    pub fn path(&self, key: &str) -> Result<PathBuf, PluginError> {
        self.str(key).map(PathBuf::from)
    }
}

/// Why a plugin call failed. Converted to a [`LetheStatus`] plus message at the
/// boundary.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Any failure, described for the user.
    #[error("{0}")]
    Message(String),
    /// Parameters that do not fit the schema.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The host asked to stop ([`HostContext::check_cancelled`]).
    #[error("cancelled by the host")]
    Cancelled,
    /// The host does not offer an extension the plugin needs.
    #[error("the host does not offer extension `{0}`")]
    MissingExtension(&'static str),
    /// A host service call failed.
    #[error("host call `{call}` failed ({}): {message}", status.name())]
    Host {
        /// Which call.
        call: &'static str,
        /// The host's status.
        status: LetheStatus,
        /// The host's message.
        message: String,
    },
    /// A call out of order (e.g. `run` twice on one instance).
    #[error("{0}")]
    BadState(String),
    /// A libtorch error inside the plugin.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Tch(#[from] tch::TchError),
}

impl PluginError {
    /// A [`PluginError::Message`].
    pub fn msg(message: impl Into<String>) -> Self {
        PluginError::Message(message.into())
    }

    /// The status code this error crosses the boundary as.
    pub fn status(&self) -> LetheStatus {
        match self {
            PluginError::Params(_) => LetheStatus::INVALID_PARAMS,
            PluginError::Cancelled => LetheStatus::CANCELLED,
            // A host call that stopped because the host cancelled the job (e.g.
            // `lethe.shadow/1` in an estimate run) cancels the run too.
            PluginError::Host { status, .. } if *status == LetheStatus::CANCELLED => {
                LetheStatus::CANCELLED
            }
            PluginError::MissingExtension(_) => LetheStatus::UNSUPPORTED,
            PluginError::BadState(_) => LetheStatus::BAD_STATE,
            _ => LetheStatus::ERROR,
        }
    }
}

/// Log severity for [`HostContext::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Detailed diagnostics.
    Debug,
    /// Normal information.
    Info,
    /// Suspicious but not fatal.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The ABI code.
    pub const fn to_abi(self) -> LetheLogLevel {
        match self {
            LogLevel::Debug => LetheLogLevel::DEBUG,
            LogLevel::Info => LetheLogLevel::INFO,
            LogLevel::Warn => LetheLogLevel::WARN,
            LogLevel::Error => LetheLogLevel::ERROR,
        }
    }

    /// From the ABI code; unknown codes read as `Info`.
    pub const fn from_abi(level: LetheLogLevel) -> LogLevel {
        match level.0 {
            0 => LogLevel::Debug,
            2 => LogLevel::Warn,
            3 => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// Which augmentation `HostContext::augment` (feature `tch`) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Augment {
    /// The recipe the model was trained with (recorded in its checkpoint), else
    /// [`Augment::Light`].
    Training,
    /// The SimCLR/MoCo recipe: crop 0.1–1, flip, colour jitter, grayscale.
    Contrastive,
    /// Crop and flip (crop only for 1-channel images).
    Light,
}

impl Augment {
    /// The ABI code.
    pub const fn to_abi(self) -> abi::LetheAugmentRecipe {
        match self {
            Augment::Training => abi::LetheAugmentRecipe::TRAINING,
            Augment::Contrastive => abi::LetheAugmentRecipe::CONTRASTIVE,
            Augment::Light => abi::LetheAugmentRecipe::LIGHT,
        }
    }
}

/// Which part of the model `HostContext::model_forward` (feature `tch`) runs.
///
/// Input: float32 `[B, C, H, W]` in `[0, 1]` on the model's device, as
/// `HostContext::batches` yields it; the host does not normalise or convert it.
/// A head the model lacks fails with [`LetheStatus::UNSUPPORTED`]; declare what
/// the method needs with [`Descriptor::models`] instead of trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelHead {
    /// Backbone features `[B, D]`, on every model: for a classifier the input of
    /// its `fc` layer, for an encoder the input of its projection head (if any).
    Encoder,
    /// Class logits `[B, num_classes]` (no softmax). Classifiers only; an
    /// encoder fails with `UNSUPPORTED`.
    Classifier,
    /// The projection head's output `[B, out_dim]`, not L2-normalised. Encoders
    /// with a projection head only; a classifier or a bare backbone fails with
    /// `UNSUPPORTED`.
    Projection,
}

impl ModelHead {
    /// The ABI code.
    pub const fn to_abi(self) -> abi::LetheModelHead {
        match self {
            ModelHead::Encoder => abi::LetheModelHead::ENCODER,
            ModelHead::Classifier => abi::LetheModelHead::CLASSIFIER,
            ModelHead::Projection => abi::LetheModelHead::PROJECTION,
        }
    }
}

/// A data split of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Examples to forget.
    Forget,
    /// Training examples to keep.
    Retain,
    /// Validation examples.
    Validation,
    /// Test examples.
    Test,
}

impl Split {
    /// Lower-case name, as in `lethe.shadow/1` requests.
    pub const fn name(self) -> &'static str {
        match self {
            Split::Forget => "forget",
            Split::Retain => "retain",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// The ABI code.
    pub const fn to_abi(self) -> abi::LetheSplit {
        match self {
            Split::Forget => abi::LetheSplit::FORGET,
            Split::Retain => abi::LetheSplit::RETAIN,
            Split::Validation => abi::LetheSplit::VALIDATION,
            Split::Test => abi::LetheSplit::TEST,
        }
    }
}

/// Whether shadow models may train on the samples an attack asks about
/// (`lethe.shadow/1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowMode {
    /// Each target is in the training half of about half the models (LiRA and
    /// RMIA "online").
    Online,
    /// No model ever trains on a target ("offline").
    Offline,
}

impl ShadowMode {
    /// The request's `mode` string.
    pub const fn name(self) -> &'static str {
        match self {
            ShadowMode::Online => "online",
            ShadowMode::Offline => "offline",
        }
    }
}

/// Samples of one split an attack asks shadow models about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowTargets {
    /// The split.
    pub split: Split,
    /// Positions within the split (split order); `None` = all of it.
    pub positions: Option<Vec<u64>>,
}

/// What [`HostContext::shadow_prepare`] asks for (see
/// [`LetheHostShadow`](crate::abi::LetheHostShadow) for the semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRequest {
    /// Number of shadow models.
    pub models: u32,
    /// Online or offline.
    pub mode: ShadowMode,
    /// The samples the attack asks about.
    pub targets: Vec<ShadowTargets>,
    /// Pool size the halves are drawn from (0 = every sample of the job).
    pub population: u64,
    /// Epochs per model (0 = the recorded recipe's).
    pub epochs: u32,
    /// Seed of the pool, the halves and the models.
    pub seed: u64,
    /// Unlearn every model after training (U-LiRA; ABI 1.4): the host then
    /// serves the unlearned copies.
    pub unlearn: Option<ShadowUnlearn>,
}

/// How the host unlearns each shadow model (see
/// [`LetheHostShadow`](crate::abi::LetheHostShadow)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowUnlearn {
    /// The targets each model forgets when it trained on them.
    pub forget: Vec<ShadowTargets>,
    /// The method's descriptor id; `None` = the method that made the attacked
    /// model, as its checkpoint records.
    pub method: Option<String>,
    /// The method's parameters as a JSON object; `None` = the recorded ones.
    pub params: Option<Value>,
}

fn targets_json(targets: &[ShadowTargets]) -> Vec<Value> {
    targets
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("split".into(), Value::from(t.split.name()));
            if let Some(p) = &t.positions {
                o.insert("positions".into(), Value::from(p.clone()));
            }
            Value::Object(o)
        })
        .collect()
}

impl ShadowRequest {
    /// The request as the ABI's JSON.
    pub fn to_json(&self) -> Value {
        let mut json = serde_json::json!({
            "models": self.models,
            "mode": self.mode.name(),
            "targets": targets_json(&self.targets),
            "population": self.population,
            "epochs": self.epochs,
            "seed": self.seed,
        });
        if let Some(u) = &self.unlearn {
            let mut o = Map::new();
            o.insert("forget".into(), Value::from(targets_json(&u.forget)));
            if let Some(m) = &u.method {
                o.insert("method".into(), Value::from(m.clone()));
            }
            if let Some(p) = &u.params {
                o.insert("params".into(), p.clone());
            }
            json["unlearn"] = Value::Object(o);
        }
        json
    }
}

/// A method or attack. The SDK instantiates it with validated parameters, runs it
/// once and drops it.
pub trait Plugin: Send + 'static {
    /// Id, name, version, kind, description, citation and parameter schema. Called
    /// once, when the plugin library is initialised.
    fn descriptor() -> Descriptor
    where
        Self: Sized;

    /// Builds an instance from parameters already validated against the schema
    /// (defaults filled in). \[main-thread\]
    fn create(params: &Params) -> Result<Self, PluginError>
    where
        Self: Sized;

    /// Does the work, calling the host through `ctx`. Return
    /// `Err(PluginError::Cancelled)` (e.g. via [`HostContext::check_cancelled`]) when
    /// the host asks to stop. \[main-thread\]
    fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError>;
}

/// Safe access to the host services of one instance. The log, progress and
/// cancellation methods take `&self` and are \[any-thread\] (the context is `Sync`,
/// so scoped worker threads may report too); model, data and result methods take
/// `&mut self` because they are \[main-thread\].
#[derive(Debug)]
pub struct HostContext {
    host: *const LetheHost,
    log: *const abi::LetheHostLog,
    progress: *const abi::LetheHostProgress,
    cancel: *const abi::LetheHostCancel,
}

// SAFETY: the host pointer and its vtables stay valid for the instance's life (ABI
// contract of `create`), and the functions reachable through `&self` are tagged
// [any-thread]; the [main-thread] ones need `&mut self`.
unsafe impl Send for HostContext {}
// SAFETY: as above.
unsafe impl Sync for HostContext {}

/// Turns text into a C string, dropping interior NULs instead of failing: a log
/// line with a stray NUL should still arrive.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

impl HostContext {
    /// Wraps a host pointer, looking up the services it offers.
    ///
    /// # Safety
    /// `host` must be null or point to a [`LetheHost`] valid for as long as the
    /// returned context is used.
    pub unsafe fn from_raw(host: *const LetheHost) -> Self {
        let mut ctx = HostContext {
            host,
            log: std::ptr::null(),
            progress: std::ptr::null(),
            cancel: std::ptr::null(),
        };
        ctx.log = ctx.extension_raw(abi::EXT_LOG).cast();
        ctx.progress = ctx.extension_raw(abi::EXT_PROGRESS).cast();
        ctx.cancel = ctx.extension_raw(abi::EXT_CANCEL).cast();
        ctx
    }

    /// The raw host pointer, for extensions the SDK does not wrap.
    pub fn raw_host(&self) -> *const LetheHost {
        self.host
    }

    /// The raw vtable for a versioned extension id, or null when not offered.
    /// Using it is `unsafe` (cast to the vtable type the id names).
    pub fn extension_raw(&self, id: &str) -> *const c_void {
        if self.host.is_null() {
            return std::ptr::null();
        }
        let id = c_string(id);
        // SAFETY: host is valid (from_raw contract); get_extension is [any-thread].
        unsafe { ((*self.host).get_extension)(self.host, id.as_ptr()) }
    }

    /// The host's name and version, e.g. `("lethe", "0.1.0")`.
    pub fn host_name(&self) -> (String, String) {
        if self.host.is_null() {
            return (String::new(), String::new());
        }
        // SAFETY: host is valid; the strings live as long as the host struct.
        unsafe {
            let h = &*self.host;
            (read_c_str(h.name), read_c_str(h.version))
        }
    }

    /// The host's message for its last failed call on this thread.
    fn host_error(&self) -> String {
        if self.host.is_null() {
            return String::new();
        }
        // SAFETY: host valid; last_error is [any-thread] and never null.
        unsafe { read_c_str(((*self.host).last_error)(self.host)) }
    }

    /// Turns a host status into a `Result`, fetching the host's message.
    pub fn check(&self, call: &'static str, status: LetheStatus) -> Result<(), PluginError> {
        if status.is_ok() {
            Ok(())
        } else {
            Err(PluginError::Host {
                call,
                status,
                message: self.host_error(),
            })
        }
    }

    /// Writes to the job's log. Silently dropped if the host has no log extension.
    pub fn log(&self, level: LogLevel, message: &str) {
        if self.log.is_null() {
            return;
        }
        let message = c_string(message);
        // SAFETY: vtable from get_extension(EXT_LOG), valid with the host.
        unsafe { ((*self.log).log)(self.host, level.to_abi(), message.as_ptr()) }
    }

    /// [`HostContext::log`] at debug level.
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message)
    }

    /// [`HostContext::log`] at info level.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }

    /// [`HostContext::log`] at warning level.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message)
    }

    /// [`HostContext::log`] at error level.
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message)
    }

    /// Reports progress: `fraction` in `[0, 1]` (negative: unknown) and a status line.
    pub fn progress(&self, fraction: f64, message: &str) {
        self.report(fraction, message, None)
    }

    /// Reports progress with metrics (a JSON object of numbers, e.g.
    /// `{"loss": 0.3}`).
    pub fn progress_metrics(&self, fraction: f64, message: &str, metrics: &Value) {
        self.report(fraction, message, Some(metrics))
    }

    fn report(&self, fraction: f64, message: &str, metrics: Option<&Value>) {
        if self.progress.is_null() {
            return;
        }
        let message = c_string(message);
        let metrics = metrics.map(|m| c_string(&m.to_string()));
        let metrics_ptr = metrics.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
        // SAFETY: vtable from get_extension(EXT_PROGRESS); strings outlive the call.
        unsafe { ((*self.progress).report)(self.host, fraction, message.as_ptr(), metrics_ptr) }
    }

    /// Whether the host asked to stop (false when it offers no cancellation).
    pub fn is_cancelled(&self) -> bool {
        if self.cancel.is_null() {
            return false;
        }
        // SAFETY: vtable from get_extension(EXT_CANCEL).
        unsafe { ((*self.cancel).is_cancelled)(self.host) }
    }

    /// `Err(PluginError::Cancelled)` when the host asked to stop: use with `?` in
    /// every loop.
    pub fn check_cancelled(&self) -> Result<(), PluginError> {
        if self.is_cancelled() {
            Err(PluginError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Main-thread services that need no tensors: model mode and device, data sizes,
/// results. Tensor-valued ones come with the `tch` feature.
impl HostContext {
    /// The vtable for `id`, or `MissingExtension`.
    ///
    /// # Safety
    /// `T` must be the vtable type the ABI defines for `id`.
    pub(crate) unsafe fn ext<T>(&self, id: &'static str) -> Result<&T, PluginError> {
        let p = self.extension_raw(id).cast::<T>();
        if p.is_null() {
            Err(PluginError::MissingExtension(id))
        } else {
            // SAFETY: non-null vtable valid as long as the host (from_raw contract),
            // of type T (caller contract).
            Ok(unsafe { &*p })
        }
    }

    /// The model's device: `None` for the CPU, `Some(n)` for CUDA device `n`.
    pub fn model_device_index(&mut self) -> Result<Option<usize>, PluginError> {
        // SAFETY: EXT_MODEL names LetheHostModel.
        let m = unsafe { self.ext::<abi::LetheHostModel>(abi::EXT_MODEL) }?;
        // SAFETY: vtable from the host, host pointer valid.
        let d = unsafe { (m.device)(self.host) };
        Ok(usize::try_from(d).ok())
    }

    /// Switches the model to train (`true`) or eval (`false`) mode.
    pub fn model_set_train(&mut self, train: bool) -> Result<(), PluginError> {
        // SAFETY: EXT_MODEL names LetheHostModel.
        let m = unsafe { self.ext::<abi::LetheHostModel>(abi::EXT_MODEL) }?;
        // SAFETY: as above.
        let status = unsafe { (m.set_train)(self.host, train) };
        self.check("model.set_train", status)
    }

    /// Number of examples in `split`, `None` when the job has no such split.
    pub fn data_len(&mut self, split: Split) -> Result<Option<u64>, PluginError> {
        // SAFETY: EXT_DATA names LetheHostData.
        let d = unsafe { self.ext::<abi::LetheHostData>(abi::EXT_DATA) }?;
        // SAFETY: vtable from the host.
        let n = unsafe { (d.len)(self.host, split.to_abi()) };
        Ok(u64::try_from(n).ok())
    }

    /// Resets the model to a fresh initialisation of its architecture drawn from
    /// `seed`, in place: parameter tensors from `HostContext::model_parameters`
    /// (feature `tch`) stay valid and see the new values. For exact unlearning by
    /// retraining. Needs the host's `lethe.model-init/1` (ABI 1.1).
    pub fn model_reinitialize(&mut self, seed: u64) -> Result<(), PluginError> {
        // SAFETY: EXT_MODEL_INIT names LetheHostModelInit.
        let m = unsafe { self.ext::<abi::LetheHostModelInit>(abi::EXT_MODEL_INIT) }?;
        // SAFETY: vtable from the host.
        let status = unsafe { (m.reinitialize)(self.host, seed) };
        self.check("model-init.reinitialize", status)
    }

    /// How the original model was trained (epochs, batch size, learning rate,
    /// optimiser, schedule, seed, task, ...) as recorded in its checkpoint; an
    /// empty object when it records nothing.
    pub fn training_recipe(&mut self) -> Result<Value, PluginError> {
        // SAFETY: EXT_MODEL_INIT names LetheHostModelInit.
        let m = unsafe { self.ext::<abi::LetheHostModelInit>(abi::EXT_MODEL_INIT) }?;
        // SAFETY: vtable from the host; the string is host-owned and valid now.
        let text = unsafe { read_c_str((m.training_recipe)(self.host)) };
        if text.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_str(&text)
            .map_err(|e| PluginError::msg(format!("the host's training recipe is not JSON: {e}")))
    }

    /// Trains or loads the shadow models of `request` (needs the host's
    /// `lethe.shadow/1`, ABI 1.2) and returns the host's summary: `models`,
    /// `cached`, `trained`, the cost `estimate` made before training, the
    /// `recipe` and the cache `key`. Then `HostContext::shadow_logits` (feature
    /// `tch`) reads their logits. Fails with [`PluginError::Cancelled`] when the
    /// host only wanted the cost estimate (or the user cancelled).
    pub fn shadow_prepare(&mut self, request: &ShadowRequest) -> Result<Value, PluginError> {
        // SAFETY: EXT_SHADOW names LetheHostShadow.
        let sh = unsafe { self.ext::<abi::LetheHostShadow>(abi::EXT_SHADOW) }?;
        if request.unlearn.is_some() {
            // SAFETY: the host struct outlives the context; `abi` is its first field.
            let host_abi = unsafe { (*self.host).abi };
            if host_abi.minor < 4 {
                return Err(PluginError::msg(format!(
                    "this Lethe (plugin ABI {}.{}) cannot unlearn shadow models; \
                     U-LiRA needs ABI 1.4 or later",
                    host_abi.major, host_abi.minor
                )));
            }
        }
        let json = c_string(&request.to_json().to_string());
        let mut out: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: vtable from the host; the request outlives the call, `out` is ours.
        let status = unsafe { (sh.prepare)(self.host, json.as_ptr(), &mut out) };
        if status == LetheStatus::CANCELLED {
            return Err(PluginError::Cancelled);
        }
        self.check("shadow.prepare", status)?;
        // SAFETY: host-owned summary, valid until the next shadow call; copied now.
        let text = unsafe { read_c_str(out) };
        serde_json::from_str(&text)
            .map_err(|e| PluginError::msg(format!("the host's shadow summary is not JSON: {e}")))
    }

    /// Loads or trains the host's linear probe of the model (needs the host's
    /// `lethe.probe/1`, ABI 1.5): the one `lethe evaluate` reads encoders with,
    /// trained once per model, retain samples and recipe and shared through
    /// the host's probe cache. `request`: `{"preset": "reference" | "fast",
    /// "epochs": N, "seed": S}`, every key optional. Returns the host's
    /// summary (`recipe`, `key`, `cached`, `retain_accuracy`, `seconds`,
    /// `classes`); then `HostContext::probe_logits` (feature `tch`) reads it.
    pub fn probe_prepare(&mut self, request: &Value) -> Result<Value, PluginError> {
        // SAFETY: EXT_PROBE names LetheHostProbe.
        let p = unsafe { self.ext::<abi::LetheHostProbe>(abi::EXT_PROBE) }.map_err(|_| {
            PluginError::msg(
                "this Lethe has no shared linear probe (lethe.probe/1, plugin ABI 1.5); \
                 update Lethe to read encoders",
            )
        })?;
        let json = c_string(&request.to_string());
        let mut out: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: vtable from the host; the request outlives the call, `out` is ours.
        let status = unsafe { (p.prepare)(self.host, json.as_ptr(), &mut out) };
        if status == LetheStatus::CANCELLED {
            return Err(PluginError::Cancelled);
        }
        self.check("probe.prepare", status)?;
        // SAFETY: host-owned summary, valid until the next probe call; copied now.
        let text = unsafe { read_c_str(out) };
        serde_json::from_str(&text)
            .map_err(|e| PluginError::msg(format!("the host's probe summary is not JSON: {e}")))
    }

    /// Saves the model in its current state as the job's result:
    /// `model.safetensors` in the job's output folder (every tensor of the model
    /// under torchvision-style names, with Lethe's metadata), a checkpoint Lethe
    /// loads. Calling it again replaces it; the original checkpoint is never
    /// written over.
    pub fn save_model(&mut self) -> Result<(), PluginError> {
        // SAFETY: EXT_RESULT names LetheHostResult.
        let r = unsafe { self.ext::<abi::LetheHostResult>(abi::EXT_RESULT) }?;
        // SAFETY: vtable from the host.
        let status = unsafe { (r.save_model)(self.host) };
        self.check("result.save_model", status)
    }

    /// Stores a named JSON result: `<name>.json` (pretty-printed) in the job's
    /// output folder. `name`: 1-128 letters, digits, `_`, `-` or `.`, not
    /// starting with `.`. An attack's `attack_summary` lands in `attack.json`.
    pub fn put_json(&mut self, name: &str, value: &Value) -> Result<(), PluginError> {
        // SAFETY: EXT_RESULT names LetheHostResult.
        let r = unsafe { self.ext::<abi::LetheHostResult>(abi::EXT_RESULT) }?;
        let (name, json) = (c_string(name), c_string(&value.to_string()));
        // SAFETY: vtable from the host; strings outlive the call.
        let status = unsafe { (r.put_json)(self.host, name.as_ptr(), json.as_ptr()) };
        self.check("result.put_json", status)
    }
}

/// Copies a borrowed C string; empty for null.
///
/// # Safety
/// `ptr` must be null or a valid NUL-terminated string.
pub(crate) unsafe fn read_c_str(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: caller guarantees a valid NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}
