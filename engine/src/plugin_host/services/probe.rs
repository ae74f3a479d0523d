//! `lethe.probe/1` over [`EngineServices`]: the linear probe that reads an
//! encoder, trained with [`probe_for`] on the job's retain split, exactly as
//! `lethe evaluate` trains it, and kept in the same [`ProbeCache`], so an attack
//! and the evaluation of one model read it through the very same head.

use std::ffi::CString;
use std::sync::atomic::Ordering;

use lethe_plugin_api::sdk::LogLevel;
use serde_json::{Value, json};
use tch::Tensor;

use super::{DataSplit, EngineServices, ServiceError, lock};
use crate::plugin_host::HostServices;
use crate::train::Flow;
use crate::train::probe::{LinearProbe, ProbeCache, ProbeRecipe, probe_for};

/// The prepared probe and the summary string lent to the plugin.
#[derive(Debug, Default)]
pub(super) struct ProbeState {
    probe: Option<LinearProbe>,
    /// NUL-terminated summary; its buffer stays put until the next `prepare`.
    summary: CString,
}

impl EngineServices {
    /// Uses `cache` for `lethe.probe/1` (by default the one in
    /// [`crate::train::probe::default_probe_cache_dir`]).
    pub fn with_probe_cache(mut self, cache: ProbeCache) -> Self {
        self.probe_cache = cache;
        self
    }

    /// `lethe.probe/1`'s prepare: loads or trains the probe of `request_json`
    /// on the retain split and returns the summary.
    pub fn probe_prepare(&self, request_json: &str) -> Result<Value, ServiceError> {
        let request: Value = serde_json::from_str(request_json).map_err(|e| {
            ServiceError::InvalidArgument(format!("probe request is not JSON: {e}"))
        })?;
        let recipe = ProbeRecipe::from_request(&request)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let rows = self
            .splits
            .get(DataSplit::Retain)
            .ok_or(ServiceError::NoSuchSplit(DataSplit::Retain.name()))?
            .clone();
        self.log(
            LogLevel::Info,
            &format!(
                "linear probe `{}` ({} epochs, batch {}, lr {}, augmentation {}) on {} retain samples",
                recipe.preset,
                recipe.epochs,
                recipe.batch_size,
                recipe.lr,
                if recipe.augment { "on" } else { "off" },
                rows.len()
            ),
        );
        let (probe, run, classes, retain_accuracy) = {
            let state = lock(&self.state);
            let retain = state.dataset.subset(&rows).map_err(|e| {
                ServiceError::Setup(format!("the retain split cannot be read: {e}"))
            })?;
            let classes = state.dataset.num_classes() as i64;
            let model = &state.model;
            let features = |x: &Tensor| model.features(x, false);
            let cancel = &self.cancel;
            let mut on_epoch = |done: usize, total: usize, loss: f64| {
                self.progress(
                    None,
                    &format!("probe epoch {done}/{total}, loss {loss:.4}"),
                    None,
                );
                if cancel.load(Ordering::SeqCst) {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            };
            let (probe, run) = probe_for(
                &state.vs,
                &features,
                retain.images(),
                retain.labels(),
                classes,
                &recipe,
                self.device,
                Some(&self.probe_cache),
                &mut on_epoch,
            )?;
            // Un-augmented, as `lethe evaluate`'s RA reads it.
            let accuracy = probe.accuracy(
                &crate::train::probe::extract(&features, retain.images(), self.device),
                &retain.labels().to_device(self.device),
            );
            (probe, run, classes, accuracy)
        };
        let summary = json!({
            "recipe": run.recipe,
            "key": run.key,
            "cached": run.cached,
            "retain_accuracy": retain_accuracy,
            "seconds": run.seconds,
            "classes": classes,
            "cache": self.probe_cache.root(),
        });
        self.log(
            LogLevel::Info,
            &format!(
                "linear probe {} (retain accuracy {:.4})",
                if run.cached {
                    "read from the cache"
                } else {
                    "trained and cached"
                },
                retain_accuracy
            ),
        );
        let mut st = lock(&self.probe_state);
        st.probe = Some(probe);
        st.summary = CString::new(summary.to_string()).unwrap_or_default();
        Ok(summary)
    }

    /// `lethe.probe/1`'s logits: the encoder's features of `input` (eval
    /// mode, no gradients) through the prepared probe.
    pub fn probe_logits(&self, input: &Tensor) -> Result<Tensor, ServiceError> {
        if input.device() != self.device || !input.is_floating_point() {
            return Err(ServiceError::InvalidArgument(format!(
                "probe input must be float images on {:?} (batches from the data extension are), got {:?} on {:?}",
                self.device,
                input.kind(),
                input.device()
            )));
        }
        let st = lock(&self.probe_state);
        let probe = st.probe.as_ref().ok_or_else(|| {
            ServiceError::BadState("probe logits asked for before a successful prepare".into())
        })?;
        let state = lock(&self.state);
        let _guard = tch::no_grad_guard();
        let features = state.model.features(input, false);
        Ok(probe.logits(&features).detach())
    }

    pub(super) fn probe_summary_ptr(&self) -> *const std::ffi::c_char {
        lock(&self.probe_state).summary.as_ptr()
    }
}
