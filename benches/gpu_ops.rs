//! GPU benches of every kernel family but the convolutions (those are
//! `gpu_conv`'s): batch norm forward and backward (ReLU, residual + ReLU),
//! pools, concat, element-wise add and ReLU, the loss and the optimiser,
//! at the networks' shapes at batch 128 (`bench::op_cases`: found by
//! running the networks, their convs' activations). A training step is
//! mostly these and the convs; graphs remove the host from the step, so
//! what is left is how fast each kernel moves its bytes, which this shows
//! family by family.
//!
//! Each case is a prepared launch plan over buffers of random non-zero
//! data, timed on the GPU alone as `gpu_conv` times a conv
//! (`bench::ConvTimer`: a long copy queued first keeps the GPU busy while
//! the host queues the launches, CUDA events around them): criterion
//! through `iter_custom`, with throughput in bytes (compulsory traffic:
//! each buffer read or written once, twice if both). At the end a table
//! gives each case's median of a fixed 100 timed runs (after 20), its GB/s
//! and their fraction of the copy bandwidth measured in the same run: the
//! ceiling of kernels that only stream memory.
//!
//! The binary runs without cargo (scripts/gpu/ can carry it to the GPU host
//! as it does `gpu_conv`); pass `--bench` as cargo does. Without a usable
//! GPU it says so in one line and exits 0.

mod gpu_common;
use cifar_kern::bench::op_cases::{op_cases, OpCase};
use cifar_kern::bench::{median, table, ConvTimer};
use criterion::Throughput;
use std::time::Duration;

const BATCH: usize = 128;
/// The fixed timing of the closing table.
const WARMUP: usize = 20;
const ITERS: usize = 100;

fn main() {
    let Some((gpu, mut c)) = gpu_common::gpu_and_criterion("gpu_ops") else {
        return;
    };
    let timer = ConvTimer::new(gpu);
    let copy_gbps = timer.copy_gbps();
    println!(
        "gpu_ops on {} (sm_{}): copy ceiling {copy_gbps:.0} GB/s",
        gpu.name(),
        gpu.arch()
    );
    let cases = op_cases(BATCH);
    let mut rows = Vec::new();
    for group_cases in cases.chunk_by(|a, b| a.group == b.group) {
        let mut group = c.benchmark_group(group_cases[0].group);
        for case in group_cases {
            let prepared = case.prepare(gpu);
            let mut fixed = None;
            group.throughput(Throughput::Bytes(case.bytes as u64));
            group.bench_function(&case.id, |b| {
                if fixed.is_none() {
                    fixed = Some(median(&timer.time(&prepared.plan, WARMUP, ITERS)));
                }
                b.iter_custom(|iters| Duration::from_secs_f64(timer.time_total(&prepared.plan, iters as usize) * 1e-3));
            });
            // None when criterion's filter skipped this bench.
            if let Some(ms) = fixed {
                rows.push(row(case, prepared.plan.len(), ms, copy_gbps));
            }
        }
        group.finish();
    }
    c.final_summary();
    let headers = ["group", "id", "launches", "ms", "MB", "GB/s", "of copy"].map(String::from);
    println!("\nmedian of {ITERS} runs after {WARMUP}; bytes = compulsory traffic; copy {copy_gbps:.0} GB/s measured in this run");
    print!("{}", table(&headers, &rows));
}

/// The closing table's row of `case`, `launches` kernels timed at `ms`.
fn row(case: &OpCase, launches: usize, ms: f64, copy_gbps: f64) -> Vec<String> {
    let gbps = case.bytes / (ms * 1e-3) / 1e9;
    vec![
        case.group.to_string(),
        case.id.clone(),
        launches.to_string(),
        format!("{ms:.4}"),
        format!("{:.2}", case.bytes / 1e6),
        format!("{gbps:.0}"),
        format!("{:.1}%", 100.0 * gbps / copy_gbps),
    ]
}
