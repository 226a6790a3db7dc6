//! CUDA concatenation and split against `ops::concat`, in f64: the inception
//! blocks' 4-way and the dense layers' 2-way concatenations at batch 128, and
//! more pieces than one launch takes. Both are copies, so GPU and CPU must
//! agree bit for bit, on every rerun.

use crate::harness::needing;
use crate::parity::{assert_same_bits, randn, BATCH};
use cifar_kern::cuda::{concat, Gpu};
use cifar_kern::ops::concat as cpu;
use libtest_mimic::Trial;

/// Concatenates pieces of `widths` channels behind `lead` dims and splits a
/// random gradient back, against the CPU op, twice.
fn check(gpu: &Gpu, lead: &[usize], widths: &[usize], seed: u64) {
    let what = |op: &str| format!("{op} of {widths:?} behind {lead:?}");
    let with_width = |w: usize| [lead, &[w]].concat();
    let parts: Vec<_> = widths
        .iter()
        .zip(seed..)
        .map(|(&w, s)| randn(&with_width(w), s))
        .collect();
    let dy = randn(&with_width(widths.iter().sum()), seed + 100);
    let y = cpu::forward(&parts.iter().collect::<Vec<_>>());
    let dparts = cpu::backward(&dy, widths);
    let gparts: Vec<_> = parts.iter().map(|p| gpu.upload(p)).collect();
    let gdy = gpu.upload(&dy);
    for _ in 0..2 {
        let gy = concat::forward(gpu, &gparts.iter().collect::<Vec<_>>());
        assert_same_bits(&gpu.download(&gy), &y, &what("concat"));
        let gdparts = concat::backward(gpu, &gdy, widths);
        assert_eq!(gdparts.len(), widths.len(), "{}", what("split count"));
        for (k, (g, c)) in gdparts.iter().zip(&dparts).enumerate() {
            assert_same_bits(&gpu.download(g), c, &what(&format!("split piece {k}")));
        }
    }
}

/// GoogleNet: (1x1, 3x3, 5x5, max) branch widths of each inception block.
fn gpu_concat_googlenet_shapes() {
    let gpu = crate::gpu();
    let blocks: [(usize, [usize; 4]); 6] = [
        (32, [16, 32, 8, 8]),
        (32, [24, 48, 12, 12]),
        (15, [24, 48, 12, 12]),
        (15, [16, 48, 16, 16]),
        (15, [32, 48, 24, 24]),
        (7, [32, 64, 16, 16]),
    ];
    for (i, (hw, widths)) in blocks.iter().enumerate() {
        check(gpu, &[BATCH, *hw, *hw], widths, 1000 * i as u64);
    }
}

/// DenseNet: each layer's input (growing by 16 from the block's start) and its 16 new channels.
fn gpu_concat_densenet_shapes() {
    let gpu = crate::gpu();
    let blocks = [(32, 32), (16, 64), (8, 80), (4, 88)];
    for (b, &(hw, start)) in blocks.iter().enumerate() {
        for layer in 0..6 {
            let seed = 10_000 * (b as u64 + 1) + 1000 * layer as u64;
            check(gpu, &[BATCH, hw, hw], &[start + 16 * layer, 16], seed);
        }
    }
}

/// Eleven pieces (two launches) and 2-D tensors.
fn gpu_concat_many_pieces() {
    let gpu = crate::gpu();
    check(gpu, &[3, 5, 7], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90_000);
    check(gpu, &[37], &[5, 3], 91_000);
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "concat",
        &[&crate::GPU],
        tests![
            gpu_concat_googlenet_shapes,
            gpu_concat_densenet_shapes,
            gpu_concat_many_pieces
        ],
    )
}
