//! The raw, `#[repr(C)]` plugin ABI: what a plugin library exports and what the host
//! hands it. Plain data and function pointers only, no Rust types, no libtorch.
//!
//! # Shape (modelled on CLAP)
//!
//! A plugin library exports exactly one data symbol, [`ENTRY_SYMBOL`]
//! (`lethe_plugin_entry`), of type [`LethePluginEntry`]. The host:
//!
//! 1. reads [`LethePluginEntry::abi`] and refuses a different [`ABI_MAJOR`](crate::ABI_MAJOR);
//! 2. compares [`LethePluginEntry::build`] with its own build and refuses a plugin built
//!    against another libtorch, tch, target or C++ ABI (tensors cross as raw libtorch
//!    handles, which is only sound when both sides agree on all of these);
//! 3. calls [`LethePluginEntry::init`] once with the library's path;
//! 4. asks [`LethePluginEntry::get_factory`] for [`FACTORY_METHOD`] and [`FACTORY_ATTACK`],
//!    lists their [`LetheDescriptor`]s and validates user parameters against each
//!    descriptor's JSON schema;
//! 5. creates a [`LetheInstance`] with [`LethePluginFactory::create`], passing a
//!    [`LetheHost`] whose [`LetheHost::get_extension`] hands out the host services
//!    (log, progress, cancellation, model, data, result), calls
//!    [`LetheInstance::run`], then [`LetheInstance::destroy`].
//!
//! # Conventions
//!
//! * **Strings** are NUL-terminated UTF-8 (`*const c_char`). A string returned by a
//!   function stays valid for as long as its doc says, never longer.
//! * **Status**: every fallible call returns a [`LetheStatus`]. On anything but
//!   [`LetheStatus::OK`] the human-readable reason is available from
//!   [`LethePluginEntry::last_error`] (for calls into the plugin) or
//!   [`LetheHost::last_error`] (for calls into the host).
//! * **Thread tags** on every function:
//!   * **\[main-thread\]**: the host never makes two \[main-thread\] calls into the same
//!     library at the same time (it holds a lock per library). The OS thread may
//!     differ between calls, so a plugin must not keep thread-affine state between
//!     calls.
//!   * **\[any-thread\]**: may be called from any thread, concurrently; the
//!     implementation must be thread-safe.
//! * **Panics/exceptions** must never cross the boundary: a Rust implementation wraps
//!   every exported function in `catch_unwind` (the [`sdk`](crate::sdk) does) and
//!   reports [`LetheStatus::PANIC`].
//! * **Versioned ids**: factories and extensions are looked up by strings ending in
//!   `/<version>` (`"lethe.progress/1"`). A changed vtable gets a new id; the old id
//!   keeps its old layout, so the ABI grows without breaking older plugins.
//!
//! # Tensors and ownership
//!
//! A [`LetheTensor`] is an opaque `*mut c_void` that is really a libtorch
//! `at::Tensor*`, exactly tch's `C_tensor` (what `tch::Tensor::as_ptr` returns and
//! `tch::Tensor::from_ptr` takes). Both sides link the same shared libtorch but each
//! embeds its own copy of tch's C shim, so:
//!
//! * **Arguments are borrowed**: a tensor passed as an argument stays owned by the
//!   caller and is valid only during the call. Keep it longer by making your own
//!   shallow, refcounted copy (`tch::Tensor::clone_from_ptr` / `shallow_clone`).
//! * **Returned tensors are owned by the caller, but freed by the side that allocated
//!   them**: a tensor the host returns through an out-parameter must be released with
//!   [`LetheHostTensor::free`]. The SDK does this for you: it takes a shallow clone
//!   (allocated by the plugin) and frees the host's handle immediately.
//! * A returned tensor may share storage with host state (model parameters do, on
//!   purpose: an optimizer step on them updates the model).
//!
//! # Never unloaded
//!
//! The host never `dlclose`s a plugin library. Plugin code may leave thread-locals,
//! registered libtorch operators, `atexit` handlers or vtables pointing into the
//! library behind; unloading would leave those dangling (Bevy dropped dylib plugins
//! for exactly this, and `dlclose` is a no-op on musl and often on macOS anyway).
//! Isolation comes from running plugins in a worker process instead.

