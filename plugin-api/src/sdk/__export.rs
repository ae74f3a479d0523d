//! Machinery behind [`declare_plugin!`](crate::declare_plugin). Public only so the
//! macro can reach it from the plugin crate; not a stable API.

use super::{Descriptor, HostContext, Kind, Params, Plugin, PluginError, c_string, read_c_str};
use crate::abi::{
    self, LetheDescriptor, LetheHost, LetheInstance, LethePluginFactory, LetheStatus,
};
use crate::schema::Schema;
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// tch version a plugin built with this SDK links (empty without the `tch` feature).
pub const TCH_IN_USE: &str = if cfg!(feature = "tch") {
    crate::TCH_VERSION
} else {
    ""
};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let message = c_string(message);
    // try_with: during thread teardown the slot may be gone; losing the message then
    // beats panicking inside an extern "C" function.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// [any-thread] The exported `last_error`: the message of the last failed call on
/// this thread. The pointer stays valid until the next failure on this thread.
pub unsafe extern "C" fn last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    LAST_ERROR
        .try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(EMPTY.as_ptr().cast())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(panic payload is not a string)".to_string()
    }
}

/// Runs `f`, turning an error or a panic into a status and the thread's last error.
fn guard(what: &str, f: impl FnOnce() -> Result<(), PluginError>) -> LetheStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => LetheStatus::OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.status()
        }
        Err(payload) => {
            set_last_error(&format!(
                "plugin panicked in {what}: {}",
                panic_message(&*payload)
            ));
            // A payload whose Drop panics would abort here; leaking it is harmless.
            std::mem::forget(payload);
            LetheStatus::PANIC
        }
    }
}

/// Like [`guard`] for functions that return a value, with `fallback` on failure.
fn guard_value<T>(what: &str, fallback: T, f: impl FnOnce() -> Result<T, PluginError>) -> T {
    let mut out = None;
    let status = guard(what, || {
        out = Some(f()?);
        Ok(())
    });
    match out {
        Some(v) if status.is_ok() => v,
        _ => fallback,
    }
}

/// One plugin type, erased: how to describe it and how to create it.
#[derive(Debug)]
pub struct PluginVTable {
    descriptor: fn() -> Descriptor,
    create: fn(&Params) -> Result<Box<dyn Plugin>, PluginError>,
}

fn create_boxed<T: Plugin>(params: &Params) -> Result<Box<dyn Plugin>, PluginError> {
    Ok(Box::new(T::create(params)?))
}

impl PluginVTable {
    /// The vtable of `T`.
    pub const fn of<T: Plugin>() -> Self {
        PluginVTable {
            descriptor: T::descriptor,
            create: create_boxed::<T>,
        }
    }
}

/// A descriptor with the C strings its [`LetheDescriptor`] points into.
struct CachedDescriptor {
    raw: LetheDescriptor,
    _strings: Vec<CString>,
    id: String,
    schema: Schema,
    vtable: &'static PluginVTable,
}

impl CachedDescriptor {
    fn new(d: Descriptor, vtable: &'static PluginVTable) -> Self {
        let strings: Vec<CString> = [
            &d.id,
            &d.name,
            &d.version,
            &d.description,
            &d.citation,
            &d.schema.to_json(),
        ]
        .iter()
        .map(|s| c_string(s))
        .collect();
        // CString's heap buffer does not move when the Vec or the struct moves, so
        // these pointers stay valid as long as `_strings` lives.
        let raw = LetheDescriptor {
            id: strings[0].as_ptr(),
            name: strings[1].as_ptr(),
            version: strings[2].as_ptr(),
            kind: d.kind.to_abi(),
            description: strings[3].as_ptr(),
            citation: strings[4].as_ptr(),
            params_schema: strings[5].as_ptr(),
        };
        CachedDescriptor {
            raw,
            _strings: strings,
            id: d.id,
            schema: d.schema,
            vtable,
        }
    }
}

