//! GPU convolution benches: every distinct conv shape of the four networks
//! at batch 128 (found by running the networks, `models::conv_shapes`) x
//! direction (groups `conv_fwd`, `conv_bwd_data`, `conv_bwd_weight`) x math
//! (bench id `<shape>/<tf32|fp32>`; tf32: the tensor-core variant the GPU
//! chooses, fp32: conv.cu on the CUDA cores), no bias.
//!
//! Criterion times each through `iter_custom`: N launches of the prepared
//! plan between one pair of CUDA events, the GPU kept busy by a copy queued
//! first so the host's launch time does not count (`bench::ConvTimer`).
//! Throughput is in "elements" that are floating-point operations, so
//! `Gelem/s` reads as GFLOP/s. At the end a table gives, for each, the
//! median of a fixed 100 timed launches (after 20), its TFLOP/s and GB/s
//! (compulsory traffic: two operands read, the result written, once) and
//! their fractions of the ceilings measured in the same run: the GB/s of a
//! 256 MiB device-to-device copy and the TFLOP/s of the largest GEMM our
//! kernels compute (`bench::ceiling_gemm`) in the same math.
//!
//! The binary runs without cargo (scripts/gpu/ carries it to the GPU host):
//! everything it needs is built in; pass `--bench` as cargo does.
//! `CIFAR_KERN_CONV_TILES=PATH` makes TF32 choose its variants from that
//! tile table (as `cifar-kern tune --out PATH` writes it). Without a usable
//! GPU it says so in one line and exits 0.

mod gpu_common;
use cifar_kern::bench::{achieved, gemm_ceilings, median, table, use_tiles_file, ConvBuffers, ConvTimer};
use cifar_kern::cuda::conv::{kernel_for, ConvKernel};
use cifar_kern::cuda::conv_tiles::Direction;
use cifar_kern::layers::Math;
use cifar_kern::models::conv_shapes::shared_convs;
use cifar_kern::models::ModelKind;
use criterion::{BenchmarkId, Throughput};
use std::path::Path;
use std::time::Duration;

const BATCH: usize = 128;
/// The fixed timing of the closing table.
const WARMUP: usize = 20;
const ITERS: usize = 100;

fn main() {
    if let Ok(path) = std::env::var("CIFAR_KERN_CONV_TILES") {
        if let Err(e) = use_tiles_file(Path::new(&path)) {
            eprintln!("gpu_conv: CIFAR_KERN_CONV_TILES: {e:#}");
            std::process::exit(1);
        }
    }
    let Some((gpu, mut c)) = gpu_common::gpu_and_criterion("gpu_conv") else {
        return;
    };
    let timer = ConvTimer::new(gpu);
    let copy_gbps = timer.copy_gbps();
    let ceilings = gemm_ceilings(&timer, &Math::ALL);
    let ceiling = |math: Math| ceilings.iter().find(|(m, _)| *m == math).map_or(f64::NAN, |(_, t)| *t);
    println!(
        "gpu_conv on {} (sm_{}): ceilings copy {copy_gbps:.0} GB/s, tf32 GEMM {:.1} TFLOP/s, fp32 GEMM {:.1} TFLOP/s",
        gpu.name(),
        gpu.arch(),
        ceiling(Math::Tf32),
        ceiling(Math::Fp32)
    );
    let mut rows = Vec::new();
    for conv in shared_convs(&ModelKind::ALL, &[BATCH]) {
        let bufs = ConvBuffers::new(gpu, &conv.x_shape, &conv.w_shape, &conv.win);
        for dir in Direction::ALL {
            let group_name = format!("conv_{}", dir.name());
            let mut group = c.benchmark_group(&group_name);
            group.throughput(Throughput::Elements(dir.flops(&bufs.shape) as u64));
            for math in Math::ALL {
                let kernel = kernel_for::<f32>(gpu, math, dir, &bufs.shape);
                let partials = bufs.workspace(gpu, dir, kernel);
                let plan = bufs.plan(gpu, dir, kernel, partials.as_ref());
                let mut fixed = None;
                let id = BenchmarkId::new(conv.peers_key(), math.name());
                group.bench_function(id, |b| {
                    if fixed.is_none() {
                        fixed = Some(median(&timer.time(&plan, WARMUP, ITERS)));
                    }
                    b.iter_custom(|iters| Duration::from_secs_f64(timer.time_total(&plan, iters as usize) * 1e-3));
                });
                // None when criterion's filter skipped this bench.
                if let Some(ms) = fixed {
                    let (tflops, gbps) = achieved(dir, &bufs.shape, ms);
                    let variant = match kernel {
                        ConvKernel::Simt => "conv.cu".to_string(),
                        ConvKernel::TensorCore(v) => v.to_string(),
                    };
                    rows.push(vec![
                        group_name.clone(),
                        format!("{}/{math}", conv.peers_key()),
                        variant,
                        format!("{ms:.4}"),
                        format!("{tflops:.2}"),
                        format!("{:.1}%", 100.0 * tflops / ceiling(math)),
                        format!("{gbps:.0}"),
                        format!("{:.1}%", 100.0 * gbps / copy_gbps),
                    ]);
                }
            }
            group.finish();
        }
    }
    c.final_summary();
    let headers = ["group", "id", "kernel", "ms", "TFLOP/s", "of GEMM", "GB/s", "of copy"].map(String::from);
    println!("\nmedian of {ITERS} launches after {WARMUP}; ceilings measured in this run (copy {copy_gbps:.0} GB/s; GEMM per math)");
    print!("{}", table(&headers, &rows));
}
