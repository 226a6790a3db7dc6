//! `--device auto|cpu|cuda`: where a model's tensors live, and so which
//! backend runs its ops (the ops dispatch on where their inputs are).

use crate::cuda::Gpu;
use crate::float::Float;
use crate::tensor::Tensor;
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

/// The resolved choice.
#[derive(Clone, Copy)]
pub enum Placement {
    Cpu,
    Gpu(&'static Gpu),
}

impl Device {
    /// Opens the GPU if asked for (or available, for `auto`); tells the user
    /// on stderr what will run.
    pub fn resolve(self) -> Result<Placement> {
        match (self, Gpu::global()) {
            (Device::Cpu, _) => Ok(Placement::Cpu),
            (Device::Cuda, Ok(gpu)) | (Device::Auto, Ok(gpu)) => Ok(Placement::Gpu(gpu)),
            (Device::Cuda, Err(why)) => Err(anyhow!("--device cuda: no usable GPU ({why}); use --device cpu")),
            (Device::Auto, Err(why)) => {
                eprintln!("using the CPU: {why}");
                Ok(Placement::Cpu)
            }
        }
    }
}

impl Placement {
    /// `t` where this placement computes.
    pub fn place<T: Float>(self, t: Tensor<T>) -> Tensor<T> {
        match self {
            Placement::Gpu(gpu) if !t.is_gpu() => gpu.upload(&t),
            _ => t,
        }
    }
}
