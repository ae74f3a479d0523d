//! Loads real compiled plugins (plugins/test-fixtures*, built as dev-dependencies
//! of this crate, so their `.so` files sit next to this test binary in
//! target/<profile>/deps/) and checks the handshake, descriptors, parameter
//! validation, host callbacks, panics, errors and refusals.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use lethe_engine::plugin_host::{HostServices, NoServices, PluginHostError, PluginLibrary};
use lethe_plugin_api::abi::LetheStatus;
use lethe_plugin_api::schema::ParamKind;
use lethe_plugin_api::sdk::{Kind, LogLevel};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Finds `lib<name>.so` beside the test binary (deps/) or one level up.
fn fixture(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join(&file);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{file} not found next to {}; it is built as a dev-dependency of lethe-engine",
        exe.display()
    );
}

fn fixtures() -> Arc<PluginLibrary> {
    PluginLibrary::load(&fixture("lethe_test_fixtures")).unwrap()
}

type ProgressEvent = (Option<f64>, String, Option<Value>);

#[derive(Default)]
struct Recorder {
    logs: Mutex<Vec<(LogLevel, String)>>,
    progress: Mutex<Vec<ProgressEvent>>,
    /// Report cancellation once this many progress reports arrived.
    cancel_after: Option<usize>,
}

impl HostServices for Recorder {
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_string()));
    }
    fn progress(&self, fraction: Option<f64>, message: &str, metrics: Option<Value>) {
        self.progress
            .lock()
            .unwrap()
            .push((fraction, message.to_string(), metrics));
    }
    fn is_cancelled(&self) -> bool {
        self.cancel_after
            .is_some_and(|n| self.progress.lock().unwrap().len() >= n)
    }
}

#[test]
fn handshake_reads_descriptors_and_schemas() {
    let lib = fixtures();
    assert_eq!(lib.abi_version().major, lethe_plugin_api::ABI_MAJOR);
    let build = lethe_plugin_api::abi::read_build_str(&lib.build_info().tch_version);
    assert_eq!(build, lethe_plugin_api::TCH_VERSION);
    // Loading again gives the same library (init ran once).
    assert!(Arc::ptr_eq(&lib, &fixtures()));

    let ids: Vec<(&str, Kind)> = lib
        .descriptors()
        .iter()
        .map(|d| (d.id.as_str(), d.kind))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("org.lethe.test.progress", Kind::Method),
            ("org.lethe.test.panic", Kind::Method),
            ("org.lethe.test.tensors", Kind::Method),
            ("org.lethe.test.misbehave", Kind::Method),
            ("org.lethe.test.classwise", Kind::Method),
            ("org.lethe.test.fail", Kind::Attack),
        ]
    );
    let d = lib.descriptor("org.lethe.test.progress").unwrap();
    assert_eq!(d.name, "Progress test");
    assert_eq!(d.version, "1.0.0");
    assert_eq!(d.citation, "Lethe test suite.");
    let steps = d.schema.get("steps").unwrap();
    assert_eq!(steps.group, "Schedule");
    assert_eq!(steps.help, "Gradient steps to take.");
    assert_eq!(
        steps.kind,
        ParamKind::Int {
            min: 1,
            max: 50,
            default: 4
        }
    );
    assert!(matches!(
        d.schema.get("lr").unwrap().kind,
        ParamKind::Float {
            log_scale: true,
            ..
        }
    ));
    let err = lib.descriptor("org.nope").unwrap_err().to_string();
    assert!(err.contains("no method or attack `org.nope`"), "{err}");
    assert!(err.contains("org.lethe.test.fail"), "{err}");
}

