//! `--device auto|cpu|cuda`: where a model's tensors live, and so which
//! backend runs its ops (`crate::backend` dispatches on where the inputs are).

use crate::backend::Backend;
use crate::cuda::Gpu;
use anyhow::{anyhow, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU when one can be used, else the CPU (with a one-line note).
    Auto,
    /// The CPU backend (f32, one thread per core).
    Cpu,
    /// The GPU (CUDA kernels, f32); an error when none can be used.
    Cuda,
}

impl Device {
    /// Opens the GPU if asked for (or available, for `auto`); tells the user
    /// on stderr what will run.
    pub fn resolve(self) -> Result<Backend> {
        match (self, Gpu::global()) {
            (Device::Cpu, _) => Ok(Backend::Cpu),
            (Device::Cuda, Ok(gpu)) | (Device::Auto, Ok(gpu)) => Ok(Backend::Gpu(gpu)),
            (Device::Cuda, Err(why)) => Err(anyhow!("--device cuda: no usable GPU ({why}); use --device cpu")),
            (Device::Auto, Err(why)) => {
                eprintln!("using the CPU: {why}");
                Ok(Backend::Cpu)
            }
        }
    }
}