/// A factory: the ABI struct first, so the `*const LethePluginFactory` the host
/// gets back can be cast to this.
#[repr(C)]
struct FactoryImpl {
    abi: LethePluginFactory,
    entries: Vec<CachedDescriptor>,
}

struct Loaded {
    methods: FactoryImpl,
    attacks: FactoryImpl,
}

// SAFETY: built once in `init`, immutable afterwards; the raw pointers inside point
// into the same immutable value.
unsafe impl Sync for Loaded {}
// SAFETY: as above.
unsafe impl Send for Loaded {}

/// All plugin types of one library and their descriptors once initialised.
pub struct Registry {
    plugins: &'static [PluginVTable],
    loaded: OnceLock<Loaded>,
    active: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.plugins.len())
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl Registry {
    /// A registry of these plugin types (built by the macro, in a `static`).
    pub const fn new(plugins: &'static [PluginVTable]) -> Self {
        Registry {
            plugins,
            loaded: OnceLock::new(),
            active: AtomicBool::new(false),
        }
    }

    fn build(&'static self) -> Result<Loaded, PluginError> {
        let factory = |entries| FactoryImpl {
            abi: LethePluginFactory {
                count: factory_count,
                descriptor: factory_descriptor,
                create: factory_create,
            },
            entries,
        };
        let mut methods = Vec::new();
        let mut attacks = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for vtable in self.plugins {
            let d = (vtable.descriptor)();
            if d.id.is_empty() || !ids.insert(d.id.clone()) {
                return Err(PluginError::msg(format!(
                    "descriptor id `{}` is empty or declared twice",
                    d.id
                )));
            }
            d.schema
                .check()
                .map_err(|e| PluginError::msg(format!("descriptor `{}`: {e}", d.id)))?;
            let kind = d.kind;
            let cached = CachedDescriptor::new(d, vtable);
            match kind {
                Kind::Method => methods.push(cached),
                Kind::Attack => attacks.push(cached),
            }
        }
        Ok(Loaded {
            methods: factory(methods),
            attacks: factory(attacks),
        })
    }

    /// The exported `init`.
    ///
    /// # Safety
    /// `path` must be null or a NUL-terminated string.
    pub unsafe fn init(&'static self, _path: *const c_char) -> LetheStatus {
        guard("init", || {
            if self.loaded.get().is_none() {
                let loaded = self.build()?;
                // A racing second init loses harmlessly: both built the same thing.
                let _ = self.loaded.set(loaded);
            }
            self.active.store(true, Ordering::Release);
            Ok(())
        })
    }

    /// The exported `deinit`. Descriptors stay allocated (the library is never
    /// unloaded and the host may still hold pointers); factories are no longer
    /// handed out.
    pub fn deinit(&'static self) {
        self.active.store(false, Ordering::Release);
    }

    /// The exported `get_factory`.
    ///
    /// # Safety
    /// `id` must be null or a NUL-terminated string.
    pub unsafe fn get_factory(&'static self, id: *const c_char) -> *const c_void {
        guard_value("get_factory", ptr::null(), || {
            let loaded = match self.loaded.get() {
                Some(l) if self.active.load(Ordering::Acquire) => l,
                _ => {
                    return Err(PluginError::BadState(
                        "get_factory called before init".to_string(),
                    ));
                }
            };
            // SAFETY: caller contract.
            let id = unsafe { read_c_str(id) };
            let factory = match id.as_str() {
                abi::FACTORY_METHOD => &loaded.methods,
                abi::FACTORY_ATTACK => &loaded.attacks,
                _ => return Ok(ptr::null()),
            };
            Ok((factory as *const FactoryImpl).cast())
        })
    }
}

