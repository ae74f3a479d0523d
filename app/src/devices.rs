//! Compute devices a job can run on: the CPU and each CUDA GPU, with its name
//! and memory when `nvidia-smi` can tell (libtorch counts GPUs but does not name
//! them).

/// One device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// What the worker is told: `cpu` or `cuda:N`.
    pub id: String,
    /// What the user reads.
    pub label: String,
}

/// The CPU, then every CUDA device libtorch sees.
pub fn probe() -> Vec<DeviceInfo> {
    let threads = tch::get_num_threads();
    let mut out = vec![DeviceInfo {
        id: "cpu".into(),
        label: format!("CPU ({threads} threads)"),
    }];
    // The engine's probe asks the CUDA runtime once per process.
    let runtime = lethe_engine::runtime::RuntimeReport::probe();
    let count = if runtime.cuda {
        runtime.cuda_devices.max(0) as usize
    } else {
        0
    };
    if count == 0 {
        return out;
    }
    let smi = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    out.extend(cuda_devices(count, &smi));
    out
}

/// `(name, memory MiB)` per line of `nvidia-smi --query-gpu=index,name,memory.total
/// --format=csv,noheader,nounits`, by index.
pub fn parse_nvidia_smi(text: &str) -> Vec<(usize, String, Option<u64>)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(',').map(str::trim);
            let index = parts.next()?.parse().ok()?;
            let name = parts.next()?.to_string();
            let mem = parts.next().and_then(|m| m.parse().ok());
            Some((index, name, mem))
        })
        .collect()
}

/// Labels for `count` CUDA devices. nvidia-smi numbers GPUs in PCI order and CUDA
/// by speed unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`; on the usual one-GPU or
/// identical-GPU machines the two agree.
pub fn cuda_devices(count: usize, smi: &[(usize, String, Option<u64>)]) -> Vec<DeviceInfo> {
    (0..count)
        .map(|i| {
            let label = match smi.iter().find(|(idx, _, _)| *idx == i) {
                Some((_, name, Some(mib))) => {
                    format!("GPU {i}: {name} ({:.0} GiB)", *mib as f64 / 1024.0)
                }
                Some((_, name, None)) => format!("GPU {i}: {name}"),
                None => format!("GPU {i} (CUDA)"),
            };
            DeviceInfo {
                id: format!("cuda:{i}"),
                label,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_name_the_gpus() {
        let smi = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559\n1, Tesla T4, [N/A]\njunk\n");
        assert_eq!(smi.len(), 2);
        let devs = cuda_devices(3, &smi);
        assert_eq!(devs[0].id, "cuda:0");
        assert_eq!(devs[0].label, "GPU 0: NVIDIA H100 80GB HBM3 (80 GiB)");
        assert_eq!(devs[1].label, "GPU 1: Tesla T4");
        assert_eq!(devs[2].label, "GPU 2 (CUDA)");
    }

    #[test]
    fn the_cpu_is_always_offered_first() {
        let devs = probe();
        assert_eq!(devs[0].id, "cpu");
        assert!(devs.iter().skip(1).all(|d| d.id.starts_with("cuda:")));
    }
}