use std::ffi::{c_char, c_void};

/// Name of the single symbol a plugin library exports: a `static` of type
/// [`LethePluginEntry`]. NUL-terminated, ready for `dlsym`/`libloading`.
pub const ENTRY_SYMBOL: &[u8] = b"lethe_plugin_entry\0";

/// Factory id for unlearning methods; [`LethePluginEntry::get_factory`] returns a
/// [`LethePluginFactory`] for it.
pub const FACTORY_METHOD: &str = "lethe.factory.method/1";
/// Factory id for membership-inference attacks; [`LethePluginEntry::get_factory`]
/// returns a [`LethePluginFactory`] for it.
pub const FACTORY_ATTACK: &str = "lethe.factory.attack/1";

/// Host extension id for [`LetheHostLog`].
pub const EXT_LOG: &str = "lethe.log/1";
/// Host extension id for [`LetheHostProgress`].
pub const EXT_PROGRESS: &str = "lethe.progress/1";
/// Host extension id for [`LetheHostCancel`].
pub const EXT_CANCEL: &str = "lethe.cancel/1";
/// Host extension id for [`LetheHostTensor`].
pub const EXT_TENSOR: &str = "lethe.tensor/1";
/// Host extension id for [`LetheHostModel`].
pub const EXT_MODEL: &str = "lethe.model/1";
/// Host extension id for [`LetheHostData`].
pub const EXT_DATA: &str = "lethe.data/1";
/// Host extension id for [`LetheHostResult`].
pub const EXT_RESULT: &str = "lethe.result/1";
/// Host extension id for [`LetheHostAugment`] (ABI 1.1).
pub const EXT_AUGMENT: &str = "lethe.augment/1";
/// Host extension id for [`LetheHostModelInit`] (ABI 1.1).
pub const EXT_MODEL_INIT: &str = "lethe.model-init/1";
/// Host extension id for [`LetheHostShadow`] (ABI 1.2).
pub const EXT_SHADOW: &str = "lethe.shadow/1";
/// Host extension id for [`LetheHostProbe`] (ABI 1.5).
pub const EXT_PROBE: &str = "lethe.probe/1";

/// Length of every fixed string field of [`LetheBuildInfo`], NUL included.
pub const BUILD_STR_LEN: usize = 64;

/// Opaque libtorch tensor handle: an `at::Tensor*`, tch's `C_tensor`. See the
/// module docs for the ownership rules.
pub type LetheTensor = *mut c_void;

/// Result of every fallible ABI call. `0` is success; anything else is a failure
/// whose message is available from the matching `last_error`. Unknown non-zero
/// values (from a newer peer) must be treated as [`LetheStatus::ERROR`].
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LetheStatus(pub i32);

impl LetheStatus {
    /// Success.
    pub const OK: Self = Self(0);
    /// A failure that fits no other code.
    pub const ERROR: Self = Self(1);
    /// A null pointer, invalid UTF-8, an unknown descriptor id or similar caller bug.
    pub const INVALID_ARGUMENT: Self = Self(2);
    /// The parameters JSON does not satisfy the descriptor's schema.
    pub const INVALID_PARAMS: Self = Self(3);
    /// The callee panicked (or threw); the message holds the panic message. The
    /// library is still loaded and usable, but the instance involved should be
    /// destroyed.
    pub const PANIC: Self = Self(4);
    /// The run stopped because the host asked it to ([`LetheHostCancel`]).
    pub const CANCELLED: Self = Self(5);
    /// A needed extension or feature is not available from the other side.
    pub const UNSUPPORTED: Self = Self(6);
    /// Called out of order (e.g. `create` before `init`, or `run` twice).
    pub const BAD_STATE: Self = Self(7);

    /// Whether this is [`LetheStatus::OK`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// A short stable name for logs (`"invalid-params"`), `"unknown"` for codes this
    /// build does not know.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "ok",
            1 => "error",
            2 => "invalid-argument",
            3 => "invalid-params",
            4 => "panic",
            5 => "cancelled",
            6 => "unsupported",
            7 => "bad-state",
            _ => "unknown",
        }
    }
}