#[test]
fn params_are_validated_and_defaults_filled() {
    let lib = fixtures();
    let id = "org.lethe.test.progress";
    let full = lib.validate_params(id, &json!({"steps": 7})).unwrap();
    assert_eq!(
        Value::Object(full),
        json!({"steps": 7, "lr": 0.1, "loss": "mse", "verbose": true})
    );

    let err = lib
        .validate_params(id, &json!({"steps": 500, "lr": 0.0, "momentum": 0.9}))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PluginHostError::InvalidParams { .. }));
    assert!(msg.contains("liblethe_test_fixtures.so"), "{msg}");
    assert!(msg.contains("`steps` = 500 is outside [1, 50]"), "{msg}");
    assert!(msg.contains("`lr` = 0.0 is outside [0.00001, 1]"), "{msg}");
    assert!(msg.contains("unknown parameter `momentum`"), "{msg}");

    // create refuses the same params before the plugin sees them.
    let err = lib
        .create(id, &json!({"loss": "huber"}), Arc::new(NoServices))
        .unwrap_err();
    assert!(
        err.to_string().contains("\"huber\" is not one of: mse, l1"),
        "{err}"
    );
    let err = lib
        .create("org.lethe.test.fail", &json!({}), Arc::new(NoServices))
        .unwrap_err();
    assert!(err.to_string().contains("`target` is required"), "{err}");
}

#[test]
fn run_reports_progress_metrics_and_logs() {
    let lib = fixtures();
    let rec = Arc::new(Recorder::default());
    let mut inst = lib
        .create(
            "org.lethe.test.progress",
            &json!({"steps": 5, "lr": 0.25}),
            rec.clone(),
        )
        .unwrap();
    inst.run().unwrap();
    drop(inst);

    let progress = rec.progress.lock().unwrap();
    let fractions: Vec<Option<f64>> = progress.iter().map(|p| p.0).collect();
    assert_eq!(
        fractions,
        vec![Some(0.2), Some(0.4), Some(0.6), Some(0.8), Some(1.0)]
    );
    assert_eq!(progress[4].1, "step 5/5");
    // Real libtorch arithmetic in the plugin: w <- w - 0.25 * 2w halves w, so the
    // loss w² quarters every step: 1, 0.25, 0.0625, ...
    let losses: Vec<f64> = progress
        .iter()
        .map(|p| p.2.as_ref().unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses, vec![1.0, 0.25, 0.0625, 0.015625, 0.00390625]);
    assert_eq!(progress[2].2.as_ref().unwrap()["step"], json!(3));

    let logs = rec.logs.lock().unwrap();
    assert_eq!(
        logs[0],
        (
            LogLevel::Info,
            format!("running on lethe {}", env!("CARGO_PKG_VERSION"))
        )
    );
    assert!(logs.iter().any(|l| l.1 == "step 2: loss 0.250000"));
    assert_eq!(logs.last().unwrap().1, "done: loss 0.003906, w 0.031250");
}

#[test]
fn cancellation_stops_the_run_with_cancelled_status() {
    let lib = fixtures();
    let rec = Arc::new(Recorder {
        cancel_after: Some(2),
        ..Recorder::default()
    });
    let mut inst = lib
        .create(
            "org.lethe.test.progress",
            &json!({"steps": 50}),
            rec.clone(),
        )
        .unwrap();
    let err = inst.run().unwrap_err();
    assert_eq!(err.status(), Some(LetheStatus::CANCELLED), "{err}");
    assert!(err.to_string().contains("cancelled by the host"), "{err}");
    assert_eq!(rec.progress.lock().unwrap().len(), 2);
}

