// Element-wise kernels: ReLU forward/backward and addition.
//
// Design: one thread per element in a grid-stride loop, so any launch size
// covers any n. Each kernel takes one parameter struct by value whose layout
// matches a #[repr(C)] struct on the Rust side; the _f32/_f64 suffix names
// the element type (f64 serves the parity tests against the CPU reference).
// These are bandwidth-bound: a training step fuses them into neighbours
// where it can (see the CUDA backend issue); these are the plain versions.

#include "common.cuh"

template <typename T>
struct UnaryParams {
    gptr<const T> x;
    gptr<T> y;
    uint64_t n;
};

template <typename T>
struct ReluBackwardParams {
    gptr<const T> dy;
    gptr<const T> y;  // the forward output: the gradient passes where y > 0
    gptr<T> dx;
    uint64_t n;
};

template <typename T>
struct BinaryParams {
    gptr<const T> a;
    gptr<const T> b;
    gptr<T> y;
    uint64_t n;
};


template <typename T>
__device__ void relu_forward(UnaryParams<T> p) {
    GRID_STRIDE(i, p.n) { p.y[i] = p.x[i] < T(0) ? T(0) : p.x[i]; }  // NaN stays NaN
}

template <typename T>
__device__ void relu_backward(ReluBackwardParams<T> p) {
    GRID_STRIDE(i, p.n) { p.dx[i] = p.y[i] > T(0) ? p.dy[i] : T(0); }
}

template <typename T>
__device__ void add(BinaryParams<T> p) {
    GRID_STRIDE(i, p.n) { p.y[i] = p.a[i] + p.b[i]; }
}

#define INSTANTIATE(T, suffix)                                                              \
    extern "C" __global__ void relu_forward_##suffix(UnaryParams<T> p) { relu_forward(p); }    \
    extern "C" __global__ void relu_backward_##suffix(ReluBackwardParams<T> p) { relu_backward(p); } \
    extern "C" __global__ void add_##suffix(BinaryParams<T> p) { add(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