/// ABI version. Always the **first field** of [`LethePluginEntry`] and of
/// [`LetheHost`], in every ABI major, so a peer can read it before trusting the rest
/// of the layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetheAbiVersion {
    /// Incompatible changes bump this; the host loads only an equal major.
    pub major: u32,
    /// Compatible additions (new extension ids, new factories) bump this.
    pub minor: u32,
}

impl LetheAbiVersion {
    /// The version this crate implements.
    pub const CURRENT: Self = Self {
        major: crate::ABI_MAJOR,
        minor: crate::ABI_MINOR,
    };
}

/// What a plugin was built with. Every string is NUL-terminated UTF-8 inside a
/// fixed [`BUILD_STR_LEN`]-byte array (so the struct is plain, `const`-buildable
/// data). An empty `libtorch_version` declares a plugin that does not link libtorch
/// and never touches tensors; the host then skips the libtorch checks.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetheBuildInfo {
    /// Version of the `lethe-plugin-api` crate the plugin was built with.
    pub plugin_api_version: [u8; BUILD_STR_LEN],
    /// Version of the `tch` crate, e.g. `0.26.0`; empty when tch is not used.
    pub tch_version: [u8; BUILD_STR_LEN],
    /// libtorch version including the local tag, e.g. `2.13.0+cpu`; empty when the
    /// plugin does not link libtorch.
    pub libtorch_version: [u8; BUILD_STR_LEN],
    /// Rust target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target_triple: [u8; BUILD_STR_LEN],
    /// Whether the libtorch linked at build time ships CUDA kernels.
    pub cuda: bool,
    /// Whether the plugin's C++ code (tch's shim) was built with
    /// `_GLIBCXX_USE_CXX11_ABI=1`.
    pub cxx11_abi: bool,
}

/// The one symbol a plugin exports (as `lethe_plugin_entry`, see [`ENTRY_SYMBOL`]).
/// It is immutable static data; all its functions are plain C function pointers.
#[repr(C)]
#[derive(Debug)]
pub struct LethePluginEntry {
    /// ABI version the plugin was built for. Must stay the first field.
    pub abi: LetheAbiVersion,
    /// How the plugin was built; the host refuses mismatches.
    pub build: LetheBuildInfo,
    /// \[main-thread\] Called once, after the handshake and before anything else.
    /// `plugin_path` is the library's file path (NUL-terminated UTF-8), e.g. to find
    /// resources next to it; borrowed for the call only. On failure the host refuses
    /// the library and calls nothing else in it.
    pub init: unsafe extern "C" fn(plugin_path: *const c_char) -> LetheStatus,
    /// \[main-thread\] Undoes `init`. The host calls it at most once and never
    /// unloads the library afterwards; a plugin must not rely on it running (the
    /// worker process may simply exit).
    pub deinit: unsafe extern "C" fn(),
    /// \[main-thread\] Returns the factory for a versioned id ([`FACTORY_METHOD`],
    /// [`FACTORY_ATTACK`]), or null when the plugin has none. The pointer is valid
    /// until `deinit`. Only after a successful `init`.
    pub get_factory: unsafe extern "C" fn(factory_id: *const c_char) -> *const c_void,
    /// \[any-thread\] Message of the most recent failed call into this plugin made on
    /// the calling thread (empty string if none). Valid until the next call into the
    /// plugin on this thread; copy it right away. Never null.
    pub last_error: unsafe extern "C" fn() -> *const c_char,
}

// SAFETY: the entry is immutable static data holding only function pointers and
// plain bytes; sharing it between threads is what the thread tags above describe.
unsafe impl Sync for LethePluginEntry {}

/// What a descriptor is: a kind code. Unknown codes from newer plugins must be
/// skipped by the host, not rejected.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LetheKind(pub u32);

impl LetheKind {
    /// An unlearning method: it changes the model and saves the result.
    pub const METHOD: Self = Self(1);
    /// A membership-inference attack: it scores examples and writes the scores.
    pub const ATTACK: Self = Self(2);
}

