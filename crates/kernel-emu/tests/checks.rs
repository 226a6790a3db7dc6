//! The emulator reports each kind of kernel mistake (with the check kernels
//! of `selftest/checks.cu`), and runs their correct twins.

use kernel_emu::{Field, Launch, Memory};
use std::ffi::c_void;

/// `CheckParams` in selftest/checks.cu.
#[repr(C)]
struct CheckParams {
    data: u64,
    n: u32,
    mode: u32,
}

fn fields() -> Vec<Field> {
    let field = |name: &str, offset, size| Field {
        name: name.into(),
        offset,
        size,
    };
    vec![field("data", 0, 8), field("n", 8, 4), field("mode", 12, 4)]
}

/// Runs `kernel` on one block of `threads` threads over `data`, under
/// `seed`; returns the data afterwards, or the emulator's report.
fn run(kernel: &str, mode: u32, data: &[f32], threads: u32, seed: u64) -> Result<Vec<f32>, String> {
    let mut mem = Memory::new();
    let addr = mem.upload(data, "data");
    let params = CheckParams {
        data: addr,
        n: data.len() as u32,
        mode,
    };
    let fields = fields();
    let launch = Launch {
        module: "checks",
        kernel,
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_shared_bytes: 0,
        params: &params as *const CheckParams as *const c_void,
        params_size: std::mem::size_of::<CheckParams>(),
        fields: &fields,
    };
    mem.launch(&launch, seed)?;
    Ok(mem.read(addr, data.len()))
}

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

/// The report of the mistake, for every seed (a seed that happens to hide
/// it would make the check flaky).
fn report(kernel: &str, data: &[f32], threads: u32) -> String {
    let reports: Vec<String> = (1..=4)
        .map(|seed| run(kernel, 1, data, threads, seed).expect_err("the mistake must be reported"))
        .collect();
    reports[0].clone()
}

#[test]
fn correct_kernels_run_the_same_under_every_seed() {
    let reversed: Vec<f32> = iota(64).into_iter().rev().collect();
    for seed in 1..=4 {
        assert_eq!(run("reverse", 0, &iota(64), 64, seed).unwrap(), reversed);
        assert_eq!(run("early_exit", 0, &iota(8), 8, seed).unwrap(), vec![1.0; 8]);
        assert_eq!(run("divergent_barrier", 0, &iota(8), 8, seed).unwrap(), vec![1.0; 8]);
        assert_eq!(run("shifted_write", 0, &iota(8), 8, seed).unwrap(), vec![1.0; 8]);
    }
}

#[test]
fn a_missing_barrier_is_a_race() {
    let r = report("reverse", &iota(64), 64);
    assert!(r.contains("race on shared memory") && r.contains("buffer + "), "{r}");
    assert!(r.contains("reverse, block (0,0,0)"), "{r}");
}

#[test]
fn a_thread_that_exits_before_a_barrier_is_reported() {
    let r = report("early_exit", &iota(8), 8);
    assert!(
        r.contains("thread (3,0,0) exited while") && r.contains("wait at __syncthreads()"),
        "{r}"
    );
}

#[test]
fn a_barrier_in_divergent_code_is_reported() {
    let r = report("divergent_barrier", &iota(8), 8);
    assert!(r.contains("__syncthreads() reached in divergent code"), "{r}");
}

#[test]
fn an_access_past_a_buffer_is_reported() {
    let r = report("shifted_write", &iota(8), 8);
    assert!(
        r.contains("out-of-bounds write of 4 bytes") && r.contains("0 bytes past the end of buffer 'data'"),
        "{r}"
    );
}

#[test]
fn shuffles_follow_their_definition() {
    // Two warps: each lane 0 gets its warp's sum.
    let data = iota(64);
    let out = run("warp_sum", 0, &data, 64, 1).unwrap();
    assert_eq!(out[0], (0..32).sum::<i32>() as f32);
    assert_eq!(out[32], (32..64).sum::<i32>() as f32);
    // xor 1 swaps neighbours; the ballot of (v > 0) over lanes 1..31 is
    // 0xfffffffe (lane 0 holds 0).
    let out = run("swap_pairs", 0, &iota(32), 32, 2).unwrap();
    assert_eq!(&out[..4], &[1.0, 0.0, 3.0, 2.0]);
    let out = run("swap_pairs", 1, &iota(32), 32, 2).unwrap();
    assert_eq!(out[0], 1.0 + 0xffff_fffeu32 as f32);
}

#[test]
fn a_lane_missing_from_a_shuffle_is_reported() {
    let r = report("warp_sum", &iota(32), 32);
    assert!(
        r.contains("__shfl_down_sync") && r.contains("waits for lane 5, which has exited"),
        "{r}"
    );
}

#[test]
fn a_parameter_struct_that_differs_is_refused() {
    let mut mem = Memory::new();
    let addr = mem.alloc(32, "data");
    let params = CheckParams {
        data: addr,
        n: 8,
        mode: 0,
    };
    let mut swapped = fields();
    swapped.swap(1, 2);
    (swapped[1].offset, swapped[2].offset) = (8, 12); // mode at 8, n at 12
    let launch = Launch {
        module: "checks",
        kernel: "shifted_write",
        grid: [1, 1, 1],
        block: [8, 1, 1],
        dynamic_shared_bytes: 0,
        params: &params as *const CheckParams as *const c_void,
        params_size: std::mem::size_of::<CheckParams>(),
        fields: &swapped,
    };
    let r = mem.launch(&launch, 1).unwrap_err();
    assert!(
        r.contains("field `n` is at offset 12 (4 bytes) in Rust, 8 (4 bytes) in C++"),
        "{r}"
    );
}
