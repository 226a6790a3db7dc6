//! CUDA batch norm against `ops::batchnorm`, in f64 (and once in f32), at
//! every BatchNorm shape of the four networks at batch 128: train and eval
//! forward, the running-statistics update, train and eval backward, each
//! with the fused epilogues (ReLU, residual add then ReLU), and
//! bit-identical reruns.

use crate::harness::needing;
use crate::parity::{assert_close, assert_same_bits, randn, rng, BATCH};
use cifar_kern::cuda::batchnorm::{self, GpuBatchStats};
use cifar_kern::cuda::Gpu;
use cifar_kern::ops::batchnorm::{self as cpu, BatchStats, Epilogue};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use std::collections::BTreeSet;

/// (H = W, channels of each BatchNorm at that resolution), per network.
type BnLayers = &'static [(usize, &'static [usize])];

/// Stem 64; inception branches (1x1 outs, 3x3/5x5 reductions and outs, max
/// branch) at 32x32, 15x15 and 7x7.
const GOOGLENET: BnLayers = &[
    (32, &[64, 16, 32, 8, 24, 48, 12]),
    (15, &[24, 32, 48, 16, 12]),
    (7, &[32, 48, 64, 16]),
];
/// ResNet and PreActResNet: 16, 32, 64 channels (the pre-activation
/// shortcut's BN sees the previous group's width at the previous resolution,
/// which is the same list).
const RESNETS: BnLayers = &[(32, &[16]), (16, &[32]), (8, &[64])];
/// Dense layers' inputs (growing by 16), their 32-channel bottlenecks, the
/// transitions (128, 160, 176) and the final BN (184).
const DENSENET: BnLayers = &[
    (32, &[32, 48, 64, 80, 96, 112, 128]),
    (16, &[32, 64, 80, 96, 112, 128, 144, 160]),
    (8, &[32, 80, 96, 112, 128, 144, 160, 176]),
    (4, &[32, 88, 104, 120, 136, 152, 168, 184]),
];

fn shapes(layers: BnLayers) -> BTreeSet<[usize; 4]> {
    layers
        .iter()
        .flat_map(|&(hw, cs)| cs.iter().map(move |&c| [BATCH, hw, hw, c]))
        .collect()
}

/// `v + offset` element-wise, so the batch mean is far from zero.
fn shifted<T: Float>(t: Tensor<f64>, offset: f64) -> Tensor<T> {
    Tensor::new(t.shape(), t.data().iter().map(|&v| T::of(v + offset)).collect())
}

fn upload_stats<T: cifar_kern::cuda::DeviceFloat>(gpu: &Gpu, s: &BatchStats<T>) -> GpuBatchStats<T> {
    GpuBatchStats {
        mean: gpu.upload(&s.mean),
        var: gpu.upload(&s.var),
    }
}

/// Every batch-norm entry point at `shape` against the CPU op, in T, with
/// each epilogue: none, ReLU, residual add then ReLU.
fn check<T: cifar_kern::cuda::DeviceFloat>(gpu: &Gpu, shape: &[usize], seed: u64) {
    for (add, relu) in [(false, false), (false, true), (true, true)] {
        check_tail::<T>(gpu, shape, seed, add, relu);
    }
}

fn check_tail<T: cifar_kern::cuda::DeviceFloat>(gpu: &Gpu, shape: &[usize], seed: u64, add: bool, relu: bool) {
    let c = *shape.last().unwrap();
    let what = |op: &str| format!("{op} at {shape:?}, add {add}, relu {relu}");
    let x: Tensor<T> = shifted(Tensor::randn(shape, 2.0, &mut rng(seed)), 0.5);
    let dy: Tensor<T> = shifted(randn(shape, seed + 1), 0.0);
    let scale: Tensor<T> = shifted(randn(&[c], seed + 2), 1.0);
    let bias: Tensor<T> = shifted(randn(&[c], seed + 3), 0.0);
    let residual: Tensor<T> = shifted(randn(shape, seed + 6), 0.0);
    let running = BatchStats {
        mean: shifted(randn(&[c], seed + 4), 0.0),
        var: Tensor::uniform(&[c], 0.5, 2.0, &mut rng(seed + 5)),
    };
    let (gx, gdy, gscale, gbias) = (gpu.upload(&x), gpu.upload(&dy), gpu.upload(&scale), gpu.upload(&bias));
    let gresidual = gpu.upload(&residual);
    let tail = Epilogue {
        residual: add.then_some(&residual),
        relu,
    };
    let gtail = Epilogue {
        residual: add.then_some(&gresidual),
        relu,
    };

    let (y, stats) = cpu::forward_train(&x, &scale, &bias, tail);
    let (gy, gstats) = batchnorm::forward_train(gpu, &gx, &gscale, &gbias, gtail);
    assert_close(&gpu.download(&gy), &y, &what("train forward y"));
    assert_close(&gpu.download(&gstats.mean), &stats.mean, &what("batch mean"));
    assert_close(&gpu.download(&gstats.var), &stats.var, &what("batch variance"));

    let grunning = upload_stats(gpu, &running);
    let y_eval = cpu::forward_eval(&x, &scale, &bias, &running, tail);
    let gy_eval = batchnorm::forward_eval(gpu, &gx, &gscale, &gbias, &grunning, gtail);
    assert_close(&gpu.download(&gy_eval), &y_eval, &what("eval forward"));

    let (mut rm, mut rv) = (running.mean.clone(), running.var.clone());
    cpu::update_running(&mut rm, &mut rv, &stats);
    let (mut grm, mut grv) = (gpu.upload(&running.mean), gpu.upload(&running.var));
    batchnorm::update_running(gpu, &mut grm, &mut grv, &upload_stats(gpu, &stats), 0);
    assert_close(&gpu.download(&grm), &rm, &what("running mean update"));
    assert_close(&gpu.download(&grv), &rv, &what("running variance update"));

    // The backward gets the CPU's statistics and the GPU's outputs as the
    // ReLU's mask (where y is within rounding of 0, the CPU's y could fall
    // on the other side), so it is checked on its own.
    let grad_tail = Epilogue {
        residual: add.then_some(()),
        relu,
    };
    for (train, s, gs, gy) in [
        (true, &stats, upload_stats(gpu, &stats), gy),
        (false, &running, grunning, gy_eval),
    ] {
        let mode = if train { "train" } else { "eval" };
        let g = cpu::backward(&dy, &x, &gpu.download(&gy), &scale, s, train, grad_tail);
        let gg = batchnorm::backward(gpu, &gdy, &gx, &gy, &gscale, &gs, train, grad_tail, None);
        assert_close(&gpu.download(&gg.dx), &g.dx, &what(&format!("{mode} dx")));
        assert_close(&gpu.download(&gg.dscale), &g.dscale, &what(&format!("{mode} dscale")));
        assert_close(&gpu.download(&gg.dbias), &g.dbias, &what(&format!("{mode} dbias")));
        let dresidual = gg.dresidual.map(|d| gpu.download(&d));
        match (dresidual, g.dresidual) {
            (Some(ours), Some(cpu)) => assert_same_bits(&ours.cast(), &cpu.cast(), &what(&format!("{mode} dresidual"))),
            (None, None) => {}
            _ => panic!("{}: a residual gradient on one side only", what(mode)),
        }
    }
}