/// Static description of one method or attack. All strings are NUL-terminated
/// UTF-8 owned by the plugin and valid until `deinit`.
#[repr(C)]
#[derive(Debug)]
pub struct LetheDescriptor {
    /// Reverse-DNS unique id, e.g. `org.example.gradient-ascent`.
    pub id: *const c_char,
    /// Human-readable name.
    pub name: *const c_char,
    /// Version of this method's implementation, e.g. `1.2.0`.
    pub version: *const c_char,
    /// Method or attack.
    pub kind: LetheKind,
    /// One-paragraph description.
    pub description: *const c_char,
    /// How to cite the method (may be empty).
    pub citation: *const c_char,
    /// Parameter schema as JSON, see [`crate::schema::Schema`].
    pub params_schema: *const c_char,
}

/// A factory: a list of descriptors and a way to instantiate them. Returned by
/// [`LethePluginEntry::get_factory`] for both [`FACTORY_METHOD`] and
/// [`FACTORY_ATTACK`]. Implementations may put private data after this struct and
/// cast the `factory` pointer back (it is the pointer `get_factory` returned).
#[repr(C)]
#[derive(Debug)]
pub struct LethePluginFactory {
    /// \[main-thread\] Number of descriptors.
    pub count: unsafe extern "C" fn(factory: *const LethePluginFactory) -> u32,
    /// \[main-thread\] Descriptor at `index` (< `count`), or null when out of range.
    /// Valid until `deinit`.
    pub descriptor: unsafe extern "C" fn(
        factory: *const LethePluginFactory,
        index: u32,
    ) -> *const LetheDescriptor,
    /// \[main-thread\] Creates an instance of the descriptor `descriptor_id` with
    /// `params_json` (a JSON object; the host has validated it against the schema and
    /// filled in defaults, but the plugin validates again). `host` must stay valid
    /// until the instance is destroyed. On success writes the new instance to
    /// `out_instance`; on failure writes null and returns the reason.
    pub create: unsafe extern "C" fn(
        factory: *const LethePluginFactory,
        host: *const LetheHost,
        descriptor_id: *const c_char,
        params_json: *const c_char,
        out_instance: *mut *const LetheInstance,
    ) -> LetheStatus,
}

/// A live method or attack, created by [`LethePluginFactory::create`] and owned by
/// the host until it calls `destroy`.
#[repr(C)]
#[derive(Debug)]
pub struct LetheInstance {
    /// Plugin-private pointer; the host never touches it.
    pub plugin_data: *mut c_void,
    /// \[main-thread\] Runs the method/attack to completion, calling back into the
    /// host for services. Returns [`LetheStatus::CANCELLED`] when it stopped because
    /// of a cancellation request. Called at most once per instance.
    pub run: unsafe extern "C" fn(instance: *const LetheInstance) -> LetheStatus,
    /// \[main-thread\] Frees the instance; the pointer is invalid afterwards.
    pub destroy: unsafe extern "C" fn(instance: *const LetheInstance),
    /// \[main-thread\] Plugin-side extension by versioned id, or null. None are
    /// defined yet; the slot exists so instances can grow without a major bump.
    pub get_extension: unsafe extern "C" fn(
        instance: *const LetheInstance,
        extension_id: *const c_char,
    ) -> *const c_void,
}

/// The host as a plugin instance sees it. Passed to `create`; valid until the
/// instance is destroyed. Host implementations may put private data after this
/// struct.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHost {
    /// ABI version of the host. Must stay the first field.
    pub abi: LetheAbiVersion,
    /// Host-private pointer; the plugin never touches it.
    pub host_data: *mut c_void,
    /// Host name, e.g. `lethe`. Valid as long as the host struct.
    pub name: *const c_char,
    /// Host version, e.g. `0.1.0`. Valid as long as the host struct.
    pub version: *const c_char,
    /// \[any-thread\] Returns the host extension vtable for a versioned id
    /// ([`EXT_LOG`], [`EXT_PROGRESS`], ...), or null when the host does not offer it
    /// (to this plugin, or at all). The vtable is valid as long as the host struct.
    pub get_extension:
        unsafe extern "C" fn(host: *const LetheHost, extension_id: *const c_char) -> *const c_void,
    /// \[any-thread\] Message of the most recent failed host call made on the calling
    /// thread (empty if none). Valid until the next host call on that thread. Never
    /// null.
    pub last_error: unsafe extern "C" fn(host: *const LetheHost) -> *const c_char,
}

