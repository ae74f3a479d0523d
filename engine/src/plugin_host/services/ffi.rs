//! The C vtables of `lethe.model/1`, `lethe.data/1`, `lethe.result/1`,
//! `lethe.augment/1`, `lethe.model-init/1`, `lethe.shadow/1` and `lethe.probe/1` over
//! [`EngineServices`]. Each function finds the services behind the host pointer,
//! converts arguments, calls the Rust API and maps errors to a status plus
//! `last_error`. Panics (tch's non-`f_` ops panic on libtorch errors, e.g. a wrong
//! input shape in the model) are caught here: unwinding into the plugin's frames
//! would abort the process.

use std::any::Any;
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use lethe_plugin_api::abi::{
    self, LetheAugmentRecipe, LetheHost, LetheHostAugment, LetheHostData, LetheHostModel,
    LetheHostModelInit, LetheHostProbe, LetheHostResult, LetheHostShadow, LetheModelHead,
    LetheSplit, LetheStatus, LetheTensor,
};
use tch::Device;

use super::{AugmentRecipe, DataSplit, EngineServices, Head, LoaderId, ServiceError};
use crate::plugin_host::{services_of, set_last_error, tensor_from_borrowed, tensor_into_handle};

static MODEL: LetheHostModel = LetheHostModel {
    device: m_device,
    set_train: m_set_train,
    forward: m_forward,
    parameter_count: m_parameter_count,
    parameter: m_parameter,
};

static DATA: LetheHostData = LetheHostData {
    len: d_len,
    open_loader: d_open_loader,
    next_batch: d_next_batch,
    close_loader: d_close_loader,
};

static RESULT: LetheHostResult = LetheHostResult {
    save_model: r_save_model,
    put_tensor: r_put_tensor,
    put_json: r_put_json,
};

static AUGMENT: LetheHostAugment = LetheHostAugment { augment: a_augment };

static MODEL_INIT: LetheHostModelInit = LetheHostModelInit {
    reinitialize: i_reinitialize,
    training_recipe: i_training_recipe,
};

static SHADOW: LetheHostShadow = LetheHostShadow {
    prepare: s_prepare,
    logits: s_logits,
};

static PROBE: LetheHostProbe = LetheHostProbe {
    prepare: p_prepare,
    logits: p_logits,
};

/// The vtable for `id`, or null when these services do not offer it.
pub(super) fn extension(id: &str) -> *const c_void {
    match id {
        abi::EXT_MODEL => (&MODEL as *const LetheHostModel).cast(),
        abi::EXT_DATA => (&DATA as *const LetheHostData).cast(),
        abi::EXT_RESULT => (&RESULT as *const LetheHostResult).cast(),
        abi::EXT_AUGMENT => (&AUGMENT as *const LetheHostAugment).cast(),
        abi::EXT_MODEL_INIT => (&MODEL_INIT as *const LetheHostModelInit).cast(),
        abi::EXT_SHADOW => (&SHADOW as *const LetheHostShadow).cast(),
        abi::EXT_PROBE => (&PROBE as *const LetheHostProbe).cast(),
        _ => std::ptr::null(),
    }
}

/// The [`EngineServices`] behind a host pointer.
///
/// # Safety
/// `host` must be null or the live host pointer of an instance created with these
/// services (what the plugin passes to every extension call).
unsafe fn engine<'a>(host: *const LetheHost) -> Option<&'a EngineServices> {
    // SAFETY: caller contract.
    let services = unsafe { services_of(host) }?;
    (services as &dyn Any).downcast_ref::<EngineServices>()
}

