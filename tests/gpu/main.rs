//! The `gpu_` tests: every CUDA op against the CPU op (in f64, with bounds
//! that a float32 accumulation would fail, and in f32), bit-identical reruns,
//! the optimiser, a whole training step and the tensor-core wrappers, one
//! module per kernel family.
//!
//! One binary (`harness = false`, `tests/harness/`): without a usable GPU
//! (no driver, no device, or a build without nvcc) every `gpu_` test is
//! reported as ignored with the reason; with `CIFAR_KERN_REQUIRE_GPU=1` it
//! fails instead (`scripts/gpu/run.sh` sets it on the GPU host). Each
//! family is the trials' kind, so `cargo test --test gpu -- '[conv]'` runs
//! one family.

#[macro_use]
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../emu/memory.rs"]
mod memory;
mod parity;
#[path = "../emu/tf32.rs"]
mod tf32;
mod util;

mod augment;
mod batchnorm;
mod concat;
mod conv;
mod conv_tc;
mod dense;
mod graph;
mod loss;
mod ops;
mod optim;
mod pool;
mod reduce;
mod step;
mod tensor_core;

use cifar_kern::cuda::{Gpu, REQUIRE_GPU_VAR};
use harness::Need;

/// A usable GPU.
pub static GPU: Need = Need {
    missing: "no GPU",
    require_var: REQUIRE_GPU_VAR,
    probe: || Gpu::for_tests().map(|_| ()),
};

/// The GPU, for a test the harness runs only when there is one.
pub fn gpu() -> &'static Gpu {
    Gpu::for_tests().expect("the harness runs gpu_ tests only with a usable GPU")
}

fn main() {
    harness::main(&[
        augment::trials,
        batchnorm::trials,
        concat::trials,
        conv::trials,
        conv_tc::trials,
        dense::trials,
        graph::trials,
        loss::trials,
        ops::trials,
        optim::trials,
        pool::trials,
        reduce::trials,
        step::trials,
        tensor_core::trials,
    ])
}