/// # Safety
/// `factory` must be a pointer this SDK's `get_factory` returned.
unsafe fn factory_impl<'a>(
    factory: *const LethePluginFactory,
) -> Result<&'a FactoryImpl, PluginError> {
    if factory.is_null() {
        return Err(PluginError::msg("null factory"));
    }
    // SAFETY: FactoryImpl is repr(C) with the ABI struct first; the pointer came
    // from get_factory and points into a static that lives forever.
    Ok(unsafe { &*factory.cast::<FactoryImpl>() })
}

unsafe extern "C" fn factory_count(factory: *const LethePluginFactory) -> u32 {
    guard_value("factory.count", 0, || {
        // SAFETY: ABI contract: the host passes back what get_factory returned.
        let f = unsafe { factory_impl(factory) }?;
        Ok(u32::try_from(f.entries.len()).unwrap_or(u32::MAX))
    })
}

unsafe extern "C" fn factory_descriptor(
    factory: *const LethePluginFactory,
    index: u32,
) -> *const LetheDescriptor {
    guard_value("factory.descriptor", ptr::null(), || {
        // SAFETY: as in factory_count.
        let f = unsafe { factory_impl(factory) }?;
        Ok(f.entries
            .get(index as usize)
            .map_or(ptr::null(), |e| &e.raw as *const LetheDescriptor))
    })
}

/// What an instance's `plugin_data` points to.
struct InstanceData {
    plugin: Box<dyn Plugin>,
    ctx: HostContext,
    ran: bool,
}

unsafe extern "C" fn factory_create(
    factory: *const LethePluginFactory,
    host: *const LetheHost,
    descriptor_id: *const c_char,
    params_json: *const c_char,
    out_instance: *mut *const LetheInstance,
) -> LetheStatus {
    if out_instance.is_null() {
        set_last_error("create: out_instance is null");
        return LetheStatus::INVALID_ARGUMENT;
    }
    // SAFETY: checked non-null; the host owns the slot.
    unsafe { *out_instance = ptr::null() };
    guard("create", || {
        // SAFETY: as in factory_count.
        let f = unsafe { factory_impl(factory) }?;
        // SAFETY: ABI contract: null or NUL-terminated.
        let id = unsafe { read_c_str(descriptor_id) };
        let entry = f.entries.iter().find(|e| e.id == id).ok_or_else(|| {
            let known: Vec<&str> = f.entries.iter().map(|e| e.id.as_str()).collect();
            PluginError::msg(format!(
                "no descriptor `{id}` in this factory (it has: {})",
                known.join(", ")
            ))
        })?;
        if host.is_null() {
            return Err(PluginError::msg("create: host is null"));
        }
        // SAFETY: non-null host valid for the instance's life (ABI contract); abi
        // is its first field in every version.
        let host_abi = unsafe { (*host).abi };
        if host_abi.major != crate::ABI_MAJOR {
            return Err(PluginError::msg(format!(
                "host speaks plugin ABI {}.{}, this plugin {}.{}",
                host_abi.major,
                host_abi.minor,
                crate::ABI_MAJOR,
                crate::ABI_MINOR
            )));
        }
        // SAFETY: ABI contract: null or NUL-terminated.
        let text = unsafe { read_c_str(params_json) };
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| PluginError::msg(format!("params are not valid JSON: {e}")))?
        };
        let params = Params::from_map(entry.schema.validate(&value)?);
        let plugin = (entry.vtable.create)(&params)?;
        // SAFETY: host checked non-null and valid as above.
        let ctx = unsafe { HostContext::from_raw(host) };
        let data = Box::new(InstanceData {
            plugin,
            ctx,
            ran: false,
        });
        let instance = Box::new(LetheInstance {
            plugin_data: Box::into_raw(data).cast(),
            run: instance_run,
            destroy: instance_destroy,
            get_extension: instance_get_extension,
        });
        // SAFETY: checked non-null above.
        unsafe { *out_instance = Box::into_raw(instance) };
        Ok(())
    })
}

