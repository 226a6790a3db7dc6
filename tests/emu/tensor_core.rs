//! `emu_tensor_core`: the tensor-core and async-copy wrappers
//! (`kernels/tensor_core.cuh`) through the check GEMM of
//! `kernels/tensor_core_check.cu`, against a CPU GEMM.

use crate::common::{trial, under_seeds, Emu};
use cifar_kern::cuda::tensor_core_check::{gemm_plan, round_tf32};
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::Rng;

/// Three k-slices, so the two cp.async stages are each reused.
const M: usize = 32;
const N: usize = 16;
const K: usize = 24;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("emu_tensor_core_gemm_exact_on_integers".into(), exact_on_integers),
        trial("emu_tensor_core_gemm_rounds_operands_to_tf32".into(), rounds_to_tf32),
    ]
}

/// d from the emulated kernel.
fn emulated(a: &Tensor<f32>, b: &Tensor<f32>, c: &Tensor<f32>) -> Result<Tensor<f32>, String> {
    let d = under_seeds("mma_gemm", |seed| {
        let mut emu = Emu::default();
        let (pa, pb, pc) = (emu.upload(a, "a"), emu.upload(b, "b"), emu.upload(c, "c"));
        let pd = emu.alloc::<f32>(M * N, "d");
        emu.run(&gemm_plan(pa, pb, pc, pd, M, N, K), seed)?;
        Ok(vec![emu.download::<f32>(pd, &[M, N])])
    })?;
    Ok(d.into_iter().next().unwrap())
}

/// d[i][j] = c[i][j] + sum_k op(a[i][k]) op(b[j][k]) in f64, and the sum of
/// the magnitudes of its terms.
fn reference(a: &Tensor<f32>, b: &Tensor<f32>, c: &Tensor<f32>, op: fn(f32) -> f32) -> Vec<(f64, f64)> {
    let (a, b, c) = (a.data(), b.data(), c.data());
    let mut out = Vec::new();
    for i in 0..M {
        for j in 0..N {
            let (mut sum, mut size) = (c[i * N + j] as f64, c[i * N + j].abs() as f64);
            for k in 0..K {
                let term = op(a[i * K + k]) as f64 * op(b[j * K + k]) as f64;
                sum += term;
                size += term.abs();
            }
            out.push((sum, size));
        }
    }
    out
}

/// Small integers are TF32 values whose products and sums fp32 holds
/// exactly: a misplaced fragment element cannot hide in rounding.
fn exact_on_integers() -> Result<(), String> {
    let mut rng = crate::common::rng(7);
    let mut ints = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::new(shape, (0..n).map(|_| rng.random_range(-8..=8) as f32).collect())
    };
    let (a, b, c) = (ints(&[M, K]), ints(&[N, K]), ints(&[M, N]));
    let d = emulated(&a, &b, &c)?;
    for (i, (&got, (want, _))) in d.data().iter().zip(reference(&a, &b, &c, |x| x)).enumerate() {
        if got as f64 != want {
            return Err(format!("d[{}][{}] = {got}, expected {want}", i / N, i % N));
        }
    }
    Ok(())
}

/// On random values the result is the GEMM of the TF32-rounded operands
/// (fp32 accumulation: at most (K + 1) ulp of the terms' size), and far from
/// the GEMM of the unrounded ones.
fn rounds_to_tf32() -> Result<(), String> {
    let (a, b, c) = (
        crate::common::randn::<f32>(&[M, K], 1),
        crate::common::randn::<f32>(&[N, K], 2),
        crate::common::randn::<f32>(&[M, N], 3),
    );
    let d = emulated(&a, &b, &c)?;
    let accumulation = (K + 1) as f64 * f32::EPSILON as f64;
    let mut farthest_from_unrounded: f64 = 0.0;
    let unrounded = reference(&a, &b, &c, |x| x);
    for (i, (&got, (want, size))) in d.data().iter().zip(reference(&a, &b, &c, round_tf32)).enumerate() {
        let err = (got as f64 - want).abs();
        if err > accumulation * size {
            return Err(format!(
                "d[{}][{}] = {got}, TF32 reference {want}: error {err:e} exceeds {:e}",
                i / N,
                i % N,
                accumulation * size
            ));
        }
        farthest_from_unrounded = farthest_from_unrounded.max((got as f64 - unrounded[i].0).abs() / unrounded[i].1);
    }
    // TF32 keeps 10 mantissa bits: rounding moves a term by up to 2^-11.
    if farthest_from_unrounded < 1e-5 {
        return Err(format!(
            "the result is within {farthest_from_unrounded:e} of the unrounded GEMM: operands were not rounded to TF32"
        ));
    }
    Ok(())
}
