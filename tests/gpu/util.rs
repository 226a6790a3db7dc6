//! Helpers shared by the `gpu_*` parity tests of the dense, loss, optimiser
//! and augmentation kernels.

#![allow(dead_code)] // each test crate uses its own subset

use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::{Float, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Norm-wise relative error allowed between a CUDA op and the CPU op in
/// f64. The f64 kernels accumulate in double like the CPU ops, but in another
/// order (tiles, chunks, block reductions) and with nvcc's FMA contraction
/// (on by default; the CPU and the emulator round every product): about
/// n x 2^-52 apart for a sum of n terms. The longest f64 sums in these tests
/// have n = 128 x 32 x 32 = 131,072 terms (conv weight and bias gradients,
/// batch-norm statistics at 32x32), so 2.9e-11, under this bound; the
/// others are far shorter (conv forward and data gradient: 9 x C terms;
/// dense, reduce and loss: at most about 1,000). One float32 rounding anywhere in an f64
/// path costs about 2^-24 = 6e-8 relative, so a float32 accumulation fails
/// it by orders of magnitude. The emulator holds the same kernels to the
/// same bound (`tests/emu/common.rs`, `F64_BOUND`).
pub const PARITY: f64 = 1e-10;
/// The same for the f32 instantiations against the CPU op in f32, which
/// rounds differently (summation order, the CPU's blocked GEMM); as
/// `tests/emu/common.rs`'s `F32_BOUND`.
pub const PARITY_F32: f64 = 1e-5;

/// [`PARITY`] or [`PARITY_F32`], by T.
pub fn parity<T: Float>() -> f64 {
    if T::NAME == "f64" {
        PARITY
    } else {
        PARITY_F32
    }
}

pub fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, std, &mut ChaCha8Rng::seed_from_u64(seed))
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn assert_close<T: Float>(gpu: &Tensor<T>, cpu: &Tensor<T>, tolerance: f64, what: &str) {
    let err = gpu.rel_error(cpu, 1e-300);
    assert!(err <= tolerance, "{what}: relative error {err:e}, bound {tolerance:e}");
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
