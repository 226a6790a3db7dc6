// The geometry of a convolution and the parameter structs of its GEMM
// kernels, shared by the CUDA-core kernels (conv.cu) and the tensor-core
// kernels (conv_tc.cu): one Rust twin each in src/cuda/conv.rs.
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