/// Severity for [`LetheHostLog::log`].
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LetheLogLevel(pub u32);

impl LetheLogLevel {
    /// Very detailed diagnostics.
    pub const DEBUG: Self = Self(0);
    /// Normal progress information.
    pub const INFO: Self = Self(1);
    /// Something suspicious that does not stop the run.
    pub const WARN: Self = Self(2);
    /// A failure (the run usually returns an error status too).
    pub const ERROR: Self = Self(3);
}

/// Extension [`EXT_LOG`]: write to the job's log.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostLog {
    /// \[any-thread\] Appends `message` (NUL-terminated UTF-8, borrowed) to the log.
    pub log:
        unsafe extern "C" fn(host: *const LetheHost, level: LetheLogLevel, message: *const c_char),
}

/// Extension [`EXT_PROGRESS`]: report how far the run is.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostProgress {
    /// \[any-thread\] Reports progress. `fraction` is in `[0, 1]`, or negative when
    /// unknown. `message` may be null or a short status line. `metrics_json` may be
    /// null or a JSON object of numbers (`{"loss": 0.3, "epoch": 2}`). All borrowed.
    pub report: unsafe extern "C" fn(
        host: *const LetheHost,
        fraction: f64,
        message: *const c_char,
        metrics_json: *const c_char,
    ),
}

/// Extension [`EXT_CANCEL`]: cooperative cancellation.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostCancel {
    /// \[any-thread\] Whether the user asked to stop. A run should poll it often
    /// (every batch) and return [`LetheStatus::CANCELLED`] soon after it turns true.
    /// The worker kills runs that ignore it after a grace period.
    pub is_cancelled: unsafe extern "C" fn(host: *const LetheHost) -> bool,
}

/// Extension [`EXT_TENSOR`]: releasing tensors the host allocated.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostTensor {
    /// \[any-thread\] Frees a tensor handle the host returned through an
    /// out-parameter. Null is ignored. Never pass a handle the plugin allocated.
    pub free: unsafe extern "C" fn(host: *const LetheHost, tensor: LetheTensor),
}

/// Which part of the model [`LetheHostModel::forward`] runs.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LetheModelHead(pub u32);

impl LetheModelHead {
    /// Inputs to features (the encoder/backbone).
    pub const ENCODER: Self = Self(0);
    /// Inputs to class logits (encoder + classifier).
    pub const CLASSIFIER: Self = Self(1);
    /// Inputs to the projection head's embedding (contrastive models).
    pub const PROJECTION: Self = Self(2);
}

/// Extension [`EXT_MODEL`]: the model being unlearned or attacked. Returned tensors
/// follow the ownership rules in the module docs (free with [`LetheHostTensor::free`]).
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostModel {
    /// \[main-thread\] Device of the model: `-1` for the CPU, `n >= 0` for CUDA
    /// device `n`.
    pub device: unsafe extern "C" fn(host: *const LetheHost) -> i32,
    /// \[main-thread\] Switches train (`true`) / eval (`false`) mode (dropout,
    /// batch-norm statistics).
    pub set_train: unsafe extern "C" fn(host: *const LetheHost, train: bool) -> LetheStatus,
    /// \[main-thread\] Runs `head` on `input` (borrowed, on the model's device) and
    /// writes a new owned tensor to `out`. Train/eval mode (`set_train`)
    /// selects dropout and batch-norm behaviour only. Autograd follows the calling
    /// thread's grad mode (libtorch's thread-local switch, shared by host and
    /// plugin): by default the result can be backpropagated into the parameters in
    /// either mode, so gradients of an eval-mode forward are available; run
    /// inference under `tch::no_grad` to skip recording the graph. (Earlier 1.x
    /// hosts recorded no graph in eval mode; plugins written for them run unchanged,
    /// recording a graph they drop.)
    pub forward: unsafe extern "C" fn(
        host: *const LetheHost,
        head: LetheModelHead,
        input: LetheTensor,
        out: *mut LetheTensor,
    ) -> LetheStatus,
    /// \[main-thread\] Number of trainable parameters (tensors).
    pub parameter_count: unsafe extern "C" fn(host: *const LetheHost) -> u32,
    /// \[main-thread\] Parameter `index`: writes its dotted name (host-owned, valid as
    /// long as the host struct) and an owned handle that **shares storage** with the
    /// model's parameter, so an optimizer stepping it updates the model.
    pub parameter: unsafe extern "C" fn(
        host: *const LetheHost,
        index: u32,
        out_name: *mut *const c_char,
        out_tensor: *mut LetheTensor,
    ) -> LetheStatus,
}

