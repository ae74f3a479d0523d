//! The host struct a plugin instance receives, and the log / progress /
//! cancellation extensions behind it.

use lethe_plugin_api::abi::{
    self, LetheAbiVersion, LetheHost, LetheHostCancel, LetheHostLog, LetheHostProgress,
    LetheHostTensor, LetheLogLevel, LetheTensor,
};
use lethe_plugin_api::sdk::LogLevel;
use serde_json::Value;
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// What the host does with a plugin's calls. Implementations must be thread-safe:
/// a plugin may report from any thread.
///
/// Extension vtables returned by [`HostServices::extension`] get the host pointer
/// in every call; [`services_of`] turns it back into these services, and (thanks
/// to the `Any` supertrait) `(services as &dyn Any).downcast_ref::<YourType>()`
/// into your own state.
pub trait HostServices: Send + Sync + Any {
    /// A log line from the plugin.
    fn log(&self, level: LogLevel, message: &str);

    /// A progress report: `fraction` in `[0, 1]` or `None` when the plugin does not
    /// know; `metrics` is the plugin's JSON object, when it sent valid JSON.
    fn progress(&self, fraction: Option<f64>, message: &str, metrics: Option<Value>);

    /// Whether the job was asked to stop.
    fn is_cancelled(&self) -> bool {
        false
    }

    /// A further extension vtable (model, data, result, ...) for a versioned id,
    /// or null. The pointer must stay valid while `self` lives. The default offers
    /// none: the worker's job host provides them.
    fn extension(&self, id: &str) -> *const c_void {
        let _ = id;
        std::ptr::null()
    }
}

/// Services that drop everything (listing and checking plugins needs none).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoServices;

impl HostServices for NoServices {
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn progress(&self, _fraction: Option<f64>, _message: &str, _metrics: Option<Value>) {}
}

/// The [`LetheHost`] with the host's private state after it (`repr(C)`, ABI struct
/// first, so the pointer the plugin passes back can be cast to this).
#[repr(C)]
pub(crate) struct HostBlock {
    raw: LetheHost,
    services: Arc<dyn HostServices>,
    _name: CString,
    _version: CString,
}

impl std::fmt::Debug for HostBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBlock").finish_non_exhaustive()
    }
}

impl HostBlock {
    pub(crate) fn new(services: Arc<dyn HostServices>) -> Box<HostBlock> {
        let name = CString::new("lethe").unwrap_or_default();
        let version = CString::new(env!("CARGO_PKG_VERSION")).unwrap_or_default();
        let mut block = Box::new(HostBlock {
            raw: LetheHost {
                abi: LetheAbiVersion::CURRENT,
                host_data: std::ptr::null_mut(),
                name: name.as_ptr(),
                version: version.as_ptr(),
                get_extension,
                last_error,
            },
            services,
            _name: name,
            _version: version,
        });
        let self_ptr: *mut HostBlock = &mut *block;
        block.raw.host_data = self_ptr.cast();
        block
    }

    pub(crate) fn as_raw(&self) -> *const LetheHost {
        &self.raw
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Sets the message the plugin reads from `LetheHost::last_error` after a host
/// extension call on this thread fails; call it before returning a failure status.
pub fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', "")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

unsafe extern "C" fn last_error(_host: *const LetheHost) -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    LAST_ERROR
        .try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// The services behind a host pointer, for extension implementations.
///
/// # Safety
/// `host` must be null or the host pointer this module gave a plugin instance that
/// is still alive (i.e. the pointer a plugin passes into any extension call).
pub unsafe fn services_of<'a>(host: *const LetheHost) -> Option<&'a dyn HostServices> {
    if host.is_null() {
        return None;
    }
    // SAFETY: HostBlock is repr(C) with LetheHost first; caller contract.
    Some(unsafe { &*(*host.cast::<HostBlock>()).services })
}

/// Runs a host callback; a panic in our own services must not unwind into the
/// plugin's frames (that would abort), so it becomes a last-error message.
fn shield<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            set_last_error("host service panicked");
            fallback
        }
    }
}

/// # Safety
/// `p` must be null or NUL-terminated.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: caller contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

