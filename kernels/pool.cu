// Max-pool and avg-pool over H and W of NHWC tensors, mirroring
// src/ops/pool.rs: padded cells never win a max, and an average divides by
// the full window area (padded cells count as zeros, as in Flax).
//
// Forward kernels: one thread per output element (image, oy, ox, channel),
// grid-stride; a warp covers consecutive channels, so reads are coalesced.
// The max visits the window's cells in the CPU's order (ky, then kx) and
// keeps the first maximum; a NaN wins over any number. Its argmax is the
// winner's index within the image, (iy * w + ix) * c + ch, as a u32.
//
// Backward kernels gather instead of scattering: one thread per input
// element visits the output windows that cover it, in ascending (oy, ox)
// order, and adds their dy (for max-pool only where the argmax is this
// element). Each dx element is written by exactly one thread with a fixed
// order of additions: deterministic, and no atomics.
//
// The host asserts pad < window size on both axes, so every window holds at
// least one real cell.

#include "common.cuh"

struct PoolGeometry {
    uint32_t n, h, w, c;   // input, NHWC
    uint32_t oh, ow;       // output height and width
    uint32_t size_h, size_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_h, pad_w; // padding before the first row / column
};

template <typename T>
struct PoolParams {
    gptr<const T> src;  // forward: x [n, h, w, c]; backward: dy [n, oh, ow, c]
    gptr<T> dst;        // forward: y; backward: dx
    PoolGeometry g;
};

template <typename T>
struct MaxPoolParams {
    gptr<const T> src;      // forward: x; backward: dy
    gptr<T> dst;            // forward: y; backward: dx
    gptr<uint32_t> argmax;  // [n, oh, ow, c]: written by the forward, read by the backward
    PoolGeometry g;
};


// An NHWC position: element index i of a [n, rows, cols, c] tensor.
struct Position {
    uint64_t img;
    int64_t row, col;
    uint32_t ch;
};

__device__ Position position(uint64_t i, uint32_t rows, uint32_t cols, uint32_t c) {
    Position p;
    p.ch = (uint32_t)(i % c);
    uint64_t t = i / c;
    p.col = (int64_t)(t % cols);
    t /= cols;
    p.row = (int64_t)(t % rows);
    p.img = t / rows;
    return p;
}

// The input coordinate under window cell 0 of output position o along one axis
// (negative in the padding).
__device__ int64_t window_start(int64_t o, uint32_t stride, uint32_t pad) {
    return o * (int64_t)stride - (int64_t)pad;
}

// The output positions [first, last] along one axis whose window covers input
// coordinate i: o * stride - pad <= i <= o * stride - pad + size - 1.
// Empty when first > last.
struct Span {
    int64_t first, last;
};

__device__ Span covering_windows(int64_t i, uint32_t size, uint32_t stride, uint32_t pad, uint32_t out) {
    const int64_t hi = i + pad;             // o * stride <= hi
    const int64_t lo = hi - size + 1;       // o * stride >= lo
    Span s;
    s.first = lo <= 0 ? 0 : (lo + stride - 1) / stride;
    s.last = hi / stride < (int64_t)out - 1 ? hi / stride : (int64_t)out - 1;
    return s;
}

template <typename T>
__device__ void max_forward(MaxPoolParams<T> p) {
    const PoolGeometry g = p.g;
    const uint64_t total = (uint64_t)g.n * g.oh * g.ow * g.c;
    GRID_STRIDE(i, total) {
        const Position o = position(i, g.oh, g.ow, g.c);
        gptr<const T> image = p.src + o.img * g.h * g.w * g.c;
        const int64_t y0 = window_start(o.row, g.stride_h, g.pad_h);
        const int64_t x0 = window_start(o.col, g.stride_w, g.pad_w);
        bool seen = false;
        T best = T(0);
        uint32_t arg = 0;
        for (int64_t iy = y0; iy < y0 + g.size_h; ++iy) {
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t ix = x0; ix < x0 + g.size_w; ++ix) {
                if (ix < 0 || ix >= g.w) continue;
                const uint32_t idx = (uint32_t)((iy * g.w + ix) * g.c + o.ch);
                const T v = image[idx];
                if (!seen || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    arg = idx;
                    seen = true;
                }
            }
        }
        p.dst[i] = best;
        p.argmax[i] = arg;
    }
}

