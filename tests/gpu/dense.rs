//! The dense head on the GPU against `ops::dense`, in f64, at every
//! network's head shape at batch 128, and bit-identical reruns.

use crate::harness::{needing, plain};
use crate::util::{assert_bit_identical, assert_close, model_params, randn, PARITY, PARITY_F32};
use cifar_kern::backend;
use cifar_kern::cuda::dense;
use cifar_kern::ops;
use libtest_mimic::Trial;

const BATCH: usize = 128;

/// `(k, o)` of each network's dense head kernel (`[k, o]`), from the models.
fn head_shapes() -> Vec<(usize, usize)> {
    let mut shapes: Vec<_> = model_params()
        .iter()
        .map(|(kind, state)| {
            let (_, kernel) = state
                .params
                .iter()
                .find(|(name, _)| name.ends_with("Dense_0/kernel"))
                .unwrap_or_else(|| panic!("{kind} has no dense head"));
            (kernel.shape()[0], kernel.shape()[1])
        })
        .collect();
    shapes.dedup();
    shapes
}

fn head_shapes_are_the_networks() {
    assert_eq!(head_shapes(), [(128, 10), (64, 10), (184, 10)]);
}

fn gpu_dense_matches_cpu() {
    let gpu = crate::gpu();
    for (i, (k, o)) in head_shapes().into_iter().enumerate() {
        let seed = 10 * i as u64;
        let (x, w, b, dy) = (
            randn(&[BATCH, k], 1.0, seed),
            randn(&[k, o], 0.1, seed + 1),
            randn(&[o], 1.0, seed + 2),
            randn(&[BATCH, o], 1.0, seed + 3),
        );
        let (gx, gw, gb, gdy) = (gpu.upload(&x), gpu.upload(&w), gpu.upload(&b), gpu.upload(&dy));
        let y = dense::forward(gpu, &gx, &gw, &gb);
        assert_close(&gpu.download(&y), &ops::dense::forward(&x, &w, &b), PARITY, "forward");
        let (dx, dw, db) = dense::backward(gpu, &gdy, &gx, &gw);
        let (cdx, cdw, cdb) = ops::dense::backward(&dy, &x, &w);
        assert_close(&gpu.download(&dx), &cdx, PARITY, "dx");
        assert_close(&gpu.download(&dw), &cdw, PARITY, "dw");
        assert_close(&gpu.download(&db), &cdb, PARITY, "db");
    }
}

fn gpu_dense_is_deterministic() {
    let gpu = crate::gpu();
    let (k, o) = (184, 10);
    let (x, w, b, dy) = (
        gpu.upload(&randn(&[BATCH, k], 1.0, 1)),
        gpu.upload(&randn(&[k, o], 0.1, 2)),
        gpu.upload(&randn(&[o], 1.0, 3)),
        gpu.upload(&randn(&[BATCH, o], 1.0, 4)),
    );
    let run = || {
        let y = dense::forward(gpu, &x, &w, &b);
        let (dx, dw, db) = dense::backward(gpu, &dy, &x, &w);
        [y, dx, dw, db].map(|t| gpu.download(&t))
    };
    for (first, second) in run().iter().zip(&run()) {
        assert_bit_identical(first, second, "dense");
    }
}

/// The f32 instantiation against the CPU's f32 op.
fn gpu_dense_f32_matches_cpu() {
    let gpu = crate::gpu();
    let (x, w, b, dy) = (
        randn(&[BATCH, 64], 1.0, 5).cast::<f32>(),
        randn(&[64, 10], 0.1, 6).cast::<f32>(),
        randn(&[10], 1.0, 7).cast::<f32>(),
        randn(&[BATCH, 10], 1.0, 8).cast::<f32>(),
    );
    let (gx, gw) = (gpu.upload(&x), gpu.upload(&w));
    let y = dense::forward(gpu, &gx, &gw, &gpu.upload(&b));
    assert_close(
        &gpu.download(&y),
        &ops::dense::forward(&x, &w, &b),
        PARITY_F32,
        "f32 forward",
    );
    let (dx, dw, db) = dense::backward(gpu, &gpu.upload(&dy), &gx, &gw);
    let (cdx, cdw, cdb) = ops::dense::backward(&dy, &x, &w);
    assert_close(&gpu.download(&dx), &cdx, PARITY_F32, "f32 dx");
    assert_close(&gpu.download(&dw), &cdw, PARITY_F32, "f32 dw");
    assert_close(&gpu.download(&db), &cdb, PARITY_F32, "f32 db");
}

/// `backend` sends GPU tensors to these kernels.
fn gpu_dense_backend_dispatches_to_the_gpu() {
    let gpu = crate::gpu();
    let (x, w, b, dy) = (
        gpu.upload(&randn(&[BATCH, 64], 1.0, 11)),
        gpu.upload(&randn(&[64, 10], 0.1, 12)),
        gpu.upload(&randn(&[10], 1.0, 13)),
        gpu.upload(&randn(&[BATCH, 10], 1.0, 14)),
    );
    let y = backend::dense(&x, &w, &b);
    assert!(y.is_gpu());
    assert_bit_identical(
        &gpu.download(&y),
        &gpu.download(&dense::forward(gpu, &x, &w, &b)),
        "forward",
    );
    let via_backend = backend::dense_backward(&dy, &x, &w, None);
    let direct = dense::backward(gpu, &dy, &x, &w);
    for (a, b) in [
        (&via_backend.0, &direct.0),
        (&via_backend.1, &direct.1),
        (&via_backend.2, &direct.2),
    ] {
        assert!(a.is_gpu());
        assert_bit_identical(&gpu.download(a), &gpu.download(b), "backward");
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    let mut trials = needing(
        "dense",
        &[&crate::GPU],
        tests![
            gpu_dense_matches_cpu,
            gpu_dense_is_deterministic,
            gpu_dense_f32_matches_cpu,
            gpu_dense_backend_dispatches_to_the_gpu
        ],
    );
    trials.extend(plain("dense", tests![head_shapes_are_the_networks]));
    trials
}
