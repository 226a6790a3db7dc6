// The geometry of a convolution, the parameter structs of its GEMM kernels
// and the decoding of GEMM indices into pixels and taps, shared by the
// CUDA-core kernels (conv.cu) and the tensor-core kernels (conv_tc.cu). The
// structs' Rust twins are in src/cuda/conv_shape.rs and src/cuda/conv.rs.
#pragma once

#include "common.cuh"

// The geometry of one convolution; pad_h/pad_w are the padding before (the
// padding after is implied by oh/ow).
struct ConvShape {
    int n, h, w, c;
    int oh, ow, o;
    int kh, kw;
    int stride_h, stride_w;
    int pad_h, pad_w;
};

template <typename T>
struct ForwardParams {
    gptr<const T> x;
    gptr<const T> w;
    gptr<const T> bias;  // null: no bias
    gptr<T> y;
    ConvShape s;
};

template <typename T>
struct BackwardDataParams {
    gptr<const T> dy;
    gptr<const T> w;
    gptr<T> dx;
    ConvShape s;
};

template <typename T>
struct WeightPartialParams {
    gptr<const T> dy;
    gptr<const T> x;
    gptr<T> partials;  // [chunks, K, O]; chunk z covers rows [z, z + 1) * chunk_rows of M
    int chunk_rows;
    ConvShape s;
};

// ---- decoding a GEMM index into the convolution's geometry ----------------

// The output pixel m = (n, oy, ox) as the corner of its window in x.
struct PixelWindow {
    int image;  // offset of image n in x
    int iy0, ix0;
};
// Tap k = (ky, kx, ci) of a window.
struct KernelTap {
    int ky, kx, ci;
};

__device__ __forceinline__ PixelWindow pixel_window(const ConvShape& s, int m) {
    int ox = m % s.ow, rest = m / s.ow;
    int oy = rest % s.oh, n = rest / s.oh;
    return {n * s.h * s.w * s.c, oy * s.stride_h - s.pad_h, ox * s.stride_w - s.pad_w};
}
__device__ __forceinline__ KernelTap kernel_tap(const ConvShape& s, int k) {
    int ci = k % s.c, tap = k / s.c;
    return {tap / s.kw, tap % s.kw, ci};
}