/// Which data split [`LetheHostData`] reads.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LetheSplit(pub u32);

impl LetheSplit {
    /// The examples to forget.
    pub const FORGET: Self = Self(0);
    /// The training examples to keep.
    pub const RETAIN: Self = Self(1);
    /// Held-out validation examples.
    pub const VALIDATION: Self = Self(2);
    /// Test examples (never trained on).
    pub const TEST: Self = Self(3);
}

/// Extension [`EXT_DATA`]: batches from the job's data splits.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostData {
    /// \[main-thread\] Number of examples in `split`, or `-1` if the job has no such
    /// split.
    pub len: unsafe extern "C" fn(host: *const LetheHost, split: LetheSplit) -> i64,
    /// \[main-thread\] Opens an iterator over `split` in batches of `batch_size`,
    /// shuffled and/or augmented on request. Writes an opaque host-owned loader to
    /// `out_loader`; close it with `close_loader`.
    pub open_loader: unsafe extern "C" fn(
        host: *const LetheHost,
        split: LetheSplit,
        batch_size: u32,
        shuffle: bool,
        augment: bool,
        out_loader: *mut *mut c_void,
    ) -> LetheStatus,
    /// \[main-thread\] Next batch: writes owned `inputs` and `labels` tensors (on the
    /// model's device) and `true` to `out_has_batch`, or `false` and two nulls at the
    /// end of the epoch.
    pub next_batch: unsafe extern "C" fn(
        host: *const LetheHost,
        loader: *mut c_void,
        out_inputs: *mut LetheTensor,
        out_labels: *mut LetheTensor,
        out_has_batch: *mut bool,
    ) -> LetheStatus,
    /// \[main-thread\] Frees a loader from `open_loader`. Null is ignored.
    pub close_loader: unsafe extern "C" fn(host: *const LetheHost, loader: *mut c_void),
}

/// Extension [`EXT_RESULT`]: where results go.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostResult {
    /// \[main-thread\] Saves the model in its current (unlearned) state as the job's
    /// result checkpoint.
    pub save_model: unsafe extern "C" fn(host: *const LetheHost) -> LetheStatus,
    /// \[main-thread\] Stores a named tensor result (e.g. an attack's per-example
    /// scores). `tensor` is borrowed; the host copies it to a file, not a pipe.
    pub put_tensor: unsafe extern "C" fn(
        host: *const LetheHost,
        name: *const c_char,
        tensor: LetheTensor,
    ) -> LetheStatus,
    /// \[main-thread\] Stores a named JSON result (e.g. an attack's AUC summary).
    pub put_json: unsafe extern "C" fn(
        host: *const LetheHost,
        name: *const c_char,
        json: *const c_char,
    ) -> LetheStatus,
}

/// Which augmentation recipe [`LetheHostAugment::augment`] applies.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LetheAugmentRecipe(pub u32);

impl LetheAugmentRecipe {
    /// The recipe the model was trained with, as recorded in its checkpoint; the
    /// job's light recipe when the checkpoint records none.
    pub const TRAINING: Self = Self(0);
    /// The SimCLR/MoCo recipe (random resized crop 0.1–1, flip, colour jitter,
    /// grayscale; the colour steps only touch 3-channel images).
    pub const CONTRASTIVE: Self = Self(1);
    /// Light supervised augmentation: crop and flip (crop only for 1-channel
    /// images, so digits are not mirrored). What `open_loader(augment = true)` uses.
    pub const LIGHT: Self = Self(2);
}

