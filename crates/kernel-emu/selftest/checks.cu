// Kernels with one deliberate mistake each (and their correct twins), so
// the emulator's own tests (tests/checks.rs) see it report each kind of
// error. Compiled only into the emulator, never into cifar-kern.

#include "common.cuh"

struct CheckParams {
    gptr<float> data;  // [n]
    uint32_t n;
    uint32_t mode;     // 0: the correct kernel; otherwise its mistake
};

// Reverses a block's values through shared memory; mode 1 drops the
// barrier between the writes and the reads.
extern "C" __global__ void reverse(CheckParams p) {
    using Buffer = smem<float>[256];
    SHARED(Buffer, buffer);
    const unsigned t = threadIdx.x;
    buffer[t] = p.data[t];
    if (p.mode == 0) __syncthreads();
    p.data[t] = buffer[blockDim.x - 1 - t];
}

// Mode 1: thread 3 returns before a barrier the others wait at.
extern "C" __global__ void early_exit(CheckParams p) {
    if (p.mode == 1 && threadIdx.x == 3) return;
    __syncthreads();
    p.data[threadIdx.x] = 1.0f;
}

// Mode 1: odd and even threads wait at two different barriers.
extern "C" __global__ void divergent_barrier(CheckParams p) {
    if (p.mode == 1 && threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    p.data[threadIdx.x] = 1.0f;
}

// Writes data[threadIdx.x + mode]: mode 1 writes one past the end.
extern "C" __global__ void shifted_write(CheckParams p) { p.data[threadIdx.x + p.mode] = 1.0f; }

// Each warp's sum by a shuffle tree into its lane 0; mode 1: lane 5 leaves
// before the shuffles that name it.
extern "C" __global__ void warp_sum(CheckParams p) {
    float v = p.data[threadIdx.x];
    if (p.mode == 1 && threadIdx.x == 5) return;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) p.data[threadIdx.x] = v;
}

// Lane l gets lane l ^ 1's value and the warp's ballot of (value > 0).
extern "C" __global__ void swap_pairs(CheckParams p) {
    const float v = p.data[threadIdx.x];
    const float other = __shfl_xor_sync(0xffffffffu, v, 1);
    const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.0f);
    p.data[threadIdx.x] = other + (p.mode == 1 ? (float)ballot : 0.0f);
}
