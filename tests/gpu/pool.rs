//! CUDA max-pool and avg-pool against `ops::pool`, in f64: GoogleNet's
//! 3x3/2 max-pools and DenseNet's 2x2/2 avg-pools at batch 128, padded and
//! overlapping/gapped windows at small sizes, NaN propagation, and
//! bit-identical reruns. Max-pool inputs are pairwise distinct (no ties).

use crate::harness::needing;
use crate::parity::{assert_close, assert_same_bits, distinct, randn, BATCH};
use cifar_kern::cuda::{pool, Gpu};
use cifar_kern::ops::pool as cpu;
use cifar_kern::{Tensor, Window};
use libtest_mimic::Trial;

/// Max-pool forward (y, argmax) and backward against the CPU op, twice.
fn check_max(gpu: &Gpu, x: &Tensor<f64>, win: &Window, seed: u64) {
    let what = |op: &str| format!("max-pool {op} at {:?} with {win:?}", x.shape());
    let (y, argmax) = cpu::max_forward(x, win);
    let dy = randn(y.shape(), seed);
    let dx = cpu::max_backward(&dy, &argmax, x.shape());
    let (gx, gdy) = (gpu.upload(x), gpu.upload(&dy));
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (gy, gargmax) = pool::max_forward(gpu, &gx, win);
        let gdx = pool::max_backward(gpu, &gdy, &gargmax, x.shape(), win);
        assert_eq!(gargmax.download(gpu), argmax, "{}", what("argmax"));
        runs.push([gpu.download(&gy), gpu.download(&gdx)]);
    }
    // y copies the winning input element, so it matches bit for bit.
    assert_same_bits(&runs[0][0], &y, &what("forward"));
    assert_close(&runs[0][1], &dx, &what("backward"));
    assert_same_bits(&runs[0][1], &runs[1][1], &what("backward rerun"));
}

/// Avg-pool forward and backward against the CPU op, twice.
fn check_avg(gpu: &Gpu, x: &Tensor<f64>, win: &Window, seed: u64) {
    let what = |op: &str| format!("avg-pool {op} at {:?} with {win:?}", x.shape());
    let y = cpu::avg_forward(x, win);
    let dy = randn(y.shape(), seed);
    let dx = cpu::avg_backward(&dy, x.shape(), win);
    let (gx, gdy) = (gpu.upload(x), gpu.upload(&dy));
    let run = || {
        let gy = pool::avg_forward(gpu, &gx, win);
        let gdx = pool::avg_backward(gpu, &gdy, x.shape(), win);
        [gpu.download(&gy), gpu.download(&gdx)]
    };
    let (first, second) = (run(), run());
    assert_close(&first[0], &y, &what("forward"));
    assert_close(&first[1], &dx, &what("backward"));
    assert_same_bits(&first[0], &second[0], &what("forward rerun"));
    assert_same_bits(&first[1], &second[1], &what("backward rerun"));
}

/// Windows beyond the networks' VALID ones: Flax SAME padding, asymmetric
/// explicit padding, and strides larger than the window (uncovered inputs).
fn odd_windows() -> Vec<([usize; 4], Window)> {
    let explicit = |size, stride, pad_lo, pad_hi| Window {
        size,
        stride,
        pad_lo,
        pad_hi,
    };
    vec![
        ([3, 8, 8, 5], Window::same([3, 3], [1, 1], [8, 8])),
        ([2, 15, 15, 7], Window::same([3, 3], [2, 2], [15, 15])),
        ([2, 9, 6, 4], Window::same([2, 2], [2, 2], [9, 6])),
        ([2, 7, 9, 3], explicit([3, 2], [2, 1], [2, 0], [1, 1])),
        ([2, 10, 11, 6], explicit([2, 3], [3, 4], [0, 1], [1, 0])),
        ([1, 5, 5, 33], Window::valid([5, 5], [1, 1])),
    ]
}

/// GoogleNet: 32x32 -> 15x15 after block 2 (96 channels) and 15x15 -> 7x7
/// after block 6 (128 channels), 3x3 stride 2 VALID.
fn gpu_max_pool_googlenet_shapes() {
    let gpu = crate::gpu();
    let win = Window::valid([3, 3], [2, 2]);
    for (i, shape) in [[BATCH, 32, 32, 96], [BATCH, 15, 15, 128]].iter().enumerate() {
        check_max(gpu, &distinct(shape, 100 + i as u64), &win, 110 + i as u64);
    }
}

/// DenseNet's transitions: 2x2 stride 2 VALID, 32 -> 16 (64 channels),
/// 16 -> 8 (80), 8 -> 4 (88).
fn gpu_avg_pool_densenet_shapes() {
    let gpu = crate::gpu();
    let win = Window::valid([2, 2], [2, 2]);
    for (i, shape) in [[BATCH, 32, 32, 64], [BATCH, 16, 16, 80], [BATCH, 8, 8, 88]]
        .iter()
        .enumerate()
    {
        check_avg(gpu, &randn(shape, 200 + i as u64), &win, 210 + i as u64);
    }
}

/// The other pooling of each kind at the networks' shapes: max 2x2/2 and
/// avg 3x3/2 (the kernels are shared, the window is a parameter).
fn gpu_pools_swapped_windows() {
    let gpu = crate::gpu();
    check_max(
        gpu,
        &distinct(&[BATCH, 32, 32, 64], 300),
        &Window::valid([2, 2], [2, 2]),
        301,
    );
    check_avg(
        gpu,
        &randn(&[BATCH, 15, 15, 128], 302),
        &Window::valid([3, 3], [2, 2]),
        303,
    );
}

fn gpu_pools_padded_windows() {
    let gpu = crate::gpu();
    for (i, (shape, win)) in odd_windows().iter().enumerate() {
        let seed = 400 + 10 * i as u64;
        check_max(gpu, &distinct(shape, seed), win, seed + 1);
        check_avg(gpu, &randn(shape, seed + 2), win, seed + 3);
    }
}

/// A NaN wins its windows, in the forward and in the argmax the backward uses.
fn gpu_max_pool_nan_wins() {
    let gpu = crate::gpu();
    let (shape, win) = ([2, 8, 8, 3], Window::same([3, 3], [2, 2], [8, 8]));
    let mut x = distinct(&shape, 500);
    for i in [0, 17, 100, 101, 250, 383] {
        x.data_mut()[i] = f64::NAN;
    }
    let (y, argmax) = cpu::max_forward(&x, &win);
    let (gy, gargmax) = pool::max_forward(gpu, &gpu.upload(&x), &win);
    assert!(
        y.data().iter().any(|v| v.is_nan()),
        "the test must put a NaN in some window"
    );
    assert_same_bits(&gpu.download(&gy), &y, "max-pool forward with NaNs");
    assert_eq!(gargmax.download(gpu), argmax, "max-pool argmax with NaNs");
    let dy = randn(y.shape(), 501);
    let gdx = pool::max_backward(gpu, &gpu.upload(&dy), &gargmax, &shape, &win);
    assert_close(
        &gpu.download(&gdx),
        &cpu::max_backward(&dy, &argmax, &shape),
        "max-pool backward with NaNs",
    );
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "pool",
        &[&crate::GPU],
        tests![
            gpu_max_pool_googlenet_shapes,
            gpu_avg_pool_densenet_shapes,
            gpu_pools_swapped_windows,
            gpu_pools_padded_windows,
            gpu_max_pool_nan_wins
        ],
    )
}