/// Extension [`EXT_AUGMENT`]: the host's batched on-device augmentation, for
/// plugins that need several views of one batch (contrastive losses, EncoderMI).
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostAugment {
    /// \[main-thread\] Augments `input` (borrowed: float `[B, C, H, W]` in `[0, 1]`
    /// on the model's device) with `recipe`, each row independently, and writes a
    /// new owned tensor of the same shape to `out`. Random draws come from
    /// libtorch's generator, which the job seeds, so a run is reproducible.
    pub augment: unsafe extern "C" fn(
        host: *const LetheHost,
        input: LetheTensor,
        recipe: LetheAugmentRecipe,
        out: *mut LetheTensor,
    ) -> LetheStatus,
}

/// Extension [`EXT_MODEL_INIT`]: where the model came from and how to start it
/// over, for exact unlearning (retraining from scratch) and for methods whose
/// defaults follow the original training recipe.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostModelInit {
    /// \[main-thread\] Replaces every parameter and buffer of the model, in place,
    /// with a fresh initialisation of the same architecture drawn from `seed`.
    /// Parameter handles taken earlier stay valid and see the new values; their
    /// gradients are cleared.
    pub reinitialize: unsafe extern "C" fn(host: *const LetheHost, seed: u64) -> LetheStatus,
    /// \[main-thread\] The original model's training recipe as a JSON object
    /// (`epochs`, `batch_size`, `lr`, `weight_decay`, `optimizer`, `schedule`, `seed`,
    /// `task`, `temperature`, ... as recorded in its checkpoint), or `{}` when the
    /// checkpoint records none. Host-owned, valid as long as the host struct.
    pub training_recipe: unsafe extern "C" fn(host: *const LetheHost) -> *const c_char,
}

/// Extension [`EXT_SHADOW`]: reference ("shadow") models for likelihood-ratio
/// attacks (LiRA, RMIA). The host trains them with the attacked model's recorded
/// training recipe (its own, or its original's for an unlearned model) on random
/// halves of a population of the job's samples, keeps their logits on disk and
/// reuses them when the same models are asked for again.
///
/// A request is a JSON object:
///
/// * `models` (int ≥ 1): how many shadow models, `K`;
/// * `mode`: `"online"` (the pool includes the targets, each target is in the
///   training half of about half the models) or `"offline"` (no model ever
///   trains on a target);
/// * `targets`: array of `{"split": "forget" | "retain" | "validation" |
///   "test", "positions": [..]}` (positions within the split, in split order;
///   no `positions` = the whole split): the samples the attack asks about;
/// * `population` (int, default 0): size of the pool the halves are drawn from,
///   targets included (online) or not (offline); 0 = every sample of the job;
/// * `epochs` (int, default 0): training epochs per model, 0 = the recipe's;
/// * `seed` (int, default 0): draws the pool, the halves and the models;
/// * `unlearn` (object, optional; ABI 1.4, U-LiRA): after training, the host
///   unlearns each model with an unlearning method, as a deletion runs (in a
///   worker of its own, the model's training half as its training set) and
///   serves the *unlearned* copies: `forget` (targets, as above; each must be
///   one of the request's targets) are the samples each model forgets where it
///   trained on them; `method` (descriptor id) and `params` (object) default
///   to the method and parameters recorded in the attacked model's checkpoint
///   (the output of `lethe unlearn`). `logits`' membership flags stay the
///   training halves, so a forgotten target's flag says "trained, then
///   unlearned". Trained models are shared with the same request without
///   `unlearn`; the unlearned copies are cached under a key of their own.
///
/// The same request on the same data and recipe names the same models, so the
/// cache key is a pure function of it.
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostShadow {
    /// \[main-thread\] Makes the models of `request_json` (NUL-terminated UTF-8,
    /// borrowed) available: loads the cached ones and trains the rest, polling
    /// cancellation and reporting progress through the job's progress. Writes a
    /// host-owned JSON summary to `out_summary` (`models`, `cached`, `trained`,
    /// the cost estimate made before training, the recipe, the cache key), valid
    /// until the next call of this extension. A host asked only for the cost
    /// (an estimate run) records the estimate and returns
    /// [`LetheStatus::CANCELLED`] without training anything.
    pub prepare: unsafe extern "C" fn(
        host: *const LetheHost,
        request_json: *const c_char,
        out_summary: *mut *const c_char,
    ) -> LetheStatus,
    /// \[main-thread\] The prepared models' logits on every sample of `split`,
    /// in split order: a new owned float `[K, n, C]` tensor to `out_logits`, and a
    /// new owned bool `[K, n]` tensor to `out_members` (true where that sample
    /// was in that model's training half). On the CPU. [`LetheStatus::BAD_STATE`]
    /// before a successful `prepare`.
    pub logits: unsafe extern "C" fn(
        host: *const LetheHost,
        split: LetheSplit,
        out_logits: *mut LetheTensor,
        out_members: *mut LetheTensor,
    ) -> LetheStatus,
}

