//! Emulated device memory that holds tensors and runs cifar-kern's launch
//! plans: the meeting point of the crate (plans) and the emulator (which does
//! not depend on it). Shared by the emu_ suite and the gpu_ tests that compare
//! the hardware with the emulation.

use cifar_kern::cuda::launch::Launch;
use cifar_kern::{Float, Tensor};
use kernel_emu::{Field, Memory};

/// Emulated device memory that holds tensors.
#[derive(Default)]
pub struct Emu {
    pub mem: Memory,
}

impl Emu {
    pub fn upload<T: Float>(&mut self, t: &Tensor<T>, label: &str) -> u64 {
        self.mem.upload(t.data(), label)
    }

    /// Poisoned memory for `len` elements: a kernel that leaves part of it
    /// unwritten leaves NaN there.
    pub fn alloc<T: Float>(&mut self, len: usize, label: &str) -> u64 {
        self.mem.alloc(len.max(1) * std::mem::size_of::<T>(), label)
    }

    pub fn download<T: Float>(&self, addr: u64, shape: &[usize]) -> Tensor<T> {
        Tensor::new(shape, self.mem.read(addr, shape.iter().product()))
    }

    /// Runs a plan's launches in order.
    pub fn run(&mut self, plan: &[Launch], seed: u64) -> Result<(), String> {
        for l in plan {
            let fields: Vec<Field> = l
                .params_fields()
                .into_iter()
                .map(|f| Field {
                    name: f.name,
                    offset: f.offset,
                    size: f.size,
                })
                .collect();
            let launch = kernel_emu::Launch {
                module: l.module,
                kernel: &l.kernel,
                grid: [l.cfg.grid_dim.0, l.cfg.grid_dim.1, l.cfg.grid_dim.2],
                block: [l.cfg.block_dim.0, l.cfg.block_dim.1, l.cfg.block_dim.2],
                dynamic_shared_bytes: l.cfg.shared_mem_bytes,
                params: l.params_ptr(),
                params_size: l.params_size(),
                fields: &fields,
            };
            self.mem.launch(&launch, seed)?;
        }
        Ok(())
    }
}
