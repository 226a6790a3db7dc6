//! The tensor-core and async-copy wrappers (`kernels/tensor_core.cuh`) on
//! the GPU against their CPU emulation, through the check GEMM of
//! `kernels/tensor_core_check.cu`: a misread fragment layout, a wrong
//! ldmatrix row or a TF32 rounding that differs from `cvt.rna` shows as a
//! difference.

use crate::harness::needing;
use crate::memory::Emu;
use cifar_kern::cuda::tensor_core_check::gemm_plan;
use cifar_kern::cuda::Gpu;
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Four k-slices, several warps in both directions.
const M: usize = 64;
const N: usize = 32;
const K: usize = 32;

/// d on the GPU and in the emulator, for the same inputs.
fn both(gpu: &Gpu, a: &Tensor<f32>, b: &Tensor<f32>, c: &Tensor<f32>) -> (Tensor<f32>, Tensor<f32>) {
    let (ga, gb, gc) = (gpu.upload(a), gpu.upload(b), gpu.upload(c));
    let gd = gpu.alloc::<f32>(&[M, N]);
    let plan = gemm_plan(gpu.ptr(&ga), gpu.ptr(&gb), gpu.ptr(&gc), gpu.ptr(&gd), M, N, K);
    // SAFETY: a, b, c and d hold m x k, n x k, m x n and m x n floats.
    unsafe { gpu.run(&plan) };
    let on_gpu = gpu.download(&gd);

    let mut emu = Emu::default();
    let (ea, eb, ec) = (emu.upload(a, "a"), emu.upload(b, "b"), emu.upload(c, "c"));
    let ed = emu.alloc::<f32>(M * N, "d");
    emu.run(&gemm_plan(ea, eb, ec, ed, M, N, K), 1)
        .expect("the emulated GEMM runs");
    (on_gpu, emu.download(ed, &[M, N]))
}

fn tensor(shape: &[usize], mut value: impl FnMut() -> f32) -> Tensor<f32> {
    Tensor::new(shape, (0..shape.iter().product()).map(|_| value()).collect())
}

fn gpu_tensor_core_matches_the_emulation() {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(11);

    // Small integers: every product and sum is exact in fp32, so the
    // hardware and the emulation must agree to the bit.
    let mut ints = |shape: &[usize]| tensor(shape, || rng.random_range(-8..=8) as f32);
    let (a, b, c) = (ints(&[M, K]), ints(&[N, K]), ints(&[M, N]));
    let (on_gpu, emulated) = both(gpu, &a, &b, &c);
    let differing: Vec<usize> = (0..M * N)
        .filter(|&i| on_gpu.data()[i].to_bits() != emulated.data()[i].to_bits())
        .collect();
    assert!(
        differing.is_empty(),
        "integer GEMM: {} elements differ, first d[{}][{}]: GPU {}, emulation {}",
        differing.len(),
        differing[0] / N,
        differing[0] % N,
        on_gpu.data()[differing[0]],
        emulated.data()[differing[0]]
    );

    // Random values: both round the operands to TF32 (cvt.rna) and
    // accumulate in fp32, in possibly different orders: at most (K + 1)
    // ulp of the sum of the terms' magnitudes apart.
    let mut normal = |shape: &[usize]| tensor(shape, || rng.random_range(-2.0..2.0));
    let (a, b, c) = (normal(&[M, K]), normal(&[N, K]), normal(&[M, N]));
    let (on_gpu, emulated) = both(gpu, &a, &b, &c);
    for i in 0..M * N {
        let (row, col) = (i / N, i % N);
        let size: f64 = c.data()[i].abs() as f64
            + (0..K)
                .map(|k| (a.data()[row * K + k] as f64 * b.data()[col * K + k] as f64).abs())
                .sum::<f64>();
        let bound = (K + 1) as f64 * f32::EPSILON as f64 * size;
        let diff = (on_gpu.data()[i] as f64 - emulated.data()[i] as f64).abs();
        assert!(
            diff <= bound,
            "d[{row}][{col}]: GPU {}, emulation {}: {diff:e} apart, bound {bound:e}",
            on_gpu.data()[i],
            emulated.data()[i]
        );
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "tensor_core",
        &[&crate::GPU],
        tests![gpu_tensor_core_matches_the_emulation],
    )
}
