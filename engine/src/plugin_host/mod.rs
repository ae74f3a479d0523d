//! Loading native plugins (`cdylib`s speaking the [`lethe_plugin_api::abi`]) and
//! running their methods and attacks.
//!
//! [`PluginLibrary::load`] opens a library, checks the handshake (ABI major, then
//! the libtorch/tch/target/C++-ABI build info), calls `init` and reads every
//! descriptor and its parameter schema. [`PluginLibrary::create`] validates params
//! against the schema and creates an instance with a host struct offering log,
//! progress and cancellation (through [`HostServices`]); [`PluginInstance::run`]
//! runs it; dropping the instance destroys it. The host always offers
//! `lethe.log/1`, `lethe.progress/1`, `lethe.cancel/1` and `lethe.tensor/1`;
//! model, data and result extensions come from [`HostServices::extension`] (the
//! worker's job host), built with [`services_of`], [`tensor_into_handle`],
//! [`tensor_from_borrowed`] and [`set_last_error`]; [`services::EngineServices`]
//! is the real one, over a built-in model, a dataset and an output folder.
//!
//! Loading runs plugin code (initialisers, `init`), and a plugin can still crash
//! the process in ways no status code covers (segfault, abort), so the GUI and CLI
//! do this in a `lethe worker` process, never in their own.
//!
//! **Libraries are never unloaded.** A plugin may leave thread-locals, libtorch
//! operator registrations, `atexit` handlers or pointers to its statics behind in
//! the process; `dlclose` would leave those dangling. So a loaded library is kept
//! for the life of the process, and loading the same file twice returns the first
//! load (its `init` runs once).

mod host;
pub mod services;
pub mod trust;

pub use host::{
    HostServices, NoServices, services_of, set_last_error, tensor_from_borrowed, tensor_into_handle,
};

use lethe_plugin_api::abi::{
    self, ENTRY_SYMBOL, LetheBuildInfo, LetheDescriptor, LetheInstance, LethePluginEntry,
    LethePluginFactory, LetheStatus, read_build_str,
};
use lethe_plugin_api::schema::{ParamsError, Schema, SchemaError};
use lethe_plugin_api::sdk::Kind;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Why a plugin could not be loaded or run. Every variant names the library file.
#[derive(Debug, thiserror::Error)]
pub enum PluginHostError {
    /// An allow-list is in force and does not list this library (see [`trust`]).
    #[error("{}: {reason}", path.display())]
    NotAllowed {
        /// The library.
        path: PathBuf,
        /// Why (the list, the library's hash).
        reason: String,
    },
    /// The file is missing, not a shared library, or its dependencies fail to load.
    #[error("{}: cannot load as a shared library: {source}", path.display())]
    Load {
        /// The library.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The library loads but exports no `lethe_plugin_entry`.
    #[error("{}: not a Lethe plugin: it exports no `lethe_plugin_entry` symbol ({source})", path.display())]
    MissingEntry {
        /// The library.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The plugin was built for another major version of the plugin ABI.
    #[error(
        "{}: plugin ABI {plugin_major}.{plugin_minor} is incompatible with this Lethe's plugin ABI {host_major}.{host_minor} (the major versions must match); rebuild the plugin against this Lethe's lethe-plugin-api",
        path.display()
    )]
    AbiMismatch {
        /// The library.
        path: PathBuf,
        /// The plugin's ABI major.
        plugin_major: u32,
        /// The plugin's ABI minor.
        plugin_minor: u32,
        /// This host's ABI major.
        host_major: u32,
        /// This host's ABI minor.
        host_minor: u32,
    },
    /// The plugin was built against another libtorch, tch, target or C++ ABI.
    #[error("{}: built differently from this Lethe, so tensors cannot cross safely: {}; rebuild the plugin in this Lethe's environment", path.display(), differences.join("; "))]
    BuildMismatch {
        /// The library.
        path: PathBuf,
        /// One line per difference, e.g. `libtorch: plugin 2.12.0, Lethe 2.13.0`.
        differences: Vec<String>,
    },
    /// The plugin's `init` failed (or panicked).
    #[error("{}: plugin init failed ({}): {message}", path.display(), status.name())]
    Init {
        /// The library.
        path: PathBuf,
        /// The status it returned.
        status: LetheStatus,
        /// Its message.
        message: String,
    },
    /// A descriptor is malformed (null strings, bad schema, unknown kind).
    #[error("{}: descriptor {index} of factory `{factory}` is invalid: {reason}", path.display())]
    BadDescriptor {
        /// The library.
        path: PathBuf,
        /// The factory id.
        factory: &'static str,
        /// Position in the factory.
        index: u32,
        /// What is wrong.
        reason: String,
    },
    /// No method or attack with this id in the library.
    #[error("{}: no method or attack `{id}` (it has: {known})", path.display())]
    UnknownDescriptor {
        /// The library.
        path: PathBuf,
        /// The id asked for.
        id: String,
        /// The ids it has, comma-separated.
        known: String,
    },
    /// Parameters that do not satisfy the descriptor's schema.
    #[error("{}: `{id}`: {source}", path.display())]
    InvalidParams {
        /// The library.
        path: PathBuf,
        /// The descriptor id.
        id: String,
        /// Every problem found.
        source: ParamsError,
    },
    /// A plugin call (create, run) returned a failure status; `PANIC` when it
    /// panicked, with the panic message.
    #[error("{}: `{id}`: {call} failed ({}): {message}", path.display(), status.name())]
    Call {
        /// The library.
        path: PathBuf,
        /// The descriptor id.
        id: String,
        /// `create` or `run`.
        call: &'static str,
        /// The status returned.
        status: LetheStatus,
        /// The plugin's message for it.
        message: String,
    },
}