template <typename T>
__device__ void max_backward(MaxPoolParams<T> p) {
    const PoolGeometry g = p.g;
    const uint64_t total = (uint64_t)g.n * g.h * g.w * g.c;
    GRID_STRIDE(i, total) {
        const Position in = position(i, g.h, g.w, g.c);
        const uint32_t self = (uint32_t)((in.row * g.w + in.col) * g.c + in.ch);
        const Span ys = covering_windows(in.row, g.size_h, g.stride_h, g.pad_h, g.oh);
        const Span xs = covering_windows(in.col, g.size_w, g.stride_w, g.pad_w, g.ow);
        T acc = T(0);
        for (int64_t oy = ys.first; oy <= ys.last; ++oy) {
            for (int64_t ox = xs.first; ox <= xs.last; ++ox) {
                const uint64_t o = ((in.img * g.oh + oy) * g.ow + ox) * g.c + in.ch;
                if (p.argmax[o] == self) acc += p.src[o];
            }
        }
        p.dst[i] = acc;
    }
}

// 1 / window area, rounded to T as the CPU op rounds it.
template <typename T>
__device__ T inverse_area(const PoolGeometry& g) {
    return (T)(1.0 / (double)(g.size_h * g.size_w));
}

template <typename T>
__device__ void avg_forward(PoolParams<T> p) {
    const PoolGeometry g = p.g;
    const T inv_area = inverse_area<T>(g);
    const uint64_t total = (uint64_t)g.n * g.oh * g.ow * g.c;
    GRID_STRIDE(i, total) {
        const Position o = position(i, g.oh, g.ow, g.c);
        gptr<const T> image = p.src + o.img * g.h * g.w * g.c;
        const int64_t y0 = window_start(o.row, g.stride_h, g.pad_h);
        const int64_t x0 = window_start(o.col, g.stride_w, g.pad_w);
        T acc = T(0);
        for (int64_t iy = y0; iy < y0 + g.size_h; ++iy) {
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t ix = x0; ix < x0 + g.size_w; ++ix) {
                if (ix < 0 || ix >= g.w) continue;
                acc += image[(iy * g.w + ix) * g.c + o.ch];
            }
        }
        p.dst[i] = acc * inv_area;
    }
}

template <typename T>
__device__ void avg_backward(PoolParams<T> p) {
    const PoolGeometry g = p.g;
    const T inv_area = inverse_area<T>(g);
    const uint64_t total = (uint64_t)g.n * g.h * g.w * g.c;
    GRID_STRIDE(i, total) {
        const Position in = position(i, g.h, g.w, g.c);
        const Span ys = covering_windows(in.row, g.size_h, g.stride_h, g.pad_h, g.oh);
        const Span xs = covering_windows(in.col, g.size_w, g.stride_w, g.pad_w, g.ow);
        T acc = T(0);
        for (int64_t oy = ys.first; oy <= ys.last; ++oy) {
            for (int64_t ox = xs.first; ox <= xs.last; ++ox) {
                acc += p.src[((in.img * g.oh + oy) * g.ow + ox) * g.c + in.ch] * inv_area;
            }
        }
        p.dst[i] = acc;
    }
}

#define INSTANTIATE(T, suffix)                                                                     \
    extern "C" __global__ void max_forward_##suffix(MaxPoolParams<T> p) { max_forward(p); }         \
    extern "C" __global__ void max_backward_##suffix(MaxPoolParams<T> p) { max_backward(p); }       \
    extern "C" __global__ void avg_forward_##suffix(PoolParams<T> p) { avg_forward(p); }            \
    extern "C" __global__ void avg_backward_##suffix(PoolParams<T> p) { avg_backward(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