fn status_of(e: &ServiceError) -> LetheStatus {
    use crate::shadows::ShadowError;
    match e {
        ServiceError::NoSuchHead(_) | ServiceError::NoSuchSplit(_) => LetheStatus::UNSUPPORTED,
        ServiceError::InvalidArgument(_) => LetheStatus::INVALID_ARGUMENT,
        ServiceError::BadState(_) => LetheStatus::BAD_STATE,
        ServiceError::Shadow(ShadowError::Cancelled { .. } | ShadowError::EstimateOnly { .. }) => {
            LetheStatus::CANCELLED
        }
        ServiceError::Shadow(ShadowError::Request(_)) => LetheStatus::INVALID_ARGUMENT,
        ServiceError::Shadow(ShadowError::Recipe(_)) => LetheStatus::UNSUPPORTED,
        ServiceError::Probe(crate::train::probe::ProbeError::Cancelled) => LetheStatus::CANCELLED,
        _ => LetheStatus::ERROR,
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs a status-returning service call: errors and panics become a status and
/// the thread's last-error message.
///
/// # Safety
/// `host` as for [`engine`].
unsafe fn call(
    host: *const LetheHost,
    what: &str,
    f: impl FnOnce(&EngineServices) -> Result<(), ServiceError>,
) -> LetheStatus {
    // SAFETY: forwarded contract.
    let Some(services) = (unsafe { engine(host) }) else {
        set_last_error(&format!("{what}: not a Lethe job host"));
        return LetheStatus::INVALID_ARGUMENT;
    };
    match catch_unwind(AssertUnwindSafe(|| f(services))) {
        Ok(Ok(())) => LetheStatus::OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{what}: {e}"));
            status_of(&e)
        }
        Err(payload) => {
            set_last_error(&format!("{what}: host error: {}", panic_text(&*payload)));
            LetheStatus::ERROR
        }
    }
}

/// # Safety
/// `p` must be null or NUL-terminated.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, ServiceError> {
    if p.is_null() {
        return Err(ServiceError::InvalidArgument(format!("{what} is null")));
    }
    // SAFETY: caller contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| ServiceError::InvalidArgument(format!("{what} is not UTF-8")))
}

fn null_out() -> ServiceError {
    ServiceError::InvalidArgument("an out-parameter is null".into())
}

fn split_of(split: LetheSplit) -> Result<DataSplit, ServiceError> {
    Ok(match split {
        LetheSplit::FORGET => DataSplit::Forget,
        LetheSplit::RETAIN => DataSplit::Retain,
        LetheSplit::VALIDATION => DataSplit::Validation,
        LetheSplit::TEST => DataSplit::Test,
        other => {
            return Err(ServiceError::InvalidArgument(format!(
                "unknown split code {}",
                other.0
            )));
        }
    })
}

unsafe extern "C" fn m_device(host: *const LetheHost) -> i32 {
    // SAFETY: ABI contract on `host`.
    match unsafe { engine(host) }.map(EngineServices::device) {
        Some(Device::Cuda(n)) => i32::try_from(n).unwrap_or(i32::MAX),
        _ => -1,
    }
}

unsafe extern "C" fn m_set_train(host: *const LetheHost, train: bool) -> LetheStatus {
    // SAFETY: ABI contract on `host`.
    unsafe {
        call(host, "model.set_train", |s| {
            s.set_train(train);
            Ok(())
        })
    }
}

unsafe extern "C" fn m_forward(
    host: *const LetheHost,
    head: LetheModelHead,
    input: LetheTensor,
    out: *mut LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: `input` borrowed for the call, `out` writable.
    unsafe {
        call(host, "model.forward", |s| {
            if out.is_null() {
                return Err(null_out());
            }
            *out = std::ptr::null_mut();
            let head = match head {
                LetheModelHead::ENCODER => Head::Encoder,
                LetheModelHead::CLASSIFIER => Head::Classifier,
                LetheModelHead::PROJECTION => Head::Projection,
                other => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "unknown model head code {}",
                        other.0
                    )));
                }
            };
            let x = tensor_from_borrowed(input)
                .ok_or_else(|| ServiceError::InvalidArgument("input tensor is null".into()))?;
            let y = s.forward(head, &x)?;
            *out = tensor_into_handle(y);
            Ok(())
        })
    }
}