impl PluginHostError {
    /// The plugin status behind a failed call, if this is one.
    pub fn status(&self) -> Option<LetheStatus> {
        match self {
            PluginHostError::Init { status, .. } | PluginHostError::Call { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// This process's build info, to compare plugins against.
pub fn host_build_info() -> LetheBuildInfo {
    lethe_plugin_api::build_info(
        lethe_plugin_api::TCH_VERSION,
        option_env!("LETHE_LIBTORCH_VERSION"),
        option_env!("LETHE_LIBTORCH_CUDA"),
        option_env!("LIBTORCH_CXX11_ABI"),
    )
}

/// Every way `plugin` differs from `host` that makes tensor handles unsafe to
/// exchange, one readable line each; empty when compatible. A plugin without
/// libtorch (empty version) is only checked for the target.
pub fn build_differences(host: &LetheBuildInfo, plugin: &LetheBuildInfo) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, p: String, h: String| {
        if p != h {
            let show = |s: String| if s.is_empty() { "none".to_string() } else { s };
            out.push(format!("{what}: plugin {}, Lethe {}", show(p), show(h)));
        }
    };
    cmp(
        "target",
        read_build_str(&plugin.target_triple),
        read_build_str(&host.target_triple),
    );
    if read_build_str(&plugin.libtorch_version).is_empty() {
        return out;
    }
    cmp(
        "libtorch",
        read_build_str(&plugin.libtorch_version),
        read_build_str(&host.libtorch_version),
    );
    cmp(
        "tch",
        read_build_str(&plugin.tch_version),
        read_build_str(&host.tch_version),
    );
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    cmp("CUDA libtorch", yn(plugin.cuda), yn(host.cuda));
    cmp("C++11 ABI", yn(plugin.cxx11_abi), yn(host.cxx11_abi));
    out
}

/// A method or attack a library offers, as read from its descriptor.
#[derive(Debug, Clone)]
pub struct PluginDescriptor {
    /// Reverse-DNS id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Implementation version.
    pub version: String,
    /// Method or attack.
    pub kind: Kind,
    /// Description.
    pub description: String,
    /// Citation.
    pub citation: String,
    /// Parsed and checked parameter schema.
    pub schema: Schema,
    factory: FactoryPtr,
}

/// A factory pointer into a library that is never unloaded.
#[derive(Debug, Clone, Copy)]
struct FactoryPtr(*const LethePluginFactory);

// SAFETY: the factory lives in the never-unloaded library; its functions are
// [main-thread], which the library lock serialises.
unsafe impl Send for FactoryPtr {}
// SAFETY: as above.
unsafe impl Sync for FactoryPtr {}

/// A loaded, initialised plugin library. Shared (`Arc`) and never unloaded.
#[derive(Debug)]
pub struct PluginLibrary {
    path: PathBuf,
    entry: &'static LethePluginEntry,
    descriptors: Vec<PluginDescriptor>,
    /// Serialises the plugin's [main-thread] calls (the ABI promises no two at once).
    lock: Mutex<()>,
}

fn loaded_libraries() -> &'static Mutex<HashMap<PathBuf, Arc<PluginLibrary>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<PluginLibrary>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the guarded data inconsistent
    // (plugin panics are caught inside the plugin), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies a plugin-owned C string; `None` for null.
///
/// # Safety
/// `p` must be null or NUL-terminated and valid for the call.
unsafe fn owned_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: caller contract.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

impl PluginLibrary {
    /// Loads the library at `path`, checks it and initialises it. Loading a file
    /// that is already loaded returns the existing library.
    ///
    /// This runs the library's initialisers and `init`: do it in a worker process.
    pub fn load(path: &Path) -> Result<Arc<PluginLibrary>, PluginHostError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut loaded = lock(loaded_libraries());
        if let Some(lib) = loaded.get(&key) {
            return Ok(Arc::clone(lib));
        }
        let lib = Arc::new(Self::load_new(&key)?);
        loaded.insert(key, Arc::clone(&lib));
        Ok(lib)
    }

    fn load_new(path: &Path) -> Result<PluginLibrary, PluginHostError> {
        let path_buf = path.to_path_buf();
        if let Some(reason) = trust::refusal(path) {
            return Err(PluginHostError::NotAllowed {
                path: path_buf,
                reason,
            });
        }
        // SAFETY: loading runs the library's initialisers; that is the point of a
        // plugin, and callers run it in a worker process to contain misbehaviour.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|source| PluginHostError::Load {
                path: path_buf.clone(),
                source,
            })?;
        // Never unloaded (see the module docs): leak the handle.
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: for a data symbol, `get::<*const T>` yields the symbol's address.
        let entry_ptr: *const LethePluginEntry = unsafe {
            *library
                .get::<*const LethePluginEntry>(ENTRY_SYMBOL)
                .map_err(|source| PluginHostError::MissingEntry {
                    path: path_buf.clone(),
                    source,
                })?
        };
        // SAFETY: the symbol is the plugin's static entry, in a library that is
        // never unloaded. Only `abi` (first field in every major) is read before
        // the major is checked.
        let abi_version = unsafe { std::ptr::addr_of!((*entry_ptr).abi).read() };
        if abi_version.major != lethe_plugin_api::ABI_MAJOR {
            return Err(PluginHostError::AbiMismatch {
                path: path_buf,
                plugin_major: abi_version.major,
                plugin_minor: abi_version.minor,
                host_major: lethe_plugin_api::ABI_MAJOR,
                host_minor: lethe_plugin_api::ABI_MINOR,
            });
        }
        // SAFETY: same major, so the layout is this crate's LethePluginEntry.
        let entry: &'static LethePluginEntry = unsafe { &*entry_ptr };
        let differences = build_differences(&host_build_info(), &entry.build);
        if !differences.is_empty() {
            return Err(PluginHostError::BuildMismatch {
                path: path_buf,
                differences,
            });
        }
        let path_c = CString::new(path.to_string_lossy().into_owned()).unwrap_or_default();
        // SAFETY: handshake passed; init is called once (load() caches the result).
        let status = unsafe { (entry.init)(path_c.as_ptr()) };
        if !status.is_ok() {
            return Err(PluginHostError::Init {
                path: path_buf,
                status,
                // SAFETY: last_error is [any-thread] and never null.
                message: unsafe { owned_str((entry.last_error)()) }.unwrap_or_default(),
            });
        }
        let mut lib = PluginLibrary {
            path: path_buf,
            entry,
            descriptors: Vec::new(),
            lock: Mutex::new(()),
        };
        lib.descriptors = lib.read_descriptors()?;
        Ok(lib)
    }

