//! Helpers shared by the `gpu_*` parity tests of the dense, loss, optimiser
//! and augmentation kernels.

#![allow(dead_code)] // each test crate uses its own subset

use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::{Float, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Norm-wise relative error allowed between a CUDA op and the CPU op.
pub const PARITY: f64 = 1e-5;

pub fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, std, &mut ChaCha8Rng::seed_from_u64(seed))
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn assert_close<T: Float>(gpu: &Tensor<T>, cpu: &Tensor<T>, tolerance: f64, what: &str) {
    let err = gpu.rel_error(cpu, 1e-300);
    assert!(err <= tolerance, "{what}: relative error {err:e}");
}

/// The same shape and the same bits (NaN included).
pub fn assert_bit_identical<T: Float>(a: &Tensor<T>, b: &Tensor<T>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let bits = |t: &Tensor<T>| t.data().iter().map(|v| v.f64().to_bits()).collect::<Vec<_>>();
    assert!(bits(a) == bits(b), "{what}: a rerun gave different bits");
}

/// Every network's parameters (f64, seed 0), by model.
pub fn model_params() -> Vec<(ModelKind, ModelState<f64>)> {
    ModelKind::ALL
        .into_iter()
        .map(|kind| (kind, ModelState::init(kind, 0)))
        .collect()
}