unsafe extern "C" fn m_parameter_count(host: *const LetheHost) -> u32 {
    // SAFETY: ABI contract on `host`.
    unsafe { engine(host) }
        .map(|s| u32::try_from(s.parameter_count()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

unsafe extern "C" fn m_parameter(
    host: *const LetheHost,
    index: u32,
    out_name: *mut *const c_char,
    out_tensor: *mut LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: out-parameters writable.
    unsafe {
        call(host, "model.parameter", |s| {
            if out_name.is_null() || out_tensor.is_null() {
                return Err(null_out());
            }
            let (name, t) = s.parameter_raw(index as usize)?;
            *out_name = name;
            *out_tensor = tensor_into_handle(t);
            Ok(())
        })
    }
}

unsafe extern "C" fn d_len(host: *const LetheHost, split: LetheSplit) -> i64 {
    // SAFETY: ABI contract on `host`.
    let Some(s) = (unsafe { engine(host) }) else {
        return -1;
    };
    split_of(split)
        .ok()
        .and_then(|split| s.len(split))
        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

unsafe extern "C" fn d_open_loader(
    host: *const LetheHost,
    split: LetheSplit,
    batch_size: u32,
    shuffle: bool,
    augment: bool,
    out_loader: *mut *mut c_void,
) -> LetheStatus {
    // SAFETY: ABI contract: `out_loader` writable.
    unsafe {
        call(host, "data.open_loader", |s| {
            if out_loader.is_null() {
                return Err(null_out());
            }
            *out_loader = std::ptr::null_mut();
            let id = s.open_loader(split_of(split)?, batch_size as usize, shuffle, augment)?;
            // The handle is the loader's key (never 0), not an address.
            *out_loader = id.0 as usize as *mut c_void;
            Ok(())
        })
    }
}

unsafe extern "C" fn d_next_batch(
    host: *const LetheHost,
    loader: *mut c_void,
    out_inputs: *mut LetheTensor,
    out_labels: *mut LetheTensor,
    out_has_batch: *mut bool,
) -> LetheStatus {
    // SAFETY: ABI contract: out-parameters writable.
    unsafe {
        call(host, "data.next_batch", |s| {
            if out_inputs.is_null() || out_labels.is_null() || out_has_batch.is_null() {
                return Err(null_out());
            }
            *out_inputs = std::ptr::null_mut();
            *out_labels = std::ptr::null_mut();
            *out_has_batch = false;
            if let Some(batch) = s.next_batch(LoaderId(loader as usize as u64))? {
                *out_inputs = tensor_into_handle(batch.inputs);
                *out_labels = tensor_into_handle(batch.labels);
                *out_has_batch = true;
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn d_close_loader(host: *const LetheHost, loader: *mut c_void) {
    if loader.is_null() {
        return;
    }
    // SAFETY: ABI contract on `host`. Closing an unknown key is a no-op: the
    // signature has no status to report it with.
    unsafe {
        call(host, "data.close_loader", |s| {
            s.close_loader(LoaderId(loader as usize as u64));
            Ok(())
        })
    };
}

unsafe extern "C" fn r_save_model(host: *const LetheHost) -> LetheStatus {
    // SAFETY: ABI contract on `host`.
    unsafe { call(host, "result.save_model", |s| s.save_model().map(|_| ())) }
}

unsafe extern "C" fn r_put_tensor(
    host: *const LetheHost,
    name: *const c_char,
    tensor: LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: `name` NUL-terminated, `tensor` borrowed for the call.
    unsafe {
        call(host, "result.put_tensor", |s| {
            let name = text(name, "result name")?;
            let t = tensor_from_borrowed(tensor)
                .ok_or_else(|| ServiceError::InvalidArgument("tensor is null".into()))?;
            s.put_tensor(name, &t).map(|_| ())
        })
    }
}

unsafe extern "C" fn r_put_json(
    host: *const LetheHost,
    name: *const c_char,
    json: *const c_char,
) -> LetheStatus {
    // SAFETY: ABI contract: both strings NUL-terminated, borrowed for the call.
    unsafe {
        call(host, "result.put_json", |s| {
            s.put_json(text(name, "result name")?, text(json, "JSON")?)
                .map(|_| ())
        })
    }
}

unsafe extern "C" fn a_augment(
    host: *const LetheHost,
    input: LetheTensor,
    recipe: LetheAugmentRecipe,
    out: *mut LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: `input` borrowed for the call, `out` writable.
    unsafe {
        call(host, "augment.augment", |s| {
            if out.is_null() {
                return Err(null_out());
            }
            *out = std::ptr::null_mut();
            let recipe = match recipe {
                LetheAugmentRecipe::TRAINING => AugmentRecipe::Training,
                LetheAugmentRecipe::CONTRASTIVE => AugmentRecipe::Contrastive,
                LetheAugmentRecipe::LIGHT => AugmentRecipe::Light,
                other => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "unknown augmentation recipe code {}",
                        other.0
                    )));
                }
            };
            let x = tensor_from_borrowed(input)
                .ok_or_else(|| ServiceError::InvalidArgument("input tensor is null".into()))?;
            *out = tensor_into_handle(s.augment(&x, recipe)?);
            Ok(())
        })
    }
}

unsafe extern "C" fn i_reinitialize(host: *const LetheHost, seed: u64) -> LetheStatus {
    // SAFETY: ABI contract on `host`.
    unsafe { call(host, "model-init.reinitialize", |s| s.reinitialize(seed)) }
}

unsafe extern "C" fn i_training_recipe(host: *const LetheHost) -> *const c_char {
    // SAFETY: ABI contract on `host`. The string lives as long as the services,
    // which outlive the host struct the plugin holds.
    match unsafe { engine(host) } {
        Some(s) => s.recipe.as_ptr(),
        None => c"{}".as_ptr(),
    }
}

unsafe extern "C" fn s_prepare(
    host: *const LetheHost,
    request_json: *const c_char,
    out_summary: *mut *const c_char,
) -> LetheStatus {
    // SAFETY: ABI contract: the request is NUL-terminated and borrowed, the
    // out-parameter writable.
    unsafe {
        call(host, "shadow.prepare", |s| {
            if out_summary.is_null() {
                return Err(null_out());
            }
            *out_summary = std::ptr::null();
            s.shadow_prepare(text(request_json, "shadow request")?)?;
            // The summary lives in the services until the next prepare.
            *out_summary = s.shadow_summary_ptr();
            Ok(())
        })
    }
}

unsafe extern "C" fn s_logits(
    host: *const LetheHost,
    split: LetheSplit,
    out_logits: *mut LetheTensor,
    out_members: *mut LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: out-parameters writable.
    unsafe {
        call(host, "shadow.logits", |s| {
            if out_logits.is_null() || out_members.is_null() {
                return Err(null_out());
            }
            *out_logits = std::ptr::null_mut();
            *out_members = std::ptr::null_mut();
            let (logits, members) = s.shadow_logits(split_of(split)?)?;
            *out_logits = tensor_into_handle(logits);
            *out_members = tensor_into_handle(members);
            Ok(())
        })
    }
}

unsafe extern "C" fn p_prepare(
    host: *const LetheHost,
    request_json: *const c_char,
    out_summary: *mut *const c_char,
) -> LetheStatus {
    // SAFETY: ABI contract: the request is NUL-terminated and borrowed, the
    // out-parameter writable.
    unsafe {
        call(host, "probe.prepare", |s| {
            if out_summary.is_null() {
                return Err(null_out());
            }
            *out_summary = std::ptr::null();
            s.probe_prepare(text(request_json, "probe request")?)?;
            // The summary lives in the services until the next prepare.
            *out_summary = s.probe_summary_ptr();
            Ok(())
        })
    }
}

unsafe extern "C" fn p_logits(
    host: *const LetheHost,
    input: LetheTensor,
    out: *mut LetheTensor,
) -> LetheStatus {
    // SAFETY: ABI contract: `input` borrowed for the call, `out` writable.
    unsafe {
        call(host, "probe.logits", |s| {
            if out.is_null() {
                return Err(null_out());
            }
            *out = std::ptr::null_mut();
            let x = tensor_from_borrowed(input)
                .ok_or_else(|| ServiceError::InvalidArgument("input tensor is null".into()))?;
            *out = tensor_into_handle(s.probe_logits(&x)?);
            Ok(())
        })
    }
}