/// Extension [`EXT_PROBE`] (ABI 1.5): the linear probe that reads an encoder,
/// the one `lethe evaluate` reads RA/TA/UA with, for attacks that need class
/// probabilities of a model without a classifier (CMIA). The host trains a
/// `Linear(features, classes)` head on the frozen encoder features of the
/// job's retain split with a probe recipe, keeps it in its probe cache under a
/// key of the model's weights, the retain samples and the recipe, and reuses
/// it wherever the same probe is asked for again (by `lethe evaluate` too).
///
/// A request is a JSON object, every key optional: `preset` (`"reference"`,
/// the Alignment Calibration code's probe: 100 epochs, SGD lr 1.0 momentum
/// 0.9, cosine, batch 512, crop + flip; or `"fast"`, for tests), `epochs`
/// (int, 0 = the preset's), `seed` (int, default 0).
#[repr(C)]
#[derive(Debug)]
pub struct LetheHostProbe {
    /// \[main-thread\] Loads or trains the probe of `request_json`
    /// (NUL-terminated UTF-8, borrowed), polling cancellation. Writes a
    /// host-owned JSON summary to `out_summary` (`recipe`, cache `key`,
    /// `cached`, `retain_accuracy`, `seconds`, `classes`), valid until the next
    /// call of this extension.
    pub prepare: unsafe extern "C" fn(
        host: *const LetheHost,
        request_json: *const c_char,
        out_summary: *mut *const c_char,
    ) -> LetheStatus,
    /// \[main-thread\] The prepared probe's logits for `input` (borrowed: float
    /// images `[B, C, H, W]` in `[0, 1]` on the model's device, as the data
    /// extension's batches are): the encoder's features in eval mode through
    /// the head, a new owned float `[B, classes]` tensor to `out`.
    /// [`LetheStatus::BAD_STATE`] before a successful `prepare`.
    pub logits: unsafe extern "C" fn(
        host: *const LetheHost,
        input: LetheTensor,
        out: *mut LetheTensor,
    ) -> LetheStatus,
}

/// Builds a fixed [`BUILD_STR_LEN`]-byte NUL-terminated string in a `const`
/// context. Longer input is truncated at a byte boundary that keeps the terminator
/// (build strings are ASCII in practice).
pub const fn build_str(s: &str) -> [u8; BUILD_STR_LEN] {
    let bytes = s.as_bytes();
    let mut out = [0u8; BUILD_STR_LEN];
    let mut i = 0;
    while i < bytes.len() && i < BUILD_STR_LEN - 1 {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Reads a fixed build string back (up to the first NUL; lossy on invalid UTF-8).
pub fn read_build_str(field: &[u8; BUILD_STR_LEN]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(BUILD_STR_LEN);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_strings_round_trip_and_truncate() {
        assert_eq!(read_build_str(&build_str("2.13.0+cpu")), "2.13.0+cpu");
        assert_eq!(read_build_str(&build_str("")), "");
        let long = "x".repeat(200);
        assert_eq!(read_build_str(&build_str(&long)).len(), BUILD_STR_LEN - 1);
    }

    #[test]
    fn abi_version_is_the_first_field() {
        assert_eq!(std::mem::offset_of!(LethePluginEntry, abi), 0);
        assert_eq!(std::mem::offset_of!(LetheHost, abi), 0);
    }
}
