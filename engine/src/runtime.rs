//! What libtorch this process runs on, and what it can reach (`lethe doctor`).

use serde::Serialize;
use std::fmt;
use std::sync::OnceLock;

/// A device as the command line and the worker protocol name it (`cpu`,
/// `cuda:0`), not tch's debug form (`Cpu`, `Cuda(0)`), for files people read.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A snapshot of the linked libtorch and the devices it sees.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    /// torch version the binary was built against (from the installed torch package).
    pub libtorch_version: String,
    /// Version of the `tch` crate.
    pub tch_version: &'static str,
    /// Folder the binary's rpath points at.
    pub libtorch_lib: String,
    /// Whether the libtorch we built against ships CUDA kernels.
    pub built_with_cuda: bool,
    /// Whether `libtorch_cuda.so` is actually mapped into this process.
    pub libtorch_cuda_loaded: bool,
    /// libtorch's CUDA runtime check (needs a driver and a GPU).
    pub cuda: bool,
    /// Number of visible CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN can be used.
    pub cudnn: bool,
    /// cuDNN version number, when CUDA is usable.
    pub cudnn_version: Option<i64>,
    /// Intra-op threads libtorch uses on the CPU.
    pub threads: i32,
    /// Whether libtorch was built with OpenMP / MKL / oneDNN.
    pub openmp: bool,
    /// Whether MKL is available to libtorch.
    pub mkl: bool,
    /// Whether oneDNN (mkldnn) is available to libtorch.
    pub mkldnn: bool,
}

impl RuntimeReport {
    /// Probes libtorch once per process and returns that report (with the
    /// current thread count). The first call asks the CUDA runtime for its
    /// devices, which takes a while and must not run again from every audit
    /// record or report; the answer does not change while the process runs.
    pub fn probe() -> Self {
        static PROBED: OnceLock<RuntimeReport> = OnceLock::new();
        let mut r = PROBED.get_or_init(Self::probe_uncached).clone();
        // Training may change the intra-op thread count; read it fresh.
        r.threads = tch::get_num_threads();
        r
    }

    fn probe_uncached() -> Self {
        let cuda = tch::Cuda::is_available();
        RuntimeReport {
            libtorch_version: env!("LETHE_LIBTORCH_VERSION").to_string(),
            tch_version: "0.26.0",
            libtorch_lib: env!("LETHE_LIBTORCH_LIB").to_string(),
            built_with_cuda: env!("LETHE_LIBTORCH_CUDA") == "true",
            libtorch_cuda_loaded: mapped_library("libtorch_cuda.so"),
            cuda,
            cuda_devices: tch::Cuda::device_count(),
            cudnn: tch::Cuda::cudnn_is_available(),
            cudnn_version: cuda.then(tch::utils::version_cudnn),
            threads: tch::get_num_threads(),
            openmp: tch::utils::has_openmp(),
            mkl: tch::utils::has_mkl(),
            mkldnn: tch::utils::has_mkldnn(),
        }
    }

    /// The torch version without the local build tag (`2.13.0+cu130` → `2.13.0`).
    pub fn torch_release(&self) -> &str {
        self.libtorch_version
            .split_once('+')
            .map_or(self.libtorch_version.as_str(), |(v, _)| v)
    }
}

/// Whether a shared library with this file name is mapped into the current process.
fn mapped_library(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines()
                .any(|l| l.rsplit('/').next().is_some_and(|f| f == name))
        })
        .unwrap_or(false)
}

impl fmt::Display for RuntimeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "true" } else { "false" };
        writeln!(
            f,
            "libtorch: {} (tch {})",
            self.libtorch_version, self.tch_version
        )?;
        writeln!(f, "libtorch lib: {}", self.libtorch_lib)?;
        writeln!(
            f,
            "libtorch_cuda.so: built {} / loaded {}",
            yn(self.built_with_cuda),
            yn(self.libtorch_cuda_loaded)
        )?;
        writeln!(f, "cuda: {}", yn(self.cuda))?;
        writeln!(f, "cuda devices: {}", self.cuda_devices)?;
        match self.cudnn_version {
            Some(v) => writeln!(f, "cudnn: {} (version {v})", yn(self.cudnn))?,
            None => writeln!(f, "cudnn: {}", yn(self.cudnn))?,
        }
        writeln!(f, "threads: {}", self.threads)?;
        write!(
            f,
            "cpu backends: openmp {} / mkl {} / mkldnn {}",
            yn(self.openmp),
            yn(self.mkl),
            yn(self.mkldnn)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_matches_the_pinned_torch() {
        let r = RuntimeReport::probe();
        assert_eq!(r.torch_release(), "2.13.0", "setup.sh pins torch==2.13.0");
        assert!(r.threads >= 1);
        if r.built_with_cuda {
            assert!(
                r.libtorch_cuda_loaded,
                "libtorch_cuda.so must be in DT_NEEDED (linked with --no-as-needed)"
            );
        }
    }

    #[test]
    fn the_probe_is_answered_from_the_first_one() {
        let first = RuntimeReport::probe();
        let second = RuntimeReport::probe();
        assert_eq!(second.threads, tch::get_num_threads());
        assert_eq!(first.cuda_devices, second.cuda_devices);
        assert_eq!(first.libtorch_cuda_loaded, second.libtorch_cuda_loaded);
        assert_eq!(first.libtorch_version, second.libtorch_version);
    }

    #[test]
    fn libtorch_computes() {
        let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let s = (&a * &a).sum(tch::Kind::Float).double_value(&[]);
        assert_eq!(s, 14.0);
    }
}

/// A device name that is none of `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device `{0}`: expected auto, cpu, cuda or cuda:N")]
pub struct UnknownDevice(pub String);

/// `auto` (first CUDA GPU, else CPU), `cpu`, `cuda` or `cuda:N`, as the worker
/// protocol names devices.
pub fn resolve_device(name: &str) -> Result<String, UnknownDevice> {
    Ok(match name {
        "auto" if tch::Cuda::is_available() => "cuda".into(),
        "auto" => "cpu".into(),
        "cpu" | "cuda" => name.into(),
        other if other.starts_with("cuda:") => other.into(),
        other => return Err(UnknownDevice(other.into())),
    })
}
