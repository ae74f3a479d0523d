//! `tch` wrappers for the tensor-valued host services. They implement the ABI's
//! ownership rules so plugin code only sees owned `tch::Tensor`s:
//!
//! * a tensor we pass to the host is borrowed for the call (`as_ptr`);
//! * a tensor the host returns is adopted: we take a shallow, refcounted clone
//!   (allocated by our own copy of tch's shim, freed by our `Drop`) and hand the
//!   host's handle straight back to [`LetheHostTensor::free`](crate::abi::LetheHostTensor).

use super::{Augment, HostContext, ModelHead, PluginError, Split, c_string, read_c_str};
use crate::abi::{self, LetheTensor};
use std::ffi::{c_char, c_void};
use tch::{Device, Tensor};

/// # Safety
/// `host` and `free` valid; `handle` a live host-allocated handle used only here.
unsafe fn adopt(
    host: *const abi::LetheHost,
    free: &abi::LetheHostTensor,
    handle: LetheTensor,
) -> Result<Tensor, PluginError> {
    if handle.is_null() {
        return Err(PluginError::msg("the host returned a null tensor"));
    }
    // SAFETY: a live at::Tensor* (caller contract); the clone shares the
    // TensorImpl (storage, autograd) and is ours to drop.
    let ours = unsafe { Tensor::clone_from_ptr(handle.cast()) };
    // SAFETY: the host's handle, freed by the host, exactly once.
    unsafe { (free.free)(host, handle) };
    Ok(ours)
}

impl HostContext {
    /// Turns a host-allocated handle into a plugin-owned tensor and frees the
    /// host's handle.
    ///
    /// # Safety
    /// `handle` must be a live tensor handle the host just returned through an
    /// out-parameter, not used again afterwards.
    unsafe fn adopt(&self, handle: LetheTensor) -> Result<Tensor, PluginError> {
        // SAFETY: EXT_TENSOR names LetheHostTensor.
        let free = unsafe { self.ext::<abi::LetheHostTensor>(abi::EXT_TENSOR) }?;
        // SAFETY: forwarded contract; host valid.
        unsafe { adopt(self.host, free, handle) }
    }

    /// The model's device.
    pub fn model_device(&mut self) -> Result<Device, PluginError> {
        Ok(match self.model_device_index()? {
            Some(n) => Device::Cuda(n),
            None => Device::Cpu,
        })
    }

    /// Runs `head` on `input` (on the model's device). Differentiable into the
    /// parameters in train and eval mode alike unless called under
    /// `tch::no_grad` (do that for inference: no graph is recorded then).
    pub fn model_forward(
        &mut self,
        head: ModelHead,
        input: &Tensor,
    ) -> Result<Tensor, PluginError> {
        // SAFETY: EXT_MODEL names LetheHostModel.
        let m = unsafe { self.ext::<abi::LetheHostModel>(abi::EXT_MODEL) }?;
        let mut out: LetheTensor = std::ptr::null_mut();
        // SAFETY: `input` is borrowed for the call; `out` receives an owned handle.
        let status = unsafe {
            (m.forward)(
                self.host,
                head.to_abi(),
                input.as_ptr().cast_mut().cast::<c_void>(),
                &mut out,
            )
        };
        self.check("model.forward", status)?;
        // SAFETY: a fresh handle from the host.
        unsafe { self.adopt(out) }
    }

    /// A new, independently augmented copy of `input` (float `[B, C, H, W]` in
    /// `[0, 1]` on the model's device, e.g. a batch from [`HostContext::batches`]
    /// opened without augmentation). Call it twice for the two views of a
    /// contrastive loss. Needs the host's `lethe.augment/1` (Lethe ≥ ABI 1.1).
    pub fn augment(&mut self, input: &Tensor, recipe: Augment) -> Result<Tensor, PluginError> {
        // SAFETY: EXT_AUGMENT names LetheHostAugment.
        let a = unsafe { self.ext::<abi::LetheHostAugment>(abi::EXT_AUGMENT) }?;
        let mut out: LetheTensor = std::ptr::null_mut();
        // SAFETY: `input` is borrowed for the call; `out` receives an owned handle.
        let status = unsafe {
            (a.augment)(
                self.host,
                input.as_ptr().cast_mut().cast::<c_void>(),
                recipe.to_abi(),
                &mut out,
            )
        };
        self.check("augment.augment", status)?;
        // SAFETY: a fresh handle from the host.
        unsafe { self.adopt(out) }
    }