/// Train forward and backward (residual add and ReLU fused) twice on the
/// same f64 inputs: the same bits.
fn check_reruns(gpu: &Gpu, shape: &[usize], seed: u64) {
    let c = *shape.last().unwrap();
    let (x, dy) = (gpu.upload(&randn(shape, seed)), gpu.upload(&randn(shape, seed + 1)));
    let residual = gpu.upload(&randn(shape, seed + 4));
    let (scale, bias) = (gpu.upload(&randn(&[c], seed + 2)), gpu.upload(&randn(&[c], seed + 3)));
    let run = || {
        let tail = Epilogue {
            residual: Some(&residual),
            relu: true,
        };
        let (y, stats) = batchnorm::forward_train(gpu, &x, &scale, &bias, tail);
        let grad_tail = Epilogue {
            residual: Some(()),
            relu: true,
        };
        let g = batchnorm::backward(gpu, &dy, &x, &y, &scale, &stats, true, grad_tail, None);
        let dresidual = g.dresidual.expect("a residual was added");
        [y, stats.mean, stats.var, g.dx, g.dscale, g.dbias, dresidual].map(|t| gpu.download(&t))
    };
    let (first, second) = (run(), run());
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_same_bits(
            a,
            b,
            &format!("rerun of output {i} (y, mean, var, dx, dscale, dbias, dresidual) at {shape:?}"),
        );
    }
}

fn check_network(layers: BnLayers, seed: u64) {
    let gpu = crate::gpu();
    for (i, shape) in shapes(layers).iter().enumerate() {
        check::<f64>(gpu, shape, seed + 10 * i as u64);
    }
}

fn gpu_batchnorm_googlenet_shapes() {
    check_network(GOOGLENET, 1000);
}

fn gpu_batchnorm_resnet_shapes() {
    check_network(RESNETS, 2000);
}

fn gpu_batchnorm_densenet_shapes() {
    check_network(DENSENET, 3000);
}

/// Odd sizes: 16 rows, rows and channels that fill no chunk or tile, a 2-D input.
fn gpu_batchnorm_ragged_shapes() {
    let gpu = crate::gpu();
    for (i, shape) in [&[16, 8][..], &[3, 5, 7, 33], &[1000, 1], &[2, 19, 19, 300]]
        .iter()
        .enumerate()
    {
        check::<f64>(gpu, shape, 4000 + 10 * i as u64);
    }
}

/// The f32 kernels, which accumulate in f64 like the CPU op.
fn gpu_batchnorm_f32() {
    let gpu = crate::gpu();
    check::<f32>(gpu, &[BATCH, 8, 8, 64], 5000);
    check::<f32>(gpu, &[BATCH, 32, 32, 16], 5010);
}

fn gpu_batchnorm_reruns_are_bit_identical() {
    let gpu = crate::gpu();
    for (i, shape) in [[BATCH, 32, 32, 64], [BATCH, 15, 15, 12], [BATCH, 4, 4, 184]]
        .iter()
        .enumerate()
    {
        check_reruns(gpu, shape, 6000 + 10 * i as u64);
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "batchnorm",
        &[&crate::GPU],
        tests![
            gpu_batchnorm_googlenet_shapes,
            gpu_batchnorm_resnet_shapes,
            gpu_batchnorm_densenet_shapes,
            gpu_batchnorm_ragged_shapes,
            gpu_batchnorm_f32,
            gpu_batchnorm_reruns_are_bit_identical
        ],
    )
}
