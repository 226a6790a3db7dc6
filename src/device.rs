//! `--device auto|cpu|cuda`: which backend runs the model.
//!
//! The CUDA training backend is not written yet (only its first kernels are
//! compiled into the binary), so every run uses the CPU today; `auto` says
//! so in one line, and `cuda` is refused with what to do instead.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU when one can be used, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Device {
    /// Checks the choice and tells the user (on stderr) what will run.
    pub fn resolve(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda => bail!(
                "--device cuda: this version has no CUDA training backend yet (its kernels are still being written); \
                 use --device cpu"
            ),
            Device::Auto => {
                match crate::cuda::unavailable_reason() {
                    None => eprintln!("a GPU is present, but the CUDA backend is not written yet: using the CPU"),
                    Some(why) => eprintln!("using the CPU: {why}"),
                }
                Ok(())
            }
        }
    }
}