    /// The model's trainable parameters with their dotted names. Each tensor shares
    /// storage with the model: stepping it (e.g. with `tch::nn::Optimizer` over a
    /// `VarStore` you register them in, or by hand under `tch::no_grad`) updates
    /// the model.
    pub fn model_parameters(&mut self) -> Result<Vec<(String, Tensor)>, PluginError> {
        // SAFETY: EXT_MODEL names LetheHostModel.
        let m = unsafe { self.ext::<abi::LetheHostModel>(abi::EXT_MODEL) }?;
        // SAFETY: vtable from the host.
        let count = unsafe { (m.parameter_count)(self.host) };
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let mut name: *const c_char = std::ptr::null();
            let mut tensor: LetheTensor = std::ptr::null_mut();
            // SAFETY: out-parameters are ours; index < count.
            let status = unsafe { (m.parameter)(self.host, index, &mut name, &mut tensor) };
            self.check("model.parameter", status)?;
            // SAFETY: host-owned name valid as long as the host; fresh tensor handle.
            let name = unsafe { read_c_str(name) };
            // SAFETY: as above.
            out.push((name, unsafe { self.adopt(tensor) }?));
        }
        Ok(out)
    }

    /// Iterates over `split` in batches of `(inputs, labels)`, on the model's
    /// device: inputs float32 `[B, C, H, W]` in `[0, 1]` (pixels / 255, no
    /// mean/std normalisation, ready for [`HostContext::model_forward`] as they
    /// are), labels int64 `[B]`; the last batch may be shorter. Unshuffled, a
    /// split keeps its fixed order (the forget split by ascending sample index).
    /// `augment`: crop and flip (crop only for 1-channel images). The iterator
    /// does not borrow the context, so the loop body can call
    /// [`HostContext::model_forward`]; it must not outlive the instance (keeping it
    /// in the plugin struct is fine: it is dropped, and the loader closed, before
    /// the host goes away).
    pub fn batches(
        &mut self,
        split: Split,
        batch_size: u32,
        shuffle: bool,
        augment: bool,
    ) -> Result<Batches, PluginError> {
        // SAFETY: EXT_DATA / EXT_TENSOR name these vtable types.
        let (data, free) = unsafe {
            (
                self.ext::<abi::LetheHostData>(abi::EXT_DATA)?,
                self.ext::<abi::LetheHostTensor>(abi::EXT_TENSOR)?,
            )
        };
        let mut loader: *mut c_void = std::ptr::null_mut();
        // SAFETY: vtable from the host; `loader` receives a host-owned handle.
        let status = unsafe {
            (data.open_loader)(
                self.host,
                split.to_abi(),
                batch_size,
                shuffle,
                augment,
                &mut loader,
            )
        };
        self.check("data.open_loader", status)?;
        Ok(Batches {
            host: self.host,
            data,
            free,
            loader,
        })
    }

    /// The logits of the shadow models from [`HostContext::shadow_prepare`] on
    /// every sample of `split`, in split order: float `[K, n, C]` and the
    /// membership mask, bool `[K, n]` (true where that sample was in that
    /// model's training half). On the CPU.
    pub fn shadow_logits(&mut self, split: Split) -> Result<(Tensor, Tensor), PluginError> {
        // SAFETY: EXT_SHADOW names LetheHostShadow.
        let sh = unsafe { self.ext::<abi::LetheHostShadow>(abi::EXT_SHADOW) }?;
        let (mut logits, mut members): (LetheTensor, LetheTensor) =
            (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: vtable from the host; out-parameters are ours.
        let status = unsafe { (sh.logits)(self.host, split.to_abi(), &mut logits, &mut members) };
        self.check("shadow.logits", status)?;
        // SAFETY: fresh handles from the host, adopted once each (both, even if
        // the first fails, so neither leaks).
        let (l, m) = unsafe { (self.adopt(logits), self.adopt(members)) };
        Ok((l?, m?))
    }

    /// Logits of the probe from `HostContext::probe_prepare` for `x` (float
    /// images in `[0, 1]` on the model's device, as batches come): the
    /// encoder's features in eval mode through the probe's head, `[B, classes]`.
    pub fn probe_logits(&mut self, x: &Tensor) -> Result<Tensor, PluginError> {
        // SAFETY: EXT_PROBE names LetheHostProbe.
        let p = unsafe { self.ext::<abi::LetheHostProbe>(abi::EXT_PROBE) }?;
        let mut out: LetheTensor = std::ptr::null_mut();
        // SAFETY: vtable from the host; `x` is borrowed for the call, `out` is ours.
        let status =
            unsafe { (p.logits)(self.host, x.as_ptr().cast_mut().cast::<c_void>(), &mut out) };
        self.check("probe.logits", status)?;
        // SAFETY: a fresh handle from the host, adopted once.
        unsafe { self.adopt(out) }
    }

    /// Stores a named tensor result (e.g. per-example attack scores); the host
    /// copies it (detached, on the CPU) to `<name>.safetensors` in the job's
    /// output folder, as one tensor named `name`. `name`: 1-128 letters, digits,
    /// `_`, `-` or `.`, not starting with `.`. An attack's metrics are computed
    /// by the engine from `scores_forget` and `scores_nonmember` (required),
    /// `scores_member`, `scores_shadow_member`, `scores_shadow_nonmember` and
    /// the matching `predictions_<role>` (see the crate README).
    pub fn put_tensor(&mut self, name: &str, tensor: &Tensor) -> Result<(), PluginError> {
        // SAFETY: EXT_RESULT names LetheHostResult.
        let r = unsafe { self.ext::<abi::LetheHostResult>(abi::EXT_RESULT) }?;
        let name = c_string(name);
        // SAFETY: `tensor` is borrowed for the call.
        let status = unsafe {
            (r.put_tensor)(
                self.host,
                name.as_ptr(),
                tensor.as_ptr().cast_mut().cast::<c_void>(),
            )
        };
        self.check("result.put_tensor", status)
    }
}