/// # Safety
/// `instance` must come from `factory_create` and not be destroyed.
unsafe fn instance_data<'a>(
    instance: *const LetheInstance,
) -> Result<&'a mut InstanceData, PluginError> {
    if instance.is_null() {
        return Err(PluginError::msg("null instance"));
    }
    // SAFETY: plugin_data is the Box<InstanceData> leaked in create; [main-thread]
    // calls are serialised by the host, so this is the only live reference.
    Ok(unsafe { &mut *(*instance).plugin_data.cast::<InstanceData>() })
}

unsafe extern "C" fn instance_run(instance: *const LetheInstance) -> LetheStatus {
    guard("run", || {
        // SAFETY: ABI contract on `instance`.
        let data = unsafe { instance_data(instance) }?;
        if data.ran {
            return Err(PluginError::BadState(
                "run called twice on one instance".to_string(),
            ));
        }
        data.ran = true;
        data.plugin.run(&mut data.ctx)
    })
}

unsafe extern "C" fn instance_destroy(instance: *const LetheInstance) {
    if instance.is_null() {
        return;
    }
    let _ = guard("destroy", || {
        // SAFETY: both boxes were leaked in create and are freed exactly once here
        // (ABI contract: destroy is the last call on the instance).
        unsafe {
            let instance = Box::from_raw(instance.cast_mut());
            drop(Box::from_raw(instance.plugin_data.cast::<InstanceData>()));
        }
        Ok(())
    });
}

