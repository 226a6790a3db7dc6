//! CUDA mean over H and W against `ops::reduce`, in f64, at the inputs of the
//! networks' heads at batch 128 (ResNets 8x8x64, GoogleNet 7x7x128, DenseNet
//! 4x4x184), forward and backward, with bit-identical reruns.

use crate::harness::needing;
use crate::parity::{assert_close, assert_same_bits, randn, BATCH};
use cifar_kern::cuda::reduce;
use cifar_kern::ops::reduce as cpu;
use libtest_mimic::Trial;

fn gpu_mean_hw_network_heads() {
    let gpu = crate::gpu();
    for (i, shape) in [
        [BATCH, 8, 8, 64],
        [BATCH, 7, 7, 128],
        [BATCH, 4, 4, 184],
        [3, 32, 32, 5],
    ]
    .iter()
    .enumerate()
    {
        let x = randn(shape, 10 * i as u64);
        let dy = randn(&[shape[0], shape[3]], 10 * i as u64 + 1);
        let (gx, gdy) = (gpu.upload(&x), gpu.upload(&dy));
        let run = || {
            let y = reduce::mean_hw(gpu, &gx);
            let dx = reduce::mean_hw_backward(gpu, &gdy, shape);
            [gpu.download(&y), gpu.download(&dx)]
        };
        let (first, second) = (run(), run());
        assert_close(&first[0], &cpu::mean_hw(&x), &format!("mean_hw at {shape:?}"));
        assert_close(
            &first[1],
            &cpu::mean_hw_backward(&dy, shape),
            &format!("mean_hw backward at {shape:?}"),
        );
        assert_same_bits(&first[0], &second[0], &format!("mean_hw rerun at {shape:?}"));
        assert_same_bits(&first[1], &second[1], &format!("mean_hw backward rerun at {shape:?}"));
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing("reduce", &[&crate::GPU], tests![gpu_mean_hw_network_heads])
}
