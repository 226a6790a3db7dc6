//! The launch plan of `kernels/tensor_core_check.cu`: a small TF32 GEMM,
//! `d = a * b^T + c`, that goes through every tensor-core and async-copy
//! wrapper of `kernels/tensor_core.cuh`, so tests can run the wrappers in
//! the CPU emulator and, on a GPU, compare the hardware with it.

use super::launch::Launch;
use cudarc::driver::LaunchConfig;

/// The GEMM's tile: one warp per 16 x 8 block of d, k in slices of 8.
pub const TILE_M: usize = 16;
pub const TILE_N: usize = 8;
pub const TILE_K: usize = 8;

crate::kernel_params! {
    /// `MmaGemmParams` in tensor_core_check.cu.
    pub struct MmaGemmParams {
        a: u64,
        b: u64,
        c: u64,
        d: u64,
        m: u32,
        n: u32,
        k: u32,
    }
}

/// `d[m, n] = a[m, k] * b[n, k]^T + c[m, n]` (f32, row-major; m, n and k
/// multiples of 16, 8 and 8).
pub fn gemm_plan(a: u64, b: u64, c: u64, d: u64, m: usize, n: usize, k: usize) -> Vec<Launch> {
    assert!(
        m.is_multiple_of(TILE_M) && n.is_multiple_of(TILE_N) && k.is_multiple_of(TILE_K) && k > 0,
        "mma_gemm needs m % 16 = n % 8 = k % 8 = 0, got {m} x {n} x {k}"
    );
    let dim = |v: usize| u32::try_from(v).expect("mma_gemm dimensions fit u32");
    let cfg = LaunchConfig {
        grid_dim: (dim(m / TILE_M), dim(n / TILE_N), 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    let params = MmaGemmParams {
        a,
        b,
        c,
        d,
        m: dim(m),
        n: dim(n),
        k: dim(k),
    };
    vec![Launch::new::<f32, _>("tensor_core_check", "mma_gemm", cfg, params)]
}

/// What `cvt.rna.tf32.f32` gives: x rounded to 10 mantissa bits, to
/// nearest, ties away from zero (NaN stays NaN).
pub fn round_tf32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    f32::from_bits((x.to_bits() + 0x1000) & 0xffff_e000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_ties_away() {
        let ulp = 2f32.powi(-10); // TF32's unit in the last place at 1.0
        assert_eq!(round_tf32(1.0 + 0.49 * ulp), 1.0);
        assert_eq!(round_tf32(1.0 + 0.5 * ulp), 1.0 + ulp); // tie: away from zero
        assert_eq!(round_tf32(-1.0 - 0.5 * ulp), -1.0 - ulp);
        assert_eq!(round_tf32(1.0 + 0.51 * ulp), 1.0 + ulp);
        assert_eq!(round_tf32(f32::MAX), f32::INFINITY);
        assert!(round_tf32(f32::NAN).is_nan());
    }

    #[test]
    fn plan_has_a_warp_per_tile() {
        let plan = gemm_plan(0, 0, 0, 0, 32, 16, 24);
        assert_eq!(plan[0].cfg.grid_dim, (2, 2, 1));
        assert_eq!(plan[0].kernel, "mma_gemm_f32");
        assert_eq!(plan[0].params_size(), 48);
    }
}