static LOG: LetheHostLog = LetheHostLog { log: host_log };
static PROGRESS: LetheHostProgress = LetheHostProgress {
    report: host_progress,
};
static CANCEL: LetheHostCancel = LetheHostCancel {
    is_cancelled: host_is_cancelled,
};
static TENSOR: LetheHostTensor = LetheHostTensor {
    free: host_tensor_free,
};

/// Hands a host tensor to a plugin through an out-parameter: the plugin owns the
/// returned handle and gives it back to `lethe.tensor/1` `free`, which drops it
/// here, with this side's tch shim (the ABI's "freed by the allocating side").
pub fn tensor_into_handle(tensor: tch::Tensor) -> LetheTensor {
    let mut tensor = std::mem::ManuallyDrop::new(tensor);
    tensor.as_mut_ptr().cast()
}

/// A host-owned shallow clone of a tensor the plugin lends for a call (the
/// plugin's handle stays the plugin's).
///
/// # Safety
/// `handle` must be a live `at::Tensor*` for the duration of this call.
pub unsafe fn tensor_from_borrowed(handle: LetheTensor) -> Option<tch::Tensor> {
    if handle.is_null() {
        return None;
    }
    // SAFETY: caller contract; the clone shares the TensorImpl and is ours.
    Some(unsafe { tch::Tensor::clone_from_ptr(handle.cast()) })
}

unsafe extern "C" fn host_tensor_free(_host: *const LetheHost, tensor: LetheTensor) {
    if tensor.is_null() {
        return;
    }
    shield((), || {
        // SAFETY: a handle from tensor_into_handle (ABI: only host-allocated handles
        // come back here), freed once.
        drop(unsafe { tch::Tensor::from_ptr(tensor.cast()) })
    })
}

unsafe extern "C" fn get_extension(host: *const LetheHost, id: *const c_char) -> *const c_void {
    shield(std::ptr::null(), || {
        // SAFETY: ABI contract: host from create, id NUL-terminated.
        let (Some(services), id) = (unsafe { services_of(host) }, unsafe { text(id) }) else {
            return std::ptr::null();
        };
        match id.as_str() {
            abi::EXT_LOG => (&LOG as *const LetheHostLog).cast(),
            abi::EXT_PROGRESS => (&PROGRESS as *const LetheHostProgress).cast(),
            abi::EXT_CANCEL => (&CANCEL as *const LetheHostCancel).cast(),
            abi::EXT_TENSOR => (&TENSOR as *const LetheHostTensor).cast(),
            other => services.extension(other),
        }
    })
}

unsafe extern "C" fn host_log(
    host: *const LetheHost,
    level: LetheLogLevel,
    message: *const c_char,
) {
    shield((), || {
        // SAFETY: ABI contract.
        if let Some(s) = unsafe { services_of(host) } {
            // SAFETY: ABI contract: borrowed NUL-terminated string.
            s.log(LogLevel::from_abi(level), &unsafe { text(message) });
        }
    })
}

unsafe extern "C" fn host_progress(
    host: *const LetheHost,
    fraction: f64,
    message: *const c_char,
    metrics_json: *const c_char,
) {
    shield((), || {
        // SAFETY: ABI contract.
        let Some(s) = (unsafe { services_of(host) }) else {
            return;
        };
        // SAFETY: ABI contract: borrowed NUL-terminated strings or null.
        let (message, metrics) = unsafe { (text(message), text(metrics_json)) };
        let metrics = if metrics.is_empty() {
            None
        } else {
            match serde_json::from_str::<Value>(&metrics) {
                Ok(v) => Some(v),
                Err(e) => {
                    s.log(
                        LogLevel::Warn,
                        &format!("plugin sent progress metrics that are not JSON ({e}): {metrics}"),
                    );
                    None
                }
            }
        };
        let fraction = (fraction >= 0.0).then_some(fraction.min(1.0));
        s.progress(fraction, &message, metrics);
    })
}

unsafe extern "C" fn host_is_cancelled(host: *const LetheHost) -> bool {
    shield(false, || {
        // SAFETY: ABI contract.
        unsafe { services_of(host) }.is_some_and(|s| s.is_cancelled())
    })
}