#[test]
fn panics_become_errors_and_the_host_survives() {
    let lib = fixtures();
    let rec = Arc::new(Recorder::default());
    let mut inst = lib
        .create("org.lethe.test.panic", &json!({}), rec.clone())
        .unwrap();
    let err = inst.run().unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.status(), Some(LetheStatus::PANIC), "{msg}");
    assert!(msg.contains("plugin panicked in run"), "{msg}");
    assert!(msg.contains("index out of bounds"), "{msg}");
    assert!(msg.contains("org.lethe.test.panic"), "{msg}");
    assert_eq!(
        rec.logs.lock().unwrap()[0],
        (LogLevel::Warn, "about to panic".to_string())
    );
    drop(inst);

    let err = lib
        .create(
            "org.lethe.test.panic",
            &json!({"when": "create"}),
            Arc::new(NoServices),
        )
        .unwrap_err();
    assert_eq!(err.status(), Some(LetheStatus::PANIC));
    assert!(
        err.to_string()
            .contains("plugin panicked in create: deliberate panic in create"),
        "{err}"
    );

    // The same library keeps working after both panics.
    let mut ok = lib
        .create(
            "org.lethe.test.progress",
            &json!({"steps": 1}),
            Arc::new(NoServices),
        )
        .unwrap();
    ok.run().unwrap();
}

#[test]
fn plugin_errors_carry_their_message() {
    let lib = fixtures();
    let rec = Arc::new(Recorder::default());
    let mut inst = lib
        .create(
            "org.lethe.test.fail",
            &json!({"target": "/data/scores.npy", "reference": "/data/ref.safetensors"}),
            rec.clone(),
        )
        .unwrap();
    let err = inst.run().unwrap_err();
    assert_eq!(err.status(), Some(LetheStatus::ERROR));
    assert!(
        err.to_string()
            .ends_with("`org.lethe.test.fail`: run failed (error): deliberate failure: cannot score /data/scores.npy"),
        "{err}"
    );
    assert_eq!(
        rec.logs.lock().unwrap()[0],
        (LogLevel::Error, "giving up".to_string())
    );
}

#[test]
fn wrong_abi_major_is_refused_naming_both_versions() {
    let path = fixture("lethe_test_fixture_bad_abi");
    let err = PluginLibrary::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PluginHostError::AbiMismatch { .. }), "{msg}");
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    let (major, minor) = (lethe_plugin_api::ABI_MAJOR, lethe_plugin_api::ABI_MINOR);
    assert!(
        msg.contains(&format!(
            "plugin ABI {}.0 is incompatible with this Lethe's plugin ABI {major}.{minor}",
            major + 1
        )),
        "{msg}"
    );
}

#[test]
fn other_libtorch_build_is_refused_saying_what_differs() {
    let path = fixture("lethe_test_fixture_bad_torch");
    let err = PluginLibrary::load(&path).unwrap_err();
    let msg = err.to_string();
    let PluginHostError::BuildMismatch { differences, .. } = &err else {
        panic!("expected a build mismatch, got {msg}");
    };
    assert!(msg.contains("liblethe_test_fixture_bad_torch.so"), "{msg}");
    let host = lethe_engine::plugin_host::host_build_info();
    let host_torch = lethe_plugin_api::abi::read_build_str(&host.libtorch_version);
    assert!(
        differences.contains(&format!("libtorch: plugin 2.0.0+cpu, Lethe {host_torch}")),
        "{msg}"
    );
    assert!(
        differences.contains(&"tch: plugin 0.13.0, Lethe 0.26.0".to_string()),
        "{msg}"
    );
}