    fn read_descriptors(&self) -> Result<Vec<PluginDescriptor>, PluginHostError> {
        let mut out = Vec::new();
        for factory_id in [abi::FACTORY_METHOD, abi::FACTORY_ATTACK] {
            let id_c = CString::new(factory_id).unwrap_or_default();
            // SAFETY: after a successful init; [main-thread] (only called from load).
            let factory =
                unsafe { (self.entry.get_factory)(id_c.as_ptr()) }.cast::<LethePluginFactory>();
            if factory.is_null() {
                continue;
            }
            // SAFETY: non-null factory valid until deinit, which we never call.
            let count = unsafe { ((*factory).count)(factory) };
            for index in 0..count {
                let bad = |reason: String| PluginHostError::BadDescriptor {
                    path: self.path.clone(),
                    factory: factory_id,
                    index,
                    reason,
                };
                // SAFETY: as above; index < count.
                let d = unsafe { ((*factory).descriptor)(factory, index) };
                if d.is_null() {
                    return Err(bad("null descriptor".into()));
                }
                // SAFETY: non-null descriptor owned by the plugin, valid until deinit.
                let d: &LetheDescriptor = unsafe { &*d };
                let Some(kind) = Kind::from_abi(d.kind) else {
                    // A kind from a newer ABI minor: skip rather than refuse the library.
                    continue;
                };
                // SAFETY: descriptor strings are NUL-terminated or null (ABI contract).
                let text = |p, field: &str| {
                    unsafe { owned_str(p) }.ok_or_else(|| bad(format!("`{field}` is null")))
                };
                let id = text(d.id, "id")?;
                let schema_json = text(d.params_schema, "params_schema")?;
                let schema = Schema::from_plugin_json(&schema_json, self.entry.abi.minor)
                    .map_err(|e: SchemaError| bad(format!("`{id}`: {e}")))?;
                out.push(PluginDescriptor {
                    name: text(d.name, "name")?,
                    version: text(d.version, "version")?,
                    description: text(d.description, "description")?,
                    citation: text(d.citation, "citation")?,
                    id,
                    kind,
                    schema,
                    factory: FactoryPtr(factory),
                });
            }
        }
        Ok(out)
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's ABI version.
    pub fn abi_version(&self) -> abi::LetheAbiVersion {
        self.entry.abi
    }

    /// The plugin's build info.
    pub fn build_info(&self) -> &LetheBuildInfo {
        &self.entry.build
    }

    /// Every method and attack the library offers.
    pub fn descriptors(&self) -> &[PluginDescriptor] {
        &self.descriptors
    }

    /// The method or attack with this id.
    pub fn descriptor(&self, id: &str) -> Result<&PluginDescriptor, PluginHostError> {
        self.descriptors.iter().find(|d| d.id == id).ok_or_else(|| {
            PluginHostError::UnknownDescriptor {
                path: self.path.clone(),
                id: id.to_string(),
                known: self
                    .descriptors
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
    }

    /// Validates `params` against the descriptor's schema; returns the complete
    /// params with defaults filled in.
    pub fn validate_params(
        &self,
        id: &str,
        params: &Value,
    ) -> Result<Map<String, Value>, PluginHostError> {
        let d = self.descriptor(id)?;
        d.schema
            .validate(params)
            .map_err(|source| PluginHostError::InvalidParams {
                path: self.path.clone(),
                id: id.to_string(),
                source,
            })
    }

    /// Validates `params` and creates an instance of `id` that reports to
    /// `services`.
    pub fn create(
        self: &Arc<Self>,
        id: &str,
        params: &Value,
        services: Arc<dyn HostServices>,
    ) -> Result<PluginInstance, PluginHostError> {
        let full = self.validate_params(id, params)?;
        let factory = self.descriptor(id)?.factory.0;
        let host = host::HostBlock::new(services);
        let id_c = CString::new(id).unwrap_or_default();
        let params_c = CString::new(Value::Object(full).to_string()).unwrap_or_default();
        let mut raw: *const LetheInstance = std::ptr::null();
        let status = {
            let _serial = lock(&self.lock);
            // SAFETY: factory from this library; host block boxed and kept alive in
            // the instance until after destroy; strings valid for the call.
            unsafe {
                ((*factory).create)(
                    factory,
                    host.as_raw(),
                    id_c.as_ptr(),
                    params_c.as_ptr(),
                    &mut raw,
                )
            }
        };
        if !status.is_ok() || raw.is_null() {
            return Err(self.call_error(id, "create", status));
        }
        Ok(PluginInstance {
            library: Arc::clone(self),
            id: id.to_string(),
            raw,
            _host: host,
        })
    }

    fn call_error(&self, id: &str, call: &'static str, status: LetheStatus) -> PluginHostError {
        // SAFETY: [any-thread], never null; read on the thread that made the call.
        let message = unsafe { owned_str((self.entry.last_error)()) }.unwrap_or_default();
        let status = if status.is_ok() {
            // OK with a null instance is a plugin bug; report it as such.
            LetheStatus::ERROR
        } else {
            status
        };
        PluginHostError::Call {
            path: self.path.clone(),
            id: id.to_string(),
            call,
            status,
            message: if message.is_empty() {
                "(the plugin gave no message)".to_string()
            } else {
                message
            },
        }
    }
}

/// The file extension of plugin libraries on this platform.
pub const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

/// One file found by [`scan_dir`]: its path and its library or why it was refused.
pub type ScannedLibrary = (PathBuf, Result<Arc<PluginLibrary>, PluginHostError>);

/// Loads every plugin library (`*.so` on Linux) directly inside `dir`, in file-name
/// order, returning each file with its library or the reason it was refused. Other
/// files are ignored. Fails only when `dir` cannot be read.
///
/// Like [`PluginLibrary::load`], this runs plugin code: do it in a worker process.
pub fn scan_dir(dir: &Path) -> std::io::Result<Vec<ScannedLibrary>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == LIBRARY_EXTENSION))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|path| {
            let result = PluginLibrary::load(&path);
            (path, result)
        })
        .collect())
}