unsafe extern "C" fn instance_get_extension(
    _instance: *const LetheInstance,
    _extension_id: *const c_char,
) -> *const c_void {
    ptr::null()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{LetheAbiVersion, LetheHost};
    use crate::schema::ParamSpec;
    use std::ffi::CStr;

    #[test]
    fn guard_turns_panics_and_errors_into_statuses() {
        let status = guard("run", || panic!("boom {}", 42));
        assert_eq!(status, LetheStatus::PANIC);
        // SAFETY: last_error never returns null.
        let msg = unsafe { read_c_str(last_error()) };
        assert_eq!(msg, "plugin panicked in run: boom 42");
        assert_eq!(
            guard("run", || Err(PluginError::Cancelled)),
            LetheStatus::CANCELLED
        );
        // SAFETY: as above.
        assert_eq!(unsafe { read_c_str(last_error()) }, "cancelled by the host");
        assert_eq!(guard("run", || Ok(())), LetheStatus::OK);
    }

    struct Counter {
        n: i64,
    }

    impl Plugin for Counter {
        fn descriptor() -> Descriptor {
            Descriptor::new("org.test.counter", "Counter", "1.0.0", Kind::Method)
                .param(ParamSpec::int("n", "N", 0, 10, 3))
        }
        fn create(params: &Params) -> Result<Self, PluginError> {
            Ok(Counter {
                n: params.i64("n")?,
            })
        }
        fn run(&mut self, ctx: &mut HostContext) -> Result<(), PluginError> {
            ctx.info(&format!("n = {}", self.n));
            Ok(())
        }
    }

    struct BadSchema;

    impl Plugin for BadSchema {
        fn descriptor() -> Descriptor {
            Descriptor::new("org.test.bad", "Bad", "1.0.0", Kind::Attack)
                .param(ParamSpec::float("x", "X", 1.0, 0.0, 0.5))
        }
        fn create(_params: &Params) -> Result<Self, PluginError> {
            Ok(BadSchema)
        }
        fn run(&mut self, _ctx: &mut HostContext) -> Result<(), PluginError> {
            Ok(())
        }
    }

    unsafe extern "C" fn no_extension(_h: *const LetheHost, _id: *const c_char) -> *const c_void {
        ptr::null()
    }
    unsafe extern "C" fn no_error(_h: *const LetheHost) -> *const c_char {
        c"".as_ptr()
    }

    fn host() -> LetheHost {
        LetheHost {
            abi: LetheAbiVersion::CURRENT,
            host_data: ptr::null_mut(),
            name: c"test".as_ptr(),
            version: c"0".as_ptr(),
            get_extension: no_extension,
            last_error: no_error,
        }
    }

    fn error() -> String {
        // SAFETY: never null.
        unsafe { read_c_str(last_error()) }
    }

    static GOOD: Registry = Registry::new(&[PluginVTable::of::<Counter>()]);
    static BAD: Registry = Registry::new(&[PluginVTable::of::<BadSchema>()]);

    #[test]
    fn raw_abi_lifecycle_and_plugin_side_validation() {
        let method = c"lethe.factory.method/1";
        // SAFETY: every call below follows the ABI contract with valid pointers.
        unsafe {
            assert!(GOOD.get_factory(method.as_ptr()).is_null());
            assert_eq!(error(), "get_factory called before init");
            assert_eq!(GOOD.init(c"/x.so".as_ptr()), LetheStatus::OK);
            // An empty attack factory still exists (count 0).
            let attacks = GOOD.get_factory(c"lethe.factory.attack/1".as_ptr());
            assert!(!attacks.is_null());
            assert!(
                GOOD.get_factory(c"lethe.factory.other/1".as_ptr())
                    .is_null()
            );
            let f = GOOD
                .get_factory(method.as_ptr())
                .cast::<LethePluginFactory>();
            assert_eq!(((*f).count)(f), 1);
            let d = &*((*f).descriptor)(f, 0);
            assert_eq!(CStr::from_ptr(d.id), c"org.test.counter");
            assert!(((*f).descriptor)(f, 1).is_null());
            let schema = Schema::from_json(&read_c_str(d.params_schema)).unwrap();
            assert!(schema.get("n").is_some());

            let h = host();
            let mut inst: *const LetheInstance = ptr::null();
            let id = c"org.test.counter".as_ptr();
            // The plugin validates again: a host that skipped validation is caught.
            let status = ((*f).create)(f, &h, id, c"{\"n\": 11}".as_ptr(), &mut inst);
            assert_eq!(status, LetheStatus::INVALID_PARAMS);
            assert!(inst.is_null());
            assert!(
                error().contains("`n` = 11 is outside [0, 10]"),
                "{}",
                error()
            );
            let status = ((*f).create)(f, &h, id, c"{nope".as_ptr(), &mut inst);
            assert_eq!(status, LetheStatus::ERROR);
            assert!(error().starts_with("params are not valid JSON"));
            let status = ((*f).create)(f, &h, c"org.x".as_ptr(), ptr::null(), &mut inst);
            assert_eq!(status, LetheStatus::ERROR);
            assert_eq!(
                error(),
                "no descriptor `org.x` in this factory (it has: org.test.counter)"
            );
            let status = ((*f).create)(f, ptr::null(), id, ptr::null(), &mut inst);
            assert_eq!(status, LetheStatus::ERROR);
            assert_eq!(error(), "create: host is null");

            // Null params means all defaults.
            assert_eq!(
                ((*f).create)(f, &h, id, ptr::null(), &mut inst),
                LetheStatus::OK
            );
            assert_eq!(((*inst).run)(inst), LetheStatus::OK);
            assert_eq!(((*inst).run)(inst), LetheStatus::BAD_STATE);
            assert_eq!(error(), "run called twice on one instance");
            ((*inst).destroy)(inst);

            GOOD.deinit();
            assert!(GOOD.get_factory(method.as_ptr()).is_null());
        }
    }

    #[test]
    fn init_refuses_an_inconsistent_schema() {
        // SAFETY: valid (null) path.
        let status = unsafe { BAD.init(ptr::null()) };
        assert_eq!(status, LetheStatus::ERROR);
        assert_eq!(
            error(),
            "descriptor `org.test.bad`: parameter `x`: needs min <= default <= max, got 1 / 0.5 / 0"
        );
    }
}
