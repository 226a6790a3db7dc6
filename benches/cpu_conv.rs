//! CPU convolution benches at ResNet's layer shapes, batch 128, f32.
//!
//! Throughput is reported in "elements" that are floating-point operations
//! (2 per multiply-add), so criterion's `Gelem/s` reads as GFLOP/s.
//! The GPU benches join these in the CUDA backend issue.

use cifar_kern::ops::conv;
use cifar_kern::{Tensor, Window};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// (name, input HxW, in channels, out channels, kernel, stride)
const RESNET_CONVS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("stem_32x32_3to16", 32, 3, 16, 3, 1),
    ("g1_32x32_16to16", 32, 16, 16, 3, 1),
    ("g2_down_32x32_16to32_s2", 32, 16, 32, 3, 2),
    ("g2_short_1x1_16to32_s2", 32, 16, 32, 1, 2),
    ("g2_16x16_32to32", 16, 32, 32, 3, 1),
    ("g3_down_16x16_32to64_s2", 16, 32, 64, 3, 2),
    ("g3_short_1x1_32to64_s2", 16, 32, 64, 1, 2),
    ("g3_8x8_64to64", 8, 64, 64, 3, 1),
];
const BATCH: usize = 128;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for &(name, hw, cin, cout, k, stride) in RESNET_CONVS {
        let x = Tensor::<f32>::randn(&[BATCH, hw, hw, cin], 1.0, &mut rng);
        let w = Tensor::<f32>::randn(&[k, k, cin, cout], 0.1, &mut rng);
        let win = Window::same([k, k], [stride, stride], [hw, hw]);
        let y = conv::forward(&x, &w, None, &win);
        let dy = Tensor::<f32>::randn(y.shape(), 1.0, &mut rng);
        let flops = 2 * y.numel() as u64 * (k * k * cin) as u64;
        for family in ["conv_fwd", "conv_bwd_data", "conv_bwd_weight"] {
            let mut group = c.benchmark_group(family);
            group.sample_size(10).warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::from_parameter(name), |b| match family {
                "conv_fwd" => b.iter(|| conv::forward(&x, &w, None, &win)),
                "conv_bwd_data" => b.iter(|| conv::backward_data(&dy, x.shape(), &w, &win)),
                _ => b.iter(|| conv::backward_weight(&dy, &x, w.shape(), &win)),
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
