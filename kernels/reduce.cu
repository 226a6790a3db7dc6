// The mean over H and W of an NHWC tensor ([n, h, w, c] -> [n, c]) and its
// backward broadcast, mirroring src/ops/reduce.rs.
//
// mean_hw: one thread per (image, channel), grid-stride; it adds the h * w
// pixels in order in double, so the result does not depend on scheduling
// (consecutive threads read consecutive channels of a pixel: coalesced).
// With at most 8x8 pixels per image in the networks, no split is needed.
// mean_hw_backward: one thread per dx element, dx = dy[image, channel] / (h * w).

#include "common.cuh"

template <typename T>
struct MeanHwParams {
    gptr<const T> src;  // mean_hw: x [n, hw, c]; backward: dy [n, c]
    gptr<T> dst;        // mean_hw: y [n, c]; backward: dx [n, hw, c]
    uint64_t n;
    uint64_t hw;        // pixels per image
    uint64_t c;
};


template <typename T>
__device__ void mean_hw(MeanHwParams<T> p) {
    const double inv = 1.0 / (double)p.hw;
    GRID_STRIDE(i, p.n * p.c) {
        const uint64_t img = i / p.c, ch = i % p.c;
        gptr<const T> x = p.src + img * p.hw * p.c + ch;
        double s = 0.0;
        for (uint64_t px = 0; px < p.hw; ++px) s += (double)x[px * p.c];
        p.dst[i] = (T)(s * inv);
    }
}

template <typename T>
__device__ void mean_hw_backward(MeanHwParams<T> p) {
    const T inv = (T)(1.0 / (double)p.hw);
    GRID_STRIDE(i, p.n * p.hw * p.c) {
        const uint64_t img = i / (p.hw * p.c), ch = i % p.c;
        p.dst[i] = p.src[img * p.c + ch] * inv;
    }
}

#define INSTANTIATE(T, suffix)                                                                    \
    extern "C" __global__ void mean_hw_##suffix(MeanHwParams<T> p) { mean_hw(p); }                \
    extern "C" __global__ void mean_hw_backward_##suffix(MeanHwParams<T> p) { mean_hw_backward(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
