// A small GEMM through every wrapper of tensor_core.cuh, to check them: the
// emu_ tests run it in the CPU emulator against a CPU reference, and on a
// GPU the tensor-core issue's gpu_ tests compare the hardware with the
// emulation (a misread fragment layout shows there).
//
//   d[M, N] = a[M, K] * b[N, K]^T + c[M, N]   (row-major; M % 16 = N % 8 =
//                                               K % 8 = 0)
//
// One warp per 16 x 8 tile of d (grid M / 16 x N / 8, 32 threads). The
// k-slices of A (16 x 8) and B (8 x 8) are staged through shared memory by
// cp.async in two stages: slice kt + 1 is in flight while slice kt is
// multiplied. ldmatrix.x4 loads A's fragment, ldmatrix.x2 B's (B is stored
// n-major, k contiguous, as the "col" operand wants), to_tf32 rounds them,
// and one mma.sync per slice accumulates in fp32.

#include "tensor_core.cuh"

struct MmaGemmParams {
    gptr<const float> a;  // [m, k]
    gptr<const float> b;  // [n, k]
    gptr<const float> c;  // [m, n]
    gptr<float> d;        // [m, n]
    uint32_t m, n, k;
};

constexpr int TILE_M = 16, TILE_N = 8, TILE_K = 8, STAGES = 2;

using ASlices = smem<float>[STAGES][TILE_M][TILE_K];
using BSlices = smem<float>[STAGES][TILE_N][TILE_K];

// Lane l copies 16 bytes: A row l / 2, columns 4 (l % 2) ..; lanes 0..15
// also B row l / 2.
__device__ void load_slice(const MmaGemmParams& p, ASlices& a, BSlices& b, int stage, uint32_t k0) {
    const unsigned lane = threadIdx.x, row = lane / 2, col = lane % 2 * 4;
    const uint32_t m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    cp_async<16>(&a[stage][row][col], p.a + (m0 + row) * p.k + k0 + col, true);
    if (row < TILE_N) cp_async<16>(&b[stage][row][col], p.b + (n0 + row) * p.k + k0 + col, true);
}

__device__ void mma_gemm(MmaGemmParams p) {
    SHARED(ASlices, a);
    SHARED(BSlices, b);
    const unsigned lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const uint32_t m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    float acc[4];
    acc[0] = p.c[(m0 + g) * p.n + n0 + 2 * t];
    acc[1] = p.c[(m0 + g) * p.n + n0 + 2 * t + 1];
    acc[2] = p.c[(m0 + g + 8) * p.n + n0 + 2 * t];
    acc[3] = p.c[(m0 + g + 8) * p.n + n0 + 2 * t + 1];

    const uint32_t slices = p.k / TILE_K;
    load_slice(p, a, b, 0, 0);
    cp_async_commit();
    for (uint32_t kt = 0; kt < slices; ++kt) {
        const int stage = kt % STAGES;
        if (kt + 1 < slices) load_slice(p, a, b, (kt + 1) % STAGES, (kt + 1) * TILE_K);
        cp_async_commit();  // possibly empty: the wait below counts groups
        cp_async_wait<1>();  // slice kt has landed (kt + 1 may still fly)
        __syncthreads();     // ...for every lane's copies

        // A's four 8x4 matrices: rows 0-7 / 8-15 by columns 0-3 / 4-7;
        // lane l gives row l % 16 (within matrix l / 8), columns 4 (l / 16).
        uint32_t af[4], bf[2];
        ldmatrix<4>(af, &a[stage][lane % 16][lane / 16 * 4]);
        // B's two 8x4 matrices: n rows 0-7 by k columns 0-3 / 4-7.
        ldmatrix<2>(bf, &b[stage][lane % 8][lane / 8 % 2 * 4]);
        uint32_t at[4], bt[2];
        for (int i = 0; i < 4; ++i) at[i] = to_tf32(__uint_as_float(af[i]));
        for (int i = 0; i < 2; ++i) bt[i] = to_tf32(__uint_as_float(bf[i]));
        mma_tf32_m16n8k8(acc, at, bt, acc);
        __syncthreads();  // stage kt % 2 is refilled by the next iteration's loads
    }
    p.d[(m0 + g) * p.n + n0 + 2 * t] = acc[0];
    p.d[(m0 + g) * p.n + n0 + 2 * t + 1] = acc[1];
    p.d[(m0 + g + 8) * p.n + n0 + 2 * t] = acc[2];
    p.d[(m0 + g + 8) * p.n + n0 + 2 * t + 1] = acc[3];
}

extern "C" __global__ void __launch_bounds__(32) mma_gemm_f32(MmaGemmParams p) { mma_gemm(p); }