/// A live method or attack. Dropping it destroys it in the plugin.
#[derive(Debug)]
pub struct PluginInstance {
    library: Arc<PluginLibrary>,
    id: String,
    raw: *const LetheInstance,
    // Declared after `raw` and dropped after destroy (see Drop): the plugin holds
    // the host pointer until then.
    _host: Box<host::HostBlock>,
}

// SAFETY: the instance's [main-thread] calls go through the library lock; the host
// block is Send + Sync.
unsafe impl Send for PluginInstance {}

impl PluginInstance {
    /// The descriptor id it was created from.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The library it comes from.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    /// Runs it to completion. A cancellation shows up as
    /// `Err(Call { status: CANCELLED, .. })`, a plugin panic as `status: PANIC`.
    pub fn run(&mut self) -> Result<(), PluginHostError> {
        let _serial = lock(&self.library.lock);
        // SAFETY: live instance from create; [main-thread] serialised by the lock.
        let status = unsafe { ((*self.raw).run)(self.raw) };
        if status.is_ok() {
            Ok(())
        } else {
            Err(self.library.call_error(&self.id, "run", status))
        }
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        let _serial = lock(&self.library.lock);
        // SAFETY: live instance; destroy is its last call. The host block is freed
        // only after this, when the fields drop.
        unsafe { ((*self.raw).destroy)(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_differences_name_every_mismatch() {
        let host = lethe_plugin_api::build_info("0.26.0", Some("2.13.0+cpu"), Some("false"), None);
        assert!(build_differences(&host, &host).is_empty());
        let plugin =
            lethe_plugin_api::build_info("0.25.0", Some("2.12.1+cu126"), Some("true"), Some("0"));
        let diffs = build_differences(&host, &plugin);
        assert_eq!(
            diffs,
            vec![
                "libtorch: plugin 2.12.1+cu126, Lethe 2.13.0+cpu",
                "tch: plugin 0.25.0, Lethe 0.26.0",
                "CUDA libtorch: plugin yes, Lethe no",
                "C++11 ABI: plugin no, Lethe yes",
            ]
        );
        // A plugin without libtorch exchanges no tensors: only the target matters.
        let plain = lethe_plugin_api::build_info("", None, None, Some("0"));
        assert!(build_differences(&host, &plain).is_empty());
    }
}