/// Batches from [`HostContext::batches`]; closes the host's loader when dropped.
/// Not `Send`: data calls are \[main-thread\].
#[derive(Debug)]
pub struct Batches {
    host: *const abi::LetheHost,
    data: *const abi::LetheHostData,
    free: *const abi::LetheHostTensor,
    loader: *mut c_void,
}

impl Batches {
    fn fail(&self, call: &'static str, status: abi::LetheStatus) -> PluginError {
        // SAFETY: host valid while the instance lives; last_error never null.
        let message = unsafe { read_c_str(((*self.host).last_error)(self.host)) };
        PluginError::Host {
            call,
            status,
            message,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<(Tensor, Tensor), PluginError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.loader.is_null() {
            return None;
        }
        let (mut inputs, mut labels): (LetheTensor, LetheTensor) =
            (std::ptr::null_mut(), std::ptr::null_mut());
        let mut has = false;
        // SAFETY: live loader from open_loader; vtables valid while the host is;
        // out-parameters are ours.
        let status = unsafe {
            ((*self.data).next_batch)(self.host, self.loader, &mut inputs, &mut labels, &mut has)
        };
        if !status.is_ok() {
            return Some(Err(self.fail("data.next_batch", status)));
        }
        if !has {
            return None;
        }
        // SAFETY: fresh handles from the host, adopted once each (both, even if
        // the first fails, so neither leaks).
        let (x, y) = unsafe {
            (
                adopt(self.host, &*self.free, inputs),
                adopt(self.host, &*self.free, labels),
            )
        };
        Some(x.and_then(|x| Ok((x, y?))))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // SAFETY: the loader from open_loader, closed exactly once, while the host
        // is still alive (see `HostContext::batches`).
        unsafe { ((*self.data).close_loader)(self.host, self.loader) };
    }
}
