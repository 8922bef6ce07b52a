//! Backend selection: `cpu` (the faster of burn-flex / burn-ndarray, measured by `cargo xtask bench model`),
//! `cpu-ndarray`, `cpu-flex`, and `cuda` / `cuda:N` behind the `cuda` cargo feature.

use anyhow::{Result, bail};
use std::str::FromStr;

/// burn-flex: measured faster than burn-ndarray on this project's shapes (see the crate README).
pub type CpuFlex = burn_flex::Flex<f32, i32>;
pub type CpuNdArray = burn_ndarray::NdArray<f32, i64>;
/// The default CPU backend.
pub type Cpu = CpuFlex;

#[cfg(feature = "cuda")]
pub type Gpu = burn_cuda::Cuda<f32, i32>;

/// Where a stage runs, as written in configs: `cpu`, `cpu-flex`, `cpu-ndarray`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    CpuFlex,
    CpuNdArray,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "cpu" => DeviceSpec::Cpu,
            "cpu-flex" => DeviceSpec::CpuFlex,
            "cpu-ndarray" => DeviceSpec::CpuNdArray,
            "cuda" => DeviceSpec::Cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => DeviceSpec::Cuda(i),
                _ => bail!(
                    "unknown device `{s}`; expected `cpu`, `cpu-flex`, `cpu-ndarray`, `cuda` or `cuda:N`"
                ),
            },
        })
    }
}

/// Work generic over the burn backend, to be run on the one a [`DeviceSpec`] names (Rust closures cannot
/// be generic, so callers put their arguments in a struct and implement this).
pub trait OnBackend {
    type Output;
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output;
}

impl DeviceSpec {
    /// Checks that the device is usable, then runs `work` on its backend.
    pub fn run<W: OnBackend>(self, work: W) -> Result<W::Output> {
        self.check_available()?;
        Ok(match self {
            DeviceSpec::Cpu | DeviceSpec::CpuFlex => work.run::<CpuFlex>(Default::default()),
            DeviceSpec::CpuNdArray => work.run::<CpuNdArray>(Default::default()),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => work.run::<Gpu>(burn_cuda::CudaDevice::new(i)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => {
                unreachable!("check_available rejects CUDA in a build without the `cuda` feature")
            }
        })
    }

    /// Fails with a clear message when CUDA is requested but unusable (burn itself would panic).
    pub fn check_available(self) -> Result<()> {
        match self {
            DeviceSpec::Cuda(i) => cuda_check(i),
            _ => Ok(()),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_check(_index: usize) -> Result<()> {
    bail!(
        "device `cuda` requested, but this build has no CUDA support: rebuild with `--features cuda`"
    )
}

#[cfg(feature = "cuda")]
fn cuda_check(index: usize) -> Result<()> {
    // burn-cuda loads libcuda dynamically and panics when the driver or device is missing; probe first.
    let count = cuda_device_count()
        .map_err(|e| anyhow::anyhow!("device `cuda:{index}` requested, but {e}"))?;
    if index >= count {
        bail!("device `cuda:{index}` requested, but only {count} CUDA device(s) are present");
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda_device_count() -> std::result::Result<usize, String> {
    // The NVIDIA driver creates these nodes; without them no CUDA device can be opened.
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        return Err("no NVIDIA driver was found (/dev/nvidiactl is missing)".to_string());
    }
    let n = std::fs::read_dir("/dev")
        .map_err(|e| format!("cannot list /dev: {e}"))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit()))
        })
        .count();
    if n == 0 {
        return Err("no NVIDIA GPU device node (/dev/nvidiaN) was found".to_string());
    }
    Ok(n)
}
