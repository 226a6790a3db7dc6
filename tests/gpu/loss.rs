//! Softmax cross-entropy, its backward and the epoch totals (correct
//! count, loss sum, first non-finite loss) on the GPU against `ops::loss`
//! and `EpochTotals::record`, in f64, at the heads' shape (batch 128, 10 classes)
//! and at a batch longer than the reduction block; bit-identical reruns.

use crate::harness::needing;
use crate::util::{assert_bit_identical, assert_close, randn, rng, PARITY, PARITY_F32};
use cifar_kern::cuda::loss::{self, DeviceTotals};
use cifar_kern::cuda::{DeviceBuffer, Gpu, GpuTensor};
use cifar_kern::data::NUM_CLASSES;
use cifar_kern::layers::loss::EpochTotals;
use cifar_kern::{ops, Tensor};
use libtest_mimic::Trial;
use rand::Rng;

/// Batch 128 (training), and more rows than the 256 threads of the
/// single-block reductions, so threads take several rows.
const BATCHES: [usize; 2] = [128, 1000];

fn labels(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = rng(seed);
    (0..n).map(|_| rng.random_range(0..NUM_CLASSES as u32)).collect()
}

fn upload_labels(gpu: &Gpu, labels: &[u32]) -> DeviceBuffer<u32> {
    gpu.upload_buffer(labels)
}

fn scalar(gpu: &Gpu, t: &GpuTensor<f64>) -> f64 {
    assert_eq!(t.shape(), [] as [usize; 0], "a scalar");
    gpu.download(t).item()
}

fn gpu_cross_entropy_matches_cpu() {
    let gpu = crate::gpu();
    for (i, n) in BATCHES.into_iter().enumerate() {
        let logits = randn(&[n, NUM_CLASSES], 3.0, i as u64);
        let labels = labels(n, 100 + i as u64);
        let (glogits, glabels) = (gpu.upload(&logits), upload_labels(gpu, &labels));

        // f64: the kernel's log-sum-exp uses CUDA's exp and log (within 1-2
        // ulps of the CPU's) and sums at most 1,000 rows in double in another
        // order: ~1e-13 at worst, so within PARITY (1e-10), which a float32
        // exp or sum (~6e-8) fails.
        let cpu = ops::loss::cross_entropy(&logits, &labels);
        let got = scalar(gpu, &loss::cross_entropy(gpu, &glogits, &glabels));
        assert!(
            (got - cpu).abs() <= PARITY * cpu.abs(),
            "loss {got} vs {cpu}: relative error {:e}, bound {PARITY:e}",
            (got - cpu).abs() / cpu.abs()
        );

        for dloss in [1.0, -0.37] {
            let gdloss = gpu.upload(&Tensor::scalar(dloss));
            let grad = loss::cross_entropy_backward(gpu, &glogits, &glabels, &gdloss);
            let want = ops::loss::cross_entropy_backward(&logits, &labels, dloss);
            assert_close(&gpu.download(&grad), &want, PARITY, "backward");
        }
    }
}

fn gpu_step_totals_match_cpu_with_ties() {
    let gpu = crate::gpu();
    for (i, n) in BATCHES.into_iter().enumerate() {
        // Logits of a few integer values, so rows often tie for the maximum
        // (the first one wins); labels drawn to hit a fair share.
        let mut rng = rng(200 + i as u64);
        let logits = Tensor::new(
            &[n, NUM_CLASSES],
            (0..n * NUM_CLASSES).map(|_| rng.random_range(0..3) as f64).collect(),
        );
        let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..3)).collect();
        let want = ops::loss::correct(&logits, &labels);
        assert!(want > 0 && want < n, "the test should have both outcomes");
        let (glogits, glabels) = (gpu.upload(&logits), upload_labels(gpu, &labels));
        let gloss = loss::cross_entropy(gpu, &glogits, &glabels);
        let nan = gpu.upload(&Tensor::scalar(f64::NAN));
        // A good step, a NaN loss, a good step: only the first counts.
        let mut totals = DeviceTotals::new(gpu);
        let mut reference = EpochTotals::default();
        for l in [&gloss, &nan, &gloss] {
            loss::accumulate_step(gpu, &glogits, &glabels, l, &mut totals);
            reference.record(gpu.download(l).item(), want as u64);
        }
        let got = totals.read(gpu);
        assert!(got.bad_loss().is_some_and(f64::is_nan), "batch {n}: {got:?}");
        let without_nan = |t: EpochTotals| EpochTotals { bad_loss: 0.0, ..t };
        assert_eq!(without_nan(got), without_nan(reference), "batch {n}");
        assert_eq!((got.correct, got.steps, got.first_bad_step), (want as u64, 2, 2));
        totals.reset(gpu);
        assert_eq!(totals.read(gpu), EpochTotals::default(), "reset");
    }
}

fn gpu_loss_is_deterministic() {
    let gpu = crate::gpu();
    let n = 1000;
    let logits = gpu.upload(&randn(&[n, NUM_CLASSES], 3.0, 7));
    let labels = upload_labels(gpu, &labels(n, 8));
    let dloss = gpu.upload(&Tensor::scalar(1.0));
    let run = || {
        let value = gpu.download(&loss::cross_entropy(gpu, &logits, &labels));
        let grad = gpu.download(&loss::cross_entropy_backward(gpu, &logits, &labels, &dloss));
        let mut totals = DeviceTotals::new(gpu);
        loss::accumulate_step(
            gpu,
            &logits,
            &labels,
            &loss::cross_entropy(gpu, &logits, &labels),
            &mut totals,
        );
        (value, grad, totals.read(gpu))
    };
    let (first, second) = (run(), run());
    assert_bit_identical(&first.0, &second.0, "loss");
    assert_bit_identical(&first.1, &second.1, "backward");
    assert_eq!(first.2.loss_sum.to_bits(), second.2.loss_sum.to_bits(), "loss sum");
    assert_eq!(first.2, second.2, "totals");
}

/// The f32 instantiation against the CPU's f32 op.
fn gpu_loss_f32_matches_cpu() {
    let gpu = crate::gpu();
    let n = 128;
    let logits = randn(&[n, NUM_CLASSES], 3.0, 9).cast::<f32>();
    let labels = labels(n, 10);
    let (glogits, glabels) = (gpu.upload(&logits), upload_labels(gpu, &labels));
    let got = gpu.download(&loss::cross_entropy(gpu, &glogits, &glabels)).item();
    let cpu = ops::loss::cross_entropy(&logits, &labels);
    assert!((got - cpu).abs() <= 1e-6 * cpu.abs(), "f32 loss {got} vs {cpu}");
    let grad = loss::cross_entropy_backward(gpu, &glogits, &glabels, &gpu.upload(&Tensor::scalar(1.0f32)));
    let want = ops::loss::cross_entropy_backward(&logits, &labels, 1.0);
    assert_close(&gpu.download(&grad), &want, PARITY_F32, "f32 backward");
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "loss",
        &[&crate::GPU],
        tests![
            gpu_cross_entropy_matches_cpu,
            gpu_step_totals_match_cpu_with_ties,
            gpu_loss_is_deterministic,
            gpu_loss_f32_matches_cpu
        ],
    )
}