#[test]
fn libraries_without_the_entry_and_non_libraries_are_refused() {
    // libc10.so is a real shared library, just not a plugin; the fixture's .so sits
    // in a folder whose rpath-less neighbours we do not need.
    let lib_dir = PathBuf::from(env!("LETHE_LIBTORCH_LIB"));
    let c10 = lib_dir.join("libc10.so");
    let err = PluginLibrary::load(&c10).unwrap_err();
    assert!(matches!(err, PluginHostError::MissingEntry { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("not a Lethe plugin: it exports no `lethe_plugin_entry` symbol"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("lethe-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, "not an ELF file").unwrap();
    let err = PluginLibrary::load(&fake).unwrap_err();
    assert!(matches!(err, PluginHostError::Load { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("libfake.so: cannot load as a shared library"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A job host with a real (tiny) model and forget split, behind the model, data
/// and result extensions, to prove tensors cross both ways with the ABI's
/// ownership rules.
mod tensor_host {
    use super::*;
    use lethe_engine::plugin_host::{services_of, tensor_from_borrowed, tensor_into_handle};
    use lethe_plugin_api::abi::{
        LetheHost, LetheHostData, LetheHostModel, LetheHostResult, LetheModelHead, LetheSplit,
        LetheStatus, LetheTensor,
    };
    use std::any::Any;
    use std::ffi::{CStr, CString, c_char, c_void};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tch::{Kind as DType, Tensor};

    pub struct TensorHost {
        pub w: Mutex<Tensor>,
        w_name: CString,
        /// Inputs and labels of the forget split (Mutex: tch tensors are not Sync).
        data: Mutex<(Tensor, Tensor)>,
        pub train: AtomicBool,
        pub saved: AtomicBool,
        pub closed_loaders: AtomicUsize,
        pub progress: Mutex<Vec<Value>>,
        pub tensors: Mutex<Vec<(String, Tensor)>>,
        pub json: Mutex<Vec<(String, Value)>>,
    }

    impl TensorHost {
        pub fn new() -> Self {
            // Five examples, rows [i, 1, 0]; the model is x @ w with w = [1, 1, 1]ᵀ.
            let rows: Vec<f64> = (0..5).flat_map(|i| [i as f64, 1.0, 0.0]).collect();
            TensorHost {
                w: Mutex::new(
                    Tensor::ones([3, 1], (DType::Double, tch::Device::Cpu)).set_requires_grad(true),
                ),
                w_name: CString::new("fc.weight").unwrap(),
                data: Mutex::new((
                    Tensor::from_slice(&rows).view([5, 3]),
                    // One output class, so every label is 0 (the template plugin's
                    // cross-entropy needs labels in range).
                    Tensor::zeros([5], (DType::Int64, tch::Device::Cpu)),
                )),
                train: AtomicBool::new(false),
                saved: AtomicBool::new(false),
                closed_loaders: AtomicUsize::new(0),
                progress: Mutex::new(Vec::new()),
                tensors: Mutex::new(Vec::new()),
                json: Mutex::new(Vec::new()),
            }
        }
    }

    impl HostServices for TensorHost {
        fn log(&self, _level: LogLevel, _message: &str) {}
        fn progress(&self, _fraction: Option<f64>, _message: &str, metrics: Option<Value>) {
            self.progress
                .lock()
                .unwrap()
                .push(metrics.unwrap_or(Value::Null));
        }
        fn extension(&self, id: &str) -> *const c_void {
            match id {
                lethe_plugin_api::abi::EXT_MODEL => (&MODEL as *const LetheHostModel).cast(),
                lethe_plugin_api::abi::EXT_DATA => (&DATA as *const LetheHostData).cast(),
                lethe_plugin_api::abi::EXT_RESULT => (&RESULT as *const LetheHostResult).cast(),
                _ => std::ptr::null(),
            }
        }
    }

    fn state<'a>(host: *const LetheHost) -> &'a TensorHost {
        let services = unsafe { services_of(host) }.unwrap();
        (services as &dyn Any).downcast_ref::<TensorHost>().unwrap()
    }

    static MODEL: LetheHostModel = LetheHostModel {
        device: m_device,
        set_train: m_set_train,
        forward: m_forward,
        parameter_count: m_count,
        parameter: m_parameter,
    };
    static DATA: LetheHostData = LetheHostData {
        len: d_len,
        open_loader: d_open,
        next_batch: d_next,
        close_loader: d_close,
    };
    static RESULT: LetheHostResult = LetheHostResult {
        save_model: r_save,
        put_tensor: r_put_tensor,
        put_json: r_put_json,
    };

    unsafe extern "C" fn m_device(_host: *const LetheHost) -> i32 {
        -1
    }
    unsafe extern "C" fn m_set_train(host: *const LetheHost, train: bool) -> LetheStatus {
        state(host).train.store(train, Ordering::SeqCst);
        LetheStatus::OK
    }
    unsafe extern "C" fn m_forward(
        host: *const LetheHost,
        head: LetheModelHead,
        input: LetheTensor,
        out: *mut LetheTensor,
    ) -> LetheStatus {
        if head != LetheModelHead::CLASSIFIER {
            lethe_engine::plugin_host::set_last_error("only the classifier head exists");
            return LetheStatus::UNSUPPORTED;
        }
        let x = unsafe { tensor_from_borrowed(input) }.unwrap();
        let y = x.matmul(&state(host).w.lock().unwrap());
        unsafe { *out = tensor_into_handle(y) };
        LetheStatus::OK
    }
    unsafe extern "C" fn m_count(_host: *const LetheHost) -> u32 {
        1
    }
    unsafe extern "C" fn m_parameter(
        host: *const LetheHost,
        index: u32,
        out_name: *mut *const c_char,
        out_tensor: *mut LetheTensor,
    ) -> LetheStatus {
        assert_eq!(index, 0);
        let s = state(host);
        unsafe {
            *out_name = s.w_name.as_ptr();
            *out_tensor = tensor_into_handle(s.w.lock().unwrap().shallow_clone());
        }
        LetheStatus::OK
    }
    unsafe extern "C" fn d_len(_host: *const LetheHost, split: LetheSplit) -> i64 {
        if split == LetheSplit::FORGET { 5 } else { -1 }
    }
    unsafe extern "C" fn d_open(
        _host: *const LetheHost,
        split: LetheSplit,
        batch_size: u32,
        _shuffle: bool,
        _augment: bool,
        out_loader: *mut *mut c_void,
    ) -> LetheStatus {
        assert_eq!(split, LetheSplit::FORGET);
        let cursor = Box::new((0i64, i64::from(batch_size)));
        unsafe { *out_loader = Box::into_raw(cursor).cast() };
        LetheStatus::OK
    }
    unsafe extern "C" fn d_next(
        host: *const LetheHost,
        loader: *mut c_void,
        out_inputs: *mut LetheTensor,
        out_labels: *mut LetheTensor,
        out_has_batch: *mut bool,
    ) -> LetheStatus {
        let s = state(host);
        let cursor = unsafe { &mut *loader.cast::<(i64, i64)>() };
        let (start, size) = *cursor;
        let len = (5 - start).min(size);
        unsafe {
            if len <= 0 {
                *out_has_batch = false;
                *out_inputs = std::ptr::null_mut();
                *out_labels = std::ptr::null_mut();
            } else {
                *out_has_batch = true;
                let (x, y) = &*s.data.lock().unwrap();
                *out_inputs = tensor_into_handle(x.narrow(0, start, len));
                *out_labels = tensor_into_handle(y.narrow(0, start, len));
                cursor.0 += len;
            }
        }
        LetheStatus::OK
    }
    unsafe extern "C" fn d_close(host: *const LetheHost, loader: *mut c_void) {
        drop(unsafe { Box::from_raw(loader.cast::<(i64, i64)>()) });
        state(host).closed_loaders.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn r_save(host: *const LetheHost) -> LetheStatus {
        state(host).saved.store(true, Ordering::SeqCst);
        LetheStatus::OK
    }
    unsafe extern "C" fn r_put_tensor(
        host: *const LetheHost,
        name: *const c_char,
        tensor: LetheTensor,
    ) -> LetheStatus {
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        // Borrowed: keep a deep copy, as a real host writing a file would.
        let t = unsafe { tensor_from_borrowed(tensor) }.unwrap().copy();
        state(host).tensors.lock().unwrap().push((name, t));
        LetheStatus::OK
    }
    unsafe extern "C" fn r_put_json(
        host: *const LetheHost,
        name: *const c_char,
        json: *const c_char,
    ) -> LetheStatus {
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let json = unsafe { CStr::from_ptr(json) }.to_str().unwrap();
        state(host)
            .json
            .lock()
            .unwrap()
            .push((name, serde_json::from_str(json).unwrap()));
        LetheStatus::OK
    }
}

#[test]
fn tensors_cross_both_ways_and_parameters_update_in_place() {
    let lib = fixtures();
    let host = Arc::new(tensor_host::TensorHost::new());
    let mut inst = lib
        .create("org.lethe.test.tensors", &json!({"lr": 0.5}), host.clone())
        .unwrap();
    inst.run().unwrap();
    drop(inst);

    assert!(host.train.load(std::sync::atomic::Ordering::SeqCst));
    assert!(host.saved.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        host.closed_loaders
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // d(sum(x @ w))/dw = column sums of x = [0+1+2+3+4, 5, 0]; one step of 0.5 from
    // w = 1 gives [-4, -1.5, 1] — in the host's own tensor, updated by the plugin.
    let w: Vec<f64> = Vec::try_from(host.w.lock().unwrap().view([-1])).unwrap();
    assert_eq!(w, vec![-4.0, -1.5, 1.0]);

    let json = host.json.lock().unwrap();
    assert_eq!(json[0].0, "summary");
    assert_eq!(
        json[0].1,
        json!({"forget": 5, "seen": 5, "batches": 3, "loss_sum": 15.0,
               "params": ["fc.weight"], "device": "Cpu"})
    );
    let tensors = host.tensors.lock().unwrap();
    assert_eq!(tensors[0].0, "last_output");
    // Last batch is the single row [4, 1, 0] against w = 1 (before the step).
    let last: Vec<f64> = Vec::try_from(tensors[0].1.view([-1])).unwrap();
    assert_eq!(last, vec![5.0]);
}

#[test]
fn the_template_plugin_loads_and_runs() {
    let lib = PluginLibrary::load(&fixture("lethe_plugin_template")).unwrap();
    let d = lib.descriptor("org.example.gradient-ascent").unwrap();
    assert_eq!(d.kind, Kind::Method);
    assert_eq!(d.schema.get("lr").unwrap().group, "Optimiser");
    let host = Arc::new(tensor_host::TensorHost::new());
    let mut inst = lib
        .create(
            "org.example.gradient-ascent",
            &json!({"epochs": 2, "batch_size": 2}),
            host.clone(),
        )
        .unwrap();
    inst.run().unwrap();
    drop(inst);
    assert!(host.saved.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        host.closed_loaders
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    // With a single class the cross-entropy is exactly 0 on every batch.
    assert_eq!(
        *host.progress.lock().unwrap(),
        vec![
            json!({"epoch": 1, "forget_loss": 0.0}),
            json!({"epoch": 2, "forget_loss": 0.0})
        ]
    );
}

#[test]
fn scanning_a_folder_loads_plugins_and_explains_refusals() {
    let dir = std::env::temp_dir().join(format!("lethe-plugin-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("lethe_test_fixtures"), dir.join("b_fixtures.so")).unwrap();
    std::fs::copy(
        fixture("lethe_test_fixture_bad_abi"),
        dir.join("a_bad_abi.so"),
    )
    .unwrap();
    std::fs::write(dir.join("c_broken.so"), "not an ELF file").unwrap();
    std::fs::write(dir.join("README.txt"), "not a plugin").unwrap();

    let found = lethe_engine::plugin_host::scan_dir(&dir).unwrap();
    let names: Vec<String> = found
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a_bad_abi.so", "b_fixtures.so", "c_broken.so"]);
    assert!(matches!(
        found[0].1,
        Err(PluginHostError::AbiMismatch { .. })
    ));
    let lib = found[1].1.as_ref().unwrap();
    assert_eq!(lib.descriptors().len(), 6);
    assert!(matches!(found[2].1, Err(PluginHostError::Load { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
