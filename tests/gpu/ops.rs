//! CUDA ops against the CPU reference, in f64, on fresh random inputs at the
//! networks' shapes. Outputs are poisoned (NaN) before each kernel writes
//! them.

use crate::harness::needing;
use cifar_kern::cuda::elementwise;
use cifar_kern::ops;
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Norm-wise relative error allowed between a CUDA op and the CPU op:
/// `util::PARITY`, 1e-10. ReLU, its backward and the add are single
/// correctly rounded operations, so GPU and CPU should agree to the bit;
/// the bound is the suite's f64 one, which a float32 rounding (6e-8) fails.
use crate::util::PARITY;

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, 1.0, &mut ChaCha8Rng::seed_from_u64(seed))
}

fn assert_close(gpu: &Tensor<f64>, cpu: &Tensor<f64>, what: &str) {
    let err = gpu.rel_error(cpu, 1e-30);
    assert!(err <= PARITY, "{what}: relative error {err:e}, bound {PARITY:e}");
}

/// Activation shapes of the four networks at batch 128.
const SHAPES: [[usize; 4]; 4] = [
    [128, 32, 32, 64],
    [128, 32, 32, 16],
    [128, 15, 15, 128],
    [128, 4, 4, 184],
];

fn gpu_elementwise_matches_cpu() {
    let gpu = crate::gpu();
    for (i, shape) in SHAPES.iter().enumerate() {
        let (x, other) = (randn(shape, i as u64), randn(shape, 100 + i as u64));
        let (gx, gother) = (gpu.upload(&x), gpu.upload(&other));
        let y = elementwise::relu(gpu, &gx);
        assert_close(&gpu.download(&y), &ops::elementwise::relu(&x), "relu");
        let dx = elementwise::relu_backward(gpu, &gother, &y);
        let cpu_y = ops::elementwise::relu(&x);
        assert_close(
            &gpu.download(&dx),
            &ops::elementwise::relu_backward(&other, &cpu_y),
            "relu backward",
        );
        let sum = elementwise::add(gpu, &gx, &gother);
        assert_close(&gpu.download(&sum), &ops::elementwise::add(&x, &other), "add");
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing("ops", &[&crate::GPU], tests![gpu_elementwise_matches_cpu])
}
